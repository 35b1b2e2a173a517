/**
 * The nats client, loaded on first use (shared-memory users never load it),
 * and connections opened with errors that name the server.
 */
import { abortError, ErrorCodes, ShmringError } from '@shmring/core';
import type { ConnectionOptions, NatsConnection } from 'nats';
import type { NatsAddress } from './address.js';

type NatsModule = typeof import('nats');
let loaded: Promise<NatsModule> | undefined;

/** The `nats` package, imported once. */
export function loadNats(): Promise<NatsModule> {
  loaded ??= import('nats').catch((err: unknown) => {
    loaded = undefined;
    throw new ShmringError(
      ErrorCodes.NO_BACKEND,
      `nats:// endpoints need the 'nats' package, which could not be loaded (${(err as Error).message}); install it beside @shmring/channel`,
      { cause: err },
    );
  });
  return loaded;
}

export interface OpenOptions {
  /** ms to wait for the first connection. */
  timeoutMs: number;
  /** The connection's name, as the server's monitoring shows it. */
  name: string;
  /**
   * Gives up waiting for the connection at once (an AbortError). The
   * attempt itself is not stopped (the nats client cannot cancel it): it
   * lingers until it opens, then is closed, or until `timeoutMs` fails it.
   */
  signal?: AbortSignal | undefined;
}

/**
 * Connects to the server of `address`. Once connected the client reconnects
 * by itself for ever (every 250 ms); the first connection fails with
 * ERR_SHMRING_UNREACHABLE naming the server.
 */
export async function openNats(address: NatsAddress, verb: string, options: OpenOptions): Promise<NatsConnection> {
  const nats = await loadNats();
  const config: ConnectionOptions = {
    servers: address.server,
    name: options.name,
    timeout: options.timeoutMs,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    user: address.user,
    pass: address.pass,
  };
  const signal = options.signal;
  if (signal?.aborted) throw abortError(signal);
  const connecting = nats.connect(config);
  let onAbort: (() => void) | undefined;
  try {
    if (signal === undefined) return await connecting;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => {
        // The attempt goes on in the background (a hung handshake: until timeoutMs). Opened after the
        // abort, nobody will use it, and its socket would keep the process alive: closed.
        connecting.then((nc) => nc.close()).catch(() => {});
        reject(abortError(signal));
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
    return await Promise.race([connecting, aborted]);
  } catch (err) {
    if (signal?.aborted) throw abortError(signal);
    throw new ShmringError(
      ErrorCodes.UNREACHABLE,
      `${verb} ${address.text}: cannot reach the NATS server at ${address.server} (${(err as Error).message}); is nats-server running there?`,
      { cause: err },
    );
  } finally {
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
  }
}

/** Flushes what was published (for at most `timeoutMs`: never hangs on a lost server), then closes. */
export async function closeNats(nc: NatsConnection, timeoutMs = 1000): Promise<void> {
  if (nc.isClosed()) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    // Disconnected, a flush waits for the reconnection: nothing can be flushed, and the close would wait out timeoutMs.
    if (!isConnected(nc)) return;
    await Promise.race([
      nc.flush(),
      new Promise((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
  } catch {
    // Closed or disconnected meanwhile: nothing more can be flushed.
  } finally {
    clearTimeout(timer);
    await nc.close().catch(() => {});
  }
}

/**
 * Whether the client is connected now (nats.js 2.x: protocol.connected;
 * true where that is not found: as if it were, the caller waits no longer
 * than it did).
 */
export function isConnected(nc: NatsConnection): boolean {
  return (nc as unknown as { protocol?: { connected?: unknown } }).protocol?.connected !== false;
}

type Handle = { ref?: () => unknown; unref?: () => unknown };
interface ClientInternals {
  protocol?: { transport?: { socket?: Handle }; heartbeats?: { timer?: Handle; _schedule?: () => void } };
}

/**
 * Makes whether `nc` keeps the event loop alive switchable (initially it
 * does): a channel's link holds it only while someone waits, as a
 * socket-path channel holds its socket. The nats client has no option for
 * it: this reaches into nats.js 2.x, whose connection keeps its socket
 * (protocol.transport.socket, a new one at each reconnection) and its ping
 * timer (protocol.heartbeats.timer, a new setTimeout at each ping) ref'd.
 * What it does not find (another client version) it leaves as it is: the
 * connection then keeps the process alive, as before. While the server is
 * unreachable, the client's reconnection attempts (a timer, a new socket)
 * keep it alive whatever this says, until they succeed.
 */
export function loopHold(nc: NatsConnection): (on: boolean) => void {
  let held = true;
  const protocol = (nc as unknown as ClientInternals).protocol;
  const apply = (handle: Handle | undefined): void => {
    if (held) handle?.ref?.();
    else handle?.unref?.();
  };
  const applyAll = (): void => {
    apply(protocol?.transport?.socket);
    apply(protocol?.heartbeats?.timer);
  };
  const beats = protocol?.heartbeats;
  const schedule = beats?._schedule;
  if (beats !== undefined && typeof schedule === 'function') {
    beats._schedule = function (this: unknown) {
      schedule.call(this);
      apply(beats.timer);
    };
  }
  void (async () => {
    for await (const status of nc.status()) if (status.type === 'reconnect') applyAll();
  })().catch(() => {});
  return (on) => {
    if (on === held) return;
    held = on;
    applyAll();
  };
}
