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
 * One scenario process runs every row of one transport (run.ts starts one per
 * transport and forced mechanism, with its environment: SHMRING_ASYNC_WAIT,
 * SHMRING_BACKEND), each row with a fresh echo; the pending reads run in a
 * process of their own (a thousand parked waits would disturb what follows).
 *
 * Rows (record names `loop.<row>.<transport>`, transport `socket`, `ring`,
 * `ring.<forced mechanism>`):
 *   idle       round trip after 1 ms idle (setTimeout between pings): both sides parked.
 *              p50, p99; then, with the same traffic, the client's event-loop delay (the probe below)
 *   idle-poll  the same with `{ poll: 2000 }` on every read, write and the echo's iterator (rings only)
 *   b2b        back-to-back round trips: p50, p99
 *   inflight64 64 requests in flight: the client writes 64, then writes one more per reply; round trips/s
 *   pending    1000 idle reads (1000 rings, or 1000 connected sockets, in one process; nothing arrives):
 *              extra threads (/proc/self/task), CPU % of one CPU (process.cpuUsage, all threads) over the
 *              window, and the event-loop delay p99 in a second window
 *
 * Event-loop delay is measured by a probe, not by perf_hooks'
 * monitorEventLoopDelay: that one times a libuv timer, whose clock is in
 * whole milliseconds, so its intervals are quantised to 1 ms (an idle Node 20
 * process reports p99 2.2 ms at resolution 1 ms: 1.2 ms of "delay" with
 * nothing running), and a 20 ms resolution gives 50 samples a second with the
 * same quantisation. The probe is a child process that writes its clock
 * (CLOCK_MONOTONIC, the clock process.hrtime reads in every process) to a
 * socketpair at random gaps of 0.5 to 2.5 ms; the client's 'data' callback
 * takes the difference: how long an I/O callback that became ready waited
 * before it ran, including waking an idle loop. The baseline's same probe
 * gives the floor of that in the same run. monitorEventLoopDelay (resolution
 * 20 ms, interval minus 20 ms) is kept in the pending rows' notes.
 */
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { ErrorCodes, Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import {
  cpuPercent, mechanism, mechanismLabel, PEER, pollSupported, PROBE_FLAG_AT, spawnProbe, waitOptions, type LoopWaitOptions, type Mechanism,
} from './eventloop-common.js';
import { accepted, percentiles, ringRegion, Samples, socketPair, stamp, stampAt, startPeer, type Percentiles } from './harness.js';
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
  { id: 'ring.threads', label: 'rings, SHMRING_ASYNC_WAIT=threads', env: { SHMRING_ASYNC_WAIT: 'threads' } },
  { id: 'ring.koffi', label: 'rings, SHMRING_BACKEND=koffi', env: { SHMRING_BACKEND: 'koffi' } },
] as const;
/** Variables that choose a mechanism: removed from every step's environment before its own are added. */
export const MECHANISM_ENV = ['SHMRING_ASYNC_WAIT', 'SHMRING_BACKEND'] as const;

export interface EventLoopParams {
  transport: string;
  /** Idle round trips: warm-up, recorded, then with the probe. */
  idle: { warmup: number; count: number; probed: number };
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
}

async function ringPair(poll: number | undefined): Promise<Pair> {
  const ping = ringRegion(RING_CAPACITY);
  const pong = ringRegion(RING_CAPACITY);
  const peer = startPeer('ring-echo', [ping.region, pong.region], poll ? { poll } : {}, { script: PEER });
  await peer.ready;
  const opts: LoopWaitOptions = { ...waitOptions(poll), timeoutMs: LIMIT_MS };
  return {
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

function pairOf(who: Who, poll?: number): Promise<Pair> {
  return who.id === 'socket' ? socketPairOf() : ringPair(poll);
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
    name, transport: who.label, messageSize: SIZE, metric, value: Number(value.toPrecision(6)), unit,
    mechanism: who.mechanism, ...(note ? { note } : {}),
  };
}

function cpuNote(report: Record<string, unknown>, clientCpu: number): string {
  const echo = typeof report.cpu === 'number' ? `${report.cpu.toFixed(1)}%` : 'unknown';
  return `CPU while measuring: client ${clientCpu.toFixed(1)}%, echo ${echo} of one CPU`;
}

/**
 * Round trips after 1 ms of idle: setTimeout(1), then write and await the
 * reply; then `probed` more round trips with the event-loop delay probe on.
 */
async function idleRow(row: 'idle' | 'idle-poll', who: Who, p: EventLoopParams['idle'], poll?: number): Promise<Measurement[]> {
  const pollFound = poll ? await pollSupported() : undefined;
  const pair = await pairOf(who, poll);
  let report: Record<string, unknown> = {};
  const samples = new Samples(p.count);
  let seq = 0;
  const roundTrip = async (record: boolean, probe = false): Promise<void> => {
    await sleep(1);
    const m = message(seq, probe);
    const t0 = performance.now();
    await pair.send(m);
    const reply = await pair.receive();
    const t1 = performance.now();
    check(seq++, reply);
    if (record) samples.addMs(t1 - t0);
  };
  let clientCpu: number;
  let delay: Percentiles;
  try {
    for (let i = 0; i < p.warmup; i++) await roundTrip(false);
    const cpu = process.cpuUsage();
    const since = performance.now();
    for (let i = 0; i < p.count; i++) await roundTrip(true);
    clientCpu = cpuPercent(cpu, since);
    const probe = await spawnProbe();
    probe.start();
    for (let i = 0; i < p.probed; i++) await roundTrip(false, true); // the echo probes its own loop too
    const measured = probe.stop();
    if (!measured) throw new Error('the event-loop delay probe delivered nothing');
    delay = measured;
  } finally {
    report = await pair.close();
  }
  const rtt = percentiles(samples);
  const name = `loop.${row}.${who.id}`;
  const pollNote = poll === undefined ? '' : `; { poll: ${poll} } on every wait${pollFound ? '' : ' (not detected in this build: an invalid poll was accepted; the option may not exist yet)'}`;
  const note = `${rtt.count} round trips, each after setTimeout(1)${pollNote}; ${cpuNote(report, clientCpu)}`;
  const delayNote = `probe: ${delay.count} callbacks during ${p.probed} more such round trips; p50 ${us(delay.p50)}, max ${us(delay.max)}`;
  const records = [
    rec(name, who, 'p50', rtt.p50, 'ns', note),
    rec(name, who, 'p99', rtt.p99, 'ns', note),
    rec(name, who, 'mean', rtt.mean, 'ns', note),
    rec(name, who, 'event-loop delay p99', delay.p99, 'ns', delayNote),
  ];
  const echo = report.delay as Percentiles | undefined;
  if (echo) {
    records.push(rec(name, who, 'echo event-loop delay p99', echo.p99, 'ns',
      `the echo's own probe: ${echo.count} callbacks during the same round trips; p50 ${us(echo.p50)}, max ${us(echo.max)}`));
  }
  return records;
}

/** Back-to-back round trips for `ms` after `warmupMs`; the clock is chained (one performance.now() per round trip). */
async function backToBackRow(who: Who, p: EventLoopParams['b2b']): Promise<Measurement[]> {
  const pair = await pairOf(who);
  const samples = new Samples(Math.min(2_000_000, Math.ceil(p.ms * 1000)));
  try {
    const warm = performance.now() + p.warmupMs;
    let end = Infinity;
    let t = performance.now();
    for (let seq = 0; ; seq++) {
      await pair.send(message(seq));
      const reply = await pair.receive();
      const now = performance.now();
      check(seq, reply);
      if (now >= end && samples.count >= MIN_SAMPLES) break;
      if (end !== Infinity) samples.addMs(now - t);
      else if (now >= warm) end = now + p.ms;
      t = now;
    }
  } finally {
    await pair.close();
  }
  const rtt = percentiles(samples);
  const note = `${rtt.count} round trips in ${p.ms} ms (at least ${MIN_SAMPLES}) after ${p.warmupMs} ms of warm-up`;
  const name = `loop.b2b.${who.id}`;
  return [rec(name, who, 'p50', rtt.p50, 'ns', note), rec(name, who, 'p99', rtt.p99, 'ns', note), rec(name, who, 'mean', rtt.mean, 'ns', note)];
}

/** IN_FLIGHT requests in flight: writes IN_FLIGHT, then one more per reply, awaiting each; round trips per second over `ms`. */
async function inFlightRow(who: Who, p: EventLoopParams['inflight']): Promise<Measurement[]> {
  const pair = await pairOf(who);
  let sent = 0;
  let received = 0;
  let t0 = -1;
  let r0 = 0;
  let t1 = -1;
  let r1 = 0;
  try {
    for (; sent < IN_FLIGHT; sent++) await pair.send(message(sent));
    const warm = performance.now() + p.warmupMs;
    let sending = true;
    while (received < sent) {
      const reply = await pair.receive();
      check(received, reply);
      received++;
      if (!sending) continue;
      if ((received & 63) === 0) {
        const now = performance.now();
        if (t0 < 0) {
          if (now >= warm) {
            t0 = now;
            r0 = received;
          }
        } else if (now >= t0 + p.ms) {
          t1 = now;
          r1 = received;
          sending = false;
          continue;
        }
      }
      await pair.send(message(sent++));
    }
  } finally {
    await pair.close();
  }
  if (t1 < 0) throw new Error(`${who.id}: in flight: no steady state measured (${received} replies)`);
  const rate = ((r1 - r0) * 1000) / (t1 - t0);
  const note = `${r1 - r0} round trips in ${(t1 - t0).toFixed(0)} ms after ${p.warmupMs} ms of warm-up, ${IN_FLIGHT} in flight`;
  return [rec(`loop.inflight64.${who.id}`, who, 'messages/s', rate, 'rt/s', note)];
}

function threadCount(): number {
  return fs.readdirSync('/proc/self/task').length;
}

/**
 * `reads` reads pending in this process, with nothing arriving: on as many
 * rings (memfd regions; nobody writes), or on as many connected Unix sockets
 * (both ends in this process; nobody writes). Counts the threads before and
 * after, the CPU over `cpuMs`, then the event-loop delay over `probeMs`.
 */
async function pendingRow(who: Who, p: EventLoopParams['pending']): Promise<Outcome> {
  const notes: string[] = [];
  await sleep(100); // Node's own start-up threads have started
  const before = threadCount();
  let settled = 0;
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
    const rings: { region: Region; ring: SpscRing }[] = [];
    try {
      for (let i = 0; i < p.reads; i++) {
        const region = Region.create({ backing: 'memfd', size });
        rings.push({ region, ring: SpscRing.create(region, { capacity }) });
      }
    } catch (err) {
      firstError ??= `creating ring ${rings.length + 1}: ${(err as Error).message}`;
    }
    for (const { ring } of rings) {
      ring.read().then(() => settled++, (err: { code?: string; message?: string }) => {
        if (err.code !== ErrorCodes.CLOSED) {
          settled++;
          firstError ??= err.message;
        }
      });
    }
    cleanups.push(() => {
      for (const { ring, region } of rings) {
        ring.close();
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
    const pending = p.reads - settled;
    const what = who.id === 'socket' ? `${p.reads} connected Unix sockets (both ends here), each with a 'data' listener` : `${p.reads} rings, one read() pending on each`;
    const note = `${what}; ${pending} still pending at the end${firstError ? ` (first error: ${firstError})` : ''}; threads: ${before} before, ${during} after ${p.settleMs} ms`;
    const delayNote = `probe: ${delay.count} callbacks over ${p.probeMs} ms; p50 ${us(delay.p50)}, max ${us(delay.max)}; ` +
      `monitorEventLoopDelay (resolution 20 ms) p99 of the interval minus 20 ms: ${us(monitor.percentile(99) - 20e6)}`;
    if (firstError) notes.push(`${who.label}: 1000 pending reads: ${firstError}`);
    const name = `loop.pending.${who.id}`;
    return {
      records: [
        rec(name, who, 'extra threads', extra, 'threads', note),
        rec(name, who, 'CPU %', cpuUsed, '%', `over ${p.cpuMs} ms; ${note}`),
        rec(name, who, 'event-loop delay p99', delay.p99, 'ns', delayNote),
      ],
      notes,
      failures: [],
    };
  } finally {
    for (const cleanup of cleanups) cleanup();
  }
}

/** One scenario process: every row of one transport (`loop.<id>`), or its pending reads (`loop.pending.<id>`). */
export async function eventLoop(name: string, params: EventLoopParams): Promise<Outcome> {
  const transport = LOOP_TRANSPORTS.find((t) => t.id === params.transport);
  if (!transport) throw new Error(`eventloop: unknown transport ${params.transport}`);
  const m: Mechanism = mechanism();
  const who: Who = transport.id === 'socket'
    ? { id: transport.id, label: transport.label, mechanism: 'net' }
    : { id: transport.id, label: `${transport.label} (${mechanismLabel(m)})`, mechanism: mechanismLabel(m) };
  if (name.startsWith('loop.pending.')) return pendingRow(who, params.pending);
  const outcome: Outcome = { records: [], notes: [], failures: [] };
  const rows: [string, () => Promise<Measurement[]>][] = [
    ['idle', () => idleRow('idle', who, params.idle)],
    ...(who.id === 'socket' ? [] : [['idle-poll', () => idleRow('idle-poll', who, params.idle, POLL_MICROS)] as [string, () => Promise<Measurement[]>]]),
    ['b2b', () => backToBackRow(who, params.b2b)],
    ['inflight64', () => inFlightRow(who, params.inflight)],
  ];
  for (const [row, run] of rows) {
    try {
      outcome.records.push(...(await run()));
    } catch (err) {
      const failure = `loop.${row}.${who.id} failed: ${(err as Error).stack ?? String(err)}`;
      outcome.failures.push(failure);
      outcome.notes.push(failure.split('\n')[0]!);
      process.stderr.write(`${failure}\n`);
    }
  }
  return outcome;
}
