/**
 * One owner per exclusive role where the region has no file to lock: a
 * SharedArrayBuffer or a System V segment, whose roles are claimed by a CAS
 * of the pid word. The word names a thread, not an object, so a second live
 * object of the same thread must be refused too (ERR_SHMRING_BUSY), for
 * SpscRing's and MpscRing's consumer, SpscRing's producer and Broadcast's
 * publisher; and a Broadcast.create over a live publisher of another
 * process is refused before it overwrites anything.
 */
import { strict as assert } from 'node:assert';
import { ErrorCodes, Region } from '@shmring/core';
import { Broadcast, MpscRing, SpscRing } from '../src/index.js';
import { LinePeer } from './helpers.js';

const CAPACITY = 1024;

function sabRegion(size: number): Region {
  return Region.fromSharedArrayBuffer(new SharedArrayBuffer(size));
}

function uniqueKey(): number {
  return (0x5d00_0000 | Math.floor(Math.random() * 0x00ff_ffff)) >>> 0;
}

describe('one owner per exclusive role without a file to lock', function () {
  this.timeout(60_000);

  it('gives a second SpscRing consumer or producer object of the same thread ERR_SHMRING_BUSY on a SharedArrayBuffer ring', () => {
    const region = sabRegion(SpscRing.regionSize({ capacity: CAPACITY }));
    const producer = SpscRing.create(region, { capacity: CAPACITY });
    for (let i = 0; i < 3; i++) assert.ok(producer.tryWrite(new Uint8Array([i])));
    const c1 = SpscRing.attach(region);
    assert.deepEqual([...c1.tryRead()!], [0]);
    const c2 = SpscRing.attach(region);
    assert.throws(() => c2.tryRead(), { code: ErrorCodes.BUSY }, 'a second consumer object of this thread');
    assert.throws(() => SpscRing.attach(region).tryWrite(new Uint8Array([9])), { code: ErrorCodes.BUSY }, 'a second producer object');
    assert.deepEqual([...c1.tryRead()!], [1], 'the first consumer goes on, nothing taken by the second');
    c1.detach();
    assert.deepEqual([...c2.tryRead()!], [2], 'the role is free once the first detached');
    assert.equal(c2.tryRead(), null);
  });

  it('gives a second MpscRing consumer object of the same thread ERR_SHMRING_BUSY on a SharedArrayBuffer ring', () => {
    const region = sabRegion(MpscRing.regionSize({ capacity: CAPACITY }));
    const producer = MpscRing.create(region, { capacity: CAPACITY });
    for (let i = 0; i < 3; i++) assert.ok(producer.tryWrite(new Uint8Array([i])));
    const c1 = MpscRing.attach(region);
    assert.deepEqual([...c1.tryRead()!], [0]);
    const c2 = MpscRing.attach(region);
    assert.throws(() => c2.tryRead(), { code: ErrorCodes.BUSY });
    assert.deepEqual([...c1.tryRead()!], [1]);
    c1.close();
    assert.deepEqual([...c2.tryRead()!], [2]);
  });

  for (const backing of ['sab', 'sysv'] as const) {
    it(`refuses a second live Broadcast publisher of the same thread over ${backing}, leaving the first one's Broadcast whole`, () => {
      const size = Broadcast.regionSize({ capacity: CAPACITY });
      const region = backing === 'sab' ? sabRegion(size) : Region.create({ backing, key: uniqueKey(), size });
      try {
        const first = Broadcast.create(region, { capacity: CAPACITY });
        const sub = Broadcast.subscribe(region);
        assert.ok(first.tryWrite(new Uint8Array([1])));
        assert.throws(() => Broadcast.create(region, { capacity: CAPACITY }), { code: ErrorCodes.BUSY });
        assert.ok(first.tryWrite(new Uint8Array([2])));
        assert.deepEqual([[...sub.tryRead()!], [...sub.tryRead()!]], [[1], [2]], 'nothing was overwritten');
        first.close();
        const next = Broadcast.create(region, { capacity: CAPACITY });
        next.close();
      } finally {
        if (backing === 'sysv') region.unlink();
        region.close();
      }
    });
  }

  it('refuses a Broadcast.create over a live publisher of another process in a System V segment, and allows it once that one is killed', async () => {
    const key = uniqueKey();
    const region = Region.create({ backing: 'sysv', key, size: Broadcast.regionSize({ capacity: CAPACITY }) });
    const core = import.meta.resolve('@shmring/core');
    const ringbuf = new URL('../src/index.js', import.meta.url).href;
    const script = `
      import { Region } from ${JSON.stringify(core)};
      import { Broadcast } from ${JSON.stringify(ringbuf)};
      Broadcast.create(Region.open({ backing: 'sysv', key: ${key} }), { capacity: ${CAPACITY} }).tryWrite(new Uint8Array([7]));
      console.log('ready');
      setTimeout(() => {}, 60000);`;
    const peer = new LinePeer('--input-type=module', ['-e', script]);
    try {
      await peer.line('ready');
      assert.throws(() => Broadcast.create(region, { capacity: CAPACITY }), { code: ErrorCodes.BUSY });
      await peer.kill();
      Broadcast.create(region, { capacity: CAPACITY }).close();
    } finally {
      await peer.kill();
      region.unlink();
      region.close();
    }
  });
});
