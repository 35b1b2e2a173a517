/**
 * The channel section: @shmring/channel as a program uses it, against what
 * the same program would otherwise use, all on the event loop (no spinning
 * of our own), the value a small object `{ id, name: 'order', values: [1, 2,
 * 3] }` (a fresh one each time), the channel with its defaults (structured
 * clone; Buffers take the raw path).
 *
 * One scenario process per row (run.ts: `channel.<row>`); in it, the
 * channel and its baselines each get a peer of their own, started once, and
 * are measured in turn in short blocks, the order rotating, so that a ratio
 * compares measurements of the same moments of a noisy machine. Rows
 * (records `channel.<row>.<contender>`):
 *
 *   inflight64  requests/s with 64 in flight, two processes: 64 async loops each
 *               `await request(order)` again and again against an async echo handler.
 *               channel: connect(path) → ch.request(v); the peer listen()s and ch.handle(async (v) => v).
 *               json-socket: newline-delimited JSON over a Unix socket, {id, params} → {id, result},
 *               replies matched by id (a Map of pending requests), one socket.write per message.
 *               ipc: child_process.fork with serialization 'advanced', {id, params} → process.send({id, result}).
 *   b2b         one request at a time, back to back: the next is sent when the reply came, as a
 *               program that awaits each call does; p50, p99 and req/s, the same three contenders. A
 *               warm-up block first per contender: a fresh pair's first few thousand requests are
 *               slower on every transport (V8 has not optimized either side yet).
 *   idle        one request after 1 ms idle (`await setTimeout(1)` before each): p50, p99.
 *               channel and channel-poll vs json-socket. channel-poll: the channel with
 *               `poll: 2000` (IDLE_POLL_US) on both ends (the peer's listen(), the client's connect()): an
 *               end waiting for the other's next record looks for it between event-loop turns for that
 *               long before it parks. The server, its handler always waiting for requests, so polls
 *               through every 1 ms gap, keeping a CPU busy; the client waits only for its replies.
 *   bulk        1 MiB Buffers one way between two processes, bytes/s: the producer sends for the
 *               block's time, then 'end'; the consumer answers with what it counted, and the block's
 *               rate is the bytes it acknowledged over the time from the first send to the answer.
 *               channel: `await ch.send(buffer)`; the consumer `for await (const v of ch)`.
 *               socket: 4-byte length prefix and the buffer in one corked write (writev), waiting for
 *               'drain' while more than 4 MiB are queued; the consumer splits frames (framer).
 *   workers     small objects one way, main thread → worker, messages/s; the worker counts and
 *               answers 'end' with its count as above. channel: channelPair() / openChannel(handle),
 *               `await ch.send(order)`; the worker `for await`. messageport: port.postMessage(order) on
 *               a MessageChannel, at most 8192 unacknowledged (the worker acknowledges every 2048).
 *
 * A rate is the median of the blocks' rates (the mean over all blocks is in
 * the note), after a warm-up block per contender.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { channelPair, connect, type Channel } from '@shmring/channel';
import { BULK_PROBE_AT, BULK_SIZE, checkOrder, IDLE_POLL_US, lines, order } from './channel-common.js';
import { mechanism, mechanismLabel } from './eventloop-common.js';
import { droppedNote, percentiles, Samples, startPeer, track, type Peer } from './harness.js';
import type { Measurement, Metric } from './measurement.js';

const PEER = new URL('./channel-peer.js', import.meta.url).pathname;
const WORKER = new URL('./channel-worker.js', import.meta.url);

/** The rows, each a scenario process of its own (`channel.<row>`). */
export const CHANNEL_ROWS = ['inflight64', 'b2b', 'idle', 'bulk', 'workers'] as const;
export type ChannelRow = (typeof CHANNEL_ROWS)[number];

export const IN_FLIGHT = 64;
/** MessagePort flow control of the workers row. */
const PORT_WINDOW = 8192;
const PORT_ACK_EVERY = PORT_WINDOW / 4;
/** The socket producer of the bulk row waits for 'drain' while more than this is queued. */
const SOCKET_QUEUE = 4 << 20;

export interface Blocks {
  /** One unrecorded block per contender first, of this many ms. */
  warmupMs: number;
  /** Measured blocks per contender, of `blockMs` each. */
  blocks: number;
  blockMs: number;
}

export interface ChannelParams {
  inflight: Blocks;
  b2b: Blocks;
  idle: { warmup: number; count: number };
  bulk: Blocks;
  workers: Blocks;
}

export interface Outcome {
  records: Measurement[];
  notes: string[];
}

/** Bytes of the small object as JSON (its size on the socket, less the envelope). */
export const ORDER_BYTES = JSON.stringify(order(100_000)).length;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function socketPath(what: string): string {
  return path.join(os.tmpdir(), `shmring-bench-${process.pid}-${what}-${Math.random().toString(36).slice(2)}.sock`);
}

/** CPU time (ns) the threads of process `pid` have run (/proc/<pid>/task/<tid>/schedstat), or NaN where there is none. */
export function processCpuNs(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  let sum = 0;
  try {
    for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        sum += Number(fs.readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // the thread ended meanwhile
      }
    }
  } catch {
    return Number.NaN;
  }
  return sum;
}

/** Waits for a peer to exit by itself (its client went away), killing it after `ms`. */
async function ended(peer: { child: ChildProcess; result: Promise<unknown> }, ms = 2000): Promise<void> {
  const timer = setTimeout(() => peer.child.kill('SIGKILL'), ms);
  try {
    await peer.result.catch(() => undefined);
  } finally {
    clearTimeout(timer);
  }
}

// ---- contenders ----

/** One transport measured in a row: its blocks' rates or samples, and the CPU spent in its blocks. */
export abstract class Contender {
  readonly rates: number[] = [];
  total = 0;
  totalMs = 0;
  ownCpuUs = 0;
  peerCpuNs = 0;
  wallMs = 0;

  constructor(
    readonly id: string,
    readonly label: string,
  ) {}

  /** The peer process (its CPU is accounted), if the peer is one. */
  abstract get peerPid(): number | undefined;

  abstract close(): Promise<void>;

  /** Runs `block` with the CPU of this process and of the peer accounted to this contender. */
  async measure<T>(block: () => Promise<T>): Promise<T> {
    const cpu = process.cpuUsage();
    const peer = processCpuNs(this.peerPid);
    const t0 = performance.now();
    const result = await block();
    this.wallMs += performance.now() - t0;
    this.peerCpuNs += processCpuNs(this.peerPid) - peer;
    const used = process.cpuUsage(cpu);
    this.ownCpuUs += used.user + used.system;
    return result;
  }

  /** A block's outcome: `n` messages (or bytes) in `ms`. */
  add(n: number, ms: number): void {
    this.rates.push((n * 1000) / ms);
    this.total += n;
    this.totalMs += ms;
  }

  median(): number {
    const sorted = [...this.rates].sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  }

  cpuNote(peerName: string): string {
    const pct = (ms: number): string => `${((ms / this.wallMs) * 100).toFixed(0)}%`;
    const peer = Number.isNaN(this.peerCpuNs) ? '' : `, ${peerName} ${pct(this.peerCpuNs / 1e6)}`;
    return `CPU while measuring (of one CPU): this process ${pct(this.ownCpuUs / 1000)}${peer}`;
  }
}

/** Runs `block` for each contender in turn, `blocks` times, the order rotating. */
async function interleave<C extends Contender>(contenders: C[], blocks: number, block: (c: C) => Promise<void>): Promise<void> {
  for (let b = 0; b < blocks; b++) {
    for (let i = 0; i < contenders.length; i++) {
      const c = contenders[(b + i) % contenders.length]!;
      await c.measure(() => block(c));
    }
  }
}

export async function closeAll(contenders: Contender[]): Promise<void> {
  const errors: unknown[] = [];
  for (const c of contenders) await c.close().catch((err: unknown) => errors.push(err));
  if (errors.length > 0) throw errors[0];
}

// ---- request / reply ----

export abstract class Rpc extends Contender {
  seq = 0;
  abstract request(value: unknown): Promise<unknown>;
}

export class ChannelRpc extends Rpc {
  private constructor(
    readonly ch: Channel,
    readonly peer: Peer,
    id: string,
    label: string,
    readonly poll: number | undefined,
  ) {
    super(id, label);
  }

  /**
   * A channel client and its echo server; `poll` (µs), if given, is the
   * poll option of both ends (the server's listen(), this connect()), the
   * contender then `channel-poll` rather than `channel`.
   */
  static async start(label: string, poll?: number): Promise<ChannelRpc> {
    const at = socketPath('channel');
    const peer = startPeer('channel-echo', [], poll === undefined ? { socketPath: at } : { socketPath: at, poll }, { script: PEER });
    await peer.ready;
    const ch = await connect(at, poll === undefined ? { timeoutMs: 10_000 } : { timeoutMs: 10_000, poll });
    return new ChannelRpc(ch, peer, poll === undefined ? 'channel' : 'channel-poll', label, poll);
  }

  get peerPid(): number | undefined {
    return this.peer.child.pid;
  }

  request(value: unknown): Promise<unknown> {
    return this.ch.request(value);
  }

  async close(): Promise<void> {
    this.ch.close();
    await this.ch.closed;
    await ended(this.peer);
  }
}

/** Requests and replies matched by id: what the socket and IPC clients share. */
class Pending {
  readonly #waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #next = 1;

  add(): { id: number; reply: Promise<unknown> } {
    const id = this.#next++;
    const reply = new Promise<unknown>((resolve, reject) => this.#waiting.set(id, { resolve, reject }));
    return { id, reply };
  }

  settle(m: { id: number; result?: unknown; error?: { message: string } }): void {
    const waiting = this.#waiting.get(m.id);
    if (waiting === undefined) return;
    this.#waiting.delete(m.id);
    if (m.error !== undefined) waiting.reject(new Error(m.error.message));
    else waiting.resolve(m.result);
  }

  failAll(error: Error): void {
    for (const w of this.#waiting.values()) w.reject(error);
    this.#waiting.clear();
  }
}

export class JsonSocketRpc extends Rpc {
  readonly #pending = new Pending();
  /** Corked until the end of this event-loop turn (`corked` only): its writes go out in one. */
  #holding = false;

  private constructor(
    readonly socket: net.Socket,
    readonly peer: Peer,
    readonly corked: boolean,
  ) {
    super(
      corked ? 'json-socket-corked' : 'json-socket',
      corked
        ? 'JSON over a Unix socket, corked per event-loop turn (both ends; as the channel batches its records)'
        : 'JSON over a Unix socket (newline-delimited, ids)',
    );
    socket.setEncoding('utf8');
    socket.on(
      'data',
      lines((line) => this.#pending.settle(JSON.parse(line) as { id: number })),
    );
    socket.on('close', () => this.#pending.failAll(new Error('the JSON server closed the connection')));
  }

  /** `corked`: both ends cork their socket for the rest of the turn at its first write (socket.cork, uncork on nextTick). */
  static async start(corked = false): Promise<JsonSocketRpc> {
    const at = socketPath('json');
    const peer = startPeer('json-echo', [], { socketPath: at, corked }, { script: PEER });
    await peer.ready;
    const socket = net.connect({ path: at });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new JsonSocketRpc(socket, peer, corked);
  }

  get peerPid(): number | undefined {
    return this.peer.child.pid;
  }

  request(value: unknown): Promise<unknown> {
    const { id, reply } = this.#pending.add();
    if (this.corked && !this.#holding) {
      this.#holding = true;
      this.socket.cork();
      process.nextTick(() => {
        this.#holding = false;
        this.socket.uncork();
      });
    }
    this.socket.write(`${JSON.stringify({ id, params: value })}\n`);
    return reply;
  }

  async close(): Promise<void> {
    this.socket.end();
    await ended(this.peer);
  }
}

class IpcRpc extends Rpc {
  readonly #pending = new Pending();

  private constructor(
    readonly child: ChildProcess,
    readonly result: Promise<unknown>,
  ) {
    super('ipc', "process.send (fork, serialization 'advanced')");
    child.on('message', (m: { id: number }) => this.#pending.settle(m));
    child.on('exit', () => this.#pending.failAll(new Error('the IPC child exited')));
  }

  static async start(): Promise<IpcRpc> {
    const child = track(fork(PEER, ['ipc-echo', '{}'], { serialization: 'advanced', stdio: ['ignore', 'pipe', 'inherit', 'ipc'] }));
    const result = new Promise<void>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`ipc-echo exited with ${signal ?? code}`))));
    });
    result.catch(() => undefined);
    await Promise.race([
      new Promise<void>((resolve) => {
        let out = '';
        child.stdout!.on('data', (d: Buffer) => {
          out += d;
          if (/^ready$/m.test(out)) resolve();
        });
      }),
      result.then(() => {
        throw new Error('ipc-echo exited before it was ready');
      }),
    ]);
    return new IpcRpc(child, result);
  }

  get peerPid(): number | undefined {
    return this.child.pid;
  }

  request(value: unknown): Promise<unknown> {
    const { id, reply } = this.#pending.add();
    this.child.send({ id, params: value });
    return reply;
  }

  async close(): Promise<void> {
    this.child.disconnect();
    await ended({ child: this.child, result: this.result });
  }
}

/**
 * One block of the in-flight row: IN_FLIGHT loops, each awaiting one
 * request after the other, for 10 ms (not counted) plus `ms`; counts the
 * replies that arrive in the `ms`, then lets the loops finish.
 */
async function inFlightBlock(c: Rpc, ms: number, count: boolean): Promise<void> {
  const settleMs = 10;
  const from = performance.now() + settleMs;
  const end = from + ms;
  let counted = 0;
  const loop = async (): Promise<void> => {
    for (;;) {
      const id = c.seq++;
      const reply = await c.request(order(id));
      const t = performance.now();
      checkOrder(reply, id, c.id);
      if (t >= end) return;
      if (t >= from) counted++;
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, loop));
  if (count) c.add(counted, ms);
}

/**
 * Starts the request rows' three contenders (the channel, JSON over a
 * socket, process.send) into `contenders`, one after the other, so that
 * the caller's closeAll() ends those started if a later one fails.
 */
async function startRequestRows(contenders: Rpc[], mech: string): Promise<void> {
  contenders.push(await ChannelRpc.start(`@shmring/channel request/handle (${mech})`));
  contenders.push(await JsonSocketRpc.start());
  contenders.push(await IpcRpc.start());
}

async function inFlightRow(p: Blocks, mech: string): Promise<Outcome> {
  const contenders: Rpc[] = [];
  try {
    await startRequestRows(contenders, mech);
    // The channel publishes its records in batches (one per turn, at most 16): the same for the socket, beside
    // the plain one, so that the ratio to a baseline that batches as well is there to read.
    contenders.push(await JsonSocketRpc.start(true));
    for (const c of contenders) await inFlightBlock(c, p.warmupMs, false);
    await interleave(contenders, p.blocks, (c) => inFlightBlock(c, p.blockMs, true));
  } finally {
    await closeAll(contenders);
  }
  return {
    records: contenders.map((c) =>
      rec(
        `channel.inflight64.${c.id}`,
        c.label,
        ORDER_BYTES,
        'messages/s',
        c.median(),
        'req/s',
        `${IN_FLIGHT} in flight; median of ${c.rates.length} blocks of ${p.blockMs} ms interleaved with the others' ` +
          `(${fmtRange(c.rates)} req/s); mean ${Math.round((c.total * 1000) / c.totalMs)} req/s; ${c.cpuNote('server')}`,
        mech,
      ),
    ),
    notes: [],
  };
}

/** Round trips the b2b row times per contender for its percentiles: the first this many (the note says if more came). */
const B2B_SAMPLES = 1_000_000;
/** The b2b row's warm-up block lasts at least this many requests (a fresh pair's first few thousand are slower). */
const B2B_WARMUP_REQUESTS = 5000;

/**
 * One block of the b2b row: one request after the other for `ms`, each
 * timed into `samples` from the end of the last (so a time includes making
 * the value and checking the reply, as in a program's loop); none: a
 * warm-up block, nothing recorded, at least B2B_WARMUP_REQUESTS long.
 */
async function backToBackBlock(c: Rpc, ms: number, samples: Samples | undefined): Promise<void> {
  const start = performance.now();
  const end = start + ms;
  const least = samples === undefined ? B2B_WARMUP_REQUESTS : 0;
  let n = 0;
  for (let t = start; t < end || n < least; n++) {
    const id = c.seq++;
    const reply = await c.request(order(id));
    const now = performance.now();
    checkOrder(reply, id, c.id);
    samples?.addMs(now - t);
    t = now;
  }
  if (samples) c.add(n, performance.now() - start);
}

async function backToBackRow(p: Blocks, mech: string): Promise<Outcome> {
  const contenders: Rpc[] = [];
  const samples = new Map<Rpc, Samples>();
  try {
    await startRequestRows(contenders, mech);
    for (const c of contenders) {
      await backToBackBlock(c, p.warmupMs, undefined);
      samples.set(c, new Samples(B2B_SAMPLES));
    }
    await interleave(contenders, p.blocks, (c) => backToBackBlock(c, p.blockMs, samples.get(c)));
  } finally {
    await closeAll(contenders);
  }
  const records: Measurement[] = [];
  for (const c of contenders) {
    const r = percentiles(samples.get(c)!);
    // Samples past B2B_SAMPLES are not kept (r.dropped): the round trips counted then exceed those timed.
    const timed = r.count < c.total ? ` (the first ${r.count} timed)` : '';
    const note =
      `one request at a time, the next sent when the reply came (a time includes making the value and checking the reply); ` +
      `${c.total} round trips${timed} in ${c.rates.length} blocks of ${p.blockMs} ms interleaved with the others' ` +
      `(after a warm-up block each of ${p.warmupMs} ms and at least ${B2B_WARMUP_REQUESTS} requests); ` +
      `req/s: median of the blocks' (${fmtRange(c.rates)}); p99.9 ${fmtUs(r['p99.9'])}, max ${fmtUs(r.max)}; ${c.cpuNote('server')}`;
    for (const metric of ['p50', 'p99', 'mean'] as const) {
      records.push(rec(`channel.b2b.${c.id}`, c.label, ORDER_BYTES, metric, r[metric], 'ns', note, mech));
    }
    records.push(rec(`channel.b2b.${c.id}`, c.label, ORDER_BYTES, 'messages/s', c.median(), 'req/s', note, mech));
  }
  return { records, notes: [] };
}

/** Requests recorded per block and contender in the idle row (after one that is not). */
const IDLE_BLOCK = 50;

async function idleRow(p: ChannelParams['idle'], mech: string): Promise<Outcome> {
  const contenders: Rpc[] = [];
  const samples = new Map<Rpc, Samples>();
  try {
    contenders.push(await ChannelRpc.start(`@shmring/channel request/handle (${mech})`));
    contenders.push(await ChannelRpc.start(`@shmring/channel request/handle, poll ${IDLE_POLL_US} µs (${mech})`, IDLE_POLL_US));
    contenders.push(await JsonSocketRpc.start());
    const one = async (c: Rpc): Promise<number> => {
      const id = c.seq++;
      const value = order(id);
      const t0 = performance.now();
      const reply = await c.request(value);
      const t1 = performance.now();
      checkOrder(reply, id, c.id);
      return t1 - t0;
    };
    for (const c of contenders) {
      samples.set(c, new Samples(p.count));
      for (let i = 0; i < p.warmup; i++) {
        await sleep(1);
        await one(c);
      }
    }
    let block = 0;
    const blocks = Math.ceil(p.count / IDLE_BLOCK);
    await interleave(contenders, blocks, async (c) => {
      const n = Math.min(IDLE_BLOCK, p.count - Math.floor(block++ / contenders.length) * IDLE_BLOCK);
      await sleep(1);
      await one(c); // the first after the other's block: this pair was idle for longer
      for (let i = 0; i < n; i++) {
        await sleep(1);
        samples.get(c)!.addMs(await one(c));
      }
      // A polling server goes on polling for its window after the last request: let it park within its
      // own block (that CPU accounted to it), not in the next contender's.
      if (c instanceof ChannelRpc && c.poll !== undefined) await sleep(Math.ceil(c.poll / 1000) + 1);
    });
  } finally {
    await closeAll(contenders);
  }
  const records: Measurement[] = [];
  for (const c of contenders) {
    const r = percentiles(samples.get(c)!);
    const polling =
      c instanceof ChannelRpc && c.poll !== undefined
        ? `poll: ${c.poll} on both ends (an end waiting for the other's next record polls between event-loop turns for up to ` +
          `${c.poll} µs before it parks: the server, always waiting for requests, polls through every 1 ms gap, keeping a CPU busy; ` +
          'the client waits only for its replies); '
        : '';
    const note =
      `${r.count} requests, each after await setTimeout(1), in blocks of ${IDLE_BLOCK} interleaved with the others'; ${polling}` +
      `p99.9 ${fmtUs(r['p99.9'])}, max ${fmtUs(r.max)}; ${c.cpuNote('server')}${droppedNote(r)}`;
    const metrics: Metric[] = ['p50', 'p99', 'mean'];
    for (const metric of metrics)
      records.push(rec(`channel.idle.${c.id}`, c.label, ORDER_BYTES, metric, r[metric as 'p50'], 'ns', note, mech));
  }
  return { records, notes: [] };
}

// ---- one-way streams: bulk across processes, small objects to a worker ----

interface Ack {
  count: number;
  bytes?: number;
  bad: number;
  /** The bulk sinks: their minor page faults during the block. */
  faults?: number;
}

abstract class Stream extends Contender {
  /** Sends the next value, resolving when the producer may go on (back-pressure). */
  abstract send(seq: number): Promise<void>;
  /** Sends the end of the block and resolves with the consumer's answer. */
  abstract end(): Promise<Ack>;
  /** What a block's rate counts: the messages, or the bytes acknowledged. */
  abstract amount(ack: Ack): number;
  /** Look at the clock after every `mask + 1` sends. */
  readonly mask: number = 0;
  /** The consumer's minor page faults over the counted blocks (bulk sinks report them). */
  faults = 0;
}

/** One block of a stream: sends for `ms`, then the end; the rate is the amount acknowledged over the time to the answer. */
async function streamBlock(c: Stream, ms: number, count: boolean): Promise<void> {
  const t0 = performance.now();
  const deadline = t0 + ms;
  let sent = 0;
  for (;;) {
    await c.send(sent++);
    if ((sent & c.mask) === 0 && performance.now() >= deadline) break;
  }
  const ack = await c.end();
  const t1 = performance.now();
  if (ack.count !== sent || ack.bad !== 0) throw new Error(`${c.id}: sent ${sent}, the consumer counted ${ack.count} (${ack.bad} bad)`);
  if (count) {
    c.add(c.amount(ack), t1 - t0);
    c.faults += ack.faults ?? 0;
  }
}

class ChannelBulk extends Stream {
  private constructor(
    readonly ch: Channel,
    readonly peer: Peer,
    readonly buffer: Buffer,
    label: string,
  ) {
    super('channel', label);
  }

  static async start(buffer: Buffer, label: string): Promise<ChannelBulk> {
    const at = socketPath('channel');
    const peer = startPeer('channel-sink', [], { socketPath: at, probe: buffer[BULK_PROBE_AT] }, { script: PEER });
    await peer.ready;
    return new ChannelBulk(await connect(at, { timeoutMs: 10_000 }), peer, buffer, label);
  }

  get peerPid(): number | undefined {
    return this.peer.child.pid;
  }

  send(): Promise<void> {
    return this.ch.send(this.buffer);
  }

  async end(): Promise<Ack> {
    await this.ch.send('end');
    return (await this.ch.receive()) as Ack;
  }

  amount(ack: Ack): number {
    return ack.bytes!;
  }

  async close(): Promise<void> {
    this.ch.close();
    await this.ch.closed;
    await ended(this.peer);
  }
}

class SocketBulk extends Stream {
  readonly #header = Buffer.alloc(4);
  #answer: { resolve: (ack: Ack) => void; reject: (err: Error) => void } | undefined;

  private constructor(
    readonly socket: net.Socket,
    readonly peer: Peer,
    readonly buffer: Buffer,
  ) {
    super('socket', 'Unix socket, length-prefixed frames');
    this.#header.writeUInt32LE(buffer.length, 0);
    socket.setEncoding('utf8');
    socket.on(
      'data',
      lines((line) => this.#answer?.resolve(JSON.parse(line) as Ack)),
    );
    socket.on('close', () => this.#answer?.reject(new Error('the socket sink closed the connection')));
  }

  static async start(buffer: Buffer): Promise<SocketBulk> {
    const at = socketPath('sink');
    const peer = startPeer('socket-sink', [], { socketPath: at, probe: buffer[BULK_PROBE_AT] }, { script: PEER });
    await peer.ready;
    const socket = net.connect({ path: at });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new SocketBulk(socket, peer, buffer);
  }

  get peerPid(): number | undefined {
    return this.peer.child.pid;
  }

  async send(): Promise<void> {
    const socket = this.socket;
    socket.cork();
    socket.write(this.#header);
    socket.write(this.buffer);
    socket.uncork();
    while (socket.writableLength > SOCKET_QUEUE) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = (): void => {
          socket.off('close', onClose);
          resolve();
        };
        const onClose = (): void => {
          socket.off('drain', onDrain);
          reject(new Error('the socket sink closed the connection'));
        };
        socket.once('drain', onDrain);
        socket.once('close', onClose);
      });
    }
  }

  end(): Promise<Ack> {
    const answer = new Promise<Ack>((resolve, reject) => (this.#answer = { resolve, reject }));
    this.socket.write(Buffer.alloc(4)); // length 0: the end
    return answer;
  }

  amount(ack: Ack): number {
    return ack.bytes!;
  }

  async close(): Promise<void> {
    this.socket.end();
    await ended(this.peer);
  }
}

async function bulkRow(p: Blocks, mech: string): Promise<Outcome> {
  const buffer = randomFillSync(Buffer.allocUnsafe(BULK_SIZE));
  const contenders: Stream[] = [];
  try {
    contenders.push(await ChannelBulk.start(buffer, `@shmring/channel send/receive, Buffer (${mech})`));
    contenders.push(await SocketBulk.start(buffer));
    for (const c of contenders) await streamBlock(c, p.warmupMs, false);
    await interleave(contenders, p.blocks, (c) => streamBlock(c, p.blockMs, true));
  } finally {
    await closeAll(contenders);
  }
  return {
    records: contenders.map((c) =>
      rec(
        `channel.bulk.${c.id}`,
        c.label,
        BULK_SIZE,
        'bytes/s',
        c.median(),
        'B/s',
        `1 MiB Buffers one way, the consumer acknowledging each block's end; median of ${c.rates.length} blocks of ${p.blockMs} ms ` +
          `interleaved with the other's (${fmtRange(c.rates, 1e6)} MB/s); mean ${((c.total * 1000) / c.totalMs / 1e6).toFixed(0)} MB/s; ` +
          `${c.cpuNote('consumer')}; the consumer's page faults: ${(c.faults / (c.total / 2 ** 20)).toFixed(0)} per MiB received ` +
          `(its fresh 1 MiB buffers, where malloc gave freed memory back to the kernel: 256 per MiB is every page)`,
        mech,
      ),
    ),
    notes: [],
  };
}

/** Starts a channel-worker.ts worker; resolves once it is ready. */
async function startWorker(workerData: object, transferList: MessagePort[]): Promise<Worker> {
  const worker = new Worker(WORKER, { workerData, transferList });
  await new Promise<void>((resolve, reject) => {
    worker.on('message', (m: { ready?: boolean }) => m.ready && resolve());
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`the worker exited (${code}) before it was ready`)));
  });
  worker.on('error', (err) => process.stderr.write(`channel worker: ${err.stack ?? err.message}\n`));
  return worker;
}

class ChannelToWorker extends Stream {
  override readonly mask = 255;

  private constructor(
    readonly ch: Channel,
    readonly worker: Worker,
    label: string,
  ) {
    super('channel', label);
  }

  static async start(label: string): Promise<ChannelToWorker> {
    const [ch, handle] = channelPair();
    const worker = await startWorker({ role: 'channel-count', handle }, [handle.port]);
    return new ChannelToWorker(ch, worker, label);
  }

  get peerPid(): number | undefined {
    return undefined; // the worker's CPU is this process's
  }

  send(seq: number): Promise<void> {
    return this.ch.send(order(seq));
  }

  async end(): Promise<Ack> {
    await this.ch.send('end');
    return (await this.ch.receive()) as Ack;
  }

  amount(ack: Ack): number {
    return ack.count;
  }

  async close(): Promise<void> {
    this.ch.close();
    await this.ch.closed;
    await this.worker.terminate();
  }
}

class PortToWorker extends Stream {
  override readonly mask = PORT_ACK_EVERY - 1;
  #acked = 0;
  #sent = 0;
  #wake: (() => void) | undefined;
  #answer: ((ack: Ack) => void) | undefined;
  /** Set once the worker has died: every wait of this contender fails with it. */
  #dead: Error | undefined;
  #onDeath: ((err: Error) => void) | undefined;

  private constructor(
    readonly port: MessagePort,
    readonly worker: Worker,
  ) {
    super('messageport', `MessagePort postMessage (≤ ${PORT_WINDOW} unacknowledged)`);
    port.on('message', (m: { ack?: number } & Ack) => {
      if (m.ack !== undefined) {
        this.#acked = m.ack;
        this.#wake?.();
      } else {
        this.#answer?.(m);
      }
    });
    const die = (err: Error): void => {
      this.#dead ??= err;
      this.#onDeath?.(this.#dead);
    };
    worker.on('error', die);
    worker.on('exit', (code) => die(new Error(`the MessagePort worker exited (${code})`)));
  }

  /** A wait for `register`'s callback, which fails as soon as the worker dies. */
  #waitFor<T>(register: (resolve: (value: T) => void) => void): Promise<T> {
    if (this.#dead) return Promise.reject(this.#dead);
    return new Promise<T>((resolve, reject) => {
      this.#onDeath = reject;
      register(resolve);
    });
  }

  static async start(): Promise<PortToWorker> {
    const { port1, port2 } = new MessageChannel();
    const worker = await startWorker({ role: 'port-count', port: port2, ackEvery: PORT_ACK_EVERY }, [port2]);
    return new PortToWorker(port1, worker);
  }

  get peerPid(): number | undefined {
    return undefined;
  }

  async send(seq: number): Promise<void> {
    if (seq === 0) {
      this.#sent = 0;
      this.#acked = 0;
    }
    while (this.#sent - this.#acked >= PORT_WINDOW) await this.#waitFor<void>((resolve) => (this.#wake = resolve));
    this.port.postMessage(order(seq));
    this.#sent++;
  }

  end(): Promise<Ack> {
    const answer = this.#waitFor<Ack>((resolve) => (this.#answer = resolve));
    this.port.postMessage('end');
    return answer;
  }

  amount(ack: Ack): number {
    return ack.count;
  }

  async close(): Promise<void> {
    this.port.close();
    await this.worker.terminate();
  }
}

async function workersRow(p: Blocks, mech: string): Promise<Outcome> {
  const contenders: Stream[] = [];
  try {
    contenders.push(await ChannelToWorker.start(`@shmring/channel channelPair, send (${mech})`));
    contenders.push(await PortToWorker.start());
    for (const c of contenders) await streamBlock(c, p.warmupMs, false);
    await interleave(contenders, p.blocks, (c) => streamBlock(c, p.blockMs, true));
  } finally {
    await closeAll(contenders);
  }
  return {
    records: contenders.map((c) =>
      rec(
        `channel.workers.${c.id}`,
        c.label,
        ORDER_BYTES,
        'messages/s',
        c.median(),
        'msg/s',
        `small objects main → worker, the worker counting and acknowledging each block's end; median of ${c.rates.length} blocks of ` +
          `${p.blockMs} ms interleaved with the other's (${fmtRange(c.rates)} msg/s); mean ${Math.round((c.total * 1000) / c.totalMs)} msg/s; ` +
          `${c.cpuNote('')} (main thread and worker)`,
        mech,
      ),
    ),
    notes: [],
  };
}

// ---- records ----

/** A record; the channel's (`channel`, `channel-poll`) carry the wait mechanism of this process (`mech`), the baselines none. */
function rec(
  name: string,
  transport: string,
  messageSize: number,
  metric: Metric,
  value: number,
  unit: string,
  note: string,
  mech: string,
): Measurement {
  const record: Measurement = { name, transport, messageSize, metric, value: Number(value.toPrecision(6)), unit, note };
  if (name.endsWith('.channel') || name.endsWith('.channel-poll')) record.mechanism = mech;
  return record;
}

function fmtUs(ns: number): string {
  return `${(ns / 1000).toFixed(1)} µs`;
}

function fmtRange(rates: number[], unit = 1): string {
  if (rates.length === 0) return '–';
  const r = (x: number): string => (x / unit >= 100 ? Math.round(x / unit).toString() : (x / unit).toPrecision(3));
  return `${r(Math.min(...rates))}–${r(Math.max(...rates))}`;
}

/** One scenario process: the row `channel.<row>`. */
export async function channelScenario(name: string, params: ChannelParams): Promise<Outcome> {
  const row = name.slice('channel.'.length) as ChannelRow;
  const mech = mechanismLabel(mechanism());
  switch (row) {
    case 'inflight64':
      return inFlightRow(params.inflight, mech);
    case 'b2b':
      return backToBackRow(params.b2b, mech);
    case 'idle':
      return idleRow(params.idle, mech);
    case 'bulk':
      return bulkRow(params.bulk, mech);
    case 'workers':
      return workersRow(params.workers, mech);
    default:
      throw new Error(`channel: unknown row ${name} (rows: ${CHANNEL_ROWS.map((r) => `channel.${r}`).join(', ')})`);
  }
}
