/**
 * Wrong use of a Broadcast and a LatestValue is a typed error naming the
 * verb that was called (docs/ERRORS.md), before anything is taken or
 * written: a lossless Broadcast without subscriber slots; options that
 * are not an object; a read verb of a publisher, a write verb of a
 * subscriber, a subscribe to a region holding something else.
 */
import { strict as assert } from 'node:assert';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { Broadcast, LatestValue, SpscRing } from '../src/index.js';

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

  it('refuses options that are not an object with a TypeError naming the verb, before anything is taken or written', async function () {
    const pub = Broadcast.create(region, { capacity: 1024 });
    const latest = Region.create({ backing: 'sab', size: LatestValue.regionSize({ maxSize: 16 }) });
    const lv = LatestValue.create(latest, { maxSize: 16 });
    try {
      for (const [verb, call] of [
        ['Broadcast.subscribe', () => Broadcast.subscribe(region, 5 as unknown as object)],
        ['Broadcast.subscribe', () => Broadcast.subscribe(region, null as unknown as object)],
        ['Broadcast.create', () => Broadcast.create(region, 'x' as unknown as { capacity: number })],
        ['Broadcast.regionSize', () => Broadcast.regionSize(1024 as unknown as { capacity: number })],
        ['LatestValue.attach', () => LatestValue.attach(latest, 'x' as unknown as object)],
        ['LatestValue.create', () => LatestValue.create(latest, 16 as unknown as { maxSize: number })],
        ['LatestValue.regionSize', () => LatestValue.regionSize(16 as unknown as { maxSize: number })],
      ] as const) {
        assert.throws(call, invalid(TypeError, new RegExp(`^${verb}: options=.* must be an object$`)), verb);
      }
      await assert.rejects(
        lv.updates(5 as unknown as object).next(),
        invalid(TypeError, /^LatestValue.updates: options=5 must be an object$/),
      );
      await assert.rejects(
        lv.updates('x' as unknown as object).next(),
        invalid(TypeError, /^LatestValue.updates: options="x" must be an object$/),
      );
      assert.ok(pub.tryWrite(new Uint8Array([1])), 'the refused create left the publisher its Broadcast');
      assert.equal(lv.read().version, 0);
    } finally {
      lv.close();
      latest.close();
      pub.close();
    }
  });

  it('names the verb called on the wrong end of a Broadcast, and says which end to use', async function () {
    const pub = Broadcast.create(region, { capacity: 1024 });
    const sub = Broadcast.subscribe(region);
    const wrongEnd = (verb: string, end: RegExp) =>
      invalid(Error, new RegExp(`^${verb.replace(/[[\]()]/g, '\\$&')}: this is ${end.source}`));
    const publisher = /the publisher; read through a subscriber/;
    const subscriber = /a subscriber; publish through the object Broadcast.create returned/;
    try {
      assert.throws(() => pub.readSync(), wrongEnd('Broadcast.readSync', publisher));
      assert.throws(() => pub.readSync({ timeoutMs: 10 }), wrongEnd('Broadcast.readSync', publisher));
      await assert.rejects(pub.read(), wrongEnd('Broadcast.read', publisher));
      assert.throws(() => pub.messages(), wrongEnd('Broadcast.messages', publisher));
      await assert.rejects(
        async () => {
          for await (const _ of pub) assert.fail('a publisher read a message');
        },
        wrongEnd('Broadcast[Symbol.asyncIterator] (for await)', publisher),
      );
      assert.throws(() => pub.readable(), wrongEnd('Broadcast.readable', publisher));
      assert.throws(() => pub.tryRead(), wrongEnd('Broadcast.tryRead', publisher));
      assert.throws(() => sub.writeSync(new Uint8Array(1)), wrongEnd('Broadcast.writeSync', subscriber));
      await assert.rejects(sub.write(new Uint8Array(1)), wrongEnd('Broadcast.write', subscriber));
      assert.throws(() => sub.writable(), wrongEnd('Broadcast.writable', subscriber));
      assert.throws(() => sub.tryWrite(new Uint8Array(1)), wrongEnd('Broadcast.tryWrite', subscriber));
      assert.ok(pub.tryWrite(new Uint8Array([1])));
      assert.deepEqual([...sub.tryRead()!], [1], 'the refusals took and wrote nothing');
    } finally {
      sub.close();
      pub.close();
    }
  });

  it('Broadcast.subscribe names itself when the region holds another kind, or no ring', function () {
    const other = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: 1024 }) });
    SpscRing.create(other, { capacity: 1024 }).close();
    assert.throws(
      () => Broadcast.subscribe(other),
      (err: ShmringError) =>
        err.code === ErrorCodes.WRONG_KIND &&
        /^Broadcast.subscribe: a SharedArrayBuffer holds a SpscRing, not a Broadcast$/.test(err.message),
    );
    other.close();
    assert.throws(
      () => Broadcast.subscribe(region),
      (err: ShmringError) => err.code === ErrorCodes.NOT_A_RING && /^Broadcast.subscribe: .+ does not hold a ring/.test(err.message),
    );
  });
});
