/**
 * What every queue kind shares: the waiting verbs (Sync, async, for
 * await, messages()), closing, and the streams, all built on the two
 * non-blocking verbs each queue implements (tryWrite / tryRead), and the
 * readiness checks select uses (readReady / writeReady).
 *
 * Contract of the shared verbs:
 *  - Arguments and wait options are checked first, before anything is
 *    taken, written or waited on, and whether or not the call would wait:
 *    ERR_SHMRING_INVALID_ARGUMENT, a TypeError for a wrong type, a
 *    RangeError for a wrong value, naming the verb and the option.
 *  - Once this object is closed, or its region is, every verb throws
 *    ERR_SHMRING_CLOSED (but close() and detach() themselves, and an
 *    SpscRing's cork(), uncork(), holdReads() and rewindReads(), which
 *    then do nothing, so that cleanup code may call them); a wait pending when a mapped region is closed
 *    (its memory detached under it) rejects with it too, never with the
 *    TypeError a detached view throws. close() ends this object at once,
 *    its reads included; what it published stays readable through any
 *    other object attached to the ring. close() and detach() wake the
 *    ring's parked waits, so this object's own pending ones (select's
 *    too) end with ERR_SHMRING_CLOSED at once.
 *  - A parked side asks producerAlive() / consumerAlive() at each check
 *    period; false means no message (room) can come any more.
 */
import * as fs from 'node:fs';
import { Readable, Writable } from 'node:stream';
import {
  abortError,
  checkBoolean,
  checkOptionNames,
  clearTimer,
  ErrorCodes,
  ShmringError,
  ShmringRangeError,
  ShmringTypeError,
  shown,
  startTimer,
  type Timer,
  unwatchAbort,
  watchAbort,
  type Region,
} from '@shmring/core';
import * as L from './layout.js';
import {
  holdingKey,
  inOnePass,
  isAlive,
  noteHolding,
  othersAttached,
  ownStartTime,
  ownThread,
  registerInWord,
  registrantAlive,
  seenHolding,
  type Registrant,
} from './liveness.js';
import { CallLine } from './call-line.js';
import { PollPacer, SpinPacer } from './pacing.js';
import type { Role, Roles } from './roles.js';
import {
  parkAsync,
  parkSync,
  timedOut,
  unparkAll,
  WaitStop,
  waitCounters,
  type PeerGone,
  type QueuedOptions,
  type Settle,
  type WaitBlock,
  type WaitOptions,
} from './waiting.js';

/** What a write that found room returns: one settled promise for all of them. */
const RESOLVED: Promise<void> = Promise.resolve();

export type { WaitOptions };

export interface WriteOptions extends WaitOptions {
  /** Message type, an integer in [0, 2^31 - 1]; default 0. */
  type?: number;
}

/** A value as an error message shows it (core's: strings quoted, so `'5'` does not read as the number 5). */
export { shown };

/** Checks that a write's message is bytes, naming the verb (`what`) that was called. */
function checkBytes(bytes: unknown, what: string): void {
  if (!(bytes instanceof Uint8Array)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${what} needs a Uint8Array (or Buffer), got ${shown(bytes)}`);
  }
}

/**
 * Checks a message type: an integer (TypeError otherwise) in [0, MAX_TYPE]
 * (RangeError otherwise); the error names the verb that was given it when
 * `verb` says (`SpscRing.tryWrite: type=-1 …`).
 */
export function checkType(type: number, verb: string): void {
  // typeof first: `>>>` throws V8's own TypeError on a BigInt or a Symbol.
  if (typeof type !== 'number' || type >>> 0 !== type || type > L.MAX_TYPE) {
    const who = `${verb}: `;
    if (typeof type !== 'number' || !Number.isInteger(type)) {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${who}type=${shown(type)} must be an integer in [0, ${L.MAX_TYPE}]`);
    }
    throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${who}type=${type} must be an integer in [0, ${L.MAX_TYPE}]`);
  }
}

/**
 * Checks a time option (ms or µs) of a wait, if given: a number (TypeError
 * otherwise) >= 0, and finite unless `infinite` allows Infinity (RangeError
 * otherwise; NaN included).
 */
function checkTime(verb: string, name: string, value: unknown, unit: string, infinite: boolean): void {
  if (value === undefined) return;
  if (typeof value !== 'number') {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: ${name}=${shown(value)} must be a number of ${unit}`);
  }
  if (!(value >= 0) || (!infinite && value === Infinity)) {
    throw new ShmringRangeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: ${name}=${value} must be a number of ${unit} >= 0${infinite ? ' (or Infinity)' : ', finite'}`,
    );
  }
}

/**
 * Checks the options of a waiting verb before it does anything: each option
 * of the wrong type is a ShmringTypeError, out of range a ShmringRangeError,
 * both ERR_SHMRING_INVALID_ARGUMENT and naming the option. Checked whether
 * the call would wait or not, so a wrong option never goes unnoticed until
 * the day the ring is empty. The verbs' fast path: comparisons only; the
 * errors are made by explainWaitOptions.
 */
export function checkWaitOptions(options: WriteOptions | undefined, verb: string, known: OptionNames): void {
  if (options === undefined) return;
  if (typeof options === 'object' && options !== null) {
    const { timeoutMs, peerTimeoutMs, spin, poll, signal, type, ref } = options;
    if (
      (timeoutMs === undefined || (typeof timeoutMs === 'number' && timeoutMs >= 0)) &&
      (peerTimeoutMs === undefined || (typeof peerTimeoutMs === 'number' && peerTimeoutMs >= 0)) &&
      (spin === undefined || (typeof spin === 'number' && spin >= 0 && spin !== Infinity)) &&
      (poll === undefined || (typeof poll === 'number' && poll >= 0)) &&
      (signal === undefined || signal instanceof AbortSignal) &&
      (ref === undefined || typeof ref === 'boolean') &&
      (type === undefined || (typeof type === 'number' && type >>> 0 === type && type <= L.MAX_TYPE))
    ) {
      // The names of an object seen last time are not walked again: walking them cost 50-75 ns a call
      // (write + readSync with one options object: 154-193 ns a pair without, 277-376 with, in one run).
      // So a name added to that very object after it was passed is not seen; any other object is checked.
      // One memo per list of names: an object that passed a write's names (type) may not pass a read's.
      if (options !== known.walked) {
        checkOptionNames(options, known.names, verb);
        known.walked = options;
      }
      return;
    }
  }
  explainWaitOptions(options, verb, known);
}

/** ERR_SHMRING_MESSAGE_TOO_LARGE of `verb` (`SpscRing.writeSync`) for a message of `length` bytes, `max` the largest. */
export function tooLargeError(verb: string, length: number, max: number): ShmringRangeError {
  return new ShmringRangeError(
    ErrorCodes.MESSAGE_TOO_LARGE,
    `${verb}: length=${length} is larger than the largest message this ring takes (maxMessageLength=${max}); ` +
      'send smaller messages, or create the ring with a larger capacity',
  );
}

/**
 * The option names of a waiting verb, exactly those it uses: checkWaitOptions
 * refuses any other (a `timeout` would never time out; a `ref` given to a
 * Sync verb would do nothing). `walked` is the options object whose names
 * were walked against these last (this thread's; it holds that one object).
 */
export interface OptionNames {
  readonly names: readonly string[];
  walked: object | undefined;
}

export function optionNames(...names: string[]): OptionNames {
  return { names, walked: undefined };
}

/** The Sync verbs take no `poll` or `ref`: they are the Promise verbs' (parkSync looks at neither); `type` is the writes'. */
const READ_SYNC_OPTIONS = optionNames('timeoutMs', 'peerTimeoutMs', 'spin', 'signal');
const WRITE_SYNC_OPTIONS = optionNames('timeoutMs', 'peerTimeoutMs', 'spin', 'signal', 'type');
/** read, waitReadable, messages; and write. */
const READ_OPTIONS = optionNames('timeoutMs', 'peerTimeoutMs', 'spin', 'poll', 'signal', 'ref');
const WRITE_OPTIONS = optionNames('timeoutMs', 'peerTimeoutMs', 'spin', 'poll', 'signal', 'ref', 'type');

/** checkWaitOptions' slow path: throws the error of the first wrong option (returns if none is wrong, e.g. a signal from another realm). */
function explainWaitOptions(options: WriteOptions, verb: string, known: OptionNames): void {
  if (options === null || typeof options !== 'object') {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: options=${shown(options)} must be an object`);
  }
  // The names first: a bad value of an option the verb does not take is not what is wrong with it.
  checkOptionNames(options, known.names, verb);
  checkTime(verb, 'timeoutMs', options.timeoutMs, 'ms', true);
  checkTime(verb, 'peerTimeoutMs', options.peerTimeoutMs, 'ms', true);
  checkTime(verb, 'spin', options.spin, 'µs', false); // Infinity would spin past timeoutMs, abort and a dead peer
  checkTime(verb, 'poll', options.poll, 'µs', true);
  checkSignal(verb, options.signal);
  checkBoolean('ref', options.ref, verb);
  if (options.type !== undefined) checkType(options.type, verb);
}

/** Checks a `signal` option, if given: an AbortSignal (looked at as one, so another realm's passes). */
function checkSignal(verb: string, signal: unknown): void {
  if (
    signal !== undefined &&
    (signal === null ||
      typeof signal !== 'object' ||
      !('aborted' in signal) ||
      typeof (signal as AbortSignal).addEventListener !== 'function')
  ) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: signal=${shown(signal)} must be an AbortSignal`);
  }
}

/** The options of readable() and writable(): Node's streams would ignore any other name. */
const READABLE_OPTION_NAMES: readonly string[] = ['highWaterMark', 'signal'];
const WRITABLE_OPTION_NAMES: readonly string[] = ['highWaterMark', 'signal', 'closeOnFinish'];

/**
 * Checks the options of readable() or writable() as the waiting verbs'
 * are checked (names, then types and ranges, naming the verb), before
 * Node's stream sees them: it would throw its own ERR_INVALID_ARG_VALUE or
 * ERR_INVALID_ARG_TYPE for a bad value, and ignore a misspelt name.
 */
function checkStreamOptions(options: unknown, verb: string, names: readonly string[]): void {
  if (options === null || typeof options !== 'object') {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: options=${shown(options)} must be an object`);
  }
  checkOptionNames(options, names, verb);
  const { highWaterMark, signal, closeOnFinish } = options as { highWaterMark?: unknown; signal?: unknown; closeOnFinish?: unknown };
  if (highWaterMark !== undefined) {
    const rule = 'must be an integer >= 0 (messages the stream buffers)';
    if (typeof highWaterMark !== 'number' || !Number.isInteger(highWaterMark)) {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: highWaterMark=${shown(highWaterMark)} ${rule}`);
    }
    if (highWaterMark < 0) throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: highWaterMark=${highWaterMark} ${rule}`);
  }
  checkSignal(verb, signal);
  checkBoolean('closeOnFinish', closeOnFinish, verb);
}

/**
 * Checks drain()'s arguments before it takes anything (a record handed to a
 * handler that is not a function would be consumed and lost): a function,
 * and a limit that is an integer >= 0 or Infinity. Returns the limit.
 */
export function checkDrain(handler: unknown, limit: unknown, verb: string): number {
  if (typeof handler !== 'function') {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: handler=${shown(handler)} must be a function (data, offset, length, type) => void`,
    );
  }
  if (limit === undefined || limit === Infinity) return Infinity;
  if (typeof limit !== 'number' || !Number.isInteger(limit)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: limit=${shown(limit)} must be an integer >= 0 (or Infinity)`);
  }
  if (limit < 0) throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: limit=${limit} must be >= 0`);
  return limit;
}

/**
 * Whether `err` is V8's own TypeError from an Atomics call on a detached
 * view (no `code`): what a wait meets when its region is closed under it.
 */
export function isDetachedAccess(err: unknown): boolean {
  return err instanceof TypeError && (err as { code?: unknown }).code === undefined;
}

/** Readers parked on an empty ring. */
export const READ_BLOCK: WaitBlock = { waiters: L.READ_WAITERS_I32, signal: L.READ_SIGNAL_I32 };
/** Writers parked on a full ring. */
export const WRITE_BLOCK: WaitBlock = { waiters: L.WRITE_WAITERS_I32, signal: L.WRITE_SIGNAL_I32 };

/** An empty view: a closed queue swaps its views for these, so every verb sees length 0. */
export const CLOSED_I32 = new Int32Array(0);
export const CLOSED_U8 = new Uint8Array(0);

/**
 * Where a ring that has no role locks lives, as this thread's claims know
 * it (`claimed` below): its SharedArrayBuffer (sabIds), its System V
 * segment's id, or its file's device and inode (a region whose file cannot
 * be reopened for locks), and its offset. Undefined for a ring with locks
 * (`roles`).
 */
export function claimPlace(region: Region, base: number, roles: Roles | undefined): string | undefined {
  if (roles !== undefined) return undefined;
  const buffer = region.buffer;
  if (buffer instanceof SharedArrayBuffer) {
    let id = sabIds.get(buffer);
    if (id === undefined) sabIds.set(buffer, (id = ++lastSabId));
    return `sab:${id}@${base}`;
  }
  if (region.backing === 'sysv') return `sysv:${region.id}@${base}`;
  if (region.fd < 0) return undefined;
  const stat = fs.fstatSync(region.fd);
  return `file:${stat.dev}:${stat.ino}@${base}`;
}

/**
 * Where a ring is: as this thread's claims and shares key it (claimPlace),
 * as its errors name it (ringWhere), and the command that shows who holds
 * it (inspectHint).
 */
export interface RingSite {
  readonly place: string | undefined;
  readonly where: string;
  /** The end of an error's sentence that says how to see who holds the ring (inspectHint), as of the error. */
  readonly look: () => string;
  /** The System V segment's id of a ring in one (no role locks), for othersAttached. */
  readonly sysvId?: number | undefined;
}

export function ringSite(region: Region, base: number, roles: Roles | undefined): RingSite {
  return {
    place: claimPlace(region, base, roles),
    where: ringWhere(region, base),
    look: () => inspectHint(region, base),
    sysvId: roles === undefined && region.backing === 'sysv' ? region.id : undefined,
  };
}

/**
 * The ring at `base` of `region` as an error names it: its region's name,
 * path, System V key or id (what Region.open takes), and its offset;
 * `noun` names the ring's kind where the sentence needs it.
 */
export function ringWhere(region: Region, base: number, noun = 'ring'): string {
  return `the ${noun} in ${regionWhere(region)}${base === 0 ? '' : ` at offset ${base}`}`;
}

/**
 * The region as an error names it: its name, path, System V key or id
 * (what Region.open takes), or for a memfd its fd and our pid.
 */
export function regionWhere(region: Region): string {
  switch (region.backing) {
    case 'posix':
      return `POSIX shared memory object '${inspectTarget(region)}'`;
    case 'file':
      return `file '${region.path}'`;
    case 'sysv':
      return `System V segment ${region.key === undefined ? '' : `key ${hexKey(region.key)} `}(id ${region.id})`;
    case 'sab':
      return 'a SharedArrayBuffer';
    default:
      return `a ${region.backing} region (fd ${region.fd} of pid ${process.pid})`;
  }
}

/**
 * The end of an error's sentence: how `shmring inspect` shows who holds the
 * ring; '' where it cannot: no name, not at offset 0, or a POSIX name or
 * file that no longer exists (unlinked: inspect would say ENOENT).
 */
export function inspectHint(region: Region, base: number): string {
  const target = inspectTarget(region);
  if (target === undefined || base !== 0) return '';
  if (region.backing === 'posix' || region.backing === 'file') {
    if (!fs.existsSync(region.backing === 'posix' ? `/dev/shm/${target}` : target)) return '';
  }
  return ` (\`shmring inspect ${target}\` shows who holds it)`;
}

/** The region as `shmring inspect` names it, if it can. */
function inspectTarget(region: Region): string | undefined {
  switch (region.backing) {
    case 'posix':
      return (region.name ?? '').replace(/^\//, '');
    case 'file':
      return region.path;
    case 'sysv':
      return region.key === undefined ? `sysv-id:${region.id}` : `sysv:${hexKey(region.key)}`;
    default:
      return undefined;
  }
}

/** A System V key as `ipcs -m` and `shmring inspect` print it. */
function hexKey(key: number): string {
  return `0x${key.toString(16).padStart(8, '0')}`;
}

/**
 * A number for each SharedArrayBuffer this thread has seen, for claimPlace:
 * its memory has no file or id to name it by. It names the JS object, so
 * one SharedArrayBuffer posted twice to a thread (two objects over the
 * same memory) is two places there: post it once per thread.
 */
const sabIds = new WeakMap<SharedArrayBuffer, number>();
let lastSabId = 0;

/**
 * The exclusive roles this thread's ring objects claimed by a CAS of the
 * pid word (no locks: Queue.#claim), by place and role: the pid word names
 * a thread, not an object, so a second object of the same thread learns
 * here that the role is taken. Module state is per thread, as the claims are.
 */
const claimed = new Map<string, WeakRef<Queue>>();

/**
 * The objects of this thread that joined a shared role (MpscRing's
 * producers, MpmcQueue's) of one ring without locks, and the last other
 * registrant whose words one of them replaced (Queue.#join, #leave).
 */
interface Share {
  readonly objects: Set<WeakRef<Queue>>;
  before: Registrant | undefined;
}

/** This thread's Shares, by place and role (claimPlace); module state is per thread. */
const joined = new Map<string, Share>();

/** How long a registration waits for one caught half-written (another side between its CAS and its id store) before taking over. */
const REGISTERING_MS = 100;

/** Queue.#acts, for roleTaken (set in Queue's static block). */
let acts: (queue: Queue, role: Role) => boolean;

/**
 * Whether exclusive `role` of a ring without locks is held by someone else,
 * judged from its pid word's `holder` and `start` (docs/LAYOUT.md,
 * "Liveness"): another registrant that lives (`threads`: a thread of this
 * process, in a SharedArrayBuffer), or, where the word names this thread,
 * another live object of this thread that acts in the role at `place`.
 * 0 is free; so is a word of this thread that no live object of it claimed.
 */
export function roleTaken(role: Role, holder: number, start: number, place: string | undefined, threads: boolean): boolean {
  if (holder === 0) return false;
  if (Math.abs(holder) !== ownThread().id) return registrantAlive(holder, start, threads);
  const sibling = place === undefined ? undefined : claimed.get(`${place}:${role}`)?.deref();
  return sibling !== undefined && acts(sibling, role);
}

/** The default cancel of Queue.#later: the call rejects with the error. */
function rethrow(err: unknown): never {
  throw err;
}

/**
 * The options of a call that waited `waitedMs` in its side's line before it
 * started: its timeoutMs counts from the call, so what is left of it; the
 * caller's own stays in callerTimeoutMs, for the timeout's message.
 */
function afterQueue<O extends WaitOptions>(options: O | undefined, waitedMs: number): O | undefined {
  const timeoutMs = options?.timeoutMs;
  if (timeoutMs === undefined || timeoutMs === Infinity || waitedMs <= 0) return options;
  const left: QueuedOptions = { timeoutMs: Math.max(0, timeoutMs - waitedMs), callerTimeoutMs: timeoutMs };
  return { ...options, ...left } as O;
}

/**
 * In a watchdog pass, a wait whose registrant was seen holding the role of
 * another ring asks its own ring's lock every LOCK_CHECK_EVERY-th pass
 * (registeredAlive): with the default check period (a quarter of
 * peerTimeoutMs), once per peerTimeoutMs.
 */
const LOCK_CHECK_EVERY = 4;

export abstract class Queue implements AsyncIterable<Uint8Array> {
  static {
    acts = (queue, role) => queue.#acts(role);
  }

  /** The type of the message tryRead / readSync / read / the iterator returned last. */
  lastType = 0;
  /** @internal The wait block a reader of this kind parks in (MpscRing's adds what its producers ask of a sleeper). */
  readonly readBlock: WaitBlock = READ_BLOCK;
  /** Control words (header and blocks); length 0 once this side or its region is closed. */
  protected ctl: Int32Array;
  readonly #kind: string;
  /** The verbs' names for their errors, made once (not a string per wait). */
  readonly #names: {
    readonly read: string;
    readonly readSync: string;
    readonly write: string;
    readonly writeSync: string;
    readonly messages: string;
    readonly waitReadable: string;
  };
  /** This object has registered its process as the producer / the consumer. */
  protected isProducer = false;
  protected isConsumer = false;
  /** Adaptive spinning of this object's blocking reads and writes (see SpinPacer). */
  readonly #readPacer = new SpinPacer();
  readonly #writePacer = new SpinPacer();
  /** Whether this object's Promise reads and writes poll before parking (see PollPacer). */
  readonly #readPoll = new PollPacer();
  readonly #writePoll = new PollPacer();
  /** This object's Promise writes, and its Promise reads (read() and the iterators' next()), served in call order. */
  readonly #writeLine = new CallLine();
  readonly #readLine = new CallLine();

  /** This object's locks on the region's file (roles.ts); undefined where the region has no file. */
  protected readonly roles: Roles | undefined;
  /** claimPlace() of this ring: where roles are registered by a CAS of the pid word, and this thread's claims and shares kept. */
  readonly #place: string | undefined;
  /** ringWhere() and inspectHint() of this ring, for the errors that must name it. */
  readonly #where: string;
  readonly #look: () => string;
  /** What the other side is, as ERR_SHMRING_PEER_DEAD names it (peerDeadError). */
  readonly #peerNoun: string;
  /** The shared roles this object joined in a ring without locks (#join), each with its Share. */
  readonly #shares = new Map<Role, Share>();

  protected constructor(ctl: Int32Array, kind: string, roles: Roles | undefined, site: RingSite) {
    this.ctl = ctl;
    this.#kind = kind;
    this.roles = roles;
    this.#place = site.place;
    this.#where = site.where;
    this.#look = site.look;
    this.#sysvId = site.sysvId;
    // A role lock's holder is a process; a pid word's registrant (no file to lock) is a thread: in a
    // SharedArrayBuffer, a thread of this process (a worker), elsewhere (System V) a thread or process.
    this.#peerNoun = roles !== undefined ? 'process' : ctl.buffer instanceof SharedArrayBuffer ? 'thread' : 'thread or process';
    this.#names = {
      read: `${kind}.read`,
      readSync: `${kind}.readSync`,
      write: `${kind}.write`,
      writeSync: `${kind}.writeSync`,
      messages: `${kind}.messages`,
      waitReadable: `${kind}.waitReadable`,
    };
  }

  /**
   * Takes the producer role: its lock first (exclusive for SpscRing,
   * shared for MpmcQueue: `exclusive`), then the pid words, which inspect
   * shows. ERR_SHMRING_BUSY, taking nothing, if another live object of any
   * process is the ring's producer and the role is exclusive.
   */
  protected registerProducer(exclusive = true): void {
    this.#register('producer', exclusive, L.PRODUCER_PID_I32, L.PRODUCER_START_I32);
    this.isProducer = true;
  }

  /** The same for the consumer role. */
  protected registerConsumer(exclusive = true): void {
    this.#register('consumer', exclusive, L.CONSUMER_PID_I32, L.CONSUMER_START_I32);
    this.isConsumer = true;
  }

  #register(role: Role, exclusive: boolean, pidIndex: number, startIndex: number): void {
    if (this.roles !== undefined && !this.roles.take(role, exclusive)) {
      // Observes the holder's pid word, for the message only (it may be in another PID namespace).
      const pid = Atomics.load(this.ctl, pidIndex);
      throw new ShmringError(
        ErrorCodes.BUSY,
        `${this.#kind}: the ${role} role of ${this.#where} is held by another live object (pid ${pid} per the ring's header, perhaps in another PID namespace); ` +
          `a ${this.#kind} has one ${role}: close (or detach) that one first, or wait for its process to exit${this.#look()}`,
      );
    }
    const ctl = this.ctl;
    if (this.roles === undefined) {
      if (exclusive) this.#claim(role, pidIndex, startIndex, ctl.buffer instanceof SharedArrayBuffer);
      else this.#join(role, pidIndex, startIndex, ctl.buffer instanceof SharedArrayBuffer);
      return;
    }
    // After the lock: whoever sees the pid word set also finds the lock held (until its holder goes).
    // The start time is stored before the pid: a peer that reads the pid (below) then sees the matching start time.
    Atomics.store(ctl, startIndex, ownStartTime());
    Atomics.store(ctl, pidIndex, process.pid);
  }

  /**
   * Takes an exclusive role of a ring without locks (no file: a
   * SharedArrayBuffer, a System V segment) by a CAS on the role's pid word,
   * from 0 (free) or from a registrant that is gone, to this thread's id
   * negated ("registering": its start time is not stored yet), then the
   * start time, then the id (docs/LAYOUT.md, "Liveness"). A live other
   * registrant in the word is ERR_SHMRING_BUSY. A thread, not the process:
   * a worker that ends (or is terminated) is a dead peer while the process
   * lives on; the main thread's id is the pid, so a single-threaded
   * process registers its pid. In a SharedArrayBuffer (`threads`) the
   * registrant is a thread of this process (/proc/self/task); elsewhere a
   * thread of any process of this PID namespace (/proc/<id>). Either way a
   * second live object of this same thread is refused too (`claimed`,
   * roleTaken). A shared
   * role's words name one registrant of many: there the process stands for
   * all of its threads (#join).
   */
  #claim(role: Role, pidIndex: number, startIndex: number, threads: boolean): void {
    const ctl = this.ctl;
    const who = ownThread();
    registerInWord(ctl, pidIndex, startIndex, who, (holder, start) =>
      roleTaken(role, holder, start, this.#place, threads) ? this.#busy(role, holder, threads) : undefined,
    );
    if (this.#place !== undefined) claimed.set(`${this.#place}:${role}`, new WeakRef(this));
  }

  /**
   * Joins a shared role of a ring without locks (a System V segment; a
   * SharedArrayBuffer): its words name one registrant of many, the last to
   * join, and the process stands for all of its threads. Registered as
   * #claim registers (registerInWord: -pid, start time, pid), but never
   * refused, so two registrants never mix their words: one caught half-way
   * is waited for (it is a few instructions from done) unless it is dead.
   * Remembers the other registrant it replaced, for #leave.
   */
  #join(role: Role, pidIndex: number, startIndex: number, threads: boolean): void {
    const me = process.pid;
    const key = this.#place === undefined ? undefined : `${this.#place}:${role}`;
    const share = (key === undefined ? undefined : joined.get(key)) ?? { objects: new Set<WeakRef<Queue>>(), before: undefined };
    const deadline = performance.now() + REGISTERING_MS;
    const replaced = registerInWord(
      this.ctl,
      pidIndex,
      startIndex,
      { id: me, start: ownStartTime() },
      () => undefined, // a shared role: the last to join is named
      (holder) => holder < 0 && holder !== -me && performance.now() < deadline && registrantAlive(holder, 0, threads),
    );
    if (replaced.id > 0 && replaced.id !== me) share.before = replaced;
    share.objects.add(new WeakRef(this));
    if (key !== undefined) joined.set(key, share);
    this.#shares.set(role, share);
  }

  /**
   * Leaves a shared role #join joined. While another live object of this
   * thread acts in it, nothing changes. The last one gives the words back,
   * if they still name this process, to the registrant it replaced if that
   * one lives, else to 0 (none known: a waiting peer then waits for the
   * next, not reporting a death). Clearing them to 0 at every close would
   * hide the death of the producers registered before (a consumer's read
   * would time out instead of ending with ERR_SHMRING_PEER_DEAD); leaving
   * them would name a process that may exit while others still produce.
   * One word names one registrant: the role counts as alive while it
   * lives, so the death of a producer it does not name goes unseen, and
   * threads of this process share its pid: another thread still producing
   * is not counted once this thread's objects have left.
   */
  #leave(ctl: Int32Array, role: Role, pidIndex: number, startIndex: number, threads: boolean): void {
    const share = this.#shares.get(role);
    if (share === undefined) return;
    this.#shares.delete(role);
    for (const ref of share.objects) {
      const object = ref.deref();
      if (object === undefined || object === this || !object.#acts(role)) share.objects.delete(ref);
    }
    if (share.objects.size !== 0) return;
    if (this.#place !== undefined && joined.get(`${this.#place}:${role}`) === share) joined.delete(`${this.#place}:${role}`);
    const me = process.pid;
    const before = share.before;
    const back = before !== undefined && registrantAlive(before.id, before.start, threads) ? before : undefined;
    // Only our own registration is given back: a later registrant's stays. -pid: the words are being written.
    if (Atomics.compareExchange(ctl, pidIndex, me, -me) !== me) return;
    // The start time first, while the word reads -pid: whoever reads the restored id reads its start time.
    if (back !== undefined) Atomics.store(ctl, startIndex, back.start);
    // Publishes the restored registration (or none).
    Atomics.store(ctl, pidIndex, back === undefined ? 0 : back.id);
  }

  /**
   * Whether this object still acts in `role`: not closed or detached (its region not closed: ctl would read
   * length 0), or closed from a drain() handler whose drain() has not given up the roles yet (endDrain).
   */
  #acts(role: Role): boolean {
    return (this.ctl.length !== 0 || this.#letGoAfterDrain !== undefined) && (role === 'producer' ? this.isProducer : this.isConsumer);
  }

  #busy(role: Role, holder: number, threads: boolean): ShmringError {
    const who =
      Math.abs(holder) === ownThread().id
        ? 'another object of this thread'
        : threads
          ? 'another live thread of this process'
          : 'another live thread or process (or another object of this thread)';
    return new ShmringError(
      ErrorCodes.BUSY,
      `${this.#kind}: the ${role} role of ${this.#where} (no file to lock) is held by ${who}, ` +
        `id ${Math.abs(holder)} in its pid word; a ${this.#kind} has one ${role}: close (or detach) that one first, or end its thread or process${this.#look()}`,
    );
  }

  /**
   * Liveness of `role`: true while nobody ever registered (the peer may
   * still come); then whether anyone holds its lock (any process, any PID
   * namespace), or where the region has no file, whether the registered
   * process lives (pid and start time).
   */
  protected registeredAlive(role: Role, pidIndex: number, startIndex: number): boolean {
    const ctl = this.ctl;
    if (ctl.length === 0) return true;
    // Observes the peer's registration (its pid word is stored after its lock is taken and its start time stored).
    const pid = Atomics.load(ctl, pidIndex);
    if (pid === 0) return true;
    // Observes the registrant's start time (stored before its pid word).
    const start = Atomics.load(ctl, startIndex);
    if (this.roles === undefined) {
      if (registrantAlive(pid, start, ctl.buffer instanceof SharedArrayBuffer)) return true;
      // In a System V segment a shared role's words name only its last registrant: while another process
      // still has the segment attached, it may be one of the others (the kernel's count; a dead process
      // detaches). Where nothing tells, the words decide.
      return this.#sysvId !== undefined && this.sharedRole(role) && othersAttached(this.#sysvId);
    }
    // A watchdog pass over many parked waits asks one lock per registrant, not one per ring (a system call
    // each): a registrant seen holding this role of another ring in this pass is taken as alive. Its words
    // could name another process (an id and start tick reused in another PID namespace), so this ring's own
    // lock is asked one pass in LOCK_CHECK_EVERY all the same: such a death is noticed a few passes late, never missed.
    const key = this.#holdingKey(role, pid, start);
    if (seenHolding(key) && ++this.#locksNotAsked % LOCK_CHECK_EVERY !== 0) return true;
    waitCounters.peerLocks++;
    const held = this.roles.held(role);
    if (held) noteHolding(key);
    return held;
  }

  /**
   * Whether anyone holds shared `role` (MpscRing's producers) of a ring with
   * role locks: its lock, asked of the kernel. In a watchdog pass (many
   * parked waits) a live registrant in the role's words (alive by /proc,
   * read once a pass per process) stands for the answer, and the lock is
   * asked one pass in LOCK_CHECK_EVERY: the words name the last to
   * register, who may have left while another held the role (the words
   * stay then), so a death of that other is seen a few passes late, never
   * missed. Outside a pass (/proc would cost more than the lock) and for a
   * registrant /proc cannot judge (another PID namespace), the lock.
   */
  protected sharedRoleHeld(role: Role, pidIndex: number, startIndex: number): boolean {
    if (inOnePass()) {
      // Observes the last registration (its pid word, stored after its lock was taken).
      const pid = Atomics.load(this.ctl, pidIndex);
      // Observes that registrant's start time (stored before its pid word, so it matches the pid read above).
      const start = Atomics.load(this.ctl, startIndex);
      if (pid > 0 && isAlive(pid, start) && ++this.#locksNotAsked % LOCK_CHECK_EVERY !== 0) return true;
    }
    waitCounters.peerLocks++;
    return this.roles!.held(role);
  }

  /** The System V segment of a ring in one (RingSite.sysvId). */
  readonly #sysvId: number | undefined;

  /**
   * Whether `role` is shared (any number of live holders): MpmcQueue's
   * roles, an MpscRing's producers. In a ring without locks its words name
   * one registrant of many.
   */
  protected sharedRole(_role: Role): boolean {
    return false;
  }

  /** Lock checks registeredAlive left out (seenHolding) on this object; every LOCK_CHECK_EVERY-th is asked. */
  // A random phase: a pass over many parked waits asks about a quarter of their locks, not all of them every
  // fourth pass (1000 waits: a 4 to 10 ms stall of the event loop once a second), however the objects were made.
  #locksNotAsked = Math.floor(Math.random() * LOCK_CHECK_EVERY);
  /** The last holdingKey made, and what it was made of: a parked wait asks for the same one pass after pass. */
  #heldKey = { role: '', pid: 0, start: 0, key: '' };

  #holdingKey(role: Role, pid: number, start: number): string {
    const k = this.#heldKey;
    if (k.role !== role || k.pid !== pid || k.start !== start) this.#heldKey = { role, pid, start, key: holdingKey(role, pid, start) };
    return this.#heldKey.key;
  }

  /**
   * Called by a parked reader whose check period passed without progress:
   * false means no message can come any more (ERR_SHMRING_PEER_DEAD).
   * SpscRing: is the registered producer alive? MpmcQueue overrides it: it
   * recovers the slots of dead producers, and says whether any registered
   * producer is left.
   */
  protected producerAlive(): boolean {
    return this.registeredAlive('producer', L.PRODUCER_PID_I32, L.PRODUCER_START_I32);
  }

  /** The same for a parked writer and the consumer. */
  protected consumerAlive(): boolean {
    return this.registeredAlive('consumer', L.CONSUMER_PID_I32, L.CONSUMER_START_I32);
  }

  readonly #producerAlive = (): boolean => this.producerAlive();
  /** A parked read's look on the watchdog's timer (parkAsync's `ready`), bound once. */
  readonly #recordReadyFn = (): boolean => this.recordReady();
  readonly #consumerAlive = (): boolean => this.consumerAlive();

  /**
   * ERR_SHMRING_PEER_DEAD of a wait that found the other side gone (`what`
   * names the verb, or select and its entry): names the ring as the CLOSED
   * errors do, and its peer as a process (a role lock's holder) or a thread
   * (a SharedArrayBuffer ring's registrant: a worker that ended).
   * `reading`: a reader whose producers are gone, else a writer whose
   * consumers are.
   */
  protected peerDeadError(what: string, reading: boolean): ShmringError {
    const noun = this.#peerNoun;
    const broadcast = this.#kind === 'Broadcast';
    const peer = reading ? (broadcast ? 'publisher' : 'producer') : broadcast ? 'subscriber' : 'consumer';
    const ended = noun === 'thread' ? 'has ended (its worker exited or was terminated)' : 'has died';
    return new ShmringError(
      ErrorCodes.PEER_DEAD,
      `${what}: the ${noun} on the other side of ${this.#where} ${ended}; nothing more will ${reading ? 'arrive' : 'be taken'}: ` +
        `start a new ${peer}, or close the ring${this.#look()}`,
    );
  }

  readonly #producerGone: PeerGone = (what) => this.peerDeadError(what, true);
  readonly #consumerGone: PeerGone = (what) => this.peerDeadError(what, false);

  /** Publishes what this object holds back (SpscRing.cork); close() calls it first. */
  protected flush(): void {}

  // ---- select's look at this object (select.ts): each kind reads its own layout ----

  /**
   * select: whether a read through this object would not wait now (a
   * message is there, or the ring is closed). A snapshot; takes nothing.
   * On a region closed under it, the TypeError of a detached view (select
   * reports ERR_SHMRING_CLOSED).
   */
  protected readReady(): boolean {
    return (this.closedFlag() && !this.claimsPending()) || this.recordReady();
  }

  /**
   * Whether positions were claimed that no read has taken yet (MpmcQueue):
   * after the closed flag, a read that finds nothing waits for them, since a
   * producer that claimed before the close still publishes (or, dead, has
   * its slot skipped by a parked reader's check). False for the other kinds,
   * whose claims are their one producer's own.
   */
  protected claimsPending(): boolean {
    return false;
  }

  /**
   * Whether a read through this object would take something now: a
   * message, or a record it reports (ERR_SHMRING_CORRUPT) or steps past (a
   * dead producer's claim, a lapped subscriber's jump). A snapshot; takes
   * nothing. readReady without the closed flag; waitReadable()'s attempt.
   */
  protected abstract recordReady(): boolean;

  /** select: whether a write of `length` bytes through this object would not wait now (room for it, or closed). */
  protected abstract writeReady(length: number): boolean;

  /**
   * select's check of an entry: for a write entry (`write`), the largest
   * message this object writes; -1 if this object has no such verb (a
   * Broadcast's publisher reads nothing, its subscribers write nothing).
   */
  protected abstract selectLimit(write: boolean): number;

  /**
   * ERR_SHMRING_MESSAGE_TOO_LARGE for a message of `length` bytes given to
   * `verb` (`SpscRing.writeSync`): names the largest message this object
   * writes (selectLimit) and what to do. MpmcQueue names its slotSize.
   */
  protected tooLarge(length: number, verb: string): ShmringRangeError {
    return tooLargeError(verb, length, this.selectLimit(true));
  }

  /**
   * writeSync's and write's own check of the length, before tryWrite, so
   * the error names the verb called; an object that writes nothing
   * (selectLimit -1) has its own write verbs.
   */
  #checkLength(bytes: Uint8Array, verb: string): void {
    const largest = this.selectLimit(true);
    if (bytes.length > largest && largest >= 0) throw this.tooLarge(bytes.length, verb);
  }

  /** Whether either side closed the ring: the readiness checks' first look. */
  protected closedFlag(): boolean {
    // Observes close()'s Atomics.or of FLAGS: a closed ring's verbs no longer wait (a reader still drains what is left).
    return (Atomics.load(this.ctl, L.FLAGS_I32) & L.FLAG_CLOSED) !== 0;
  }

  abstract tryWrite(bytes: Uint8Array, type?: number): boolean;
  abstract tryRead(): Uint8Array | null;
  /** Swaps every view of the ring for an empty one. */
  protected abstract dropViews(): void;

  /** The error every verb throws once this side (or its region) is closed. */
  protected closedError(): ShmringError {
    return new ShmringError(
      ErrorCodes.CLOSED,
      `${this.#kind}: this object of ${this.#where} is closed (or its region is); ${this.replacement()} to go on`,
    );
  }

  /** How closedError says to get a new object of this kind: a Broadcast's ends are not attached. */
  protected replacement(): string {
    return 'attach a new one';
  }

  /** True once either side closed the ring (a snapshot). */
  get closed(): boolean {
    const ctl = this.ctl;
    // Observes close()'s flag; readers still drain what was published before it.
    return ctl.length === 0 || (Atomics.load(ctl, L.FLAGS_I32) & L.FLAG_CLOSED) !== 0;
  }

  /** The ring, named as errors name it (the region it is in, and where). */
  protected get where(): string {
    return this.#where;
  }

  #peerClosedError(reading: boolean): ShmringError {
    return new ShmringError(
      ErrorCodes.CLOSED,
      `${this.#kind}: ${this.#where} was closed by the other side; ${reading ? 'everything it sent was read' : 'nothing more can be written'}`,
    );
  }

  /** ERR_SHMRING_CLOSED for a read (`reading`) or a write that finds the ring closed. */
  #throwClosed(reading = false): never {
    throw this.closedNow(reading);
  }

  /** The ERR_SHMRING_CLOSED of a read (`reading`) or a write that finds the ring closed: by this object, or by another side. */
  protected closedNow(reading = false): ShmringError {
    return this.ctl.length === 0 ? this.closedError() : this.#peerClosedError(reading);
  }

  /**
   * What a wait that failed throws: ERR_SHMRING_CLOSED if the region was
   * closed under it. Region.close() detaches the memory of a mapped region
   * and ends the futex waits on it; the wait's last Atomics on the detached
   * view (withdrawing its announcement) then throw a raw TypeError, which no
   * caller should have to know about.
   */
  #failure(err: unknown): unknown {
    return isDetachedAccess(err) && this.ctl.length === 0 ? this.closedError() : err;
  }

  /**
   * A waiting write's attempt: the flag first, as at the write's start (LAYOUT.md "The closed flag"):
   * a write woken by the room a consumer freed just before its close() fails, not writes after it.
   */
  #writeAttempt(bytes: Uint8Array, type: number): true | undefined {
    if (this.closed) this.#throwClosed();
    return this.tryWrite(bytes, type) ? true : undefined;
  }

  /**
   * A read's attempt, bound once: every wait of a read passes it, no closure
   * per call. Returns the next message, or undefined while the ring is empty
   * and open; throws ERR_SHMRING_CLOSED once it is closed and drained.
   */
  readonly #readAttemptFn = (): Uint8Array | undefined => {
    const message = this.tryRead();
    if (message !== null) return message;
    return this.closed ? this.#lastRead() : undefined;
  };

  /** #readAttemptFn found the ring empty and closed: the last message, undefined while claims are pending, or ERR_SHMRING_CLOSED. */
  #lastRead(): Uint8Array | undefined {
    // The writer may have published its last message between our tryRead and
    // its close(); having seen the flag, one more read sees that message.
    const last = this.ctl.length === 0 ? null : this.tryRead();
    if (last !== null) return last;
    if (this.ctl.length !== 0 && this.claimsPending()) return undefined;
    this.#throwClosed(true);
  }

  /**
   * A waitReadable() of this object that did not find its record at once
   * (it spun, polled or parked) resolved, and no drain() has taken records
   * since: the next drain takes what that wait announced.
   */
  #readAnnounced = false;

  /**
   * A drain() of this object took records: its readers are busy now
   * (PollPacer), unless the drain takes what a waitReadable() that waited
   * announced. That drain completes the wait, whose length the pacer keeps:
   * a side that waits long between messages (a server's pump between
   * requests 1 ms apart) must not be judged busy by the drain that follows
   * each wake-up, or its next wait polls in vain, holding the CPU the peer
   * it just answered is often woken on.
   */
  protected drained(): void {
    if (this.#readAnnounced) this.#readAnnounced = false;
    else this.#readPoll.gotAtOnce();
  }

  /** Writes one message, parking the thread while the ring is full. Throws ERR_SHMRING_CLOSED once closed. */
  writeSync(bytes: Uint8Array, options?: Omit<WriteOptions, 'poll' | 'ref'>): void {
    checkWaitOptions(options, this.#names.writeSync, WRITE_SYNC_OPTIONS);
    checkBytes(bytes, this.#names.writeSync);
    this.#checkLength(bytes, this.#names.writeSync);
    const type = options?.type ?? 0;
    if (this.closed) this.#throwClosed();
    if (this.tryWrite(bytes, type)) return;
    try {
      parkSync(
        this.ctl,
        WRITE_BLOCK,
        () => this.#writeAttempt(bytes, type),
        options,
        this.#names.writeSync,
        this.#consumerAlive,
        this.#writePacer,
        this.#consumerGone,
      );
    } catch (err) {
      throw this.#failure(err);
    }
  }

  /** Reads one message, parking the thread while the ring is empty. Throws ERR_SHMRING_CLOSED once closed and drained. */
  readSync(options?: Omit<WaitOptions, 'poll' | 'ref'>): Uint8Array {
    checkWaitOptions(options, this.#names.readSync, READ_SYNC_OPTIONS);
    const message = this.tryRead();
    if (message !== null) return message;
    try {
      return parkSync(
        this.ctl,
        this.readBlock,
        this.#readAttemptFn,
        options,
        this.#names.readSync,
        this.#producerAlive,
        this.#readPacer,
        this.#producerGone,
      );
    } catch (err) {
      throw this.#failure(err);
    }
  }

  /**
   * Writes one message; resolves once it is in the ring (back-pressure: waits while the ring is full).
   * Writes of this object are served in call order: one made while an earlier one waits for room
   * starts once that one has settled (CallLine), so its message never goes first.
   * (Not an async function: a write that finds room returns a settled promise, and a parked one
   * resolves through parkAsync's promise alone.)
   */
  write(bytes: Uint8Array, options?: WriteOptions): Promise<void> {
    let type: number;
    try {
      checkWaitOptions(options, this.#names.write, WRITE_OPTIONS);
      checkBytes(bytes, this.#names.write);
      this.#checkLength(bytes, this.#names.write);
      type = options?.type ?? 0;
    } catch (err) {
      return Promise.reject(err);
    }
    if (!this.#writeLine.idle) {
      return this.#later(this.#writeLine, options, this.#names.write, undefined, (waited) =>
        this.#write(bytes, type, afterQueue(options, waited)),
      );
    }
    return this.#write(bytes, type, options);
  }

  /** write() with its options checked, once its turn has come. */
  #write(bytes: Uint8Array, type: number, options: WriteOptions | undefined): Promise<void> {
    try {
      if (this.closed) this.#throwClosed();
      if (this.tryWrite(bytes, type)) {
        this.#writePoll.gotAtOnce();
        return RESOLVED;
      }
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#writeLine.wait(
      parkAsync(
        this.ctl,
        WRITE_BLOCK,
        () => this.#writeAttempt(bytes, type),
        options,
        this.#names.write,
        this.#consumerAlive,
        this.#writePoll,
        undefined,
        this.#settleDone,
        this.#consumerGone,
      ),
    );
  }

  /**
   * A Promise call made while an earlier one of its side waits: `run` starts
   * it once the calls before it have settled, told how long (ms) it was
   * queued. An abort of `signal`, or `stop`, while it is queued takes it out
   * of the line and settles it with `cancel` of the AbortError (by default,
   * rejects with it).
   */
  #later<R>(
    line: CallLine,
    options: WaitOptions | undefined,
    what: string,
    stop: WaitStop | undefined,
    run: (waitedMs: number) => Promise<R>,
    cancel: (err: unknown) => R = rethrow,
  ): Promise<R> {
    const signal = options?.signal;
    const outer: Promise<R> = new Promise<R>((resolve, reject) => {
      const since = performance.now();
      let timer: Timer | undefined;
      const cancelWith = (err: unknown): void => {
        try {
          resolve(cancel(err));
        } catch (thrown) {
          reject(thrown);
        }
      };
      if (signal?.aborted) return cancelWith(abortError(signal));
      const leave = (): void => {
        if (signal !== undefined) unwatchAbort(signal, onAbort);
        if (timer !== undefined) clearTimer(timer);
        if (stop !== undefined) stop.queued.delete(onStop);
      };
      // Each way out of the line takes the call out first: only one of them (or its start) goes on.
      const onAbort = (): void => {
        if (!takeOut()) return;
        leave();
        cancelWith(abortError(signal));
      };
      const onStop = (): void => {
        if (!takeOut()) return;
        leave();
        cancelWith(abortError());
      };
      const takeOut = line.queue(() => {
        leave();
        line.occupy(outer); // until this caller's promise settles: the next call starts after its await resumed
        run(performance.now() - since).then(resolve, reject);
      });
      if (signal !== undefined) watchAbort(signal, onAbort);
      // Its timeoutMs runs from the call, in the line too (a call ahead may wait for ever); past
      // setTimeout's 2^31 − 1 ms, in steps (startTimer); Infinity sets none.
      const timeoutMs = options?.timeoutMs;
      if (timeoutMs !== undefined) {
        timer = startTimer(() => {
          if (!takeOut()) return;
          leave();
          cancelWith(timedOut(what, options));
        }, timeoutMs);
        // ref false: a call waiting in the line holds the process no more than a parked one does.
        if (options?.ref === false) timer?.unref();
      }
      if (stop !== undefined) stop.queued.add(onStop);
    });
    return outer;
  }

  /**
   * How a parked write (or waitReadable) settles: with nothing; a failure on
   * a ring closed under it becomes ERR_SHMRING_CLOSED (#failure).
   */
  readonly #settleDone: Settle<true, void> = {
    ok: () => undefined,
    err: (err) => {
      throw this.#failure(err);
    },
  };

  /** How a parked waitReadable settles: as #settleDone; it took nothing, so it passes its wake-up on. */
  readonly #settleReadable: Settle<true, void> = {
    ok: () => {
      this.#readAnnounced = true;
    },
    err: (err) => {
      throw this.#failure(err);
    },
    takesNothing: true,
  };

  /** How a parked read settles (#failure, as #settleDone). */
  readonly #settleRead: Settle<Uint8Array, Uint8Array> = {
    ok: (message) => message,
    err: (err) => {
      throw this.#failure(err);
    },
  };

  /**
   * Reads one message without blocking the event loop. Rejects with ERR_SHMRING_CLOSED once closed and drained.
   * Reads of this object (and its iterators' next()) are served in call order, as writes are.
   */
  read(options?: WaitOptions): Promise<Uint8Array> {
    if (options !== undefined) {
      try {
        checkWaitOptions(options, this.#names.read, READ_OPTIONS);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    if (!this.#readLine.idle) {
      return this.#later(this.#readLine, options, this.#names.read, undefined, (waited) => this.#read(afterQueue(options, waited)));
    }
    return this.#read(options);
  }

  /** read() with its options checked, once its turn has come. */
  #read(options: WaitOptions | undefined): Promise<Uint8Array> {
    let message: Uint8Array | null;
    try {
      message = this.tryRead();
    } catch (err) {
      return Promise.reject(err);
    }
    if (message !== null) {
      this.#readPoll.gotAtOnce();
      return Promise.resolve(message);
    }
    return this.#parkRead(options, undefined, this.#settleRead);
  }

  /** A read (read() or an iterator's next()) that found the ring empty waits, first in its object's line of reads. */
  #parkRead<R>(options: WaitOptions | undefined, stop: WaitStop | undefined, settle: Settle<Uint8Array, R>): Promise<R> {
    return this.#readLine.wait(
      parkAsync(
        this.ctl,
        this.readBlock,
        this.#readAttemptFn,
        options,
        this.#names.read,
        this.#producerAlive,
        this.#readPoll,
        stop,
        settle,
        this.#producerGone,
        this.#recordReadyFn,
      ),
    );
  }

  /**
   * Resolves once a read would take something (a message is there), waiting
   * as read() does, with its options; takes nothing: drain() or tryRead()
   * then takes it, in place or copied. Rejects with ERR_SHMRING_CLOSED once
   * the other side closed the ring and every message was taken.
   */
  waitReadable(options?: WaitOptions): Promise<void> {
    try {
      if (options !== undefined) checkWaitOptions(options, this.#names.waitReadable, READ_OPTIONS);
      this.#readAnnounced = false;
      if (this.#readableAttemptFn() !== undefined) {
        this.#readPoll.gotAtOnce();
        return RESOLVED;
      }
    } catch (err) {
      return Promise.reject(this.#failure(err));
    }
    return parkAsync(
      this.ctl,
      this.readBlock,
      this.#readableAttemptFn,
      options,
      this.#names.waitReadable,
      this.#producerAlive,
      this.#readPoll,
      undefined,
      this.#settleReadable,
      this.#producerGone,
      this.#recordReadyFn,
    );
  }

  /**
   * waitReadable()'s attempt, bound once: true once something can be taken;
   * undefined while the ring is empty and open; throws ERR_SHMRING_CLOSED
   * once it is closed and drained.
   */
  readonly #readableAttemptFn = (): true | undefined => {
    if (this.ctl.length === 0) this.#throwClosed(true); // this object (or its region) was closed: its views are gone
    if (this.recordReady()) return true;
    if (!this.closed) return undefined;
    // Having seen the flag, a message published before the close is visible: look once more.
    if (this.recordReady()) return true;
    if (this.claimsPending()) return undefined;
    this.#throwClosed(true);
  };

  /** Iterates the messages until the ring is closed and drained: messages() without options. */
  [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    return this.messages();
  }

  /**
   * The messages, as an async iterator, each read with `options` (timeoutMs
   * bounds each message's wait, not the whole iteration). It ends when the
   * ring is closed by the other side and drained. An error ends it too: the
   * pending next() rejects with it (ERR_SHMRING_TIMEOUT, ERR_SHMRING_PEER_DEAD,
   * ERR_SHMRING_CLOSED if this side closed; an AbortError once `signal` is
   * aborted, whether a read is pending or not). return() (a `break` out of
   * `for await`) ends it at once: a pending next() resolves done, and its
   * futex wait is cancelled, so nothing is left to keep the process alive.
   * Calls to next() are served one after the other, in call order with this
   * object's read()s and its other iterators' next()s. `lastType` holds each
   * message's type. Wrong options throw here, before any read.
   */
  messages(options?: WaitOptions): AsyncIterableIterator<Uint8Array> {
    checkWaitOptions(options, this.#names.messages, READ_OPTIONS);
    const signal = options?.signal;
    const stop = new WaitStop(); // return() ends the pending read with it
    let finished = false;
    const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };
    /** How an error of a read ends the iteration: cleanly once the other side closed and it is drained. */
    const end = (err: unknown, returned: boolean): IteratorReturnResult<undefined> => {
      finished = true;
      if (returned) return DONE; // return() ended this read
      if ((err as ShmringError).code === ErrorCodes.CLOSED && this.ctl.length !== 0) return DONE;
      throw err;
    };
    // next() calls made while one is pending wait in this object's line of reads (CallLine), in call
    // order among its read()s and other iterators' next()s.
    /** A parked read settles straight into the iterator's result (no promise of its own). */
    const settle: Settle<Uint8Array, IteratorResult<Uint8Array>> = {
      ok: (value) => ({ done: false, value }),
      err: (err) => end(err, finished),
    };
    /** How a read that never started (aborted, or return(), while queued behind other reads) ends. */
    const cancel = (err: unknown): IteratorResult<Uint8Array> => end(err, finished);
    /** Starts one read, in its turn among this object's reads (CallLine). */
    const begin = (): Promise<IteratorResult<Uint8Array>> => {
      if (!this.#readLine.idle && !finished) {
        return this.#later(this.#readLine, options, this.#names.read, stop, (waited) => beginNow(afterQueue(options, waited)), cancel);
      }
      return beginNow(options);
    };
    /** With no read of this object waiting, a message already in the ring is handed out at once. */
    const beginNow = (options: WaitOptions | undefined): Promise<IteratorResult<Uint8Array>> => {
      let now: Promise<IteratorResult<Uint8Array>> | undefined;
      try {
        if (finished) now = Promise.resolve(DONE);
        else if (signal?.aborted) now = Promise.resolve(end(abortError(signal), false));
        else {
          const message = this.tryRead();
          if (message !== null) {
            this.#readPoll.gotAtOnce();
            now = Promise.resolve({ done: false, value: message });
          }
        }
      } catch (err) {
        try {
          now = Promise.resolve(end(err, false));
        } catch (thrown) {
          now = Promise.reject(thrown);
        }
      }
      if (now === undefined) return this.#parkRead(options, stop, settle);
      return now;
    };
    const iterator: AsyncIterableIterator<Uint8Array> = {
      next: (): Promise<IteratorResult<Uint8Array>> => begin(),
      return: (): Promise<IteratorResult<Uint8Array>> => {
        finished = true;
        stop.stop();
        return Promise.resolve(DONE);
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /**
   * Closes the ring for both sides: the other side's parked and later waits
   * end (readers first take what is left, including what was written while
   * corked). This object's views are dropped, so its own verbs throw
   * ERR_SHMRING_CLOSED at once, its reads too: it does not drain. An object
   * that was both producer and consumer leaves what it published (and did
   * not read) to any other object attached to the ring, one attached after
   * the close included. The region stays open: close it separately.
   * Idempotent. Called from a drain() handler of this object (SpscRing,
   * MpscRing, a Broadcast subscriber's detach), it is deferred in part: the object is closed at once, but
   * drain() stops after the record in hand (which counts as consumed; what
   * was not handed out stays in the ring), gives that record back to the
   * producers and only then gives up the consumer role, before it returns,
   * so a next consumer never meets a store of this one.
   */
  close(): void {
    const ctl = this.ctl;
    if (ctl.length === 0) return;
    this.flush(); // what was written while corked is published before the end
    // Publishes the end to the other side; it is read by every waiting verb after it wakes.
    Atomics.or(ctl, L.FLAGS_I32, L.FLAG_CLOSED);
    unparkAll(ctl, READ_BLOCK);
    unparkAll(ctl, WRITE_BLOCK);
    this.#letGo();
  }

  /**
   * Lets go of the ring without ending it: what this object wrote while
   * corked is published, its roles are released (another object, of this
   * process or another, may take them: an SpscRing's next consumer goes on
   * from where this one stopped), and its verbs throw ERR_SHMRING_CLOSED
   * from now on: this object's own pending waits (a read(), a select over
   * it) end with it. The other side notices nothing (its parked waits wake,
   * find nothing new and park again), except, if it waits, that the role
   * stays empty until someone takes it. Idempotent; close() after it does
   * nothing. Called from a drain() handler of this object, it ends the
   * object at once and leaves the roles to drain(), as close() does: a next
   * consumer takes exactly the records the handler was not handed.
   */
  detach(): void {
    const ctl = this.ctl;
    if (ctl.length === 0) return;
    this.flush();
    this.#letGo();
    // Wakes the waits parked on the ring, this object's among them: theirs re-check, find its views gone and end
    // with ERR_SHMRING_CLOSED (else they would sleep until a publication or their timeout); the others re-check
    // and park again. After #letGo: a wait woken here sees the views already swapped.
    unparkAll(ctl, READ_BLOCK);
    unparkAll(ctl, WRITE_BLOCK);
  }

  /**
   * Ends this object: its views go at once (its verbs throw
   * ERR_SHMRING_CLOSED), then its roles, unless a drain() of it is handing
   * out records (close() or detach() from its handler): drain() has stores
   * of its head left to make, so it lets go of the roles itself once it has
   * made them (endDrain), and no other object takes the role before.
   */
  #letGo(): void {
    const ctl = this.ctl;
    this.ctl = CLOSED_I32;
    this.dropViews();
    if (this.draining) this.#letGoAfterDrain = ctl;
    else this.#giveUpRoles(ctl);
  }

  /**
   * Releases this object's roles in the ring whose control words are `ctl`
   * (its views are gone already). `ctl` reads length 0 only if the region was
   * closed from a drain() handler too: then only the locks are let go.
   */
  #giveUpRoles(ctl: Int32Array): void {
    const mapped = ctl.length !== 0;
    if (mapped) this.leaveRing(ctl);
    if (this.roles !== undefined) {
      this.roles.release();
      if (mapped && this.isProducer) this.#withdraw(ctl, 'producer', L.PRODUCER_PID_I32);
      if (mapped && this.isConsumer) this.#withdraw(ctl, 'consumer', L.CONSUMER_PID_I32);
    } else if (mapped) {
      // The same for a thread's registration in an exclusive role of a ring without locks
      // (#claim): withdrawn only if it is still ours (the CAS), a successor's stays.
      // A shared role's words (#join) are given back by #leave.
      const threads = ctl.buffer instanceof SharedArrayBuffer;
      const tid = ownThread().id;
      if (this.isProducer && !this.#shares.has('producer')) Atomics.compareExchange(ctl, L.PRODUCER_PID_I32, tid, 0);
      if (this.isConsumer && !this.#shares.has('consumer')) Atomics.compareExchange(ctl, L.CONSUMER_PID_I32, tid, 0);
      this.#leave(ctl, 'producer', L.PRODUCER_PID_I32, L.PRODUCER_START_I32, threads);
      this.#leave(ctl, 'consumer', L.CONSUMER_PID_I32, L.CONSUMER_START_I32, threads);
      for (const role of ['producer', 'consumer'] as const) {
        const key = `${this.#place}:${role}`;
        if (claimed.get(key)?.deref() === this) claimed.delete(key);
      }
    }
  }

  /**
   * After this object let go of `role`'s lock: a role nobody holds any more
   * reads "not registered" again (pid 0), so a parked peer waits for the
   * next holder instead of taking this clean exit for a death. The word
   * names the last to register, which in a shared role (MpmcQueue, an
   * MpscRing's producers) may be another holder that left before us: it is
   * cleared all the same, so what a waiting peer concludes depends only on
   * how the last holder left (closed: wait; died: PEER_DEAD), not on the
   * order in which the others registered. A newcomer's registration stays:
   * it takes the lock before it stores its word, so it is either seen
   * holding (nothing is cleared) or stores after the load below: the CAS
   * fails, or its store comes after it, or (the same id as the one read:
   * this process registering again) the lock is seen held after the CAS,
   * which puts the word back.
   */
  #withdraw(ctl: Int32Array, role: Role, pidIndex: number): void {
    // Observes the last registration (a registrant stores its word after it took its lock).
    const registered = Atomics.load(ctl, pidIndex);
    if (registered === 0 || this.roles!.held(role)) return;
    // Withdraws it only if unchanged since the load: another newcomer's word stays.
    if (Atomics.compareExchange(ctl, pidIndex, registered, 0) !== registered || !this.roles!.held(role)) return;
    // A newcomer with the same id (this process again) took the lock and stored its word between the check
    // and the CAS: its registration is put back, unless yet another one stored its word since.
    Atomics.compareExchange(ctl, pidIndex, 0, registered);
  }

  /**
   * What this object holds in the ring beyond its roles, given back when it
   * lets go of them (close(), detach(), or the end of a drain() they were
   * called from), before the role locks: a Broadcast subscriber's slot.
   */
  protected leaveRing(_ctl: Int32Array): void {}

  // ---- drain()'s handler: what the other verbs of the same object may do from it ----

  /**
   * A drain() of this object is handing out records (SpscRing, MpscRing):
   * the one in hand goes back to the producers only once its handler
   * returns. Meanwhile the read verbs refuse to run (drainBusyError: they
   * would give it back, or hand it out again), and close() / detach() leave
   * the roles to endDrain(). A field, not a closure: the read verbs' cost is
   * this one check.
   */
  protected draining = false;
  /** close() or detach() was called from a drain() handler: the control words whose roles endDrain() gives up. */
  #letGoAfterDrain: Int32Array | undefined = undefined;

  /**
   * drain() has made its last store to the ring (the head after what it
   * took, the zeroing of it): a close() or detach() called from its handler
   * gives up the roles now, so no other consumer could take the role while
   * this one still wrote to the ring. drain() calls it last, also when a
   * handler throws.
   */
  protected endDrain(): void {
    this.draining = false;
    const ctl = this.#letGoAfterDrain;
    if (ctl === undefined) return;
    this.#letGoAfterDrain = undefined;
    this.#giveUpRoles(ctl);
  }

  /** ERR_SHMRING_BUSY for `what` (a read, by default) called from a drain() handler of this object. */
  protected drainBusyError(what = 'a read'): ShmringError {
    return new ShmringError(
      ErrorCodes.BUSY,
      `${this.#kind}: ${what} from a drain() handler of the same consumer (of ${this.#where}) is refused: drain() gives the ` +
        'record in hand back only once its handler returns; return from the handler first, and take the next records once drain() has returned',
    );
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * A Readable stream (objectMode) of the messages, each a Buffer (its
   * type is not carried), ending when the ring is closed by the other side
   * and drained. It takes messages off the ring only while the stream wants
   * more (up to `highWaterMark` messages, default 16, are buffered in the
   * stream), and waits on the event loop otherwise, so a slow reader fills
   * the ring and holds the writer back. Its wait takes nothing: destroying
   * the stream (destroy(), a `break` out of `for await`, a pipeline that
   * failed, `signal`) ends it, and every message not yet pushed into the
   * stream stays in the ring for the next read; what the stream had
   * buffered goes with it.
   */
  readable(options: { highWaterMark?: number; signal?: AbortSignal } = {}): Readable {
    checkStreamOptions(options, `${this.#kind}.readable`, READABLE_OPTION_NAMES);
    // Ends the pending wait when the stream is destroyed (its `signal` destroys it too).
    const stop = new AbortController();
    const waitOptions = { signal: stop.signal };
    let waiting = false;
    const fail = (err: ShmringError): void => {
      // Closed by the other side and drained: the end. Closed by this side (its views are gone): an error.
      if (err.code === ErrorCodes.CLOSED && this.ctl.length !== 0) stream.push(null);
      else stream.destroy(err);
    };
    // Pushes what the ring holds while the stream wants more, then waits for the next message.
    const take = (): void => {
      // A 'data' listener may destroy the stream inside push(), which returns true then: looked at before each take.
      while (!stream.destroyed) {
        let message: Uint8Array | null;
        try {
          message = this.tryRead();
        } catch (err) {
          fail(err as ShmringError);
          return;
        }
        if (message === null) break;
        if (!stream.push(Buffer.from(message.buffer, message.byteOffset, message.byteLength))) return; // read() comes again
      }
      if (stream.destroyed) return;
      waiting = true;
      this.waitReadable(waitOptions).then(
        () => {
          waiting = false;
          if (!stream.destroyed) take();
        },
        (err: ShmringError) => {
          waiting = false;
          if (!stream.destroyed) fail(err);
        },
      );
    };
    const stream: Readable = new Readable({
      objectMode: true,
      highWaterMark: options.highWaterMark ?? 16,
      signal: options.signal,
      read: () => {
        if (!waiting) take();
      },
      destroy: (err, callback) => {
        stop.abort();
        callback(err);
      },
    });
    return stream;
  }

  /**
   * A Writable stream (objectMode): each chunk (Buffer / Uint8Array) becomes
   * one message of type 0. A chunk is acknowledged once it is in the ring,
   * so a full ring holds the writer back. When the stream finishes (end()),
   * this object is closed unless `closeOnFinish` is false, with what close()
   * means for its kind: an SpscRing's reader, a Broadcast's subscribers, and
   * every side of an MpmcQueue (its other producers too) then end; an
   * MpscRing producer's close() ends its own part only, so the consumer's
   * reads do not end (the consumer ends the ring). A stream destroyed
   * before it finished (destroy(), an error, `signal`) leaves the ring
   * open, and its pending write ends without writing.
   */
  writable(options: { highWaterMark?: number; signal?: AbortSignal; closeOnFinish?: boolean } = {}): Writable {
    checkStreamOptions(options, `${this.#kind}.writable`, WRITABLE_OPTION_NAMES);
    // Ends the pending write when the stream is destroyed (its `signal` destroys it too).
    const stop = new AbortController();
    const writeOptions = { signal: stop.signal };
    return new Writable({
      highWaterMark: options.highWaterMark ?? 16,
      objectMode: true,
      signal: options.signal,
      write: (chunk: Uint8Array, _encoding, callback) => {
        this.write(chunk, writeOptions).then(() => callback(), callback);
      },
      destroy: (err, callback) => {
        stop.abort();
        callback(err);
      },
      final: (callback) => {
        if (options.closeOnFinish !== false) this.close();
        callback();
      },
    });
  }
}
