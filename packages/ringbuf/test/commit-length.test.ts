/**
 * SpscRing.commit and MpscRing.commit (offset, type, length): a claim committed with fewer bytes
 * than it reserved publishes a record of that length, and the rest of the
 * claim goes back to the ring. Checked against a model at every position of
 * a small ring (claims that wrap included, corked or not), with the consumer
 * reading after each commit or in batches; and the argument errors.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { ErrorCodes, Region } from '@shmring/core';
import { MpscRing, SpscRing } from '../src/index.js';

const CAPACITY = 256;

function ring(): { ring: SpscRing; region: Region } {
  const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: CAPACITY }) });
  return { ring: SpscRing.create(region, { capacity: CAPACITY }), region };
}

function fill(data: Uint8Array, at: number, length: number, serial: number): void {
  for (let i = 0; i < length; i++) data[at + i] = (serial * 7 + i) & 0xff;
}

function check(got: Uint8Array, length: number, serial: number, what: string): void {
  assert.equal(got.length, length, `${what}: length`);
  for (let i = 0; i < length; i++) assert.equal(got[i], (serial * 7 + i) & 0xff, `${what}: byte ${i}`);
}

describe('SpscRing.commit with a length', () => {
  it('publishes the shorter record and gives the rest back, at every position, wrapping or not, corked or not', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            claim: fc.integer({ min: 0, max: CAPACITY / 2 - 8 }),
            cut: fc.nat(),
            corked: fc.boolean(),
            readEvery: fc.integer({ min: 1, max: 4 }),
          }),
          { minLength: 1, maxLength: 200 },
        ),
        (steps) => {
          const { ring: r, region } = ring();
          try {
            const pending: Array<{ length: number; serial: number; type: number }> = [];
            let serial = 0;
            const readAll = (): void => {
              for (;;) {
                const got = r.tryRead();
                if (got === null) break;
                const want = pending.shift();
                assert.ok(want !== undefined, 'a record nobody committed');
                check(got, want.length, want.serial, `record ${want.serial}`);
                assert.equal(r.lastType, want.type);
              }
            };
            for (const [i, step] of steps.entries()) {
              const length = step.claim === 0 ? 0 : step.cut % (step.claim + 1);
              if (step.corked) r.cork();
              let offset = r.claim(step.claim);
              if (offset < 0) {
                if (step.corked) r.uncork();
                readAll();
                assert.equal(pending.length, 0);
                if (step.corked) r.cork();
                offset = r.claim(step.claim);
                assert.ok(offset >= 0, 'an empty ring takes any claim up to the largest record');
              }
              // Garbage past the length: the reader must not see it.
              fill(r.data, offset, step.claim, 999);
              fill(r.data, offset, length, serial);
              const type = serial % 5;
              r.commit(offset, type, length);
              pending.push({ length, serial, type });
              serial++;
              if (step.corked) r.uncork();
              if (i % step.readEvery === 0) readAll();
            }
            readAll();
            assert.equal(pending.length, 0, 'every committed record was read');
          } finally {
            region.close();
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('a shortened claim leaves room: records of the claimed size alone would not fit as many', () => {
    const { ring: r, region } = ring();
    try {
      let count = 0;
      for (;;) {
        const at = r.claim(CAPACITY / 2 - 8);
        if (at < 0) break;
        r.commit(at, 0, 8);
        count++;
      }
      // A 16-byte record each, up to the ring's capacity less its reserve; a full-size claim holds only one.
      assert.ok(count >= 8, `only ${count} shortened records fit`);
    } finally {
      region.close();
    }
  });

  it('a length that is not an integer in [0, the claimed length] is an error, and the claim stays open', () => {
    const { ring: r, region } = ring();
    try {
      const at = r.claim(16);
      assert.throws(() => r.commit(at, 0, 17), { code: ErrorCodes.INVALID_ARGUMENT, name: 'RangeError' });
      assert.throws(() => r.commit(at, 0, -1), { code: ErrorCodes.INVALID_ARGUMENT, name: 'RangeError' });
      assert.throws(() => r.commit(at, 0, 1.5), { code: ErrorCodes.INVALID_ARGUMENT, name: 'TypeError' });
      assert.throws(() => r.commit(at, 0, '4' as never), { code: ErrorCodes.INVALID_ARGUMENT, name: 'TypeError' });
      assert.throws(() => r.commit(at + 8, 0, 4), { code: ErrorCodes.INVALID_ARGUMENT }, 'another offset: the claim error');
      fill(r.data, at, 4, 1);
      r.commit(at, 3, 4);
      check(r.tryRead()!, 4, 1, 'the record');
      assert.equal(r.lastType, 3);
    } finally {
      region.close();
    }
  });
});

describe('MpscRing.commit with a length', () => {
  function mpsc(): { consumer: MpscRing; producers: MpscRing[]; region: Region } {
    const region = Region.create({ backing: 'sab', size: MpscRing.regionSize({ capacity: CAPACITY }) });
    const consumer = MpscRing.create(region, { capacity: CAPACITY });
    return { consumer, producers: [MpscRing.attach(region), MpscRing.attach(region)], region };
  }

  it('publishes the shorter record, whichever of two producers commits first, and the consumer skips the rest', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            claims: fc.array(fc.record({ claim: fc.integer({ min: 0, max: CAPACITY / 4 }), cut: fc.nat() }), {
              minLength: 2,
              maxLength: 2,
            }),
            secondFirst: fc.boolean(),
          }),
          { minLength: 1, maxLength: 100 },
        ),
        (steps) => {
          const { consumer, producers, region } = mpsc();
          try {
            let serial = 0;
            for (const step of steps) {
              // Both producers claim, then commit in either order: the records keep the order of the claims.
              const open = step.claims.map(({ claim, cut }, p) => {
                const offset = producers[p]!.claim(claim);
                assert.ok(offset >= 0, 'an empty ring takes both claims');
                const length = claim === 0 ? 0 : cut % (claim + 1);
                fill(producers[p]!.data, offset, claim, 999); // garbage past the length: never read
                fill(producers[p]!.data, offset, length, serial + p);
                return { p, offset, length, serial: serial + p };
              });
              for (const o of step.secondFirst ? [...open].reverse() : open) producers[o.p]!.commit(o.offset, o.serial % 5, o.length);
              for (const o of open) {
                const got = consumer.tryRead();
                assert.ok(got !== null, `record ${o.serial} was committed`);
                check(got, o.length, o.serial, `record ${o.serial}`);
                assert.equal(consumer.lastType, o.serial % 5);
              }
              assert.equal(consumer.tryRead(), null, 'the rest of each claim is no record');
              assert.equal(consumer.size, 0, 'every byte claimed was consumed');
              serial += 2;
            }
          } finally {
            region.close();
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('a length that is not an integer in [0, the claimed length] is an error, and the claim stays open', () => {
    const { consumer, producers, region } = mpsc();
    try {
      const producer = producers[0]!;
      const at = producer.claim(16);
      assert.throws(() => producer.commit(at, 0, 17), { code: ErrorCodes.INVALID_ARGUMENT, name: 'RangeError' });
      assert.throws(() => producer.commit(at, 0, -1), { code: ErrorCodes.INVALID_ARGUMENT, name: 'RangeError' });
      assert.throws(() => producer.commit(at, 0, 1.5), { code: ErrorCodes.INVALID_ARGUMENT, name: 'TypeError' });
      fill(producer.data, at, 4, 1);
      producer.commit(at, 3, 4);
      check(consumer.tryRead()!, 4, 1, 'the record');
      assert.equal(consumer.lastType, 3);
    } finally {
      region.close();
    }
  });
});
