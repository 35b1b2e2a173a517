/**
 * CallLine: serves the Promise verbs of one side of one queue object in the
 * order they were called.
 *
 * Without it, a write() made while an earlier write() of the same object
 * waits for room could find room first (its own try comes before the
 * parked one is woken) and put its message ahead; likewise a read() made
 * while earlier ones wait would take the message the first one was waiting
 * for. So while a call of a side waits (polls or is parked), later calls of
 * that side queue here and start one after the other, each once the one
 * before it has settled.
 *
 * Invariants:
 *  - At most one call of the side waits (or, started from the queue, is
 *    settling) at a time (`busy`); the others are in `#queued`, in call
 *    order.
 *  - A queued call starts only once the promise of the call before it has
 *    settled (a reaction of the promise its caller holds, attached before
 *    the caller gets it, starts the next a microtask later, after the
 *    caller's own await has resumed), one call per settlement: a queued
 *    call holds the line until its own caller's promise settles, even when
 *    it finds its message at once. The promises of a side's calls settle
 *    in call order too, so code that awaits them sees them in that order,
 *    and lastType after each await is that call's message's.
 *  - A started call either settles at once (it found room or a message) or
 *    waits: it calls wait() with its promise before handing it out.
 *
 * Nothing here touches shared memory.
 */
export class CallLine {
  /** A call of this side waits now (it polls or is parked). */
  #busy = false;
  /** The starts of the calls made while another waited, in call order. */
  readonly #queued: (() => void)[] = [];

  /** No call of this side waits and none is queued: a new call may act at once. */
  get idle(): boolean {
    return !this.#busy && this.#queued.length === 0;
  }

  /** Calls of this side waiting or queued now (a snapshot, for tests and inspection). */
  get waiting(): number {
    return (this.#busy ? 1 : 0) + this.#queued.length;
  }

  /**
   * The current call waits, and `settles` is the promise its caller gets:
   * later calls queue until it has settled. Returns `settles`. A call
   * started from the queue holds the line already (occupy), until the
   * promise its caller holds settles.
   */
  wait<T>(settles: Promise<T>): Promise<T> {
    if (this.#occupied) return settles;
    this.#busy = true;
    settles.then(this.#leave, this.#leave);
    return settles;
  }

  /**
   * A call started from the queue: the line is its until `settles`, the
   * promise its caller holds, has settled, whether the call waits or finds
   * its message (or room) at once. Held until then, the next queued call
   * cannot take a message (and set lastType) before this caller resumes.
   */
  occupy(settles: Promise<unknown>): void {
    this.#busy = true;
    this.#occupied = true;
    settles.then(this.#leave, this.#leave);
  }

  /** The call holding the line was started from the queue (occupy). */
  #occupied = false;

  /**
   * Queues a call's `start`, which runs once every call before it has
   * settled. Returns a function that takes the call out of the queue (an
   * abort while it is queued): true if it did, false if it had started.
   */
  queue(start: () => void): () => boolean {
    this.#queued.push(start);
    return () => {
      const at = this.#queued.indexOf(start);
      if (at < 0) return false;
      this.#queued.splice(at, 1);
      return true;
    };
  }

  /**
   * The waiting call settled: the queued calls start a microtask later. The
   * caller's own `await` of the settled call resumes first (its reaction
   * was attached after ours): started at once, the next read would take its
   * message, and set the object's lastType, before that caller looked at
   * the type of the message it got.
   */
  readonly #leave = (): void => {
    this.#busy = false;
    this.#occupied = false;
    if (this.#queued.length !== 0) void RESOLVED.then(this.#startQueued);
  };

  /** The next queued call starts (it occupies the line until its caller's promise settles). */
  readonly #startQueued = (): void => {
    if (this.#busy) return;
    this.#queued.shift()?.();
  };
}

const RESOLVED = Promise.resolve();
