/**
 * Broadcast publisher rate, a standalone program: one publisher (this
 * process) and 1, 2 and 4 subscriber processes, lossy and lossless, 64-byte
 * messages, beside an SpscRing (one consumer process) in the same run.
 *
 *   node benches/dist/broadcast.js [--messages N]     (default 1,000,000)
 *
 * Each figure is the publisher's rate (messages per second, from its first
 * write to its last); subscribers drain in batches and park when empty
 * (readSync). Lossy: the publisher never waits, so the rate is its own and
 * the subscribers' `lost` says how many they missed; lossless: the rate is
 * set by the slowest subscriber. ratioToSpsc = ÷ SpscRing's rate from the
 * same run. Prints JSON (one object) and a Markdown table. The full
 * benchmark run (run.ts) runs it as a step of its own (broadcastScenario).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isMain } from './harness.js';
import { Region } from '@shmring/core';
import { Broadcast, SpscRing } from '@shmring/ringbuf';
import type { Measurement } from './measurement.js';

const SELF = fileURLToPath(import.meta.url);
const SIZE = 64;
const CAPACITY = 1 << 16;

interface SubReport {
  received: number;
  lost: number;
}

/** Child: a subscriber (or the SpscRing consumer) on the POSIX region `name`; drains until closed. */
function child(kind: string, name: string): void {
  const region = Region.open({ backing: 'posix', name });
  const q = kind === 'spsc' ? SpscRing.attach(region) : Broadcast.subscribe(region);
  let received = 0;
  const count = (): void => void received++;
  process.send!('ready');
  for (;;) {
    if (q.drain(count) > 0) continue;
    try {
      q.readSync({ timeoutMs: 120_000 });
      received++;
    } catch (err) {
      if ((err as { code?: string }).code === 'ERR_SHMRING_CLOSED') break;
      throw err;
    }
  }
  const lost = 'lost' in q ? q.lost : 0;
  process.send!({ received, lost } satisfies SubReport, () => process.exit(0));
}

function spawnSub(kind: string, name: string): Promise<{ proc: ChildProcess; report: Promise<SubReport> }> {
  const proc = fork(SELF, ['--child', kind, name]);
  return new Promise((resolve, reject) => {
    let done: (r: SubReport) => void;
    const report = new Promise<SubReport>((r) => (done = r));
    proc.on('message', (m) => (m === 'ready' ? resolve({ proc, report }) : done(m as SubReport)));
    proc.on('error', reject);
  });
}

interface Row {
  name: string;
  subscribers: number;
  messagesPerSecond: number;
  ratioToSpsc?: number;
  lost?: number[];
}

async function measure(kind: 'spsc' | 'lossy' | 'lossless', subscribers: number, messages: number): Promise<Row> {
  const name = `shmring-bench-bcast-${process.pid}-${kind}-${subscribers}`;
  const size = kind === 'spsc' ? SpscRing.regionSize({ capacity: CAPACITY }) : Broadcast.regionSize({ capacity: CAPACITY });
  const region = Region.create({ backing: 'posix', name, size });
  const q =
    kind === 'spsc'
      ? SpscRing.create(region, { capacity: CAPACITY })
      : Broadcast.create(region, { capacity: CAPACITY, lossless: kind === 'lossless' });
  try {
    const subs = await Promise.all(Array.from({ length: subscribers }, () => spawnSub(kind === 'spsc' ? 'spsc' : 'bcast', name)));
    const payload = new Uint8Array(SIZE).fill(7);
    const started = performance.now();
    for (let i = 0; i < messages; i++) if (!q.tryWrite(payload)) q.writeSync(payload);
    const seconds = (performance.now() - started) / 1000;
    q.close();
    const reports = await Promise.all(subs.map((s) => s.report));
    for (const r of reports) {
      if (r.received + r.lost !== messages) throw new Error(`${kind}: a subscriber counted ${r.received} + ${r.lost} of ${messages}`);
    }
    const row: Row = {
      name: kind === 'spsc' ? 'SpscRing' : `Broadcast ${kind}`,
      subscribers,
      messagesPerSecond: Math.round(messages / seconds),
    };
    if (kind !== 'spsc') row.lost = reports.map((r) => r.lost);
    return row;
  } finally {
    region.close();
    region.unlink();
  }
}

/** SpscRing first (the baseline), then Broadcast lossy and lossless with each subscriber count; ratios to SpscRing's rate. */
async function measureAll(messages: number, counts: number[]): Promise<Row[]> {
  const rows: Row[] = [await measure('spsc', 1, messages)];
  for (const kind of ['lossy', 'lossless'] as const) {
    for (const subscribers of counts) rows.push(await measure(kind, subscribers, messages));
  }
  const spsc = rows[0]!.messagesPerSecond;
  for (const row of rows) row.ratioToSpsc = Number((row.messagesPerSecond / spsc).toFixed(2));
  return rows;
}

export interface BroadcastParams {
  messages: number;
  subscribers: number[];
}

/**
 * The runner's step (scenario.ts): one `messages/s` record per row, named
 * `broadcast.spsc.1` (the baseline) and `broadcast.<lossy|lossless>.<subscribers>`;
 * the note gives what each subscriber lost (report.ts divides by SpscRing's).
 */
export async function broadcastScenario(params: BroadcastParams): Promise<{ records: Measurement[]; notes: string[] }> {
  const rows = await measureAll(params.messages, params.subscribers);
  const records: Measurement[] = rows.map((row) => ({
    name: `broadcast.${row.name === 'SpscRing' ? 'spsc' : row.name.replace('Broadcast ', '')}.${row.subscribers}`,
    transport: `${row.name}, ${row.subscribers} ${row.name === 'SpscRing' ? 'consumer' : 'subscriber'} process${row.subscribers === 1 ? '' : 'es'}`,
    messageSize: SIZE,
    metric: 'messages/s',
    value: row.messagesPerSecond,
    unit: 'msg/s',
    note: `${params.messages} messages${row.lost ? `; lost per subscriber: ${row.lost.join(', ')}` : ''}`,
  }));
  return { records, notes: [] };
}

async function main(): Promise<void> {
  const at = process.argv.indexOf('--messages');
  const messages = at > 0 ? Number(process.argv[at + 1]) : 1_000_000;
  const rows = await measureAll(messages, [1, 2, 4]);
  console.log(JSON.stringify({ benchmark: 'broadcast', messageBytes: SIZE, capacity: CAPACITY, messages, rows }));
  console.log('\n| ring | subscribers | publisher msg/s | ÷ SpscRing | lost per subscriber |');
  console.log('|---|---:|---:|---:|---|');
  for (const r of rows) {
    console.log(
      `| ${r.name} | ${r.subscribers} | ${r.messagesPerSecond.toLocaleString('en-US')} | ${r.ratioToSpsc} | ${r.lost?.join(', ') ?? ''} |`,
    );
  }
}

// A subscriber process, the program run by itself, or a module of the runner's scenario (which calls broadcastScenario).
if (isMain(SELF)) {
  if (process.argv[2] === '--child') child(process.argv[3]!, process.argv[4]!);
  else await main();
}
