/**
 * select / selectSync: wait until the first of several queues is ready.
 *
 * An entry is a queue (SpscRing, MpmcQueue, MpscRing, or a Broadcast
 * subscriber), meaning "ready to read": a message is published, or the
 * queue is closed (so a read would not wait: it returns what is left or
 * throws ERR_SHMRING_CLOSED); or `{ queue, write: length }` (SpscRing,
 * MpmcQueue, MpscRing, or a Broadcast publisher: a lossy one is always
 * ready), meaning "room to write a message of `length` bytes" (or closed: a
 * write would throw instead of waiting). A queue this side closed (or
 * detached), before the call or while it waits, is never ready: its
 * object's verbs can only throw, so the call throws ERR_SHMRING_CLOSED
 * naming the entry, as it does for one whose region is closed. The
 * result is the index of the ready entry in the array. Nothing is
 * consumed: the caller then uses tryRead / tryWrite (or drain / claim) on
 * that queue. With several
 * consumers of one MpmcQueue (or producers, of it or of an MpscRing),
 * another may take the message (or the room) first: tryRead then returns
 * null; select again.
 *
 * Each kind decides its own readiness from its own words (readReady /
 * writeReady in its class, queue.ts): this module reads no ring word but
 * the wait blocks' SIGNAL and WAITERS, which every kind lays out alike.
 * An MpscRing is also ready to read when a claim stuck at its head past
 * the ring's peerTimeoutMs has a dead claimer (tryRead takes it back).
 *
 * Fairness: the entries are scanned in cyclic order from a start index, and
 * the first ready one wins. The start is one past the index returned last
 * for the same array (the cursor is kept per array object, weakly); for an
 * array never passed before (a loop that writes `select([a, b])` makes a
 * new one each call), one past the index returned last by a select whose
 * entries began with the same queue (kept per queue object, weakly), mod
 * the length. So a loop that selects over the same entries, in one array or
 * in a new array of the same queues each time, is served round robin: an
 * entry that stays ready is returned at least once in every
 * `entries.length` calls, however busy the others are, and whatever other
 * selects of the thread do meanwhile over lists that begin elsewhere.
 *
 * Waiting follows the parking protocol of docs/LAYOUT.md ("Waiting") on
 * every queue at once: for each distinct wait block take the SIGNAL
 * snapshot, then announce in every WAITERS, then re-check every entry, then
 * wait on all the SIGNAL words (waitAny / waitAnyStoppable of @shmring/futex);
 * every announcement is withdrawn when the round ends, whatever ends it.
 * The argument of LAYOUT.md holds per queue: a publication on queue j that
 * the re-check missed sees our announcement in WAITERS_j and changes
 * SIGNAL_j after our snapshot of it, so the wait on all the words returns.
 *
 * selectSync waits in futex_waitv, a native wait: over a SharedArrayBuffer
 * ring it announces itself with NATIVE_WAITER (0x10000) instead of 1, so that
 * the publisher also makes a native wake (Atomics.notify does not reach it).
 * One distinct word needs no futex_waitv: it waits as readSync does. select
 * waits with waitAnyStoppable (one native wait on all the words where async
 * waits use io_uring, else one asynchronous wait per word) and announces 1.
 *
 * Like every wait, a select first publishes what this thread holds corked
 * (held.ts); it does so before its first look, so that the room it sees for
 * a corked producer is counted from everything that producer wrote.
 */
import {
  abortError,
  beforeUnmap,
  checkOptionNames,
  ErrorCodes,
  ShmringError,
  ShmringRangeError,
  ShmringTypeError,
  unwatchAbort,
  watchAbort,
  type UnmapHook,
} from '@shmring/core';
import { MAX_WAIT_ANY, type StoppableWaitAny, wait, waitAny, waitAnyStoppable, type WaitAnyResult, type WaitTarget } from '@shmring/futex';
import { publishHeld } from './held.js';
import { pollUntil, PollPacer, spin, SPIN_MICROS_SYNC, SpinPacer, TRY_MICROS_ASYNC } from './pacing.js';
import { checkWaitOptions, isDetachedAccess, optionNames, Queue, shown, WRITE_BLOCK, type OptionNames } from './queue.js';
import {
  checkPeriodOf,
  deadlineOf,
  fenceIfAsked,
  NATIVE_WAITER,
  PeerChecks,
  passOn,
  pollThenPark,
  timedOut,
  type WaitBlock,
} from './waiting.js';
import { unwatch, watch, type Watched } from './watchdog.js';

/** A queue (ready to read), or a queue with the length of a message to write (room for it). */
export type SelectEntry = Queue | { readonly queue: Queue; readonly write: number };

/** The queues' wait options (WaitOptions), read for a select over several queues. */
export interface SelectOptions {
  /** Give up after this many milliseconds with ERR_SHMRING_TIMEOUT. Default: no limit. */
  timeoutMs?: number;
  /**
   * Abort the wait (AbortError). select sees it whenever it fires;
   * selectSync only when it is already aborted as the call would start to
   * wait (its thread is blocked meanwhile: stop it with timeoutMs, or by
   * closing one of the queues through another object, in another thread or
   * process, which makes that entry ready).
   */
  signal?: AbortSignal;
  /**
   * How soon a wait notices that the other side of one of the queues is gone
   * (ERR_SHMRING_PEER_DEAD, with the entry's `index`), in ms: an SpscRing's
   * peer, or every producer (consumer) of a MpmcQueue, which also recovers
   * the slots of dead sides, as its own waits do; every producer of an
   * MpscRing read (whose consumer also takes back dead claims), the
   * consumer of an MpscRing written; a Broadcast subscriber's publisher (a
   * lossless publisher waiting frees the slots of dead subscribers and
   * waits on for the live ones). Default 1000; Infinity
   * never checks. select is checked by the thread's
   * watchdog, selectSync between naps of a quarter of it.
   */
  peerTimeoutMs?: number;
  /**
   * select only: microseconds during which it re-checks once per turn of the
   * event loop before it parks. Default: the thread's default poll window
   * (setDefaultPoll) when this thread's previous select returned an entry,
   * otherwise 0; and 0 when its entries come far apart (its previous wait
   * lasted, or ended, more than 8 windows before), as for the Promise
   * reads (one PollPacer per thread decides).
   */
  poll?: number;
  /**
   * Microseconds of re-checking on the spot before parking (or polling).
   * selectSync: default 20, skipped after a long wait as readSync does;
   * select: default 2. Never past timeoutMs (nor is select's poll):
   * timeoutMs 0 looks once and throws ERR_SHMRING_TIMEOUT at once.
   */
  spin?: number;
  /**
   * select only: false lets the process exit while the select is parked, as
   * an unref'd timer does (as the `ref` of the queues' Promise verbs).
   * Default true: a pending select keeps the event loop alive. The koffi
   * backend cannot honour false for a mapped region's words: its waits hold
   * a libuv pool thread.
   */
  ref?: boolean;
}

/** The options select and selectSync take: `poll` and `ref` are select's (selectSync's wait looks at neither). */
const SELECT_OPTIONS = optionNames('timeoutMs', 'peerTimeoutMs', 'spin', 'poll', 'signal', 'ref');
const SELECT_SYNC_OPTIONS = optionNames('timeoutMs', 'peerTimeoutMs', 'spin', 'signal');

/** What select throws for a dead peer: ERR_SHMRING_PEER_DEAD, naming the entry. */
export interface SelectPeerDeadError extends ShmringError {
  /** Index of the entry whose peer died. */
  index: number;
}

// ---- the entries, checked ----

/** One entry of a call: the queue, the side it waits for, and the wait block of that side. */
interface Probe {
  readonly queue: Queue;
  /** The queue's control words (header and blocks) when the probe was made: the wait words. */
  readonly ctl: Int32Array;
  /** Waiting for room to write (else for a message to read). */
  readonly write: boolean;
  /** The message length of a write entry; -1 for a read entry. */
  readonly length: number;
  readonly block: WaitBlock;
}

/** A queue object's probes, made once per object and control view (not per call). */
interface Probes {
  /** The queue's ctl when these were made: once it differs (close swaps it), the queue is closed. */
  readonly ctl: Int32Array;
  /** The { queue, write } entry of this queue whose keys were checked last (probeOf): not walked again. */
  walked: object | undefined;
  /** The queue's read probe, and its last write probe. */
  read: Probe | undefined;
  write: Probe | undefined;
}

const probesOf = new WeakMap<Queue, Probes>();

function closedError(index: number, what: string): ShmringError {
  return new ShmringError(
    ErrorCodes.CLOSED,
    `${what}: entry ${index} is a queue this side closed or detached (or whose region is closed); it can never be ready: ` +
      'leave it out of the entries, or attach a new object to its ring',
  );
}

/**
 * What a wait that failed throws: a region closed under it detaches the
 * views, and the wait's last Atomics on them (withdrawing its
 * announcement) throw a raw TypeError, reported as ERR_SHMRING_CLOSED for
 * the entry whose memory went.
 */
function detachedFailure(call: Call, err: unknown, what: string): unknown {
  if (!isDetachedAccess(err)) return err;
  const index = call.probes.findIndex((p) => p.ctl.length === 0);
  return index >= 0 ? closedError(index, what) : err;
}

/** A write entry's message length: an integer (TypeError, the value shown as shown() shows it: '4' quoted) in [0, 2^31 − 1] (RangeError). */
function checkLength(length: unknown, index: number, what: string): number {
  if (typeof length !== 'number' || !Number.isInteger(length)) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${what}: entries[${index}].write=${shown(length)} must be an integer, the length of the message to find room for`,
    );
  }
  if (length < 0 || length > 0x7fffffff) {
    throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${what}: entries[${index}].write=${length} is out of range [0, 2147483647]`);
  }
  return length;
}

/** The keys of a { queue, write } entry. */
const ENTRY_KEYS: readonly string[] = ['queue', 'write'];

function probeOf(entry: SelectEntry, index: number, what: string): Probe {
  let queue: unknown = entry;
  let length = -1;
  let probes: Probes | undefined;
  let walked: object | undefined; // a { queue, write } entry whose keys were checked
  if (!(entry instanceof Queue) && entry !== null && typeof entry === 'object' && 'queue' in entry) {
    queue = entry.queue;
    probes = queue instanceof Queue ? probesOf.get(queue) : undefined;
    // Refuses a key the entry does not have (`wirte`, `timeoutMs`): ignored, it would leave the entry other than
    // its writer meant, without a word. As checkWaitOptions does for options, the keys of the entry last checked
    // for the same queue are not walked again (a key added to that very object afterwards is not seen).
    if (probes?.walked !== entry) checkOptionNames(entry, ENTRY_KEYS, `${what}: entries[${index}]`);
    walked = entry;
    length = checkLength(entry.write, index, what);
  }
  const write = length >= 0;
  // Each kind says what it waits for (queue.ts, selectLimit): a Broadcast's publisher only writes, its subscribers only read.
  const largest = queue instanceof Queue ? queue['selectLimit'](write) : -1;
  if (largest < 0) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${what}: entries[${index}] must be a SpscRing, MpmcQueue, MpscRing or Broadcast subscriber (ready to read) ` +
        'or { queue, write: length } with a SpscRing, MpmcQueue, MpscRing or Broadcast publisher (room to write)',
    );
  }
  const q = queue as Queue;
  // close() swaps the views for empty ones; a closed region detaches them (length 0).
  const ctl = q['ctl'];
  if (ctl.length === 0) throw closedError(index, what);
  if (walked === undefined) probes = probesOf.get(q); // a plain queue entry: not looked up above
  if (probes === undefined || probes.ctl !== ctl) {
    probes = { ctl, walked: undefined, read: undefined, write: undefined };
    probesOf.set(q, probes);
  }
  if (walked !== undefined) probes.walked = walked;
  const cached = write ? probes.write : probes.read;
  if (cached !== undefined && cached.length === length) return cached;
  if (length > largest) {
    throw new ShmringRangeError(
      ErrorCodes.MESSAGE_TOO_LARGE,
      `${what}: entries[${index}] asks for room for ${length} bytes; the queue's largest message is ${largest}`,
    );
  }
  const probe: Probe = { queue: q, ctl, write, length, block: write ? WRITE_BLOCK : q.readBlock };
  if (write) probes.write = probe;
  else probes.read = probe;
  return probe;
}

interface Call {
  readonly probes: Probe[];
  /** performance.now() when the call started. */
  readonly started: number;
  readonly deadline: number;
  /** How often (ms) a parked call looks at the peers: a quarter of peerTimeoutMs, in [1, 1000]; Infinity: never. */
  readonly checkMs: number;
  /** The entry a peer check found dead (deadEntry), for peerDead: a second look might find its peer replaced, or another. */
  dead: number;
}

function checkCall(
  entries: readonly SelectEntry[],
  options: SelectOptions | undefined,
  what: string,
  known: OptionNames,
  most: number,
): Call {
  if (!Array.isArray(entries)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${what} needs an array of queues / { queue, write } entries`);
  }
  if (entries.length === 0) throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${what} needs at least one entry`);
  if (entries.length > most) {
    throw new ShmringRangeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${what}: ${entries.length} entries; it waits on at most ${most} (futex_waitv's limit)`,
    );
  }
  // Each option's type and range, with its class, before anything else; peerTimeoutMs as the queues' waits take it (0 included).
  checkWaitOptions(options, what, known);
  // Index by index, not map(): a hole of a sparse array is an entry too (undefined, refused by name).
  const probes: Probe[] = [];
  for (let i = 0; i < entries.length; i++) probes.push(probeOf(entries[i]!, i, what));
  const started = performance.now();
  const deadline = deadlineOf(options, started);
  return { probes, started, deadline, checkMs: checkPeriodOf(options), dead: -1 };
}

// ---- readiness: each kind reads its own words (readReady / writeReady, queue.ts) ----

/**
 * True when the entry's verb would not wait now: a message / room is there,
 * or the ring is closed. False for a queue this side closed (or detached)
 * since the call began: it can never be ready (scan throws for it).
 */
function ready(p: Probe): boolean {
  return p.queue['ctl'] === p.ctl && (p.write ? p.queue['writeReady'](p.length) : p.queue['readReady']());
}

// ---- fairness ----

/** One past the index returned last, per entries array. */
const cursors = new WeakMap<readonly SelectEntry[], number>();
/** One past the index returned last, per the queue of the first entry (for an array not seen before). */
const firstCursors = new WeakMap<Queue, number>();

/** The queue of a select entry. */
const queueOf = (entry: SelectEntry): Queue => (entry instanceof Queue ? entry : entry.queue);

function startOf(entries: readonly SelectEntry[]): number {
  return (cursors.get(entries) ?? firstCursors.get(queueOf(entries[0]!)) ?? 0) % entries.length;
}

/**
 * The index of the first ready entry from `start` on (cyclic), or -1.
 * Throws ERR_SHMRING_CLOSED for an entry this side closed (or detached)
 * since the call began, as checkCall does for one closed before: its views
 * are swapped, so none of its verbs would do anything but throw that.
 */
function scan(probes: readonly Probe[], start: number, what: string): number {
  const n = probes.length;
  for (let k = 0, i = start; k < n; k++, i = i + 1 === n ? 0 : i + 1) {
    const p = probes[i]!;
    if (p.queue['ctl'] !== p.ctl) throw closedError(i, what);
    if (p.write ? p.queue['writeReady'](p.length) : p.queue['readReady']()) return i;
  }
  return -1;
}

/** Moves the cursors on past `index`; the first entry's queue as the call found it (the array may have changed since). */
function chosen(entries: readonly SelectEntry[], index: number, call: Call): number {
  cursors.set(entries, index + 1);
  firstCursors.set(call.probes[0]!.queue, index + 1);
  return index;
}

// ---- the parking protocol over every entry ----

/** One distinct wait word of a call (entries on the same ring and side share it). */
interface Word {
  readonly ctl: Int32Array;
  readonly block: WaitBlock;
  /** What this waiter adds to WAITERS: 1, or NATIVE_WAITER (a futex_waitv waiter on a SharedArrayBuffer); fixed by wordsToWait. */
  unit: number;
  /** The probes that wait on this word (several when entries are objects over one ring, or one object twice). */
  readonly probes: Probe[];
  /** The SIGNAL snapshot of this round. */
  seen: number;
  /** An async select's hook for its region's close, while announced (see announce). */
  unmapHook?: UnmapHook | undefined;
  /** The announcement was withdrawn by that hook, the memory still mapped. */
  withdrawnAtUnmap?: boolean;
}

/**
 * Announces on `w`. An async select's announcement is withdrawn by the
 * region's close() if that comes first, while its memory is still there
 * (core's beforeUnmap): learnt of only once close() has returned, the
 * withdrawal could no longer reach the memory, and the word stayed one too
 * high for good (a futex wake for nobody at every later publication). A
 * blocking select's thread cannot close its regions meanwhile.
 */
function announce(w: Word, blocking: boolean): void {
  // Announce on this queue; pairs with unpark()'s load(WAITERS): from here on, its publishers bump its SIGNAL and wake.
  Atomics.add(w.ctl, w.block.waiters, w.unit);
  if (blocking) return;
  w.unmapHook = beforeUnmap(w.ctl.buffer, withdrawAtUnmap, w);
}

/** beforeUnmap's hook of an announced word: withdraws while the memory is still mapped (the unmap settles the select next). */
function withdrawAtUnmap(w: Word): void {
  w.unmapHook = undefined;
  // Withdraws our announcement: its publishers stop waking us.
  Atomics.sub(w.ctl, w.block.waiters, w.unit);
  w.withdrawnAtUnmap = true;
}

/**
 * The distinct wait words of the probes: two probes name one SIGNAL word
 * when they share its memory and byte (two objects over one ring do).
 * Linear in the number of probes (a select may have thousands).
 * `nativeIfSeveral`: a blocking select, which waits on one word as
 * readSync does (Atomics.wait on a SharedArrayBuffer) and on several in
 * futex_waitv, whose waiters on a SharedArrayBuffer count NATIVE_WAITER.
 */
function wordsToWait(probes: readonly Probe[], nativeIfSeveral: boolean): Word[] {
  const words: Word[] = [];
  // Per buffer: the words seen, by the byte offset of their SIGNAL in it.
  const byBuffer = new Map<ArrayBufferLike, Map<number, Word>>();
  for (const p of probes) {
    const at = p.ctl.byteOffset + p.block.signal * 4;
    let seen = byBuffer.get(p.ctl.buffer);
    if (seen === undefined) byBuffer.set(p.ctl.buffer, (seen = new Map()));
    const known = seen.get(at);
    if (known !== undefined) {
      known.probes.push(p);
      continue;
    }
    const word: Word = { ctl: p.ctl, block: p.block, unit: 1, probes: [p], seen: 0 };
    seen.set(at, word);
    words.push(word);
  }
  if (nativeIfSeveral && words.length > 1) {
    for (const w of words) if (w.ctl.buffer instanceof SharedArrayBuffer) w.unit = NATIVE_WAITER;
  }
  return words;
}

/**
 * Index of an entry whose peer is gone, or -1. The queue's own check of a
 * parked side (protected; select parks on the queue's behalf): SpscRing
 * and a Broadcast subscriber look at the registered peer; MpmcQueue
 * recovers a slot a dead side holds; MpscRing takes back a dead claim at
 * its head; a Broadcast publisher frees dead subscribers' slots and never
 * reports death.
 */
function deadEntry(call: Call): number {
  for (let i = 0; i < call.probes.length; i++) {
    const p = call.probes[i]!;
    if (!(p.write ? p.queue['consumerAlive']() : p.queue['producerAlive']())) return i;
  }
  return -1;
}

/** ERR_SHMRING_PEER_DEAD for the entry whose peer is gone: the queue's own error (naming its ring), prefixed with the entry, and its `index`. */
function peerDead(call: Call, what: string): SelectPeerDeadError {
  const index = call.dead;
  const p = call.probes[index]!;
  const err = p.queue['peerDeadError'](`${what}: entry ${index}`, !p.write) as SelectPeerDeadError;
  err.index = index;
  return err;
}

/**
 * After a wait that slept: the publication that woke it may have been meant
 * for another sleeper too (a publisher wakes one), and a select takes
 * nothing itself. For every ready word with sleepers left, the chosen
 * queue's own included, pass a wake-up on, so a parked read() of that
 * queue (of this object, of another in another thread or process) or a
 * parked reader of another MpmcQueue is not left asleep beside a message
 * because this select took its wake-up. A sleeper so woken for nothing
 * (the select's caller took the message first) re-checks and parks again.
 */
function handOn(words: readonly Word[]): void {
  for (const w of words) handOnWord(w);
}

function handOnWord(w: Word): void {
  // Observes the other sleepers' announcements (ours are withdrawn), as passOn does; first, because it is
  // one load on the line just written, where readiness reads the ring's other lines: most words have none.
  if (Atomics.load(w.ctl, w.block.waiters) === 0 || !w.probes.some(ready)) return;
  passOn(w.ctl, w.block);
}

/**
 * handOn for a select that slept and then fails (an entry closed or
 * detached under it, a dead peer, its region closed): it takes nothing,
 * so a wake-up it took goes on all the same. A word whose region is gone
 * (its views detached: the look throws) has nobody to hand it to.
 */
function handOnFailing(words: readonly Word[]): void {
  for (const w of words) {
    try {
      handOnWord(w);
    } catch {
      // detached: its memory, and its sleepers' words, are gone
    }
  }
}

/**
 * Withdraws the first `announced` announcements of `words`, each on its
 * own: a region closed under the call detaches its views (that one's
 * Atomics.sub throws, and its memory needs nothing more), and the others
 * must still go, or their publishers would wake for nobody ever after.
 */
function withdraw(words: readonly Word[], announced: number): void {
  for (let k = 0; k < announced; k++) {
    const w = words[k]!;
    w.unmapHook?.forget();
    w.unmapHook = undefined;
    if (w.withdrawnAtUnmap === true) {
      w.withdrawnAtUnmap = false; // by the close, before the unmap
      continue;
    }
    try {
      // Withdraws our announcement: its publishers stop waking us.
      Atomics.sub(w.ctl, w.block.waiters, w.unit);
    } catch {
      // detached (the region was closed): nothing of it is left to withdraw from
    }
  }
}

/** One round's wait the protocol asks its driver for: until a SIGNAL word differs from `seen`, at most `ms`. */
interface Nap {
  readonly words: readonly Word[];
  readonly ms: number;
}

/** What a driver answers a nap with: the futex wait's result, or that a peer is gone. */
type NapResult = WaitAnyResult | typeof PEER_GONE;
const PEER_GONE = 'peer-gone';

/**
 * The protocol, once for both drivers (as parkSteps in waiting.ts): yields
 * each wait to make and receives its result, until an entry is ready;
 * returns its index. Throws on timeout, and when the driver answers
 * PEER_GONE and one last scan finds nothing ready (a dead peer publishes
 * nothing more). A driver that fails a wait throws into the generator, so
 * the announcements are always withdrawn.
 */
function* parkSteps(
  call: Call,
  start: number,
  options: SelectOptions | undefined,
  what: string,
  blocking: boolean,
  napMs: number,
): Generator<Nap, number, NapResult> {
  const probes = call.probes;
  const words = wordsToWait(probes, blocking);
  let slept = false;
  for (;;) {
    let announced = 0;
    let i = -1;
    let failed = true; // until the round ends without throwing
    try {
      // Snapshots of every SIGNAL, each taken before its announcement (LAYOUT.md); pairs with unpark()'s add(SIGNAL).
      // In the try: a region closed under a select that slept detaches its views here too, and the wake-up the
      // last round took must still go on (finally).
      for (const w of words) w.seen = Atomics.load(w.ctl, w.block.signal);
      // Announce on every queue; pairs with unpark()'s load(WAITERS): from here on, each publisher bumps its SIGNAL and wakes.
      for (const w of words) {
        announce(w, blocking);
        announced++;
      }
      let asked = false; // one heavy fence serves every ring: it is global
      for (const w of words) asked ||= w.block.asksHeavyFence?.(w.ctl) === true;
      const longest = fenceIfAsked(asked);
      i = scan(probes, start, what); // the re-check of every entry, after every announcement
      if (i < 0) {
        const left = call.deadline - performance.now();
        if (left <= 0) throw timedOut(what, options);
        // Before the nap: a check that throws into the generator after the nap took a wake-up still hands it on.
        slept = true;
        const result = yield { words, ms: Math.min(left, napMs, longest) };
        if (result === PEER_GONE) {
          i = scan(probes, start, what); // what the dead peer published before it died
          if (i < 0) throw peerDead(call, what);
        }
      }
      failed = false;
    } finally {
      // Withdraw every announcement made (all of them, unless an add threw): publishers stop waking us.
      withdraw(words, announced);
      if (failed && slept) handOnFailing(words);
    }
    if (i >= 0) {
      if (slept) handOn(words);
      return i;
    }
  }
}

function targetsOf(words: readonly Word[]): WaitTarget[] {
  return words.map((w) => [w.ctl, w.block.signal, w.seen] as const);
}

/** Adaptive spinning of this thread's selectSync calls (see SpinPacer). */
const spinPacer = new SpinPacer();
/** Whether this thread's select calls poll by default (the previous one returned an entry; see PollPacer). */
const pollPacer = new PollPacer();

/**
 * Blocks the thread until one of `entries` is ready; returns its index.
 * For workers and dedicated processes. At most MAX_WAIT_ANY (128) entries.
 * Publishes what this thread holds corked first, as every wait does.
 */
export function selectSync(entries: readonly SelectEntry[], options?: Omit<SelectOptions, 'poll' | 'ref'>): number {
  const what = 'selectSync';
  const call = checkCall(entries, options, what, SELECT_SYNC_OPTIONS, MAX_WAIT_ANY);
  try {
    return selectSyncChecked(entries, options, call, what);
  } catch (err) {
    throw detachedFailure(call, err, what);
  }
}

function selectSyncChecked(entries: readonly SelectEntry[], options: SelectOptions | undefined, call: Call, what: string): number {
  publishHeld(); // before the first look: a corked producer's room is counted from its published position
  const start = startOf(entries);
  const first = scan(call.probes, start, what);
  if (first >= 0) return chosen(entries, first, call);
  const signal = options?.signal;
  if (signal?.aborted) throw abortError(signal); // the only abort a blocked thread can see
  const attempt = (): number | undefined => {
    const i = scan(call.probes, start, what);
    return i >= 0 ? i : undefined;
  };
  const spinMicros = options?.spin ?? spinPacer.spinMicros(SPIN_MICROS_SYNC);
  // The spin ends at the call's deadline at the latest: timeoutMs 0 does not spin (the first scan was its try).
  const spinUntil = Math.min(call.deadline, call.started + spinMicros / 1000);
  // From now, not from the start: a first scan of many entries may have used the spin up (no second one, then).
  let index = spinUntil > performance.now() ? spin(attempt, spinUntil, call.probes.length) : undefined;
  if (index === undefined) {
    // One distinct word waits as readSync does (Atomics.wait on a SharedArrayBuffer); several, in futex_waitv.
    const steps = parkSteps(call, start, options, what, true, call.checkMs);
    const checks = new PeerChecks(call.checkMs, call.deadline, performance.now());
    let step = steps.next();
    while (!step.done) {
      const { words, ms } = step.value;
      let result: NapResult;
      try {
        if (words.length === 1) {
          const w = words[0]!;
          const r = wait(w.ctl, w.block.signal, w.seen, ms);
          result = r === 'ok' ? 0 : r;
        } else {
          result = waitAny(targetsOf(words), ms);
        }
        // After any nap, as parkSync: wake-ups by other publications must not put the check off for ever.
        if (checks.due() && (call.dead = deadEntry(call)) >= 0) result = PEER_GONE;
      } catch (err) {
        step = steps.throw(err); // runs the generator's finally (withdraws), rethrows
        continue;
      }
      step = steps.next(result);
    }
    index = step.value;
  }
  spinPacer.lastWaitMs = performance.now() - call.started;
  return chosen(entries, index, call);
}

/**
 * Resolves with the index of the first of `entries` that is ready, without
 * blocking the event loop. Publishes what this thread holds corked first,
 * as every wait does.
 */
export async function select(entries: readonly SelectEntry[], options?: SelectOptions): Promise<number> {
  const what = 'select';
  const call = checkCall(entries, options, what, SELECT_OPTIONS, Infinity);
  const pollMicros = pollPacer.pollMicros(options?.poll, false, call.started);
  publishHeld(); // before the first look: a corked producer's room is counted from its published position
  const start = startOf(entries);
  const first = scan(call.probes, start, what);
  if (first >= 0) {
    pollPacer.gotAtOnce(); // busy now: a select soon after may poll
    return chosen(entries, first, call);
  }
  const signal = options?.signal;
  if (signal?.aborted) throw abortError(signal);
  pollPacer.hot = false; // until this select returns an entry
  const attempt = (): number | undefined => {
    const i = scan(call.probes, start, what);
    return i >= 0 ? i : undefined;
  };
  // Only the waiting part can meet a region closed under it (checkCall refused one closed before).
  try {
    const spinMicros = options?.spin ?? TRY_MICROS_ASYNC;
    // Neither the try nor the poll outlasts the call's deadline: timeoutMs 0 times out in the re-check after announcing.
    const spinUntil = Math.min(call.deadline, call.started + spinMicros / 1000);
    // Each attempt looks at every entry: the clock is read after fewer of them (one, over 64 entries or more).
    // From now, as selectSync's: a first scan of many entries may have used the spin up.
    let index = spinUntil > performance.now() ? spin(attempt, spinUntil, call.probes.length) : undefined;
    const pollUntilAt = Math.min(call.deadline, call.started + pollMicros / 1000);
    if (index === undefined && pollUntilAt > performance.now()) {
      // In windows of the check period, asking about the peers between them (a long poll would poll on for a
      // dead one); one gone ends the poll, and the park's first check reports it.
      index =
        pollUntilAt - call.started <= call.checkMs
          ? await pollUntil(attempt, pollUntilAt, signal, undefined, call.probes.length)
          : await pollThenPark(attempt, pollUntilAt, call.checkMs, () => deadEntry(call) < 0, signal, undefined, call.probes.length);
    }
    index ??= await parkWatched(call, start, options, what);
    pollPacer.got(call.started, performance.now()); // hot again, unless entries come far apart (PollPacer)
    return chosen(entries, index, call);
  } catch (err) {
    throw detachedFailure(call, err, what);
  }
}

/**
 * The parked part of select: one asynchronous wait on every word, until
 * woken or the deadline passes (no naps: an idle select costs nothing).
 * While parked, the thread's watchdog looks at the peers every quarter of
 * peerTimeoutMs and, if one is gone, cancels the wait.
 */
async function parkWatched(call: Call, start: number, options: SelectOptions | undefined, what: string): Promise<number> {
  const steps = parkSteps(call, start, options, what, false, Infinity);
  let step = steps.next();
  if (step.done) return step.value; // the re-check after announcing found one: no futex wait
  const signal = options?.signal;
  // Ends the pending wait: on the caller's abort, or when the watchdog finds a peer gone. Not an
  // AbortController per park: with its listener that costs ~5 µs, ~20 µs after an idle millisecond.
  let stopped = false;
  let current: StoppableWaitAny | undefined;
  const stop = (): void => {
    stopped = true;
    current?.stop();
  };
  if (signal !== undefined) watchAbort(signal, stop);
  let gone = false;
  let failure: unknown;
  const watched: Watched | undefined =
    call.checkMs === Infinity
      ? undefined
      : {
          periodMs: call.checkMs,
          watchSlot: -1,
          check(): void {
            try {
              call.dead = deadEntry(call);
              if (call.dead < 0) return;
              gone = true;
            } catch (err) {
              failure = err;
            }
            stop();
          },
        };
  if (watched !== undefined) watch(watched);
  try {
    while (!step.done) {
      let result: NapResult;
      try {
        if (stopped) throw abortError(); // stopped between two waits: as if during one
        current = waitAnyStoppable(targetsOf(step.value.words), step.value.ms, options?.ref !== false);
        result = await current.promise;
      } catch (err) {
        if (gone) {
          result = PEER_GONE;
        } else {
          step = steps.throw(failure ?? (signal?.aborted ? abortError(signal) : err));
          continue;
        }
      }
      step = steps.next(result);
    }
    return step.value;
  } finally {
    if (watched !== undefined) unwatch(watched);
    if (signal !== undefined) unwatchAbort(signal, stop);
  }
}
