/**
 * Broadcast: one publisher, any number of subscribers, each with its own
 * cursor; every subscriber sees every message published after it joined
 * (lossless), or every message it keeps up with (lossy, the default: the
 * publisher never waits, a subscriber it laps skips ahead and counts what
 * it missed in `lost`).
 *
 * Threading contract:
 *  - One publisher at a time, in any process: Broadcast.create() takes the
 *    PRODUCER lock byte exclusively (a second live publisher gets
 *    ERR_SHMRING_BUSY before anything is written; without a file to lock,
 *    a 'sab' or 'sysv' region, create first checks the publisher's pid
 *    words, and another live object of the same thread, then claims them
 *    by CAS). Its verbs: tryWrite, writeSync, write, writable(), close(),
 *    detach().
 *  - A publisher that let go (detach()) or died leaves the Broadcast to the
 *    next create() of the same capacity, subscribers and lossless, which
 *    takes it over (resumePoint): it resumes from a quiescent snapshot, P =
 *    INTENT and K = COUNT, and the subscribers read on. A predecessor that
 *    died in the middle of a record left no quiescent snapshot: the new one
 *    repairs the counters by a jump past every cursor (lossy at once,
 *    lossless once every subscriber has read up to the tail), so each
 *    subscriber resettles there, counting what it skipped in `lost`.
 *    create() lays out a new Broadcast only where none is, or nobody else
 *    holds the one there (the HOLDER lock; without a file, a live
 *    subscriber slot); while subscribers hold one it cannot take over
 *    (other options, closed by its publisher, impossible counters) it
 *    throws, having written nothing. A closed Broadcast is never reopened
 *    under them.
 *  - Any number of subscribers (Broadcast.subscribe), each used by one
 *    thread: tryRead, readSync, read, for await, messages(), drain,
 *    readable(), close(). A subscriber starts at the next message published
 *    and may close at any time; its close() ends only itself.
 *  - The publisher's close() ends the Broadcast: subscribers take what is
 *    left, then get ERR_SHMRING_CLOSED (their iterators end).
 *
 * Both sides are Queues (queue.ts): the waiting verbs are built on tryWrite /
 * tryRead. Every read verb of a publisher (tryRead, readSync, read,
 * messages, for await, readable, waitReadable, drain) and every write verb
 * of a subscriber (tryWrite, writeSync, write, writable) throws, or rejects
 * with, ERR_SHMRING_INVALID_ARGUMENT naming that verb (the wrong end).
 *
 * Invariants (docs/LAYOUT.md, "Broadcast (KIND 5)"; offsets in broadcast-layout.ts):
 *  - Positions are byte counts that only grow, across publishers too (a
 *    takeover resumes them); the publisher keeps its own as a number (exact
 *    below 2^53), shares TAIL's low 32 bits, and INTENT and COUNT as 64-bit
 *    counters (three words each, see broadcast-layout.ts).
 *  - TAIL <= INTENT <= TAIL + one record; INTENT == TAIL when no record is
 *    being written. COUNT is the number of records ending at or before INTENT.
 *  - A publisher that died between its INTENT and TAIL stores leaves them
 *    apart for good. Its successor repairs them (HalfWritten, #jump): INTENT,
 *    COUNT, LATEST and TAIL move together to J, more than a ring past every
 *    cursor, never back, so no subscriber reads a byte the dead record
 *    wrote; COUNT keeps the dead record if its store was made (then every
 *    subscriber counts it lost). Lossless jumps only once every live
 *    CURSOR is the tail, so no published record is skipped.
 *  - Per record the publisher stores INTENT, then COUNT, then writes the
 *    bytes, then stores TAIL. Bytes at position x are rewritten only once
 *    INTENT > x + CAPACITY: a subscriber at cursor c whose copy is followed
 *    by a load of INTENT with INTENT - c <= CAPACITY has a whole copy.
 *  - A subscriber hands out a record only after that check: never a torn
 *    one. When lapped it takes a quiescent snapshot (INTENT, TAIL, COUNT,
 *    LATEST, INTENT again; equal intents and TAIL == INTENT), whose COUNT is
 *    exactly the records before that tail, and resumes at the newest record
 *    (LATEST, number COUNT - 1): lost += COUNT - 1 - n, where n is the
 *    number of the record at its cursor. A joining subscriber starts at the
 *    snapshot's tail. So received + lost equals
 *    the records published since it joined, exactly.
 *  - Lossless: the publisher admits a record only if its end minus the
 *    slowest subscriber's CURSOR is at most CAPACITY, so no subscriber is
 *    ever lapped. Between scans of the table it goes by the slowest cursor
 *    of its last scan, which is at or before the tail of that moment; a
 *    subscriber that joins later starts at a later tail, so the cached
 *    bound covers it as well (it publishes CURSOR before OWNER, and a
 *    subscriber stores its cursor only after it is done with the bytes).
 *    A publisher that takes over has no last scan: it scans before its
 *    first record (#slowest = -Infinity), and the slots, which a takeover
 *    leaves as they are, hold it back as they held its predecessor.
 *  - A subscriber's slot is held by an exclusive OFD lock on the slot's
 *    byte: a parked lossless publisher frees the slots whose lock nobody
 *    holds (their subscriber died) every check period (peerTimeoutMs / 4),
 *    and so does a tryWrite that has found the ring full for the
 *    publisher's peerTimeoutMs (then every quarter of it; before that it
 *    reads only the clock). Without a file ('sab', 'sysv') the slot's pid
 *    and start time decide; a subscriber claims such a slot with its id
 *    negated in OWNER (registering: judged alive while that id lives) and
 *    stores its token there only after its pid and start time, so a sweep
 *    never judges a live claimant by a previous owner's words.
 *  - Anything read from shared memory is read once and bounds-checked; a
 *    value no correct publisher writes is ERR_SHMRING_CORRUPT, unless the
 *    lap check says the publisher overwrote it (then it is skipped).
 *
 * Memory ordering: every Atomics access is sequentially consistent; the
 * record bytes are plain stores between the INTENT/COUNT stores and the
 * TAIL store (publisher), plain loads between the TAIL load and the INTENT
 * load (subscriber). Like LatestValue, this relies on x86-64's TSO keeping
 * plain accesses in program order around the atomic ones; a C peer uses
 * fences (docs/LAYOUT.md).
 */
import { randomInt } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import { checkBoolean, ErrorCodes, heldByAnyone, ShmringError, ShmringRangeError, ShmringTypeError, type Region } from '@shmring/core';
import * as L from './layout.js';
import * as B from './broadcast-layout.js';
import {
  attachTo,
  checkCapacity,
  checkOffset,
  checkOptionsObject,
  readHeader,
  ringMemory,
  unpublish,
  writeHeader,
  type Geometry,
} from './header.js';
import {
  CLOSED_I32,
  CLOSED_U8,
  Queue,
  READ_BLOCK,
  WRITE_BLOCK,
  checkDrain,
  checkType,
  ringSite,
  ringWhere,
  roleTaken,
  shown,
  type RingSite,
  type WaitOptions,
  type WriteOptions,
} from './queue.js';
import type { DrainHandler } from './spsc.js';
import { copyOut } from './copy.js';
import { registrant, registrantAlive } from './liveness.js';
import { Roles } from './roles.js';
import { checkPeerTimeout, DEFAULT_PEER_TIMEOUT_MS, unpark } from './waiting.js';

export interface BroadcastOptions {
  /** Bytes of the data area: a power of two in [64, 2^30]. */
  capacity: number;
  /** The publisher waits for the slowest subscriber instead of lapping it. Default false. */
  lossless?: boolean;
  /** Subscriber slots in the region (regionSize must be given the same number). Default 16. */
  subscribers?: number;
  /** Where the Broadcast starts in its region: a multiple of 64; default 0. */
  offset?: number;
  /**
   * Lossless: how long (ms) tryWrite may find the ring full before it frees
   * the slots of subscribers that died (as a parked write does every
   * quarter of its own peerTimeoutMs); default 1000. Infinity: never.
   */
  peerTimeoutMs?: number;
}

/**
 * The options of create, of regionSize, and of subscribe. regionSize takes
 * only those that decide the size: offset would be ignored (a Broadcast at
 * offset needs offset + regionSize()), and lossless and peerTimeoutMs change
 * nothing in it (lossless is a header byte; every mode has the same slots).
 */
const CREATE_OPTION_NAMES: readonly string[] = ['capacity', 'lossless', 'subscribers', 'offset', 'peerTimeoutMs'];
const SIZE_OPTION_NAMES: readonly string[] = ['capacity', 'subscribers'];
const SUBSCRIBE_OPTION_NAMES: readonly string[] = ['offset'];

export interface SubscribeOptions {
  /** Where the Broadcast starts in its region (as given to create); default 0. */
  offset?: number;
}

const TWO32 = 2 ** 32;
/** Subscribers parked on an empty ring: all of them wake at each publication. */
const WAKE_ALL = 0x7fffffff;
/**
 * The publisher's side parked on a full (lossless) ring: its write, and
 * selects on room for other lengths, so every one of them (one that finds
 * too little room parks again without passing anything on).
 */
const WAKE_WRITERS = 0x7fffffff;
/** Tries at a 64-bit read or a quiescent snapshot before saying "not now". */
const SNAPSHOT_TRIES = 64;
/** A lossy subscriber's empty polls per look at INTENT for a lap of a multiple of 2^32 bytes (#locate). */
const EMPTY_LOOKS_PER_LAP_CHECK = 64;

/**
 * Each subscriber's slot token, in [1, 2^31 - 1]: counting up in this
 * thread from a random start, so that the tokens of live subscribers differ
 * (in this thread for certain; across threads and processes but for a
 * chance of about one in 2^31 per pair of subscribers; equal ones would let
 * a sweep that judged one dead free the other's slot). Positive, because a
 * negative OWNER is a claimant still registering (its id negated: see
 * BroadcastSubscriber.join). A start from the pid, as before, gave every
 * worker thread of a process the same tokens.
 */
let nextToken = randomInt(0x7fffffff);

function corrupt(what: string, where?: string): ShmringError {
  return new ShmringError(
    ErrorCodes.CORRUPT,
    `Broadcast: ${what}${where === undefined ? '' : ` in ${where}`}; the ring's memory was overwritten by something that is not a correct peer: ` +
      'stop the processes that use it, and create the ring again',
  );
}

/** The error of a verb called on the wrong end (`Broadcast.<verb>`, or `what` as given when it starts with "Broadcast"). */
function wrongEnd(verb: string, end: 'publisher' | 'subscriber'): ShmringError {
  const what = verb.startsWith('Broadcast') ? verb : `Broadcast.${verb}`;
  return new ShmringError(
    ErrorCodes.INVALID_ARGUMENT,
    end === 'publisher'
      ? `${what}: this is the publisher; read through a subscriber (Broadcast.subscribe)`
      : `${what}: this is a subscriber; publish through the object Broadcast.create returned`,
  );
}

function checkSubscribers(subscribers: unknown, verb: string): number {
  if (subscribers === undefined) return B.DEFAULT_SUBSCRIBERS;
  const rule = `subscribers must be an integer in [0, ${B.MAX_SUBSCRIBERS}] (subscriber slots in the region)`;
  if (typeof subscribers !== 'number' || !Number.isInteger(subscribers)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: ${rule}, got ${shown(subscribers)}`);
  }
  if (subscribers < 0 || subscribers > B.MAX_SUBSCRIBERS) {
    throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: ${rule}, got ${subscribers}`);
  }
  return subscribers;
}

/**
 * Without a file to lock (a SharedArrayBuffer, a System V segment): whether
 * the region holds a Broadcast at `base` whose publisher lives (another
 * thread or process in its pid words, or another live object of this
 * thread: roleTaken), checked before create overwrites anything. Two
 * creates racing each other can both pass; a second create after a first
 * one's publisher registered cannot.
 */
function publisherLives(buffer: ArrayBuffer | SharedArrayBuffer, base: number, place: string | undefined): boolean {
  const ctl = new Int32Array(buffer, base, L.CONTROL_I32_LENGTH);
  // Observes a Broadcast published here (writeHeader's store of MAGIC, after KIND).
  if (Atomics.load(ctl, L.MAGIC_I32) !== L.MAGIC || ctl[L.KIND_I32] !== B.KIND_BROADCAST) return false;
  // Observes the publisher's registration (Queue.#claim: start time stored before the id).
  const holder = Atomics.load(ctl, L.PRODUCER_PID_I32);
  const start = Atomics.load(ctl, L.PRODUCER_START_I32);
  return roleTaken('producer', holder, start, place, buffer instanceof SharedArrayBuffer);
}

/** Stores a 64-bit counter (docs/LAYOUT.md): HI1, LO, HI2, the high words only when they change. */
function store64(ctl: Int32Array, c: B.Counter64, value: number, previous: number): void {
  const hi = Math.floor(value / TWO32);
  if (hi !== Math.floor(previous / TWO32)) {
    storeAll64(ctl, c, value);
  } else {
    // The low word alone: the publication of the new value.
    Atomics.store(ctl, c.lo, value | 0);
  }
}

/** Stores all three words of a 64-bit counter (a crossing of its high word, or a repair of torn words): HI1, LO, HI2. */
function storeAll64(ctl: Int32Array, c: B.Counter64, value: number): void {
  const hi = Math.floor(value / TWO32);
  // Readers load HI2, LO, HI1: one that sees the new HI1 after an old HI2 (or the reverse) retries.
  Atomics.store(ctl, c.hi1, hi);
  Atomics.store(ctl, c.lo, value | 0);
  Atomics.store(ctl, c.hi2, hi);
}

/** Loads a 64-bit counter (HI2, LO, HI1; equal high words make a value it held), or NaN while a writer is between its stores. */
function load64(ctl: Int32Array, c: B.Counter64): number {
  for (let i = 0; i < SNAPSHOT_TRIES; i++) {
    // HI2 first: it is stored last by a writer crossing 2^32; pairs with store64's order.
    const hi2 = Atomics.load(ctl, c.hi2) >>> 0;
    const lo = Atomics.load(ctl, c.lo) >>> 0;
    // HI1 last: unchanged means no crossing began before LO was loaded.
    const hi1 = Atomics.load(ctl, c.hi1) >>> 0;
    if (hi1 === hi2) return hi1 * TWO32 + lo;
  }
  return NaN;
}

/** A quiescent snapshot of the publisher's counters (docs/LAYOUT.md, "Subscriber, step by step"): no record in flight. */
interface Snapshot {
  /** INTENT, which is then the exact tail (i1). */
  intent: number;
  /** TAIL: the tail's low 32 bits (t). */
  tail: number;
  /** COUNT: exactly the records before the tail (k). */
  count: number;
  /** LATEST: low 32 bits of where the newest of them starts (l). */
  latest: number;
}

/**
 * Whether a snapshot's counters are ones a publisher leaves: positions are
 * exact integers (below 2^53) and multiples of 8, and every record took at
 * least 8 bytes. Anything else was written by something else; used as is,
 * an inexact cursor could stop advancing (cursor + size rounding back to
 * the same double) and hand out one record for ever.
 */
function plausible(s: Snapshot): boolean {
  return Number.isSafeInteger(s.intent) && s.intent % 8 === 0 && Number.isSafeInteger(s.count) && s.count * 8 <= s.intent;
}

/**
 * Takes a quiescent snapshot into `s` (INTENT, TAIL, COUNT, LATEST, INTENT
 * again; valid if the two intents are equal and TAIL is INTENT's low 32
 * bits). False while the publisher stays in the middle of a record (or
 * died there: a publisher that holds the role then finds it for good).
 */
function takeSnapshot(ctl: Int32Array, s: Snapshot): boolean {
  for (let i = 0; i < SNAPSHOT_TRIES; i++) {
    const intent = load64(ctl, B.INTENT);
    // After INTENT: equal to it means the record ending there is published (and its COUNT and LATEST stored before TAIL).
    const tail = Atomics.load(ctl, B.TAIL_I32) >>> 0;
    const count = load64(ctl, B.COUNT);
    // Where the newest record starts; stored before TAIL (publisher's step 4), so it is that of the tail above.
    const latest = Atomics.load(ctl, B.LATEST_I32) >>> 0;
    // Unchanged: no record began between the two loads, so COUNT and LATEST are those of the tail.
    const again = load64(ctl, B.INTENT);
    if (intent !== again || tail !== intent % TWO32 || Number.isNaN(count)) continue;
    s.intent = intent;
    s.tail = tail;
    s.count = count;
    s.latest = latest;
    return true;
  }
  return false;
}

/**
 * Without a file to lock: whether a subscriber slot of the Broadcast in
 * `ctl` (`slots` of them) is owned by a live thread or process (its PID and
 * START, as a parked lossless publisher judges them). A lossy subscriber
 * that found no free slot is not seen.
 */
function liveSubscriber(ctl: Int32Array, slots: number): boolean {
  const threads = ctl.buffer instanceof SharedArrayBuffer;
  for (let i = 0; i < slots; i++) {
    const s = B.slotOffset(i) / 4;
    // Observes a subscriber's claim: its CAS of OWNER to its id negated, then its token once START and PID are stored.
    const owner = Atomics.load(ctl, s + B.SLOT_OWNER_I32);
    if (owner === 0) continue;
    if (slotOwnerAlive(ctl, s, owner, threads)) return true;
  }
  return false;
}

/**
 * Without a file to lock: whether the owner `owner` (non-zero, loaded from
 * OWNER of the slot at Int32 index `s`) lives. A negative OWNER is a
 * claimant caught registering (docs/LAYOUT.md, "Subscriber slots"): its
 * id negated, alive while that process (thread, in a SharedArrayBuffer)
 * is; its PID and START may still be a previous owner's, or zero. A
 * positive one is a token, stored after PID and START: they decide.
 */
function slotOwnerAlive(ctl: Int32Array, s: number, owner: number, threads: boolean): boolean {
  if (owner < 0) return registrantAlive(owner, 0, threads); // a negated id: judged by the id alone
  // Observes the owner's registration: its START, then PID stores, both before its token in OWNER (loaded by the caller).
  const pid = Atomics.load(ctl, s + B.SLOT_PID_I32);
  const start = Atomics.load(ctl, s + B.SLOT_START_I32);
  return registrantAlive(pid, start, threads);
}

/**
 * Without a file to lock: claims the subscriber slot at Int32 index `s` for
 * `id` by a CAS of OWNER to the id negated ("registering": a sweep that
 * sees the slot before its START and PID stores judges the claimant by
 * that id, alive, never by a previous owner's words), from 0 or from an
 * owner found dead as a lossless publisher's sweep judges it. A slot a
 * dead subscriber (a terminated worker) left would otherwise stay taken
 * until a lossless publisher, parked on a full ring, swept it, and for
 * ever under a lossy one (which never sweeps): later subscribers found
 * the table full. False if a live subscriber holds it.
 */
function claimSlotWithoutFile(ctl: Int32Array, s: number, id: number): boolean {
  const threads = ctl.buffer instanceof SharedArrayBuffer;
  for (let expected = 0; ; ) {
    // Takes the slot from `expected` (0, or the dead owner judged below); returns the owner found instead.
    const seen = Atomics.compareExchange(ctl, s + B.SLOT_OWNER_I32, expected, -id);
    if (seen === expected) return true;
    if (seen !== 0 && slotOwnerAlive(ctl, s, seen, threads)) return false;
    expected = seen; // freed meanwhile (0), or an owner that died: try to take it from that one
  }
}

/**
 * What a new publisher found where its predecessor died in the middle of a
 * record (docs/LAYOUT.md, "A record left half-written: the repair"): the
 * exact tail, the count, and the position it jumps to.
 */
interface HalfWritten {
  /** T: the position after the last published record (exact). */
  tail: number;
  /** c: COUNT as the dead publisher left it: the records published, or one more (its record counted, never published). */
  count: number;
  /** J: the start of the lap after the one the half-written record can reach; every cursor is more than a ring behind it. */
  jump: number;
}

/**
 * Reads the counters a publisher that died between its INTENT store and
 * its TAIL store left (raw words, no retry: the caller holds the role, so
 * nobody writes them), or undefined if they are impossible (no correct
 * publisher leaves them so). A 64-bit counter whose two high words differ
 * was crossing 2^32 when its writer died: HI1 is the new high word, HI2
 * the old one. The writer may also have been a previous repair's, killed
 * in the middle of its jump: its INTENT is then J, or torn on the way to
 * it, and the same T gives the same J, so this repair completes that one.
 */
function halfWritten(ctl: Int32Array, capacity: number): HalfWritten | undefined {
  const t = Atomics.load(ctl, B.TAIL_I32) >>> 0; // stable: we hold the role (as the six loads below)
  const lo = Atomics.load(ctl, B.INTENT.lo) >>> 0;
  const hi1 = Atomics.load(ctl, B.INTENT.hi1) >>> 0;
  const hi2 = Atomics.load(ctl, B.INTENT.hi2) >>> 0;
  let tail: number;
  if (hi1 === hi2) {
    const intent = hi1 * TWO32 + lo;
    tail = intent - ((lo - t) >>> 0);
    // A record and its padding reach at most a ring and a half past the tail, a repair's jump two rings.
    if (tail < 0 || intent - tail > 2 * capacity) return undefined;
  } else {
    // Torn while crossing 2^32 from a value whose high word HI2 still holds: the tail (a record's INTENT
    // store), or a dead record's end, never more than a ring and a half past the tail (a jump's). Either
    // way the tail is within two rings below the crossing, so its high word is HI2.
    if (hi1 !== hi2 + 1 || TWO32 - t > 2 * capacity) return undefined;
    tail = hi2 * TWO32 + t;
  }
  const clo = Atomics.load(ctl, B.COUNT.lo) >>> 0;
  const chi1 = Atomics.load(ctl, B.COUNT.hi1) >>> 0;
  const chi2 = Atomics.load(ctl, B.COUNT.hi2) >>> 0;
  let count: number;
  if (chi1 === chi2) {
    count = chi1 * TWO32 + clo;
  } else if (chi1 === chi2 + 1) {
    count = chi1 * TWO32; // crossing 2^32 by one: the new count's low word is 0
  } else {
    return undefined;
  }
  // Every record takes at least 8 bytes: COUNT (the dead record perhaps included) fits below the tail.
  if (!Number.isSafeInteger(tail + 2 * capacity) || tail % 8 !== 0 || count * 8 > tail + 8) return undefined;
  return { tail, count, jump: (Math.floor(tail / capacity) + 2) * capacity };
}

/**
 * Create's look at what `base` already holds (`found`: the header it read,
 * undefined where there is no Broadcast: no MAGIC, another kind or
 * version, an impossible header), once this create holds the publisher
 * role (docs/LAYOUT.md, "Publisher, step by step"): the snapshot
 * a new publisher resumes from (P = INTENT, K = COUNT), what a predecessor
 * that died in the middle of a record left (the repair), or undefined to
 * lay out a new Broadcast. It resumes a Broadcast of the same capacity,
 * subscribers and mode that is not closed, so its subscribers go on with
 * `received + lost` exact, unless nobody else holds it (`heldBefore`
 * false: this create could hold the HOLDER lock exclusively, which it
 * keeps until the ring is laid out): then, as where there is no Broadcast,
 * a new one is laid out. Without a file (`heldBefore` undefined) it resumes whenever it
 * can, since a lossy subscriber without a slot is not seen; what it cannot
 * resume, it lays out anew only if no live subscriber slot is seen.
 * Otherwise a typed error, touching nothing: other options
 * (ERR_SHMRING_INVALID_ARGUMENT), closed by its publisher
 * (ERR_SHMRING_CLOSED: a closed Broadcast is not reopened under its
 * subscribers), or counters no correct publisher leaves
 * (ERR_SHMRING_CORRUPT).
 */
function resumePoint(
  buffer: ArrayBuffer | SharedArrayBuffer,
  base: number,
  g: Geometry,
  heldBefore: boolean | undefined,
  where: string,
  found: Geometry | undefined,
): Snapshot | HalfWritten | undefined {
  if (found === undefined) return undefined; // no Broadcast here to take over
  const ctl = new Int32Array(buffer, base, B.broadcastDataOffset(found.slotSize) / 4);
  // Nobody else holds it (stale; only a file can tell): a new Broadcast, which no one can tell from the
  // old, and no dead subscriber's slot carried over for a new lossless publisher to wait out.
  if (heldBefore === false) return undefined;
  const mode = ctl[B.MODE_I32]!; // written before MAGIC (readHeader loaded it), never again
  const s: Snapshot = { intent: 0, tail: 0, count: 0, latest: 0 };
  let refusal: ShmringError;
  let repair: HalfWritten | undefined;
  // Observes a publisher's close() (its Atomics.or of FLAGS): the end its subscribers are told of.
  if ((Atomics.load(ctl, L.FLAGS_I32) & L.FLAG_CLOSED) !== 0) {
    refusal = new ShmringError(
      ErrorCodes.CLOSED,
      `Broadcast.create: ${where} was closed by its publisher, and subscribers still hold it (they read what is left, then end); ` +
        'a closed Broadcast is not reopened: create one here once they have closed, or in another region',
    );
  } else if (found.capacity !== g.capacity || found.slotSize !== g.slotSize || mode !== g.mode) {
    const shape = (capacity: number, slots: number, m: number | undefined): string =>
      `capacity=${capacity}, subscribers=${slots}, lossless=${m === B.MODE_LOSSLESS}`;
    refusal = new ShmringError(
      ErrorCodes.INVALID_ARGUMENT,
      `Broadcast.create: ${where} holds a Broadcast of ${shape(found.capacity, found.slotSize, mode)}, which subscribers still hold; ` +
        `a new publisher takes it over with those options (not ${shape(g.capacity, g.slotSize, g.mode)}), ` +
        'or creates this one once they have closed, or in another region',
    );
  } else if (takeSnapshot(ctl, s)) {
    if (plausible(s)) {
      // Resumable: taken over, even without a file, where a lossy subscriber without a slot is not seen
      // (a new layout would have it read payload bytes as headers).
      return s;
    }
    refusal = impossibleCounters(where);
  } else if ((repair = halfWritten(ctl, g.capacity)) !== undefined) {
    // We hold the role and there is no quiescent snapshot: the previous publisher died in the middle of a
    // record. Repaired by the new publisher (a jump past every cursor), so its subscribers read on.
    return repair;
  } else {
    refusal = impossibleCounters(where);
  }
  // Without a file: nobody seen holding it (no live subscriber slot), a new one; a slotless lossy
  // subscriber of a Broadcast that cannot be taken over is not seen (README).
  if (heldBefore === undefined && !liveSubscriber(ctl, found.slotSize)) return undefined;
  throw refusal;
}

function impossibleCounters(where: string): ShmringError {
  return new ShmringError(
    ErrorCodes.CORRUPT,
    `Broadcast.create: the counters of ${where} are impossible (no publisher, live or dead, leaves them so: something else ` +
      'wrote there); a new publisher cannot resume it: close its subscribers, then create the Broadcast anew',
  );
}

export class Broadcast {
  private constructor() {}

  /**
   * Bytes a Broadcast of `capacity` data bytes and `subscribers` slots
   * (default 16) takes, lossless or not: what a region needs for one at
   * offset 0; one at `offset` needs offset + regionSize(). So `offset` is
   * refused here (ERR_SHMRING_INVALID_ARGUMENT), not ignored, and so are
   * `lossless` and `peerTimeoutMs`, which change nothing in the size.
   */
  static regionSize(options: { capacity: number; subscribers?: number }): number {
    checkOptionsObject(options, 'Broadcast.regionSize', SIZE_OPTION_NAMES);
    const capacity = checkCapacity(options?.capacity, B.BROADCAST_MIN_CAPACITY, L.MAX_CAPACITY, 'Broadcast.regionSize');
    return B.broadcastSize(capacity, checkSubscribers(options.subscribers, 'Broadcast.regionSize'));
  }

  /**
   * Returns the publisher of a Broadcast at the start of `region` (or at
   * `offset`). Where the region already holds a Broadcast with the same
   * capacity, subscribers and lossless whose publisher let go of it
   * (detach()) or died, this publisher takes it over: it goes on after the
   * last record published, and the subscribers read on, their `received +
   * lost` exact. A publisher that died in the middle of a record is
   * repaired: this one jumps past every subscriber's cursor (lossy at once;
   * lossless at its first write, once every live subscriber has read all
   * that was published), and each subscriber counts what it skipped in
   * `lost`, the dead publisher's record included if it was counted in
   * `published`. Otherwise it lays out an empty one. ERR_SHMRING_BUSY,
   * touching nothing, if a live publisher holds the Broadcast there; while
   * subscribers hold one that cannot be taken over, a typed error, touching
   * nothing (other options: ERR_SHMRING_INVALID_ARGUMENT; closed by its
   * publisher: ERR_SHMRING_CLOSED; counters no publisher leaves:
   * ERR_SHMRING_CORRUPT).
   */
  static create(region: Region, options: BroadcastOptions): BroadcastPublisher {
    checkOptionsObject(options, 'Broadcast.create', CREATE_OPTION_NAMES);
    const capacity = checkCapacity(options?.capacity, B.BROADCAST_MIN_CAPACITY, L.MAX_CAPACITY, 'Broadcast.create');
    const subscribers = checkSubscribers(options.subscribers, 'Broadcast.create');
    const lossless = checkBoolean('lossless', options.lossless, 'Broadcast.create');
    if (lossless && subscribers === 0) {
      // Every lossless subscriber needs a slot (the publisher waits for the cursors there): none could ever subscribe.
      throw new ShmringRangeError(
        ErrorCodes.INVALID_ARGUMENT,
        'Broadcast.create: subscribers=0 with lossless=true leaves no slot for a subscriber (each lossless subscriber holds one); ' +
          'give subscribers >= 1 (and the same to regionSize), or make it lossy',
      );
    }
    const base = checkOffset(options.offset, 'Broadcast.create');
    const peerTimeoutMs = checkPeerTimeout(options.peerTimeoutMs, 'Broadcast.create');
    const size = B.broadcastSize(capacity, subscribers);
    const buffer = ringMemory(region, base, size, 'Broadcast.create');
    // Before MAGIC: never seen unheld once it exists. Exclusive if nobody else holds the ring (then nobody can
    // join while a new one is laid out: Broadcast.subscribe holds it before it reads the header), else shared.
    const holding = Roles.holdFirst(region, base, 'Broadcast.create');
    const roles = holding?.roles;
    // Whether anybody else holds the ring (undefined: no file to ask).
    const heldBefore = holding === undefined ? undefined : !holding.alone;
    const site = ringSite(region, base, roles);
    // What the place holds, read once, before the publisher role is taken. Nobody lays a ring out under a
    // held HOLDER lock, so it stays what it is. A ring of another kind (or layout version) published and held
    // by others is refused first: they are attached to it, a new layout would wipe it under them, and the
    // role's lock is that ring's producer's (or writer's), whose next write would find it taken.
    let found: Geometry | undefined;
    try {
      found = readHeader(buffer, B.KIND_BROADCAST, base, 'Broadcast.create');
    } catch (err) {
      if (heldBefore === true && L.ringPublished(buffer, base)) {
        roles?.release();
        throw new ShmringError(
          ErrorCodes.BUSY,
          `Broadcast.create: ${ringWhere(region, base, 'Broadcast')} holds no Broadcast but another ring (${(err as Error).message}), ` +
            'and objects are attached to it; creating a Broadcast there would wipe it under them: close them first, or use another region',
        );
      }
    }
    if (roles !== undefined ? !roles.take('producer', true) : publisherLives(buffer, base, site.place)) {
      roles?.release();
      throw new ShmringError(
        ErrorCodes.BUSY,
        `Broadcast.create: a live publisher holds ${ringWhere(region, base, 'Broadcast')}; ` +
          `a Broadcast has one publisher: close that one first, or wait for its process to exit${site.look()}`,
      );
    }
    const dataOffset = B.broadcastDataOffset(subscribers);
    const g: Geometry = {
      kind: B.KIND_BROADCAST,
      capacity,
      slotSize: subscribers,
      slotStride: B.SLOT_STRIDE,
      ringSize: size,
      dataOffset,
      mode: lossless ? B.MODE_LOSSLESS : B.MODE_LOSSY,
    };
    let resume: Snapshot | HalfWritten | undefined;
    try {
      resume = resumePoint(buffer, base, g, heldBefore, ringWhere(region, base, 'Broadcast'), found);
    } catch (err) {
      roles?.release();
      throw err;
    }
    if (resume === undefined) {
      const ctl = unpublish(buffer, base);
      // Counters, table and slots start at zero; published with the header by writeHeader's store of MAGIC.
      new Int32Array(buffer, base + B.COUNTERS_OFFSET, (dataOffset - B.COUNTERS_OFFSET) / 4).fill(0);
      writeHeader(ctl, g);
    }
    roles?.share(); // laid out (or taken over): subscribers may join
    const pub = new BroadcastPublisher(buffer, base, g, lossless, roles, region, site, resume);
    pub.peerTimeoutMs = peerTimeoutMs;
    return pub;
  }

  /** Joins the Broadcast in `region` (at `offset`) as a new subscriber, from the next message published. */
  static subscribe(region: Region, options: SubscribeOptions = {}): BroadcastSubscriber {
    checkOptionsObject(options, 'Broadcast.subscribe', SUBSCRIBE_OPTION_NAMES);
    const base = checkOffset(options.offset, 'Broadcast.subscribe');
    const buffer = ringMemory(region, base, 0, 'Broadcast.subscribe');
    // Held before the header is read: a create that finds nobody holding the ring lays out a new one only
    // while it holds it exclusively, so the header read here is the one this subscriber joins.
    const { g, mode, roles } = attachTo(region, buffer, base, 'Broadcast.subscribe', (roles) => {
      const g = readHeader(buffer, B.KIND_BROADCAST, base, 'Broadcast.subscribe', region);
      const ctl = new Int32Array(buffer, base, B.broadcastDataOffset(g.slotSize) / 4);
      const mode = ctl[B.MODE_I32]!; // written before MAGIC, never again
      if (mode !== B.MODE_LOSSY && mode !== B.MODE_LOSSLESS) throw corrupt(`MODE is ${mode}`);
      return { g, mode, roles };
    });
    const sub = new BroadcastSubscriber(buffer, base, g, mode === B.MODE_LOSSLESS, roles, region);
    try {
      sub.join();
    } catch (err) {
      sub.close();
      throw err;
    }
    return sub;
  }
}

/** What both ends of a Broadcast share: the geometry, the region and the views of the data area. */
abstract class BroadcastEnd extends Queue {
  /** Bytes of the data area. */
  readonly capacity: number;
  /** Largest message payload, in bytes (capacity / 2 - 8). */
  readonly maxMessageLength: number;
  /** Whether the publisher waits for the slowest subscriber. */
  readonly lossless: boolean;
  /** Subscriber slots in the region. */
  readonly subscribers: number;
  protected readonly region: Region;
  protected readonly base: number;
  /** The data area, as bytes and as words (record headers). */
  protected data: Uint8Array;
  protected data32: Int32Array;

  protected constructor(
    buffer: ArrayBuffer | SharedArrayBuffer,
    base: number,
    g: Geometry,
    lossless: boolean,
    roles: Roles | undefined,
    region: Region,
    site: RingSite,
  ) {
    const dataOffset = B.broadcastDataOffset(g.slotSize);
    super(new Int32Array(buffer, base, dataOffset / 4), 'Broadcast', roles, site);
    this.capacity = g.capacity;
    this.maxMessageLength = B.broadcastMaxMessage(g.capacity);
    this.lossless = lossless;
    this.subscribers = g.slotSize;
    this.region = region;
    this.base = base;
    this.data = new Uint8Array(buffer, base + dataOffset, g.capacity);
    this.data32 = new Int32Array(buffer, base + dataOffset, g.capacity / 4);
  }

  protected dropViews(): void {
    this.data = CLOSED_U8;
    this.data32 = CLOSED_I32;
  }
}

export class BroadcastPublisher extends BroadcastEnd {
  /** Position after the last published record (exact; TAIL holds its low 32 bits). */
  #tail = 0;
  /** Records published. */
  #count = 0;
  /** Lossless: the slowest cursor of the last scan of the table (a position <= every live cursor, and <= the tail then). */
  #slowest = 0;
  /** Lossless: when (performance.now()) a tryWrite that finds the ring full next frees dead subscribers' slots; Infinity while not full. */
  #sweepAt = Infinity;
  /** Lossless: a repair waiting for every subscriber to read up to the tail (docs/LAYOUT.md, "A record left half-written"). */
  #repair: HalfWritten | undefined;
  #peerTimeoutMs = DEFAULT_PEER_TIMEOUT_MS;

  /**
   * Lossless: how long (ms) tryWrite may find the ring full before it frees
   * the slots of dead subscribers, then again every quarter of it (the
   * waiting writes' own peerTimeoutMs bounds their parked checks). Set to a
   * number >= 0 (or Infinity; undefined: the default); anything else is
   * ERR_SHMRING_INVALID_ARGUMENT.
   */
  get peerTimeoutMs(): number {
    return this.#peerTimeoutMs;
  }

  set peerTimeoutMs(ms: number) {
    this.#peerTimeoutMs = checkPeerTimeout(ms, 'Broadcast.peerTimeoutMs');
  }

  /** @internal Use Broadcast.create. */
  constructor(
    buffer: ArrayBuffer | SharedArrayBuffer,
    base: number,
    g: Geometry,
    lossless: boolean,
    roles: Roles | undefined,
    region: Region,
    site: RingSite,
    resume: Snapshot | HalfWritten | undefined,
  ) {
    super(buffer, base, g, lossless, roles, region, site);
    this.registerProducer(); // the lock is ours already (create); stores the pid words for inspect
    if (resume === undefined) return;
    this.#slowest = -Infinity; // lossless: the slots are scanned before the first record
    this.#count = resume.count;
    if ('jump' in resume) {
      // The predecessor died in the middle of a record: the repair (docs/LAYOUT.md, "A record left
      // half-written"). Lossy at once; lossless once every subscriber has read up to the tail (#repaired).
      this.#tail = resume.tail;
      this.#repair = resume;
      if (!lossless) this.#jump();
      // Lossless: parked subscribers look again; one still joining refreshes its provisional CURSOR to the tail.
      else unpark(this.ctl, READ_BLOCK, WAKE_ALL);
    } else {
      // A takeover (docs/LAYOUT.md, "Publisher, step by step"): P and K from the snapshot create took holding the role.
      this.#tail = resume.intent;
      // Parked subscribers look again: a predecessor killed between a TAIL store and its wake (a record's, or a
      // repair's jump, which a lossless successor cannot publish past until they resettle) left them asleep.
      unpark(this.ctl, READ_BLOCK, WAKE_ALL);
    }
  }

  /**
   * The repair's stores: INTENT, COUNT (all three words each: the dead
   * publisher may have left them torn), LATEST, then TAIL at the jump
   * target, and a wake for every parked subscriber. Every
   * subscriber's cursor is then more than a ring behind the tail: at its
   * next read it finds itself lapped and resettles at the tail, counting
   * in `lost` what it skipped (the dead record, if COUNT counted it).
   */
  #jump(): void {
    const ctl = this.ctl;
    const { jump, count } = this.#repair!;
    // INTENT first, SYNC POINT with a subscriber's lap check: a copy in progress is dropped (INTENT - cursor > CAPACITY).
    storeAll64(ctl, B.INTENT, jump);
    // COUNT before TAIL, as in a record's step 2: a quiescent snapshot (INTENT == TAIL) sees the count of its tail.
    storeAll64(ctl, B.COUNT, count);
    // LATEST at the jump, before TAIL: a lapped subscriber's snapshot then finds no newest record (LATEST == TAIL)
    // and resumes at the tail. Left as it was, a second jump with no record between could put it more than
    // 2^32 behind (four and a half rings of 2^30), and a subscriber would resume at a made-up record.
    Atomics.store(ctl, B.LATEST_I32, jump | 0);
    // TAIL, SYNC POINT with a subscriber's load of TAIL: the jump is visible, the counters quiescent again.
    Atomics.store(ctl, B.TAIL_I32, jump | 0);
    this.#tail = jump;
    this.#repair = undefined;
    this.#slowest = -Infinity; // lossless: wait for the subscribers' cursor stores at the jump before the first record
    unpark(ctl, READ_BLOCK, WAKE_ALL); // parked subscribers resettle now
  }

  /**
   * Lossless, a repair pending: whether every live subscriber has read up
   * to the tail, so the jump skips no published record; then it jumps.
   * Until then, once the wait has lasted peerTimeoutMs (then every quarter
   * of it), frees dead subscribers' slots first, as a full ring does.
   */
  #repaired(): boolean {
    if (this.#lag() !== 0 && !(this.#sweepDue() && this.#freeDeadSlots() && this.#lag() === 0)) return false;
    this.#sweepAt = Infinity;
    this.#jump();
    return true;
  }

  /** Records published to this Broadcast so far (by a publisher that took it over: its predecessors' included). */
  get published(): number {
    return this.#count;
  }

  /**
   * Publishes a copy of `bytes` to every subscriber. Lossy: always true
   * (never waits). Lossless: false, writing nothing, while the slowest
   * subscriber has not read far enough for the record to fit; once the
   * ring has been full for peerTimeoutMs, a call also frees the slots of
   * subscribers that died (#unblock), so a publisher that never waits is
   * not held back by them for ever.
   */
  tryWrite(bytes: Uint8Array, type = 0): boolean {
    checkType(type, 'Broadcast.tryWrite');
    if (!(bytes instanceof Uint8Array)) {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, 'Broadcast.tryWrite needs a Uint8Array (or Buffer)');
    }
    const ctl = this.ctl;
    if (ctl.length === 0) throw this.closedError();
    const length = bytes.length;
    if (length > this.maxMessageLength) throw this.tooLarge(length, 'Broadcast.tryWrite');
    if (this.#repair !== undefined && !this.#repaired()) return false;
    const size = L.recordSize(length);
    const position = this.#tail;
    let index = position % this.capacity;
    const toEnd = this.capacity - index;
    const needed = size <= toEnd ? size : toEnd + size;
    const end = position + needed;
    if (this.lossless && !this.#room(end) && !this.#unblock(end)) return false;
    // 1. INTENT, SYNC POINT with a subscriber's lap check: from here the bytes of
    //    [end - CAPACITY, ...) may change under a subscriber still reading them.
    store64(ctl, B.INTENT, end, position);
    // 2. COUNT, before TAIL: a quiescent snapshot (INTENT == TAIL) sees the count of its tail.
    store64(ctl, B.COUNT, this.#count + 1, this.#count);
    // 3. The bytes, plain stores (TSO keeps them between the stores of 1-2 and 4).
    const data32 = this.data32;
    if (size > toEnd) {
      data32[(index >> 2) + L.RECORD_LENGTH_I32] = toEnd; // a padding record's LENGTH: its whole extent
      data32[(index >> 2) + L.RECORD_TYPE_I32] = L.PADDING_TYPE;
      index = 0;
    }
    data32[(index >> 2) + L.RECORD_LENGTH_I32] = L.RECORD_HEADER + length; // version 2: LENGTH counts the header
    data32[(index >> 2) + L.RECORD_TYPE_I32] = type;
    this.data.set(bytes, index + L.RECORD_HEADER);
    this.#tail = end;
    this.#count++;
    // 4. LATEST, before TAIL: a quiescent snapshot finds where its newest record starts.
    Atomics.store(ctl, B.LATEST_I32, position | 0);
    // 5. TAIL, SYNC POINT with a subscriber's load of TAIL: the record is readable.
    Atomics.store(ctl, B.TAIL_I32, end | 0);
    // 6. Wake every parked subscriber with one wake, only if one announced itself.
    unpark(ctl, READ_BLOCK, WAKE_ALL);
    return true;
  }

  /** Lossless: whether a record ending at `end` laps no live subscriber; rescans the table when the cached bound says full. */
  #room(end: number): boolean {
    if (end - this.#slowest <= this.capacity) return true;
    this.#slowest = this.#tail - this.#lag();
    if (end - this.#slowest > this.capacity) return false;
    this.#sweepAt = Infinity; // not full (any more): #unblock's clock starts again at the next full ring
    return true;
  }

  /** How far (bytes) the slowest owned slot's CURSOR is behind the tail: 0 when every subscriber has read everything. */
  #lag(): number {
    const ctl = this.ctl;
    let lag = 0;
    for (let i = 0; i < this.subscribers; i++) {
      const s = B.slotOffset(i) / 4;
      // Observes a subscriber's slot: OWNER set (its token after its CURSOR) means its CURSOR counts; a claimant
      // still registering (no file: its id negated) counts too, by whatever CURSOR holds (a past position: more room is never assumed).
      if (Atomics.load(ctl, s + B.SLOT_OWNER_I32) === 0) continue;
      // Observes the subscriber's progress (its store after each read or batch).
      const cursor = Atomics.load(ctl, s + B.SLOT_CURSOR_I32);
      const behind = (this.#tail - cursor) >>> 0; // low 32 bits of tail - cursor
      // More than CAPACITY behind: a newcomer's provisional cursor (it moves to the tail at once); wait for it.
      if (behind > lag) lag = behind;
    }
    return lag;
  }

  /**
   * Lossless, the ring full after a scan: once it has been full for
   * peerTimeoutMs (then every quarter of it, the parked waits' check
   * period), frees the slots of dead subscribers and looks again. Until
   * then a clock read per call, no lock test and no /proc read.
   */
  #unblock(end: number): boolean {
    return this.#sweepDue() && this.#freeDeadSlots() && this.#room(end);
  }

  /** Whether the ring (or a pending repair) has held the publisher back for peerTimeoutMs, then every quarter of it. */
  #sweepDue(): boolean {
    const now = performance.now();
    if (this.#sweepAt === Infinity) this.#sweepAt = now + this.peerTimeoutMs;
    if (now < this.#sweepAt) return false;
    this.#sweepAt = now + this.peerTimeoutMs / 4;
    return true;
  }

  /**
   * A parked lossless publisher's check period passed: frees the slots of
   * subscribers that died (#freeDeadSlots). Always true: the publisher
   * waits on for the live ones.
   */
  protected override consumerAlive(): boolean {
    this.#freeDeadSlots();
    return true;
  }

  /**
   * Frees the slots of subscribers that died: nobody holds the slot's lock
   * (without a file, the slot's process or thread is gone). True if it
   * freed any (the next record rescans the table). One lock test (or /proc
   * read) per owned slot: called by a parked write's check and by #unblock,
   * never per record.
   */
  #freeDeadSlots(): boolean {
    const ctl = this.ctl;
    let freed = false;
    if (ctl.length === 0) return freed;
    for (let i = 0; i < this.subscribers; i++) {
      const s = B.slotOffset(i) / 4;
      // Observes the slot's owner; the CAS below frees only that owner's tenure.
      const owner = Atomics.load(ctl, s + B.SLOT_OWNER_I32);
      if (owner === 0) continue;
      // The slot's lock, where the region has a file (every subscriber of such a region holds its slot's
      // lock on its Roles' own description: joined, it holds the lock, or it has no slot).
      const held = this.roles !== undefined ? heldByAnyone(this.region, this.base + B.slotOffset(i)) : undefined;
      // Without a file: a claimant still registering by its id (OWNER negative), else the slot's pid (in a
      // SharedArrayBuffer, thread id) and start time (stored before the token in OWNER).
      const alive = held ?? slotOwnerAlive(ctl, s, owner, ctl.buffer instanceof SharedArrayBuffer);
      // Frees a dead subscriber's slot; fails harmlessly if a newcomer replaced OWNER meanwhile.
      if (alive || Atomics.compareExchange(ctl, s + B.SLOT_OWNER_I32, owner, 0) !== owner) continue;
      // With a file, a newcomer that took the slot's lock after our look replaces OWNER whatever it holds, so
      // the CAS above succeeds if it has not yet, or if its token equals the dead one's (tokens need only
      // differ from live subscribers': two may be equal, by a chance of 1 in 2^31 here, or two C peers of one
      // pid). Found held now: the slot is the newcomer's, and gets `owner` back (its token, or one its CAS
      // will replace; or, if the newcomer left again meanwhile, a dead one the next sweep frees).
      if (held !== undefined && heldByAnyone(this.region, this.base + B.slotOffset(i)) === true) {
        Atomics.compareExchange(ctl, s + B.SLOT_OWNER_I32, 0, owner);
        continue;
      }
      freed = true;
      this.#slowest = -Infinity; // rescan before the next record
      unpark(ctl, WRITE_BLOCK, WAKE_WRITERS); // our own parked write (a Promise wait sleeps until woken) tries again
    }
    return freed;
  }

  tryRead(): Uint8Array | null {
    throw wrongEnd('tryRead', 'publisher');
  }

  // The other read verbs of a Queue would fail in tryRead, naming it: each names itself.

  override readSync(_options?: WaitOptions): Uint8Array {
    throw wrongEnd('readSync', 'publisher');
  }

  override read(_options?: WaitOptions): Promise<Uint8Array> {
    return Promise.reject(wrongEnd('read', 'publisher'));
  }

  override messages(_options?: WaitOptions): AsyncIterableIterator<Uint8Array> {
    throw wrongEnd('messages', 'publisher');
  }

  override [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    throw wrongEnd('Broadcast[Symbol.asyncIterator] (for await)', 'publisher');
  }

  override readable(_options?: { highWaterMark?: number; signal?: AbortSignal }): Readable {
    throw wrongEnd('readable', 'publisher');
  }

  // ---- select's look (queue.ts): a write entry only ----

  protected recordReady(): boolean {
    throw wrongEnd('select', 'publisher');
  }

  override waitReadable(): Promise<void> {
    return Promise.reject(wrongEnd('waitReadable', 'publisher'));
  }

  /** Lossy: always (the publisher never waits). Lossless: the slowest live subscriber leaves room for the record. */
  protected writeReady(length: number): boolean {
    if (this.closedFlag() || !this.lossless) return true;
    if (this.#repair !== undefined && !this.#repaired()) return false;
    const size = L.recordSize(length);
    const toEnd = this.capacity - (this.#tail % this.capacity);
    return this.#room(this.#tail + (size <= toEnd ? size : toEnd + size)); // the end tryWrite would give the record
  }

  protected selectLimit(write: boolean): number {
    return write ? this.maxMessageLength : -1;
  }

  drain(_handler: DrainHandler, _limit?: number): number {
    throw wrongEnd('drain', 'publisher');
  }

  protected override replacement(): string {
    return 'create a new publisher (Broadcast.create)';
  }
}

export class BroadcastSubscriber extends BroadcastEnd {
  /** Records this subscriber missed because the publisher lapped it (lossy). */
  lost = 0;
  /** Records handed out (tryRead, read, the iterator, drain). */
  received = 0;
  /** This subscriber's slot (-1: none, a lossy subscriber beyond the table) and its token (its lock is on our Roles). */
  #slot = -1;
  #token = 0;
  /** Position of the next record to read (exact), and that record's number (records published before it). */
  #cursor = 0;
  #number = 0;
  /** The start is not yet settled: the first read takes a quiescent snapshot first. */
  #pending = true;
  /** #settle's snapshot (scratch: no allocation per lap). */
  readonly #snapshot: Snapshot = { intent: 0, tail: 0, count: 0, latest: 0 };
  /** Lossy drain: each record is copied here and checked before the handler sees it. */
  #scratch: Uint8Array = CLOSED_U8;
  /** Polls that found nothing past the cursor (#locate looks at INTENT on every EMPTY_LOOKS_PER_LAP_CHECK-th). */
  #emptyLooks = 0;
  // What #locate found besides the index (scratch fields, no allocation).
  #length = 0;
  #type = 0;
  #end = 0;
  #bad = false;

  /** @internal Use Broadcast.subscribe. */
  constructor(
    buffer: ArrayBuffer | SharedArrayBuffer,
    base: number,
    g: Geometry,
    lossless: boolean,
    roles: Roles | undefined,
    region: Region,
  ) {
    super(buffer, base, g, lossless, roles, region, { place: undefined, where: ringWhere(region, base), look: () => '' }); // claims no role
  }

  /** @internal Takes a slot (lossless: one is required) and settles the start. */
  join(): void {
    const ctl = this.ctl;
    const token = (nextToken = (nextToken % 0x7fffffff) + 1); // [1, 2^31 - 1]: never 0, never a negated id
    const who = registrant(ctl.buffer instanceof SharedArrayBuffer);
    for (let i = 0; i < this.subscribers && this.#slot < 0; i++) {
      const s = B.slotOffset(i) / 4;
      if (this.roles !== undefined) {
        // The slot's lock, exclusive, on the description our HOLDER lock is on: held means a live subscriber has the slot.
        if (!this.roles.lockByte(B.slotOffset(i))) continue;
      } else if (!claimSlotWithoutFile(ctl, s, who.id)) {
        continue; // a live subscriber's
      }
      // Information for inspect and the fallback liveness check: start time before pid, both before the token.
      Atomics.store(ctl, s + B.SLOT_START_I32, who.start);
      Atomics.store(ctl, s + B.SLOT_PID_I32, who.id);
      // A provisional cursor (the tail now) before OWNER: a publisher that counts us never reads garbage.
      Atomics.store(ctl, s + B.SLOT_CURSOR_I32, Atomics.load(ctl, B.TAIL_I32));
      if (this.roles !== undefined) {
        // We hold the lock: any owner left in the slot died. Replace it (a publisher freeing it meanwhile is fine).
        for (let o = Atomics.load(ctl, s + B.SLOT_OWNER_I32); ; ) {
          const seen = Atomics.compareExchange(ctl, s + B.SLOT_OWNER_I32, o, token);
          if (seen === o) break;
          o = seen;
        }
      } else if (Atomics.compareExchange(ctl, s + B.SLOT_OWNER_I32, -who.id, token) !== -who.id) {
        // Publishes the registration (START, PID, CURSOR above) with the token. Failing, the slot was freed
        // under us (a sweep that took us for dead, which a live claimant never is): look for another one.
        continue;
      }
      this.#slot = i;
      this.#token = token;
      // Lossless: a publisher parked on the slot's previous (dead) owner looks again, now that our provisional
      // cursor replaced its stale one, instead of at its next check period.
      if (this.lossless) unpark(ctl, WRITE_BLOCK, WAKE_WRITERS);
    }
    if (this.#slot < 0 && this.lossless) {
      throw new ShmringError(
        ErrorCodes.BUSY,
        `Broadcast.subscribe: all ${this.subscribers} subscriber slots of ${ringWhere(this.region, this.base, 'Broadcast')} are taken; ` +
          'close a subscriber first, or create the Broadcast (and size its region) with a larger `subscribers`',
      );
    }
    this.#settle(false);
  }

  /**
   * Takes a quiescent snapshot (INTENT, TAIL, COUNT, INTENT: no record in
   * flight) and moves the cursor to its tail; when lapped (`lapped`), counts
   * the records skipped. False while the publisher is in the middle of a
   * record (try again).
   */
  #settle(lapped: boolean): boolean {
    const ctl = this.ctl;
    const snap = this.#snapshot;
    if (!takeSnapshot(ctl, snap)) {
      if (!lapped && this.#slot >= 0) {
        // Still joining: our provisional CURSOR follows TAIL (we start at a later snapshot's tail, so the
        // bytes before it are not ours to read). A lossless publisher repairing a dead one's record waits for
        // every CURSOR to reach the tail: without this, a joiner that cannot settle until then would hold it for ever.
        const tail = Atomics.load(ctl, B.TAIL_I32);
        // Publishes the provisional cursor (a position we will not read before); woken, a parked repair looks again.
        if (Atomics.exchange(ctl, B.slotOffset(this.#slot) / 4 + B.SLOT_CURSOR_I32, tail) !== tail && this.lossless) {
          unpark(ctl, WRITE_BLOCK, WAKE_WRITERS);
        }
      }
      return false;
    }
    const { intent, tail, count, latest } = snap;
    if (!plausible(snap)) {
      throw corrupt(`the tail (${intent}, record ${count}) is not a position and count a publisher leaves`, this.where);
    }
    if (!lapped) {
      this.#pending = false;
    } else if (intent < this.#cursor || count < this.#number) {
      throw corrupt(
        `the tail (${intent}, record ${count}) is behind a subscriber's cursor (${this.#cursor}, record ${this.#number})`,
        this.where,
      );
    } else {
      // Lapped: resume at the newest record (its start is at most a ring before the tail), counting the skipped ones.
      const back = (tail - latest) >>> 0;
      // A record starts at a multiple of 8: a LATEST that says otherwise would put the cursor between words.
      if ((back & 7) !== 0) throw corrupt(`the newest record starts at ${latest >>> 0}, not a multiple of 8`, this.where);
      if (count - 1 >= this.#number && back > 0 && back <= this.capacity && intent - back >= this.#cursor) {
        this.lost += count - 1 - this.#number;
        this.#cursor = intent - back;
        this.#number = count - 1;
        this.#storeCursor(ctl);
        return true;
      }
      this.lost += count - this.#number;
    }
    this.#cursor = intent;
    this.#number = count;
    this.#storeCursor(ctl);
    return true;
  }

  /** Publishes this subscriber's cursor in its slot; a lossless publisher parked on it is woken. */
  #storeCursor(ctl: Int32Array): void {
    if (this.#slot < 0) return;
    // Publishes our progress to the publisher (it frees the bytes before the cursor); the bytes were read before.
    Atomics.store(ctl, B.slotOffset(this.#slot) / 4 + B.SLOT_CURSOR_I32, this.#cursor | 0);
    if (this.lossless) unpark(ctl, WRITE_BLOCK, WAKE_WRITERS);
  }

  /**
   * Finds the record at the cursor: the index of its payload in the data
   * area, or -1 if none is published (or a lap could not be settled yet).
   * Leaves its length, type, the cursor after it and whether its header is
   * impossible (#bad) in the scratch fields: read once, bounds-checked.
   */
  #locate(thorough = false): number {
    const ctl = this.ctl;
    for (;;) {
      const cursor = this.#cursor;
      // SYNC POINT with the publisher's TAIL store: the bytes below it are readable.
      const available = (Atomics.load(ctl, B.TAIL_I32) - cursor) >>> 0;
      // Nothing past the cursor, as TAIL's 32 bits tell: caught up, or (lossy) lapped by a multiple of 2^32
      // bytes (a subscriber idle through 4 GiB of records whose sizes add up exactly), which only INTENT tells
      // apart. Its line is the publisher's, written at every record: a look at it on each empty poll made a
      // lossy publisher with two spinning subscribers some 25% slower (benches/src/broadcast.ts). So it is
      // looked at on every EMPTY_LOOKS_PER_LAP_CHECK-th empty poll, on each look of select and waitReadable
      // (`thorough`, recordReady), and once the publisher closed (FLAGS, on a line nobody writes meanwhile), so
      // that received + lost is exact at the end. Until then a wait may park beside the newest record of such
      // a lap; the next publication wakes it, and the lap is counted then. A lossless publisher never laps.
      if (available === 0) {
        const skip = this.lossless || (!thorough && ++this.#emptyLooks % EMPTY_LOOKS_PER_LAP_CHECK !== 0 && !this.closedFlag());
        if (skip || !this.#lapped()) return -1;
      }
      if (available === 0 || available > this.capacity) {
        // The tail is more than a ring ahead, or a multiple of 2^32 bytes: lapped (or TAIL is garbage, which #settle finds).
        if (!this.#settle(true)) return -1;
        continue;
      }
      const data32 = this.data32;
      let index = cursor % this.capacity;
      let skipped = 0;
      let length = data32[(index >> 2) + L.RECORD_LENGTH_I32]!;
      let type = data32[(index >> 2) + L.RECORD_TYPE_I32]!;
      let bad = false;
      if (type === L.PADDING_TYPE) {
        skipped = this.capacity - index;
        bad = length !== skipped || available < skipped + L.RECORD_HEADER;
        index = 0;
        length = data32[L.RECORD_LENGTH_I32]!;
        type = data32[L.RECORD_TYPE_I32]!;
      }
      length -= L.RECORD_HEADER; // version 2: LENGTH counts the header; the payload is the rest
      const size = L.recordSize(length);
      // A record never straddles the end of the data area (padding comes first): one that would is impossible too.
      this.#bad =
        bad || length < 0 || length > this.maxMessageLength || type < 0 || skipped + size > available || index + size > this.capacity;
      this.#length = this.#bad ? 0 : length;
      this.#type = type;
      this.#end = cursor + skipped + size;
      return index + L.RECORD_HEADER;
    }
  }

  /**
   * The lap check, after a copy: whether the publisher may have rewritten
   * any byte at or after the cursor (INTENT more than CAPACITY ahead of it).
   * NaN (a 64-bit load that kept changing) counts as lapped.
   */
  #lapped(): boolean {
    // SYNC POINT with the publisher's INTENT store, which precedes any overwrite.
    const intent = load64(this.ctl, B.INTENT);
    // NaN: a publisher held up inside a crossing of 2^32. Lossy, that may be a lap; lossless, the publisher
    // never overwrites what a subscriber has not read (the jump of a repair is seen in TAIL, by #locate).
    if (Number.isNaN(intent)) return !this.lossless;
    return !(intent - this.#cursor <= this.capacity);
  }

  /** Moves past the record #locate found. */
  #advance(): void {
    this.#cursor = this.#end;
    this.#number++;
    this.received++;
  }

  /** Copies the next message out, or returns null if none is published. Never a torn one. Its type goes to `lastType`. */
  tryRead(): Uint8Array | null {
    const ctl = this.ctl;
    if (ctl.length === 0) throw this.closedError();
    if (this.draining) throw this.drainBusyError();
    if (this.#pending && !this.#settle(false)) return null;
    for (;;) {
      const index = this.#locate();
      if (index < 0) return null;
      const message = this.#bad ? null : copyOut(this.data, index, this.#length);
      if (this.#lapped()) {
        if (!this.#settle(true)) return null;
        continue;
      }
      if (message === null) throw corrupt(`a record at position ${this.#cursor} has an impossible header`, this.where);
      this.lastType = this.#type;
      this.#advance();
      this.#storeCursor(ctl);
      return message;
    }
  }

  /**
   * Hands each published record to `handler(data, offset, length, type)`,
   * up to `limit`; returns how many. Lossless: in place (the publisher
   * leaves them alone until the batch ends). Lossy: each record is first
   * copied to a buffer of this subscriber and checked (the publisher may
   * lap us), so `data` is that buffer. Never waits, allocates nothing per
   * record. From its handler, a read of this subscriber (tryRead, readSync,
   * read, the iterator, drain) is ERR_SHMRING_BUSY, as an SpscRing's; a
   * close() or detach() there lets go of the slot only once drain() has
   * stored the cursor.
   */
  drain(handler: DrainHandler, limit?: number): number {
    const max = checkDrain(handler, limit, 'Broadcast.drain');
    const ctl = this.ctl;
    if (ctl.length === 0) throw this.closedError();
    if (this.draining) throw this.drainBusyError();
    if (this.#pending && !this.#settle(false)) return 0;
    let count = 0;
    const start = this.#cursor;
    this.draining = true; // a lossless record in hand is the publisher's again only once the cursor passes it, after the batch
    try {
      while (count < max && this.ctl.length !== 0) {
        const index = this.#locate();
        if (index < 0) break;
        let data = this.data;
        let offset = index;
        if (!this.lossless) {
          if (this.#scratch.length < this.#length) this.#scratch = new Uint8Array(Math.max(this.#length, 256, this.#scratch.length * 2));
          if (!this.#bad) this.#scratch.set(this.data.subarray(index, index + this.#length));
          if (this.#lapped()) {
            if (!this.#settle(true)) break;
            continue;
          }
          data = this.#scratch;
          offset = 0;
        } else if (this.#bad && this.#lapped()) {
          if (!this.#settle(true)) break;
          continue;
        }
        if (this.#bad) throw corrupt(`a record at position ${this.#cursor} has an impossible header`, this.where);
        const length = this.#length,
          type = this.#type;
        this.#advance();
        count++;
        handler(data, offset, length, type);
      }
    } finally {
      try {
        if (this.#cursor !== start && ctl.length !== 0) this.#storeCursor(ctl);
      } finally {
        this.endDrain(); // after the store: a detach() in the handler frees the slot's lock only now
      }
    }
    if (count > 0) this.drained(); // its readers are busy: a wait soon after may poll (PollPacer)
    return count;
  }

  tryWrite(_bytes: Uint8Array, _type?: number): boolean {
    throw wrongEnd('tryWrite', 'subscriber');
  }

  // The other write verbs of a Queue would fail in tryWrite, naming it: each names itself.

  override writeSync(_bytes: Uint8Array, _options?: WriteOptions): void {
    throw wrongEnd('writeSync', 'subscriber');
  }

  override write(_bytes: Uint8Array, _options?: WriteOptions): Promise<void> {
    return Promise.reject(wrongEnd('write', 'subscriber'));
  }

  override writable(_options?: { highWaterMark?: number; signal?: AbortSignal; closeOnFinish?: boolean }): Writable {
    throw wrongEnd('writable', 'subscriber');
  }

  // ---- select's look (queue.ts): a read entry only ----

  /** A record is published past the cursor (or the publisher lapped it: tryRead skips ahead), or the publisher closed. */
  protected recordReady(): boolean {
    // The start is settled first, as tryRead does; not now (a record in flight): its TAIL store wakes the wait.
    if (this.#pending && !this.#settle(false)) return false;
    // What tryRead would find, without the copy: a record at the cursor (#locate observes TAIL and settles a lap
    // past it) that the publisher is not overwriting (#lapped observes INTENT). A lap that cannot be settled yet (a
    // record in flight, or a publisher that died in one) is not ready: the wait parks, and the TAIL store wakes it
    // (or the watchdog finds the publisher dead), instead of resolving at once to a tryRead that finds nothing.
    for (;;) {
      if (this.#locate(true) < 0) return false;
      if (!this.#lapped()) return true;
      if (!this.#settle(true)) return false;
    }
  }

  protected writeReady(): boolean {
    throw wrongEnd('select', 'subscriber');
  }

  protected selectLimit(write: boolean): number {
    return write ? -1 : 0;
  }

  /** Positions and counts of this subscriber (a snapshot): its cursor, the records it read and lost. */
  get position(): number {
    return this.#cursor;
  }

  /**
   * Leaves the Broadcast, as detach() does: frees this subscriber's slot (a
   * lossless publisher stops waiting for it); the Broadcast goes on for the
   * others. Idempotent.
   */
  override close(): void {
    this.detach();
  }

  /** Gives the slot back (close(), detach(), or the end of a drain() they were called from), then Queue lets go of the slot's lock. */
  protected override leaveRing(ctl: Int32Array): void {
    if (this.#slot < 0) return;
    // Frees the slot if it is still ours (a publisher may have freed it, judging us dead); after drain()'s last
    // cursor store. A lossless publisher parked on our cursor re-scans and goes on.
    Atomics.compareExchange(ctl, B.slotOffset(this.#slot) / 4 + B.SLOT_OWNER_I32, this.#token, 0);
    if (this.lossless) unpark(ctl, WRITE_BLOCK, WAKE_WRITERS);
    this.#slot = -1;
  }

  protected override dropViews(): void {
    super.dropViews();
    this.#scratch = CLOSED_U8;
  }

  protected override replacement(): string {
    return 'subscribe a new one (Broadcast.subscribe)';
  }
}
