/**
 * Channels between processes, found by a Unix domain socket path, the way
 * net.connect finds a server. The server creates a memfd region per
 * connection (sealed against shrinking and growing), lays the two rings out
 * in it and passes its fd with SCM_RIGHTS; the socket then stays open, idle,
 * as the channel's link: when either process dies, by any signal and in any
 * PID namespace, the kernel closes it and the other side knows at once.
 * Nothing is left behind in /dev/shm or on disk but the socket path, which
 * close() removes and listen() replaces when no server answers there.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import { ErrorCodes, Region, ShmringError, ShmringTypeError, receiveRegion, sendRegion } from '@shmring/core';
import type { Channel } from './channel.js';
import { resolveCodec, type ChannelCodec, type CodecOption } from './codec.js';
import { channelRegionSize } from './layout.js';
import { socketLink } from './link.js';
import { isNatsEndpoint } from './nats/address.js';
import { checkCapacity, checkPoll, checkSignal, checkTimeout } from './options.js';
import { creatorEnd, layOutChannel, openerEnd } from './open.js';

export interface ListenOptions {
  /**
   * nats:// only: ms between this end's heartbeats (default 1000, in [10, 3600000]).
   * The peer's death is known within one period (plus a round trip) once its
   * connection to NATS has closed, and after 3 of its periods of silence otherwise.
   */
  heartbeatMs?: number;
  /** Bytes of each ring's data area (a power of two, 64 B .. 1 GiB); the server decides. Default 1 MiB. */
  capacity?: number;
  /** 'structured-clone' (default), 'json', 'bytes' or { encode, decode }; clients must use the same. */
  codec?: CodecOption;
  /**
   * Microseconds this end keeps looking for the other side's next record
   * between event-loop turns (other callbacks run meanwhile) before it
   * parks: lower latency after short gaps, for a CPU kept busy meanwhile.
   * Default: the rings' adaptive polling (50 µs after a message, none once idle).
   */
  poll?: number;
}

export interface ConnectOptions {
  /**
   * nats:// only: ms between this end's heartbeats (default 1000, in [10, 3600000]).
   * The peer's death is known within one period (plus a round trip) once its
   * connection to NATS has closed, and after 3 of its periods of silence otherwise.
   */
  heartbeatMs?: number;
  /** The codec the server uses (default 'structured-clone'); a mismatch is ERR_SHMRING_CODEC_MISMATCH. */
  codec?: CodecOption;
  /** Give up if the server has not handed over the channel within this many ms (ERR_SHMRING_TIMEOUT). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /**
   * Microseconds this end keeps looking for the other side's next record
   * between event-loop turns (other callbacks run meanwhile) before it
   * parks: lower latency after short gaps, for a CPU kept busy meanwhile.
   * Default: the rings' adaptive polling (50 µs after a message, none once idle).
   */
  poll?: number;
}

function checkPath(path: unknown, verb: string): string {
  if (typeof path !== 'string' || path.length === 0) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: the path must be a non-empty string (a Unix domain socket path), got ${typeof path === 'string' ? 'an empty string' : String(path)}`,
    );
  }
  return path;
}

/** A system call's error, with its errno name as `code` and the path in the message. */
function pathError(err: NodeJS.ErrnoException, path: string, what: string, reason?: string): ShmringError {
  const code = typeof err.code === 'string' ? err.code : ErrorCodes.INVALID_ARGUMENT;
  const hint =
    reason !== undefined
      ? `: ${reason}`
      : code === 'ENOENT'
        ? ': no such socket; is the server listening (listen(path))?'
        : code === 'ECONNREFUSED'
          ? ': nothing accepts connections there (a server that exited without close()?)'
          : code === 'EADDRINUSE'
            ? ': a server already listens there; close it or pick another path'
            : `: ${err.message}`;
  const error = new ShmringError(code, `${what} ${path} failed (${code})${hint}`, { cause: err });
  Object.assign(error, { errno: err.errno, syscall: err.syscall, path });
  return error;
}

/** The byte a client sends once its end is open (the only byte that travels after the fd). */
const READY = Buffer.of(1);

/**
 * Waits for the client's READY byte. A client that leaves first (a probe by
 * a second listen(), a codec mismatch, a crash) never becomes a channel.
 */
function clientReady(socket: net.Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      socket.off('error', done);
      socket.pause();
      if (err === undefined) resolve();
      else reject(err);
    };
    const onData = (): void => done();
    const onEnd = (): void => done(new ShmringError(ErrorCodes.NO_FD, 'the client left before opening its end'));
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    socket.on('error', done);
    socket.resume();
  });
}

/** Resolves true if a server accepts connections at `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

function bind(server: net.Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(path, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

export interface ChannelServerEvents {
  /** A client connected: this server's end of its channel. */
  channel: [channel: Channel];
  /** The server closed (and every channel it accepted). */
  close: [];
  /** The listening socket failed, or a handover failed for a reason other than the client leaving. */
  error: [error: Error];
}

/**
 * How a server gets its channels: a Unix socket (below) or a NATS subject
 * (nats/channel.ts). ChannelServer keeps the channels it was handed.
 */
export interface Acceptor {
  /** Starts accepting: `adopt` each new channel end, `fail` on an error worth reporting. */
  start(adopt: (channel: Channel) => void, fail: (error: Error) => void, closing: () => boolean): void;
  /** Stops accepting and frees what accepting used, once the channels are closed. */
  stop(): Promise<void>;
}

/** A listening channel server: a 'channel' event (and an async iterator) per client. */
export class ChannelServer extends EventEmitter implements AsyncIterable<Channel> {
  declare on: <K extends keyof ChannelServerEvents>(event: K, listener: (...args: ChannelServerEvents[K]) => void) => this;
  declare once: <K extends keyof ChannelServerEvents>(event: K, listener: (...args: ChannelServerEvents[K]) => void) => this;
  declare off: <K extends keyof ChannelServerEvents>(event: K, listener: (...args: ChannelServerEvents[K]) => void) => this;

  /** The socket path, or the nats:// address. */
  readonly path: string;
  readonly #acceptor: Acceptor;
  readonly #channels = new Set<Channel>();
  #closing: Promise<void> | undefined;

  /** @internal Use listen(). */
  constructor(acceptor: Acceptor, path: string) {
    super();
    this.path = path;
    this.#acceptor = acceptor;
    acceptor.start(
      (channel) => {
        this.#channels.add(channel);
        channel.once('close', () => this.#channels.delete(channel));
        this.emit('channel', channel);
      },
      (err) => {
        if (this.listenerCount('error') > 0) this.emit('error', err);
      },
      () => this.#closing !== undefined,
    );
  }

  /** Channels open on this server now. */
  get channels(): number {
    return this.#channels.size;
  }

  /** The channels as clients connect, until the server closes. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Channel, void, undefined> {
    const ready: Channel[] = [];
    let wake: (() => void) | undefined;
    const onChannel = (ch: Channel): void => {
      ready.push(ch);
      wake?.();
    };
    const onClose = (): void => wake?.();
    this.on('channel', onChannel);
    this.on('close', onClose);
    try {
      for (;;) {
        const next = ready.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        if (this.#closing !== undefined) return;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
    } finally {
      this.off('channel', onChannel);
      this.off('close', onClose);
    }
  }

  /**
   * Stops accepting, removes the socket path and closes every channel of
   * this server (their peers see a clean close); resolves when all is done.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const channels = [...this.#channels];
      for (const ch of channels) ch.close();
      await Promise.all([this.#acceptor.stop(), ...channels.map((ch) => ch.closed)]);
      this.emit('close');
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Accepts channels on a listening Unix socket: a memfd region per client, handed over with SCM_RIGHTS. */
function socketAcceptor(server: net.Server, path: string, codec: ChannelCodec, capacity: number, poll: number | undefined): Acceptor {
  let accepted = 0;
  const accept = async (
    socket: net.Socket,
    adopt: (channel: Channel) => void,
    fail: (error: Error) => void,
    closing: () => boolean,
  ): Promise<void> => {
    let region: Region | undefined;
    try {
      region = Region.create({ backing: 'memfd', name: 'shmring-channel', size: channelRegionSize(capacity) });
      layOutChannel(region, codec, capacity);
      await sendRegion(socket, region);
      await clientReady(socket);
      if (closing()) throw new ShmringError(ErrorCodes.CLOSED, 'the server closed during the handover');
      adopt(creatorEnd(region, codec, socketLink(socket), `channel ${++accepted} of ${path}`, poll));
    } catch (err) {
      // A client that went away during the handover (or a server out of fds): drop this one connection.
      socket.destroy();
      region?.close();
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EPIPE' && code !== ErrorCodes.NO_FD) fail(err as Error);
    }
  };
  return {
    start(adopt, fail, closing) {
      server.on('connection', (socket: net.Socket) => void accept(socket, adopt, fail, closing));
      server.on('error', fail);
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/**
 * Listens for channel clients on a Unix domain socket path, or on a NATS
 * subject (`nats://host:port/<subject>`, see nats/channel.ts). A stale socket
 * file (no server answers) is replaced; a live server there is EADDRINUSE.
 */
export async function listen(path: string, options: ListenOptions = {}): Promise<ChannelServer> {
  checkPath(path, 'listen');
  if (isNatsEndpoint(path)) return (await import('./nats/channel.js')).listenNats(path, options);
  const codec = resolveCodec(options?.codec);
  const capacity = checkCapacity(options?.capacity, 'listen');
  const poll = checkPoll(options?.poll, 'listen');
  const server = net.createServer({ pauseOnConnect: true });
  try {
    await bind(server, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw pathError(err as NodeJS.ErrnoException, path, 'listen on');
    if (await answers(path)) throw pathError(err as NodeJS.ErrnoException, path, 'listen on');
    // Stale: left by a server that died. Replace it, but only if it is a socket.
    if (!fs.lstatSync(path, { throwIfNoEntry: false })?.isSocket()) {
      throw pathError(
        err as NodeJS.ErrnoException,
        path,
        'listen on',
        'the path exists and is not a socket; remove it or pick another path',
      );
    }
    fs.rmSync(path, { force: true });
    try {
      await bind(server, path);
    } catch (again) {
      throw pathError(again as NodeJS.ErrnoException, path, 'listen on');
    }
  }
  return new ChannelServer(socketAcceptor(server, path, codec, capacity, poll), path);
}

/** Connects to a channel server's socket path (or nats:// address); resolves with this side's end of a new channel. */
export async function connect(path: string, options: ConnectOptions = {}): Promise<Channel> {
  checkPath(path, 'connect');
  if (isNatsEndpoint(path)) return (await import('./nats/channel.js')).connectNats(path, options);
  const codec = resolveCodec(options?.codec);
  const poll = checkPoll(options?.poll, 'connect');
  const timeoutMs = checkTimeout(options?.timeoutMs, 'connect');
  const signal = checkSignal(options?.signal, 'connect');
  const socket = net.connect({ path });
  let region: Region;
  try {
    // Called in the same tick as net.connect: receiveRegion pauses the socket before it reads.
    region = await receiveRegion(socket, { timeoutMs, signal });
  } catch (err) {
    socket.destroy();
    const e = err as NodeJS.ErrnoException;
    if (e.syscall === 'connect' || e.code === 'ENOENT' || e.code === 'ECONNREFUSED') throw pathError(e, path, 'connect to');
    if (e.code === ErrorCodes.TIMEOUT) {
      throw new ShmringError(
        ErrorCodes.TIMEOUT,
        `connect to ${path}: the server did not hand over a channel within timeoutMs=${timeoutMs}`,
        { cause: err },
      );
    }
    if (e.code === ErrorCodes.NO_FD) {
      throw new ShmringError(
        ErrorCodes.NO_FD,
        `connect to ${path}: the server hung up without handing over a channel (is it a @shmring/channel server?)`,
        { cause: err },
      );
    }
    throw err;
  }
  try {
    const channel = openerEnd(region, codec, socketLink(socket), `channel to ${path}`, `the server at ${path}`, poll);
    // Tells the server this end is open: only then does it announce the channel.
    socket.write(READY);
    return channel;
  } catch (err) {
    socket.destroy();
    region.close();
    throw err;
  }
}
