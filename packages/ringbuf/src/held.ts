/**
 * Publications this thread holds back: a corked SpscRing with unpublished
 * records registers its flush here. Any wait of this thread runs them first
 * (waiting.ts calls publishHeld): a thread about to wait is idle, and what it
 * holds may be what the other side needs before it can answer (a request on
 * one ring, corked, while this thread waits for the reply on another would
 * never be seen). Module state is per thread: each worker has its own copy
 * of this module.
 */

/**
 * The flushes registered, in order. An array, not a Set: a corked channel
 * registers and withdraws once per event-loop turn, and a Set that grows
 * and shrinks by one reallocates its table each time.
 */
let held: Array<() => void> = [];

/** Registers `flush` to run before this thread's next wait (a ring now holds unpublished records). */
export function holdUntilWait(flush: () => void): void {
  if (!held.includes(flush)) held.push(flush);
}

/** Withdraws `flush` (its ring published what it held). */
export function releaseHold(flush: () => void): void {
  const at = held.indexOf(flush);
  if (at < 0) return;
  if (at === held.length - 1) held.pop();
  else held.splice(at, 1);
}

/** Publishes everything this thread holds back. Each flush withdraws itself. */
export function publishHeld(): void {
  if (held.length === 0) return;
  const flushes = held;
  held = [];
  let i = 0;
  try {
    for (; i < flushes.length; i++) flushes[i]!();
  } finally {
    // A flush that threw: the ones after it stay held, as they were.
    for (let rest = i + 1; rest < flushes.length; rest++) holdUntilWait(flushes[rest]!);
  }
}
