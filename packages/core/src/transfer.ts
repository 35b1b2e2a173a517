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
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCodes, ShmringError, ShmringTypeError, abortError } from './errors.js';
import { backend } from './native/loader.js';
import { adoptFd, type Region } from './region.js';

export interface ReceiveOptions {
  /** Map the received region read-only. */
  readOnly?: boolean;
  /**
   * Accept only a region no process can change any more (a Region.snapshot):
   * anything else is ERR_SHMRING_NOT_SEALED (and its fd is closed). Mapped
   * read-only. Default false.
   */
  requireSealed?: boolean;
  /** Give up after this many milliseconds (ERR_SHMRING_TIMEOUT). Default: wait forever. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Longest pause between two polls of the socket while receiving. */
const MAX_POLL_INTERVAL_MS = 10;

function socketFd(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      'the socket has no file descriptor: pass a connected Unix domain socket (net.connect({ path }))',
    );
  }
  return fd;
}

async function connected(socket: Socket): Promise<void> {
  if (!socket.connecting) return;
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
}

/** Sends `region`'s fd over a connected Unix domain socket. */
export async function sendRegion(socket: Socket, region: Region): Promise<void> {
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
  await connected(socket);
  backend().sendFd(socketFd(socket), region.fd);
}

/** Waits for a region's fd on a Unix domain socket and maps it. */
export async function receiveRegion(socket: Socket, options: ReceiveOptions = {}): Promise<Region> {
  const { signal, timeoutMs } = options;
  // Stop libuv from reading before the fd message arrives (see the module comment).
  socket.pause();
  await connected(socket);
  const fd = socketFd(socket);
  const deadline = timeoutMs === undefined ? Infinity : performance.now() + timeoutMs;
  for (let interval = 0.1; ; interval = Math.min(interval * 2, MAX_POLL_INTERVAL_MS)) {
    if (signal?.aborted) throw abortError(signal);
    const received = backend().recvFd(fd);
    // The received fd is ours alone: the region owns it (and closes it if it cannot be mapped).
    if (received >= 0) {
      return adoptFd(
        received,
        { readOnly: options.readOnly === true, requireSealed: options.requireSealed === true },
        `the region received (fd ${received})`,
      );
    }
    if (received === -2) throw new ShmringError(ErrorCodes.NO_FD, 'the peer closed the socket before sending a region');
    if (received === -3)
      throw new ShmringError(ErrorCodes.NO_FD, 'the peer sent a message without a file descriptor; is it calling sendRegion?');
    if (performance.now() >= deadline) {
      throw new ShmringError(ErrorCodes.TIMEOUT, `no region arrived within timeoutMs=${timeoutMs}`);
    }
    // Nothing yet: poll again soon. Setup happens once per peer, so a short poll costs nothing that matters.
    await sleep(interval, undefined, signal ? { signal } : undefined).catch(() => {
      throw abortError(signal);
    });
  }
}
