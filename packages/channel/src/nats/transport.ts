/**
 * One end of a channel over NATS: each record the Channel writes is one
 * NATS message published to the peer's inbox subject, its record type in the
 * `Shmring-Type` header; what arrives on this end's inbox queues here until
 * the Channel's pump takes it. NATS keeps the order of one publisher's
 * messages to one subscriber, so records arrive in the order they were
 * written, as on a ring.
 *
 * The link (the peer's liveness) is a heartbeat: every `beatMs` each end
 * publishes an empty message with a reply subject (its own inbox) to the
 * other's inbox. When the peer's connection is gone, the NATS server itself
 * answers that heartbeat (and any request) with a "no responders" status, so
 * a peer that died (its process exited or was killed: its TCP connection
 * closed) is known within one `beatMs` plus a round trip; a peer that went
 * silent without its connection closing (its host or network vanished) is
 * known once nothing came from it for DEAD_AFTER_BEATS of its heartbeats.
 * "No responders" is taken as the peer's death only if this end heard from
 * the peer since its own connection last lost the server: when the server
 * restarts, every client reconnects on its own schedule, and a heartbeat
 * sent between this end's reconnection and the peer's is answered "no
 * responders" though the peer is alive. Until the peer is heard from again,
 * such answers count as silence, so a peer that died meanwhile is still
 * known within DEAD_AFTER_BEATS periods of the last thing it sent. So that
 * an outage eats into that bound only for as long as it lasts, each end
 * beats at once when its connection is back, and again when it first
 * hears from the peer after that (the peer may have missed the first).
 * A clean close() publishes a CLOSE control message, which comes after
 * every record sent before it.
 *
 * Loss: core NATS delivers at most once, and a connection loss (a server
 * restart, a slow consumer cut off) drops what was in flight. Each record
 * carries its number (SEQ_HEADER: 0, 1, 2, … per end), and each heartbeat
 * and CLOSE the count sent before it, so the receiving end sees a gap at
 * the next record, heartbeat or CLOSE, within one heartbeat period at the
 * latest. It then hands out what came before the gap, ends the channel
 * with ERR_SHMRING_MESSAGE_LOST, and tells the peer (a CLOSE with the
 * reason 'lost'), whose channel ends with it too: a lost request would
 * otherwise leave its caller waiting for ever (without a timeout), a lost
 * part of a split value would corrupt it, and values after a lost one would
 * be delivered as if nothing had happened. A message without the header (a
 * peer that does not number its records) is not checked.
 *
 * Threading: one thread, the Channel's.
 */
import { abortError, ErrorCodes, ShmringError } from '@shmring/core';
import type { DrainHandler } from '@shmring/ringbuf';
import type { Msg, MsgHdrs, NatsConnection, Subscription } from 'nats';
import type { Link } from '../link.js';
import type { RecordReadOptions, RecordSink, RecordSource } from '../transport.js';
import * as F from '../frames.js';
import { type ConnectionWatch, type Outbound, outbound, refusalError, watchConnection } from './connection.js';

/** Header carrying a record's (ring message's) type: a decimal integer in [0, 2^31 - 1]. */
export const TYPE_HEADER = 'Shmring-Type';
/** Header of the transport's own messages: 'beat' or 'close'. */
const CONTROL_HEADER = 'Shmring-Control';
/** A record's number (decimal, from 0 per end); on a beat or CLOSE, the number of records sent before it. */
export const SEQ_HEADER = 'Shmring-Seq';
/** On a CLOSE: why this end closed, when not by its user ('lost': it saw records of the peer's go missing). */
const REASON_HEADER = 'Shmring-Reason';
/** A peer silent for this many of its heartbeat periods is dead. */
export const DEAD_AFTER_BEATS = 3;
export const DEFAULT_BEAT_MS = 1000;
/** Bytes of a message kept for headers below the server's max_payload. */
const HEADER_ROOM = 1024;
const NO_RESPONDERS = 503;
/**
 * ms a run of writes may go on before the event loop turns. Publishing
 * never waits (core NATS has no back-pressure), so `await send()` in a loop
 * would otherwise run in microtasks for ever: no heartbeat would go out or
 * come in, and both live ends would end the channel as dead. Past this,
 * paced() gives the writer a promise of the loop's next turn.
 */
const WRITE_TURN_MS = 10;
/**
 * Bytes a connection may hold unsent (nats.js's buffer and its socket's)
 * before a write waits for them to drain. nats.js itself never waits: a
 * sender faster than the network (or a server that stalls) would grow them
 * without bound, and on a listener's connection, shared by its channels,
 * every other channel's heartbeats would queue behind them. A write that
 * finds more than this pending resolves once the socket drains (or the
 * connection is back, or closes): memory stays within this, one message
 * and the kernel's socket buffer; a heartbeat waits behind at most as much.
 */
export const OUTBOUND_HIGH_WATER = 1 << 20;

interface Record {
  data: Uint8Array;
  type: number;
}

type HeadersFn = typeof import('nats')['headers'];

export interface NatsEndInit {
  nc: NatsConnection;
  headers: HeadersFn;
  /** This end's inbox subject (subscribed by the constructor). */
  inbox: string;
  /** This end's heartbeat period. */
  beatMs: number;
  what: string;
  /** The NATS server (`host:port`), for errors. */
  server: string;
  /**
   * Whether the connection keeps the event loop alive (loopHold), for the
   * link: off from watch() on, on while the Channel holds the link
   * (someone waits). Absent for a server's channels: its connection, like
   * a listening socket, keeps the loop alive while it listens.
   */
  hold?: ((on: boolean) => void) | undefined;
}

export class NatsEnd implements RecordSource, RecordSink {
  readonly maxMessageLength: number;
  lastType = 0;
  /** The peer closed cleanly (its CLOSE came). */
  closed = false;
  /** The peer's liveness, for the Channel. */
  readonly link: Link;
  #ending = 'its NATS connection ended';
  /** Why the link ended, when not the peer's death (records lost): Link.error. */
  #error: Error | undefined;
  /** Records published by this end (the next one's number). */
  #sent = 0;
  /** The number of the next record expected from the peer. */
  #expected = 0;

  readonly #nc: NatsConnection;
  readonly #headers: HeadersFn;
  readonly #inbox: string;
  #peer = '';
  #peerBeatMs = DEFAULT_BEAT_MS;
  readonly #beatMs: number;
  readonly #what: string;
  readonly #server: string;
  readonly #sub: Subscription;
  readonly #outbound: Outbound;
  /** The wait of the writes that found the connection's outbound queue past OUTBOUND_HIGH_WATER. */
  #drain: Promise<void> | undefined;
  /** Ends #drain now (this end ended: nothing will be written any more). */
  #endDrain: (() => void) | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** ms between the timer's ticks: the shorter of the two heartbeats, so the peer's silence is judged at its own pace. */
  #tickMs = DEFAULT_BEAT_MS;
  /** performance.now() of this end's last heartbeat sent. */
  #lastBeat = -Infinity;
  readonly #queue: Record[] = [];
  #head = 0;
  /** performance.now() of the first write since the event loop last turned; -1 once it has turned (#turned). */
  #runStart = -1;
  /** The next turn of the loop, for the writes past WRITE_TURN_MS of this run (one promise for them all). */
  #turn: Promise<void> | undefined;
  #endTurn: (() => void) | undefined;
  readonly #turned = (): void => {
    this.#runStart = -1;
    const end = this.#endTurn;
    this.#turn = this.#endTurn = undefined;
    end?.();
  };
  /** A handler of drain() is running: a drain from it would hand out the records after the one in hand first. */
  #draining = false;
  #lastHeard = performance.now();
  readonly #watch: ConnectionWatch;
  /** The connection's drops when the peer was last heard from (or when this end was made). */
  #heardAtDrop: number;
  /** Beats at once when the connection is back (see #beat). */
  readonly #onReconnect = (): void => this.#beat();
  #onEnd: (() => void) | undefined;
  #ended = false;
  /** This end closed its inbound side. */
  #stopped = false;
  /** A pending waitReadable() (resolved with nothing) or read() (`takes`: resolved with the record it takes). */
  #reader:
    | { takes: boolean; resolve(data?: Uint8Array): void; reject(error: Error): void; signal: AbortSignal | undefined; onAbort: () => void }
    | undefined;

  constructor(init: NatsEndInit) {
    this.#nc = init.nc;
    this.#headers = init.headers;
    this.#inbox = init.inbox;
    this.#beatMs = init.beatMs;
    this.#what = init.what;
    this.#server = init.server;
    this.#watch = watchConnection(init.nc);
    this.#outbound = outbound(init.nc);
    this.#heardAtDrop = this.#watch.drops;
    this.maxMessageLength = Math.max(1024, (init.nc.info?.max_payload ?? 1 << 20) - HEADER_ROOM);
    this.#sub = init.nc.subscribe(init.inbox, { callback: (err, msg) => this.#onMessage(err, msg) });
    const end = this;
    this.link = {
      get ending() {
        return end.#ending;
      },
      get error() {
        return end.#error;
      },
      watch: (onEnd) => {
        this.#onEnd = onEnd;
        // An idle channel keeps no process alive (the Channel holds the link while someone waits).
        init.hold?.(false);
        if (this.#ended) onEnd();
      },
      close: () => this.#unlink(),
      hold: (on) => init.hold?.(on),
    };
  }

  /** Starts talking to the peer (once its inbox is known from the handshake). */
  pair(peer: string, peerBeatMs: number): void {
    this.#peer = peer;
    this.#peerBeatMs = peerBeatMs;
    this.#lastHeard = performance.now();
    if (this.#ended) return;
    // A peer that beats faster than this end is judged at its pace (within DEAD_AFTER_BEATS + 1 of its
    // periods), not at the next of this end's slower beats; this end still beats at its own period.
    this.#tickMs = Math.min(this.#beatMs, peerBeatMs);
    this.#lastBeat = performance.now();
    this.#timer = setInterval(() => this.#tick(), this.#tickMs);
    this.#timer.unref();
    // Back from an outage, the peer hears from this end at once, not up to a period later: the outage
    // then eats into its silence bound only for as long as it lasted.
    this.#watch.onReconnect.add(this.#onReconnect);
  }

  // ---- inbound ----

  #onMessage(err: Error | null, msg: Msg): void {
    if (this.#ended) return;
    if (err !== null) {
      // The server refused this end's inbox subscription (nats.js closes it): nothing can come any more, and
      // the channel would end later as if the peer had died. It ends now, saying why.
      this.#fail(refusalError(err, this.#what, this.#server) as Error, 'its inbox subscription was refused');
      return;
    }
    const h = msg.headers;
    if (h !== undefined && h.code === NO_RESPONDERS && msg.data.length === 0) {
      // Not heard from since our connection came back: the peer may be reconnecting still. Its
      // silence decides (#beat); this answer is not news from it, so #lastHeard stays.
      if (this.#watch.drops !== this.#heardAtDrop) return;
      this.#end(`its NATS subscription is gone (the server answered "no responders")`);
      return;
    }
    this.#lastHeard = performance.now();
    if (this.#heardAtDrop !== this.#watch.drops) {
      this.#heardAtDrop = this.#watch.drops;
      // The first news from the peer since our connection came back: the peer is back too, and what this
      // end sent before (its beat at its reconnection included) may have found no subscriber. Beating at
      // once ends the peer's silence now, not a period later.
      if (this.#peer !== '') this.#beat();
    }
    const control = h?.get(CONTROL_HEADER);
    // Records, beats and CLOSE alike: the count must match what came (a beat's or CLOSE's is what was sent before it).
    if (!this.#inSequence(h?.get(SEQ_HEADER), control === undefined || control === '')) return;
    if (control === 'beat') return;
    if (control === 'close') {
      if (h?.get(REASON_HEADER) === 'lost') {
        this.#error = new ShmringError(
          ErrorCodes.MESSAGE_LOST,
          `${this.#what}: the other side found records of this end's lost in transit (core NATS delivers at most once: ` +
            'a connection loss drops what is in flight) and ended the channel; open a new one, and use requests with timeoutMs ' +
            '(or a JetStream bridge) where every message must arrive',
        );
        this.#end('it lost records');
        return;
      }
      this.closed = true;
      this.#end('it closed');
      return;
    }
    const type = Number(h?.get(TYPE_HEADER) ?? 0);
    const record: Record = { data: msg.data, type: Number.isInteger(type) && type >= 0 ? type : -1 };
    this.#queue.push(record);
    const reader = this.#reader;
    if (reader !== undefined) {
      this.#reader = undefined;
      reader.signal?.removeEventListener('abort', reader.onAbort);
      if (reader.takes) {
        this.#shift(); // the record just pushed: the queue was empty while a read waited
        this.lastType = record.type;
        reader.resolve(record.data);
      } else {
        reader.resolve();
      }
    }
  }

  /**
   * Checks a message's number (`seq`, the header's text; '' when absent: not
   * checked) against what came before: a record's must be the next
   * expected, a beat's or CLOSE's (`record` false) the count of records
   * sent before it. False when records went missing: the link then ends
   * with ERR_SHMRING_MESSAGE_LOST (after the records that came are taken),
   * the peer is told, and nothing more is taken.
   */
  #inSequence(seq: string | undefined, record: boolean): boolean {
    if (seq === undefined || seq === '') return true;
    const n = Number(seq);
    if (record ? n === this.#expected : n === this.#expected || !Number.isSafeInteger(n)) {
      if (record) this.#expected++;
      return true;
    }
    const lost = n - this.#expected;
    const what =
      lost > 0
        ? `${lost} record${lost === 1 ? '' : 's'} from the other side went missing in transit (record ${this.#expected} was due, ${record ? `record ${n}` : `a message counting ${n}`} came)`
        : `a record of the other side came twice or out of order (record ${this.#expected} was due, record ${n} came)`;
    this.#error = new ShmringError(
      ErrorCodes.MESSAGE_LOST,
      `${this.#what}: ${what}; core NATS delivers at most once (a connection loss drops what is in flight), and the channel ` +
        'ends rather than go on without them; open a new one, and use requests with timeoutMs (or a JetStream bridge) where every message must arrive',
    );
    this.#control('close', undefined, 'lost'); // the peer's channel ends too, not as a clean close
    this.#end('records went missing');
    return false;
  }

  #shift(): Record | undefined {
    if (this.#head === this.#queue.length) return undefined;
    const record = this.#queue[this.#head]!;
    (this.#queue as unknown[])[this.#head++] = undefined;
    if (this.#head === this.#queue.length) {
      this.#queue.length = 0;
      this.#head = 0;
    }
    return record;
  }

  drain(handler: DrainHandler, limit = Infinity): number {
    if (this.#draining) {
      throw new ShmringError(ErrorCodes.BUSY, `${this.#what}: a drain from a drain() handler of the same end is refused`);
    }
    let count = 0;
    this.#draining = true;
    try {
      while (count < limit) {
        const record = this.#shift();
        if (record === undefined) break;
        count++;
        handler(record.data, 0, record.data.length, record.type);
      }
    } finally {
      this.#draining = false;
    }
    return count;
  }

  waitReadable(options: RecordReadOptions): Promise<void> {
    if (this.#head !== this.#queue.length) return Promise.resolve();
    return this.#wait(options, false) as Promise<void>;
  }

  read(options: RecordReadOptions): Promise<Uint8Array> {
    const record = this.#shift();
    if (record !== undefined) {
      this.lastType = record.type;
      return Promise.resolve(record.data);
    }
    return this.#wait(options, true) as Promise<Uint8Array>;
  }

  /** Waits for the next record (the queue is empty): `takes` it (read) or not (waitReadable). */
  #wait(options: RecordReadOptions, takes: boolean): Promise<Uint8Array | undefined> {
    if (this.#stopped || this.closed) return Promise.reject(this.#closedError());
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        this.#reader = undefined;
        reject(abortError(signal));
      };
      this.#reader = { takes, resolve, reject, signal, onAbort };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  #closedError(): ShmringError {
    return new ShmringError(ErrorCodes.CLOSED, `${this.#what}: the channel is closed`);
  }

  #rejectReader(error: Error): void {
    const reader = this.#reader;
    if (reader === undefined) return;
    this.#reader = undefined;
    reader.signal?.removeEventListener('abort', reader.onAbort);
    reader.reject(error);
  }

  // ---- outbound ----

  #publish(bytes: Uint8Array, h: MsgHdrs, reply: string | undefined): void {
    if (this.#nc.isClosed())
      throw new ShmringError(ErrorCodes.CLOSED, `${this.#what}: its NATS connection is closed; nothing more can be sent`);
    try {
      this.#nc.publish(this.#peer, bytes, reply === undefined ? { headers: h } : { headers: h, reply });
    } catch (err) {
      throw this.#publishFailed(err, bytes.length);
    }
  }

  /**
   * A publish that nats.js refused (it throws before anything is sent): the
   * message is larger than the server takes now (MAX_PAYLOAD_EXCEEDED: a
   * server with a smaller max_payload since a reconnection), or the subject
   * is refused (BAD_SUBJECT), or the connection is closing. The channel
   * cannot go on without that record: it ends with the error, typed and
   * naming the channel, which this write throws too.
   */
  #publishFailed(err: unknown, length: number): Error {
    const code = (err as { code?: unknown } | undefined)?.code;
    const error =
      code === 'MAX_PAYLOAD_EXCEEDED'
        ? new ShmringError(
            ErrorCodes.MESSAGE_TOO_LARGE,
            `${this.#what}: a message of ${length} bytes is larger than the NATS server at ${this.#server} takes now ` +
              `(max_payload ${this.#nc.info?.max_payload ?? 'unknown'}, which it lowered since the channel opened); the channel ` +
              'ends, as it cannot go on without that record: raise max_payload in the server configuration, and open a new channel',
            { cause: err },
          )
        : new ShmringError(
            ErrorCodes.CLOSED,
            `${this.#what}: the NATS client refused to publish to the other side's inbox '${this.#peer}' (${(err as Error).message}); the channel ends: open a new one`,
            { cause: err },
          );
    // Closing (close() sends its CLOSE): the channel ends anyway, and by its user's hand.
    if (!this.#stopped) this.#fail(error, 'a publish to it failed');
    return error;
  }

  /** Ends the link with `error` (Link.error: the channel ends with it, not ERR_SHMRING_PEER_DEAD). */
  #fail(error: Error, ending: string): void {
    this.#error ??= error;
    this.#end(ending);
  }

  /**
   * After a write: undefined while this run of writes (since the event loop
   * last turned) is within WRITE_TURN_MS, else the promise of the loop's
   * next turn, which the writer's promise waits for (the record is out
   * already, so order and what close() sends after it are as without it).
   */
  paced(): Promise<void> | undefined {
    if (this.#outbound.pending() > OUTBOUND_HIGH_WATER) return this.#drained();
    const now = performance.now();
    if (this.#runStart < 0) {
      this.#runStart = now;
      setImmediate(this.#turned);
      return undefined;
    }
    if (now - this.#runStart < WRITE_TURN_MS) return undefined;
    this.#turn ??= new Promise<void>((resolve) => (this.#endTurn = resolve));
    return this.#turn;
  }

  /** The promise of the connection's outbound queue drained (one for this end's writers), or of this end's end. */
  #drained(): Promise<void> {
    this.#drain ??= new Promise<void>((resolve) => {
      let settled = false;
      const done = (): void => {
        if (settled) return; // the end's end, then the queue's drain (or the other way): one wait, one end
        settled = true;
        this.#drain = this.#endDrain = undefined;
        resolve();
      };
      this.#endDrain = done;
      this.#outbound.drained().then(done);
    });
    return this.#drain;
  }

  tryWrite(bytes: Uint8Array, type: number): boolean {
    const h = this.#headers();
    h.set(TYPE_HEADER, String(type));
    h.set(SEQ_HEADER, String(this.#sent));
    // The client keeps a reference until it flushes: the Channel may reuse its bytes at once.
    // A request carries this end's inbox as its reply subject, so a peer that is gone gets "no responders" back.
    this.#publish(new Uint8Array(bytes), h, (type & F.KIND_MASK) === F.REQUEST ? this.#inbox : undefined);
    this.#sent++; // only once published: a publish that threw sent nothing
    return true;
  }

  write(bytes: Uint8Array, options: { type: number }): Promise<void> {
    try {
      this.tryWrite(bytes, options.type);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return this.paced() ?? Promise.resolve();
  }

  /** NATS batches on its own (one socket write per event-loop turn). */
  cork(): void {}
  uncork(): void {}

  #control(what: 'beat' | 'close', reply: string | undefined, reason?: 'lost'): void {
    const h = this.#headers();
    h.set(CONTROL_HEADER, what);
    h.set(SEQ_HEADER, String(this.#sent)); // what the peer should have had by now
    if (reason !== undefined) h.set(REASON_HEADER, reason);
    try {
      this.#publish(new Uint8Array(0), h, reply);
    } catch {
      // The connection is closed: the peer learns it from the silence.
    }
  }

  /** The timer: ends a peer silent too long; beats once this end's period has passed since its last beat. */
  #tick(): void {
    if (this.#ended || this.#endIfSilent()) return;
    // Half a tick early is on time: the timer's ticks drift by a little each.
    if (performance.now() - this.#lastBeat >= this.#beatMs - this.#tickMs / 2) this.#sendBeat();
  }

  /** Beats now (back from an outage, or first news after one), unless the peer has been silent too long. */
  #beat(): void {
    if (this.#ended || this.#endIfSilent()) return;
    this.#sendBeat();
  }

  #sendBeat(): void {
    this.#lastBeat = performance.now();
    this.#control('beat', this.#inbox);
  }

  /** Ends the link (true) if nothing came from the peer for DEAD_AFTER_BEATS of its periods. */
  #endIfSilent(): boolean {
    const silent = performance.now() - this.#lastHeard;
    if (silent <= DEAD_AFTER_BEATS * this.#peerBeatMs) return false;
    this.#end(`nothing came from it for ${Math.round(silent)} ms (its heartbeat is every ${this.#peerBeatMs} ms)`);
    return true;
  }

  // ---- the link ----

  #end(ending: string): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#ending = ending;
    this.#endDrain?.();
    clearInterval(this.#timer);
    this.#watch.onReconnect.delete(this.#onReconnect);
    this.#sub.unsubscribe();
    this.#onEnd?.();
  }

  /** Stops this end (RecordSink.close, RecordSource.close): tells the peer, after everything sent so far. */
  close(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    if (!this.#ended) this.#control('close', undefined);
    this.#rejectReader(this.#closedError());
  }

  /** Stops the heartbeat and the subscription. */
  #unlink(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#endDrain?.();
    clearInterval(this.#timer);
    this.#watch.onReconnect.delete(this.#onReconnect);
    this.#sub.unsubscribe();
  }
}
