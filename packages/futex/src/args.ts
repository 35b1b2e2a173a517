/**
 * Argument checks and small facts shared by the futex entry points
 * (index.ts: one word; any.ts: several words).
 */
import { checkInteger, ErrorCodes, ShmringRangeError, ShmringTypeError } from '@shmring/core';

/** A futex word: an Int32Array and an index inside it (`what` prefixes the message). */
export function checkWord(i32: Int32Array, index: number, what?: string): void {
  if (!(i32 instanceof Int32Array)) {
    const prefix = what === undefined ? '' : `${what}: `;
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${prefix}the futex word must be addressed through an Int32Array`);
  }
  checkInteger('index', index, 0, i32.length - 1);
}

/** How a wrong value is shown in a message: strings quoted, the rest as String() shows them. */
function shown(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
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
  if (typeof ref !== 'boolean') {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: ref must be a boolean, got ${typeof ref}`);
  }
}

/** Words over a SharedArrayBuffer wait with Atomics; others with the native futex. */
export const isShared = (i32: Int32Array): boolean => i32.buffer instanceof SharedArrayBuffer;
