/**
 * Channels between threads: a SharedArrayBuffer holds the rings, and a
 * MessagePort pair is the link (a worker's ports close when it ends, so a
 * terminated worker is a dead peer at once).
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { ErrorCodes, Region, ShmringTypeError, type ShmringError } from '@shmring/core';
import type { Channel } from './channel.js';
import { resolveCodec, type CodecOption } from './codec.js';
import { channelRegionSize } from './layout.js';
import { portLink } from './link.js';
import { checkCapacity, checkOptions, checkPoll, OptionNames } from './options.js';
import { creatorEnd, layOutChannel, openerEnd } from './open.js';

const HANDLE_KIND = 'shmring-channel';

/**
 * What openChannel needs: post it to the worker (workerData or postMessage)
 * with `handle.port` in the transfer list.
 */
export interface ChannelHandle {
  readonly kind: typeof HANDLE_KIND;
  readonly buffer: SharedArrayBuffer;
  readonly port: MessagePort;
  /** What errors call the channel, at both ends: `worker channel <n> of process <pid>`. */
  readonly name?: string;
}

/** channelPair()s made by this thread, for their names. */
let pairs = 0;

export interface PairOptions {
  /** Bytes of each ring's data area (a power of two, 64 B .. 1 GiB). Default 1 MiB. */
  capacity?: number;
  /** 'structured-clone' (default), 'json', 'bytes' or { encode, decode }; openChannel must be given the same. */
  codec?: CodecOption;
  /**
   * Microseconds this end keeps looking for the other side's next record
   * between event-loop turns (other callbacks run meanwhile) before it
   * parks: lower latency after short gaps, for a CPU kept busy meanwhile.
   * Default: the rings' adaptive polling (50 µs after a message, none once idle).
   */
  poll?: number;
}

export interface OpenOptions {
  codec?: CodecOption;
  /**
   * Microseconds this end keeps looking for the other side's next record
   * between event-loop turns (other callbacks run meanwhile) before it
   * parks: lower latency after short gaps, for a CPU kept busy meanwhile.
   * Default: the rings' adaptive polling (50 µs after a message, none once idle).
   */
  poll?: number;
}

/** A channel for a worker: this thread's end, and the handle the worker opens with openChannel. */
export function channelPair(options: PairOptions = {}): [Channel, ChannelHandle] {
  checkOptions(options, OptionNames.channelPair, 'channelPair');
  const codec = resolveCodec(options?.codec);
  const capacity = checkCapacity(options?.capacity, 'channelPair');
  const poll = checkPoll(options?.poll, 'channelPair');
  const region = Region.create({ backing: 'sab', size: channelRegionSize(capacity) });
  layOutChannel(region, codec, capacity);
  const { port1, port2 } = new MessageChannel();
  const name = `worker channel ${++pairs} of process ${process.pid}`;
  const here = creatorEnd(region, codec, portLink(port1), name, poll);
  return [here, { kind: HANDLE_KIND, buffer: region.buffer as SharedArrayBuffer, port: port2, name }];
}

/** Opens the other end of a channelPair, in the thread that received its handle. Once per handle. */
export function openChannel(handle: ChannelHandle, options: OpenOptions = {}): Channel {
  const h = handle as Partial<ChannelHandle> | null;
  if (
    h === null ||
    typeof h !== 'object' ||
    h.kind !== HANDLE_KIND ||
    !(h.buffer instanceof SharedArrayBuffer) ||
    typeof (h.port as MessagePort | undefined)?.postMessage !== 'function'
  ) {
    throw new ShmringTypeError(
      ErrorCodes.NOT_A_CHANNEL,
      'openChannel needs the handle channelPair() returned, posted to this thread with handle.port in the transfer list',
    );
  }
  checkOptions(options, OptionNames.openChannel, 'openChannel');
  const codec = resolveCodec(options?.codec);
  const poll = checkPoll(options?.poll, 'openChannel');
  const region = Region.fromSharedArrayBuffer(h.buffer);
  try {
    const name = typeof h.name === 'string' ? h.name : 'worker channel';
    return openerEnd(region, codec, portLink(h.port!), name, 'the channelPair handle', poll);
  } catch (err) {
    // The creator's end learns of the failure from its link (a codec mismatch
    // closed the rings: a clean end). A handle opened already keeps its port:
    // it belongs to the first opener.
    if ((err as ShmringError).code !== ErrorCodes.BUSY) h.port!.close();
    throw err;
  }
}
