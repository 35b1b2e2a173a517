/**
 * An MpscRing producer checks room against a cached head, and positions are
 * 32-bit: a producer idle while others moved nearly 4 GiB through the ring
 * would find `tail - cached head` wrapped to a small number and take a full
 * ring for an empty one. HEAD_EPOCH (layout.ts) tells it its cache is
 * that old. The gigabytes are skipped here by moving both positions forward
 * within a 2^30-byte window while nothing is unread (as traffic that never
 * crossed a window boundary would leave them); every crossing is made by a
 * real consumer reading a real record. Each Atomics.load below observes
 * what this thread's own calls just stored.
 */
import { strict as assert } from 'node:assert';
import { Region } from '@shmring/core';
import { MpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import { skipPositions } from './helpers.js';

const CAPACITY = 256;
const WINDOW = 2 ** 30;

describe('MpscRing: a producer whose cached head is 2^32 bytes old', function () {
  it('finds a full ring full (its cached head is re-read once the consumer changed windows), and nothing unread is overwritten', function () {
    const region = Region.create({ backing: 'sab', size: MpscRing.regionSize({ capacity: CAPACITY }) });
    const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
    const creator = MpscRing.create(region, { capacity: CAPACITY });
    const idle = MpscRing.attach(region);
    const busy = MpscRing.attach(region);
    try {
      // The idle producer's one message: it caches the head (0) with it.
      assert.ok(idle.tryWrite(Uint8Array.of(7)));
      const readOne = (): Uint8Array => {
        const consumer = MpscRing.attach(region);
        try {
          return consumer.tryRead()!;
        } finally {
          consumer.detach();
        }
      };
      assert.deepEqual([...readOne()], [7]);
      // Three crossings, each by a consumer reading a record from just below a window boundary to past it.
      for (let w = 1; w <= 3; w++) {
        assert.equal(Atomics.load(ctl, L.CONSUMER_POSITION_I32), Atomics.load(ctl, L.PRODUCER_POSITION_I32), 'nothing unread');
        const below = (w * WINDOW - 64) | 0;
        skipPositions(ctl, below);
        assert.ok(busy.tryWrite(new Uint8Array(100).fill(w)));
        assert.deepEqual([...readOne()], [...new Uint8Array(100).fill(w)]);
        assert.equal(Atomics.load(ctl, L.HEAD_EPOCH_I32), w, `the consumer counted crossing ${w}`);
      }
      // 2^32 - CAPACITY bytes after the idle producer's cache: the busy one fills the ring from there.
      const start = (2 ** 32 - CAPACITY) | 0;
      skipPositions(ctl, start);
      const sent: number[] = [];
      for (let i = 0; busy.tryWrite(Uint8Array.of(i, i, i)); i++) sent.push(i);
      assert.equal(sent.length, CAPACITY / 16, 'filled with 16-byte records');
      assert.equal(Atomics.load(ctl, L.PRODUCER_POSITION_I32), 0, 'the tail wrapped to 0: the idle producer cached 0');
      assert.equal(idle.tryWrite(Uint8Array.of(99)), false, 'the idle producer sees the ring full');
      const consumer = MpscRing.attach(region);
      try {
        const got: number[] = [];
        for (let m = consumer.tryRead(); m !== null; m = consumer.tryRead()) {
          assert.deepEqual([...m], [m[0], m[0], m[0]], 'an intact record');
          got.push(m[0]!);
        }
        assert.deepEqual(got, sent, 'every record, in order, none overwritten');
        assert.ok(idle.tryWrite(Uint8Array.of(99)), 'room once read');
        assert.deepEqual([...consumer.tryRead()!], [99]);
      } finally {
        consumer.detach();
      }
    } finally {
      idle.close();
      busy.close();
      creator.close();
      region.close();
    }
  });

  it('a consumer raises HEAD_EPOCH once per window its head enters, drain and padding included', function () {
    const region = Region.create({ backing: 'sab', size: MpscRing.regionSize({ capacity: CAPACITY }) });
    const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
    const ring = MpscRing.create(region, { capacity: CAPACITY });
    const producer = MpscRing.attach(region);
    try {
      const below = (WINDOW - 32) | 0; // a 64-byte record wraps: padding of 32 first, and the crossing is the padding's
      skipPositions(ctl, below);
      assert.ok(producer.tryWrite(new Uint8Array(56)));
      assert.ok(producer.tryWrite(new Uint8Array(56)));
      let handed = 0;
      ring.drain(() => handed++);
      assert.equal(handed, 2);
      assert.equal(Atomics.load(ctl, L.HEAD_EPOCH_I32), 1, 'one window entered, one count');
      assert.ok(producer.tryWrite(new Uint8Array(56)));
      assert.ok(ring.tryRead() !== null);
      assert.equal(Atomics.load(ctl, L.HEAD_EPOCH_I32), 1, 'no count within a window');
    } finally {
      producer.close();
      ring.close();
      region.close();
    }
  });
});
