/**
 * Channel: values, requests and replies both ways over two SpscRings (one
 * each way, in one region; layout.ts), with a link (link.ts) that ends when
 * the other side does. frames.ts says how each message maps onto records.
 *
 * Invariants:
 *  - This object is the only producer of `#out` and the only consumer of
 *    `#in`, from one thread.
 *  - Records leave in the order their verbs were called: a record is
 *    written at once only while nothing waits in `#queue`; otherwise it
 *    joins the queue, which one writer loop empties in order. The records
 *    of one split value are queued together, so nothing comes between them.
 *  - Records are taken from `#in` only by the pump (or, once the pump has
 *    stopped, by the end of the channel), so values are delivered in order.
 *  - The pump runs only while someone waits for something from the other
 *    side (a receive, a reply, or a handler's next request), or, with idle
 *    reads, while the channel is open, and the inbox is below
 *    INBOX_HIGH_WATER; never while UNHANDLED_HIGH_WATER requests wait for
 *    a handler; otherwise records stay in the ring and the other side's
 *    sends feel the back-pressure.
 *  - With idle reads, the pump's read stays parked between uses, unref'd,
 *    so that a request after an idle gap starts no wait of its own; the
 *    link is held (keeps the loop alive) exactly while someone waits for
 *    something from the other side.
 *  - Once ended, a channel never reopens; every pending verb has settled,
 *    and the region is unmapped once neither the pump nor the writer loop
 *    touches the rings any more.
 */
import { Buffer, constants as bufferConstants } from 'node:buffer';
import { EventEmitter } from 'node:events';
import { types } from 'node:util';
import {
  abortError,
  clearTimer,
  ErrorCodes,
  ShmringError,
  ShmringTypeError,
  startTimer,
  type Timer,
  unwatchAbort,
  watchAbort,
} from '@shmring/core';
import { copyBytes, ENCODE_NOT_FAST, type ChannelCodec, type CodecName } from './codec.js';
import { checkOptions, checkSignal, checkTimeout, OptionNames } from './options.js';
import * as F from './frames.js';
import type { Link } from './link.js';
import type { RecordReadOptions, RecordSink, RecordSource } from './transport.js';

export interface ReceiveOptions {
  /** Stop waiting (AbortError); the value, when it comes, goes to the next receive. */
  signal?: AbortSignal;
}

export interface RequestOptions {
  /** Reject with ERR_SHMRING_TIMEOUT after this many milliseconds; a later reply is dropped. */
  timeoutMs?: number;
  /** Abort the wait (AbortError); the handler's own `signal` aborts too. */
  signal?: AbortSignal;
}

export interface HandlerContext {
  /** Aborts when the caller stops waiting (its timeout or signal) or the channel ends. */
  readonly signal: AbortSignal;
}

/**
 * A request handler. The value is what the other side sent, decoded: `V`
 * is what the handler takes it for (nothing checks it; `unknown` by
 * default), e.g. `handle((text: string) => text.toUpperCase())`.
 */
export type Handler<V = unknown> = (value: V, context: HandlerContext) => unknown;

/** Values received and not yet asked for, beyond which the pump stops taking records for them. */
const INBOX_HIGH_WATER = 1024;
/**
 * Requests received before a handler was registered, beyond which the pump
 * stops taking records (whoever waits): they stay in the ring, and the
 * sender's writes wait, as for values nobody receives. handle() takes them
 * all and starts the pump again.
 */
const UNHANDLED_HIGH_WATER = 1024;
/**
 * Records the pump takes in one go. Small enough that the other side gets
 * the first answers of a burst while this side still works on the rest.
 */
const DRAIN_BATCH = 32;
/**
 * A turn that writes many records publishes them every this many, not all
 * at its end: the other side starts on the first while this one writes the
 * rest. Holding a whole turn back made two sides with many requests in
 * flight take turns, each idle while the other worked (64 in flight, two
 * processes: 659–674 k requests/s, and 954 k–1.03 M publishing every 16,
 * benchmarks alternating in one session; 4, 8 and 32 did as well as 16).
 */
export const CORK_RECORDS = 16;
/** Largest part of a split value: far below a large ring's record limit, so that reading and writing overlap. */
const SPLIT_CHUNK = 256 * 1024;
/** Thrown by #onRecord to end a drain() batch after the record it is on. */
const END_BATCH = Symbol('end of batch');
/** Full batches in a row after which the pump lets timers and I/O run. */
const FULL_BATCHES_PER_TURN = 8;
/** Smallest room claimed to encode a value in place. */
const IN_PLACE_MIN = 256;
const EMPTY = new Uint8Array(0);
const RESOLVED: Promise<void> = Promise.resolve();
/** #writeInPlace: no room for the guess, or the value was larger: encode() it, fast path included. */
const NO_ROOM = Symbol('no room');
/** #writeInPlace: the value is not for the fast path: encode() it without trying that again. */
const NOT_FAST = Symbol('not fast');
const noop = (): void => {};
/** Ring waits of a channel never look at pids: the link says when the peer is gone. */
const NO_PID_CHECKS = Infinity;

/** A value that could not be decoded, kept in its place in the inbox. */
class Undecodable {
  constructor(readonly error: Error) {}
}

/** What an iterator's next() resolves with once the channel has ended cleanly. */
const DONE_RESULT: IteratorReturnResult<undefined> = Object.freeze({ value: undefined, done: true });

/** The state of one messages() iterator: ended once it returned done or threw. */
interface Iteration {
  finished: boolean;
}

interface Receiver {
  /** receive(): the value; an iterator's next(): its IteratorResult. */
  resolve(value: unknown): void;
  reject(error: Error): void;
  /** An iterator's next() (it ends with DONE_RESULT where receive() rejects), or undefined for receive(). */
  readonly iteration: Iteration | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

interface PendingRequest {
  readonly id: number;
  resolve(value: unknown): void;
  reject(error: Error): void;
  timer: Timer | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

interface OutRecord {
  bytes: Uint8Array;
  type: number;
  /** Settles the verb, on the last record of its message. */
  resolve: (() => void) | undefined;
  reject: ((error: Error) => void) | undefined;
}

/** A split value being put together. */
interface Partial {
  type: number;
  buffer: Buffer;
  filled: number;
}

/** The context of one request being handled; its AbortSignal is made only if the handler asks. */
class Serving implements HandlerContext {
  #controller: AbortController | undefined;
  #reason: unknown;
  cancelled = false;

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.cancelled) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  cancel(reason: unknown): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.#reason = reason;
    this.#controller?.abort(reason);
  }
}

/**
 * The pending requests of this end, by id: a table indexed by `id & mask`.
 * Ids are handed out in sequence and new ones skip the ids whose slot is
 * taken, so two pending requests never share a slot; the table doubles
 * once half full (a doubled mask keeps distinct slots distinct). A Map
 * keyed by ever-growing ids rehashes as they come and go.
 */
class PendingTable {
  #slots: Array<PendingRequest | undefined> = new Array<PendingRequest | undefined>(64).fill(undefined);
  #mask = 63;
  size = 0;

  get(id: number): PendingRequest | undefined {
    const pending = this.#slots[id & this.#mask];
    return pending !== undefined && pending.id === id ? pending : undefined;
  }

  /** No pending request has `id`'s slot (so none has `id`). */
  free(id: number): boolean {
    return this.#slots[id & this.#mask] === undefined;
  }

  /** Adds a request whose id's slot is free. */
  add(pending: PendingRequest): void {
    if (2 * (this.size + 1) > this.#slots.length) this.#grow();
    this.#slots[pending.id & this.#mask] = pending;
    this.size++;
  }

  delete(id: number): void {
    if (this.get(id) === undefined) return;
    this.#slots[id & this.#mask] = undefined;
    this.size--;
  }

  values(): PendingRequest[] {
    return this.#slots.filter((p): p is PendingRequest => p !== undefined);
  }

  #grow(): void {
    const slots = new Array<PendingRequest | undefined>(this.#slots.length * 2).fill(undefined);
    const mask = slots.length - 1;
    for (const p of this.#slots) if (p !== undefined) slots[p.id & mask] = p;
    this.#slots = slots;
    this.#mask = mask;
  }
}

/** A FIFO with O(1) shift. */
class Fifo<T> {
  #items: T[] = [];
  #head = 0;
  get length(): number {
    return this.#items.length - this.#head;
  }
  push(item: T): void {
    this.#items.push(item);
  }
  shift(): T | undefined {
    if (this.#head === this.#items.length) return undefined;
    const item = this.#items[this.#head]!;
    (this.#items as unknown[])[this.#head] = undefined;
    if (++this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    }
    return item;
  }
  remove(item: T): boolean {
    const at = this.#items.indexOf(item, this.#head);
    if (at < 0) return false;
    this.#items.splice(at, 1);
    return true;
  }
  /** Takes out the items `match` picks, keeping the others in order. */
  removeAll(match: (item: T) => boolean): T[] {
    const taken: T[] = [];
    const kept: T[] = [];
    for (let i = this.#head; i < this.#items.length; i++) {
      const item = this.#items[i]!;
      (match(item) ? taken : kept).push(item);
    }
    if (taken.length > 0) {
      this.#items = kept;
      this.#head = 0;
    }
    return taken;
  }
  drainAll(): T[] {
    const rest = this.#items.slice(this.#head);
    this.#items = [];
    this.#head = 0;
    return rest;
  }
}

/**
 * The JSON an ERROR record carries for what a handler threw. It never
 * throws: a handler may throw anything (an object without a prototype, whose
 * String() throws; an object whose getters throw; a revoked Proxy), and its
 * caller must get an answer all the same, not a crash of the handler's side.
 */
function errorPayload(error: unknown): Uint8Array {
  const name = thrownProperty(error, 'name');
  const message = thrownProperty(error, 'message');
  const code = thrownProperty(error, 'code');
  const payload = {
    name: typeof name === 'string' ? name : 'Error',
    message: typeof message === 'string' ? message : describeThrown(error),
    code: typeof code === 'string' || typeof code === 'number' ? String(code) : undefined,
  };
  return Buffer.from(JSON.stringify(payload), 'utf8');
}

/** `error[key]` if `error` is an object; undefined if it is not, or if reading runs a getter (or Proxy trap) that throws. */
function thrownProperty(error: unknown, key: 'name' | 'message' | 'code'): unknown {
  if (error === null || typeof error !== 'object') return undefined;
  try {
    return (error as Record<string, unknown>)[key];
  } catch {
    return undefined;
  }
}

/**
 * The `then` of a handler's result, if it is an object. Reading it may throw
 * (a getter, a Proxy trap): the handler failing, except for a Proxy, which
 * is then taken as the reply itself, for the codec to encode or refuse
 * (ERR_SHMRING_ENCODE): a revoked Proxy is a reply no codec can encode, not
 * a handler that threw.
 */
function thenOf(result: unknown): unknown {
  if (result === null || (typeof result !== 'object' && typeof result !== 'function')) return undefined;
  try {
    return (result as PromiseLike<unknown>).then;
  } catch (err) {
    if (types.isProxy(result)) return undefined;
    throw err;
  }
}

/** String(error), or a generic message where even that throws. */
function describeThrown(error: unknown): string {
  try {
    return String(error);
  } catch {
    return 'the handler threw a value that cannot be described (String() of it throws)';
  }
}

/** The error a caller gets for an ERROR record: the remote message and code. */
export class RemoteError extends ShmringError {
  /** The `name` of what the handler threw (TypeError, ...). */
  readonly remoteName: string;
  constructor(code: string, message: string, remoteName: string) {
    super(code, message);
    this.name = 'RemoteError';
    this.remoteName = remoteName;
  }
}

function remoteError(bytes: Uint8Array, what: string): Error {
  let parsed: { name?: unknown; message?: unknown; code?: unknown };
  try {
    parsed = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')) as typeof parsed;
  } catch (err) {
    return new ShmringError(ErrorCodes.DECODE, `${what}: the other side answered with an error this end cannot read`, { cause: err });
  }
  if (parsed === null || typeof parsed !== 'object') {
    return new ShmringError(ErrorCodes.DECODE, `${what}: the other side answered with an error this end cannot read (not a JSON object)`);
  }
  const code = typeof parsed.code === 'string' ? parsed.code : ErrorCodes.REMOTE;
  const message = typeof parsed.message === 'string' ? parsed.message : 'the handler failed';
  return new RemoteError(code, message, typeof parsed.name === 'string' ? parsed.name : 'Error');
}

export interface ChannelEvents {
  /** The channel ended: `error` is set when the other side died (ERR_SHMRING_PEER_DEAD) or broke the format. */
  close: [error: Error | undefined];
}

export class Channel extends EventEmitter implements AsyncIterable<unknown> {
  declare on: <K extends keyof ChannelEvents>(event: K, listener: (...args: ChannelEvents[K]) => void) => this;
  declare once: <K extends keyof ChannelEvents>(event: K, listener: (...args: ChannelEvents[K]) => void) => this;
  declare off: <K extends keyof ChannelEvents>(event: K, listener: (...args: ChannelEvents[K]) => void) => this;
  /** Resolves once the channel has ended, however it ended, and released its memory. */
  readonly closed: Promise<void>;
  /** Largest record payload; larger values are split. */
  readonly #max: number;
  readonly #in: RecordSource;
  readonly #out: RecordSink;
  /** Frees what carries the records (unmaps the region, closes a NATS connection); may settle later. */
  readonly #releaseTransport: () => void | Promise<void>;
  readonly #link: Link;
  readonly #codec: ChannelCodec;
  readonly #what: string;

  #open = true;
  /** Why the channel ended: undefined while open or after a clean close. */
  #endError: Error | undefined;
  /** This side called close(). */
  #closedHere = false;
  /** The link ended; the pump (or #finishLinkEnd) takes what is left and ends the channel. */
  #linkGone = false;
  #released = false;
  #resolveClosed!: () => void;

  // Reading.
  readonly #inbox = new Fifo<unknown>();
  readonly #receivers = new Fifo<Receiver>();
  readonly #requests = new PendingTable();
  #nextId = 1;
  #handler: Handler | undefined;
  /** Requests that came before a handler was registered: [id, value]. */
  #unhandled: Array<[number, unknown]> = [];
  /** Requests that came during a drain, handed to the handler after it. */
  #calls: unknown[] = []; // id, value, id, value, … (no pair per request)
  readonly #serving = new Map<number, Serving>();
  #partial: Partial | undefined;
  #pumping = false;
  /** handle() is handing out the requests that waited for it: the pump starts after (#kick). */
  #handing = false;
  /** Aborts the pump's wait when nobody wants anything any more, or the channel ends. */
  #idle: AbortController | undefined;
  /**
   * The pump's read stays parked while nobody waits (unref'd, so the link
   * keeps the loop alive instead, while someone waits): a request after an
   * idle gap then only writes, instead of also starting a wait.
   */
  readonly #idleReads: boolean;
  /** The link is held (#hold). */
  #held = false;

  // Writing.
  /** The sink takes zero-copy writes and the codec encodes in place (#writeInPlace). */
  readonly #inPlace: boolean;
  /** Bytes of the last value's encoding: #writeInPlace claims twice that (and not for values larger than a record). */
  #lastSize = 0;
  /** A value is being encoded into claimed room: other writes queue behind it. */
  #claiming = false;
  readonly #queue = new Fifo<OutRecord>();
  #writing = false;
  /** #out is corked until the end of this turn's microtasks. */
  #corked = false;
  /** The record being written goes out at once, uncorked (#answer's lone reply). */
  #publishNow = false;
  /** Requests of the batch #runCalls is handing out, after the one being served. */
  #callsLeft = 0;
  readonly #stop = new AbortController();
  /** Options of the pump's ring reads and the writer's ring writes (their signal and type change per call). */
  readonly #readOptions: RecordReadOptions;
  /** Options of the pump's read while nobody waits (#idleReads): it parks at once, unref'd. */
  readonly #idleReadOptions: RecordReadOptions;
  readonly #writeOptions: { type: number; signal: AbortSignal; peerTimeoutMs: number; poll: number | undefined };

  /** @internal Made by listen/connect/channelPair/openChannel. */
  constructor(init: {
    in: RecordSource;
    out: RecordSink;
    release: () => void | Promise<void>;
    codec: ChannelCodec;
    link: Link;
    what: string;
    poll: number | undefined;
    /**
     * The transport's pending reads are cheap (no thread each) and can be
     * unref'd: the pump may then stay parked between uses. Not with a poll
     * window set: a request's read polls for its reply, which an already
     * parked read would not.
     */
    idleReads?: boolean;
  }) {
    super();
    this.#idleReads = init.idleReads === true && !(init.poll !== undefined && init.poll > 0);
    this.#readOptions = { signal: undefined, peerTimeoutMs: NO_PID_CHECKS, poll: init.poll, ref: !this.#idleReads };
    this.#idleReadOptions = { signal: undefined, peerTimeoutMs: NO_PID_CHECKS, poll: 0, spin: 0, ref: false };
    this.#writeOptions = { type: 0, signal: this.#stop.signal, peerTimeoutMs: NO_PID_CHECKS, poll: init.poll };
    this.#releaseTransport = init.release;
    this.#in = init.in;
    this.#out = init.out;
    this.#codec = init.codec;
    this.#link = init.link;
    this.#what = init.what;
    this.#max = init.out.maxMessageLength;
    this.#inPlace = init.codec.encodeInto !== undefined && typeof init.out.claim === 'function';
    this.closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    this.#link.watch(() => this.#onLinkEnd());
    this.#kick(); // with idle reads, the pump parks now
  }

  /** The codec both ends use. */
  get codec(): CodecName {
    return this.#codec.name;
  }

  // ---- sending ----

  /** Sends a value; resolves once it is in the ring (waits while the ring is full). */
  send(value: unknown): Promise<void> {
    if (!this.#open) return Promise.reject(this.#endedError('send'));
    try {
      return this.#emit(F.SEND, 0, value);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  /** Encodes `value` and writes its record(s); throws ERR_SHMRING_ENCODE before writing anything. */
  #emit(kind: number, id: number, value: unknown): Promise<void> {
    let bytes: Uint8Array;
    let flags = 0;
    let owned = false;
    // ArrayBuffer.isView first: it runs no code of the value's, and is false for every Proxy, where
    // Buffer.isBuffer (an instanceof) runs a Proxy's getPrototypeOf trap, which throws for a revoked one.
    // A Proxy then goes to the codec, which refuses it with ERR_SHMRING_ENCODE.
    if (this.#codec.rawBuffers && ArrayBuffer.isView(value) && Buffer.isBuffer(value)) {
      bytes = value;
      flags = F.RAW;
    } else {
      let notFast = false;
      if (this.#inPlace && this.#lastSize <= this.#max && this.#queue.length === 0 && !this.#writing && !this.#claiming) {
        const written = this.#writeInPlace(F.frameType(kind, id), value);
        if (written !== NO_ROOM && written !== NOT_FAST) return written;
        notFast = written === NOT_FAST;
      }
      try {
        bytes = this.#codec.encode(value, notFast);
      } catch (err) {
        throw this.#encodeFailed(err);
      }
      owned = this.#codec.lastOwned;
      this.#lastSize = bytes.length;
    }
    if (bytes.length <= this.#max) return this.#write(bytes, F.frameType(kind, id, flags), owned);
    // A queued record must not change under the queue: the caller's Buffer
    // may be reused by the caller once send() resolves, not before.
    return this.#writeSplit(owned || flags === F.RAW ? bytes : copyBytes(bytes), F.frameType(kind, id, flags | F.SPLIT));
  }

  /**
   * Encodes `value` straight into claimed room of the ring (the codec's
   * encodeInto) and commits it with its length: no scratch buffer, no view,
   * no copy. NO_ROOM when that cannot be done (no room for the guess, or a
   * value larger than the guess), NOT_FAST for a value the fast path does
   * not take: the caller then encodes as usual. Only while nothing waits to
   * be written, so the order of records holds.
   */
  #writeInPlace(type: number, value: unknown): Promise<void> | typeof NO_ROOM | typeof NOT_FAST {
    const out = this.#out;
    // Twice the last value's encoding (values of a stream tend to be alike), within what one record holds.
    const room = Math.min(this.#max, Math.max(IN_PLACE_MIN, 2 * this.#lastSize));
    let at: number;
    try {
      if (!this.#corked && !this.#publishNow) this.#corkUntilMicrotask();
      at = out.claim!(room);
    } catch (err) {
      return Promise.reject(this.#writeError(err as Error));
    }
    if (at < 0) return NO_ROOM;
    let end: number;
    this.#claiming = true;
    try {
      end = this.#codec.encodeInto!(value, out.data!, at, at + room);
    } catch (err) {
      out.abort!(at);
      this.#claiming = false;
      if (this.#queue.length > 0) this.#startWriter(); // what a getter sent before it threw
      throw this.#encodeFailed(err); // ERR_SHMRING_ENCODE: nothing of this value was sent
    } finally {
      this.#claiming = false;
    }
    if (end < 0) {
      out.abort!(at);
      if (this.#queue.length > 0) this.#startWriter(); // what a getter of the value sent meanwhile
      return end === ENCODE_NOT_FAST ? NOT_FAST : NO_ROOM;
    }
    out.commit!(at, type, end - at);
    this.#wroteCorked();
    this.#lastSize = end - at;
    if (this.#queue.length > 0) this.#startWriter();
    return RESOLVED;
  }

  /** Writes one record; `owned`: `bytes` stays as it is until the write completes (else it is copied if it must wait). */
  #write(bytes: Uint8Array, type: number, owned = true): Promise<void> {
    if (this.#queue.length === 0 && !this.#writing && !this.#claiming) {
      try {
        if (!this.#corked && !this.#publishNow) this.#corkUntilMicrotask();
        if (this.#out.tryWrite(bytes, type)) {
          this.#wroteCorked();
          return this.#out.paced?.() ?? RESOLVED;
        }
      } catch (err) {
        return Promise.reject(this.#writeError(err as Error));
      }
    }
    const kept = owned ? bytes : copyBytes(bytes); // (a Buffer's slice() would be a view)
    return new Promise((resolve, reject) => {
      this.#queue.push({ bytes: kept, type, resolve, reject });
      this.#startWriter();
    });
  }

  /**
   * Answers request `id` with what its handler threw (ERROR): split like a
   * value when it is larger than one record (a long message, a huge name),
   * so the caller gets it whatever its size rather than waiting for ever.
   */
  #writeRemoteError(id: number, error: unknown): Promise<void> {
    const bytes = errorPayload(error);
    if (bytes.length <= this.#max) return this.#write(bytes, F.frameType(F.ERROR, id));
    return this.#writeSplit(bytes, F.frameType(F.ERROR, id, F.SPLIT));
  }

  /**
   * Writes a value too large for one record: a SPLIT record with its length,
   * then MORE records of at most SPLIT_CHUNK bytes, straight from `bytes`.
   * Chunks well under the ring's size let the reader copy one out while
   * the writer copies the next in.
   */
  #writeSplit(bytes: Uint8Array, type: number): Promise<void> {
    const head = Buffer.allocUnsafe(F.SPLIT_PREFIX);
    head.writeUInt32LE(bytes.length >>> 0, 0);
    head.writeUInt32LE(Math.floor(bytes.length / 2 ** 32), 4);
    const records: OutRecord[] = [{ bytes: head, type, resolve: undefined, reject: undefined }];
    const chunk = Math.min(this.#max, SPLIT_CHUNK);
    for (let at = 0; at < bytes.length; at += chunk) {
      records.push({ bytes: bytes.subarray(at, at + chunk), type: F.MORE, resolve: undefined, reject: undefined });
    }
    return new Promise((resolve, reject) => {
      const last = records[records.length - 1]!;
      last.resolve = resolve;
      last.reject = reject;
      for (const r of records) this.#queue.push(r);
      this.#startWriter();
    });
  }

  /**
   * Holds this turn's records back until its microtasks have run, then
   * publishes them with one store and at most one wake-up: a program that
   * fires many requests (or a handler that answers many) in one turn costs
   * the other side one wake-up, not one each. A record is never held past
   * the turn it was written in (and a wait of this thread publishes first),
   * nor past the CORK_RECORDS-th record of the turn (#wroteCorked).
   */
  #corkUntilMicrotask(): void {
    this.#corked = true;
    this.#out.cork();
    // A promise reaction, not queueMicrotask (which wraps each callback for async_hooks).
    void RESOLVED.then(this.#uncork);
  }

  readonly #uncork = (): void => {
    this.#corked = false;
    this.#corkedRecords = 0;
    if (this.#open) this.#out.uncork();
  };

  /** Records written since #out was corked or last published (#wroteCorked). */
  #corkedRecords = 0;

  /** A record was written: while corked, publishes every CORK_RECORDS records (and stays corked). */
  #wroteCorked(): void {
    if (this.#corked && ++this.#corkedRecords === CORK_RECORDS) {
      this.#corkedRecords = 0;
      try {
        this.#out.uncork();
      } finally {
        this.#out.cork(); // corked again whatever the publication's wake-up did: #uncork ends the turn's cork
      }
    }
  }

  #startWriter(): void {
    // While a value is encoded into claimed room, what its getters send waits for it (#writeInPlace starts the writer).
    if (this.#writing || this.#claiming) return;
    this.#writing = true;
    void this.#writeLoop();
  }

  /** Empties #queue in order, waiting for room when the ring is full. */
  async #writeLoop(): Promise<void> {
    try {
      for (;;) {
        const record = this.#queue.shift();
        if (record === undefined) break;
        if (!this.#open) {
          record.reject?.(this.#endedError('send'));
          continue;
        }
        try {
          if (this.#out.tryWrite(record.bytes, record.type)) {
            this.#wroteCorked();
          } else {
            this.#writeOptions.type = record.type;
            await this.#out.write(record.bytes, this.#writeOptions);
          }
          record.resolve?.();
        } catch (err) {
          const error = this.#open ? this.#writeError(err as Error) : this.#endedError('send');
          record.reject?.(error);
          // The rest of a split value cannot follow a record that was not written.
          for (const rest of this.#queue.drainAll()) rest.reject?.(error);
        }
      }
    } finally {
      this.#writing = false;
      if (!this.#open) this.#release();
    }
  }

  /**
   * What a failed ring write means for the channel's user. A failure other
   * than the other side's close (a ring found corrupt, the koffi backend
   * out of waits) ends the channel with it: the record it lost may be a part
   * of a split value the other side holds the start of, or a reply its
   * caller waits for, and nothing written after it would make sense there.
   */
  #writeError(err: Error): Error {
    if ((err as ShmringError).code === ErrorCodes.CLOSED) {
      return new ShmringError(ErrorCodes.CLOSED, `${this.#what}: the other side closed the channel; nothing more can be sent`);
    }
    this.#end(err); // (a no-op once ended)
    return err;
  }

  // ---- receiving ----

  /**
   * The next value the other side sent. Rejects with ERR_SHMRING_CLOSED once the channel has ended and every value was taken.
   * `T` is what the caller takes the value for (nothing checks it): `await channel.receive<Order>()`.
   */
  receive<T = unknown>(options?: ReceiveOptions): Promise<T> {
    let signal: AbortSignal | undefined;
    try {
      checkOptions(options, OptionNames.receive, 'receive');
      signal = checkSignal(options?.signal, 'receive');
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return this.#next(signal, undefined) as Promise<T>;
  }

  /** The values the other side sends, until the channel ends (a dead peer throws ERR_SHMRING_PEER_DEAD). */
  messages<T = unknown>(options: ReceiveOptions = {}): AsyncIterableIterator<T> {
    checkOptions(options, OptionNames.receive, 'messages');
    const signal = checkSignal(options?.signal, 'messages');
    // A hand-made iterator, not an async generator: one promise per value (the one next() returns,
    // settled with the IteratorResult itself), no generator machinery.
    const iteration: Iteration = { finished: false };
    const iterator: AsyncIterableIterator<T> = {
      next: () => (iteration.finished ? Promise.resolve(DONE_RESULT) : this.#next(signal, iteration)) as Promise<IteratorResult<T>>,
      return: () => {
        this.#finishIteration(iteration);
        return Promise.resolve(DONE_RESULT);
      },
      // As an async generator's: the iteration is over, and the promise rejects with what was thrown in.
      throw: (error?: unknown) => {
        this.#finishIteration(iteration);
        return Promise.reject(error);
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<unknown> {
    return this.messages();
  }

  /** The next value (receive), or the next IteratorResult of `iteration`. */
  #next(signal: AbortSignal | undefined, iteration: Iteration | undefined): Promise<unknown> {
    // An aborted signal wins over a value kept here, as in Node's own APIs: the value stays for the next receive.
    if (signal?.aborted) return this.#fail(iteration, abortError(signal));
    if (this.#inbox.length > 0) {
      const value = this.#inbox.shift();
      if (this.#inbox.length < INBOX_HIGH_WATER) this.#kick();
      if (value instanceof Undecodable) return this.#fail(iteration, value.error);
      return Promise.resolve(iteration === undefined ? value : { value, done: false });
    }
    if (!this.#open) {
      if (iteration !== undefined && this.#endError === undefined) {
        iteration.finished = true;
        return Promise.resolve(DONE_RESULT);
      }
      return this.#fail(iteration, this.#endedError('receive'));
    }
    return new Promise((resolve, reject) => {
      const receiver: Receiver = { resolve, reject, iteration, signal, onAbort: undefined };
      if (signal !== undefined) {
        receiver.onAbort = () => {
          if (this.#receivers.remove(receiver)) {
            this.#rejectReceiver(receiver, abortError(signal));
            this.#hold();
            this.#checkIdle();
          }
        };
        watchAbort(signal, receiver.onAbort);
      }
      this.#receivers.push(receiver);
      this.#hold();
      this.#kick();
    });
  }

  /**
   * An iterator's return() or throw(): its pending next() calls end with
   * done and give up their place, so that the next value goes to whoever
   * still waits (or to the inbox), not to an iterator its user abandoned,
   * and the channel stops keeping the process alive for them.
   */
  #finishIteration(iteration: Iteration): void {
    iteration.finished = true;
    const abandoned = this.#receivers.removeAll((receiver) => receiver.iteration === iteration);
    if (abandoned.length === 0) return;
    for (const receiver of abandoned) {
      if (receiver.onAbort !== undefined) unwatchAbort(receiver.signal!, receiver.onAbort);
      receiver.resolve(DONE_RESULT);
    }
    this.#hold();
    this.#checkIdle();
  }

  /** A rejected receive; an iterator that throws has finished. */
  #fail(iteration: Iteration | undefined, error: Error): Promise<never> {
    if (iteration !== undefined) iteration.finished = true;
    return Promise.reject(error);
  }

  #rejectReceiver(receiver: Receiver, error: Error): void {
    if (receiver.iteration !== undefined) receiver.iteration.finished = true;
    receiver.reject(error);
  }

  /** Hands a received value (or a decode failure) to the oldest receiver, or keeps it. */
  #deliverValue(value: unknown): void {
    const receiver = this.#receivers.shift();
    if (receiver === undefined) {
      this.#inbox.push(value);
      return;
    }
    this.#hold();
    if (receiver.onAbort !== undefined) unwatchAbort(receiver.signal!, receiver.onAbort);
    if (value instanceof Undecodable) this.#rejectReceiver(receiver, value.error);
    else receiver.resolve(receiver.iteration === undefined ? value : { value, done: false });
  }

  // ---- requests ----

  /**
   * Sends `value` as a request and resolves with the other side's reply;
   * `R` is what the caller takes the reply for (nothing checks it):
   * `await channel.request<string>('hello')`.
   */
  request<R = unknown>(value: unknown, options?: RequestOptions): Promise<R> {
    if (!this.#open) return Promise.reject(this.#endedError('request'));
    let timeoutMs: number | undefined;
    let signal: AbortSignal | undefined;
    try {
      checkOptions(options, OptionNames.request, 'request');
      timeoutMs = checkTimeout(options?.timeoutMs, 'request');
      signal = checkSignal(options?.signal, 'request');
    } catch (err) {
      return Promise.reject(err as Error);
    }
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const id = this.#newId();
    let written: Promise<void>;
    try {
      written = this.#emit(F.REQUEST, id, value);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return new Promise((resolve, reject) => {
      const pending: PendingRequest = { id, resolve, reject, timer: undefined, signal, onAbort: undefined };
      this.#requests.add(pending);
      this.#hold();
      if (written !== RESOLVED) written.catch((err: Error) => this.#settleRequest(id, err, false));
      if (timeoutMs !== undefined) {
        // Infinity sets no timer; past setTimeout's 2^31 − 1 ms, it waits in steps (startTimer).
        pending.timer = startTimer(() => {
          this.#settleRequest(id, new ShmringError(ErrorCodes.TIMEOUT, `${this.#what}: no reply within timeoutMs=${timeoutMs}`), true);
        }, timeoutMs);
      }
      if (signal !== undefined) {
        pending.onAbort = () => this.#settleRequest(id, abortError(signal), true);
        watchAbort(signal, pending.onAbort);
      }
      this.#kick();
    });
  }

  #newId(): number {
    let id = this.#nextId;
    while (!this.#requests.free(id)) id = id === F.MAX_ID ? 1 : id + 1;
    this.#nextId = id === F.MAX_ID ? 1 : id + 1;
    return id;
  }

  /** Takes a pending request out of the table (undefined if it is settled already). */
  #takeRequest(id: number): PendingRequest | undefined {
    const pending = this.#requests.get(id);
    if (pending === undefined) return undefined;
    this.#requests.delete(id);
    this.#hold();
    if (pending.timer !== undefined) clearTimer(pending.timer);
    if (pending.onAbort !== undefined) unwatchAbort(pending.signal!, pending.onAbort);
    return pending;
  }

  /** Rejects a request the caller stopped waiting for; tells the handler side when `cancel`. */
  #settleRequest(id: number, error: Error, cancel: boolean): void {
    const pending = this.#takeRequest(id);
    if (pending === undefined) return;
    pending.reject(error);
    if (cancel && this.#open) this.#write(EMPTY, F.frameType(F.CANCEL, id)).catch(noop);
    this.#checkIdle();
  }

  /**
   * Answers the other side's requests: `handler(value, { signal })`'s result
   * (or what it resolves to) is the reply; what it throws reaches the caller
   * with its message and code. One handler per channel. On a channel the
   * other side already ended (it closed, or died) it does nothing: no request
   * can come, and a server loop that registers a handler on each channel it
   * is handed must not fail because a client came and went at once. After
   * this side's own close() it is a misuse: ERR_SHMRING_CLOSED.
   */
  handle<V = unknown>(handler: Handler<V>): void {
    if (typeof handler !== 'function') {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `handle: the handler must be a function, got ${typeof handler}`);
    }
    if (!this.#open) {
      if (this.#closedHere) throw this.#endedError('handle');
      return;
    }
    if (this.#handler !== undefined) {
      throw new ShmringError(
        ErrorCodes.HANDLER_EXISTS,
        `${this.#what} already has a request handler; a channel has one (dispatch inside it)`,
      );
    }
    this.#handler = handler as Handler; // V is the caller's word for what comes: nothing here depends on it
    this.#hold();
    // A request its caller gave up on (timeout, abort) while it waited for this handler is not handed
    // to it: the CANCELs published so far are taken first, also when none of its requests was taken yet
    // (the pump would take them in batches and hand each batch out before the CANCELs behind it). The
    // requests among them go to #calls, after the older ones waiting here, and all are handed out in
    // arrival order.
    if (!this.#takePublished()) return;
    const calls: unknown[] = [];
    for (const [id, value] of this.#unhandled) calls.push(id, value);
    this.#unhandled = [];
    this.#calls = calls.concat(this.#calls);
    // A handler that calls request() or receive() kicks the pump, whose #runCalls would hand out
    // what it takes before the rest of these: the pump starts once they are all handed out.
    this.#handing = true;
    try {
      this.#runCalls();
    } finally {
      this.#handing = false;
    }
    this.#kick();
  }

  /**
   * Takes what the other side has published, now, outside the pump (which
   * may be stopped, or parked in a wait that takes nothing): batches while
   * someone wants them, up to the first part of a split value (the pump
   * reads the rest), and only as many requests as may wait for a handler
   * (UNHANDLED_HIGH_WATER: the sender's back-pressure holds). False if that
   * ended the channel (a corrupt record).
   */
  #takePublished(): boolean {
    try {
      while (
        this.#partial === undefined &&
        this.#unhandled.length + this.#calls.length / 2 < UNHANDLED_HIGH_WATER &&
        this.#take(DRAIN_BATCH) > 0 &&
        this.#wants()
      );
    } catch (err) {
      // BUSY: called from within a drain (a codec's decode calling handle()); the pump takes the rest.
      if ((err as ShmringError).code === ErrorCodes.BUSY) return true;
      this.#end(err as Error);
      return false;
    }
    return true;
  }

  #serve(id: number, value: unknown): void {
    const context = new Serving();
    this.#serving.set(id, context);
    let result: unknown;
    try {
      result = this.#handler!(value, context);
      // What the handler returned is the handler's too: a `then` getter that throws, or a `then` that
      // throws, is the handler failing (and must not escape into the pump).
      const then = thenOf(result);
      if (typeof then === 'function') {
        then.call(
          result,
          (reply: unknown) => this.#answer(id, context, reply, undefined, false),
          (err: unknown) => this.#answer(id, context, undefined, err, true),
        );
        return;
      }
    } catch (err) {
      this.#answer(id, context, undefined, err, true);
      return;
    }
    this.#answer(id, context, result, undefined, false);
  }

  #answer(id: number, context: Serving, reply: unknown, error: unknown, failed: boolean): void {
    // Answered already (a thenable that called back twice, or threw after calling back), or a request
    // of the same id came after this one was cancelled: only the first answer of each request counts.
    if (this.#serving.get(id) !== context) return;
    this.#serving.delete(id);
    if (!this.#open || context.cancelled) return;
    // The only reply due (no other request in hand or waiting to be handed out): publish it at once
    // rather than at the end of the turn's microtasks. Nothing else can join it, and the woken caller
    // (often run on this CPU at once) gets it a pump turn and a read's preamble sooner.
    this.#publishNow = this.#serving.size === 0 && this.#callsLeft === 0 && this.#calls.length === 0;
    let written: Promise<void>;
    try {
      if (failed) {
        written = this.#writeRemoteError(id, error);
      } else {
        try {
          written = this.#emit(F.REPLY, id, reply);
        } catch (err) {
          written = this.#writeRemoteError(id, replyEncodeFailed(err));
        }
      }
    } finally {
      this.#publishNow = false;
    }
    if (written !== RESOLVED) written.catch(noop);
  }

  // ---- the pump: records from the other side ----

  /** Someone waits for something from the other side, and the inbox (and the queue of unhandled requests) has room. */
  #wants(): boolean {
    // Past UNHANDLED_HIGH_WATER requests waiting for a handler, nothing more is taken, even for a
    // receiver or a reply: a record behind them in the ring can only be reached by taking (and keeping)
    // them. The values and replies behind them wait until handle() is called, as the requests and
    // replies behind INBOX_HIGH_WATER unreceived values wait until they are received.
    if (this.#unhandled.length >= UNHANDLED_HIGH_WATER) return false;
    return (
      this.#receivers.length > 0 ||
      ((this.#requests.size > 0 || this.#handler !== undefined) && this.#inbox.length < INBOX_HIGH_WATER) ||
      // Idle reads: parked while nothing is kept unasked for; what one read takes then stops the pump,
      // so that a channel nobody reads from takes one value off the ring, and back-pressures the rest.
      (this.#idleReads && this.#inbox.length === 0 && this.#unhandled.length === 0)
    );
  }

  /** Someone waits for something from the other side: a receive, a reply, or a handler's next request. */
  #waited(): boolean {
    return this.#receivers.length > 0 || this.#requests.size > 0 || this.#handler !== undefined;
  }

  /**
   * With idle reads, holds the link (keeps the loop alive) exactly while someone waits (#waited). Called
   * wherever a waiter comes or goes; a call that changes nothing costs three comparisons.
   */
  #hold(): void {
    const held = this.#idleReads && this.#open && this.#waited();
    if (held === this.#held) return;
    this.#held = held;
    this.#link.hold(held);
  }

  #kick(): void {
    if (this.#pumping || this.#handing || !this.#open || !this.#wants()) return;
    this.#pumping = true;
    void this.#pump();
  }

  /** Ends the pump's wait when nobody wants anything any more. */
  #checkIdle(): void {
    if (this.#pumping && !this.#wants()) this.#idle?.abort();
  }

  async #pump(): Promise<void> {
    let fullBatches = 0;
    try {
      while (this.#open) {
        if (this.#linkGone) {
          this.#finishLinkEnd();
          break;
        }
        if (!this.#wants()) break;
        let taken: number;
        try {
          // The parts of a split value one by one; a batch for whoever waits; one record while nobody
          // waits (idle reads), which ends the pump if it is a value to keep.
          taken = this.#take(this.#partial === undefined && this.#waited() ? DRAIN_BATCH : 1);
        } catch (err) {
          this.#end(err as Error);
          break;
        }
        this.#runCalls();
        if (taken > 0) {
          // Let this batch's continuations run (replies of async handlers,
          // the requests the resolved replies make) and its records be
          // published, so the other side works on them while we take the
          // next batch (and so that a wait publishes what they wrote before
          // it parks, not after); after many full batches in a row, let
          // timers and I/O run.
          if (taken === DRAIN_BATCH && ++fullBatches % FULL_BATCHES_PER_TURN === 0) await new Promise(setImmediate);
          else await null;
          continue;
        }
        fullBatches = 0;
        if (!this.#wants()) break;
        const idle = (this.#idle ??= new AbortController());
        try {
          // Nobody waits (idle reads): park at once, unref'd; whoever comes to wait holds the link.
          const options = this.#idleReads && !this.#waited() ? this.#idleReadOptions : this.#readOptions;
          options.signal = idle.signal;
          if (this.#partial === undefined) {
            // Takes nothing: the records are taken in place at the top (no copy, no allocation).
            await this.#in.waitReadable(options);
          } else {
            // A part of a split value: read() copies it out and gives its room back before the copy
            // into the value, so the writer fills that room meanwhile (1 MiB values one way: taken in
            // place, 2.96 against 3.78 GB/s, medians of 15 blocks alternating).
            const part = await this.#in.read(options);
            this.#onRecord(part, 0, part.length, this.#in.lastType);
            this.#runCalls();
            await null;
          }
        } catch (err) {
          if (idle.signal.aborted) {
            this.#idle = undefined;
            continue;
          }
          if (!this.#open) break;
          // ERR_SHMRING_CLOSED: the other side closed its end and everything it sent was taken.
          this.#end((err as ShmringError).code === ErrorCodes.CLOSED ? undefined : (err as Error));
          break;
        }
      }
    } finally {
      this.#pumping = false;
      if (!this.#open) this.#release();
    }
  }

  /**
   * Takes up to `limit` records from the ring. The parts of a split value
   * are taken one per call (a SPLIT record ends its batch), so each part's
   * room goes back to the writer as soon as it is copied out.
   */
  #take(limit: number): number {
    try {
      return this.#in.drain(this.#onRecord, limit);
    } catch (err) {
      if (err === END_BATCH) return 1; // drain counts the record it stopped on as taken
      throw err;
    }
  }

  /** One record from the other side; `data[offset, offset + length)` is valid only during the call. */
  readonly #onRecord = (data: Uint8Array, offset: number, length: number, type: number): void => {
    const partial = this.#partial;
    if (partial !== undefined) {
      if ((type & F.KIND_MASK) !== F.MORE || partial.filled + length > partial.buffer.length) {
        throw this.#corrupt(`a record of type ${type} came in the middle of a split value`);
      }
      partial.buffer.set(data.subarray(offset, offset + length), partial.filled);
      partial.filled += length;
      if (partial.filled === partial.buffer.length) {
        this.#partial = undefined;
        this.#deliver(partial.type, partial.buffer, 0, partial.buffer.length, true);
      }
      return;
    }
    if ((type & F.SPLIT) !== 0) {
      if (length !== F.SPLIT_PREFIX) throw this.#corrupt(`a split value's first record has ${length} bytes, not its length`);
      const total =
        (data[offset]! | (data[offset + 1]! << 8) | (data[offset + 2]! << 16)) +
        data[offset + 3]! * 2 ** 24 +
        ((data[offset + 4]! | (data[offset + 5]! << 8) | (data[offset + 6]! << 16) | (data[offset + 7]! << 24)) >>> 0) * 2 ** 32;
      if (total === 0 || total > bufferConstants.MAX_LENGTH) throw this.#corrupt(`a split value claims ${total} bytes`);
      let buffer: Buffer;
      try {
        buffer = Buffer.allocUnsafe(total);
      } catch (err) {
        // V8's "Array buffer allocation failed" is a RangeError without a code.
        throw new ShmringError(
          'ENOMEM',
          `${this.#what}: the other side sent a value of ${total} bytes, which this process cannot allocate (${(err as Error).message}); send smaller values, or give this process more memory`,
          { cause: err },
        );
      }
      this.#partial = { type: type & ~F.SPLIT, buffer, filled: 0 };
      throw END_BATCH;
    }
    this.#deliver(type, data, offset, offset + length, false);
  };

  /** A whole value (or reply, error, cancel) arrived in `data[start, end)`; `owned` says whether `data` may be kept. */
  #deliver(type: number, data: Uint8Array, start: number, end: number, owned: boolean): void {
    const kind = type & F.KIND_MASK;
    const id = F.frameId(type);
    switch (kind) {
      case F.SEND:
        this.#deliverValue(this.#decode(type, data, start, end, owned));
        return;
      case F.REQUEST: {
        const value = this.#decode(type, data, start, end, owned);
        if (value instanceof Undecodable) {
          this.#writeRemoteError(id, value.error).catch(noop);
        } else if (this.#handler === undefined) {
          this.#unhandled.push([id, value]);
        } else {
          this.#calls.push(id, value);
        }
        return;
      }
      case F.REPLY: {
        const pending = this.#takeRequest(id);
        if (pending === undefined) return; // a late reply: its caller gave up
        const value = this.#decode(type, data, start, end, owned);
        if (value instanceof Undecodable) pending.reject(value.error);
        else pending.resolve(value);
        return;
      }
      case F.ERROR: {
        const pending = this.#takeRequest(id);
        if (pending !== undefined) pending.reject(remoteError(data.subarray(start, end), this.#what));
        return;
      }
      case F.CANCEL: {
        const serving = this.#serving.get(id);
        if (serving !== undefined) {
          serving.cancel(abortError());
        } else {
          // Not handed to the handler yet: it never will be.
          this.#unhandled = this.#unhandled.filter(([waiting]) => waiting !== id);
          const calls = this.#calls;
          for (let i = 0; i < calls.length; i += 2) {
            if (calls[i] === id) {
              calls.splice(i, 2);
              break;
            }
          }
        }
        return;
      }
      default:
        throw this.#corrupt(`unknown record type ${type}`);
    }
  }

  #decode(type: number, data: Uint8Array, start: number, end: number, owned: boolean): unknown {
    if ((type & F.RAW) !== 0) return owned && start === 0 && end === data.length ? data : copyBytes(data.subarray(start, end));
    try {
      return this.#codec.decode(data, start, end);
    } catch (err) {
      // Made inside the pump, whose stack names no caller: the message names the channel.
      const error = err as ShmringError;
      if (error.code === ErrorCodes.DECODE) error.message = `${this.#what}: ${error.message}`;
      return new Undecodable(error);
    }
  }

  /** Hands the requests of the last batch to the handler (outside the ring's drain). */
  #runCalls(): void {
    if (this.#calls.length === 0) return;
    const calls = this.#calls;
    this.#calls = [];
    for (let i = 0; i < calls.length; i += 2) {
      if (!this.#open) break;
      this.#callsLeft = (calls.length - i) / 2 - 1;
      this.#serve(calls[i] as number, calls[i + 1]);
    }
    this.#callsLeft = 0;
  }

  /** A codec's ERR_SHMRING_ENCODE, its message headed by this channel's name (as decode errors are); anything else as it is. */
  #encodeFailed(err: unknown): unknown {
    if (err instanceof ShmringError && err.code === ErrorCodes.ENCODE && !err.message.startsWith(this.#what)) {
      err.message = `${this.#what}: ${err.message}`;
    }
    return err;
  }

  #corrupt(what: string): ShmringError {
    return new ShmringError(ErrorCodes.CORRUPT, `${this.#what}: ${what}; the other side does not speak this channel's format`);
  }

  // ---- the end ----

  /** The link ended: take what the other side published, then end (cleanly if it had closed its rings). */
  #onLinkEnd(): void {
    if (!this.#open) return;
    this.#linkGone = true;
    // A running pump finishes the job itself, in order, after its current record.
    if (this.#pumping) this.#idle?.abort();
    else this.#finishLinkEnd();
  }

  #finishLinkEnd(): void {
    // close() by the other side sets the ring's CLOSED flag before its link ends.
    const clean = this.#in.closed;
    try {
      while (this.#take(Infinity) > 0);
    } catch {
      // A half-written record of a dead peer: what came before it was delivered.
    }
    this.#calls = [];
    this.#end(
      clean
        ? undefined
        : (this.#link.error ??
            new ShmringError(
              ErrorCodes.PEER_DEAD,
              `${this.#what}: the other side died (${this.#link.ending} without closing the channel)`,
            )),
    );
  }

  /** Closes this end; the other side's receives end and its requests reject. Idempotent. */
  close(): void {
    if (!this.#open) return;
    this.#closedHere = true;
    this.#end(undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.closed;
  }

  #endedError(verb: string): Error {
    if (this.#endError !== undefined) return this.#endError;
    return new ShmringError(
      ErrorCodes.CLOSED,
      this.#closedHere ? `${this.#what}: ${verb} after close(); the channel is closed` : `${this.#what}: the other side closed the channel`,
    );
  }

  #end(error: Error | undefined): void {
    if (!this.#open) return;
    this.#open = false;
    this.#endError = error;
    this.#idle?.abort();
    this.#stop.abort();
    for (const receiver of this.#receivers.drainAll()) {
      if (receiver.onAbort !== undefined) unwatchAbort(receiver.signal!, receiver.onAbort);
      if (receiver.iteration !== undefined && error === undefined) {
        receiver.iteration.finished = true;
        receiver.resolve(DONE_RESULT);
      } else {
        this.#rejectReceiver(receiver, this.#endedError('receive'));
      }
    }
    const unanswered =
      error ??
      new ShmringError(
        ErrorCodes.CLOSED,
        this.#closedHere
          ? `${this.#what}: the channel was closed before the reply came`
          : `${this.#what}: the other side closed the channel without answering`,
      );
    for (const pending of this.#requests.values()) this.#takeRequest(pending.id)!.reject(unanswered);
    for (const serving of this.#serving.values()) serving.cancel(abortError());
    this.#serving.clear();
    this.#unhandled = [];
    this.#calls = [];
    this.#partial = undefined;
    // The flags first, then the link: the other side finds CLOSED when its link ends.
    this.#out.close();
    this.#in.close();
    this.#link.close();
    this.#release();
  }

  /** Frees the transport once nothing touches it; then `closed` resolves and 'close' fires. */
  #release(): void {
    if (this.#released || this.#pumping || this.#writing) return;
    this.#released = true;
    const finished = (): void => {
      this.#resolveClosed();
      this.emit('close', this.#endError);
    };
    const released = this.#releaseTransport();
    // Never from inside close() itself: `ch.close(); await once(ch, 'close')` must see the event, and a
    // listener that throws must not throw out of close().
    if (released === undefined) process.nextTick(finished);
    else released.then(finished, finished);
  }
}

/**
 * A reply the codec refused (ERR_SHMRING_ENCODE), as its caller gets it: the
 * codec's words are about a value sent, but the caller sent nothing wrong;
 * the handler's reply was the value (a JSON handler returning undefined,
 * say).
 */
function replyEncodeFailed(err: unknown): unknown {
  if (!(err instanceof ShmringError) || err.code !== ErrorCodes.ENCODE) return err;
  return new ShmringError(
    ErrorCodes.ENCODE,
    `the handler's reply could not be encoded: ${err.message.replace(/; nothing was sent.*$/s, '')}; the handler must return a value the channel's codec can encode (with 'json': null, not undefined)`,
    { cause: err },
  );
}
