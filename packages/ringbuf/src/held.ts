/**
 * Publications this thread holds back: a corked SpscRing with unpublished
 * records registers its flush here. Any wait of this thread runs them first
 * (waiting.ts calls publishHeld): a thread about to wait is idle, and what it
 * holds may be what the other side needs before it can answer (a request on
 * one ring, corked, while this thread waits for the reply on another would
 * never be seen). Module state is per thread: each worker has its own copy
 * of this module.
 */

const held = new Set<() => void>();

/** Registers `flush` to run before this thread's next wait (a ring now holds unpublished records). */
export function holdUntilWait(flush: () => void): void {
  held.add(flush);
}

/** Withdraws `flush` (its ring published what it held). */
export function releaseHold(flush: () => void): void {
  held.delete(flush);
}

/** Publishes everything this thread holds back. Each flush withdraws itself. */
export function publishHeld(): void {
  if (held.size === 0) return;
  for (const flush of held) flush();
  held.clear();
}
