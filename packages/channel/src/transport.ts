/**
 * What a Channel needs of the records it exchanges with its peer: the
 * consumer verbs of its inbound SpscRing (RecordSource) and the producer
 * verbs of its outbound one (RecordSink). An SpscRing is both, structurally;
 * the NATS transport (nats/transport.ts) is the other implementation, so one
 * Channel class carries the frames, requests, timeouts, cancellations and
 * remote errors of both.
 */
import type { DrainHandler } from '@shmring/ringbuf';

export interface RecordReadOptions {
  signal: AbortSignal | undefined;
  peerTimeoutMs: number;
  poll: number | undefined;
  /** Microseconds of trying on the spot before parking (undefined: the ring's default). */
  spin?: number;
  /** false: the pending read does not keep the event loop alive. */
  ref?: boolean;
}

export interface RecordWriteOptions {
  type: number;
  signal: AbortSignal;
  peerTimeoutMs: number;
  poll: number | undefined;
}

export interface RecordSource {
  /** Hands each waiting record to `handler`, up to `limit`; never waits. */
  drain(handler: DrainHandler, limit?: number): number;
  /** Resolves once a record can be taken (drain takes it); rejects ERR_SHMRING_CLOSED once the peer closed and all was taken. */
  waitReadable(options: RecordReadOptions): Promise<void>;
  /** The next record, copied out (its type goes to `lastType`); rejects as waitReadable. */
  read(options: RecordReadOptions): Promise<Uint8Array>;
  readonly lastType: number;
  /** The peer closed its end cleanly (what it sent before stays readable). */
  readonly closed: boolean;
  close(): void;
}

export interface RecordSink {
  /** Writes one record now, or returns false when there is no room. */
  tryWrite(bytes: Uint8Array, type: number): boolean;
  /** Writes one record, waiting for room. */
  write(bytes: Uint8Array, options: RecordWriteOptions): Promise<void>;
  /**
   * After a write that took the record (tryWrite true): a promise the
   * writer's caller waits for before going on, or undefined (go on now). A
   * transport whose writes never wait (NATS) gives the event loop a turn
   * this way now and then; a ring, whose full state is the back-pressure,
   * leaves it out.
   */
  paced?(): Promise<void> | undefined;
  /** Holds records back until uncork() (a batch costs the peer one wake-up). */
  cork(): void;
  uncork(): void;
  /** Largest record payload; larger values are split. */
  readonly maxMessageLength: number;
  /**
   * Zero-copy writes (an SpscRing's; a transport without them leaves them
   * out): claim() room in `data` (-1 when full), write the record there,
   * then commit() it with the length written, or abort() it.
   */
  readonly data?: Uint8Array;
  claim?(length: number): number;
  commit?(offset: number, type: number, length: number): void;
  abort?(offset: number): void;
  /** Tells the peer this end closed. */
  close(): void;
}
