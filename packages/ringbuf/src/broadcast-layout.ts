/**
 * The byte layout of a Broadcast (KIND 5): the one module that knows its
 * offsets. docs/LAYOUT.md ("Broadcast (KIND 5)") is the normative text.
 *
 * A Broadcast shares the first 640 bytes of a ring (layout.ts): the same
 * header, TAIL in the producer position word (128), the read wait block
 * (384) for parked subscribers, the write wait block (512) for a lossless
 * publisher waiting for its slowest subscriber. The consumer position word
 * (256) is unused (zero): each subscriber has its own cursor.
 *
 *   0      128    256    384    512    640       768            768+N*128
 *   +------+------+------+------+------+---------+--------------+------------------+
 *   |header| TAIL |unused| read | write| INTENT, | N subscriber | data area        |
 *   |KIND=5|      |      | wait | wait | COUNT,..| slots (128 B)| CAPACITY bytes   |
 *   +------+------+------+------+------+---------+--------------+------------------+
 *
 * Header: CAPACITY = data bytes (power of two); SLOT_SIZE = N, the number
 * of subscriber slots; SLOT_STRIDE = 128 (a slot's bytes); DATA_OFFSET =
 * 768 + N * 128. Header byte 64 is MODE: 1 = lossless, 0 = lossy.
 *
 * Counters (all written by the publisher only):
 *   TAIL    u32  low 32 bits of the byte position after the last published record
 *   INTENT  u64  byte position after the record being written (== TAIL when idle),
 *                as three words LO, HI1, HI2 (see below)
 *   COUNT   u64  records intended (== records published when INTENT == TAIL), LO/HI1/HI2
 *   LATEST  u32  low 32 bits of the position where the newest record starts
 * A 64-bit counter is stored as HI1, LO, HI2: the writer stores HI1, then
 * LO, then HI2 (HI1 and HI2 only when the high word changes, once every
 * 2^32 bytes); a reader loads HI2, LO, HI1 and retries unless the two high
 * words agree. Then (HI, LO) is a value the counter held.
 *
 * Records (layout version 2's record, shared with MpscRing): 8-byte aligned,
 *   +0 LENGTH i32  8 + payload bytes (payload <= CAPACITY / 2 - 8); a padding record: its whole extent
 *   +4 TYPE   i32  message type (>= 0); PADDING_TYPE (-1) fills the bytes before the wrap
 *   +8 payload, padded to 8. A record never straddles the end of the data area.
 *
 * Publisher, per record: INTENT = end; COUNT = COUNT + 1; write the bytes
 * (padding first); LATEST = start; TAIL = end. A subscriber copies a record, then loads
 * INTENT: if INTENT - cursor > CAPACITY the publisher may have rewritten
 * what was copied (lapped): the copy is dropped.
 *
 * Subscriber slot i (128 bytes at 768 + i * 128; its lock byte in the
 * region's file is the slot's own offset, OWNER's byte):
 *   +0  OWNER   u32  0 = free; else the token of the subscriber holding it (in [1, 2^31)
 *                    without a file, where a negative OWNER is a claimant registering: its id negated)
 *   +4  CURSOR  u32  low 32 bits of the byte position the subscriber reads next
 *   +8  PID     i32  the holder's pid (information, inspect)
 *   +12 START   u32  the holder's start time (liveness fallback without a file)
 * A lossless publisher admits a record ending at `end` only if `end` minus
 * every live CURSOR is at most CAPACITY; between scans of the table it
 * goes by the slowest cursor it found, which is never after the tail of
 * that moment, so a subscriber that joins later (at a later tail) is
 * covered by it too.
 */
import * as L from './layout.js';

export const KIND_BROADCAST = 5;

/** Header byte 64: 1 = lossless (the publisher waits for every subscriber), 0 = lossy. */
export const MODE_OFFSET = L.HEADER_END;
export const MODE_I32 = MODE_OFFSET / 4;
export const MODE_LOSSY = 0;
export const MODE_LOSSLESS = 1;

/** Low 32 bits of the position after the last published record (the rings' producer position word). */
export const TAIL_OFFSET = L.PRODUCER_POSITION_OFFSET;
export const TAIL_I32 = TAIL_OFFSET / 4;

/** The publisher's intent and record counters: one block after the rings' five. */
export const COUNTERS_OFFSET = L.DATA_OFFSET;
export const INTENT_LO_OFFSET = COUNTERS_OFFSET;
export const INTENT_HI1_OFFSET = INTENT_LO_OFFSET + 4;
export const INTENT_HI2_OFFSET = INTENT_HI1_OFFSET + 4;
export const COUNT_LO_OFFSET = INTENT_HI2_OFFSET + 4;
export const COUNT_HI1_OFFSET = COUNT_LO_OFFSET + 4;
export const COUNT_HI2_OFFSET = COUNT_HI1_OFFSET + 4;
/** Low 32 bits of the position where the newest record starts (its padding, if it wrapped). */
export const LATEST_OFFSET = COUNT_HI2_OFFSET + 4;
export const LATEST_I32 = LATEST_OFFSET / 4;

/** A 64-bit counter's three words, as Int32 indices. */
export interface Counter64 {
  readonly lo: number;
  readonly hi1: number;
  readonly hi2: number;
}
export const INTENT: Counter64 = { lo: INTENT_LO_OFFSET / 4, hi1: INTENT_HI1_OFFSET / 4, hi2: INTENT_HI2_OFFSET / 4 };
export const COUNT: Counter64 = { lo: COUNT_LO_OFFSET / 4, hi1: COUNT_HI1_OFFSET / 4, hi2: COUNT_HI2_OFFSET / 4 };

/** First subscriber slot; each slot owns a block. */
export const SLOTS_OFFSET = COUNTERS_OFFSET + L.BLOCK;
export const SLOT_STRIDE = L.BLOCK;
export const SLOT_OWNER_OFFSET = 0;
export const SLOT_CURSOR_OFFSET = SLOT_OWNER_OFFSET + 4;
export const SLOT_PID_OFFSET = SLOT_CURSOR_OFFSET + 4;
export const SLOT_START_OFFSET = SLOT_PID_OFFSET + 4;
/** Int32 indices of a slot's words, from the slot's Int32 index. */
export const SLOT_OWNER_I32 = SLOT_OWNER_OFFSET / 4;
export const SLOT_CURSOR_I32 = SLOT_CURSOR_OFFSET / 4;
export const SLOT_PID_I32 = SLOT_PID_OFFSET / 4;
export const SLOT_START_I32 = SLOT_START_OFFSET / 4;

/** Default and largest number of subscriber slots. */
export const DEFAULT_SUBSCRIBERS = 16;
export const MAX_SUBSCRIBERS = 1024;
/** Smallest capacity: room for a few records. */
export const BROADCAST_MIN_CAPACITY = 64;

/** Byte offset (from the Broadcast's start) of subscriber slot `i`; also its lock byte in the file. */
export function slotOffset(i: number): number {
  return SLOTS_OFFSET + i * SLOT_STRIDE;
}

/** Where the data area starts with `subscribers` slots. */
export function broadcastDataOffset(subscribers: number): number {
  return SLOTS_OFFSET + subscribers * SLOT_STRIDE;
}

/** Bytes a Broadcast of `capacity` data bytes and `subscribers` slots occupies. */
export function broadcastSize(capacity: number, subscribers: number): number {
  return broadcastDataOffset(subscribers) + capacity;
}

/** Largest payload: as SpscRing, half the ring less a header, so a record plus padding always fits. */
export function broadcastMaxMessage(capacity: number): number {
  return L.spscMaxMessage(capacity);
}

// The layout checks itself: every hot word owns its block, the data area starts on one.
if (COUNTERS_OFFSET % L.BLOCK !== 0 || SLOTS_OFFSET % L.BLOCK !== 0) {
  throw new Error('broadcast-layout: blocks are misaligned');
}
