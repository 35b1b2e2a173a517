/**
 * holdReads() / releaseReads() / rewindReads(): a consumer that forwards
 * records (the NATS bridge) gives their room back only once the next hop
 * has them, so a new consumer object (after a crash) takes every record
 * that was not released, and the producer sees the ring full meanwhile.
 */
import { strict as assert } from 'node:assert';
import { ErrorCodes, Region } from '@shmring/core';
import { SpscRing } from '../src/index.js';

const CAPACITY = 256;

function ring(): { region: Region; producer: SpscRing; consumer: () => SpscRing } {
  const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: CAPACITY }) });
  const producer = SpscRing.create(region, { capacity: CAPACITY });
  return { region, producer, consumer: () => SpscRing.attach(region) };
}

function takeAll(q: SpscRing): number[] {
  const got: number[] = [];
  q.drain((data, offset) => got.push(data[offset]!));
  return got;
}

describe('SpscRing holdReads', function () {
  it('records taken while holding are taken again by a new consumer until they are released', function () {
    const { producer, consumer } = ring();
    for (let i = 0; i < 5; i++) assert.ok(producer.tryWrite(Uint8Array.of(i), 0));
    const first = consumer();
    first.holdReads();
    const positions: number[] = [];
    first.drain(() => positions.push(first.readPosition));
    assert.equal(positions.length, 5);
    first.releaseReads(positions[1]!); // records 0 and 1 are safe elsewhere
    first.detach(); // as a crash would: the role is free, 2 to 4 were not released
    assert.deepEqual(takeAll(consumer()), [2, 3, 4]);
  });

  it('held records keep their room: the producer finds the ring full until releaseReads', function () {
    const { producer, consumer } = ring();
    const bytes = new Uint8Array(56); // 64-byte records: 4 fill the ring
    let written = 0;
    while (producer.tryWrite(bytes, 0)) written++;
    const c = consumer();
    c.holdReads();
    assert.equal(
      c.drain(() => {}),
      written,
    );
    assert.equal(producer.tryWrite(bytes, 0), false, 'nothing was released');
    c.releaseReads(c.readPosition);
    assert.equal(producer.tryWrite(bytes, 0), true);
  });

  it('rewindReads takes again what was taken and not released, in order', function () {
    const { producer, consumer } = ring();
    for (let i = 0; i < 4; i++) producer.tryWrite(Uint8Array.of(i), 0);
    const c = consumer();
    c.holdReads();
    let released = 0;
    c.drain(() => {
      if (++released === 1) c.releaseReads(c.readPosition);
    });
    c.rewindReads();
    assert.deepEqual(takeAll(c), [1, 2, 3]);
  });

  it('releaseReads of a position beyond what was taken is a RangeError', function () {
    const { producer, consumer } = ring();
    producer.tryWrite(Uint8Array.of(1), 0);
    const c = consumer();
    c.holdReads();
    assert.throws(() => c.releaseReads(c.readPosition + 8), { name: 'RangeError', code: ErrorCodes.INVALID_ARGUMENT });
  });
});
