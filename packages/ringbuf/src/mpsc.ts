/**
 * MpscRing: many producers, one consumer, variable-length records whose
 * header publishes them (layout version 2 records; mpsc-layout.ts and
 * docs/LAYOUT.md, "MpscRing (KIND 4)").
 *
 * Threading contract:
 *  - Any number of objects (threads, processes) call the producer verbs at
 *    once: tryWrite, claim, commit, abort, writeSync, write, writable().
 *    One object is one producer: a claim is open per object.
 *  - At most one live object (in any process) calls the consumer verbs:
 *    tryRead, drain, readSync, read, the iterator, readable(). A second one
 *    gets ERR_SHMRING_BUSY (the CONSUMER role lock is exclusive; the
 *    PRODUCER lock is shared). A next consumer goes on from the head the
 *    last one released, read when it takes the role, not when it attached.
 *  - A producer's close() ends its own participation (as detach()); the
 *    consumer's close() closes the ring for everyone: producers then get
 *    ERR_SHMRING_CLOSED.
 *  - `size` is a snapshot.
 *  - From a drain() handler, this object's reads are ERR_SHMRING_BUSY: drain()
 *    zeroes and releases the record in hand only once the handler returns.
 *    close() or detach() there ends the object at once, but drain() gives
 *    up the consumer role only after that release, before it returns.
 *
 * Invariants (positions are u32 byte counts that wrap modulo 2^32):
 *  - 0 <= tail - head <= capacity, tail = PRODUCER_POSITION (bytes ever
 *    claimed), head = CONSUMER_POSITION (bytes ever consumed); both are
 *    multiples of 8.
 *  - Space is owned by whoever won the CAS that moved the tail over it:
 *    one claim covers the claimer's record, plus the padding before the
 *    wrap when the record would straddle the end (a record never does).
 *  - Every LENGTH word of the free space [tail, head + capacity) reads 0
 *    (the whole free space is zero, in fact): the consumer zeroes every
 *    record it consumes before its release store of the head, and the data
 *    area starts zeroed. So a LENGTH of 0 at the head means "not claimed, or
 *    claimed and its header not yet written".
 *  - A record's TYPE and payload are written before the store of its
 *    positive LENGTH (the commit: a store, or a CAS from the negative
 *    claim), and read after the consumer observes that LENGTH. Only the
 *    consumer writes a committed record (to zero it), and releases its room right after:
 *    zeroed and not released, a record would read as a claim whose header
 *    is not written yet to a next consumer (this one killed meanwhile).
 *  - Padding at the head is taken (zeroed and released) by every look for
 *    a record, the waits' too: a producer waiting for its room never waits
 *    on a consumer that waits for a message.
 *  - The consumer reads records in tail-claim order, so FIFO holds per
 *    producer; between producers the order is that of their claims.
 *  - A claimed record stuck at the head for peerTimeoutMs whose claimer is
 *    gone is taken back by the consumer with a CAS of LENGTH from -length
 *    to 0. Gone: no process holds the PRODUCER lock, or, while every side
 *    registered from the ring's PID namespace (FLAG_PID_NS_MIXED clear),
 *    its thread id (its mark in TYPE while claimed, negated so that no
 *    message type reads as one; the pid of its process for a main
 *    thread) is certainly no live thread (liveness.threadGone: any
 *    doubt is "alive"). So a live claimer is never judged gone, and may
 *    commit with a plain store; one that commits with a CAS would see it
 *    fail if it were. A record whose header was never written
 *    (LENGTH 0, tail beyond it) is skipped only when no process holds the
 *    PRODUCER lock: then no claimer can write any more, and its extent is
 *    the zero words up to the next non-zero header.
 *  - Producers keep a cached head and re-read CONSUMER_POSITION only when
 *    the cache says full; the consumer keeps a cached tail for bounds
 *    checks only (it polls LENGTH, not the tail), and takes a record a
 *    little past it on trust until its next load of the tail, which checks
 *    that the head is not past the tail (TRUST_RECORDS).
 *  - A commit is followed by a full fence before the load of READ_WAITERS
 *    (the CAS, or the locked add on FENCE), except a light producer's
 *    (membarrier registered, FLAG_LIGHT_COMMITS set before its first
 *    commit without a fence): then a consumer that parks fences for it,
 *    with membarrier between its announcement and its re-check
 *    (MPSC_READ_BLOCK).
 *  - Anything read from shared memory is read once and bounds-checked; a
 *    value no correct peer writes is ERR_SHMRING_CORRUPT.
 */
import { ErrorCodes, membarrier, ShmringError, ShmringRangeError, ShmringTypeError, type Region } from '@shmring/core';
import * as L from './layout.js';
import * as M from './mpsc-layout.js';
import {
  attachTo,
  checkCapacity,
  checkOffset,
  checkOptionsObject,
  checkStablePositions,
  countHeadWindow,
  readHeader,
  takeHeadEpoch,
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
  type WaitOptions,
} from './queue.js';
import type { AttachOptions, DrainHandler } from './spsc.js';
import { OpenClaim } from './claim.js';
import { copyOut } from './copy.js';
import { ownThread, pidNamespace, threadGone } from './liveness.js';
import { layOut, type Role, Roles } from './roles.js';
import { checkPeerTimeout, unpark, type WaitBlock } from './waiting.js';

export interface MpscOptions {
  /** Bytes of the data area: a power of two in [64, 2^30]. */
  capacity: number;
  /** Where the ring starts in its region: a multiple of 64; default 0. */
  offset?: number;
  /** Consumer: how long a claimed record may block the head before a dead claimer's record is skipped (ms); default 1000. */
  peerTimeoutMs?: number;
}

/** The options of create, of regionSize (only capacity: offset and peerTimeoutMs would change nothing), and of attach. */
const CREATE_OPTION_NAMES: readonly string[] = ['capacity', 'offset', 'peerTimeoutMs'];
const SIZE_OPTION_NAMES: readonly string[] = ['capacity'];
const ATTACH_OPTION_NAMES: readonly string[] = ['offset', 'peerTimeoutMs'];

export interface MpscAttachOptions extends AttachOptions {
  /** As MpscOptions.peerTimeoutMs. */
  peerTimeoutMs?: number;
}

/** Records (and paddings) up to this many bytes are zeroed by word stores, larger ones by fill() (#zero). */
const ZERO_BY_WORDS = 256;

/** #data64 of a closed ring. */
const CLOSED_F64 = new Float64Array(0);

/**
 * Zeroes `size` bytes at `index` of the data area (`data`, and `data64`
 * over the same bytes; both multiples of 8: records and paddings are
 * 8-aligned). Up to ZERO_BY_WORDS bytes, one float64 store of +0 (all bits
 * clear) per word: TypedArray fill() is a call costing 17 ns for a 72-byte
 * record of a region and 38 ns over a SharedArrayBuffer (which it fills
 * byte by byte), where the stores take 6 ns; beyond it fill() is faster in
 * a region (a memset).
 */
function zero(data: Uint8Array, data64: Float64Array, index: number, size: number): void {
  if (size > ZERO_BY_WORDS) {
    data.fill(0, index, index + size);
    return;
  }
  const end = (index + size) >> 3;
  for (let i = index >> 3; i < end; i++) data64[i] = 0;
}

/** One consumer: a commit wakes at most one parked reader. */
const WAKE_ONE = 1;
/** Room freed may let any of the parked producers through (their records differ in size): wake them all. */
const WAKE_ALL = 0x7fffffff;
/**
 * The claimer's mark in TYPE while a record is claimed: this thread's id
 * (its tid; the pid for the main thread, and Linux's tids share the pid
 * number space, so /proc/<tid> answers for a thread as /proc/<pid> does
 * for a process), negated (M.claimMark), so no message type reads as one.
 * A worker thread terminated with a claim open is then a dead claimer
 * although its process lives on. Module state is per thread.
 */
const MARK = M.claimMark(ownThread().id);
/**
 * Whether the claim mark's LENGTH store (#reserve), and drain's release of
 * each record but the batch's last, may be plain stores: only where the
 * hardware keeps stores in order (x86-64's TSO). Elsewhere
 * (arm64, through koffi or a SharedArrayBuffer) a consumer could see the
 * mark before the pid in TYPE and, with peerTimeoutMs 0, take a live
 * producer's record back.
 */
const PLAIN_MARK = process.arch === 'x64';
/** A polling consumer's empty looks per look for a claim whose claimer died before its mark (#next). */
const EMPTY_LOOKS_PER_CLAIM_CHECK = 64;

/**
 * The word a plain commit (#publish) fences with: a locked instruction on a
 * line of this thread's own. On x86-64 any locked instruction is a full
 * barrier, so the commit store is visible before unpark's load of
 * READ_WAITERS (the consumer announces itself, then looks at LENGTH: each
 * side's store must precede its load), without the locked instruction
 * on the record's line that a commit CAS is: that line is the one a
 * caught-up consumer polls, and a CAS there waited for it (one producer to
 * a caught-up consumer, benches/src/mpsc.ts: 6.4 M messages/s with the CAS,
 * 9.3 M with the store and this fence, MpmcQueue 8.5 M beside them).
 */
const FENCE = new Int32Array(new SharedArrayBuffer(2 * L.CACHE_LINE), L.CACHE_LINE, 1);

/**
 * The READ wait block of an MpscRing: a consumer about to park asks, after
 * its announcement in READ_WAITERS, whether a producer commits without a
 * fence (FLAG_LIGHT_COMMITS), and if so makes every registered producer's
 * thread fence (membarrier.heavy()) before its re-check: a commit still in
 * a producer's store buffer is then visible to the re-check, or that
 * producer's load of READ_WAITERS comes after the fence and sees the
 * announcement. Where membarrier is refused here, the sleep is cut to
 * LIGHT_NAP_MS, so a wake-up missed costs that at most (waiting.ts fenceIfAsked).
 */
const MPSC_READ_BLOCK: WaitBlock = {
  ...READ_BLOCK,
  asksHeavyFence(ctl: Int32Array): boolean {
    // Observes FLAG_LIGHT_COMMITS after our announcement (seq_cst add before it): a producer that sets it later
    // (its seq_cst OR, before its first light commit) then loads READ_WAITERS after that OR, and sees us.
    return (Atomics.load(ctl, L.FLAGS_I32) & M.FLAG_LIGHT_COMMITS) !== 0;
  },
};

/**
 * The consumer checks that a record lies within the claimed space (below the
 * tail) against the tail it loaded last, and loads the tail again only for a
 * record past it. A consumer that keeps up with its producers finds each
 * record past it; loading the tail for each would take the tail's line from
 * the producers once per record, and their next claim CAS waits for it
 * (even once per 64 records cost a fifth of the rate of one producer to a
 * caught-up consumer: benches/src/mpsc.ts, 6.7–7.1 M messages/s against
 * 8.8–8.9 M never loading it). So a record that ends at most TRUST_BYTES
 * (and an eighth of the ring) past the loaded tail is taken on trust, up to
 * TRUST_RECORDS of them in a row, and the next load of the tail (a record
 * past these bounds, a parked reader's peer check) checks them all at once:
 * the head is not past the tail. A record a corrupt peer made longer than
 * its claim is thus reported late (ERR_SHMRING_CORRUPT), if the head is
 * still past the tail then; if producers have claimed past it meanwhile, it
 * goes unnoticed, as a longer LENGTH within the claimed space always did
 * (the consumer zeroed and gave back room that was not its own: what a
 * corrupt peer's write can do anywhere in the ring).
 */
const TRUST_RECORDS = 4096;
const TRUST_BYTES = 1 << 20;

function corrupt(what: string, where?: string): ShmringError {
  return new ShmringError(
    ErrorCodes.CORRUPT,
    `MpscRing: ${what}${where === undefined ? '' : ` in ${where}`}; the ring's memory was overwritten by something that is not a correct peer: ` +
      'stop the processes that use it, and create the ring again',
  );
}

/**
 * The tail at most `capacity` ahead of the head, both multiples of 8: a pair
 * that held at one instant (checkStablePositions reads one on a live ring;
 * #takeConsumer loads the tail after the head, which only it moves then).
 * `where` names the ring in the error.
 */
export function checkPositions(tail: number, head: number, capacity: number, where?: string): void {
  if ((tail - head) >>> 0 > capacity || ((tail | head) & 7) !== 0) {
    throw corrupt(`positions producer=${tail >>> 0} consumer=${head >>> 0} are inconsistent${where === undefined ? '' : ` in ${where}`}`);
  }
}

export class MpscRing extends Queue {
  /** Bytes of the data area. */
  readonly capacity: number;
  /** Largest message payload, in bytes (capacity / 2 - 8). */
  readonly maxMessageLength: number;
  /** The data area. claim() and drain() give offsets into it. */
  data: Uint8Array;
  #data32: Int32Array;
  /** The data area as float64 words, for zeroing small records (#zero). */
  #data64: Float64Array;
  /** This object made the ring (MpscRing.create): its close() ends the ring even if it never read (close()). */
  readonly #created: boolean;
  readonly #mask: number;
  #peerTimeoutMs: number;
  /** Stuck records this object (as consumer) skipped: their claimers died between claim and commit. */
  unblockedRecords = 0;

  /**
   * Consumer: how long (ms) a claimed record may block the head before a
   * dead claimer's record is skipped (tryRead, drain; a waiting read's own
   * option overrides it). Set to a number >= 0 (or Infinity; undefined:
   * the default); anything else is ERR_SHMRING_INVALID_ARGUMENT.
   */
  get peerTimeoutMs(): number {
    return this.#peerTimeoutMs;
  }

  set peerTimeoutMs(ms: number) {
    this.#peerTimeoutMs = checkPeerTimeout(ms, 'MpscRing.peerTimeoutMs');
  }

  // Producer side: the head as last seen, HEAD_EPOCH as loaded before it (-1: none yet), and the open claim.
  #cachedHead = 0;
  #cachedEpoch = -1;
  override readonly readBlock: WaitBlock = MPSC_READ_BLOCK;
  readonly #claim = new OpenClaim('MpscRing');
  #claimIndex = 0;
  #claimLength = 0;
  /**
   * Whether the open claim commits with a store (x86-64, every side in one
   * PID namespace when it was claimed) rather than a CAS (#publish).
   */
  #plainCommit = false;
  /**
   * Whether this producer may leave out a plain commit's fence (FENCE):
   * x86-64, and this process is registered for membarrier's expedited
   * global fence (decided when it registers as a producer).
   */
  #mayGoLight = false;
  /**
   * Whether a plain commit leaves out its fence: #mayGoLight, and this
   * producer set FLAG_LIGHT_COMMITS (at its first plain commit's claim), so
   * a parking consumer fences for it (MPSC_READ_BLOCK).
   */
  #light = false;
  /**
   * Whether this object's commits may be plain stores while every side is
   * in one PID namespace: x86-64 (PLAIN_MARK), and "no producer is left"
   * comes from the kernel (the PRODUCER lock of a region's file) or the
   * ring's sides are threads of one process (a SharedArrayBuffer), so the
   * consumer judges a live producer gone only on a thread id, which the
   * flag and threadGone guard. A System V segment has neither (its pid
   * words and attach count can be misread): its producers commit with the CAS.
   */
  readonly #mayCommitPlainly: boolean;

  // Consumer side: own head (only the consumer writes it), the head it stored last, the tail as last seen (bounds checks).
  #head: number;
  #storedHead = 0;
  #cachedTail: number;
  /** The stuck record being timed: its position, the LENGTH seen there, and since when (performance.now()). */
  #stuckAt = -1;
  #stuckLength = 0;
  #stuckSince = 0;
  /** TYPE of the record at #stuckAt when it was first seen stuck: its claimer's mark, unless a commit had begun. */
  #stuckMark = 0;
  /** peerTimeoutMs of the waiting read in progress (undefined: this.peerTimeoutMs), boxed: the read that set it is the one whose box it is. */
  #waitPeerTimeout: { ms: number } | undefined;
  /** readSync's box for #waitPeerTimeout, reused (a Sync read allocates nothing). */
  readonly #syncTimeout = { ms: 0 };

  private constructor(
    buffer: ArrayBuffer | SharedArrayBuffer,
    base: number,
    capacity: number,
    peerTimeoutMs: number,
    roles: Roles | undefined,
    site: RingSite,
    created: boolean,
  ) {
    super(new Int32Array(buffer, base, L.CONTROL_I32_LENGTH), 'MpscRing', roles, site);
    this.#created = created;
    this.capacity = capacity;
    this.maxMessageLength = M.mpscMaxMessage(capacity);
    this.#peerTimeoutMs = peerTimeoutMs;
    this.#mask = capacity - 1;
    this.#trustBytes = Math.min(TRUST_BYTES, capacity / 8);
    this.#mayCommitPlainly = PLAIN_MARK && (roles !== undefined || buffer instanceof SharedArrayBuffer);
    this.data = new Uint8Array(buffer, base + L.DATA_OFFSET, capacity);
    this.#data32 = new Int32Array(buffer, base + L.DATA_OFFSET, capacity / 4);
    this.#data64 = new Float64Array(buffer, base + L.DATA_OFFSET, capacity / 8);
    // Both positions, as a pair that held at one instant (producers and a consumer may be moving them), to
    // check the ring; the head is looked at again when this object takes the consumer role (#takeConsumer):
    // another consumer may read until then.
    const [tail, head] = checkStablePositions(this.ctl, capacity, checkPositions, this.where);
    this.#head = head;
    this.#cachedTail = tail;
    this.#cachedHead = head;
  }

  /**
   * Bytes an MpscRing of `capacity` data bytes takes: what a region needs
   * for one at offset 0; one at `offset` needs offset + regionSize(). So
   * `offset` is refused here (ERR_SHMRING_INVALID_ARGUMENT), not ignored.
   */
  static regionSize(options: Omit<MpscOptions, 'offset' | 'peerTimeoutMs'>): number {
    checkOptionsObject(options, 'MpscRing.regionSize', SIZE_OPTION_NAMES);
    return M.mpscRingSize(checkCapacity(options?.capacity, M.MPSC_MIN_CAPACITY, L.MAX_CAPACITY, 'MpscRing.regionSize'));
  }

  /**
   * Creates an empty ring at the start of `region` (or at `offset`), overwriting what is there, unless an
   * object is attached to a ring there: ERR_SHMRING_BUSY (in a region that takes locks: POSIX, file, memfd).
   */
  static create(region: Region, options: MpscOptions): MpscRing {
    checkOptionsObject(options, 'MpscRing.create', CREATE_OPTION_NAMES);
    const capacity = checkCapacity(options?.capacity, M.MPSC_MIN_CAPACITY, L.MAX_CAPACITY, 'MpscRing.create');
    const base = checkOffset(options.offset, 'MpscRing.create');
    const peerTimeoutMs = checkPeerTimeout(options.peerTimeoutMs, 'MpscRing.create');
    const ringSize = M.mpscRingSize(capacity);
    const buffer = ringMemory(region, base, ringSize, 'MpscRing.create');
    // Before MAGIC (the ring is never seen unheld, stale, once it exists); exclusive while nobody else holds it.
    const roles = Roles.holdToCreate(region, buffer, base, 'MpscRing.create', ringWhere(region, base));
    layOut(roles, () => {
      const ctl = unpublish(buffer, base);
      // Free space reads LENGTH 0 (the invariant above); writeHeader's store of MAGIC publishes the zeroes.
      new Uint8Array(buffer, base + L.DATA_OFFSET, capacity).fill(0);
      writeHeader(ctl, { kind: M.KIND_MPSC, capacity, slotSize: 0, slotStride: 0, ringSize, pidNamespace: pidNamespace() });
    });
    return new MpscRing(buffer, base, capacity, peerTimeoutMs, roles, ringSite(region, base, roles), true);
  }

  /** Attaches to a ring another process or thread created in `region` (at `offset`). */
  static attach(region: Region, options: MpscAttachOptions = {}): MpscRing {
    checkOptionsObject(options, 'MpscRing.attach', ATTACH_OPTION_NAMES);
    const base = checkOffset(options?.offset, 'MpscRing.attach');
    const peerTimeoutMs = checkPeerTimeout(options?.peerTimeoutMs, 'MpscRing.attach');
    const buffer = ringMemory(region, base, 0, 'MpscRing.attach');
    return attachTo(region, buffer, base, 'MpscRing.attach', (roles) => {
      const { capacity } = readHeader(buffer, M.KIND_MPSC, base, undefined, region);
      return new MpscRing(buffer, base, capacity, peerTimeoutMs, roles, ringSite(region, base, roles), false);
    });
  }

  /** Bytes claimed (committed or not) and not yet consumed (a snapshot). */
  get size(): number {
    const ctl = this.ctl;
    if (ctl.length === 0) return 0;
    // Both loads observe the latest claim and release; the difference may be stale at once.
    return Math.min((Atomics.load(ctl, L.PRODUCER_POSITION_I32) - Atomics.load(ctl, L.CONSUMER_POSITION_I32)) >>> 0, this.capacity);
  }

  // ---- producer ----

  /**
   * A producer's close() ends only its own participation; the consumer's
   * closes the ring. An object that never wrote nor read closes the ring if
   * it created it (MpscRing.create), and otherwise only lets go: a producer
   * that had nothing to send must not end the ring for the others.
   */
  override close(): void {
    const producerOnly = this.isProducer && !this.isConsumer;
    // A consumer role a wait took only to take padding or a dead claim (#becomeConsumer) is no reading.
    const attachedUnused = !this.isProducer && (!this.isConsumer || this.#lookedOnly) && !this.#created;
    if (producerOnly || attachedUnused) this.detach();
    else {
      this.#giveUpClaim();
      super.close();
    }
  }

  /**
   * Space claimed that the consumer has not taken yet (Queue.claimsPending):
   * after the closed flag, which a close() by the creator sets too, a read
   * that finds nothing at the head waits for it, as an MpmcQueue's does: a
   * producer that claimed before the close still commits (then the records
   * committed behind its claim are read too), and a dead one's claim is
   * taken back by the consumer's peer check. One whose claimer died before
   * marking it (headerless) is skipped only once no producer is left.
   */
  protected override claimsPending(): boolean {
    const ctl = this.ctl;
    // Observes the latest claim and the consumer's last release (#release): equal when nothing is claimed unread.
    const tail = Atomics.load(ctl, L.PRODUCER_POSITION_I32);
    const head = Atomics.load(ctl, L.CONSUMER_POSITION_I32);
    // Positions no producer leaves would keep a read waiting for ever: ERR_SHMRING_CORRUPT instead.
    checkPositions(tail, head, this.capacity, this.where);
    return tail !== head;
  }

  /** Lets go of the ring (Queue.detach); a claim still open is aborted first. */
  override detach(): void {
    this.#giveUpClaim();
    super.detach();
  }

  /**
   * Aborts this object's open claim, if any: left claimed, its record would
   * hold the consumer (and every record behind it) until this process exits,
   * since the claim mark names a process that is still alive.
   */
  #giveUpClaim(): void {
    if (this.#claim.offset < 0 || this.ctl.length === 0) return;
    try {
      this.abort(this.#claim.offset);
    } catch {
      // The consumer took the record back already (it judged this producer gone): nothing is left to give
      // up, and the close goes on.
    }
  }

  protected override registerProducer(): void {
    super.registerProducer(false); // shared: any number of producers; the pid words name the last one
    this.#noteNamespace(); // before this producer's first claim mark
    this.#mayGoLight = PLAIN_MARK && membarrier.register();
  }

  /**
   * Sets FLAG_PID_NS_MIXED unless this process is in the ring's PID
   * namespace (PID_NS; both known). A side registers before its first claim
   * mark (a producer) or its first look at a claimer (the consumer), so a
   * consumer that observes a mark of a claimer from another namespace
   * observes the flag too, and judges that claimer by the PRODUCER lock
   * alone (#claimerGone): a thread id means nothing in another namespace.
   */
  #noteNamespace(): void {
    if (this.#inRingNamespace()) return;
    // Publishes "sides in more than one namespace" before this side's claims or take-backs.
    Atomics.or(this.ctl, L.FLAGS_I32, M.FLAG_PID_NS_MIXED);
  }

  /** Whether this process is in the ring's PID namespace (PID_NS), both known. */
  #inRingNamespace(): boolean {
    const own = pidNamespace();
    // PID_NS is written before MAGIC and never again (read once attached).
    return own !== 0 && own === this.ctl[M.MPSC_PID_NS_I32]! >>> 0;
  }

  /** The producers' role is shared; the consumer's is not. */
  protected override sharedRole(role: Role): boolean {
    return role === 'producer';
  }

  /**
   * Claims a record of `length` payload bytes: CAS of the tail over it (and
   * over the padding before the wrap if it would straddle the end), then its
   * header reads "claimed". Returns the Int32 index of its header, or -1 if
   * the ring is full.
   */
  #reserve(length: number, verb: 'claim' | 'tryWrite'): number {
    const ctl = this.ctl;
    if (ctl.length === 0) throw this.closedError();
    this.#claim.checkWrite(length, this.maxMessageLength, verb);
    // Observes a close() by the consumer or the creator (producers stop at once), and whether every side shares
    // a namespace.
    let flags = Atomics.load(ctl, L.FLAGS_I32);
    if ((flags & L.FLAG_CLOSED) !== 0) throw this.#closedForWriters();
    if (!this.isProducer) {
      this.registerProducer();
      flags = Atomics.load(ctl, L.FLAGS_I32); // again: registering may have set FLAG_PID_NS_MIXED
    }
    this.#plainCommit = this.#mayCommitPlainly && (flags & M.FLAG_PID_NS_MIXED) === 0;
    if (!this.#light && this.#plainCommit && this.#mayGoLight) {
      // Publishes "commits without a fence" before this producer's first such commit: a consumer that announces
      // itself and then misses it has announced before this OR, so our loads of READ_WAITERS after it see that.
      // Only a producer that commits plainly sets it (one whose commits are CASes never needs the consumer's fence).
      Atomics.or(ctl, L.FLAGS_I32, M.FLAG_LIGHT_COMMITS);
      this.#light = true;
    }
    const capacity = this.capacity;
    const recordLength = M.mpscLength(length);
    const size = M.recordBytes(recordLength);
    let tail: number;
    let index: number;
    let toEnd: number;
    for (;;) {
      // Observes the latest claim of any producer; a stale value only fails the CAS below.
      tail = Atomics.load(ctl, L.PRODUCER_POSITION_I32);
      index = tail & this.#mask;
      toEnd = capacity - index;
      const needed = size <= toEnd ? size : toEnd + size;
      // Observes the consumer's count of head windows, after the tail: the same count as before our cached head
      // was read means that head is less than 2^31 behind, so `tail - cachedHead` below does not wrap to a small
      // number (layout.ts, HEAD_EPOCH). In the tail's line, just loaded, which the consumer writes once per GiB.
      const epoch = Atomics.load(ctl, L.HEAD_EPOCH_I32);
      if (epoch !== this.#cachedEpoch || capacity - ((tail - this.#cachedHead) >>> 0) < needed) {
        // Observes the consumer's release (zeroed space before it); only when the cached head says full or is old.
        const head = Atomics.load(ctl, L.CONSUMER_POSITION_I32);
        if ((head & 7) !== 0) throw corrupt(`consumer position ${head >>> 0} is not a multiple of 8`, this.where);
        const used = (tail - head) >>> 0;
        if (used > capacity) {
          // Our tail is older than the head we just read (others claimed, the consumer consumed): retry.
          // Observes the latest claim again: if nobody claimed since our load, our tail was current when
          // the head was read, so no correct consumer wrote that head (and retrying would spin forever).
          if (Atomics.load(ctl, L.PRODUCER_POSITION_I32) === tail) {
            throw corrupt(`consumer position ${head >>> 0} is outside the ring (producer ${tail >>> 0})`, this.where);
          }
          continue;
        }
        this.#cachedHead = head;
        this.#cachedEpoch = epoch; // loaded before the head
        if (capacity - used < needed) return -1;
      }
      // Claims [tail, tail + needed): only the winner writes there until it commits.
      if (Atomics.compareExchange(ctl, L.PRODUCER_POSITION_I32, tail, (tail + needed) | 0) === tail) break;
    }
    const data32 = this.#data32;
    let at = index >> 2;
    if (size > toEnd) {
      // The record goes to 0: mark it claimed first (so a death from here on leaves a header with our id).
      data32[M.MPSC_TYPE_I32] = MARK;
      // Publishes "claimed by MARK" (TYPE before) to the consumer's stuck-record check.
      Atomics.store(data32, M.MPSC_LENGTH_I32, -recordLength);
      data32[at + M.MPSC_TYPE_I32] = L.PADDING_TYPE;
      // Commits the padding before the wrap (its TYPE written before); the consumer skips it.
      Atomics.store(data32, at + M.MPSC_LENGTH_I32, toEnd);
      at = 0;
    } else {
      data32[at + M.MPSC_TYPE_I32] = MARK;
      // Publishes "claimed by MARK" to the consumer's stuck-record check: on x86-64 a plain store, ordered
      // after TYPE's by TSO (LAYOUT.md asks for a release; JavaScript's only one is seq_cst, a locked
      // instruction that stalls on the line a caught-up consumer is polling: benches/src/mpsc.ts, one
      // producer). Until the consumer sees it, LENGTH reads 0, "header not yet written", nothing to read
      // either; the commit below (a store after it, TSO; or a CAS) orders it before everything after it.
      if (PLAIN_MARK) data32[at + M.MPSC_LENGTH_I32] = -recordLength;
      else Atomics.store(data32, at + M.MPSC_LENGTH_I32, -recordLength);
    }
    this.#claimIndex = at;
    this.#claimLength = recordLength;
    // Observes a close() that came after the check above (between it and our CAS): a consumer that saw the flag
    // and then no claim pending (its load of PRODUCER_POSITION before our CAS) has ended, so this claim must not
    // be committed. Seq_cst, as the consumer's loads: either it sees our claim and waits for it, or we see the
    // flag here. Aborted (published as padding, which a consumer waiting for it takes), then refused.
    if ((Atomics.load(ctl, L.FLAGS_I32) & L.FLAG_CLOSED) !== 0) {
      try {
        this.#publish(L.PADDING_TYPE);
      } catch {
        // Taken back already (a CAS commit that found it gone): nothing of ours is left there either way.
      }
      throw this.#closedForWriters();
    }
    return at;
  }

  #closedForWriters(): ShmringError {
    return new ShmringError(
      ErrorCodes.CLOSED,
      `MpscRing: ${this.where} was closed (by its consumer, or by its creator); nothing more can be written`,
    );
  }

  /**
   * Commits the claimed record with `type` (PADDING_TYPE: abort), its LENGTH
   * `length` (at most the claimed one: commit() with a shorter payload).
   */
  #publish(type: number, length = this.#claimLength): void {
    const at = this.#claimIndex;
    const data32 = this.#data32;
    const rest = M.recordBytes(this.#claimLength) - M.recordBytes(length);
    if (rest > 0) {
      // A shorter record: the claimed bytes after it become a padding record, which the consumer skips (and
      // zeroes). Its header is written before the commit below, which publishes it with the record.
      const pad = at + M.recordBytes(length) / 4;
      data32[pad + M.MPSC_TYPE_I32] = L.PADDING_TYPE;
      data32[pad + M.MPSC_LENGTH_I32] = rest;
    }
    data32[at + M.MPSC_TYPE_I32] = type;
    if (this.#plainCommit) {
      // Commits: publishes TYPE and payload (written before) to the consumer, which loads LENGTH first; a
      // plain store, ordered after them by TSO (PLAIN_MARK). No consumer takes this claim back while this
      // thread lives: every side was in this process's namespace when it claimed (a consumer from another
      // one sets the flag and goes by the PRODUCER lock, which this process holds). The locked add on
      // FENCE then orders the store before unpark's load of READ_WAITERS below; a light producer leaves it to
      // a parking consumer's membarrier (MPSC_READ_BLOCK).
      data32[at + M.MPSC_LENGTH_I32] = length;
      if (!this.#light) Atomics.add(FENCE, 0, 1); // (a light producer's flag was set at its claim, #reserve)
    } else if (Atomics.compareExchange(data32, at + M.MPSC_LENGTH_I32, -this.#claimLength, length) !== -this.#claimLength) {
      // Commits with a CAS: a consumer that took the record back from us (it believed us dead) made it 0.
      throw new ShmringError(
        ErrorCodes.TIMEOUT,
        `MpscRing: this record was skipped by the consumer before its commit (it took more than the consumer's peerTimeoutMs and its producer looked dead); write it again`,
      );
    }
    unpark(this.ctl, READ_BLOCK, WAKE_ONE);
  }

  /**
   * Copies `bytes` into the ring as one message. Returns false if the ring
   * is full (nothing written). ERR_SHMRING_CLOSED once the consumer closed it.
   */
  tryWrite(bytes: Uint8Array, type = 0): boolean {
    checkType(type, 'MpscRing.tryWrite');
    if (!(bytes instanceof Uint8Array)) {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, 'MpscRing.tryWrite needs a Uint8Array (or Buffer)');
    }
    const at = this.#reserve(bytes.length, 'tryWrite');
    if (at < 0) return false;
    this.data.set(bytes, at * 4 + M.MPSC_RECORD_HEADER);
    this.#publish(type);
    return true;
  }

  /**
   * Zero-copy write, step 1: claims `length` bytes and returns the offset in
   * `data` where the payload goes, or -1 if the ring is full. Fill
   * `data[offset .. offset + length)`, then commit(offset, type) or abort(offset).
   * Other producers go on meanwhile; the consumer waits at this record.
   */
  claim(length: number): number {
    this.#claim.checkLength(length);
    const at = this.#reserve(length, 'claim');
    if (at < 0) return -1;
    this.#claim.offset = at * 4 + M.MPSC_RECORD_HEADER;
    return this.#claim.offset;
  }

  #checkClaim(offset: number, verb: string): void {
    if (this.ctl.length === 0) throw this.closedError();
    this.#claim.close(offset, verb);
  }

  /**
   * Zero-copy write, step 2: publishes the claimed record; with `length`, a
   * shorter message (the first `length` bytes written; the rest of the claim
   * becomes padding, which the consumer skips).
   */
  commit(offset: number, type = 0, length?: number): void {
    checkType(type, 'MpscRing.commit');
    // The length is checked only against an open claim (another offset is #checkClaim's error), before it closes.
    if (length !== undefined && offset === this.#claim.offset) this.#checkCommitLength(length);
    this.#checkClaim(offset, 'commit');
    this.#publish(type, length === undefined ? this.#claimLength : M.mpscLength(length));
  }

  #checkCommitLength(length: number): void {
    if (!Number.isInteger(length)) {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `MpscRing.commit: length=${String(length)} must be an integer`);
    }
    const claimed = this.#claimLength - M.MPSC_RECORD_HEADER;
    if (length < 0 || length > claimed) {
      throw new ShmringRangeError(
        ErrorCodes.INVALID_ARGUMENT,
        `MpscRing.commit: length=${length} must be between 0 and the claimed length ${claimed}`,
      );
    }
  }

  /** Gives the claimed record up: it becomes padding, which the consumer skips. */
  abort(offset: number): void {
    this.#checkClaim(offset, 'abort');
    this.#publish(L.PADDING_TYPE);
  }

  // ---- consumer ----

  protected override registerConsumer(): void {
    super.registerConsumer(true); // exclusive: a second live consumer is ERR_SHMRING_BUSY
    this.#noteNamespace(); // before this consumer's first look at a claimer
  }

  /**
   * Int32 index of the header of the next message at the head, skipping
   * (consuming) padding, or -1 if none is committed yet. Leaves its payload
   * length, type and end position in #nextLength, #nextType, #nextEnd (each
   * word read once and checked). Padding consumed moves #head privately;
   * the caller releases it.
   */
  #next(): number {
    const data32 = this.#data32;
    for (;;) {
      const head = this.#head;
      const at = (head & this.#mask) >> 2;
      // Observes the claimer's commit: TYPE and payload are read after it.
      const length = Atomics.load(data32, at + M.MPSC_LENGTH_I32);
      if (length <= 0) {
        if (length < 0 && this.#stuck(head, length, at) && this.#takeBack(at, length)) continue;
        // LENGTH 0: nothing claimed yet, or a claim whose claimer died before its mark (the tail is past the
        // head). Asked on every EMPTY_LOOKS_PER_CLAIM_CHECK-th empty look (a load of the producers' tail line):
        // such a claim, stuck for the timeout with no producer left, is skipped, as a parked read's check does.
        if (length === 0 && ++this.#emptyLooks % EMPTY_LOOKS_PER_CLAIM_CHECK === 0 && this.#headerlessStuck(head, at)) {
          if (this.#skipHeaderless()) continue;
        }
        return -1;
      }
      this.#stuckAt = -1;
      const type = data32[at + M.MPSC_TYPE_I32]!;
      const size = M.recordBytes(length);
      const index = at << 2;
      // length, not size, against the end: recordBytes of a LENGTH near 2^31 wraps negative in int32 arithmetic.
      if (
        length < M.MPSC_RECORD_HEADER ||
        length > this.capacity - index ||
        !this.#within(head, size, true) ||
        (type !== L.PADDING_TYPE && (type < 0 || length - M.MPSC_RECORD_HEADER > this.maxMessageLength))
      ) {
        throw corrupt(`record at ${index} claims length ${length} and type ${type}`, this.where);
      }
      if (type === L.PADDING_TYPE) {
        zero(this.data, this.#data64, index, size);
        this.#head = (head + size) | 0;
        // Each zeroed padding's room is released at once (LAYOUT.md, MUST): zeroed and not released, it would read
        // as a claim whose header is not written yet to a next consumer, this one killed before its next store.
        this.#storeHead(this.ctl, this.#head);
        continue;
      }
      this.#nextLength = length - M.MPSC_RECORD_HEADER;
      this.#nextType = type;
      this.#nextEnd = (head + size) | 0;
      return at;
    }
  }

  // What #next found besides the index (scratch fields: several results without allocating).
  #nextLength = 0;
  #nextType = 0;
  #nextEnd = 0;

  /**
   * Whether `size` bytes from `head` lie within the claimed space, re-reading
   * the tail only when the cached one says no; with `trust` (a record to
   * read, not one to take back), a record past it by little is taken on
   * trust instead (TRUST_RECORDS): the next load of the tail checks it.
   */
  #within(head: number, size: number, trust = false): boolean {
    const claimed = (this.#cachedTail - head) >>> 0;
    if (claimed <= this.capacity && size <= claimed) return true;
    if (trust && this.#trusted < TRUST_RECORDS && (head + size - this.#cachedTail) >>> 0 <= this.#trustBytes) {
      this.#trusted++;
      return true;
    }
    return size <= this.#loadTail(head);
  }

  /** Records taken on trust since the tail was last loaded (#within). */
  #trusted = 0;

  /** How far past the loaded tail a record may end and be taken on trust: TRUST_BYTES, at most an eighth of the ring. */
  readonly #trustBytes: number;

  /**
   * Loads the tail; returns how far it is ahead of `head` (the consumer's
   * head, or one it looks from). ERR_SHMRING_CORRUPT if more than a lap:
   * among other things, if a record taken on trust led the head past it.
   */
  #loadTail(head: number): number {
    // Observes the latest claim (bounds only: what a record may span).
    const tail = Atomics.load(this.ctl, L.PRODUCER_POSITION_I32);
    const claimed = (tail - head) >>> 0;
    if (claimed > this.capacity || (tail & 7) !== 0) {
      throw corrupt(
        this.#trusted === 0
          ? `producer position ${tail >>> 0} is outside the ring`
          : `the consumer position ${head >>> 0} is past the producer position ${tail >>> 0}: a record read since claimed more than was claimed`,
        this.where,
      );
    }
    this.#cachedTail = tail;
    this.#trusted = 0;
    return claimed;
  }

  /**
   * Times the record at `head` whose LENGTH reads `length` (<= 0): true once
   * it has read so for the stuck timeout (the waiting read's peerTimeoutMs,
   * or this.peerTimeoutMs) since this consumer first saw it so.
   */
  #stuck(head: number, length: number, at: number): boolean {
    const now = performance.now();
    if (this.#stuckAt !== head || this.#stuckLength !== length) {
      this.#stuckAt = head;
      this.#stuckLength = length;
      this.#stuckSince = now;
      // The claimer's mark, as first seen (after the LENGTH the caller loaded): #claimerGone goes by it only
      // while TYPE still holds it.
      this.#stuckMark = this.#data32[at + M.MPSC_TYPE_I32]!;
    }
    return now - this.#stuckSince >= (this.#waitPeerTimeout?.ms ?? this.peerTimeoutMs);
  }

  /**
   * Whether any producer may still write, for taking back or skipping a
   * claim: someone holds the PRODUCER lock (what the kernel says; the pid
   * word tells only how the last holder left, and reads 0 once it left
   * cleanly; in a watchdog pass a live registrant in it answers three
   * passes in four: sharedRoleHeld), or, without a file, the registered
   * one lives.
   */
  /**
   * The wait's verdict when no producer holds the role: dead only if the
   * last one died (its pid word stayed); none yet, or the last one left
   * cleanly (its word withdrawn), is a wait for the next one. Without a
   * file, #producersLeft is that verdict already (the pid words alone tell).
   */
  #lastLeftCleanly(): boolean {
    return this.roles !== undefined && super.producerAlive();
  }

  /** #producersLeft, or none left but none died (#lastLeftCleanly): the wait goes on. */
  #producersLeftOrWait(): boolean {
    return this.#producersLeft() || this.#lastLeftCleanly();
  }

  #producersLeft(): boolean {
    return this.roles !== undefined ? this.sharedRoleHeld('producer', L.PRODUCER_PID_I32, L.PRODUCER_START_I32) : super.producerAlive();
  }

  /**
   * Takes back the claimed record at Int32 index `at` (LENGTH `length` < 0)
   * if its claimer is gone; true if it did (the head moved past it).
   */
  #takeBack(at: number, length: number): boolean {
    if (!this.#claimerGone(at)) return false;
    const size = M.recordBytes(-length);
    const index = at << 2;
    if (-length < M.MPSC_RECORD_HEADER || -length > this.capacity - index || !this.#within(this.#head, size)) {
      throw corrupt(`claimed record at ${index} has length ${-length}`, this.where);
    }
    // Takes the record from its claimer: a claimer that commits with a CAS finds it failed (one with a store is never judged gone: #claimerGone).
    if (Atomics.compareExchange(this.#data32, at + M.MPSC_LENGTH_I32, length, 0) !== length) return false;
    this.#skip(index, size);
    return true;
  }

  /** Whether the claimer of the record at Int32 index `at` (its LENGTH seen negative) can write no more. */
  #claimerGone(at: number): boolean {
    if (!this.#producersLeft()) return true;
    // Observes FLAG_PID_NS_MIXED: set by a claimer from another namespace before its mark (which the caller
    // observed), or by this consumer when it registered. Then thread ids do not tell: a live producer holds
    // the lock. A look of an object that has not registered yet goes by its own namespace too.
    if ((Atomics.load(this.ctl, L.FLAGS_I32) & M.FLAG_PID_NS_MIXED) !== 0 || !this.#inRingNamespace()) return false;
    // The claimer's mark (its negated thread id), stored before its negative LENGTH (which the caller observed); gone only if
    // certainly so (threadGone: a live claimer may commit with a plain store). But a claimer that commits
    // (or aborts) stores its record's TYPE (a type >= 0, or PADDING_TYPE) over the mark before the LENGTH
    // that ends the claim: a TYPE that is no mark (marks are negated thread ids, <= -2), or that is not the one
    // this claim showed when first seen stuck, is a claimer at work, alive. (Marks that were thread ids as
    // they are, > 0, let a message type seen in the claim's first look, or 0, pass for a dead thread's id,
    // and a live producer's record was taken back between its two stores: lost.)
    const mark = this.#data32[at + M.MPSC_TYPE_I32]!;
    const tid = M.markedThread(mark);
    if (tid === 0 || mark !== this.#stuckMark) return false;
    return threadGone(tid);
  }

  /**
   * Consumes `size` bytes at `index` unread (a record taken back from a dead
   * claimer), and releases them; `record` false: the padding part of a claim
   * that wrapped, whose record (at 0) is counted when it is skipped.
   */
  #skip(index: number, size: number, record = true): void {
    zero(this.data, this.#data64, index, size);
    this.#stuckAt = -1;
    if (record) this.unblockedRecords++;
    this.#release((this.#head + size) | 0, this.ctl);
  }

  /** Whether a claim without a header (the tail past the head, LENGTH 0 at it) has sat at the head for the stuck timeout. */
  #headerlessStuck(head: number, at: number): boolean {
    if (this.#loadTail(head) === 0) return false;
    return this.#stuck(head, 0, at);
  }

  /** Empty looks of #next (every EMPTY_LOOKS_PER_CLAIM_CHECK-th asks about a claim without a header). */
  #emptyLooks = 0;

  /**
   * With no producer left: skips a record at the head whose claimer died
   * before writing its header (LENGTH 0, tail beyond it). Its extent is the
   * zero LENGTH words up to the next header (or the tail, or the end of the
   * data area: a claim over the wrap is padding there, its record at 0).
   */
  #skipHeaderless(): boolean {
    const head = this.#head;
    const index = head & this.#mask;
    // Observes the header at the head (no producer is left to change it).
    if (Atomics.load(this.#data32, (index >> 2) + M.MPSC_LENGTH_I32) !== 0) return false;
    const claimed = this.#loadTail(head);
    if (claimed === 0) return false;
    // After the tail load: a producer whose claim the tail holds took the PRODUCER lock before its CAS, so it
    // is seen here (the caller's look, before the load, may have missed a newcomer preempted before its mark).
    if (this.#producersLeft()) return false;
    const limit = Math.min(this.capacity, index + claimed);
    let end = index + M.MPSC_ALIGNMENT;
    // Each observes a header word of what follows; zero words belong to the dead claim.
    while (end < limit && Atomics.load(this.#data32, (end >> 2) + M.MPSC_LENGTH_I32) === 0) end += M.MPSC_ALIGNMENT;
    // Zeros to the end of the data area with the claimed space going on at 0, where no record is committed: the
    // padding of a claim that wrapped (its claimer died before it wrote the padding's header, which it writes
    // before it commits its record at 0; that record is skipped next, and counted then). A committed record at 0
    // (observed: its LENGTH) belongs to another claim, and the run is a dead claim of its own. Taken for padding
    // too is a headerless claim that ended exactly at the end followed by a second dead claim at 0: counted as one.
    const padding = end === this.capacity && index + claimed > this.capacity && Atomics.load(this.#data32, M.MPSC_LENGTH_I32) <= 0;
    this.#skip(index, end - index, !padding);
    return true;
  }

  /** Releases the consumed bytes (zeroed before) to the producers, through `ctl` (drain passes the view it started with). */
  #release(head: number, ctl: Int32Array): void {
    this.#head = head;
    countHeadWindow(ctl, this.#storedHead, head);
    this.#storedHead = head;
    // Publishes the freed (zeroed) space to the producers; pairs with their load of CONSUMER_POSITION.
    Atomics.store(ctl, L.CONSUMER_POSITION_I32, head);
    unpark(ctl, WRITE_BLOCK, WAKE_ALL);
  }

  /**
   * Takes the consumer role, and with it the head the previous consumer
   * left (its last release), not the one this object saw when it attached:
   * another consumer may have read (and zeroed) records since.
   */
  #takeConsumer(): void {
    this.registerConsumer();
    const ctl = this.ctl;
    // After the role is ours (no other consumer moves the head any more): observes the previous consumer's
    // last release, #release's Atomics.store of CONSUMER_POSITION (the space before it was zeroed first).
    const head = Atomics.load(ctl, L.CONSUMER_POSITION_I32);
    // After the head: observes the latest claim (bounds only; the tail only grows, so it is not behind the head).
    const tail = Atomics.load(ctl, L.PRODUCER_POSITION_I32);
    checkPositions(tail, head, this.capacity, this.where);
    this.#head = head;
    this.#storedHead = head;
    takeHeadEpoch(ctl, head); // producers need only its raises; this consumer keeps no count of its own
    this.#cachedTail = tail;
    this.#trusted = 0; // whatever this object took on trust before is behind that head, which is not past this tail
    // #stuckAt stays: a record a look saw stuck at this head (select, before the role was ours) has been stuck since.
  }

  /** Copies the next message out, or returns null if none is committed at the head. Its type goes to `lastType`. */
  tryRead(): Uint8Array | null {
    const ctl = this.ctl;
    if (ctl.length === 0) throw this.closedError();
    if (this.draining) throw this.drainBusyError();
    if (!this.isConsumer) this.#takeConsumer();
    this.#lookedOnly = false;
    const start = this.#head;
    const at = this.#next();
    if (at < 0) {
      if (this.#head !== start) this.#release(this.#head, ctl); // padding consumed
      return null;
    }
    const index = at << 2;
    const size = (this.#nextEnd - this.#head) >>> 0;
    const message = copyOut(this.data, index + M.MPSC_RECORD_HEADER, this.#nextLength);
    this.lastType = this.#nextType;
    zero(this.data, this.#data64, index, size);
    this.#release(this.#nextEnd, ctl);
    return message;
  }

  /**
   * Hands each committed record to `handler(data, offset, length, type)` in
   * place, up to `limit` records; returns how many. Each record is zeroed
   * and its room given back once its handler returns (or throws: the record
   * counts as taken); parked producers are woken once, after the batch. A
   * consumer killed in a handler leaves the record in hand, and all after
   * it, to the next consumer. Never waits. Arguments are checked before
   * anything is taken.
   *
   * From its handler: a read of this object (tryRead, readSync, read, the
   * iterator, drain) is ERR_SHMRING_BUSY, since it would release the record
   * in hand before it is zeroed; waitReadable takes nothing and may be
   * called. close() or detach() ends this object at once (its verbs throw
   * ERR_SHMRING_CLOSED; close() also ends the ring for the producers), and
   * drain() stops after the record in hand: it counts as taken, the records
   * not handed out stay in the ring for the next consumer; drain() zeroes
   * and releases it and only then gives up the consumer role, before it
   * returns.
   */
  drain(handler: DrainHandler, limit?: number): number {
    const max = checkDrain(handler, limit, 'MpscRing.drain');
    const ctl = this.ctl; // close() in the handler swaps this.ctl; the release below still goes through
    if (ctl.length === 0) throw this.closedError();
    if (this.draining) throw this.drainBusyError();
    if (!this.isConsumer) this.#takeConsumer();
    this.#lookedOnly = false;
    const data = this.data;
    const data64 = this.#data64;
    const start = this.#head;
    let count = 0;
    this.draining = true; // the record in hand is zeroed and released once its handler returns
    try {
      // At most a lap: each record's room goes back as it is taken, and producers may fill it meanwhile.
      while (count < max && this.ctl.length !== 0 && ((this.#head - start) | 0) < this.capacity) {
        const released = this.#head;
        const at = this.#next();
        if (at < 0) break;
        // Padding #next zeroed before this record: released before the handler runs (a consumer killed in
        // it must not leave zeroed, unreleased room at the head).
        if (this.#head !== released) this.#storeHead(ctl, this.#head);
        const index = at << 2;
        const size = (this.#nextEnd - this.#head) >>> 0;
        this.#head = this.#nextEnd;
        count++;
        try {
          handler(data, index + M.MPSC_RECORD_HEADER, this.#nextLength, this.#nextType);
        } finally {
          if (ctl.length !== 0) {
            zero(data, data64, index, size);
            // Zeroed and not released, the record would read as a claim whose header is not written yet to a
            // next consumer (this one killed in a later handler), and hold the head while any producer lives.
            this.#storeHead(ctl, this.#head);
          }
        }
      }
    } finally {
      try {
        // ctl.length is 0 only if the region itself was closed (its memory is gone).
        if (this.#head !== start && ctl.length !== 0) this.#release(this.#head, ctl);
      } finally {
        this.endDrain(); // after the last store of the head: a close() or detach() in a handler gives up the role only now
      }
    }
    if (count > 0) this.drained(); // its readers are busy: a wait soon after may poll (PollPacer)
    return count;
  }

  /**
   * Publishes zeroed room to the producers, as #release does but without
   * its wake-up (drain wakes them once, after the batch): on x86-64 a plain
   * store (PLAIN_MARK), ordered after the zeroing stores by the hardware.
   */
  #storeHead(ctl: Int32Array, head: number): void {
    countHeadWindow(ctl, this.#storedHead, head);
    this.#storedHead = head;
    // Publishes the room before `head` (zeroed first); pairs with the producers' load of CONSUMER_POSITION.
    if (PLAIN_MARK) ctl[L.CONSUMER_POSITION_I32] = head;
    else Atomics.store(ctl, L.CONSUMER_POSITION_I32, head);
  }

  // ---- waiting reads: their peerTimeoutMs also bounds a stuck record ----

  override readSync(options?: WaitOptions): Uint8Array {
    const timeout = options?.peerTimeoutMs;
    if (timeout === undefined) return super.readSync(options); // the common call: nothing to set, nothing allocated
    const before = this.#waitPeerTimeout; // a Promise read's, pending: it applies again once this one returns
    this.#syncTimeout.ms = timeout;
    this.#waitPeerTimeout = this.#syncTimeout;
    try {
      return super.readSync(options);
    } finally {
      this.#waitPeerTimeout = before;
    }
  }

  /**
   * The read's own promise, not an async wrapper's: a wrapper resumed its
   * caller ticks after the read settled, by when a read queued behind it
   * had taken the next message (and set lastType). The latest read made with
   * a peerTimeoutMs sets the stuck timeout until it settles.
   */
  override read(options?: WaitOptions): Promise<Uint8Array> {
    const timeout = options?.peerTimeoutMs;
    return timeout === undefined ? super.read(options) : this.#withStuckTimeout(timeout, () => super.read(options));
  }

  /** The iterator's peerTimeoutMs bounds a stuck record while each of its reads is pending. */
  override messages(options?: WaitOptions): AsyncIterableIterator<Uint8Array> {
    const iterator = super.messages(options); // checks the options
    const timeout = options?.peerTimeoutMs;
    if (timeout === undefined) return iterator;
    const next = iterator.next.bind(iterator);
    iterator.next = (): Promise<IteratorResult<Uint8Array>> => this.#withStuckTimeout(timeout, next);
    return iterator;
  }

  /**
   * Starts a read whose own peerTimeoutMs bounds a stuck record until it
   * settles: the latest such read sets it, and only that read clears it.
   * Returns the read's own promise (a wrapper would resume its caller ticks
   * late, after a read queued behind it took the next message).
   */
  #withStuckTimeout<T>(timeout: number, start: () => Promise<T>): Promise<T> {
    const mine = { ms: timeout };
    this.#waitPeerTimeout = mine;
    const read = start();
    const done = (): void => {
      if (this.#waitPeerTimeout === mine) this.#waitPeerTimeout = undefined;
    };
    void read.then(done, done);
    return read;
  }

  /**
   * A parked reader's check (every quarter of its peerTimeoutMs): takes back
   * a record stuck at the head past the timeout whose claimer is gone, and
   * when no producer is left at all, every dead claim at once (then reports
   * the death once what they published after it is read).
   */
  protected override producerAlive(): boolean {
    const ctl = this.ctl;
    if (ctl.length === 0) return true;
    if (this.draining) return true; // a wait in a drain handler: the head is past the record in hand, not released
    if (!this.isConsumer) {
      // A wait that has not read yet (select, waitReadable) takes the role only to take back a claim at the
      // head (or behind the padding of a claim that wrapped), and not if another object holds it (that one
      // does). Observes the header at the stored head.
      const at = (Atomics.load(ctl, L.CONSUMER_POSITION_I32) & this.#mask) >> 2;
      const length = Atomics.load(this.#data32, at + M.MPSC_LENGTH_I32);
      const padding = length > 0 && this.#data32[at + M.MPSC_TYPE_I32] === L.PADDING_TYPE;
      // Nothing at the head to take back: whether a producer is left all the same (an empty ring whose producers
      // died is ERR_SHMRING_PEER_DEAD for this object too, not a wait for ever); a message there is for the read.
      if (length >= 0 && !padding) return length > 0 || this.#producersLeftOrWait();
      if (!this.#becomeConsumer()) return true;
    }
    // The records taken on trust (TRUST_RECORDS) are checked at each peer check at the latest.
    if (this.#trusted !== 0) this.#loadTail(this.#head);
    const left = this.#producersLeft();
    let skipped = 0;
    for (;;) {
      const head = this.#head;
      const at = (head & this.#mask) >> 2;
      // Observes the header at the head (a commit, a claim, or nothing yet).
      const length = Atomics.load(this.#data32, at + M.MPSC_LENGTH_I32);
      if (length > 0) {
        // The padding a claim that wraps commits at once, without a wake-up: the claim at 0 behind it may be
        // a dead producer's, which this check is here to take back (a parked read never looks past padding
        // unless something wakes it). Anything else is a message for the read.
        if (this.#data32[at + M.MPSC_TYPE_I32] !== L.PADDING_TYPE) break;
        this.#takePadding(); // validates the padding (ERR_SHMRING_CORRUPT) and gives its room back
        if (this.#head === head) break;
        continue;
      }
      if (length < 0) {
        if (!(this.#stuck(head, length, at) || !left) || !this.#takeBack(at, length)) break;
      } else if (left || !this.#skipHeaderless()) {
        break;
      }
      skipped++;
    }
    // The parked read (async: asleep on the futex) looks again.
    if (skipped !== 0) unpark(ctl, READ_BLOCK, WAKE_ONE);
    return left || this.#lastLeftCleanly();
  }

  // ---- select's look (queue.ts) ----

  /**
   * A message is committed at the head, past any padding there (tryRead
   * would hand it out), or the head's record is a claim stuck past
   * peerTimeoutMs whose claimer is gone (tryRead would take it back and go on).
   */
  protected recordReady(): boolean {
    const data32 = this.#data32;
    // The consumer's own head; an object that is not the consumer (yet) looks from the stored one, which it
    // would read from once it takes the role: observes the consumer's last release (#release's store).
    let head = this.isConsumer ? this.#head : Atomics.load(this.ctl, L.CONSUMER_POSITION_I32);
    for (let passed = 0; passed < this.capacity; ) {
      const at = (head & this.#mask) >> 2;
      // Observes the claimer's commit (or claim) at that position, as #next does: TYPE is read after it.
      const length = Atomics.load(data32, at + M.MPSC_LENGTH_I32);
      if (length === 0) {
        // Padding (an aborted claim, a shortened commit's rest) and nothing after it: nobody would take it
        // (a waiting consumer waits for a message first), and the producers may be waiting for its room.
        if (passed !== 0) this.#takePadding();
        return false;
      }
      if (length < 0) {
        if (passed !== 0) this.#takePadding(); // its room, as tryRead gives it back, whatever the claim does
        return this.#stuck(head, length, at) && this.#claimerGone(at);
      }
      // A message, or a record no correct peer writes (tryRead reports it): ready either way. A padding
      // LENGTH past the end of the data area is one (its recordBytes could even wrap to a step of 0 round the ring).
      if (data32[at + M.MPSC_TYPE_I32] !== L.PADDING_TYPE || length < M.MPSC_RECORD_HEADER || length > this.capacity - (head & this.#mask))
        return true;
      const size = M.recordBytes(length); // padding (before the wrap, or an aborted record): look past it, as #next does
      head = (head + size) | 0;
      passed += size;
    }
    return true; // padding all the way round: tryRead reports it
  }

  /**
   * Takes the padding at the head (zeroes it and releases its room), as
   * tryRead would, and stops at the first record that is not padding
   * (taking nothing else). Takes the consumer role if this object does not
   * hold it yet (only a consumer looks for records), unless another object
   * holds it: that one takes the padding.
   */
  #takePadding(): void {
    if (this.draining) return; // a wait's look from a drain handler: drain takes the padding itself
    if (!this.isConsumer && !this.#becomeConsumer()) return;
    const start = this.#head;
    this.#next();
    if (this.#head !== start) this.#release(this.#head, this.ctl);
  }

  /**
   * Takes the consumer role for a look (a wait that has not read yet):
   * false if another object holds it, then and for every later look.
   */
  #becomeConsumer(): boolean {
    if (this.#lookRefused) return false;
    try {
      this.#takeConsumer();
      this.#lookedOnly = true;
      return true;
    } catch (err) {
      if ((err as ShmringError).code !== ErrorCodes.BUSY) throw err;
      this.#lookRefused = true;
      return false;
    }
  }

  /** The consumer role was taken by a look, and nothing was read since: close() only lets go. */
  #lookedOnly = false;
  /** A look found the consumer role held by another object: looks leave the head to it. */
  #lookRefused = false;

  /** Room for a record of `length` payload bytes (and the padding before the wrap if it must wrap), as #reserve counts it. */
  protected writeReady(length: number): boolean {
    if (this.closedFlag()) return true;
    const ctl = this.ctl;
    const size = M.recordBytes(M.mpscLength(length));
    for (let tries = 0; tries < 64; tries++) {
      // Observes the latest claim of any producer.
      const tail = Atomics.load(ctl, L.PRODUCER_POSITION_I32);
      // Observes the consumer's release of zeroed space.
      const head = Atomics.load(ctl, L.CONSUMER_POSITION_I32);
      // Observes the latest claim again: unchanged, the head was read while that tail was current (a consistent pair).
      if (Atomics.load(ctl, L.PRODUCER_POSITION_I32) !== tail) continue;
      const used = (tail - head) >>> 0;
      if (used > this.capacity) return true; // no correct consumer wrote that head: tryWrite reports it
      const toEnd = this.capacity - (tail & this.#mask);
      return this.capacity - used >= (size <= toEnd ? size : toEnd + size);
    }
    return true; // producers keep claiming: tryWrite finds out (another producer may take the room first)
  }

  protected selectLimit(): number {
    return this.maxMessageLength;
  }

  protected dropViews(): void {
    this.data = CLOSED_U8;
    this.#data32 = CLOSED_I32;
    this.#data64 = CLOSED_F64;
  }
}
