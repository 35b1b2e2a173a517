/**
 * Who to tell when an AbortSignal aborts, kept per signal: one 'abort'
 * listener on each signal, shared by every wait that watches it, instead
 * of one addEventListener and removeEventListener per wait. A parked wait
 * registers and unregisters on every park, and Node's EventTarget makes
 * that pair cost microseconds where it matters most: on a loop that has
 * been idle, between a peer's wake-up and the JavaScript it wakes
 * (measured, two processes, 1 ms idle before each round trip: a listener
 * per park added 10–20 µs to a round trip of about 100 µs).
 *
 * The listener stays while waits come and go. Once no wait has watched a
 * signal for a sweep period (SWEEP_MS), it is removed: Node keeps a signal
 * made by AbortSignal.any() or AbortSignal.timeout() alive while it has
 * abort listeners, so a listener kept for the signal's life would keep such
 * a signal, made per call, alive for ever.
 *
 * A registration is the callback itself (a Set: registering it twice
 * counts once). Callbacks run once, in registration order, when the signal
 * aborts; one unregistered meanwhile does not run; one that throws does
 * not stop the others (its error is rethrown in a microtask, as an
 * uncaught exception, as an EventTarget listener's would be). Module state
 * is per thread. Shared by the waits of every package (@shmring/futex's,
 * @shmring/ringbuf's, a channel's receive and request).
 */

/** ms a signal's listener stays with no wait watching it (a program that waits on it again soon keeps it). */
const SWEEP_MS = 1000;

interface Watchers {
  readonly callbacks: Set<() => void>;
  readonly listener: () => void;
}

const watched = new WeakMap<AbortSignal, Watchers>();
/** Signals whose last watcher left: their listener goes at the next sweep if none came back. */
const unwatched = new Set<AbortSignal>();
let sweeping: NodeJS.Timeout | undefined;

function sweep(): void {
  sweeping = undefined;
  for (const signal of unwatched) {
    const entry = watched.get(signal);
    if (entry !== undefined && entry.callbacks.size === 0) {
      signal.removeEventListener('abort', entry.listener);
      watched.delete(signal);
    }
  }
  unwatched.clear();
}

function dispatch(signal: AbortSignal, callbacks: Set<() => void>): void {
  try {
    // Live iteration: a callback that unregisters another one (not run yet) keeps it from running.
    for (const callback of callbacks) {
      callbacks.delete(callback);
      try {
        callback();
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  } finally {
    watched.delete(signal);
    unwatched.delete(signal);
  }
}

/** Calls `callback` once when `signal` aborts (in a microtask if it already has). */
export function watchAbort(signal: AbortSignal, callback: () => void): void {
  if (signal.aborted) {
    queueMicrotask(callback);
    return;
  }
  let entry = watched.get(signal);
  if (entry === undefined) {
    const callbacks = new Set<() => void>();
    entry = { callbacks, listener: () => dispatch(signal, callbacks) };
    watched.set(signal, entry);
    signal.addEventListener('abort', entry.listener, { once: true });
  }
  entry.callbacks.add(callback);
}

/** Forgets a callback watchAbort registered for `signal` (nothing if it ran or was never registered). */
export function unwatchAbort(signal: AbortSignal, callback: () => void): void {
  const entry = watched.get(signal);
  if (entry === undefined || !entry.callbacks.delete(callback) || entry.callbacks.size !== 0) return;
  unwatched.add(signal);
  if (sweeping === undefined) {
    sweeping = setTimeout(sweep, SWEEP_MS);
    sweeping.unref();
  }
}
