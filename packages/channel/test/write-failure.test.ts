/**
 * A write that fails on an open channel (not because the other side
 * closed: a ring found corrupt, the koffi backend out of waits) ends the
 * channel with that failure. Going on would break the stream: the other
 * side may hold the first parts of a split value, or wait for a reply that
 * was dropped. Two channel ends over SharedArrayBuffer rings, one writing
 * through a sink whose next waiting write fails once.
 */
import { strict as assert } from 'node:assert';
import { MessageChannel } from 'node:worker_threads';
import { ErrorCodes, Region, ShmringError } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { Channel } from '../src/channel.js';
import { resolveCodec } from '../src/codec.js';
import * as F from '../src/frames.js';
import { portLink } from '../src/link.js';
import type { RecordSink, RecordWriteOptions } from '../src/transport.js';
import { rejectsWith, settledWithin } from './helpers.js';

const CAPACITY = 4096;

/** An SpscRing producer whose writes that must wait fail once `failNext` is set (and never reach the ring). */
function failingSink(ring: SpscRing): RecordSink & { failNext: boolean; throwNext: boolean } {
  return {
    failNext: false,
    throwNext: false,
    tryWrite(bytes: Uint8Array, type: number): boolean {
      if (this.throwNext) {
        this.throwNext = false;
        throw new ShmringError(ErrorCodes.CORRUPT, 'a test ring reported corruption');
      }
      return this.failNext ? false : ring.tryWrite(bytes, type); // full, as far as the writer can tell
    },
    write(bytes: Uint8Array, options: RecordWriteOptions): Promise<void> {
      if (this.failNext) {
        this.failNext = false;
        return Promise.reject(new ShmringError(ErrorCodes.CORRUPT, 'a test ring reported corruption'));
      }
      return ring.write(bytes, options);
    },
    cork: () => ring.cork(),
    uncork: () => ring.uncork(),
    get maxMessageLength() {
      return ring.maxMessageLength;
    },
    close: () => ring.close(),
  };
}

/** Two channel ends over SharedArrayBuffer rings, `a` writing through a failingSink. */
function ends(): { a: Channel; b: Channel; sink: ReturnType<typeof failingSink>; ab: SpscRing; dispose(): void } {
  const regions = [0, 1].map(() => Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: CAPACITY }) }));
  const [ab, ba] = regions.map((r) => SpscRing.create(r, { capacity: CAPACITY }));
  const { port1, port2 } = new MessageChannel();
  const codec = resolveCodec(undefined);
  const sink = failingSink(ab!);
  const common = { codec, poll: undefined, release: () => undefined };
  const a = new Channel({ ...common, what: 'end a', link: portLink(port1), out: sink, in: SpscRing.attach(regions[1]!) });
  const b = new Channel({ ...common, what: 'end b', link: portLink(port2), out: ba!, in: SpscRing.attach(regions[0]!) });
  return {
    a,
    b,
    sink,
    ab: ab!,
    dispose() {
      a.close();
      b.close();
      port1.close();
      port2.close();
    },
  };
}

describe('a channel whose write fails', function () {
  it('ends with the failure when a write on the spot throws: a reply lost there leaves no caller waiting', async function () {
    const { a, b, sink, dispose } = ends();
    try {
      a.handle((v) => v);
      assert.equal(await b.request('before'), 'before');
      sink.throwNext = true; // the reply's write
      await rejectsWith(b.request('lost'), ErrorCodes.CLOSED);
      await settledWithin(a.closed, 2000);
      await rejectsWith(a.send('after'), ErrorCodes.CORRUPT);
    } finally {
      dispose();
    }
  });

  it('ends with the failure, mid split value: the other side sees the channel close, not a broken stream', async function () {
    const { a, b, sink, ab, dispose } = ends();
    try {
      b.handle((v) => v);
      assert.equal(await a.request('before'), 'before');
      // A split value: its head goes out, then the next part's write fails.
      const big = Buffer.alloc(3 * ab.maxMessageLength, 7);
      const sending = a.send(big);
      sink.failNext = true;
      await rejectsWith(sending, ErrorCodes.CORRUPT);
      assert.deepEqual(await settledWithin(a.closed, 2000), { status: 'fulfilled', value: undefined }, 'end a stayed open');
      await rejectsWith(a.send('after'), ErrorCodes.CORRUPT);
      // The other side ends as after a close: no half value, no complaint about the stream.
      await rejectsWith(b.receive(), ErrorCodes.CLOSED);
      await settledWithin(b.closed, 2000);
    } finally {
      dispose();
    }
  });
});

describe('a channel fed a split value no channel end writes', function () {
  it('a length prefix past 2^63 (its top byte 0x80 or more) ends the channel with ERR_SHMRING_CORRUPT, not a RangeError', async function () {
    const { b, ab, dispose } = ends();
    try {
      const prefix = new Uint8Array(F.SPLIT_PREFIX);
      prefix[0] = 16;
      prefix[7] = 0x80; // read as a signed high word, the total came out negative and reached Buffer.allocUnsafe
      assert.ok(ab.tryWrite(prefix, F.frameType(F.SEND, 0, F.SPLIT)));
      await rejectsWith(b.receive(), ErrorCodes.CORRUPT);
    } finally {
      dispose();
    }
  });
});
