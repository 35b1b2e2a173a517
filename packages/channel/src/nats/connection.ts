/**
 * The nats client, loaded on first use (shared-memory users never load it),
 * and connections opened with errors that name the server.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import * as diagnostics from 'node:diagnostics_channel';
import type * as net from 'node:net';
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
   * Gives up waiting for the connection at once (an AbortError). The nats
   * client cannot cancel its attempt: its sockets are destroyed (see
   * Attempt), which fails it; one caught between the server's INFO and its
   * PONG lingers until `timeoutMs` fails it (then is closed, had it opened).
   */
  signal?: AbortSignal | undefined;
}

/**
 * The TCP sockets a connection attempt opened. nats.js (2.x) forgets a
 * socket whose attempt it gives up before the handshake is done: its
 * transport closes only sockets that connected and spoke, so a socket still
 * connecting (a black-holed address) or waiting for a server that never
 * says INFO stays open, and keeps the process alive, long after the
 * attempt failed (until the kernel gives up, or for ever). So the sockets
 * an attempt creates are noted (the 'net.client.socket' diagnostics
 * channel, the attempt's async context telling them from other
 * connections'), and destroyed when it is given up. The context is
 * tracked only while attempts are pending: async context tracking slows
 * every promise while it is on.
 */
interface Attempt {
  /** undefined once the attempt is settled: later sockets (reconnections) are not its own. */
  sockets: Set<net.Socket> | undefined;
}

const attempts = new AsyncLocalStorage<Attempt>();
let pendingAttempts = 0;

function onClientSocket(message: unknown): void {
  attempts.getStore()?.sockets?.add((message as { socket: net.Socket }).socket);
}

/** Runs `start` (which opens the connection) as an attempt whose sockets are noted. */
function beginAttempt<T>(start: () => T): { result: T; attempt: Attempt } {
  if (pendingAttempts++ === 0) diagnostics.subscribe('net.client.socket', onClientSocket);
  const attempt: Attempt = { sockets: new Set() };
  return { result: attempts.run(attempt, start), attempt };
}

/** Ends an attempt: destroys its sockets if it was given up (`failed`); stops tracking when none is pending. */
function endAttempt(attempt: Attempt, failed: boolean): void {
  const sockets = attempt.sockets;
  if (sockets === undefined) return;
  attempt.sockets = undefined;
  if (failed) for (const socket of sockets) socket.destroy();
  if (--pendingAttempts === 0) {
    diagnostics.unsubscribe('net.client.socket', onClientSocket);
    attempts.disable();
  }
}

/**
 * Connects to the server of `address`. Once connected the client reconnects
 * by itself for ever (every 250 ms), after an authorization error too; the
 * first connection fails with ERR_SHMRING_UNREACHABLE naming the server.
 */
export async function openNats(address: NatsAddress, verb: string, options: OpenOptions): Promise<NatsConnection> {
  const nats = await loadNats();
  const config: ConnectionOptions = {
    servers: address.server,
    name: options.name,
    // nats.js takes 0 as its default (`timeout || 20000`: 20 s); 0 means "no waiting" here, as everywhere in
    // shmring: the attempt gets 1 ms, what an established server on the loopback may just answer in.
    timeout: Math.max(1, options.timeoutMs),
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    // nats.js gives up for good after two authorization errors in a row (the server's credentials changed
    // under a running bridge or channel): its status feed then just ends, and a bridge hung or returned as if
    // done, a listen() server went quiet. Like any other outage, it is retried until fixed.
    ignoreAuthErrorAbort: true,
    user: address.user,
    pass: address.pass,
  };
  const signal = options.signal;
  if (signal?.aborted) throw abortError(signal);
  const { result: connecting, attempt } = beginAttempt(() => nats.connect(config));
  // Settled, the attempt's sockets are the connection's (opened) or given up (failed: destroyed).
  connecting.then(
    () => endAttempt(attempt, false),
    () => endAttempt(attempt, true),
  );
  let onAbort: (() => void) | undefined;
  try {
    if (signal === undefined) return await connecting;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => {
        // Nobody will use this attempt: its sockets go now, which fails it. One that opens
        // nonetheless (its handshake was past INFO) would keep the process alive: closed.
        connecting.then((nc) => nc.close()).catch(() => {});
        endAttempt(attempt, true);
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

/**
 * What the NATS server's refusal of an operation (nats.js's
 * PERMISSIONS_VIOLATION: a subscription, or a publish, to a subject this
 * connection's user may not use) means to `what` (e.g. "bridge nats://…"):
 * ERR_SHMRING_NOT_PERMITTED naming the operation, the subject and the
 * server. Any other error is returned as it is.
 */
export function refusalError(err: unknown, what: string, server: string): unknown {
  if ((err as { code?: unknown } | undefined)?.code !== 'PERMISSIONS_VIOLATION') return err;
  const context = (err as { permissionContext?: { operation?: string; subject?: string } }).permissionContext;
  const operation = context?.operation === 'subscription' ? 'subscribe to' : context?.operation === 'publish' ? 'publish to' : 'use';
  const subject = context?.subject === undefined ? 'a subject it needs' : `'${context.subject}'`;
  return new ShmringError(
    ErrorCodes.NOT_PERMITTED,
    `${what}: the NATS server at ${server} does not permit this user to ${operation} ${subject}; grant that permission in the server's authorization (or connect as a user who has it)`,
    { cause: err },
  );
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

/** What a connection's status says, for its channels' links (transport.ts). */
export interface ConnectionWatch {
  /** How many times the connection lost its server since it was first watched. */
  drops: number;
  /** Called at each reconnection. */
  readonly onReconnect: Set<() => void>;
}

const watches = new WeakMap<NatsConnection, ConnectionWatch>();

/**
 * The watch of `nc` (begun on the first call; its drops count from 0 then).
 * A peer's "no responders" right after such a loss may only mean that the
 * peer has not reconnected yet (transport.ts).
 */
export function watchConnection(nc: NatsConnection): ConnectionWatch {
  let watch = watches.get(nc);
  if (watch === undefined) {
    const w: ConnectionWatch = { drops: 0, onReconnect: new Set() };
    watch = w;
    watches.set(nc, w);
    // The status iterator ends when the connection closes.
    void (async () => {
      for await (const status of nc.status()) {
        if (status.type === 'disconnect') w.drops++;
        else if (status.type === 'reconnect') for (const callback of w.onReconnect) callback();
      }
    })().catch(() => {});
  }
  return watch;
}

type Handle = { ref?: () => unknown; unref?: () => unknown };
interface ClientInternals {
  protocol?: {
    transport?: { socket?: Handle & Partial<Pick<net.Socket, 'writableLength' | 'destroyed' | 'once' | 'off'>> };
    heartbeats?: { timer?: Handle; _schedule?: () => void };
    /** What was published and not yet handed to the socket (nats.js's DataBuffer): all of it while disconnected. */
    outbound?: { size?: () => number };
  };
}

/** A connection's bytes not yet sent to the server, and a wait for them to go (outbound()). */
export interface Outbound {
  /** Bytes published and not yet taken by the kernel: nats.js's buffer and the socket's. Cheap: two fields. */
  pending(): number;
  /**
   * Resolves when the socket has drained (its 'drain'), closed, the
   * connection is back (a reconnection empties nats.js's buffer) or closed,
   * or after DRAIN_RECHECK_MS (the caller checks pending() again): one
   * promise for every writer of the connection.
   */
  drained(): Promise<void>;
}

/** ms after which a wait of Outbound.drained() ends anyway, for its writer to look at pending() again. */
const DRAIN_RECHECK_MS = 250;
const outbounds = new WeakMap<NatsConnection, Outbound>();

/**
 * The outbound queue of `nc`. nats.js has no back-pressure: publish()
 * appends to its buffer, which it writes to the socket at the end of the
 * microtask without looking at the socket's writableLength, so a fast
 * publisher grows the socket's buffer without bound (and while
 * disconnected, nats.js's own). This reaches into nats.js 2.x
 * (protocol.outbound, protocol.transport.socket); what it does not find
 * counts as 0 (nothing to wait for: as before).
 */
export function outbound(nc: NatsConnection): Outbound {
  let found = outbounds.get(nc);
  if (found !== undefined) return found;
  const protocol = (nc as unknown as ClientInternals).protocol;
  const watch = watchConnection(nc);
  let waiting: Promise<void> | undefined;
  /** Ends the pending wait, if any. */
  let wake: (() => void) | undefined;
  // Once per connection, not per wait: a wait adds nothing to what outlives it.
  watch.onReconnect.add(() => wake?.());
  nc.closed().then(
    () => wake?.(),
    () => wake?.(),
  );
  found = {
    pending() {
      const socket = protocol?.transport?.socket;
      return (protocol?.outbound?.size?.() ?? 0) + (socket?.destroyed === false ? (socket.writableLength ?? 0) : 0);
    },
    drained() {
      if (nc.isClosed()) return Promise.resolve();
      waiting ??= new Promise<void>((resolve) => {
        const socket = protocol?.transport?.socket;
        const done = (): void => {
          clearTimeout(timer);
          socket?.off?.('drain', done);
          socket?.off?.('close', done);
          wake = undefined;
          waiting = undefined;
          resolve();
        };
        wake = done;
        const timer = setTimeout(done, DRAIN_RECHECK_MS);
        if (socket?.destroyed === false) {
          socket.once?.('drain', done);
          socket.once?.('close', done);
        }
      });
      return waiting;
    },
  };
  outbounds.set(nc, found);
  return found;
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
