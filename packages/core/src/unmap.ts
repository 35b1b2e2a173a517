/**
 * Hooks that run just before a region's memory is unmapped (Region.close):
 * what must still be written to the shared memory by this thread before its
 * views go empty. A ring's Promise wait parked on a region announces itself
 * in a WAITERS word; the wait learns of the close only after close() has
 * returned, the view detached by then, and its withdrawal could no longer
 * reach the memory: the word stayed one too high for good, and every later
 * publication of the ring paid a futex wake for a sleeper that was gone.
 *
 * Per thread (module state): a region's memory is unmapped by the thread
 * whose Region object closes it. The hooks are one array, so that taking
 * one on and letting it go costs an entry each (an async select over a
 * thousand rings does both a thousand times a round); a close walks it.
 *
 * The thread's exit runs every hook left (process 'exit': a program that
 * ends with a wait parked with `ref: false`, which is what that option is
 * for, never closes its regions): the memory of a region shared with other
 * processes outlives this one, and its words would stay one too high for
 * good. The hooks run before anything unmaps: runBeforeExit is the thread's first
 * 'exit' listener (prepended, whenever it is added), and the koffi
 * backend's worker-exit listener, which unmaps what a worker leaves, calls
 * it first anyway (runBeforeExit); the addon unmaps a worker's mappings
 * from its env cleanup, after 'exit'. A process killed (SIGKILL) runs
 * nothing; LAYOUT.md says what that costs. Nothing runs them either for a
 * worker ended by `worker.terminate()`, which emits no 'exit' in the
 * worker (the addon then unmaps its mappings from its env cleanup, koffi
 * leaves them mapped until the process ends): the words its parked waits
 * announced on stay one too high, as after a SIGKILL. End such a worker by
 * closing its regions, or let it exit.
 */

/** A hook taken on by beforeUnmap; `forget()` lets it go. */
export interface UnmapHook {
  forget(): void;
}

class Entry<A> implements UnmapHook {
  index = -1;

  constructor(
    readonly buffer: ArrayBufferLike,
    readonly run: (arg: A) => void,
    readonly arg: A,
  ) {}

  forget(): void {
    const i = this.index;
    if (i < 0) return;
    this.index = -1;
    const last = entries.pop()!;
    if (last !== (this as Entry<unknown>)) {
      entries[i] = last;
      last.index = i;
    }
  }
}

const entries: Entry<unknown>[] = [];

/**
 * Calls `run(arg)` when the region whose memory `buffer` is gets closed,
 * before its memory goes (once; a hook that throws does not stop the
 * others). forget() the hook once it is not needed any more.
 */
export function beforeUnmap<A>(buffer: ArrayBufferLike, run: (arg: A) => void, arg: A): UnmapHook {
  if (!exitHooked) {
    exitHooked = true;
    // First of the thread's 'exit' listeners, whenever it is added: one added before it (koffi's worker
    // exit, at the worker's first mapping) may unmap, after which the hooks could not reach the memory.
    process.prependOnceListener('exit', runBeforeExit);
  }
  const entry = new Entry(buffer, run, arg);
  entry.index = entries.length;
  entries.push(entry as Entry<unknown>);
  return entry;
}

/** Whether this thread's 'exit' listener (runBeforeExit) is on. */
let exitHooked = false;

/**
 * This thread's exit: runs (and forgets) every hook left, each as a close
 * of its region would. Also called by a backend's own 'exit' listener that
 * unmaps (koffi's, in a worker), so the hooks go first whichever runs first.
 */
export function runBeforeExit(): void {
  run(entries.slice());
}

/** Region.close(): runs (and forgets) the hooks of `buffer`. */
export function runBeforeUnmap(buffer: ArrayBufferLike): void {
  run(entries.filter((entry) => entry.buffer === buffer));
}

/** Runs (and forgets) the hooks `due`, a copy of entries' (a hook may forget others). */
function run(due: Entry<unknown>[]): void {
  for (const entry of due) {
    if (entry.index < 0) continue; // forgotten by a hook that ran before it
    entry.forget();
    try {
      entry.run(entry.arg);
    } catch {
      // one hook's failure leaves the others their turn; the memory goes either way
    }
  }
}
