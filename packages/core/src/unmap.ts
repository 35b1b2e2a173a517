/**
 * Hooks that run just before a region's memory is unmapped (Region.close):
 * what must still be written to the shared memory by this thread before its
 * views go empty. A ring's Promise wait parked on a region announces itself
 * in a WAITERS word; the wait learns of the close only after close() has
 * returned, the view detached by then, and its withdrawal could no longer
 * reach the memory: the word stayed one too high for good, and every later
 * publication of the ring paid a futex wake for a sleeper that was gone.
 *
 * Per thread (module state), keyed by the ArrayBuffer the region maps: a
 * region's memory is unmapped by the thread whose Region object closes it.
 */

const hooks = new WeakMap<ArrayBufferLike, Set<() => void>>();

/**
 * Runs `hook` when the region whose memory `buffer` is gets closed, before
 * its memory goes; returns what forgets it again (call it once the hook is
 * not needed any more). A hook that throws does not stop the others.
 */
export function beforeUnmap(buffer: ArrayBufferLike, hook: () => void): () => void {
  let set = hooks.get(buffer);
  if (set === undefined) {
    set = new Set();
    hooks.set(buffer, set);
  }
  set.add(hook);
  const forSet = set;
  return () => {
    forSet.delete(hook);
  };
}

/** Region.close(): runs (and forgets) the hooks of `buffer`. */
export function runBeforeUnmap(buffer: ArrayBufferLike): void {
  const set = hooks.get(buffer);
  if (set === undefined) return;
  hooks.delete(buffer);
  for (const hook of set) {
    try {
      hook();
    } catch {
      // one hook's failure leaves the others their turn; the memory goes either way
    }
  }
}
