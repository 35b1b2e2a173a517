/**
 * The benchmark runner: runs every scenario, one after the other (the
 * machine may have two cores, and a spinning pair occupies both), each in a
 * fresh process of its own process group (scenario.ts), which is killed as a
 * group once the scenario ends, fails, or overruns; then adds the same-run
 * ratios and writes the results.
 *
 *   node benches/dist/run.js [--quick] [--only <regexp>] [--out <dir>] [--wait-idle <s>] [--update-readme]
 *
 *   --quick          fewer iterations and sizes (every transport still runs): a smoke run, a fraction of the full run's time
 *   --only <re>      only the scenarios whose id matches (e.g. 'rtt\.proc|floor')
 *   --out <dir>      where to write (default benches/results)
 *   --wait-idle <s>  before each scenario, wait (up to <s> seconds in all) while other
 *                    processes keep the CPUs more than 10% busy
 *   --update-readme  put the tables into benches/README.md between <!-- bench-table --> and <!-- /bench-table -->
 *                    (the root README keeps a summary, edited by hand)
 *
 * Steps with their own `env` (the event-loop section forcing a wait
 * mechanism) run without the runner's SHMRING_ASYNC_WAIT / SHMRING_BACKEND,
 * so the "default" column is the default whatever the caller's environment.
 *
 * Before each scenario the runner samples /proc/stat for 200 ms; a scenario
 * that started while other processes kept the CPUs busy is named in the
 * notes (two spinning processes on two cores cannot share them: a third
 * process turns the measurement into a measurement of the scheduler).
 *
 * Writes <out>/latest.json, latest.md and latency.svg (a quick run writes
 * latest-quick.* so it never replaces the full run's committed results), and
 * prints the Markdown. Exits 1 if a scenario failed (a missed target is not
 * a failure: it is reported).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { backendKind } from '@shmring/core';
import { BRIDGE_ROWS, type BridgeParams } from './bridge.js';
import type { BroadcastParams } from './broadcast.js';
import { CHANNEL_ROWS, type ChannelParams } from './channel.js';
import { LOOP_TRANSPORTS, MECHANISM_ENV, type EventLoopParams } from './eventloop.js';
import type { Measurement } from './measurement.js';
import type { MpscParams } from './mpsc.js';
import { socketBatch } from './throughput.js';
import { latencySvg, markdown, markdownBody, sizeLabel, targets, withRatios, type Machine, type Run } from './report.js';
import type { Kind } from './scenario.js';

const SCENARIO = fileURLToPath(new URL('./scenario.js', import.meta.url));
const BENCHES = fileURLToPath(new URL('..', import.meta.url));
/** Where --update-readme writes the tables; its links are relative to benches/. */
const README = path.join(BENCHES, 'README.md');

interface Step {
  kind: Kind;
  name: string;
  params: Record<string, unknown>;
  nodeArgs?: string[];
  /** Environment of the scenario and its peers: these variables replace the runner's (MECHANISM_ENV are removed first). */
  env?: Record<string, string>;
}

interface Args {
  quick: boolean;
  only?: RegExp;
  out: string;
  waitIdle: number;
  updateReadme: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { quick: false, only: undefined, out: path.join(BENCHES, 'results'), waitIdle: 0, updateReadme: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') args.quick = true;
    else if (a === '--update-readme') args.updateReadme = true;
    else if (a === '--only') args.only = new RegExp(argv[++i] ?? '');
    else if (a === '--out') args.out = path.resolve(argv[++i] ?? '.');
    else if (a === '--wait-idle') args.waitIdle = Number(argv[++i] ?? 60);
    else if (a === '--') continue;
    else throw new Error(`bench: unknown argument ${a} (use --quick, --only <regexp>, --out <dir>, --wait-idle <s>, --update-readme)`);
  }
  return args;
}

/** Every scenario of a run, in order. */
/** Round trips in each of the 3 runs of every spinning row and floor (a fifth with --quick). */
const SPIN_COUNT = 200_000;

function plan(quick: boolean): Step[] {
  const steps: Step[] = [];
  const rttSize = 64;
  const rtt = (kind: Kind, name: string, count: number, extra: Record<string, unknown> = {}): void => {
    const n = quick ? Math.ceil(count / 5) : count;
    steps.push({ kind, name, params: { count: n, warmup: Math.ceil(n / 5), size: rttSize, ...extra } });
  };
  const stream = { durationMs: quick ? 250 : 500, warmupMs: quick ? 100 : 200, repeats: quick ? 1 : 3 };
  const procSizes = quick ? [64, 1 << 20] : [8, 64, 1024, 64 << 10, 1 << 20];
  const threadSizes = quick ? [64] : [64, 64 << 10];
  const memcpySizes = procSizes.filter((size) => size >= 1024);

  // The floors run twice, at the start and next to the scenarios they bound; the best of each is kept (mergeFloors).
  // Every spinning round trip (the C floor, Node's floors, the spinning ring rows) is the best of 3 runs of SPIN_COUNT.
  const floorRtt: Step = { kind: 'floor-rtt', name: 'rtt.floor', params: { rounds: quick ? SPIN_COUNT / 5 : SPIN_COUNT } };
  const floorStream: Step = { kind: 'floor-stream', name: 'tput.floor.c-ring', params: { sizes: procSizes, ms: quick ? 300 : 800 } };
  const floorMemcpy: Step = { kind: 'floor-memcpy', name: 'tput.floor.memcpy', params: { sizes: memcpySizes, ms: quick ? 200 : 400 } };
  steps.push(floorRtt, floorStream, floorMemcpy);
  rtt('rtt-proc', 'rtt.proc.spsc-spin', SPIN_COUNT);
  rtt('rtt-proc', 'rtt.proc.spsc-spin-zc', SPIN_COUNT);
  rtt('rtt-proc', 'rtt.proc.node-floor', SPIN_COUNT); // best of 3 runs, like the C floor
  rtt('rtt-proc', 'rtt.proc.node-floor-2', SPIN_COUNT); // the same, one word each way (best of 3 too)
  steps.push(floorRtt);
  rtt('rtt-proc', 'rtt.proc.spsc-sync', 30_000);
  rtt('rtt-proc', 'rtt.proc.spsc-parked', 10_000, { gapMs: 0.2 });
  rtt('rtt-proc', 'rtt.proc.spsc-async', 30_000);
  rtt('rtt-proc', 'rtt.proc.spsc-async-read', 30_000);
  rtt('rtt-proc', 'rtt.proc.unix-socket', 30_000);
  rtt('rtt-proc', 'rtt.proc.unix-socket-idle', 10_000, { gapMs: 0.2 });
  rtt('rtt-proc', 'rtt.proc.pipe', 30_000);
  rtt('rtt-proc', 'rtt.proc.ipc', 20_000);
  // The event loop (eventloop.ts): one process per ring column (forced mechanism) for the round trips, the
  // socket measured beside the rings in each; one more per column for the pending reads, whose CPU
  // window starts 3 s in: steady idle, not the first watchdog ticks (they compile the liveness checks,
  // 0.5-1.7% of a CPU over the 2.5 s after 0.5 s; 0.27-0.31% after 3 s, 1000 rings). About two
  // minutes in all (the idle-warm row's 4000 idle round trips on three pairs take some 15 s a column);
  // about 25 s quick (some 40 node processes start).
  const loop: Omit<EventLoopParams, 'transport'> = quick
    ? {
        idle: { warmup: 5, count: 50, probed: 50, warm: 50 },
        b2b: { warmupMs: 30, ms: 100 },
        inflight: { warmupMs: 30, ms: 100 },
        pending: { reads: 1000, settleMs: 100, cpuMs: 250, probeMs: 200 },
      }
    : {
        idle: { warmup: 50, count: 800, probed: 400, warm: 4000 },
        b2b: { warmupMs: 200, ms: 500 },
        inflight: { warmupMs: 200, ms: 500 },
        pending: { reads: 1000, settleMs: 3000, cpuMs: 2500, probeMs: 1000 },
      };
  for (const t of LOOP_TRANSPORTS.filter((x) => x.id !== 'socket')) {
    steps.push({ kind: 'eventloop', name: `loop.${t.id}`, params: { ...loop, transport: t.id }, env: { ...t.env } });
  }
  for (const t of LOOP_TRANSPORTS) {
    steps.push({ kind: 'eventloop', name: `loop.pending.${t.id}`, params: { ...loop, transport: t.id }, env: { ...t.env } });
  }
  // What the kernel's wake-ups cost under the idle row, in C (floor.ts, benches/c/wake.c): about 3 s, 1 s quick.
  steps.push({ kind: 'floor-wake', name: 'wake.floor', params: { rounds: quick ? 200 : 800, idleUs: 1000 } });
  for (const size of procSizes) {
    for (const name of [
      'tput.proc.spsc-copy',
      'tput.proc.spsc-zc',
      'tput.proc.spsc-copy-cork',
      'tput.proc.spsc-zc-cork',
      'tput.proc.mpmc',
      'tput.proc.unix-socket',
      'tput.proc.unix-socket-unbatched',
    ]) {
      // Where a batch holds one frame (64 KiB, 1 MiB), the batched stream is one write per message: its note says so.
      if (name === 'tput.proc.unix-socket-unbatched' && socketBatch(size) === 1) continue;
      steps.push({ kind: 'tput-proc', name, params: { size, ...stream } });
    }
  }
  steps.push(floorStream, floorMemcpy);
  rtt('rtt-thread', 'rtt.thread.spsc-spin', 200_000);
  rtt('rtt-thread', 'rtt.thread.spsc-async', 30_000);
  rtt('rtt-thread', 'rtt.thread.messageport', 30_000);
  for (const size of threadSizes) {
    for (const name of ['tput.thread.spsc-copy', 'tput.thread.spsc-zc', 'tput.thread.messageport']) {
      steps.push({ kind: 'tput-thread', name, params: { size, ...stream } });
    }
  }
  // @shmring/channel against what a program would otherwise use (channel.ts): one process per row, its
  // baselines measured beside the channel, interleaved. About 35 s; about 10 s quick.
  const channel: ChannelParams = quick
    ? {
        inflight: { warmupMs: 100, blocks: 3, blockMs: 100 },
        b2b: { warmupMs: 200, blocks: 3, blockMs: 100 },
        idle: { warmup: 20, count: 200 },
        bulk: { warmupMs: 100, blocks: 3, blockMs: 100 },
        workers: { warmupMs: 100, blocks: 3, blockMs: 100 },
      }
    : {
        inflight: { warmupMs: 500, blocks: 10, blockMs: 200 },
        b2b: { warmupMs: 1000, blocks: 10, blockMs: 200 },
        idle: { warmup: 50, count: 2000 },
        bulk: { warmupMs: 500, blocks: 10, blockMs: 200 },
        workers: { warmupMs: 500, blocks: 10, blockMs: 200 },
      };
  for (const row of CHANNEL_ROWS) steps.push({ kind: 'channel', name: `channel.${row}`, params: { ...channel } });
  // The ring → NATS bridge against the nats client alone (bridge.ts), each row starting its own nats-server
  // on free loopback ports. About 30 s; about 10 s quick.
  const bridge: BridgeParams = quick
    ? {
        tput: { sizes: [64, 64 << 10], warmupMs: 150, blocks: 3, blockMs: 150 },
        latency: { warmup: 100, blocks: 4, perBlock: 100, gapMs: 1 },
      }
    : {
        tput: { sizes: [64, 64 << 10], warmupMs: 500, blocks: 8, blockMs: 300 },
        latency: { warmup: 300, blocks: 10, perBlock: 300, gapMs: 1 },
      };
  for (const row of BRIDGE_ROWS) steps.push({ kind: 'bridge', name: `bridge.${row}`, params: { ...bridge } });
  // Many to one and one to many (mpsc.ts, broadcast.ts): MpscRing beside MpmcQueue with 1, 2 and 4 producer
  // processes, the median of alternating runs (the rate with one producer is bistable: mpsc.ts); Broadcast's
  // publisher beside an SpscRing's producer, each row after a warm-up, the median of 3 runs in alternating
  // order (one run of each, quick). About 45 s and 40 s; about 5 s each quick.
  const mpsc: MpscParams = quick
    ? { durationMs: 200, warmupMs: 100, size: 64, repeats: 1, producers: [1, 2, 4] }
    : { durationMs: 1000, warmupMs: 300, size: 64, repeats: 5, producers: [1, 2, 4] };
  steps.push({ kind: 'mpsc', name: 'mpsc', params: { ...mpsc } });
  const broadcast: BroadcastParams = { messages: quick ? 200_000 : 1_000_000, subscribers: [1, 2, 4], repeats: quick ? 1 : 3 };
  steps.push({ kind: 'broadcast', name: 'broadcast', params: { ...broadcast } });
  steps.push({ kind: 'micro', name: 'micro', params: { quick } });
  steps.push({ kind: 'latest', name: 'latest', params: { quick } }); // LatestValue (latest.ts): ~10 s, ~4 s quick
  steps.push({ kind: 'sync', name: 'persist.sync', params: { quick } }); // region.sync() vs write + fdatasync (sync-cost.ts): ~15 s, ~2 s quick
  steps.push({ kind: 'alloc', name: 'alloc.spsc-zc', params: { messages: 10_000_000 }, nodeArgs: ['--expose-gc'] });
  return steps;
}

/**
 * Keeps the best of each floor's runs (the floor is what the machine allows;
 * a run disturbed by the host is not it): the round-trip run with the lowest
 * p50 (all its percentiles), and the highest rate per size of the others.
 */
function mergeFloors(measurements: Measurement[]): Measurement[] {
  const rest = measurements.filter((m) => !m.name.startsWith('rtt.floor') && !m.name.startsWith('tput.floor.'));
  const runs: Measurement[][] = [];
  for (const m of measurements.filter((x) => x.name === 'rtt.floor')) {
    if (m.metric === 'p50') runs.push([]);
    runs[runs.length - 1]?.push(m);
  }
  const p50 = (run: Measurement[]): number => run.find((m) => m.metric === 'p50')?.value ?? Infinity;
  const best = [...runs].sort((a, b) => p50(a) - p50(b))[0] ?? [];
  const rttNote = runs.length > 1 ? `; best of ${runs.length} floor steps (p50s ${runs.map(p50).join(', ')} ns)` : '';
  const floorRtt = best.map((m) => ({ ...m, note: `${m.note ?? ''}${rttNote}` }));
  const rates = new Map<string, Measurement>();
  for (const m of measurements.filter((x) => x.name.startsWith('tput.floor.'))) {
    const key = `${m.name} ${m.messageSize} ${m.metric}`;
    const seen = rates.get(key);
    if (!seen || m.value > seen.value) rates.set(key, m);
  }
  return [...floorRtt, ...rates.values(), ...rest];
}

// ---- running steps, and never leaving a process behind ----

/** Process groups of the running scenario (one at a time, but the set makes the cleanup obviously complete). */
const groups = new Set<number>();

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // ESRCH: the group is already empty
  }
}

function killAll(): void {
  for (const pid of groups) killGroup(pid);
  groups.clear();
}

process.on('exit', killAll);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    killAll();
    process.exit(128 + (os.constants.signals[signal] ?? 0));
  });
}

const STEP_TIMEOUT_MS = 90_000;

function stepEnv(step: Step): NodeJS.ProcessEnv {
  if (!step.env) return process.env;
  const env = { ...process.env };
  for (const name of MECHANISM_ENV) delete env[name];
  return { ...env, ...step.env };
}

function runStep(step: Step): Promise<{ records: Measurement[]; notes: string[]; failures?: string[] }> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(
      process.execPath,
      [...(step.nodeArgs ?? []), SCENARIO, step.kind, step.name, JSON.stringify(step.params)],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
        detached: true, // its own process group: the scenario, its peers and their children die together
        env: stepEnv(step),
      },
    );
    const pid = child.pid!;
    groups.add(pid);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d));
    const timer = setTimeout(() => {
      killGroup(pid);
      reject(new Error(`${step.name}: still running after ${STEP_TIMEOUT_MS / 1000} s; killed`));
    }, STEP_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      killGroup(pid); // anything the scenario left behind
      groups.delete(pid);
      const last = out
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .pop();
      if (code !== 0 || !last) reject(new Error(`${step.name}: exited with ${signal ?? `code ${code}`}`));
      else resolve(JSON.parse(last) as { records: Measurement[]; notes: string[]; failures?: string[] });
    });
  });
}

// ---- the machine ----

/** Busy and total CPU time of all CPUs so far (/proc/stat), or undefined where there is none. */
function cpuTimes(): { busy: number; total: number } | undefined {
  try {
    const fields = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = fields[3]! + fields[4]!; // idle + iowait
    return { busy: total - idle, total };
  } catch {
    return undefined;
  }
}

/** Fraction of the machine's CPU time spent busy during the next `ms` (by others: we only wait meanwhile). */
async function busyFraction(ms: number): Promise<number> {
  const a = cpuTimes();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const b = cpuTimes();
  if (!a || !b || b.total === a.total) return 0;
  return (b.busy - a.busy) / (b.total - a.total);
}

const BUSY_THRESHOLD = 0.1;

/** Samples the load; waits (from `budget`, in ms, shared by the run) while it is above the threshold. */
async function settle(budget: { ms: number }): Promise<number> {
  let busy = await busyFraction(200);
  while (busy > BUSY_THRESHOLD && budget.ms > 0) {
    const t0 = performance.now();
    busy = await busyFraction(1000);
    budget.ms -= performance.now() - t0;
  }
  return busy;
}

function machine(): Machine {
  let cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  try {
    const model = /^model name\s*:\s*(.+)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (model) cpu = model[1]!.trim();
  } catch {
    // not Linux: os.cpus() is all we have
  }
  let backend = 'unknown';
  try {
    backend = backendKind();
  } catch {
    // reported by the scenarios themselves
  }
  return { cpu, cores: os.cpus().length, node: process.version, kernel: os.release(), backend, loadAverageAtStart: os.loadavg() };
}

function describe(step: Step): string {
  const size = step.params.size as number | undefined;
  return `${step.name}${size !== undefined && step.kind.startsWith('tput') ? ` ${sizeLabel(size)}` : ''}`;
}

/** The run as JSON, one record per line: small, and a rerun diffs line by line. */
function toJson(run: Run): string {
  const { records, targets: goals, ...head } = run;
  const lines = (items: object[]): string => items.map((item) => `  ${JSON.stringify(item)}`).join(',\n');
  const top = JSON.stringify(head, null, 1).replace(/\n}$/, '');
  return `${top},\n "targets": [\n${lines(goals)}\n ],\n "records": [\n${lines(records)}\n ]\n}\n`;
}

function updateReadme(run: Run): void {
  const text = fs.readFileSync(README, 'utf8');
  const open = '<!-- bench-table -->';
  const close = '<!-- /bench-table -->';
  const a = text.indexOf(open);
  const b = text.indexOf(close);
  if (a < 0 || b < a) throw new Error(`benches/README.md has no ${open} … ${close} section`);
  const body =
    `\nReproduce with \`npx -y pnpm@10 bench\` (about ${Math.ceil(run.seconds / 60)} min here; \`--quick\` for a shorter smoke run). ` +
    'Results: [latest.md](results/latest.md), [latest.json](results/latest.json), ' +
    'chart [latency.svg](results/latency.svg). Run nothing else meanwhile: spinning pairs need both cores. ' +
    'On a virtual machine the figures move from run to run (the host schedules the vCPUs): compare ratios within one run.\n\n' +
    `${markdownBody(run)}\n\n![round-trip latency](results/latency.svg)\n`;
  fs.writeFileSync(README, text.slice(0, a + open.length) + body + text.slice(b));
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const steps = plan(args.quick).filter((s) => !args.only || args.only.test(s.name));
  const started = performance.now();
  const info = machine();
  const notes: string[] = [];
  process.stderr.write(
    `shmring bench (${args.quick ? 'quick' : 'full'}): ${steps.length} scenarios, one at a time; ${info.cores} cores, ${info.cpu}, Node ${info.node}\n`,
  );
  const measurements: Measurement[] = [];
  const busySteps: string[] = [];
  const budget = { ms: args.waitIdle * 1000 };
  let failed = 0;
  for (const [i, step] of steps.entries()) {
    const busy = await settle(budget);
    if (busy > BUSY_THRESHOLD) busySteps.push(`${describe(step)} (${Math.round(busy * 100)}%)`);
    const label = `[${String(i + 1).padStart(2)}/${steps.length}] ${describe(step)}${busy > BUSY_THRESHOLD ? ` [machine ${Math.round(busy * 100)}% busy before]` : ''}`;
    const t0 = performance.now();
    try {
      const outcome = await runStep(step);
      measurements.push(...outcome.records);
      notes.push(...outcome.notes);
      const failures = outcome.failures ?? [];
      if (failures.length > 0) failed++;
      process.stderr.write(
        `${label} ${((performance.now() - t0) / 1000).toFixed(1)} s${failures.length > 0 ? ` (${failures.length} part(s) FAILED, see the notes)` : ''}\n`,
      );
    } catch (err) {
      failed++;
      notes.push(`${describe(step)} failed: ${(err as Error).message}`);
      process.stderr.write(`${label} FAILED: ${(err as Error).message}\n`);
    }
  }
  if (busySteps.length > 0) {
    notes.push(
      `other processes kept the CPUs busy when these scenarios started (share of both CPUs' time): ${busySteps.join(', ')}; ` +
        'their figures are unreliable (rerun on a quiet machine, or with --wait-idle)',
    );
  }
  const records = withRatios(mergeFloors(measurements));
  const floorP50 = records.find((r) => r.name === 'rtt.floor' && r.metric === 'p50')?.value;
  const fastest = Math.min(...records.filter((r) => r.name.startsWith('rtt.proc.') && r.metric === 'p50').map((r) => r.value));
  if (floorP50 !== undefined && fastest < floorP50) {
    notes.push(
      `a JavaScript round trip (${fastest} ns) beat the C floor (${floorP50} ns): the floor steps were disturbed (by the host?); the ratios to it are not meaningful`,
    );
  }
  const run: Run = {
    date: new Date().toISOString(),
    mode: args.quick ? 'quick' : 'full',
    seconds: (performance.now() - started) / 1000,
    machine: info,
    notes,
    targets: targets(records),
    records,
  };
  fs.mkdirSync(args.out, { recursive: true });
  const base = args.quick ? 'latest-quick' : 'latest';
  const md = markdown(run);
  fs.writeFileSync(path.join(args.out, `${base}.json`), toJson(run));
  fs.writeFileSync(path.join(args.out, `${base}.md`), md);
  fs.writeFileSync(path.join(args.out, args.quick ? 'latency-quick.svg' : 'latency.svg'), latencySvg(run));
  if (args.updateReadme) updateReadme(run);
  process.stdout.write(`${md}\n`);
  const written = path.relative(process.cwd(), args.out) || '.';
  process.stderr.write(
    `wrote ${written}/${base}.json, ${base}.md, ${args.quick ? 'latency-quick' : 'latency'}.svg${args.updateReadme ? ' and benches/README.md' : ''} in ${run.seconds.toFixed(0)} s\n`,
  );
  if (failed > 0) process.exitCode = 1;
}

await main();
