/**
 * What the kernel holds of System V segments and huge pages, for the sysv
 * and huge page tests: /proc/sysvipc/shm and /proc/meminfo, read back.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Region } from '@shmring/core';
import { runNode } from './helpers.js';

export const SYSV_PEER = fileURLToPath(new URL('./fixtures/sysv-peer.js', import.meta.url));

/** SHM_DEST in the perms column: the segment is marked for removal. */
export const SHM_DEST = 0o1000;

export interface Segment {
  key: number;
  id: number;
  perms: number;
  size: number;
  nattch: number;
  cpid: number;
}

/** The segments of this IPC namespace by id (/proc/sysvipc/shm; key unsigned, perms octal). */
export function segments(): Map<number, Segment> {
  const [header, ...rows] = fs.readFileSync('/proc/sysvipc/shm', 'utf8').trim().split('\n');
  const columns = header!.trim().split(/\s+/);
  const all = new Map<number, Segment>();
  for (const row of rows) {
    const cells = row.trim().split(/\s+/);
    const cell = (name: string) => cells[columns.indexOf(name)]!;
    const id = Number(cell('shmid'));
    all.set(id, {
      key: Number(cell('key')) >>> 0,
      id,
      perms: parseInt(cell('perms'), 8),
      size: Number(cell('size')),
      nattch: Number(cell('nattch')),
      cpid: Number(cell('cpid')),
    });
  }
  return all;
}

/** The ids of the segments this process created. */
export function ownSegments(): number[] {
  return [...segments().values()].filter((s) => s.cpid === process.pid).map((s) => s.id);
}

/** A key no other test run uses (high bits 0x5e, then random). */
export function uniqueKey(): number {
  return (0x5e00_0000 | Math.floor(Math.random() * 0x00ff_ffff)) >>> 0;
}

/** The default huge page pool as /proc/meminfo tells it (pageSize in bytes), or undefined without huge pages. */
export function hugePool(): { pageSize: number; total: number; free: number; reserved: number } | undefined {
  const text = fs.readFileSync('/proc/meminfo', 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? NaN);
  const kB = field('Hugepagesize');
  if (!(kB > 0)) return undefined;
  return { pageSize: kB * 1024, total: field('HugePages_Total'), free: field('HugePages_Free'), reserved: field('HugePages_Rsvd') };
}

/** How many fds this process has open. */
export function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/**
 * Stores 41 in word 0 of `region`, runs `script` with `args` (a peer that
 * maps the same memory and answers 42 in word 1: see fixtures/sysv-peer.ts),
 * and checks that it exited 0 and answered.
 */
export async function assertEchoes(
  region: Region,
  script: string,
  args: string[],
  options: Parameters<typeof runNode>[2] = {},
): Promise<void> {
  const i32 = new Int32Array(region.buffer);
  // Publishes the question to the peer.
  Atomics.store(i32, 0, 41);
  const { code, stderr } = await runNode(script, args, options).done;
  assert.equal(code, 0, stderr);
  // Observes the peer's answer.
  assert.equal(Atomics.load(i32, 1), 42);
}
