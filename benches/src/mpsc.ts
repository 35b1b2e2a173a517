/**
 * Many producers, one consumer, across processes: MpscRing beside MpmcQueue
 * with 1, 2 and 4 producer processes, 64-byte messages. Each producer spins
 * on tryWrite (message = producer id and sequence number); this process is
 * the consumer, draining in place (drain), and counts messages per second
 * over the steady state (after a warm-up), checking that every producer's
 * sequence arrives in order with nothing lost. Both kinds run in the same
 * invocation, alternately (which goes first alternates from one pair of runs
 * to the next), so their ratio is measured under the same load. The rate is
 * the messages counted between two clock readings over the time between
 * them. Producers are tracked (killed when this process exits) and spin
 * under a Watchdog (they exit when this process is gone).
 *
 *   node benches/dist/mpsc.js [--duration-ms 2000] [--warmup-ms 300] [--size 64] [--repeats 5] [--producers 1,2,4]
 *
 * The full benchmark run (run.ts) runs it as a step of its own (mpscScenario).
 *
 * The rate with one producer is bistable on two cores: a consumer that
 * caught up polls the record its producer is writing and slows it; one
 * that fell behind reads lines the producer is done with. A run stays in
 * the state it fell into, so each row is the median of the repeats, and
 * the table gives every repeat's rate (benches/README.md says what the
 * caught-up consumer costs each kind).
 *
 * Prints JSON (one object with every row) then a Markdown table. On a
 * machine with fewer cores than producers + 1, the processes share cores,
 * and the numbers measure that too.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isMain, track, Watchdog } from './harness.js';
import { Region } from '@shmring/core';
import { MpmcQueue, MpscRing } from '@shmring/ringbuf';
import type { Measurement } from './measurement.js';

type Kind = 'MpscRing' | 'MpmcQueue';
const SELF = fileURLToPath(import.meta.url);
/** 1 MiB of data area for MpscRing; MpmcQueue gets the same bytes as slots of 64 + 16 rounded to 128. */
const MPSC_CAPACITY = 1 << 20;

function attach(kind: Kind, region: Region): MpscRing | MpmcQueue {
  return kind === 'MpscRing' ? MpscRing.attach(region) : MpmcQueue.attach(region);
}

// ---- producer process: node mpsc.js producer <kind> <id> <size> <limitMs> ----

/** ms a producer may run past the consumer's warm-up and measurement before its Watchdog ends it. */
const PRODUCER_SLACK_MS = 60_000;

function producer(kind: Kind, id: number, size: number, limitMs: number): void {
  const queue = attach(kind, Region.fromFd(3));
  // Orphaned (the consumer died without closing the queue), or past its time: the producer ends itself.
  const watchdog = new Watchdog(`mpsc producer ${id}`, limitMs);
  const message = new Uint8Array(size);
  const view = new DataView(message.buffer);
  view.setUint32(0, id, true);
  process.stdout.write('ready\n');
  let seq = 0;
  let spins = 0;
  for (;;) {
    view.setUint32(4, seq, true);
    try {
      while (!queue.tryWrite(message)) {
        if ((++spins & 0x3ff) === 0 && queue.closed) return;
        watchdog.tick();
      }
    } catch {
      return; // ERR_SHMRING_CLOSED: the consumer is done
    }
    seq++;
    if ((seq & 0xfff) === 0) {
      if (queue.closed) return;
      watchdog.check();
    }
  }
}

// ---- consumer: this process ----

interface Row {
  kind: Kind;
  producers: number;
  size: number;
  messagesPerSecond: number;
  checked: number;
  /** Records per drain() that found any: near 1, the consumer is caught up and polls the record being written. */
  recordsPerDrain: number;
  /** Every repeat's rate (the row is the median one). */
  rates?: number[];
}

async function run(kind: Kind, producers: number, size: number, durationMs: number, warmupMs: number): Promise<Row> {
  const regionSize =
    kind === 'MpscRing'
      ? MpscRing.regionSize({ capacity: MPSC_CAPACITY })
      : MpmcQueue.regionSize({ capacity: MPSC_CAPACITY / 128, slotSize: size });
  const region = Region.create({ backing: 'memfd', size: regionSize });
  const queue =
    kind === 'MpscRing'
      ? MpscRing.create(region, { capacity: MPSC_CAPACITY })
      : MpmcQueue.create(region, { capacity: MPSC_CAPACITY / 128, slotSize: size });
  const limitMs = warmupMs + durationMs + PRODUCER_SLACK_MS;
  const children = Array.from({ length: producers }, (_, id) =>
    track(
      spawn(process.execPath, [SELF, 'producer', kind, String(id), String(size), String(limitMs)], {
        stdio: ['ignore', 'pipe', 'inherit', region.fd!],
      }),
    ),
  );
  await Promise.all(children.map((c) => new Promise<void>((resolve) => c.stdout!.once('data', () => resolve()))));
  const next = new Array<number>(producers).fill(0);
  let count = 0;
  let drains = 0;
  let bad = 0;
  const onRecord = (data: Uint8Array, offset: number): void => {
    const id = data[offset]! | (data[offset + 1]! << 8);
    const seq = (data[offset + 4]! | (data[offset + 5]! << 8) | (data[offset + 6]! << 16) | (data[offset + 7]! << 24)) >>> 0;
    if (seq !== next[id]) bad++;
    next[id] = seq + 1;
    count++;
  };
  const start = performance.now();
  const measureFrom = start + warmupMs;
  const end = measureFrom + durationMs;
  // The count and the clock are read together, after a drain: the rate is the count's growth over the time between.
  let atMeasure = -1;
  let measureStart = start;
  let now = start;
  while (now < end) {
    if (queue.drain(onRecord, 4096) > 0) drains++;
    now = performance.now();
    if (atMeasure < 0 && now >= measureFrom) {
      atMeasure = count;
      measureStart = now;
    }
  }
  const measured = count - atMeasure;
  const measuredMs = now - measureStart;
  queue.close();
  await Promise.all(
    children.map((c) => new Promise<void>((resolve) => (c.exitCode !== null ? resolve() : c.once('exit', () => resolve())))),
  );
  region.close();
  if (bad !== 0) throw new Error(`${kind} with ${producers} producers: ${bad} messages out of order or lost`);
  return {
    kind,
    producers,
    size,
    messagesPerSecond: Math.round(measured / (measuredMs / 1000)),
    checked: count,
    recordsPerDrain: Math.round((count / Math.max(drains, 1)) * 10) / 10,
  };
}

export interface MpscParams {
  durationMs: number;
  warmupMs: number;
  size: number;
  repeats: number;
  producers: number[];
}

/**
 * Every row: per producer count, MpscRing and MpmcQueue, each the median of `repeats` alternating runs; which
 * kind goes first alternates from one pair of runs to the next, across producer counts too (so that a single
 * repeat per count, as --quick runs, does not always start with the same kind).
 */
async function measureAll(params: MpscParams): Promise<Row[]> {
  const { durationMs, warmupMs, size, repeats, producers: counts } = params;
  const rows: Row[] = [];
  let pair = 0;
  for (const producers of counts) {
    const runs: Record<Kind, Row[]> = { MpscRing: [], MpmcQueue: [] };
    for (let r = 0; r < repeats; r++) {
      const order = pair++ % 2 === 0 ? KINDS : ([...KINDS].reverse() as Kind[]);
      for (const kind of order) runs[kind].push(await run(kind, producers, size, durationMs, warmupMs));
    }
    for (const kind of KINDS) {
      const sorted = [...runs[kind]].sort((a, b) => a.messagesPerSecond - b.messagesPerSecond);
      rows.push({ ...sorted[(sorted.length - 1) >> 1]!, rates: runs[kind].map((r) => r.messagesPerSecond) });
    }
  }
  return rows;
}

const KINDS = ['MpscRing', 'MpmcQueue'] as const;

/** Each repeat's rate, in M msg/s. */
function eachRate(row: Row): string {
  return row.rates!.map((r) => (r / 1e6).toFixed(1)).join(', ');
}

/**
 * The runner's step (scenario.ts): one `messages/s` record per kind and
 * producer count, named `mpsc.<kind>.<producers>`; the note gives every
 * repeat's rate and the records per drain (report.ts divides MpscRing's by
 * MpmcQueue's).
 */
export async function mpscScenario(params: MpscParams): Promise<{ records: Measurement[]; notes: string[] }> {
  const rows = await measureAll(params);
  const records: Measurement[] = rows.map((row) => ({
    name: `mpsc.${row.kind}.${row.producers}`,
    transport: `${row.kind}, ${row.producers} producer process${row.producers === 1 ? '' : 'es'}`,
    messageSize: row.size,
    metric: 'messages/s',
    value: row.messagesPerSecond,
    unit: 'msg/s',
    note: `${params.repeats === 1 ? 'one run' : `median of ${params.repeats} runs`} of ${params.durationMs} ms (the kinds alternating, each first in turn; a rate over the measured time between its two counts); runs (M msg/s): ${eachRate(row)}; records per drain: ${row.recordsPerDrain}`,
  }));
  return { records, notes: [] };
}

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
}

async function main(): Promise<void> {
  const i = process.argv.indexOf('--producers');
  const params: MpscParams = {
    durationMs: option('--duration-ms', 2000),
    warmupMs: option('--warmup-ms', 300),
    size: option('--size', 64),
    repeats: option('--repeats', 5),
    producers: i < 0 ? [1, 2, 4] : process.argv[i + 1]!.split(',').map(Number),
  };
  const rows = await measureAll(params);
  const { durationMs, warmupMs, size, repeats, producers: counts } = params;
  console.log(
    JSON.stringify({ bench: 'mpsc', durationMs, warmupMs, size, repeats, cores: (await import('node:os')).availableParallelism(), rows }),
  );
  console.log(
    '\n| producers | MpscRing msg/s | MpmcQueue msg/s | ratio | MpscRing, each repeat (M/s) | MpmcQueue, each repeat (M/s) |\n|---|---|---|---|---|---|',
  );
  for (const producers of counts) {
    const a = rows.find((r) => r.kind === 'MpscRing' && r.producers === producers)!;
    const b = rows.find((r) => r.kind === 'MpmcQueue' && r.producers === producers)!;
    console.log(
      `| ${producers} | ${a.messagesPerSecond.toLocaleString('en')} | ${b.messagesPerSecond.toLocaleString('en')} | ${(a.messagesPerSecond / b.messagesPerSecond).toFixed(2)}× | ${eachRate(a)} | ${eachRate(b)} |`,
    );
  }
}

// A producer process, the program run by itself, or a module of the runner's scenario (which calls mpscScenario).
if (isMain(SELF)) {
  if (process.argv[2] === 'producer')
    producer(process.argv[3] as Kind, Number(process.argv[4]), Number(process.argv[5]), Number(process.argv[6]));
  else await main();
}
