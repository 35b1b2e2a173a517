/**
 * MpmcQueue's dead sides, with real processes that the tests SIGKILL
 * (fixtures/mpmc-peer.ts): a reader parked on an empty queue ends with
 * ERR_SHMRING_PEER_DEAD once every process registered as a producer is dead,
 * after everything they published; a writer parked on a full queue, once
 * every registered consumer is; while one of them lives, or before anyone
 * registered, the wait goes on (docs/LAYOUT.md, "Rosters").
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { MpmcQueue, select, SpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import { MpmcPeer, type MpmcPeerConfig } from './fixtures/mpmc-peer.js';
import { memfdUnavailable } from './helpers.js';

const PEER_TIMEOUT_MS = 200;
/** A death must be noticed within this long after the kill. */
const NOTICE_BOUND_MS = 1000;
/** How long a wait must stay pending to show it is not ended: longer than the peer timeout. */
const STAYS_MS = 3 * PEER_TIMEOUT_MS;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Settled<T> {
  value?: T;
  error?: ShmringError;
  at: number;
}

/** A promise's outcome: `done` resolves with it once settled (when, too); `pending()` says whether it still is. */
function track<T>(promise: Promise<T>): { pending(): boolean; done: Promise<Settled<T>> } {
  let settled = false;
  const done = promise.then(
    (value) => ({ value, at: performance.now() }),
    (error: ShmringError) => ({ error, at: performance.now() }),
  );
  void done.then(() => (settled = true));
  return { pending: () => !settled, done };
}

/** The roster words of one side, read the way LAYOUT.md lays them out. */
function roster(region: Region, side: 'producers' | 'consumers'): { untracked: number; pids: number[] } {
  const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
  const first = side === 'producers' ? L.PRODUCER_ROSTER_I32 : L.CONSUMER_ROSTER_I32;
  const pids: number[] = [];
  for (let i = 0; i < L.ROSTER_ENTRIES; i++) pids.push(Atomics.load(ctl, first + i * (L.ROSTER_ENTRY / 4) + L.ROSTER_PID_I32));
  return { untracked: Atomics.load(ctl, side === 'producers' ? L.PRODUCERS_UNTRACKED_I32 : L.CONSUMERS_UNTRACKED_I32), pids };
}

/** Start time (field 22 of /proc/<pid>/stat, low 32 bits) of a live process. */
function startOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  return Number(BigInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!) & 0xffffffffn) | 0;
}

describe('MpmcQueue: ERR_SHMRING_PEER_DEAD once no producer (consumer) is left', function () {
  this.timeout(60_000);
  let region: Region;
  let queue: MpmcQueue;
  const peers: MpmcPeer[] = [];

  before(function () {
    const why = memfdUnavailable();
    if (why !== undefined) this.skip();
  });

  beforeEach(function () {
    const options = { capacity: 8, slotSize: 8 };
    region = Region.create({ backing: 'memfd', size: MpmcQueue.regionSize(options), name: 'shmring-mpmc-dead' });
    queue = MpmcQueue.create(region, options);
  });

  afterEach(async function () {
    for (const peer of peers.splice(0)) await peer.kill();
    queue.close();
    region.close();
  });

  function start(config: MpmcPeerConfig): MpmcPeer {
    const peer = new MpmcPeer(config, region.fd);
    peers.push(peer);
    return peer;
  }

  for (const verb of ['read()', 'for await'] as const) {
    it(`a ${verb} parked on an empty queue gets every message, stays parked while one producer lives, and ends with PEER_DEAD once all are killed`, async function () {
      const p1 = start({ role: 'producer', id: 1, count: 3 });
      const p2 = start({ role: 'producer', id: 2, count: 3 });
      await Promise.all([p1.next('ready'), p2.next('ready')]);
      assert.deepEqual(roster(region, 'producers').pids.filter((pid) => pid !== 0).sort(), [p1.pid, p2.pid].sort());
      const got: string[] = [];
      const options = { peerTimeoutMs: PEER_TIMEOUT_MS, timeoutMs: 20_000 };
      const reading = verb === 'read()'
        ? (async () => {
          for (;;) got.push((await queue.read(options)).join());
        })()
        : (async () => {
          for await (const m of queue.messages(options)) got.push(m.join());
          throw new Error('the iteration ended without an error');
        })();
      const outcome = track(reading);
      await p1.kill();
      await sleep(STAYS_MS);
      assert.ok(outcome.pending(), 'the wait ended while producer 2 was alive');
      const killed = await p2.kill();
      const { error, at } = await outcome.done;
      assert.equal(error?.code, ErrorCodes.PEER_DEAD, String(error));
      assert.ok(at - killed < NOTICE_BOUND_MS, `noticed ${at - killed} ms after the kill`);
      assert.deepEqual(got.sort(), ['1,0', '1,1', '1,2', '2,0', '2,1', '2,2']);
    });
  }

  it('a select() over an empty queue ends with PEER_DEAD naming the entry once every producer is killed', async function () {
    const idle = SpscRing.create(Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: 64 }) }), { capacity: 64 });
    const producer = start({ role: 'producer', id: 1, count: 1 });
    await producer.next('ready');
    assert.deepEqual([...queue.tryRead()!], [1, 0]);
    const selecting = track(select([idle, queue], { peerTimeoutMs: PEER_TIMEOUT_MS, timeoutMs: 20_000 }));
    await sleep(STAYS_MS);
    assert.ok(selecting.pending(), 'select ended while the producer was alive');
    await producer.kill();
    const { error } = await selecting.done;
    assert.equal(error?.code, ErrorCodes.PEER_DEAD, String(error));
    assert.equal((error as ShmringError & { index?: number }).index, 1);
  });

  it('a readSync parked in another process ends with PEER_DEAD once every producer is killed', async function () {
    const p1 = start({ role: 'producer', id: 1, count: 2 });
    const p2 = start({ role: 'producer', id: 2, count: 2 });
    await Promise.all([p1.next('ready'), p2.next('ready')]);
    const reader = start({ role: 'sync-reader', peerTimeoutMs: PEER_TIMEOUT_MS });
    await reader.next('reading');
    await p1.kill();
    await sleep(STAYS_MS);
    assert.equal(reader.events.find((e) => e.event === 'end'), undefined, 'the reader ended while producer 2 was alive');
    await p2.kill();
    const end = await reader.next('end', 5000);
    assert.equal(end.code, ErrorCodes.PEER_DEAD);
    assert.deepEqual((end.got as number[][]).map((m) => m.join()).sort(), ['1,0', '1,1', '2,0', '2,1']);
  });

  it('delivers what a producer published after a slot that a dead producer claimed, then PEER_DEAD', async function () {
    const claimer = start({ role: 'claimer', id: 1 }); // publishes position 0, claims position 1 and stops
    await claimer.next('claimed');
    const producer = start({ role: 'producer', id: 2, count: 3 }); // positions 2, 3, 4
    await producer.next('ready');
    await Promise.all([claimer.kill(), producer.kill()]);
    const got: string[] = [];
    const error = await (async () => {
      for (;;) got.push((await queue.read({ peerTimeoutMs: PEER_TIMEOUT_MS, timeoutMs: 20_000 })).join());
    })().catch((err: ShmringError) => err);
    assert.equal(error.code, ErrorCodes.PEER_DEAD, String(error));
    assert.deepEqual(got, ['1,0', '2,0', '2,1', '2,2']);
    assert.equal(queue.recoveredSlots, 1);
  });

  it('a write() parked on a full queue ends with PEER_DEAD once every consumer is killed, not before', async function () {
    queue.tryWrite(new Uint8Array([9]));
    const c1 = start({ role: 'consumer', take: 1 });
    await c1.next('ready');
    queue.tryWrite(new Uint8Array([8]));
    const c2 = start({ role: 'consumer', take: 1 });
    await c2.next('ready');
    while (queue.tryWrite(new Uint8Array([7]))) { /* fill */ }
    const writing = track(queue.write(new Uint8Array([6]), { peerTimeoutMs: PEER_TIMEOUT_MS, timeoutMs: 20_000 }));
    await c1.kill();
    await sleep(STAYS_MS);
    assert.ok(writing.pending(), 'the write ended while consumer 2 was alive');
    const killed = await c2.kill();
    const { error, at } = await writing.done;
    assert.equal(error?.code, ErrorCodes.PEER_DEAD, String(error));
    assert.ok(at - killed < NOTICE_BOUND_MS, `noticed ${at - killed} ms after the kill`);
    assert.equal(queue.size, queue.capacity, 'the queue still holds what was written');
  });

  it('a writeSync parked in another process ends with PEER_DEAD once the consumer is killed', async function () {
    queue.tryWrite(new Uint8Array([9]));
    const consumer = start({ role: 'consumer', take: 1 });
    await consumer.next('ready');
    const writer = start({ role: 'sync-writer', peerTimeoutMs: PEER_TIMEOUT_MS });
    await writer.next('full');
    await sleep(STAYS_MS);
    assert.equal(writer.events.find((e) => e.event === 'end'), undefined, 'the writer ended while the consumer was alive');
    await consumer.kill();
    assert.equal((await writer.next('end', 5000)).code, ErrorCodes.PEER_DEAD);
  });

  it('a reader waits for the first producer: none registered yet is a state, not an error', async function () {
    const reading = track(queue.read({ peerTimeoutMs: 20, timeoutMs: 20_000 }));
    await sleep(STAYS_MS);
    assert.ok(reading.pending(), 'the read ended before any producer came');
    const producer = start({ role: 'producer', id: 5, count: 1 });
    const { value, error } = await reading.done;
    assert.deepEqual([...value ?? []], [5, 0], String(error));
    await producer.next('ready');
    await producer.kill();
    await assert.rejects(queue.read({ peerTimeoutMs: 20, timeoutMs: 20_000 }), { code: ErrorCodes.PEER_DEAD });
    // A new producer takes the dead one's entry, and readers wait again.
    const next = start({ role: 'producer', id: 6, count: 1 });
    await next.next('ready');
    assert.deepEqual(roster(region, 'producers').pids.filter((pid) => pid !== 0), [next.pid]);
    assert.deepEqual([...await queue.read({ peerTimeoutMs: 20, timeoutMs: 20_000 })], [6, 0]);
  });

  it('a writer waits for the first consumer: none registered yet is a state, not an error', async function () {
    while (queue.tryWrite(new Uint8Array([1]))) { /* fill */ }
    const writing = track(queue.write(new Uint8Array([2]), { peerTimeoutMs: 20, timeoutMs: 20_000 }));
    await sleep(STAYS_MS);
    assert.ok(writing.pending(), 'the write ended before any consumer came');
    const consumer = start({ role: 'consumer', take: 1 });
    assert.equal((await writing.done).error, undefined);
    await consumer.next('ready');
  });

  it('registers a process anew when its pid is in the roster with another start time (a dead process that had the pid before)', function () {
    const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
    const first = L.PRODUCER_ROSTER_I32;
    const stale = (startOf(process.pid) + 1) | 0;
    ctl[first + L.ROSTER_START_I32] = stale;
    ctl[first + L.ROSTER_PID_I32] = process.pid;
    assert.ok(queue.tryWrite(new Uint8Array([1])));
    const next = first + L.ROSTER_ENTRY / 4;
    assert.deepEqual(
      [ctl[first + L.ROSTER_PID_I32], ctl[first + L.ROSTER_START_I32], ctl[next + L.ROSTER_PID_I32], ctl[next + L.ROSTER_START_I32]],
      [process.pid, stale, process.pid, startOf(process.pid)],
    );
    // Once registered, another object of this process adds nothing.
    assert.ok(MpmcQueue.attach(region).tryWrite(new Uint8Array([2])));
    assert.deepEqual(roster(region, 'producers').pids.filter((pid) => pid !== 0), [process.pid, process.pid]);
  });

  it('never reports the producers dead while one went unwatched because the roster was full (UNTRACKED)', async function () {
    const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
    const entry = (i: number): number => L.PRODUCER_ROSTER_I32 + i * (L.ROSTER_ENTRY / 4);
    // Every entry taken by a live process (our parent): a newcomer finds no room.
    for (let i = 0; i < L.ROSTER_ENTRIES; i++) {
      ctl[entry(i) + L.ROSTER_START_I32] = startOf(process.ppid);
      ctl[entry(i) + L.ROSTER_PID_I32] = process.ppid;
    }
    const producer = start({ role: 'producer', id: 3, count: 1 });
    await producer.next('ready');
    assert.deepEqual(roster(region, 'producers'), { untracked: 1, pids: Array<number>(L.ROSTER_ENTRIES).fill(process.ppid) });
    assert.deepEqual([...queue.tryRead()!], [3, 0]);
    await producer.kill();
    // Now every entry names a dead process; the unwatched one keeps readers waiting.
    for (let i = 0; i < L.ROSTER_ENTRIES; i++) ctl[entry(i) + L.ROSTER_PID_I32] = producer.pid;
    const reading = track(queue.read({ peerTimeoutMs: 20, timeoutMs: 20_000 }));
    await sleep(STAYS_MS);
    assert.ok(reading.pending(), 'PEER_DEAD although a producer went unwatched');
    Atomics.store(ctl, L.PRODUCERS_UNTRACKED_I32, 0);
    assert.equal((await reading.done).error?.code, ErrorCodes.PEER_DEAD);
  });
});
