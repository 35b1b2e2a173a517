/**
 * The nats client, loaded on first use (shared-memory users never load it),
 * and connections opened with errors that name the server.
 */
import { ErrorCodes, ShmringError } from '@shmring/core';
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
  try {
    return await nats.connect(config);
  } catch (err) {
    throw new ShmringError(
      ErrorCodes.UNREACHABLE,
      `${verb} ${address.text}: cannot reach the NATS server at ${address.server} (${(err as Error).message}); is nats-server running there?`,
      { cause: err },
    );
  }
}

/** Flushes what was published (for at most `timeoutMs`: never hangs on a lost server), then closes. */
export async function closeNats(nc: NatsConnection, timeoutMs = 1000): Promise<void> {
  if (nc.isClosed()) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
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
  }
  await nc.close().catch(() => {});
}
