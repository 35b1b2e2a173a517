/**
 * The event-loop section: what an ordinary async program sees. Two
 * processes, 64-byte messages, both sides async on the event loop. The
 * client (this process) does `await ping.write(m); await pong.read()`; the
 * echo (eventloop-peer.ts) does `for await (const m of ping) await
 * pong.write(m)`. The baseline is a Unix domain socket (net) with the same
 * pattern: the client writes each message and awaits each reply (one
 * Promise per reply, fed by a splitter of fixed 64-byte messages: no length
 * prefix, no copy); the echo writes each chunk back as it arrives.
 *
 * One scenario process per ring column (run.ts starts one per forced
 * mechanism, with its environment: SHMRING_ASYNC_WAIT, SHMRING_BACKEND) runs
 * the round-trip rows, and measures the socket beside the rings in the same
 * process, interleaved in short blocks (the order rotating), so that a ratio
 * compares two measurements of the same moments of a noisy machine. The
 * pending reads run in processes of their own, the socket's too (a thousand
 * parked waits would disturb what follows).
 *
 * Rows (record names `loop.<row>.<column>`; columns `ring`, `ring.<forced
 * mechanism>`, and `socket@<column>` for the socket measured beside one):
 *   idle       round trip after 1 ms idle (setTimeout between pings): both sides parked. p50, p99;
 *              CPU of both sides while measuring; then (after the idle-warm row, so on warm pairs), one
 *              pair after the other, the same traffic with the event-loop delay probe (below) on in the
 *              client and in the echo
 *   idle-poll  the same with `{ poll: 2000 }` on every read, write and the echo's iterator (rings only;
 *              its baseline is the idle socket)
 *   idle-pinned the idle round trip again, the client on one CPU and the echo on another (taskset, for
 *              the pair's blocks only), the socket's too. Unpinned, Linux mostly runs the woken echo
 *              on the client's CPU (either transport), so each side's work around a wake-up runs
 *              one after the other with the peer's; pinned, it overlaps. p50, p99 (left out where
 *              there is no taskset, only one CPU, or taskset fails)
 *   idle-warm  the idle round trip again, on the same two pairs (ring and socket) once each has made
 *              `warm` more of them: the idle row measures fresh processes, whose JavaScript V8 has not
 *              optimized yet (both transports get faster over the first few thousand round trips, at
 *              different rates); this one measures a long-running program. p50, p99
 *   b2b        back-to-back round trips: p50, p99
 *   inflight64 64 requests in flight: the client writes 64, then writes one more per reply; round trips/s
 *   pending    1000 idle reads (1000 rings, or 1000 connected sockets, in one process; nothing arrives):
 *              extra threads (/proc/self/task), CPU % of one CPU (process.cpuUsage, all threads) over the
 *              window, and the event-loop delay p99 in a second window. The window starts settleMs after
 *              the reads: what idle costs in a running program, not the warm-up (V8 compiling the
 *              watchdog's first ticks over a thousand liveness checks)
 *
 * Event-loop delay is measured by a probe, not by perf_hooks'
 * monitorEventLoopDelay: that one times a libuv timer, whose clock is in
 * whole milliseconds, so its intervals are quantised to 1 ms (an idle Node 20
 * process reports p99 2.2 ms at resolution 1 ms: 1.2 ms of "delay" with
 * nothing running), and a 20 ms resolution gives 50 samples a second with the
 * same quantisation. The probe (eventloop-probe.ts) is a child process that
 * writes its clock (CLOCK_MONOTONIC, the clock process.hrtime reads in every
 * process) to a socketpair at random gaps of 0.5 to 2.5 ms; the measured
 * process's 'data' callback takes the difference: how long an I/O callback
 * that became ready waited before it ran, including waking an idle loop. The
 * socket's same probe gives the floor of that in the same run.
 * monitorEventLoopDelay (resolution 20 ms, interval minus 20 ms) is kept in
 * the pending rows' notes.
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { ErrorCodes, Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import {
  cpuPercent,
  mechanism,
  mechanismLabel,
  PEER,
  pollSupported,
  PROBE_FLAG_AT,
  spawnProbe,
  waitOptions,
  type LoopWaitOptions,
  type Mechanism,
} from './eventloop-common.js';
import {
  accepted,
  droppedNote,
  percentiles,
  ringRegion,
  Samples,
  socketPair,
  stamp,
  stampAt,
  startPeer,
  type Percentiles,
} from './harness.js';
import type { Measurement, Metric } from './measurement.js';

const SIZE = 64;
const RING_CAPACITY = 1 << 16;
/** A wait that takes this long means the peer is gone: the row fails instead of hanging. */
const LIMIT_MS = 30_000;
/** The cooperative polling budget of the poll rows, µs. */
export const POLL_MICROS = 2000;
export const IN_FLIGHT = 64;
/** Back to back: round trips recorded at least, however slow they are. */
const MIN_SAMPLES = 100;

/** The transports of the section: the socket baseline, and the rings with each mechanism forced by environment. */
export const LOOP_TRANSPORTS = [
  { id: 'socket', label: 'Unix socket (net)', env: {} },
  { id: 'ring', label: 'rings, default', env: {} },
  { id: 'ring.futex_waitv', label: 'rings, SHMRING_ASYNC_WAIT=futex_waitv', env: { SHMRING_ASYNC_WAIT: 'futex_waitv' } },
  { id: 'ring.threads', label: 'rings, SHMRING_ASYNC_WAIT=threads', env: { SHMRING_ASYNC_WAIT: 'threads' } },
  { id: 'ring.koffi', label: 'rings, SHMRING_BACKEND=koffi', env: { SHMRING_BACKEND: 'koffi' } },
] as const;
/** Variables that choose a mechanism: removed from every step's environment before its own are added. */
export const MECHANISM_ENV = ['SHMRING_ASYNC_WAIT', 'SHMRING_BACKEND'] as const;

export interface EventLoopParams {
  transport: string;
  /** Idle round trips: warm-up, recorded, then with the probe. */
  idle: { warmup: number; count: number; probed: number; warm: number };
  /** Back to back and in flight: warm-up and measured time, ms. */
  b2b: { warmupMs: number; ms: number };
  inflight: { warmupMs: number; ms: number };
  /** Pending reads: settle before counting, the CPU window, the probe window (ms). */
  pending: { reads: number; settleMs: number; cpuMs: number; probeMs: number };
}

export interface Outcome {
  records: Measurement[];
  notes: string[];
  /** Rows that failed (the others are reported): the runner counts the scenario as failed. */
  failures: string[];
}

/** Who a row measures: the transport id (`socket`, `ring`, `ring.threads`, …), its label, the mechanism this process reports. */
interface Who {
  id: string;
  label: string;
  mechanism: string;
}

// ---- the two transports, behind one client interface ----

interface Pair {
  /** Sends one message (a fresh buffer each time: the socket may hold on to it). */
  send(message: Uint8Array): Promise<void>;
  /** The next reply. */
  receive(): Promise<Uint8Array>;
  /** Ends the echo; resolves with its report. */
  close(): Promise<Record<string, unknown>>;
  /** The echo's process id. */
  pid: number;
}

async function ringPair(poll: number | undefined): Promise<Pair> {
  const ping = ringRegion(RING_CAPACITY);
  const pong = ringRegion(RING_CAPACITY);
  const peer = startPeer('ring-echo', [ping.region, pong.region], poll === undefined ? {} : { poll }, { script: PEER });
  await peer.ready;
  const opts: LoopWaitOptions = { ...waitOptions(poll), timeoutMs: LIMIT_MS };
  return {
    pid: peer.child.pid!,
    send: (m) => ping.ring.write(m, opts),
    receive: () => pong.ring.read(opts),
    close: async () => {
      ping.ring.close(); // the echo's iterator ends
      try {
        return await peer.result;
      } finally {
        pong.ring.close();
        ping.region.close();
        pong.region.close();
      }
    },
  };
}

/** Splits the socket's byte stream into fixed SIZE-byte messages (no length prefix) and hands each to one receive(). */
class Replies {
  #queue: Uint8Array[] = [];
  #head = 0;
  #waiter: ((m: Uint8Array) => void) | undefined;
  #rest: Buffer | null = null;

  readonly onData = (data: Buffer): void => {
    const chunk = this.#rest ? Buffer.concat([this.#rest, data]) : data;
    this.#rest = null;
    let at = 0;
    for (; chunk.length - at >= SIZE; at += SIZE) {
      const m = chunk.subarray(at, at + SIZE);
      const waiter = this.#waiter;
      if (waiter) {
        this.#waiter = undefined;
        waiter(m);
      } else {
        this.#queue.push(m);
      }
    }
    if (at < chunk.length) this.#rest = chunk.subarray(at);
  };

  receive(): Promise<Uint8Array> {
    if (this.#head < this.#queue.length) {
      const m = this.#queue[this.#head++]!;
      if (this.#head === this.#queue.length) {
        this.#queue = [];
        this.#head = 0;
      }
      return Promise.resolve(m);
    }
    return new Promise((resolve) => (this.#waiter = resolve));
  }
}

async function socketPairOf(): Promise<Pair> {
  const server = await socketPair();
  const peer = startPeer('socket-echo', [], server.path, { script: PEER });
  const socket = await accepted(peer, server);
  server.close();
  const replies = new Replies();
  socket.on('data', replies.onData);
  return {
    pid: peer.child.pid!,
    send: (m) => {
      socket.write(m);
      return Promise.resolve();
    },
    receive: () => replies.receive(),
    close: async () => {
      socket.end();
      return peer.result;
    },
  };
}

/** A fresh message carrying `seq` (and, with `probe`, the flag that starts the echo's delay probe). */
function message(seq: number, probe = false): Uint8Array {
  const m = new Uint8Array(SIZE);
  stamp(m, seq);
  if (probe) m[PROBE_FLAG_AT] = 1;
  return m;
}

function check(seq: number, reply: Uint8Array): void {
  const got = stampAt(reply, 0);
  if (got !== seq >>> 0) throw new Error(`round trip ${seq}: the reply carries ${got}`);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// ---- rows ----

const us = (ns: number): string => `${(ns / 1000).toFixed(1)} µs`;

function rec(name: string, who: Who, metric: Metric, value: number, unit: string, note?: string): Measurement {
  return {
    name,
    transport: who.label,
    messageSize: SIZE,
    metric,
    value: Number(value.toPrecision(6)),
    unit,
    mechanism: who.mechanism,
    ...(note ? { note } : {}),
  };
}

/** CPU time (ns) the threads of process `pid` have run: the first field of each /proc/<pid>/task/<tid>/schedstat. */
function processCpuNs(pid: number): number {
  let sum = 0;
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      sum += Number(fs.readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return sum;
}

/** One pair measured in a row: its samples, and the CPU both sides spent in its blocks. */
class Contender {
  readonly samples: Samples;
  seq = 0;
  clientCpuUs = 0;
  echoCpuNs = 0;
  wallMs = 0;
  rounds = 0;
  replies = 0;
  delay: (Percentiles & { voided: number }) | undefined;
  report: Record<string, unknown> = {};
  closed = false;

  constructor(
    readonly row: string,
    readonly who: Who,
    readonly pair: Pair,
    capacity: number,
  ) {
    this.samples = new Samples(capacity);
  }

  get name(): string {
    return `loop.${this.row}.${this.who.id}`;
  }

  /** Runs `block` with the CPU of both sides and the wall time accounted to this pair. */
  async measure(block: () => Promise<void>): Promise<void> {
    const cpu = process.cpuUsage();
    const echo = processCpuNs(this.pair.pid);
    const t0 = performance.now();
    await block();
    this.wallMs += performance.now() - t0;
    this.echoCpuNs += processCpuNs(this.pair.pid) - echo;
    const used = process.cpuUsage(cpu);
    this.clientCpuUs += used.user + used.system;
  }

  /** One round trip; returns its time in ms. */
  async roundTrip(probe = false): Promise<number> {
    const m = message(this.seq, probe);
    const t0 = performance.now();
    await this.pair.send(m);
    const reply = await this.pair.receive();
    const t1 = performance.now();
    check(this.seq++, reply);
    return t1 - t0;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.report = await this.pair.close();
  }

  cpuNote(): string {
    const pct = (ms: number): string => `${((ms / this.wallMs) * 100).toFixed(1)}%`;
    return `CPU while measuring: client ${pct(this.clientCpuUs / 1000)}, echo ${pct(this.echoCpuNs / 1e6)} of one CPU`;
  }
}

/** The socket measured beside the rings of column `who`. */
function socketBeside(who: Who): Who {
  return { id: `socket@${who.id}`, label: 'Unix socket (net)', mechanism: 'net' };
}

/** Runs `block` for each contender in turn, `blocks` times, the order rotating. */
async function interleave(contenders: Contender[], blocks: number, block: (c: Contender, index: number) => Promise<void>): Promise<void> {
  for (let b = 0; b < blocks; b++) {
    for (let i = 0; i < contenders.length; i++) {
      const c = contenders[(b + i) % contenders.length]!;
      await c.measure(() => block(c, b));
    }
  }
}

async function closeAll(contenders: Contender[]): Promise<void> {
  const errors: unknown[] = [];
  for (const c of contenders) await c.close().catch((err: unknown) => errors.push(err));
  if (errors.length > 0) throw errors[0];
}

/** Round trips of the idle rows, per block and contender (after one that is not recorded). */
const IDLE_BLOCK = 50;

/**
 * The two CPUs the idle-pinned row puts the client and the echo on (the
 * first two this process may use), and that whole list, to give back after
 * each block; undefined where there is no taskset or only one CPU.
 */
function pinnableCpus(): { client: string; echo: string; all: string } | undefined {
  try {
    const out = execFileSync('taskset', ['-p', '-c', String(process.pid)], { encoding: 'utf8' });
    const all = out.slice(out.lastIndexOf(':') + 1).trim();
    const cpus = all.split(',').flatMap((part) => {
      const [a, b = a] = part.split('-').map(Number);
      return Array.from({ length: b! - a! + 1 }, (_, i) => a! + i);
    });
    return cpus.length >= 2 ? { client: String(cpus[0]), echo: String(cpus[1]), all } : undefined;
  } catch {
    return undefined; // no taskset (util-linux)
  }
}

/** Why pinning failed in this process (the idle-pinned row is then left out), or undefined. */
let pinFailure: string | undefined;

/**
 * Puts every thread of this process on `client` and every thread of process
 * `echo` on `echoCpus` (both tried, whatever the first does); false, with
 * pinFailure set, if either fails.
 */
function pinBoth(echo: number, client: string, echoCpus: string): boolean {
  let ok = true;
  for (const [pid, cpus] of [
    [process.pid, client],
    [echo, echoCpus],
  ] as const) {
    try {
      execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
    } catch (err) {
      pinFailure ??= `taskset -a -p -c ${cpus} ${pid} failed: ${(err as Error).message.split('\n')[0]}`;
      ok = false;
    }
  }
  return ok;
}

/** One block of an idle row: `n` round trips recorded, each after 1 ms of idle. */
async function idleBlock(c: Contender, n: number): Promise<void> {
  await sleep(1);
  await c.roundTrip(); // the first after another pair's block: this pair was idle for longer
  for (let i = 0; i < n; i++) {
    await sleep(1);
    c.samples.addMs(await c.roundTrip());
  }
}

/**
 * Round trips after 1 ms of idle (setTimeout(1) before each), for the
 * socket, the rings, and the rings with `{ poll }`, interleaved in blocks of
 * IDLE_BLOCK (the pinned pairs too, where they can be pinned); then the
 * idle socket and ring pairs again once each has made `warm` more (the
 * idle-warm row; the poll pair makes them too); then `probed` more round
 * trips of each pair (warm by then) in turn with
 * the event-loop delay probe on, in the client and (from the first flagged
 * message) in the echo.
 */
async function idleRows(who: Who, p: EventLoopParams['idle']): Promise<Measurement[]> {
  const pollFound = await pollSupported();
  const cpus = pinnableCpus();
  const contenders: Contender[] = [];
  const warmRecords: Measurement[] = [];
  try {
    contenders.push(new Contender('idle', socketBeside(who), await socketPairOf(), p.count));
    contenders.push(new Contender('idle', who, await ringPair(undefined), p.count));
    contenders.push(new Contender('idle-poll', who, await ringPair(POLL_MICROS), p.count));
    if (cpus !== undefined) {
      contenders.push(new Contender('idle-pinned', socketBeside(who), await socketPairOf(), p.count));
      contenders.push(new Contender('idle-pinned', who, await ringPair(undefined), p.count));
    }
    for (const c of contenders) {
      for (let i = 0; i < p.warmup; i++) {
        await sleep(1);
        await c.roundTrip();
      }
    }
    await interleave(contenders, Math.ceil(p.count / IDLE_BLOCK), async (c, b) => {
      const n = Math.min(IDLE_BLOCK, p.count - b * IDLE_BLOCK);
      const pinned = c.row === 'idle-pinned' && cpus !== undefined;
      try {
        // A pinning that fails skips the pinned pairs' blocks (pinFailure), not the other rows.
        if (pinned && (pinFailure !== undefined || !pinBoth(c.pair.pid, cpus.client, cpus.echo))) return;
        await idleBlock(c, n);
      } finally {
        if (pinned) pinBoth(c.pair.pid, cpus.all, cpus.all);
      }
    });
    // The idle pairs in a long-running program: `warm` more idle round trips each, then measured again.
    // The poll pair makes them too, so that every pair the probes below look at has the same history.
    const warming = contenders.filter((c) => c.row === 'idle' || c.row === 'idle-poll');
    for (let i = 0; i < p.warm; i++) {
      for (const c of warming) {
        await sleep(1);
        await c.roundTrip();
      }
    }
    const warm = contenders.filter((c) => c.row === 'idle').map((c) => new Contender('idle-warm', c.who, c.pair, p.count));
    await interleave(warm, Math.ceil(p.count / IDLE_BLOCK), (c, b) => idleBlock(c, Math.min(IDLE_BLOCK, p.count - b * IDLE_BLOCK)));
    for (const c of warm) {
      const rtt = percentiles(c.samples);
      const note =
        `${rtt.count} round trips, each after setTimeout(1), in blocks of ${IDLE_BLOCK} interleaved with the other pair's, ` +
        `on the idle row's pair once it had made ${p.warm} more; ${c.cpuNote()}${droppedNote(rtt)}`;
      warmRecords.push(rec(c.name, c.who, 'p50', rtt.p50, 'ns', note), rec(c.name, c.who, 'p99', rtt.p99, 'ns', note));
    }
    for (const c of contenders) {
      if (c.row === 'idle-pinned') continue; // no probe: its rows are the round trip's
      const probe = await spawnProbe();
      probe.start();
      for (let i = 0; i < p.probed; i++) {
        await sleep(1);
        await c.roundTrip(true); // the echo probes its own loop too
      }
      c.delay = probe.stop();
      await c.close(); // the echo stops its probe and reports
      if (!c.delay) throw new Error('the event-loop delay probe delivered nothing');
    }
  } finally {
    await closeAll(contenders);
  }
  const records: Measurement[] = [];
  for (const c of contenders) {
    const rtt = percentiles(c.samples);
    if (c.row === 'idle-pinned') {
      if (pinFailure !== undefined || rtt.count === 0) continue; // left out: see the outcome's note
      const note =
        `${rtt.count} round trips, each after setTimeout(1), in blocks of ${IDLE_BLOCK} interleaved with the other pairs'; ` +
        `during its blocks the client on CPU ${cpus!.client}, the echo on CPU ${cpus!.echo} (taskset, every thread; no CPU figure: the blocks include the taskset calls)` +
        droppedNote(rtt);
      records.push(rec(c.name, c.who, 'p50', rtt.p50, 'ns', note), rec(c.name, c.who, 'p99', rtt.p99, 'ns', note));
      continue;
    }
    const poll =
      c.row === 'idle-poll'
        ? `; { poll: ${POLL_MICROS} } on every wait${pollFound ? '' : ' (not detected in this build: an invalid poll was accepted; the option may not exist yet)'}`
        : '';
    const note = `${rtt.count} round trips, each after setTimeout(1), in blocks of ${IDLE_BLOCK} interleaved with the other pairs'${poll}; ${c.cpuNote()}${droppedNote(rtt)}`;
    records.push(
      rec(c.name, c.who, 'p50', rtt.p50, 'ns', note),
      rec(c.name, c.who, 'p99', rtt.p99, 'ns', note),
      rec(c.name, c.who, 'mean', rtt.mean, 'ns', note),
      rec(
        c.name,
        c.who,
        'event-loop delay p99',
        c.delay!.p99,
        'ns',
        `probe: ${c.delay!.count} callbacks during ${p.probed} more such round trips (${c.delay!.voided} more dropped: the probe was held up); ` +
          `p50 ${us(c.delay!.p50)}, max ${us(c.delay!.max)}${droppedNote(c.delay!)}`,
      ),
    );
    const echo = c.report.delay as (Percentiles & { voided: number }) | undefined;
    if (echo) {
      records.push(
        rec(
          c.name,
          c.who,
          'echo event-loop delay p99',
          echo.p99,
          'ns',
          `the echo's own probe: ${echo.count} callbacks during the same round trips (${echo.voided} dropped); p50 ${us(echo.p50)}, max ${us(echo.max)}` +
            droppedNote(echo),
        ),
      );
    }
  }
  return [...records, ...warmRecords];
}

/** Round trips each pair makes at least in the warm-up of the back-to-back and in-flight rows. */
const WARMUP_ROUND_TRIPS = 5000;

/** Measured time of a block of the back-to-back and in-flight rows, ms. */
const BLOCK_MS = 100;

/** Back-to-back round trips, the socket and the rings interleaved in blocks of BLOCK_MS; the clock is chained. */
async function backToBackRows(who: Who, p: EventLoopParams['b2b']): Promise<Measurement[]> {
  const contenders: Contender[] = [];
  const capacity = Math.min(2_000_000, Math.ceil(p.ms * 1000));
  try {
    contenders.push(new Contender('b2b', socketBeside(who), await socketPairOf(), capacity));
    contenders.push(new Contender('b2b', who, await ringPair(undefined), capacity));
    // Warm-up: the time asked, and at least WARMUP_ROUND_TRIPS whichever pair is slower (a socket at 70 µs a
    // round trip made some 2,800 in 200 ms against the rings' 200,000, and fresh processes take some thousands
    // to reach their pace: timed by the clock alone, the socket was measured still warming up).
    for (const c of contenders) {
      const end = performance.now() + p.warmupMs;
      for (let n = 0; n < WARMUP_ROUND_TRIPS || performance.now() < end; n++) await c.roundTrip();
    }
    const blockMs = Math.min(BLOCK_MS, p.ms);
    await interleave(contenders, Math.ceil(p.ms / blockMs), async (c) => {
      await c.roundTrip(); // the first after another pair's block
      const end = performance.now() + blockMs;
      let t = performance.now();
      for (let n = 0; ; n++) {
        await c.pair.send(message(c.seq));
        const reply = await c.pair.receive();
        const now = performance.now();
        check(c.seq++, reply);
        c.samples.addMs(now - t);
        t = now;
        if (now >= end && n >= MIN_SAMPLES / 10) break;
      }
    });
  } finally {
    await closeAll(contenders);
  }
  return contenders.flatMap((c) => {
    const rtt = percentiles(c.samples);
    const note = `${rtt.count} round trips in blocks of ${BLOCK_MS} ms interleaved with the other pair's, after ${p.warmupMs} ms of warm-up${droppedNote(rtt)}`;
    return [
      rec(c.name, c.who, 'p50', rtt.p50, 'ns', note),
      rec(c.name, c.who, 'p99', rtt.p99, 'ns', note),
      rec(c.name, c.who, 'mean', rtt.mean, 'ns', note),
    ];
  });
}

/**
 * IN_FLIGHT requests in flight, the socket and the rings interleaved in
 * blocks: each block writes IN_FLIGHT, then one more per reply (awaiting
 * each), for BLOCK_MS, then takes the last replies. The replies counted are
 * those from 10 ms into the block to its end.
 */
async function inFlightRows(who: Who, p: EventLoopParams['inflight']): Promise<Measurement[]> {
  const contenders: Contender[] = [];
  const settleMs = 10;
  const run = async (c: Contender, ms: number, count: boolean): Promise<void> => {
    let sent = c.seq;
    let received = c.seq;
    for (let i = 0; i < IN_FLIGHT; i++) await c.pair.send(message(sent++));
    const start = performance.now();
    const from = start + settleMs;
    const end = start + settleMs + ms;
    let r0 = -1;
    let t0 = 0;
    let sending = true;
    while (received < sent) {
      const reply = await c.pair.receive();
      check(received++, reply);
      if (!sending) continue;
      if ((received & 15) === 0) {
        const now = performance.now();
        if (r0 < 0 && now >= from) {
          r0 = received;
          t0 = now;
        } else if (now >= end) {
          if (count && r0 >= 0) {
            c.replies += received - r0;
            c.rounds += now - t0;
          }
          sending = false;
          continue;
        }
      }
      await c.pair.send(message(sent++));
    }
    c.seq = sent;
  };
  try {
    contenders.push(new Contender('inflight64', socketBeside(who), await socketPairOf(), 0));
    contenders.push(new Contender('inflight64', who, await ringPair(undefined), 0));
    // Warm-up as the back-to-back row's: the time asked, and at least WARMUP_ROUND_TRIPS round trips each.
    for (const c of contenders) {
      const first = c.seq;
      while (c.seq - first < WARMUP_ROUND_TRIPS) await run(c, p.warmupMs, false);
    }
    const blockMs = Math.min(BLOCK_MS, p.ms);
    await interleave(contenders, Math.ceil(p.ms / blockMs), (c) => run(c, blockMs, true));
  } finally {
    await closeAll(contenders);
  }
  return contenders.map((c) => {
    if (!(c.rounds > 0)) throw new Error(`${c.name}: no steady state measured`);
    const rate = (c.replies * 1000) / c.rounds;
    const note = `${c.replies} round trips in ${c.rounds.toFixed(0)} ms (blocks of ${BLOCK_MS} ms interleaved with the other pair's), ${IN_FLIGHT} in flight`;
    return rec(c.name, c.who, 'messages/s', rate, 'rt/s', note);
  });
}

function threadCount(): number {
  return fs.readdirSync('/proc/self/task').length;
}

/**
 * `reads` reads pending in this process, with nothing arriving: on as many
 * rings (memfd regions; a producer registered on each writes nothing more), or on as many connected Unix sockets
 * (both ends in this process; nobody writes). First the CPU of the process
 * alone over `cpuMs`; then counts the threads before and after the reads
 * start, the CPU over `cpuMs`, then the event-loop delay over `probeMs`.
 */
async function pendingRow(who: Who, p: EventLoopParams['pending']): Promise<Outcome> {
  const notes: string[] = [];
  await sleep(100); // Node's own start-up threads have started
  // The process alone first, nothing pending: V8's and Node's own background work, which the busy
  // host inflates; the CPU the reads cost is what they add to it (the socket column is the other baseline).
  const aloneFrom = process.cpuUsage();
  const aloneSince = performance.now();
  await sleep(p.cpuMs);
  const cpuAlone = cpuPercent(aloneFrom, aloneSince);
  const before = threadCount();
  let settled = 0;
  let started = 0; // reads (or sockets) set up
  let firstError: string | undefined;
  const cleanups: (() => void)[] = [];
  if (who.id === 'socket') {
    // One connection at a time, each awaited on both ends: a burst of connects overruns the listen
    // backlog (EAGAIN on Unix sockets), as the server accepts about one connection per loop turn then.
    const socketPath = path.join(os.tmpdir(), `shmring-bench-${process.pid}-pending.sock`);
    let onAccept: (() => void) | undefined;
    const far: net.Socket[] = [];
    const server = net.createServer((s) => {
      far.push(s);
      onAccept?.();
    });
    server.listen(socketPath);
    await once(server, 'listening');
    const clients: net.Socket[] = [];
    cleanups.push(() => {
      for (const c of [...clients, ...far]) c.destroy();
      server.close();
    });
    try {
      for (let i = 0; i < p.reads; i++) {
        const acceptedOne = new Promise<void>((resolve) => (onAccept = resolve));
        const client = net.connect({ path: socketPath });
        client.on('data', () => settled++); // the pending read: nothing comes
        clients.push(client);
        started = clients.length;
        await new Promise<void>((resolve, reject) => {
          client.once('connect', resolve);
          client.once('error', reject);
        });
        await acceptedOne;
      }
    } catch (err) {
      firstError ??= `connecting socket ${clients.length}: ${(err as Error).message}`;
    }
  } else {
    const capacity = 1024;
    const size = SpscRing.regionSize({ capacity });
    const rings: { region: Region; ring: SpscRing; producer: SpscRing }[] = [];
    try {
      for (let i = 0; i < p.reads; i++) {
        const region = Region.create({ backing: 'memfd', size });
        const ring = SpscRing.create(region, { capacity });
        // A live producer registered on each (another object, so another lock-holding file description):
        // the dead-peer checks ask its lock, as they ask a producer process's.
        const producer = SpscRing.attach(region);
        producer.tryWrite(new Uint8Array(1));
        ring.tryRead();
        rings.push({ region, ring, producer });
      }
    } catch (err) {
      firstError ??= `creating ring ${rings.length + 1}: ${(err as Error).message}`;
    }
    started = rings.length;
    for (const { ring } of rings) {
      ring.read().then(
        () => settled++,
        (err: { code?: string; message?: string }) => {
          if (err.code !== ErrorCodes.CLOSED) {
            settled++;
            firstError ??= err.message;
          }
        },
      );
    }
    cleanups.push(() => {
      for (const { ring, producer, region } of rings) {
        ring.close();
        producer.close();
        region.close();
      }
    });
  }
  try {
    await sleep(p.settleMs);
    const during = threadCount();
    const cpu = process.cpuUsage();
    const since = performance.now();
    await sleep(p.cpuMs);
    const cpuUsed = cpuPercent(cpu, since);
    const extra = Math.max(during, threadCount()) - before;
    const probe = await spawnProbe();
    const monitor = monitorEventLoopDelay({ resolution: 20 });
    monitor.enable();
    probe.start();
    await sleep(p.probeMs);
    const delay = probe.stop();
    monitor.disable();
    if (!delay) throw new Error('the event-loop delay probe delivered nothing');
    const pending = started - settled;
    const what =
      who.id === 'socket'
        ? `${p.reads} connected Unix sockets (both ends here), each with a 'data' listener`
        : `${p.reads} rings, one read() pending on each, a live producer registered on each (its role lock asked by the dead-peer checks)`;
    const note = `${what}; ${pending} still pending at the end${firstError ? ` (first error: ${firstError})` : ''}; threads: ${before} before, ${during} after ${p.settleMs} ms`;
    const delayNote =
      `probe: ${delay.count} callbacks over ${p.probeMs} ms (${delay.voided} more dropped: the probe was held up); ` +
      `p50 ${us(delay.p50)}, max ${us(delay.max)}${droppedNote(delay)}; ` +
      `monitorEventLoopDelay (resolution 20 ms) p99 of the interval minus 20 ms: ${us(monitor.percentile(99) - 20e6)}`;
    const name = `loop.pending.${who.id}`;
    // Fewer reads pending than asked for (one failed to start, or ended: a read that settles while nothing is
    // written is a failure), and the row would measure less than it says: no figures, a failure.
    if (firstError !== undefined || pending !== p.reads) {
      return {
        records: [],
        notes,
        failures: [`${name}: ${pending} of ${p.reads} reads still pending at the end${firstError ? ` (first error: ${firstError})` : ''}`],
      };
    }
    return {
      records: [
        rec(name, who, 'extra threads', extra, 'threads', note),
        rec(
          name,
          who,
          'CPU %',
          cpuUsed,
          '%',
          `over ${p.cpuMs} ms from ${p.settleMs} ms after the reads started (the process alone before them: ${cpuAlone.toFixed(2)}%); ${note}`,
        ),
        rec(name, who, 'event-loop delay p99', delay.p99, 'ns', delayNote),
      ],
      notes,
      failures: [],
    };
  } finally {
    for (const cleanup of cleanups) cleanup();
  }
}

/** One scenario process: the round-trip rows of one ring column (`loop.<id>`), or the pending reads of a column (`loop.pending.<id>`). */
export async function eventLoop(name: string, params: EventLoopParams): Promise<Outcome> {
  const transport = LOOP_TRANSPORTS.find((t) => t.id === params.transport);
  if (!transport) throw new Error(`eventloop: unknown transport ${params.transport}`);
  const m: Mechanism = mechanism();
  const who: Who =
    transport.id === 'socket'
      ? { id: transport.id, label: transport.label, mechanism: 'net' }
      : { id: transport.id, label: `${transport.label} (${mechanismLabel(m)})`, mechanism: mechanismLabel(m) };
  if (name.startsWith('loop.pending.')) return pendingRow(who, params.pending);
  if (who.id === 'socket') throw new Error('eventloop: the socket is measured beside each ring column (loop.<ring id>)');
  const outcome: Outcome = { records: [], notes: [], failures: [] };
  const rows: [string, () => Promise<Measurement[]>][] = [
    ['idle', () => idleRows(who, params.idle)],
    ['b2b', () => backToBackRows(who, params.b2b)],
    ['inflight64', () => inFlightRows(who, params.inflight)],
  ];
  for (const [row, run] of rows) {
    try {
      outcome.records.push(...(await run()));
      if (row === 'idle' && pinFailure !== undefined) outcome.notes.push(`loop.idle-pinned.${who.id} left out: ${pinFailure}`);
    } catch (err) {
      const failure = `loop.${row}.${who.id} failed: ${(err as Error).stack ?? String(err)}`;
      outcome.failures.push(failure);
      outcome.notes.push(failure.split('\n')[0]!);
      process.stderr.write(`${failure}\n`);
    }
  }
  return outcome;
}
