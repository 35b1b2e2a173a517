/**
 * A lossless Broadcast publisher that never waits (tryWrite only) is held
 * back by a live subscriber that does not read, but not for ever by one
 * that died: once the ring has been full for the publisher's peerTimeoutMs,
 * tryWrite frees the slots of dead subscribers (a SIGKILLed process, a
 * terminated worker thread) as a parked write's peer check does, and the
 * live subscribers still get every message.
 */
import { strict as assert } from 'node:assert';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { Broadcast, type BroadcastPublisher, type BroadcastSubscriber } from '../src/index.js';
import * as B from '../src/broadcast-layout.js';
import { broadcastPayload, Tally } from './fixtures/broadcast-peer.js';
import { LinePeer } from './helpers.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/broadcast-peer.js', import.meta.url));
const CAPACITY = 1024;
const PEER_TIMEOUT_MS = 300;

/** Fills the ring with tryWrite (message numbers from `next`); returns the next number. */
function fill(pub: BroadcastPublisher, next: number): number {
  while (pub.tryWrite(broadcastPayload(next), next & 0xffff)) next++;
  return next;
}

/**
 * Publishes messages from..to-1 with tryWrite alone, reading `sub` (this
 * thread's subscriber) between tries, until done or `deadlineMs` passed;
 * returns the number of the next message not published.
 */
async function publishNeverWaiting(
  pub: BroadcastPublisher,
  sub: BroadcastSubscriber,
  tally: Tally,
  from: number,
  to: number,
  deadlineMs: number,
): Promise<number> {
  const deadline = performance.now() + deadlineMs;
  let i = from;
  while (i < to && performance.now() < deadline) {
    if (pub.tryWrite(broadcastPayload(i), i & 0xffff)) {
      i++;
      continue;
    }
    for (let m = sub.tryRead(); m !== null; m = sub.tryRead()) tally.see(m, sub.lastType);
    await new Promise((r) => setImmediate(r));
  }
  return i;
}

/** Keeps trying one tryWrite (reading `sub` meanwhile) for `ms`; whether it ever succeeded. */
async function triesFor(pub: BroadcastPublisher, sub: BroadcastSubscriber, tally: Tally, i: number, ms: number): Promise<boolean> {
  return (await publishNeverWaiting(pub, sub, tally, i, i + 1, ms)) > i;
}

describe('Broadcast: a lossless publisher that only uses tryWrite and a dead subscriber', function () {
  this.timeout(60_000);

  it('a SIGKILLed subscriber process stops holding tryWrite back within peerTimeoutMs; a live one that does not read never does', async function () {
    const name = `shmring-bcast-dead-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
    // Created inside the try: whatever fails after Region.create, the finally unlinks the name from /dev/shm.
    let region: Region | undefined;
    let pub: BroadcastPublisher | undefined;
    let sub: BroadcastSubscriber | undefined;
    let silent: LinePeer | undefined;
    try {
      region = Region.create({ backing: 'posix', name, size: Broadcast.regionSize({ capacity: CAPACITY }) });
      pub = Broadcast.create(region, { capacity: CAPACITY, lossless: true, peerTimeoutMs: PEER_TIMEOUT_MS });
      sub = Broadcast.subscribe(region);
      const tally = new Tally(sub);
      silent = new LinePeer(FIXTURE, [name, 'hold', '0']);
      await silent.line('ready');
      let next = fill(pub, 0);
      assert.ok(next > 0);
      // The silent subscriber lives: tryWrite goes on refusing, well past peerTimeoutMs.
      assert.equal(await triesFor(pub, sub, tally, next, 3 * PEER_TIMEOUT_MS), false, 'a live subscriber was dropped');
      await silent.kill();
      const killed = performance.now();
      assert.equal(await triesFor(pub, sub, tally, next, 5_000), true, 'tryWrite is still held back by the dead subscriber');
      const after = performance.now() - killed;
      next++;
      console.log(`      tryWrite went on ${Math.round(after)} ms after the kill (peerTimeoutMs ${PEER_TIMEOUT_MS})`);
      assert.ok(after < PEER_TIMEOUT_MS + 2_000, `held back ${Math.round(after)} ms after the kill`);
      const N = next + 5_000;
      assert.equal(await publishNeverWaiting(pub, sub, tally, next, N, 20_000), N);
      for (let m = sub.tryRead(); m !== null; m = sub.tryRead()) tally.see(m, sub.lastType);
      assert.deepEqual(tally.report(), { received: N, lost: 0, torn: 0, disorder: 0, first: 0, last: N - 1, lostAtFirst: 0 });
    } finally {
      await silent?.kill();
      sub?.close();
      pub?.close();
      region?.close();
      region?.unlink();
    }
  });

  it('a terminated subscriber worker (a SharedArrayBuffer region) stops holding tryWrite back within peerTimeoutMs', async function () {
    const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity: CAPACITY }) });
    const pub = Broadcast.create(region, { capacity: CAPACITY, lossless: true, peerTimeoutMs: PEER_TIMEOUT_MS });
    const sub = Broadcast.subscribe(region);
    const tally = new Tally(sub);
    const worker = new Worker(FIXTURE, { workerData: { sab: region.buffer, part: 'hold', arg: 0 } });
    try {
      await new Promise<void>((resolve, reject) => {
        worker.once('message', () => resolve());
        worker.once('error', reject);
      });
      const next = fill(pub, 0);
      assert.equal(await triesFor(pub, sub, tally, next, 3 * PEER_TIMEOUT_MS), false, 'a live worker subscriber was dropped');
      await worker.terminate();
      const ended = performance.now();
      assert.equal(await triesFor(pub, sub, tally, next, 5_000), true, 'tryWrite is still held back by the ended worker');
      assert.ok(performance.now() - ended < PEER_TIMEOUT_MS + 2_000);
      for (let m = sub.tryRead(); m !== null; m = sub.tryRead()) tally.see(m, sub.lastType);
      assert.deepEqual(tally.report(), { received: next + 1, lost: 0, torn: 0, disorder: 0, first: 0, last: next, lostAtFirst: 0 });
    } finally {
      await worker.terminate();
      sub.close();
      pub.close();
      region.close();
    }
  });

  it("subscribers of different threads hold different slot tokens, each thread's first one included (a sweep that judged one dead must not free the other's slot)", async function () {
    const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity: CAPACITY }) });
    const pub = Broadcast.create(region, { capacity: CAPACITY, lossless: true });
    const workers = [0, 1].map(() => new Worker(FIXTURE, { workerData: { sab: region.buffer, part: 'hold', arg: 0 } }));
    try {
      // Each worker has just loaded the module: its subscriber takes that thread's first token.
      await Promise.all(
        workers.map(
          (worker) =>
            new Promise<void>((resolve, reject) => {
              worker.once('message', () => resolve());
              worker.once('error', reject);
            }),
        ),
      );
      const words = new Int32Array(region.buffer);
      const owners = Array.from({ length: B.DEFAULT_SUBSCRIBERS }, (_, i) => Atomics.load(words, B.slotOffset(i) / 4 + B.SLOT_OWNER_I32));
      const taken = owners.filter((owner) => owner !== 0);
      assert.equal(taken.length, 2, `slots taken: ${owners.join(', ')}`);
      assert.notEqual(taken[0], taken[1], 'two threads drew the same token');
      for (const owner of taken) assert.ok(owner > 0, `a token out of [1, 2^31): ${owner}`);
    } finally {
      await Promise.all(workers.map((worker) => worker.terminate()));
      pub.close();
      region.close();
    }
  });

  it('a subscriber caught between its slot claim and its pid words (a SharedArrayBuffer region) keeps its slot through a sweep while its thread lives, and loses it once the thread ends', async function () {
    const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity: CAPACITY, subscribers: 1 }) });
    const pub = Broadcast.create(region, { capacity: CAPACITY, lossless: true, subscribers: 1, peerTimeoutMs: PEER_TIMEOUT_MS });
    const halfway = claimHalfway(region);
    const { worker, owner } = halfway;
    const words = new Int32Array(region.buffer);
    try {
      const claim = await halfway.claim;
      assert.equal(Atomics.load(words, owner), claim);
      // The claimed slot's CURSOR (0) holds the publisher back once the ring is full: its tryWrite sweeps the slots
      // after peerTimeoutMs (and every quarter of it after that).
      const next = fill(pub, 0);
      assert.ok(next > 0);
      await new Promise((r) => setTimeout(r, PEER_TIMEOUT_MS + 100));
      assert.equal(pub.tryWrite(broadcastPayload(next)), false, 'the sweep freed the slot of a claimant that lives');
      assert.equal(Atomics.load(words, owner), claim, 'the slot was taken from its live claimant');
      await new Promise((r) => setTimeout(r, PEER_TIMEOUT_MS / 2));
      assert.equal(pub.tryWrite(broadcastPayload(next)), false, 'a later sweep freed the slot of a claimant that lives');
      assert.equal(Atomics.load(words, owner), claim);
      // The claimant's thread ends half-way: the next sweep frees its slot, and the publisher goes on.
      await worker.terminate();
      const ended = performance.now();
      let wrote = false;
      while (!wrote && performance.now() - ended < 5_000) {
        wrote = pub.tryWrite(broadcastPayload(next));
        if (!wrote) await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(wrote, true, 'tryWrite is still held back by a claimant whose thread ended');
      assert.equal(Atomics.load(words, owner), 0);
    } finally {
      await worker.terminate();
      pub.close();
      region.close();
    }
  });

  it('a create after the publisher let go does not lay a new Broadcast out under a subscriber caught between its slot claim and its pid words (a SharedArrayBuffer region)', async function () {
    const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity: CAPACITY, subscribers: 1 }) });
    Broadcast.create(region, { capacity: CAPACITY, lossless: true, subscribers: 1 }).detach();
    const { worker, claim } = claimHalfway(region);
    try {
      await claim;
      // Other options: a create could only lay a new Broadcast out, which it must not while a claimant lives.
      assert.throws(() => Broadcast.create(region, { capacity: CAPACITY / 2, subscribers: 1 }), { code: ErrorCodes.INVALID_ARGUMENT });
      await worker.terminate();
      Broadcast.create(region, { capacity: CAPACITY / 2, subscribers: 1 }).close(); // nobody lives there now
    } finally {
      await worker.terminate();
      region.close();
    }
  });

  it('checks peerTimeoutMs: a TypeError for a non-number, a RangeError for a negative one or NaN', function () {
    const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity: CAPACITY }) });
    assert.throws(
      () => Broadcast.create(region, { capacity: CAPACITY, peerTimeoutMs: '5' as unknown as number }),
      (err: ShmringError) =>
        err instanceof TypeError && err.code === ErrorCodes.INVALID_ARGUMENT && /Broadcast.create: peerTimeoutMs="5"/.test(err.message),
    );
    for (const bad of [-1, NaN]) {
      assert.throws(
        () => Broadcast.create(region, { capacity: CAPACITY, peerTimeoutMs: bad }),
        (err: ShmringError) => err instanceof RangeError && err.code === ErrorCodes.INVALID_ARGUMENT && /peerTimeoutMs/.test(err.message),
      );
    }
    const pub = Broadcast.create(region, { capacity: CAPACITY, lossless: true, peerTimeoutMs: Infinity });
    assert.equal(pub.peerTimeoutMs, Infinity);
    pub.close();
    region.close();
  });
  for (const lossless of [true, false]) {
    it(`a terminated subscriber worker's slot goes to the next subscriber, with no publication to sweep it (${lossless ? 'lossless' : 'lossy'}, a SharedArrayBuffer region)`, async function () {
      const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity: CAPACITY, subscribers: 1 }) });
      const pub = Broadcast.create(region, { capacity: CAPACITY, lossless, subscribers: 1 });
      const worker = new Worker(FIXTURE, { workerData: { sab: region.buffer, part: 'hold', arg: 0 } });
      const slot = new Int32Array(region.buffer, B.slotOffset(0), B.SLOT_OWNER_I32 + 1); // slot 0's words
      let sub: BroadcastSubscriber | undefined;
      try {
        await new Promise<void>((resolve, reject) => {
          worker.once('message', () => resolve());
          worker.once('error', reject);
        });
        // Observes the worker's claim of the only slot (its token, stored last).
        const workers = Atomics.load(slot, B.SLOT_OWNER_I32);
        assert.notEqual(workers, 0, "the worker's subscriber took the slot");
        if (lossless) assert.throws(() => Broadcast.subscribe(region), { code: ErrorCodes.BUSY }, 'a live worker holds the only slot');
        await worker.terminate();
        // Nothing published since: no sweep of a parked publisher freed the slot.
        sub = Broadcast.subscribe(region);
        // Observes our own subscriber's token in the slot.
        const ours = Atomics.load(slot, B.SLOT_OWNER_I32);
        assert.ok(ours !== 0 && ours !== workers, `the slot still holds the ended worker's token ${workers}`);
        assert.equal(pub.tryWrite(Uint8Array.of(7)), true);
        assert.deepEqual([...sub.tryRead()!], [7]);
      } finally {
        await worker.terminate();
        sub?.close();
        pub.close();
        region.close();
      }
    });
  }
});

/**
 * A worker takes slot 0 of the Broadcast in `region` (a SharedArrayBuffer) as Broadcast.subscribe's first
 * step does without a file (a CAS of OWNER from 0 to its thread id negated), then stops there: its START and
 * PID words are never stored, as if descheduled. `claim` resolves with the OWNER it stored.
 */
function claimHalfway(region: Region): { worker: Worker; owner: number; claim: Promise<number> } {
  const owner = B.slotOffset(0) / 4 + B.SLOT_OWNER_I32;
  const worker = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     const tid = Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop());
     const words = new Int32Array(workerData.sab);
     parentPort.postMessage({ tid, seen: Atomics.compareExchange(words, workerData.owner, 0, -tid) });
     setInterval(() => {}, 60_000);`,
    { eval: true, workerData: { sab: region.buffer, owner } },
  );
  const claim = new Promise<number>((resolve, reject) => {
    worker.once('message', ({ tid, seen }: { tid: number; seen: number }) =>
      seen === 0 ? resolve(-tid) : reject(new Error(`slot 0 was not free (OWNER ${seen})`)),
    );
    worker.once('error', reject);
  });
  claim.catch(() => {});
  return { worker, owner, claim };
}
