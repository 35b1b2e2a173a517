/**
 * Timers for user-given delays (timeoutMs and the like). setTimeout takes
 * at most 2^31 − 1 ms, about 24.8 days; given more (Infinity included),
 * Node warns and fires after 1 ms. startTimer waits longer delays in steps
 * and fires once, at the end; Infinity sets no timer at all.
 */

/** The longest delay setTimeout (and setInterval) honours. */
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

/** Stops a timer startTimer made. */
export function clearTimer(timer: Timer): void {
  if (timer instanceof LongTimeout) timer.clear();
  else clearTimeout(timer);
}
