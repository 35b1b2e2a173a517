/**
 * The channel region: the one module that knows where things are in it.
 *
 *   offset 0                     128                   128 + span
 *   | channel header (128 bytes) | ring A (SpscRing)   | ring B (SpscRing) |
 *
 * Ring A carries the creator's values to the opener (server → client, or
 * channelPair's first end → openChannel's), ring B the other way. Both are
 * ordinary SpscRings of docs/LAYOUT.md at their offsets, each spanning
 * SpscRing.regionSize({ capacity }) rounded up to RING_ALIGN.
 *
 * Header words (u32, little-endian): MAGIC (stored last, with Atomics: it
 * publishes the header), VERSION, CODEC (codec.ts's ids), CAPACITY (bytes of
 * each ring's data area), A_OFFSET, B_OFFSET, OPENED (0 until the opener's
 * end takes its side with a compare-and-swap to 1: one opener per channel).
 */
import { ErrorCodes, ShmringError } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';

export const CHANNEL_MAGIC = 0x4e414843; // 'CHAN' as little-endian bytes
export const CHANNEL_VERSION = 1;

const MAGIC_I32 = 0;
export const VERSION_I32 = 1;
const CODEC_I32 = 2;
const CAPACITY_I32 = 3;
const A_OFFSET_I32 = 4;
const B_OFFSET_I32 = 5;
export const OPENED_I32 = 6;
const HEADER_I32_LENGTH = 7;

/** Bytes of the channel header; ring A starts here. */
export const HEADER_SIZE = 128;
/** Each ring starts at a multiple of this (two cache lines). */
export const RING_ALIGN = 128;

export interface ChannelGeometry {
  codec: number;
  capacity: number;
  /** Offset of ring A (creator → opener). */
  aOffset: number;
  /** Offset of ring B (opener → creator). */
  bOffset: number;
}

function ringSpan(capacity: number): number {
  return Math.ceil(SpscRing.regionSize({ capacity }) / RING_ALIGN) * RING_ALIGN;
}

/** Bytes of a channel region whose rings have `capacity` data bytes each. */
export function channelRegionSize(capacity: number): number {
  return HEADER_SIZE + 2 * ringSpan(capacity);
}

/** Lays out the header and both rings in `buffer`; returns the geometry. */
export function writeChannelHeader(buffer: ArrayBuffer | SharedArrayBuffer, codec: number, capacity: number): ChannelGeometry {
  const words = new Int32Array(buffer, 0, HEADER_I32_LENGTH);
  const g: ChannelGeometry = { codec, capacity, aOffset: HEADER_SIZE, bOffset: HEADER_SIZE + ringSpan(capacity) };
  // Withdraws an older publication before the fields change.
  Atomics.store(words, MAGIC_I32, 0);
  words[VERSION_I32] = CHANNEL_VERSION;
  words[CODEC_I32] = codec;
  words[CAPACITY_I32] = capacity;
  words[A_OFFSET_I32] = g.aOffset;
  words[B_OFFSET_I32] = g.bOffset;
  return g;
}

/** Publishes the header (after both rings were created): the opener loads MAGIC first. */
export function publishChannelHeader(buffer: ArrayBuffer | SharedArrayBuffer): void {
  // Publishes every header word and both rings, written before; pairs with readChannelHeader's load of MAGIC.
  Atomics.store(new Int32Array(buffer, 0, HEADER_I32_LENGTH), MAGIC_I32, CHANNEL_MAGIC);
}

/** Reads and checks a channel header; `what` names the region in errors. */
export function readChannelHeader(buffer: ArrayBuffer | SharedArrayBuffer, what: string): ChannelGeometry {
  if (buffer.byteLength < HEADER_SIZE) {
    throw new ShmringError(ErrorCodes.NOT_A_CHANNEL, `${what} (${buffer.byteLength} bytes) is too small to hold a channel`);
  }
  const words = new Int32Array(buffer, 0, HEADER_I32_LENGTH);
  // Observes the creator's publication: every field and both rings were written before MAGIC.
  const magic = Atomics.load(words, MAGIC_I32);
  if (magic !== CHANNEL_MAGIC) {
    throw new ShmringError(ErrorCodes.NOT_A_CHANNEL, `${what} does not hold a channel (magic=0x${(magic >>> 0).toString(16)})`);
  }
  const version = words[VERSION_I32]!;
  if (version !== CHANNEL_VERSION) {
    throw new ShmringError(
      ErrorCodes.VERSION_MISMATCH,
      `${what} holds a channel of version ${version}; this library speaks version ${CHANNEL_VERSION}: use the same @shmring/channel on both sides`,
    );
  }
  const g: ChannelGeometry = {
    codec: words[CODEC_I32]!,
    capacity: words[CAPACITY_I32]! >>> 0,
    aOffset: words[A_OFFSET_I32]! >>> 0,
    bOffset: words[B_OFFSET_I32]! >>> 0,
  };
  let span: number;
  try {
    span = ringSpan(g.capacity);
  } catch {
    throw new ShmringError(ErrorCodes.CORRUPT, `${what}: the channel header has an impossible ring capacity ${g.capacity}`);
  }
  if (g.aOffset !== HEADER_SIZE || g.bOffset !== HEADER_SIZE + span || buffer.byteLength < HEADER_SIZE + 2 * span) {
    throw new ShmringError(
      ErrorCodes.CORRUPT,
      `${what}: the channel header is inconsistent (capacity=${g.capacity}, offsets ${g.aOffset}/${g.bOffset}, ${buffer.byteLength} bytes)`,
    );
  }
  return g;
}

/** Whether an opener took its end (claimOpenerEnd): the creator's check that its client did, before it announces the channel. */
export function openerEndTaken(buffer: ArrayBuffer | SharedArrayBuffer): boolean {
  // Observes the opener's CAS (it precedes the client's READY byte, which the creator received before asking).
  return Atomics.load(new Int32Array(buffer, 0, HEADER_I32_LENGTH), OPENED_I32) === 1;
}

/** Takes the opener's end; false if another opener has it already. */
export function claimOpenerEnd(buffer: ArrayBuffer | SharedArrayBuffer): boolean {
  // One CAS decides between two openers of the same region; nothing is published with it.
  return Atomics.compareExchange(new Int32Array(buffer, 0, HEADER_I32_LENGTH), OPENED_I32, 0, 1) === 0;
}
