/**
 * LatestValue: the newest version of one value (a configuration, a price,
 * a status), shared by one writer and any number of readers.
 *
 * Threading contract:
 *  - One writer at a time, in any process: the first object to publish()
 *    takes the writer role and holds it until it closes or its process
 *    dies (where the region has no file to lock: its thread ends);
 *    publish() on any other live object throws ERR_SHMRING_BUSY.
 *  - Any number of readers, in any processes and threads: read(), changed(),
 *    changedSync(), updates(). A reader never blocks the writer and never
 *    writes to shared memory except the wait words while it is parked.
 *  - read() never waits: it returns the newest complete value. It is
 *    lock-free, not wait-free: it retries only while the writer publishes
 *    twice during one copy. Its answer is stale as soon as it returns.
 *  - read() returns the same (frozen) object while the version has not
 *    changed: `value` is shared by those reads. Copy it before changing it.
 *  - changedSync() parks the thread (workers, dedicated processes);
 *    changed() and updates() return Promises and never block the loop.
 *
 * Invariants (docs/LAYOUT.md, "LatestValue"; offsets in latest-layout.ts):
 *  - Version v lives in slot v & 1; PUBLISHED holds the low 32 bits of the
 *    newest complete version, so it names a slot the writer is not writing
 *    (it writes version PUBLISHED + 1, into the other one).
 *  - A read returns the version PUBLISHED named, never a newer one it finds
 *    in the slot (complete, but not yet published): the versions a reader
 *    sees never go back.
 *  - A slot's SEQ is odd exactly while the writer rewrites it; a copy is
 *    whole when SEQ was even before it and unchanged after it.
 *  - Before the first publish, the value is version 0, empty, type 0 (slot
 *    0 as create() leaves it).
 *  - Versions grow by one per publish and stay below 2^53 (a number).
 *  - Only the role holder writes a slot, SEQ or PUBLISHED; a writer that
 *    dies leaves at worst the other slot odd, which a successor rewrites.
 *  - Anything read from shared memory is bounds-checked before use; a
 *    value no correct writer leaves (a LENGTH above maxSize in a whole
 *    copy, an odd SEQ in the published slot) is ERR_SHMRING_CORRUPT.
 *
 * Memory ordering: every Atomics access is sequentially consistent; the
 * value's bytes and the slot's other words are plain accesses between the
 * two SEQ stores (writer) or the two SEQ loads (reader). JavaScript has no
 * fence: this relies on stores staying in program order and loads staying
 * in program order, which x86-64 (TSO), the platform shmring targets,
 * guarantees. A C peer uses explicit fences (docs/LAYOUT.md).
 */
import { ErrorCodes, ShmringError, ShmringRangeError, ShmringTypeError, type Region } from '@shmring/core';
import * as L from './layout.js';
import * as V from './latest-layout.js';
import { attachTo, checkOffset, checkOptionsObject, readHeader, ringMemory, unpublish, writeHeader } from './header.js';
import { checkType, checkWaitOptions, claimPlace, optionNames, ringWhere, shown } from './queue.js';
import { isAlive, isThreadAlive, ownStartTime, ownThread, registerInWord } from './liveness.js';
import { PollPacer, SpinPacer } from './pacing.js';
import { layOut, Roles } from './roles.js';
import { parkAsync, parkSync, unpark, WaitStop, type WaitBlock, type WaitOptions } from './waiting.js';

/**
 * The options of changed(), changedSync() and updates() (which takes `since` beside changed()'s): no
 * peerTimeoutMs (a new writer may come: WRITER_WAIT) nor type; `poll` and `ref` are the Promise verbs'.
 */
const CHANGED_OPTIONS = optionNames('timeoutMs', 'spin', 'poll', 'signal', 'ref');
const CHANGED_SYNC_OPTIONS = optionNames('timeoutMs', 'spin', 'signal');
const UPDATES_OPTIONS = optionNames(...CHANGED_OPTIONS.names, 'since');
/** The options of create, of regionSize (create's but offset: it would be ignored), and of attach. */
const CREATE_OPTION_NAMES: readonly string[] = ['maxSize', 'offset'];
const SIZE_OPTION_NAMES: readonly string[] = ['maxSize'];
const ATTACH_OPTION_NAMES: readonly string[] = ['offset'];

export interface LatestOptions {
  /** Largest value, in bytes: an integer in [0, 2^30]. */
  maxSize: number;
  /** Where the LatestValue starts in its region: a multiple of 64; default 0. */
  offset?: number;
}

export interface LatestAttachOptions {
  /** Where the LatestValue starts in its region (as given to create); default 0. */
  offset?: number;
}

/** What read() returns. */
export interface LatestRead {
  /** 0 before the first publish, then one more per publish. */
  readonly version: number;
  /** The value's bytes (shared by every read of this version through this object). */
  readonly value: Uint8Array;
  /** The type given to publish() (0 by default). */
  readonly type: number;
}

/** What updates() yields. */
export interface LatestUpdate extends LatestRead {
  /** Versions published since the previous item (or `since`) that this one replaces unseen. */
  readonly skipped: number;
}

/** Options of changed() / changedSync(): timeoutMs, signal, spin, poll (as the rings' waits; no peerTimeoutMs). */
export type ChangedOptions = Omit<WaitOptions, 'peerTimeoutMs'>;

export interface UpdatesOptions extends ChangedOptions {
  /**
   * The version the caller already has: items start after it. Default: the
   * version before the current one, so the current value comes first (and,
   * before any publish, the first item is version 1).
   */
  since?: number;
}

/** Parked readers: one wait block, one wake for all of them. */
const WAIT_BLOCK: WaitBlock = { waiters: V.WAITERS_I32, signal: V.SIGNAL_I32 };
/** unpark's count: every parked reader (one futex_wake for all). */
const WAKE_ALL = 0x7fffffff;
/**
 * Waits of a LatestValue never end for a dead writer (a new one may come),
 * but they look at PUBLISHED every STRANDED_LOOK_MS: a writer that died
 * between its step 4 and its wake-up (step 5) left its readers asleep
 * beside the value it published, for good if no other writer comes. The
 * look is the wait's peer check ("alive" while PUBLISHED still holds the
 * version waited past), whose "gone" makes one last attempt, which takes
 * the value: one load per parked reader per look, on the watchdog's timer.
 */
const STRANDED_LOOK_MS = 250;
const WRITER_WAIT: WaitOptions = { peerTimeoutMs: STRANDED_LOOK_MS * 4 };
const EMPTY = new Uint8Array(0);

/**
 * The LatestValue objects of this thread that took a writer role by
 * WRITER_TOKEN in a region other processes may attach (a System V
 * segment: LatestValue.#takeToken), by place (claimPlace): the token names
 * a thread, not an object, so whether our own id in it is a live object of
 * ours or one lost without close() (its region closed, or collected) is
 * known only here. Module state is per thread, as the ids in the token are.
 */
const tokenWriters = new Map<string, WeakRef<LatestValue>>();

/** The region, as ERR_SHMRING_BUSY names it. */
function regionLabel(region: Region, base: number): string {
  const key = region.key ? `, key 0x${(region.key >>> 0).toString(16).padStart(8, '0')}` : '';
  const named = region.backing === 'sysv' ? `id ${region.id}${key}` : (region.path ?? region.name);
  return `the ${region.backing} region${named === undefined ? '' : ` ${named}`}${base === 0 ? '' : ` at offset ${base}`}`;
}

function corrupt(what: string, where: string): ShmringError {
  return new ShmringError(
    ErrorCodes.CORRUPT,
    `LatestValue: ${what} in ${where}; the region was overwritten by something that is not a correct writer: stop the processes that use it, and create the value again`,
  );
}

function checkMaxSize(maxSize: unknown, verb: string): number {
  if (typeof maxSize !== 'number' || !Number.isInteger(maxSize)) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: maxSize=${shown(maxSize)} must be an integer in [0, ${V.MAX_VALUE_SIZE}]`,
    );
  }
  if (maxSize < 0 || maxSize > V.MAX_VALUE_SIZE) {
    throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: maxSize=${maxSize} must be an integer in [0, ${V.MAX_VALUE_SIZE}]`);
  }
  return maxSize;
}

function checkVersion(version: unknown, verb: string): number {
  if (typeof version !== 'number' || !Number.isInteger(version)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: sinceVersion=${shown(version)} must be an integer >= 0`);
  }
  if (version < 0 || !Number.isSafeInteger(version)) {
    throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: sinceVersion=${version} must be an integer in [0, 2^53 - 1]`);
  }
  return version;
}

export class LatestValue {
  /** Largest value, in bytes. */
  readonly maxSize: number;
  /** The whole LatestValue as words (header, blocks, slots); length 0 once closed. */
  #ctl: Int32Array;
  /** The whole LatestValue as bytes. */
  #bytes: Uint8Array;
  /** Int32 index of slot 0's first word, and words from one slot to the next. */
  readonly #slot0I32: number;
  readonly #strideI32: number;
  readonly #roles: Roles | undefined;
  /** claimPlace() of the LatestValue: set where the writer role is WRITER_TOKEN in a region other processes attach (tokenWriters). */
  readonly #place: string | undefined;
  /** The region and offset, for ERR_SHMRING_BUSY and ERR_SHMRING_CLOSED. */
  readonly #where: string;
  /** This object holds the writer role (and #token, its id in WRITER_TOKEN, where the region has no file). */
  #writer = false;
  #token = 0;
  /** Writer: the newest version it published (or found when it took the role). */
  #version = 0;
  /** Reader: the last read's result, valid while PUBLISHED and that slot's SEQ still read as then. */
  #cached: LatestRead | undefined;
  #cachedPublished = 0;
  #cachedSeqI32 = 0;
  #cachedSeq = 0;
  /** VERSION_HI of the cached read (as an int32, as the word reads). */
  #cachedHi = 0;
  readonly #spinPacer = new SpinPacer();
  readonly #pollPacer = new PollPacer();
  /** One per pending changed() of this object that did not settle at once (updates() waits in changed()): close() ends them. */
  readonly #waits = new Set<WaitStop>();

  private constructor(region: Region, buffer: ArrayBuffer | SharedArrayBuffer, base: number, maxSize: number, roles: Roles | undefined) {
    this.maxSize = maxSize;
    this.#place = claimPlace(region, base, roles);
    this.#where = regionLabel(region, base);
    const size = V.latestSize(maxSize);
    this.#ctl = new Int32Array(buffer, base, size / 4);
    this.#bytes = new Uint8Array(buffer, base, size);
    this.#slot0I32 = V.slotOffset(maxSize, 0) / 4;
    this.#strideI32 = V.latestSlotStride(maxSize) / 4;
    this.#roles = roles;
  }

  /**
   * Bytes a LatestValue of values up to `maxSize` bytes takes: what a
   * region needs for one at offset 0; one at `offset` needs offset +
   * regionSize(). So `offset` is refused here (ERR_SHMRING_INVALID_ARGUMENT),
   * not ignored.
   */
  static regionSize(options: Omit<LatestOptions, 'offset'>): number {
    checkOptionsObject(options, 'LatestValue.regionSize', SIZE_OPTION_NAMES);
    return V.latestSize(checkMaxSize(options?.maxSize, 'LatestValue.regionSize'));
  }

  /**
   * Lays out a LatestValue at the start of `region` (or at `offset`), version 0, overwriting what is there,
   * unless an object is attached to one there: ERR_SHMRING_BUSY (in a region that takes locks: POSIX, file, memfd).
   */
  static create(region: Region, options: LatestOptions): LatestValue {
    checkOptionsObject(options, 'LatestValue.create', CREATE_OPTION_NAMES);
    const maxSize = checkMaxSize(options?.maxSize, 'LatestValue.create');
    const base = checkOffset(options.offset, 'LatestValue.create');
    const size = V.latestSize(maxSize);
    const buffer = ringMemory(region, base, size, 'LatestValue.create');
    // Before MAGIC (never seen unheld once it exists); exclusive while nobody else holds it.
    const roles = Roles.holdToCreate(region, buffer, base, 'LatestValue.create', ringWhere(region, base, 'LatestValue'));
    layOut(roles, () => {
      const ctl = unpublish(buffer, base);
      // Both slots stable (SEQ 0) and empty; slot 0 holds version 0. Published by writeHeader's store of MAGIC.
      new Int32Array(buffer, base + V.SLOTS_OFFSET, (2 * V.latestSlotStride(maxSize)) / 4).fill(0);
      writeHeader(ctl, { kind: V.KIND_LATEST, capacity: maxSize, slotSize: 0, slotStride: V.latestSlotStride(maxSize), ringSize: size });
    });
    return new LatestValue(region, buffer, base, maxSize, roles);
  }

  /** Attaches to a LatestValue another process or thread created in `region` (at `offset`). */
  static attach(region: Region, options: LatestAttachOptions = {}): LatestValue {
    checkOptionsObject(options, 'LatestValue.attach', ATTACH_OPTION_NAMES);
    const base = checkOffset(options.offset, 'LatestValue.attach');
    const buffer = ringMemory(region, base, 0, 'LatestValue.attach');
    return attachTo(region, buffer, base, 'LatestValue.attach', (roles) => {
      const { capacity } = readHeader(buffer, V.KIND_LATEST, base, undefined, region);
      return new LatestValue(region, buffer, base, capacity, roles);
    });
  }

  // ---- writer ----

  /**
   * Publishes `bytes` (copied) as the next version, with `type` (an integer
   * in [0, 2^31 - 1], default 0); returns that version. Never waits. Wakes
   * every reader parked in changed() with one futex wake, and only if one is.
   */
  publish(bytes: Uint8Array, type = 0): number {
    const ctl = this.#ctl;
    if (ctl.length === 0) throw this.#closedError('LatestValue.publish');
    if (!(bytes instanceof Uint8Array)) {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `LatestValue.publish: bytes=${shown(bytes)} must be a Uint8Array`);
    }
    if (bytes.length > this.maxSize) {
      throw new ShmringRangeError(
        ErrorCodes.MESSAGE_TOO_LARGE,
        `LatestValue.publish: length=${bytes.length} is larger than maxSize=${this.maxSize}`,
      );
    }
    checkType(type, 'LatestValue.publish');
    if (!this.#writer) this.#takeWriter();
    const version = this.#version + 1;
    const slot = version & 1; // parity of the low 32 bits, which is the version's
    const h = this.#slotI32(slot);
    // Our own last store (or a dead writer's): nobody else writes SEQ while we hold the role.
    const seq = Atomics.load(ctl, h + V.SEQ_I32);
    const begin = (seq & 1) === 0 ? (seq + 1) | 0 : (seq + 2) | 0; // odd, and unlike any SEQ a reader saw before
    // Step 1, SYNC POINT with the SEQ loads in #readSlot: a reader copying this slot now sees SEQ change.
    Atomics.store(ctl, h + V.SEQ_I32, begin);
    // Step 2: the slot's contents, plain stores (TSO keeps them after step 1 and before step 3).
    this.#bytes.set(bytes, (h + V.VALUE_I32) * 4);
    ctl[h + V.LENGTH_I32] = bytes.length;
    ctl[h + V.TYPE_I32] = type;
    ctl[h + V.VERSION_LO_I32] = version | 0;
    ctl[h + V.VERSION_HI_I32] = Math.floor(version / 2 ** 32);
    // Step 3, SYNC POINT with #readSlot's second SEQ load: the slot is whole again.
    Atomics.store(ctl, h + V.SEQ_I32, (begin + 1) | 0);
    // Step 4, SYNC POINT with read()'s load of PUBLISHED: this slot is the newest value.
    Atomics.store(ctl, V.PUBLISHED_I32, version | 0);
    this.#version = version;
    // Step 5: wake parked readers, all of them with one wake, only if one announced itself.
    unpark(ctl, WAIT_BLOCK, WAKE_ALL);
    return version;
  }

  /** Takes the writer role (ERR_SHMRING_BUSY if another live object holds it) and learns the current version. */
  #takeWriter(): void {
    const ctl = this.#ctl;
    if (this.#roles === undefined && !(ctl.buffer instanceof SharedArrayBuffer)) {
      this.#takeToken(); // registers its thread in PRODUCER_START and PRODUCER_PID itself
    } else {
      if (this.#roles !== undefined) {
        if (!this.#roles.take('producer', true)) throw this.#busy();
      } else if (this.#token === 0) {
        // Threads of one process: the token is the writer's thread id, so a worker that
        // ended holding the role frees it (its id names no thread of this process any more).
        // (Taken already, #token set, by a take that then found the slots corrupt: ours still.)
        const tid = ownThread().id;
        // Takes the role; pairs with close()'s CAS back to 0.
        const holder = Atomics.compareExchange(ctl, V.WRITER_TOKEN_I32, 0, tid);
        // Another object of this thread, or a live other thread, holds it; a dead thread's token is taken over by a CAS.
        if (
          holder !== 0 &&
          (holder === tid || isThreadAlive(holder, 0) || Atomics.compareExchange(ctl, V.WRITER_TOKEN_I32, holder, tid) !== holder)
        )
          throw this.#busy(holder);
        this.#token = tid;
      }
      // After the role: start time before pid (inspect reads the pid, then the start time).
      Atomics.store(ctl, L.PRODUCER_START_I32, ownStartTime());
      Atomics.store(ctl, L.PRODUCER_PID_I32, process.pid);
    }
    // Observes the previous writer's last step 4; its slot is stable (only the role holder writes slots).
    const published = Atomics.load(ctl, V.PUBLISHED_I32);
    const h = this.#slotI32(published & 1);
    const version = (ctl[h + V.VERSION_LO_I32]! >>> 0) + (ctl[h + V.VERSION_HI_I32]! >>> 0) * 2 ** 32;
    if (version >>> 0 !== published >>> 0 || !Number.isSafeInteger(version)) {
      // Not the writer yet: each publish asks again (and fails while the slots stay so), never writing
      // version 1 over a newer one. The role stays held until close().
      throw corrupt(`slot ${published & 1} holds version ${version} but PUBLISHED is ${published >>> 0}`, this.#where);
    }
    this.#version = version;
    this.#writer = true;
  }

  /**
   * The writer role where the region has no file to lock and other
   * processes may attach it (a System V segment): WRITER_TOKEN holds the
   * writer's thread id (a single-threaded process's is its pid) and
   * PRODUCER_START that thread's start time, as the rings' pid words do
   * there (liveness.ts), so a writer that died, or a worker that ended,
   * frees the role. A CAS from 0, or from a holder that is gone
   * (#holderLives), to -id ("registering": the start time is not stored
   * yet), then the start time, then the id; PRODUCER_PID then names the id
   * too, for inspect. A live holder: ERR_SHMRING_BUSY.
   */
  #takeToken(): void {
    const ctl = this.#ctl;
    const who = ownThread();
    registerInWord(ctl, V.WRITER_TOKEN_I32, L.PRODUCER_START_I32, who, (holder, start) =>
      holder !== 0 && this.#holderLives(holder, start, who) ? this.#busy(holder) : undefined,
    );
    // For inspect, which reads PRODUCER_PID, then PRODUCER_START: the same thread as the token (stored before).
    Atomics.store(ctl, L.PRODUCER_PID_I32, who.id);
    this.#token = who.id;
    if (this.#place !== undefined) tokenWriters.set(this.#place, new WeakRef(this));
  }

  /**
   * Whether the thread `holder` names in WRITER_TOKEN (with `start`, the
   * PRODUCER_START loaded after it) still holds the role. Another id:
   * whether that thread runs, with that start time (any, while it
   * registers). Our own id is still ours only with our start time and a
   * live LatestValue of this thread holding the role here (tokenWriters):
   * this thread registers synchronously, so -id in the word is a
   * predecessor that died registering; another start time is a dead thread
   * whose id came back to us (pid 1 after a container restart); and no live
   * object of ours means ours was lost without close() (its region closed,
   * or it was collected). In each, the holder is dead and the role free.
   */
  #holderLives(holder: number, start: number, who: { id: number; start: number }): boolean {
    if (Math.abs(holder) !== who.id) return holder < 0 ? isAlive(-holder, 0) : isAlive(holder, start);
    // Another start time is a dead thread whose id came back to us, unless either was unknown (0: /proc
    // unreadable when it was taken, EMFILE): then it may be this very thread, and its objects decide.
    if (holder < 0 || (start !== who.start && start !== 0 && who.start !== 0)) return false;
    if (this.#place === undefined) return true; // cannot tell our objects apart: refuse rather than share the role
    const sibling = tokenWriters.get(this.#place)?.deref();
    return sibling === undefined ? false : sibling.#holdsRole();
  }

  /** Whether this object still acts as the writer (not closed, its region not closed: #ctl would read length 0). */
  #holdsRole(): boolean {
    return this.#writer && this.#ctl.length !== 0;
  }

  /** Int32 index of slot `slot`'s first word (slot 0 or 1). */
  #slotI32(slot: number): number {
    return this.#slot0I32 + slot * this.#strideI32;
  }

  /** ERR_SHMRING_BUSY, naming the holder: `holder` as WRITER_TOKEN held it where the role is that word, else PRODUCER_PID. */
  #busy(holder?: number): ShmringError {
    let who: string;
    if (holder !== undefined) {
      const kind = this.#ctl.buffer instanceof SharedArrayBuffer ? 'a live other thread of this process' : 'a live thread or process';
      who = `${kind}, id ${Math.abs(holder)} in its WRITER_TOKEN (a thread id; a process's main thread's is its pid)`;
    } else {
      // Observes the holder's pid word, for the message only (stored after its lock: 0 until then).
      const pid = Atomics.load(this.#ctl, L.PRODUCER_PID_I32);
      who = `another live object (${pid === 0 ? 'its pid not stored yet' : `pid ${pid} per the header`}, perhaps in another PID namespace)`;
    }
    return new ShmringError(
      ErrorCodes.BUSY,
      `LatestValue.publish: the writer role of ${this.#where} is held by ${who}; ` +
        'a LatestValue has one writer: close that one first, or wait for its thread or process to end',
    );
  }

  // ---- readers ----

  /** The newest complete value; never waits, never torn. */
  read(): LatestRead {
    const ctl = this.#ctl;
    if (ctl.length === 0) throw this.#closedError('LatestValue.read');
    // SYNC POINT with publish() step 4: which slot holds the newest value.
    const published = Atomics.load(ctl, V.PUBLISHED_I32);
    // Unchanged since our last read if PUBLISHED and that slot's SEQ (pairs with step 1) read as then, and
    // its VERSION_HI: exactly 2^32 publishes later PUBLISHED (the low 32 bits) and SEQ (2^31 rewrites of +2)
    // read as then too. VERSION_HI is written between SEQ's odd and even stores: with SEQ even and as then,
    // this plain load sees the high word of the version whose SEQ that is.
    if (
      published === this.#cachedPublished &&
      Atomics.load(ctl, this.#cachedSeqI32) === this.#cachedSeq &&
      ctl[this.#cachedSeqI32 - V.SEQ_I32 + V.VERSION_HI_I32] === this.#cachedHi &&
      this.#cached
    ) {
      return this.#cached;
    }
    return this.#readSlot(published);
  }

  /**
   * Copies the slot PUBLISHED names, retrying while the writer laps us. The
   * copy must hold the version PUBLISHED named: a lapping writer's newer
   * version in the same slot is complete (SEQ even) before its step 4, and
   * returning it then would let the next read, which still finds the older
   * PUBLISHED, go back a version.
   */
  #readSlot(published: number): LatestRead {
    const ctl = this.#ctl;
    for (;;) {
      const slot = published & 1;
      const h = this.#slotI32(slot);
      // SYNC POINT with publish() steps 1 and 3: even = whole, and the copy below is checked against it.
      const seq = Atomics.load(ctl, h + V.SEQ_I32);
      let stable = false;
      if ((seq & 1) === 0) {
        const length = ctl[h + V.LENGTH_I32]! >>> 0;
        const type = ctl[h + V.TYPE_I32]!;
        const lo = ctl[h + V.VERSION_LO_I32]!;
        const hi = ctl[h + V.VERSION_HI_I32]! >>> 0;
        const at = (h + V.VALUE_I32) * 4;
        const value = length === 0 ? EMPTY : length <= this.maxSize ? this.#bytes.slice(at, at + length) : undefined;
        // SYNC POINT with publish() step 1: unchanged means no write began during the copy.
        stable = Atomics.load(ctl, h + V.SEQ_I32) === seq;
        if (stable && lo === published) {
          if (value === undefined || type < 0) throw corrupt(`slot ${slot} holds length=${length}, type=${type}`, this.#where);
          const result: LatestRead = Object.freeze({ version: (lo >>> 0) + hi * 2 ** 32, value, type });
          this.#cached = result;
          this.#cachedPublished = published;
          this.#cachedSeqI32 = h + V.SEQ_I32;
          this.#cachedSeq = seq;
          this.#cachedHi = hi | 0;
          return result;
        }
      }
      // Lapped: the writer began version PUBLISHED + 2 in this slot, so PUBLISHED has moved on by now (it stores
      // PUBLISHED before it begins the next version in the other slot, and that one before this slot's next).
      // Unmoved, the published slot is being rewritten, or holds another version: no correct writer does either
      // (and looping on until it stops would never end against one that goes on).
      const again = Atomics.load(ctl, V.PUBLISHED_I32);
      if (again === published) {
        throw corrupt(`the published slot ${slot} does not hold version ${published >>> 0} (SEQ=${seq >>> 0})`, this.#where);
      }
      published = again;
    }
  }

  /**
   * changed()'s and changedSync()'s first look: read() if the version
   * differs from `since` in full (the low 32 bits, then the whole version
   * where they are equal: `since` may be 2^32 away from it); after it,
   * every publish changes the low bits.
   */
  #changedFirst(since: number, verb: string): LatestRead | undefined {
    const now = this.#changedAttempt(since, verb);
    if (now !== undefined) return now;
    const read = this.read();
    return read.version !== since ? read : undefined;
  }

  /** A changed() wait's peer check (WRITER_WAIT): true while PUBLISHED still holds `since` (low 32 bits), or the object is closed. */
  #nothingNew(since: number): boolean {
    const ctl = this.#ctl;
    // Observes publish() step 4, as #changedAttempt; a closed object's wait ends through its attempt.
    return ctl.length === 0 || Atomics.load(ctl, V.PUBLISHED_I32) === (since | 0);
  }

  /** changed()'s and changedSync()'s attempt (`verb`'s): read() once PUBLISHED differs from `since` (low 32 bits). */
  #changedAttempt(since: number, verb: string): LatestRead | undefined {
    const ctl = this.#ctl;
    if (ctl.length === 0) throw this.#closedError(verb); // closed since the wait began
    // SYNC POINT with publish() step 4 (and, parked, with its unpark after it).
    return Atomics.load(ctl, V.PUBLISHED_I32) !== (since | 0) ? this.read() : undefined;
  }

  /**
   * Resolves with read() once the version differs from `sinceVersion`: at
   * once if it already does, else at the next publish. Rejects with
   * ERR_SHMRING_TIMEOUT after timeoutMs, an AbortError when `signal` fires,
   * ERR_SHMRING_CLOSED at once when this object (or its region) is closed.
   */
  changed(sinceVersion: number, options?: ChangedOptions): Promise<LatestRead> {
    return this.#changed(sinceVersion, options, 'LatestValue.changed');
  }

  /**
   * changed(), as `verb` (changed, or updates waiting for its next item)
   * names itself in its errors; `stop` (updates: its iterator's return())
   * ends the wait as close() does.
   */
  async #changed(sinceVersion: number, options: ChangedOptions | undefined, verb: string, stop = new WaitStop()): Promise<LatestRead> {
    const since = checkVersion(sinceVersion, verb);
    checkWaitOptions(options, verb, CHANGED_OPTIONS);
    if (this.#ctl.length === 0) throw this.#closedError(verb);
    const now = this.#changedFirst(since, verb);
    if (now !== undefined) {
      this.#pollPacer.gotAtOnce();
      return now;
    }
    this.#waits.add(stop); // close() ends this wait with it
    try {
      return await parkAsync(
        this.#ctl,
        WAIT_BLOCK,
        () => this.#changedAttempt(since, verb),
        { ...options, ...WRITER_WAIT },
        verb,
        () => this.#nothingNew(since),
        this.#pollPacer,
        stop,
      );
    } catch (err) {
      // Only close() stops it: its AbortError is this object's end, not the caller's signal.
      throw stop.stopped ? this.#closedError(verb) : this.#failure(err, verb);
    } finally {
      this.#waits.delete(stop);
    }
  }

  /** changed(), parking the thread (workers and dedicated processes). */
  changedSync(sinceVersion: number, options?: Omit<ChangedOptions, 'poll' | 'ref'>): LatestRead {
    const since = checkVersion(sinceVersion, 'LatestValue.changedSync');
    checkWaitOptions(options, 'LatestValue.changedSync', CHANGED_SYNC_OPTIONS);
    if (this.#ctl.length === 0) throw this.#closedError('LatestValue.changedSync');
    const now = this.#changedFirst(since, 'LatestValue.changedSync');
    if (now !== undefined) return now;
    try {
      return parkSync(
        this.#ctl,
        WAIT_BLOCK,
        () => this.#changedAttempt(since, 'LatestValue.changedSync'),
        { ...options, ...WRITER_WAIT },
        'LatestValue.changedSync',
        () => this.#nothingNew(since),
        this.#spinPacer,
      );
    } catch (err) {
      throw this.#failure(err, 'LatestValue.changedSync');
    }
  }

  /**
   * Each new version, in order, as { version, value, type, skipped }: a
   * reader slower than the writer gets the newest value and `skipped` counts
   * the versions it missed since its previous item (or `since`). Wrong
   * options reject the first next(); an error ends the iteration (the
   * next() it ends rejects with it). return() (a `break`) ends it at once:
   * a pending next() resolves done and its wait is cancelled, so nothing is
   * left to keep the process alive. next() calls are served in call order.
   */
  updates(options: UpdatesOptions = {}): AsyncIterableIterator<LatestUpdate> & Required<Pick<AsyncIterator<LatestUpdate>, 'return'>> {
    const verb = 'LatestValue.updates';
    const stop = new WaitStop(); // return() ends the pending wait with it
    const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };
    let finished = false;
    let wait: ChangedOptions = {};
    /** The version of the last item (or `since`); undefined until the first next() checked the options. */
    let last: number | undefined;
    const step = async (): Promise<IteratorResult<LatestUpdate>> => {
      if (finished) return DONE;
      try {
        if (last === undefined) {
          // Options that are not an object are a TypeError too (destructuring a number or a string would take nothing).
          checkWaitOptions(options, verb, UPDATES_OPTIONS);
          const { since, ...rest } = options;
          wait = rest;
          last = since === undefined ? Math.max(0, this.#readAs(verb).version - 1) : checkVersion(since, verb);
        }
        let next = this.#readAs(verb);
        while (next.version <= last) next = await this.#changed(next.version, wait, verb, stop);
        if (finished) return DONE; // return() came while the item was on its way: it is not handed out
        const item = { version: next.version, value: next.value, type: next.type, skipped: next.version - last - 1 };
        last = next.version;
        return { done: false, value: item };
      } catch (err) {
        if (finished) return DONE; // return() ended the wait
        finished = true;
        throw err;
      }
    };
    /** The next() calls, one after the other. */
    let line: Promise<unknown> = Promise.resolve();
    const iterator: AsyncIterableIterator<LatestUpdate> & Required<Pick<AsyncIterator<LatestUpdate>, 'return'>> = {
      next: () => {
        const result = line.then(step);
        line = result.catch(() => undefined);
        return result;
      },
      return: () => {
        finished = true;
        stop.stop();
        return Promise.resolve(DONE);
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  // ---- both ----

  /** Whether this object holds the writer role. */
  get isWriter(): boolean {
    return this.#writer;
  }

  /**
   * Ends this object: lets go of the writer role (if held) and its views,
   * and ends its own pending waits (changed(), an updates() iteration) at
   * once with ERR_SHMRING_CLOSED; other objects' waits go on. The value
   * stays for everyone else. Idempotent.
   */
  close(): void {
    const ctl = this.#ctl;
    if (this.#token !== 0 && ctl.length !== 0) {
      // Gives the role back where no file is locked; pairs with #takeWriter's CAS.
      Atomics.compareExchange(ctl, V.WRITER_TOKEN_I32, this.#token, 0);
    }
    if (this.#place !== undefined && tokenWriters.get(this.#place)?.deref() === this) tokenWriters.delete(this.#place);
    this.#token = 0;
    this.#writer = false;
    this.#roles?.release();
    this.#ctl = new Int32Array(0);
    this.#bytes = new Uint8Array(0);
    this.#cached = undefined;
    // After the views are gone: a stopped wait that still runs its attempt finds this object closed.
    for (const stop of this.#waits) stop.stop();
    this.#waits.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** read() for `verb`, which names itself if this object is closed. */
  #readAs(verb: string): LatestRead {
    if (this.#ctl.length === 0) throw this.#closedError(verb);
    return this.read();
  }

  /** ERR_SHMRING_CLOSED of `verb` (`LatestValue.read`): this object, or its region, is closed. */
  #closedError(verb: string): ShmringError {
    return new ShmringError(
      ErrorCodes.CLOSED,
      `${verb}: this object of ${this.#where} is closed (or its region is); attach a new one to go on`,
    );
  }

  /**
   * A wait's failure: ERR_SHMRING_CLOSED when this object or its region was
   * closed under it: the raw TypeError of an access to a detached view, or
   * the RangeError of one to this object's closed (length-0) view.
   */
  #failure(err: unknown, verb: string): unknown {
    const raw = (err instanceof TypeError || err instanceof RangeError) && (err as { code?: unknown }).code === undefined;
    return raw && (this.#ctl.length === 0 || this.#ctl.byteLength === 0) ? this.#closedError(verb) : err;
  }
}
