/**
 * The bridge's ring ends, by name (`shm:<name>`). Today a POSIX-named
 * SpscRing; a MpscRing (whose header says its kind) plugs in at
 * attachRing() with the same two roles: RingReader (the bridge is the
 * ring's consumer) and RingWriter (the bridge is one of its producers).
 */
import * as fs from 'node:fs';
import { ErrorCodes, Region, type ShmringError, ShmringTypeError } from '@shmring/core';
import { SpscRing, type DrainHandler } from '@shmring/ringbuf';
import { isNatsEndpoint, parseNatsAddress, type NatsAddress } from '../nats/address.js';

export type Endpoint = { kind: 'shm'; name: string; text: string } | { kind: 'nats'; address: NatsAddress; text: string };

export function parseEndpoint(endpoint: unknown, verb: string): Endpoint {
  if (isNatsEndpoint(endpoint)) {
    const address = parseNatsAddress(endpoint, verb, true);
    return { kind: 'nats', address, text: address.text };
  }
  if (typeof endpoint === 'string' && endpoint.startsWith('shm:')) {
    const name = endpoint.slice(4);
    if (name.length === 0 || name.includes('/') || name.includes('\0') || name.length > 200) {
      throw new ShmringTypeError(
        ErrorCodes.INVALID_ENDPOINT,
        `${verb}: '${endpoint}' is not a valid endpoint: shm:<name> takes a POSIX shared memory name without '/'`,
      );
    }
    return { kind: 'shm', name, text: endpoint };
  }
  throw new ShmringTypeError(
    ErrorCodes.INVALID_ENDPOINT,
    `${verb}: '${String(endpoint)}' is not a valid endpoint: expected shm:<name> or nats://host:port/<subject>[?jetstream=<stream>]`,
  );
}

/** The bridge as the ring's consumer. */
export interface RingReader {
  readonly name: string;
  /** A stable identity of this ring object (a ring made anew under the same name gets another). */
  readonly identity: string;
  /** Takes up to `limit` records without waiting. */
  drain(handler: DrainHandler, limit: number): number;
  /** Waits for the next record and takes it. */
  read(signal: AbortSignal): Promise<Uint8Array>;
  /** Looks for the next record between event-loop turns for the poll window, and takes it; null if none came (or no window). */
  poll(signal: AbortSignal): Promise<Uint8Array | null>;
  /** Parks the thread until the next record and takes it, or returns null after `timeoutMs` (the event loop waits meanwhile). */
  readSync(timeoutMs: number): Uint8Array | null;
  readonly lastType: number;
  /** The end of the last record taken (names it for deduplication; releases up to it). */
  readonly readPosition: number;
  /** Keeps taken records in the ring until release(). */
  hold(): void;
  release(position: number): void;
  rewind(): void;
  /** Unmaps the ring without closing it for its producers (a bridge restarted later goes on). */
  detach(): void;
}

/** The bridge as a producer of the ring. */
export interface RingWriter {
  readonly name: string;
  readonly maxMessageLength: number;
  tryWrite(bytes: Uint8Array, type: number): boolean;
  write(bytes: Uint8Array, type: number, signal: AbortSignal): Promise<void>;
  /** The end of the last record written (is a record this position names in the ring already?). */
  readonly writePosition: number;
  detach(): void;
}

function openRegion(name: string): Region {
  return Region.open({ backing: 'posix', name });
}

/** Where MpscRing goes once it exists: look at the header's kind and attach with the matching class. */
function attachRing(region: Region): SpscRing {
  return SpscRing.attach(region);
}

/** A ring never waits on its peer's pid in the bridge: producers and consumers come and go. */
const NO_PEER_CHECK = Infinity;

/** `poll`: the poll window (µs) of the ring waits, or undefined for the ring's default (poll(): none). */
export function openReader(name: string, poll?: number): RingReader {
  const region = openRegion(name);
  try {
    const ring = attachRing(region);
    const stat = fs.fstatSync(region.fd);
    return {
      name,
      identity: `${name}.${stat.ino}`,
      drain: (handler, limit) => ring.drain(handler, limit),
      read: (signal) =>
        ring.read(poll === undefined ? { signal, peerTimeoutMs: NO_PEER_CHECK } : { signal, peerTimeoutMs: NO_PEER_CHECK, poll }),
      poll: async (signal) => {
        if (!poll) return null;
        try {
          // The window is the whole wait: read() times out where it would park.
          return await ring.read({ signal, peerTimeoutMs: NO_PEER_CHECK, poll, timeoutMs: poll / 1000 });
        } catch (err) {
          if ((err as ShmringError).code === ErrorCodes.TIMEOUT) return null;
          throw err;
        }
      },
      readSync: (timeoutMs) => {
        try {
          // No spin: the thread parks at once (a dedicated bridge polls with poll() first, if asked to).
          return ring.readSync({ timeoutMs, spin: 0, peerTimeoutMs: NO_PEER_CHECK });
        } catch (err) {
          if ((err as ShmringError).code === ErrorCodes.TIMEOUT) return null;
          throw err;
        }
      },
      get lastType() {
        return ring.lastType;
      },
      get readPosition() {
        return ring.readPosition;
      },
      hold: () => ring.holdReads(),
      release: (position) => ring.releaseReads(position),
      rewind: () => ring.rewindReads(),
      detach: () => region.close(),
    };
  } catch (err) {
    region.close();
    throw err;
  }
}

export function openWriter(name: string, poll?: number): RingWriter {
  const region = openRegion(name);
  try {
    const ring = attachRing(region);
    return {
      name,
      maxMessageLength: ring.maxMessageLength,
      tryWrite: (bytes, type) => ring.tryWrite(bytes, type),
      write: (bytes, type, signal) =>
        ring.write(
          bytes,
          poll === undefined ? { type, signal, peerTimeoutMs: NO_PEER_CHECK } : { type, signal, peerTimeoutMs: NO_PEER_CHECK, poll },
        ),
      get writePosition() {
        return ring.writePosition;
      },
      detach: () => region.close(),
    };
  } catch (err) {
    region.close();
    throw err;
  }
}
