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
import {
  abortError,
  beforeUnmap,
  ErrorCodes,
  membarrier,
  nativeFutex,
  ShmringError,
  ShmringRangeError,
  ShmringTypeError,
  shown,
  unwatchAbort,
  watchAbort,
  type UnmapHook,
} from '@shmring/core';
import { wait, waitAsync, wake, type WaitResult } from '@shmring/futex';
import { publishHeld } from './held.js';
import { LIGHT_NAP_MS } from './mpsc-layout.js';
import { POLL_SLICE_MICROS, pollUntil, spin, SPIN_MICROS_SYNC, TRY_MICROS_ASYNC, type PollPacer, type SpinPacer } from './pacing.js';
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
   * How soon a wait notices that the process on the other side died (in a
   * SharedArrayBuffer ring: the thread, a worker that ended)
   * (ERR_SHMRING_PEER_DEAD), in milliseconds. Default 1000; Infinity never
   * checks (a parked MpmcQueue side then recovers the slots of dead peers
   * only through its tries' own occasional look, MpmcQueue's #pollLook). Parked Promise waits are checked by one timer per thread, every
   * quarter of the shortest peerTimeoutMs among them; Sync waits nap for a
   * quarter of it and check between naps.
   */
  peerTimeoutMs?: number;
  /**
   * Promise verbs only: microseconds during which a wait that found nothing
   * retries between event-loop turns (other callbacks run meanwhile) before
   * it parks, counted from the start of the wait. Default: the thread's
   * default (setDefaultPoll; 50 µs) when this side's previous call got a
   * message, otherwise 0; never when its messages come far apart (its last
   * wait lasted, or ended, more than 8 windows before), and now and then only
   * right after waking a parked peer following a longer wait (PollPacer). 0
   * parks at once.
   */
  poll?: number;
  /**
   * Microseconds of retrying on the spot (holding the thread) before
   * parking, or before polling for a Promise verb. Default 20 for the Sync
   * verbs, paced (a wait skips its spin when the previous one took long; see
   * SpinPacer). For the Promise verbs: 0 right after this thread woke a
   * parked peer (it answers no sooner than its wake-up), and on a side whose
   * messages come far apart (see poll), the first poll slice (10 µs, at
   * most the poll window) for a wait that polls, else 2.
   * 0 goes on at once. Never past timeoutMs: the spin (and the poll) end at
   * the wait's deadline, so timeoutMs 0 tries once and times out at once.
   */
  spin?: number;
  /**
   * Promise verbs only: false lets the process exit while the wait is
   * parked, as an unref'd timer does (a reader that must not hold the
   * program open, e.g. one that stays parked between a program's
   * requests). Default true: a pending wait keeps the event loop alive
   * (select() takes it too). A wait that polls keeps it alive for its poll
   * window before it parks. The koffi backend cannot honour false for a
   * mapped region: its waits hold a libuv pool thread (asyncWaitKind()
   * 'libuv-threadpool').
   */
  ref?: boolean;
}

/** Default bound on noticing a dead peer. */
export const DEFAULT_PEER_TIMEOUT_MS = 1000;

/** Checks a ring's own `peerTimeoutMs` option (what its non-waiting verbs use): undefined gives the default. */
export function checkPeerTimeout(value: unknown, verb: string): number {
  if (value === undefined) return DEFAULT_PEER_TIMEOUT_MS;
  if (typeof value !== 'number') {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: peerTimeoutMs=${shown(value)} must be a number of ms`);
  }
  if (!(value >= 0)) throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: peerTimeoutMs=${value} must be >= 0 (or Infinity)`);
  return value;
}

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
 * of the Sync verbs (one per nap: a parked Sync wait naps at least once);
 * `woken`, futex waits of either kind that ended woken ('ok', not timed out
 * and not 'not-equal'); `wakes`, unpark() calls that found a side
 * announced (one futex wake each, for however many sleepers, whether
 * asleep or not); `sleepersWoken`, the sleepers those wakes found asleep
 * (the kernel's or V8's count); `peerLocks`, role locks asked whether a
 * peer lives (one system call each: Queue.registeredAlive); `refused`,
 * async futex waits the kernel refused for the moment (EAGAIN, ENOMEM,
 * EBUSY), each replaced by a nap.
 */
export const waitCounters = {
  asyncParks: 0,
  asyncWaits: 0,
  polls: 0,
  syncNaps: 0,
  woken: 0,
  wakes: 0,
  sleepersWoken: 0,
  peerLocks: 0,
  refused: 0,
};

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

/** checkPeriodOf() of a wait without options. */
const DEFAULT_CHECK_MS = checkPeriodOf(undefined);

/**
 * Makes the ERR_SHMRING_PEER_DEAD of a wait of verb `what` whose other side
 * is gone. A queue passes its own (Queue.peerDeadError), which names its
 * ring and says whether its peers are processes or threads.
 */
export type PeerGone = (what: string) => ShmringError;

/** The PeerGone of a wait whose caller names no ring (its peer is never found dead in practice: LatestValue's). */
function peerDead(what: string): ShmringError {
  return new ShmringError(
    ErrorCodes.PEER_DEAD,
    `${what}: the other side of the ring is gone (its process died, or its thread ended); nothing more will arrive (or be taken)`,
  );
}

/** Word indices of one wait block (see layout.ts). */
export interface WaitBlock {
  readonly waiters: number;
  readonly signal: number;
  /**
   * Asked by a sleeper right after it announced itself in `waiters`,
   * before its re-check: whether a publisher of the ring leaves its
   * store-load fence to the sleepers (an MpscRing's light producers,
   * FLAG_LIGHT_COMMITS), so that this one must make every registered
   * thread fence (membarrier.heavy()) before it re-checks.
   */
  readonly asksHeavyFence?: (ctl: Int32Array) => boolean;
}

/**
 * After a sleeper's announcements, before its re-check: the heavy fence if
 * `asked` (a block's asksHeavyFence said so; one call serves every ring of
 * a select). Returns the longest the sleeper may then sleep, in ms:
 * Infinity (until woken), or LIGHT_NAP_MS where membarrier is refused, so
 * that a wake-up missed costs that at most.
 */
export function fenceIfAsked(asked: boolean): number {
  if (!asked || membarrier.heavy()) return Infinity;
  return LIGHT_NAP_MS;
}

/**
 * When a blocking wait looks at its peer after a sleep: once `periodMs` has
 * passed since its last look (sleeps cut to LIGHT_NAP_MS, or woken by
 * publications that were not its own, end more often than that), and at
 * its deadline (a peer found dead then is ERR_SHMRING_PEER_DEAD, not a
 * timeout).
 */
export class PeerChecks {
  #last: number;

  constructor(
    readonly periodMs: number,
    readonly deadline: number,
    now: number,
  ) {
    this.#last = now;
  }

  /** Whether to look now (after a sleep); if so, the period starts again. */
  due(): boolean {
    if (this.periodMs === Infinity) return false;
    const now = performance.now();
    // (half a ms of slack: a sleep of periodMs may end a hair early on the clock read here)
    if (now - this.#last < this.periodMs - 0.5 && now < this.deadline) return false;
    this.#last = now;
    return true;
  }
}

/** fenceIfAsked for a sleeper announced on `block` alone. */
export function afterAnnouncing(ctl: Int32Array, block: WaitBlock): number {
  return fenceIfAsked(block.asksHeavyFence?.(ctl) === true);
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
 * Returns how many were asleep and woken (the kernel's or V8's count).
 */
function wakeSleepers(ctl: Int32Array, block: WaitBlock, waiters: number, count?: number): number {
  if (!(ctl.buffer instanceof SharedArrayBuffer)) return wake(ctl, block.signal, count);
  let woken = 0;
  if ((waiters & (NATIVE_WAITER - 1)) !== 0) woken += wake(ctl, block.signal, count);
  if (waiters >= NATIVE_WAITER) {
    // The kernel's sleepers of the word (futex_waitv); the caller bumped SIGNAL before.
    woken += nativeFutex.wake(ctl.buffer as unknown as ArrayBuffer, ctl.byteOffset + block.signal * 4, count ?? 0x7fffffff);
  }
  return woken;
}

/**
 * This thread woke a parked side (unpark found an announcement, and its
 * wake found the side asleep) since its last Promise wait began. Such a
 * wait does not poll by default: Linux tends to run the woken thread on its
 * waker's CPU, where polling would hold it off (PollPacer). A wake that
 * found nobody asleep does not count: the side announced is awake (it has
 * not slept yet, or was woken and has not yet withdrawn its announcement,
 * as an event-loop wait does only once its callback runs), and answers as
 * a running peer does. (Counting those once kept a side whose peer was
 * rarely asleep from polling: 64 requests in flight, two processes, each
 * side woke a sleeper about once in 40 wakes.) On the koffi backend a wait
 * between two of its slices, or still queued for a pool thread, is not in
 * the kernel either: it is judged awake, though it sleeps again at once.
 */
let wokeSinceWait = false;

/** Wakes the sleepers of `block`, if any. Publishers call it after every publication. */
export function unpark(ctl: Int32Array, block: WaitBlock, count: number): void {
  if (wakeAnnounced(ctl, block, count) > 0) wokeSinceWait = true;
}

/** Wakes up to `count` sleepers of `block` if any is announced; returns how many were asleep (0 if none was announced). */
function wakeAnnounced(ctl: Int32Array, block: WaitBlock, count: number): number {
  // Observes park()'s announcement; pairs with the sleeper's add(WAITERS) + re-check.
  const waiters = Atomics.load(ctl, block.waiters);
  if (waiters === 0) return 0;
  // Changes the word the sleepers wait on, so one that has not yet entered futex_wait will not sleep.
  Atomics.add(ctl, block.signal, 1);
  waitCounters.wakes++;
  const woken = wakeSleepers(ctl, block, waiters, count);
  waitCounters.sleepersWoken += woken;
  return woken;
}

/**
 * Passes a wake-up on to one other sleeper of `block`, if any is announced.
 * For a wait that slept and takes nothing (select, waitReadable): the
 * publisher woke one sleeper, maybe this one in place of a reader that
 * would have taken the message (LAYOUT.md, "Waiting"). Called after this
 * wait withdrew its own announcement. Not a wake-up of the peer: the poll
 * pacing (wokeSinceWait) does not count it.
 */
export function passOn(ctl: Int32Array, block: WaitBlock): void {
  wakeAnnounced(ctl, block, 1); // the others' announcements: ours is withdrawn
}

/** Bumps the signal and wakes everyone, unconditionally (close). */
export function unparkAll(ctl: Int32Array, block: WaitBlock): void {
  // Makes every sleeper's futex word differ from what it saw, then wakes them all.
  Atomics.add(ctl, block.signal, 1);
  // Observes the announcements after the bump: a native (futex_waitv) sleeper announced by now is woken; one
  // announcing later re-checks (and finds the close) or sleeps on the bumped word (and returns at once). So a
  // SharedArrayBuffer ring with none asks nothing of the native backend, which may be missing there.
  const waiters = Atomics.load(ctl, block.waiters);
  wakeSleepers(ctl, block, waiters | 1); // | 1: Atomics.notify whoever announced (it costs nothing with no sleeper)
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

/**
 * The options of a call that waited in its object's line of calls before
 * its wait began (queue.ts, CallLine): `timeoutMs` is what was left of the
 * caller's, `callerTimeoutMs` the caller's own, which the timeout's message
 * gives.
 */
export interface QueuedOptions {
  readonly timeoutMs?: number;
  readonly callerTimeoutMs?: number;
}

/** ERR_SHMRING_TIMEOUT of a wait of verb `what`, giving the timeoutMs its caller passed. */
export function timedOut(what: string, options: QueuedOptions | undefined): ShmringError {
  const timeoutMs = options?.callerTimeoutMs ?? options?.timeoutMs;
  return new ShmringError(ErrorCodes.TIMEOUT, `${what} timed out after timeoutMs=${timeoutMs}`);
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
  ctl: Int32Array,
  block: WaitBlock,
  attempt: () => T | undefined,
  options: WaitOptions | undefined,
  what: string,
  deadline: number,
  napMs: number,
  gone: PeerGone,
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
      const longest = afterAnnouncing(ctl, block);
      result = attempt(); // the re-check after announcing
      if (result === undefined) {
        const left = deadline - performance.now();
        if (left <= 0) throw timedOut(what, options);
        if ((yield { seen, ms: Math.min(left, napMs, longest) }) === PEER_GONE) {
          result = attempt();
          if (result === undefined) throw gone(what);
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
 * long as options.spin says, never past the deadline), then naps a quarter
 * of peerTimeoutMs at a time, asking `peerAlive()` after a nap (timed out or
 * woken) once a check period has passed since it last asked; `gone` makes
 * the error of a peer found dead.
 */
export function parkSync<T>(
  ctl: Int32Array,
  block: WaitBlock,
  attempt: () => T | undefined,
  options: WaitOptions | undefined,
  what: string,
  peerAlive: () => boolean,
  pacer: SpinPacer,
  gone: PeerGone = peerDead,
): T {
  const signal = options?.signal;
  if (signal?.aborted) throw abortError(signal); // the only abort a blocked thread can see (see WaitOptions.signal)
  publishHeld();
  const started = performance.now();
  const deadline = deadlineOf(options, started);
  const spinMicros = options?.spin ?? pacer.spinMicros(SPIN_MICROS_SYNC);
  // The spin ends at the wait's deadline at the latest: timeoutMs 0 does not spin at all (one try, then the re-check).
  const spinUntil = Math.min(deadline, started + spinMicros / 1000);
  let result = spinUntil > started ? spin(attempt, spinUntil) : undefined;
  if (result === undefined) {
    const checkMs = checkPeriodOf(options);
    const checks = new PeerChecks(checkMs, deadline, performance.now());
    const steps = parkSteps(ctl, block, attempt, options, what, deadline, checkMs, gone);
    let step = steps.next();
    while (!step.done) {
      let napped: NapResult;
      try {
        waitCounters.syncNaps++;
        napped = wait(ctl, block.signal, step.value.seen, step.value.ms);
        if (napped === 'ok') waitCounters.woken++;
        // Whatever ended the nap: a reader behind a slot a dead producer claimed is woken by every publication
        // of the live ones and may never time out, yet only the check skips that slot.
        if (checks.due() && !peerAlive()) napped = PEER_GONE;
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
  /** Set by the wait in progress while it is parked: stop() ends it. */
  parked: { stopParked(): void } | undefined = undefined;
  /** The reads queued behind other reads of their object (queue.ts, CallLine): stop() takes each out. */
  readonly queued = new Set<() => void>();

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.parked?.stopParked();
    for (const takeOut of [...this.queued]) takeOut();
  }
}

/**
 * What a parked Promise wait settles with: `ok` maps the result (the
 * iterator of messages() wraps it), `err` maps a failure (it may return a
 * value instead: a closed and drained ring ends an iteration). Mapping here
 * saves the caller a promise of its own per wait.
 */
export interface Settle<T, R> {
  ok(result: T): R;
  err(error: unknown): R;
  /**
   * The wait takes nothing (waitReadable): once it has slept and its
   * condition holds, it passes a wake-up on (passOn) to whoever else sleeps
   * on its block.
   */
  readonly takesNothing?: boolean;
}

/** The identity Settle: the result as is, a failure rethrown. */
export const AS_IS: Settle<never, never> = {
  ok: (result: never) => result,
  err: (error: unknown) => {
    throw error;
  },
};

/**
 * parkSync for the event loop, never blocking it: tries on the spot for
 * TRY_MICROS_ASYNC (or options.spin), polls between event-loop turns for
 * the window `pacer` gives (pacing.ts), both ending at the deadline at the
 * latest, then parks on the asynchronous futex wait until woken or its
 * deadline passes. While parked, the thread's
 * watchdog looks at the peer every quarter of peerTimeoutMs and, if it is
 * gone, cancels the futex wait. `pacer` learns whether the wait got its
 * message (the side stays hot). `stop` ends the wait from outside.
 *
 * Not an async function: the promise it returns is the only one between a
 * wake-up and the caller (the parked part is a state machine driven by the
 * futex wait's own promise), so a message reaches an `await` in two promise
 * reactions, whatever the layers above.
 */
export function parkAsync<T, R = T>(
  ctl: Int32Array,
  block: WaitBlock,
  attempt: () => T | undefined,
  options: WaitOptions | undefined,
  what: string,
  peerAlive: () => boolean,
  pacer: PollPacer,
  stop?: WaitStop,
  settle: Settle<T, R> = AS_IS as Settle<T, R>,
  gone: PeerGone = peerDead,
  ready?: () => boolean,
): Promise<R> {
  let pollMicros: number;
  let pollUntilAt: number;
  let started: number;
  let deadline: number;
  let result: T | undefined;
  try {
    const wokePeer = wokeSinceWait; // taken: the next wait judges the wake-ups from now on
    wokeSinceWait = false;
    started = performance.now();
    pollMicros = pacer.pollMicros(options?.poll, wokePeer, started);
    const signal = options?.signal;
    if (signal?.aborted) throw abortError(signal);
    if (stop?.stopped) throw abortError();
    pacer.hot = false; // until this wait gets its message
    publishHeld();
    deadline = options === undefined ? Infinity : deadlineOf(options, started);
    // A peer this thread just woke answers no sooner than its wake-up (tens of µs): trying
    // on the spot for it would only hold the CPU it is likely queued on. A wait that is going
    // to poll takes its first slice here, at once, instead of a turn of the loop later.
    // A sparse side's message is not due yet: trying would only delay the peer it just answered.
    const spinMicros =
      options?.spin ?? (wokePeer || pacer.sparse ? 0 : pollMicros > 0 ? Math.min(pollMicros, POLL_SLICE_MICROS) : TRY_MICROS_ASYNC);
    // Neither the try nor the poll outlasts the wait's deadline: timeoutMs 0 times out in the re-check after announcing.
    const spinUntil = Math.min(deadline, started + spinMicros / 1000);
    result = spinUntil > started ? spin(attempt, spinUntil) : undefined;
    pollUntilAt = Math.min(deadline, started + pollMicros / 1000);
  } catch (err) {
    return settleNow(settle, err, true);
  }
  if (result !== undefined) {
    pacer.got(started, performance.now());
    return settleNow(settle, result, false);
  }
  const park = new AsyncPark(ctl, block, attempt, options, what, peerAlive, deadline, stop, pacer, started, settle, gone, ready);
  if (pollUntilAt <= started) return park.start();
  waitCounters.polls++;
  // A window within one check period (the default 50 µs, say: every hot message's wait) is one pollUntil, no
  // loop and no promise of its own; a longer one asks about the peer between windows.
  const polled =
    pollUntilAt - started <= park.periodMs
      ? pollUntil(attempt, pollUntilAt, options?.signal, stop)
      : pollThenPark(attempt, pollUntilAt, park.periodMs, peerAlive, options?.signal, stop);
  return polled.then(
    (polled) => (polled === undefined ? park.start() : park.got(polled)),
    (err: unknown) => park.settle.err(err),
  );
}

/**
 * pollUntil `until`, in windows of `checkMs` at most: between two, it asks
 * `peerAlive()` as a parked wait's watchdog does once a check period (a
 * quarter of peerTimeoutMs), and a window longer than that (poll: Infinity,
 * until the timeout) would otherwise poll on for a dead peer. Undefined
 * when the window is over or the peer is gone (the caller parks, and its
 * first check says so, after a last look at what the peer published);
 * rejects with what `attempt` or `peerAlive` throws, or an abort. One
 * promise however many windows.
 */
export async function pollThenPark<T>(
  attempt: () => T | undefined,
  until: number,
  checkMs: number,
  peerAlive: () => boolean,
  signal: AbortSignal | undefined,
  stop?: WaitStop,
  cost = 1,
): Promise<T | undefined> {
  for (;;) {
    const polled = await pollUntil(attempt, Math.min(until, performance.now() + checkMs), signal, stop, cost);
    if (polled !== undefined) return polled;
    if (performance.now() >= until || !peerAlive()) return undefined;
  }
}

/** A promise settled now through `settle` (which may throw: then rejected). */
function settleNow<T, R>(settle: Settle<T, R>, value: unknown, failed: boolean): Promise<R> {
  try {
    return Promise.resolve(failed ? settle.err(value) : settle.ok(value as T));
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * An asynchronous futex wait in progress, and how to end it early (it then
 * completes 'ok'). A native wait completes with the backend's code (0 ok,
 * 1 not-equal, 2 timed out), an Atomics one with its string: #napped reads
 * either, so neither costs a promise of its own.
 */
interface PendingWait {
  promise: Promise<WaitResult | number>;
  /**
   * Ends the wait early. False (a native wait's answer): it had ended on its
   * own first, and its result, a wake-up perhaps, stands. Anything else: it
   * was stopped (a wake-up it took was passed on by the backend, or by the
   * notify that stops an Atomics wait, which wakes every sleeper of the word).
   */
  cancel(): unknown;
}

/** beforeUnmap's hook of an announced AsyncPark: the region is being closed under it; withdraws while the memory is there. */
function withdrawParkAtUnmap(park: AsyncPark<unknown, unknown>): void {
  // Withdraw the announcement, the memory still mapped: the close's unmap comes next (settling the wait).
  Atomics.sub(park.ctl, park.block.waiters, 1);
  park.withdrawnAtUnmap = true;
}

/** The native codes of 'ok' and 'timed-out'. */
const NATIVE_OK = 0;
const NATIVE_TIMED_OUT = 2;

/**
 * Errnos with which the kernel refuses to queue a futex wait for the moment
 * (io_uring_enter or futex_waitv short of memory; a linked chain it cut
 * short): not the caller's doing, and gone a moment later.
 */
const REFUSED_FOR_NOW = new Set(['EAGAIN', 'ENOMEM', 'EBUSY']);

/** The first nap of a wait the kernel refused for now (ms); each further refusal doubles it, up to REFUSED_NAP_MAX_MS. */
const REFUSED_NAP_MS = 1;
const REFUSED_NAP_MAX_MS = 100;
/**
 * How long (ms) a wait goes on being refused before it fails with the
 * kernel's error after all: what lasts that long is a limit (threads,
 * locked memory), not a moment's shortage, and the caller should hear of it.
 */
const REFUSED_FOR_MS = 5000;

function refusedForNow(err: unknown): boolean {
  return err instanceof Error && REFUSED_FOR_NOW.has((err as NodeJS.ErrnoException).code ?? '');
}

/**
 * A timer in place of a futex wait the kernel refused for now: completes
 * 'timed-out' after `ms` (the next round re-checks), or 'ok' at once when
 * cancelled. It takes no wake-up, so it has none to pass on.
 */
function nap(ms: number, ref: boolean): PendingWait {
  let settle!: (code: number) => void;
  const promise = new Promise<number>((resolve) => {
    settle = resolve;
  });
  const timer = setTimeout(settle, ms, NATIVE_TIMED_OUT);
  if (!ref) timer.unref();
  return {
    promise,
    cancel: () => {
      clearTimeout(timer);
      settle(NATIVE_OK);
      return true;
    },
  };
}

/**
 * Starts the asynchronous futex wait of a nap. A mapped region's word waits
 * on the native futex, which the backend can cancel; a SharedArrayBuffer's
 * on Atomics.waitAsync (through @shmring/futex), which a notify of the word
 * ends (the other waiters of this process on that word wake spuriously and
 * re-check, as every waiter may).
 */
function startWait(ctl: Int32Array, index: number, expected: number, ms: number, ref: boolean): PendingWait {
  if (ctl.buffer instanceof SharedArrayBuffer) {
    // Sleeps while SIGNAL still holds `expected`; pairs with unpark()'s add + notify.
    const promise = waitAsync(ctl, index, expected, ms, undefined, ref);
    // cancel: publishes nothing, only ends this process's waits on SIGNAL ('ok'; the others re-check).
    return { promise, cancel: () => Atomics.notify(ctl, index) };
  }
  return nativeFutex.waitAsync(ctl.buffer as ArrayBuffer, ctl.byteOffset + index * 4, expected, ms, ref);
}

/** Why a parked Promise wait was ended from outside. */
type Ending = 'peer-gone' | 'check-failed' | 'aborted' | 'stopped';

/**
 * The parked part of parkAsync: the protocol of parkSteps, round by round,
 * driven by the futex wait's promise instead of a generator and awaits.
 * Each round announces, re-checks and, if nothing came, starts one futex
 * wait; the wait's completion withdraws the announcement and starts the
 * next round. The watchdog and the abort listener are set up when the
 * first wait starts and removed when the park settles.
 */
class AsyncPark<T, R> implements Watched {
  readonly periodMs: number;
  watchSlot = -1;
  #resolve!: (value: R | PromiseLike<R>) => void;
  #reject!: (err: unknown) => void;
  #pending: PendingWait | undefined;
  #ending: Ending | undefined;
  #failure: unknown;
  #watching = false;
  #onAbort: (() => void) | undefined;
  /** A futex wait of this park has started: a publisher's wake-up may have gone to it. */
  #slept = false;
  /** Ended from outside (#end) after its futex wait had completed on its own: a wake-up it took is ours to pass on. */
  #endedAfterWait = false;

  constructor(
    readonly ctl: Int32Array,
    readonly block: WaitBlock,
    readonly attempt: () => T | undefined,
    readonly options: WaitOptions | undefined,
    readonly what: string,
    readonly peerAlive: () => boolean,
    readonly deadline: number,
    readonly stop: WaitStop | undefined,
    readonly pacer: PollPacer,
    readonly started: number,
    readonly settle: Settle<T, R>,
    readonly gone: PeerGone,
    /** Whether the attempt would find something now (a snapshot, taking nothing): the watchdog's look (check()). */
    readonly ready: (() => boolean) | undefined,
  ) {
    this.periodMs = options === undefined ? DEFAULT_CHECK_MS : checkPeriodOf(options);
  }

  start(): Promise<R> {
    AsyncPark.#starting = this as AsyncPark<unknown, unknown>;
    return new Promise<R>(AsyncPark.#begin as (resolve: (value: R) => void, reject: (err: unknown) => void) => void);
  }

  /** The park start() is making a promise for (the executor below is one function for every park, not a closure each). */
  static #starting: AsyncPark<unknown, unknown> | undefined;

  /** The executor of start()'s promise: it runs at once, inside the Promise constructor. */
  static #begin(resolve: (value: unknown) => void, reject: (err: unknown) => void): void {
    const park = AsyncPark.#starting!;
    AsyncPark.#starting = undefined;
    park.#resolve = resolve;
    park.#reject = reject;
    park.#round();
  }

  /** The wait got `result` before parking (its poll did). */
  got(result: T): R {
    this.pacer.got(this.started, performance.now());
    return this.settle.ok(result);
  }

  /** WaitStop.stop(): ends the wait from outside. */
  stopParked(): void {
    this.#end('stopped');
  }

  /** Watchdog tick: ends the wait if the peer is gone. */
  check(): void {
    try {
      if (!this.peerAlive()) return this.#end('peer-gone');
    } catch (err) {
      this.#failure = err;
      return this.#end('check-failed');
    }
    try {
      // Something there that no wake-up came for (its publisher died between publishing and waking, and
      // other publishers live on, idle): ends the sleep as a spurious wake-up, and the next round takes it.
      if (this.ready?.() === true) this.#pending?.cancel();
    } catch {
      // Only a look: an object closed under it (its views swapped for empty ones) ends this wait itself.
    }
  }

  #end(why: Ending): void {
    if (this.#ending !== undefined) return;
    this.#ending = why;
    this.#endedAfterWait = this.#pending?.cancel() === false;
  }

  /** One round: announce, re-check, and either settle or start a futex wait. */
  #round(): void {
    const { ctl, block } = this;
    const signal = this.options?.signal;
    if (signal?.aborted) return this.#fail(abortError(signal));
    // A stop() made after the poll's last look and before this park registered (`stop.parked`) found
    // nothing to end: parked now, the wait would sleep for a return() already made, and take a message for it.
    if (this.stop?.stopped) return this.#fail(abortError());
    let seen: number;
    try {
      // Snapshot of SIGNAL taken before announcing (see the protocol above).
      seen = Atomics.load(ctl, block.signal);
      // Announce: from here on, every publisher bumps SIGNAL and wakes us.
      Atomics.add(ctl, block.waiters, 1);
    } catch (err) {
      return this.#fail(err); // a detached view: the region was closed
    }
    // Withdrawn by the region's close() if that comes first, while the memory is still there (core's unmap.ts).
    this.#unmapHook = beforeUnmap(ctl.buffer, withdrawParkAtUnmap, this as AsyncPark<unknown, unknown>);
    let result: T | undefined;
    try {
      const longest = afterAnnouncing(ctl, block);
      result = this.attempt(); // the re-check after announcing
      if (result === undefined) {
        let left = Infinity; // no clock read for a wait without timeoutMs
        if (this.deadline !== Infinity) {
          left = this.deadline - performance.now();
          if (left <= 0) throw timedOut(this.what, this.options);
        }
        if (longest < left) left = longest; // a timed-out sleep goes round again: the next round re-checks
        if (this.#ending === undefined) {
          if (!this.#watching) this.#watch();
          waitCounters.asyncWaits++;
          this.#slept = true;
          this.#pending = startWait(ctl, block.signal, seen, left, this.options?.ref !== false);
          this.#pending.promise.then(this.#completed, this.#completed);
          return; // stays announced until the wait completes
        }
        this.#napped('ok'); // ended from outside before this round's wait: settle as after a wake
        return;
      }
    } catch (err) {
      this.#withdraw();
      return this.#fail(err);
    }
    this.#settleWithdrawn(result);
  }

  /**
   * Withdraws the announcement. On a region closed meanwhile the view is
   * detached and this throws (a TypeError the caller maps to
   * ERR_SHMRING_CLOSED); returns that error, or undefined.
   */
  #withdraw(): unknown {
    this.#unmapHook?.forget();
    this.#unmapHook = undefined;
    try {
      if (this.withdrawnAtUnmap) {
        this.withdrawnAtUnmap = false;
        // Withdrawn already, before the unmap: the view is detached now, and this throws as a withdrawal would.
        Atomics.load(this.ctl, this.block.waiters);
        return undefined;
      }
      // Withdraw the announcement: publishers stop bumping SIGNAL for us.
      Atomics.sub(this.ctl, this.block.waiters, 1);
      return undefined;
    } catch (err) {
      return err;
    }
  }

  /** The hook of the region's close (beforeUnmap), while announced. */
  #unmapHook: UnmapHook | undefined;
  /** The announcement was withdrawn by withdrawParkAtUnmap. */
  withdrawnAtUnmap = false;

  /** Withdraws, then settles with `result` (or the withdrawal's failure). */
  #settleWithdrawn(result: T): void {
    const failed = this.#withdraw();
    if (failed !== undefined) return this.#fail(failed);
    if (this.#slept && this.settle.takesNothing === true) passOn(this.ctl, this.block);
    if (this.#watching) this.#unwatch();
    let value: R;
    try {
      this.pacer.got(this.started, performance.now());
      value = this.settle.ok(result);
    } catch (err) {
      this.#reject(err);
      return;
    }
    this.#resolve(value);
  }

  /**
   * The futex wait's promise settled, either way: one function for both, so
   * a park makes one closure, not two. It fulfils with the wait's result (a
   * number from the native backend, a string from Atomics.waitAsync) and
   * rejects with an Error.
   */
  readonly #completed = (completion: unknown): void => {
    if (typeof completion === 'number' || typeof completion === 'string') {
      // A futex wait the kernel took (not a nap in place of a refused one) ends a row of refusals.
      if (this.#napping) this.#napping = false;
      else if (this.#refusedSince !== undefined) {
        this.#refusedSince = undefined;
        this.#refusals = 0;
      }
      this.#napped(completion as WaitResult | number);
    } else this.#nappedBadly(completion);
  };

  /** The futex wait of a round completed: withdraw, look at why, and settle or go round again. */
  #napped(completion: WaitResult | number): void {
    this.#pending = undefined;
    let result: T | undefined;
    try {
      if (this.#ending !== undefined) result = this.#ended();
      else if (completion === NATIVE_OK || completion === 'ok') waitCounters.woken++;
      if (result === undefined && completion !== NATIVE_TIMED_OUT && completion !== 'timed-out') result = this.attempt();
    } catch (err) {
      const closed = this.#withdraw();
      // Ended (an abort, a stop) just after a publisher woke this wait, before it heard: it takes nothing, so
      // the wake-up goes to whoever else sleeps on the block, as a wait that takes nothing passes it on.
      if (closed === undefined && this.#endedAfterWait && completion === NATIVE_OK) passOn(this.ctl, this.block);
      return this.#fail(err);
    }
    if (result !== undefined) return this.#settleWithdrawn(result);
    const failed = this.#withdraw();
    if (failed !== undefined) this.#fail(failed);
    else this.#round(); // spurious wake-up or timeout: the next round re-checks (and times out)
  }

  /** A wait ended from outside (#end): throws why, or returns what a dead peer published before it died. */
  #ended(): T {
    switch (this.#ending) {
      case 'peer-gone': {
        // A dead peer publishes nothing more: one last attempt takes what it published before it died.
        const result = this.attempt();
        if (result === undefined) throw this.gone(this.what);
        return result;
      }
      case 'check-failed':
        throw this.#failure;
      case 'aborted':
        throw abortError(this.options?.signal);
      default:
        throw abortError(); // 'stopped'
    }
  }

  #nappedBadly(err: unknown): void {
    this.#pending = undefined;
    // Ended from outside (an abort, a stop, a dead peer) while the wait failed: that is why it ends (#ended).
    if (this.#ending !== undefined) return this.#napped(NATIVE_TIMED_OUT);
    if (refusedForNow(err)) {
      const now = performance.now();
      this.#refusedSince ??= now;
      if (now - this.#refusedSince < REFUSED_FOR_MS) {
        // The kernel could not queue the futex wait just now: still announced, this round naps instead, and the
        // next re-checks, as after a timed-out sleep. A read does not fail for memory the kernel lacked a moment.
        waitCounters.refused++;
        const ms = Math.min(REFUSED_NAP_MS * 2 ** this.#refusals++, REFUSED_NAP_MAX_MS);
        this.#napping = true;
        this.#pending = nap(ms, this.options?.ref !== false);
        this.#pending.promise.then(this.#completed, this.#completed);
        return;
      }
    }
    this.#withdraw();
    this.#fail(err);
  }

  /** When the kernel first refused this park's futex wait in a row of refusals (performance.now()). */
  #refusedSince: number | undefined;
  /** Refusals so far (each nap doubles, up to REFUSED_NAP_MAX_MS). */
  #refusals = 0;
  /** The pending wait is a nap in place of a refused one. */
  #napping = false;

  #watch(): void {
    this.#watching = true;
    waitCounters.asyncParks++;
    const signal = this.options?.signal;
    if (signal !== undefined) {
      this.#onAbort = () => this.#end('aborted');
      watchAbort(signal, this.#onAbort);
    }
    if (this.stop !== undefined) this.stop.parked = this; // (an object, not a closure per park)
    if (this.periodMs !== Infinity) watch(this);
  }

  #unwatch(): void {
    this.#watching = false;
    if (this.periodMs !== Infinity) unwatch(this);
    if (this.#onAbort !== undefined) unwatchAbort(this.options!.signal!, this.#onAbort);
    if (this.stop?.parked === this) this.stop.parked = undefined; // only ever this park; never another's
  }

  #fail(err: unknown): void {
    if (this.#watching) this.#unwatch();
    let value: R;
    try {
      value = this.settle.err(err);
    } catch (thrown) {
      this.#reject(thrown);
      return;
    }
    this.#resolve(value);
  }
}
