/**
 * Who to tell when an AbortSignal aborts, kept per signal: one 'abort'
 * listener on each signal for its life, shared by every wait that watches
 * it, instead of one addEventListener and removeEventListener per wait.
 * A parked wait registers and unregisters on every park, and Node's
 * EventTarget makes that pair cost microseconds where it matters most: on a
 * loop that has been idle, between a peer's wake-up and the JavaScript it
 * wakes (measured, two processes, 1 ms idle before each round trip: a
 * listener per park added 10–20 µs to a round trip of about 100 µs).
 *
 * A registration is the callback itself (add it once per wait: a Set). The
 * callbacks must not throw; they run once, in registration order, when the
 * signal aborts, and the signal's entry is dropped then. A signal that
 * never aborts keeps one listener (and an empty set) until it is collected.
 * Module state is per thread.
 */

const watchers = new WeakMap<AbortSignal, Set<() => void>>();

/** Calls `callback` when `signal` aborts (not if it already has: the caller checks `aborted` first). */
export function watchAbort(signal: AbortSignal, callback: () => void): void {
  let callbacks = watchers.get(signal);
  if (callbacks === undefined) {
    const set = new Set<() => void>();
    callbacks = set;
    watchers.set(signal, set);
    signal.addEventListener(
      'abort',
      () => {
        watchers.delete(signal);
        for (const each of set) each();
        set.clear();
      },
      { once: true },
    );
  }
  callbacks.add(callback);
}

/** Forgets a callback watchAbort registered for `signal` (nothing if it ran or was never registered). */
export function unwatchAbort(signal: AbortSignal, callback: () => void): void {
  watchers.get(signal)?.delete(callback);
}
