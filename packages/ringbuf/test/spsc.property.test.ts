/**
 * SpscRing against a model: random command sequences (tryWrite, claim then
 * commit / abort, tryRead, drain, bad input) run on a real ring over a
 * SharedArrayBuffer region and on a plain-array model of it. The model
 * keeps the FIFO of {bytes, type} and the two byte positions by the rules
 * of layout.ts (8-byte aligned records that never straddle the end, a
 * padding record before the wrap), so it knows exactly when a write fits.
 *
 * Capacities are 64..1024 bytes, so each run laps the ring many times; some
 * runs start with the positions just below 2^32 so they also cross the
 * 32-bit wrap of the positions.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { ErrorCodes, Region } from '@shmring/core';
import { SpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import { randomBytes } from './helpers.js';
import { bytesSeed, lengthFraction, messageType } from './arbitraries.js';

const NUM_RUNS = 1000;
const CAPACITIES = [64, 128, 256, 512, 1024] as const;
/** Bytes after the ring, filled with a pattern that must survive every run. */
const CANARY_BYTES = 64;
const CANARY = 0xa5;

type Command =
  | { kind: 'write'; fraction: number; type: number; seed: number }
  | { kind: 'claim'; fraction: number; type: number; seed: number; end: 'commit' | 'abort'; wrongOffset: number; writeWhileOpen: boolean }
  | { kind: 'read' }
  | { kind: 'drain'; limit: number | undefined; throwAt: number | undefined }
  | { kind: 'oversize'; extra: number; via: 'tryWrite' | 'claim' }
  | { kind: 'stray'; verb: 'commit' | 'abort'; offset: number };

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({ kind: fc.constant('write' as const), fraction: lengthFraction, type: messageType, seed: bytesSeed }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('claim' as const),
      fraction: lengthFraction,
      type: messageType,
      seed: bytesSeed,
      end: fc.constantFrom('commit' as const, 'abort' as const),
      // 0: commit / abort with the right offset straight away; otherwise first with offset + wrongOffset.
      wrongOffset: fc.oneof(fc.constant(0), fc.constant(0), fc.constantFrom(-1, 1, 8, -8, 4096)),
      writeWhileOpen: fc.boolean(),
    }),
  },
  { weight: 7, arbitrary: fc.constant({ kind: 'read' as const }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('drain' as const),
      limit: fc.option(fc.integer({ min: 0, max: 6 }), { nil: undefined }),
      throwAt: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined, freq: 4 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('oversize' as const),
      extra: fc.nat({ max: 2048 }),
      via: fc.constantFrom('tryWrite' as const, 'claim' as const),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('stray' as const),
      verb: fc.constantFrom('commit' as const, 'abort' as const),
      offset: fc.integer({ min: -1, max: 1024 }),
    }),
  },
);

/** Where the positions start: 0, anywhere (8-aligned), or just below the 32-bit wrap. */
const startPosition = fc.oneof(
  fc.constant(0),
  fc.integer({ min: 0, max: 2 ** 29 - 1 }).map((k) => k * 8),
  fc.integer({ min: 1, max: 4096 }).map((k) => 2 ** 32 - k * 8),
);

interface Record_ {
  bytes: Uint8Array;
  type: number;
  /** Padding bytes skipped before this record (at the wrap). */
  padding: number;
  /** Record bytes: header + payload, 8-aligned. */
  size: number;
}

/** The ring as the layout describes it: FIFO of records and the two u32 byte positions. */
class Model {
  readonly records: Record_[] = [];
  producer: number;
  consumer: number;
  readonly capacity: number;

  constructor(capacity: number, start: number) {
    this.capacity = capacity;
    this.producer = start >>> 0;
    this.consumer = start >>> 0;
  }

  get used(): number {
    return (this.producer - this.consumer) >>> 0;
  }

  /** Padding and record bytes a payload of `length` takes at the producer position now. */
  placement(length: number): { padding: number; size: number } {
    const size = L.recordSize(length);
    const toEnd = this.capacity - (this.producer % this.capacity);
    return { padding: size <= toEnd ? 0 : toEnd, size };
  }

  fits(length: number): boolean {
    const { padding, size } = this.placement(length);
    return this.capacity - this.used >= padding + size + L.RECORD_RESERVE; // the producer always leaves 8 bytes free
  }

  push(bytes: Uint8Array, type: number): void {
    const { padding, size } = this.placement(bytes.length);
    this.records.push({ bytes, type, padding, size });
    this.producer = (this.producer + padding + size) >>> 0;
  }

  shift(): Record_ {
    const record = this.records.shift()!;
    this.consumer = (this.consumer + record.padding + record.size) >>> 0;
    return record;
  }
}

/** Totals over every run, checked in after(). */
const totals = { runs: 0, wraps: 0, positionWraps: 0, written: 0, read: 0, aborted: 0, fullRefusals: 0, badInputs: 0, drains: 0 };

function isTooLarge(err: unknown): boolean {
  return err instanceof RangeError && (err as RangeError & { code?: string }).code === ErrorCodes.MESSAGE_TOO_LARGE;
}

function isInvalid(err: unknown): boolean {
  return err instanceof Error && (err as Error & { code?: string }).code === ErrorCodes.INVALID_ARGUMENT;
}

function expectHead(model: Model, bytes: Uint8Array, type: number, what: string): void {
  assert.ok(model.records.length > 0, `${what} returned a message but the model is empty`);
  const head = model.shift();
  assert.equal(type, head.type, `${what}: type`);
  assert.equal(bytes.length, head.bytes.length, `${what}: length`);
  assert.ok(Buffer.compare(bytes, head.bytes) === 0, `${what}: bytes differ from the ones written`);
}

/** Runs `commands` on a fresh ring of `capacity` whose positions start at `start`. */
function runCommands(capacity: number, start: number, commands: Command[]): void {
  const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity }) + CANARY_BYTES });
  const memory = new Uint8Array(region.buffer);
  const ringEnd = SpscRing.regionSize({ capacity });
  memory.fill(CANARY, ringEnd);
  SpscRing.create(region, { capacity });
  // Move both positions (an empty ring) to `start`, then attach: the new side reads them.
  const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
  Atomics.store(ctl, L.PRODUCER_POSITION_I32, start | 0);
  Atomics.store(ctl, L.CONSUMER_POSITION_I32, start | 0);
  const ring = SpscRing.attach(region);
  const model = new Model(capacity, start);
  const max = ring.maxMessageLength;
  assert.equal(max, capacity / 2 - L.RECORD_HEADER);

  const checkState = (what: string): void => {
    assert.ok(ring.size <= capacity, `${what}: size=${ring.size} exceeds capacity=${capacity}`);
    assert.equal(ring.size, model.used, `${what}: size (published bytes)`);
    assert.equal(Atomics.load(ctl, L.PRODUCER_POSITION_I32) >>> 0, model.producer, `${what}: producer position`);
    assert.equal(Atomics.load(ctl, L.CONSUMER_POSITION_I32) >>> 0, model.consumer, `${what}: consumer position`);
  };

  for (const [step, command] of commands.entries()) {
    const what = `step ${step} (${command.kind})`;
    switch (command.kind) {
      case 'write': {
        const bytes = randomBytes(command.seed, Math.round(command.fraction * max));
        const wasEmpty = model.records.length === 0;
        const fits = model.fits(bytes.length);
        const ok = ring.tryWrite(bytes, command.type);
        if (wasEmpty) assert.ok(ok, `${what}: tryWrite of ${bytes.length} bytes (max ${max}) failed on an empty ring`);
        assert.equal(ok, fits, `${what}: tryWrite of ${bytes.length} bytes with ${model.used} of ${capacity} used`);
        if (ok) {
          model.push(bytes, command.type);
          totals.written++;
        } else {
          totals.fullRefusals++;
        }
        break;
      }
      case 'claim': {
        const bytes = randomBytes(command.seed, Math.round(command.fraction * max));
        const fits = model.fits(bytes.length);
        const offset = ring.claim(bytes.length);
        if (model.records.length === 0) assert.ok(offset >= 0, `${what}: claim(${bytes.length}) failed on an empty ring`);
        assert.equal(offset >= 0, fits, `${what}: claim(${bytes.length}) with ${model.used} of ${capacity} used returned ${offset}`);
        if (offset < 0) {
          totals.fullRefusals++;
          break;
        }
        assert.ok(
          offset >= L.RECORD_HEADER && offset + bytes.length <= capacity && offset % 8 === 0,
          `${what}: claim offset ${offset} for ${bytes.length} bytes lies outside the data area`,
        );
        ring.data.set(bytes, offset);
        if (command.writeWhileOpen) {
          assert.throws(() => ring.tryWrite(new Uint8Array(1)), isInvalid, `${what}: tryWrite with a claim open must throw`);
          totals.badInputs++;
        }
        if (command.wrongOffset !== 0) {
          assert.throws(
            () =>
              command.end === 'commit' ? ring.commit(offset + command.wrongOffset, command.type) : ring.abort(offset + command.wrongOffset),
            isInvalid,
            `${what}: ${command.end}(offset ${offset} + ${command.wrongOffset}) must throw`,
          );
          totals.badInputs++;
          checkState(`${what} after a wrong ${command.end}`);
        }
        checkState(`${what} while the claim is open (nothing is published yet)`);
        if (command.end === 'commit') {
          ring.commit(offset, command.type);
          model.push(bytes, command.type);
          totals.written++;
        } else {
          ring.abort(offset);
          totals.aborted++;
        }
        break;
      }
      case 'read': {
        const message = ring.tryRead();
        assert.equal(
          message === null,
          model.records.length === 0,
          `${what}: tryRead returned ${message === null ? 'null' : 'a message'} with ${model.records.length} in the model`,
        );
        if (message !== null) {
          expectHead(model, message, ring.lastType, what);
          totals.read++;
        }
        break;
      }
      case 'drain': {
        // drain re-reads the producer position once per call: it takes every record
        // published when it starts, up to `limit`.
        const published = model.records.length;
        const most = Math.min(command.limit ?? Infinity, published);
        let calls = 0;
        const handler = (data: Uint8Array, offset: number, length: number, type: number): void => {
          assert.equal(data, ring.data, `${what}: drain must hand out the ring's own data view`);
          assert.ok(offset >= 0 && offset + length <= capacity, `${what}: record [${offset}, ${offset + length}) outside the data area`);
          expectHead(model, data.subarray(offset, offset + length), type, `${what}, record ${calls}`);
          totals.read++;
          if (calls++ === command.throwAt) throw new Error('handler failure');
        };
        let count: number;
        try {
          count = ring.drain(handler, command.limit);
        } catch (err) {
          // The record the handler threw on counts as consumed; the rest stay.
          assert.match((err as Error).message, /handler failure/, `${what}: drain must rethrow the handler's error`);
          assert.equal(calls, command.throwAt! + 1, `${what}: records handed out before the throw`);
          break;
        }
        assert.equal(count, calls, `${what}: drain's count must equal the handler calls`);
        assert.equal(count, most, `${what}: drain handed out ${count} records, not min(limit, published) = ${most}`);
        if (command.throwAt !== undefined)
          assert.ok(count <= command.throwAt, `${what}: the handler should have thrown at record ${command.throwAt}`);
        totals.drains++;
        break;
      }
      case 'oversize': {
        const length = max + 1 + command.extra;
        assert.throws(
          () => (command.via === 'tryWrite' ? ring.tryWrite(new Uint8Array(length), 1) : ring.claim(length)),
          isTooLarge,
          `${what}: ${command.via} of ${length} bytes (max ${max}) must be a RangeError ${ErrorCodes.MESSAGE_TOO_LARGE}`,
        );
        totals.badInputs++;
        break;
      }
      case 'stray': {
        assert.throws(
          () => (command.verb === 'commit' ? ring.commit(command.offset) : ring.abort(command.offset)),
          isInvalid,
          `${what}: ${command.verb}(${command.offset}) without an open claim must throw`,
        );
        totals.badInputs++;
        break;
      }
    }
    checkState(what);
  }
  // Whatever is left comes out in order, then the ring is empty.
  for (let message = ring.tryRead(); message !== null; message = ring.tryRead()) {
    expectHead(model, message, ring.lastType, 'final read');
    totals.read++;
  }
  assert.equal(model.records.length, 0, 'the ring ran dry before the model');
  checkState('after the final reads');
  assert.ok(
    memory.subarray(ringEnd).every((b) => b === CANARY),
    'a byte after the ring was overwritten',
  );

  const advanced = (model.producer - start) >>> 0;
  totals.runs++;
  totals.wraps += Math.floor(((start % capacity) + advanced) / capacity);
  if ((start >>> 0) + advanced >= 2 ** 32) totals.positionWraps++;
}

describe('SpscRing (model-based)', function () {
  after(function () {
    // The sizes are meant to lap small rings over and over: prove they did.
    assert.ok(totals.runs >= NUM_RUNS, `runs=${totals.runs}`);
    assert.ok(totals.wraps >= 10_000, `only ${totals.wraps} wrap-arounds of the data area over ${totals.runs} runs`);
    assert.ok(totals.positionWraps >= 50, `only ${totals.positionWraps} runs crossed the 2^32 wrap of the positions`);
    assert.ok(
      totals.aborted >= 1000 && totals.fullRefusals >= 1000 && totals.badInputs >= 1000,
      `too few interesting cases: ${JSON.stringify(totals)}`,
    );
    console.log(`      SpscRing model: ${JSON.stringify(totals)}`);
  });

  it('behaves like a FIFO of {bytes, type}: reads, drains, claims, aborts and refusals match the model', function () {
    fc.assert(
      fc.property(
        fc.constantFrom(...CAPACITIES),
        startPosition,
        fc.array(commandArb, { minLength: 1, maxLength: 1000, size: 'max' }),
        (capacity, start, commands) => runCommands(capacity, start, commands),
      ),
      { numRuns: NUM_RUNS },
    );
  });

  it('rejects a message larger than maxMessageLength with ERR_SHMRING_MESSAGE_TOO_LARGE and keeps what the ring holds', function () {
    fc.assert(
      fc.property(
        fc.constantFrom(...CAPACITIES),
        fc.array(fc.nat({ max: 1024 }), { minLength: 0, maxLength: 8 }),
        fc.nat({ max: 4096 }),
        (capacity, lengths, extra) => {
          const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity }) });
          const ring = SpscRing.create(region, { capacity });
          const kept: { bytes: Uint8Array; type: number }[] = [];
          for (const [type, n] of lengths.entries()) {
            const bytes = randomBytes(type + 1, n % (ring.maxMessageLength + 1));
            if (ring.tryWrite(bytes, type)) kept.push({ bytes, type });
          }
          // Everything from the positions on (the header's pid words may record the producer).
          const snapshot = (): Buffer => Buffer.from(new Uint8Array(region.buffer, L.PRODUCER_POSITION_OFFSET));
          const before = snapshot();
          const length = ring.maxMessageLength + 1 + extra;
          assert.throws(
            () => ring.tryWrite(new Uint8Array(length).fill(0xee)),
            (err: unknown) => {
              assert.ok(err instanceof RangeError, 'a RangeError');
              assert.equal((err as RangeError & { code?: string }).code, ErrorCodes.MESSAGE_TOO_LARGE);
              assert.match((err as Error).message, new RegExp(`length=${length}`));
              return true;
            },
          );
          assert.ok(Buffer.compare(before, snapshot()) === 0, 'the refused write changed the positions or the data area');
          for (const { bytes, type } of kept) {
            const message = ring.tryRead();
            assert.ok(
              message !== null && Buffer.compare(message, bytes) === 0 && ring.lastType === type,
              `message of type ${type} after the refusal`,
            );
          }
          assert.equal(ring.tryRead(), null);
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });
});
