/**
 * timeoutMs bounds the whole wait, its spin and poll included: a `spin`
 * (or `poll`) longer than `timeoutMs` ends at the wait's deadline, and
 * timeoutMs 0 tries once and times out at once, in every waiting verb (the
 * queues' Sync and Promise verbs, LatestValue's changed / changedSync,
 * select and selectSync). Each wait here can only time out: nothing is
 * ever published.
 */
import assert from 'node:assert/strict';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { Broadcast, LatestValue, MpmcQueue, select, selectSync, SpscRing } from '../src/index.js';

/** A spin of 2 s: a wait that honours it instead of its timeoutMs lasts far longer than LATE_MS. */
const LONG_SPIN = 2_000_000;
/** A wait that should end at once, or at its timeoutMs, is over within this much after it (a busy host included). */
const LATE_MS = 400;

function timedOut(err: unknown): boolean {
  assert.equal((err as ShmringError).code, ErrorCodes.TIMEOUT, String(err));
  return true;
}

/** Runs a Sync wait that must time out; returns how long it took (ms). */
function syncTimeout(wait: () => unknown): number {
  const started = performance.now();
  assert.throws(wait, timedOut);
  return performance.now() - started;
}

/**
 * Runs a Promise wait that must reject with ERR_SHMRING_TIMEOUT; returns how
 * long the call itself held the event loop and how long until it rejected (ms).
 */
async function asyncTimeout(wait: () => Promise<unknown>): Promise<{ heldMs: number; ms: number }> {
  const started = performance.now();
  const pending = wait();
  const heldMs = performance.now() - started;
  await assert.rejects(pending, timedOut);
  return { heldMs, ms: performance.now() - started };
}

function spscRing(): SpscRing {
  const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: 256 }) });
  return SpscRing.create(region, { capacity: 256 });
}

function mpmcQueue(): MpmcQueue {
  const region = Region.create({ backing: 'sab', size: MpmcQueue.regionSize({ capacity: 4, slotSize: 64 }) });
  return MpmcQueue.create(region, { capacity: 4, slotSize: 64 });
}

/** A full SpscRing: a write of `message` waits for room. */
function fullRing(): { ring: SpscRing; message: Uint8Array } {
  const ring = spscRing();
  const message = new Uint8Array(100);
  while (ring.tryWrite(message));
  return { ring, message };
}

describe('waits: timeoutMs bounds the spin and the poll', function () {
  this.timeout(60_000);

  describe('timeoutMs 0 with a spin of 2 s: one try, then ERR_SHMRING_TIMEOUT at once', () => {
    it('SpscRing readSync and writeSync', () => {
      const ring = spscRing();
      const readMs = syncTimeout(() => ring.readSync({ spin: LONG_SPIN, timeoutMs: 0 }));
      assert.ok(readMs < LATE_MS, `readSync took ${readMs.toFixed(0)} ms: it spun past timeoutMs 0`);
      const full = fullRing();
      const writeMs = syncTimeout(() => full.ring.writeSync(full.message, { spin: LONG_SPIN, timeoutMs: 0 }));
      assert.ok(writeMs < LATE_MS, `writeSync took ${writeMs.toFixed(0)} ms: it spun past timeoutMs 0`);
    });

    it('SpscRing read and write reject without holding the event loop', async () => {
      const ring = spscRing();
      const read = await asyncTimeout(() => ring.read({ spin: LONG_SPIN, timeoutMs: 0 }));
      assert.ok(read.heldMs < LATE_MS, `read() held the event loop ${read.heldMs.toFixed(0)} ms`);
      const full = fullRing();
      const write = await asyncTimeout(() => full.ring.write(full.message, { spin: LONG_SPIN, timeoutMs: 0 }));
      assert.ok(write.heldMs < LATE_MS, `write() held the event loop ${write.heldMs.toFixed(0)} ms`);
    });

    it('MpmcQueue readSync and read', async () => {
      const queue = mpmcQueue();
      const ms = syncTimeout(() => queue.readSync({ spin: LONG_SPIN, timeoutMs: 0 }));
      assert.ok(ms < LATE_MS, `readSync took ${ms.toFixed(0)} ms`);
      const read = await asyncTimeout(() => queue.read({ spin: LONG_SPIN, timeoutMs: 0 }));
      assert.ok(read.heldMs < LATE_MS, `read() held the event loop ${read.heldMs.toFixed(0)} ms`);
    });

    it('a Broadcast subscriber readSync and read', async () => {
      const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity: 1024 }) });
      const publisher = Broadcast.create(region, { capacity: 1024 });
      const sub = Broadcast.subscribe(region);
      try {
        const ms = syncTimeout(() => sub.readSync({ spin: LONG_SPIN, timeoutMs: 0 }));
        assert.ok(ms < LATE_MS, `readSync took ${ms.toFixed(0)} ms`);
        const read = await asyncTimeout(() => sub.read({ spin: LONG_SPIN, timeoutMs: 0 }));
        assert.ok(read.heldMs < LATE_MS, `read() held the event loop ${read.heldMs.toFixed(0)} ms`);
      } finally {
        sub.close();
        publisher.close();
      }
    });

    it('LatestValue changedSync and changed', async () => {
      const region = Region.create({ backing: 'sab', size: LatestValue.regionSize({ maxSize: 64 }) });
      const lv = LatestValue.create(region, { maxSize: 64 });
      try {
        const ms = syncTimeout(() => lv.changedSync(0, { spin: LONG_SPIN, timeoutMs: 0 }));
        assert.ok(ms < LATE_MS, `changedSync took ${ms.toFixed(0)} ms`);
        const changed = await asyncTimeout(() => lv.changed(0, { spin: LONG_SPIN, timeoutMs: 0 }));
        assert.ok(changed.heldMs < LATE_MS, `changed() held the event loop ${changed.heldMs.toFixed(0)} ms`);
      } finally {
        lv.close();
      }
    });

    it('selectSync and select', async () => {
      const rings = [spscRing(), mpmcQueue()];
      const ms = syncTimeout(() => selectSync(rings, { spin: LONG_SPIN, timeoutMs: 0 }));
      assert.ok(ms < LATE_MS, `selectSync took ${ms.toFixed(0)} ms`);
      const selected = await asyncTimeout(() => select(rings, { spin: LONG_SPIN, timeoutMs: 0 }));
      assert.ok(selected.heldMs < LATE_MS, `select held the event loop ${selected.heldMs.toFixed(0)} ms`);
    });
  });

  describe('a spin longer than timeoutMs ends at the deadline', () => {
    const TIMEOUT_MS = 100;

    it('readSync, writeSync and selectSync time out at about timeoutMs', () => {
      const ring = spscRing();
      const full = fullRing();
      for (const [verb, wait] of [
        ['readSync', () => ring.readSync({ spin: LONG_SPIN, timeoutMs: TIMEOUT_MS })],
        ['writeSync', () => full.ring.writeSync(full.message, { spin: LONG_SPIN, timeoutMs: TIMEOUT_MS })],
        ['selectSync', () => selectSync([ring], { spin: LONG_SPIN, timeoutMs: TIMEOUT_MS })],
      ] as const) {
        const ms = syncTimeout(wait);
        assert.ok(ms >= TIMEOUT_MS - 1, `${verb} timed out after ${ms.toFixed(1)} ms, before its timeoutMs`);
        assert.ok(ms < TIMEOUT_MS + LATE_MS, `${verb} took ${ms.toFixed(0)} ms with timeoutMs ${TIMEOUT_MS}: it spun past it`);
      }
    });

    it('read and select hold the event loop no longer than timeoutMs', async () => {
      const ring = spscRing();
      for (const [verb, wait] of [
        ['read', () => ring.read({ spin: LONG_SPIN, timeoutMs: TIMEOUT_MS })],
        ['select', () => select([ring], { spin: LONG_SPIN, timeoutMs: TIMEOUT_MS })],
      ] as const) {
        const { heldMs, ms } = await asyncTimeout(wait);
        assert.ok(heldMs < TIMEOUT_MS + LATE_MS, `${verb} held the event loop ${heldMs.toFixed(0)} ms with timeoutMs ${TIMEOUT_MS}`);
        assert.ok(ms < TIMEOUT_MS + LATE_MS, `${verb} took ${ms.toFixed(0)} ms with timeoutMs ${TIMEOUT_MS}`);
      }
    });
  });

  it('a poll window does not outlast timeoutMs 0: read and select reject before the next turn of the event loop', async () => {
    const ring = spscRing();
    for (const [verb, wait] of [
      ['read', () => ring.read({ poll: 1_000_000, spin: 0, timeoutMs: 0 })],
      ['select', () => select([ring], { poll: 1_000_000, spin: 0, timeoutMs: 0 })],
    ] as const) {
      let turned = false;
      setImmediate(() => {
        turned = true;
      });
      await assert.rejects(wait(), timedOut);
      assert.equal(turned, false, `${verb} polled a turn of the event loop past timeoutMs 0`);
      await new Promise((resolve) => setImmediate(resolve));
    }
  });
});
