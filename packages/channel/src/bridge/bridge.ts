/**
 * bridge(from, to): moves ring messages to NATS or NATS messages to a ring,
 * one NATS message per ring message, the ring message's type in the
 * `Shmring-Type` header (so any NATS client can read and write the
 * subject), until its signal aborts.
 *
 * ring → NATS: the bridge drains the ring in batches of BATCH and publishes
 * each record without waiting for it; then it waits once per batch (core
 * NATS: for the previous batch's flush, so that one batch travels while the
 * next is drained; JetStream: the batch's acknowledgements). Core NATS
 * publishes straight from the ring (see ringToCore). While NATS is
 * unreachable it stops draining: the ring fills and its producers feel the
 * back-pressure. With JetStream the records stay in the ring (holdReads)
 * until the stream acknowledged them, and each is published with the
 * message id `<ring>.<inode>:<end position>`, so a bridge killed and
 * restarted republishes what was not acknowledged and the stream drops
 * the duplicates.
 *
 * NATS → ring: core NATS, a subscription whose messages are written in
 * arrival order, waiting for room when the ring is full. JetStream, a
 * durable pull consumer acknowledged after the ring accepted each message;
 * a marker object (`<ring>.jsbridge` in /dev/shm) records, before each
 * write, the stream sequence and the ring position it goes to, so a bridge
 * killed between the write and its acknowledgement knows on restart that
 * the message is in the ring already (the producer position moved), and
 * restarts the consumer after the last message the ring holds; the marker
 * names the stream (and its incarnation) its sequence belongs to, and one
 * of another is not used.
 *
 * The connection reconnects by itself for ever; each outage is said once on
 * the log (stderr by default), when it starts and when it ends; so is each
 * other persistent failure (JetStream refusing what the bridge publishes
 * or its consumer), once per cause, and each NATS message too large for
 * the ring, which is dropped (core NATS) or terminated (JetStream: never
 * redelivered) rather than stop the bridge.
 *
 * The abort: every wait of the loops (the connection, the ring, NATS's
 * answers) ends at once on it, each loop looks at the signal after each
 * wait, and no promise of the nats client is left without a rejection
 * handler (the client rejects them when the connection goes). Records
 * taken from a SpscRing and not yet confirmed stay in it (holdReads); an
 * MpscRing cannot hold them (core NATS only: at most once anyway). Ring →
 * JetStream, connected, waits up to ABORT_ACK_MS for the acknowledgements
 * of the batch it published and releases what the stream has, so that the
 * next bridge does not publish it again.
 *
 * A ring record larger than the server's max_payload (with its headers)
 * cannot be published: it is dropped and said, like a NATS message too
 * large for the ring, rather than stop the bridge on it.
 */
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { ErrorCodes, Region, ShmringError, ShmringTypeError, abortError, checkBoolean } from '@shmring/core';
import type {
  ConsumerInfo,
  JetStreamClient,
  JetStreamManager,
  JsMsg,
  Match as MatchKind,
  MsgHdrs,
  NatsConnection,
  PublishOptions,
} from 'nats';
import { checkOptions, checkPoll, checkSignal, OptionNames } from '../options.js';
import { closeNats, isConnected, loadNats, openNats, refusalError } from '../nats/connection.js';
import type { NatsAddress } from '../nats/address.js';
import { TYPE_HEADER } from '../nats/transport.js';
import type { DrainHandler } from '@shmring/ringbuf';
import { openReader, openWriter, parseEndpoint, type Endpoint, type RingReader, type RingWriter } from './endpoints.js';

export interface BridgeOptions {
  /** Stops the bridge; bridge() resolves once it has let go of the ring and the connection. */
  signal?: AbortSignal;
  /** Where the bridge says that NATS went away and came back (default: a line on stderr). */
  log?: (line: string) => void;
  /** Called once the bridge is connected and subscribed (NATS → ring) or about to drain (ring → NATS). */
  onReady?: () => void;
  /**
   * µs the bridge's ring waits look for the next record (or for room)
   * between event-loop turns before they park (the `poll` option of
   * @shmring/ringbuf's Promise verbs; default its default, 50 µs). A window
   * longer than the gaps between messages spares each message the wake-up
   * of a parked bridge, for a CPU kept busy while they come. With
   * `dedicated` (ring → NATS), the default is 0: it parks its thread at once.
   */
  poll?: number;
  /**
   * The bridge has its process to itself (`shmring bridge` sets it): while
   * the ring (ring → NATS) is empty, it parks its thread on the ring's futex
   * (readSync) rather than waiting on the event loop, in slices of 20 to
   * 200 ms with a turn of the event loop between them (the connection's
   * traffic, timers, the abort signal), and after a large batch only once
   * its flush is answered (SOCKET_TAKES). A record then reaches
   * the bridge without the event loop's wake-up path (io_uring completion,
   * epoll, the Promise chain), which is most of what the bridge adds to a
   * NATS hop; but nothing else in the process runs while the ring is empty,
   * so never set it where the bridge shares its event loop. Default false.
   */
  dedicated?: boolean;
}

/** Ring records per batch (ring → NATS) and unacknowledged messages per consumer (NATS → ring). */
const BATCH = 512;
const RETRY_MS = 250;
const DUPLICATE_WINDOW_MS = 2 * 60_000;
const ACK_WAIT_MS = 30_000;
/**
 * How long the server keeps a NATS → ring bridge's durable consumer once
 * nothing pulls from it (JetStream's inactive_threshold): a bridge makes its
 * consumer again from its marker at every start, so one whose bridge went
 * for good (a ring named after a process, a host renamed) is removed by the
 * server instead of staying, with its pending count, for ever.
 */
export const CONSUMER_INACTIVE_MS = 60 * 60_000;
/** How the description of a consumer a NATS → ring bridge made begins; its durable name follows. */
export const CONSUMER_TAG = 'shmring bridge consumer';
/** ms an aborted ring → JetStream bridge, connected, waits for its batch's acknowledgements (as closeNats for its flush). */
const ABORT_ACK_MS = 1000;
/**
 * ms a dedicated bridge parks its thread at most before it lets the event
 * loop turn: the connection's traffic, its timers and an abort wait up to
 * this long while the ring is empty. The first slice after a record is
 * IDLE_SLICE_MS, each empty one twice the last, up to IDLE_SLICE_MAX_MS: a
 * bridge idle for long wakes 5 times a second (each wake, a futex timeout
 * and a turn of the loop, costs a few hundred µs of CPU on a VM: 50 a
 * second kept 1.3% of a CPU busy, 5 keep about 0.2%).
 */
const IDLE_SLICE_MS = 20;
const IDLE_SLICE_MAX_MS = 200;
/**
 * Bytes of a batch that a socket takes at once (Linux's initial TCP send
 * buffer is 16 KiB): after a larger batch, what the kernel did not take
 * waits in Node's queue for the socket, which drains only while the event
 * loop runs, so a dedicated bridge parks its thread only once the batch's
 * flush is answered (nextRecord).
 */
const SOCKET_TAKES = 16 << 10;

type NatsModule = Awaited<ReturnType<typeof loadNats>>;

interface Context {
  nats: NatsModule;
  nc: NatsConnection;
  address: NatsAddress;
  signal: AbortSignal;
  /** options.dedicated: wait for records by parking the thread (nextRecord). */
  dedicated: boolean;
  /** ms of the dedicated bridge's next slice (nextRecord). */
  sliceMs: number;
  /** A flush after which the client may still be writing (ringToCore, SOCKET_TAKES); it settles once the server has it all. */
  writing: Promise<unknown> | undefined;
  /** Resolves when the connection is up (at once if it is), or on the abort: look at the signal after it. */
  connected(): Promise<void>;
  /** Disconnections so far (a failure seen across one is the outage's, said already). */
  readonly outages: number;
  /** Says a persistent failure once per cause (`key`); a success after it says it is over. */
  trouble: Trouble;
  /** Says a line on the bridge's log. */
  log(line: string): void;
  /** Says and counts a NATS message too large for the ring (NATS → ring). */
  tooLarge(length: number, subject: string, ring: RingWriter, what: string): void;
  /** The ring message type of a NATS message (NATS → ring): typeOf, saying once a header that is not a type. */
  typeOf(headers: MsgHdrs | undefined, subject: string): number;
  /**
   * Whether a ring record of `length` bytes, with `headerBytes` of headers,
   * fits the server's max_payload (ring → NATS); when it does not, says and
   * counts it (the caller drops it).
   */
  fitsPayload(length: number, headerBytes: number, ring: RingReader): boolean;
  ready(): void;
  /** Calls `listener` after each reconnection; returns the call that removes it. */
  onReconnect(listener: () => void): () => void;
  /** Removes what watchConnection added to the signal (bridge() ends). */
  dispose(): void;
}

/**
 * The two ends of a bridge, parsed and paired (a ring on one side, NATS on
 * the other), before anything is opened: ERR_SHMRING_INVALID_ENDPOINT for
 * an endpoint malformed or out of place, which the command calls bad usage.
 */
export function bridgeEnds(from: unknown, to: unknown): { source: Endpoint; target: Endpoint } {
  const source = parseEndpoint(from, 'bridge');
  const target = parseEndpoint(to, 'bridge');
  if (source.kind === target.kind) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ENDPOINT,
      `bridge: ${source.text} → ${target.text}: a bridge joins a ring (shm:<name>) and NATS (nats://…), one on each side`,
    );
  }
  if (source.kind === 'shm' && (target as { address: NatsAddress }).address.consumer !== undefined) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ENDPOINT,
      `bridge: ${target.text}: consumer= names the JetStream consumer of a bridge from NATS into a ring; a bridge into NATS has none (remove it)`,
    );
  }
  return { source, target };
}

/** Moves messages from `from` to `to` (one of them shm:<name>, the other nats://…) until `signal` aborts. */
export async function bridge(from: string, to: string, options: BridgeOptions = {}): Promise<void> {
  const { source, target } = bridgeEnds(from, to);
  checkOptions(options, OptionNames.bridge, 'bridge');
  const signal = checkSignal(options?.signal, 'bridge') ?? new AbortController().signal;
  const userLog = options?.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  if (typeof userLog !== 'function')
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `bridge: log must be a function, got ${typeof userLog}`);
  // A log that throws must not stop the bridge, nor leave a loop that said something half done (a reconnection
  // whose waiters were not woken yet): its error becomes a process warning.
  const log = (line: string): void => {
    try {
      userLog(line);
    } catch (err) {
      process.emitWarning(`shmring bridge: options.log threw (${String(err)}) on the line: ${line}`, 'ShmringBridgeWarning');
    }
  };
  const poll = checkPoll(options?.poll, 'bridge');
  const dedicated = checkBoolean('dedicated', options?.dedicated, 'bridge');
  const onReady = options?.onReady;
  if (onReady !== undefined && typeof onReady !== 'function') {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `bridge: onReady must be a function, got ${typeof onReady}`);
  }
  const address = source.kind === 'nats' ? source.address : (target as { address: NatsAddress }).address;
  if (signal.aborted) return;
  const ringName = source.kind === 'shm' ? source.name : (target as { name: string }).name;
  const ring = source.kind === 'shm' ? openReader(ringName, poll) : openWriter(ringName, poll);
  let nc: NatsConnection | undefined;
  let ctx: Context | undefined;
  try {
    if (address.jetstream !== undefined && ring.kind !== 'SpscRing') {
      throw new ShmringTypeError(
        ErrorCodes.WRONG_KIND,
        `bridge ${source.text} → ${target.text}: shm:${ringName} is a ${ring.kind}; a JetStream bridge needs a SpscRing (${
          source.kind === 'shm'
            ? 'it keeps each record in the ring until the stream acknowledged it: holdReads, which a MpscRing lacks'
            : 'after a crash it tells from its own producer position whether its last write reached the ring, which a MpscRing has not'
        }); bridge a SpscRing, or use core NATS (no ?jetstream=)`,
      );
    }
    const nats = await loadNats();
    nc = await openNats(address, 'bridge to', { timeoutMs: 5000, name: `shmring bridge ${ringName}`, signal });
    // What an outage does to the messages, for its log line.
    const meanwhile =
      source.kind === 'shm'
        ? 'the ring fills meanwhile'
        : address.jetstream === undefined
          ? `what is published to '${address.subject}' meanwhile is lost: core NATS keeps nothing for a subscriber away`
          : `the stream '${address.jetstream}' keeps the messages meanwhile`;
    ctx = watchConnection(nats, nc, address, signal, log, onReady, dedicated, meanwhile);
    if (source.kind === 'shm') {
      warnPayload(ctx, ring as RingReader, log);
      if (address.jetstream === undefined) await ringToCore(ctx, ring as RingReader);
      else await ringToJetStream(ctx, ring as RingReader, address.jetstream);
    } else {
      if (address.jetstream === undefined) await coreToRing(ctx, ring as RingWriter);
      else await jetStreamToRing(ctx, ring as RingWriter, address.jetstream);
    }
  } catch (err) {
    if (signal.aborted) return;
    // This side never closes the ring before the finally below: ERR_SHMRING_CLOSED from it is the other side's
    // close, the stream's end (drained first, when the bridge reads it), not a failure.
    if (err instanceof ShmringError && err.code === ErrorCodes.CLOSED) {
      log(
        source.kind === 'shm'
          ? `shmring bridge: shm:${ringName} was closed by its producer and everything in it went to '${address.subject}': the bridge ends`
          : `shmring bridge: shm:${ringName} was closed by its consumer: the bridge ends (${
              address.jetstream === undefined
                ? `what is published to '${address.subject}' from now on is not taken`
                : `the stream '${address.jetstream}' keeps what the ring did not take`
            })`,
      );
      return;
    }
    // A subscription (or a JetStream API call) the server does not permit this user: nothing will move until
    // its permissions change, and nats.js has closed the subscription. Said as such, not as the raw NatsError.
    throw refusalError(err, `bridge ${source.text} → ${target.text}`, address.server);
  } finally {
    // A long-lived signal keeps no listener of a bridge that ended.
    ctx?.dispose();
    // The client first: until it is closed it may hold views of the ring's records (ringToCore).
    if (nc !== undefined) await closeNats(nc);
    ring.detach();
  }
}

/** Says each outage once; `connected()` waits out an outage (or the abort). */
function watchConnection(
  nats: NatsModule,
  nc: NatsConnection,
  address: NatsAddress,
  signal: AbortSignal,
  log: (line: string) => void,
  onReady: (() => void) | undefined,
  dedicated: boolean,
  meanwhile: string,
): Context {
  let down = false;
  let outages = 0;
  let dropped = 0;
  const waiters: Array<() => void> = [];
  const reconnected = new Set<() => void>();
  const refusals = new Map<string, number>();
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === 'error') {
        // What the server refuses it says only here: a publish it may not make (PERMISSIONS_VIOLATION) is
        // dropped with no error to the publisher, and the flush succeeds. Said at the 1st, 10th, 100th, … time.
        const context = (status as { permissionContext?: { operation?: string; subject?: string } }).permissionContext;
        const what = `${String(status.data)}${context === undefined ? '' : ` (${context.operation} '${context.subject}')`}`;
        const count = (refusals.get(what) ?? 0) + 1;
        refusals.set(what, count);
        if (Number.isInteger(Math.log10(count))) {
          log(
            `shmring bridge: the NATS server at ${address.server} refused: ${what}, ${count} time${count === 1 ? '' : 's'} so far; ` +
              `${context?.operation === 'publish' ? 'each record refused is lost (the ring has given it back)' : 'nothing moves meanwhile'}: ` +
              "grant the bridge's user that permission (or fix its credentials)",
          );
        }
      }
      if (status.type === 'disconnect') outages++;
      if (status.type === 'disconnect' && !down) {
        down = true;
        log(`shmring bridge: lost the NATS server at ${address.server}; reconnecting (${meanwhile})`);
      } else if (status.type === 'reconnect' && down) {
        down = false;
        for (const wake of waiters.splice(0)) wake();
        for (const listener of reconnected) listener();
        log(`shmring bridge: reconnected to the NATS server at ${address.server}`);
      }
    }
  })().catch((err: unknown) => log(`shmring bridge: stopped watching the connection to ${address.server}: ${String(err)}`));
  const onAbort = (): void => {
    for (const wake of waiters.splice(0)) wake();
  };
  signal.addEventListener('abort', onAbort, { once: true });
  let oversized = 0;
  let saidBadType = false;
  return {
    nats,
    nc,
    address,
    signal,
    dedicated,
    sliceMs: IDLE_SLICE_MS,
    writing: undefined,
    get outages() {
      return outages;
    },
    trouble: new Trouble(log),
    log,
    typeOf: (headers, subject) => {
      const type = typeOf(headers, nats.Match.IgnoreCase);
      if (type >= 0) return type;
      if (!saidBadType) {
        saidBadType = true;
        log(
          `shmring bridge: a message on '${subject}' has a ${TYPE_HEADER} header that is not a type ` +
            `(${JSON.stringify(headers?.get(TYPE_HEADER, nats.Match.IgnoreCase))}; a type is an integer in [0, 2147483647]): ` +
            'it goes into the ring as type 0, as a message without the header does (said once; fix the publisher)',
        );
      }
      return 0;
    },
    tooLarge: (length, subject, ring, what) => {
      dropped++;
      log(
        `shmring bridge: ${what} a message of ${length} bytes from subject '${subject}': larger than the largest record of the ring shm:${ring.name} (${ring.maxMessageLength} bytes); ${dropped} dropped so far (make the ring larger, or send smaller messages)`,
      );
    },
    fitsPayload: (length, headerBytes, ring) => {
      const limit = nc.info?.max_payload;
      if (limit === undefined || length + headerBytes <= limit) return true;
      oversized++;
      log(
        `shmring bridge: dropped a record of ${length} bytes (${length + headerBytes} with its headers) from the ring shm:${ring.name}: larger than the NATS server at ${address.server} takes (max_payload ${limit} bytes); ${oversized} dropped so far (raise max_payload in the server's configuration, or write smaller records)`,
      );
      return false;
    },
    onReconnect: (listener) => {
      reconnected.add(listener);
      return () => reconnected.delete(listener);
    },
    dispose: () => signal.removeEventListener('abort', onAbort),
    ready: () => {
      const once = onReady;
      onReady = undefined;
      once?.();
    },
    connected: () => (down && !signal.aborted ? new Promise<void>((resolve) => waiters.push(resolve)) : Promise.resolve()),
  };
}

/** Says once, at the start, that the ring's records may be larger than the server takes (ring → NATS). */
function warnPayload(ctx: Context, ring: RingReader, log: (line: string) => void): void {
  const limit = ctx.nc.info?.max_payload;
  if (limit === undefined || ring.maxMessageLength <= limit) return;
  log(
    `shmring bridge: the ring shm:${ring.name} takes records of up to ${ring.maxMessageLength} bytes, the NATS server at ${ctx.address.server} messages of up to ${limit} (max_payload, headers included): larger records are dropped and said (raise max_payload, or keep records smaller)`,
  );
}

/** Resolves with `promise`, or with undefined after `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([promise, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

const noop = (): void => {};

/**
 * Resolves with `promise`, or rejects with an AbortError when `signal` fires
 * first. `promise` gets a rejection handler in every case: the nats client
 * rejects what it still owes once the connection goes (DISCONNECT), long
 * after the abort, and a rejection nobody handles ends the process.
 */
function orAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(noop);
    return Promise.reject(abortError(signal));
  }
  return new Promise((resolve, reject) => {
    const onAbort = (): void => reject(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/**
 * A persistent failure said once: `fail` logs a cause when it is not the one
 * said last (a retry that fails the same way every 250 ms says nothing new),
 * `ok` says that it is over.
 */
class Trouble {
  #said: string | undefined;
  constructor(private readonly log: (line: string) => void) {}

  fail(key: string, line: string): void {
    if (this.#said === key) return;
    this.#said = key;
    this.log(line);
  }

  ok(line: string): void {
    if (this.#said === undefined) return;
    this.#said = undefined;
    this.log(line);
  }
}

/** Types whose headers are kept (a ring's messages mostly share a few types). */
const CACHED_TYPES = 256;

/**
 * The `Shmring-Type` header of each type, made and encoded once. publish()
 * asks its headers for their bytes each time (`encode()`, a string built and
 * UTF-8 encoded per message, and a MsgHdrs with its checks per message
 * before): a cached header answers with the bytes it encoded when made.
 * It is never changed afterwards, so those bytes are its bytes whatever
 * the client calls; the client copies them into its outbound buffer. Core
 * NATS only: js.publish() adds headers to the object it is given.
 */
class TypeHeaders {
  readonly #byType = new Map<number, PublishOptions>();

  constructor(private readonly nats: NatsModule) {}

  /** publish()'s options for a record of `type`: `{ headers }`, one object per type (publish sets its `reply` to '' and keeps nothing). */
  get(type: number): PublishOptions {
    const cached = this.#byType.get(type);
    if (cached !== undefined) return cached;
    const h = this.nats.headers();
    h.set(TYPE_HEADER, String(type));
    const encodable = h as MsgHdrs & { encode?: () => Uint8Array };
    if (typeof encodable.encode === 'function') {
      const bytes = encodable.encode();
      encodable.encode = () => bytes;
    }
    const options: PublishOptions = { headers: h };
    if (this.#byType.size < CACHED_TYPES) this.#byType.set(type, options);
    return options;
  }
}

/** Bytes of each chunk records are copied into (CopyPool); larger records get an ArrayBuffer of their own. */
const POOL_CHUNK = 256 << 10;
const POOLED_MAX = 64 << 10;

/**
 * Copies records out of the ring (ring → JetStream: js.publish() keeps
 * the bytes it is given for its retries, so they are never reused).
 * Records go side by side into chunks, one allocation per chunk rather
 * than one ArrayBuffer per message.
 */
class CopyPool {
  #chunk: Uint8Array | undefined;
  #used = 0;

  copy(data: Uint8Array, offset: number, length: number): Uint8Array {
    if (length > POOLED_MAX) return data.slice(offset, offset + length);
    if (this.#chunk === undefined || this.#used + length > this.#chunk.length) {
      this.#chunk = new Uint8Array(POOL_CHUNK);
      this.#used = 0;
    }
    const out = this.#chunk.subarray(this.#used, this.#used + length);
    out.set(data.subarray(offset, offset + length));
    this.#used += length;
    return out;
  }
}

/** Bytes of `headers` as the client sends them (what it adds to the payload for max_payload). */
function encodedLength(headers: MsgHdrs | undefined): number {
  return (headers as (MsgHdrs & { encode?: () => Uint8Array }) | undefined)?.encode?.().length ?? 0;
}

/**
 * Headers a message never exceeds but for a large `Shmring-Type` set's
 * uncached ones: a record this much under max_payload fits without its
 * headers being measured (ringToCore).
 */
const HEADER_ROOM = 64;

/**
 * The ring message type a NATS message carries: 0 when it has none (a
 * plain NATS client's message), -1 when its header is not a type (not a
 * decimal integer in [0, 2^31 - 1]). The header's name is matched with
 * `match` (Context.typeOf: whatever its case, as HTTP's header names).
 */
function typeOf(headers: MsgHdrs | undefined, match: MatchKind): number {
  const text = headers?.get(TYPE_HEADER, match) ?? '';
  if (text === '') return 0;
  const value = Number(text);
  return /^\d+$/.test(text) && value <= 0x7fffffff ? value : -1;
}

const turnOfTheLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Waits for the next record of an empty ring and takes it (a copy), or
 * resolves null when a dedicated bridge's slice passed without one (the
 * caller looks at the connection and the signal, and comes back).
 */
async function nextRecord(ctx: Context, ring: RingReader): Promise<Uint8Array | null> {
  if (!ctx.dedicated) return ring.read(ctx.signal);
  if (ctx.sliceMs === IDLE_SLICE_MS) {
    // Just after a record: the poll window (options.poll), if any, between event-loop turns.
    const polled = await ring.poll(ctx.signal);
    if (polled !== null) return polled;
  }
  if (ctx.writing !== undefined) {
    // What the client could not write at once waits in its socket's queue, which drains only while the event
    // loop runs: the thread parks once the last flush is answered, the event loop waits for a record until then.
    const record = await readUntil(ring, ctx.writing, ctx.signal);
    if (record !== null) return record;
    ctx.writing = undefined;
  }
  await turnOfTheLoop(); // what came meanwhile (a PONG, a status, the abort) before the thread parks
  if (ctx.signal.aborted) return null;
  const record = ring.readSync(ctx.sliceMs);
  ctx.sliceMs = record === null ? Math.min(ctx.sliceMs * 2, IDLE_SLICE_MAX_MS) : IDLE_SLICE_MS;
  return record;
}

/** Waits on the event loop for the next record (and takes it), or until `done` settles: then resolves null, taking none. */
async function readUntil(ring: RingReader, done: Promise<unknown>, signal: AbortSignal): Promise<Uint8Array | null> {
  const stop = new AbortController();
  const forward = (): void => stop.abort();
  signal.addEventListener('abort', forward, { once: true });
  try {
    const reading = ring.read(stop.signal);
    const first = await Promise.race([
      reading,
      done.then(
        () => null,
        () => null,
      ),
    ]);
    if (first !== null) return first;
    stop.abort();
    // A record the read took before it saw the abort is still this one's.
    return await reading.catch((err: unknown) => {
      if (signal.aborted || (err as Error).name !== 'AbortError') throw err;
      return null;
    });
  } finally {
    signal.removeEventListener('abort', forward);
  }
}

/**
 * Takes a batch from the ring (waiting for the first record when it is
 * empty) and hands each record, copied by `pool`, to `each` with its end
 * position.
 */
async function takeBatch(
  ctx: Context,
  ring: RingReader,
  pool: CopyPool,
  each: (bytes: Uint8Array, type: number, end: number) => void,
): Promise<number> {
  const taken = ring.drain((data, offset, length, type) => {
    each(pool.copy(data, offset, length), type, ring.readPosition);
  }, BATCH);
  if (taken > 0) return taken;
  const first = await nextRecord(ctx, ring);
  if (first === null) return 0;
  each(first, ring.lastType, ring.readPosition);
  return 1;
}

// ---- ring → NATS ----

/**
 * Whether the nats client still holds, by reference, bytes it was given to
 * publish. nats.js 2.x queues publish()'s payload views in its outbound
 * buffer (protocol.outbound) and copies them out (DataBuffer.pack, into
 * the one buffer it writes to the socket) when it flushes that buffer:
 * inline in publish() once 32 KiB are pending, at the latest in flush(),
 * which does it synchronously, unless it is not connected: then it keeps
 * them until a reconnection empties the buffer unsent (and rejects the
 * pending flushes). undefined: a client without that buffer, which may
 * hold anything it was given until the flush that follows settles.
 */
function clientHoldsPayloads(nc: NatsConnection): (() => boolean) | undefined {
  type Outbound = { size?: () => number };
  const protocol = (nc as unknown as { protocol?: { outbound?: Outbound } }).protocol;
  if (typeof protocol?.outbound?.size !== 'function') return undefined;
  return () => protocol.outbound!.size!() !== 0;
}

/**
 * Core NATS, zero-copy: each record is published from the ring, a view of
 * its bytes in place, and the ring holds the records it handed out
 * (holdReads) until the client has copied them. Right after the batch the
 * bridge calls flush(), which copies what the client still holds into the
 * bytes it writes, synchronously: the batch goes back to the producer at
 * once, and a lone record that woke an idle bridge goes out in the same
 * turn, with the flush's PING in the same write. Not connected, the client
 * keeps the views: the records stay in the ring until its reconnection
 * drops them unsent, and are then taken again (rewound) once NATS is back.
 * With a client whose buffer cannot be asked (clientHoldsPayloads), each
 * batch is held until its flush settles.
 *
 * The bridge waits for the previous batch's flush, not this one's, before
 * it drains again, so the next records are taken while this batch travels
 * and at most two batches are ever unconfirmed.
 */
async function ringToCore(ctx: Context, ring: RingReader): Promise<void> {
  const { nc, address, signal } = ctx;
  const subject = address.subject;
  const options = new TypeHeaders(ctx.nats);
  const holds = clientHoldsPayloads(nc);
  // An MpscRing zeroes each record once drain's handler returns, and cannot hold it: the client gets copies.
  const inPlace = ring.holds;
  let bytes = 0; // published since the last flush
  /** Whether a record of `length` bytes can be published (the server's max_payload); one too large is said, and dropped. */
  const fits = (length: number, published: PublishOptions): boolean =>
    length + HEADER_ROOM <= (nc.info?.max_payload ?? Infinity) || ctx.fitsPayload(length, encodedLength(published.headers), ring);
  const publish: DrainHandler = (data, offset, length, type) => {
    const published = options.get(type);
    // Too large, publish() would throw (MAX_PAYLOAD_EXCEEDED): the record is passed, taken like the others.
    if (!fits(length, published)) return;
    bytes += length;
    nc.publish(subject, inPlace ? data.subarray(offset, offset + length) : data.slice(offset, offset + length), published);
  };
  let previous: Promise<unknown> = Promise.resolve();
  if (inPlace) ring.hold();
  ctx.ready();
  while (!signal.aborted) {
    await ctx.connected();
    // Woken by the abort (NATS may still be down): take nothing more, what is in the ring stays there.
    if (signal.aborted) break;
    if (ring.drain(publish, BATCH) === 0) {
      // Idle: wait for a record (a copy: nothing of the ring is lent), then take what came with it.
      const first = await nextRecord(ctx, ring);
      if (first === null) continue;
      const published = options.get(ring.lastType);
      if (signal.aborted) {
        // Held, the record stays in the ring. Taken from an MpscRing it is out of it: connected, it goes with the
        // close's flush; disconnected (closeNats does not flush then), it is lost, as core NATS may lose any.
        if (!inPlace && fits(first.length, published)) nc.publish(subject, first, published);
        break;
      }
      if (fits(first.length, published)) {
        bytes += first.length;
        nc.publish(subject, first, published);
      }
      ring.drain(publish, BATCH - 1);
    }
    // Writes what the client holds now (the batch's bytes copied into one buffer) and a PING.
    const flushed = nc.flush();
    // More than the socket surely takes at once, or behind what it did not: nextRecord waits for this flush.
    if (bytes > SOCKET_TAKES || ctx.writing !== undefined) ctx.writing = flushed;
    bytes = 0;
    const end = ring.readPosition;
    if (!inPlace) {
      // Copies: nothing to give back.
    } else if (holds !== undefined && !holds()) {
      ring.release(end); // the client copied every record
    } else {
      // The client lends our views to a later write, or drops them unsent when it reconnects.
      const sent = await orAbort(flushed, signal).then(
        () => true,
        () => false,
      );
      if (signal.aborted) break; // what is held stays in the ring for the next bridge
      if (sent || holds === undefined) ring.release(end);
      else ring.rewind(); // dropped unsent: publish it again once connected
    }
    await previous;
    // The server has the batch once this resolves. A failure is the connection dropping (core NATS is at
    // most once) or the abort, which ends the loop: never a rejection left waiting for the next turn.
    previous = orAbort(flushed, signal).catch(() => undefined);
  }
  await previous;
}

interface ApiError {
  code?: string;
  message?: string;
  api_error?: { code?: number; err_code?: number; description?: string };
}

const STREAM_NOT_FOUND = 10059;
const SUBJECTS_OVERLAP = 10065;
/** JetStream not enabled (for the server, for the account). */
const NO_JETSTREAM = new Set([10076, 10039]);

/** Whether NATS subject `pattern` (with `*` and `>` wildcards) matches `subject`. */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length || (p[i] !== '*' && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}

const CONSUMER_NOT_FOUND = 10014;

/**
 * What a JetStream failure is, for both its readers: the bridge's start
 * (jetStreamError: a typed error) and a failure while it runs
 * (describeFailure: a log line, once per cause).
 *   noResponders  NATS: no responders (no JetStream on the server at the start; no stream on the subject later)
 *   noJetStream   JetStream is not enabled (for the server, for the account)
 *   missing       the stream or the bridge's consumer does not exist (deleted while the bridge ran)
 *   timeout       JetStream did not answer in time
 *   refused       any other refusal of the JetStream API
 *   other         not JetStream's (the abort, the ring's errors, …)
 */
type FailureKind = 'noResponders' | 'noJetStream' | 'missing' | 'timeout' | 'refused' | 'other';

function classify(err: unknown): FailureKind {
  const e = err as ApiError;
  const errCode = e?.api_error?.err_code;
  if (e?.code === '503') return 'noResponders';
  if (errCode !== undefined && NO_JETSTREAM.has(errCode)) return 'noJetStream';
  if (e?.code === 'TIMEOUT') return 'timeout';
  if (errCode === STREAM_NOT_FOUND || errCode === CONSUMER_NOT_FOUND) return 'missing';
  // The consumer's own errors (consume() with abort_on_missing_resource) carry no api_error.
  if (e?.code === '409' && /consumer deleted/i.test(e.message ?? '')) return 'missing';
  if (/^(stream|consumer) not found$/i.test(e?.message ?? '')) return 'missing';
  return e?.api_error !== undefined ? 'refused' : 'other';
}

/**
 * A JetStream error at the bridge's start as a typed error naming the
 * server, the stream and the subject, saying what to do: no JetStream on
 * the server (NATS: no responders on its API) is ERR_SHMRING_NO_SERVER, a
 * stream the endpoint cannot use ERR_SHMRING_INVALID_ENDPOINT, JetStream
 * not answering in time ERR_SHMRING_UNREACHABLE. Anything else (the abort)
 * is returned as it is.
 */
function jetStreamError(err: unknown, ctx: Context, stream: string): unknown {
  if (err instanceof ShmringError || (err as Error).name === 'AbortError') return err;
  const e = err as ApiError;
  const { address } = ctx;
  const at = `bridge ${address.text}`;
  const errCode = e.api_error?.err_code;
  const kind = classify(err);
  if (kind === 'noResponders' || kind === 'noJetStream') {
    return new ShmringError(
      ErrorCodes.NO_SERVER,
      `${at}: the NATS server at ${address.server} has no JetStream (its JetStream API ${kind === 'noResponders' ? 'has no responders' : `says: ${e.api_error?.description}`}); start nats-server with -js (or enable jetstream in its configuration), or bridge core NATS (no ?jetstream=)`,
      { cause: err },
    );
  }
  if (kind === 'timeout') {
    return new ShmringError(
      ErrorCodes.UNREACHABLE,
      `${at}: JetStream at ${address.server} did not answer about the stream '${stream}' in time; is the server (or its JetStream cluster) healthy?`,
      { cause: err },
    );
  }
  if (e.api_error !== undefined) {
    return new ShmringError(
      ErrorCodes.INVALID_ENDPOINT,
      `${at}: JetStream at ${address.server} refused the stream '${stream}' for subject '${address.subject}': ${e.api_error.description ?? e.message} (JetStream error ${errCode}); fix the stream, or name another in ?jetstream=`,
      { cause: err },
    );
  }
  return err;
}

/**
 * The stream of `?jetstream=`, made on the subject when it is missing. One
 * that exists must take the subject: a bridge on a stream that does not
 * would publish nothing (every publish fails, for ever) or consume nothing.
 * Consuming (`publishing` false), a mirror or a stream with sources is
 * taken as it is: its messages come from other streams, on their subjects,
 * not from its own (a mirror has none).
 */
/**
 * Checks (or makes) the stream the endpoint names; returns its max_msg_size
 * (bytes, headers included) where it has one, else undefined.
 */
async function ensureStream(ctx: Context, stream: string, publishing: boolean): Promise<number | undefined> {
  const { address, signal } = ctx;
  let maxMessage: number | undefined;
  try {
    const jsm = await orAbort(ctx.nc.jetstreamManager(), signal);
    let subjects: string[];
    try {
      const { config } = await orAbort(jsm.streams.info(stream), signal);
      if (!publishing && (config.mirror != null || (config.sources?.length ?? 0) > 0)) return undefined;
      subjects = config.subjects ?? [];
      if (config.max_msg_size !== undefined && config.max_msg_size > 0) maxMessage = config.max_msg_size;
    } catch (err) {
      if ((err as ApiError).api_error?.err_code !== STREAM_NOT_FOUND) throw err;
      try {
        await orAbort(
          jsm.streams.add({ name: stream, subjects: [address.subject], duplicate_window: ctx.nats.nanos(DUPLICATE_WINDOW_MS) }),
          signal,
        );
        return undefined;
      } catch (addErr) {
        if ((addErr as ApiError).api_error?.err_code !== SUBJECTS_OVERLAP) throw addErr;
        // Which stream has it, to say which one to name.
        const other = await orAbort(jsm.streams.find(address.subject), signal).catch(() => undefined);
        throw new ShmringError(
          ErrorCodes.INVALID_ENDPOINT,
          `bridge ${address.text}: the stream '${stream}' does not exist and cannot be made on subject '${address.subject}': ${
            other === undefined ? 'another stream' : `the stream '${other}'`
          } takes that subject already (a subject belongs to one stream); name ${other === undefined ? 'that stream' : `it (?jetstream=${other})`} in the endpoint`,
          { cause: addErr },
        );
      }
    }
    if (!subjects.some((pattern) => subjectMatches(pattern, address.subject))) {
      throw new ShmringError(
        ErrorCodes.INVALID_ENDPOINT,
        `bridge ${address.text}: the stream '${stream}' does not take subject '${address.subject}' (its subjects: ${
          subjects.length === 0 ? 'none' : subjects.map((x) => `'${x}'`).join(', ')
        }); add the subject to the stream (nats stream edit ${stream} --subjects …), or name a stream that takes it in ?jetstream=`,
      );
    }
  } catch (err) {
    throw jetStreamError(err, ctx, stream);
  }
  return maxMessage;
}

/** What a failed publish or consumer says, for the log (the cause's key: one line per cause). */
function describeFailure(err: unknown, ctx: Context, stream: string): string {
  const e = err as ApiError;
  switch (classify(err)) {
    case 'noResponders':
      return `no stream takes subject '${ctx.address.subject}' any more (NATS: no responders; was the stream '${stream}' deleted or its subjects changed?)`;
    case 'missing':
      // One cause whichever of the stream or the consumer the server names first (its consumer goes with a stream).
      // The consumer alone may be gone while the stream is there: on a limits stream the server removes one that
      // nobody pulled from for CONSUMER_INACTIVE_MS, which a bridge blocked on a full ring for that long does not.
      return `the stream '${stream}' or the bridge's consumer on it does not exist any more (the stream deleted, or the consumer deleted, or removed by the server after ${CONSUMER_INACTIVE_MS / 60_000} min without a pull while the ring stayed full); the bridge makes its consumer again, once the stream is there`;
    case 'timeout':
      return 'JetStream did not answer in time';
    case 'noJetStream':
    case 'refused':
      return `${e.api_error?.description ?? e.message} (JetStream error ${e.api_error?.err_code})`;
    default:
      return (err as Error)?.message ?? String(err);
  }
}

async function ringToJetStream(ctx: Context, ring: RingReader, stream: string): Promise<void> {
  const { nc, address, signal } = ctx;
  const streamMax = await ensureStream(ctx, stream, true);
  let tooLargeForStream = 0;
  /** Whether the stream takes a record of `bytes` with `headerBytes` of headers: one it refuses, retried, would block the ring for good. */
  const fitsStream = (length: number, headerBytes: number): boolean => {
    if (streamMax === undefined || length + headerBytes <= streamMax) return true;
    tooLargeForStream++;
    ctx.log(
      `shmring bridge: dropped a record of ${length} bytes (${length + headerBytes} with its headers) from the ring shm:${ring.name}: larger than the stream '${stream}' takes (max_msg_size ${streamMax} bytes); ${tooLargeForStream} dropped so far (raise the stream's max_msg_size, or write smaller records)`,
    );
    return false;
  };
  const js: JetStreamClient = nc.jetstream();
  const pool = new CopyPool();
  ring.hold();
  ctx.ready();
  while (!signal.aborted) {
    await ctx.connected();
    // Woken by the abort: take nothing more (what is held stays in the ring).
    if (signal.aborted) break;
    const outages = ctx.outages;
    const acks: Array<Promise<unknown>> = [];
    const ends: number[] = [];
    await takeBatch(ctx, ring, pool, (bytes, type, end) => {
      // A header of its own: js.publish() adds the message id and the stream to it (never a cached TypeHeaders one).
      const h = ctx.nats.headers();
      h.set(TYPE_HEADER, String(type));
      // The record's end counted since the ring's creation: unlike the u32 position, it does not come round again
      // after 4 GiB (when the stream, within its duplicate window, would drop a new record as a duplicate: lost).
      const msgID = `${ring.identity}:${ring.readCount}`;
      ends.push(end);
      const headerBytes = encodedLength(h) + Buffer.byteLength(`Nats-Msg-Id: ${msgID}\r\nNats-Expected-Stream: ${stream}\r\n`);
      // Too large for the server: passed (released with the batch), as js.publish() would reject it at every retry.
      if (!ctx.fitsPayload(bytes.length, headerBytes, ring) || !fitsStream(bytes.length, headerBytes)) acks.push(Promise.resolve());
      else acks.push(js.publish(address.subject, bytes, { headers: h, msgID, expect: { streamName: stream } }));
    });
    if (signal.aborted && acks.length === 0) break;
    const all = Promise.allSettled(acks);
    // The acknowledgements wait out the client's timeout while NATS is down: the abort does not.
    let settled = await orAbort(all, signal).catch(() => undefined);
    if (settled === undefined) {
      // Aborted. Connected, the stream answers at once: what it acknowledged within ABORT_ACK_MS is released (the
      // next bridge would publish it again, a duplicate once past the duplicate window). Disconnected, nothing
      // comes: at once. What is not released stays in the ring; the stream drops what it had, by id, if it comes again.
      if (isConnected(nc)) settled = await within(all, ABORT_ACK_MS);
      if (settled !== undefined) releaseAcknowledged(ring, settled, ends);
      break;
    }
    const failed = releaseAcknowledged(ring, settled, ends);
    if (failed >= 0) {
      const reason = describeFailure((settled[failed] as PromiseRejectedResult).reason, ctx, stream);
      // A failure across a disconnection is the outage's, said already; any other is said once per cause.
      if (ctx.outages === outages && isConnected(nc)) {
        ctx.trouble.fail(
          reason,
          `shmring bridge: the stream '${stream}' at ${address.server} does not take what the bridge publishes to '${address.subject}': ${reason}; retrying every ${RETRY_MS} ms (the ring fills meanwhile)`,
        );
      }
      // Publish the rest again, same ids, once NATS is back: the stream drops what it had already.
      ring.rewind();
      if (!signal.aborted) await sleep(RETRY_MS, signal);
    } else if (acks.length > 0) {
      ctx.trouble.ok(`shmring bridge: the stream '${stream}' takes the messages of '${address.subject}' again`);
    }
  }
}

/** Gives back what the stream has, up to the first record it does not have; returns that one's index (-1: none). */
function releaseAcknowledged(ring: RingReader, settled: Array<PromiseSettledResult<unknown>>, ends: number[]): number {
  const failed = settled.findIndex((s) => s.status === 'rejected');
  const safe = failed < 0 ? ends.length : failed;
  if (safe > 0) ring.release(ends[safe - 1]!);
  return failed;
}

// ---- NATS → ring ----

async function writeInOrder(ring: RingWriter, bytes: Uint8Array, type: number, signal: AbortSignal): Promise<void> {
  if (!ring.tryWrite(bytes, type)) await ring.write(bytes, type, signal);
}

/**
 * Writes a NATS message into the ring, or returns false when it is larger
 * than the ring's largest record: any client may publish to the subject,
 * and one message must not stop the bridge (it would stop at the same one
 * again after a restart, with JetStream).
 */
async function writeMessage(ring: RingWriter, bytes: Uint8Array, type: number, signal: AbortSignal): Promise<boolean> {
  if (bytes.length > ring.maxMessageLength) return false;
  try {
    await writeInOrder(ring, bytes, type, signal);
    return true;
  } catch (err) {
    if ((err as ShmringError).code === ErrorCodes.MESSAGE_TOO_LARGE) return false;
    throw err;
  }
}

async function coreToRing(ctx: Context, ring: RingWriter): Promise<void> {
  const { nc, address, signal } = ctx;
  const sub = nc.subscribe(address.subject);
  const stop = (): void => sub.unsubscribe();
  signal.addEventListener('abort', stop, { once: true });
  try {
    await orAbort(nc.flush(), signal); // the server has the subscription
    ctx.ready();
    for await (const msg of sub) {
      if (!(await writeMessage(ring, msg.data, ctx.typeOf(msg.headers, msg.subject), signal)))
        ctx.tooLarge(msg.data.length, msg.subject, ring, 'dropped');
    }
  } finally {
    signal.removeEventListener('abort', stop);
  }
}

/**
 * The marker (`<ring>.jsbridge`): what the NATS → ring bridge wrote last.
 *   f64 [0]      COMMITTED  stream sequence of the last message known to be in the ring
 *   f64 [1]      INTENT     stream sequence of the message being written
 *   i32 [4]      AT         the ring's producer position before that write
 *   u8  [32,48)  STREAM     whose sequences these are: the first 16 bytes of the
 *                           SHA-256 of `<stream>\0<created>\0<subject>` (created:
 *                           the stream's creation time, as its info says it); all
 *                           zero in a marker that does not say
 * Written AT, then INTENT, then the ring record, then COMMITTED: after a
 * crash, INTENT > COMMITTED and a producer position other than AT mean the
 * write happened. (Aligned 8-byte stores: a killed process leaves each whole.)
 * Sequences mean nothing in another stream, nor in one deleted and made
 * again under the same name (they restart at 1), nor for another subject of
 * the stream: a marker for other messages than the consumer's is not used
 * (adoptMarker).
 */
const MARKER_SIZE = 64;
const COMMITTED = 0;
const INTENT = 1;
const AT_I32 = 4;
const STREAM_AT = 32;
const STREAM_BYTES = 16;

interface Marker {
  region: Region;
  f64: Float64Array;
  i32: Int32Array;
  /** STREAM. */
  stream: Uint8Array;
}

function openMarker(ring: RingWriter): Marker {
  const region = Region.create({ backing: 'posix', name: `${ring.name}.jsbridge`, size: MARKER_SIZE, exclusive: false });
  const f64 = new Float64Array(region.buffer, 0, 2);
  const i32 = new Int32Array(region.buffer, 0, MARKER_SIZE / 4);
  if (f64[INTENT]! > f64[COMMITTED]! && ring.writePosition !== i32[AT_I32]! >>> 0) f64[COMMITTED] = f64[INTENT]!;
  return { region, f64, i32, stream: new Uint8Array(region.buffer, STREAM_AT, STREAM_BYTES) };
}

/** STREAM of the messages of `subject` in the stream `name` made at `created`. */
function streamIdentity(name: string, created: string, subject: string): Uint8Array {
  return new Uint8Array(createHash('sha256').update(`${name}\0${created}\0${subject}`).digest().subarray(0, STREAM_BYTES));
}

/**
 * Makes the marker the one of `identity`. One for other messages is reset,
 * as for a fresh ring, so that the consumer starts at the stream's first
 * message rather than after a sequence of another stream. One that does
 * not say whose it is (all-zero STREAM: made by a bridge before STREAM was
 * recorded, or fresh) is taken as this stream's and keeps its sequences:
 * an older bridge upgraded in place goes on where it stopped, rather than
 * writing the whole stream into its ring again. Returns 'another' when a
 * sequence was reset, undefined otherwise.
 */
function adoptMarker(marker: Pick<Marker, 'f64' | 'stream'>, identity: Uint8Array): 'another' | undefined {
  if (marker.stream.every((b, i) => b === identity[i])) return undefined;
  if (marker.stream.every((b) => b === 0)) {
    marker.stream.set(identity);
    return undefined;
  }
  const used = marker.f64[COMMITTED]! > 0 || marker.f64[INTENT]! > 0;
  // The sequences go first: a crash before STREAM is written leaves a marker that is still another's, and is reset again.
  marker.f64[COMMITTED] = 0;
  marker.f64[INTENT] = 0;
  marker.stream.set(identity);
  // Without a sequence there was nothing to skip: nothing to say.
  return used ? 'another' : undefined;
}

/** Bytes of a default consumer name past which its host and ring are shortened to a hash. */
const CONSUMER_NAME_MAX = 128;

/**
 * The durable consumer of a NATS → ring JetStream bridge without
 * `&consumer=`: `shmring-bridge-<host>-<ring>`, each with what JetStream
 * does not take in a name (and '.', which it does not either) as '_'. The
 * host is in it because two hosts bridge one stream into rings of one name
 * (each its own `shm:orders`): with one consumer between them, each bridge
 * deletes the other's at its start and each ring gets part of the stream.
 * Where that spelling could name two bridges (a character replaced, so
 * rings `orders.eu` and `orders_eu` would meet; a '-' in the host, so host
 * `web-1` with ring `orders` and host `web` with ring `1-orders` would),
 * or where it is too long, a hash of the exact host and ring ends it.
 */
export function defaultConsumer(ring: string, host: string): string {
  const clean = (text: string): string => text.replace(/[^A-Za-z0-9_-]/g, '_');
  const name = `shmring-bridge-${clean(host)}-${clean(ring)}`;
  const ambiguous = clean(host) !== host || clean(ring) !== ring || host.includes('-');
  if (!ambiguous && name.length <= CONSUMER_NAME_MAX) return name;
  const hash = createHash('sha256').update(`${host}\0${ring}`).digest('hex').slice(0, 16);
  return `${name.slice(0, CONSUMER_NAME_MAX - hash.length - 1)}-${hash}`;
}

async function jetStreamToRing(ctx: Context, ring: RingWriter, stream: string): Promise<void> {
  const { signal } = ctx;
  await ensureStream(ctx, stream, false);
  const marker = openMarker(ring);
  try {
    const durable = ctx.address.consumer ?? defaultConsumer(ring.name, hostname());
    // A pull that was pending when the server went away may never be
    // answered: after each reconnection the consumer starts again.
    while (!signal.aborted) {
      const outages = ctx.outages;
      try {
        await consumeOnce(ctx, ring, stream, durable, marker);
      } catch (err) {
        // The ring's own errors (closed, corrupt) end the bridge; NATS's are retried, and said once per cause; a
        // JetStream API call the server does not permit this user (a consumer's info, add, delete) ends it, as at its start.
        if (signal.aborted || err instanceof ShmringError || err instanceof RangeError) throw err;
        if ((err as { code?: unknown }).code === 'PERMISSIONS_VIOLATION')
          throw refusalError(err, `bridge ${ctx.address.text}`, ctx.address.server);
        if (ctx.outages === outages && isConnected(ctx.nc)) {
          const reason = describeFailure(err, ctx, stream);
          ctx.trouble.fail(
            reason,
            `shmring bridge: cannot consume the stream '${stream}' at ${ctx.address.server} (subject '${ctx.address.subject}'): ${reason}; retrying every ${RETRY_MS} ms`,
          );
        }
        await sleep(RETRY_MS, signal);
      }
      if (!signal.aborted) await ctx.connected();
    }
  } finally {
    marker.region.close();
  }
}

async function consumeOnce(ctx: Context, ring: RingWriter, stream: string, durable: string, marker: Marker): Promise<void> {
  const { nc, signal } = ctx;
  {
    const jsm = await orAbort(nc.jetstreamManager(), signal);
    // Asked at each start: the stream may have been deleted and made again (sequences from 1) while the bridge waited.
    const info = await orAbort(jsm.streams.info(stream), signal);
    const reset = adoptMarker(marker, streamIdentity(stream, info.created, ctx.address.subject));
    if (reset !== undefined) {
      ctx.log(
        `shmring bridge: the progress marker /dev/shm/${ring.name}.jsbridge was for other messages ` +
          `(another stream, the stream '${stream}' before it was made again, or another subject): its sequence is not used; ` +
          `the ring shm:${ring.name} gets the stream '${stream}' from its first message on '${ctx.address.subject}'`,
      );
    }
    const committed = marker.f64[COMMITTED]!;
    const { AckPolicy, DeliverPolicy, RetentionPolicy, nanos } = ctx.nats;
    const retention = info.config.retention;
    // The consumer starts right after the last message the ring holds: nothing delivered to a bridge that died
    // is waited for (ack wait) or reordered. A work queue keeps only what no consumer acknowledged, from its
    // first message on (and takes no other start): all of it, what the ring has acknowledged again below.
    const start =
      committed > 0 && retention !== RetentionPolicy.Workqueue
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: committed + 1 }
        : { deliver_policy: DeliverPolicy.All };
    const config = {
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(ACK_WAIT_MS),
      max_ack_pending: BATCH,
      filter_subject: ctx.address.subject,
      // Only where the stream keeps its messages whatever the consumers do: deleted by the server, the consumer of
      // an interest stream would take with it every message it had not acknowledged, that of a work queue is
      // harmless but a bridge blocked on a full ring for the threshold loses it under it. Those stay (delete them
      // with `nats consumer rm` once their bridge is gone for good).
      ...(retention === RetentionPolicy.Limits ? { inactive_threshold: nanos(CONSUMER_INACTIVE_MS) } : {}),
      ...start,
    };
    // Marks the consumers this bridge makes (description: nats-server 2.9 has no metadata), so that it never
    // takes or deletes another's on an interest stream, where it takes turns between two names.
    const tag = `${CONSUMER_TAG} ${durable}`;
    let name = durable;
    if (retention === RetentionPolicy.Interest) {
      // Deleting the consumer first would drop every message no other consumer wants: the one this start makes
      // (under the other of two names) holds them before the old one goes.
      const alternate = `${durable}-b`;
      const whose = async (n: string): Promise<'absent' | 'mine' | 'foreign'> => {
        const info = await consumerInfo(jsm, stream, n, signal);
        if (info === undefined) return 'absent';
        const description = info.config.description ?? '';
        // One without a description under the first name: made by a bridge from before the tag.
        return description === tag || (description === '' && n === durable) ? 'mine' : 'foreign';
      };
      const first = await whose(durable);
      let second = await whose(alternate);
      for (const [n, state] of [
        [durable, first],
        [alternate, second],
      ] as const) {
        if (state === 'foreign') {
          throw new ShmringError(
            ErrorCodes.INVALID_ENDPOINT,
            `bridge ${ctx.address.text}: the interest stream '${stream}' has a consumer '${n}' that is not this bridge's; on an interest stream the bridge takes turns between '${durable}' and '${alternate}': give it another name with &consumer=`,
          );
        }
      }
      // Both left (a bridge stopped between its add and its delete): the second goes, the first holds the messages.
      if (first === 'mine' && second === 'mine') {
        await deleteConsumer(jsm, stream, alternate, signal);
        second = 'absent';
      }
      name = first === 'mine' ? alternate : durable;
      await orAbort(jsm.consumers.add(stream, { ...config, description: tag, durable_name: name }), signal);
      const old = first === 'mine' ? durable : second === 'mine' ? alternate : undefined;
      if (old !== undefined) await deleteConsumer(jsm, stream, old, signal);
    } else {
      await deleteConsumer(jsm, stream, durable, signal);
      await orAbort(jsm.consumers.add(stream, { ...config, description: tag, durable_name: name }), signal);
    }
    const consumer = await orAbort(nc.jetstream().consumers.get(stream, name), signal);
    // A stream or consumer deleted while it runs ends consume() (which would look for it again, silently, for ever):
    // jetStreamToRing says it once and starts the consumer again every RETRY_MS, until the stream is back.
    const messages = await orAbort(consumer.consume({ max_messages: BATCH, abort_on_missing_resource: true }), signal);
    const stop = (): void => void messages.close();
    signal.addEventListener('abort', stop, { once: true });
    const forget = ctx.onReconnect(stop);
    ctx.ready();
    ctx.trouble.ok(`shmring bridge: consuming the stream '${stream}' again`);
    try {
      for await (const msg of messages) {
        await deliver(ctx, ring, marker, msg);
      }
    } finally {
      forget();
      signal.removeEventListener('abort', stop);
    }
  }
}

/** The stream's consumer of that name, or undefined. */
async function consumerInfo(jsm: JetStreamManager, stream: string, name: string, signal: AbortSignal): Promise<ConsumerInfo | undefined> {
  try {
    return await orAbort(jsm.consumers.info(stream, name), signal);
  } catch (err) {
    if ((err as ApiError).api_error?.err_code === CONSUMER_NOT_FOUND) return undefined;
    throw err;
  }
}

/**
 * Deletes the consumer if it is there. Any failure but "not found" is
 * thrown (the caller starts again): a consumer left in place would be taken
 * as it is by the add that follows (the same configuration), and the
 * messages it had delivered to the connection just lost would come again
 * only after its ack wait, behind later ones, which the ring would have
 * taken already: skipped as in the ring, lost.
 */
async function deleteConsumer(jsm: JetStreamManager, stream: string, name: string, signal: AbortSignal): Promise<void> {
  try {
    await orAbort(jsm.consumers.delete(stream, name), signal);
  } catch (err) {
    if (!signal.aborted && (err as ApiError).api_error?.err_code === CONSUMER_NOT_FOUND) return;
    throw err;
  }
}

async function deliver(ctx: Context, ring: RingWriter, marker: Marker, msg: JsMsg): Promise<void> {
  const seq = msg.seq;
  if (seq <= marker.f64[COMMITTED]!) {
    msg.ack(); // in the ring already (a redelivery)
    return;
  }
  Atomics.store(marker.i32, AT_I32, ring.writePosition | 0);
  marker.f64[INTENT] = seq;
  // Too large, nothing is written (the producer position stays at AT: a crash now is not taken for a write).
  const written = await writeMessage(ring, msg.data, ctx.typeOf(msg.headers, msg.subject), ctx.signal);
  // Passed for good when too large: COMMITTED past it (a restarted consumer starts after it), term() (this one never redelivers it).
  marker.f64[COMMITTED] = seq;
  if (written) {
    msg.ack();
    return;
  }
  msg.term(`larger than the largest record of the ring shm:${ring.name}`);
  ctx.tooLarge(msg.data.length, msg.subject, ring, `terminated (stream sequence ${seq}, not redelivered)`);
}
