/**
 * Looking at rings from outside: what a region holds (kind, geometry,
 * occupancy, positions, the processes attached and whether they live), the
 * rings in /dev/shm, and removing the ones every process has abandoned.
 * Read-only: inspecting never writes to a ring.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Region } from '@shmring/core';
import * as L from './layout.js';
import { KIND_NAMES } from './header.js';
import { KIND_LATEST } from './latest-layout.js';
import { isAlive } from './liveness.js';
import { ringHeld, type Role } from './roles.js';

export interface ProcessInfo {
  /** The pid the side wrote (in its own PID namespace, which may not be ours). */
  pid: number;
  /**
   * Producer and consumer: whether anyone holds the role's lock (what the
   * kernel says, valid across PID namespaces), where the region has a
   * file; otherwise, and for the creator, whether that pid runs with the
   * start time it recorded.
   */
  alive: boolean;
}

export interface RingInfo {
  /** POSIX name (without '/') or file path. */
  name: string;
  kind: 'SpscRing' | 'MpmcQueue' | 'LatestValue' | 'unknown';
  version: number;
  /** SpscRing: data bytes; MpmcQueue: slots; LatestValue: maxSize (bytes of the largest value). */
  capacity: number;
  /** LatestValue: the newest published version, low 32 bits (its producerPosition word). A snapshot. */
  latestVersion?: number;
  /** MpmcQueue: bytes per slot payload. */
  slotSize?: number;
  /** SpscRing: bytes in use; MpmcQueue: messages in the queue; LatestValue: 0. A snapshot. */
  used: number;
  producerPosition: number;
  consumerPosition: number;
  closed: boolean;
  /**
   * Whether any ring object of any process is attached to the ring now
   * (its HOLDER lock is held); undefined where the region cannot tell.
   */
  held?: boolean;
  creator: ProcessInfo;
  producer?: ProcessInfo;
  consumer?: ProcessInfo;
  /** Parked readers / writers right now. */
  readersWaiting: number;
  writersWaiting: number;
  regionSize: number;
}

function processInfo(ctl: Int32Array, pidIndex: number, startIndex: number, locked?: boolean): ProcessInfo | undefined {
  // Observes a side's registration (pid stored after its lock is taken and its start time stored).
  const pid = Atomics.load(ctl, pidIndex);
  if (pid === 0) return undefined;
  return { pid, alive: locked ?? isAlive(pid, Atomics.load(ctl, startIndex)) };
}

/** Whether someone holds `role` of the ring at the start of `region`, or undefined if the region cannot tell. */
function roleLocked(region: Region, role: Role): boolean | undefined {
  return ringHeld(region, 0, role);
}

/** Describes the ring in `region`, or returns undefined if it holds none (no magic). */
export function describeRing(region: Region, name: string): RingInfo | undefined {
  const buffer = region.buffer;
  if (buffer.byteLength < L.DATA_OFFSET) return undefined;
  const ctl = new Int32Array(buffer, 0, L.CONTROL_I32_LENGTH);
  // Observes the creator's publication of the header (MAGIC is stored last).
  if (Atomics.load(ctl, L.MAGIC_I32) !== L.MAGIC) return undefined;
  const kind = ctl[L.KIND_I32]!;
  // Both positions are snapshots; the difference is only indicative on a live ring.
  const producerPosition = Atomics.load(ctl, L.PRODUCER_POSITION_I32) >>> 0;
  const consumerPosition = Atomics.load(ctl, L.CONSUMER_POSITION_I32) >>> 0;
  const capacity = ctl[L.CAPACITY_I32]! >>> 0;
  const info: RingInfo = {
    name,
    kind: (KIND_NAMES[kind] as RingInfo['kind'] | undefined) ?? 'unknown',
    version: ctl[L.VERSION_I32]!,
    capacity,
    used: Math.min((producerPosition - consumerPosition) >>> 0, capacity),
    producerPosition,
    consumerPosition,
    // Observes a close() by either side.
    closed: (Atomics.load(ctl, L.FLAGS_I32) & L.FLAG_CLOSED) !== 0,
    creator: processInfo(ctl, L.CREATOR_PID_I32, L.CREATOR_START_I32) ?? { pid: 0, alive: false },
    // Observe how many sides are parked right now.
    readersWaiting: Atomics.load(ctl, L.READ_WAITERS_I32),
    writersWaiting: Atomics.load(ctl, L.WRITE_WAITERS_I32),
    regionSize: buffer.byteLength,
  };
  if (kind === L.KIND_MPMC) info.slotSize = ctl[L.SLOT_SIZE_I32]! >>> 0;
  if (kind === KIND_LATEST) {
    // A LatestValue's producer position is its published version; it has no consumer position (0).
    info.latestVersion = producerPosition;
    info.used = 0;
  }
  const held = ringHeld(region, 0);
  if (held !== undefined) info.held = held;
  const producer = processInfo(ctl, L.PRODUCER_PID_I32, L.PRODUCER_START_I32, roleLocked(region, 'producer'));
  const consumer = processInfo(ctl, L.CONSUMER_PID_I32, L.CONSUMER_START_I32, roleLocked(region, 'consumer'));
  if (producer) info.producer = producer;
  if (consumer) info.consumer = consumer;
  return info;
}

/** Opens `target` read-only: a POSIX name, or a path (anything containing '/'). */
function openReadOnly(target: string): Region {
  return target.includes('/')
    ? Region.open({ backing: 'file', path: target, readOnly: true })
    : Region.open({ backing: 'posix', name: target, readOnly: true });
}

/** Describes the ring at a POSIX name or a file path; undefined if it holds no ring. */
export function inspect(target: string): RingInfo | undefined {
  const region = openReadOnly(target);
  try {
    return describeRing(region, target);
  } finally {
    region.close();
  }
}

/** Every ring among the POSIX shared memory objects (/dev/shm) this process can read. */
export function listRings(dir = '/dev/shm'): RingInfo[] {
  const rings: RingInfo[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const target = dir === '/dev/shm' ? entry.name : path.join(dir, entry.name);
    try {
      const info = inspect(target);
      if (info) rings.push(info);
    } catch {
      // not readable by us, or vanished meanwhile: not ours to report
    }
  }
  return rings;
}

/**
 * True when nobody holds the ring: no ring object of any process, in any
 * PID namespace, is attached to it (its HOLDER lock is free). Where the
 * region cannot tell (no file), when no process that ever attached is
 * alive by its pid.
 */
export function isStale(info: RingInfo): boolean {
  if (info.held !== undefined) return !info.held;
  return [info.creator, info.producer, info.consumer].every((p) => p === undefined || !p.alive);
}

/**
 * Removes the POSIX rings nobody holds (isStale).
 * Returns the names removed (or that would be, with dryRun).
 */
export function unlinkStale(options: { dir?: string; dryRun?: boolean } = {}): string[] {
  const dir = options.dir ?? '/dev/shm';
  const removed: string[] = [];
  for (const info of listRings(dir)) {
    if (!isStale(info)) continue;
    if (!options.dryRun) {
      try {
        fs.unlinkSync(info.name.includes('/') ? info.name : path.join(dir, info.name));
      } catch (err) {
        if ((err as { code?: string }).code !== 'ENOENT') throw err;
        continue;
      }
    }
    removed.push(info.name);
  }
  return removed;
}
