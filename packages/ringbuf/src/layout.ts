/**
 * The byte layout of a ring: the one module that knows an offset.
 * docs/LAYOUT.md is the normative description; this file implements it.
 *
 *   0        128      256      384      512      640
 *   +--------+--------+--------+--------+--------+----------------------------+
 *   | header |producer|consumer|  read  | write  | data area                  |
 *   |        |position|position|  wait  |  wait  | SpscRing: capacity bytes   |
 *   |        |        |        |        |        | MpmcQueue: capacity slots  |
 *   |        |        |        |        |        | (other kinds: their layout |
 *   |        |        |        |        |        |  modules, below)           |
 *   +--------+--------+--------+--------+--------+----------------------------+
 *
 * Every block is 128 bytes (two 64-byte lines: the adjacent-line prefetcher
 * pulls pairs), so no two hot words share a line. All integers are
 * little-endian; positions are 32-bit and wrap modulo 2^32.
 *
 * Header (written once by the creator, MAGIC last, except FLAGS and the pid words):
 *   0  MAGIC            u32  'SHMR' (0x524D4853) — stored last: a ring is complete once MAGIC reads right
 *   4  VERSION          u32  LAYOUT_VERSION
 *   8  KIND             u32  1 = SpscRing, 2 = MpmcQueue, 3 = LatestValue (latest-layout.ts),
 *                            4 = MpscRing (mpsc-layout.ts), 5 = Broadcast (broadcast-layout.ts)
 *   12 FLAGS            u32  bit 0: closed (Atomics; who may close depends on the kind: LAYOUT.md, "The closed flag")
 *   16 CAPACITY         u32  SpscRing: data bytes (power of two); MpmcQueue: slots (power of two)
 *   20 SLOT_SIZE        u32  MpmcQueue: largest payload of a slot; SpscRing: 0
 *   24 SLOT_STRIDE      u32  MpmcQueue: bytes from one slot to the next; SpscRing: 0
 *   28 DATA_OFFSET      u32  byte offset of the data area (640; a Broadcast's: after its subscriber slots)
 *   32 RING_SIZE_LO     u32  bytes the ring occupies from offset 0, low 32 bits
 *   36 RING_SIZE_HI     u32  … high bits
 *   40 CREATOR_PID      i32  pid of the creating process
 *   44 PRODUCER_PID     i32  pid of the registered producer (MpmcQueue: the last one), 0 if none
 *   48 CONSUMER_PID     i32  pid of the registered consumer (MpmcQueue: the last one), 0 if none
 *   52 CREATOR_START    u32  start time of those processes (clock ticks since
 *   56 PRODUCER_START   u32    boot, /proc/<pid>/stat field 22, low 32 bits),
 *   60 CONSUMER_START   u32    so that a reused pid is not taken for the peer
 *   64 per kind         u32  LatestValue: WRITER_TOKEN; Broadcast: MODE; MpscRing: PID_NS; the others: 0
 *   68 CREATION_ID      u32  a random number of the creator's, not 0 (below)
 *   72 .. 127           reserved, zero
 *
 * Locks (docs/LAYOUT.md, "Liveness"): open file description locks on bytes
 * of the region's file, counted from where the ring starts; never data:
 *   +0  HOLDER    shared, by every object attached to the ring
 *   +44 PRODUCER  by the producer (SpscRing, LatestValue's writer, Broadcast's publisher: exclusive;
 *                 MpmcQueue, MpscRing: shared)
 *   +48 CONSUMER  by the consumer (SpscRing, MpscRing: exclusive; MpmcQueue: shared)
 *
 * Wait blocks: [WAITERS i32, SIGNAL i32], the rest reserved (zero). READ_WAIT
 * is for readers parked on an empty ring, WRITE_WAIT for writers parked on a
 * full one (see docs/LAYOUT.md, "Waiting").
 *
 * Records (version 2; 8-byte aligned, never split at the wrap):
 *   +0 LENGTH i32  8 + payload bytes (the record before alignment); 0 = nothing
 *                  published here yet, so even a zero-byte message reads non-zero
 *   +4 TYPE   i32  message type (>= 0); PADDING_TYPE marks the filler before the
 *                  wrap, whose LENGTH is the bytes up to the end of the data area
 *   +8 payload, then zero to seven bytes of alignment
 * SpscRing publication rule: a record is readable once its LENGTH is non-zero
 * (the producer's Atomics.store of LENGTH is the publication; the consumer
 * polls the LENGTH word at its own position). The producer keeps the LENGTH
 * word at its position 0 until it publishes there: before it publishes a
 * record that ends at E, it stores 0 into the LENGTH word at E, which is free
 * because the producer always leaves RECORD_RESERVE bytes free. A record's
 * space is free once the consumer position has passed its end.
 * PRODUCER_POSITION is stored after each publication (for size, inspect and a
 * later producer, which walks on over published headers from it).
 *
 * MpmcQueue slots (SLOT_STRIDE bytes each, a multiple of 64):
 *   +0 SEQUENCE i32  Vyukov's sequence: == pos → free for the producer of pos;
 *                    == pos + 1 → readable by the consumer of pos;
 *                    becomes pos + capacity when that consumer frees it
 *   +4 LENGTH   u32  payload bytes (<= SLOT_SIZE)
 *   +8 TYPE     i32  message type
 *   +12 OWNER    i32  pid of the producer that claimed the slot, then of the
 *                    consumer that claimed it; 0 once freed (for recovery
 *                    from a side that died holding the slot)
 *   +16 payload
 * Publication rule: a slot is readable when its sequence equals pos + 1.
 */

/** Bytes in one cache line on the machines we target. */
export const CACHE_LINE = 64;
/** Each hot word sits alone in a block this big (two lines, for the adjacent-line prefetcher). */
export const BLOCK = 2 * CACHE_LINE;

/** 'SHMR' read as a little-endian u32. */
export const MAGIC = 0x524d4853;
/** Bumped on any incompatible change of this layout (2: records whose LENGTH publishes them). */
export const LAYOUT_VERSION = 2;

export const KIND_SPSC = 1;
export const KIND_MPMC = 2;

/** FLAGS bit: a side closed the ring. Readers take what is left, then see the end; writers get ERR_SHMRING_CLOSED. */
export const FLAG_CLOSED = 1 << 0;

// Header fields: byte offsets from the start of the region.
export const MAGIC_OFFSET = 0;
export const VERSION_OFFSET = MAGIC_OFFSET + 4;
export const KIND_OFFSET = VERSION_OFFSET + 4;
export const FLAGS_OFFSET = KIND_OFFSET + 4;
export const CAPACITY_OFFSET = FLAGS_OFFSET + 4;
export const SLOT_SIZE_OFFSET = CAPACITY_OFFSET + 4;
export const SLOT_STRIDE_OFFSET = SLOT_SIZE_OFFSET + 4;
export const DATA_OFFSET_OFFSET = SLOT_STRIDE_OFFSET + 4;
export const RING_SIZE_LO_OFFSET = DATA_OFFSET_OFFSET + 4;
export const RING_SIZE_HI_OFFSET = RING_SIZE_LO_OFFSET + 4;
export const CREATOR_PID_OFFSET = RING_SIZE_HI_OFFSET + 4;
export const PRODUCER_PID_OFFSET = CREATOR_PID_OFFSET + 4;
export const CONSUMER_PID_OFFSET = PRODUCER_PID_OFFSET + 4;
export const CREATOR_START_OFFSET = CONSUMER_PID_OFFSET + 4;
export const PRODUCER_START_OFFSET = CREATOR_START_OFFSET + 4;
export const CONSUMER_START_OFFSET = PRODUCER_START_OFFSET + 4;
export const HEADER_END = CONSUMER_START_OFFSET + 4;

/**
 * Header word 68, every kind: `CREATION_ID` (u32), a random number its
 * creator drew, not 0 (0: a creator that drew none), written before MAGIC.
 * A ring laid out again in the same memory starts its positions from 0
 * again; this tells it from the one before (the NATS bridge's message ids).
 */
export const CREATION_ID_OFFSET = HEADER_END + 4;
export const CREATION_ID_I32 = CREATION_ID_OFFSET / 4;

// Lock bytes of the file (see Locks above): where each lock sits, from the ring's start.
export const HOLDER_LOCK_OFFSET = MAGIC_OFFSET;
export const PRODUCER_LOCK_OFFSET = PRODUCER_PID_OFFSET;
export const CONSUMER_LOCK_OFFSET = CONSUMER_PID_OFFSET;

// The blocks, one hot word (or one wait pair) each.
export const HEADER_BLOCK = 0;
/** Producer position (SpscRing: bytes ever written; MpmcQueue: enqueue position). */
export const PRODUCER_POSITION_OFFSET = HEADER_BLOCK + BLOCK;
/**
 * SpscRing and MpscRing: `HEAD_EPOCH` (u32, wraps), beside the producer
 * position, in the line a producer loads for every message (the consumer
 * writes it once per 2^30 bytes), raised by one (an atomic add) by the
 * consumer before each store of CONSUMER_POSITION that changes bits
 * HEAD_EPOCH_SHIFT and up of the head it replaces (the head enters another
 * 2^30-byte window). It tells positions 2^32 bytes apart from each other:
 *  - a MpscRing producer that checks room against a cached head loads it
 *    after the tail and re-reads CONSUMER_POSITION when it differs from
 *    the count it loaded before its cached head: unchanged, the head has
 *    entered at most one window since, so the cached head is less than
 *    2^31 bytes behind and `tail - cached head` modulo 2^32 is the true
 *    distance (a producer idle while 4 GiB passed would otherwise read a
 *    full ring as having room);
 *  - a consumer counts the bytes consumed since the ring was created
 *    (headCount), which the NATS bridge names records by.
 */
export const HEAD_EPOCH_OFFSET = PRODUCER_POSITION_OFFSET + 4;
export const HEAD_EPOCH_I32 = HEAD_EPOCH_OFFSET / 4;
/** log2 of the windows HEAD_EPOCH counts (CAPACITY <= 2^30, so one head store crosses at most one boundary). */
export const HEAD_EPOCH_SHIFT = 30;
/** Consumer position (SpscRing: bytes ever consumed; MpmcQueue: dequeue position). */
export const CONSUMER_POSITION_OFFSET = PRODUCER_POSITION_OFFSET + BLOCK;
/** Readers parked on an empty ring: their count, then the signal word they sleep on. */
export const READ_WAITERS_OFFSET = CONSUMER_POSITION_OFFSET + BLOCK;
export const READ_SIGNAL_OFFSET = READ_WAITERS_OFFSET + 4;
/** Writers parked on a full ring: their count, then the signal word they sleep on. */
export const WRITE_WAITERS_OFFSET = READ_WAITERS_OFFSET + BLOCK;
export const WRITE_SIGNAL_OFFSET = WRITE_WAITERS_OFFSET + 4;
/** Start of the data area. */
export const DATA_OFFSET = WRITE_WAITERS_OFFSET + BLOCK;

// Int32Array indices of the same words (the control view starts at offset 0).
export const MAGIC_I32 = MAGIC_OFFSET / 4;
export const VERSION_I32 = VERSION_OFFSET / 4;
export const KIND_I32 = KIND_OFFSET / 4;
export const FLAGS_I32 = FLAGS_OFFSET / 4;
export const CAPACITY_I32 = CAPACITY_OFFSET / 4;
export const SLOT_SIZE_I32 = SLOT_SIZE_OFFSET / 4;
export const SLOT_STRIDE_I32 = SLOT_STRIDE_OFFSET / 4;
export const DATA_OFFSET_I32 = DATA_OFFSET_OFFSET / 4;
export const RING_SIZE_LO_I32 = RING_SIZE_LO_OFFSET / 4;
export const RING_SIZE_HI_I32 = RING_SIZE_HI_OFFSET / 4;
export const CREATOR_PID_I32 = CREATOR_PID_OFFSET / 4;
export const PRODUCER_PID_I32 = PRODUCER_PID_OFFSET / 4;
export const CONSUMER_PID_I32 = CONSUMER_PID_OFFSET / 4;
export const CREATOR_START_I32 = CREATOR_START_OFFSET / 4;
export const PRODUCER_START_I32 = PRODUCER_START_OFFSET / 4;
export const CONSUMER_START_I32 = CONSUMER_START_OFFSET / 4;
export const PRODUCER_POSITION_I32 = PRODUCER_POSITION_OFFSET / 4;
export const CONSUMER_POSITION_I32 = CONSUMER_POSITION_OFFSET / 4;
export const READ_WAITERS_I32 = READ_WAITERS_OFFSET / 4;
export const READ_SIGNAL_I32 = READ_SIGNAL_OFFSET / 4;
export const WRITE_WAITERS_I32 = WRITE_WAITERS_OFFSET / 4;
export const WRITE_SIGNAL_I32 = WRITE_SIGNAL_OFFSET / 4;
/** Length of the control Int32Array (header and blocks). */
export const CONTROL_I32_LENGTH = DATA_OFFSET / 4;

// SpscRing records.
export const RECORD_ALIGNMENT = 8;
export const RECORD_LENGTH_OFFSET = 0;
export const RECORD_TYPE_OFFSET = RECORD_LENGTH_OFFSET + 4;
export const RECORD_HEADER = RECORD_TYPE_OFFSET + 4;
/** Int32 indices of a record's words, counted from the Int32 index of its header. */
export const RECORD_LENGTH_I32 = RECORD_LENGTH_OFFSET / 4;
export const RECORD_TYPE_I32 = RECORD_TYPE_OFFSET / 4;
/**
 * Bytes the SpscRing producer always leaves free: the LENGTH word just past
 * the record it publishes is zeroed first, and must not be a record the
 * consumer has not read (a completely full ring would zero its header).
 */
export const RECORD_RESERVE = RECORD_ALIGNMENT;
/** TYPE of the filler record that skips the bytes before the wrap. */
export const PADDING_TYPE = -1;
/** Largest user message type. */
export const MAX_TYPE = 0x7fffffff;
/** Smallest SpscRing capacity (bytes) and largest (positions compare by difference). */
export const SPSC_MIN_CAPACITY = 64;
export const MAX_CAPACITY = 2 ** 30;

/** Record bytes a payload of `length` takes: header plus payload, rounded up to RECORD_ALIGNMENT. */
export function recordSize(length: number): number {
  return (length + RECORD_HEADER + RECORD_ALIGNMENT - 1) & ~(RECORD_ALIGNMENT - 1);
}

/**
 * Largest SpscRing payload: a record of half the ring always fits once the
 * ring drains (see LAYOUT.md): a record that wraps needs at most
 * capacity - 8 bytes with its padding, which leaves RECORD_RESERVE.
 */
export function spscMaxMessage(capacity: number): number {
  return capacity / 2 - RECORD_HEADER;
}

// MpmcQueue slots.
export const SLOT_SEQUENCE_OFFSET = 0;
export const SLOT_LENGTH_OFFSET = SLOT_SEQUENCE_OFFSET + 4;
export const SLOT_TYPE_OFFSET = SLOT_LENGTH_OFFSET + 4;
export const SLOT_OWNER_OFFSET = SLOT_TYPE_OFFSET + 4;
export const SLOT_HEADER = SLOT_OWNER_OFFSET + 4;
/** Int32 indices of a slot's words, counted from the Int32 index of the slot. */
export const SLOT_SEQUENCE_I32 = SLOT_SEQUENCE_OFFSET / 4;
export const SLOT_LENGTH_I32 = SLOT_LENGTH_OFFSET / 4;
export const SLOT_TYPE_I32 = SLOT_TYPE_OFFSET / 4;
export const SLOT_OWNER_I32 = SLOT_OWNER_OFFSET / 4;
/**
 * TYPE of a slot a producer gave up (LENGTH 0): it found the queue closed
 * after winning its position, which it must still publish. Consumers free
 * such a slot and take the next (LAYOUT.md, "The closed flag").
 */
export const SLOT_SKIP_TYPE = -1;
export const MPMC_MIN_CAPACITY = 2;
export const MAX_SLOT_SIZE = 2 ** 24;

/** Byte offset in the data area of the payload of the slot whose Int32 index is `slotI32`. */
export function slotPayload(slotI32: number): number {
  return slotI32 * 4 + SLOT_HEADER;
}

/** Bytes from one slot to the next: header plus payload, rounded up to a cache line. */
export function slotStride(slotSize: number): number {
  return Math.ceil((SLOT_HEADER + slotSize) / CACHE_LINE) * CACHE_LINE;
}

/** Bytes a SpscRing of `capacity` data bytes needs. */
export function spscRingSize(capacity: number): number {
  return DATA_OFFSET + capacity;
}

/** Bytes a MpmcQueue of `capacity` slots of `slotSize` bytes needs. */
export function mpmcRingSize(capacity: number, slotSize: number): number {
  return DATA_OFFSET + capacity * slotStride(slotSize);
}

if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) {
  throw new Error('shmring rings are little-endian and this platform is not');
}

/** Whether a ring of any kind is published at `base` of `buffer` now (a snapshot: MAGIC reads right). */
export function ringPublished(buffer: ArrayBufferLike, base: number): boolean {
  // Observes a creator's final store of MAGIC (writeHeader), or its retraction (unpublish).
  return Atomics.load(new Int32Array(buffer, base + MAGIC_OFFSET, 1), 0) === MAGIC;
}
