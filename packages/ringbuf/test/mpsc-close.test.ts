/**
 * MpscRing.close() ends only what the object was part of: a producer's
 * close() gives up its open claim (which would otherwise hold the consumer
 * for as long as the producer's process lives) and leaves the ring to the
 * others; an object that only attached and never wrote nor read lets go;
 * the consumer's close(), or the creator's, ends the ring for everyone.
 */
import { strict as assert } from 'node:assert';
import { ErrorCodes, Region } from '@shmring/core';
import { MpscRing } from '../src/index.js';

const CAPACITY = 1024;
const regions: Region[] = [];

function region(): Region {
  const r = Region.create({ backing: 'memfd', size: MpscRing.regionSize({ capacity: CAPACITY }), name: 'shmring-mpsc-close' });
  regions.push(r);
  return r;
}

describe('MpscRing.close()', () => {
  afterEach(() => {
    for (const r of regions.splice(0)) r.close();
  });

  it("a producer's close() with a claim open aborts the claim: the records behind it reach the consumer at once", async () => {
    const r = region();
    const consumer = MpscRing.create(r, { capacity: CAPACITY, peerTimeoutMs: 60_000 });
    const other = MpscRing.attach(r);
    const closing = MpscRing.attach(r);
    assert.ok(closing.claim(8) >= 0);
    assert.equal(other.tryWrite(Uint8Array.of(1)), true); // behind the open claim
    closing.close();
    // With the claim left open, this read would wait for peerTimeoutMs (a minute), the claimer being alive.
    const got = await consumer.read({ timeoutMs: 2_000 });
    assert.deepEqual([...got], [1]);
    assert.equal(consumer.unblockedRecords, 0, 'given up, not taken back from a dead claimer');
    assert.equal(consumer.size, 0);
    assert.equal(other.tryWrite(Uint8Array.of(2)), true, 'the ring is still open for the other producer');
  });

  it('detach() with a claim open aborts it too', () => {
    const r = region();
    const consumer = MpscRing.create(r, { capacity: CAPACITY });
    const producer = MpscRing.attach(r);
    assert.ok(producer.claim(16) >= 0);
    producer.detach();
    assert.equal(consumer.tryRead(), null);
    assert.equal(consumer.size, 0, 'the claim became padding the consumer skipped');
  });

  it('an attached object that never wrote nor read lets go on close(): the other producers and the consumer go on', () => {
    const r = region();
    const consumer = MpscRing.create(r, { capacity: CAPACITY });
    const busy = MpscRing.attach(r);
    assert.equal(busy.tryWrite(Uint8Array.of(1)), true);
    MpscRing.attach(r).close(); // a producer that had nothing to send
    assert.equal(busy.tryWrite(Uint8Array.of(2)), true);
    assert.equal(consumer.closed, false);
    assert.deepEqual([...consumer.tryRead()!], [1]);
    assert.deepEqual([...consumer.tryRead()!], [2]);
  });

  it("the creator's close() ends the ring for every producer, even if it never read", () => {
    const r = region();
    const creator = MpscRing.create(r, { capacity: CAPACITY });
    const producer = MpscRing.attach(r);
    assert.equal(producer.tryWrite(Uint8Array.of(1)), true);
    creator.close();
    assert.throws(() => producer.tryWrite(Uint8Array.of(2)), { code: ErrorCodes.CLOSED });
  });

  it('a close by the creator (not the consumer) loses nothing claimed before it: the consumer reads a claim committed after the close, and what follows it', async () => {
    const r = region();
    const creator = MpscRing.create(r, { capacity: CAPACITY });
    const consumer = MpscRing.attach(r);
    const p = MpscRing.attach(r);
    const q = MpscRing.attach(r);
    assert.equal(consumer.tryRead(), null); // the consumer role
    const offset = p.claim(1); // claimed before the close, committed after it
    assert.equal(q.tryWrite(Uint8Array.of(2)), true); // committed before the close, behind p's claim
    creator.close();
    assert.throws(() => q.tryWrite(Uint8Array.of(3)), { code: ErrorCodes.CLOSED }, 'no claim after the close');
    const first = consumer.read({ timeoutMs: 5000 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    p.data[offset] = 1;
    p.commit(offset);
    assert.deepEqual([...(await first)], [1], "the close ended the read before p's commit: p's and q's messages were lost");
    assert.deepEqual([...(await consumer.read({ timeoutMs: 5000 }))], [2]);
    await assert.rejects(consumer.read({ timeoutMs: 5000 }), { code: ErrorCodes.CLOSED });
    for (const x of [p, q, consumer]) x.close();
  });

  it("a write whose check of the flag came before the creator's close, and its claim after the consumer saw the end, is refused, not reported written", () => {
    const r = region();
    const creator = MpscRing.create(r, { capacity: CAPACITY });
    const consumer = MpscRing.attach(r);
    const producer = MpscRing.attach(r);
    assert.equal(consumer.tryRead(), null); // the consumer role
    // The producer's first write checks the flag, then registers (a lock: a system call) before it claims. In
    // between: the creator closes, and the consumer, finding nothing claimed, reports the end.
    const proto = Object.getPrototypeOf(producer) as { registerProducer: (this: unknown) => void };
    const register = proto.registerProducer;
    (producer as unknown as { registerProducer: () => void }).registerProducer = function (this: unknown) {
      creator.close();
      assert.throws(() => consumer.readSync({ timeoutMs: 0 }), { code: ErrorCodes.CLOSED });
      register.call(this);
    };
    assert.throws(
      () => producer.tryWrite(Uint8Array.of(1)),
      { code: ErrorCodes.CLOSED },
      'a message nobody will read was reported written',
    );
    for (const x of [producer, consumer]) x.close();
  });

  it('an attached object whose wait took padding at the head (and with it the consumer role) lets go on close(): the ring goes on', async () => {
    const r = region();
    MpscRing.create(r, { capacity: CAPACITY }).detach();
    const producer = MpscRing.attach(r);
    const waiter = MpscRing.attach(r);
    producer.abort(producer.claim(8)); // padding at the head, nothing after it
    await assert.rejects(waiter.waitReadable({ timeoutMs: 20 }), { code: ErrorCodes.TIMEOUT });
    assert.equal(waiter.size, 0, 'the wait took the padding');
    waiter.close();
    assert.equal(producer.tryWrite(Uint8Array.of(7)), true, 'the waiter closed the ring');
    const consumer = MpscRing.attach(r);
    assert.deepEqual([...consumer.tryRead()!], [7]);
    consumer.close();
    producer.close();
  });

  it("the consumer's close() ends the ring for every producer", () => {
    const r = region();
    MpscRing.create(r, { capacity: CAPACITY }).detach();
    const consumer = MpscRing.attach(r);
    const producer = MpscRing.attach(r);
    assert.equal(producer.tryWrite(Uint8Array.of(1)), true);
    assert.deepEqual([...consumer.tryRead()!], [1]);
    consumer.close();
    // The error names the ring (its region, as every ERR_SHMRING_CLOSED does) and who closed it.
    assert.throws(() => producer.tryWrite(Uint8Array.of(2)), {
      code: ErrorCodes.CLOSED,
      message:
        /^MpscRing: the ring in a memfd region \(fd \d+ of pid \d+\) was closed \(by its consumer, or by its creator\); nothing more can be written$/,
    });
  });
});
