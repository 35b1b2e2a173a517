/**
 * wait / waitAsync / wake on a 32-bit word of shared memory, one API over two
 * mechanisms:
 *  - an Int32Array over a SharedArrayBuffer: Atomics.wait / waitAsync /
 *    notify (V8's in-process wait list: works between the threads of one
 *    process, never across processes);
 *  - an Int32Array over a mapped region (an ArrayBuffer from @shmring/core):
 *    the native futex without FUTEX_PRIVATE_FLAG, which works across processes.
 *
 * Results are those of Atomics.wait: 'ok' (woken — possibly spuriously, so
 * always re-check your condition), 'not-equal' (the word was not `expected`
 * when the wait began), 'timed-out'.
 */
import { abortError, MAX_TIMER_MS, nativeFutex, unwatchAbort, watchAbort } from '@shmring/core';
import { checkExpected, checkRef, checkSignal, checkWord, countOf, isShared, timeoutOf } from './args.js';
import { passOn } from './any.js';

export type WaitResult = 'ok' | 'not-equal' | 'timed-out';

const RESULTS: readonly WaitResult[] = ['ok', 'not-equal', 'timed-out'];

/**
 * Blocks the calling thread while `i32[index] === expected`, until woken or
 * `timeoutMs` passes. Never call this on a main thread that must stay
 * responsive: it freezes the event loop (use waitAsync there).
 */
export function wait(i32: Int32Array, index: number, expected: number, timeoutMs?: number): WaitResult {
  checkWord(i32, index, 'wait');
  checkExpected(expected, 'wait');
  const timeout = timeoutOf(timeoutMs, 'wait');
  if (isShared(i32)) {
    // A wait that may not sleep answers from the word (it observes the waker's store), never joining V8's
    // waiter list even for a moment, where a notify of one meant for a sleeper could pick it. (The native
    // backends do the same for their own words.)
    if (timeout === 0) return Atomics.load(i32, index) === (expected | 0) ? 'timed-out' : 'not-equal';
    // Sleeps while the word holds `expected` (checked atomically with going to sleep); pairs with wake().
    return Atomics.wait(i32, index, expected | 0, timeout);
  }
  return RESULTS[nativeFutex.wait(i32.buffer as ArrayBuffer, i32.byteOffset + index * 4, expected | 0, timeout)]!;
}

/** Wakes up to `count` (default all) waiters on `i32[index]`; returns how many were woken. */
export function wake(i32: Int32Array, index: number, count = Infinity): number {
  checkWord(i32, index, 'wake');
  const n = countOf(count, 'wake');
  // Wakes sleepers of this word in this process; the caller stored the new value before.
  if (isShared(i32)) return Atomics.notify(i32, index, n);
  return nativeFutex.wake(i32.buffer as ArrayBuffer, i32.byteOffset + index * 4, n);
}

/**
 * Waits without blocking the event loop. The pending Promise keeps the
 * process alive (like a timer would) unless `ref` is false (like an
 * unref'd timer: the process may exit with it pending; the koffi backend
 * cannot do that for a mapped region's word, its waits hold a libuv pool
 * thread); once it settles, nothing is left behind. An aborted `signal`
 * rejects it with an AbortError.
 */
export function waitAsync(
  i32: Int32Array,
  index: number,
  expected: number,
  timeoutMs?: number,
  signal?: AbortSignal,
  ref = true,
): Promise<WaitResult> {
  // Every argument is checked before any wait or timer starts: a wrong one leaves nothing pending behind.
  checkWord(i32, index, 'waitAsync');
  checkExpected(expected, 'waitAsync');
  const timeout = timeoutOf(timeoutMs, 'waitAsync');
  checkSignal(signal, 'waitAsync');
  checkRef(ref, 'waitAsync');
  if (signal?.aborted) return Promise.reject(abortError(signal));
  return isShared(i32)
    ? waitAsyncShared(i32, index, expected | 0, timeout, signal, ref)
    : waitAsyncNative(i32, index, expected | 0, timeout, signal, ref);
}

function waitAsyncNative(
  i32: Int32Array,
  index: number,
  expected: number,
  timeout: number,
  signal: AbortSignal | undefined,
  ref: boolean,
): Promise<WaitResult> {
  let pending: ReturnType<typeof nativeFutex.waitAsync>;
  try {
    pending = nativeFutex.waitAsync(i32.buffer as ArrayBuffer, i32.byteOffset + index * 4, expected, timeout, ref);
  } catch (err) {
    // A wait that cannot start (koffi out of waits, io_uring refused, the env going away): a rejection, as
    // waitAnyAsync's, not a throw out of a function that returns a promise.
    return Promise.reject(err);
  }
  if (!signal) return pending.promise.then((code) => RESULTS[code]!);
  return new Promise<WaitResult>((resolve, reject) => {
    /** The signal aborted the wait: it rejects with an AbortError once the native wait has settled. */
    let aborted = false;
    /** Aborted, and the wait had ended on its own first (cancel() found nothing to stop): its outcome is real. */
    let abortedAfterEnd = false;
    // The rejection waits for the native wait: on koffi, a worker whose waits have all settled may end,
    // and a pool call of it still running then aborts the process (koffi.ts, "Workers"); its cancel settles
    // once the call has returned. The addon's cancel settles at once: this costs it a microtask, no more.
    const onAbort = (): void => {
      aborted = true;
      abortedAfterEnd = !pending.cancel();
    };
    watchAbort(signal, onAbort);
    pending.promise.then(
      (code) => {
        unwatchAbort(signal, onAbort);
        if (!aborted) return resolve(RESULTS[code]!);
        // A wake the caller gave up before it heard of it goes to the word's next sleeper.
        if (abortedAfterEnd && code === 0) passOn(i32, index, expected);
        reject(abortError(signal));
      },
      (err: unknown) => {
        // The signal no longer holds this wait (nor, through onAbort, its word's buffer).
        unwatchAbort(signal, onAbort);
        reject(aborted ? abortError(signal) : err);
      },
    );
  });
}

function waitAsyncShared(
  i32: Int32Array,
  index: number,
  expected: number,
  timeout: number,
  signal: AbortSignal | undefined,
  ref: boolean,
): Promise<WaitResult> {
  // The same check-and-sleep as wait(), resolved by V8 when notified or timed out.
  const result = Atomics.waitAsync(i32, index, expected, timeout);
  if (!result.async) return Promise.resolve(result.value);
  // V8's waitAsync holds nothing that keeps Node's loop alive: a ref'd timer
  // does, for exactly as long as the wait is pending (none for `ref` false).
  const keepAlive = ref ? setInterval(() => {}, MAX_TIMER_MS) : undefined;
  return new Promise<WaitResult>((resolve, reject) => {
    const settle = (): void => {
      if (keepAlive !== undefined) clearInterval(keepAlive);
      if (signal !== undefined) unwatchAbort(signal, onAbort);
    };
    const onAbort = (): void => {
      settle();
      reject(abortError(signal));
      // Ends V8's pending waiter too. Other waiters on the word wake
      // spuriously, which every waiter tolerates (they re-check).
      Atomics.notify(i32, index);
    };
    if (signal !== undefined) watchAbort(signal, onAbort);
    result.value.then((value: WaitResult) => {
      settle();
      resolve(value);
    });
  });
}

export {
  waitAny,
  waitAnyAsync,
  waitAnyStoppable,
  wakeNative,
  MAX_WAIT_ANY,
  type StoppableWaitAny,
  type WaitTarget,
  type WaitAnyResult,
} from './any.js';
