/**
 * How long a side that cannot proceed (a reader on an empty ring, a writer on
 * a full one) keeps trying before it parks (waiting.ts does the parking):
 *
 *  - the blocking verbs (readSync, writeSync) spin on the thread for up to
 *    SPIN_MICROS_SYNC, paced by SpinPacer;
 *  - the Promise verbs (read, write, for await) try for at most
 *    TRY_MICROS_ASYNC on the spot (a wait that will poll: its first slice,
 *    POLL_SLICE_MICROS; one right after a wake-up of a parked peer: not at
 *    all), then poll cooperatively: they retry in slices of
 *    POLL_SLICE_MICROS, one per turn of the event loop (pollUntil, in the
 *    check phase, as setImmediate does), so other callbacks run between
 *    them, for a window of `poll` µs counted from the start of the wait.
 *    PollPacer decides whether a wait polls at all.
 *
 * Nothing here touches shared memory: `attempt` does (tryRead / tryWrite).
 * Module state (the default poll window, the list of polling waits) is per
 * thread.
 */
import { abortError, ErrorCodes, ShmringRangeError, ShmringTypeError, shown } from '@shmring/core';

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
 * How long (µs) a Promise verb retries on the spot, holding the event loop,
 * before it polls between turns. A turn of the loop costs a few µs (an
 * epoll_wait with a zero timeout, the timers, the check phase), and the
 * reply of a peer that is polling comes 1 to 2 µs after the request: async
 * back-to-back round trips across two processes, p50, 5.3 µs trying once,
 * 2.0–6.4 µs (bimodal) trying for 1 µs, 2.0 µs for 2 µs, 2.0 µs for 5 µs.
 */
export const TRY_MICROS_ASYNC = 2;

/**
 * Default poll window (µs) of the Promise verbs: after a message, a wait
 * retries between event-loop turns for this long before it parks. Parking
 * and being woken costs a wake-up of the event loop (tens of µs on a VM whose
 * idle vCPU halted, more with a helper thread); polling for about as long
 * as that at most doubles the latency of a message that comes just after
 * the window, and catches every one that comes within it. A poll keeps a
 * CPU busy: the window costs up to 50 µs of CPU (plus a few µs of
 * machinery) for each message after which a reader polls in vain. Measured
 * for a reader of a producer that writes at a steady rate: +1.1% of a CPU
 * at 100 messages/s, +3.9% at 830 messages/s (5% at most at 1000/s).
 */
export const DEFAULT_POLL_MICROS = 50;

let defaultPoll = DEFAULT_POLL_MICROS;

/** Checks a poll window (µs): a number >= 0 (Infinity polls until the wait's timeout); `verb` heads a setter's error. */
function checkPoll(micros: unknown, verb?: string): number {
  const head = verb === undefined ? '' : `${verb}: `;
  if (typeof micros !== 'number') {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${head}poll=${shown(micros)} must be a number of microseconds >= 0`);
  }
  if (Number.isNaN(micros) || micros < 0) {
    throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${head}poll=${String(micros)} must be a number of microseconds >= 0`);
  }
  return micros;
}

/**
 * Sets this thread's default poll window (µs) for the Promise verbs of every
 * queue, used by waits that give no `poll` option; returns the previous one.
 * 0 turns polling off: such waits park at once.
 */
export function setDefaultPoll(micros: number): number {
  const previous = defaultPoll;
  defaultPoll = checkPoll(micros, 'setDefaultPoll');
  return previous;
}

/** This thread's default poll window (µs). */
export function getDefaultPoll(): number {
  return defaultPoll;
}

/**
 * Whether the Promise waits of one side of one queue (its readers, or its
 * writers, in this thread) poll before they park. By default a wait polls
 * only if the side is hot: its previous call got a message (or room)
 * without failing. A side that has never had a message, or whose last wait
 * timed out or was aborted, parks at once: polling helps the sides of a
 * conversation, not a reader idle for long, and a thousand idle readers
 * must not poll together.
 *
 * Nor does a hot side poll when this thread has woken a parked peer since
 * its previous wait began and that wait was long (over POLL_PACE times the
 * window). Linux tends to run a woken thread on the CPU of the thread that
 * woke it, and a poll holds that CPU; a peer that was parked answers no
 * sooner than a wake-up anyway. A short previous wait means the peer
 * answers quickly, wake-up included: polling then catches its next message,
 * and two sides that wake each other back to back (once a hiccup parked one
 * of them) find their way back to polling. Where wake-ups take longer than
 * the pace, one such wait in POLL_PROBE polls all the same, for the same
 * reason. Measured on 2 vCPUs (io_uring waits, two processes, medians of
 * 4 to 8 runs): a round trip to a parked echo after 1 ms idle took 225 µs
 * when both sides polled 50 µs after every message, 180–200 µs with this
 * rule and a pace of 2.5, 125–160 µs never polling; back to back, 2.2 µs
 * p50 whichever, p90 10–20 µs polling after every message or with a pace
 * of 2.5, 60–80 µs with a pace of 1 or none. In the event-loop benchmark
 * (the same pattern against a Unix socket in the same run), a pace of 2.5
 * gave 2.06× the socket after 1 ms idle, never polling 1.31× but back to
 * back fell into parking (33–104 µs p50, 0.9–2.9× the socket), and a pace
 * of 1 gave 1.47× idle and 2.15 µs (0.06×) back to back: the pace is 1.
 * (A client whose round trips take ~100 µs would otherwise poll after each
 * request and hold the CPU its woken echo is queued on.)
 *
 * Nor does a hot side poll, not even for a probe, when its messages
 * come further apart than a poll can bridge: its last wait lasted more
 * than POLL_SPARSE windows, or its last wait ended that long before this
 * one began (its program did other things meanwhile, or slept). Without
 * this, a side whose peer happened not to be parked when it answered
 * polled however sparse the conversation was: an echo behind a client that
 * pauses 1 ms polled after 36% of its replies, every time in vain, on the
 * CPU where Linux queues the client it has just woken (a C pair of
 * processes that wake each other ran on one CPU 300 times in 300 after
 * 1 ms idle). Both conditions are needed: the echo's waits last the pause,
 * the client's last a round trip but begin a pause after the last one
 * ended. A call that got its message at once counts as a wait of no time
 * that ended then (below).
 * Two sides parked by a hiccup while back to back keep the rules above
 * (their waits last a wake-up and follow each other), and find their way
 * back to polling as before; a first version that stopped polling after
 * any poll in vain did not where a wake-up takes longer than the window
 * (koffi, threads: 26.7 and 105 µs p50 back to back, 0.54× and 2.94× the
 * Unix socket). Measured in the event-loop benchmark, runs alternating
 * with the rule off: round trip after 1 ms idle (io_uring) 95.7–120 µs,
 * 1.35–1.58× the socket beside it (one more run 1.19× against a slow
 * socket), against 131–137 µs, 1.56–1.89×, without it; back to back
 * 0.035–0.040× the socket either way on io_uring, threads and koffi.
 * The probes once applied to sparse sides too; one wait in eight of each
 * side then polled in vain, and since either side's poll holds the CPU
 * the other is woken on, they moved the whole distribution: a round trip
 * after 1 ms idle, p50 99 and 103 µs with the probes, 81 µs in both runs
 * with neither side polling, beside a Unix socket's 104 and 102 µs.
 * Sparse sides have nothing to recover: two sides back to back again wait
 * short waits, and the rules above apply.
 *
 * A call that found its message (or room) at once ends no wait, but it
 * counts as one that ended then: the side was busy at that moment, not
 * since. (It once counted as "busy until further notice", and a client
 * that sleeps 1 ms between requests whose reply often came during its own
 * write, on the CPU it had just woken its echo on, then polled after a
 * third of its requests, holding that CPU from the echo: a 64-byte round
 * trip after 1 ms idle, two processes, p50 108–126 µs against 80 µs with
 * its polls off, in one run, beside a Unix socket's 94–99 µs.) The clock
 * is read for the first such call after a wait began and then once per
 * period of calls, not each time: performance.now() costs some 25 to 50
 * ns, as much as a whole claim / commit / drain of a small message, and a
 * stamp a few calls old errs towards parking, never towards a poll in vain.
 * The period adapts to the side's pace: 4 calls (AT_ONCE_PERIOD_MIN) for a
 * side that spends more than 6.25 µs on each, up to 64 (AT_ONCE_PERIOD_MAX)
 * for one that calls so fast that 64 calls take at most AT_ONCE_SPAN_MS
 * (claim / commit / drain in one thread: 90 ns a message with a period of 4,
 * 75 ns with 64). A side that slows down is measured again at the end of
 * the period it slowed down in, and any wait starts over. A drain() that
 * took records, and a select() that found one at once, count as calls found
 * at once; but not the drain right after a waitReadable() that waited
 * (queue.ts, drained()): it takes what that wait announced, and the wait's
 * own length, which got() recorded, is what the pacer must judge by.
 *
 * An explicit `poll` option polls as long as it says, always.
 */
export class PollPacer {
  hot = false;
  /** Duration (ms) of this side's last wait that got its message; 0 when a call found one at once. */
  lastWaitMs = 0;
  /** performance.now() when that wait ended, or when a call found its message at once (read once per #period such calls). */
  endedAt = -Infinity;
  /**
   * Whether pollMicros() found this side sparse for the wait that is
   * beginning (its messages come far apart). Such a wait does not try on
   * the spot either (waiting.ts): its message is not due within the try,
   * and the try would hold the CPU the peer it answered is likely woken on.
   */
  sparse = false;
  /** Source of the probes' coin flips (a test may fix it). */
  random: () => number = Math.random;
  /** The clock gotAtOnce stamps with (a test may fix it). */
  clock: () => number = () => performance.now();
  /** Calls found at once since endedAt was last stamped, modulo #period (0: stamp at the next). */
  #unstamped = 0;
  /** Calls found at once per clock read (a power of two in [AT_ONCE_PERIOD_MIN, AT_ONCE_PERIOD_MAX]). */
  #period = AT_ONCE_PERIOD_MIN;
  /** endedAt was stamped by gotAtOnce a whole period ago: the next stamp measures the side's pace. */
  #paced = false;

  /** A call got its message (or room) without waiting: the side is hot and busy now, and its last wait took no time. */
  gotAtOnce(): void {
    this.hot = true;
    this.lastWaitMs = 0;
    if (this.#unstamped === 0) {
      const now = this.clock();
      if (this.#paced) this.#period = periodFor((now - this.endedAt) / this.#period);
      this.endedAt = now;
      this.#paced = true;
    }
    this.#unstamped = (this.#unstamped + 1) & (this.#period - 1);
  }

  /** Calls found at once per clock read (for tests). */
  get atOncePeriod(): number {
    return this.#period;
  }

  /** A wait that began at `started` got its message (or room) at `now` (performance.now(), ms). */
  got(started: number, now: number): void {
    this.hot = true;
    this.lastWaitMs = now - started;
    this.endedAt = now;
    this.#unstamped = 0;
    this.#paced = false;
  }

  /**
   * The poll window (µs) of a wait that begins at `now` (performance.now(),
   * ms): `explicit` (the wait's `poll` option) if given, else as above.
   */
  pollMicros(explicit: number | undefined, wokePeer: boolean, now: number): number {
    this.#unstamped = 0; // a wait began: the next call found at once is stamped
    this.#paced = false; // and the interval to it is no pace of calls
    this.sparse = false;
    if (explicit !== undefined) return checkPoll(explicit);
    if (!this.hot) return 0;
    const waitedMicros = this.lastWaitMs * 1000;
    const sparse = POLL_SPARSE * defaultPoll;
    // Sparse: the last wait was long, or ended long before this one (the side did other things, or slept).
    if (waitedMicros > sparse || (now - this.endedAt) * 1000 > sparse) {
      this.sparse = true;
      return 0;
    }
    if (!wokePeer || waitedMicros <= POLL_PACE * defaultPoll) return defaultPoll;
    return this.random() < POLL_PROBE ? defaultPoll : 0;
  }
}

/**
 * gotAtOnce reads the clock for at least one call in this many while a side
 * stays busy: a stamp at most 3 calls old judges a side that spends up to
 * 100 µs on each message busy (8 windows over 4 calls).
 */
const AT_ONCE_PERIOD_MIN = 4;
/** ... and for at most one in this many (a side that calls every 0.78 µs or faster). */
const AT_ONCE_PERIOD_MAX = 64;
/** The longest a period of calls found at once above the minimum is meant to last (ms): its stamps are at most this old. */
const AT_ONCE_SPAN_MS = 0.05;

/** The stamping period (a power of two) for a side that spends `perCallMs` on each call found at once. */
function periodFor(perCallMs: number): number {
  let period = AT_ONCE_PERIOD_MAX;
  while (period > AT_ONCE_PERIOD_MIN && period * perCallMs > AT_ONCE_SPAN_MS) period >>= 1;
  return period;
}

/** After waking a peer, a wait polls if the previous one lasted at most this many poll windows. */
const POLL_PACE = 1;
/** A wait polls only if the previous one lasted, and ended, at most this many poll windows before (else never, not even a probe). */
const POLL_SPARSE = 8;
/** Share of the waits after a wake-up (and a long wait) that poll all the same (probes). */
const POLL_PROBE = 1 / 8;

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
 * spinning works and stay with it. The first wait spins. The Promise verbs
 * do not spin: they poll (PollPacer).
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

/** Looks at one queue's words between two looks at the clock while spinning (or polling). */
const SPIN_CLOCK_EVERY = 64;

/**
 * Calls `attempt` until it returns something other than undefined (returned)
 * or the clock (performance.now(), ms) passes `until` (undefined). `cost`:
 * how many queues one attempt looks at (a select's entries); the clock is
 * read once per SPIN_CLOCK_EVERY looks, and after every attempt that costs
 * that many or more. Always attempts at least once, and up to
 * SPIN_CLOCK_EVERY times: call it only with a budget.
 */
export function spin<T>(attempt: () => T | undefined, until: number, cost = 1): T | undefined {
  for (let unclocked = 0; ; ) {
    const result = attempt();
    if (result !== undefined) return result;
    unclocked += cost;
    if (unclocked >= SPIN_CLOCK_EVERY) {
      if (performance.now() >= until) return undefined;
      unclocked = 0;
    }
  }
}

/** A wait that polls: one attempt per turn of the event loop until `until`. */
interface Poll {
  attempt: () => unknown;
  /** Queues one attempt looks at (see spin). */
  cost: number;
  until: number;
  signal: AbortSignal | undefined;
  stop: { readonly stopped: boolean } | undefined;
  resolve: (result: unknown) => void;
  reject: (err: unknown) => void;
}

/**
 * The waits of this thread that poll; one setImmediate per turn serves them
 * all. An array walked by index: a slice walks it some hundred thousand
 * times a second, and a Set's iterator would be garbage each time.
 */
const polls: Poll[] = [];
let ticking = false;

/**
 * How long (µs) one turn of polling retries before it lets the loop turn.
 * A turn of Node's loop allocates (setImmediate's bookkeeping: some 700
 * bytes), so a poll that gave the loop back after each attempt would make
 * some 300,000 turns a second and a minor GC every few milliseconds, each
 * as long as a poll slice; slices of 10 µs make ten times fewer turns, hold
 * the other callbacks for at most 10 µs at a time, and catch a message
 * within the slice instead of a turn later.
 */
export const POLL_SLICE_MICROS = 10;

/** One turn of polling, in the check phase: every poll attempts until the slice is over; schedules the next turn while anyone polls. */
function tick(): void {
  let now = performance.now();
  const sliceEnd = now + POLL_SLICE_MICROS / 1000;
  let unclocked = 0; // attempts since `now` was read
  for (;;) {
    for (let i = 0; i < polls.length; ) {
      const poll = polls[i]!;
      let result: unknown;
      try {
        if (poll.signal?.aborted) throw abortError(poll.signal);
        if (poll.stop?.stopped) throw abortError();
        result = poll.attempt();
      } catch (err) {
        drop(i);
        poll.reject(err);
        continue;
      }
      unclocked += poll.cost;
      if (result !== undefined) {
        drop(i);
        poll.resolve(result);
      } else if (now >= poll.until) {
        drop(i);
        poll.resolve(undefined);
      } else {
        i++;
      }
    }
    if (polls.length === 0) break;
    if (unclocked >= SPIN_CLOCK_EVERY) {
      // performance.now() allocates (in Node 20): read it once per SPIN_CLOCK_EVERY looks at a queue.
      now = performance.now();
      unclocked = 0;
      if (now >= sliceEnd) break;
    }
  }
  if (polls.length === 0) ticking = false;
  else setImmediate(tick);
}

/** Removes polls[i] (the last one takes its place). */
function drop(i: number): void {
  const last = polls.pop()!;
  if (i < polls.length) polls[i] = last;
}

/**
 * Calls `attempt` in each turn of the event loop (for a slice of
 * POLL_SLICE_MICROS), from the next turn on, until it returns something (the
 * promise resolves with it) or the clock passes `until` (resolves
 * undefined). Rejects with what `attempt` throws, or an AbortError once
 * `signal` is aborted or `stop.stopped` is set (waiting.ts's WaitStop). Other callbacks run between two slices: the loop is
 * never held for longer than a slice (or one attempt of each polling wait).
 * `cost`: how many queues one attempt looks at, as spin's.
 * A pending poll keeps the process alive (the immediate is ref'd).
 */
export function pollUntil<T>(
  attempt: () => T | undefined,
  until: number,
  signal: AbortSignal | undefined,
  stop?: { readonly stopped: boolean },
  cost = 1,
): Promise<T | undefined> {
  return new Promise<T | undefined>((resolve, reject) => {
    polls.push({ attempt, cost, until, signal, stop, resolve: resolve as (result: unknown) => void, reject });
    if (!ticking) {
      ticking = true;
      setImmediate(tick);
    }
  });
}
