/**
 * MpscRing with real producers: child processes and worker threads
 * (fixtures/mpsc-peer.ts) writing at once to one consumer; a producer
 * SIGKILLed between claim and commit, whose record the consumer skips once
 * it has blocked the ring for peerTimeoutMs (and not while the producer
 * lives); the roles (one consumer; a producer's close() is its own, the
 * consumer's closes the ring); bad input and inspect.
 */
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { ErrorCodes, Region } from '@shmring/core';
import { describeRing, MpscRing, select, selectSync, SpscRing } from '../src/index.js';
import { FIXTURE_PATH, message, type MpscPeerConfig } from './fixtures/mpsc-peer.js';
import { deadThreadId, memfdUnavailable, UNSHARE, unshareRefused } from './helpers.js';
import * as M from '../src/mpsc-layout.js';
import * as L from '../src/layout.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface PeerEvent {
  event: string;
  [key: string]: unknown;
}

/** A child process running the fixture, with its events. */
class Peer {
  readonly child: ChildProcess;
  readonly events: PeerEvent[] = [];
  stderr = '';
  readonly exited: Promise<void>;

  /** `prefix`: a command the fixture runs under (unshare). */
  constructor(config: MpscPeerConfig, fd: number, prefix: string[] = []) {
    const [command, ...args] = [...prefix, process.execPath, FIXTURE_PATH, JSON.stringify(config)];
    this.child = spawn(command!, args, { stdio: ['ignore', 'pipe', 'pipe', fd] });
    let buffered = '';
    this.child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) this.events.push(JSON.parse(line) as PeerEvent);
    });
    this.child.stderr!.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.exited = new Promise((r) => this.child.on('close', () => r()));
  }

  async next(name: string, timeoutMs = 30_000): Promise<PeerEvent> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = this.events.find((e) => e.event === name || e.event === 'error');
      if (found?.event === 'error') throw new Error(`the child failed: ${String(found.message)}`);
      if (found !== undefined) return found;
      if (performance.now() > deadline)
        throw new Error(`no '${name}' from the child; events ${JSON.stringify(this.events)}; stderr ${this.stderr}`);
      await sleep(5);
    }
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }
}

/**
 * Reads until `total` messages came (read(), the event loop free for the
 * peers' pipes), checking exactly-once and per-producer order; returns the
 * count per producer.
 */
async function consume(ring: MpscRing, total: number, peerTimeoutMs?: number): Promise<Map<number, number>> {
  const next = new Map<number, number>();
  for (let n = 0; n < total; n++) {
    const m = await ring.read({ timeoutMs: 30_000, peerTimeoutMs });
    assert.equal(m.length, 8);
    const view = new DataView(m.buffer, m.byteOffset, m.byteLength);
    const id = view.getUint32(0, true);
    const seq = view.getUint32(4, true);
    const expected = next.get(id) ?? 0;
    assert.equal(seq, expected, `producer ${id}: message ${seq} came where ${expected} was due (lost, duplicated or reordered)`);
    next.set(id, seq + 1);
  }
  return next;
}

describe('MpscRing with producer processes and threads', function () {
  this.timeout(60_000);
  let region: Region;
  let ring: MpscRing;
  const peers: Peer[] = [];
  const CAPACITY = 4096;

  before(function () {
    if (memfdUnavailable() !== undefined) this.skip();
  });

  beforeEach(function () {
    region = Region.create({ backing: 'memfd', size: MpscRing.regionSize({ capacity: CAPACITY }) });
    ring = MpscRing.create(region, { capacity: CAPACITY });
  });

  afterEach(async function () {
    if (this.currentTest?.state === 'failed') {
      for (const peer of peers) console.log(`      peer ${peer.child.pid}: events ${JSON.stringify(peer.events)} stderr ${peer.stderr}`);
      console.log(`      consumer: head ${ring.size} bytes in the ring, unblocked ${ring.unblockedRecords}`);
    }
    for (const peer of peers.splice(0)) await peer.kill();
    ring.close();
    region.close();
  });

  const start = (config: MpscPeerConfig, prefix?: string[]): Peer => {
    const peer = new Peer(config, region.fd!, prefix);
    peers.push(peer);
    return peer;
  };

  it('four producer processes: every message arrives exactly once, in order per producer', async function () {
    const COUNT = 20_000;
    const producers = [1, 2, 3, 4].map((id) => start({ role: 'producer', id, count: COUNT }));
    const got = await consume(ring, 4 * COUNT);
    for (const id of [1, 2, 3, 4]) assert.equal(got.get(id), COUNT, `producer ${id}`);
    for (const p of producers) await p.next('done');
    assert.equal(ring.tryRead(), null, 'a message more than was written');
    assert.equal(ring.size, 0);
    assert.equal(ring.closed, false, "the producers' close() must not close the ring");
  });

  it('three worker-thread producers over a SharedArrayBuffer region', async function () {
    const COUNT = 10_000;
    const sabRegion = Region.create({ backing: 'sab', size: MpscRing.regionSize({ capacity: 1024 }) });
    const sabRing = MpscRing.create(sabRegion, { capacity: 1024 });
    const workers = [1, 2, 3].map(
      (id) =>
        new Worker(new URL(`file://${FIXTURE_PATH}`), {
          workerData: { mpscPeer: true, config: { role: 'producer', id, count: COUNT }, sab: sabRegion.buffer },
        }),
    );
    try {
      const done = workers.map(
        (w) =>
          new Promise<void>((resolveDone, reject) => {
            w.on('message', (e: PeerEvent) => (e.event === 'done' ? resolveDone() : undefined));
            w.on('error', reject);
          }),
      );
      const got = await consume(sabRing, 3 * COUNT);
      for (const id of [1, 2, 3]) assert.equal(got.get(id), COUNT);
      await Promise.all(done);
      assert.equal(sabRing.tryRead(), null);
    } finally {
      await Promise.all(workers.map((w) => w.terminate()));
      sabRing.close();
    }
  });

  it('a producer killed between claim and commit: its record is skipped after peerTimeoutMs, not before, and the rest arrives', async function () {
    const PEER_TIMEOUT_MS = 300;
    ring.peerTimeoutMs = PEER_TIMEOUT_MS;
    const claimer = start({ role: 'claimer', id: 9 });
    await claimer.next('claimed');
    // Its first message is committed; the second is claimed and blocks everything behind it.
    const first = ring.tryRead();
    assert.deepEqual([...first!], [...message(9, 0)]);
    const others = [1, 2].map((id) => start({ role: 'producer', id, count: 200 }));
    // While the claimer lives, its record is never skipped, however long it takes.
    const seenAt = performance.now();
    while (performance.now() - seenAt < 2 * PEER_TIMEOUT_MS) {
      assert.equal(ring.tryRead(), null, 'a record was read past the open claim of a live producer');
      await sleep(10);
    }
    assert.equal(ring.unblockedRecords, 0, 'the record of a live claimer was skipped');
    await claimer.kill();
    const killedAt = performance.now();
    // tryRead times the stuck record from the first time it sees it after the death... the skip comes within about peerTimeoutMs.
    let m: Uint8Array | null = null;
    while (m === null) {
      m = ring.tryRead();
      if (m === null) await sleep(5);
      assert.ok(performance.now() - killedAt < 10 * PEER_TIMEOUT_MS, "the dead claimer's record was never skipped");
    }
    assert.equal(ring.unblockedRecords, 1);
    const view = new DataView(m.buffer, m.byteOffset, m.byteLength);
    const next = new Map([[view.getUint32(0, true), 1]]);
    assert.notEqual(view.getUint32(0, true), 9, 'the claimed (uncommitted) message of the dead producer came out');
    for (let n = 1; n < 400; n++) {
      const msg = await ring.read({ timeoutMs: 20_000 });
      const v = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
      const id = v.getUint32(0, true);
      assert.equal(v.getUint32(4, true), next.get(id) ?? 0, `producer ${id} out of order`);
      next.set(id, (next.get(id) ?? 0) + 1);
    }
    assert.deepEqual([next.get(1), next.get(2)], [200, 200]);
    for (const p of others) await p.next('done');
  });

  it('a worker thread terminated between claim and commit: its record is skipped after peerTimeoutMs, its process living on', async function () {
    const PEER_TIMEOUT_MS = 200;
    const sabRegion = Region.create({ backing: 'sab', size: MpscRing.regionSize({ capacity: 1024 }) });
    const sabRing = MpscRing.create(sabRegion, { capacity: 1024 });
    const worker = new Worker(new URL(`file://${FIXTURE_PATH}`), {
      workerData: { mpscPeer: true, config: { role: 'claimer', id: 9 }, sab: sabRegion.buffer },
    });
    const producer = MpscRing.attach(sabRegion);
    try {
      await new Promise<void>((resolveClaimed, reject) => {
        worker.on('message', (e: PeerEvent) => (e.event === 'claimed' ? resolveClaimed() : undefined));
        worker.on('error', reject);
      });
      assert.deepEqual([...sabRing.tryRead()!], [...message(9, 0)]);
      producer.writeSync(message(1, 0)); // behind the worker's open claim
      // While the worker lives, its claim holds the head.
      await assert.rejects(sabRing.read({ timeoutMs: 3 * PEER_TIMEOUT_MS, peerTimeoutMs: PEER_TIMEOUT_MS }), { code: ErrorCodes.TIMEOUT });
      assert.equal(sabRing.unblockedRecords, 0, 'the record of a live claimer was skipped');
      await worker.terminate();
      const m = await sabRing.read({ timeoutMs: 20 * PEER_TIMEOUT_MS, peerTimeoutMs: PEER_TIMEOUT_MS });
      assert.deepEqual([...m], [...message(1, 0)], 'the message behind the dead claim');
      assert.equal(sabRing.unblockedRecords, 1);
    } finally {
      await worker.terminate();
      producer.close();
      sabRing.close();
    }
  });

  // Regression (a reviewer's find): once the last producer's close() withdrew the pid word, "no producer may
  // still write" was read from that word (0: none registered yet, so one may come), and a claim whose
  // claimer died before writing its header was never skipped: the ring was stuck for good.
  it('a claim whose header was never written is skipped once the last producer closed cleanly, and what was committed after it arrives', async function () {
    // A claimer that died between its tail CAS and its header store: 16 bytes claimed, LENGTH still 0.
    const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
    Atomics.add(ctl, L.PRODUCER_POSITION_I32, 16);
    const producer = start({ role: 'producer', id: 1, count: 1 });
    await producer.next('done');
    await producer.exited; // it closed (withdrawing the pid word) and exited: no producer holds the lock
    assert.equal(Atomics.load(ctl, L.PRODUCER_PID_I32), 0, 'the last producer left cleanly');
    const got = await ring.read({ timeoutMs: 3000, peerTimeoutMs: 100 });
    assert.deepEqual([...got], [...message(1, 0)]);
    assert.equal(ring.unblockedRecords, 1);
  });

  it("a waiting read skips a dead claimer's record too (parked on the futex); PEER_DEAD once no producer is left", async function () {
    const claimer = start({ role: 'claimer', id: 9 });
    await claimer.next('claimed');
    assert.deepEqual([...ring.tryRead()!], [...message(9, 0)]);
    // A live producer holds the PRODUCER lock throughout; its message waits behind the stuck record.
    const producer = start({ role: 'producer', id: 1, count: 1, hold: true });
    await producer.next('done');
    const pending = ring.read({ timeoutMs: 20_000, peerTimeoutMs: 200 });
    await sleep(400); // parked on the stuck record, whose claimer lives
    assert.equal(ring.unblockedRecords, 0, 'the record of a live claimer was skipped');
    await claimer.kill();
    assert.deepEqual([...(await pending)], [...message(1, 0)]);
    assert.equal(ring.unblockedRecords, 1);
    await producer.kill(); // the last producer dies: nothing more can come
    await assert.rejects(ring.read({ timeoutMs: 10_000, peerTimeoutMs: 100 }), { code: ErrorCodes.PEER_DEAD });
  });

  it('select: a claim stuck at the head is ready once its claimer is dead (tryRead then skips it), not while it lives', async function () {
    ring.peerTimeoutMs = 100; // tryRead's timeout, which select's look goes by
    const claimer = start({ role: 'claimer', id: 9 });
    await claimer.next('claimed');
    assert.equal(selectSync([ring], { timeoutMs: 0 }), 0);
    assert.deepEqual([...ring.tryRead()!], [...message(9, 0)]);
    // A live producer holds the PRODUCER lock throughout; its message waits behind the stuck record.
    const producer = start({ role: 'producer', id: 1, count: 1, hold: true });
    await producer.next('done');
    assert.throws(
      () => selectSync([ring], { timeoutMs: 300, peerTimeoutMs: 100 }),
      { code: ErrorCodes.TIMEOUT },
      'the claimer lives: not ready',
    );
    assert.equal(ring.unblockedRecords, 0, 'the record of a live claimer was skipped');
    await claimer.kill();
    await sleep(150); // past peerTimeoutMs since select first saw the record stuck
    assert.equal(selectSync([ring], { timeoutMs: 0 }), 0, 'the dead claim is ready: tryRead would take it back');
    assert.deepEqual([...ring.tryRead()!], [...message(1, 0)]);
    assert.equal(ring.unblockedRecords, 1);
    await producer.kill(); // the last producer dies: nothing more can come
    await assert.rejects(select([ring], { timeoutMs: 10_000, peerTimeoutMs: 100 }), { code: ErrorCodes.PEER_DEAD });
  });

  it('select from an object that has not read yet takes back a dead claim at the head after peerTimeoutMs; tryRead goes on behind it', async function () {
    ring.peerTimeoutMs = 100;
    const claimer = start({ role: 'claimer', id: 9 });
    await claimer.next('claimed');
    const first = MpscRing.attach(region);
    assert.deepEqual([...first.tryRead()!], [...message(9, 0)]);
    first.detach(); // lets go of the consumer role; the ring goes on
    const producer = start({ role: 'producer', id: 1, count: 1, hold: true });
    await producer.next('done');
    await claimer.kill();
    const t0 = performance.now();
    assert.equal(await select([ring], { timeoutMs: 5000 }), 0);
    assert.ok(performance.now() - t0 < 2000, `select took ${performance.now() - t0} ms`);
    assert.equal(ring.unblockedRecords, 1, "select's wait took the dead claim back itself");
    assert.deepEqual([...ring.tryRead()!], [...message(1, 0)]);
    assert.equal(ring.unblockedRecords, 1);
  });

  /** The claim mark (LENGTH < 0) in the ring's data area, as Int32 index of its header. */
  const markAt = (): number => {
    const data32 = new Int32Array(ring.data.buffer, ring.data.byteOffset, ring.capacity / 4);
    for (let at = 0; at < data32.length; at += 2) if (data32[at + M.MPSC_LENGTH_I32]! < 0) return at;
    throw new Error('no claim in the ring');
  };

  /** The ring's FLAGS word (observes the sides' ORs at registration). */
  const flags = (): number => Atomics.load(new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH), L.FLAGS_I32);

  it('a claimer in another PID namespace (unshare) makes thread ids untrusted: its stuck claim is skipped only once no producer holds the lock, whatever its mark names here', async function () {
    const why = unshareRefused();
    if (why !== undefined) {
      console.log(`      (skipped: ${why})`);
      this.skip();
    }
    assert.equal(flags() & M.FLAG_PID_NS_MIXED, 0, 'one namespace so far');
    const claimer = start({ role: 'claimer', id: 9 }, UNSHARE);
    await claimer.next('claimed');
    assert.notEqual(flags() & M.FLAG_PID_NS_MIXED, 0, 'the claimer from another namespace set the flag');
    assert.deepEqual([...ring.tryRead()!], [...message(9, 0)]);
    // Its mark names its thread in its own namespace; here the number may name nothing (as this one does).
    const data32 = new Int32Array(ring.data.buffer, ring.data.byteOffset, ring.capacity / 4);
    data32[markAt() + M.MPSC_TYPE_I32] = M.claimMark(deadThreadId());
    await assert.rejects(ring.read({ timeoutMs: 600, peerTimeoutMs: 100 }), { code: ErrorCodes.TIMEOUT });
    assert.equal(ring.unblockedRecords, 0, 'the claim of a live producer in another namespace was taken back');
    await claimer.kill(); // no producer holds the lock any more
    await assert.rejects(ring.read({ timeoutMs: 10_000, peerTimeoutMs: 100 }), { code: ErrorCodes.PEER_DEAD });
    assert.equal(ring.unblockedRecords, 1, 'the dead claim was skipped before the death was reported');
  });

  it('with every side in one PID namespace, a claim whose mark names no live thread is skipped while other producers live (what the flag turns off)', async function () {
    const claimer = start({ role: 'claimer', id: 9 });
    await claimer.next('claimed');
    assert.equal(flags() & M.FLAG_PID_NS_MIXED, 0, 'one namespace, whose PID_NS both sides read');
    assert.deepEqual([...ring.tryRead()!], [...message(9, 0)]);
    const producer = start({ role: 'producer', id: 1, count: 1, hold: true });
    await producer.next('done');
    const data32 = new Int32Array(ring.data.buffer, ring.data.byteOffset, ring.capacity / 4);
    data32[markAt() + M.MPSC_TYPE_I32] = M.claimMark(deadThreadId()); // the claimer lives, but its mark now says otherwise
    assert.deepEqual([...(await ring.read({ timeoutMs: 10_000, peerTimeoutMs: 100 }))], [...message(1, 0)]);
    assert.equal(ring.unblockedRecords, 1);
  });

  it("messages({ peerTimeoutMs }) skips a dead claimer's record with the iterator's timeout", async function () {
    ring.peerTimeoutMs = Infinity; // only the iterator's option can let the record be skipped
    const claimer = start({ role: 'claimer', id: 9 });
    await claimer.next('claimed');
    const producer = start({ role: 'producer', id: 1, count: 2, hold: true });
    await producer.next('done');
    await claimer.kill();
    const got: number[][] = [];
    for await (const m of ring.messages({ peerTimeoutMs: 100, timeoutMs: 10_000 })) {
      got.push([...m]);
      if (got.length === 3) break;
    }
    assert.deepEqual(
      got,
      [message(9, 0), message(1, 0), message(1, 1)].map((b) => [...b]),
    );
    assert.equal(ring.unblockedRecords, 1);
  });

  it("drain skips a dead claimer's record after peerTimeoutMs", async function () {
    ring.peerTimeoutMs = 100;
    const claimer = start({ role: 'claimer', id: 9 });
    await claimer.next('claimed');
    await claimer.kill();
    const producer = start({ role: 'producer', id: 1, count: 3 });
    await producer.next('done');
    const got: number[][] = [];
    const firstAt = performance.now();
    const deadline = firstAt + 5000;
    while (got.length < 4 && performance.now() < deadline) {
      ring.drain((data, offset, length) => got.push([...data.subarray(offset, offset + length)]));
      if (got.length < 4) await sleep(5);
    }
    assert.ok(performance.now() - firstAt >= 100 - 1, 'the stuck record was skipped before peerTimeoutMs');
    assert.deepEqual(
      got,
      [message(9, 0), message(1, 0), message(1, 1), message(1, 2)].map((b) => [...b]),
    );
    assert.equal(ring.unblockedRecords, 1);
  });

  /**
   * A drainer process (the first consumer: the creator has not read) blocks in the handler of its `stall`-th
   * record and is SIGKILLed; returns the next `count` messages the creator then reads.
   */
  async function readAfterDrainerKilled(stall: number, count: number): Promise<number[][]> {
    const drainer = start({ role: 'drainer', stall });
    await drainer.next('stalled');
    await drainer.kill();
    const got: number[][] = [];
    for (let n = 0; n < count; n++) got.push([...(await ring.read({ timeoutMs: 5000, peerTimeoutMs: 100 }))]);
    return got;
  }

  it('a consumer killed in a drain() handler: the next consumer gets the record in hand again and all after it; the producers go on', async function () {
    const producer = MpscRing.attach(region);
    for (let seq = 0; seq < 10; seq++) assert.ok(producer.tryWrite(message(1, seq)));
    // Records 0 and 1 were handled, zeroed and released; record 2 was in hand: it is taken again.
    assert.deepEqual(
      await readAfterDrainerKilled(3, 8),
      Array.from({ length: 8 }, (_, i) => [...message(1, i + 2)]),
    );
    assert.equal(ring.tryRead(), null);
    assert.equal(ring.unblockedRecords, 0);
    // And the room is back: the producer fills the ring again.
    let written = 0;
    while (producer.tryWrite(message(1, 10 + written))) written++;
    assert.equal(written, CAPACITY / 16);
    producer.close();
  });

  it('a consumer killed in the drain() handler of the first record after a wrap: the padding before it is given back, the record taken again', async function () {
    const producer = MpscRing.attach(region);
    const first = MpscRing.attach(region);
    // 85 records of 48 bytes (40-byte messages) leave 16 bytes before the end: the 86th wraps, after padding.
    for (let seq = 0; seq < 85; seq++) assert.ok(producer.tryWrite(message(1, seq, 40)));
    for (let seq = 0; seq < 85; seq++) assert.ok(first.tryRead());
    first.detach(); // lets go of the consumer role; the ring goes on
    for (let seq = 85; seq < 90; seq++) assert.ok(producer.tryWrite(message(1, seq, 40)));
    assert.deepEqual(
      await readAfterDrainerKilled(1, 5),
      Array.from({ length: 5 }, (_, i) => [...message(1, 85 + i, 40)]),
    );
    producer.close();
  });

  it("drain() takes at most a lap, though each record's room goes back as it is taken and producers refill it", function () {
    const producer = MpscRing.attach(region);
    let written = 0;
    while (producer.tryWrite(message(1, written))) written++;
    let taken = 0;
    const count = ring.drain(() => {
      // The room of the records taken before this one is back (this one's, once its handler returns).
      if (taken++ > 0) assert.ok(producer.tryWrite(message(1, written++)), 'the room of the record taken went back');
    });
    assert.equal(count, taken);
    assert.equal(taken, CAPACITY / 16, 'one lap, not more');
    producer.close();
  });

  it('a read from a drain() handler of the same consumer is ERR_SHMRING_BUSY, and the batch arrives whole', function () {
    const producer = MpscRing.attach(region);
    for (let seq = 0; seq < 3; seq++) assert.ok(producer.tryWrite(message(1, seq)));
    const got: number[][] = [];
    const codes: string[] = [];
    const taken = ring.drain((data, offset, length) => {
      got.push([...data.subarray(offset, offset + length)]);
      for (const read of [() => ring.tryRead(), () => ring.drain(() => {})]) {
        try {
          read();
        } catch (err) {
          codes.push((err as { code: string }).code);
        }
      }
    });
    assert.equal(taken, 3);
    assert.deepEqual(codes, Array(6).fill(ErrorCodes.BUSY));
    assert.deepEqual(
      got,
      [0, 1, 2].map((seq) => [...message(1, seq)]),
    );
    assert.equal(ring.size, 0);
    assert.equal(ring.tryRead(), null);
    producer.close();
  });

  it('a second live consumer gets ERR_SHMRING_BUSY, in another process and in this one', async function () {
    assert.equal(ring.tryRead(), null); // this object is the consumer now
    const other = start({ role: 'consumer' });
    assert.equal((await other.next('result')).code, ErrorCodes.BUSY);
    const second = MpscRing.attach(region);
    try {
      assert.throws(() => second.tryRead(), { code: ErrorCodes.BUSY });
      assert.equal(second.tryWrite(new Uint8Array([1])), true, 'a producer beside the consumer');
      assert.deepEqual([...ring.tryRead()!], [1]);
    } finally {
      second.close();
    }
    assert.equal(ring.closed, false, "a producer's close() closed the ring");
  });

  it("a producer's close() ends only itself; the consumer's close() ends the ring for the producers", async function () {
    const p1 = MpscRing.attach(region);
    const p2 = MpscRing.attach(region);
    p1.tryWrite(new Uint8Array([1]));
    p1.close();
    assert.throws(() => p1.tryWrite(new Uint8Array(1)), { code: ErrorCodes.CLOSED });
    assert.equal(p2.tryWrite(new Uint8Array([2])), true);
    assert.equal(ring.closed, false);
    assert.deepEqual([...ring.tryRead()!], [1]);
    ring.close();
    assert.equal(p2.closed, true);
    assert.throws(() => p2.tryWrite(new Uint8Array(1)), { code: ErrorCodes.CLOSED });
    assert.throws(() => p2.writeSync(new Uint8Array(1)), { code: ErrorCodes.CLOSED });
    await assert.rejects(p2.write(new Uint8Array(1)), { code: ErrorCodes.CLOSED });
    p2.close();
  });

  it('a producer parked on a full ring gets ERR_SHMRING_CLOSED when the consumer closes', async function () {
    const p = MpscRing.attach(region);
    while (p.tryWrite(new Uint8Array(100)));
    const pending = p.write(new Uint8Array(100), { timeoutMs: 10_000 });
    await sleep(50);
    ring.close();
    await assert.rejects(pending, { code: ErrorCodes.CLOSED });
    p.close();
  });

  it('bad input: typed errors, nothing written', async function () {
    assert.throws(() => MpscRing.regionSize({ capacity: 1000 }), { code: ErrorCodes.INVALID_ARGUMENT, name: 'RangeError' });
    assert.throws(() => MpscRing.regionSize({ capacity: 32 }), { code: ErrorCodes.INVALID_ARGUMENT });
    assert.throws(() => MpscRing.regionSize({ capacity: '4096' as unknown as number }), {
      code: ErrorCodes.INVALID_ARGUMENT,
      name: 'TypeError',
    });
    assert.throws(() => MpscRing.create(region, { capacity: 4096, peerTimeoutMs: -1 }), { code: ErrorCodes.INVALID_ARGUMENT });
    assert.throws(() => MpscRing.create(region, { capacity: 8192 }), { code: ErrorCodes.REGION_TOO_SMALL });
    const p = MpscRing.attach(region);
    assert.throws(() => p.tryWrite(new Uint8Array(ring.maxMessageLength + 1)), { code: ErrorCodes.MESSAGE_TOO_LARGE });
    assert.throws(() => p.claim(ring.maxMessageLength + 1), { code: ErrorCodes.MESSAGE_TOO_LARGE });
    assert.throws(() => p.claim(-1), { code: ErrorCodes.INVALID_ARGUMENT });
    assert.throws(() => p.claim(1.5), { code: ErrorCodes.INVALID_ARGUMENT, name: 'TypeError' });
    assert.throws(() => p.tryWrite('abc' as unknown as Uint8Array), { code: ErrorCodes.INVALID_ARGUMENT, name: 'TypeError' });
    assert.throws(() => p.tryWrite(new Uint8Array(1), -1), { code: ErrorCodes.INVALID_ARGUMENT, name: 'RangeError' });
    assert.throws(() => p.writeSync(new Uint8Array(1), { type: 1.5 }), { code: ErrorCodes.INVALID_ARGUMENT });
    assert.throws(() => p.commit(8), { code: ErrorCodes.INVALID_ARGUMENT });
    assert.throws(() => ring.drain(null as unknown as () => void), { code: ErrorCodes.INVALID_ARGUMENT });
    await assert.rejects(select([ring], { timeoutMs: 0 }), { code: ErrorCodes.TIMEOUT }); // a select entry: empty, not ready
    await assert.rejects(select([{ queue: p, write: ring.maxMessageLength + 1 }]), { code: ErrorCodes.MESSAGE_TOO_LARGE });
    assert.equal(ring.size, 0, 'a bad input wrote something');
    assert.equal(await select([{ queue: p, write: ring.maxMessageLength }], { timeoutMs: 0 }), 0, 'room for the largest message');
    assert.equal(p.tryWrite(new Uint8Array(ring.maxMessageLength), 5), true, 'the largest message fits an empty ring');
    assert.equal(await select([ring], { timeoutMs: 0 }), 0, 'ready once a message is committed');
    assert.equal(ring.tryRead()!.length, ring.maxMessageLength);
    assert.equal(ring.lastType, 5);
    p.close();
  });

  it('attaching to a region that holds another kind of ring is ERR_SHMRING_WRONG_KIND', function () {
    const other = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: 4096 }) });
    SpscRing.create(other, { capacity: 4096 }).close();
    assert.throws(() => MpscRing.attach(other), { code: ErrorCodes.WRONG_KIND, message: /holds a SpscRing, not a MpscRing/ });
    assert.throws(() => SpscRing.attach(region), { code: ErrorCodes.WRONG_KIND, message: /holds a MpscRing/ });
    const empty = Region.create({ backing: 'sab', size: 8192 });
    assert.throws(() => MpscRing.attach(empty), { code: ErrorCodes.NOT_A_RING });
  });

  it('inspect describes an MpscRing: kind, capacity, bytes in use, who holds the roles', function () {
    const p = MpscRing.attach(region);
    p.tryWrite(new Uint8Array(10));
    assert.equal(ring.tryRead()!.length, 10);
    p.tryWrite(new Uint8Array(20));
    const info = describeRing(region, 'mpsc-test')!;
    assert.equal(info.kind, 'MpscRing');
    assert.equal(info.capacity, CAPACITY);
    assert.equal(info.used, 32);
    assert.equal(info.producer?.alive, true);
    assert.equal(info.consumer?.alive, true);
    assert.equal(info.closed, false);
    p.close();
  });
});
