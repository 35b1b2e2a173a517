/**
 * SpscRing: one producer, one consumer, variable-length messages.
 *
 * Threading contract:
 *  - At most one thread (in any process) calls the producer verbs: tryWrite,
 *    claim, commit, abort, cork, uncork, writeSync, write, writable(). To hand
 *    the producer role to another object, uncork (or close) first: a new
 *    producer starts from the stored producer position and walks on over
 *    the records published after it. At most one calls the
 *    consumer verbs: tryRead, drain, readSync, read, the iterator, readable().
 *    A new consumer starts from the stored consumer position (what the last
 *    one released), read when it takes the role, not when it attached.
 *    The two may be different processes or threads, or the same one.
 *  - try* verbs, claim/commit/abort and drain never wait. *Sync verbs park
 *    the thread; the plain verbs return Promises and never block the loop.
 *  - `size` is a snapshot: stale as soon as it is read.
 *  - From a drain() handler, this object's reads are ERR_SHMRING_BUSY: drain()
 *    gives the record in hand back only once the handler returns. close()
 *    or detach() there ends the object at once, but drain() gives up the
 *    consumer role only after its release, before it returns.
 *
 * Invariants (layout version 2; positions are u32 byte counts that wrap
 * modulo 2^32; see layout.ts and docs/LAYOUT.md "SpscRing"):
 *  - A record is published by the Atomics.store of its LENGTH word (8 +
 *    payload bytes, never 0); the consumer polls the LENGTH word at its own
 *    position, so a message moves one cache line, not a position and then
 *    the record.
 *  - The LENGTH word at the producer's (private) position is 0 until the
 *    producer publishes there: before publishing a record that ends at E,
 *    the producer stores 0 into the LENGTH word at E. Nothing else writes a
 *    LENGTH word (the padding's included) before publishing it.
 *  - 8 <= capacity - (producerPosition - consumerPosition) once a record is
 *    written: the producer leaves RECORD_RESERVE bytes free, so the word at E
 *    is never the header of a record the consumer has not read.
 *  - Both positions are multiples of 8; a record never straddles the end of
 *    the data area: a padding record fills the bytes before the wrap. A
 *    record that wraps is published completely at index 0 (its LENGTH
 *    included) before the padding's LENGTH, which publishes both.
 *  - The consumer writes nothing in the data area: it frees space with its
 *    CONSUMER_POSITION store only (so holdReads / rewindReads just move it),
 *    raising HEAD_EPOCH before a store whose head enters another 2^30-byte
 *    window (readCount counts bytes past 2^32 by it).
 *  - PRODUCER_POSITION is stored after each publication: it is never past
 *    the published records, and at most one publication (one corked batch)
 *    behind them; the consumer may be ahead of it by that much. size,
 *    inspect and select's room use it; a new producer starts from it (or
 *    from the consumer position, if that is ahead) and walks on over
 *    published headers to the first LENGTH 0.
 *  - Each side keeps its own position in a private field (it is the only
 *    writer) and the producer a cached copy of the consumer's, re-read only
 *    when the cache says the ring is full.
 *  - While corked, the first header of the batch (a record's or a
 *    padding's) is not stored: the records after it are written and
 *    published as usual, but the consumer cannot pass the 0 before them,
 *    and PRODUCER_POSITION is not stored. The one deferred LENGTH store
 *    publishes the batch: at the last uncork(), close(), a write that finds
 *    the ring full, and any wait of the producer's thread.
 *  - Anything read from shared memory (a position, a length, a type) is
 *    read once and bounds-checked before it is used, and the checked copy
 *    is what is used (a peer may rewrite the word meanwhile); a value no
 *    correct peer writes is ERR_SHMRING_CORRUPT.
 */
import { ErrorCodes, ShmringError, ShmringRangeError, ShmringTypeError, shown, type Region } from '@shmring/core';
import * as L from './layout.js';
import {
  attachTo,
  checkCapacity,
  checkOffset,
  checkOptionsObject,
  checkStablePositions,
  countHeadWindow,
  headCount,
  takeHeadEpoch,
  readHeader,
  ringMemory,
  unpublish,
  writeHeader,
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
  type RingSite,
} from './queue.js';
import { OpenClaim } from './claim.js';
import { copyOut } from './copy.js';
import { layOut, Roles } from './roles.js';
import { holdUntilWait, releaseHold } from './held.js';
import { unpark } from './waiting.js';

export interface SpscOptions {
  /** Bytes of the data area: a power of two in [64, 2^30]. */
  capacity: number;
  /**
   * Where the ring starts in its region, in bytes: a multiple of 64; default 0.
   * Several rings can share one region this way (regionSize gives each one's
   * bytes); every offset of docs/LAYOUT.md is then relative to this one.
   */
  offset?: number;
}

/** The options of create, of regionSize (create's but offset: it would be ignored), and of attach. */
const CREATE_OPTION_NAMES: readonly string[] = ['capacity', 'offset'];
const SIZE_OPTION_NAMES: readonly string[] = ['capacity'];
const ATTACH_OPTION_NAMES: readonly string[] = ['offset'];

export interface AttachOptions {
  /** Where the ring starts in its region (as given to create); default 0. */
  offset?: number;
}

/** The handler drain() calls: the record is `data[offset .. offset + length)`; valid only during the call. */
export type DrainHandler = (data: Uint8Array, offset: number, length: number, type: number) => void;

/**
 * A publication wakes one parked reader: the one that takes it, or a select
 * / waitReadable that passes the wake-up on (passOn). Room wakes every
 * parked writer (WAKE_ALL): they may wait for different amounts of it (a
 * write for its message, a select for another length), and one that finds
 * too little parks again without passing anything on.
 */
const WAKE_ONE = 1;
const WAKE_ALL = 0x7fffffff;
const NO_PADDING = -1;
const NO_DEFERRED = -1;

function corrupt(what: string, where?: string): ShmringError {
  return new ShmringError(
    ErrorCodes.CORRUPT,
    `SpscRing: ${what}${where === undefined ? '' : ` in ${where}`}; the ring's memory was overwritten by something that is not a correct peer: ` +
      'stop the processes that use it, and create the ring again',
  );
}

/**
 * Both positions multiples of 8, at most `capacity` apart either way: the
 * consumer may be ahead of the stored producer position by the records
 * published since its last store (a producer between its LENGTH store and its
 * position store, or one that died there). A pair that held at one instant
 * (checkStablePositions reads one on a live ring). `where` names the ring in
 * the error.
 */
export function checkPositions(producer: number, consumer: number, capacity: number, where?: string): void {
  const ahead = (producer - consumer) | 0;
  if (ahead > capacity || ahead < -capacity || ((producer | consumer) & 7) !== 0) {
    throw corrupt(
      `positions producer=${producer >>> 0} consumer=${consumer >>> 0} are inconsistent${where === undefined ? '' : ` in ${where}`}`,
    );
  }
}

export class SpscRing extends Queue {
  /** Bytes of the data area. */
  readonly capacity: number;
  /** Largest message payload, in bytes (capacity / 2 - 8). */
  readonly maxMessageLength: number;
  /** The data area. claim() and drain() give offsets into it. */
  data: Uint8Array;
  #data32: Int32Array;
  readonly #mask: number;
  // Producer side: own position (only we write it), the consumer's as last seen, the open claim.
  #producerPosition: number;
  #cachedConsumerPosition: number;
  readonly #claim = new OpenClaim('SpscRing');
  /** The reserved record: index of its header, its payload bytes, the padding's header (or NO_PADDING), the position after it. */
  #claimIndex = 0;
  #claimLength = 0;
  #claimPadding = NO_PADDING;
  #claimEnd = 0;
  /** cork() depth: while it is above 0, the first header of the batch is not stored. */
  #corked = 0;
  /** Int32 index in #data32 of the header whose LENGTH store is deferred (corked), or NO_DEFERRED. */
  #deferredI32 = NO_DEFERRED;
  /** The LENGTH that deferred store will write. */
  #deferredLength = 0;
  // Consumer side: own position.
  #consumerPosition: number;
  /** holdReads(): taken records go back to the producer only through releaseReads(). */
  #holding = false;
  /** The consumer position last stored in shared memory (while holding, #consumerPosition runs ahead of it). */
  #releasedPosition: number;

  private constructor(buffer: ArrayBuffer | SharedArrayBuffer, base: number, capacity: number, roles: Roles | undefined, site: RingSite) {
    super(new Int32Array(buffer, base, L.CONTROL_I32_LENGTH), 'SpscRing', roles, site);
    this.capacity = capacity;
    this.maxMessageLength = L.spscMaxMessage(capacity);
    this.#mask = capacity - 1;
    this.data = new Uint8Array(buffer, base + L.DATA_OFFSET, capacity);
    this.#data32 = new Int32Array(buffer, base + L.DATA_OFFSET, capacity / 4);
    // Both positions (each side's latest store), as a pair that held at one instant (the sides may be moving
    // them), to check the ring; each is looked at again when this object takes its role (the producer's walked
    // on: #resume; the consumer's: #takeConsumer).
    const [producer, consumer] = checkStablePositions(this.ctl, capacity, checkPositions, this.where);
    this.#producerPosition = producer;
    this.#consumerPosition = consumer;
    this.#cachedConsumerPosition = consumer;
    this.#releasedPosition = consumer;
  }

  /**
   * Bytes a SpscRing of `capacity` data bytes takes: what a region needs
   * for one at offset 0; one at `offset` needs offset + regionSize(). So
   * `offset` is refused here (ERR_SHMRING_INVALID_ARGUMENT), not ignored.
   */
  static regionSize(options: Omit<SpscOptions, 'offset'>): number {
    checkOptionsObject(options, 'SpscRing.regionSize', SIZE_OPTION_NAMES);
    return L.spscRingSize(checkCapacity(options?.capacity, L.SPSC_MIN_CAPACITY, L.MAX_CAPACITY, 'SpscRing.regionSize'));
  }

  /**
   * Creates an empty ring at the start of `region` (or at `offset`), overwriting what is there, unless an
   * object is attached to a ring there: ERR_SHMRING_BUSY (in a region that takes locks: POSIX, file, memfd).
   */
  static create(region: Region, options: SpscOptions): SpscRing {
    checkOptionsObject(options, 'SpscRing.create', CREATE_OPTION_NAMES);
    const capacity = checkCapacity(options?.capacity, L.SPSC_MIN_CAPACITY, L.MAX_CAPACITY, 'SpscRing.create');
    const base = checkOffset(options.offset, 'SpscRing.create');
    const ringSize = L.spscRingSize(capacity);
    const buffer = ringMemory(region, base, ringSize, 'SpscRing.create');
    // Before MAGIC (the ring is never seen unheld, stale, once it exists); exclusive while nobody else holds it.
    const roles = Roles.holdToCreate(region, buffer, base, 'SpscRing.create', ringWhere(region, base));
    layOut(roles, () => {
      const ctl = unpublish(buffer, base);
      // Nothing is published at position 0 (whatever the region held before); writeHeader's MAGIC store publishes this too.
      new Int32Array(buffer, base + L.DATA_OFFSET, 1)[L.RECORD_LENGTH_I32] = 0;
      writeHeader(ctl, { kind: L.KIND_SPSC, capacity, slotSize: 0, slotStride: 0, ringSize });
    });
    return new SpscRing(buffer, base, capacity, roles, ringSite(region, base, roles));
  }

  /** Attaches to a ring another process or thread created in `region` (at `offset`). */
  static attach(region: Region, options: AttachOptions = {}): SpscRing {
    checkOptionsObject(options, 'SpscRing.attach', ATTACH_OPTION_NAMES);
    const base = checkOffset(options?.offset, 'SpscRing.attach');
    const buffer = ringMemory(region, base, 0, 'SpscRing.attach');
    return attachTo(region, buffer, base, 'SpscRing.attach', (roles) => {
      const { capacity } = readHeader(buffer, L.KIND_SPSC, base, undefined, region);
      return new SpscRing(buffer, base, capacity, roles, ringSite(region, base, roles));
    });
  }

  /**
   * Bytes of records published and not yet consumed (a snapshot, from the
   * stored positions: a record is counted once the producer has stored its
   * position after publishing it, a moment after the consumer may read it).
   */
  get size(): number {
    const ctl = this.ctl;
    if (ctl.length === 0) return 0;
    // Both loads observe the sides' latest position stores; the difference may be stale at once, and is
    // negative while the consumer has read a record whose producer has not stored its position yet.
    const used = (Atomics.load(ctl, L.PRODUCER_POSITION_I32) - Atomics.load(ctl, L.CONSUMER_POSITION_I32)) | 0;
    return Math.max(used, 0);
  }

  // ---- producer ----

  /**
   * Reserves room for a record of `length` payload bytes; returns the index
   * of its header in `data`, or -1 if the ring is full. Writes nothing in the
   * ring: no header may become non-zero before it is published (#publish
   * writes the headers, the padding's too).
   */
  #reserve(length: number, verb: 'claim' | 'tryWrite'): number {
    if (this.ctl.length === 0) throw this.closedError();
    // Arguments first: a call that fails them must not take (and keep) the producer role.
    this.#claim.checkWrite(length, this.maxMessageLength, verb);
    if (!this.isProducer) {
      this.registerProducer();
      this.#resume();
    }
    const size = L.recordSize(length);
    const position = this.#producerPosition;
    const index = position & this.#mask;
    const toEnd = this.capacity - index;
    // The record, the padding before the wrap if it must wrap, and RECORD_RESERVE: the zeroed LENGTH word after it.
    const needed = (size <= toEnd ? size : toEnd + size) + L.RECORD_RESERVE;
    if (this.capacity - ((position - this.#cachedConsumerPosition) >>> 0) < needed) {
      // Observes the consumer's latest release (its Atomics.store of CONSUMER_POSITION): it is done with those bytes.
      const consumer = Atomics.load(this.ctl, L.CONSUMER_POSITION_I32);
      const used = (position - consumer) >>> 0;
      if (used > this.capacity || (consumer & 7) !== 0)
        throw corrupt(`consumer position ${consumer >>> 0} is outside the ring`, this.where);
      this.#cachedConsumerPosition = consumer;
      if (this.capacity - used < needed) {
        if (this.#deferredI32 !== NO_DEFERRED) this.flush(); // corked and full: the consumer must see the batch to free room
        return -1;
      }
    }
    const wraps = size > toEnd;
    this.#claimIndex = wraps ? 0 : index;
    this.#claimPadding = wraps ? index : NO_PADDING;
    this.#claimLength = length;
    this.#claimEnd = (position + needed - L.RECORD_RESERVE) | 0;
    return this.#claimIndex;
  }

  /**
   * Takes over the producer position when this object becomes the producer:
   * from PRODUCER_POSITION (or CONSUMER_POSITION, if the consumer is past
   * it), walks on over the headers published after the last position store
   * (a producer that died between its LENGTH store and its position store
   * left them) to the first LENGTH 0, the real end.
   */
  #resume(): void {
    const ctl = this.ctl;
    const data32 = this.#data32;
    // Observe the previous producer's last position store and the consumer's last release.
    const stored = Atomics.load(ctl, L.PRODUCER_POSITION_I32);
    const consumer = Atomics.load(ctl, L.CONSUMER_POSITION_I32);
    checkPositions(stored, consumer, this.capacity, this.where);
    let position = ((consumer - stored) | 0) > 0 ? consumer : stored;
    for (;;) {
      const index = position & this.#mask;
      // Observes the header's publication (the previous producer's Atomics.store of LENGTH); 0 is the end.
      const length = Atomics.load(data32, (index >> 2) + L.RECORD_LENGTH_I32);
      if (length === 0) break;
      const type = data32[(index >> 2) + L.RECORD_TYPE_I32]!;
      const size = type === L.PADDING_TYPE ? this.capacity - index : L.recordSize(length - L.RECORD_HEADER);
      const bad =
        type === L.PADDING_TYPE
          ? length !== size
          : length < L.RECORD_HEADER || length - L.RECORD_HEADER > this.maxMessageLength || type < 0 || index + size > this.capacity;
      position = (position + size) | 0;
      if (bad || (position - consumer) >>> 0 > this.capacity - L.RECORD_RESERVE) {
        throw corrupt(`record at ${index} (length ${length}, type ${type}) does not continue the published records`, this.where);
      }
    }
    this.#producerPosition = position;
    this.#cachedConsumerPosition = consumer;
    // Counts the records found published (size, inspect); never past them. Before this producer publishes
    // anything (LAYOUT.md, "A new producer"): should it die between a LENGTH store and its position store
    // too, the consumer is still at most one publication ahead of the stored position (checkPositions).
    if (position !== stored) Atomics.store(ctl, L.PRODUCER_POSITION_I32, position);
  }

  /**
   * Completes the reserved record with its type and publishes it: payload
   * (the caller's), TYPE, the zeroed LENGTH word at its end, its LENGTH; for
   * a record that wraps, then the padding's TYPE and LENGTH. While corked,
   * the first header of the batch is not stored (flush stores it).
   */
  #publish(type: number): void {
    const data32 = this.#data32;
    const at = this.#claimIndex >> 2;
    const size = L.recordSize(this.#claimLength);
    data32[at + L.RECORD_TYPE_I32] = type;
    // The LENGTH word after the record (free: RECORD_RESERVE) reads 0 before the record's LENGTH publishes
    // it, so the consumer stops there. A plain store: the LENGTH store below (seq_cst, so a release) orders it.
    data32[(((this.#claimIndex + size) & this.#mask) >> 2) + L.RECORD_LENGTH_I32] = 0;
    const length = this.#claimLength + L.RECORD_HEADER;
    const padding = this.#claimPadding;
    if (padding === NO_PADDING) {
      this.#storeHeader(at, length);
    } else {
      // Publishes the record at index 0 first, yet nobody reaches it before the padding's header, stored next.
      Atomics.store(data32, at + L.RECORD_LENGTH_I32, length);
      data32[(padding >> 2) + L.RECORD_TYPE_I32] = L.PADDING_TYPE;
      this.#storeHeader(padding >> 2, this.capacity - padding);
    }
    this.#producerPosition = this.#claimEnd;
    if (this.#deferredI32 === NO_DEFERRED) this.#store();
  }

  /** Stores a header's LENGTH (publishes it), unless it is the first of a corked batch: that one waits for flush. */
  #storeHeader(at: number, length: number): void {
    if (this.#corked !== 0 && this.#deferredI32 === NO_DEFERRED) {
      this.#deferredI32 = at;
      this.#deferredLength = length;
      holdUntilWait(this.#flushHeld); // the first held record of a batch
      return;
    }
    // Publishes the record (payload, TYPE and the zeroed word after it, written before) to the consumer,
    // which Atomics.loads this word at its position. seq_cst: unpark's load of READ_WAITERS comes after it.
    Atomics.store(this.#data32, at + L.RECORD_LENGTH_I32, length);
  }

  /** After a publication: stores the producer position, then wakes a parked consumer. */
  #store(): void {
    const ctl = this.ctl;
    // Not a publication (the LENGTH store was): counts the published records for size / inspect / a next
    // producer, which all allow it to lag (a next producer walks on over the headers). So a plain store,
    // relaxed: a seq_cst one is a locked instruction per message on x86, for no ordering anyone needs.
    ctl[L.PRODUCER_POSITION_I32] = this.#producerPosition;
    unpark(ctl, READ_BLOCK, WAKE_ONE);
  }

  /**
   * Defers publication, as Writable.cork() does: what this producer writes
   * while corked (tryWrite, claim/commit, writeSync, write) goes into the
   * ring, but the first header of the batch is not stored (nor the producer
   * position), so the consumer sees none of it, until uncork() has been
   * called as often as cork(). Then one store publishes the whole batch, and
   * one wake-up at most goes to a parked consumer: the way to the highest
   * message rate, at the cost of the batch's latency. What is held is
   * published earlier by close(), by a write that finds the ring full (so a
   * waiting write never waits on itself), and by any wait of this thread in
   * a shmring verb that starts while it is held (so a request held here
   * cannot stall the reply this thread then waits for; a wait parked before
   * does not publish it, or a background reply loop would end every batch).
   * A producer that dies, or is dropped, while corked
   * takes what it holds with it.
   */
  cork(): void {
    this.#corked++;
  }

  /** Ends one cork(); the last one publishes everything held since the first. Without a cork(), does nothing. */
  uncork(): void {
    if (this.#corked > 0 && --this.#corked === 0) this.flush();
  }

  protected override flush(): void {
    const at = this.#deferredI32;
    if (at === NO_DEFERRED) return;
    this.#deferredI32 = NO_DEFERRED;
    releaseHold(this.#flushHeld);
    if (this.ctl.length === 0) return;
    // Publishes the whole batch: the consumer stops at this header (0 until now); every record after it is written and its header stored.
    Atomics.store(this.#data32, at + L.RECORD_LENGTH_I32, this.#deferredLength);
    this.#store();
  }

  /** flush() as a stable function, for the thread's list of held publications. */
  readonly #flushHeld = (): void => this.flush();

  /**
   * Copies `bytes` into the ring as one message. Returns false if the ring is
   * full (nothing written). Does not look at the closed flag (writeSync/write do).
   */
  tryWrite(bytes: Uint8Array, type = 0): boolean {
    checkType(type, 'SpscRing.tryWrite');
    if (!(bytes instanceof Uint8Array)) {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, 'SpscRing.tryWrite needs a Uint8Array (or Buffer)');
    }
    const index = this.#reserve(bytes.length, 'tryWrite');
    if (index < 0) return false;
    this.data.set(bytes, index + L.RECORD_HEADER);
    this.#publish(type);
    return true;
  }

  /**
   * Zero-copy write, step 1: reserves `length` bytes and returns the offset
   * in `data` where the payload goes, or -1 if the ring is full. Fill
   * `data[offset .. offset + length)`, then commit(offset) or abort(offset).
   */
  claim(length: number): number {
    this.#claim.checkLength(length);
    const index = this.#reserve(length, 'claim');
    if (index < 0) return -1;
    this.#claim.offset = index + L.RECORD_HEADER;
    return this.#claim.offset;
  }

  /** Checks that `offset` is the open claim, and closes it. */
  #checkClaim(offset: number, verb: string): void {
    if (this.ctl.length === 0) throw this.closedError();
    this.#claim.close(offset, verb);
  }

  /**
   * Zero-copy write, step 2: publishes the claimed record. `length`, if
   * given, is the payload actually written (an integer in [0, the claimed
   * length]): the record shrinks to it and the rest of the claim goes back
   * to the ring, so a writer that does not know its size in advance can
   * claim a bound and write in place.
   */
  commit(offset: number, type = 0, length?: number): void {
    checkType(type, 'SpscRing.commit');
    // The length is checked only against an open claim (another offset is #checkClaim's error), before it closes.
    if (length !== undefined && offset === this.#claim.offset) this.#checkCommitLength(length);
    this.#checkClaim(offset, 'commit');
    if (length !== undefined && length !== this.#claimLength) {
      // The record keeps its place (after the padding, if the claim wrapped) and ends earlier.
      const skipped = this.#claimPadding === NO_PADDING ? 0 : this.capacity - this.#claimPadding;
      this.#claimLength = length;
      this.#claimEnd = (this.#producerPosition + skipped + L.recordSize(length)) | 0;
    }
    this.#publish(type);
  }

  #checkCommitLength(length: number): void {
    if (!Number.isInteger(length)) {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `SpscRing.commit: length=${String(length)} must be an integer`);
    }
    if (length < 0 || length > this.#claimLength) {
      throw new ShmringRangeError(
        ErrorCodes.INVALID_ARGUMENT,
        `SpscRing.commit: length=${length} must be between 0 and the claimed length ${this.#claimLength}`,
      );
    }
  }

  /** Gives the claimed space back; the consumer never sees it. */
  abort(offset: number): void {
    this.#checkClaim(offset, 'abort');
  }

  // ---- consumer ----

  /**
   * Index of the next record's header (skipping a padding record), or -1 if
   * nothing is published at `position`. Leaves the record's length and type,
   * and the consumer position after it, in #nextLength, #nextType and
   * #nextEnd: each word is read from shared memory once and checked against
   * the ring's bounds, and the callers use these checked copies, never a
   * second read a peer could have changed.
   */
  #nextRecord(position: number): number {
    const data32 = this.#data32;
    let index = position & this.#mask;
    // Observes the producer's publication of the record here (its Atomics.store of LENGTH); 0: none yet.
    // The record's TYPE and payload are read after it.
    let length = Atomics.load(data32, (index >> 2) + L.RECORD_LENGTH_I32);
    if (length === 0) return -1;
    let type = data32[(index >> 2) + L.RECORD_TYPE_I32]!;
    let skipped = 0;
    if (type === L.PADDING_TYPE) {
      skipped = this.capacity - index;
      if (length !== skipped) throw corrupt(`padding record at ${index} has length ${length} (expected ${skipped})`, this.where);
      index = 0;
      // Observes the record after the padding: the producer stored its LENGTH before the padding's, which we saw.
      length = Atomics.load(data32, L.RECORD_LENGTH_I32);
      type = data32[L.RECORD_TYPE_I32]!;
    }
    const payload = length - L.RECORD_HEADER;
    const size = L.recordSize(payload);
    const end = (position + skipped + size) | 0;
    if (
      payload < 0 ||
      payload > this.maxMessageLength ||
      index + size > this.capacity ||
      type < 0 ||
      (end - this.#releasedPosition) >>> 0 > this.capacity - L.RECORD_RESERVE
    ) {
      throw corrupt(
        `record at ${index} claims length ${length} and type ${type} (${(position - this.#releasedPosition) >>> 0} bytes taken before it)`,
        this.where,
      );
    }
    this.#nextLength = payload;
    this.#nextType = type;
    this.#nextEnd = end;
    return index;
  }

  // What #nextRecord found besides the index (scratch fields: several results without allocating).
  #nextLength = 0;
  #nextType = 0;
  #nextEnd = 0;

  /** Releases the consumed bytes to the producer (unless holding), through `ctl` (drain passes the view it started with). */
  #release(position: number, ctl = this.ctl): void {
    this.#consumerPosition = position;
    if (!this.#holding) this.#storeConsumer(position, ctl);
  }

  #storeConsumer(position: number, ctl: Int32Array): void {
    this.#headEpoch = (this.#headEpoch + countHeadWindow(ctl, this.#releasedPosition, position)) >>> 0;
    this.#releasedPosition = position;
    // Publishes the freed space to the producer; pairs with its load of CONSUMER_POSITION. Bytes were read before it.
    Atomics.store(ctl, L.CONSUMER_POSITION_I32, position);
    unpark(ctl, WRITE_BLOCK, WAKE_ALL);
  }

  /**
   * Takes the consumer role, and with it the consumer position the previous
   * consumer left (its last release), not the one this object saw when it
   * attached: another consumer may have read since. Records it took and
   * did not release (holdReads) are taken again.
   */
  #takeConsumer(): void {
    this.registerConsumer();
    const ctl = this.ctl;
    // After the role is ours (no other consumer stores it any more): observes the previous consumer's
    // last release, #storeConsumer's Atomics.store of CONSUMER_POSITION (its reads were done before it).
    const consumer = Atomics.load(ctl, L.CONSUMER_POSITION_I32);
    // Observes the producer's latest position store, for the check only (it may lag: checkPositions).
    checkPositions(Atomics.load(ctl, L.PRODUCER_POSITION_I32), consumer, this.capacity, this.where);
    this.#consumerPosition = consumer;
    this.#releasedPosition = consumer;
    this.#headEpoch = takeHeadEpoch(ctl, consumer);
  }

  /** Consumer: HEAD_EPOCH as this consumer keeps it (taken with the role, raised by its own stores). */
  #headEpoch = 0;

  /** Copies the next message out, or returns null if the ring is empty. Its type goes to `lastType`. */
  tryRead(): Uint8Array | null {
    if (this.ctl.length === 0) throw this.closedError();
    if (this.draining) throw this.drainBusyError();
    if (!this.isConsumer) this.#takeConsumer();
    const index = this.#nextRecord(this.#consumerPosition);
    if (index < 0) return null;
    const message = copyOut(this.data, index + L.RECORD_HEADER, this.#nextLength);
    this.lastType = this.#nextType;
    this.#release(this.#nextEnd);
    return message;
  }

  /**
   * Hands each available record to `handler(data, offset, length, type)` in
   * place, without copying or allocating, up to `limit` records; returns how
   * many: everything published when the call starts, and what is published
   * while it runs, if `limit` allows (at most a ring's worth: the space it
   * takes is released once, after the batch; also if the handler throws:
   * the record it threw on counts as consumed). Never waits. A handler that
   * is not a function, or a limit that is not an integer >= 0 (or Infinity),
   * throws before anything is taken.
   *
   * From its handler: a read of this object (tryRead, readSync, read, the
   * iterator, drain, rewindReads) is ERR_SHMRING_BUSY, since the record in
   * hand goes back to the producer only once the handler returns;
   * waitReadable takes nothing and may be called. releaseReads may (holding:
   * it gives back what it names, the record in hand included at
   * readPosition, so call it once done with those bytes). close() or
   * detach() ends this object at once (its verbs throw ERR_SHMRING_CLOSED),
   * and drain() stops after the record in hand: what it was handed counts
   * as consumed, what it was not stays in the ring for the next consumer;
   * drain() stores the consumer position for it and only then gives up the
   * consumer role, before it returns. Holding (holdReads), drain() stores
   * nothing: what was handed out and not released goes to the next
   * consumer again.
   */
  drain(handler: DrainHandler, limit?: number): number {
    const max = checkDrain(handler, limit, 'SpscRing.drain');
    const ctl = this.ctl; // close() in the handler swaps this.ctl; the release below still goes through
    if (ctl.length === 0) throw this.closedError();
    if (this.draining) throw this.drainBusyError();
    if (!this.isConsumer) this.#takeConsumer();
    let count = 0;
    const start = this.#consumerPosition;
    this.draining = true; // the records handed out are released once, after the batch
    try {
      while (count < max && this.ctl.length !== 0) {
        const index = this.#nextRecord(this.#consumerPosition);
        if (index < 0) break;
        this.#consumerPosition = this.#nextEnd; // private until the release below
        count++;
        handler(this.data, index + L.RECORD_HEADER, this.#nextLength, this.#nextType);
      }
    } finally {
      try {
        // ctl.length is 0 only if the region itself was closed (its memory is gone).
        if (this.#consumerPosition !== start && ctl.length !== 0) this.#release(this.#consumerPosition, ctl);
      } finally {
        this.endDrain(); // after the release: a close() or detach() in the handler gives up the role only now
      }
    }
    if (count > 0) this.drained(); // its readers are busy: a wait soon after may poll (PollPacer)
    return count;
  }

  /**
   * Consumer: from now on the records this object takes (drain, tryRead,
   * read) stay in the ring, unavailable to the producer, until
   * releaseReads() gives them back. A forwarder (the NATS bridge) releases
   * a record only once its next hop has it: if the forwarder dies first, a
   * new consumer attached to the ring takes the record again.
   */
  holdReads(): void {
    this.#holding = true;
  }

  /** Consumer: the end of the last record taken (a u32 position; read it after taking a record, for releaseReads). */
  get readPosition(): number {
    return this.#consumerPosition >>> 0;
  }

  /**
   * Consumer: readPosition counted in bytes since the ring was created, not
   * modulo 2^32 (exact up to 2^53 bytes), by the windows of 2^30 bytes the
   * consumers counted in the ring (HEAD_EPOCH, docs/LAYOUT.md). Names a
   * record across consumers and lapses of 2^32 bytes: the NATS bridge's
   * message ids.
   */
  get readCount(): number {
    const ctl = this.ctl;
    if (ctl.length === 0) throw this.closedError();
    if (this.isConsumer) return headCount(this.#headEpoch, this.#releasedPosition, this.#consumerPosition);
    // Not the consumer (yet): the count of the head stored now. Observes the consumers' raises, then a head store
    // that came after them.
    const epoch = Atomics.load(ctl, L.HEAD_EPOCH_I32) >>> 0;
    const head = Atomics.load(ctl, L.CONSUMER_POSITION_I32);
    return headCount(epoch, head, head);
  }

  /** Producer: the end of the last record written (a u32 position; published unless corked). */
  get writePosition(): number {
    return this.#producerPosition >>> 0;
  }

  /**
   * Consumer (holding): gives the records before `position` (a readPosition
   * seen after taking them) back to the producer. A position outside what
   * was taken and not yet released is a RangeError.
   */
  releaseReads(position: number): void {
    if (this.ctl.length === 0) throw this.closedError();
    // Before any arithmetic: a BigInt would throw V8's own TypeError from the subtraction.
    if (typeof position !== 'number') {
      throw new ShmringTypeError(
        ErrorCodes.INVALID_ARGUMENT,
        `SpscRing.releaseReads: position=${shown(position)} must be a number (a readPosition)`,
      );
    }
    const ahead = (this.#consumerPosition - this.#releasedPosition) >>> 0;
    const step = (position - this.#releasedPosition) >>> 0;
    if (!Number.isInteger(position) || step > ahead || (position & 7) !== 0) {
      throw new ShmringRangeError(
        ErrorCodes.INVALID_ARGUMENT,
        `SpscRing.releaseReads: position=${String(position)} is not between the released position ${this.#releasedPosition >>> 0} and the read position ${this.#consumerPosition >>> 0}`,
      );
    }
    if (step !== 0) this.#storeConsumer(position | 0, this.ctl);
  }

  /** Consumer (holding): takes again, from the last released record on, what was taken and not released. */
  rewindReads(): void {
    if (this.draining) throw this.drainBusyError('rewindReads()'); // drain() would hand the records out again
    this.#consumerPosition = this.#releasedPosition;
  }

  // ---- select's and waitReadable's look (queue.ts) ----

  protected recordReady(): boolean {
    // The consumer's own position: records it took and holds (holdReads) are behind it, not next. An
    // object that is not the consumer (yet) looks from the stored one, which it would read from once it
    // takes the role: observes the consumer's release (#storeConsumer's Atomics.store of CONSUMER_POSITION).
    const consumer = this.isConsumer ? this.#consumerPosition : Atomics.load(this.ctl, L.CONSUMER_POSITION_I32);
    // Observes the producer's publication of the record at the consumer's position (its Atomics.store of
    // LENGTH), as tryRead does: the header word, not the producer position, publishes (layout version 2).
    // A non-zero word that is no record also counts: tryRead reports it (ERR_SHMRING_CORRUPT).
    return Atomics.load(this.#data32, ((consumer & this.#mask) >> 2) + L.RECORD_LENGTH_I32) !== 0;
  }

  protected writeReady(length: number): boolean {
    if (this.closedFlag()) return true;
    const ctl = this.ctl;
    // Observes the consumer's release (#storeConsumer's Atomics.store of CONSUMER_POSITION).
    const consumer = Atomics.load(ctl, L.CONSUMER_POSITION_I32);
    // Observes the producer's position store: select's caller is the producer (its held records were published before the first look).
    const producer = Atomics.load(ctl, L.PRODUCER_POSITION_I32);
    const used = (producer - consumer) | 0;
    // Room as #reserve counts it: the record, the padding before the wrap if it must wrap, and RECORD_RESERVE.
    const size = L.recordSize(length);
    const toEnd = this.capacity - (producer & this.#mask);
    const needed = (size <= toEnd ? size : toEnd + size) + L.RECORD_RESERVE;
    return this.capacity - Math.max(used, 0) >= needed;
  }

  protected selectLimit(): number {
    return this.maxMessageLength;
  }

  protected dropViews(): void {
    this.data = CLOSED_U8;
    this.#data32 = CLOSED_I32;
  }
}
