/**
 * The floor: benches/c/floor.c, built here with the system's `cc -O2`
 * (skipped with a note when there is no cc), gives the hardware round trip
 * (one cache line bounced between two processes spinning on atomics, pinned
 * to different CPUs), the throughput of the same SPSC ring design written in
 * C (what the layout allows on this machine), and the memcpy bandwidth for
 * the message sizes the throughput scenarios use.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { track } from './harness.js';
import type { Measurement } from './measurement.js';
import { spscCapacity } from './throughput.js';

const SOURCE = fileURLToPath(new URL('../c/floor.c', import.meta.url));
const BINARY = fileURLToPath(new URL('./c/floor', import.meta.url));

/** Builds the floor program if needed; returns why not when it cannot. */
export function buildFloor(): string | undefined {
  const probe = spawnSync('cc', ['--version'], { stdio: 'ignore' });
  if (probe.error || probe.status !== 0) return 'no C compiler (cc) on this machine: the C floor was skipped';
  if (fs.existsSync(BINARY) && fs.statSync(BINARY).mtimeMs >= fs.statSync(SOURCE).mtimeMs) return undefined;
  fs.mkdirSync(fileURLToPath(new URL('./c/', import.meta.url)), { recursive: true });
  const temporary = `${BINARY}.${process.pid}`;
  const build = spawnSync('cc', ['-O2', '-std=gnu11', '-o', temporary, SOURCE], { encoding: 'utf8' });
  if (build.status !== 0) return `cc -O2 benches/c/floor.c failed, the C floor was skipped:\n${build.stderr}`;
  fs.renameSync(temporary, BINARY);
  return undefined;
}

function runFloor(args: string[]): Promise<Record<string, number | boolean | string>> {
  return new Promise((resolve, reject) => {
    const child = track(spawn(BINARY, args, { stdio: ['ignore', 'pipe', 'inherit'] }));
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`floor ${args.join(' ')} exited with ${code}`))));
  });
}

/** The floor's round trip: the best (lowest p50) of three runs of rounds / 3, so that a burst of load does not raise the floor. */
export async function floorRoundTrip(rounds: number): Promise<{ records: Measurement[]; notes: string[] }> {
  const skipped = buildFloor();
  if (skipped) return { records: [], notes: [skipped] };
  const runs: Record<string, number | boolean | string>[] = [];
  for (let i = 0; i < 3; i++) runs.push(await runFloor(['pingpong', String(Math.ceil(rounds / 3))]));
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
  const skipped = buildFloor();
  if (skipped) return { records: [], notes: [skipped] };
  const records: Measurement[] = [];
  for (const size of sizes) {
    const capacity = spscCapacity(size);
    const r = await runFloor(['stream', String(size), String(capacity), String(ms)]);
    const rate = Math.round(Number(r.messagesPerSecond));
    const note =
      `the SpscRing layout in C (release store per record, consumer reads in place), ${capacity >> 20} MiB ring, ` +
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
  const skipped = buildFloor();
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
