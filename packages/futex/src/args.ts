/**
 * Argument checks and small facts shared by the futex entry points
 * (index.ts: one word; any.ts: several words).
 */
import { checkInteger, ErrorCodes, ShmringTypeError } from '@shmring/core';

/** The longest period a Node timer accepts. */
export const MAX_TIMER_MS = 0x7fffffff;

/** A futex word: an Int32Array and an index inside it (`what` prefixes the message). */
export function checkWord(i32: Int32Array, index: number, what?: string): void {
  if (!(i32 instanceof Int32Array)) {
    const prefix = what === undefined ? '' : `${what}: `;
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${prefix}the futex word must be addressed through an Int32Array`);
  }
  checkInteger('index', index, 0, i32.length - 1);
}

/** A timeout in ms: undefined or Infinity for none, else a number clamped at 0. */
export function timeoutOf(timeoutMs: number | undefined): number {
  if (timeoutMs === undefined || timeoutMs === Infinity) return Infinity;
  if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `timeoutMs must be a number, got ${String(timeoutMs)}`);
  }
  return Math.max(0, timeoutMs);
}

/** The `ref` of an asynchronous wait (`verb` names it): a boolean, true by default. */
export function checkRef(ref: unknown, verb: string): void {
  if (typeof ref !== 'boolean') {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: ref must be a boolean, got ${typeof ref}`);
  }
}

/** Words over a SharedArrayBuffer wait with Atomics; others with the native futex. */
export const isShared = (i32: Int32Array): boolean => i32.buffer instanceof SharedArrayBuffer;
