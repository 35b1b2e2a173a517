/**
 * What can stop a blocked Sync wait (readSync / writeSync), each in a worker
 * whose thread really blocks: its timeoutMs, close() by another thread, and
 * a signal that was aborted before the call. Its own AbortSignal cannot fire
 * while the thread blocks, and a signal cannot be handed to another thread
 * (the last test shows it), so nothing else can.
 */
import { strict as assert } from 'node:assert';
import { MessageChannel, type Worker } from 'node:worker_threads';
import { ErrorCodes, Region } from '@shmring/core';
import { SpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import { startWorker, type RingRef, type WorkerConfig } from './fixtures/waiting-peer.js';

const CAPACITY = 1024;
const BACKINGS = ['sab', 'memfd'] as const;

interface Shared {
  region: Region;
  ref: RingRef;
  ring: SpscRing;
  ctl: Int32Array;
}

/** Regions of the current test, closed after it. */
const regions: Region[] = [];

function makeRing(backing: 'sab' | 'memfd'): Shared {
  const size = SpscRing.regionSize({ capacity: CAPACITY });
  const region =
    backing === 'sab'
      ? Region.fromSharedArrayBuffer(new SharedArrayBuffer(size))
      : Region.create({ backing: 'memfd', size, name: 'shmring-sync-stop' });
  regions.push(region);
  const ring = SpscRing.create(region, { capacity: CAPACITY });
  const ref: RingRef = backing === 'sab' ? { sab: region.buffer as SharedArrayBuffer } : { fd: region.fd };
  return { region, ref, ring, ctl: new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH) };
}

interface End {
  code: string;
  name?: string;
  ms: number;
  /** Futex naps of the Sync verb (waitCounters.syncNaps). */
  naps?: number;
}

/** A worker's events, in order, and its end. */
function run(config: WorkerConfig): { worker: Worker; next: (event: string) => Promise<Record<string, unknown>>; exited: Promise<number> } {
  const worker = startWorker(config);
  const seen: Record<string, unknown>[] = [];
  const waiting = new Map<string, (e: Record<string, unknown>) => void>();
  worker.on('message', (e: Record<string, unknown>) => {
    seen.push(e);
    if (e.event === 'error') throw new Error(`worker ${config.role}: ${String(e.message)}`);
    waiting.get(e.event as string)?.(e);
  });
  const exited = new Promise<number>((resolve) => worker.on('exit', resolve));
  const next = (event: string): Promise<Record<string, unknown>> => {
    const found = seen.find((e) => e.event === event);
    if (found) return Promise.resolve(found);
    return new Promise((resolve) => waiting.set(event, resolve));
  };
  return { worker, next, exited };
}

/** Waits until `n` sides announce themselves in the wait block word `index` (they are parked). */
async function parked(ctl: Int32Array, index: number, limitMs = 5000): Promise<void> {
  const until = performance.now() + limitMs;
  // Observes the worker's announcement (its Atomics.add on the waiters word).
  while (Atomics.load(ctl, index) === 0) {
    if (performance.now() > until) throw new Error('the worker never parked');
    await new Promise((r) => setTimeout(r, 1));
  }
}

describe('sync waits: what can stop them', function () {
  this.timeout(20_000);

  afterEach(function () {
    for (const region of regions.splice(0)) region.close();
  });

  for (const backing of BACKINGS) {
    for (const [role, what] of [
      ['read-sync', 'a readSync blocked'],
      ['write-sync', 'a writeSync blocked on a full ring'],
    ] as const) {
      it(`ends ${what} in a worker with ERR_SHMRING_TIMEOUT after its timeoutMs (${backing})`, async function () {
        const shared = makeRing(backing);
        const w = run({ role, ring: shared.ref, options: { timeoutMs: 150 } });
        const end = (await w.next('end')) as unknown as End;
        assert.equal(end.code, ErrorCodes.TIMEOUT);
        assert.ok(end.ms >= 145 && end.ms < 1000, `ended after ${end.ms.toFixed(1)} ms`);
        await w.exited;
      });
    }

    it(`wakes a readSync blocked in a worker when another worker closes the ring: ERR_SHMRING_CLOSED at once, not after a nap (${backing})`, async function () {
      const shared = makeRing(backing);
      // peerTimeoutMs Infinity: the reader never naps, so only the close's wake-up can end its wait.
      const reader = run({ role: 'read-sync', ring: shared.ref, options: { peerTimeoutMs: Infinity } });
      await reader.next('parking');
      await parked(shared.ctl, L.READ_WAITERS_I32);
      const closedAt = performance.now();
      const closer = run({ role: 'close', ring: shared.ref });
      await closer.next('closed');
      const end = (await reader.next('end')) as unknown as End;
      const after = performance.now() - closedAt;
      assert.equal(end.code, ErrorCodes.CLOSED);
      assert.ok(after < 1000, `the reader ended ${after.toFixed(0)} ms after the close`);
      await Promise.all([reader.exited, closer.exited]);
    });

    it(`wakes a writeSync blocked on a full ring when another worker closes it (${backing})`, async function () {
      const shared = makeRing(backing);
      const writer = run({ role: 'write-sync', ring: shared.ref, options: { peerTimeoutMs: Infinity } });
      await writer.next('parking');
      await parked(shared.ctl, L.WRITE_WAITERS_I32);
      const closer = run({ role: 'close', ring: shared.ref });
      await closer.next('closed');
      const end = (await writer.next('end')) as unknown as End;
      assert.equal(end.code, ErrorCodes.CLOSED);
      await Promise.all([writer.exited, closer.exited]);
    });

    it(`throws AbortError at once, without parking, when the signal was aborted before readSync on an empty ring (${backing})`, async function () {
      const shared = makeRing(backing);
      const w = run({ role: 'read-sync', ring: shared.ref, options: { abortFirst: true } });
      const end = (await w.next('end')) as unknown as End;
      assert.equal(end.code, ErrorCodes.ABORTED);
      assert.equal(end.name, 'AbortError');
      assert.equal(end.naps, 0, `it napped ${end.naps} time(s) in the futex`);
      assert.ok(end.ms < 1000, `took ${end.ms.toFixed(2)} ms`);
      // Observes the wait block: nobody announced itself.
      assert.equal(Atomics.load(shared.ctl, L.READ_WAITERS_I32), 0);
      await w.exited;
    });

    it(`throws AbortError at once when the signal was aborted before writeSync on a full ring (${backing})`, async function () {
      const shared = makeRing(backing);
      const w = run({ role: 'write-sync', ring: shared.ref, options: { abortFirst: true } });
      const end = (await w.next('end')) as unknown as End;
      assert.equal(end.code, ErrorCodes.ABORTED);
      assert.equal(end.naps, 0, `it napped ${end.naps} time(s) in the futex`);
      assert.ok(end.ms < 1000, `took ${end.ms.toFixed(2)} ms`);
      await w.exited;
    });
  }

  it('returns a message that is already there, even with an aborted signal (the signal aborts waiting, not reading)', function () {
    const shared = makeRing('sab');
    const controller = new AbortController();
    controller.abort();
    assert.ok(shared.ring.tryWrite(new Uint8Array([7])));
    assert.deepEqual([...shared.ring.readSync({ signal: controller.signal })], [7]);
    assert.throws(() => shared.ring.readSync({ signal: controller.signal }), { name: 'AbortError', code: ErrorCodes.ABORTED });
  });

  it('cannot hand an AbortSignal to another thread: what arrives is a plain object that never learns of the abort', async function () {
    const { port1, port2 } = new MessageChannel();
    try {
      const controller = new AbortController();
      const arrived = new Promise<unknown>((resolve) => port2.once('message', resolve));
      port1.postMessage(controller.signal);
      const received = await arrived;
      controller.abort();
      assert.ok(!(received instanceof AbortSignal), 'the other thread got an AbortSignal');
      assert.equal((received as { aborted?: boolean }).aborted, undefined, 'the copy knows of the abort');
    } finally {
      port1.close();
      port2.close();
    }
  });
});
