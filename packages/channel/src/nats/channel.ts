/**
 * listen/connect for nats:// addresses. The server subscribes to the
 * address's subject in the queue group `shmring` (several servers on one
 * subject share the clients); a client opens an inbox and sends a HELLO
 * request there with its codec, inbox and heartbeat period; the server
 * answers with its own, and from then on each end publishes to the other's
 * inbox (transport.ts). Nothing but the handshake uses the listen subject.
 */
import { ErrorCodes, MAX_TIMER_MS, ShmringError, abortError } from '@shmring/core';
import type { Msg, NatsConnection } from 'nats';
import { Channel } from '../channel.js';
import { checkCodecMatch, resolveCodec, type ChannelCodec } from '../codec.js';
import { checkHeartbeat, checkSignal, checkTimeout, MAX_BEAT_MS, MIN_BEAT_MS } from '../options.js';
import { ChannelServer, type Acceptor, type ConnectOptions, type ListenOptions } from '../socket.js';
import { INBOX_PREFIX, isInboxSubject, parseNatsAddress, type NatsAddress } from './address.js';
import { closeNats, loadNats, loopHold, openNats, refusalError } from './connection.js';
import { DEFAULT_BEAT_MS, NatsEnd } from './transport.js';

type NatsModule = Awaited<ReturnType<typeof loadNats>>;

const QUEUE_GROUP = 'shmring';
const PROTOCOL = 1;
const DEFAULT_CONNECT_TIMEOUT_MS = 5000;

interface Hello {
  v: number;
  codec: number;
  inbox: string;
  beatMs: number;
}

interface Welcome {
  v: number;
  codec: number;
  inbox?: string;
  beatMs?: number;
}

function checkBeat(beatMs: unknown, verb: string): number {
  return checkHeartbeat(beatMs, verb) ?? DEFAULT_BEAT_MS;
}

/** Whether a peer's beatMs (its HELLO or WELCOME) is one heartbeatMs could have set: 0 beat every ms and ended the channel at once. */
function beatOk(beatMs: unknown): beatMs is number {
  return typeof beatMs === 'number' && beatMs >= MIN_BEAT_MS && beatMs <= MAX_BEAT_MS;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const json = (value: unknown): Uint8Array => encoder.encode(JSON.stringify(value));

function parseJson<T>(data: Uint8Array): T | undefined {
  try {
    return JSON.parse(decoder.decode(data)) as T;
  } catch {
    return undefined;
  }
}

function natsAcceptor(
  nats: NatsModule,
  nc: NatsConnection,
  address: NatsAddress,
  codec: ChannelCodec,
  beatMs: number,
  refused: (error: Error) => void,
): Acceptor {
  let accepted = 0;
  const accept = (msg: Msg, adopt: (channel: Channel) => void, closing: () => boolean): void => {
    const hello = parseJson<Hello>(msg.data);
    if (
      hello === undefined ||
      hello.v !== PROTOCOL ||
      // Published to for the channel's life: a subject with a space or CR LF would inject protocol into this
      // connection (or have the server close it, and every channel on it), a wildcard reach others' subjects.
      !isInboxSubject(hello.inbox) ||
      !beatOk(hello.beatMs) ||
      msg.reply === undefined
    ) {
      return; // not a channel client: leave it to its timeout
    }
    if (hello.codec !== codec.id || closing()) {
      msg.respond(json({ v: PROTOCOL, codec: codec.id } satisfies Welcome));
      return;
    }
    const inbox = nats.createInbox();
    const end = new NatsEnd({
      nc,
      headers: nats.headers,
      inbox,
      beatMs,
      what: `channel ${++accepted} of ${address.text}`,
      server: address.server,
    });
    end.pair(hello.inbox, hello.beatMs);
    msg.respond(json({ v: PROTOCOL, codec: codec.id, inbox, beatMs } satisfies Welcome));
    adopt(
      new Channel({
        in: end,
        out: end,
        link: end.link,
        release: () => {},
        codec,
        what: `channel ${accepted} of ${address.text}`,
        poll: undefined,
        // Its reads are promises (no thread, nothing ref'd): one may stay parked while nobody waits.
        idleReads: true,
      }),
    );
  };
  let stop = (): Promise<void> => closeNats(nc);
  return {
    start(adopt, fail, closing) {
      const sub = nc.subscribe(address.subject, {
        queue: QUEUE_GROUP,
        callback: (err, msg) => {
          if (err === null) {
            accept(msg, adopt, closing);
            return;
          }
          // nats.js has closed the subscription (the server refused it, at the start or after a
          // reconnection): the server is deaf from now on, and says so.
          const error = refusalError(err, `listen on ${address.text}`, address.server) as Error;
          fail(error);
          refused(error);
        },
      });
      stop = async () => {
        sub.unsubscribe();
        await closeNats(nc);
      };
    },
    stop: () => stop(),
  };
}

/**
 * A server over NATS: its subscription can be refused after a reconnection
 * (the server's permissions changed), which leaves it deaf. Its iterations
 * then end with that error (a `for await` throws it, after the channels
 * that came before), so a program that does not listen for 'error' learns
 * it too. The server stays open (its channels live on): close() it.
 */
class NatsChannelServer extends ChannelServer {
  #error: Error | undefined;
  /** Pending next() calls of the iterations, woken by fail(). */
  readonly #waiting = new Set<() => void>();

  /** Ends the iterations (now and to come) with `error`. */
  fail(error: Error): void {
    this.#error ??= error;
    for (const wake of [...this.#waiting]) wake();
  }

  override [Symbol.asyncIterator](): ReturnType<ChannelServer[typeof Symbol.asyncIterator]> {
    type Iterator = ReturnType<ChannelServer[typeof Symbol.asyncIterator]>;
    const inner = super[Symbol.asyncIterator]();
    let ended = false;
    /** The error, once per iteration; what it had not handed out is closed (inner.return()). */
    const end = (): Promise<never> => {
      ended = true;
      void inner.return();
      return Promise.reject(this.#error);
    };
    const iterator: Iterator = {
      next: () => {
        if (ended) return inner.next();
        if (this.#error !== undefined) return end();
        return new Promise((resolve, reject) => {
          const wake = (): void => {
            this.#waiting.delete(wake);
            end().catch(reject);
          };
          this.#waiting.add(wake);
          inner.next().then((result) => {
            if (!this.#waiting.delete(wake)) {
              // Failed first: a channel taken meanwhile would reach nobody.
              if (result.done !== true) result.value.close();
              return;
            }
            resolve(result);
          }, reject);
        });
      },
      return: () => {
        ended = true;
        return inner.return();
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }
}

export async function listenNats(endpoint: string, options: ListenOptions): Promise<ChannelServer> {
  const address = parseNatsAddress(endpoint, 'listen', false);
  const codec = resolveCodec(options?.codec);
  const beatMs = checkBeat(options?.heartbeatMs, 'listen');
  const nats = await loadNats();
  const nc = await openNats(address, 'listen on', { timeoutMs: DEFAULT_CONNECT_TIMEOUT_MS, name: `shmring listen ${address.subject}` });
  // Refused before listen() resolves, the subscription is its error; after, it ends the iterations (NatsChannelServer).
  let refused: Error | undefined;
  let listening = false;
  const server: NatsChannelServer = new NatsChannelServer(
    natsAcceptor(nats, nc, address, codec, beatMs, (error) => {
      if (listening) server.fail(error);
      else refused ??= error;
    }),
    address.text,
  );
  // The subscription is registered with the server before listen() resolves; a server that refuses it
  // (ERR_SHMRING_NOT_PERMITTED) says so before its answer to the flush.
  try {
    await nc.flush();
  } catch (err) {
    // The connection went away before the server answered (nats.js would reconnect for ever): what listen
    // opened is closed, not left to keep the process alive.
    await server.close();
    throw new ShmringError(
      ErrorCodes.UNREACHABLE,
      `listen on ${address.text}: the NATS server at ${address.server} went away before it confirmed the subscription (${(err as Error).message}); is nats-server running there? retry`,
      { cause: err },
    );
  }
  if (refused !== undefined) {
    await server.close();
    throw refused;
  }
  listening = true;
  return server;
}

export async function connectNats(endpoint: string, options: ConnectOptions): Promise<Channel> {
  const address = parseNatsAddress(endpoint, 'connect', false);
  const codec = resolveCodec(options?.codec);
  const beatMs = checkBeat(options?.heartbeatMs, 'connect');
  // The nats client times with setTimeout, which fires at once past 2^31 - 1 ms (Infinity included): cap it
  // there (24.8 days, for ever in practice).
  const timeoutMs = Math.min(checkTimeout(options?.timeoutMs, 'connect') ?? DEFAULT_CONNECT_TIMEOUT_MS, MAX_TIMER_MS);
  const signal = checkSignal(options?.signal, 'connect');
  if (signal?.aborted) throw abortError(signal);
  const nats = await loadNats();
  const started = performance.now();
  const nc = await openNats(address, 'connect to', { timeoutMs, name: `shmring connect ${address.subject}`, signal });
  // The connection is this channel's alone: it keeps the process alive only while the channel is used.
  const hold = loopHold(nc);
  const inbox = nats.createInbox();
  // The inbox is subscribed before the server learns it: nothing it sends is missed.
  const end = new NatsEnd({ nc, headers: nats.headers, inbox, beatMs, what: `channel to ${address.text}`, server: address.server, hold });
  let welcome: Welcome | undefined;
  let onAbort: (() => void) | undefined;
  try {
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(abortError(signal));
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    const hello: Hello = { v: PROTOCOL, codec: codec.id, inbox, beatMs };
    // timeoutMs bounds the whole connect: the handshake has what the connection left of it.
    const left = Math.max(1, Math.ceil(timeoutMs - (performance.now() - started)));
    const reply = await Promise.race([nc.request(address.subject, json(hello), { timeout: left }), aborted]);
    welcome = parseJson<Welcome>(reply.data);
    if (welcome?.v !== PROTOCOL || typeof welcome.codec !== 'number') {
      throw new ShmringError(
        ErrorCodes.NOT_A_CHANNEL,
        `connect to ${address.text}: what answered on subject '${address.subject}' is not a @shmring/channel server`,
      );
    }
    checkCodecMatch(codec, welcome.codec, `the server at ${address.text}`);
    if (welcome.inbox === undefined && welcome.beatMs === undefined) {
      throw new ShmringError(ErrorCodes.CLOSED, `connect to ${address.text}: the server is closing`);
    }
    if (!isInboxSubject(welcome.inbox) || !beatOk(welcome.beatMs)) {
      throw new ShmringError(
        ErrorCodes.NOT_A_CHANNEL,
        `connect to ${address.text}: the server's welcome has inbox ${JSON.stringify(welcome.inbox)} and beatMs ${JSON.stringify(welcome.beatMs)} (a literal subject under ${INBOX_PREFIX}, and ms in [${MIN_BEAT_MS}, ${MAX_BEAT_MS}]): not a @shmring/channel server of this version`,
      );
    }
  } catch (err) {
    end.link.close();
    await closeNats(nc);
    throw handshakeError(err, address, timeoutMs);
  } finally {
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
  }
  end.pair(welcome.inbox, welcome.beatMs);
  return new Channel({
    in: end,
    out: end,
    link: end.link,
    release: () => {
      // Held until closed: closing waits for the server's answer to a flush, which an idle loop would not.
      hold(true);
      return closeNats(nc);
    },
    codec,
    what: `channel to ${address.text}`,
    poll: undefined,
    idleReads: true,
  });
}

/**
 * What a failed handshake means: nobody listens, nobody answered in time,
 * the server does not let this user publish the HELLO (or subscribe to the
 * reply's inbox): ERR_SHMRING_NOT_PERMITTED, or the error as it is.
 */
function handshakeError(err: unknown, address: NatsAddress, timeoutMs: number): unknown {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (code === 'PERMISSIONS_VIOLATION') return refusalError(err, `connect to ${address.text}`, address.server);
  if (code === '503') {
    return new ShmringError(
      ErrorCodes.NO_SERVER,
      `connect to ${address.text}: no channel server listens on subject '${address.subject}' (NATS: no responders); start listen('${address.text}') first, or retry`,
      { cause: err },
    );
  }
  if (code === 'TIMEOUT') {
    return new ShmringError(ErrorCodes.TIMEOUT, `connect to ${address.text}: the server did not answer within timeoutMs=${timeoutMs}`, {
      cause: err,
    });
  }
  return err;
}
