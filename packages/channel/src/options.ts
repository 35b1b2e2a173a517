import { ErrorCodes, ShmringRangeError, ShmringTypeError } from '@shmring/core';

/** Bytes of each ring's data area unless the options say otherwise. */
export const DEFAULT_CAPACITY = 1 << 20;
const MIN_CAPACITY = 64;
const MAX_CAPACITY = 1 << 30;

/** Checks a ring capacity option: undefined (the default) or a power of two in [64, 2^30]. */
export function checkCapacity(capacity: unknown, verb: string): number {
  if (capacity === undefined) return DEFAULT_CAPACITY;
  if (typeof capacity !== 'number' || !Number.isInteger(capacity)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: capacity must be an integer, got ${String(capacity)}`);
  }
  if (capacity < MIN_CAPACITY || capacity > MAX_CAPACITY || (capacity & (capacity - 1)) !== 0) {
    throw new ShmringRangeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: capacity=${capacity} must be a power of two in [${MIN_CAPACITY}, ${MAX_CAPACITY}] (bytes of each ring)`,
    );
  }
  return capacity;
}

/** Longest poll window a channel accepts (µs): past a second, park. */
const MAX_POLL = 1_000_000;

/**
 * Checks a poll option: undefined (the rings' adaptive default) or the
 * microseconds a channel keeps looking for the other side's next record
 * between event-loop turns before it parks.
 */
export function checkPoll(poll: unknown, verb: string): number | undefined {
  if (poll === undefined) return undefined;
  if (typeof poll !== 'number' || !Number.isFinite(poll) || poll < 0 || poll > MAX_POLL) {
    throw new ShmringRangeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: poll must be a number of microseconds in [0, ${MAX_POLL}], got ${String(poll)}`,
    );
  }
  return poll;
}

/** Checks an AbortSignal option. */
export function checkSignal(signal: unknown, verb: string): AbortSignal | undefined {
  if (signal === undefined) return undefined;
  if (!(signal instanceof AbortSignal)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: signal must be an AbortSignal, got ${typeof signal}`);
  }
  return signal;
}

/** Checks a timeout option: undefined or a number of milliseconds >= 0 (Infinity: no timeout). */
export function checkTimeout(timeoutMs: unknown, verb: string, name = 'timeoutMs'): number | undefined {
  if (timeoutMs === undefined) return undefined;
  if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs) || timeoutMs < 0) {
    throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: ${name} must be a number >= 0, got ${String(timeoutMs)}`);
  }
  return timeoutMs;
}

/**
 * The longest delay setTimeout honours: 2^31 − 1 ms, about 24.8 days.
 * Given more (Infinity included), Node warns and fires after 1 ms.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A timer for a delay longer than setTimeout takes: it waits in steps of at most `step` ms. */
export class LongTimeout {
  #timer: NodeJS.Timeout | undefined;
  #ref = true;

  constructor(fire: () => void, ms: number, step = MAX_TIMER_MS) {
    this.#arm(fire, ms, step);
  }

  #arm(fire: () => void, left: number, step: number): void {
    const wait = Math.min(left, step);
    this.#timer = setTimeout(() => {
      if (left > wait) this.#arm(fire, left - wait, step);
      else fire();
    }, wait);
    if (!this.#ref) this.#timer.unref();
  }

  /** Lets the process exit while only this timer is pending. */
  unref(): this {
    this.#ref = false;
    this.#timer?.unref();
    return this;
  }

  clear(): void {
    clearTimeout(this.#timer);
  }
}

export type Timer = NodeJS.Timeout | LongTimeout;

/**
 * Calls `fire` once `ms` milliseconds (a number >= 0) have passed; with
 * Infinity, never: no timer at all (undefined). A plain setTimeout up to
 * MAX_TIMER_MS, so the usual case costs nothing more than one.
 */
export function startTimer(fire: () => void, ms: number): Timer | undefined {
  if (ms === Infinity) return undefined;
  return ms <= MAX_TIMER_MS ? setTimeout(fire, ms) : new LongTimeout(fire, ms);
}

export function clearTimer(timer: Timer): void {
  if (timer instanceof LongTimeout) timer.clear();
  else clearTimeout(timer);
}
