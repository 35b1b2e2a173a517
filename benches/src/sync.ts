/**
 * What region.sync() costs, on its own (the runner measures the same as
 * its `persist.sync.*` rows; sync-cost.ts says how): medians of ROUNDS, as
 * µs per MiB, beside write(2) + fdatasync of the same bytes and their ratio.
 * Writes benches/results/sync.json.
 *
 *   node benches/dist/sync.js
 *   SYNC_SIZES=1,8,64 SYNC_ROUNDS=7 SYNC_DIR=/var/tmp node benches/dist/sync.js
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { measureSync } from './sync-cost.js';

const SIZES = (process.env.SYNC_SIZES ?? '1,8,64').split(',').map(Number);
const ROUNDS = Number(process.env.SYNC_ROUNDS ?? 7);

const run = await measureSync(SIZES, ROUNDS);
console.log(
  `sync() cost: ${run.dir} (${run.fsType}${run.fsType === 'tmpfs' ? ': nothing to write back, the figures measure the calls only' : ''}), median of ${ROUNDS}`,
);
console.log('| size | region.sync() | write + fdatasync | ratio | region.sync() per MiB |');
console.log('|---:|---:|---:|---:|---:|');
for (const { mib, regionSyncMicros: s, writeFdatasyncMicros: w } of run.rows) {
  console.log(
    `| ${mib} MiB | ${(s / 1000).toFixed(2)} ms | ${(w / 1000).toFixed(2)} ms | ${(s / w).toFixed(2)}× | ${(s / mib).toFixed(0)} µs |`,
  );
}
const out = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'results', 'sync.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(
  out,
  `${JSON.stringify({ when: new Date().toISOString(), dir: run.dir, fsType: run.fsType, rounds: ROUNDS, rows: run.rows }, null, 2)}\n`,
);
