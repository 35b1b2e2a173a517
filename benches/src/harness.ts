/**
 * Pieces the demo and the benchmarks share: starting peer processes (and
 * making sure none outlives us), ring regions to hand them, a watchdog for
 * spin loops, the sampling of round trips into a histogram, and the demo's
 * streaming / ping-pong loops over a ring and a Unix socket.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Region } from '@shmring/core';
import { SpscRing, type MpmcQueue } from '@shmring/ringbuf';

const PEER = fileURLToPath(new URL('./peer.js', import.meta.url));

// ---- child processes ----

/** Every child this process started and that has not exited yet. */
const children = new Set<ChildProcess>();
let cleanupInstalled = false;

/** Kills (SIGKILL) every child still running. Safe to call any number of times. */
/** Whether the module at `self` (its file's path) is the program node runs: also through a symlink, or named without `.js`. */
export function isMain(self: string): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  for (const candidate of [entry, `${entry}.js`]) {
    try {
      if (fs.realpathSync(candidate) === fs.realpathSync(self)) return true;
    } catch {
      // no such file: try the next spelling
    }
  }
  return false;
}

export function killChildren(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  children.clear();
}

/** Registers a child so that it is killed when this process exits, however it exits. */
export function track(child: ChildProcess): ChildProcess {
  if (!cleanupInstalled) {
    cleanupInstalled = true;
    process.on('exit', killChildren);
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.once(signal, () => {
        killChildren();
        process.exit(128 + (os.constants.signals[signal] ?? 0));
      });
    }
  }
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** Extra node flags for every peer, for profiling: SHMRING_PEER_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'. */
const PEER_NODE_ARGS = (process.env.SHMRING_PEER_NODE_ARGS ?? '').split(' ').filter(Boolean);

export interface PeerOptions {
  /** Unix socket path the peer connects to. */
  socketPath?: string;
  /** Anything else the role reads (JSON; see peer.ts). */
  [key: string]: unknown;
}

export interface Peer {
  child: ChildProcess;
  /** Resolves when the peer prints its `ready` line (it has attached and is about to serve). */
  ready: Promise<void>;
  /** The last JSON line the peer prints (its report), once it exits with code 0. */
  result: Promise<Record<string, number>>;
}

/**
 * Starts the peer process in `role`, handing it `regions` as fds 3, 4, …
 * (then `extraFds`). The third argument is a socket path or an options object.
 * The peer program is peer.js unless `spawnOptions.script` names another.
 */
export function startPeer(
  role: string,
  regions: Region[] = [],
  options?: string | PeerOptions,
  spawnOptions: { extraFds?: number[]; ipc?: boolean; nodeArgs?: string[]; script?: string } = {},
): Peer {
  const opts: PeerOptions = typeof options === 'string' ? { socketPath: options } : (options ?? {});
  const fds: (number | 'ipc')[] = [...regions.map((r) => r.fd), ...(spawnOptions.extraFds ?? [])];
  if (spawnOptions.ipc) fds.push('ipc');
  const script = spawnOptions.script ?? PEER;
  const child = track(
    spawn(process.execPath, [...PEER_NODE_ARGS, ...(spawnOptions.nodeArgs ?? []), script, role, JSON.stringify(opts)], {
      stdio: ['ignore', 'pipe', 'inherit', ...fds],
    }),
  );
  let stdout = '';
  let onReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d;
    if (/^ready$/m.test(stdout)) onReady();
  });
  const result = new Promise<Record<string, number>>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const lines = stdout
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('{'));
      if (code !== 0) reject(new Error(`peer ${role} exited with ${signal ?? `code ${code}`}`));
      else resolve(lines.length > 0 ? (JSON.parse(lines[lines.length - 1]!) as Record<string, number>) : {});
    });
  });
  result.catch(() => undefined); // a peer we kill on purpose is not an unhandled rejection; awaiting callers still see it
  // A peer that dies before it is ready must not leave us waiting for `ready`.
  const readyOrDead = Promise.race([ready, result.then(() => undefined)]);
  readyOrDead.catch(() => undefined); // reported to whoever awaits it
  return { child, ready: readyOrDead, result };
}

/** The peer's connection to `server`, or the peer's failure if it exits first. */
export function accepted(peer: Peer, server: { accepted: Promise<net.Socket> }): Promise<net.Socket> {
  const died = peer.result.then(() => {
    throw new Error('the peer exited before it connected');
  });
  died.catch(() => undefined); // after a connection, the peer's exit is no error
  return Promise.race([server.accepted, died]);
}

// ---- watchdog ----

/**
 * Bounds a spin loop: `tick()` is cheap (a counter); every 16384 ticks it
 * looks at the clock and at the parent pid, and ends the loop with an error
 * past the deadline, or ends the process if its parent died (a spinning
 * orphan would otherwise occupy a core forever).
 */
export class Watchdog {
  readonly #deadline: number;
  readonly #what: string;
  readonly #parent = process.ppid;
  #ticks = 0;

  constructor(what: string, limitMs: number) {
    this.#what = what;
    this.#deadline = performance.now() + limitMs;
  }

  tick(): void {
    if ((++this.#ticks & 0x3fff) === 0) this.check();
  }

  check(): void {
    if (process.ppid !== this.#parent) process.exit(70); // orphaned: nobody will read our report
    if (performance.now() > this.#deadline) throw new Error(`${this.#what}: no progress before the deadline; is the peer alive?`);
  }
}

/** For peers that wait on the event loop: exit when the parent goes away. */
export function exitWithParent(): void {
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) process.exit(70);
  }, 250).unref();
}

// ---- throughput ----

/**
 * Counts messages at a consumer and times the steady state. The clock is read
 * once per about 64 KiB of messages (at most every 1024 messages); the first
 * `warmupMs` after the first message are left out (JIT warm-up, the ring
 * filling); the rest is cut into windows of at least WINDOW_MS, and the rate
 * reported is the median of the windows' rates, so that a burst of load from
 * another process on the machine does not decide the figure. The plain mean
 * over the whole steady state is reported beside it.
 */
export class Meter {
  static readonly WINDOW_MS = 50;
  readonly #warmupMs: number;
  readonly #every: number;
  #next = 0;
  #first = -1;
  #steadyTime = -1;
  #steadyCount = 0;
  #windowTime = -1;
  #windowCount = 0;
  readonly #rates: number[] = [];

  constructor(warmupMs: number, messageSize = 64) {
    this.#warmupMs = warmupMs;
    this.#every = Math.min(1024, Math.max(1, Math.floor(65536 / Math.max(1, messageSize))));
  }

  /** Call with the running count after each message or batch; cheap unless enough arrived since the last look. */
  check(count: number): void {
    if (count < this.#next) return;
    this.#next = count + this.#every;
    const now = performance.now();
    if (this.#first < 0) this.#first = now;
    if (now - this.#first < this.#warmupMs) return; // warming up
    if (this.#steadyTime < 0) {
      this.#steadyTime = this.#windowTime = now;
      this.#steadyCount = this.#windowCount = count;
    } else if (now - this.#windowTime >= Meter.WINDOW_MS) {
      this.#closeWindow(now, count);
    }
  }

  #closeWindow(now: number, count: number): void {
    this.#rates.push(((count - this.#windowCount) * 1000) / (now - this.#windowTime));
    this.#windowTime = now;
    this.#windowCount = count;
  }

  /** The steady state up to now (the end of the stream): median window rate, mean rate, windows. */
  finish(count: number): { messages: number; seconds: number; rate: number; meanRate: number; windows: number } {
    const now = performance.now();
    if (this.#steadyTime < 0 || count === this.#steadyCount) {
      // The stream ended within the warm-up, or just as it ended (a consumer
      // that drains in large batches can see its last batch arrive at once):
      // all of it is all there is.
      const all = this.#first < 0 ? 0 : (now - this.#first) / 1000;
      return { messages: count, seconds: all, rate: all > 0 ? count / all : 0, meanRate: all > 0 ? count / all : 0, windows: 0 };
    }
    if (now - this.#windowTime >= Meter.WINDOW_MS / 2 && count > this.#windowCount) this.#closeWindow(now, count);
    const seconds = (now - this.#steadyTime) / 1000;
    const messages = count - this.#steadyCount;
    const meanRate = seconds > 0 ? messages / seconds : 0;
    const sorted = [...this.#rates].sort((x, y) => x - y);
    const rate =
      sorted.length === 0
        ? meanRate
        : sorted.length % 2 === 1
          ? sorted[(sorted.length - 1) / 2]!
          : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2;
    return { messages, seconds, rate, meanRate, windows: sorted.length };
  }
}

// ---- rings and sockets ----

/** A memfd region holding a fresh SpscRing of `capacity` bytes. */
export function ringRegion(capacity: number): { region: Region; ring: SpscRing } {
  const region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity }) });
  return { region, ring: SpscRing.create(region, { capacity }) };
}

/** Smallest power of two >= n. */
export function pow2AtLeast(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** A Unix socket server on a fresh path; resolves with the first connection. */
export async function socketPair(): Promise<{ path: string; accepted: Promise<net.Socket>; close(): void }> {
  const socketPath = path.join(os.tmpdir(), `shmring-bench-${process.pid}-${Math.random().toString(36).slice(2)}.sock`);
  const server = net.createServer();
  server.listen(socketPath);
  await once(server, 'listening');
  const accepted = once(server, 'connection').then(([s]) => s as net.Socket);
  return { path: socketPath, accepted, close: () => server.close() };
}

/** Writes the message number into the first four bytes (little-endian). */
export function stamp(message: Uint8Array, seq: number, at = 0): void {
  message[at] = seq;
  message[at + 1] = seq >>> 8;
  message[at + 2] = seq >>> 16;
  message[at + 3] = seq >>> 24;
}

/** Reads the message number stamp() wrote at `at`. */
export function stampAt(data: Uint8Array, at: number): number {
  return (data[at]! | (data[at + 1]! << 8) | (data[at + 2]! << 16) | (data[at + 3]! << 24)) >>> 0;
}

/**
 * Splits a byte stream into 4-byte-length-prefixed frames. A frame that lies
 * inside one chunk is handed over as a view of it; one that spans chunks is
 * gathered once (never re-concatenating what is pending on every chunk).
 */
export function framer(onFrame: (frame: Buffer) => void): (chunk: Buffer) => void {
  let chunks: Buffer[] = [];
  let pending = 0; // bytes in chunks
  let need = -1; // length of the frame being gathered, -1 while its header is incomplete
  return (chunk) => {
    let at = 0;
    // Fast path: nothing pending, frames inside this chunk.
    if (pending === 0) {
      while (chunk.length - at >= 4) {
        const length = chunk.readUInt32LE(at);
        if (chunk.length - at - 4 < length) break;
        onFrame(chunk.subarray(at + 4, at + 4 + length));
        at += 4 + length;
      }
      if (at === chunk.length) return;
      chunk = chunk.subarray(at);
    }
    chunks.push(chunk);
    pending += chunk.length;
    for (;;) {
      if (need < 0) {
        if (pending < 4) return;
        const head = chunks[0]!.length >= 4 ? chunks[0]! : Buffer.concat(chunks);
        need = head.readUInt32LE(0);
      }
      if (pending < 4 + need) return;
      const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, pending);
      onFrame(all.subarray(4, 4 + need));
      const rest = all.subarray(4 + need);
      need = -1;
      chunks = [];
      pending = 0;
      if (rest.length > 0) {
        // The remainder starts with whole frames, most likely: hand it back through the fast path.
        let r = 0;
        while (rest.length - r >= 4) {
          const length = rest.readUInt32LE(r);
          if (rest.length - r - 4 < length) break;
          onFrame(rest.subarray(r + 4, r + 4 + length));
          r += 4 + length;
        }
        if (r < rest.length) {
          chunks.push(rest.subarray(r));
          pending = rest.length - r;
          continue;
        }
      }
      return;
    }
  };
}

// ---- round-trip sampling ----

/**
 * The ending of a program of its own (idle-cold.ts, select-many.ts): prints
 * its result as one line of JSON and its Markdown table, and with an `out`
 * directory writes them to <out>/<name>.json and .md.
 */
export function emitResults(name: string, result: object, md: string, out: string | undefined): void {
  process.stdout.write(`${JSON.stringify(result)}\n${md}`);
  if (out === undefined) return;
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, `${name}.json`), `${JSON.stringify(result, null, 2)}\n`);
  fs.writeFileSync(path.join(out, `${name}.md`), md);
}

/**
 * Round-trip samples, in nanoseconds, kept in a preallocated array while
 * measuring (no allocation, no native call in the timed loop) and turned
 * into a perf_hooks histogram afterwards. Samples past the capacity are not
 * kept but counted (`dropped`), and percentiles() passes the count on: a
 * row's note says so with droppedNote().
 */
export class Samples {
  readonly #ns: Float64Array;
  #count = 0;
  #dropped = 0;

  constructor(capacity: number) {
    this.#ns = new Float64Array(capacity);
  }

  /** Records one sample given in milliseconds (performance.now() differences); past the capacity, counts it dropped. */
  addMs(ms: number): void {
    if (this.#count < this.#ns.length) this.#ns[this.#count++] = ms * 1e6;
    else this.#dropped++;
  }

  get count(): number {
    return this.#count;
  }

  /** Samples offered once the array was full: not kept, so the figures are of the first `count`. */
  get dropped(): number {
    return this.#dropped;
  }

  histogram(): RecordableHistogram {
    const histogram = createHistogram();
    for (let i = 0; i < this.#count; i++) histogram.record(Math.max(1, Math.round(this.#ns[i]!)));
    return histogram;
  }

  meanNs(): number {
    let sum = 0;
    for (let i = 0; i < this.#count; i++) sum += this.#ns[i]!;
    return this.#count === 0 ? 0 : sum / this.#count;
  }
}

/** Percentiles the benchmarks report, in ns. */
export interface Percentiles {
  p50: number;
  p99: number;
  'p99.9': number;
  max: number;
  mean: number;
  count: number;
  /** Samples not kept, past the capacity (Samples.dropped). */
  dropped: number;
}

export function percentiles(samples: Samples): Percentiles {
  const h = samples.histogram();
  return {
    p50: h.percentile(50),
    p99: h.percentile(99),
    'p99.9': h.percentile(99.9),
    max: h.max,
    mean: samples.meanNs(),
    count: h.count,
    dropped: samples.dropped,
  };
}

/** For a row's note: '' when every sample was kept, else how many were not ('; …', to append). */
export function droppedNote(p: { count: number; dropped?: number }): string {
  if (!p.dropped) return '';
  return `; ${p.dropped} more samples were not kept (the array holds ${p.count}): the figures are of the first ${p.count}`;
}

// ---- the demo's loops ----

export interface Stream {
  messages: number;
  seconds: number;
}

/** Messages per publication when streamRing corks: as the socket stream writes one batch at a time. */
export const STREAM_BATCH = 32;

/**
 * Streams `count` messages of `size` bytes into `ring` (spinning while full),
 * corked: one publication per STREAM_BATCH messages.
 */
export function streamRing(ring: SpscRing, count: number, size: number, progress?: (sent: number) => void): Stream {
  const message = new Uint8Array(size);
  const watchdog = new Watchdog('streamRing', 600_000);
  const started = performance.now();
  ring.cork();
  for (let seq = 0; seq < count; seq++) {
    stamp(message, seq);
    while (!ring.tryWrite(message)) watchdog.tick(); // full (and so published): the consumer is behind
    if ((seq + 1) % STREAM_BATCH === 0) {
      ring.uncork();
      ring.cork();
    }
    if ((seq & 0xffff) === 0 && progress) progress(seq);
  }
  ring.uncork();
  return { messages: count, seconds: (performance.now() - started) / 1000 };
}

/** Streams `count` length-framed messages of `size` bytes over `socket`, in batches, honouring back-pressure. */
export async function streamSocket(socket: net.Socket, count: number, size: number): Promise<Stream> {
  const frame = 4 + size;
  const perBatch = Math.max(1, Math.floor(65536 / frame));
  const message = Buffer.alloc(size);
  const started = performance.now();
  for (let seq = 0; seq < count; ) {
    const n = Math.min(perBatch, count - seq);
    const batch = Buffer.allocUnsafe(n * frame);
    for (let i = 0; i < n; i++, seq++) {
      if (size >= 4) stamp(message, seq);
      batch.writeUInt32LE(size, i * frame);
      message.copy(batch, i * frame + 4);
    }
    if (!socket.write(batch)) await once(socket, 'drain');
  }
  socket.end();
  return { messages: count, seconds: (performance.now() - started) / 1000 };
}

/** `count` ping-pongs of one `size`-byte message through two rings; returns the round-trip histogram (ns). */
export async function pingPongRing(
  out: SpscRing,
  back: SpscRing,
  count: number,
  size: number,
  mode: 'spin' | 'async',
): Promise<RecordableHistogram> {
  const samples = new Samples(count);
  const message = new Uint8Array(size);
  const watchdog = new Watchdog('pingPongRing', 600_000);
  for (let i = 0; i < count; i++) {
    stamp(message, i);
    const t0 = performance.now();
    out.writeSync(message);
    if (mode === 'spin') {
      while (back.tryRead() === null) watchdog.tick(); // one message in flight: spin until it returns
    } else {
      await back.read();
    }
    samples.addMs(performance.now() - t0);
  }
  return samples.histogram();
}

/** `count` ping-pongs of one framed message over a Unix socket. */
export async function pingPongSocket(socket: net.Socket, count: number, size: number): Promise<RecordableHistogram> {
  const samples = new Samples(count);
  const frame = Buffer.alloc(4 + size);
  frame.writeUInt32LE(size, 0);
  socket.setNoDelay?.(true);
  let resolveOne: (() => void) | undefined;
  socket.on(
    'data',
    framer(() => {
      const r = resolveOne;
      resolveOne = undefined;
      r?.();
    }),
  );
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const back = new Promise<void>((resolve) => (resolveOne = resolve));
    socket.write(frame);
    await back;
    samples.addMs(performance.now() - t0);
  }
  socket.end();
  return samples.histogram();
}

/** Microseconds from a histogram percentile in ns. */
export function micros(histogram: RecordableHistogram, percentile: number): number {
  return histogram.percentile(percentile) / 1000;
}

export function formatRate(perSecond: number): string {
  return perSecond >= 1e6 ? `${(perSecond / 1e6).toFixed(2)} M/s` : `${(perSecond / 1e3).toFixed(1)} k/s`;
}

/** Bytes of a cache line (x86-64, and the arm64 cores Node runs on): LineSum reads one word of each. */
const CACHE_LINE = 64;

/**
 * A consumer's read of a payload in place: one 32-bit word of each 64-byte
 * cache line that `data[offset, offset + length)` occupies (the lines are the
 * buffer's: a region is page-aligned), summed. What moves a record's bytes
 * to the reading CPU without copying them; keep the sum and use it at the
 * end (report it), so that the JIT cannot drop the reads.
 */
export class LineSum {
  sum = 0;
  #data: Uint8Array | undefined;
  #words: Int32Array<ArrayBufferLike> = new Int32Array(0);

  add(data: Uint8Array, offset: number, length: number): void {
    if (data !== this.#data) {
      this.#data = data;
      this.#words = new Int32Array(data.buffer, 0, data.buffer.byteLength >> 2);
    }
    const words = this.#words;
    const end = data.byteOffset + offset + length;
    let sum = this.sum;
    // The word holding byte `at` lies in at's line; from the first byte, then the start of each next line.
    for (let at = data.byteOffset + offset; at < end; at = (at | (CACHE_LINE - 1)) + 1) sum = (sum + words[at >> 2]!) | 0;
    this.sum = sum;
  }
}

/**
 * The consumer side of a throughput stream, in a process or a worker: counts
 * the messages of `ring` ('copy': tryRead; else drain in place) until it is
 * closed and drained, checking each one's sequence stamp. In place, it also
 * reads one word of each cache line of the payload (LineSum). Calls `ready`
 * once set up; returns the count, the stamps out of order, that sum (0 for
 * 'copy', whose tryRead copies every byte out) and the meter's rates.
 */
export function countRing(
  ring: SpscRing | MpmcQueue,
  options: { mode?: string; warmupMs?: number; size?: number },
  label: string,
  limitMs: number,
  ready: () => void,
): Record<string, number> {
  const watchdog = new Watchdog(label, limitMs);
  let idle = 0; // empty polls: the closed flag (an Atomics.load) is read every 1024th
  const meter = new Meter(options.warmupMs ?? 0, options.size);
  let count = 0;
  let bad = 0;
  let lineSum = 0;
  ready();
  if (options.mode === 'copy') {
    for (;;) {
      const message = ring.tryRead();
      if (message === null) {
        if ((++idle & 1023) === 0 && ring.closed && ring.size === 0) break;
        watchdog.tick();
        continue;
      }
      if (message.length >= 4 && stampAt(message, 0) !== count >>> 0) bad++;
      count++;
      meter.check(count);
    }
  } else {
    // The payload is read where it lies: one 32-bit word of each cache line it occupies (lineSum), so that every
    // line of it comes to this process, as a copy out of the ring would bring it; the sum is reported.
    const lines = new LineSum();
    const onRecord = (data: Uint8Array, offset: number, length: number): void => {
      if (length >= 4 && stampAt(data, offset) !== count >>> 0) bad++;
      lines.add(data, offset, length);
      count++;
    };
    for (;;) {
      if (ring.drain(onRecord) === 0) {
        if ((++idle & 1023) === 0 && ring.closed && ring.drain(onRecord) === 0) break;
        watchdog.tick();
      } else {
        meter.check(count);
      }
    }
    lineSum = lines.sum;
  }
  return { count, bad, lineSum, ...meter.finish(count) };
}

/**
 * The far side of a round trip, in a process or a worker: answers every
 * message of `inbound` with the same bytes on `outbound`, spinning
 * (tryRead / tryWrite) or parking (readSync / writeSync), until `inbound` is
 * closed. Any other error ends the peer with that error.
 */
export function echoRing(
  inbound: SpscRing,
  outbound: SpscRing,
  mode: 'spin' | 'sync',
  label: string,
  limitMs: number,
  ready: () => void,
): void {
  const watchdog = new Watchdog(label, limitMs);
  let idle = 0; // empty polls: the closed flag (an Atomics.load) is read every 1024th
  ready();
  for (;;) {
    let message: Uint8Array | null;
    if (mode === 'spin') {
      while ((message = inbound.tryRead()) === null) {
        if ((++idle & 1023) === 0 && inbound.closed) return;
        watchdog.tick();
      }
      while (!outbound.tryWrite(message)) watchdog.tick();
    } else {
      try {
        message = inbound.readSync();
      } catch (err) {
        if ((err as { code?: string }).code === 'ERR_SHMRING_CLOSED') return;
        throw err;
      }
      outbound.writeSync(message);
    }
  }
}
