/**
 * The byte layout of a LatestValue: the one module that knows its offsets.
 * docs/LAYOUT.md ("LatestValue") is the normative description.
 *
 * A LatestValue shares the first 640 bytes of a ring (layout.ts): the same
 * header (KIND = KIND_LATEST), the same five blocks, of which it uses two.
 *
 *   0        128       256      384      512      640         640+STRIDE    640+2*STRIDE
 *   +--------+---------+--------+--------+--------+-------------+-------------+
 *   | header |PUBLISHED| unused |  read  | unused |   slot 0    |   slot 1    |
 *   |        | version |  zero  |  wait  |  zero  | even versions| odd versions|
 *   +--------+---------+--------+--------+--------+-------------+-------------+
 *
 * Header: as layout.ts, with CAPACITY = maxSize (largest value, bytes),
 * SLOT_SIZE = 0, SLOT_STRIDE = the slots' stride, DATA_OFFSET = 640;
 * PRODUCER_PID / PRODUCER_START = the writer's. Byte 64 of the header
 * (reserved in the rings) holds WRITER_TOKEN: the writer role of a region
 * without a file to lock, taken by compare-and-swap: the writer's thread id
 * (in a System V segment with PRODUCER_START, that thread's start time; a
 * single-threaded process's id is its pid).
 *
 * PUBLISHED (the producer position word, offset 128): the low 32 bits of
 * the newest complete version. Version v lives in slot v & 1.
 *
 * Slots (SLOT_STRIDE bytes each, a multiple of 128):
 *   +0  SEQ        u32  even: the slot is stable; odd: the writer is rewriting it
 *   +4  VERSION_LO u32  version of the value in the slot, low 32 bits
 *   +8  VERSION_HI u32  … high bits (versions are below 2^53)
 *   +12 LENGTH     u32  value bytes (<= CAPACITY)
 *   +16 TYPE       i32  value type, in [0, MAX_TYPE]
 *   +20 .. +63     reserved, zero
 *   +64 the value's bytes (a cache line of their own)
 *
 * Publication rule (a double buffer, each half a sequence lock): the writer
 * of version v = PUBLISHED + 1 makes SEQ of slot v & 1 odd, writes the
 * slot, makes SEQ even again, then stores PUBLISHED = v. A slot is readable
 * when SEQ is even and reads the same before and after the copy; the slot
 * PUBLISHED names is never the one being written, so a reader retries only
 * when the writer laps it (two publications during one copy), and a writer
 * that dies mid-publish leaves PUBLISHED naming the previous, whole value.
 */
import * as L from './layout.js';

export const KIND_LATEST = 3;

/** The writer role's word where there is no file to lock (header byte 64, reserved in the rings). */
export const WRITER_TOKEN_OFFSET = L.HEADER_END;
export const WRITER_TOKEN_I32 = WRITER_TOKEN_OFFSET / 4;

/** Low 32 bits of the newest complete version (the ring's producer position word). */
export const PUBLISHED_OFFSET = L.PRODUCER_POSITION_OFFSET;
export const PUBLISHED_I32 = PUBLISHED_OFFSET / 4;

/** Readers parked in changed(): the ring's read wait block. */
export const WAITERS_I32 = L.READ_WAITERS_I32;
export const SIGNAL_I32 = L.READ_SIGNAL_I32;

/** First slot: the rings' data area. */
export const SLOTS_OFFSET = L.DATA_OFFSET;

// Slot fields, from the slot's first byte.
export const SEQ_OFFSET = 0;
export const VERSION_LO_OFFSET = SEQ_OFFSET + 4;
export const VERSION_HI_OFFSET = VERSION_LO_OFFSET + 4;
export const LENGTH_OFFSET = VERSION_HI_OFFSET + 4;
export const TYPE_OFFSET = LENGTH_OFFSET + 4;
/** The value's bytes start a cache line after the slot: the header words never share its first line. */
export const VALUE_OFFSET = L.CACHE_LINE;
/** Int32 indices of the slot's words, counted from the slot's Int32 index. */
export const SEQ_I32 = SEQ_OFFSET / 4;
export const VERSION_LO_I32 = VERSION_LO_OFFSET / 4;
export const VERSION_HI_I32 = VERSION_HI_OFFSET / 4;
export const LENGTH_I32 = LENGTH_OFFSET / 4;
export const TYPE_I32 = TYPE_OFFSET / 4;
export const VALUE_I32 = VALUE_OFFSET / 4;

/** Largest maxSize (bytes of one value). */
export const MAX_VALUE_SIZE = L.MAX_CAPACITY;

/** Bytes from one slot to the next: header line plus value, rounded up to a block. */
export function latestSlotStride(maxSize: number): number {
  return Math.ceil((VALUE_OFFSET + maxSize) / L.BLOCK) * L.BLOCK;
}

/** Bytes a LatestValue of values up to `maxSize` bytes occupies from its start. */
export function latestSize(maxSize: number): number {
  return SLOTS_OFFSET + 2 * latestSlotStride(maxSize);
}

/** Byte offset (from the LatestValue's start) of slot `slot` (0 or 1). */
export function slotOffset(maxSize: number, slot: number): number {
  return SLOTS_OFFSET + slot * latestSlotStride(maxSize);
}

// The layout checks itself: PUBLISHED and the wait pair each own their block; the slots start on a block.
if (
  PUBLISHED_OFFSET % L.BLOCK !== 0 ||
  L.READ_WAITERS_OFFSET % L.BLOCK !== 0 ||
  SLOTS_OFFSET % L.BLOCK !== 0 ||
  TYPE_OFFSET + 4 > VALUE_OFFSET ||
  WRITER_TOKEN_OFFSET + 4 > L.BLOCK
) {
  throw new Error('latest-layout.ts: a LatestValue word is out of its place');
}
