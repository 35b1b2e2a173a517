/**
 * LatestValue against a model: random command sequences (publish by the
 * writer, publish by another object, reads by several objects, changedSync
 * with timeoutMs 0, the writer closing, the writer "dying" mid-publish: its
 * next slot left odd and half-overwritten) on a real LatestValue over a
 * SharedArrayBuffer region and on a model that is only { version, value,
 * type }. Canary bytes after the LatestValue must survive every run.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { LatestValue } from '../src/index.js';
import * as V from '../src/latest-layout.js';
import { randomBytes } from './helpers.js';

const NUM_RUNS = 300;
const CANARY_BYTES = 64;
const CANARY = 0xa5;

type Command =
  | { op: 'publish'; fraction: number; type: number; seed: number }
  | { op: 'publishOther'; reader: number }
  | { op: 'read'; reader: number }
  | { op: 'changed'; reader: number; back: number }
  | { op: 'closeWriter' }
  | { op: 'dieMidPublish'; seed: number };

const command: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant('publish' as const),
      fraction: fc.oneof(fc.constant(0), fc.constant(1), fc.double({ min: 0, max: 1, noNaN: true })),
      type: fc.integer({ min: 0, max: 0x7fffffff }),
      seed: fc.integer(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('publishOther' as const), reader: fc.nat(2) }) },
  { weight: 6, arbitrary: fc.record({ op: fc.constant('read' as const), reader: fc.nat(2) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('changed' as const), reader: fc.nat(2), back: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('closeWriter' as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('dieMidPublish' as const), seed: fc.integer() }) },
);

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as ShmringError).code;
  }
  return undefined;
}

describe('LatestValue against a model', function () {
  this.timeout(120_000);

  it('reads what the model says after any sequence of publishes, closes and writer deaths', function () {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 300 }), fc.array(command, { minLength: 1, maxLength: 80 }), (maxSize, commands) => {
        const size = LatestValue.regionSize({ maxSize });
        const sab = new SharedArrayBuffer(size + CANARY_BYTES);
        new Uint8Array(sab, size).fill(CANARY);
        const region = Region.fromSharedArrayBuffer(sab);
        let writer = LatestValue.create(region, { maxSize });
        const readers = [LatestValue.attach(region), LatestValue.attach(region), LatestValue.attach(region)];
        const model = { version: 0, value: new Uint8Array(0), type: 0 };
        const words = new Int32Array(sab);
        for (const c of commands) {
          switch (c.op) {
            case 'publish': {
              const value = randomBytes(c.seed, Math.floor(c.fraction * maxSize));
              assert.equal(writer.publish(value, c.type), model.version + 1);
              Object.assign(model, { version: model.version + 1, value, type: c.type });
              break;
            }
            case 'publishOther':
              // The writer role is taken once `writer` has published; before that, the reader would take it.
              if (writer.isWriter)
                assert.equal(
                  code(() => readers[c.reader]!.publish(new Uint8Array(0))),
                  ErrorCodes.BUSY,
                );
              break;
            case 'read': {
              const r = readers[c.reader]!.read();
              assert.deepEqual(
                { version: r.version, value: [...r.value], type: r.type },
                { version: model.version, value: [...model.value], type: model.type },
              );
              break;
            }
            case 'changed': {
              const since = Math.max(0, model.version - c.back);
              if (since === model.version) {
                assert.equal(
                  code(() => readers[c.reader]!.changedSync(since, { timeoutMs: 0, spin: 0 })),
                  ErrorCodes.TIMEOUT,
                );
              } else {
                assert.equal(readers[c.reader]!.changedSync(since, { timeoutMs: 0 }).version, model.version);
              }
              break;
            }
            case 'closeWriter':
              writer.close();
              writer = LatestValue.attach(region);
              break;
            case 'dieMidPublish': {
              // A writer that dies after step 1 and part of step 2: the next slot odd and overwritten.
              const slot = V.slotOffset(maxSize, (model.version + 1) & 1);
              Atomics.add(words, (slot + V.SEQ_OFFSET) / 4, Atomics.load(words, (slot + V.SEQ_OFFSET) / 4) & 1 ? 2 : 1);
              const garbage = randomBytes(c.seed, maxSize);
              new Uint8Array(sab, slot + V.VALUE_OFFSET, Math.floor(maxSize / 2)).set(garbage.subarray(0, Math.floor(maxSize / 2)));
              words[(slot + V.LENGTH_OFFSET) / 4] = c.seed;
              writer.close(); // the role goes with the process (here: with close)
              writer = LatestValue.attach(region);
              break;
            }
          }
        }
        assert.ok(
          new Uint8Array(sab, size).every((b) => b === CANARY),
          'a canary byte after the LatestValue changed',
        );
        writer.close();
        for (const r of readers) r.close();
      }),
      { numRuns: NUM_RUNS },
    );
  });
});
