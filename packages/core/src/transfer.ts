/**
 * Handing a region to an unrelated process: its fd travels over a Unix
 * domain socket as SCM_RIGHTS ancillary data (the kernel installs a new fd
 * for the same open file in the receiver), as in memfd_create(2)'s example.
 *
 * The fd message bypasses Node's stream buffers, so the socket should be
 * dedicated to the handover (or at least quiet while it happens), and the
 * receiving socket must not be reading: a read by libuv would swallow the
 * message and the kernel would drop its fd. receiveRegion pauses the socket
 * itself, which is in time if it is called (or `socket.pause()` is) before
 * the connection completes, i.e. in the same tick as `net.connect()`; once
 * Node has started reading a connected socket, a message may already be
 * gone. For an accepted socket use `net.createServer({ pauseOnConnect: true })`.
 */
import { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ErrorCodes,
  ShmringError,
  ShmringRangeError,
  ShmringTypeError,
  abortError,
  checkBoolean,
  checkOptionNames,
  onObject,
  shown,
} from './errors.js';
import { backend } from './native/loader.js';
import { adoptFd, Region } from './region.js';
import { clearTimer, startTimer, type Timer } from './timers.js';

export interface ReceiveOptions {
  /** Map the received region read-only. */
  readOnly?: boolean;
  /**
   * Accept only a region no process can change any more (a Region.snapshot):
   * anything else is ERR_SHMRING_NOT_SEALED (and its fd is closed). Mapped
   * read-only. Default false.
   */
  requireSealed?: boolean;
  /** Accept only a memfd sealed against shrinking (see FromFdOptions.requireFixedSize). Default false. */
  requireFixedSize?: boolean;
  /** Give up after this many milliseconds (ERR_SHMRING_TIMEOUT). Default: wait forever. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Longest pause between two polls of the socket while receiving. */
const MAX_POLL_INTERVAL_MS = 10;

function checkSocket(socket: unknown, verb: string): asserts socket is Socket {
  if (!(socket instanceof Socket)) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: socket=${shown(socket)} must be a net.Socket connected to a Unix domain socket (net.connect({ path }))`,
    );
  }
}

/**
 * Checks receiveRegion's options before it touches the socket: of the wrong
 * type a ShmringTypeError, out of range a ShmringRangeError, both
 * ERR_SHMRING_INVALID_ARGUMENT and naming the option (as the rings' waits do).
 */
/** The options receiveRegion takes; any other name is refused (a `timeout` would never time out). */
const RECEIVE_OPTION_NAMES: readonly string[] = ['readOnly', 'requireSealed', 'requireFixedSize', 'timeoutMs', 'signal'];

function checkReceiveOptions(options: unknown): asserts options is ReceiveOptions {
  if (options === null || typeof options !== 'object') {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `receiveRegion: options=${shown(options)} must be an object`);
  }
  checkOptionNames(options, RECEIVE_OPTION_NAMES, 'receiveRegion');
  const { readOnly, requireSealed, requireFixedSize, timeoutMs, signal } = options as Record<string, unknown>;
  checkBoolean('readOnly', readOnly, 'receiveRegion');
  checkBoolean('requireSealed', requireSealed, 'receiveRegion');
  checkBoolean('requireFixedSize', requireFixedSize, 'receiveRegion');
  if (timeoutMs !== undefined) {
    if (typeof timeoutMs !== 'number') {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `receiveRegion: timeoutMs=${shown(timeoutMs)} must be a number of ms`);
    }
    if (!(timeoutMs >= 0)) {
      throw new ShmringRangeError(
        ErrorCodes.INVALID_ARGUMENT,
        `receiveRegion: timeoutMs=${timeoutMs} must be a number of ms >= 0 (or Infinity)`,
      );
    }
  }
  if (
    signal !== undefined &&
    !(signal instanceof AbortSignal) &&
    // One of another realm passes (it has what a wait uses of it).
    (signal === null ||
      typeof signal !== 'object' ||
      !('aborted' in signal) ||
      typeof (signal as AbortSignal).addEventListener !== 'function')
  ) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `receiveRegion: signal=${shown(signal)} must be an AbortSignal (or undefined)`);
  }
}

/**
 * ERR_SHMRING_CLOSED, not ERR_SHMRING_NO_FD: NO_FD (docs/ERRORS.md) says
 * the *peer* closed the socket, which receiveRegion learns from recvmsg
 * (end of stream). A socket destroyed (or closed) on this side, while
 * receiveRegion connected or waited, is this process's own doing, as a
 * closed region or ring is: CLOSED.
 */
function socketClosed(verb: string): ShmringError {
  return new ShmringError(
    ErrorCodes.CLOSED,
    `${verb}: the socket was destroyed (or closed) on this side before a region arrived; keep it open until ${verb} settles`,
  );
}

function socketFd(socket: Socket, verb: string): number {
  if (socket.destroyed) throw socketClosed(verb);
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      'the socket has no file descriptor: pass a connected Unix domain socket (net.connect({ path }))',
    );
  }
  return fd;
}

/**
 * Waits for `socket` to finish connecting. `until` (receiveRegion's): its
 * deadline (performance.now()) and AbortSignal bound this wait too, not
 * only the wait for the fd that follows: a socket that never connects
 * (its server never accepts, a TCP peer that does not answer) would
 * otherwise hold the caller past its timeoutMs, and past an abort.
 */
async function connected(
  socket: Socket,
  verb: string,
  until: { deadline?: number; timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<void> {
  const { deadline = Infinity, timeoutMs, signal } = until;
  if (signal?.aborted) throw abortError(signal);
  if (!socket.connecting) return unixOnly(socket, verb);
  await new Promise<void>((resolve, reject) => {
    let timer: Timer | undefined;
    const done = (): void => {
      socket.off('connect', onConnect);
      socket.off('error', onError);
      socket.off('close', onClose);
      signal?.removeEventListener('abort', onAbort);
      if (timer !== undefined) clearTimer(timer);
    };
    const onAbort = (): void => {
      done();
      reject(abortError(signal));
    };
    timer = startTimer(
      () => {
        done();
        reject(new ShmringError(ErrorCodes.TIMEOUT, `${verb}: the socket did not connect within timeoutMs=${timeoutMs}`));
      },
      Math.max(0, deadline - performance.now()),
    );
    signal?.addEventListener('abort', onAbort, { once: true });
    const onConnect = (): void => {
      done();
      resolve();
    };
    const onError = (err: Error): void => {
      done();
      reject(err);
    };
    // Destroyed without an error while connecting: 'close' alone, which would otherwise leave this pending for ever.
    const onClose = (): void => {
      done();
      reject(socketClosed(verb));
    };
    socket.once('connect', onConnect);
    socket.once('error', onError);
    socket.once('close', onClose);
  });
  unixOnly(socket, verb);
}

/**
 * An fd passes over a Unix domain socket only: TCP ignores SCM_RIGHTS, so
 * sendRegion over it sent a byte and no region, and the peer's
 * receiveRegion failed with "a message without a file descriptor".
 */
function unixOnly(socket: Socket, verb: string): void {
  if (typeof socket.remotePort === 'number' || typeof socket.localPort === 'number') {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: the socket is a TCP socket (${socket.remoteAddress}:${socket.remotePort}); a region's fd passes only over a Unix domain socket: net.connect(path), a server's net.createServer().listen(path), or a socketpair`,
    );
  }
}

/** Sends `region`'s fd over a connected Unix domain socket. */
export async function sendRegion(socket: Socket, region: Region): Promise<void> {
  checkSocket(socket, 'sendRegion');
  if (!(region instanceof Region)) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `sendRegion: region=${shown(region)} must be a Region (Region.create or Region.open, backing 'memfd', 'posix' or 'file')`,
    );
  }
  if (region.backing === 'sab') {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_BACKING,
      "a 'sab' region has no fd to send; share its SharedArrayBuffer with postMessage",
    );
  }
  if (region.backing === 'sysv') {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_BACKING,
      "a 'sysv' region has no fd to send; send its id (region.id) and open it with Region.open({ backing: 'sysv', id })",
    );
  }
  await connected(socket, 'sendRegion');
  try {
    backend().sendFd(socketFd(socket, 'sendRegion'), region.fd);
  } catch (err) {
    throw onObject(err, 'sendRegion over', 'the socket', { hint: sendHint });
  }
}

/** What a failed sendmsg(2) of an fd means to the caller. */
function sendHint(code: string): string | undefined {
  if (code === 'EINVAL' || code === 'EOPNOTSUPP' || code === 'ENOTSUP') {
    return 'an fd passes only over a Unix domain socket (net.connect(path), a socketpair): not TCP';
  }
  if (code === 'EAGAIN') return 'the socket buffer is full: the peer is not reading; send again once it drains';
  if (code === 'EPIPE' || code === 'ECONNRESET' || code === 'ENOTCONN') return 'the peer closed the socket: nothing was sent';
  if (code === 'ETOOMANYREFS') return 'too many fds are in flight to a peer that does not receive them (receiveRegion)';
  return undefined;
}

/** Waits for a region's fd on a Unix domain socket and maps it. */
export async function receiveRegion(socket: Socket, options: ReceiveOptions = {}): Promise<Region> {
  checkSocket(socket, 'receiveRegion');
  checkReceiveOptions(options);
  const { signal, timeoutMs } = options;
  // Stop libuv from reading before the fd message arrives (see the module comment).
  socket.pause();
  // The deadline counts from the call: connecting is part of the wait that timeoutMs and signal bound.
  const deadline = timeoutMs === undefined ? Infinity : performance.now() + timeoutMs;
  await connected(socket, 'receiveRegion', { deadline, signal, ...(timeoutMs === undefined ? {} : { timeoutMs }) });
  for (let interval = 0.1; ; interval = Math.min(interval * 2, MAX_POLL_INTERVAL_MS)) {
    if (signal?.aborted) throw abortError(signal);
    // Looked up before every poll, in the same tick as recvmsg: a socket destroyed while we slept has
    // no fd any more (and its number may be another file's by now), which socketFd reports as CLOSED.
    let received: number;
    try {
      received = backend().recvFd(socketFd(socket, 'receiveRegion'));
    } catch (err) {
      throw onObject(err, 'receiveRegion over', 'the socket', {
        hint: (code) => (code === 'ECONNRESET' ? 'the peer closed the socket before sending a region' : undefined),
      });
    }
    // The received fd is ours alone: the region owns it (and closes it if it cannot be mapped).
    if (received >= 0) {
      return adoptFd(
        received,
        {
          readOnly: options.readOnly === true,
          requireSealed: options.requireSealed === true,
          requireFixedSize: options.requireFixedSize === true,
        },
        `the region received (fd ${received})`,
      );
    }
    if (received === -2) throw new ShmringError(ErrorCodes.NO_FD, 'the peer closed the socket before sending a region');
    if (received === -3)
      throw new ShmringError(ErrorCodes.NO_FD, 'the peer sent a message without a file descriptor; is it calling sendRegion?');
    if (received === -4) {
      throw new ShmringError(
        ErrorCodes.NO_FD,
        'the region arrived, but the kernel could not give its file descriptor to this process (MSG_CTRUNC): it is probably out of fds; ' +
          'close the regions it no longer uses, or raise the limit (ulimit -n), and have the peer send it again',
      );
    }
    if (performance.now() >= deadline) {
      throw new ShmringError(ErrorCodes.TIMEOUT, `no region arrived within timeoutMs=${timeoutMs}`);
    }
    // Nothing yet: poll again soon. Setup happens once per peer, so a short poll costs nothing that matters.
    try {
      await sleep(interval, undefined, signal ? { signal } : undefined);
    } catch (err) {
      // Only an abort of the signal ends the sleep early; anything else is not an abort.
      if (signal?.aborted) throw abortError(signal);
      throw err;
    }
  }
}
