/**
 * SpscRing: one producer, one consumer, variable-length messages.
 *
 * Threading contract:
 *  - At most one thread (in any process) calls the producer verbs: tryWrite,
 *    claim, commit, abort, cork, uncork, writeSync, write, writable(). To hand
 *    the producer role to another object, uncork (or close) first: a new
 *    producer starts from the published position. At most one calls the
 *    consumer verbs: tryRead, drain, readSync, read, the iterator, readable().
 *    The two may be different processes or threads, or the same one.
 *  - try* verbs, claim/commit/abort and drain never wait. *Sync verbs park
 *    the thread; the plain verbs return Promises and never block the loop.
 *  - `size` is a snapshot: stale as soon as it is read.
 *
 * Invariants (positions are u32 byte counts that wrap modulo 2^32; see layout.ts):
 *  - 0 <= producerPosition - consumerPosition <= capacity (by difference).
 *  - Both positions are multiples of 8; a record never straddles the end of
 *    the data area: a padding record fills the bytes before the wrap.
 *  - Bytes in [consumerPosition, producerPosition) are published records,
 *    written before the producer position passed them; the producer never
 *    touches them again until the consumer position has passed them.
 *  - Each side keeps its own position in a private field (it is the only
 *    writer) and a cached copy of the other's, re-read only when the cache
 *    says the ring is full / empty.
 *  - While corked, the producer's private position runs ahead of the shared
 *    one; the records in between are complete but unpublished (not in
 *    `size`). They are published by the last uncork(), close(), a write
 *    that finds the ring full, and any wait of the producer's thread.
 *  - Anything read from shared memory (a position, a length, a type) is
 *    read once and bounds-checked before it is used, and the checked copy
 *    is what is used (a peer may rewrite the word meanwhile); a value no
 *    correct peer writes is ERR_SHMRING_CORRUPT.
 */
import { ErrorCodes, ShmringError, ShmringRangeError, ShmringTypeError, type Region } from '@shmring/core';
import * as L from './layout.js';
import { checkCapacity, checkOffset, readHeader, ringMemory, unpublish, writeHeader } from './header.js';
import { CLOSED_I32, CLOSED_U8, Queue, READ_BLOCK, WRITE_BLOCK, checkDrain, checkType } from './queue.js';
import { OpenClaim } from './claim.js';
import { copyOut } from './copy.js';
import { Roles } from './roles.js';
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

export interface AttachOptions {
  /** Where the ring starts in its region (as given to create); default 0. */
  offset?: number;
}

/** The handler drain() calls: the record is `data[offset .. offset + length)`; valid only during the call. */
export type DrainHandler = (data: Uint8Array, offset: number, length: number, type: number) => void;

/** Wake at most one parked side: SPSC has one reader and one writer. */
const WAKE_ONE = 1;

function corrupt(what: string): ShmringError {
  return new ShmringError(ErrorCodes.CORRUPT, `SpscRing: ${what}; the ring's memory was overwritten by something that is not a correct peer`);
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
  #claimIndex = 0;
  #claimEnd = 0;
  /** cork() depth: while it is above 0, the producer position is not stored. */
  #corked = 0;
  /** Records were completed while corked and the producer position not yet stored. */
  #unpublished = false;
  // Consumer side: own position, the producer's as last seen.
  #consumerPosition: number;
  #cachedProducerPosition: number;
  /** holdReads(): taken records go back to the producer only through releaseReads(). */
  #holding = false;
  /** The consumer position last stored in shared memory (while holding, #consumerPosition runs ahead of it). */
  #releasedPosition: number;

  private constructor(buffer: ArrayBuffer | SharedArrayBuffer, base: number, capacity: number, roles: Roles | undefined) {
    super(new Int32Array(buffer, base, L.CONTROL_I32_LENGTH), 'SpscRing', roles);
    this.capacity = capacity;
    this.maxMessageLength = L.spscMaxMessage(capacity);
    this.#mask = capacity - 1;
    this.data = new Uint8Array(buffer, base + L.DATA_OFFSET, capacity);
    this.#data32 = new Int32Array(buffer, base + L.DATA_OFFSET, capacity / 4);
    // Observe both positions once (each side's latest store); from now on each side owns its own.
    this.#producerPosition = Atomics.load(this.ctl, L.PRODUCER_POSITION_I32);
    this.#consumerPosition = Atomics.load(this.ctl, L.CONSUMER_POSITION_I32);
    this.#cachedConsumerPosition = this.#consumerPosition;
    this.#releasedPosition = this.#consumerPosition;
    this.#cachedProducerPosition = this.#producerPosition;
    if (((this.#producerPosition - this.#consumerPosition) >>> 0) > capacity || ((this.#producerPosition | this.#consumerPosition) & 7) !== 0) {
      throw corrupt(`positions producer=${this.#producerPosition >>> 0} consumer=${this.#consumerPosition >>> 0} are inconsistent`);
    }
  }

  /** Bytes a region needs to hold a SpscRing of `capacity` data bytes. */
  static regionSize(options: SpscOptions): number {
    return L.spscRingSize(checkCapacity(options?.capacity, L.SPSC_MIN_CAPACITY, L.MAX_CAPACITY));
  }

  /** Creates an empty ring at the start of `region` (or at `offset`), overwriting what is there. */
  static create(region: Region, options: SpscOptions): SpscRing {
    const capacity = checkCapacity(options?.capacity, L.SPSC_MIN_CAPACITY, L.MAX_CAPACITY);
    const base = checkOffset(options.offset);
    const ringSize = L.spscRingSize(capacity);
    const buffer = ringMemory(region, base, ringSize, 'SpscRing.create');
    const roles = Roles.hold(region, base); // before MAGIC: the ring is never seen unheld (stale) once it exists
    writeHeader(unpublish(buffer, base), { kind: L.KIND_SPSC, capacity, slotSize: 0, slotStride: 0, ringSize });
    return new SpscRing(buffer, base, capacity, roles);
  }

  /** Attaches to a ring another process or thread created in `region` (at `offset`). */
  static attach(region: Region, options: AttachOptions = {}): SpscRing {
    const base = checkOffset(options?.offset);
    const buffer = ringMemory(region, base, 0, 'SpscRing.attach');
    const { capacity } = readHeader(buffer, L.KIND_SPSC, base);
    return new SpscRing(buffer, base, capacity, Roles.hold(region, base));
  }

  /** Bytes of records published and not yet consumed (a snapshot). */
  get size(): number {
    const ctl = this.ctl;
    if (ctl.length === 0) return 0;
    // Both loads observe the other sides' latest publications; the difference may be stale at once.
    return (Atomics.load(ctl, L.PRODUCER_POSITION_I32) - Atomics.load(ctl, L.CONSUMER_POSITION_I32)) >>> 0;
  }

  // ---- producer ----

  /**
   * Reserves room for a record of `length` payload bytes; returns the index
   * of its header in `data`, or -1 if the ring is full. Writes the padding
   * record (if the record must wrap) and the length; publishes nothing.
   */
  #reserve(length: number): number {
    if (this.ctl.length === 0) throw this.closedError();
    if (!this.isProducer) this.registerProducer();
    this.#claim.checkWrite(length, this.maxMessageLength);
    const size = L.recordSize(length);
    const position = this.#producerPosition;
    let index = position & this.#mask;
    const toEnd = this.capacity - index;
    const needed = size <= toEnd ? size : toEnd + size;
    if (this.capacity - ((position - this.#cachedConsumerPosition) >>> 0) < needed) {
      // Observes the consumer's latest release (its Atomics.store of CONSUMER_POSITION).
      const consumer = Atomics.load(this.ctl, L.CONSUMER_POSITION_I32);
      const used = (position - consumer) >>> 0;
      if (used > this.capacity || (consumer & 7) !== 0) throw corrupt(`consumer position ${consumer >>> 0} is outside the ring`);
      this.#cachedConsumerPosition = consumer;
      if (this.capacity - used < needed) {
        if (this.#unpublished) this.flush(); // corked and full: the consumer must see the batch to free room
        return -1;
      }
    }
    if (size > toEnd) {
      // Padding record over the bytes before the wrap; published with the record after it.
      this.#data32[(index >> 2) + L.RECORD_LENGTH_I32] = toEnd - L.RECORD_HEADER;
      this.#data32[(index >> 2) + L.RECORD_TYPE_I32] = L.PADDING_TYPE;
      index = 0;
    }
    this.#data32[(index >> 2) + L.RECORD_LENGTH_I32] = length;
    this.#claimIndex = index;
    this.#claimEnd = (position + needed) | 0;
    return index;
  }

  /** Completes the reserved record with its type; publishes it unless corked. */
  #publish(type: number): void {
    this.#data32[(this.#claimIndex >> 2) + L.RECORD_TYPE_I32] = type;
    this.#producerPosition = this.#claimEnd;
    if (this.#corked === 0) {
      this.#store();
    } else if (!this.#unpublished) {
      this.#unpublished = true;
      holdUntilWait(this.#flushHeld); // the first held record of a batch
    }
  }

  /** Stores the producer position: every record up to it becomes visible. */
  #store(): void {
    const ctl = this.ctl;
    // Publishes the records' bytes (written before) to the consumer; pairs with its load of PRODUCER_POSITION.
    Atomics.store(ctl, L.PRODUCER_POSITION_I32, this.#producerPosition);
    unpark(ctl, READ_BLOCK, WAKE_ONE);
  }

  /**
   * Defers publication, as Writable.cork() does: what this producer writes
   * while corked (tryWrite, claim/commit, writeSync, write) goes into the
   * ring, but the producer position is not stored, so the consumer sees none
   * of it, until uncork() has been called as often as cork(). Then one store
   * publishes the whole batch, and one wake-up at most goes to a parked
   * consumer: the way to the highest message rate, at the cost of the
   * batch's latency. What is held is published earlier by close(), by a
   * write that finds the ring full (so a waiting write never waits on
   * itself), and by any wait of this thread in a shmring verb (so a request
   * held here cannot stall the reply this thread waits for). A producer that
   * dies, or is dropped, while corked takes what it holds with it.
   */
  cork(): void {
    this.#corked++;
  }

  /** Ends one cork(); the last one publishes everything held since the first. Without a cork(), does nothing. */
  uncork(): void {
    if (this.#corked > 0 && --this.#corked === 0) this.flush();
  }

  protected override flush(): void {
    if (!this.#unpublished) return;
    this.#unpublished = false;
    releaseHold(this.#flushHeld);
    if (this.ctl.length !== 0) this.#store();
  }

  /** flush() as a stable function, for the thread's list of held publications. */
  readonly #flushHeld = (): void => this.flush();

  /**
   * Copies `bytes` into the ring as one message. Returns false if the ring is
   * full (nothing written). Does not look at the closed flag (writeSync/write do).
   */
  tryWrite(bytes: Uint8Array, type = 0): boolean {
    checkType(type);
    if (!(bytes instanceof Uint8Array)) {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, 'SpscRing.tryWrite needs a Uint8Array (or Buffer)');
    }
    const index = this.#reserve(bytes.length);
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
    const index = this.#reserve(length);
    if (index < 0) return -1;
    this.#claim.offset = index + L.RECORD_HEADER;
    return this.#claim.offset;
  }

  /** Checks that `offset` is the open claim, and closes it. */
  #checkClaim(offset: number, verb: string): void {
    if (this.ctl.length === 0) throw this.closedError();
    this.#claim.close(offset, verb);
  }

  /** Zero-copy write, step 2: publishes the claimed record. */
  commit(offset: number, type = 0): void {
    checkType(type);
    this.#checkClaim(offset, 'commit');
    this.#publish(type);
  }

  /** Gives the claimed space back; the consumer never sees it. */
  abort(offset: number): void {
    this.#checkClaim(offset, 'abort');
  }

  // ---- consumer ----

  /**
   * Index of the next record's header (skipping a padding record). Leaves
   * the record's length and type, and the consumer position after it, in
   * #nextLength, #nextType and #nextEnd: each word is read from shared
   * memory once and checked against the ring's bounds, and the callers use
   * these checked copies, never a second read a peer could have changed.
   * `available` (not 0) is the published byte count from `position`.
   */
  #nextRecord(position: number, available: number): number {
    const data32 = this.#data32;
    let index = position & this.#mask;
    let skipped = 0;
    let length = data32[(index >> 2) + L.RECORD_LENGTH_I32]! >>> 0;
    let type = data32[(index >> 2) + L.RECORD_TYPE_I32]!;
    if (type === L.PADDING_TYPE) {
      skipped = this.capacity - index;
      if (length !== skipped - L.RECORD_HEADER || available < skipped + L.RECORD_HEADER) {
        throw corrupt(`padding record at ${index} has length ${length} (expected ${skipped - L.RECORD_HEADER})`);
      }
      index = 0;
      length = data32[L.RECORD_LENGTH_I32]! >>> 0;
      type = data32[L.RECORD_TYPE_I32]!;
    }
    const size = L.recordSize(length);
    if (length > this.maxMessageLength || skipped + size > available || index + size > this.capacity || type < 0) {
      throw corrupt(`record at ${index} claims length ${length} and type ${type} with ${available - skipped} bytes published`);
    }
    this.#nextLength = length;
    this.#nextType = type;
    this.#nextEnd = (position + skipped + size) | 0;
    return index;
  }

  // What #nextRecord found besides the index (scratch fields: several results without allocating).
  #nextLength = 0;
  #nextType = 0;
  #nextEnd = 0;


  /**
   * Published bytes ahead of the consumer. The cached producer position is
   * refreshed when it says empty, or always when `refresh` (once per drain
   * batch, so a batch takes everything published when it starts).
   */
  #available(refresh: boolean): number {
    if (!this.isConsumer) this.registerConsumer();
    const position = this.#consumerPosition;
    if (refresh || position === this.#cachedProducerPosition) {
      // Observes the producer's publication (its Atomics.store of PRODUCER_POSITION); the record bytes are read after it.
      const producer = Atomics.load(this.ctl, L.PRODUCER_POSITION_I32);
      if (((producer - position) >>> 0) > this.capacity || (producer & 7) !== 0) {
        throw corrupt(`producer position ${producer >>> 0} is outside the ring`);
      }
      this.#cachedProducerPosition = producer;
    }
    return (this.#cachedProducerPosition - position) >>> 0;
  }

  /** Releases the consumed bytes to the producer (unless holding), through `ctl` (drain passes the view it started with). */
  #release(position: number, ctl = this.ctl): void {
    this.#consumerPosition = position;
    if (!this.#holding) this.#storeConsumer(position, ctl);
  }

  #storeConsumer(position: number, ctl: Int32Array): void {
    this.#releasedPosition = position;
    // Publishes the freed space to the producer; pairs with its load of CONSUMER_POSITION. Bytes were read before it.
    Atomics.store(ctl, L.CONSUMER_POSITION_I32, position);
    unpark(ctl, WRITE_BLOCK, WAKE_ONE);
  }

  /** Copies the next message out, or returns null if the ring is empty. Its type goes to `lastType`. */
  tryRead(): Uint8Array | null {
    if (this.ctl.length === 0) throw this.closedError();
    const available = this.#available(false);
    if (available === 0) return null;
    const index = this.#nextRecord(this.#consumerPosition, available);
    const start = index + L.RECORD_HEADER;
    const message = copyOut(this.data, start, this.#nextLength);
    this.lastType = this.#nextType;
    this.#release(this.#nextEnd);
    return message;
  }

  /**
   * Hands each available record to `handler(data, offset, length, type)` in
   * place, without copying or allocating, up to `limit` records; returns how
   * many: everything published when the call starts, if `limit` allows. The
   * consumer position is published once, after the batch (also if
   * the handler throws: the record it threw on counts as consumed; and if
   * the handler closes this ring: what it was handed stays consumed for the
   * next consumer). Never waits. A handler that is not a function, or a
   * limit that is not an integer >= 0 (or Infinity), throws before anything
   * is taken.
   */
  drain(handler: DrainHandler, limit?: number): number {
    const max = checkDrain(handler, limit, 'SpscRing.drain');
    const ctl = this.ctl; // close() in the handler swaps this.ctl; the release below still goes through
    if (ctl.length === 0) throw this.closedError();
    let available = this.#available(true);
    let count = 0;
    const start = this.#consumerPosition;
    try {
      while (available !== 0 && count < max && this.ctl.length !== 0) {
        const index = this.#nextRecord(this.#consumerPosition, available);
        const end = this.#nextEnd;
        available -= (end - this.#consumerPosition) >>> 0;
        this.#consumerPosition = end; // private until the release below
        count++;
        handler(this.data, index + L.RECORD_HEADER, this.#nextLength, this.#nextType);
      }
    } finally {
      // ctl.length is 0 only if the region itself was closed (its memory is gone).
      if (this.#consumerPosition !== start && ctl.length !== 0) this.#release(this.#consumerPosition, ctl);
    }
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
    const ahead = (this.#consumerPosition - this.#releasedPosition) >>> 0;
    const step = (position - this.#releasedPosition) >>> 0;
    if (typeof position !== 'number' || !Number.isInteger(position) || step > ahead || (position & 7) !== 0) {
      throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT,
        `SpscRing.releaseReads: position=${String(position)} is not between the released position ${this.#releasedPosition >>> 0} and the read position ${this.#consumerPosition >>> 0}`);
    }
    if (step !== 0) this.#storeConsumer(position | 0, this.ctl);
  }

  /** Consumer (holding): takes again, from the last released record on, what was taken and not released. */
  rewindReads(): void {
    this.#consumerPosition = this.#releasedPosition;
  }

  protected dropViews(): void {
    this.data = CLOSED_U8;
    this.#data32 = CLOSED_I32;
  }
}
