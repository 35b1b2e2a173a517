/**
 * Looking at rings from outside: what a region holds (kind, geometry,
 * occupancy, positions, the processes attached and whether they live:
 * what the role and HOLDER locks say, and for a System V segment, which
 * has no file to lock, its attach count and the pids), the
 * rings in /dev/shm and in System V segments (/proc/sysvipc/shm), and
 * removing the ones every process has abandoned.
 * Read-only: inspecting never writes to a ring (a System V segment is
 * attached with SHM_RDONLY, which only updates its attach time and count).
 *
 * Targets: a POSIX name, a path (anything containing '/'), `sysv:<key>`
 * (hexadecimal with 0x, as `ipcs -m` prints it, or decimal) or
 * `sysv-id:<id>` (a segment without a key, or one marked for removal). A
 * POSIX object whose name starts with `sysv:` or `sysv-id:` is reached by
 * its path, /dev/shm/<name>, and listed so.
 */
import { constants as bufferConstants } from 'node:buffer';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  ErrorCodes,
  heldByAnyone,
  lockFileByte,
  NAME_LOCK_BYTE,
  SIZING_LOCK_BYTE,
  namesObject,
  Region,
  ShmringError,
  ShmringRangeError,
  ShmringTypeError,
  shown,
} from '@shmring/core';
import * as L from './layout.js';
import { readSegments, type Segment, sysvSegments } from './sysv-segments.js';
import { checkStablePositions, KIND_NAMES, readHeader } from './header.js';
import { KIND_LATEST, PUBLISHED_I32 } from './latest-layout.js';
import * as B from './broadcast-layout.js';
import * as M from './mpsc-layout.js';
import { isAlive, othersAttached, pidNamespace, threadGone } from './liveness.js';
import { checkPositions as checkMpscPositions } from './mpsc.js';
import { checkPositions as checkSpscPositions } from './spsc.js';
import { ringHeld } from './roles.js';

export interface ProcessInfo {
  /** The pid the side wrote (in its own PID namespace, which may not be ours); positive while it registers, when its word holds it negated. */
  pid: number;
  /**
   * Producer and consumer, where the region has a file: whether anyone
   * holds the role's lock (what the kernel says, valid across PID
   * namespaces). A shared role (an MpmcQueue's sides, an MpscRing's
   * producers) names only the last to register: `alive` then says that
   * someone holds the role, not that this pid still runs (an MpscRing's
   * `inFlight` judges each claimer by its own pid). The creator, and the roles where the region has no file
   * (a System V segment), as unlockedInfo() judges them by whether anyone
   * holds the ring (its HOLDER lock, or the segment's attach count): false
   * when nobody does; undefined when somebody does but the pid is not a
   * live process here with the start time it recorded (it may run in
   * another PID namespace, or have died while others hold the ring); true
   * when it is. Where the region cannot tell whether it is held, the pid
   * and start time alone decide. A side caught registering (its word
   * negated, no start time stored yet) is judged by its pid alone.
   */
  alive?: boolean;
}

export interface RingInfo {
  /** POSIX name (without '/'), file path, or `sysv:<key>` / `sysv-id:<id>` for a System V segment. */
  name: string;
  /** The System V segment's id (shmid), for rings in System V segments. */
  sysvId?: number;
  kind: 'SpscRing' | 'MpmcQueue' | 'LatestValue' | 'MpscRing' | 'Broadcast' | 'unknown';
  version: number;
  /** SpscRing: data bytes; MpmcQueue: slots; LatestValue: maxSize (bytes of the largest value). */
  capacity: number;
  /** LatestValue: the newest published version, low 32 bits (its producerPosition word). A snapshot. */
  latestVersion?: number;
  /** MpmcQueue: bytes per slot payload. */
  slotSize?: number;
  /** SpscRing: bytes in use; MpmcQueue: messages in the queue; LatestValue: 0. A snapshot. */
  used: number;
  producerPosition: number;
  consumerPosition: number;
  /** CREATION_ID: a random number the ring's creator drew (0: none), other in a ring laid out again in the same memory. */
  creationId: number;
  closed: boolean;
  /**
   * Whether any ring object of any process is attached to the ring now
   * (its HOLDER lock is held); undefined where the region cannot tell.
   */
  held?: boolean;
  /**
   * Whether another Region has the object open by its name now (posix,
   * file: the name lock that Region.open and Region.create hold, core's
   * NAME_LOCK_BYTE), attached to the ring or not: its owner may attach at
   * any moment, so the ring is not stale. Undefined where the region cannot
   * tell (no file, no open file description locks).
   */
  openByName?: boolean;
  creator: ProcessInfo;
  producer?: ProcessInfo;
  consumer?: ProcessInfo;
  /** Parked readers / writers right now. */
  readersWaiting: number;
  writersWaiting: number;
  regionSize: number;
  /** Broadcast: its mode and the subscribers in its slot table (lossy subscribers beyond the table are not listed). */
  broadcast?: BroadcastInfo;
  /** MpscRing: the records claimed and not yet committed. */
  mpsc?: MpscInfo;
  /**
   * Why an attach would refuse this ring (the header checks every attach
   * makes): a header no correct peer writes (ERR_SHMRING_CORRUPT), a region
   * smaller than the ring's recorded size, truncated
   * (ERR_SHMRING_REGION_TOO_SMALL), another layout version. The figures
   * above are then what the header says, not to be trusted, and the
   * kind's own details (broadcast, mpsc) are left out.
   */
  damaged?: { code: string; message: string };
}

export interface MpscInfo {
  /**
   * The producers in flight: each record between the consumer position and
   * the producer position that is claimed and not committed (LENGTH < 0, or
   * still 0: claimed, its header not yet written), oldest first. The
   * consumer waits at the first; a snapshot. At most MAX_LISTED_CLAIMS
   * (see `unlisted`). The walk stops at a header no correct producer
   * writes. (How many records a consumer skipped because their claimer
   * died is counted by that consumer object, `ring.unblockedRecords`: the
   * layout keeps no such count.)
   */
  inFlight: ClaimInfo[];
  /**
   * Claims found past the MAX_LISTED_CLAIMS that inFlight lists: counted,
   * not listed. Absent when inFlight lists them all.
   */
  unlisted?: number;
  /**
   * Bytes before the producer position the walk did not look at: its work
   * is bounded (MAX_WALK_STEPS header words), and a ring with more records
   * between its positions than that is walked only that far. The claims
   * there are neither listed nor counted. Absent when the walk got to the
   * producer position (or stopped at a header no correct producer writes).
   */
  unwalkedBytes?: number;
  /**
   * FLAG_PID_NS_MIXED: a producer or the consumer attached from another PID
   * namespace than the ring's creator. The claimers' ids (`pid`, `alive`)
   * are then looked up here, where they may name another thread or none,
   * and the consumer skips a stuck claim only once no producer is left.
   */
  pidNamespacesMixed: boolean;
  /**
   * FLAG_LIGHT_COMMITS: a producer commits without a fence, and a consumer
   * that parks calls membarrier(2) for it (or, where that is refused,
   * sleeps 1 ms at a time): docs/LAYOUT.md, "Parking beside light commits".
   */
  lightCommits: boolean;
}

export interface ClaimInfo {
  /** The record's position (u32, as producerPosition). */
  position: number;
  /** The claimer's thread id (its process's pid for a main thread), from the record's mark while claimed (in its PID namespace); 0: it is committing (its TYPE is no mark any more), or has not written the header yet. */
  pid: number;
  /**
   * Whether the claimer is alive, as the consumer's unblock rule judges it
   * (liveness.threadGone: any doubt is alive), unless pidNamespacesMixed.
   * pid 0 is a claimer in its commit or abort (the record's type is
   * stored over its mark before the LENGTH that ends the claim): alive; so
   * is one that has not written the header yet (pid 0, length null): no
   * one can tell. Undefined (unknown) where this inspect runs in another
   * PID namespace than the ring's (or either is unknown): the id names no
   * thread here, or another one.
   */
  alive: boolean | undefined;
  /** Payload bytes claimed; null while the header is not written yet. */
  length: number | null;
  /** Bytes the record takes in the ring (header included, rounded up to 8; a headerless claim: the zero words up to the next header). */
  recordBytes: number;
}

/** A taken slot of a Broadcast's table (BroadcastInfo.subscribers). */
export interface BroadcastSubscriber {
  slot: number;
  /** The holder's pid; for a claimant still registering (`registering`), the claimant's id. */
  pid: number;
  /** The slot's lock where the region has a file; else the pid and start time (a claimant: its id alone). */
  alive: boolean;
  /** Low 32 bits of the cursor (a claimant's: what the previous owner left, or its provisional one). */
  cursor: number;
  lag: number;
  /**
   * True for a claimant caught registering where the region has no file
   * (OWNER negative: its id negated, docs/LAYOUT.md "Subscriber slots"):
   * PID and START may still be a previous owner's, so `pid` and `alive`
   * are the claimant's, from OWNER. Absent otherwise.
   */
  registering?: true;
}

export interface BroadcastInfo {
  lossless: boolean;
  /** Slots in the table. */
  slots: number;
  /**
   * Each taken slot: its holder, the cursor (low 32 bits) and how many bytes
   * it is behind the tail (a snapshot). A lossy subscriber's lag may exceed
   * the capacity: it was lapped, and its next read jumps forward (the CLI
   * marks it "lapped").
   */
  subscribers: BroadcastSubscriber[];
  /**
   * Where INTENT says the record being written ends (low 32 bits), when it
   * is not the tail and no live publisher is writing it: a record its
   * publisher left half-written when it died. The next Broadcast.create
   * repairs it (docs/LAYOUT.md, "A record left half-written: the repair");
   * until then subscribers read what was published before it. Absent when
   * the counters are quiescent, or a live publisher (or one inspect cannot
   * judge) may be in the middle of a record.
   */
  halfWritten?: { intent: number };
}

function processInfo(ctl: Int32Array, pidIndex: number, startIndex: number, locked?: boolean): ProcessInfo | undefined {
  // Observes a side's registration (pid stored after its lock is taken and its start time stored; negated
  // while a side without locks registers, before its start time is stored: Queue.#claim, LatestValue.#takeToken).
  const word = Atomics.load(ctl, pidIndex);
  if (word === 0) return undefined;
  const pid = Math.abs(word);
  if (locked !== undefined) return { pid, alive: locked };
  // Registering: alive while that id is, whatever start time the word holds (not yet its own).
  if (word < 0) return { pid, alive: isAlive(pid, 0) };
  // Observes the start time stored before the pid.
  return { pid, alive: isAlive(pid, Atomics.load(ctl, startIndex)) };
}

/**
 * A side no lock names (the creator; a role where the region has no file
 * to lock: 'sysv'), judged by what `held` says of the whole ring (the
 * HOLDER lock, a System V segment's attach count; undefined: the region
 * cannot tell). Nobody holds the ring: the side is gone. Somebody does:
 * the side lives if its pid runs with its start time here, and otherwise
 * it cannot be told (alive undefined: a pid from another PID namespace
 * means nothing here). Where the region cannot tell, the pid and start
 * time decide.
 */
function unlockedInfo(ctl: Int32Array, pidIndex: number, startIndex: number, held: boolean | undefined): ProcessInfo | undefined {
  const info = processInfo(ctl, pidIndex, startIndex);
  if (info === undefined) return undefined;
  if (held === false) return { pid: info.pid, alive: false };
  if (held === true && info.alive === false) return { pid: info.pid };
  return info;
}

/** Describes the ring in `region`, or returns undefined if it holds none (no magic). */
export function describeRing(region: Region, name: string): RingInfo | undefined {
  const info = describe(region, name, ringHeld(region, 0));
  if (info === undefined || (region.backing !== 'posix' && region.backing !== 'file')) return info;
  // Other descriptions' locks only: this region's own name lock (it was opened by name too) does not count.
  const named = heldByAnyone(region, NAME_LOCK_BYTE);
  if (named !== undefined) info.openByName = named;
  return info;
}

/** describeRing, with `held` (whether anyone holds the ring; undefined: cannot tell) given. */
function describe(region: Region, name: string, held: boolean | undefined): RingInfo | undefined {
  const buffer = region.buffer;
  if (buffer.byteLength < L.DATA_OFFSET) return truncatedHeader(buffer, name, held);
  const ctl = new Int32Array(buffer, 0, L.CONTROL_I32_LENGTH);
  // Observes the creator's publication of the header (MAGIC is stored last).
  if (Atomics.load(ctl, L.MAGIC_I32) !== L.MAGIC) return undefined;
  const kind = ctl[L.KIND_I32]!;
  // Both positions are snapshots; the difference is only indicative on a live ring.
  const producerPosition = Atomics.load(ctl, L.PRODUCER_POSITION_I32) >>> 0;
  const consumerPosition = Atomics.load(ctl, L.CONSUMER_POSITION_I32) >>> 0;
  const capacity = ctl[L.CAPACITY_I32]! >>> 0;
  const info: RingInfo = {
    name,
    kind: (KIND_NAMES[kind] as RingInfo['kind'] | undefined) ?? 'unknown',
    version: ctl[L.VERSION_I32]!,
    capacity,
    // Negative for a moment after the consumer read a record whose producer has not stored its position yet (SpscRing).
    used: Math.min(Math.max((producerPosition - consumerPosition) | 0, 0), capacity),
    producerPosition,
    consumerPosition,
    // Written before MAGIC (loaded above) and never again.
    creationId: ctl[L.CREATION_ID_I32]! >>> 0,
    // Observes a close() by either side.
    closed: (Atomics.load(ctl, L.FLAGS_I32) & L.FLAG_CLOSED) !== 0,
    creator: { pid: 0, alive: false }, // below, once `held` is known
    // Observe how many sides are parked right now.
    readersWaiting: Atomics.load(ctl, L.READ_WAITERS_I32),
    writersWaiting: Atomics.load(ctl, L.WRITE_WAITERS_I32),
    regionSize: buffer.byteLength,
  };
  if (kind === L.KIND_MPMC) info.slotSize = ctl[L.SLOT_SIZE_I32]! >>> 0;
  if (kind === KIND_LATEST) {
    // Observes a LatestValue's PUBLISHED (its newest complete version); it has no consumer position (0).
    info.latestVersion = Atomics.load(ctl, PUBLISHED_I32) >>> 0;
    info.producerPosition = info.latestVersion; // the same word: one snapshot of it
    info.used = 0;
  }
  const damaged = KIND_NAMES[kind] === undefined ? unknownKind(kind, info.version) : headerFault(buffer, kind, info);
  if (damaged !== undefined) info.damaged = damaged;
  // A damaged ring's slots or records may lie outside its region: not read.
  else if (kind === B.KIND_BROADCAST) describeBroadcast(region, ctl, info);
  else if (kind === M.KIND_MPSC) describeMpsc(region, ctl, info);
  if (held !== undefined) info.held = held;
  info.creator = unlockedInfo(ctl, L.CREATOR_PID_I32, L.CREATOR_START_I32, held) ?? { pid: 0, alive: false };
  const producer = roleInfo(region, ctl, 'producer', held);
  const consumer = roleInfo(region, ctl, 'consumer', held);
  if (producer) info.producer = producer;
  if (consumer) info.consumer = consumer;
  if (info.broadcast !== undefined && (producer === undefined || producer.alive === false)) {
    const counters = new Int32Array(region.buffer, 0, B.SLOTS_OFFSET / 4); // in the region: describeBroadcast checked
    // Observes INTENT's low word as a dead (or departed) publisher left it: stable, nobody else writes it.
    const intent = Atomics.load(counters, B.INTENT.lo) >>> 0;
    // Observes INTENT's two high words: unequal, a store crossing 2^32 that its publisher did not finish.
    const whole = Atomics.load(counters, B.INTENT.hi1) === Atomics.load(counters, B.INTENT.hi2);
    if (intent !== info.producerPosition || !whole) info.broadcast.halfWritten = { intent };
  }
  return info;
}

/**
 * A region shorter than a ring's header that starts with a ring's MAGIC (a
 * ring file or object cut short): described as damaged, from the header
 * words it still has; undefined where it holds no MAGIC (no ring).
 */
function truncatedHeader(buffer: ArrayBuffer | SharedArrayBuffer, name: string, held: boolean | undefined): RingInfo | undefined {
  const words = new Int32Array(buffer, 0, Math.floor(buffer.byteLength / 4));
  // Observes the creator's publication of the header (MAGIC is stored last).
  if (words.length <= L.MAGIC_I32 || Atomics.load(words, L.MAGIC_I32) !== L.MAGIC) return undefined;
  const kind = words.length > L.KIND_I32 ? words[L.KIND_I32]! : -1;
  const info: RingInfo = {
    name,
    kind: (KIND_NAMES[kind] as RingInfo['kind'] | undefined) ?? 'unknown',
    version: words.length > L.VERSION_I32 ? words[L.VERSION_I32]! : 0,
    capacity: 0,
    used: 0,
    producerPosition: 0,
    consumerPosition: 0,
    // Written before MAGIC (loaded above) and never again; 0 where the region ends before it.
    creationId: words.length > L.CREATION_ID_I32 ? words[L.CREATION_ID_I32]! >>> 0 : 0,
    closed: false,
    creator: { pid: 0, alive: false },
    readersWaiting: 0,
    writersWaiting: 0,
    regionSize: buffer.byteLength,
    damaged: {
      code: ErrorCodes.REGION_TOO_SMALL,
      message: `the region (${buffer.byteLength} bytes) is smaller than a ring's header (${L.DATA_OFFSET} bytes): truncated?`,
    },
  };
  if (held !== undefined) info.held = held;
  return info;
}

/** Why an attach would refuse a ring whose KIND no ring of this library has. */
function unknownKind(kind: number, version: number): RingInfo['damaged'] {
  if (version !== L.LAYOUT_VERSION) {
    return {
      code: ErrorCodes.VERSION_MISMATCH,
      message: `the ring has layout version ${version}; this library speaks version ${L.LAYOUT_VERSION}`,
    };
  }
  return { code: ErrorCodes.CORRUPT, message: `its KIND is ${kind}, which no ring of layout version ${L.LAYOUT_VERSION} has` };
}

/**
 * What an attach of the ring in `buffer` would refuse it for (its header, or
 * the positions `info` read, as the ring's constructor checks them), or
 * undefined if it passes.
 */
function headerFault(buffer: ArrayBuffer | SharedArrayBuffer, kind: number, info: RingInfo): RingInfo['damaged'] {
  try {
    readHeader(buffer, kind as Parameters<typeof readHeader>[1], 0, 'attach');
    if (kind === L.KIND_SPSC || kind === M.KIND_MPSC) {
      // The attach's own check, on a pair of positions that held at one instant: a live ring is not damaged.
      // That pair is the one shown: the first loads may straddle a move of the consumer past the tail read
      // before it (inspect preempted between them), which reads as a lap and hid an MpscRing's claims.
      const ctl = new Int32Array(buffer, 0, L.DATA_OFFSET / 4);
      const [producer, consumer] = checkStablePositions(ctl, info.capacity, kind === L.KIND_SPSC ? checkSpscPositions : checkMpscPositions);
      info.producerPosition = producer >>> 0;
      info.consumerPosition = consumer >>> 0;
      info.used = Math.min(Math.max((producer - consumer) | 0, 0), info.capacity);
    }
    return undefined;
  } catch (err) {
    const message = (err as Error).message.replace(/^attach: /, '');
    return { code: (err as { code?: string }).code ?? ErrorCodes.CORRUPT, message };
  }
}

/** A role's registrant: alive while anyone holds the role's lock, or where the region has no file, as unlockedInfo() says. */
function roleInfo(region: Region, ctl: Int32Array, role: 'producer' | 'consumer', held: boolean | undefined): ProcessInfo | undefined {
  const [pidIndex, startIndex] =
    role === 'producer' ? [L.PRODUCER_PID_I32, L.PRODUCER_START_I32] : [L.CONSUMER_PID_I32, L.CONSUMER_START_I32];
  const locked = ringHeld(region, 0, role);
  return locked === undefined ? unlockedInfo(ctl, pidIndex, startIndex, held) : processInfo(ctl, pidIndex, startIndex, locked);
}

/** A Broadcast's mode and subscriber slots; `used` becomes the slowest subscriber's lag. */
function describeBroadcast(region: Region, ctl: Int32Array, info: RingInfo): void {
  const slots = Math.min(ctl[L.SLOT_SIZE_I32]! >>> 0, B.MAX_SUBSCRIBERS);
  const end = B.broadcastDataOffset(slots);
  if (region.buffer.byteLength < end) return; // a header no correct creator writes: nothing more to show
  const words = new Int32Array(region.buffer, 0, end / 4);
  const subscribers: BroadcastInfo['subscribers'] = [];
  for (let i = 0; i < slots; i++) {
    const s = B.slotOffset(i) / 4;
    // Observes a subscriber's slot (OWNER set after its cursor, pid and start time) and its progress.
    const owner = Atomics.load(words, s + B.SLOT_OWNER_I32);
    if (owner === 0) continue;
    const cursor = Atomics.load(words, s + B.SLOT_CURSOR_I32) >>> 0;
    const locked = heldByAnyone(region, B.slotOffset(i)); // the slot's lock: undefined without a file
    // Without a file, a negative OWNER is a claimant registering, its id negated (docs/LAYOUT.md, "Subscriber
    // slots"): PID and START may still be a previous owner's, so the claimant is judged by its id alone. With a
    // file, OWNER is only a token (the C peer's, pid | 0x80000000, reads negative) and the slot's lock decides.
    const registering = locked === undefined && owner < 0;
    const pid = registering ? -owner : Atomics.load(words, s + B.SLOT_PID_I32);
    const alive = locked ?? isAlive(pid, registering ? 0 : Atomics.load(words, s + B.SLOT_START_I32));
    // Observes TAIL after the cursor, which a subscriber that reads only what was published has not passed: the
    // lag is no lap of 2^32 bytes. (TAIL as read at the top may be far behind by now: a publisher can move more
    // than a ring past it while this loop makes its system calls for the earlier slots.) A cursor ahead of it
    // all the same (a subscriber's own view of a record, a hostile one) reads as keeping up, not lapped.
    const tail = Atomics.load(ctl, B.TAIL_I32) >>> 0;
    const ahead = (cursor - tail) >>> 0;
    const lag = ahead <= info.capacity ? 0 : (tail - cursor) >>> 0;
    subscribers.push(registering ? { slot: i, pid, alive, cursor, lag, registering } : { slot: i, pid, alive, cursor, lag });
  }
  info.broadcast = { lossless: ctl[B.MODE_I32] === B.MODE_LOSSLESS, slots, subscribers };
  // The consumer position word is unused by a Broadcast: what is in use is what the slowest subscriber has not read.
  info.consumerPosition = 0;
  info.used = Math.min(
    info.capacity,
    subscribers.reduce((most, s) => Math.max(most, s.lag), 0),
  );
}

/** The most claims MpscInfo.inFlight lists, oldest first; those past them are counted (MpscInfo.unlisted). */
export const MAX_LISTED_CLAIMS = 64;

/**
 * The most header words describeMpsc's walk loads (one a record, one a zero
 * word of a claim whose header is not written): its work, and what it keeps
 * of the claims it meets, are bounded whatever a hostile ring holds (up to
 * 2^27 records of 8 bytes in a ring of 2^30).
 */
export const MAX_WALK_STEPS = 1 << 16;

/** The claims describeMpsc's walk met, four numbers each, in walk order: position, thread id, payload length (-1: no header yet), record bytes. */
const CLAIM_FIELDS = 4;

/**
 * An MpscRing's producers in flight: walks the records from the consumer
 * position to the producer position (docs/LAYOUT.md, "MpscRing (KIND 4)")
 * and lists the claimed ones, the first MAX_LISTED_CLAIMS of them (the rest
 * counted). Read-only; bounded by the claimed bytes and MAX_WALK_STEPS.
 */
function describeMpsc(region: Region, ctl: Int32Array, info: RingInfo): void {
  const { capacity, producerPosition: tail, consumerPosition: head } = info;
  const claimed = (tail - head) >>> 0;
  if (
    !(capacity >= M.MPSC_MIN_CAPACITY && capacity <= L.MAX_CAPACITY && (capacity & (capacity - 1)) === 0) ||
    region.buffer.byteLength < M.mpscRingSize(capacity) ||
    claimed > capacity ||
    ((tail | head) & (M.MPSC_ALIGNMENT - 1)) !== 0
  ) {
    return; // a header or positions no correct peer writes: nothing more to show
  }
  const data32 = new Int32Array(region.buffer, L.DATA_OFFSET, capacity / 4);
  const found: number[] = [];
  let steps = 0;
  let passed = 0;
  while (passed < claimed && steps < MAX_WALK_STEPS) {
    steps++;
    const position = (head + passed) >>> 0;
    const index = position & (capacity - 1);
    const left = Math.min(claimed - passed, capacity - index); // a record never straddles the end
    // Observes the record's header: a commit (> 0), a claim (< 0, its claimer's mark, the negated thread id, stored before it in TYPE), or nothing yet.
    const length = Atomics.load(data32, (index >> 2) + M.MPSC_LENGTH_I32);
    if (length === 0) {
      // Claimed, header not written yet: its extent is the zero words up to the next header (as the consumer's skip
      // counts it), or as far as the walk's budget reaches (the bytes past it are then unwalked).
      let end = index + M.MPSC_ALIGNMENT;
      // Each observes a header word of what follows.
      while (end < index + left && steps < MAX_WALK_STEPS && Atomics.load(data32, (end >> 2) + M.MPSC_LENGTH_I32) === 0) {
        steps++;
        end += M.MPSC_ALIGNMENT;
      }
      found.push(position, 0, -1, end - index);
      passed += end - index;
      continue;
    }
    const magnitude = Math.abs(length); // up to 2^31: checked before recordBytes, whose int32 arithmetic would wrap
    if (magnitude < M.MPSC_RECORD_HEADER || magnitude > left) break; // not a record a correct peer writes: stop here
    const size = M.recordBytes(magnitude);
    if (size > left) break;
    if (length < 0) {
      // The claimer's mark (stored before the negative LENGTH observed above), or the TYPE of its commit under way.
      const pid = M.markedThread(Atomics.load(data32, (index >> 2) + M.MPSC_TYPE_I32));
      found.push(position, pid, -length - M.MPSC_RECORD_HEADER, size);
    }
    passed += size;
  }
  const unwalked = passed < claimed && steps >= MAX_WALK_STEPS ? claimed - passed : 0;
  // Observes the consumer's progress during the walk: it zeroes a record before it stores the head past it,
  // so the walk met records read meanwhile as zero words (headerless claims); those are no claims. Positions
  // grow along the walk: the claims behind the head now are the first ones found.
  const headNow = Atomics.load(ctl, L.CONSUMER_POSITION_I32) >>> 0;
  const count = found.length / CLAIM_FIELDS;
  let first = 0;
  while (first < count && ((found[first * CLAIM_FIELDS]! - headNow) | 0) < 0) first++;
  const listed = Math.min(count - first, MAX_LISTED_CLAIMS);
  const judge = claimerJudge(ctl);
  const inFlight: ClaimInfo[] = [];
  for (let i = first; i < first + listed; i++) {
    const at = i * CLAIM_FIELDS;
    const [pid, length] = [found[at + 1]!, found[at + 2]!];
    inFlight.push({ position: found[at]!, pid, alive: judge(pid), length: length < 0 ? null : length, recordBytes: found[at + 3]! });
  }
  // Observes FLAG_PID_NS_MIXED (set once, by a side that attached from another PID namespace) and
  // FLAG_LIGHT_COMMITS (set once, by a producer that commits without a fence).
  const flags = Atomics.load(ctl, L.FLAGS_I32);
  info.mpsc = {
    inFlight,
    pidNamespacesMixed: (flags & M.FLAG_PID_NS_MIXED) !== 0,
    lightCommits: (flags & M.FLAG_LIGHT_COMMITS) !== 0,
  };
  if (count - first > listed) info.mpsc.unlisted = count - first - listed;
  if (unwalked > 0) info.mpsc.unwalkedBytes = unwalked;
}

/**
 * Whether the claimer of a record is alive (ClaimInfo.alive), one verdict a
 * thread id however many records carry its mark (threadGone reads /proc).
 * A claimer's mark is a thread id in the ring's PID namespace (the
 * creator's, written before MAGIC, which describe() observed): looked up in
 * this inspect's /proc only where that is the same, and known, one, as the
 * consumer does (else it names no thread here, or another one: unknown).
 * Thread id 0 (committing, or no header yet): alive.
 */
function claimerJudge(ctl: Int32Array): (pid: number) => boolean | undefined {
  const ringNamespace = ctl[M.MPSC_PID_NS_I32]! >>> 0;
  const ownNamespace = ringNamespace !== 0 && ringNamespace === pidNamespace();
  const verdicts = new Map<number, boolean>();
  return (pid) => {
    if (pid === 0) return true;
    if (!ownNamespace) return undefined;
    let alive = verdicts.get(pid);
    if (alive === undefined) {
      alive = !threadGone(pid);
      verdicts.set(pid, alive);
    }
    return alive;
  };
}

const SYSV_KEY = /^sysv:(0x[0-9a-f]{1,8}|\d{1,10})$/i;
const SYSV_ID = /^sysv-id:(\d{1,10})$/i;
/** A target that names a System V segment, well formed or not: never a POSIX name. */
const SYSV_PREFIX = /^sysv(-id)?:/i;
/** The largest System V key (ipcs prints it unsigned) and segment id (a non-negative int). */
const MAX_SYSV_KEY = 0xffff_ffff;
const MAX_SYSV_ID = 2 ** 31 - 1;

/**
 * The System V segment `target` names (`sysv:<key>`, `sysv-id:<id>`), or
 * undefined for a path or a POSIX name. A target that starts like one and
 * is not one throws: it is a mistyped key or id, not a name to look up (a
 * POSIX object so named is reached by its path).
 */
export function sysvTargetOf(target: string): { key: number } | { id: number } | undefined {
  if (!SYSV_PREFIX.test(target)) return undefined;
  const key = SYSV_KEY.exec(target);
  if (key && Number(key[1]) >= 1 && Number(key[1]) <= MAX_SYSV_KEY) return { key: Number(key[1]) };
  const id = SYSV_ID.exec(target);
  if (id && Number(id[1]) <= MAX_SYSV_ID) return { id: Number(id[1]) };
  throw new ShmringTypeError(
    ErrorCodes.INVALID_ARGUMENT,
    `inspect: '${target}' is not a System V target: give sysv:<key> (1 to 0xffffffff, hexadecimal with 0x as ipcs -m ` +
      `prints it, or decimal) or sysv-id:<id> (0 to ${MAX_SYSV_ID}); for a POSIX object of that name, give its path (/dev/shm/${target})`,
  );
}

/** The target naming a System V segment: by its key, or by its id when it has none (0, IPC_PRIVATE). */
function sysvTarget(key: number, id: number): string {
  return key === 0 ? `sysv-id:${id}` : `sysv:0x${key.toString(16).padStart(8, '0')}`;
}

/** Opens `target`, a path (anything containing '/') or a POSIX name, read-only. */
function openReadOnly(target: string): Region {
  return target.includes('/')
    ? Region.open({ backing: 'file', path: target, readOnly: true })
    : Region.open({ backing: 'posix', name: target, readOnly: true });
}

/**
 * openReadOnly for a listing: an object whose sizing lock is held (its
 * creator sizing it now, or stopped in the middle, or a process holding
 * the lock) is not waited for, as Region.open would for 10 s, but
 * refused at once with ERR_SHMRING_BUSY, which the listing passes over
 * and reports. `file` is the object's path (/dev/shm/<name> for a POSIX
 * name). The lock is taken shared on a description of our own and held
 * across the open, so no creator takes it in between (a shared lock does
 * not stop Region.open's own shared one).
 */
function openUnlessSizing(target: string, file: string): Region {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOFOLLOW);
  try {
    if (lockFileByte(fd, SIZING_LOCK_BYTE, true) === false) {
      throw new ShmringError(
        ErrorCodes.BUSY,
        `inspect: ${target} is being sized (a process holds its sizing lock: its creator, sizing it now or stopped in ` +
          'the middle): skipped rather than waited for; run it again, or find the process (fuser, lsof)',
      );
    }
    return openReadOnly(target);
  } finally {
    fs.closeSync(fd); // lets go of our shared lock: the region has its own description
  }
}

/**
 * Describes the ring at a POSIX name, a file path or a System V segment
 * (see the module comment); undefined if it holds no ring. A ring in a System
 * V segment is held while any process but this inspect has the segment
 * attached (its shm_nattch, less our own attach): the kernel's count, true
 * in every PID namespace.
 */
export function inspect(target: string): RingInfo | undefined {
  if (typeof target !== 'string' || target.length === 0) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `inspect: target=${shown(target)} must be a POSIX name, a path, 'sysv:<key>' or 'sysv-id:<id>' (a non-empty string)`,
    );
  }
  return examine(target).info;
}

/**
 * What inspect() says of `target`, and for a POSIX name or a path, which
 * object the name led to when it did (`dev:ino`, from the same open).
 */
function examine(target: string, file?: string): { info: RingInfo | undefined; object?: string } {
  const sysv = sysvTargetOf(target);
  if (sysv !== undefined) return { info: examineSysv(target, sysv) };
  const region = file === undefined ? openReadOnly(target) : openUnlessSizing(target, file);
  try {
    const { dev, ino } = fs.fstatSync(region.fd, { bigint: true });
    return { info: describeRing(region, target), object: `${dev}:${ino}` };
  } finally {
    region.close();
  }
}

/**
 * examine() of a System V segment: one larger than Node maps (checked from
 * the segment table before any attach) is refused, typed (notMappable).
 * Where the table cannot be read, nothing can be said of the attaches
 * (held undefined).
 */
function examineSysv(target: string, sysv: { key: number } | { id: number }): RingInfo | undefined {
  const table = readSegments()?.find((segment) => ('id' in sysv ? segment.id === sysv.id : segment.key === sysv.key));
  if (table !== undefined && !mappable(table)) throw notMappable(target, table);
  const region = Region.open({ backing: 'sysv', ...sysv, readOnly: true });
  try {
    const attached = readSegments()?.find((segment) => segment.id === region.id)?.attached;
    const info = describe(region, target, attached === undefined ? undefined : attached - 1 > 0);
    if (info) info.sysvId = region.id!;
    return info;
  } finally {
    region.close();
  }
}

/** Whether Node can map `segment` as one ArrayBuffer (buffer.constants.MAX_LENGTH), as inspecting it needs. */
function mappable(segment: Segment): boolean {
  return segment.size <= bufferConstants.MAX_LENGTH;
}

/** The typed error of a System V segment too large for Node to map, which inspect therefore cannot look at. */
function notMappable(target: string, segment: Segment): ShmringRangeError {
  return new ShmringRangeError(
    ErrorCodes.INVALID_ARGUMENT,
    `inspect: the System V segment ${target} (id ${segment.id}) is ${segment.size} bytes, more than this Node maps as ` +
      `one ArrayBuffer (${bufferConstants.MAX_LENGTH} bytes, buffer.constants.MAX_LENGTH), so it cannot be inspected ` +
      `here (no Region of this library is that large); ipcs -m -i ${segment.id} shows it, ipcrm -m ${segment.id} removes it`,
  );
}

/**
 * Told of each object a listing passes over (see passedOver): the name the
 * listing would show it by, and why, a typed error (its `code` an errno
 * name or ERR_SHMRING_*): ERR_SHMRING_BUSY for one being sized, which is
 * not waited for; ERR_SHMRING_INVALID_ARGUMENT for a System V segment too
 * large to map; EACCES for one this user may not read; ENOENT, EINVAL or
 * EIDRM for one removed meanwhile.
 */
export type PassedOverListener = (name: string, error: Error & { code: string }) => void;

/** Options of the listings: listRings, listSysvRings, listStale, unlinkStale. */
export interface ListOptions {
  onPassedOver?: PassedOverListener;
}

/**
 * Every ring in a System V segment this process can attach (read-only).
 * A segment too large for Node to map is passed over without an attach
 * (options.onPassedOver is told). Throws, typed, when the segment table
 * cannot be read (sysvSegments): no segments is not what it found.
 */
export function listSysvRings(options: ListOptions = {}): RingInfo[] {
  const rings: RingInfo[] = [];
  for (const segment of sysvSegments()) {
    const { key, id, size } = segment;
    if (!(size >= L.DATA_OFFSET)) continue; // too small for a ring: not even attached
    const name = sysvTarget(key, id);
    try {
      if (!mappable(segment)) throw notMappable(name, segment);
      const info = inspect(`sysv-id:${id}`);
      if (info) rings.push({ ...info, name });
    } catch (err) {
      // not readable by us, removed meanwhile, too large to map: passed over, and said (passedOver)
      if (!passedOver(err)) throw err;
      options.onPassedOver?.(name, err as Error & { code: string });
    }
  }
  return rings;
}

/**
 * Whether a listing passes over an object it could not inspect: one it
 * may not read (EACCES, EPERM), one removed meanwhile (ENOENT; EINVAL or
 * EIDRM for a System V id), or one that is no ring to map (a file too
 * small, empty, busy sizing). ERR_SHMRING_NO_BACKEND (nothing can be
 * mapped at all), out of fds or memory, and the like are the listing's
 * own failure: passed over, they would report a machine with no rings.
 * What is passed over is told to the listing's onPassedOver (ListOptions).
 */
function passedOver(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && PASSED_OVER.has(code);
}

const PASSED_OVER = new Set<string>([
  'EACCES',
  'EPERM',
  'ENOENT',
  'EINVAL',
  'EIDRM',
  'ELOOP',
  'ENXIO',
  'EISDIR',
  ErrorCodes.REGION_TOO_SMALL,
  ErrorCodes.NOT_A_RING,
  ErrorCodes.INVALID_ARGUMENT,
  ErrorCodes.CORRUPT,
  ErrorCodes.VERSION_MISMATCH,
  ErrorCodes.WRONG_KIND,
  ErrorCodes.BUSY,
]);

/**
 * Every ring among the POSIX shared memory objects (/dev/shm) this process
 * can read, then every ring in a System V segment; with `dir`, only the
 * rings in the files of that directory. An object it cannot look at (see
 * passedOver) is left out, and told to options.onPassedOver.
 */
export function listRings(dir?: string, options: ListOptions = {}): RingInfo[] {
  const named = listDir(dir ?? '/dev/shm', options).map((found) => found.info);
  return dir === undefined ? [...named, ...listSysvRings(options)] : named;
}

/** A ring listDir() found at a name: what it was, and which object the name led to then (examine). */
export interface FoundRing {
  info: RingInfo;
  object: string;
}

function listDir(dir: string, options: ListOptions): FoundRing[] {
  const rings: FoundRing[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isFile()) continue;
    // A name that reads as a System V target (sysv:…) is looked at by its path, as a user must give it.
    const target = dir === '/dev/shm' && !SYSV_PREFIX.test(entry.name) ? entry.name : path.join(dir, entry.name);
    // Empty: no ring, or one whose creator has not sized it yet (Region.open would wait a moment for that).
    if (fs.statSync(path.join(dir, entry.name), { throwIfNoEntry: false })?.size === 0) continue;
    try {
      // Not waited for while its sizing lock is held (openUnlessSizing): one such object would stall the listing.
      const { info, object } = examine(target, path.join(dir, entry.name));
      if (info) rings.push({ info, object: object! });
    } catch (err) {
      // Not readable by us, vanished meanwhile, being sized: passed over, and said. Anything else (no backend
      // to map with, above all) would make every ring look absent: it is the listing's error.
      if (!passedOver(err)) throw err;
      options.onPassedOver?.(target, err as Error & { code: string });
    }
  }
  return rings;
}

/**
 * True when nobody holds the ring: no ring object of any process, in any
 * PID namespace, is attached to it (its HOLDER lock is free) and no other
 * Region has its object open by name (openByName); for a ring in
 * a System V segment, no process but the inspecting one has the segment
 * attached. Where the region cannot tell (no file to lock, no
 * /proc/sysvipc), when no process that ever attached is alive by its pid.
 */
export function isStale(info: RingInfo): boolean {
  if (info.openByName === true) return false;
  if (info.held !== undefined) return !info.held;
  return [info.creator, info.producer, info.consumer].every((p) => p === undefined || !p.alive);
}

/**
 * Removes the rings nobody holds (isStale): POSIX objects (or the files of
 * `dir`) are unlinked, System V segments (when no `dir` is given) are
 * marked for removal (IPC_RMID: gone at their last detach). Returns the
 * names removed (or that would be, with dryRun). A stale ring this process
 * may not remove (another user's, in a sticky directory such as /dev/shm;
 * a segment it does not own) is left, and the others are still removed:
 * `onSkipped` is told of each such ring with an Error whose code is the
 * errno name (EPERM, EACCES). A dry run lists it, not knowing.
 * `onPassedOver` is told of each object the listing could not look at
 * (ListOptions): nothing is removed of it.
 */
export function unlinkStale(
  options: { dir?: string; dryRun?: boolean; onSkipped?: (name: string, error: Error & { code: string }) => void } & ListOptions = {},
): string[] {
  const dir = options.dir ?? '/dev/shm';
  const removed: string[] = [];
  const listing = options.onPassedOver === undefined ? {} : { onPassedOver: options.onPassedOver };
  for (const found of listStale(options.dir, listing)) {
    if (options.dryRun) {
      removed.push(found.info.name);
      continue;
    }
    try {
      if (removeStale(found, dir)) removed.push(found.info.name);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'EPERM' && code !== 'EACCES') throw err;
      options.onSkipped?.(found.info.name, notPermitted(found.info.name, err as Error & { code: string }));
    }
  }
  return removed;
}

/** The typed error of a stale ring this process may not remove (unlinkStale's onSkipped). */
function notPermitted(name: string, err: Error & { code: string }): ShmringError {
  return new ShmringError(
    err.code,
    `the stale ring ${name} could not be removed (${err.code}: it belongs to another user, or its directory does not let this one remove it); ` +
      'run shmring unlink-stale as its owner (or root)',
    { cause: err },
  );
}

/** The stale rings (isStale) of listRings(dir, options), each with the object its name led to (none for a System V segment). */
export function listStale(dir?: string, options: ListOptions = {}): (FoundRing | { info: RingInfo; object?: undefined })[] {
  const named = listDir(dir ?? '/dev/shm', options);
  const all = dir === undefined ? [...named, ...listSysvRings(options).map((info) => ({ info }))] : named;
  return all.filter((found) => isStale(found.info));
}

/**
 * Removes one ring listStale() found, if it still is what was found: the
 * listing took a while, and meanwhile the name may have been unlinked and
 * given to a new, live ring, or someone may have attached the old one. So
 * the name is opened again just before: it must lead to the same object
 * (device and inode) and that object must still be stale (the listing's
 * check, HOLDER lock and all); a System V segment (removed by id, which
 * the kernel does not hand out again soon) must still have nobody
 * attached. Otherwise it is skipped (false); false too if it is gone.
 *
 * A name is then unlinked under two exclusive open file description
 * locks on a description of its own (unlinkLocked): the object's name
 * lock (NAME_LOCK_BYTE, which every Region opened or created by the name
 * holds shared while it is open) and the ring's HOLDER lock. Taking them
 * proves that no Region has the object open by name and no ring object
 * holds it; holding them until after the unlink means no Region.open can
 * complete and no attach can take the ring in between: an open that got
 * the fd meanwhile waits, finds that its object lost the name, and opens
 * the name again (core's openNamed). A ring whose region a process has
 * open, attached or not, is therefore left for a later run.
 */
export function removeStale(found: { info: RingInfo; object?: string }, dir = '/dev/shm'): boolean {
  const { info } = found;
  const target = info.sysvId !== undefined ? `sysv-id:${info.sysvId}` : info.name;
  let now: { info: RingInfo | undefined; object?: string };
  try {
    now = examine(target);
  } catch {
    return false; // gone meanwhile, or no longer something we can open: not the ring found
  }
  if (now.info === undefined || !isStale(now.info) || now.object !== found.object) return false;
  try {
    if (info.sysvId !== undefined) return removeSegment(info.sysvId);
    return unlinkLocked(info.name.includes('/') ? info.name : path.join(dir, info.name), found.object!);
  } catch (err) {
    // Gone meanwhile: ENOENT for a name, EINVAL / EIDRM for a segment id.
    if (!['ENOENT', 'EINVAL', 'EIDRM'].includes((err as { code?: string }).code ?? '')) throw err;
    return false;
  }
}

/**
 * Unlinks `file` if it still leads to `object` (`dev:ino`) and nobody has
 * that object open by name or holds its ring, deciding and unlinking
 * under its exclusive name and HOLDER locks (see removeStale). Where the
 * locks cannot be taken (the file cannot be opened for writing, which an
 * exclusive lock needs, or its file system has no OFD locks), it unlinks
 * after the checks alone, as before: the window between them and the
 * unlink stays open there.
 */
function unlinkLocked(file: string, object: string): boolean {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT') return false;
    if (code !== 'EACCES' && code !== 'EPERM') throw err;
    // Read-only to us: no exclusive lock to take (see above). Still the object found stale, at least.
    const st = fs.lstatSync(file, { bigint: true, throwIfNoEntry: false });
    if (st === undefined || `${st.dev}:${st.ino}` !== object) return false;
    fs.unlinkSync(file);
    return true;
  }
  try {
    const named = lockFileByte(fd, NAME_LOCK_BYTE);
    if (named === false) return false; // a Region has it open by name: its owner may attach any moment
    if (named === true && lockFileByte(fd, L.HOLDER_LOCK_OFFSET) === false) return false; // attached since the check
    const mine = fs.fstatSync(fd, { bigint: true });
    // Still the object found stale, and still the one the entry to be unlinked names.
    if (`${mine.dev}:${mine.ino}` !== object || !namesObject(fd, file, false)) return false;
    fs.unlinkSync(file);
    return true;
  } finally {
    fs.closeSync(fd); // lets go of both locks: an open waiting for them finds the name gone
  }
}

/**
 * Marks System V segment `id` for removal (through a read-only attach, which IPC_RMID does not need), if
 * nobody but this attach holds it now: a process may have attached since removeStale's examine (System V
 * has no locks; this narrows that window to two system calls). False if someone did.
 */
function removeSegment(id: number): boolean {
  const region = Region.open({ backing: 'sysv', id, readOnly: true });
  try {
    if (othersAttached(id)) return false;
    region.unlink();
    return true;
  } finally {
    region.close();
  }
}
