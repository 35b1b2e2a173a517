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
import { parseNatsAddress, type NatsAddress } from './address.js';
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

function natsAcceptor(nats: NatsModule, nc: NatsConnection, address: NatsAddress, codec: ChannelCodec, beatMs: number): Acceptor {
  let accepted = 0;
  const accept = (msg: Msg, adopt: (channel: Channel) => void, closing: () => boolean): void => {
    const hello = parseJson<Hello>(msg.data);
    if (
      hello === undefined ||
      hello.v !== PROTOCOL ||
      typeof hello.inbox !== 'string' ||
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
    const end = new NatsEnd({ nc, headers: nats.headers, inbox, beatMs, what: `channel ${++accepted} of ${address.text}` });
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
          if (err !== null) fail(refusalError(err, `listen on ${address.text}`, address.server) as Error);
          else accept(msg, adopt, closing);
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

export async function listenNats(endpoint: string, options: ListenOptions): Promise<ChannelServer> {
  const address = parseNatsAddress(endpoint, 'listen', false);
  const codec = resolveCodec(options?.codec);
  const beatMs = checkBeat(options?.heartbeatMs, 'listen');
  const nats = await loadNats();
  const nc = await openNats(address, 'listen on', { timeoutMs: DEFAULT_CONNECT_TIMEOUT_MS, name: `shmring listen ${address.subject}` });
  const server = new ChannelServer(natsAcceptor(nats, nc, address, codec, beatMs), address.text);
  // The subscription is registered with the server before listen() resolves; a server that refuses it
  // (ERR_SHMRING_NOT_PERMITTED) says so before its answer to the flush.
  let refused: Error | undefined;
  const onError = (err: Error): void => {
    refused ??= err;
  };
  server.on('error', onError);
  try {
    await nc.flush();
  } finally {
    server.off('error', onError);
  }
  if (refused !== undefined) {
    await server.close();
    throw refused;
  }
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
  const end = new NatsEnd({ nc, headers: nats.headers, inbox, beatMs, what: `channel to ${address.text}`, hold });
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
    if (typeof welcome.inbox !== 'string' || !beatOk(welcome.beatMs)) {
      throw new ShmringError(
        ErrorCodes.NOT_A_CHANNEL,
        `connect to ${address.text}: the server's welcome has inbox ${JSON.stringify(welcome.inbox)} and beatMs ${JSON.stringify(welcome.beatMs)} (a subject, and ms in [${MIN_BEAT_MS}, ${MAX_BEAT_MS}]): not a @shmring/channel server of this version`,
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

/** What a failed handshake means: nobody listens, nobody answered in time, or the error as it is. */
function handshakeError(err: unknown, address: NatsAddress, timeoutMs: number): unknown {
  const code = (err as { code?: unknown }).code;
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
