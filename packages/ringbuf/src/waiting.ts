/**
 * Parking: how a side that cannot proceed (a reader on an empty ring, a
 * writer on a full one) sleeps without losing a wake-up, and how the other
 * side wakes it only when someone sleeps. The protocol is normative in
 * docs/LAYOUT.md ("Waiting"); in short, for one direction with words
 * WAITERS and SIGNAL in one wait block:
 *
 *   sleeper                                   publisher
 *   s = load(SIGNAL)                          publish (store a position / a sequence)
 *   add(WAITERS, 1)          -- announce      if load(WAITERS) != 0:
 *   if attempt() succeeds: done                  add(SIGNAL, 1)
 *   futex_wait(SIGNAL, s)                        futex_wake(SIGNAL)
 *   sub(WAITERS, 1)
 *
 * All these accesses are sequentially consistent, so either the sleeper's
 * re-check sees the publication, or the publisher's load sees the
 * announcement; in that case SIGNAL changes, and futex_wait(SIGNAL, s)
 * either refuses to sleep ('not-equal') or is woken. A wake-up is never lost;
 * a spurious one costs a re-check.
 */
import { abortError, ErrorCodes, ShmringError } from '@shmring/core';
import { wait, waitAsync, wake, type WaitResult } from '@shmring/futex';

export interface WaitOptions {
  /** Give up after this many milliseconds with ERR_SHMRING_TIMEOUT. Default: no limit. */
  timeoutMs?: number;
  /** Abort the wait (AbortError). A blocking (Sync) wait sees it only between naps. */
  signal?: AbortSignal;
  /**
   * How soon a wait notices that the process on the other side died
   * (ERR_SHMRING_PEER_DEAD), in milliseconds. Default 1000; Infinity never checks.
   */
  peerTimeoutMs?: number;
  /**
   * Microseconds of retrying before parking. Default 20 for the Sync verbs,
   * 10 for the Promise verbs (which hold the event loop meanwhile). More
   * spinning lowers latency and burns more CPU; 0 parks at once. Without
   * this option, a blocking wait skips the spin when its previous wait took
   * long (see SpinPacer).
   */
  spin?: number;
}

/** Default bound on noticing a dead peer. */
export const DEFAULT_PEER_TIMEOUT_MS = 1000;

/**
 * How long (µs) a blocking call keeps retrying before it parks. Waking a
 * parked thread costs a futex wake and, on a virtual machine whose idle vCPU
 * halted, some 25 µs more; a peer that answers within the spin never pays it.
 * But the kernel often runs a woken thread on its waker's CPU, where a
 * spinning waker delays it by the whole spin (measured on 2 vCPUs: a parked
 * round trip of 2 × spin + 25 µs). 20 µs keeps back-to-back round trips
 * near 1 µs and costs a woken peer at most that much.
 */
export const SPIN_MICROS_SYNC = 20;
/**
 * How long (µs) an async call retries before it parks: the event loop is
 * waiting on us, so less; enough to catch the next message of a busy peer
 * without a trip through the native waiter thread.
 */
export const SPIN_MICROS_ASYNC = 10;
/**
 * Adaptive spinning for the blocking waits of one side of one queue (its
 * readers, or its writers, in this thread). A wait spins first only if the
 * previous one was over within SPIN_PACE times the spin budget: soon enough
 * that the peer was likely awake and spinning would have caught it.
 * Otherwise it parks at once. A spin that cannot succeed (the peer is
 * parked, and waking it takes 10 to 50 µs on a VM) holds a CPU the woken
 * peer may be queued on: Linux likes to run a woken thread on its waker's
 * CPU, where switching costs far less than waking a halted vCPU. Measured
 * on 2 vCPUs with 0.2 ms idle before each round trip (parked echo):
 * 81–97 µs with a fixed 20 µs spin, 43–51 µs paced; back to back, both
 * sides keep spinning (5–7 µs either way in the same test). A pace of 1
 * gave 41 µs idle but trapped back-to-back round trips in parking (75 µs):
 * parked waits last a wake-up, longer than the budget. Such a trap can
 * still happen where wake-ups take longer than 2.5 budgets, so one wait in
 * SPIN_PROBE spins all the same: two sides that both probe find that
 * spinning works and stay with it. The first wait spins. The async waits do not pace: their wake-up goes through a native
 * thread and the event loop, and back-to-back async round trips need the spin.
 */
export class SpinPacer {
  /** Duration of the last completed wait, in ms (0 until one completes). */
  lastWaitMs = 0;
  /** Source of the probes' coin flips (a test may fix it). */
  random: () => number = Math.random;

  /** µs to spin before parking, out of a budget of `budgetMicros`. */
  spinMicros(budgetMicros: number): number {
    if (this.lastWaitMs * 1000 <= SPIN_PACE * budgetMicros) return budgetMicros;
    // A probe: both sides of a round trip can be parked only because each
    // waits for the other to wake; spinning now and then lets them find out
    // that both could spin (each probe succeeds once both probe together).
    return this.random() < SPIN_PROBE ? budgetMicros : 0;
  }
}

/** A wait spins if the previous one took at most this many times the spin budget. */
const SPIN_PACE = 2.5;
/** Share of the waits after a long one that spin all the same (probes). */
const SPIN_PROBE = 1 / 8;

/**
 * Publications this thread holds back (a corked SpscRing with unpublished
 * records registers its flush here). Any wait of this thread runs them
 * first: a thread about to wait is idle, and what it holds may be what the
 * other side needs before it can answer (a request on one ring, corked,
 * while this thread waits for the reply on another would never be seen).
 * Module state is per thread: each worker has its own copy of this module.
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
function publishHeld(): void {
  for (const flush of held) flush();
  held.clear();
}

/** Attempts between two looks at the clock while spinning. */
const SPIN_CLOCK_EVERY = 64;
/** Longest single nap when the peer is not watched: a sleeper still wakes this often to look at its AbortSignal. */
const MAX_NAP_MS = 1000;

/** Longest nap: a quarter of the peer timeout, so a death is noticed within it. */
function napOf(options: WaitOptions | undefined): number {
  const peer = options?.peerTimeoutMs ?? DEFAULT_PEER_TIMEOUT_MS;
  return Math.max(1, Math.min(MAX_NAP_MS, peer / 4));
}

function peerDead(what: string): ShmringError {
  return new ShmringError(ErrorCodes.PEER_DEAD,
    `${what}: the process on the other side of the ring has died; nothing more will arrive (or be taken)`);
}

/** Word indices of one wait block (see layout.ts). */
export interface WaitBlock {
  readonly waiters: number;
  readonly signal: number;
}

/** Wakes the sleepers of `block`, if any. Publishers call it after every publication. */
export function unpark(ctl: Int32Array, block: WaitBlock, count: number): void {
  // Observes park()'s announcement; pairs with the sleeper's add(WAITERS) + re-check.
  if (Atomics.load(ctl, block.waiters) !== 0) {
    // Changes the word the sleepers wait on, so one that has not yet entered futex_wait will not sleep.
    Atomics.add(ctl, block.signal, 1);
    wake(ctl, block.signal, count);
  }
}

/** Bumps the signal and wakes everyone, unconditionally (close). */
export function unparkAll(ctl: Int32Array, block: WaitBlock): void {
  // Makes every sleeper's futex word differ from what it saw, then wakes them all.
  Atomics.add(ctl, block.signal, 1);
  wake(ctl, block.signal);
}

function deadlineOf(options: WaitOptions | undefined): number {
  const t = options?.timeoutMs;
  if (t === undefined || t === Infinity) return Infinity;
  if (typeof t !== 'number' || Number.isNaN(t) || t < 0) {
    throw new ShmringError(ErrorCodes.INVALID_ARGUMENT, `timeoutMs=${String(t)} must be a number >= 0`);
  }
  return performance.now() + t;
}

function timedOut(what: string, options: WaitOptions | undefined): ShmringError {
  return new ShmringError(ErrorCodes.TIMEOUT, `${what} timed out after timeoutMs=${options?.timeoutMs}`);
}

/** One nap the protocol asks its driver for: futex-wait on SIGNAL while it still reads `seen`. */
interface Nap {
  seen: number;
  ms: number;
}

/**
 * The protocol itself, once for both drivers: publishes what this thread
 * holds corked, then yields each nap to take and receives its result. Calls `attempt` until it returns something other
 * than undefined; throws on timeout, abort, or when a nap times out and
 * `peerAlive()` says the other side is gone. A driver that fails a nap
 * throws into the generator, so the announcement is always withdrawn.
 */
function* park<T>(
  ctl: Int32Array, block: WaitBlock, attempt: () => T | undefined, options: WaitOptions | undefined, what: string,
  peerAlive: () => boolean, defaultSpinMicros: number, pacer: SpinPacer | undefined,
): Generator<Nap, T, WaitResult> {
  if (held.size !== 0) publishHeld();
  const started = performance.now();
  const spinMicros = options?.spin ?? pacer?.spinMicros(defaultSpinMicros) ?? defaultSpinMicros;
  const result = yield* parkFrom(ctl, block, attempt, options, what, peerAlive, spinMicros, started);
  if (pacer !== undefined) pacer.lastWaitMs = performance.now() - started;
  return result;
}

/** The spin (of `spinMicros`, counted from `started`), then the naps of the protocol. */
function* parkFrom<T>(
  ctl: Int32Array, block: WaitBlock, attempt: () => T | undefined, options: WaitOptions | undefined, what: string,
  peerAlive: () => boolean, spinMicros: number, started: number,
): Generator<Nap, T, WaitResult> {
  const deadline = deadlineOf(options);
  const nap = napOf(options);
  const signal = options?.signal;
  if (spinMicros > 0) {
    const until = started + spinMicros / 1000;
    for (let i = 1; ; i++) {
      const result = attempt();
      if (result !== undefined) return result;
      if (i % SPIN_CLOCK_EVERY === 0 && performance.now() >= until) break;
    }
  }
  for (;;) {
    if (signal?.aborted) throw abortError(signal);
    // Snapshot of SIGNAL taken before announcing (see the protocol above).
    const seen = Atomics.load(ctl, block.signal);
    // Announce: from here on, every publisher bumps SIGNAL and wakes us.
    Atomics.add(ctl, block.waiters, 1);
    let result: T | undefined;
    try {
      result = attempt(); // the re-check after announcing
      if (result === undefined) {
        const left = deadline - performance.now();
        if (left <= 0) throw timedOut(what, options);
        if ((yield { seen, ms: Math.min(left, nap) }) === 'timed-out' && !peerAlive()) throw peerDead(what);
      }
    } finally {
      // Withdraw the announcement.
      Atomics.sub(ctl, block.waiters, 1);
    }
    if (result !== undefined) return result;
  }
}

/** Parks the thread (futex / Atomics.wait) until `attempt` succeeds. For workers and dedicated processes. */
export function parkSync<T>(
  ctl: Int32Array, block: WaitBlock, attempt: () => T | undefined, options: WaitOptions | undefined, what: string,
  peerAlive: () => boolean, pacer: SpinPacer,
): T {
  const steps = park(ctl, block, attempt, options, what, peerAlive, SPIN_MICROS_SYNC, pacer);
  let step = steps.next();
  while (!step.done) {
    let result: WaitResult;
    try {
      result = wait(ctl, block.signal, step.value.seen, step.value.ms);
    } catch (err) {
      step = steps.throw(err); // runs the generator's finally, rethrows
      continue;
    }
    step = steps.next(result);
  }
  return step.value;
}

/** parkSync for the event loop: parks on the asynchronous futex wait, never blocks. */
export async function parkAsync<T>(
  ctl: Int32Array, block: WaitBlock, attempt: () => T | undefined, options: WaitOptions | undefined, what: string,
  peerAlive: () => boolean,
): Promise<T> {
  const steps = park(ctl, block, attempt, options, what, peerAlive, SPIN_MICROS_ASYNC, undefined);
  let step = steps.next();
  while (!step.done) {
    let result: WaitResult;
    try {
      result = await waitAsync(ctl, block.signal, step.value.seen, step.value.ms, options?.signal);
    } catch (err) {
      step = steps.throw(err);
      continue;
    }
    step = steps.next(result);
  }
  return step.value;
}
