/**
 * Round trips across two processes, one message in flight: this process
 * sends a message, the peer (peer.ts) sends it back, and the time from send
 * to the reply's arrival is one sample. The first `warmup` round trips are
 * not recorded.
 *
 * Back-to-back loops chain the clock (one performance.now() per round trip:
 * a sample ends where the next begins), so a sample includes one clock read,
 * like the C floor's. Samples go to a preallocated array and into a
 * perf_hooks histogram afterwards.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Region } from '@shmring/core';
import type { SpscRing } from '@shmring/ringbuf';
import {
  accepted,
  framer,
  percentiles,
  ringRegion,
  Samples,
  socketPair,
  stamp,
  stampAt,
  startPeer,
  track,
  Watchdog,
  type Percentiles,
} from './harness.js';
import { latencyRecords, type Measurement } from './measurement.js';

export interface RoundTripOptions {
  /** Round trips recorded. */
  count: number;
  /** Round trips run first and not recorded. */
  warmup: number;
  /** Payload bytes. */
  size: number;
  /** Idle time between round trips (ms) for the parked scenario, long enough for the echo to park. */
  gapMs?: number;
}

const RING_CAPACITY = 1 << 16;
const LIMIT_MS = 120_000;

export type RingMode = 'spin' | 'spin-zc' | 'sync' | 'parked' | 'async' | 'async-read';

const RING_ROLES: Record<RingMode, string> = {
  spin: 'ring-echo',
  'spin-zc': 'ring-echo-zc',
  sync: 'ring-echo-sync',
  parked: 'ring-echo-sync',
  async: 'ring-echo-async',
  'async-read': 'ring-echo-async-read',
};

function checkReply(seq: number, got: number): void {
  if (got !== seq >>> 0) throw new Error(`round trip ${seq}: the reply carries ${got}`);
}

/** Spinning on both sides with tryWrite / tryRead (a copy each way). */
function spinCopy(out: SpscRing, back: SpscRing, o: RoundTripOptions, samples: Samples): void {
  const message = new Uint8Array(o.size);
  const watchdog = new Watchdog('round trip (spin)', LIMIT_MS);
  const total = o.warmup + o.count;
  let t = performance.now();
  for (let i = 0; i < total; i++) {
    stamp(message, i);
    while (!out.tryWrite(message)) watchdog.tick();
    let reply: Uint8Array | null;
    while ((reply = back.tryRead()) === null) watchdog.tick();
    const now = performance.now();
    if (i >= o.warmup) samples.addMs(now - t);
    t = now;
    checkReply(i, stampAt(reply, 0));
  }
}

/**
 * Spinning on both sides with claim/commit and drain: the message is written whole into the claimed room
 * (`data.set`, as throughput.ts's zero-copy producer), read in place by the echo, which writes it whole into
 * its own claim; here the reply's sequence number is read in place.
 */
function spinZeroCopy(out: SpscRing, back: SpscRing, o: RoundTripOptions, samples: Samples): void {
  const message = new Uint8Array(o.size);
  const data = out.data;
  const watchdog = new Watchdog('round trip (spin, zero-copy)', LIMIT_MS);
  const total = o.warmup + o.count;
  let replySeq = -1;
  const onReply = (data: Uint8Array, offset: number): void => {
    replySeq = stampAt(data, offset);
  };
  let t = performance.now();
  for (let i = 0; i < total; i++) {
    let at: number;
    while ((at = out.claim(o.size)) < 0) watchdog.tick();
    stamp(message, i);
    data.set(message, at);
    out.commit(at);
    while (back.drain(onReply, 1) === 0) watchdog.tick();
    const now = performance.now();
    if (i >= o.warmup) samples.addMs(now - t);
    t = now;
    checkReply(i, replySeq);
  }
}

/**
 * writeSync / readSync on both sides. With `gapMs`, an idle gap before each
 * send lets the echo spin out its bounded attempts and park on its futex, so
 * every round trip includes waking it; back to back, the reply usually
 * arrives within readSync's spinning.
 */
function syncLoop(out: SpscRing, back: SpscRing, o: RoundTripOptions, samples: Samples): void {
  const message = new Uint8Array(o.size);
  const nap = new Int32Array(new SharedArrayBuffer(4));
  const total = o.warmup + o.count;
  for (let i = 0; i < total; i++) {
    if (o.gapMs) Atomics.wait(nap, 0, 0, o.gapMs);
    stamp(message, i);
    const t0 = performance.now();
    out.writeSync(message, { timeoutMs: LIMIT_MS });
    const reply = back.readSync({ timeoutMs: LIMIT_MS });
    const now = performance.now();
    if (i >= o.warmup) samples.addMs(now - t0);
    checkReply(i, stampAt(reply, 0));
  }
}

/** await write() / await read() here; in the echo `for await` + write() ('async') or read() + write() ('async-read'). */
async function asyncLoop(out: SpscRing, back: SpscRing, o: RoundTripOptions, samples: Samples): Promise<void> {
  const message = new Uint8Array(o.size);
  const total = o.warmup + o.count;
  let t = performance.now();
  for (let i = 0; i < total; i++) {
    stamp(message, i);
    await out.write(message, { timeoutMs: LIMIT_MS });
    const reply = await back.read({ timeoutMs: LIMIT_MS });
    const now = performance.now();
    if (i >= o.warmup) samples.addMs(now - t);
    t = now;
    checkReply(i, stampAt(reply, 0));
  }
}

/** Round trips through two SpscRings in memfd regions, the echo in a child process. */
export async function ringRoundTrip(mode: RingMode, o: RoundTripOptions): Promise<Percentiles> {
  const out = ringRegion(RING_CAPACITY);
  const back = ringRegion(RING_CAPACITY);
  const peer = startPeer(RING_ROLES[mode], [out.region, back.region], { limitMs: LIMIT_MS });
  try {
    await peer.ready;
    const samples = new Samples(o.count);
    if (mode === 'spin') spinCopy(out.ring, back.ring, o, samples);
    else if (mode === 'spin-zc') spinZeroCopy(out.ring, back.ring, o, samples);
    else if (mode === 'sync' || mode === 'parked') syncLoop(out.ring, back.ring, mode === 'parked' ? o : { ...o, gapMs: 0 }, samples);
    else await asyncLoop(out.ring, back.ring, o, samples); // 'async', 'async-read': the echo differs
    out.ring.close(); // the echo sees the end and exits
    await peer.result;
    return percentiles(samples);
  } finally {
    out.ring.close();
    back.ring.close();
    out.region.close();
    back.region.close();
  }
}

/**
 * Runs of the Node floors and of the spinning ring rows compared with them;
 * the one with the lowest p50 is reported, as for the C floor. The rows
 * take the same number of runs as the floors, each with a fresh echo: how
 * the host places the two vCPUs moves a spinning round trip more than
 * anything in it, and a floor given three placements to the ring's one
 * would compare placements, not code.
 */
const SPIN_RUNS = 3;

/**
 * Node's floor, the counterpart of the C floor: one 32-bit word in a memfd
 * region bounced between two Node processes with Atomics.load / store (the
 * parent stores odd values, the echo answers with the next even one). No
 * ring, no payload: what a round trip costs Node before any queue logic.
 * Like the C floor, the best of SPIN_RUNS runs (a fresh echo each):
 * how the host places the two vCPUs moves a floor more than anything in it.
 */
export async function nodeFloorRoundTrip(o: RoundTripOptions): Promise<Percentiles & { runs: number[] }> {
  return bestOfRuns(() => wordRoundTrip(o, false));
}

/**
 * Node's floor for a pair of one-way queues: the same round trip with one
 * word each way, each in a memfd region of its own, as the two SpscRings of
 * the ring rows are. The one-word floor hands one cache line back and
 * forth; two one-way queues (any two) hand over two lines per round trip,
 * which took the EPYC hosts of benches/results longer when their two vCPUs
 * sat on different cores (0.62-0.70 µs against 0.47-0.55 µs, runs minutes
 * apart), and about as long when they shared one (0.22-0.27 µs against
 * 0.21-0.22).
 */
export async function nodeFloorTwoWordsRoundTrip(o: RoundTripOptions): Promise<Percentiles & { runs: number[] }> {
  return bestOfRuns(() => wordRoundTrip(o, true));
}

/** The run with the lowest p50 of SPIN_RUNS runs, and every run's p50. */
async function bestOfRuns(run: () => Promise<Percentiles>): Promise<Percentiles & { runs: number[] }> {
  const runs: Percentiles[] = [];
  for (let i = 0; i < SPIN_RUNS; i++) runs.push(await run());
  const best = runs.reduce((a, b) => (b.p50 < a.p50 ? b : a));
  return { ...best, runs: runs.map((r) => r.p50) };
}

/** `twoWords` false: the echo answers in the request's word (word-echo); true: in a word of a second region (words-echo). */
async function wordRoundTrip(o: RoundTripOptions, twoWords: boolean): Promise<Percentiles> {
  const regions: Region[] = [];
  try {
    for (let i = twoWords ? 2 : 1; i > 0; i--) regions.push(Region.create({ backing: 'memfd', size: FLOOR_REGION_SIZE }));
    const word = new Int32Array(regions[0]!.buffer, 0, 1);
    const reply = new Int32Array(regions[regions.length - 1]!.buffer, 0, 1);
    const peer = startPeer(twoWords ? 'words-echo' : 'word-echo', regions, { limitMs: LIMIT_MS });
    await peer.ready;
    const samples = new Samples(o.count);
    const watchdog = new Watchdog(twoWords ? 'round trip (two words)' : 'round trip (word)', LIMIT_MS);
    const total = o.warmup + o.count;
    let t = performance.now();
    for (let i = 0; i < total; i++) {
      const odd = 2 * (i % 0x3fffffff) + 1;
      // Publishes the request; the echo spins for a new odd value.
      Atomics.store(word, 0, odd);
      // Observes the echo's answer.
      while (Atomics.load(reply, 0) !== odd + 1) watchdog.tick();
      const now = performance.now();
      if (i >= o.warmup) samples.addMs(now - t);
      t = now;
    }
    Atomics.store(word, 0, -1); // the end: the echo exits
    await peer.result;
    return percentiles(samples);
  } finally {
    for (const region of regions) region.close();
  }
}

/** The floors' regions: one page each (memfd memory starts zeroed: the words read 0 before the first request). */
const FLOOR_REGION_SIZE = 4096;

/**
 * Round trips of length-framed messages over a byte stream (`input` carries
 * the replies, `output` the requests): Unix socket or pipes.
 */
async function framedRoundTrips(input: net.Socket, output: net.Socket, o: RoundTripOptions): Promise<Percentiles> {
  const samples = new Samples(o.count);
  const total = o.warmup + o.count;
  const nap = new Int32Array(new SharedArrayBuffer(4));
  let onReply: ((seq: number) => void) | undefined;
  input.on(
    'data',
    framer((frame) => onReply?.(frame.readUInt32LE(0))),
  );
  let t = performance.now();
  for (let i = 0; i < total; i++) {
    if (o.gapMs) {
      Atomics.wait(nap, 0, 0, o.gapMs); // idle, as in the parked ring scenario
      t = performance.now();
    }
    const frame = Buffer.allocUnsafe(4 + o.size);
    frame.writeUInt32LE(o.size, 0);
    stamp(frame, i, 4);
    const reply = new Promise<number>((resolve) => (onReply = resolve));
    output.write(frame);
    checkReply(i, await reply);
    const now = performance.now();
    if (i >= o.warmup) samples.addMs(now - t);
    t = now;
  }
  return percentiles(samples);
}

/** Round trips over a Unix domain socket (net), the echo in a child process. */
export async function socketRoundTrip(o: RoundTripOptions): Promise<Percentiles> {
  const server = await socketPair();
  const peer = startPeer('socket-echo', [], server.path);
  try {
    const socket = await accepted(peer, server);
    socket.setNoDelay?.(true);
    const result = await framedRoundTrips(socket, socket, o);
    socket.end();
    await peer.result;
    return result;
  } finally {
    server.close();
  }
}

/**
 * Round trips over two pipes. Node's `stdio: 'pipe'` is a socketpair, so
 * the pipes are FIFOs (mkfifo), opened read-write and non-blocking here and
 * inherited by the echo as fds 3 (requests) and 4 (replies).
 */
export async function pipeRoundTrip(o: RoundTripOptions): Promise<Percentiles> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-bench-fifo-'));
  const requests = path.join(dir, 'requests');
  const replies = path.join(dir, 'replies');
  const mkfifo = track(spawn('mkfifo', ['-m', '0600', requests, replies], { stdio: 'inherit' }));
  const [code] = await once(mkfifo, 'exit');
  if (code !== 0) throw new Error('mkfifo failed');
  const flags = fs.constants.O_RDWR | fs.constants.O_NONBLOCK;
  const requestFd = fs.openSync(requests, flags);
  const replyFd = fs.openSync(replies, flags);
  fs.rmSync(dir, { recursive: true });
  const peer = startPeer('pipe-echo', [], {}, { extraFds: [requestFd, replyFd] });
  await peer.ready;
  const output = new net.Socket({ fd: requestFd, readable: false, writable: true });
  const input = new net.Socket({ fd: replyFd, readable: true, writable: false });
  try {
    return await framedRoundTrips(input, output, o);
  } finally {
    peer.child.kill('SIGKILL'); // it holds the write end of its own input: no end-of-file reaches it
    input.destroy();
    output.destroy();
  }
}

/** Round trips over the IPC channel: child.send / process.send of a string of `size` characters (JSON). */
export async function ipcRoundTrip(o: RoundTripOptions): Promise<Percentiles> {
  const peer = startPeer('ipc-echo', [], {}, { ipc: true });
  await peer.ready;
  const child = peer.child;
  const samples = new Samples(o.count);
  const total = o.warmup + o.count;
  const body = 'x'.repeat(Math.max(0, o.size - 8));
  let onReply: ((seq: number) => void) | undefined;
  child.on('message', (m: { seq: number }) => onReply?.(m.seq));
  let t = performance.now();
  for (let i = 0; i < total; i++) {
    const reply = new Promise<number>((resolve) => (onReply = resolve));
    child.send({ seq: i, body });
    checkReply(i, await reply);
    const now = performance.now();
    if (i >= o.warmup) samples.addMs(now - t);
    t = now;
  }
  const exited = once(child, 'exit');
  child.disconnect(); // the echo exits on 'disconnect' ('close' never comes for a child whose IPC channel we closed)
  await exited;
  return percentiles(samples);
}

export const PROCESS_ROUND_TRIPS = {
  'rtt.proc.spsc-spin': {
    transport: 'SpscRing, spinning (tryWrite/tryRead)',
    run: (o: RoundTripOptions) => bestOfRuns(() => ringRoundTrip('spin', o)),
  },
  'rtt.proc.spsc-spin-zc': {
    transport: 'SpscRing, spinning, zero-copy (claim/commit, drain)',
    run: (o: RoundTripOptions) => bestOfRuns(() => ringRoundTrip('spin-zc', o)),
  },
  'rtt.proc.spsc-sync': { transport: 'SpscRing, writeSync/readSync back to back', run: (o: RoundTripOptions) => ringRoundTrip('sync', o) },
  'rtt.proc.spsc-parked': {
    transport: 'SpscRing, parked (writeSync/readSync, futex)',
    run: (o: RoundTripOptions) => ringRoundTrip('parked', o),
  },
  'rtt.proc.spsc-async': { transport: 'SpscRing, async (echo: for await, write)', run: (o: RoundTripOptions) => ringRoundTrip('async', o) },
  'rtt.proc.spsc-async-read': {
    transport: 'SpscRing, async (echo: read, write)',
    run: (o: RoundTripOptions) => ringRoundTrip('async-read', o),
  },
  'rtt.proc.node-floor': { transport: 'Node floor: one word, Atomics, two processes spinning', run: nodeFloorRoundTrip },
  'rtt.proc.node-floor-2': {
    transport: 'Node floor, two words: one each way, in two regions (as two one-way queues)',
    run: nodeFloorTwoWordsRoundTrip,
  },
  'rtt.proc.unix-socket': { transport: 'Unix socket (net)', run: socketRoundTrip },
  'rtt.proc.unix-socket-idle': { transport: 'Unix socket (net), idle before each send', run: socketRoundTrip },
  'rtt.proc.pipe': { transport: 'pipe (FIFO, net.Socket)', run: pipeRoundTrip },
  'rtt.proc.ipc': { transport: 'process.send (IPC channel)', run: ipcRoundTrip },
} as const;

export type ProcessRoundTrip = keyof typeof PROCESS_ROUND_TRIPS;

export async function processRoundTrip(name: ProcessRoundTrip, o: RoundTripOptions): Promise<Measurement[]> {
  const scenario = PROCESS_ROUND_TRIPS[name];
  const p = await scenario.run(o);
  const runs = (p as { runs?: number[] }).runs;
  const note = o.gapMs
    ? `${o.gapMs} ms idle before each send${name === 'rtt.proc.spsc-parked' ? ', so the echo is parked in the futex' : ''}`
    : runs
      ? `best of ${runs.length} runs (p50s ${runs.map((ns) => Math.round(ns)).join(', ')} ns)`
      : undefined;
  return latencyRecords(name, scenario.transport, o.size, p, note);
}
