/**
 * The byte layout of an MpscRing: the one module that knows its offsets
 * beyond layout.ts. docs/LAYOUT.md ("MpscRing (KIND 4)") is normative.
 *
 * An MpscRing shares the first 640 bytes of a ring (layout.ts): the same
 * header (KIND = KIND_MPSC, CAPACITY = data bytes, SLOT_SIZE = SLOT_STRIDE = 0),
 * the same five blocks (producer position = bytes ever claimed, consumer
 * position = bytes ever consumed, READ_WAIT, WRITE_WAIT), then CAPACITY data
 * bytes.
 *
 * Records of layout version 2 (the header publishes the record):
 *   +0 LENGTH i32  0: free (never claimed since the consumer zeroed it);
 *                  -(8 + payload bytes): claimed, not committed;
 *                  +(8 + payload bytes): committed (readable)
 *   +4 TYPE   i32  while claimed: the claimer's mark, ~tid (<= -2: claimMark);
 *                  committed: the message type (>= 0), or PADDING_TYPE (-1)
 *   +8 payload, then zero to seven bytes of alignment
 * A record takes recordBytes(LENGTH) = LENGTH rounded up to 8 and never
 * straddles the end of the data area; a padding record (TYPE = PADDING_TYPE,
 * LENGTH = its whole extent) fills the bytes before the wrap, and an aborted
 * record is a padding record of its own length.
 */
import * as L from './layout.js';

export const KIND_MPSC = 4;

/**
 * Header word 64 of an MpscRing: `PID_NS`, the PID namespace of its creator
 * (liveness.pidNamespace(); 0: unknown), written before MAGIC. Thread ids
 * in claim marks mean what they say only to a consumer in the namespace of
 * the claimer.
 */
export const MPSC_PID_NS_OFFSET = L.HEADER_END;
export const MPSC_PID_NS_I32 = MPSC_PID_NS_OFFSET / 4;
/**
 * FLAGS bit 1 of an MpscRing: a producer or consumer registered from a PID
 * namespace other than PID_NS (or PID_NS, or its own, is unknown). Set once
 * (an atomic OR at registration), never cleared. While it is set, the
 * consumer judges a claimer by the PRODUCER lock alone (no process holds it:
 * every claimer is gone), not by the thread id in its mark.
 */
export const FLAG_PID_NS_MIXED = 1 << 1;
/**
 * FLAGS bit 2 of an MpscRing: some producer commits without a store-load
 * fence (its LENGTH store may still be in its CPU's store buffer when it
 * loads READ_WAITERS), relying on membarrier(2): it registered its process
 * for MEMBARRIER_CMD_GLOBAL_EXPEDITED and set this bit (an atomic OR)
 * before its first such commit. Never cleared. While it is set, a consumer
 * that parks calls membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) after its
 * announcement in READ_WAITERS and before its re-check, or, where that is
 * refused, sleeps at most LIGHT_NAP_MS at a time.
 */
export const FLAG_LIGHT_COMMITS = 1 << 2;
/** The longest sleep of a parked consumer that cannot call membarrier while FLAG_LIGHT_COMMITS is set. */
export const LIGHT_NAP_MS = 1;

/**
 * A claim's mark in TYPE: the claiming thread's id (Linux's tid, > 0)
 * bitwise negated, -1 - tid, so <= -2: never a message type (>= 0) nor
 * PADDING_TYPE (-1), which a claimer stores over its mark when it commits
 * or aborts. A consumer that reads TYPE beside a negative LENGTH tells a
 * claimer still claiming from one in its commit by the sign alone.
 */
export function claimMark(tid: number): number {
  return ~tid;
}

/** The thread id a TYPE word names if it is a claim mark (claimMark), else 0 (a type or padding being committed). */
export function markedThread(type: number): number {
  return type <= -2 ? ~type : 0;
}

/** Int32 indices of a record's words, counted from the Int32 index of its header (as SpscRing's). */
export const MPSC_LENGTH_I32 = L.RECORD_LENGTH_I32;
export const MPSC_TYPE_I32 = L.RECORD_TYPE_I32;
/** Bytes of a record header; a record's LENGTH counts them. */
export const MPSC_RECORD_HEADER = L.RECORD_HEADER;
export const MPSC_ALIGNMENT = L.RECORD_ALIGNMENT;
export const MPSC_MIN_CAPACITY = L.SPSC_MIN_CAPACITY;

/** The LENGTH word of a record with `payload` bytes (header included). */
export function mpscLength(payload: number): number {
  return MPSC_RECORD_HEADER + payload;
}

/** Bytes a record whose LENGTH is `length` occupies (rounded up to 8). */
export function recordBytes(length: number): number {
  return (length + MPSC_ALIGNMENT - 1) & ~(MPSC_ALIGNMENT - 1);
}

/** Largest payload: as SpscRing's, a record of half the ring always fits once the ring drains. */
export function mpscMaxMessage(capacity: number): number {
  return L.spscMaxMessage(capacity);
}

/** Bytes an MpscRing of `capacity` data bytes needs. */
export function mpscRingSize(capacity: number): number {
  return L.DATA_OFFSET + capacity;
}
