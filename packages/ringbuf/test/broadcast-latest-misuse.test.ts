/**
 * Wrong use of a Broadcast and a LatestValue is a typed error naming the
 * verb that was called (docs/ERRORS.md), before anything is taken or
 * written: a lossless Broadcast without subscriber slots.
 */
import { strict as assert } from 'node:assert';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { Broadcast } from '../src/index.js';

function invalid(kind: typeof TypeError | typeof RangeError | typeof Error, message: RegExp): (err: unknown) => boolean {
  return (err) => err instanceof kind && (err as ShmringError).code === ErrorCodes.INVALID_ARGUMENT && message.test((err as Error).message);
}

describe('Broadcast and LatestValue: wrong use', function () {
  let region: Region;
  beforeEach(function () {
    region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity: 1024 }) });
  });
  afterEach(function () {
    region.close();
  });

  it('refuses a lossless Broadcast without subscriber slots (no subscriber could ever join), writing nothing', function () {
    assert.throws(
      () => Broadcast.create(region, { capacity: 1024, lossless: true, subscribers: 0 }),
      invalid(RangeError, /^Broadcast.create: subscribers=0 with lossless=true leaves no slot for a subscriber.*subscribers >= 1/),
    );
    assert.equal(new Int32Array(region.buffer)[0], 0, 'nothing was laid out');
    const lossy = Broadcast.create(region, { capacity: 1024, subscribers: 0 }); // lossy subscribers read without a slot
    const sub = Broadcast.subscribe(region);
    assert.ok(lossy.tryWrite(new Uint8Array([1])));
    assert.deepEqual([...sub.tryRead()!], [1]);
    sub.close();
    lossy.close();
  });
});
