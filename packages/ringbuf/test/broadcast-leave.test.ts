/**
 * A Broadcast subscriber's slot and its readiness: detach() leaves the
 * Broadcast as close() does (its slot is free for the next subscriber,
 * in a region without locks too), and a wait on a lapped subscriber whose
 * lap cannot be settled yet (the publisher is in the middle of a record,
 * or died there) parks instead of resolving to a read that finds nothing.
 */
import { strict as assert } from 'node:assert';
import { ErrorCodes, Region } from '@shmring/core';
import { Broadcast } from '../src/index.js';
import * as B from '../src/broadcast-layout.js';

const CAPACITY = 1024;

describe('Broadcast: a subscriber leaving, and a lap in flight', function () {
  for (const leave of ['detach', 'close'] as const) {
    it(`${leave}() frees the subscriber's slot of a SharedArrayBuffer Broadcast: the next subscriber joins, and a lossless publisher goes on`, function () {
      const options = { capacity: CAPACITY, subscribers: 1 };
      const region = Region.create({ backing: 'sab', size: Broadcast.regionSize(options) });
      const publisher = Broadcast.create(region, { ...options, lossless: true });
      const first = Broadcast.subscribe(region);
      first[leave]();
      const next = Broadcast.subscribe(region); // the only slot: BUSY if the first still held it
      let written = 0;
      while (written < 100 && publisher.tryWrite(new Uint8Array(64))) {
        written++;
        next.tryRead();
      }
      assert.equal(written, 100, 'the publisher was held back by the subscriber that left');
      next.close();
      publisher.close();
    });
  }

  it('a lapped subscriber refuses a LATEST that is no record start (not a multiple of 8): ERR_SHMRING_CORRUPT, its cursor left alone', function () {
    const options = { capacity: CAPACITY, subscribers: 1 };
    const region = Region.create({ backing: 'sab', size: Broadcast.regionSize(options) });
    const publisher = Broadcast.create(region, options);
    const subscriber = Broadcast.subscribe(region);
    try {
      for (let i = 0; i < 40; i++) assert.ok(publisher.tryWrite(new Uint8Array(32))); // 1,600 bytes: a lap and more
      const ctl = new Int32Array(region.buffer, 0, B.COUNTERS_OFFSET / 4 + 16);
      const tail = Atomics.load(ctl, B.TAIL_I32);
      Atomics.store(ctl, B.LATEST_I32, (tail - 36) | 0); // a record of 40 bytes ends at the tail: it starts at tail - 40
      assert.throws(() => subscriber.tryRead(), { code: ErrorCodes.CORRUPT });
      Atomics.store(ctl, B.LATEST_I32, (tail - 40) | 0);
      assert.deepEqual(subscriber.tryRead(), new Uint8Array(32), 'the newest record, once LATEST names its start');
    } finally {
      subscriber.close();
      publisher.close();
      region.close();
    }
  });

  it('a lapped subscriber whose lap cannot be settled (the publisher died in the middle of a record) is not readable: its wait parks', async function () {
    const options = { capacity: CAPACITY, subscribers: 1 };
    const region = Region.create({ backing: 'sab', size: Broadcast.regionSize(options) });
    const publisher = Broadcast.create(region, options);
    const subscriber = Broadcast.subscribe(region);
    for (let i = 0; i < 40; i++) assert.ok(publisher.tryWrite(new Uint8Array(32))); // 1,600 bytes: a lap and more
    const ctl = new Int32Array(region.buffer, 0, B.COUNTERS_OFFSET / 4 + 16);
    // Observes the publisher's last TAIL store; then INTENT moves past it, as the publisher's step 1 of a record it
    // never finishes (below 2^32: the low word alone is the publication, as store64 does).
    const tail = Atomics.load(ctl, B.TAIL_I32);
    Atomics.store(ctl, B.INTENT.lo, tail + 64);
    assert.equal(subscriber.tryRead(), null);
    await assert.rejects(subscriber.waitReadable({ timeoutMs: 100 }), { code: ErrorCodes.TIMEOUT });
    // The record is finished (INTENT back at the tail, as after the publisher's TAIL store): readable again.
    Atomics.store(ctl, B.INTENT.lo, tail);
    await subscriber.waitReadable({ timeoutMs: 1000 });
    assert.ok(subscriber.tryRead() !== null);
    assert.ok(subscriber.lost > 0);
    subscriber.close();
    publisher.close();
  });
});
