/**
 * MpmcQueue's dead sides, with real processes that the tests SIGKILL
 * (fixtures/mpmc-peer.ts): a reader parked on an empty queue ends with
 * ERR_SHMRING_PEER_DEAD once every process registered as a producer is dead,
 * after everything they published; a writer parked on a full queue, once
 * every registered consumer is; while one of them lives, or before anyone
 * registered, the wait goes on. Who lives is what the kernel says of their
 * role locks, not their pids (docs/LAYOUT.md, "Liveness").
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { ErrorCodes, heldByAnyone, Region, type ShmringError } from '@shmring/core';
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

/** Whether any object of any process holds the producer (consumer) role lock of the queue. */
function roleHeld(region: Region, side: 'producer' | 'consumer'): boolean | undefined {
  return heldByAnyone(region, side === 'producer' ? L.PRODUCER_LOCK_OFFSET : L.CONSUMER_LOCK_OFFSET);
}

/** A pid no process has now: a child that ran and was reaped. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  return Number(child.stdout.toString());
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
      assert.equal(roleHeld(region, 'producer'), true);
      const got: string[] = [];
      const options = { peerTimeoutMs: PEER_TIMEOUT_MS, timeoutMs: 20_000 };
      const reading =
        verb === 'read()'
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
    assert.equal(
      reader.events.find((e) => e.event === 'end'),
      undefined,
      'the reader ended while producer 2 was alive',
    );
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
    while (queue.tryWrite(new Uint8Array([7]))) {
      /* fill */
    }
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
    assert.equal(
      writer.events.find((e) => e.event === 'end'),
      undefined,
      'the writer ended while the consumer was alive',
    );
    await consumer.kill();
    assert.equal((await writer.next('end', 5000)).code, ErrorCodes.PEER_DEAD);
  });

  it('a reader waits for the first producer: none registered yet is a state, not an error', async function () {
    const reading = track(queue.read({ peerTimeoutMs: 20, timeoutMs: 20_000 }));
    await sleep(STAYS_MS);
    assert.ok(reading.pending(), 'the read ended before any producer came');
    const producer = start({ role: 'producer', id: 5, count: 1 });
    const { value, error } = await reading.done;
    assert.deepEqual([...(value ?? [])], [5, 0], String(error));
    await producer.next('ready');
    await producer.kill();
    await assert.rejects(queue.read({ peerTimeoutMs: 20, timeoutMs: 20_000 }), { code: ErrorCodes.PEER_DEAD });
    // A new producer takes the role again, and readers wait again.
    assert.equal(roleHeld(region, 'producer'), false);
    const next = start({ role: 'producer', id: 6, count: 1 });
    await next.next('ready');
    assert.equal(roleHeld(region, 'producer'), true);
    assert.deepEqual([...(await queue.read({ peerTimeoutMs: 20, timeoutMs: 20_000 }))], [6, 0]);
  });

  it('a writer waits for the first consumer: none registered yet is a state, not an error', async function () {
    while (queue.tryWrite(new Uint8Array([1]))) {
      /* fill */
    }
    const writing = track(queue.write(new Uint8Array([2]), { peerTimeoutMs: 20, timeoutMs: 20_000 }));
    await sleep(STAYS_MS);
    assert.ok(writing.pending(), 'the write ended before any consumer came');
    const consumer = start({ role: 'consumer', take: 1 });
    assert.equal((await writing.done).error, undefined);
    await consumer.next('ready');
  });

  it('counts producers by their role locks, not their pids: a live producer whose pid word names no process keeps a reader waiting', async function () {
    const producer = start({ role: 'producer', id: 3, count: 1 });
    await producer.next('ready');
    assert.deepEqual([...queue.tryRead()!], [3, 0]);
    // What a reader outside the producer's PID namespace would find: a pid it cannot see.
    const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
    Atomics.store(ctl, L.PRODUCER_PID_I32, deadPid());
    Atomics.store(ctl, L.PRODUCER_START_I32, 12345);
    const reading = track(queue.read({ peerTimeoutMs: 20, timeoutMs: 20_000 }));
    await sleep(STAYS_MS);
    assert.ok(reading.pending(), 'PEER_DEAD although the producer lives');
    const killed = await producer.kill();
    const { error, at } = await reading.done;
    assert.equal(error?.code, ErrorCodes.PEER_DEAD);
    assert.ok(at - killed < NOTICE_BOUND_MS, `noticed ${at - killed} ms after the kill`);
  });

  it('a producer that detaches leaves readers waiting for the next one, not PEER_DEAD', async function () {
    const producer = MpmcQueue.attach(region);
    assert.ok(producer.tryWrite(new Uint8Array([7])));
    assert.equal(roleHeld(region, 'producer'), true);
    producer.detach();
    assert.equal(roleHeld(region, 'producer'), false);
    assert.throws(() => producer.tryWrite(new Uint8Array([8])), { code: ErrorCodes.CLOSED });
    assert.deepEqual([...queue.tryRead()!], [7]);
    const reading = track(queue.read({ peerTimeoutMs: 20, timeoutMs: 20_000 }));
    await sleep(STAYS_MS);
    assert.ok(reading.pending(), 'the read ended after a detach');
    const next = start({ role: 'producer', id: 4, count: 1 });
    assert.deepEqual([...((await reading.done).value ?? [])], [4, 0]);
    await next.next('ready');
  });
});
