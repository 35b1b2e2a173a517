/**
 * What an async select() over many idle rings costs, a standalone program:
 * N SpscRings in memfd regions, nothing written; each round a select() over
 * all N readers parks (the call until its Promise is pending: announcing
 * on every ring, the re-check, an asynchronous wait on every word), stays
 * parked for 2 ms, then one ring (a different one each round) gets a
 * message and the time from that tryWrite() to the select's answer is the
 * wake-up (the wait that settles, the cancellation of every other, the
 * withdrawal of every announcement). The baseline, in the same run and
 * rounds: one parked `read()` on one ring, timed the same way.
 *
 *   node benches/dist/select-many.js [--rounds N] [--out dir]   (default 200 rounds per size)
 *
 * `poll: 0` everywhere: every round parks. Each round runs every row once,
 * the order rotating by one row from round to round (so no row always
 * follows the same one, the 1000-ring select's clean-up included), and
 * each timed park starts after SETTLE_MS of sleep.
 * Prints JSON (one object) and a Markdown table, and writes them to
 * <dir>/select-many.json and .md with --out.
 */
import * as os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Region } from '@shmring/core';
import { select, SpscRing } from '@shmring/ringbuf';
import { emitResults, percentiles, Samples } from './harness.js';

const SIZES = [1, 10, 100, 1000] as const;
const CAPACITY = 4096;
/** ms slept before each timed park: what the previous round left (its cancellations, their callbacks) is done by then. */
const SETTLE_MS = 3;

interface Rings {
  readonly readers: SpscRing[];
  readonly writers: SpscRing[];
  readonly regions: Region[];
}

function makeRings(n: number): Rings {
  const rings: Rings = { readers: [], writers: [], regions: [] };
  for (let i = 0; i < n; i++) {
    const region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity: CAPACITY }) });
    rings.regions.push(region);
    rings.readers.push(SpscRing.create(region, { capacity: CAPACITY }));
    rings.writers.push(SpscRing.attach(region));
  }
  return rings;
}

/** One round: a settle, park (call → pending), 2 ms parked, wake (tryWrite → answer). `target` gets the message. */
async function round(rings: Rings, target: number, useSelect: boolean, park: Samples, wake: Samples): Promise<void> {
  await sleep(SETTLE_MS);
  const t0 = performance.now();
  const pending: Promise<unknown> = useSelect ? select(rings.readers, { poll: 0 }) : rings.readers[0]!.read({ poll: 0 });
  park.addMs(performance.now() - t0);
  await sleep(2);
  const t1 = performance.now();
  if (!rings.writers[target]!.tryWrite(new Uint8Array(8))) throw new Error('the ring is full');
  const got = await pending;
  wake.addMs(performance.now() - t1);
  if (useSelect) {
    if (got !== target) throw new Error(`select answered ${String(got)}, the message is in ${target}`);
    if (rings.readers[target]!.tryRead() === null) throw new Error('the message was not there');
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '200' }, out: { type: 'string' } } });
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 10) throw new RangeError(`--rounds=${values.rounds} must be an integer >= 10`);
  const rows = [
    { label: 'read() on 1 ring', n: 1, select: false },
    ...SIZES.map((n) => ({ label: `select() over ${n}`, n, select: true })),
  ];
  const rings = new Map(SIZES.map((n) => [n, makeRings(n)]));
  const park = rows.map(() => new Samples(rounds));
  const wake = rows.map(() => new Samples(rounds));
  try {
    // A warm-up round each, not counted.
    for (const r of rows) await round(rings.get(r.n as (typeof SIZES)[number])!, 0, r.select, new Samples(1), new Samples(1));
    for (let k = 0; k < rounds; k++) {
      for (let j = 0; j < rows.length; j++) {
        const i = (k + j) % rows.length; // the order rotates: round k starts with row k mod the rows
        const r = rows[i]!;
        await round(rings.get(r.n as (typeof SIZES)[number])!, r.select ? (k * 7919) % r.n : 0, r.select, park[i]!, wake[i]!);
      }
    }
  } finally {
    for (const set of rings.values()) {
      for (const q of [...set.readers, ...set.writers]) q.close();
      for (const region of set.regions) region.close();
    }
  }
  const us = (s: Samples, q: 'p50' | 'p99'): number => Number((percentiles(s)[q] / 1000).toFixed(1));
  const base = { park: us(park[0]!, 'p50'), wake: us(wake[0]!, 'p50') };
  const results = rows.map((r, i) => ({
    row: r.label,
    parkP50Us: us(park[i]!, 'p50'),
    parkP99Us: us(park[i]!, 'p99'),
    wakeP50Us: us(wake[i]!, 'p50'),
    wakeP99Us: us(wake[i]!, 'p99'),
    parkVsRead: Number((us(park[i]!, 'p50') / base.park).toFixed(1)),
    wakeVsRead: Number((us(wake[i]!, 'p50') / base.wake).toFixed(1)),
  }));
  const result = { date: new Date().toISOString(), cpus: os.cpus().length, rounds, rows: results };
  const md = [
    `# select-many (${result.date.slice(0, 10)}, ${result.cpus} CPUs, ${rounds} rounds per row, benches/src/select-many.ts)`,
    '',
    `Async \`select()\` over N idle SpscRings (memfd, \`poll: 0\`): park = the call until its Promise is pending; wake = a \`tryWrite()\` into one of them until the select answers. Baseline: one parked \`read()\`, in the same rounds. Every row once a round, the order rotating from round to round; ${SETTLE_MS} ms asleep before each park.`,
    '',
    '| | park p50 µs | park p99 µs | wake p50 µs | wake p99 µs | park ÷ read() | wake ÷ read() |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...results.map(
      (r) => `| ${r.row} | ${r.parkP50Us} | ${r.parkP99Us} | ${r.wakeP50Us} | ${r.wakeP99Us} | ${r.parkVsRead}× | ${r.wakeVsRead}× |`,
    ),
    '',
  ].join('\n');
  emitResults('select-many', result, md, values.out);
}

await main();
