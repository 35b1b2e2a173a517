/**
 * Dead-peer checks of the parked Promise waits, all on one timer per thread.
 * A parked async wait sleeps until it is woken or its deadline passes, never
 * in naps: an idle wait costs nothing. Instead each one registers here while
 * it is parked, with the period it wants its peer looked at (a quarter of its
 * peerTimeoutMs); one unref'd interval, at the shortest period registered,
 * calls every registered check in turn, and stops when none is left. The
 * timer never keeps a process alive: the parked waits do (their native or
 * Atomics wait is ref'd), unless they were started with ref false. Module
 * state is per thread.
 *
 * The registry is an array, each wait holding its own slot (`watchSlot`):
 * registering and withdrawing, once per parked wait, allocate nothing (a
 * Set's add and delete did, a hash table of its own each time the set
 * went from empty to one wait and back: 120 bytes per message of an echo
 * that parks for each one).
 */
import { onePass } from './liveness.js';

export interface Watched {
  /** How often (ms) this wait wants check() called. */
  readonly periodMs: number;
  /** Looks at the peer and ends the wait if it is gone (and wakes a read whose record is there unannounced); must not throw. */
  check(): void;
  /** Where this wait is in the registry while registered, -1 while not (the registry's own field). */
  watchSlot: number;
}

const watched: Watched[] = [];
let timer: ReturnType<typeof setInterval> | undefined;
/** Period of `timer` (ms); Infinity while it is stopped. */
let periodMs = Infinity;

/** Registers a parked wait; the timer runs at most at its period from now on. */
export function watch(w: Watched): void {
  if (w.watchSlot !== -1) return;
  w.watchSlot = watched.length;
  watched.push(w);
  if (w.periodMs < periodMs) restart(w.periodMs);
}

/** Withdraws a wait (it ended); the timer stops at its next tick if none is left. */
export function unwatch(w: Watched): void {
  const slot = w.watchSlot;
  if (slot === -1) return;
  w.watchSlot = -1;
  // The last wait takes the freed slot.
  const last = watched.pop()!;
  if (last !== w) {
    watched[slot] = last;
    last.watchSlot = slot;
  }
}

/** How many waits are registered and whether the timer runs, with its period (for tests and monitoring). */
export function watchdogState(): { watched: number; running: boolean; periodMs: number } {
  return { watched: watched.length, running: timer !== undefined, periodMs };
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
  // A copy: a check that ends its wait could withdraw it (and move another) while the loop runs.
  const now = watched.slice();
  // Every check of this pass looks at /proc once per peer process.
  onePass(() => {
    for (const w of now) w.check();
  });
  // A wait ended by its check withdraws itself later (its promise settles
  // in a microtask); the next tick no longer sees it.
  let shortest = Infinity;
  for (const w of watched) shortest = Math.min(shortest, w.periodMs);
  if (shortest === Infinity) stop();
  else if (shortest !== periodMs) restart(shortest);
}
