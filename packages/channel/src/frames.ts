/**
 * How a channel's messages map onto ring records: every value, request,
 * reply, error and cancellation is one record (or, when it is larger than
 * the ring's largest message, a run of records), and the record's 31-bit
 * type word says what it is:
 *
 *   bits 0-2   KIND   SEND, REQUEST, REPLY, ERROR, CANCEL, or MORE (a later
 *                     part of a split value)
 *   bit  3     SPLIT  the head of a split value (KIND, RAW and ID are the
 *                     value's): the payload is exactly the value's length in
 *                     bytes (u32 low, u32 high, little-endian); MORE records
 *                     carry its bytes, in order, and nothing else comes
 *                     between them
 *   bit  4     RAW    the value is a Buffer's bytes as they are, not the
 *                     codec's encoding (structured clone's fast path)
 *   bits 5-30  ID     the request's id (REQUEST, REPLY, ERROR, CANCEL); 0 otherwise
 *
 * REPLY answers the REQUEST with the same id with a value; ERROR answers it
 * with a JSON object { name, message, code }; CANCEL tells the handler side
 * that the caller stopped waiting (timeout or abort). Each side numbers its
 * own requests; ids of the two directions are unrelated.
 */
export const KIND_MASK = 0x7;
export const SEND = 0;
export const REQUEST = 1;
export const REPLY = 2;
export const ERROR = 3;
export const CANCEL = 4;
export const MORE = 5;

export const SPLIT = 0x8;
export const RAW = 0x10;

export const ID_SHIFT = 5;
/** Largest request id; ids wrap to 1 after it (skipping those in use). */
export const MAX_ID = 2 ** (31 - ID_SHIFT) - 1;

/** Bytes of a SPLIT record: the value's length. */
export const SPLIT_PREFIX = 8;

export function frameType(kind: number, id: number, flags = 0): number {
  return (id << ID_SHIFT) | flags | kind;
}

export function frameId(type: number): number {
  return type >>> ID_SHIFT;
}
