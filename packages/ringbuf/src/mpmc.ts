/**
 * MpmcQueue: many producers, many consumers, fixed-size slots (Vyukov's
 * bounded MPMC queue, with 32-bit positions and sequences in shared memory).
 *
 * Threading contract:
 *  - Any number of threads and processes may call every verb at once.
 *  - try* verbs and drain never wait; *Sync verbs park the thread; the plain
 *    verbs return Promises. FIFO holds per producer; between producers the
 *    order is that of their position claims.
 *  - `size` is a snapshot.
 *
 * Invariants (see layout.ts for the slot layout):
 *  - Slot i of lap n is free for the producer of position p = n·capacity + i
 *    when its sequence == p; readable by the consumer of p when it == p + 1;
 *    the consumer frees it by storing p + capacity. The producer that wins
 *    the CAS on the producer position owns the slot until it stores p + 1;
 *    likewise the consumer that wins the CAS on the consumer position.
 *  - A slot's length and payload are written before its sequence publishes
 *    them, and read after the sequence is observed.
 *  - A length larger than SLOT_SIZE (or a negative type other than
 *    SLOT_SKIP_TYPE) in a readable slot is ERR_SHMRING_CORRUPT; the slot is
 *    freed before the error is thrown, so the queue goes on. Length and type
 *    are read once: the checked copies are what the reader gets, whatever a
 *    peer writes meanwhile.
 *  - A producer looks at FLAGS after winning its position: if the queue was
 *    closed by then, it publishes the slot as a skip (SLOT_SKIP_TYPE, no
 *    payload) and throws ERR_SHMRING_CLOSED. A reader that saw the flag and
 *    no pending claim may already have ended: a message written there would
 *    be read by nobody, while its writer was told it was written. Readers
 *    free a skip and take the next position.
 *  - OWNER holds the pid (in a SharedArrayBuffer queue: the thread id) of
 *    the side that won the slot's CAS until it is done
 *    with the slot (0 otherwise). A parked side whose check period passes
 *    without progress (and a side that only polls, every 64th empty or full
 *    poll, at most every 250 ms: #pollLook) looks at the OWNER of the slot it waits on; if that
 *    process is dead it recovers the slot (a slot without an OWNER, or with
 *    a live one, is never taken, however long it is held): a reader skips
 *    each unpublished slot (the dead producer's message never existed), a
 *    writer frees a slot a dead consumer held (that message died with its
 *    consumer), taking it by a CAS of OWNER from the dead pid to 0.
 *  - Every object that acts as a producer (consumer) holds a shared lock on
 *    the PRODUCER (CONSUMER) byte of the region's file (roles.ts). A parked
 *    reader (writer) ends with ERR_SHMRING_PEER_DEAD only when someone
 *    registered (PRODUCER_PID != 0) and nobody holds that lock any more;
 *    nobody registered yet is "nobody came yet", never a death. Before it
 *    reports the death, a reader skips every slot the dead producers
 *    claimed, so what they published after such a slot is delivered first.
 *    A region without a file (threads of one process) has no locks: its
 *    sides are as alive as the process.
 */
import { ErrorCodes, ShmringError, ShmringRangeError, ShmringTypeError, checkInteger, type Region } from '@shmring/core';
import * as L from './layout.js';
import { attachTo, checkCapacity, checkOptionsObject, readHeader, ringMemory, unpublish, writeHeader } from './header.js';
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
import type { DrainHandler } from './spsc.js';
import { isAlive, isThreadAlive, ownThread } from './liveness.js';
import { copyOut } from './copy.js';
import { layOut, Roles } from './roles.js';
import { unpark } from './waiting.js';

/** The options of create and regionSize. */
const OPTION_NAMES: readonly string[] = ['capacity', 'slotSize'];

export interface MpmcOptions {
  /** Number of slots: a power of two in [2, 2^30]. */
  capacity: number;
  /** Largest payload of one message, in bytes: [0, 2^24]. */
  slotSize: number;
}

/**
 * Each publication wakes every parked peer of the other side, not one:
 * slots are published out of position order (a producer slow between its
 * claim and its publication), so the one woken could be a reader whose
 * slot is still unpublished while another reader's slot is ready, and that
 * reader would sleep on (found by models/mpmc.pml). A woken reader whose
 * slot is not ready parks again.
 */
const WAKE_ALL = 0x7fffffff;

/** A polling side looks at a stuck slot's holder on every POLL_LOOK_EVERY-th empty (full) poll ... */
const POLL_LOOK_EVERY = 64;
/** ... and at most once per POLL_LOOK_MS: a parked side's check period at the default peerTimeoutMs. */
const POLL_LOOK_MS = 250;

export class MpmcQueue extends Queue {
  /** Number of slots. */
  readonly capacity: number;
  /** Largest payload of one message. */
  readonly slotSize: number;
  /** The data area (all slots, headers included); drain() gives offsets into it. */
  data: Uint8Array;
  #data32: Int32Array;
  readonly #mask: number;
  /** Slot stride in Int32 words. */
  readonly #stride32: number;

  private constructor(
    buffer: ArrayBuffer | SharedArrayBuffer,
    capacity: number,
    slotSize: number,
    roles: Roles | undefined,
    site: RingSite,
  ) {
    super(new Int32Array(buffer, 0, L.CONTROL_I32_LENGTH), 'MpmcQueue', roles, site);
    this.capacity = capacity;
    this.slotSize = slotSize;
    this.#mask = capacity - 1;
    const stride = L.slotStride(slotSize);
    this.#stride32 = stride / 4;
    this.data = new Uint8Array(buffer, L.DATA_OFFSET, capacity * stride);
    this.#data32 = new Int32Array(buffer, L.DATA_OFFSET, (capacity * stride) / 4);
    this.#threads = buffer instanceof SharedArrayBuffer;
    this.#self = this.#threads ? ownThread().id : process.pid;
  }

  /**
   * The mark this object leaves in the OWNER of a slot it holds, for
   * recovery if it dies: its process's pid; in a SharedArrayBuffer queue,
   * whose sides are threads of one process, its thread's id, so a worker
   * that ends holding a slot is a dead holder (docs/LAYOUT.md, "Liveness").
   */
  readonly #self: number;
  readonly #threads: boolean;

  /** Whether the holder an OWNER names lives (a pid alone, or a thread of this process). */
  #ownerAlive(owner: number): boolean {
    return this.#threads ? isThreadAlive(owner, 0) : isAlive(owner, 0);
  }

  static #check(options: MpmcOptions, verb: string): [capacity: number, slotSize: number] {
    checkOptionsObject(options, verb, OPTION_NAMES);
    const capacity = checkCapacity(options?.capacity, L.MPMC_MIN_CAPACITY, L.MAX_CAPACITY, verb, 'slots of the queue');
    const slotSize = checkInteger('slotSize', options.slotSize, 0, L.MAX_SLOT_SIZE, verb);
    const size = L.mpmcRingSize(capacity, slotSize);
    if (!Number.isSafeInteger(size)) {
      // Each bound alone is fine; their product is not a byte count JS can hold exactly.
      throw new ShmringRangeError(
        ErrorCodes.INVALID_ARGUMENT,
        `${verb}: capacity=${capacity} slots of slotSize=${slotSize} need ${size} bytes, more than Number.MAX_SAFE_INTEGER; make one of them smaller`,
      );
    }
    return [capacity, slotSize];
  }

  /** Bytes a region needs to hold a MpmcQueue of `capacity` slots of `slotSize` bytes. */
  static regionSize(options: MpmcOptions): number {
    const [capacity, slotSize] = MpmcQueue.#check(options, 'MpmcQueue.regionSize');
    return L.mpmcRingSize(capacity, slotSize);
  }

  /**
   * Creates an empty queue at the start of `region`, overwriting what is there, unless an object is
   * attached to a queue there: ERR_SHMRING_BUSY (in a region that takes locks: POSIX, file, memfd).
   */
  static create(region: Region, options: MpmcOptions): MpmcQueue {
    const [capacity, slotSize] = MpmcQueue.#check(options, 'MpmcQueue.create');
    const ringSize = L.mpmcRingSize(capacity, slotSize);
    const buffer = ringMemory(region, 0, ringSize, 'MpmcQueue.create');
    // Before MAGIC (the queue is never seen unheld, stale, once it exists); exclusive while nobody else holds it.
    const roles = Roles.holdToCreate(region, buffer, 0, 'MpmcQueue.create', ringWhere(region, 0, 'queue'));
    layOut(roles, () => {
      const ctl = unpublish(buffer);
      const stride32 = L.slotStride(slotSize) / 4;
      const slots = new Int32Array(buffer, L.DATA_OFFSET, capacity * stride32);
      for (let i = 0; i < capacity; i++) {
        slots[i * stride32 + L.SLOT_SEQUENCE_I32] = i; // slot i is free for position i
        // No holder: an OWNER left by a queue laid out here before would name its process, and a live holder
        // that does not mark (a C peer) could have its slot taken for that process's once it died.
        slots[i * stride32 + L.SLOT_OWNER_I32] = 0;
      }
      // writeHeader's store of MAGIC publishes these sequences too.
      writeHeader(ctl, { kind: L.KIND_MPMC, capacity, slotSize, slotStride: L.slotStride(slotSize), ringSize });
    });
    return new MpmcQueue(buffer, capacity, slotSize, roles, ringSite(region, 0, roles));
  }

  /**
   * Attaches to a queue another process or thread created in `region`. It
   * takes no options (an MpmcQueue always starts at offset 0): any given
   * are refused, as the other kinds refuse unknown ones.
   */
  static attach(region: Region, options?: Record<string, never>): MpmcQueue {
    checkOptionsObject(options, 'MpmcQueue.attach', []);
    const buffer = ringMemory(region, 0, 0, 'MpmcQueue.attach');
    return attachTo(region, buffer, 0, 'MpmcQueue.attach', (roles) => {
      const { capacity, slotSize } = readHeader(buffer, L.KIND_MPMC, 0, undefined, region);
      return new MpmcQueue(buffer, capacity, slotSize, roles, ringSite(region, 0, roles));
    });
  }

  /** Messages published and not yet claimed by a consumer (a snapshot, clamped to [0, capacity]). */
  get size(): number {
    const ctl = this.ctl;
    if (ctl.length === 0) return 0;
    // Both loads observe the latest claims; the difference may be stale at once.
    const n = (Atomics.load(ctl, L.PRODUCER_POSITION_I32) - Atomics.load(ctl, L.CONSUMER_POSITION_I32)) | 0;
    return Math.min(Math.max(n, 0), this.capacity);
  }

  /** Int32 index of the sequence word of the slot of `position`. */
  #slot(position: number): number {
    return (position & this.#mask) * this.#stride32;
  }

  /**
   * Claims the slot of the next producer position; returns its Int32 index
   * and stores the position in #claimed, or -1 if the queue is full.
   */
  #claimForWrite(): number {
    const ctl = this.ctl;
    const data32 = this.#data32;
    // Observes the latest producer claim; a stale value only costs a retry.
    let position = Atomics.load(ctl, L.PRODUCER_POSITION_I32);
    for (;;) {
      const slot = this.#slot(position);
      // Observes the consumer's release of this slot (its store of position + capacity).
      const lag = (Atomics.load(data32, slot + L.SLOT_SEQUENCE_I32) - position) | 0;
      if (lag === 0) {
        // Claims the position; only the winner of this CAS writes the slot.
        const seen = Atomics.compareExchange(ctl, L.PRODUCER_POSITION_I32, position, (position + 1) | 0);
        if (seen === position) {
          this.#claimed = position;
          return slot;
        }
        position = seen;
      } else if (lag < 0) {
        return -1; // the slot still holds the message of the previous lap: full
      } else {
        position = this.#reload(L.PRODUCER_POSITION_I32, position); // another producer got ahead
      }
    }
  }

  /** Claims the slot of the next consumer position, or -1 if the queue is empty. */
  #claimForRead(): number {
    if (!this.isConsumer) this.registerConsumer();
    const ctl = this.ctl;
    const data32 = this.#data32;
    // Observes the latest consumer claim.
    let position = Atomics.load(ctl, L.CONSUMER_POSITION_I32);
    for (;;) {
      const slot = this.#slot(position);
      // Observes the producer's publication of this slot (its store of position + 1); the payload is read after it.
      const lag = (Atomics.load(data32, slot + L.SLOT_SEQUENCE_I32) - ((position + 1) | 0)) | 0;
      if (lag === 0) {
        // Claims the position; only the winner reads and frees the slot.
        const seen = Atomics.compareExchange(ctl, L.CONSUMER_POSITION_I32, position, (position + 1) | 0);
        if (seen === position) {
          data32[slot + L.SLOT_OWNER_I32] = this.#self;
          this.#claimed = position;
          return slot;
        }
        position = seen;
      } else if (lag < 0) {
        return -1; // not yet published: empty
      } else {
        position = this.#reload(L.CONSUMER_POSITION_I32, position); // another consumer got ahead
      }
    }
  }

  /**
   * Re-reads a position after a slot's sequence showed it had moved on. If it
   * has not moved, the sequence is ahead of every claim: no correct peer
   * writes that, and retrying would spin forever.
   */
  #reload(index: number, stale: number): number {
    // Observes the claim another producer (consumer) made since our first load.
    const position = Atomics.load(this.ctl, index);
    if (position === stale) {
      throw new ShmringError(
        ErrorCodes.CORRUPT,
        `MpmcQueue: the slot of position ${stale >>> 0} in ${this.where} has a sequence ahead of the position; the queue's memory was overwritten by something that is not a correct peer: stop the processes that use it, and create the queue again`,
      );
    }
    return position;
  }

  /** The position the last #claimFor* won (a private scratch field, to return two values without allocating). */
  #claimed = 0;

  /**
   * Frees a slot the consumer has read: it becomes free for the producer one
   * lap later. Through this queue's views, or the ones drain() started with.
   */
  #free(slot: number, position: number, ctl = this.ctl, data32 = this.#data32): void {
    data32[slot + L.SLOT_OWNER_I32] = 0;
    // Publishes the slot's reuse to the producer of position + capacity; the payload was read before.
    Atomics.store(data32, slot + L.SLOT_SEQUENCE_I32, (position + this.capacity) | 0);
    unpark(ctl, WRITE_BLOCK, WAKE_ALL);
  }

  /**
   * The slot's length, checked against SLOT_SIZE, with its type (checked
   * against [0, MAX_TYPE]) left in #slotType: each read once, so a peer that
   * rewrites them after the check cannot reach the caller. Frees the slot and
   * throws if corrupt; frees a skip (a producer that found the queue closed
   * after its claim) and returns -1.
   */
  #length(slot: number, position: number): number {
    const length = this.#data32[slot + L.SLOT_LENGTH_I32]! >>> 0;
    const type = this.#data32[slot + L.SLOT_TYPE_I32]!;
    this.#slotType = type;
    if (type === L.SLOT_SKIP_TYPE && length === 0) {
      this.#free(slot, position);
      return -1;
    }
    if (length > this.slotSize || type < 0) {
      this.#free(slot, position);
      throw new ShmringError(
        ErrorCodes.CORRUPT,
        `MpmcQueue: slot of position ${position >>> 0} in ${this.where} claims length ${length} (slotSize=${this.slotSize}) and type ${type}; the message is dropped (a peer that is not correct wrote it)`,
      );
    }
    return length;
  }

  /** The type #length read last (a scratch field: a second result without allocating). */
  #slotType = 0;

  /**
   * Copies `bytes` into a free slot. Returns false if the queue is full;
   * throws ERR_SHMRING_CLOSED if it was closed by the time this write won
   * its slot (the slot then carries nothing), or is closed and full.
   */
  tryWrite(bytes: Uint8Array, type = 0): boolean {
    checkType(type, 'MpmcQueue.tryWrite');
    if (!(bytes instanceof Uint8Array)) {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, 'MpmcQueue.tryWrite needs a Uint8Array (or Buffer)');
    }
    if (bytes.length > this.slotSize) throw this.tooLarge(bytes.length, 'MpmcQueue.tryWrite');
    if (this.ctl.length === 0) throw this.closedError();
    if (!this.isProducer) this.registerProducer();
    let slot = this.#claimForWrite();
    if (slot < 0 && (!this.#pollLook(false) || (slot = this.#claimForWrite()) < 0)) {
      // Full, and perhaps of skips no reader is left to free: a closed queue says so rather than "full" for ever.
      if (this.closedFlag()) throw this.closedNow();
      return false;
    }
    const position = this.#claimed;
    const data32 = this.#data32;
    // SYNC POINT with close()'s Atomics.or of FLAGS (both seq_cst): a close made before our claim CAS is seen
    // here; one made after it finds our claim pending (claimsPending), and its readers wait for this slot.
    const closed = (Atomics.load(this.ctl, L.FLAGS_I32) & L.FLAG_CLOSED) !== 0;
    data32[slot + L.SLOT_OWNER_I32] = this.#self;
    data32[slot + L.SLOT_LENGTH_I32] = closed ? 0 : bytes.length;
    data32[slot + L.SLOT_TYPE_I32] = closed ? L.SLOT_SKIP_TYPE : type;
    if (!closed) this.data.set(bytes, L.slotPayload(slot));
    data32[slot + L.SLOT_OWNER_I32] = 0;
    // Publishes length, type and payload (and the cleared OWNER) to the consumer of this position.
    Atomics.store(data32, slot + L.SLOT_SEQUENCE_I32, (position + 1) | 0);
    unpark(this.ctl, READ_BLOCK, WAKE_ALL);
    if (closed) throw this.closedNow(); // the position went as a skip: nobody may be left to read it
    return true;
  }

  /** Copies the next message out, or returns null if the queue is empty. Its type goes to `lastType`. */
  tryRead(): Uint8Array | null {
    if (this.ctl.length === 0) throw this.closedError();
    for (;;) {
      let slot = this.#claimForRead();
      if (slot < 0 && (!this.#pollLook(true) || (slot = this.#claimForRead()) < 0)) return null;
      const position = this.#claimed;
      const length = this.#length(slot, position);
      if (length < 0) continue; // a skip, freed: the next position
      const message = copyOut(this.data, L.slotPayload(slot), length);
      this.lastType = this.#slotType;
      this.#free(slot, position);
      return message;
    }
  }

  /**
   * Hands up to `limit` messages to `handler(data, offset, length, type)` in
   * place, freeing each slot after the handler returns (or throws, or closes
   * this queue). No copy, no allocation. Returns how many messages were
   * handled. Never waits. A handler that is not a function, or a limit that
   * is not an integer >= 0 (or Infinity), throws before anything is taken.
   */
  drain(handler: DrainHandler, limit?: number): number {
    const max = checkDrain(handler, limit, 'MpmcQueue.drain');
    // close() in the handler swaps this queue's views; the slot it holds is still freed through these.
    const ctl = this.ctl;
    const data32 = this.#data32;
    if (ctl.length === 0) throw this.closedError();
    let count = 0;
    while (count < max && this.ctl.length !== 0) {
      let slot = this.#claimForRead();
      if (slot < 0 && (count > 0 || !this.#pollLook(true) || (slot = this.#claimForRead()) < 0)) break;
      const position = this.#claimed;
      const length = this.#length(slot, position);
      if (length < 0) continue; // a skip, freed: not a message
      count++;
      try {
        handler(this.data, L.slotPayload(slot), length, this.#slotType);
      } finally {
        // ctl.length is 0 only if the region itself was closed (its memory is gone).
        if (ctl.length !== 0) this.#free(slot, position, ctl, data32);
      }
    }
    if (count > 0) this.drained(); // its readers are busy: a wait soon after may poll (PollPacer)
    return count;
  }

  /** Slots recovered from dead producers or consumers by this object (a count, for monitoring). */
  recoveredSlots = 0;

  /** Empty (full) polls since this object last looked at the clock for #pollLook. */
  #idlePolls = 0;
  /** When #pollLook last looked at a stuck slot's holder (performance.now()). */
  #lastPollLook = -Infinity;

  /**
   * A side that only polls (tryRead and drain, tryWrite) never parks, so no
   * parked check took back the slot a dead producer claimed (a dead
   * consumer held) ahead of it: the queue stayed empty (full) for it for
   * good. Every POLL_LOOK_EVERY-th empty (full) poll, at most once per
   * POLL_LOOK_MS, it looks as a parked side's check does. True if a slot
   * was taken back (the caller claims again).
   */
  #pollLook(reading: boolean): boolean {
    if (++this.#idlePolls % POLL_LOOK_EVERY !== 0) return false;
    const now = performance.now();
    if (now - this.#lastPollLook < POLL_LOOK_MS) return false;
    this.#lastPollLook = now;
    const before = this.recoveredSlots;
    if (reading) {
      while (this.#skipDeadClaim()) {
        // the next position may be stuck too
      }
      if (this.recoveredSlots !== before) unpark(this.ctl, READ_BLOCK, WAKE_ALL); // other readers may go on too
    } else {
      this.#freeDeadHold();
    }
    return this.recoveredSlots !== before;
  }

  // ---- dead sides (docs/LAYOUT.md, "Liveness" and "Slots") ----

  // Both roles are shared: any number of producers and consumers.
  protected override registerProducer(): void {
    super.registerProducer(false); // PRODUCER_PID / START: the last producer to register, for inspect
  }

  protected override registerConsumer(): void {
    super.registerConsumer(false);
  }

  protected override claimsPending(): boolean {
    const ctl = this.ctl;
    // Observes the claims of both sides: a position claimed by a producer and not yet by a reader.
    return ((Atomics.load(ctl, L.PRODUCER_POSITION_I32) - Atomics.load(ctl, L.CONSUMER_POSITION_I32)) | 0) > 0;
  }

  /** Both roles are shared: any number of producers and consumers. */
  protected override sharedRole(): boolean {
    return true;
  }

  /**
   * A parked reader's check: skips every slot that a dead producer claimed
   * and never published, then says whether a producer is left (false:
   * ERR_SHMRING_PEER_DEAD, once one last read finds nothing).
   */
  protected override producerAlive(): boolean {
    if (this.ctl.length === 0) return true;
    const left = super.producerAlive();
    let skipped = 0;
    while (this.#skipDeadClaim()) skipped++; // the next position may be stuck too
    // The next position may be published already: a parked reader (the
    // watchdog calls this while the reader sleeps) looks again.
    if (skipped !== 0) unpark(this.ctl, READ_BLOCK, WAKE_ALL);
    return left;
  }

  /** A parked writer's check: frees a slot a dead consumer held, then says whether a consumer is left. */
  protected override consumerAlive(): boolean {
    if (this.ctl.length === 0) return true;
    const left = super.consumerAlive();
    this.#freeDeadHold();
    return left;
  }

  /**
   * True when the slot is held by a claim whose OWNER is a dead process. A
   * slot with no OWNER is never taken: its holder may be alive and slow (or a
   * peer that does not mark slots), and taking it would lose its message.
   */
  #holderDead(slot: number): boolean {
    // Observes the holder's mark (written right after its CAS).
    const owner = Atomics.load(this.#data32, slot + L.SLOT_OWNER_I32);
    return owner !== 0 && !this.#ownerAlive(owner);
  }

  /** Skips the slot of the consumer position if a dead producer claimed it and never published it; true if it did. */
  #skipDeadClaim(): boolean {
    const ctl = this.ctl;
    // Both loads observe the latest claims; a stale value only delays the recovery by a check period.
    const position = Atomics.load(ctl, L.CONSUMER_POSITION_I32);
    const claimed = ((Atomics.load(ctl, L.PRODUCER_POSITION_I32) - position) | 0) > 0;
    const slot = this.#slot(position);
    // Observes whether the slot of our position is still unpublished (its producer's store of position + 1 not made).
    if (!claimed || Atomics.load(this.#data32, slot + L.SLOT_SEQUENCE_I32) !== position) return false;
    if (!this.#holderDead(slot)) return false;
    // Observes the slot again, after the verdict: a producer that cleared its mark, published and then exited
    // between our first load and its judging was found dead with its message there. Unpublished now, it stays
    // so: the dead write nothing more.
    if (Atomics.load(this.#data32, slot + L.SLOT_SEQUENCE_I32) !== position) return false;
    // Takes the position as a consumer would (only the winner frees the slot), and frees the slot unread.
    if (Atomics.compareExchange(ctl, L.CONSUMER_POSITION_I32, position, (position + 1) | 0) !== position) return false;
    this.#free(slot, position);
    this.recoveredSlots++;
    return true;
  }

  /** Frees the slot of the producer position if a dead consumer claimed its message and never freed it. */
  #freeDeadHold(): void {
    const ctl = this.ctl;
    const data32 = this.#data32;
    // Observes the latest producer claim.
    const position = Atomics.load(ctl, L.PRODUCER_POSITION_I32);
    const held = (position - this.capacity) | 0;
    const slot = this.#slot(position);
    // Observes the slot's publication of `held` (its producer's store of held + 1): its message is still there.
    const published = Atomics.load(data32, slot + L.SLOT_SEQUENCE_I32) === ((held + 1) | 0);
    // Observes the consumer claims: a consumer took `held` and has not freed the slot.
    const taken = ((Atomics.load(ctl, L.CONSUMER_POSITION_I32) - held) | 0) > 0;
    if (!published || !taken) return;
    // Observes the holder's mark (the consumer's store of its pid right after its CAS).
    const owner = Atomics.load(data32, slot + L.SLOT_OWNER_I32);
    if (owner === 0 || this.#ownerAlive(owner)) return;
    // Observes the slot again, after the verdict: still `held`'s, so `owner` is its dead consumer's mark. Between
    // our first loads and the OWNER load a live consumer may have freed the slot and a producer claimed `position`
    // and marked it, then died: taken from that one, the slot read free (OWNER 0) at a position already claimed, which
    // no reader would ever skip (a claim with no mark is never taken) and no writer ever reach: the queue stalled.
    if (Atomics.load(data32, slot + L.SLOT_SEQUENCE_I32) !== ((held + 1) | 0)) return;
    // Takes the slot from its dead holder: one recovering writer wins, and nobody clears a later holder's mark.
    if (Atomics.compareExchange(data32, slot + L.SLOT_OWNER_I32, owner, 0) !== owner) return;
    // Frees the slot for the producer of `position`, as its dead consumer would have; pairs with #claimForWrite's load.
    Atomics.store(data32, slot + L.SLOT_SEQUENCE_I32, position);
    unpark(ctl, WRITE_BLOCK, WAKE_ALL);
    this.recoveredSlots++;
  }

  // ---- select's look (queue.ts) ----

  protected recordReady(): boolean {
    return this.#slotReady(L.CONSUMER_POSITION_I32, 1);
  }

  protected writeReady(): boolean {
    return this.closedFlag() || this.#slotReady(L.PRODUCER_POSITION_I32, 0);
  }

  protected selectLimit(): number {
    return this.slotSize;
  }

  protected override tooLarge(length: number, verb: string): ShmringRangeError {
    return new ShmringRangeError(
      ErrorCodes.MESSAGE_TOO_LARGE,
      `${verb}: length=${length} is larger than slotSize=${this.slotSize}, the largest message this queue takes; ` +
        'send smaller messages, or create the queue with a larger slotSize',
    );
  }

  /**
   * Is the slot of the next position of that side ready? The reader's slot
   * when its sequence is position + 1 (published), the writer's when it is
   * position (free): Vyukov's test, as the queue's claims make it.
   */
  #slotReady(positionIndex: number, lagOf: 0 | 1): boolean {
    const ctl = this.ctl;
    const data32 = this.#data32;
    // Observes the latest claim of that side (the queue's compareExchange on its position).
    let position = Atomics.load(ctl, positionIndex);
    for (;;) {
      // Observes the slot's publication (tryWrite's store of SEQUENCE = position + 1) or release (#free's store of position + capacity).
      const lag = (Atomics.load(data32, this.#slot(position) + L.SLOT_SEQUENCE_I32) - ((position + lagOf) | 0)) | 0;
      if (lag === 0) return true;
      if (lag < 0) return false;
      // Another side of ours took that position since: observe the latest claim.
      const again = Atomics.load(ctl, positionIndex);
      if (again === position) return true; // a sequence ahead of every claim: the queue's own verb reports it (CORRUPT)
      position = again;
    }
  }

  protected dropViews(): void {
    this.data = CLOSED_U8;
    this.#data32 = CLOSED_I32;
  }
}
