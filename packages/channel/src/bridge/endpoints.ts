/**
 * The bridge's ring ends, by name (`shm:<name>`): a POSIX-named SpscRing or
 * MpscRing (its header says which: attachRing), in two roles: RingReader
 * (the bridge is the ring's consumer) and RingWriter (the bridge is one of
 * its producers).
 *
 * An MpscRing has no holdReads and no producer position of one producer:
 * as a reader its records are gone once taken (`holds` false: the bridge
 * copies them out, and core NATS is at most once anyway), and as a writer
 * it cannot tell after a crash whether its last write happened. So the
 * JetStream bridge, whose exactly-once rests on both, takes an SpscRing
 * only (the bridge refuses the MpscRing with ERR_SHMRING_WRONG_KIND).
 */
import * as fs from 'node:fs';
import { ErrorCodes, Region, type ShmringError, ShmringTypeError } from '@shmring/core';
import { describeRing, MpscRing, SpscRing, type DrainHandler } from '@shmring/ringbuf';
import { isNatsEndpoint, parseNatsAddress, redactEndpoint, type NatsAddress } from '../nats/address.js';

export type Endpoint = { kind: 'shm'; name: string; text: string } | { kind: 'nats'; address: NatsAddress; text: string };

export function parseEndpoint(endpoint: unknown, verb: string): Endpoint {
  if (isNatsEndpoint(endpoint)) {
    const address = parseNatsAddress(endpoint, verb, true);
    return { kind: 'nats', address, text: address.text };
  }
  // The scheme in any case, like NATS:// (the name after it is kept as it is).
  if (typeof endpoint === 'string' && endpoint.slice(0, 4).toLowerCase() === 'shm:') {
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
    `${verb}: '${redactEndpoint(String(endpoint))}' is not a valid endpoint: expected shm:<name> or nats://host:port/<subject>[?jetstream=<stream>[&consumer=<name>]]`,
  );
}

export type RingKind = 'SpscRing' | 'MpscRing';

/** The bridge as the ring's consumer. */
export interface RingReader {
  readonly name: string;
  readonly kind: RingKind;
  /**
   * hold/release/rewind keep taken records in the ring (SpscRing), and
   * drain's views stay valid until released. false (MpscRing): a record
   * taken is gone, and drain's view is valid only during its handler.
   */
  readonly holds: boolean;
  /**
   * A stable identity of this ring object: its name, its file's inode and
   * its creator's CREATION_ID, so a ring made anew under the same name, or
   * laid out again in the same file, gets another.
   */
  readonly identity: string;
  /** Bytes of the largest record the ring takes. */
  readonly maxMessageLength: number;
  /** Takes up to `limit` records without waiting. */
  drain(handler: DrainHandler, limit: number): number;
  /** Waits for the next record and takes it. */
  read(signal: AbortSignal): Promise<Uint8Array>;
  /** Looks for the next record between event-loop turns for the poll window, and takes it; null if none came (or no window). */
  poll(signal: AbortSignal): Promise<Uint8Array | null>;
  /** Parks the thread until the next record and takes it, or returns null after `timeoutMs` (the event loop waits meanwhile). */
  readSync(timeoutMs: number): Uint8Array | null;
  readonly lastType: number;
  /** The end of the last record taken (releases up to it). */
  readonly readPosition: number;
  /** readPosition counted since the ring was created, past 2^32 (SpscRing.readCount): names the record for deduplication. */
  readonly readCount: number;
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
  readonly kind: RingKind;
  readonly maxMessageLength: number;
  tryWrite(bytes: Uint8Array, type: number): boolean;
  write(bytes: Uint8Array, type: number, signal: AbortSignal): Promise<void>;
  /** The end of the last record written (is a record this position names in the ring already?); SpscRing only. */
  readonly writePosition: number;
  detach(): void;
}

function openRegion(name: string): Region {
  return Region.open({ backing: 'posix', name });
}

/** Attaches with the class the ring's header names (SpscRing first: the one a bridge mostly serves). */
function attachRing(region: Region): SpscRing | MpscRing {
  try {
    return SpscRing.attach(region);
  } catch (err) {
    if ((err as ShmringError).code !== ErrorCodes.WRONG_KIND) throw err;
    try {
      return MpscRing.attach(region);
    } catch (mpscErr) {
      if ((mpscErr as ShmringError).code !== ErrorCodes.WRONG_KIND) throw mpscErr;
      // Neither: say what the bridge takes (SpscRing's error names what the region holds).
      throw new ShmringTypeError(ErrorCodes.WRONG_KIND, `${(err as Error).message}; a bridge's shm:<name> is a SpscRing or a MpscRing`);
    }
  }
}

/** A ring never waits on its peer's pid in the bridge: producers and consumers come and go. */
const NO_PEER_CHECK = Infinity;
/**
 * An MpscRing's reads do look at its producers, every quarter of this: a
 * record claimed by a producer that died before committing it blocks the
 * records behind it until the consumer takes it back, which only a wait
 * with a finite peerTimeoutMs does. Its PEER_DEAD (no producer left) only
 * means that none is attached now: the bridge waits for the next.
 */
const MPSC_STUCK_MS = 1000;

function noProducerNow(err: unknown): boolean {
  return (err as ShmringError).code === ErrorCodes.PEER_DEAD;
}

/**
 * The ring's roles are taken as the bridge opens it, not at its first
 * record: a second bridge on a ring (or any other consumer, or SpscRing
 * producer) is ERR_SHMRING_BUSY before this one connects to NATS or says
 * it runs, not once a record comes. A drain of no record takes the
 * consumer role (its position: the previous consumer's last release).
 */
function takeConsumer(ring: SpscRing | MpscRing): void {
  ring.drain(() => {}, 0);
}

/**
 * A claim of no bytes, given back, takes an SpscRing's producer role (and
 * its position, walked on past what a producer that died published), and
 * writes nothing; -1 (the ring is full) has taken it too.
 */
function takeProducer(ring: SpscRing): void {
  const offset = ring.claim(0);
  if (offset >= 0) ring.abort(offset);
}

/** `poll`: the poll window (µs) of the ring waits, or undefined for the ring's default (poll(): none). */
export function openReader(name: string, poll?: number): RingReader {
  const region = openRegion(name);
  try {
    const ring = attachRing(region);
    takeConsumer(ring);
    const stat = fs.fstatSync(region.fd);
    // The creator's random CREATION_ID (as inspect reads it): a ring laid out again in the same file starts its
    // positions and counts at 0 again, and must not reuse the old one's message ids.
    const identity = `${name}.${stat.ino}.${describeRing(region, name)?.creationId ?? 0}`;
    if (ring instanceof MpscRing) return mpscReader(name, identity, region, ring, poll);
    return {
      name,
      kind: 'SpscRing',
      holds: true,
      identity,
      maxMessageLength: ring.maxMessageLength,
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
      get readCount() {
        return ring.readCount;
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
    if (ring instanceof MpscRing) return mpscWriter(name, region, ring, poll); // any number of producers: nothing to take
    takeProducer(ring);
    return {
      ...writes(name, ring, poll),
      kind: 'SpscRing',
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

function mpscReader(name: string, identity: string, region: Region, ring: MpscRing, poll: number | undefined): RingReader {
  const waitOptions = (signal: AbortSignal) =>
    poll === undefined ? { signal, peerTimeoutMs: MPSC_STUCK_MS } : { signal, peerTimeoutMs: MPSC_STUCK_MS, poll };
  const unsupported = (verb: string): never => {
    throw new ShmringTypeError(ErrorCodes.WRONG_KIND, `bridge: shm:${name} is a MpscRing, which has no ${verb}`);
  };
  return {
    name,
    kind: 'MpscRing',
    holds: false,
    identity,
    maxMessageLength: ring.maxMessageLength,
    drain: (handler, limit) => ring.drain(handler, limit),
    read: async (signal) => {
      for (;;) {
        try {
          return await ring.read(waitOptions(signal));
        } catch (err) {
          if (!noProducerNow(err) || signal.aborted) throw err;
        }
      }
    },
    poll: async (signal) => {
      if (!poll) return null;
      try {
        return await ring.read({ signal, peerTimeoutMs: MPSC_STUCK_MS, poll, timeoutMs: poll / 1000 });
      } catch (err) {
        if ((err as ShmringError).code === ErrorCodes.TIMEOUT || noProducerNow(err)) return null;
        throw err;
      }
    },
    readSync: (timeoutMs) => {
      try {
        return ring.readSync({ timeoutMs, spin: 0, peerTimeoutMs: MPSC_STUCK_MS });
      } catch (err) {
        if ((err as ShmringError).code === ErrorCodes.TIMEOUT || noProducerNow(err)) return null;
        throw err;
      }
    },
    get lastType() {
      return ring.lastType;
    },
    // Nothing names a record of an MpscRing for release: the bridge releases nothing (holds is false).
    readPosition: 0,
    readCount: 0,
    hold: () => unsupported('holdReads'),
    release: () => unsupported('releaseReads'),
    rewind: () => unsupported('rewindReads'),
    detach: () => {
      ring.detach();
      region.close();
    },
  };
}

/** The writing verbs a bridge uses, the same for either kind of ring. */
function writes(
  name: string,
  ring: SpscRing | MpscRing,
  poll: number | undefined,
): Pick<RingWriter, 'name' | 'maxMessageLength' | 'tryWrite' | 'write'> {
  return {
    name,
    maxMessageLength: ring.maxMessageLength,
    // A ring its consumer closed takes nothing more: an SpscRing's tryWrite does not look at the flag, and what
    // it wrote there nobody would read (a JetStream bridge would acknowledge it, lost). false: write() then
    // throws the close (ERR_SHMRING_CLOSED), which ends the bridge.
    tryWrite: (bytes, type) => !ring.closed && ring.tryWrite(bytes, type),
    write: (bytes, type, signal) =>
      ring.write(
        bytes,
        poll === undefined ? { type, signal, peerTimeoutMs: NO_PEER_CHECK } : { type, signal, peerTimeoutMs: NO_PEER_CHECK, poll },
      ),
  };
}

function mpscWriter(name: string, region: Region, ring: MpscRing, poll: number | undefined): RingWriter {
  return {
    ...writes(name, ring, poll),
    kind: 'MpscRing',
    get writePosition(): number {
      throw new ShmringTypeError(ErrorCodes.WRONG_KIND, `bridge: shm:${name} is a MpscRing: no position names one producer's last write`);
    },
    detach: () => {
      ring.detach();
      region.close();
    },
  };
}
