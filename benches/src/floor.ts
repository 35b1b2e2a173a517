/**
 * The floors, C programs built here with the system's `cc -O2` (skipped
 * with a note when there is no cc). benches/c/floor.c gives the hardware
 * round trip (one cache line bounced between two processes spinning on
 * atomics, pinned to different CPUs), the throughput of the same SPSC ring
 * design written in C (what the layout allows on this machine), and the
 * memcpy bandwidth for the message sizes the throughput scenarios use.
 * benches/c/wake.c gives what the kernel's wake-ups cost after an idle gap:
 * a Unix socket's, the rings' futex through io_uring (the addon's
 * event-loop wait), and a futex_wait, with nothing of Node around them.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { track } from './harness.js';
import type { Measurement } from './measurement.js';
import { spscCapacity } from './throughput.js';

type Program = 'floor' | 'wake';

const sourceOf = (program: Program): string => fileURLToPath(new URL(`../c/${program}.c`, import.meta.url));
const binaryOf = (program: Program): string => fileURLToPath(new URL(`./c/${program}`, import.meta.url));

/** Builds benches/c/<program>.c if needed; returns why not when it cannot. */
function buildC(program: Program): string | undefined {
  const [source, binary] = [sourceOf(program), binaryOf(program)];
  const probe = spawnSync('cc', ['--version'], { stdio: 'ignore' });
  if (probe.error || probe.status !== 0) return `no C compiler (cc) on this machine: benches/c/${program}.c was skipped`;
  if (fs.existsSync(binary) && fs.statSync(binary).mtimeMs >= fs.statSync(source).mtimeMs) return undefined;
  fs.mkdirSync(fileURLToPath(new URL('./c/', import.meta.url)), { recursive: true });
  const temporary = `${binary}.${process.pid}`;
  const build = spawnSync('cc', ['-O2', '-std=gnu11', '-o', temporary, source], { encoding: 'utf8' });
  if (build.status !== 0) return `cc -O2 benches/c/${program}.c failed, it was skipped:\n${build.stderr}`;
  fs.renameSync(temporary, binary);
  return undefined;
}

function runC(program: Program, args: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = track(spawn(binaryOf(program), args, { stdio: ['ignore', 'pipe', 'inherit'] }));
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`${program} ${args.join(' ')} exited with ${code}`)),
    );
  });
}

function runFloor(args: string[]): Promise<Record<string, number | boolean | string>> {
  return runC('floor', args) as Promise<Record<string, number | boolean | string>>;
}

/**
 * The floor's round trip: the best (lowest p50) of three runs of `rounds` each, so that a burst of load
 * does not raise the floor. Each run is as long as each of the Node floors' and the spinning ring rows'
 * SPIN_RUNS runs (latency.ts), so the best of three is taken alike on both sides of a ratio.
 */
export async function floorRoundTrip(rounds: number): Promise<{ records: Measurement[]; notes: string[] }> {
  const skipped = buildC('floor');
  if (skipped) return { records: [], notes: [skipped] };
  const runs: Record<string, number | boolean | string>[] = [];
  for (let i = 0; i < 3; i++) runs.push(await runFloor(['pingpong', String(rounds)]));
  const r = [...runs].sort((a, b) => Number(a.p50Ns) - Number(b.p50Ns))[0]!;
  const name = 'rtt.floor';
  const transport = 'C floor: one cache line, two processes spinning';
  const note =
    `best of 3 runs of ${r.rounds} round trips (p50s ${runs.map((x) => x.p50Ns).join(', ')} ns); ` +
    `${r.pinned ? 'pinned to CPUs 0 and 1' : 'not pinned (one CPU)'}; ` +
    `each sample includes one clock_gettime (${r.clockReadNs} ns)`;
  const metric = (m: 'p50' | 'p99' | 'p99.9' | 'max' | 'mean', v: unknown): Measurement => ({
    name,
    transport,
    messageSize: 4,
    metric: m,
    value: Number(v),
    unit: 'ns',
    note,
  });
  return {
    records: [metric('p50', r.p50Ns), metric('p99', r.p99Ns), metric('p99.9', r.p999Ns), metric('max', r.maxNs), metric('mean', r.meanNs)],
    notes: [],
  };
}

/** The C ring's messages/s for each message size, with the capacity the SpscRing scenarios use. */
export async function floorStream(sizes: number[], ms: number): Promise<{ records: Measurement[]; notes: string[] }> {
  const skipped = buildC('floor');
  if (skipped) return { records: [], notes: [skipped] };
  const records: Measurement[] = [];
  for (const size of sizes) {
    const capacity = spscCapacity(size);
    const r = await runFloor(['stream', String(size), String(capacity), String(ms)]);
    const rate = Math.round(Number(r.messagesPerSecond));
    const note =
      `the SpscRing layout in C (release store per record; the consumer reads in place the sequence number and one word of each cache line of the payload), ${capacity >> 20} MiB ring, ` +
      `${r.pinned ? 'pinned to CPUs 0 and 1' : 'not pinned'}`;
    records.push(
      {
        name: 'tput.floor.c-ring',
        transport: 'C floor: the same ring in C',
        messageSize: size,
        metric: 'messages/s',
        value: rate,
        unit: 'msg/s',
        note,
      },
      {
        name: 'tput.floor.c-ring',
        transport: 'C floor: the same ring in C',
        messageSize: size,
        metric: 'bytes/s',
        value: rate * size,
        unit: 'B/s',
        note,
      },
    );
  }
  return { records, notes: [] };
}

/** memcpy bandwidth for each message size, the copies landing round-robin in an area as large as that size's SpscRing. */
export async function floorMemcpy(sizes: number[], ms: number): Promise<{ records: Measurement[]; notes: string[] }> {
  const skipped = buildC('floor');
  if (skipped) return { records: [], notes: [skipped] };
  const records: Measurement[] = [];
  for (const size of sizes) {
    const area = spscCapacity(size);
    const r = await runFloor(['memcpy', String(size), String(area), String(ms)]);
    records.push({
      name: 'tput.floor.memcpy',
      transport: 'C floor: memcpy',
      messageSize: size,
      metric: 'bytes/s',
      value: Math.round(Number(r.bytesPerSecond)),
      unit: 'B/s',
      note: `blocks of ${size} B from one source, written round-robin over ${area >> 20} MiB (the ring's capacity), one thread`,
    });
  }
  return { records, notes: [] };
}

/** benches/c/wake.c's ways, as it names them, and the rows they become. */
const WAKE_WAYS = {
  'unix-socket': 'C: Unix socket, the other side in epoll_wait',
  'io-uring-futex': "C: the rings' futex, the other side in epoll_wait on an io_uring FUTEX_WAIT",
  futex: 'C: futex, the other side in futex_wait',
} as const;

/** The record name of one of benches/c/wake.c's ways. */
export const wakeFloorName = (way: keyof typeof WAKE_WAYS): string => `wake.floor.${way}`;

interface WakeWay {
  rtP50Ns: number;
  rtP90Ns: number;
  hopP50Ns: number;
  sendCallP50Ns: number;
  /** Share of the round trips whose echo came back from its wait on the CPU the client sent from. */
  echoOnClientCpu: number;
}

/**
 * The kernel's wake-up paths after an idle gap (benches/c/wake.c): a round
 * trip between two C processes that both sleep between messages, each way
 * interleaved with the others in blocks. Its p50 in ns; the note gives the
 * p90, the hop (send to the woken side back in user space), the send call
 * alone, and how often the woken echo ran on the client's CPU.
 */
export async function floorWake(rounds: number, idleUs: number): Promise<{ records: Measurement[]; notes: string[] }> {
  const skipped = buildC('wake');
  if (skipped) return { records: [], notes: [skipped] };
  const r = (await runC('wake', [String(rounds), String(idleUs)])) as { rounds: number; ioUring: string; ways: Record<string, WakeWay> };
  const notes = r.ioUring === 'ok' ? [] : [`benches/c/wake.c: no io_uring way on this machine (${r.ioUring})`];
  const records: Measurement[] = [];
  for (const [way, transport] of Object.entries(WAKE_WAYS)) {
    const w = r.ways[way];
    if (w === undefined) continue;
    const note =
      `${r.rounds} round trips, each after ${idleUs} µs asleep (nanosleep), the ${Object.keys(r.ways).length} ways interleaved in blocks of 25; ` +
      `p90 ${(w.rtP90Ns / 1000).toFixed(1)} µs; hop (send to the woken side back from its wait) ${(w.hopP50Ns / 1000).toFixed(1)} µs p50, ` +
      `of which the send call (write or FUTEX_WAKE) ${(w.sendCallP50Ns / 1000).toFixed(1)} µs; ` +
      `the echo woke on the client's CPU in ${(w.echoOnClientCpu * 100).toFixed(0)}% of them`;
    records.push({
      name: wakeFloorName(way as keyof typeof WAKE_WAYS),
      transport,
      messageSize: 8,
      metric: 'p50',
      value: w.rtP50Ns,
      unit: 'ns',
      note,
    });
  }
  return { records, notes };
}
