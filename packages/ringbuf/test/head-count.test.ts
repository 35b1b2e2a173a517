/**
 * HEAD_EPOCH (layout.ts, docs/LAYOUT.md "Positions and wrap-around", rule
 * 4): an SpscRing consumer counts the 2^30-byte windows its head enters, and
 * readCount names the end of the last record taken in bytes since the
 * ring's creation, past 2^32 (the NATS bridge's message ids). The bytes
 * before a window boundary are skipped by moving both positions forward
 * while nothing is unread (as traffic that crossed no boundary leaves
 * them); every crossing is made by the consumer reading a real record.
 * Each Atomics.load of HEAD_EPOCH below observes the raises of this
 * thread's own reads just before it; each store forges a state no side is
 * running over.
 */
import { strict as assert } from 'node:assert';
import { Region } from '@shmring/core';
import { SpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import { skipPositions } from './helpers.js';

const CAPACITY = 1024;
const WINDOW = 2 ** 30;

function ringAt(position: number): { region: Region; ctl: Int32Array; producer: SpscRing; consumer: SpscRing } {
  const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: CAPACITY }) });
  SpscRing.create(region, { capacity: CAPACITY }).detach();
  const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
  skipPositions(ctl, position);
  return { region, ctl, producer: SpscRing.attach(region), consumer: SpscRing.attach(region) };
}

describe('SpscRing: HEAD_EPOCH and readCount', function () {
  it('readCount goes on past 2^32 where readPosition wraps, each crossing counted once', function () {
    const { region, ctl, producer, consumer } = ringAt(0);
    try {
      assert.ok(producer.tryWrite(new Uint8Array(8)));
      assert.ok(consumer.tryRead() !== null);
      assert.equal(consumer.readCount, 16);
      producer.detach();
      consumer.detach();
      let expected = 16;
      for (let w = 1; w <= 5; w++) {
        // Just below the next boundary (nothing unread, the data area zero as a new producer expects to find it
        // past its position), then 4 records of 64 bytes across it, by new sides.
        const below = w * WINDOW - 128;
        new Uint8Array(region.buffer, L.DATA_OFFSET, CAPACITY).fill(0);
        skipPositions(ctl, below);
        const p = SpscRing.attach(region);
        const c = SpscRing.attach(region);
        try {
          for (let i = 0; i < 4; i++) assert.ok(p.tryWrite(new Uint8Array(56)));
          for (let i = 0; i < 4; i++) {
            assert.ok(c.tryRead() !== null);
            expected = below + 64 * (i + 1);
            assert.equal(c.readCount, expected, `window ${w}, record ${i}`);
            assert.equal(c.readPosition, expected % 2 ** 32, 'readPosition is the same modulo 2^32');
          }
          assert.equal(Atomics.load(ctl, L.HEAD_EPOCH_I32), w, `crossing ${w} counted once`);
        } finally {
          p.detach();
          c.detach();
        }
      }
      assert.ok(expected > 2 ** 32);
    } finally {
      region.close();
    }
  });

  it('a holding consumer counts a record it took past the boundary before it released it, and the same again after', function () {
    const { region, ctl, producer, consumer } = ringAt(WINDOW - 64);
    try {
      consumer.holdReads();
      for (let i = 0; i < 3; i++) assert.ok(producer.tryWrite(new Uint8Array(56)));
      const counts: number[] = [];
      for (let i = 0; i < 3; i++) {
        assert.ok(consumer.tryRead() !== null);
        counts.push(consumer.readCount);
      }
      assert.deepEqual(counts, [WINDOW, WINDOW + 64, WINDOW + 128]);
      assert.equal(Atomics.load(ctl, L.HEAD_EPOCH_I32), 0, 'nothing released: nothing counted');
      consumer.releaseReads(consumer.readPosition);
      assert.equal(Atomics.load(ctl, L.HEAD_EPOCH_I32), 1);
      assert.equal(consumer.readCount, WINDOW + 128, 'the same count once released');
    } finally {
      producer.detach();
      consumer.detach();
      region.close();
    }
  });

  it('a consumer taking a ring whose HEAD_EPOCH was not kept (0, its head in window 3) brings it up to the head: readCount goes on past 2^32, never back', function () {
    const { region, ctl, producer, consumer } = ringAt(4 * WINDOW - 128); // window 3, HEAD_EPOCH 0: laid out before it existed
    try {
      assert.ok(producer.tryWrite(new Uint8Array(56)));
      assert.ok(consumer.tryRead() !== null);
      assert.equal(Atomics.load(ctl, L.HEAD_EPOCH_I32), 3, "raised to the head's window when it took the role");
      assert.equal(consumer.readCount, 4 * WINDOW - 64);
      assert.ok(producer.tryWrite(new Uint8Array(56)));
      assert.ok(consumer.tryRead() !== null);
      assert.equal(consumer.readCount, 4 * WINDOW, 'past 2^32, not back to 0');
      assert.equal(Atomics.load(ctl, L.HEAD_EPOCH_I32), 4);
    } finally {
      producer.detach();
      consumer.detach();
      region.close();
    }
  });

  it('a HEAD_EPOCH one ahead (a consumer died between its raise and its head store) counts the same bytes, and stays one ahead', function () {
    const { region, ctl, producer, consumer } = ringAt(2 * WINDOW - 128); // window 1
    try {
      Atomics.store(ctl, L.HEAD_EPOCH_I32, 2); // raised for window 2, the head store never made
      assert.ok(producer.tryWrite(new Uint8Array(56)));
      assert.ok(consumer.tryRead() !== null);
      assert.equal(consumer.readCount, 2 * WINDOW - 64);
      assert.ok(producer.tryWrite(new Uint8Array(56)));
      assert.ok(consumer.tryRead() !== null);
      assert.equal(consumer.readCount, 2 * WINDOW, 'one window on, counted once');
      assert.equal(Atomics.load(ctl, L.HEAD_EPOCH_I32), 3);
    } finally {
      producer.detach();
      consumer.detach();
      region.close();
    }
  });

  it('readCount of an object that is not the consumer: the count of the head stored now', function () {
    const { region, producer, consumer } = ringAt(WINDOW - 64);
    const observer = SpscRing.attach(region);
    try {
      assert.ok(producer.tryWrite(new Uint8Array(56)));
      assert.ok(consumer.tryRead() !== null);
      assert.equal(observer.readCount, WINDOW);
    } finally {
      observer.detach();
      producer.detach();
      consumer.detach();
      region.close();
    }
  });
});
