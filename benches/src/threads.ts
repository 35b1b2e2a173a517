/**
 * Worker threads: SpscRing over a SharedArrayBuffer against MessagePort
 * (postMessage of a Uint8Array, which the structured clone copies), between
 * this thread and one worker (worker-peer.ts). Round trips as in latency.ts,
 * streams as in throughput.ts.
 */
import { Worker } from 'node:worker_threads';
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { percentiles, Samples, stamp, stampAt, Watchdog, type Percentiles } from './harness.js';
import type { RoundTripOptions } from './latency.js';
import { latencyRecords, throughputRecords, type Measurement } from './measurement.js';
import { medianStream, spscCapacity, type ConsumerReport, type StreamOptions } from './throughput.js';

const WORKER = new URL('./worker-peer.js', import.meta.url);
const LIMIT_MS = 120_000;

function sabRing(capacity: number): SpscRing {
  return SpscRing.create(Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity }) }), { capacity });
}

function sab(ring: SpscRing): SharedArrayBuffer {
  return ring.data.buffer as SharedArrayBuffer;
}

/** Starts a worker; resolves once it says it is ready. `done` resolves with its `result` message (or on exit). */
async function startWorker(workerData: object): Promise<{ worker: Worker; done: Promise<ConsumerReport | undefined> }> {
  const worker = new Worker(WORKER, { workerData });
  const done = new Promise<ConsumerReport | undefined>((resolve, reject) => {
    worker.on('message', (m: { result?: ConsumerReport }) => m.result && resolve(m.result));
    worker.once('error', reject);
    worker.once('exit', () => resolve(undefined));
  });
  done.catch(() => undefined);
  const ready = new Promise<void>((resolve) => worker.on('message', (m: { ready?: boolean }) => m.ready && resolve()));
  await Promise.race([ready, done]);
  return { worker, done };
}

function check(seq: number, got: number): void {
  if (got !== seq >>> 0) throw new Error(`round trip ${seq}: the reply carries ${got}`);
}

/** Round trips through two SAB rings; the worker spins ('spin') or parks in readSync while this thread awaits ('async'). */
export async function ringRoundTrip(mode: 'spin' | 'async', o: RoundTripOptions): Promise<Percentiles> {
  const out = sabRing(1 << 16);
  const back = sabRing(1 << 16);
  const { worker, done } = await startWorker({ role: mode === 'spin' ? 'ring-echo' : 'ring-echo-sync', rings: [sab(out), sab(back)] });
  try {
    const samples = new Samples(o.count);
    const message = new Uint8Array(o.size);
    const total = o.warmup + o.count;
    const watchdog = new Watchdog('worker round trip', LIMIT_MS);
    let t = performance.now();
    for (let i = 0; i < total; i++) {
      stamp(message, i);
      let reply: Uint8Array | null;
      if (mode === 'spin') {
        while (!out.tryWrite(message)) watchdog.tick();
        while ((reply = back.tryRead()) === null) watchdog.tick();
      } else {
        await out.write(message, { timeoutMs: LIMIT_MS });
        reply = await back.read({ timeoutMs: LIMIT_MS });
      }
      const now = performance.now();
      if (i >= o.warmup) samples.addMs(now - t);
      t = now;
      check(i, stampAt(reply, 0));
    }
    out.close();
    await done;
    return percentiles(samples);
  } finally {
    await worker.terminate();
  }
}

/** Round trips of a Uint8Array through postMessage to a worker and back. */
export async function portRoundTrip(o: RoundTripOptions): Promise<Percentiles> {
  const { worker } = await startWorker({ role: 'port-echo' });
  try {
    const samples = new Samples(o.count);
    const total = o.warmup + o.count;
    let onReply: ((seq: number) => void) | undefined;
    worker.on('message', (m: Uint8Array | { ready: true }) => m instanceof Uint8Array && onReply?.(stampAt(m, 0)));
    const message = new Uint8Array(o.size);
    let t = performance.now();
    for (let i = 0; i < total; i++) {
      stamp(message, i);
      const reply = new Promise<number>((resolve) => (onReply = resolve));
      worker.postMessage(message);
      check(i, await reply);
      const now = performance.now();
      if (i >= o.warmup) samples.addMs(now - t);
      t = now;
    }
    return percentiles(samples);
  } finally {
    await worker.terminate();
  }
}

/** Streams through a SAB ring to a worker: tryWrite → tryRead ('copy') or claim/commit → drain ('zero-copy'). */
export async function ringStream(mode: 'copy' | 'zero-copy', o: StreamOptions): Promise<ConsumerReport> {
  const ring = sabRing(spscCapacity(o.size));
  const { worker, done } = await startWorker({ role: 'ring-count', rings: [sab(ring)], mode, warmupMs: o.warmupMs, size: o.size });
  try {
    const watchdog = new Watchdog('worker stream', LIMIT_MS);
    const message = new Uint8Array(o.size);
    const mask = o.size < 4096 ? 1023 : 15;
    const deadline = performance.now() + o.durationMs;
    let seq = 0;
    for (;;) {
      if (mode === 'copy') {
        stamp(message, seq);
        while (!ring.tryWrite(message)) watchdog.tick();
      } else {
        let at: number;
        while ((at = ring.claim(o.size)) < 0) watchdog.tick();
        ring.data.set(message, at);
        if (o.size >= 4) stamp(ring.data, seq, at);
        ring.commit(at);
      }
      seq++;
      if ((seq & mask) === 0 && performance.now() > deadline) break;
    }
    ring.close();
    const result = await done;
    if (!result || result.count !== seq || result.bad !== 0)
      throw new Error(`worker ring stream: sent ${seq}, the worker saw ${result?.count}`);
    return result;
  } finally {
    await worker.terminate();
  }
}

/** In-flight bound of the MessagePort stream: 8192 messages or 8 MiB, whichever is less. */
export function portWindow(size: number): number {
  return Math.max(16, Math.min(8192, Math.floor((8 << 20) / Math.max(1, size))));
}

/** Streams Uint8Arrays through postMessage, at most portWindow() unacknowledged (the worker acknowledges every quarter window). */
export async function portStream(o: StreamOptions): Promise<ConsumerReport> {
  const window = portWindow(o.size);
  const { worker, done } = await startWorker({ role: 'port-count', warmupMs: o.warmupMs, size: o.size, ackEvery: window / 4 });
  try {
    let acked = 0;
    let wake: (() => void) | undefined;
    worker.on('message', (m: { ack?: number }) => {
      if (m.ack !== undefined) {
        acked = m.ack;
        wake?.();
      }
    });
    const message = new Uint8Array(o.size);
    const deadline = performance.now() + o.durationMs;
    let seq = 0;
    while (performance.now() < deadline) {
      while (seq - acked < window) {
        stamp(message, seq);
        worker.postMessage(message);
        seq++;
      }
      await new Promise<void>((resolve) => (wake = resolve));
    }
    worker.postMessage('end');
    const result = await done;
    if (!result || result.count !== seq || result.bad !== 0)
      throw new Error(`MessagePort stream: sent ${seq}, the worker saw ${result?.count}`);
    return result;
  } finally {
    await worker.terminate();
  }
}

export const THREAD_ROUND_TRIPS = {
  'rtt.thread.spsc-spin': { transport: 'SpscRing over SAB, spinning (worker)', run: (o: RoundTripOptions) => ringRoundTrip('spin', o) },
  'rtt.thread.spsc-async': {
    transport: 'SpscRing over SAB, async here, readSync in the worker',
    run: (o: RoundTripOptions) => ringRoundTrip('async', o),
  },
  'rtt.thread.messageport': { transport: 'MessagePort (worker postMessage)', run: portRoundTrip },
} as const;

export const THREAD_STREAMS = {
  'tput.thread.spsc-copy': { transport: 'SpscRing over SAB copy (tryWrite → tryRead)', run: (o: StreamOptions) => ringStream('copy', o) },
  'tput.thread.spsc-zc': {
    transport: 'SpscRing over SAB zero-copy (claim/commit → drain)',
    run: (o: StreamOptions) => ringStream('zero-copy', o),
  },
  'tput.thread.messageport': { transport: 'MessagePort (postMessage, ≤ 8192 or 8 MiB in flight)', run: portStream },
} as const;

export async function threadRoundTrip(name: keyof typeof THREAD_ROUND_TRIPS, o: RoundTripOptions): Promise<Measurement[]> {
  const scenario = THREAD_ROUND_TRIPS[name];
  return latencyRecords(name, scenario.transport, o.size, await scenario.run(o));
}

export async function threadStream(name: keyof typeof THREAD_STREAMS, o: StreamOptions): Promise<Measurement[]> {
  const scenario = THREAD_STREAMS[name];
  return throughputRecords(name, scenario.transport, o.size, await medianStream(o, scenario.run));
}
