/**
 * What region.sync() costs (issue 16), beside its baseline from the same
 * run: a 'file' region of N MiB on disk (the OS's temporary directory, or
 * SYNC_DIR), every page dirtied through the mapping, then `await
 * region.sync()` (fdatasync in the thread pool: what msync(MS_SYNC) does);
 * against the usual way to put the same bytes on the device, write(2) into
 * a plain file and fdatasync it. Both are timed from their first new byte
 * (the region's fill through its mapping, the baseline's write) to the end
 * of the sync. Each round measures both, one after the other, the order
 * alternating; the medians of the rounds are reported.
 *
 * Used by the runner (`persist.sync.*` rows, run.ts → scenario.ts) and by
 * the standalone `node benches/dist/sync.js` (sync.ts).
 *
 * A tmpfs directory (/dev/shm, often /tmp) has nothing to write back: the
 * rows say so, and measure the calls only.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Region } from '@shmring/core';
import type { Measurement } from './measurement.js';

const MIB = 1 << 20;

export interface SyncParams {
  quick: boolean;
}

export interface SyncRow {
  mib: number;
  /** Median µs to sync() the region after every page was dirtied. */
  regionSyncMicros: number;
  /** Median µs to write(2) the same bytes into a plain file and fdatasync it. */
  writeFdatasyncMicros: number;
  ratio: number;
}

export interface SyncRun {
  dir: string;
  fsType: string;
  rounds: number;
  rows: SyncRow[];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1]!;
}

/**
 * µs to put new bytes on every page of a `mib` MiB file region (through the
 * mapping: after a sync the pages are clean and write-protected, so this
 * takes a fault per page) and sync() it: the same work as the baseline's,
 * which copies the bytes in with write(2) and fdatasyncs.
 */
async function regionSync(dir: string, mib: number, round: number): Promise<number> {
  const file = path.join(dir, `region-${mib}-${round}`);
  const region = Region.create({ backing: 'file', path: file, size: mib * MIB });
  try {
    new Uint8Array(region.buffer).fill(round + 1);
    await region.sync(); // the file's size and its first write-out, so both measure rewrites
    const started = performance.now();
    new Uint8Array(region.buffer).fill(round + 2);
    await region.sync();
    return (performance.now() - started) * 1000;
  } finally {
    region.close();
    fs.rmSync(file, { force: true });
  }
}

/** µs to write(2) `mib` MiB into a plain file and fdatasync it. */
function writeFdatasync(dir: string, mib: number, round: number): number {
  const file = path.join(dir, `plain-${mib}-${round}`);
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

/** Measures `sizes` (MiB), `rounds` rounds each, in a fresh directory under `parent` (removed afterwards). */
export async function measureSync(sizes: number[], rounds: number, parent = process.env.SYNC_DIR ?? os.tmpdir()): Promise<SyncRun> {
  const dir = fs.mkdtempSync(path.join(parent, 'shmring-sync-'));
  try {
    const fsType = execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim();
    const rows: SyncRow[] = [];
    for (const mib of sizes) {
      const synced: number[] = [];
      const written: number[] = [];
      for (let round = 0; round < rounds; round++) {
        // Which goes first alternates: the second of a pair may find the device's cache busier.
        if (round % 2 === 0) {
          synced.push(await regionSync(dir, mib, round));
          written.push(writeFdatasync(dir, mib, round));
        } else {
          written.push(writeFdatasync(dir, mib, round));
          synced.push(await regionSync(dir, mib, round));
        }
      }
      const [s, w] = [median(synced), median(written)];
      rows.push({ mib, regionSyncMicros: s, writeFdatasyncMicros: w, ratio: s / w });
    }
    return { dir, fsType, rounds, rows };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The runner's step: `persist.sync.region` and its baseline `persist.sync.write-fdatasync`, ns per sync of each size. */
export async function syncScenario(params: SyncParams): Promise<{ records: Measurement[]; notes: string[] }> {
  const run = await measureSync(params.quick ? [1, 8] : [1, 8, 64], params.quick ? 3 : 7);
  const where = `${run.fsType}${run.fsType === 'tmpfs' ? ': nothing to write back, the calls only' : ''}`;
  const note = `every page rewritten, timed from the first new byte (fill through the mapping, or write(2)) to the end of the sync; median of ${run.rounds} rounds, each measuring both, the order alternating; ${where}`;
  const records: Measurement[] = [];
  for (const row of run.rows) {
    const size = row.mib * MIB;
    records.push(
      {
        name: 'persist.sync.region',
        transport: 'file region: dirty every page, await region.sync()',
        messageSize: size,
        metric: 'ns/op',
        value: Math.round(row.regionSyncMicros * 1000),
        unit: 'ns',
        note,
      },
      {
        name: 'persist.sync.write-fdatasync',
        transport: 'plain file: write(2) the same bytes, fdatasync',
        messageSize: size,
        metric: 'ns/op',
        value: Math.round(row.writeFdatasyncMicros * 1000),
        unit: 'ns',
        note,
      },
    );
  }
  return { records, notes: [] };
}
