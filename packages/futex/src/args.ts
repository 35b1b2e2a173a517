/**
 * Argument checks and small facts shared by the futex entry points
 * (index.ts: one word; any.ts: several words).
 */
import { types } from 'node:util';
import { checkBoolean, ErrorCodes, ShmringError, ShmringRangeError, ShmringTypeError, shown } from '@shmring/core';

/**
 * A futex word: an Int32Array and an index inside it (`what` names the call
 * in the message). The fast path is comparisons only; explainWord makes the
 * error.
 */
export function checkWord(i32: Int32Array, index: number, what: string): void {
  if (i32 instanceof Int32Array && Number.isInteger(index) && index >= 0 && index < i32.length) return;
  explainWord(i32, index, what);
}

/**
 * checkWord's slow path: not an Int32Array or an index that is not an
 * integer is a TypeError; an index outside the view a RangeError. A view of
 * no words whose buffer is detached is no argument error: its memory is
 * gone (a mapped region's close() detaches its buffer), ERR_SHMRING_CLOSED.
 */
function explainWord(i32: unknown, index: unknown, what: string): never {
  if (!(i32 instanceof Int32Array)) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${what}: the futex word must be addressed through an Int32Array, got ${describe(i32)}`,
    );
  }
  if (typeof index !== 'number' || !Number.isInteger(index)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${what}: index=${shown(index)} must be an integer`);
  }
  if (i32.length === 0) {
    if (isDetached(i32.buffer)) {
      throw new ShmringError(
        ErrorCodes.CLOSED,
        `${what}: the Int32Array's memory is gone: its region was closed (or its buffer transferred); ` +
          'keep the region open while its words are waited on, or open it again and wait on a view of its new buffer',
      );
    }
    throw new ShmringRangeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${what}: index=${index}, but the Int32Array is empty: it holds no futex word`,
    );
  }
  throw new ShmringRangeError(
    ErrorCodes.INVALID_ARGUMENT,
    `${what}: index=${index} is out of range [0, ${i32.length - 1}] of the Int32Array`,
  );
}

/** Whether `buffer` is detached (Node 20 has no ArrayBuffer.prototype.detached): no view of it can be made. */
function isDetached(buffer: ArrayBufferLike): boolean {
  if (buffer.byteLength !== 0 || types.isSharedArrayBuffer(buffer)) return false;
  try {
    new Uint8Array(buffer);
    return false;
  } catch {
    return true;
  }
}

/** What a value that should have been an Int32Array is, for the message. */
function describe(value: unknown): string {
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name}`;
  return typeof value === 'object' && value !== null ? `a ${value.constructor?.name ?? 'object'}` : shown(value);
}

/** The `count` of a wake (`verb` names it): an integer in [0, 2^31 − 1], or Infinity for all. */
export function countOf(count: unknown, verb: string): number {
  if (count === Infinity) return 0x7fffffff;
  if (typeof count !== 'number' || !Number.isInteger(count)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: count=${shown(count)} must be an integer (or Infinity)`);
  }
  if (count < 0 || count > 0x7fffffff) {
    throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: count=${count} is out of range [0, 2147483647] (or Infinity)`);
  }
  return count;
}

/**
 * The `timeoutMs` of a wait (`verb` names it): undefined or Infinity for
 * none, else a number of ms >= 0. Not a number is a TypeError, NaN or
 * negative a RangeError (never clamped: a computed timeout that went wrong
 * must not become a wait for ever, or no wait at all, unnoticed).
 */
export function timeoutOf(timeoutMs: unknown, verb: string): number {
  if (timeoutMs === undefined || timeoutMs === Infinity) return Infinity;
  if (typeof timeoutMs !== 'number') {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: timeoutMs=${shown(timeoutMs)} must be a number of ms`);
  }
  if (!(timeoutMs >= 0)) {
    throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: timeoutMs=${timeoutMs} must be a number of ms >= 0 (or Infinity)`);
  }
  return timeoutMs;
}

/**
 * The value a word is expected to hold (`verb` names the call): a number
 * that an Int32Array element can hold, an integer in [-2^31, 2^31 - 1]
 * (anything else could never compare equal: a TypeError).
 */
export function checkExpected(expected: unknown, verb: string): number {
  if (typeof expected !== 'number' || (expected | 0) !== expected) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: expected=${shown(expected)} must be an integer an Int32Array holds, in [-2147483648, 2147483647]`,
    );
  }
  return expected;
}

/**
 * The `signal` of an asynchronous wait (`verb` names it): undefined or an
 * AbortSignal (one of another realm passes: it has `aborted` and
 * addEventListener). Checked before any wait or timer starts.
 */
export function checkSignal(signal: unknown, verb: string): void {
  if (signal === undefined || signal instanceof AbortSignal) return;
  if (
    signal === null ||
    typeof signal !== 'object' ||
    !('aborted' in signal) ||
    typeof (signal as AbortSignal).addEventListener !== 'function' ||
    typeof (signal as AbortSignal).removeEventListener !== 'function'
  ) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: signal=${shown(signal)} must be an AbortSignal (or undefined)`);
  }
}

/** The `ref` of an asynchronous wait (`verb` names it): a boolean, true by default. */
export function checkRef(ref: unknown, verb: string): void {
  checkBoolean('ref', ref, verb, true); // the callers' parameter defaults to true
}

/**
 * Words over a SharedArrayBuffer wait with Atomics; others with the native futex. Asked of V8, not with
 * `instanceof`: a SharedArrayBuffer made in another realm (a vm context) is not an instance of this one's.
 */
export const isShared = (i32: Int32Array): boolean => types.isSharedArrayBuffer(i32.buffer);
