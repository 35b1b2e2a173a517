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
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import nodePath from 'node:path';
import {
  clearTimer,
  abortError,
  ErrorCodes,
  fileKind,
  lockFileByte,
  namesObject,
  Region,
  ShmringError,
  ShmringRangeError,
  ShmringTypeError,
  receiveRegion,
  sendRegion,
  startTimer,
  type Timer,
} from '@shmring/core';
import type { Channel } from './channel.js';
import { resolveCodec, type ChannelCodec, type CodecOption } from './codec.js';
import { channelRegionSize, openerEndTaken } from './layout.js';
import { socketLink } from './link.js';
import { isNatsEndpoint } from './nats/address.js';
import { checkCapacity, checkHeartbeat, checkOptions, checkPoll, checkSignal, checkTimeout, OptionNames } from './options.js';
import { closeChannelRings, creatorEnd, layOutChannel, openerEnd } from './open.js';

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
  /**
   * Socket paths only: ms a connected client may take to open its end of
   * the channel before the server drops it (default 10000; Infinity: no
   * limit; 0 drops every client at once), so that a client that never does
   * cannot hold a connection and a memory region of the server for ever.
   */
  handoverTimeoutMs?: number;
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

/**
 * The longest socket path, in bytes of UTF-8. A Unix socket address
 * (sun_path) holds 108 bytes on Linux, a file path's closing NUL included;
 * an abstract name (one that starts with a NUL) may use all 108. Node
 * truncates a longer path without a word: listen() would bind the
 * truncated name, and close() remove the full one, which is not there.
 */
const MAX_PATH_BYTES = 107;
const MAX_ABSTRACT_BYTES = 108;

/** A Linux abstract socket name: no file, gone with the last socket bound to it. */
function isAbstract(path: string): boolean {
  return path.startsWith('\0');
}

function checkPath(path: unknown, verb: string): string {
  if (typeof path !== 'string' || path.length === 0) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: the path must be a non-empty string (a Unix domain socket path), got ${typeof path === 'string' ? 'an empty string' : String(path)}`,
    );
  }
  if (isNatsEndpoint(path)) return path;
  const bytes = Buffer.byteLength(path);
  const abstract = isAbstract(path);
  const limit = abstract ? MAX_ABSTRACT_BYTES : MAX_PATH_BYTES;
  if (bytes > limit) {
    throw new ShmringRangeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: the socket path ${path} is ${bytes} bytes long (UTF-8), more than the ${limit} a Unix socket address holds; ` +
        (abstract
          ? 'use a shorter abstract name'
          : 'use a shorter path (one in /tmp or $XDG_RUNTIME_DIR, or a path relative to the working directory)'),
    );
  }
  return path;
}

/** A system call's error, with its errno name as `code` and the path in the message. */
function pathError(err: NodeJS.ErrnoException, path: string, what: 'listen on' | 'connect to', reason?: string): ShmringError {
  const code = typeof err.code === 'string' ? err.code : ErrorCodes.INVALID_ARGUMENT;
  const hint = `: ${reason ?? fileHint(code, path, what) ?? err.message}`;
  const error = new ShmringError(code, `${what} ${path} failed (${code})${hint}`, { cause: err });
  // errno positive (os.constants.errno's), as every shmring error carries it; Node's own carry libuv's negated one.
  Object.assign(error, { errno: typeof err.errno === 'number' ? Math.abs(err.errno) : err.errno, syscall: err.syscall, path });
  return error;
}

/** stat(2) of `path` (following links, as connect and bind do), or the errno name it failed with. */
function statOf(path: string): fs.Stats | string {
  try {
    return fs.statSync(path);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'EIO';
  }
}

/**
 * Why the directory of socket path `path` cannot hold it: the first of its
 * ancestors that does not exist or is not a directory, or undefined when
 * they all are (the errno then is about the directory's permissions or the
 * file itself).
 */
function directoryProblem(path: string, what: 'listen on' | 'connect to'): string | undefined {
  const dirs: string[] = [];
  for (let dir = nodePath.dirname(nodePath.resolve(path)); ; dir = nodePath.dirname(dir)) {
    dirs.unshift(dir);
    if (dir === nodePath.dirname(dir)) break;
  }
  for (const dir of dirs) {
    const stat = statOf(dir);
    if (stat === 'ENOENT') {
      return what === 'listen on'
        ? `the directory ${dir} does not exist: create it first, or pick a path in a directory that exists`
        : `the directory ${dir} does not exist, so no server listens there: check the path`;
    }
    if (typeof stat === 'string') return undefined; // EACCES and the like: said below, by the errno
    if (!stat.isDirectory()) return `${dir} is ${fileKind(stat)}, not a directory: pick a path in a directory`;
  }
  return undefined;
}

/**
 * The hint for a listen or connect at `path` that failed with `code`,
 * from what is there: the errno alone says "permission denied" for a
 * directory that does not exist (some systems), and "connection refused"
 * for a directory or a regular file as much as for a dead server's socket.
 */
function fileHint(code: string, path: string, what: 'listen on' | 'connect to'): string | undefined {
  const abstract = isAbstract(path);
  switch (code) {
    case 'ECONNREFUSED': {
      const stat = abstract ? undefined : statOf(path);
      if (typeof stat === 'object' && !stat.isSocket()) {
        return `${path} is ${fileKind(stat)}, not a socket: pass the socket path the server gave listen()`;
      }
      return 'nothing accepts connections there (a server that exited without close()?)';
    }
    case 'EADDRINUSE':
      return 'a server already listens there; close it or pick another path';
    case 'EAGAIN':
      // connect(2) of a Unix stream socket: the listener's queue of pending connections is full.
      return what === 'connect to'
        ? 'the server there is not accepting connections now: its queue of pending connections is full (it is busy, stopped or overloaded); retry later'
        : undefined;
    case 'ENOENT':
      if (abstract) return 'no server has that abstract name; is the server listening (listen(path))?';
      return (
        directoryProblem(path, what) ?? (what === 'connect to' ? 'no such socket; is the server listening (listen(path))?' : undefined)
      );
    case 'ENOTDIR':
      return abstract ? undefined : directoryProblem(path, what);
    case 'EACCES':
    case 'EPERM': {
      if (abstract) return undefined;
      const dir = nodePath.dirname(nodePath.resolve(path));
      return (
        directoryProblem(path, what) ??
        (what === 'listen on'
          ? `this process may not create a file in the directory ${dir} (no write or search permission): pick a path in a directory it can write, e.g. /tmp or $XDG_RUNTIME_DIR`
          : `this process may not connect to the socket ${path} (it needs write permission on it, and search permission on ${dir}): run as a user the server's socket allows`)
      );
    }
    case 'EROFS':
      return `${nodePath.dirname(nodePath.resolve(path))} is on a read-only file system: pick a path on a writable one, e.g. /tmp`;
    default:
      return undefined;
  }
}

/** The byte a client sends once its end is open (the only byte that travels after the fd). */
const READY = Buffer.of(1);

/** Ms a client may take to open its end (ListenOptions.handoverTimeoutMs). */
const DEFAULT_HANDOVER_TIMEOUT_MS = 10_000;

/**
 * Waits for the client's READY byte. A client that leaves first (a probe by
 * a second listen(), a codec mismatch, a crash), or stays silent for
 * `timeoutMs`, never becomes a channel. At the timeout, a client that has
 * `opened()` its end counts as ready: its byte may be waiting unread (the
 * server's loop held up past the timeout: expired timers run before the
 * loop polls for I/O), and its connect() has resolved.
 */
function clientReady(socket: net.Socket, timeoutMs: number, opened: () => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    let timer: Timer | undefined;
    const done = (err?: Error): void => {
      if (timer !== undefined) clearTimer(timer);
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
    const onTimeout = (): void =>
      done(
        opened()
          ? undefined
          : new ShmringError(ErrorCodes.TIMEOUT, `the client did not open its end within handoverTimeoutMs=${timeoutMs}`),
      );
    // Unref'd: the listening server keeps the process alive, not a client's handover.
    timer = startTimer(onTimeout, timeoutMs)?.unref();
  });
}

/**
 * How a handover ends when the client went away (a probe by another
 * listen(), a client that gave up or crashed) or was too slow: nothing the
 * server's user can act on, so no 'error'.
 */
const CLIENT_GONE = new Set<string | undefined>([
  'EPIPE',
  'ECONNRESET',
  ErrorCodes.NO_FD,
  ErrorCodes.TIMEOUT,
  // A client that wrote over the channel header it was handed (the creator reads it again when it opens its end):
  // that client's fault, not the server's.
  ErrorCodes.CORRUPT,
  ErrorCodes.VERSION_MISMATCH,
  ErrorCodes.NOT_A_CHANNEL,
  // ... or over a ring's header in it (the creator attaches both rings when it opens its end).
  ErrorCodes.NOT_A_RING,
  ErrorCodes.WRONG_KIND,
  ErrorCodes.REGION_TOO_SMALL,
]);

/**
 * What a connection to the socket file at `path` says of it: 'live' if a
 * server accepts it; 'stale' only where no server can be there:
 * ECONNREFUSED (a socket file nobody listens on) or ENOENT (the file went
 * meanwhile: bindOrReplace then finds the path free, or another file
 * there); else the connect's error. Any other error does not make the file
 * stale: EAGAIN is a live server whose queue of connections is full (busy,
 * or stopped), ECONNRESET one that let go of the connection, EACCES a
 * socket this process may not use (another user's server, perhaps live).
 */
function probe(path: string): Promise<'live' | 'stale' | NodeJS.ErrnoException> {
  return new Promise((resolve) => {
    const socket = net.connect({ path });
    socket.once('connect', () => {
      socket.destroy();
      resolve('live');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      socket.destroy();
      resolve(err.code === 'ECONNREFUSED' || err.code === 'ENOENT' ? 'stale' : err);
    });
  });
}

/** Errnos of this process's own want of fds or memory: a probe that fails with one says nothing of the path. */
const OUT_OF_RESOURCES = new Set(['EMFILE', 'ENFILE', 'ENOMEM', 'ENOBUFS']);

/** Why listen() will not replace the socket file at `path`, whose probe failed with `err` (probe()). */
function notStale(err: NodeJS.ErrnoException, path: string, inUse: NodeJS.ErrnoException): ShmringError {
  if (OUT_OF_RESOURCES.has(err.code ?? '')) {
    return pathError(
      err,
      path,
      'listen on',
      `could not connect to the socket file there to see whether a server answers (${err.code}): free fds or memory, then retry`,
    );
  }
  const reason =
    err.code === 'EAGAIN'
      ? 'a server listens there but accepts no connections now: its queue of pending connections is full (it is busy or stopped); close it or pick another path'
      : `a socket file is there and connecting to it failed with ${err.code ?? err.message}, not ECONNREFUSED, so a live server may own it: it is not replaced; remove it if no server uses it, or pick another path`;
  return pathError(inUse, path, 'listen on', reason);
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

  /**
   * The socket path as given to listen(), or the nats:// address. A
   * relative path was resolved against the working directory of the
   * listen() call: the socket is there, whatever the directory now.
   */
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
        // Nobody would ever get this channel (no 'channel' listener, no for await iterating): close it at
        // once, so that its client sees the channel end instead of requests and receives that wait for ever.
        if (this.listenerCount('channel') === 0) {
          channel.close();
          return;
        }
        this.#channels.add(channel);
        channel.once('close', () => this.#channels.delete(channel));
        try {
          this.emit('channel', channel);
        } catch (err) {
          // A listener threw: as from any emitter, the program hears of it as an uncaught exception
          // (not swallowed by the accept loop, whose later connections go on), and the channel stays
          // as the listener left it.
          process.nextTick(() => {
            throw err;
          });
        }
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

  /**
   * The channels as clients connect, until the server closes. Its 'channel'
   * listener is what makes the server keep the channels that come while it
   * iterates; after a break, the next ones are closed, as with no listener.
   * return() (a `break`) ends it at once: a pending next() resolves done,
   * and a client that connects after it gets a closed channel. next()
   * calls are served in call order.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<Channel> & Required<Pick<AsyncIterator<Channel>, 'return'>> {
    const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };
    // Channels that came and no next() took yet, each with whether some other 'channel' listener got it too.
    const ready: Array<{ channel: Channel; shared: boolean }> = [];
    // next() calls waiting for a channel, in call order.
    const waiting: Array<(result: IteratorResult<Channel>) => void> = [];
    let listening = false;
    let finished = false;
    const onChannel = (channel: Channel): void => {
      const take = waiting.shift();
      if (take !== undefined) take({ done: false, value: channel });
      else ready.push({ channel, shared: this.listenerCount('channel') > 1 });
    };
    const finish = (): void => {
      if (finished) return;
      finished = true;
      this.off('channel', onChannel);
      this.off('close', finish);
      // Channels that came for this iteration and that it will not hand out: unless another listener got
      // them, nobody can reach them.
      for (const { channel, shared } of ready.splice(0)) if (!shared) channel.close();
      for (const take of waiting.splice(0)) take(DONE);
    };
    const iterator: AsyncIterableIterator<Channel> & Required<Pick<AsyncIterator<Channel>, 'return'>> = {
      next: (): Promise<IteratorResult<Channel>> => {
        // Closing first: the channels still in `ready` were closed by close(), and a loop handed them after
        // close() would get dead channels.
        if (this.#closing !== undefined) finish();
        if (finished) return Promise.resolve(DONE);
        if (!listening) {
          // From the first next(), as a for await starts: only then does the server keep channels for it.
          listening = true;
          this.on('channel', onChannel);
          this.on('close', finish);
        }
        const next = ready.shift();
        if (next !== undefined) return Promise.resolve({ done: false, value: next.channel });
        return new Promise((resolve) => waiting.push(resolve));
      },
      return: (): Promise<IteratorResult<Channel>> => {
        finish();
        return Promise.resolve(DONE);
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
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

/**
 * A file's identity: its inode, and its birth time, which tells it from a
 * file created later under the same inode number (a file system reuses the
 * number of a removed file at once). 0n birth times (a file system without
 * them) leave the inode alone to tell. close() removes the socket path only
 * while it is still the file listen() put there.
 */
interface FileId {
  dev: bigint;
  ino: bigint;
  born: bigint;
}

/** The identity of the file at `path`, or undefined if there is none. */
function fileAt(path: string): FileId | undefined {
  const stat = fs.lstatSync(path, { bigint: true, throwIfNoEntry: false });
  return stat === undefined ? undefined : { dev: stat.dev, ino: stat.ino, born: stat.birthtimeNs };
}

function sameFile(path: string, id: FileId): boolean {
  const now = fileAt(path);
  return now !== undefined && now.dev === id.dev && now.ino === id.ino && now.born === id.born;
}

/**
 * Accepts channels on a listening Unix socket: a memfd region per client,
 * handed over with SCM_RIGHTS. `early`: connections that came before it
 * started. `owned`: set when listen() replaced a stale socket file (see
 * replaceStale): close() then removes the path only while it is still that
 * file. Undefined when the server bound the path itself: Node (libuv)
 * removes the path on close then, without looking whose file it is.
 */
function socketAcceptor(
  server: net.Server,
  path: string,
  owned: FileId | undefined,
  early: readonly net.Socket[],
  codec: ChannelCodec,
  capacity: number,
  poll: number | undefined,
  handoverTimeoutMs: number,
): Acceptor {
  let accepted = 0;
  // Connections in the handover (not yet channels), with their regions once laid out: server.close()
  // waits for every connection to end, so stop() ends these itself.
  const handing = new Map<net.Socket, Region | undefined>();
  const accept = async (
    socket: net.Socket,
    adopt: (channel: Channel) => void,
    fail: (error: Error) => void,
    closing: () => boolean,
  ): Promise<void> => {
    handing.set(socket, undefined);
    let region: Region | undefined;
    let channel: Channel;
    try {
      region = Region.create({ backing: 'memfd', name: 'shmring-channel', size: channelRegionSize(capacity) });
      layOutChannel(region, codec, capacity);
      handing.set(socket, region);
      await sendRegion(socket, region);
      const sent = region;
      await clientReady(socket, handoverTimeoutMs, () => openerEndTaken(sent.buffer));
      if (closing()) throw new ShmringError(ErrorCodes.CLOSED, 'the server closed during the handover');
      // Any byte woke clientReady: a client that sent one without opening its end (nc -U, say) is no channel.
      if (!openerEndTaken(region.buffer)) throw new ShmringError(ErrorCodes.NO_FD, 'the client sent its byte without opening its end');
      channel = creatorEnd(region, codec, socketLink(socket), `channel ${++accepted} of ${path}`, poll);
    } catch (err) {
      // A client that went away during the handover, was too slow, or a server out of fds: drop this one
      // connection. Only the last is the server's own failure; while it closes, none is.
      dropHandover(socket, region, path);
      region?.close();
      if (!closing() && !CLIENT_GONE.has((err as NodeJS.ErrnoException).code)) fail(err as Error);
      return;
    } finally {
      handing.delete(socket);
    }
    // Outside the try: from here on the channel owns the socket and the region.
    adopt(channel);
  };
  return {
    start(adopt, fail, closing) {
      for (const socket of early) void accept(socket, adopt, fail, closing);
      server.on('connection', (socket: net.Socket) => void accept(socket, adopt, fail, closing));
      server.on('error', fail);
    },
    stop: () =>
      new Promise<void>((resolve) => {
        // First the path, then the socket (as Node does for the path it bound): a server that took the
        // path in between must not lose its file. And only our own file: if another process's server
        // has replaced it since, its file stays.
        if (owned !== undefined) {
          try {
            if (sameFile(path, owned)) fs.rmSync(path, { force: true });
          } catch {
            // Like Node's own removal of the path: nothing to do about a file this process cannot remove.
          }
        }
        for (const [socket, region] of handing) dropHandover(socket, region, path);
        server.close(() => resolve());
      }),
  };
}

/**
 * Ends a connection whose handover will not make a channel (a server
 * closing, a client too slow or gone). A client that opened its end all the
 * same (its connect() resolved, or resolves: it opened after a timeout)
 * sees the rings closed when the socket goes: a clean end,
 * ERR_SHMRING_CLOSED, not ERR_SHMRING_PEER_DEAD from a live server.
 */
function dropHandover(socket: net.Socket, region: Region | undefined, path: string): void {
  try {
    if (region !== undefined) closeChannelRings(region, `a channel of ${path}`);
  } catch {
    // A region not laid out yet, or that cannot be read: a hang-up like any other, the socket goes all the same.
  }
  socket.destroy();
}

/**
 * The listen() calls of this process in progress, by resolved path: each
 * starts once the one before it on the same path has settled.
 */
const listening = new Map<string, Promise<void>>();

const noop = (): void => {};

/**
 * Listens for channel clients on a Unix domain socket path, or on a NATS
 * subject (`nats://host:port/<subject>`, see nats/channel.ts). A stale socket
 * file (no server answers) is replaced; a live server there is EADDRINUSE.
 */
export async function listen(path: string, options: ListenOptions = {}): Promise<ChannelServer> {
  checkPath(path, 'listen');
  checkOptions(options, OptionNames.listen, 'listen');
  // Every option is checked on every path, including those only one transport uses (capacity, poll and
  // handoverTimeoutMs mean nothing over NATS, heartbeatMs nothing on a socket path): a bad one is refused.
  const capacity = checkCapacity(options?.capacity, 'listen');
  const poll = checkPoll(options?.poll, 'listen');
  const handoverTimeoutMs = checkTimeout(options?.handoverTimeoutMs, 'listen', 'handoverTimeoutMs') ?? DEFAULT_HANDOVER_TIMEOUT_MS;
  checkHeartbeat(options?.heartbeatMs, 'listen');
  if (isNatsEndpoint(path)) return (await import('./nats/channel.js')).listenNats(path, options);
  const codec = resolveCodec(options?.codec);
  const where = socketPathOf(path);
  // One at a time per path: two listen() calls that both found the same stale socket file would both
  // replace it, and one would listen on a file the other had removed, unreachable. In turn, the second
  // finds the first one's server answering there, and fails with EADDRINUSE.
  const key = isAbstract(path) ? path : nodePath.resolve(path);
  const before = listening.get(key);
  const bound =
    before === undefined
      ? bindServer(where, path, codec, capacity, poll, handoverTimeoutMs)
      : before.then(() => bindServer(where, path, codec, capacity, poll, handoverTimeoutMs));
  const settled = bound.then(noop, noop);
  listening.set(key, settled);
  try {
    return await bound;
  } finally {
    if (listening.get(key) === settled) listening.delete(key);
  }
}

/**
 * The path listen() binds, locks and removes for `path`: a relative path
 * resolved against the working directory now, because Node (libuv) removes
 * the path it bound, on close, as it was given: relative to the working
 * directory of then, where a process.chdir() since would make it another
 * file (an unrelated one, removed) and leave the socket file behind. A
 * relative path whose absolute form is longer than a socket address holds
 * (MAX_PATH_BYTES), while it fits itself, is kept as it is: then the
 * server must be closed in the directory it was opened in (README).
 */
function socketPathOf(path: string): string {
  if (isAbstract(path) || nodePath.isAbsolute(path)) return path;
  const absolute = nodePath.resolve(path);
  return Buffer.byteLength(absolute) <= MAX_PATH_BYTES ? absolute : path;
}

/**
 * Binds a server at `path` (socketPathOf), replacing a stale socket file
 * there, and starts accepting channels on it; `given`: the path as the
 * caller gave it (server.path).
 */
async function bindServer(
  path: string,
  given: string,
  codec: ChannelCodec,
  capacity: number,
  poll: number | undefined,
  handoverTimeoutMs: number,
): Promise<ChannelServer> {
  const server = net.createServer({ pauseOnConnect: true });
  // Connections that come before the acceptor starts (a client already trying the path as replaceStale
  // takes it) wait here, paused, for it.
  const early: net.Socket[] = [];
  const keep = (socket: net.Socket): void => void early.push(socket);
  server.on('connection', keep);
  let owned: FileId | undefined;
  try {
    owned = await bindOrReplace(server, path);
  } catch (err) {
    for (const socket of early) socket.destroy();
    throw err;
  } finally {
    server.off('connection', keep);
  }
  return new ChannelServer(socketAcceptor(server, path, owned, early, codec, capacity, poll, handoverTimeoutMs), given);
}

/** Binds `server` at `path`; a stale socket file there is replaced (replaceStale), a live server is EADDRINUSE. */
async function bindOrReplace(server: net.Server, path: string): Promise<FileId | undefined> {
  try {
    await bind(server, path);
    return undefined;
  } catch (err) {
    const inUse = err as NodeJS.ErrnoException;
    if (inUse.code !== 'EADDRINUSE') throw pathError(inUse, path, 'listen on');
    // An abstract name is taken only while a socket has it: a live server.
    if (isAbstract(path)) throw pathError(inUse, path, 'listen on');
    // Looked at before the check, so that the file found dead is this one (a server that takes the
    // path after this look answers the check).
    const stale = fs.lstatSync(path, { bigint: true, throwIfNoEntry: false });
    const found = await probe(path);
    if (found === 'live') throw pathError(inUse, path, 'listen on');
    if (found !== 'stale') throw notStale(found, path, inUse);
    if (stale === undefined) {
      // Removed meanwhile (by its owner, or another listen()): the path is free again, or taken for good.
      try {
        await bind(server, path);
        return undefined;
      } catch (again) {
        throw pathError(again as NodeJS.ErrnoException, path, 'listen on');
      }
    }
    // Stale: left by a server that died. Replace it, but only if it is a socket.
    if (!stale.isSocket()) {
      throw pathError(
        inUse,
        path,
        'listen on',
        `the path exists and is not a socket (it is ${fileKind(stale)}); ${stale.isDirectory() ? 'pick another path' : 'remove it or pick another path'}`,
      );
    }
    return replaceStale(server, path, { dev: stale.dev, ino: stale.ino, born: stale.birthtimeNs }, inUse);
  }
}

/**
 * Replaces the stale socket file at `path` (`stale`, found dead) with
 * `server`'s socket, such that of several processes that found the same
 * stale file, exactly one gets the path and the others EADDRINUSE. (Within
 * this process, listen() calls on one path take turns already: the second
 * finds the first one's server there.) Removing the stale file and binding
 * the path without more would not do: a process that found the file dead a
 * moment ago would remove whatever is there now, another's fresh socket
 * included, and both servers would think they have the path.
 *
 * So replacing is serialized between processes by an exclusive open file
 * description lock on a lock file beside the path (lockReplacement): a
 * socket file cannot be opened, so it cannot be locked itself. The server
 * binds a fresh name beside the path first; then, under the lock, the
 * stale file is removed only if the path still is that file (a socket
 * file whose server died never answers again: still stale), and the fresh
 * socket takes the path with link(), which fails if the path exists; its
 * fresh name goes. A path that has another file by then was replaced by
 * the process that held the lock before: EADDRINUSE. The only processes
 * that remove a socket file found stale hold the lock, so none removes
 * another's live socket; a listen() whose first bind finds the path empty
 * between our removal and our link (it needs no lock) gets the path, and
 * our link fails: one server either way. Returns the socket file's
 * identity, for close() to remove the path only while it is still this
 * file.
 *
 * What is not closed: a process that removes the file by other means (rm,
 * or an older shmring's listen(), which removed it and bound the path) is
 * not held back by the lock. The lock file is removed by its holder before
 * it lets go; only a process killed while it holds (or creates) it leaves
 * it behind, and that is harmless: the next replacement locks it, uses it
 * and removes it. A process killed between binding its fresh name and
 * removing it leaves a `.shmring-*` socket file beside the path.
 */
async function replaceStale(server: net.Server, path: string, stale: FileId, inUse: NodeJS.ErrnoException): Promise<FileId | undefined> {
  const fresh = nameBeside(path);
  if (fresh !== undefined) {
    try {
      await bind(server, fresh);
    } catch (err) {
      throw pathError(err as NodeJS.ErrnoException, path, 'listen on');
    }
  }
  let won: boolean;
  let ours: FileId | undefined;
  try {
    const lock = await lockReplacement(path);
    try {
      if (sameFile(path, stale)) fs.rmSync(path, { force: true });
      // (Not the stale file: replaced by the holder before us, or removed by its owner or an rm.)
      if (fresh === undefined) {
        // No room for a name beside it (a long directory and a short file name): bind the path itself.
        // Node then removes the path on close without looking whose file it is.
        await bind(server, path);
        return undefined;
      }
      const stat = fs.lstatSync(fresh, { bigint: true });
      ours = { dev: stat.dev, ino: stat.ino, born: stat.birthtimeNs };
      won = linkOrRename(fresh, path);
    } finally {
      lock?.release();
    }
  } catch (err) {
    server.close(); // removes the fresh name (Node removes the name it bound)
    if (err instanceof ShmringError) throw err; // said already (the lock file's trouble, BUSY)
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE')
      throw pathError(inUse, path, 'listen on', 'another process replaced the stale socket file first; its server is the one there');
    throw pathError(err as NodeJS.ErrnoException, path, 'listen on');
  }
  if (!won) {
    server.close();
    throw pathError(inUse, path, 'listen on', 'another process replaced the stale socket file first; its server is the one there');
  }
  // The socket's name is the path now. (Node removes the fresh name again on close: gone, harmless.)
  fs.rmSync(fresh!, { force: true });
  return ours;
}

/**
 * EADDRINUSE for something other than a lock file at the lock path of
 * `path` (`kind`: what it is): the name is taken, as a path that is not a
 * socket is, whichever errno opening it gave (EISDIR, ELOOP) or none (a FIFO).
 */
function notALockFile(path: string, lockPath: string, kind: string): ShmringError {
  const taken = Object.assign(new Error(`${lockPath} is ${kind}`), { code: 'EADDRINUSE' }) as NodeJS.ErrnoException;
  return pathError(
    taken,
    path,
    'listen on',
    `the stale socket file there needs replacing; ${lockPath}, the name listen() locks to replace it, is ${kind}: remove it (the name is listen()'s own)`,
  );
}

/** The error of a lock file (lockReplacement) that cannot be opened, with what to do about it. */
function lockFileError(err: NodeJS.ErrnoException, path: string, lockPath: string): Error {
  const code = err.code ?? 'EIO';
  const there = fs.lstatSync(lockPath, { throwIfNoEntry: false });
  if (code === 'EISDIR' || code === 'ELOOP' || (there !== undefined && !there.isFile())) {
    return notALockFile(path, lockPath, there === undefined ? 'not a regular file' : fileKind(there));
  }
  let hint: string;
  if ((code === 'EACCES' || code === 'EPERM') && there !== undefined) {
    hint = `this user may not open ${lockPath}, the lock file listen() uses to replace it, for writing: remove it, or run as its owner`;
  } else if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
    hint = `its directory does not let this user create ${lockPath}, the lock file listen() uses to replace it: remove the stale file, or make the directory writable`;
  } else {
    hint = `${lockPath}, the lock file listen() uses to replace it, could not be opened (${code})`;
  }
  return pathError(err, path, 'listen on', `the stale socket file there needs replacing; ${hint}`);
}

/** How long listen() waits for another process's replacement of the same stale socket file (a few system calls). */
const REPLACE_WAIT_MS = 10_000;

/** The lock file that serializes replacing the stale socket file at `path` (replaceStale). */
function lockPathOf(path: string): string {
  return `${path}.shmring-lock`;
}

/**
 * Takes an exclusive OFD lock on the lock file of `path` (created mode
 * 0600 if missing), waiting while another process holds it. A lock file is
 * removed by its holder before it lets go (release), so a lock taken on a
 * file that is no longer the one at the lock path (a waiter that opened
 * it before its holder removed it) is dropped and the path opened again:
 * the holder is always the one that locked the file the path leads to.
 * Undefined where the file system has no OFD locks (replacing then goes
 * unserialized).
 */
async function lockReplacement(path: string): Promise<{ release(): void } | undefined> {
  const lockPath = lockPathOf(path);
  const deadline = performance.now() + REPLACE_WAIT_MS;
  for (;;) {
    let fd: number;
    try {
      // O_NONBLOCK: a FIFO at the lock path must not block the open (it is refused below).
      fd = fs.openSync(lockPath, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK, 0o600);
    } catch (err) {
      throw lockFileError(err as NodeJS.ErrnoException, path, lockPath);
    }
    const kind = fs.fstatSync(fd);
    if (!kind.isFile()) {
      fs.closeSync(fd);
      throw notALockFile(path, lockPath, fileKind(kind));
    }
    let taken: boolean | undefined;
    try {
      taken = lockFileByte(fd, 0);
      // Ours only if the lock path still names the file we locked (its holder removes it before letting go).
      if (taken === true && namesObject(fd, lockPath, false)) {
        return {
          release: () => {
            // Removed before the lock goes (with the fd): a waiter then finds no file, or its own.
            fs.rmSync(lockPath, { force: true });
            fs.closeSync(fd);
          },
        };
      }
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    fs.closeSync(fd);
    if (taken === undefined) {
      fs.rmSync(lockPath, { force: true }); // no OFD locks here: nobody can hold it
      return undefined;
    }
    if (performance.now() > deadline) {
      throw new ShmringError(
        ErrorCodes.BUSY,
        `listen on ${path}: another process has been replacing the stale socket file there for ${REPLACE_WAIT_MS} ms (holding ${lockPath}); try again, or find the process (fuser ${lockPath})`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** Gives the file `from` the name `to` as well, unless `to` exists (false then: another process got there first). */
function linkOrRename(from: string, to: string): boolean {
  try {
    fs.linkSync(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    // A file system without hard links to sockets: rename, which replaces what is there (the race is open there).
    fs.renameSync(from, to);
    return true;
  }
}

/** A random name beside `path` (in its directory: rename and link work), or undefined if too long for a socket. */
function nameBeside(path: string): string | undefined {
  const name = nodePath.join(nodePath.dirname(path), `.shmring-${randomBytes(6).toString('base64url')}`);
  return Buffer.byteLength(name) <= MAX_PATH_BYTES ? name : undefined;
}

/** Connects to a channel server's socket path (or nats:// address); resolves with this side's end of a new channel. */
export async function connect(path: string, options: ConnectOptions = {}): Promise<Channel> {
  checkPath(path, 'connect');
  checkOptions(options, OptionNames.connect, 'connect');
  // A signal aborted already wins over whatever connecting would meet (no server at the path, say), as in Node's own APIs.
  if (checkSignal(options?.signal, 'connect')?.aborted) throw abortError(options.signal!);
  // As listen's: every option checked on every path (poll means nothing over NATS, heartbeatMs nothing here).
  const poll = checkPoll(options?.poll, 'connect');
  const timeoutMs = checkTimeout(options?.timeoutMs, 'connect');
  checkHeartbeat(options?.heartbeatMs, 'connect');
  if (isNatsEndpoint(path)) return (await import('./nats/channel.js')).connectNats(path, options);
  const codec = resolveCodec(options?.codec);
  const signal = checkSignal(options?.signal, 'connect');
  const socket = net.connect({ path });
  let region: Region;
  try {
    // Called in the same tick as net.connect: receiveRegion pauses the socket before it reads.
    // Fixed size: a server that sent a region it could shrink could kill this process (SIGBUS); ours are sealed.
    region = await receiveRegion(socket, { timeoutMs, signal, requireFixedSize: true });
  } catch (err) {
    socket.destroy();
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ECONNRESET' || e.code === 'EPIPE') {
      // The server's end went away before or during the handover: it died (or closed) with this connection queued.
      throw pathError(
        e,
        path,
        'connect to',
        'the server went away before handing over a channel (it exited or crashed meanwhile?); try again',
      );
    }
    if (e.syscall === 'connect' || e.code === 'ENOENT' || e.code === 'ECONNREFUSED') throw pathError(e, path, 'connect to');
    if (e.code === ErrorCodes.TIMEOUT) {
      throw new ShmringError(
        ErrorCodes.TIMEOUT,
        `connect to ${path}: the server did not hand over a channel within timeoutMs=${timeoutMs}`,
        { cause: err },
      );
    }
    if (e.code === ErrorCodes.NOT_SEALED) {
      throw new ShmringError(
        ErrorCodes.NOT_A_CHANNEL,
        `connect to ${path}: the server sent a region it can still shrink under this process (${e.message}); a @shmring/channel server sends a memfd sealed against that: is it one?`,
        { cause: err },
      );
    }
    if (e.code === ErrorCodes.NO_FD && /MSG_CTRUNC/.test(e.message)) {
      throw new ShmringError(ErrorCodes.NO_FD, `connect to ${path}: ${e.message}`, { cause: err }); // this process's fds, not the server
    }
    if (e.code === ErrorCodes.NO_FD) {
      throw new ShmringError(
        ErrorCodes.NO_FD,
        `connect to ${path}: the server hung up without handing over a channel (it exited meanwhile, or it is not a @shmring/channel server)`,
        { cause: err },
      );
    }
    if (e.code === 'EPERM' || e.code === 'EACCES' || e.code === 'EINVAL') {
      // mmap refused the region read-write: a memfd sealed against writes (a snapshot), or one of size 0.
      throw new ShmringError(
        ErrorCodes.NOT_A_CHANNEL,
        `connect to ${path}: the server sent a region this process cannot map for reading and writing (${e.message}); a @shmring/channel server sends a writable memfd: is it one?`,
        { cause: err },
      );
    }
    // Out of fds or memory, say: this process's condition, said with the path it met it at.
    throw pathError(e, path, 'connect to', e.message);
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
