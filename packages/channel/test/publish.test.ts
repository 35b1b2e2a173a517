/**
 * When what one side writes becomes visible to the other: the records a
 * turn writes are held back (one publication, at most one wake-up, for a
 * burst), but never past the end of the turn's microtasks, and never more
 * than CORK_RECORDS (16) at a time, so that the other side starts on a long burst while
 * this one still writes it.
 */
import { strict as assert } from 'node:assert';
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { CORK_RECORDS } from '../src/channel.js';
import { channelPair } from '../src/index.js';
import { readChannelHeader } from '../src/layout.js';

/** Sends in the burst: two publications within the turn, and some left for its end. */
const COUNT = 2 * CORK_RECORDS + 8;

/** Bytes the ring from `handle`'s creator end to its opener holds, published (the observer only reads positions). */
function publishedBytes(buffer: SharedArrayBuffer): () => number {
  const { aOffset } = readChannelHeader(buffer, 'the test pair');
  const ring = SpscRing.attach(Region.fromSharedArrayBuffer(buffer), { offset: aOffset });
  return () => ring.size;
}

describe('publication of what a turn writes', () => {
  it('publishes a burst every CORK_RECORDS records within the turn, and the rest once its microtasks ran', async () => {
    const [here, handle] = channelPair({ capacity: 1 << 16, codec: 'bytes' });
    try {
      const published = publishedBytes(handle.buffer);
      const sends: Promise<void>[] = [];
      const within: number[] = [];
      for (let i = 0; i < COUNT; i++) {
        sends.push(here.send(new Uint8Array(8).fill(i)));
        within.push(published());
      }
      await Promise.all(sends);
      await null;
      const all = published();
      const record = all / COUNT;
      assert.ok(Number.isInteger(record) && record >= 8, `${COUNT} records of the same size take ${all} bytes`);
      // Each CORK_RECORDS-th send publishes itself and what came before it; the rest wait for the turn's end.
      assert.deepEqual(
        within.map((bytes) => bytes / record),
        Array.from({ length: COUNT }, (_, i) => Math.floor((i + 1) / CORK_RECORDS) * CORK_RECORDS),
      );
    } finally {
      here.close();
    }
  });

  it('publishes a lone record at the end of its turn', async () => {
    const [here, handle] = channelPair({ capacity: 1 << 16, codec: 'bytes' });
    try {
      const published = publishedBytes(handle.buffer);
      const sent = here.send(new Uint8Array(8));
      assert.equal(published(), 0, 'held back during the turn');
      await sent;
      await null;
      assert.ok(published() > 0, 'published once the microtasks ran');
    } finally {
      here.close();
    }
  });
});
