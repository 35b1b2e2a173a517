/**
 * Writing and checking a ring's header (layout.ts has the offsets). Shared by
 * SpscRing and MpmcQueue, which differ only in the geometry they store.
 */
import { checkOptionNames, ErrorCodes, ShmringError, ShmringRangeError, ShmringTypeError, type Region } from '@shmring/core';
import { randomInt } from 'node:crypto';
import * as L from './layout.js';
import { KIND_LATEST, latestSize, latestSlotStride, MAX_VALUE_SIZE } from './latest-layout.js';
import * as B from './broadcast-layout.js';
import { ownStartTime } from './liveness.js';
import { KIND_MPSC, MPSC_MIN_CAPACITY, MPSC_PID_NS_I32, mpscRingSize } from './mpsc-layout.js';
import { regionWhere, shown } from './queue.js';
import { Roles } from './roles.js';

export interface Geometry {
  kind: typeof L.KIND_SPSC | typeof L.KIND_MPMC | typeof KIND_LATEST | typeof B.KIND_BROADCAST | typeof KIND_MPSC;
  /** SpscRing: data bytes; MpmcQueue: slots; LatestValue: maxSize. */
  capacity: number;
  /** MpmcQueue only (0 for SpscRing). */
  slotSize: number;
  slotStride: number;
  /** Bytes from the region's start to the end of the data area. */
  ringSize: number;
  /** Where the data area starts, if not at L.DATA_OFFSET (Broadcast: after its subscriber table). */
  dataOffset?: number;
  /** Broadcast: header word 64 (MODE), written before MAGIC. */
  mode?: number;
  /** MpscRing: header word 64 (PID_NS), written before MAGIC. */
  pidNamespace?: number;
}

export const KIND_NAMES: Record<number, string> = {
  [L.KIND_SPSC]: 'SpscRing',
  [L.KIND_MPMC]: 'MpmcQueue',
  [KIND_LATEST]: 'LatestValue',
  [B.KIND_BROADCAST]: 'Broadcast',
  [KIND_MPSC]: 'MpscRing',
};

/** The region's memory, or a typed error if the region cannot hold a ring of `ringSize` bytes. */
export function ringMemory(region: Region, base: number, ringSize: number, what: string): ArrayBuffer | SharedArrayBuffer {
  if (region === null || typeof region !== 'object' || !('buffer' in region)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${what} needs a Region from @shmring/core`);
  }
  const buffer = region.buffer; // throws ERR_SHMRING_CLOSED for a closed region
  if (buffer.byteLength < base + ringSize) {
    throw new ShmringError(
      ErrorCodes.REGION_TOO_SMALL,
      base === 0
        ? `${what}: ${regionWhere(region)} has ${buffer.byteLength} bytes but the ring needs ${ringSize}; size it with regionSize()`
        : `${what}: ${regionWhere(region)} has ${buffer.byteLength} bytes but a ring of ${ringSize} bytes at offset ${base} needs ${base + ringSize}`,
    );
  }
  if (region.readOnly) {
    throw new ShmringError(
      ErrorCodes.READ_ONLY,
      `${what}: ${regionWhere(region)} is mapped read-only; a ring's sides write to it (open it without readOnly)`,
    );
  }
  return buffer;
}

/**
 * Checks that the options of a verb that sizes, lays out or joins a ring
 * (regionSize, create, attach, subscribe) are an object with only the
 * option `names`, if given: anything else is the ShmringTypeError
 * (ERR_SHMRING_INVALID_ARGUMENT) the waiting verbs throw for it
 * (checkWaitOptions), never silently the defaults (a misspelt `capacty`).
 */
export function checkOptionsObject(options: unknown, verb: string, names: readonly string[]): void {
  if (options === undefined) return;
  if (options === null || typeof options !== 'object') {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: options=${shown(options)} must be an object`);
  }
  checkOptionNames(options, names, verb);
}

/**
 * Checks where a ring starts in its region: a multiple of CACHE_LINE (so the
 * blocks keep their cache lines to themselves), 0 by default.
 */
export function checkOffset(offset: unknown, verb: string): number {
  if (offset === undefined) return 0;
  const rule = `must be a non-negative multiple of ${L.CACHE_LINE} (where the ring starts in its region)`;
  if (typeof offset !== 'number' || !Number.isInteger(offset)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: offset=${shown(offset)} ${rule}`);
  }
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % L.CACHE_LINE !== 0) {
    throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: offset=${offset} ${rule}`);
  }
  return offset;
}

/** Checks a power-of-two capacity in [min, max]; the error names it, `verb`, and what it counts (`unit`). */
export function checkCapacity(capacity: unknown, min: number, max: number, verb: string, unit = "bytes of the ring's data area"): number {
  if (typeof capacity !== 'number' || !Number.isInteger(capacity)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: capacity must be an integer, got ${shown(capacity)}`);
  }
  if (capacity < min || capacity > max || (capacity & (capacity - 1)) !== 0) {
    throw new ShmringRangeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: capacity=${capacity} must be a power of two in [${min}, ${max}] (${unit})`,
    );
  }
  return capacity;
}

/**
 * Withdraws any ring in the region (MAGIC = 0) before a new one is laid out
 * over it, so no attach sees an old MAGIC over half-written new contents.
 */
export function unpublish(buffer: ArrayBuffer | SharedArrayBuffer, base = 0): Int32Array {
  const ctl = new Int32Array(buffer, base, L.CONTROL_I32_LENGTH);
  // Retracts the old publication; writeHeader's final store of MAGIC makes the new one.
  Atomics.store(ctl, L.MAGIC_I32, 0);
  return ctl;
}

/** Writes a fresh header and zeroes the blocks. MAGIC is stored last: it publishes the ring. */
export function writeHeader(ctl: Int32Array, g: Geometry): void {
  ctl.fill(0);
  ctl[L.VERSION_I32] = L.LAYOUT_VERSION;
  ctl[L.KIND_I32] = g.kind;
  ctl[L.CAPACITY_I32] = g.capacity;
  ctl[L.SLOT_SIZE_I32] = g.slotSize;
  ctl[L.SLOT_STRIDE_I32] = g.slotStride;
  ctl[L.DATA_OFFSET_I32] = g.dataOffset ?? L.DATA_OFFSET;
  if (g.mode !== undefined) ctl[B.MODE_I32] = g.mode;
  if (g.pidNamespace !== undefined) ctl[MPSC_PID_NS_I32] = g.pidNamespace;
  ctl[L.RING_SIZE_LO_I32] = g.ringSize >>> 0;
  ctl[L.RING_SIZE_HI_I32] = Math.floor(g.ringSize / 2 ** 32);
  ctl[L.CREATOR_START_I32] = ownStartTime();
  ctl[L.CREATOR_PID_I32] = process.pid;
  ctl[L.CREATION_ID_I32] = randomInt(1, 2 ** 32) | 0;
  // Publishes every header field above (and the slots the caller initialised
  // before calling us) to a peer that attaches: attach loads MAGIC first.
  Atomics.store(ctl, L.MAGIC_I32, L.MAGIC);
}

/**
 * ERR_SHMRING_NOT_A_RING when no ring is published at `base` of `buffer`
 * (too small for a header, or MAGIC does not read right), else undefined:
 * the first look of readHeader, and of an attach before it holds the ring
 * (Roles.holdToAttach).
 */
export function missingRing(
  buffer: ArrayBuffer | SharedArrayBuffer,
  base: number,
  what: string,
  region: Region | undefined,
): ShmringError | undefined {
  const where = (): string => (region === undefined ? 'the region' : regionWhere(region));
  if (buffer.byteLength < base + L.DATA_OFFSET) {
    return new ShmringError(
      ErrorCodes.NOT_A_RING,
      base === 0
        ? `${what}: ${where()} (${buffer.byteLength} bytes) is smaller than a ring's header`
        : `${what}: ${where()} (${buffer.byteLength} bytes) ends before a ring's header at offset ${base}`,
    );
  }
  if (L.ringPublished(buffer, base)) return undefined;
  // For the message only: what the word reads now (ringPublished's load decided).
  const magic = Atomics.load(new Int32Array(buffer, base + L.MAGIC_OFFSET, 1), 0);
  return new ShmringError(
    ErrorCodes.NOT_A_RING,
    `${what}: ${where()}${base === 0 ? '' : ` at offset ${base}`} does not hold a ring (magic=0x${(magic >>> 0).toString(16)}); create one first`,
  );
}

/**
 * An attach's hold of the ring at `base` of `region` (Roles.holdToAttach),
 * looking first, holding nothing, for a ring published there (missingRing),
 * then running `look` under the lock.
 */
export function attachTo<T>(
  region: Region,
  buffer: ArrayBuffer | SharedArrayBuffer,
  base: number,
  what: string,
  look: (roles: Roles | undefined) => T,
): T {
  return Roles.holdToAttach(region, base, what, () => missingRing(buffer, base, what, region), look);
}

/**
 * Reads and checks the header of an existing ring of `kind` at `base`;
 * returns its geometry. `what` names the verb in the errors (by default
 * `<Kind>.attach`; Broadcast.create passes its own), and `region`, when
 * given, the region (its name, path or key) where they say "the region".
 */
export function readHeader(
  buffer: ArrayBuffer | SharedArrayBuffer,
  kind: Geometry['kind'],
  base = 0,
  what = `${KIND_NAMES[kind]}.attach`,
  region?: Region,
): Geometry {
  const missing = missingRing(buffer, base, what, region);
  if (missing !== undefined) throw missing;
  const place = (region === undefined ? 'the region' : regionWhere(region)) + (base === 0 ? '' : ` at offset ${base}`);
  const ctl = new Int32Array(buffer, base, L.CONTROL_I32_LENGTH);
  const version = ctl[L.VERSION_I32]!;
  if (version !== L.LAYOUT_VERSION) {
    throw new ShmringError(
      ErrorCodes.VERSION_MISMATCH,
      `${what}: the ring in ${place} has layout version ${version}; this library speaks version ${L.LAYOUT_VERSION}; ` +
        `recreate the ring with this version of shmring (and attach with the same version on every side)`,
    );
  }
  const found = ctl[L.KIND_I32]!;
  if (found !== kind) {
    throw new ShmringError(
      ErrorCodes.WRONG_KIND,
      `${what}: ${place} holds a ${KIND_NAMES[found] ?? `ring of unknown kind ${found}`}, not a ${KIND_NAMES[kind]}`,
    );
  }
  const g: Geometry = {
    kind,
    capacity: ctl[L.CAPACITY_I32]! >>> 0,
    slotSize: ctl[L.SLOT_SIZE_I32]! >>> 0,
    slotStride: ctl[L.SLOT_STRIDE_I32]! >>> 0,
    ringSize: (ctl[L.RING_SIZE_LO_I32]! >>> 0) + (ctl[L.RING_SIZE_HI_I32]! >>> 0) * 2 ** 32,
  };
  const dataOffset = ctl[L.DATA_OFFSET_I32]!;
  const expectedDataOffset = kind === B.KIND_BROADCAST ? B.broadcastDataOffset(g.slotSize) : L.DATA_OFFSET;
  // A Broadcast's MODE, written before MAGIC (observed above) and never again: lossy or lossless, nothing else.
  const mode = kind === B.KIND_BROADCAST ? ctl[B.MODE_I32]! : B.MODE_LOSSY;
  const sane =
    dataOffset === expectedDataOffset &&
    Number.isSafeInteger(g.ringSize) &&
    saneGeometry(g) &&
    (mode === B.MODE_LOSSY || mode === B.MODE_LOSSLESS);
  if (!sane) {
    throw new ShmringError(
      ErrorCodes.CORRUPT,
      `${what}: the header of the ring in ${place} is inconsistent (capacity=${g.capacity}, slotSize=${g.slotSize}, slotStride=${g.slotStride}, dataOffset=${dataOffset}, size=${g.ringSize}${kind === B.KIND_BROADCAST ? `, mode=${mode}` : ''})`,
    );
  }
  if (buffer.byteLength < base + g.ringSize) {
    throw new ShmringError(
      ErrorCodes.REGION_TOO_SMALL,
      `${what}: the ring needs ${g.ringSize} bytes from offset ${base} but ${region === undefined ? 'the region' : regionWhere(region)} has ${buffer.byteLength} (truncated?)`,
    );
  }
  return g;
}

/** Whether a header's geometry is one its kind's create() writes. */
function saneGeometry(g: Geometry): boolean {
  const c = g.capacity;
  switch (g.kind) {
    case L.KIND_SPSC:
      return (
        g.ringSize === L.spscRingSize(c) &&
        c >= L.SPSC_MIN_CAPACITY &&
        c <= L.MAX_CAPACITY &&
        (c & (c - 1)) === 0 &&
        g.slotSize === 0 &&
        g.slotStride === 0
      );
    case L.KIND_MPMC:
      return (
        g.ringSize === L.mpmcRingSize(c, g.slotSize) &&
        c >= L.MPMC_MIN_CAPACITY &&
        c <= L.MAX_CAPACITY &&
        (c & (c - 1)) === 0 &&
        g.slotSize <= L.MAX_SLOT_SIZE &&
        g.slotStride === L.slotStride(g.slotSize)
      );
    case KIND_LATEST:
      return c <= MAX_VALUE_SIZE && g.ringSize === latestSize(c) && g.slotSize === 0 && g.slotStride === latestSlotStride(c);
    case B.KIND_BROADCAST:
      return (
        c >= B.BROADCAST_MIN_CAPACITY &&
        c <= L.MAX_CAPACITY &&
        (c & (c - 1)) === 0 &&
        g.slotSize <= B.MAX_SUBSCRIBERS &&
        g.slotStride === B.SLOT_STRIDE &&
        g.ringSize === B.broadcastSize(c, g.slotSize)
      );
    case KIND_MPSC:
      return (
        g.ringSize === mpscRingSize(c) &&
        c >= MPSC_MIN_CAPACITY &&
        c <= L.MAX_CAPACITY &&
        (c & (c - 1)) === 0 &&
        g.slotSize === 0 &&
        g.slotStride === 0
      );
  }
}

/** Looks at a ring's positions before its check believes them inconsistent (checkStablePositions). */
const STABLE_TRIES = 8;

/** A kind's position check (SpscRing's or MpscRing's checkPositions): throws ERR_SHMRING_CORRUPT for a pair no correct ring holds. */
export type PositionCheck = (producer: number, consumer: number, capacity: number, where?: string) => void;

/**
 * The position check of an SpscRing's or MpscRing's attach, and of
 * inspect, on a ring whose sides may move between any two loads: a
 * producer position, the consumer position, the producer position again.
 * Both only move forward (by far less than 2^31 in three loads), so the
 * producer position of the instant the consumer position was read is one
 * of the two around it or between them: the pair passes `check` with the
 * first, unless the consumer passed it meanwhile, or with the second, unless
 * the producer ran more than a lap on meanwhile too (a thread descheduled
 * between its loads). A ring fails every one of STABLE_TRIES looks only if
 * its positions are impossible: then `check`'s last error is thrown, naming
 * the ring (`where`). Returns the pair that passed, producer first.
 */
export function checkStablePositions(ctl: Int32Array, capacity: number, check: PositionCheck, where?: string): [number, number] {
  for (let tries = 1; ; tries++) {
    // Observes the producer's latest position store (MpscRing: a claim's CAS; SpscRing: #store after a publication).
    const before = Atomics.load(ctl, L.PRODUCER_POSITION_I32);
    // Observes the consumer's latest release, made while the producer position was at or after `before`.
    const consumer = Atomics.load(ctl, L.CONSUMER_POSITION_I32);
    // After the consumer position: the producer's at the instant it was read is at or before this one.
    const after = Atomics.load(ctl, L.PRODUCER_POSITION_I32);
    try {
      check(before, consumer, capacity, where);
      return [before, consumer];
    } catch (err) {
      if (after !== before && passes(check, after, consumer, capacity)) return [after, consumer];
      if (tries >= STABLE_TRIES) throw err;
    }
  }
}

function passes(check: PositionCheck, producer: number, consumer: number, capacity: number): boolean {
  try {
    check(producer, consumer, capacity);
    return true;
  } catch {
    return false;
  }
}

/**
 * A consumer of an SpscRing or a MpscRing, before it stores `head` as
 * CONSUMER_POSITION in place of `stored` (the head it stored last, or took
 * over): raises HEAD_EPOCH if that moves the head into another 2^30-byte
 * window (layout.ts), so positions 2^32 bytes apart can be told apart (a
 * producer's cached head, readCount). Returns the raise, 1 or 0: the
 * consumer keeps its own count (it is the word's only writer meanwhile).
 */
export function countHeadWindow(ctl: Int32Array, stored: number, head: number): number {
  if ((stored ^ head) >>> L.HEAD_EPOCH_SHIFT === 0) return 0;
  // Publishes "the head leaves its window" before the caller's store that moves it: a producer that still loads
  // the old count after its tail has a cached head at most one window behind the head it could see.
  Atomics.add(ctl, L.HEAD_EPOCH_I32, 1);
  return 1;
}

/**
 * A consumer taking its role, at `head` (the head it takes over): returns
 * HEAD_EPOCH, first raised (never lowered) so that its two low bits name
 * the head's window where a consumer that did not keep it left it behind:
 * 0 on a ring laid out before HEAD_EPOCH existed (or whose consumers never
 * raised it), or 1 or 2 windows behind. One ahead (three behind, the count
 * not 0) is a consumer that died between its raise and its head store, and
 * stays so: headCount reads it. Raising only keeps the producers' check
 * sound (a raise makes them re-read the head, nothing more).
 */
export function takeHeadEpoch(ctl: Int32Array, head: number): number {
  // Observes the previous consumers' raises (each before its head store, which the caller loaded).
  const epoch = Atomics.load(ctl, L.HEAD_EPOCH_I32) >>> 0;
  const lag = ((head >>> L.HEAD_EPOCH_SHIFT) - epoch) & 3;
  if (lag === 0 || (lag === 3 && epoch !== 0)) return epoch;
  // Publishes the count the head's window needs, before this consumer's first head store.
  return (Atomics.add(ctl, L.HEAD_EPOCH_I32, lag) + lag) >>> 0;
}

/**
 * Bytes consumed since the ring was created up to `position`, a u32
 * position at most CAPACITY past `released` (the head stored last), by
 * `epoch` (HEAD_EPOCH as the consumer keeps it: takeHeadEpoch, then its
 * raises): the head's window is the one `released` names modulo 4, the
 * count's own or, where the count is one ahead (a consumer died between
 * its raise and its store), the one before.
 */
export function headCount(epoch: number, released: number, position: number): number {
  const lag = ((released >>> L.HEAD_EPOCH_SHIFT) - epoch) & 3; // 0, or 3: the count one ahead of the stored head
  const headWindow = lag === 3 && epoch > 0 ? epoch - 1 : epoch + lag;
  const ahead = ((position >>> L.HEAD_EPOCH_SHIFT) - (released >>> L.HEAD_EPOCH_SHIFT)) & 3; // 0 or 1
  return (headWindow + ahead) * 2 ** L.HEAD_EPOCH_SHIFT + (position & (2 ** L.HEAD_EPOCH_SHIFT - 1));
}
