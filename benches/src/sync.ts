/**
 * What region.sync() costs: a 'file' region of SIZE MiB on disk (the OS's
 * temporary directory, or SYNC_DIR), every page dirtied through the
 * mapping, then `await region.sync()` (fdatasync in the thread pool: what
 * msync(MS_SYNC) does). Beside it, from the same run, the usual way to put
 * the same bytes on the device: write(2) them into a plain file and
 * fdatasync it. Medians of ROUNDS, as µs per MiB, and their ratio.
 *
 *   node benches/dist/sync.js
 *   SYNC_SIZES=1,8,64 SYNC_ROUNDS=7 SYNC_DIR=/var/tmp node benches/dist/sync.js
 *
 * A tmpfs directory (/dev/shm, often /tmp) has nothing to write back: the
 * program says so and measures anyway.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Region } from '@shmring/core';

const MIB = 1 << 20;
const SIZES = (process.env.SYNC_SIZES ?? '1,8,64').split(',').map(Number);
const ROUNDS = Number(process.env.SYNC_ROUNDS ?? 7);
const DIR = fs.mkdtempSync(path.join(process.env.SYNC_DIR ?? os.tmpdir(), 'shmring-sync-'));

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1]!;
}

/** µs to dirty every page of a `mib` MiB file region and sync() it. */
async function regionSync(mib: number, round: number): Promise<number> {
  const file = path.join(DIR, `region-${mib}-${round}`);
  const region = Region.create({ backing: 'file', path: file, size: mib * MIB });
  try {
    new Uint8Array(region.buffer).fill(round + 1);
    await region.sync(); // the file's size and its first write-out, so both measure rewrites
    new Uint8Array(region.buffer).fill(round + 2);
    const started = performance.now();
    await region.sync();
    return (performance.now() - started) * 1000;
  } finally {
    region.close();
    fs.rmSync(file, { force: true });
  }
}

/** µs to write(2) `mib` MiB into a plain file and fdatasync it. */
function writeSync(mib: number, round: number): number {
  const file = path.join(DIR, `plain-${mib}-${round}`);
  const fd = fs.openSync(file, 'w+');
  try {
    const bytes = Buffer.alloc(mib * MIB, round + 1);
    fs.writeSync(fd, bytes, 0, bytes.length, 0);
    fs.fdatasyncSync(fd);
    bytes.fill(round + 2);
    const started = performance.now();
    fs.writeSync(fd, bytes, 0, bytes.length, 0);
    fs.fdatasyncSync(fd);
    return (performance.now() - started) * 1000;
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
}

async function main(): Promise<void> {
  const fsType = execFileSync('stat', ['-f', '-c', '%T', DIR], { encoding: 'utf8' }).trim();
  console.log(`sync() cost: ${DIR} (${fsType}${fsType === 'tmpfs' ? ': nothing to write back, the figures measure the calls only' : ''}), median of ${ROUNDS}`);
  console.log('| size | region.sync() | write + fdatasync | ratio | region.sync() per MiB |');
  console.log('|---:|---:|---:|---:|---:|');
  const rows = [];
  for (const mib of SIZES) {
    const synced: number[] = [];
    const written: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      synced.push(await regionSync(mib, round));
      written.push(writeSync(mib, round));
    }
    const [s, w] = [median(synced), median(written)];
    rows.push({ mib, regionSyncMicros: s, writeFdatasyncMicros: w, ratio: s / w });
    console.log(`| ${mib} MiB | ${(s / 1000).toFixed(2)} ms | ${(w / 1000).toFixed(2)} ms | ${(s / w).toFixed(2)}× | ${(s / mib).toFixed(0)} µs |`);
  }
  const out = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'results', 'sync.json');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, `${JSON.stringify({ when: new Date().toISOString(), dir: DIR, fsType, rounds: ROUNDS, rows }, null, 2)}\n`);
}

try {
  await main();
} finally {
  fs.rmSync(DIR, { recursive: true, force: true });
}
