/**
 * Huge pages against ordinary pages for the 1 MiB stream: this process
 * produces into an SpscRing of 1 MiB capacity (tryWrite, corked, one
 * publication per STREAM_BATCH messages, as the demo does) and a child
 * ('ring-sink') drains it and checks every sequence number. The same
 * stream runs over a memfd region of 4 KiB pages and one with
 * `hugePages: true`, alternating, after one warm-up round of each; the
 * table gives the median rate of each and their ratio from the same run.
 *
 *   node benches/dist/hugepages.js
 *   HUGE_ROUNDS=5 HUGE_MESSAGES=1000000 HUGE_SIZES=64,1024,16384 node benches/dist/hugepages.js
 *
 * Needs free huge pages (1 for the ring): `echo 64 > /proc/sys/vm/nr_hugepages`.
 */
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { formatRate, startPeer, streamRing } from './harness.js';

const CAPACITY = 1 << 20;
const ROUNDS = Number(process.env.HUGE_ROUNDS ?? 5);
const MESSAGES = Number(process.env.HUGE_MESSAGES ?? 1_000_000);
const SIZES = (process.env.HUGE_SIZES ?? '64,1024,16384').split(',').map(Number);

/** One stream of `count` messages of `size` bytes through a new region; messages per second. */
async function round(hugePages: boolean, size: number, count: number): Promise<number> {
  const region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity: CAPACITY }), hugePages });
  try {
    const ring = SpscRing.create(region, { capacity: CAPACITY });
    const sink = startPeer('ring-sink', [region]);
    await sink.ready;
    const { messages, seconds } = streamRing(ring, count, size);
    ring.close();
    const report = await sink.result;
    if (report.count !== count || report.bad !== 0) throw new Error(`the sink saw ${report.count} messages, ${report.bad} out of order`);
    return messages / seconds;
  } finally {
    region.close();
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function main(): Promise<void> {
  console.log(
    `1 MiB SpscRing stream, memfd with and without hugePages: ${ROUNDS} alternating rounds of ` +
      `${MESSAGES.toLocaleString('en')} messages per size (median)`,
  );
  const rows = [['message size', '4 KiB pages', 'huge pages', 'bytes/s (huge)', 'huge / 4 KiB']];
  for (const size of SIZES) {
    const count = Math.max(10_000, Math.round(MESSAGES * Math.min(1, 64 / size) * 4));
    const rates = { small: [] as number[], huge: [] as number[] };
    await round(false, size, count); // warm-up
    await round(true, size, count);
    for (let r = 0; r < ROUNDS; r++) {
      rates.small.push(await round(false, size, count));
      rates.huge.push(await round(true, size, count));
    }
    const small = median(rates.small);
    const huge = median(rates.huge);
    rows.push([
      `${size} B`,
      formatRate(small),
      formatRate(huge),
      `${((huge * size) / 2 ** 30).toFixed(2)} GiB/s`,
      `${(huge / small).toFixed(2)}x`,
    ]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => row[c]!.length)));
  for (const row of rows) console.log(`  ${row.map((cell, c) => cell.padEnd(widths[c]!)).join('  ')}`);
}

await main();
