/**
 * Waiting on several futex words at once: the first of them to be woken
 * (or to differ from what the caller saw) ends the wait.
 *
 *  - `waitAny` blocks the thread in one `futex_waitv` system call
 *    (Linux >= 5.16; at most MAX_WAIT_ANY words). It is a **native** wait
 *    on every word, SharedArrayBuffer words included, so only a native wake
 *    (`wakeNative`, or a C peer's FUTEX_WAKE) ends it: `Atomics.notify`
 *    does not reach a thread blocked in the kernel (V8 keeps its own wait
 *    list). See docs/LAYOUT.md, "Waiting", for how publishers of a ring
 *    know that such a waiter sleeps on a SharedArrayBuffer word.
 *  - `waitAnyAsync` never blocks the event loop: where async waits use
 *    io_uring and no word is in a SharedArrayBuffer, one native wait on all
 *    the words (waitAllAtOnce); otherwise one asynchronous wait per word
 *    (the native asynchronous futex wait on a mapping, Atomics.waitAsync
 *    on a SharedArrayBuffer, exactly as waitAsync of this package), and the
 *    others are cancelled as soon as one settles. Woken as waitAsync is:
 *    by wake() of this package.
 *
 * Results: the index (in `words`) of a word that was woken, possibly
 * spuriously; 'not-equal' (a word did not hold its expected value when the
 * wait began: the caller's snapshot is stale, re-check); 'timed-out'. As
 * with every futex wait, a caller treats each result as "re-check".
 */
import {
  abortError,
  ErrorCodes,
  MAX_TIMER_MS,
  MAX_WAIT_ANY_ASYNC,
  nativeFutex,
  ShmringRangeError,
  ShmringTypeError,
  unwatchAbort,
  watchAbort,
} from '@shmring/core';
import { checkExpected, checkRef, checkSignal, checkWord, countOf, isShared, timeoutOf } from './args.js';

/** One word to wait on: `i32[index]`, while it holds `expected`. */
export type WaitTarget = readonly [i32: Int32Array, index: number, expected: number];

/** Index of the word woken, 'not-equal' or 'timed-out'. */
export type WaitAnyResult = number | 'not-equal' | 'timed-out';

/** Most words `waitAny` takes (the kernel's limit for futex_waitv). */
export const MAX_WAIT_ANY = 128;

function checkWords(words: readonly WaitTarget[], what: string): void {
  if (!Array.isArray(words)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${what}: words must be an array of [Int32Array, index, expected]`);
  }
  if (words.length === 0) throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${what}: needs at least one word`);
  for (let k = 0; k < words.length; k++) {
    const word = words[k];
    try {
      checkWord(word?.[0] as Int32Array, word?.[1] as number, what);
      checkExpected(word![2], what);
    } catch (err) {
      // In a long list, which entry is wrong is half of what the caller needs to know (named only on failure:
      // select checks its words at every park).
      if (words.length > 1 && err instanceof Error && err.message.startsWith(`${what}: `)) {
        err.message = `${what} (words[${k}]): ${err.message.slice(what.length + 2)}`;
      }
      throw err;
    }
  }
}

/**
 * Blocks the calling thread while every `i32[index] === expected`, until one
 * of the words is woken or `timeoutMs` passes (futex_waitv). For workers and
 * dedicated processes: on a main thread it freezes the event loop.
 * RangeError for more than MAX_WAIT_ANY words.
 */
export function waitAny(words: readonly WaitTarget[], timeoutMs?: number): WaitAnyResult {
  checkWords(words, 'waitAny');
  if (words.length > MAX_WAIT_ANY) {
    throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `waitAny: ${words.length} words; futex_waitv takes at most ${MAX_WAIT_ANY}`);
  }
  const timeout = timeoutOf(timeoutMs, 'waitAny');
  const targets = words.map(([i32, index, expected]) => ({
    buffer: i32.buffer,
    byteOffset: i32.byteOffset + index * 4,
    expected: expected | 0,
  }));
  // Sleeps while every word holds its expected value (the kernel compares them all
  // atomically with queueing the thread on each); pairs with wakeNative() / FUTEX_WAKE.
  const code = nativeFutex.waitAny(targets, timeout);
  if (code >= 0) return code;
  return code === -1 ? 'not-equal' : 'timed-out';
}

/**
 * A native futex wake (FUTEX_WAKE, shared) of up to `count` (default all)
 * waiters of `i32[index]`, whatever its buffer: on a SharedArrayBuffer it
 * reaches the threads blocked in waitAny (or a native wait), which
 * Atomics.notify (what wake() does there) does not. Returns how many woke.
 */
export function wakeNative(i32: Int32Array, index: number, count = Infinity): number {
  checkWord(i32, index, 'wakeNative');
  const n = countOf(count, 'wakeNative');
  // Wakes the kernel's sleepers of this word; the caller stored the new value before.
  return nativeFutex.wake(i32.buffer as ArrayBuffer, i32.byteOffset + index * 4, n);
}

/**
 * Hands a wake that a wait took, but whose caller no longer wants it (the
 * race was decided by another word, or the wait was aborted after it
 * ended), to the next sleeper of `i32[index]`: a publisher that woke one
 * waiter may have picked this one instead of a live one, who would sleep
 * on. Only if the word no longer holds `expected`: a publisher changes it
 * before its wake, and a wake of an unchanged word is a cancel's kick
 * (koffi, waiter threads: they wake every sleeper of the word), which
 * passed on would only end another wait for nothing. A word unmapped by
 * now has nobody to hand it to.
 */
export function passOn(i32: Int32Array, index: number, expected: number): void {
  try {
    // Observes the publisher's change, made before its wake.
    if (Atomics.load(i32, index) === expected) return;
    wakeNative(i32, index, 1);
  } catch {
    // closed meanwhile: no sleeper left on it in this mapping
  }
}

/**
 * waitAny for the event loop: never blocks it. Where this thread's async
 * waits use io_uring and no word is in a SharedArrayBuffer, one native
 * wait on all the words (one per MAX_WAIT_ANY_ASYNC; see waitAllAtOnce).
 * Otherwise one asynchronous wait per
 * word, as waitAsync of this package makes them; the first to settle
 * decides, and the others are cancelled at once (a native wait by its
 * cancel(); a SharedArrayBuffer wait by an Atomics.notify of its word,
 * which also wakes that word's other sleepers of this process spuriously:
 * a plain waitAsync re-checks, as every waiter does, and a waitAnyAsync of
 * this mode waits again while the word is unchanged, see waitEach; the
 * io_uring mode has no such kicks, and any wake ends it). The pending Promise keeps the
 * process alive unless `ref` is false (as waitAsync's `ref`; the koffi
 * backend cannot let go for a mapped region's word); once it settles
 * nothing is left behind. An aborted `signal` rejects it with an AbortError.
 */
export function waitAnyAsync(words: readonly WaitTarget[], timeoutMs?: number, signal?: AbortSignal, ref = true): Promise<WaitAnyResult> {
  // Every argument is checked before any wait or timer starts: a wrong one leaves nothing pending behind.
  checkWords(words, 'waitAnyAsync');
  const timeout = timeoutOf(timeoutMs, 'waitAnyAsync');
  checkSignal(signal, 'waitAnyAsync');
  checkRef(ref, 'waitAnyAsync');
  if (signal?.aborted) return Promise.reject(abortError(signal));
  const wait = startWaitAny(words, timeout, ref);
  if (signal === undefined) return wait.promise;
  const onAbort = (): void => wait.stop(abortError(signal));
  watchAbort(signal, onAbort);
  const unwatch = (): void => unwatchAbort(signal, onAbort);
  wait.promise.then(unwatch, unwatch);
  return wait.promise;
}

/** A wait on several words that its starter can end: stop(reason) rejects its promise with `reason` (and ends every wait it made). */
export interface StoppableWaitAny {
  readonly promise: Promise<WaitAnyResult>;
  stop(reason?: unknown): void;
}

/**
 * waitAnyAsync without an AbortSignal: the caller ends the wait with
 * stop() (its promise then rejects with the reason given, an AbortError by
 * default). For a caller that would otherwise make an AbortController per
 * wait: Node's EventTarget makes that, with its listener, cost some 5 µs,
 * and 20 µs after an idle millisecond (select parks this way). The same
 * arguments and checks as waitAnyAsync.
 */
export function waitAnyStoppable(words: readonly WaitTarget[], timeoutMs?: number, ref = true): StoppableWaitAny {
  checkWords(words, 'waitAnyStoppable');
  const timeout = timeoutOf(timeoutMs, 'waitAnyStoppable');
  checkRef(ref, 'waitAnyStoppable');
  return startWaitAny(words, timeout, ref);
}

/** The wait of waitAnyAsync / waitAnyStoppable, its arguments checked. */
function startWaitAny(words: readonly WaitTarget[], timeout: number, ref: boolean): StoppableWaitAny {
  if (timeout === 0) {
    // Nothing is to sleep: answer from the words, as waitAny's kernel compare of them all does. (Waits
    // started on each would all settle at once, and the first word's 'timed-out' would hide a later
    // word that differs.)
    const differs = words.some(([i32, index, expected]) => Atomics.load(i32, index) !== (expected | 0));
    return { promise: Promise.resolve(differs ? 'not-equal' : 'timed-out'), stop: () => {} };
  }
  let stop: (reason: unknown) => void = () => {};
  const expose = (s: (reason: unknown) => void): void => {
    stop = s;
  };
  const promise = waitAllAtOnce(words, timeout, ref, expose) ?? waitEach(words, timeout, ref, expose);
  return { promise, stop: (reason = abortError()) => stop(reason) };
}

/** The numbers of a native wait on several words, as waitAny's. */
function resultOf(code: number): WaitAnyResult {
  return code >= 0 ? code : code === -1 ? 'not-equal' : 'timed-out';
}

/**
 * Native waits on all the words (nativeFutex.waitAnyAsync: io_uring
 * FUTEX_WAITV entries of 128 words), one per MAX_WAIT_ANY_ASYNC words, where
 * this thread's async waits use io_uring and no word is in a
 * SharedArrayBuffer (those are woken through V8: waitEach); undefined
 * otherwise. A select over a thousand rings then costs a few system calls
 * to start and to end, not a thousand each. With several native waits the
 * first to settle decides and the others are cancelled, as waitEach does.
 */
function waitAllAtOnce(
  words: readonly WaitTarget[],
  timeout: number,
  ref: boolean,
  expose: (stop: (reason: unknown) => void) => void,
): Promise<WaitAnyResult> | undefined {
  if (words.length < 2) return undefined;
  const targets: { buffer: ArrayBuffer; byteOffset: number; expected: number }[] = [];
  for (const [i32, index, expected] of words) {
    if (isShared(i32)) return undefined;
    targets.push({ buffer: i32.buffer as ArrayBuffer, byteOffset: i32.byteOffset + index * 4, expected: expected | 0 });
  }
  const waits: NonNullable<ReturnType<typeof nativeFutex.waitAnyAsync>>[] = [];
  try {
    for (let at = 0; at < targets.length; at += MAX_WAIT_ANY_ASYNC) {
      const pending = nativeFutex.waitAnyAsync(targets.slice(at, at + MAX_WAIT_ANY_ASYNC), timeout, ref);
      if (pending === undefined) {
        for (const w of waits) w.cancel(); // (none: whether async waits use io_uring is known at the first)
        return undefined;
      }
      waits.push(pending);
    }
  } catch (err) {
    for (const w of waits) w.cancel();
    return Promise.reject(err); // as waitEach reports a wait that fails to start
  }
  return new Promise<WaitAnyResult>((resolve, reject) => {
    let settled = false;
    /** Per native wait: whether finish() stopped it (else it had ended on its own, and its outcome is real). */
    const stopped: boolean[] = [];
    const finish = (): boolean => {
      if (settled) return false;
      settled = true;
      for (const w of waits) stopped.push(w.cancel()); // false for the one that settled
      return true;
    };
    expose((reason) => {
      if (finish()) reject(reason);
    });
    for (let k = 0; k < waits.length; k++) {
      waits[k]!.promise.then(
        (code) => {
          const index = k * MAX_WAIT_ANY_ASYNC + code;
          if (finish()) resolve(code >= 0 ? index : resultOf(code));
          else if (code >= 0 && !stopped[k] && index < words.length) {
            const [i32, at, expected] = words[index]!;
            passOn(i32, at, expected | 0); // woken, but another decided first
          }
        },
        (err: unknown) => {
          if (finish()) reject(err);
        },
      );
    }
  });
}

/**
 * One asynchronous wait per word; the first to settle decides, the others
 * are cancelled. A word woken while it still holds its expected value is
 * waited on again (for what is left of the timeout) instead of deciding:
 * that wake is another wait's cancel (an Atomics.notify of a
 * SharedArrayBuffer word, a koffi or waiter-thread kick of a mapped one:
 * both wake every sleeper of the word), not a publication, which changes
 * the word before it wakes (passOn's rule). Settling on it would make the
 * woken caller's own cancels wake the canceller in turn: two waits that
 * share two words woke each other for ever, at 100% of a CPU.
 */
function waitEach(
  words: readonly WaitTarget[],
  timeout: number,
  ref: boolean,
  expose: (stop: (reason: unknown) => void) => void,
): Promise<WaitAnyResult> {
  return new Promise<WaitAnyResult>((resolve, reject) => {
    const n = words.length;
    const deadline = performance.now() + timeout; // Infinity without a timeout
    /** What is left of the timeout for a wait started again after a kick (0 or less: it times out at once). */
    const left = (): number => (timeout === Infinity ? Infinity : Math.max(0, deadline - performance.now()));
    /** The first round of waits takes the caller's timeout as it is: no clock read per word. */
    let first = true;
    /** Cancels the wait of each word still pending (undefined: settled or never started). */
    const cancels: ((() => void) | undefined)[] = new Array(n);
    /** Decided (finish() ran): no word is armed again, and the outcome below is final. */
    let settled = false;
    let keepAlive: ReturnType<typeof setInterval> | undefined;
    /**
     * Native waits started whose promises have not settled. The caller's
     * promise settles only once they all have (conclude): on koffi, a worker
     * whose waits have all settled may end, and a pool call of it still
     * running then aborts the process (koffi.ts, "Workers"); a cancelled
     * koffi wait settles once its call has returned. The addon's cancel
     * settles at once: a microtask, no more.
     */
    let nativePending = 0;
    /** The outcome, once decided: a rejection with `error` if `failed`, else `result`. */
    let failed = false;
    let error: unknown;
    let result: WaitAnyResult = 'timed-out';
    const conclude = (): void => {
      if (failed) reject(error);
      else resolve(result);
    };
    const finish = (): boolean => {
      if (settled) return false;
      settled = true;
      if (keepAlive !== undefined) clearInterval(keepAlive);
      for (let i = 0; i < n; i++) {
        const cancel = cancels[i];
        cancels[i] = undefined;
        cancel?.();
      }
      return true;
    };
    const settle = (i: number, value: 'ok' | 'not-equal' | 'timed-out'): void => {
      cancels[i] = undefined; // this word's wait is over: nothing to cancel
      if (!finish()) return;
      result = value === 'ok' ? i : value;
      if (nativePending === 0) conclude(); // else the last native wait to settle does
    };

    const fail = (err: unknown): void => {
      if (!finish()) return;
      failed = true;
      error = err;
      if (nativePending === 0) conclude();
    };
    /** Whether a wake of word i is another wait's cancel: the word still holds its expected value (see above). */
    const kicked = (i: number): boolean => {
      const [i32, index, expected] = words[i]!;
      try {
        // Observes the publisher's change, made before its wake.
        return !settled && Atomics.load(i32, index) === (expected | 0) && deadline - performance.now() > 0;
      } catch {
        return false; // closed meanwhile: let the wake decide, the caller re-checks
      }
    };
    /** Starts the wait of word i (again, after a kick); false once the race is decided. */
    const arm = (i: number): boolean => {
      const [i32, index, expected] = words[i]!;
      if (isShared(i32)) {
        // The check-and-sleep of Atomics.wait, resolved by V8 when notified or timed out.
        const result = Atomics.waitAsync(i32, index, expected | 0, first ? timeout : left());
        if (!result.async) {
          settle(i, result.value); // 'not-equal': decided already
          return false;
        }
        // V8's waitAsync holds nothing that keeps Node's loop alive: a ref'd
        // timer does, for exactly as long as the wait is pending (none for `ref` false).
        if (ref) keepAlive ??= setInterval(() => {}, MAX_TIMER_MS);
        // Ends V8's pending waiter (there is no other way). A stale waiter
        // must not stay behind: a publisher's notify(count = 1) could pick it
        // instead of a live sleeper, whose wake-up would then be lost.
        cancels[i] = () => Atomics.notify(i32, index);
        result.value.then((value) => {
          if (value === 'ok' && kicked(i)) arm(i);
          else settle(i, value);
        }, fail);
      } else {
        try {
          const pending = nativeFutex.waitAsync(
            i32.buffer as ArrayBuffer,
            i32.byteOffset + index * 4,
            expected | 0,
            first ? timeout : left(),
            ref,
          );
          nativePending += 1;
          /** Whether finish() stopped this wait (false: it had ended on its own, and its outcome is real). */
          let stopped = false;
          cancels[i] = () => {
            stopped = pending.cancel();
          };
          pending.promise.then(
            (code) => {
              nativePending -= 1;
              if (settled) {
                // Woken, but another word decided first: the wake is not this caller's to drop.
                if (code === 0 && !stopped) passOn(i32, index, expected | 0);
                if (nativePending === 0) conclude(); // the last native wait to settle after the decision
              } else if (code === 0 && kicked(i)) arm(i);
              else settle(i, code === 0 ? 'ok' : code === 1 ? 'not-equal' : 'timed-out');
            },
            (err: unknown) => {
              nativePending -= 1;
              if (!settled) fail(err);
              else if (nativePending === 0) conclude();
            },
          );
        } catch (err) {
          fail(err);
          return false;
        }
      }
      return !settled;
    };
    expose(fail);
    for (let i = 0; i < n && arm(i); i++);
    first = false;
  });
}
