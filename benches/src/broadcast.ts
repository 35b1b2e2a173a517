/**
 * Broadcast publisher rate, a standalone program: one publisher (this
 * process) and 1, 2 and 4 subscriber processes, lossy and lossless, 64-byte
 * messages, beside an SpscRing (one consumer process) in the same run.
 *
 *   node benches/dist/broadcast.js [--messages N] [--repeats R]     (default 1,000,000 and 3)
 *
 * Each figure is the publisher's rate (messages per second, from its first
 * timed write to its last); subscribers drain in batches and park when empty
 * (readSync). Lossy: the publisher never waits, so the rate is its own and
 * the subscribers' `lost` says how many they missed; lossless: the rate is
 * set by the slowest subscriber. Every row, the SpscRing baseline included,
 * first publishes a warm-up (a tenth of N, untimed) to its subscribers, and
 * starts timing once each of them has taken or lost all of it; `lost` counts
 * only the timed messages. The rows run R times, the order reversed every
 * other time, and each row is its median run. ratioToSpsc = ÷ SpscRing's
 * median rate from the same run. Prints JSON (one object) and a Markdown
 * table. The full benchmark run (run.ts) runs it as a step of its own
 * (broadcastScenario).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isMain, track } from './harness.js';
import { Region } from '@shmring/core';
import { Broadcast, SpscRing } from '@shmring/ringbuf';
import type { Measurement } from './measurement.js';

const SELF = fileURLToPath(import.meta.url);
const SIZE = 64;
const CAPACITY = 1 << 16;

interface SubReport {
  received: number;
  lost: number;
  /** received and lost when the warm-up was all taken or lost (nothing more was published before the publisher heard so). */
  warmReceived: number;
  warmLost: number;
}

/**
 * Child: a subscriber (or the SpscRing consumer) on the POSIX region `name`; drains until closed. Says
 * 'warm' once it has taken or lost the first `warmup` messages (the publisher waits for it before the rest).
 */
function child(kind: string, name: string, warmup: number): void {
  const region = Region.open({ backing: 'posix', name });
  const q = kind === 'spsc' ? SpscRing.attach(region) : Broadcast.subscribe(region);
  let received = 0;
  const count = (): void => void received++;
  const lostSoFar = (): number => ('lost' in q ? q.lost : 0);
  let warm: { received: number; lost: number } | undefined;
  process.send!('ready');
  for (;;) {
    if (warm === undefined && received + lostSoFar() >= warmup) {
      warm = { received, lost: lostSoFar() };
      process.send!('warm');
    }
    if (q.drain(count) > 0) continue;
    try {
      q.readSync({ timeoutMs: 120_000 });
      received++;
    } catch (err) {
      if ((err as { code?: string }).code === 'ERR_SHMRING_CLOSED') break;
      throw err;
    }
  }
  const report: SubReport = { received, lost: lostSoFar(), warmReceived: warm?.received ?? 0, warmLost: warm?.lost ?? 0 };
  process.send!(report, () => process.exit(0));
}

interface Sub {
  proc: ChildProcess;
  /** Resolves once the subscriber has taken or lost the warm-up. */
  warm: Promise<void>;
  report: Promise<SubReport>;
}

function spawnSub(kind: string, name: string, warmup: number): Promise<Sub> {
  const proc = track(fork(SELF, ['--child', kind, name, String(warmup)]));
  return new Promise((resolve, reject) => {
    let warmed: () => void;
    let done: (r: SubReport) => void;
    const warm = new Promise<void>((r) => (warmed = r));
    const report = new Promise<SubReport>((r) => (done = r));
    proc.on('message', (m) => (m === 'ready' ? resolve({ proc, warm, report }) : m === 'warm' ? warmed() : done(m as SubReport)));
    proc.on('error', reject);
  });
}

interface Row {
  name: string;
  subscribers: number;
  messagesPerSecond: number;
  ratioToSpsc?: number;
  /** Of the timed messages, what each subscriber lost (Broadcast rows). */
  lost?: number[];
  /** Every run's rate (the row is the median run). */
  rates?: number[];
}

type Kind = 'spsc' | 'lossy' | 'lossless';

/** ms the publisher waits for every subscriber to take (or lose) the warm-up. */
const WARM_LIMIT_MS = 30_000;

/** `promise`, or a rejection with `what` after `ms`. */
async function withinMs<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)));
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function measure(kind: Kind, subscribers: number, messages: number, warmup: number): Promise<Row> {
  const name = `shmring-bench-bcast-${process.pid}-${kind}-${subscribers}`;
  const size = kind === 'spsc' ? SpscRing.regionSize({ capacity: CAPACITY }) : Broadcast.regionSize({ capacity: CAPACITY });
  const region = Region.create({ backing: 'posix', name, size });
  const q =
    kind === 'spsc'
      ? SpscRing.create(region, { capacity: CAPACITY })
      : Broadcast.create(region, { capacity: CAPACITY, lossless: kind === 'lossless' });
  try {
    const subs = await Promise.all(Array.from({ length: subscribers }, () => spawnSub(kind === 'spsc' ? 'spsc' : 'bcast', name, warmup)));
    const payload = new Uint8Array(SIZE).fill(7);
    // The warm-up, untimed: the publisher's and the subscribers' code compiled, their pages touched.
    for (let i = 0; i < warmup; i++) if (!q.tryWrite(payload)) q.writeSync(payload);
    await withinMs(Promise.all(subs.map((s) => s.warm)), WARM_LIMIT_MS, `${kind}: the subscribers did not take the warm-up`);
    const started = performance.now();
    for (let i = 0; i < messages; i++) if (!q.tryWrite(payload)) q.writeSync(payload);
    const seconds = (performance.now() - started) / 1000;
    q.close();
    const reports = await Promise.all(subs.map((s) => s.report));
    for (const r of reports) {
      if (r.received + r.lost !== warmup + messages || r.warmReceived + r.warmLost !== warmup)
        throw new Error(
          `${kind}: a subscriber counted ${r.received} + ${r.lost} of ${warmup} + ${messages} (${r.warmReceived} + ${r.warmLost} at the warm-up's end)`,
        );
    }
    const row: Row = {
      name: kind === 'spsc' ? 'SpscRing' : `Broadcast ${kind}`,
      subscribers,
      messagesPerSecond: Math.round(messages / seconds),
    };
    if (kind !== 'spsc') row.lost = reports.map((r) => r.lost - r.warmLost);
    return row;
  } finally {
    region.close();
    region.unlink();
  }
}

/** The warm-up each row publishes before its timed messages: a tenth of them. */
function warmupOf(messages: number): number {
  return Math.max(1, Math.round(messages / 10));
}

/**
 * SpscRing (the baseline), then Broadcast lossy and lossless with each subscriber count, `repeats` times, the
 * order reversed every other time; each row is its median run. Ratios to SpscRing's median rate.
 */
async function measureAll(messages: number, counts: number[], repeats: number): Promise<Row[]> {
  const configs: { kind: Kind; subscribers: number }[] = [
    { kind: 'spsc', subscribers: 1 },
    ...(['lossy', 'lossless'] as const).flatMap((kind) => counts.map((subscribers) => ({ kind, subscribers }))),
  ];
  const runs = configs.map((): Row[] => []);
  for (let r = 0; r < repeats; r++) {
    const order = configs.map((_, i) => i);
    if (r % 2 === 1) order.reverse();
    for (const i of order) runs[i]!.push(await measure(configs[i]!.kind, configs[i]!.subscribers, messages, warmupOf(messages)));
  }
  const rows = runs.map((each) => {
    const sorted = [...each].sort((a, b) => a.messagesPerSecond - b.messagesPerSecond);
    return { ...sorted[(sorted.length - 1) >> 1]!, rates: each.map((x) => x.messagesPerSecond) };
  });
  const spsc = rows[0]!.messagesPerSecond;
  for (const row of rows) row.ratioToSpsc = Number((row.messagesPerSecond / spsc).toFixed(2));
  return rows;
}

export interface BroadcastParams {
  messages: number;
  subscribers: number[];
  /** Runs of every row, the order alternating; each row is its median run. */
  repeats: number;
}

/** What each subscriber lost of the timed messages, with its share. */
function lostLine(lost: number[], messages: number): string {
  return lost
    .map((n) => `${n.toLocaleString('en-US')} of ${messages.toLocaleString('en-US')} (${((n / messages) * 100).toFixed(1)}%)`)
    .join(', ');
}

/**
 * The runner's step (scenario.ts): one `messages/s` record per row, named
 * `broadcast.spsc.1` (the baseline) and `broadcast.<lossy|lossless>.<subscribers>`;
 * the note gives what each subscriber lost (report.ts divides by SpscRing's).
 */
export async function broadcastScenario(params: BroadcastParams): Promise<{ records: Measurement[]; notes: string[] }> {
  const rows = await measureAll(params.messages, params.subscribers, params.repeats);
  const runs = params.repeats === 1 ? 'one run' : `median of ${params.repeats} runs (the rows' order reversed every other run)`;
  const records: Measurement[] = rows.map((row) => ({
    name: `broadcast.${row.name === 'SpscRing' ? 'spsc' : row.name.replace('Broadcast ', '')}.${row.subscribers}`,
    transport: `${row.name}, ${row.subscribers} ${row.name === 'SpscRing' ? 'consumer' : 'subscriber'} process${row.subscribers === 1 ? '' : 'es'}`,
    messageSize: SIZE,
    metric: 'messages/s',
    value: row.messagesPerSecond,
    unit: 'msg/s',
    note:
      `${runs} of ${params.messages} messages, each after a warm-up of ${warmupOf(params.messages)}; ` +
      `runs (M msg/s): ${row.rates!.map((x) => (x / 1e6).toFixed(2)).join(', ')}` +
      // Last: report.ts reads what follows "lost per subscriber: ".
      `${row.lost ? `; in the median run, lost per subscriber: ${lostLine(row.lost, params.messages)}` : ''}`,
  }));
  return { records, notes: [] };
}

async function main(): Promise<void> {
  const at = process.argv.indexOf('--messages');
  const messages = at > 0 ? Number(process.argv[at + 1]) : 1_000_000;
  const r = process.argv.indexOf('--repeats');
  const repeats = r > 0 ? Number(process.argv[r + 1]) : 3;
  const rows = await measureAll(messages, [1, 2, 4], repeats);
  console.log(JSON.stringify({ benchmark: 'broadcast', messageBytes: SIZE, capacity: CAPACITY, messages, repeats, rows }));
  console.log(
    '\n| ring | subscribers | publisher msg/s (median run) | ÷ SpscRing | each run, M msg/s | lost per subscriber (median run) |',
  );
  console.log('|---|---:|---:|---:|---|---|');
  for (const row of rows) {
    console.log(
      `| ${row.name} | ${row.subscribers} | ${row.messagesPerSecond.toLocaleString('en-US')} | ${row.ratioToSpsc} | ` +
        `${row.rates!.map((x) => (x / 1e6).toFixed(2)).join(', ')} | ${row.lost ? lostLine(row.lost, messages) : ''} |`,
    );
  }
}

// A subscriber process, the program run by itself, or a module of the runner's scenario (which calls broadcastScenario).
if (isMain(SELF)) {
  if (process.argv[2] === '--child') child(process.argv[3]!, process.argv[4]!, Number(process.argv[5]));
  else await main();
}
