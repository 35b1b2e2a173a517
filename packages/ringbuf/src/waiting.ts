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
 *
 * How long a side tries before it parks is pacing.ts's business; what this
 * thread holds corked is held.ts's; the dead-peer checks of parked Promise
 * waits are watchdog.ts's.
 */
import { abortError, ErrorCodes, nativeFutex, ShmringError } from '@shmring/core';
import { wait, waitAsync, wake, type WaitResult } from '@shmring/futex';
import { publishHeld } from './held.js';
import { pollUntil, spin, SPIN_MICROS_SYNC, TRY_MICROS_ASYNC, type PollPacer, type SpinPacer } from './pacing.js';
import { unwatch, watch, type Watched } from './watchdog.js';

export interface WaitOptions {
  /** Give up after this many milliseconds with ERR_SHMRING_TIMEOUT. Default: no limit. */
  timeoutMs?: number;
  /**
   * Abort the wait (AbortError). A Promise verb sees it whenever it fires. A
   * blocking (Sync) verb sees only a signal that is already aborted when it
   * would start to wait: its thread is blocked, so nothing on it can abort
   * the signal meanwhile, and a signal cannot be handed to another thread.
   * To stop a blocked Sync wait from outside, close() the queue (from the
   * other side, or another thread or process) or give it a timeoutMs.
   * A call that finds its message (or room) at once does not look at it.
   */
  signal?: AbortSignal;
  /**
   * How soon a wait notices that the process on the other side died
   * (ERR_SHMRING_PEER_DEAD), in milliseconds. Default 1000; Infinity never
   * checks (and a parked MpmcQueue side then never recovers the slots of dead
   * peers). Parked Promise waits are checked by one timer per thread, every
   * quarter of the shortest peerTimeoutMs among them; Sync waits nap for a
   * quarter of it and check between naps.
   */
  peerTimeoutMs?: number;
  /**
   * Promise verbs only: microseconds during which a wait that found nothing
   * retries between event-loop turns (other callbacks run meanwhile) before
   * it parks, counted from the start of the wait. Default: the thread's
   * default (setDefaultPoll; 50 µs) when this side's previous call got a
   * message, otherwise 0. 0 parks at once.
   */
  poll?: number;
  /**
   * Microseconds of retrying on the spot (holding the thread) before
   * parking, or before polling for a Promise verb. Default 20 for the Sync
   * verbs, paced (a wait skips its spin when the previous one took long; see
   * SpinPacer); 2 for the Promise verbs. 0 goes on at once.
   */
  spin?: number;
}

/** Default bound on noticing a dead peer. */
export const DEFAULT_PEER_TIMEOUT_MS = 1000;

/** Longest interval between two peer checks, whatever peerTimeoutMs says. */
const MAX_CHECK_MS = 1000;
/** Shortest interval between two peer checks. */
const MIN_CHECK_MS = 1;

/**
 * Counters of the waiting machinery of this thread (for tests and
 * monitoring): `asyncParks`, Promise waits that parked (announced
 * themselves and waited on the futex); `asyncWaits`, asynchronous futex
 * waits started (a parked wait starts one, and one more after each spurious
 * wake-up); `polls`, Promise waits that polled; `syncNaps`, futex waits
 * of the Sync verbs (one per nap: a parked Sync wait naps at least once).
 */
export const waitCounters = { asyncParks: 0, asyncWaits: 0, polls: 0, syncNaps: 0 };

/**
 * How often (ms) a parked wait looks at its peer: a quarter of the peer
 * timeout, so a death is noticed within it; Infinity for peerTimeoutMs Infinity.
 */
export function checkPeriodOf(options: { peerTimeoutMs?: number } | undefined): number {
  const peer = options?.peerTimeoutMs ?? DEFAULT_PEER_TIMEOUT_MS;
  if (peer === Infinity) return Infinity;
  if (typeof peer !== 'number' || Number.isNaN(peer) || peer < 0) {
    throw new ShmringError(ErrorCodes.INVALID_ARGUMENT, `peerTimeoutMs=${String(peer)} must be a number of ms >= 0 (or Infinity)`);
  }
  return Math.max(MIN_CHECK_MS, Math.min(MAX_CHECK_MS, peer / 4));
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

/**
 * What a native sleeper (a thread in futex_waitv: selectSync) adds to
 * WAITERS instead of 1 when the ring is a SharedArrayBuffer: there wake()
 * is Atomics.notify, which never reaches a native sleeper, so a publisher
 * that sees this many waiters or more also makes a native wake. A mapped
 * region needs no such mark: its wake() is the native one. The count of the
 * other sleepers stays below it (fewer than 65,536 sleepers on one word).
 */
export const NATIVE_WAITER = 0x10000;

/**
 * Wakes up to `count` sleepers of `block`'s SIGNAL, given the WAITERS the
 * caller loaded: on a SharedArrayBuffer, V8's sleepers (the low 16 bits)
 * with Atomics.notify and native ones (the high bits) with a native wake.
 */
function wakeSleepers(ctl: Int32Array, block: WaitBlock, waiters: number, count?: number): void {
  if (!(ctl.buffer instanceof SharedArrayBuffer)) {
    wake(ctl, block.signal, count);
    return;
  }
  if ((waiters & (NATIVE_WAITER - 1)) !== 0) wake(ctl, block.signal, count);
  if (waiters >= NATIVE_WAITER) {
    // The kernel's sleepers of the word (futex_waitv); the caller bumped SIGNAL before.
    nativeFutex.wake(ctl.buffer as unknown as ArrayBuffer, ctl.byteOffset + block.signal * 4, count ?? 0x7fffffff);
  }
}

/**
 * This thread woke a parked side (unpark found an announcement) since its
 * last Promise wait began. Such a wait does not poll by default: Linux tends
 * to run the woken thread on its waker's CPU, where polling would hold it
 * off (PollPacer).
 */
let wokeSinceWait = false;

/** Whether this thread woke a parked side since the last call (a Promise wait calls it as it begins). */
function takeWokeSinceWait(): boolean {
  const woke = wokeSinceWait;
  wokeSinceWait = false;
  return woke;
}

/** Wakes the sleepers of `block`, if any. Publishers call it after every publication. */
export function unpark(ctl: Int32Array, block: WaitBlock, count: number): void {
  // Observes park()'s announcement; pairs with the sleeper's add(WAITERS) + re-check.
  const waiters = Atomics.load(ctl, block.waiters);
  if (waiters !== 0) {
    // Changes the word the sleepers wait on, so one that has not yet entered futex_wait will not sleep.
    Atomics.add(ctl, block.signal, 1);
    wakeSleepers(ctl, block, waiters, count);
    wokeSinceWait = true;
  }
}

/** Bumps the signal and wakes everyone, unconditionally (close). */
export function unparkAll(ctl: Int32Array, block: WaitBlock): void {
  // Makes every sleeper's futex word differ from what it saw, then wakes them all.
  Atomics.add(ctl, block.signal, 1);
  wakeSleepers(ctl, block, NATIVE_WAITER | 1); // both kinds, whoever announced
}

/** performance.now() at which a wait that starts at `now` times out (Infinity without timeoutMs). */
export function deadlineOf(options: { timeoutMs?: number } | undefined, now: number): number {
  const t = options?.timeoutMs;
  if (t === undefined || t === Infinity) return Infinity;
  if (typeof t !== 'number' || Number.isNaN(t) || t < 0) {
    throw new ShmringError(ErrorCodes.INVALID_ARGUMENT, `timeoutMs=${String(t)} must be a number >= 0`);
  }
  return now + t;
}

export function timedOut(what: string, options: { timeoutMs?: number } | undefined): ShmringError {
  return new ShmringError(ErrorCodes.TIMEOUT, `${what} timed out after timeoutMs=${options?.timeoutMs}`);
}

/** One nap the protocol asks its driver for: futex-wait on SIGNAL while it still reads `seen`. */
interface Nap {
  seen: number;
  ms: number;
}

/** What a driver answers a nap with: the futex wait's result, or that the peer is gone. */
type NapResult = WaitResult | typeof PEER_GONE;
const PEER_GONE = 'peer-gone';

/**
 * The protocol itself, once for both drivers: yields each nap to take
 * (at most `napMs` long) and receives its result. Calls `attempt` until it
 * returns something other than undefined; throws on timeout, on abort, and
 * when the driver answers a nap with PEER_GONE and one last attempt (a dead
 * peer publishes nothing more, so it takes what the peer published before it
 * died) finds nothing. A driver that fails a nap throws into the generator,
 * so the announcement is always withdrawn.
 */
function* parkSteps<T>(
  ctl: Int32Array, block: WaitBlock, attempt: () => T | undefined, options: WaitOptions | undefined, what: string,
  deadline: number, napMs: number,
): Generator<Nap, T, NapResult> {
  const signal = options?.signal;
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
        if ((yield { seen, ms: Math.min(left, napMs) }) === PEER_GONE) {
          result = attempt();
          if (result === undefined) throw peerDead(what);
        }
      }
    } finally {
      // Withdraw the announcement.
      Atomics.sub(ctl, block.waiters, 1);
    }
    if (result !== undefined) return result;
  }
}

/**
 * Parks the thread (futex / Atomics.wait) until `attempt` succeeds. For
 * workers and dedicated processes. Spins first (paced by `pacer`, or as
 * long as options.spin says), then naps a quarter of peerTimeoutMs at a
 * time, asking `peerAlive()` after each nap that timed out.
 */
export function parkSync<T>(
  ctl: Int32Array, block: WaitBlock, attempt: () => T | undefined, options: WaitOptions | undefined, what: string,
  peerAlive: () => boolean, pacer: SpinPacer,
): T {
  const signal = options?.signal;
  if (signal?.aborted) throw abortError(signal); // the only abort a blocked thread can see (see WaitOptions.signal)
  publishHeld();
  const started = performance.now();
  const deadline = deadlineOf(options, started);
  const spinMicros = options?.spin ?? pacer.spinMicros(SPIN_MICROS_SYNC);
  let result = spinMicros > 0 ? spin(attempt, started + spinMicros / 1000) : undefined;
  if (result === undefined) {
    const checkMs = checkPeriodOf(options);
    const steps = parkSteps(ctl, block, attempt, options, what, deadline, checkMs);
    let step = steps.next();
    while (!step.done) {
      let napped: NapResult;
      try {
        waitCounters.syncNaps++;
        napped = wait(ctl, block.signal, step.value.seen, step.value.ms);
        if (napped === 'timed-out' && checkMs !== Infinity && !peerAlive()) napped = PEER_GONE;
      } catch (err) {
        step = steps.throw(err); // runs the generator's finally, rethrows
        continue;
      }
      step = steps.next(napped);
    }
    result = step.value;
  }
  pacer.lastWaitMs = performance.now() - started;
  return result;
}

/**
 * Ends a pending Promise wait from outside, as an aborted signal would,
 * without an AbortSignal per wait (messages().return() holds one for the
 * whole iteration). The wait then rejects with an AbortError.
 */
export class WaitStop {
  stopped = false;
  /** Set by the wait in progress while it is parked: ends it. */
  onStop: (() => void) | undefined = undefined;

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.onStop?.();
  }
}

/**
 * parkSync for the event loop, never blocking it: tries on the spot for
 * TRY_MICROS_ASYNC (or options.spin), polls between event-loop turns for
 * the window `pacer` gives (pacing.ts), then parks on the asynchronous futex
 * wait until woken or its deadline passes. While parked, the thread's
 * watchdog looks at the peer every quarter of peerTimeoutMs and, if it is
 * gone, cancels the futex wait. `pacer` learns whether the wait got its
 * message (the side stays hot). `stop` ends the wait from outside.
 */
export async function parkAsync<T>(
  ctl: Int32Array, block: WaitBlock, attempt: () => T | undefined, options: WaitOptions | undefined, what: string,
  peerAlive: () => boolean, pacer: PollPacer, stop?: WaitStop,
): Promise<T> {
  const pollMicros = pacer.pollMicros(options?.poll, takeWokeSinceWait());
  const signal = options?.signal;
  if (signal?.aborted) throw abortError(signal);
  if (stop?.stopped) throw abortError();
  pacer.hot = false; // until this wait gets its message
  publishHeld();
  const started = performance.now();
  const deadline = deadlineOf(options, started);
  const spinMicros = options?.spin ?? TRY_MICROS_ASYNC;
  let result = spinMicros > 0 ? spin(attempt, started + spinMicros / 1000) : undefined;
  if (result === undefined && pollMicros > 0) {
    waitCounters.polls++;
    result = await pollUntil(attempt, Math.min(deadline, started + pollMicros / 1000), signal, stop);
  }
  result ??= await parkWatched(ctl, block, attempt, options, what, peerAlive, deadline, stop);
  pacer.hot = true;
  pacer.lastWaitMs = performance.now() - started;
  return result;
}

/** An asynchronous futex wait in progress, and how to end it early (it then resolves 'ok'). */
interface PendingWait {
  promise: Promise<WaitResult>;
  cancel(): void;
}

const NATIVE_RESULTS: readonly WaitResult[] = ['ok', 'not-equal', 'timed-out'];

/**
 * Starts the asynchronous futex wait of a nap. A mapped region's word waits
 * on the native futex, which the backend can cancel; a SharedArrayBuffer's
 * on Atomics.waitAsync (through @shmring/futex), which a notify of the word
 * ends (the other waiters of this process on that word wake spuriously and
 * re-check, as every waiter may).
 */
function startWait(ctl: Int32Array, index: number, expected: number, ms: number): PendingWait {
  if (ctl.buffer instanceof SharedArrayBuffer) {
    // Sleeps while SIGNAL still holds `expected`; pairs with unpark()'s add + notify.
    const promise = waitAsync(ctl, index, expected, ms);
    // cancel: publishes nothing, only ends this process's waits on SIGNAL ('ok'; the others re-check).
    return { promise, cancel: () => Atomics.notify(ctl, index) };
  }
  const pending = nativeFutex.waitAsync(ctl.buffer as ArrayBuffer, ctl.byteOffset + index * 4, expected, ms);
  return { promise: pending.promise.then((code) => NATIVE_RESULTS[code]!), cancel: () => pending.cancel() };
}

/** Why a parked Promise wait was ended from outside. */
type Ending = 'peer-gone' | 'check-failed' | 'aborted' | 'stopped';

/** The parked part of parkAsync: naps until the deadline, under the watchdog. */
async function parkWatched<T>(
  ctl: Int32Array, block: WaitBlock, attempt: () => T | undefined, options: WaitOptions | undefined, what: string,
  peerAlive: () => boolean, deadline: number, stop: WaitStop | undefined,
): Promise<T> {
  const steps = parkSteps(ctl, block, attempt, options, what, deadline, Infinity);
  let step = steps.next();
  if (step.done) return step.value; // the re-check after announcing succeeded: no futex wait
  waitCounters.asyncParks++;
  const signal = options?.signal;
  let ending: Ending | undefined;
  let failure: unknown;
  let pending: PendingWait | undefined;
  const end = (why: Ending): void => {
    if (ending !== undefined) return;
    ending = why;
    pending?.cancel();
  };
  const onAbort = (): void => end('aborted');
  signal?.addEventListener('abort', onAbort, { once: true });
  if (stop !== undefined) stop.onStop = () => end('stopped');
  const periodMs = checkPeriodOf(options);
  const watched: Watched | undefined = periodMs === Infinity ? undefined : {
    periodMs,
    check(): void {
      try {
        if (!peerAlive()) end('peer-gone');
      } catch (err) {
        failure = err;
        end('check-failed');
      }
    },
  };
  if (watched !== undefined) watch(watched);
  try {
    while (!step.done) {
      let napped: NapResult = 'ok';
      if (ending === undefined) {
        waitCounters.asyncWaits++;
        pending = startWait(ctl, block.signal, step.value.seen, step.value.ms);
        try {
          napped = await pending.promise;
        } catch (err) {
          step = steps.throw(err); // runs the generator's finally, rethrows
          continue;
        } finally {
          pending = undefined;
        }
      }
      switch (ending) {
        case undefined: break;
        case 'peer-gone': napped = PEER_GONE; break; // one last attempt, then ERR_SHMRING_PEER_DEAD
        case 'check-failed': step = steps.throw(failure); continue;
        case 'aborted': step = steps.throw(abortError(signal)); continue;
        case 'stopped': step = steps.throw(abortError()); continue;
      }
      step = steps.next(napped);
    }
    return step.value;
  } finally {
    if (watched !== undefined) unwatch(watched);
    signal?.removeEventListener('abort', onAbort);
    if (stop !== undefined) stop.onStop = undefined;
  }
}
