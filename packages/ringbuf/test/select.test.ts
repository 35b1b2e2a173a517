/**
 * select / selectSync: the first of several queues that is ready.
 *
 * The other side runs in a worker thread (rings over SharedArrayBuffers, or
 * memfds it maps again) or a child process (memfds inherited as fds 3, 4, …),
 * see fixtures/select-peer.ts. Each test that waits for a wake-up gives its
 * waits peerTimeoutMs: Infinity, so a sleeper never naps: only the wake-up
 * (or its timeoutMs) ends it, and a lost wake-up shows as a timeout.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { ErrorCodes, nativeFutex, Region, ShmringError, ShmringRangeError, ShmringTypeError } from '@shmring/core';
import {
  Broadcast,
  MpmcQueue,
  MpscRing,
  select,
  selectSync,
  SpscRing,
  type BroadcastPublisher,
  type BroadcastSubscriber,
  type SelectEntry,
} from '../src/index.js';
import * as L from '../src/layout.js';
import type { RingConfig, SelectPeerConfig, SelectPeerReport, SelectTask } from './fixtures/select-peer.js';
import { memfdUnavailable } from './helpers.js';

const PEER_URL = new URL('./fixtures/select-peer.js', import.meta.url);
const PEER_PATH = fileURLToPath(PEER_URL);
/** A wait that was woken ends well within this; a lost one sleeps until its timeout (seconds). */
const WOKEN_MS = 500;
/** A peer still running after this long has hung. */
const PEER_LIMIT_MS = 50_000;
/** Only a wake-up can end these waits in time (see the header). */
const NO_NAPS = { peerTimeoutMs: Infinity };

type Backing = 'sab' | 'memfd';
type Kind = 'spsc' | 'mpmc' | 'mpsc';

function needMemfd(backing: Backing, context: Mocha.Context): void {
  const problem = backing === 'memfd' ? memfdUnavailable() : undefined;
  if (problem !== undefined) {
    console.log(`      (skipped: no memfd region: ${problem})`);
    context.skip();
  }
}

/** selectSync over several SharedArrayBuffer words waits in futex_waitv (@shmring/core's nativeFutex.waitAny). */
function needWaitAny(context: Mocha.Context): void {
  if (typeof (nativeFutex as { waitAny?: unknown }).waitAny !== 'function') {
    console.log('      (skipped: this backend has no nativeFutex.waitAny yet)');
    context.skip();
  }
}

interface Ring {
  region: Region;
  /** This side's object (the test uses it as producer and consumer both). */
  queue: SpscRing | MpmcQueue | MpscRing;
  config(fd?: number): RingConfig;
}

function makeRing(backing: Backing, kind: Kind, size: { capacity: number; slotSize?: number } = { capacity: 256, slotSize: 64 }): Ring {
  const bytes =
    kind === 'spsc'
      ? SpscRing.regionSize({ capacity: size.capacity })
      : kind === 'mpsc'
        ? MpscRing.regionSize({ capacity: size.capacity })
        : MpmcQueue.regionSize({ capacity: size.capacity, slotSize: size.slotSize ?? 64 });
  const region = Region.create({ backing, size: bytes });
  const queue =
    kind === 'spsc'
      ? SpscRing.create(region, { capacity: size.capacity })
      : kind === 'mpsc'
        ? MpscRing.create(region, { capacity: size.capacity })
        : MpmcQueue.create(region, { capacity: size.capacity, slotSize: size.slotSize ?? 64 });
  return {
    region,
    queue,
    config: (fd) => ({
      source: backing === 'sab' ? { kind: 'sab', sab: region.buffer as SharedArrayBuffer } : { kind: 'fd', fd: fd ?? region.fd! },
      queue: kind,
    }),
  };
}

function closeAll(rings: readonly Ring[]): void {
  for (const r of rings) {
    r.queue.close();
    r.region.close();
  }
}

/** The ring's WAITERS word of that side (READ or WRITE), as a peer sees it (every kind has the wait blocks there). */
function waiters(ring: { readonly region: Region }, side: 'read' | 'write' = 'read'): number {
  const ctl = new Int32Array(ring.region.buffer, 0, L.CONTROL_I32_LENGTH);
  // Observes the sleepers' announcements.
  return Atomics.load(ctl, side === 'read' ? L.READ_WAITERS_I32 : L.WRITE_WAITERS_I32);
}

/** A Broadcast (its publisher) in a region of its own; a worker given its config subscribes. */
interface Cast {
  region: Region;
  pub: BroadcastPublisher;
  config(): RingConfig;
}

function makeBroadcast(options: { capacity?: number; lossless?: boolean } = {}): Cast {
  const capacity = options.capacity ?? 256;
  const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity }) });
  const pub = Broadcast.create(region, { capacity, lossless: options.lossless });
  return { region, pub, config: () => ({ source: { kind: 'sab', sab: region.buffer as SharedArrayBuffer }, queue: 'broadcast' }) };
}

function closeCasts(casts: readonly Cast[], subs: readonly BroadcastSubscriber[]): void {
  for (const sub of subs) sub.close();
  for (const c of casts) {
    c.pub.close();
    c.region.close();
  }
}

function runWorker(config: SelectPeerConfig): Promise<SelectPeerReport> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(PEER_URL, { workerData: { selectPeer: config } });
    let report: SelectPeerReport | undefined;
    const timer = setTimeout(() => void worker.terminate(), PEER_LIMIT_MS);
    worker.on('message', (m: SelectPeerReport) => (report = m));
    worker.on('error', reject);
    worker.on('exit', (code) => {
      clearTimeout(timer);
      if (report !== undefined) resolve(report);
      else reject(new Error(`select peer worker exited with ${code} and no report`));
    });
  });
}

/** Runs the peer in a new node process; `fds` become its fds 3, 4, …. */
function runProcess(config: SelectPeerConfig, fds: number[]): Promise<SelectPeerReport> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [PEER_PATH, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe', ...fds] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d));
    child.stderr!.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), PEER_LIMIT_MS);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '') as SelectPeerReport);
      } catch {
        reject(new Error(`select peer exited with ${code ?? signal} and no report; stderr:\n${stderr}`));
      }
    });
  });
}

function peer(where: 'worker' | 'process', rings: readonly Ring[], task: SelectTask): Promise<SelectPeerReport> {
  if (where === 'worker') return runWorker({ rings: rings.map((r) => r.config()), task });
  return runProcess(
    { rings: rings.map((r, i) => r.config(3 + i)), task },
    rings.map((r) => r.region.fd!),
  );
}

function noError(report: SelectPeerReport): void {
  assert.equal(report.error, undefined, report.error?.message);
}

/** Polls until `predicate` holds (the other side announced itself, …). */
async function until(predicate: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!predicate()) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(1);
  }
}

/** `promise`, or a rejection if it has not settled within `ms`. */
async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function rejectsWith(code: string, name?: string): (err: unknown) => boolean {
  return (err) => {
    assert.equal((err as ShmringError).code, code, String(err));
    if (name !== undefined) assert.equal((err as Error).name, name);
    return true;
  };
}

const MESSAGE = [1, 2, 3, 4, 5];

/**
 * selectSync in a worker over the rings of `configs` (`rings`, this side's
 * view of them): once it announced `unit` on every one, `write` makes the
 * last one ready; the worker must wake at once and read that message.
 */
async function workerWakes(
  configs: RingConfig[],
  rings: readonly { readonly region: Region }[],
  unit: number,
  write: () => void,
): Promise<void> {
  const selected = runWorker({ rings: configs, task: { op: 'selectSync', timeoutMs: 10_000 } });
  await until(() => rings.every((r) => waiters(r) === unit), `the worker announced ${unit} on every queue`);
  await sleep(20); // most likely in the kernel by now
  const written = performance.now();
  write();
  const report = await selected;
  const ms = performance.now() - written;
  noError(report);
  assert.equal(report.index, rings.length - 1);
  assert.deepEqual(report.message, MESSAGE);
  assert.ok(ms < WOKEN_MS, `the worker's select returned ${ms.toFixed(1)} ms after the write: it slept through the wake-up`);
  for (const r of rings) assert.equal(waiters(r), 0, 'the worker withdrew its announcements');
}

describe('select', () => {
  describe('resolves with the queue that got a message', () => {
    for (const where of ['worker', 'process'] as const) {
      for (const kind of ['spsc', 'mpmc'] as const) {
        it(`written by a ${where} (${kind}, ${where === 'worker' ? 'SharedArrayBuffer' : 'memfd'} rings)`, async function () {
          const backing: Backing = where === 'worker' ? 'sab' : 'memfd';
          needMemfd(backing, this);
          const rings = [0, 1, 2].map(() => makeRing(backing, kind));
          try {
            const selected = select(
              rings.map((r) => r.queue),
              NO_NAPS,
            );
            const written = peer(where, rings, { op: 'write', ring: 2, delayMs: 50, bytes: MESSAGE });
            const index = await within(10_000, selected, 'select');
            noError(await written);
            assert.equal(index, 2);
            assert.deepEqual([...rings[2]!.queue.tryRead()!], MESSAGE, 'the message is still there: select consumes nothing');
            for (const r of rings) assert.equal(waiters(r), 0, 'every announcement is withdrawn');
          } finally {
            closeAll(rings);
          }
        });
      }
    }

    it('at once, without parking, when a queue already holds a message', async () => {
      const rings = [0, 1, 2].map(() => makeRing('sab', 'spsc'));
      try {
        rings[1]!.queue.tryWrite(new Uint8Array(MESSAGE));
        assert.equal(await select(rings.map((r) => r.queue)), 1);
        assert.equal(selectSync(rings.map((r) => r.queue)), 1);
        assert.equal(rings[1]!.queue.size > 0, true, 'nothing was consumed');
      } finally {
        closeAll(rings);
      }
    });
  });

  describe('room to write', () => {
    for (const kind of ['spsc', 'mpmc'] as const) {
      it(`on a full ${kind} queue resolves when the reader drains it (in a worker)`, async () => {
        const full = makeRing('sab', kind, { capacity: kind === 'spsc' ? 64 : 2, slotSize: 16 });
        const idle = makeRing('sab', kind, { capacity: kind === 'spsc' ? 64 : 2, slotSize: 16 });
        try {
          // Fill one queue; the other stays empty, so reading from it is not ready.
          while (full.queue.tryWrite(new Uint8Array(MESSAGE)));
          const entries: SelectEntry[] = [idle.queue, { queue: full.queue, write: MESSAGE.length }];
          await assert.rejects(select(entries, { timeoutMs: 20 }), rejectsWith(ErrorCodes.TIMEOUT), 'not ready while full');
          const selected = select(entries, NO_NAPS);
          // The worker reads one message of the full ring (selectSync over it alone: it is ready to read).
          const drained = runWorker({ rings: [full.config()], task: { op: 'selectSync', timeoutMs: 5000 } });
          const index = await within(10_000, selected, 'select for room');
          const report = await drained;
          noError(report);
          assert.deepEqual(report.message, MESSAGE);
          assert.equal(index, 1);
          assert.ok(full.queue.tryWrite(new Uint8Array(MESSAGE)), 'the room select reported is there');
          assert.equal(waiters(full, 'write'), 0);
        } finally {
          closeAll([full, idle]);
        }
      });
    }

    it('counts the padding a record needs before the wrap, as SpscRing does', () => {
      const ring = makeRing('sab', 'spsc', { capacity: 64 });
      try {
        const q = ring.queue as SpscRing;
        // Records of 16-byte messages take 24 B: write, read, write leaves 24 B used at [24, 48).
        assert.ok(q.tryWrite(new Uint8Array(16)));
        assert.ok(q.tryRead());
        assert.ok(q.tryWrite(new Uint8Array(16)));
        // 40 B are free, but a 24-byte message (a 32 B record) does not fit in the 16 before the end:
        // it needs 16 B of padding and 32 at the start, 48 in all.
        assert.throws(() => selectSync([{ queue: q, write: 24 }], { timeoutMs: 0 }), rejectsWith(ErrorCodes.TIMEOUT));
        assert.equal(q.tryWrite(new Uint8Array(24)), false, 'and indeed it does not fit');
        // An 8-byte message (16 B) fits before the end.
        assert.equal(selectSync([{ queue: q, write: 8 }], { timeoutMs: 0 }), 0);
        // Once the reader has taken the record, 24 bytes fit (16 + 32 <= 64).
        assert.ok(q.tryRead());
        assert.equal(selectSync([{ queue: q, write: 24 }], { timeoutMs: 0 }), 0);
        assert.ok(q.tryWrite(new Uint8Array(24)), 'the room select saw is there');
      } finally {
        closeAll([ring]);
      }
    });
  });

  describe('ends without a queue', () => {
    for (const kind of ['spsc', 'mpmc'] as const) {
      it(`timeoutMs: ERR_SHMRING_TIMEOUT, no announcement left in WAITERS (${kind})`, async () => {
        const rings = [0, 1].map(() => makeRing('sab', kind));
        try {
          const entries = [rings[0]!.queue, { queue: rings[1]!.queue, write: 1 }];
          while (rings[1]!.queue.tryWrite(new Uint8Array(1)));
          const started = performance.now();
          await assert.rejects(select(entries, { timeoutMs: 50 }), rejectsWith(ErrorCodes.TIMEOUT));
          const ms = performance.now() - started;
          assert.ok(ms >= 45 && ms < 1000, `took ${ms.toFixed(1)} ms`);
          assert.equal(waiters(rings[0]!, 'read'), 0);
          assert.equal(waiters(rings[1]!, 'write'), 0);
        } finally {
          closeAll(rings);
        }
      });
    }

    it('timeoutMs in selectSync (one word, then several: futex_waitv), no announcement left', function () {
      const rings = [0, 1].map(() => makeRing('sab', 'spsc'));
      try {
        for (const entries of [[rings[0]!.queue], rings.map((r) => r.queue)]) {
          if (entries.length > 1) needWaitAny(this);
          const started = performance.now();
          assert.throws(() => selectSync(entries, { timeoutMs: 30 }), rejectsWith(ErrorCodes.TIMEOUT));
          const ms = performance.now() - started;
          assert.ok(ms >= 25 && ms < 1000, `took ${ms.toFixed(1)} ms`);
          for (const r of rings) assert.equal(waiters(r), 0);
        }
      } finally {
        closeAll(rings);
      }
    });

    it('signal: AbortError, no announcement left in WAITERS', async () => {
      const rings = [0, 1].map(() => makeRing('sab', 'spsc'));
      try {
        const controller = new AbortController();
        const selected = select(
          rings.map((r) => r.queue),
          { signal: controller.signal, ...NO_NAPS },
        );
        await until(() => rings.every((r) => waiters(r) === 1), 'select announced itself on both queues');
        controller.abort();
        await assert.rejects(within(WOKEN_MS, selected, 'aborted select'), rejectsWith(ErrorCodes.ABORTED, 'AbortError'));
        for (const r of rings) assert.equal(waiters(r), 0);
        // An already aborted signal: select rejects, selectSync throws (a blocked thread's signal cannot fire later).
        await assert.rejects(
          select(
            rings.map((r) => r.queue),
            { signal: controller.signal },
          ),
          rejectsWith(ErrorCodes.ABORTED, 'AbortError'),
        );
        assert.throws(
          () =>
            selectSync(
              rings.map((r) => r.queue),
              { signal: controller.signal },
            ),
          rejectsWith(ErrorCodes.ABORTED, 'AbortError'),
        );
        for (const r of rings) assert.equal(waiters(r), 0);
      } finally {
        closeAll(rings);
      }
    });
  });

  describe('a dead peer', () => {
    for (const [backing, where] of [
      ['memfd', 'process'],
      ['sab', 'worker'],
    ] as const) {
      it(`ERR_SHMRING_PEER_DEAD naming the entry and its ring, once its SpscRing is drained (select and selectSync; a ${where} that wrote and ended)`, async function () {
        needMemfd(backing, this);
        if (backing === 'sab') needWaitAny(this); // selectSync over two SharedArrayBuffer words
        const rings = [0, 1].map(() => makeRing(backing, 'spsc'));
        try {
          // A child process (a worker) writes one message to ring 1, which registers it as the producer, and exits.
          noError(await peer(where, rings, { op: 'write', ring: 1, delayMs: 0, bytes: MESSAGE }));
          assert.equal(
            await select(
              rings.map((r) => r.queue),
              { peerTimeoutMs: 100 },
            ),
            1,
            'what the peer wrote before it died',
          );
          assert.ok(rings[1]!.queue.tryRead());
          // The message names the entry and its ring, as the queue's own wait would, and the peer: a process, or a worker's thread.
          const gone =
            backing === 'memfd'
              ? `the process on the other side of the ring in a memfd region \\(fd ${rings[1]!.region.fd} of pid ${process.pid}\\) has died`
              : 'the thread on the other side of the ring in a SharedArrayBuffer has ended';
          const isDead = (err: unknown): boolean => {
            assert.equal((err as ShmringError).code, ErrorCodes.PEER_DEAD, String(err));
            assert.equal((err as { index?: number }).index, 1);
            assert.match((err as Error).message, new RegExp(`^(select|selectSync): entry 1: ${gone}`));
            return true;
          };
          const started = performance.now();
          await assert.rejects(
            select(
              rings.map((r) => r.queue),
              { peerTimeoutMs: 100, timeoutMs: 5000 },
            ),
            isDead,
          );
          assert.ok(performance.now() - started < 1000, 'noticed within about peerTimeoutMs');
          assert.throws(
            () =>
              selectSync(
                rings.map((r) => r.queue),
                { peerTimeoutMs: 100, timeoutMs: 5000 },
              ),
            isDead,
          );
          for (const r of rings) assert.equal(waiters(r), 0);
        } finally {
          closeAll(rings);
        }
      });
    }
  });

  describe('a closed queue is ready', () => {
    for (const kind of ['spsc', 'mpmc'] as const) {
      it(`closed by the other side while select waits (${kind}): reading it then ends with ERR_SHMRING_CLOSED`, async () => {
        const rings = [0, 1].map(() => makeRing('sab', kind));
        const other = kind === 'spsc' ? SpscRing.attach(rings[1]!.region) : MpmcQueue.attach(rings[1]!.region);
        try {
          const selected = select(
            rings.map((r) => r.queue),
            NO_NAPS,
          );
          await until(() => waiters(rings[1]!) === 1, 'select announced itself');
          other.close();
          assert.equal(await within(WOKEN_MS, selected, 'select after close'), 1);
          assert.equal(rings[1]!.queue.tryRead(), null);
          await assert.rejects(rings[1]!.queue.read(), rejectsWith(ErrorCodes.CLOSED));
          // For writing too: a write would throw, not wait.
          assert.equal(selectSync([{ queue: rings[1]!.queue, write: 1 }], { timeoutMs: 0 }), 0);
        } finally {
          closeAll(rings);
        }
      });
    }
  });

  describe('selectSync in a worker wakes on a write from the main thread', () => {
    for (const backing of ['sab', 'memfd'] as const) {
      for (const count of [1, 3]) {
        it(`${backing}, ${count} queue${count > 1 ? 's' : ''}`, async function () {
          needMemfd(backing, this);
          if (backing === 'sab' && count > 1) needWaitAny(this);
          const rings = Array.from({ length: count }, () => makeRing(backing, 'spsc'));
          try {
            // A native (futex_waitv) waiter on a SharedArrayBuffer announces itself with 0x10000 (see docs/LAYOUT.md).
            const unit = backing === 'sab' && count > 1 ? 0x10000 : 1;
            await workerWakes(
              rings.map((r) => r.config()),
              rings,
              unit,
              () => rings[count - 1]!.queue.tryWrite(new Uint8Array(MESSAGE)),
            );
          } finally {
            closeAll(rings);
          }
        });
      }
    }
  });

  describe('selectSync in a worker wakes when the main thread closes a queue', () => {
    it('sab, 3 queues: close() wakes the native (futex_waitv) sleeper it finds announced, and that queue is the one selected', async function () {
      needWaitAny(this);
      const rings = Array.from({ length: 3 }, () => makeRing('sab', 'spsc'));
      try {
        const selected = runWorker({ rings: rings.map((r) => r.config()), task: { op: 'selectSync', timeoutMs: 10_000 } });
        await until(() => rings.every((r) => waiters(r) === 0x10000), 'the worker announced 0x10000 on every queue');
        await sleep(20); // most likely in the kernel by now
        const closed = performance.now();
        rings[2]!.queue.close();
        const report = await selected;
        const ms = performance.now() - closed;
        noError(report);
        assert.equal(report.index, 2);
        assert.equal(report.message, undefined, 'a closed, empty queue has nothing to read');
        assert.ok(ms < WOKEN_MS, `the worker's select returned ${ms.toFixed(1)} ms after the close: it slept through the wake-up`);
      } finally {
        closeAll(rings);
      }
    });
  });

  describe('fairness', () => {
    it('an always-ready queue does not starve the others: round robin over a reused array', () => {
      const rings = [0, 1, 2].map(() => makeRing('sab', 'spsc'));
      try {
        const entries = rings.map((r) => r.queue);
        for (const q of entries) for (let i = 0; i < 3; i++) q.tryWrite(new Uint8Array(MESSAGE));
        const first = selectSync(entries);
        const order = [first];
        for (let i = 0; i < 5; i++) order.push(selectSync(entries)); // nothing is read: all stay ready
        assert.deepEqual(
          order,
          [0, 1, 2, 0, 1, 2].map((k) => (k + first) % 3),
        );
      } finally {
        closeAll(rings);
      }
    });

    it('a new array of the same queues each call stays round robin while another select of the thread interleaves', async () => {
      const rings = [0, 1, 2, 3].map(() => makeRing('sab', 'spsc'));
      try {
        const [a, b, c, d] = rings.map((r) => r.queue);
        for (const q of [a, b, d]) q!.tryWrite(new Uint8Array(MESSAGE)); // c stays empty: [c, d] always returns 1
        const seen: number[] = [];
        for (let i = 0; i < 6; i++) {
          seen.push(await select([a!, b!]));
          assert.equal(await select([c!, d!]), 1);
        }
        assert.deepEqual(new Set(seen), new Set([0, 1]), `[a, b] returned ${seen.join(', ')}: b starved`);
        for (let i = 1; i < seen.length; i++) assert.notEqual(seen[i], seen[i - 1], `not round robin: ${seen.join(', ')}`);
      } finally {
        closeAll(rings);
      }
    });

    it('a new array each call goes on from where the last select of a list beginning with the same queue stopped', async () => {
      const rings = [0, 1].map(() => makeRing('sab', 'spsc'));
      try {
        for (const r of rings) r.queue.tryWrite(new Uint8Array(MESSAGE));
        const a = await select([rings[0]!.queue, rings[1]!.queue]);
        const b = await select([rings[0]!.queue, rings[1]!.queue]);
        const c = selectSync([rings[0]!.queue, rings[1]!.queue]);
        assert.deepEqual([b, c], [1 - a, a]);
      } finally {
        closeAll(rings);
      }
    });
  });

  describe('bad input', () => {
    it('an empty list, a non-array, an entry that is not a queue: typed errors', async () => {
      assert.throws(
        () => selectSync([]),
        (err) => err instanceof ShmringRangeError && err.code === ErrorCodes.INVALID_ARGUMENT,
      );
      await assert.rejects(select([]), (err) => err instanceof ShmringRangeError && err.code === ErrorCodes.INVALID_ARGUMENT);
      assert.throws(
        () => selectSync('queues' as never),
        (err) => err instanceof ShmringTypeError,
      );
      assert.throws(
        () => selectSync([{} as never]),
        (err) => err instanceof ShmringTypeError && err.code === ErrorCodes.INVALID_ARGUMENT,
      );
      const ring = makeRing('sab', 'spsc');
      try {
        // A hole of a sparse array is an entry (undefined), named by its index; map() would have skipped it.
        const sparse = [, ring.queue] as SelectEntry[];
        const namesHole = (err: unknown): boolean =>
          err instanceof ShmringTypeError && err.code === ErrorCodes.INVALID_ARGUMENT && /entries\[0\]/.test(err.message);
        assert.throws(() => selectSync(sparse), namesHole);
        await assert.rejects(select(sparse), namesHole);
        assert.throws(
          () => selectSync([{ queue: ring.queue, write: -1 }]),
          (err) => err instanceof ShmringRangeError,
        );
        assert.throws(
          () => selectSync([{ queue: ring.queue, write: 1.5 }]),
          (err) => err instanceof ShmringTypeError,
        );
        // A string is shown quoted, so '4' does not read as the number 4; the message names the call.
        assert.throws(
          () => selectSync([{ queue: ring.queue, write: '4' as unknown as number }]),
          (err) => err instanceof ShmringTypeError && /^selectSync: entries\[0\]\.write="4" must be an integer/.test(err.message),
        );
        await assert.rejects(
          select([ring.queue, { queue: ring.queue, write: '4' as unknown as number }]),
          (err) => err instanceof ShmringTypeError && /^select: entries\[1\]\.write="4" must be an integer/.test(err.message),
        );
        assert.throws(() => selectSync([ring.queue], { timeoutMs: -1 }), rejectsWith(ErrorCodes.INVALID_ARGUMENT));
      } finally {
        closeAll([ring]);
      }
    });

    it('more than 128 entries for selectSync: RangeError (futex_waitv takes 128); select takes them', async () => {
      const ring = makeRing('sab', 'spsc');
      try {
        ring.queue.tryWrite(new Uint8Array(MESSAGE));
        const many = Array.from({ length: 129 }, () => ring.queue);
        assert.throws(
          () => selectSync(many),
          (err) => err instanceof ShmringRangeError && err.code === ErrorCodes.INVALID_ARGUMENT,
        );
        assert.equal(selectSync(many.slice(0, 128), { timeoutMs: 0 }) >= 0, true);
        assert.equal((await select(many)) >= 0, true);
      } finally {
        closeAll([ring]);
      }
    });

    it('room for a message larger than the queue takes: ERR_SHMRING_MESSAGE_TOO_LARGE (it could never be ready)', () => {
      const spsc = makeRing('sab', 'spsc', { capacity: 64 });
      const mpmc = makeRing('sab', 'mpmc', { capacity: 2, slotSize: 16 });
      try {
        assert.throws(() => selectSync([{ queue: spsc.queue, write: 25 }]), rejectsWith(ErrorCodes.MESSAGE_TOO_LARGE));
        assert.throws(() => selectSync([{ queue: mpmc.queue, write: 17 }]), rejectsWith(ErrorCodes.MESSAGE_TOO_LARGE));
      } finally {
        closeAll([spsc, mpmc]);
      }
    });

    it('a queue this side closed: ERR_SHMRING_CLOSED, at once', async () => {
      const rings = [0, 1].map(() => makeRing('sab', 'spsc'));
      try {
        rings[1]!.queue.close();
        assert.throws(
          () => selectSync(rings.map((r) => r.queue)),
          (err) => err instanceof ShmringError && err.code === ErrorCodes.CLOSED,
        );
        await assert.rejects(select(rings.map((r) => r.queue)), rejectsWith(ErrorCodes.CLOSED));
      } finally {
        closeAll(rings);
      }
    });

    it('a queue this side closes (or detaches) while select waits: ERR_SHMRING_CLOSED naming the entry, as when it was closed before', async () => {
      for (const end of ['close', 'detach'] as const) {
        const rings = [0, 1].map(() => makeRing('sab', 'spsc'));
        try {
          const pending = select(
            rings.map((r) => r.queue),
            { ...NO_NAPS, timeoutMs: 10_000 },
          );
          await until(() => waiters(rings[1]!) === 1, 'select announced itself');
          rings[1]!.queue[end]();
          await assert.rejects(within(WOKEN_MS, pending, `select after ${end}()`), (err: ShmringError) => {
            assert.equal(err.code, ErrorCodes.CLOSED, `after ${end}(): ${String(err)}`);
            assert.match(err.message, /^select: entry 1 is a queue this side closed/);
            return true;
          });
          for (const r of rings) assert.equal(waiters(r), 0, 'the announcements are withdrawn');
        } finally {
          closeAll(rings);
        }
      }
    });

    it('a queue whose (memfd) region this side closed: ERR_SHMRING_CLOSED', function () {
      needMemfd('memfd', this);
      const ring = makeRing('memfd', 'spsc');
      const other = makeRing('sab', 'spsc');
      try {
        assert.throws(() => selectSync([other.queue, ring.queue], { timeoutMs: 0 }), rejectsWith(ErrorCodes.TIMEOUT));
        ring.region.close(); // unmaps: every view of the ring is detached
        assert.throws(() => selectSync([other.queue, ring.queue], { timeoutMs: 0 }), rejectsWith(ErrorCodes.CLOSED));
      } finally {
        closeAll([other]);
      }
    });
    it('a pending select whose (memfd) region is closed under it rejects with ERR_SHMRING_CLOSED, not a TypeError', async function () {
      needMemfd('memfd', this);
      const ring = makeRing('memfd', 'spsc');
      const other = makeRing('sab', 'spsc');
      try {
        const pending = select([other.queue, ring.queue], { timeoutMs: 10_000 });
        await sleep(50); // parked
        ring.region.close();
        await assert.rejects(pending, (err: ShmringError) => {
          assert.equal(err.code, ErrorCodes.CLOSED, String(err));
          assert.match(err.message, /entry 1/);
          return true;
        });
      } finally {
        closeAll([other]);
      }
    });

    it('a pending select whose region is closed under it withdraws its announcements from every other ring', async function () {
      needMemfd('memfd', this);
      const ring = makeRing('memfd', 'spsc');
      const other = makeRing('memfd', 'spsc');
      try {
        // The closed ring first: its withdrawal throws (a detached view), and must not stop the others'.
        const pending = select([ring.queue, other.queue], { timeoutMs: 10_000 });
        await sleep(50); // parked
        assert.equal(waiters(other), 1);
        ring.region.close();
        await assert.rejects(pending, (err: ShmringError) => err.code === ErrorCodes.CLOSED);
        assert.equal(waiters(other), 0, 'the announcement on the other ring was left behind');
      } finally {
        closeAll([other]);
      }
    });

    for (const what of ['queue', 'region'] as const) {
      const how =
        what === 'queue' ? 'an entry closed under it' : 'the region of another entry closed under it, its wait let go of at the unmap';
      it(`a select that fails after a publisher woke it (${how}) passes the wake-up on to a read parked beside it`, async function () {
        needMemfd('memfd', this);
        const a = makeRing('memfd', 'spsc');
        const b = makeRing('memfd', 'spsc');
        try {
          const entries = [a.queue, b.queue];
          // Once b is returned, the next select over the same array starts its scans at a.
          assert.equal(b.queue.tryWrite(new Uint8Array([1])), true);
          assert.equal(await select(entries), 1);
          assert.deepEqual(b.queue.tryRead(), new Uint8Array([1]));
          const pending = select(entries, { timeoutMs: 10_000 }).catch((err: ShmringError) => err.code);
          await sleep(50); // parked first
          const read = b.queue.read({ timeoutMs: 3000, poll: 0 });
          await sleep(50); // parked after it
          // One wake-up of one sleeper of b (the select's, first in the queue), then a closed before the select hears.
          assert.equal(b.queue.tryWrite(new Uint8Array([2])), true);
          if (what === 'queue') a.queue.close();
          else a.region.close();
          assert.equal(await pending, ErrorCodes.CLOSED);
          // Without the pass-on it gets the message only at its timeout's last look, 3 s on.
          assert.deepEqual(await within(WOKEN_MS, read, 'the read parked beside the message'), new Uint8Array([2]));
        } finally {
          closeAll([a, b]);
        }
      });
    }

    it('each wrong option: its class and ERR_SHMRING_INVALID_ARGUMENT, naming it, from select and selectSync alike', async () => {
      const rings = [makeRing('sab', 'spsc')];
      try {
        const cases: [Record<string, unknown>, typeof ShmringTypeError | typeof ShmringRangeError, RegExp][] = [
          [{ timeoutMs: -1 }, ShmringRangeError, /timeoutMs=-1/],
          [{ timeoutMs: '5' }, ShmringTypeError, /timeoutMs="5"/],
          [{ peerTimeoutMs: Number.NaN }, ShmringRangeError, /peerTimeoutMs=NaN/],
          [{ peerTimeoutMs: -1 }, ShmringRangeError, /peerTimeoutMs=-1/],
          [{ signal: {} }, ShmringTypeError, /signal=/],
          [{ spin: Infinity }, ShmringRangeError, /spin=Infinity/],
          [{ ref: 'no' }, ShmringTypeError, /ref="no"/],
        ];
        for (const [options, type, message] of cases) {
          const check = (err: unknown): boolean =>
            err instanceof type && (err as ShmringError).code === ErrorCodes.INVALID_ARGUMENT && message.test((err as Error).message);
          // ref is select's only: selectSync refuses the name, whatever its value.
          const syncCheck =
            'ref' in options
              ? (err: unknown): boolean => err instanceof ShmringTypeError && /unknown option "ref"/.test(String(err))
              : check;
          assert.throws(
            () =>
              selectSync(
                rings.map((r) => r.queue),
                options,
              ),
            syncCheck,
            JSON.stringify(options),
          );
          await assert.rejects(
            select(
              rings.map((r) => r.queue),
              options,
            ),
            check,
            JSON.stringify(options),
          );
        }
      } finally {
        closeAll(rings);
      }
    });
  });

  describe('MpscRing and Broadcast entries', () => {
    for (const where of ['worker', 'process'] as const) {
      it(`an MpscRing written by a ${where} wins over an idle SpscRing; its message is taken once`, async function () {
        const backing: Backing = where === 'worker' ? 'sab' : 'memfd';
        needMemfd(backing, this);
        const rings = [makeRing(backing, 'spsc'), makeRing(backing, 'mpsc')];
        try {
          const entries = rings.map((r) => r.queue);
          const selected = select(entries, NO_NAPS);
          const written = peer(where, rings, { op: 'write', ring: 1, delayMs: 50, bytes: MESSAGE });
          const index = await within(10_000, selected, 'select');
          noError(await written);
          assert.equal(index, 1);
          assert.deepEqual([...rings[1]!.queue.tryRead()!], MESSAGE, 'the message is there: select consumes nothing');
          assert.equal(rings[1]!.queue.tryRead(), null, 'and it is taken once');
          assert.equal(rings[0]!.queue.tryRead(), null);
          assert.throws(() => selectSync(entries, { timeoutMs: 0 }), rejectsWith(ErrorCodes.TIMEOUT), 'nothing is ready once it is read');
          for (const r of rings) assert.equal(waiters(r), 0, 'every announcement is withdrawn');
        } finally {
          closeAll(rings);
        }
      });
    }

    it('room in a full MpscRing: ready once its consumer (a worker) reads; the write then fits', async () => {
      const full = makeRing('sab', 'mpsc', { capacity: 64 });
      const producer = full.queue; // never reads: the worker is the consumer
      try {
        while (producer.tryWrite(new Uint8Array(MESSAGE)));
        const entries: SelectEntry[] = [{ queue: producer, write: MESSAGE.length }];
        assert.throws(() => selectSync(entries, { timeoutMs: 0 }), rejectsWith(ErrorCodes.TIMEOUT), 'not ready while full');
        const selected = select(entries, NO_NAPS);
        const drained = runWorker({ rings: [full.config()], task: { op: 'selectSync', timeoutMs: 5000 } });
        assert.equal(await within(10_000, selected, 'select for room'), 0);
        const report = await drained;
        noError(report);
        assert.deepEqual(report.message, MESSAGE);
        assert.ok(producer.tryWrite(new Uint8Array(MESSAGE)), 'the room select reported is there');
        assert.equal(waiters(full, 'write'), 0);
      } finally {
        closeAll([full]);
      }
    });

    it('an MpscRing its consumer closes while a producer selects for room: ready, and the write throws ERR_SHMRING_CLOSED', async () => {
      const full = makeRing('sab', 'mpsc', { capacity: 64 });
      const producer = MpscRing.attach(full.region);
      try {
        while (producer.tryWrite(new Uint8Array(MESSAGE)));
        const selected = select([{ queue: producer, write: MESSAGE.length }], NO_NAPS);
        await until(() => waiters(full, 'write') === 1, 'select announced itself');
        full.queue.close(); // the consumer's side (an object that never wrote): closes the ring
        assert.equal(await within(WOKEN_MS, selected, 'select after close'), 0);
        assert.throws(() => producer.tryWrite(new Uint8Array(MESSAGE)), rejectsWith(ErrorCodes.CLOSED));
        assert.equal(waiters(full, 'write'), 0);
      } finally {
        producer.close();
        closeAll([full]);
      }
    });

    it('two Broadcast subscribers: select resolves with the one published to; each subscriber takes its copy once', async () => {
      const casts = [makeBroadcast(), makeBroadcast()];
      const subs = casts.map((c) => Broadcast.subscribe(c.region));
      try {
        const selected = select(subs, NO_NAPS);
        await until(() => casts.every((c) => waiters(c) === 1), 'select announced itself on both');
        casts[1]!.pub.tryWrite(new Uint8Array(MESSAGE));
        assert.equal(await within(WOKEN_MS, selected, 'select'), 1);
        assert.deepEqual([...subs[1]!.tryRead()!], MESSAGE);
        assert.equal(subs[1]!.tryRead(), null, 'taken once');
        assert.equal(subs[0]!.tryRead(), null);
        for (const c of casts) assert.equal(waiters(c), 0);
        // Two subscribers of one Broadcast share its wait word: one publication makes both ready.
        subs.push(Broadcast.subscribe(casts[1]!.region));
        const both = [subs[1]!, subs[2]!];
        assert.throws(() => selectSync(both, { timeoutMs: 0 }), rejectsWith(ErrorCodes.TIMEOUT));
        casts[1]!.pub.tryWrite(new Uint8Array(MESSAGE));
        const first = selectSync(both, { timeoutMs: 1000 });
        assert.equal(selectSync(both, { timeoutMs: 1000 }), 1 - first, 'round robin: both are ready');
        for (const sub of both) {
          assert.deepEqual([...sub.tryRead()!], MESSAGE);
          assert.equal(sub.tryRead(), null);
        }
      } finally {
        closeCasts(casts, subs);
      }
    });

    for (const count of [1, 2]) {
      it(`selectSync in a worker wakes on a publication (${count} Broadcast${count > 1 ? 's' : ''})`, async function () {
        if (count > 1) needWaitAny(this);
        const casts = Array.from({ length: count }, () => makeBroadcast());
        try {
          // The worker subscribes to each, then selectSyncs over its subscribers.
          const unit = count > 1 ? 0x10000 : 1; // futex_waitv over SharedArrayBuffers: a native waiter
          await workerWakes(
            casts.map((c) => c.config()),
            casts,
            unit,
            () => casts[count - 1]!.pub.tryWrite(new Uint8Array(MESSAGE)),
          );
        } finally {
          closeCasts(casts, []);
        }
      });
    }

    it('a Broadcast its publisher closes while subscribers select: ready; reading then ends with ERR_SHMRING_CLOSED', async () => {
      const casts = [makeBroadcast(), makeBroadcast()];
      const subs = casts.map((c) => Broadcast.subscribe(c.region));
      try {
        const selected = select(subs, NO_NAPS);
        await until(() => waiters(casts[1]!) === 1, 'select announced itself');
        casts[1]!.pub.close();
        assert.equal(await within(WOKEN_MS, selected, 'select after close'), 1);
        assert.equal(subs[1]!.tryRead(), null);
        await assert.rejects(subs[1]!.read(), rejectsWith(ErrorCodes.CLOSED));
        for (const c of casts) assert.equal(waiters(c), 0);
      } finally {
        closeCasts(casts, subs);
      }
    });

    it("a lossless publisher's write entry: ready once the slowest subscriber leaves room; a lossy one always is", async () => {
      const lossless = makeBroadcast({ capacity: 64, lossless: true });
      const lossy = makeBroadcast({ capacity: 64 });
      const sub = Broadcast.subscribe(lossless.region);
      try {
        while (lossless.pub.tryWrite(new Uint8Array(MESSAGE)));
        const entries: SelectEntry[] = [{ queue: lossless.pub, write: MESSAGE.length }];
        assert.throws(
          () => selectSync(entries, { timeoutMs: 0 }),
          rejectsWith(ErrorCodes.TIMEOUT),
          'not ready while the subscriber is a ring behind',
        );
        const selected = select(entries, NO_NAPS);
        await until(() => waiters(lossless, 'write') === 1, 'select announced itself');
        assert.deepEqual([...sub.tryRead()!], MESSAGE); // the subscriber's cursor store wakes the publisher
        assert.equal(await within(WOKEN_MS, selected, 'select for room'), 0);
        assert.ok(lossless.pub.tryWrite(new Uint8Array(MESSAGE)), 'the room select reported is there');
        assert.equal(waiters(lossless, 'write'), 0);
        for (let i = 0; i < 20; i++) lossy.pub.tryWrite(new Uint8Array(MESSAGE));
        assert.equal(selectSync([{ queue: lossy.pub, write: lossy.pub.maxMessageLength }], { timeoutMs: 0 }), 0);
      } finally {
        closeCasts([lossless, lossy], [sub]);
      }
    });

    it('ERR_SHMRING_PEER_DEAD: an MpscRing whose producers are gone, once drained (select and selectSync)', async function () {
      needMemfd('memfd', this);
      const rings = [makeRing('memfd', 'spsc'), makeRing('memfd', 'mpsc')];
      try {
        // A child process writes one message to the MpscRing (taking the producer role) and exits.
        noError(await peer('process', rings, { op: 'write', ring: 1, delayMs: 0, bytes: MESSAGE }));
        const entries = rings.map((r) => r.queue);
        assert.equal(await select(entries, { peerTimeoutMs: 100 }), 1, 'what the producer wrote before it died');
        assert.deepEqual([...rings[1]!.queue.tryRead()!], MESSAGE);
        const isDead = (err: unknown): boolean =>
          (err as ShmringError).code === ErrorCodes.PEER_DEAD && (err as { index?: number }).index === 1;
        const started = performance.now();
        await assert.rejects(select(entries, { peerTimeoutMs: 100, timeoutMs: 5000 }), isDead);
        assert.ok(performance.now() - started < 1000, 'noticed within about peerTimeoutMs');
        assert.throws(() => selectSync(entries, { peerTimeoutMs: 100, timeoutMs: 5000 }), isDead);
        for (const r of rings) assert.equal(waiters(r), 0);
      } finally {
        closeAll(rings);
      }
    });

    it('an MpscRing no producer has come to yet, or whose producer left cleanly, is waited on (TIMEOUT), not dead, for an object that never read', async function () {
      needMemfd('memfd', this);
      const ring = makeRing('memfd', 'mpsc');
      try {
        const fresh = ring.queue as MpscRing; // the creator: it has not read
        await assert.rejects(select([fresh], { peerTimeoutMs: 40, timeoutMs: 300 }), { code: ErrorCodes.TIMEOUT }, 'no producer yet');
        assert.throws(
          () => selectSync([fresh], { peerTimeoutMs: 40, timeoutMs: 300 }),
          { code: ErrorCodes.TIMEOUT },
          'no producer yet (sync)',
        );
        const producer = MpscRing.attach(ring.region);
        assert.ok(producer.tryWrite(new Uint8Array(MESSAGE)));
        producer.close(); // a clean leave: its pid word withdrawn
        const reader = MpscRing.attach(ring.region);
        assert.deepEqual([...reader.tryRead()!], MESSAGE);
        reader.detach();
        const another = MpscRing.attach(ring.region);
        await assert.rejects(select([another], { peerTimeoutMs: 40, timeoutMs: 300 }), { code: ErrorCodes.TIMEOUT }, 'left cleanly');
        another.close();
        assert.equal(waiters(ring), 0);
      } finally {
        closeAll([ring]);
      }
    });

    it('a select whose entries array the caller empties while it waits still resolves with the ready entry, not a TypeError', async function () {
      const rings = [makeRing('sab', 'spsc'), makeRing('sab', 'spsc')];
      try {
        const entries: SpscRing[] = rings.map((r) => r.queue as SpscRing);
        const pending = select(entries, { timeoutMs: 5000 });
        entries.length = 0; // the caller reuses its array
        const producer = SpscRing.attach(rings[1]!.region);
        assert.ok(producer.tryWrite(new Uint8Array(MESSAGE)));
        assert.equal(await pending, 1);
        producer.close();
      } finally {
        closeAll(rings);
      }
    });

    it('ERR_SHMRING_PEER_DEAD: an empty MpscRing whose producers are gone, for an object that never read (select and selectSync)', async function () {
      needMemfd('memfd', this);
      const ring = makeRing('memfd', 'mpsc');
      let fresh: MpscRing | undefined;
      try {
        // A child process writes one message (taking the producer role) and exits; the creator reads it and lets go.
        noError(await peer('process', [ring], { op: 'write', ring: 0, delayMs: 0, bytes: MESSAGE }));
        assert.deepEqual([...ring.queue.tryRead()!], MESSAGE);
        ring.queue.detach();
        fresh = MpscRing.attach(ring.region); // has not read: not the consumer
        const isDead = (err: unknown): boolean =>
          (err as ShmringError).code === ErrorCodes.PEER_DEAD && (err as { index?: number }).index === 0;
        const started = performance.now();
        await assert.rejects(select([fresh], { peerTimeoutMs: 100, timeoutMs: 3000 }), isDead);
        assert.ok(performance.now() - started < 1000, 'noticed within about peerTimeoutMs');
        assert.throws(() => selectSync([fresh!], { peerTimeoutMs: 100, timeoutMs: 3000 }), isDead);
        assert.equal(waiters(ring), 0);
      } finally {
        fresh?.close();
        ring.region.close();
      }
    });

    it('ERR_SHMRING_PEER_DEAD names the entry the peer check found dead, even when a second look finds its peer back (select and selectSync)', async function () {
      const rings = [makeRing('sab', 'spsc'), makeRing('sab', 'spsc')];
      try {
        const entries = rings.map((r) => r.queue);
        const second = entries[1] as unknown as { producerAlive?: () => boolean };
        for (const verb of ['select', 'selectSync'] as const) {
          let looks = 0;
          second.producerAlive = () => ++looks > 1; // gone at the first look only (a replacement registered since)
          const isEntry1 = (err: unknown): boolean =>
            (err as ShmringError).code === ErrorCodes.PEER_DEAD && (err as { index?: number }).index === 1 && /entry 1/.test(String(err));
          try {
            if (verb === 'select') await assert.rejects(select(entries, { peerTimeoutMs: 8, timeoutMs: 5000 }), isEntry1, verb);
            else assert.throws(() => selectSync(entries, { peerTimeoutMs: 8, timeoutMs: 5000 }), isEntry1, verb);
          } finally {
            delete second.producerAlive;
          }
          assert.ok(looks >= 1, `${verb}: the check looked`);
        }
      } finally {
        closeAll(rings);
      }
    });

    it("ERR_SHMRING_PEER_DEAD: a Broadcast subscriber whose publisher's process is gone, after what it published", async function () {
      needMemfd('memfd', this);
      const idle = makeRing('memfd', 'spsc');
      const region = Region.create({ backing: 'memfd', size: Broadcast.regionSize({ capacity: 256 }) });
      let sub: BroadcastSubscriber | undefined;
      try {
        // A child process creates the Broadcast, publishes once (after we subscribed) and exits without closing it.
        const published = runProcess(
          {
            rings: [{ source: { kind: 'fd', fd: 3 }, queue: 'broadcast' }],
            task: { op: 'publish', capacity: 256, delayMs: 500, bytes: MESSAGE },
          },
          [region.fd!],
        );
        await until(() => {
          try {
            sub = Broadcast.subscribe(region);
            return true;
          } catch (err) {
            if ((err as ShmringError).code === ErrorCodes.NOT_A_RING) return false;
            throw err;
          }
        }, 'the child created the Broadcast');
        noError(await published);
        const entries = [idle.queue, sub!];
        assert.equal(await select(entries, { peerTimeoutMs: 100 }), 1, 'what the publisher published before it died');
        assert.deepEqual([...sub!.tryRead()!], MESSAGE);
        const isDead = (err: unknown): boolean =>
          (err as ShmringError).code === ErrorCodes.PEER_DEAD && (err as { index?: number }).index === 1;
        await assert.rejects(select(entries, { peerTimeoutMs: 100, timeoutMs: 5000 }), isDead);
        assert.throws(() => selectSync(entries, { peerTimeoutMs: 100, timeoutMs: 5000 }), isDead);
        assert.equal(waiters({ region }), 0);
      } finally {
        sub?.close();
        region.close();
        closeAll([idle]);
      }
    });

    it('bad input: a publisher as a read entry, a subscriber as a write entry (TypeError); room beyond the largest message', () => {
      const cast = makeBroadcast({ capacity: 64 });
      const sub = Broadcast.subscribe(cast.region);
      const mpsc = makeRing('sab', 'mpsc', { capacity: 64 });
      try {
        assert.throws(
          () => selectSync([cast.pub]),
          (err) => err instanceof ShmringTypeError && err.code === ErrorCodes.INVALID_ARGUMENT,
        );
        assert.throws(
          () => selectSync([{ queue: sub, write: 1 }]),
          (err) => err instanceof ShmringTypeError && err.code === ErrorCodes.INVALID_ARGUMENT,
        );
        assert.throws(
          () => selectSync([{ queue: cast.pub, write: cast.pub.maxMessageLength + 1 }]),
          rejectsWith(ErrorCodes.MESSAGE_TOO_LARGE),
        );
        assert.throws(
          () => selectSync([{ queue: mpsc.queue, write: (mpsc.queue as MpscRing).maxMessageLength + 1 }]),
          rejectsWith(ErrorCodes.MESSAGE_TOO_LARGE),
        );
        sub.close();
        assert.throws(() => selectSync([mpsc.queue, sub]), rejectsWith(ErrorCodes.CLOSED));
      } finally {
        closeCasts([cast], [sub]);
        closeAll([mpsc]);
      }
    });
  });

  describe('no lost wake-up', () => {
    /**
     * A run: the writer and the selector (selectSync, spin 0: it parks every
     * round) in two workers. A lost wake-up leaves one side asleep until its
     * timeoutMs (5 s; no nap ends it), and the run fails with ERR_SHMRING_TIMEOUT.
     */
    async function stress(backing: Backing, kind: Kind, rounds: number, context: Mocha.Context): Promise<void> {
      needMemfd(backing, context);
      if (backing === 'sab') needWaitAny(context);
      const rings = [0, 1, 2].map(() => makeRing(backing, kind, { capacity: kind === 'spsc' ? 64 : 2, slotSize: 8 }));
      try {
        const started = performance.now();
        const [writer, selector] = await Promise.all([
          runWorker({ rings: rings.map((r) => r.config()), task: { op: 'writer', rounds, seed: 0x5e1ec7 } }),
          runWorker({ rings: rings.map((r) => r.config()), task: { op: 'selector', rounds } }),
        ]);
        const seconds = (performance.now() - started) / 1000;
        noError(writer);
        noError(selector);
        assert.equal(selector.rounds, rounds);
        const ctl = rings.map((r) => new Int32Array(r.region.buffer, 0, L.CONTROL_I32_LENGTH));
        // Observes how often a publisher found the selector parked (each time it bumped SIGNAL).
        const wakes = Atomics.load(ctl[0]!, L.READ_SIGNAL_I32) + Atomics.load(ctl[1]!, L.READ_SIGNAL_I32);
        console.log(
          `      ${rounds} rounds in ${seconds.toFixed(1)} s (${((seconds * 1e6) / rounds).toFixed(1)} µs each); ` +
            `selector woken ${wakes} times; longest select ${selector.longestMs!.toFixed(1)} ms, longest ack wait ${writer.longestMs!.toFixed(1)} ms`,
        );
        assert.ok(wakes > rounds / 10, `the selector was meant to park often but was woken ${wakes} times`);
        for (const r of rings) assert.equal(waiters(r), 0);
      } finally {
        closeAll(rings);
      }
    }

    it('100k rounds, two SharedArrayBuffer SpscRings, a writer alternating at random (futex_waitv + native wake)', function () {
      return stress('sab', 'spsc', 100_000, this);
    });

    it('100k rounds, two memfd SpscRings', function () {
      return stress('memfd', 'spsc', 100_000, this);
    });

    it('100k rounds, two SharedArrayBuffer MpmcQueues', function () {
      return stress('sab', 'mpmc', 100_000, this);
    });

    /** A select that takes longer than this was not woken: the koffi backend's 1 s slice ended it. */
    const STALL_MS = 900;

    for (const backing of ['sab', 'memfd'] as const) {
      it(`select on the event loop: 50k rounds against a writer in a worker (${backing})`, async function () {
        needMemfd(backing, this);
        const rings = [0, 1, 2].map(() => makeRing(backing, 'spsc', { capacity: 64 }));
        const rounds = 50_000;
        try {
          const writer = runWorker({ rings: rings.map((r) => r.config()), task: { op: 'writer', rounds, seed: 0xa11ce } });
          const entries = [rings[0]!.queue, rings[1]!.queue];
          const ack = rings[2]!.queue;
          let longest = 0;
          let stalled = 0; // selects of over STALL_MS
          const started = performance.now();
          for (let round = 0; round < rounds; round++) {
            const t0 = performance.now();
            // A lost wake-up leaves the select asleep until this timeout (no nap ends it): ERR_SHMRING_TIMEOUT.
            const index = await select(entries, { ...NO_NAPS, timeoutMs: 5000, poll: 0 });
            const took = performance.now() - t0;
            longest = Math.max(longest, took);
            if (took > STALL_MS) stalled++;
            const message = entries[index]!.tryRead();
            assert.ok(message !== null, `round ${round}: select said ${index}, which is empty`);
            assert.equal(new Int32Array(message.slice().buffer)[0], round);
            assert.ok(ack.tryWrite(new Uint8Array(new Int32Array([round]).buffer)));
          }
          const seconds = (performance.now() - started) / 1000;
          noError(await writer);
          console.log(
            `      ${rounds} rounds in ${seconds.toFixed(1)} s (${((seconds * 1e6) / rounds).toFixed(1)} µs each); longest select ${longest.toFixed(1)} ms`,
          );
          for (const r of rings) assert.equal(waiters(r), 0);
          // The koffi backend's pool threads sleep at most a 1 s slice: a wake-up lost there shows up as a
          // select of about a second that its slice ended (17-23 of them per run before the fix), not a timeout.
          // Later, 5-14 per run (memfd only): koffi's check of a returned wait probed the word with a FUTEX_WAIT
          // of a past deadline, which could take the writer's wake-one meant for the live wait beside it.
          assert.ok(stalled <= 1, `${stalled} selects took over ${STALL_MS} ms: wake-ups were lost and found again late`);
        } finally {
          closeAll(rings);
        }
      });
    }
  });
});

describe('select peerTimeoutMs: 0', () => {
  it("select and selectSync take peerTimeoutMs: 0, as the queues' own waits do", async () => {
    const rings = [makeRing('sab', 'spsc'), makeRing('sab', 'mpsc')];
    try {
      const queues = rings.map((r) => r.queue);
      assert.equal(queues[1]!.tryWrite(Uint8Array.of(1)), true);
      assert.equal(await select(queues, { peerTimeoutMs: 0, timeoutMs: 1_000 }), 1);
      assert.equal(selectSync(queues, { peerTimeoutMs: 0, timeoutMs: 1_000 }), 1);
    } finally {
      closeAll(rings);
    }
  });
});
