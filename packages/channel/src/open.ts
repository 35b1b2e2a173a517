/**
 * Making the two ends of a channel in a fresh region (the creator: a
 * server's accept, channelPair) and joining one (the opener: connect,
 * openChannel). Shared by every way a channel is set up.
 */
import { asyncWaitKind, ErrorCodes, ShmringError, type Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { Channel } from './channel.js';
import { forgetDecodeView } from './clone.js';
import { checkCodecMatch, type ChannelCodec } from './codec.js';
import { claimOpenerEnd, publishChannelHeader, readChannelHeader, writeChannelHeader } from './layout.js';
import type { Link } from './link.js';

/** Unmaps a channel's region once its Channel is done with the rings. */
function regionRelease(region: Region): () => void {
  return () => {
    forgetDecodeView(region.buffer);
    region.close();
  };
}

/**
 * A pending read of this region's rings costs no thread: V8's waitAsync on
 * a SharedArrayBuffer, the io_uring or futex_waitv waits of the addon (not
 * a thread per wait, nor koffi's pool threads). Its channel may then keep
 * its reader parked, unref'd, between uses.
 */
function idleReadsOf(region: Region): boolean {
  if (region.buffer instanceof SharedArrayBuffer) return true;
  const kind = asyncWaitKind();
  return kind === 'io_uring' || kind === 'futex_waitv';
}

/** Lays out a channel in `region` (sized with channelRegionSize) and publishes it. */
export function layOutChannel(region: Region, codec: ChannelCodec, capacity: number): void {
  const g = writeChannelHeader(region.buffer, codec.id, capacity);
  SpscRing.create(region, { capacity, offset: g.aOffset });
  SpscRing.create(region, { capacity, offset: g.bOffset });
  publishChannelHeader(region.buffer);
}

/**
 * Ends both rings of the channel laid out in `region` (their CLOSED
 * flags), for a server that closes while a client is still opening its
 * end: that end then ends as after close() (ERR_SHMRING_CLOSED), not as
 * after a crash (ERR_SHMRING_PEER_DEAD), once the link goes.
 */
export function closeChannelRings(region: Region, what: string): void {
  const g = readChannelHeader(region.buffer, what);
  SpscRing.attach(region, { offset: g.aOffset }).close();
  SpscRing.attach(region, { offset: g.bOffset }).close();
}

/** The creator's end: it writes ring A and reads ring B. */
export function creatorEnd(region: Region, codec: ChannelCodec, link: Link, what: string, poll: number | undefined): Channel {
  const g = readChannelHeader(region.buffer, what);
  return new Channel({
    release: regionRelease(region),
    codec,
    link,
    what,
    poll,
    idleReads: idleReadsOf(region),
    out: SpscRing.attach(region, { offset: g.aOffset }),
    in: SpscRing.attach(region, { offset: g.bOffset }),
  });
}

/**
 * The opener's end: it reads ring A and writes ring B. On a codec mismatch
 * both rings are closed (the creator's end then ends cleanly) and the error
 * thrown; the caller closes the link and the region.
 */
export function openerEnd(
  region: Region,
  codec: ChannelCodec,
  link: Link,
  what: string,
  source: string,
  poll: number | undefined,
): Channel {
  const buffer = region.buffer;
  const g = readChannelHeader(buffer, source);
  // Claimed before the codec is checked: an opening that fails ends the pair, and a second try must not
  // get a channel on its closed rings.
  if (!claimOpenerEnd(buffer)) {
    throw new ShmringError(
      ErrorCodes.BUSY,
      `${source} was opened already (an opening that failed, on a codec mismatch, ends the pair too); ` +
        'each handle opens one channel end (make a channelPair per worker)',
    );
  }
  const inRing = SpscRing.attach(region, { offset: g.aOffset });
  const outRing = SpscRing.attach(region, { offset: g.bOffset });
  try {
    checkCodecMatch(codec, g.codec, source);
  } catch (err) {
    inRing.close();
    outRing.close();
    throw err;
  }
  return new Channel({ release: regionRelease(region), codec, link, what, poll, idleReads: idleReadsOf(region), in: inRing, out: outRing });
}
