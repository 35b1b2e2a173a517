/**
 * Dead-peer checks of the parked Promise waits, all on one timer per thread.
 * A parked async wait sleeps until it is woken or its deadline passes, never
 * in naps: an idle wait costs nothing. Instead each one registers here while
 * it is parked, with the period it wants its peer looked at (a quarter of its
 * peerTimeoutMs); one unref'd interval, at the shortest period registered,
 * calls every registered check in turn, and stops when none is left. The
 * timer never keeps a process alive: the parked waits do (their native or
 * Atomics wait is ref'd). Module state is per thread.
 */
import { onePass } from './liveness.js';

export interface Watched {
  /** How often (ms) this wait wants check() called. */
  readonly periodMs: number;
  /** Looks at the peer and ends the wait if it is gone; must not throw. */
  check(): void;
}

const watched = new Set<Watched>();
let timer: ReturnType<typeof setInterval> | undefined;
/** Period of `timer` (ms); Infinity while it is stopped. */
let periodMs = Infinity;

/** Registers a parked wait; the timer runs at most at its period from now on. */
export function watch(w: Watched): void {
  watched.add(w);
  if (w.periodMs < periodMs) restart(w.periodMs);
}

/** Withdraws a wait (it ended); the timer stops at its next tick if none is left. */
export function unwatch(w: Watched): void {
  watched.delete(w);
}

/** How many waits are registered and whether the timer runs, with its period (for tests and monitoring). */
export function watchdogState(): { watched: number; running: boolean; periodMs: number } {
  return { watched: watched.size, running: timer !== undefined, periodMs };
}

function restart(ms: number): void {
  if (timer !== undefined) clearInterval(timer);
  periodMs = ms;
  timer = setInterval(tick, ms);
  timer.unref();
}

function stop(): void {
  if (timer !== undefined) clearInterval(timer);
  timer = undefined;
  periodMs = Infinity;
}

function tick(): void {
  // Every check of this pass looks at /proc once per peer process.
  onePass(() => {
    for (const w of watched) w.check();
  });
  // A wait ended by its check withdraws itself later (its promise settles
  // in a microtask); the next tick no longer sees it.
  let shortest = Infinity;
  for (const w of watched) shortest = Math.min(shortest, w.periodMs);
  if (shortest === Infinity) stop();
  else if (shortest !== periodMs) restart(shortest);
}
