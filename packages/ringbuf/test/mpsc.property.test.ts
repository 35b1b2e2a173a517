/**
 * MpscRing against a model: random command sequences from several producer
 * objects (tryWrite, claim left open across other commands, then commit or
 * abort), and the consumer (tryRead, drain with a limit), run on a real ring
 * over a SharedArrayBuffer region and on a model that keeps the records in
 * claim order with the two u32 byte positions by the rules of
 * mpsc-layout.ts: 8-aligned records that never straddle the end, the
 * padding before the wrap claimed with the record, aborted records turned
 * into padding, and a consumer that stops at the first record not yet
 * committed (whatever is committed behind it).
 *
 * Capacities are 64..512 bytes so runs wrap many times; some start with the
 * positions just below 2^32.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { ErrorCodes, Region } from '@shmring/core';
import { MpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import * as M from '../src/mpsc-layout.js';
import { randomBytes } from './helpers.js';
import { bytesSeed, lengthFraction, messageType } from './arbitraries.js';

const NUM_RUNS = 400;
const PRODUCERS = 3;
const CAPACITIES = [64, 128, 256, 512] as const;
const CANARY_BYTES = 64;
const CANARY = 0xa5;

const producerArb = fc.integer({ min: 0, max: PRODUCERS - 1 });

type Command =
  | { kind: 'write'; p: number; fraction: number; type: number; seed: number }
  | { kind: 'claim'; p: number; fraction: number; seed: number }
  | { kind: 'finish'; p: number; end: 'commit' | 'abort'; type: number }
  | { kind: 'read' }
  | { kind: 'drain'; limit: number | undefined };

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('write' as const),
      p: producerArb,
      fraction: lengthFraction,
      type: messageType,
      seed: bytesSeed,
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('claim' as const), p: producerArb, fraction: lengthFraction, seed: bytesSeed }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('finish' as const),
      p: producerArb,
      end: fc.constantFrom('commit' as const, 'abort' as const),
      type: messageType,
    }),
  },
  { weight: 6, arbitrary: fc.constant({ kind: 'read' as const }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('drain' as const), limit: fc.option(fc.integer({ min: 0, max: 4 }), { nil: undefined }) }),
  },
);

const startPosition = fc.oneof(
  fc.constant(0),
  fc.integer({ min: 0, max: 2 ** 29 - 1 }).map((k) => k * 8),
  fc.integer({ min: 1, max: 512 }).map((k) => 2 ** 32 - k * 8),
);

interface Entry {
  /** Bytes this entry takes in the ring. */
  size: number;
  /** 'pad': the padding before a wrap or an aborted record; 'claimed': not yet committed; 'message': committed. */
  state: 'pad' | 'claimed' | 'message';
  bytes: Uint8Array;
  type: number;
  producer: number;
  seq: number;
}

class Model {
  readonly entries: Entry[] = [];
  tail: number;
  head: number;
  constructor(
    readonly capacity: number,
    start: number,
  ) {
    this.tail = start >>> 0;
    this.head = start >>> 0;
  }

  /** Appends a claim of `length` payload bytes if it fits; returns its entry. */
  claim(length: number, producer: number, seq: number, bytes: Uint8Array): Entry | undefined {
    const size = M.recordBytes(M.mpscLength(length));
    const toEnd = this.capacity - (this.tail % this.capacity);
    const padding = size <= toEnd ? 0 : toEnd;
    if (this.capacity - ((this.tail - this.head) >>> 0) < padding + size) return undefined;
    if (padding !== 0) this.entries.push({ size: padding, state: 'pad', bytes: new Uint8Array(0), type: -1, producer: -1, seq: -1 });
    const entry: Entry = { size, state: 'claimed', bytes, type: 0, producer, seq };
    this.entries.push(entry);
    this.tail = (this.tail + padding + size) >>> 0;
    return entry;
  }

  /** Consumes leading padding; then the next message if it is committed (undefined otherwise). */
  take(): Entry | undefined {
    this.skipPadding();
    const first = this.entries[0];
    if (first === undefined || first.state !== 'message') return undefined;
    this.entries.shift();
    this.head = (this.head + first.size) >>> 0;
    return first;
  }

  skipPadding(): void {
    while (this.entries[0]?.state === 'pad') this.head = (this.head + this.entries.shift()!.size) >>> 0;
  }
}

const totals = { runs: 0, written: 0, read: 0, aborted: 0, full: 0, wraps: 0, stuckBehindClaim: 0 };

function runCommands(capacity: number, start: number, commands: Command[]): void {
  const ringSize = MpscRing.regionSize({ capacity });
  const region = Region.create({ backing: 'sab', size: ringSize + CANARY_BYTES });
  new Uint8Array(region.buffer).fill(CANARY, ringSize);
  MpscRing.create(region, { capacity });
  const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
  Atomics.store(ctl, L.PRODUCER_POSITION_I32, start | 0);
  Atomics.store(ctl, L.CONSUMER_POSITION_I32, start | 0);
  // peerTimeoutMs Infinity: an open claim is never taken for a dead one here.
  const consumer = MpscRing.attach(region, { peerTimeoutMs: Infinity });
  const producers = Array.from({ length: PRODUCERS }, () => MpscRing.attach(region));
  const open: ({ offset: number; entry: Entry } | undefined)[] = new Array(PRODUCERS).fill(undefined);
  const seqs = new Array<number>(PRODUCERS).fill(0);
  const lastSeen = new Array<number>(PRODUCERS).fill(-1);
  const model = new Model(capacity, start);
  const max = consumer.maxMessageLength;

  const got = (entry: Entry | undefined, bytes: Uint8Array, type: number, what: string): void => {
    assert.ok(entry !== undefined, `${what}: the ring gave a message the model does not have`);
    assert.equal(type, entry.type, `${what}: type`);
    assert.ok(Buffer.compare(bytes, entry.bytes) === 0, `${what}: bytes differ`);
    assert.ok(entry.seq > lastSeen[entry.producer]!, `${what}: producer ${entry.producer} out of order`);
    lastSeen[entry.producer] = entry.seq;
    totals.read++;
  };

  for (const [step, c] of commands.entries()) {
    const what = `step ${step} (${c.kind})`;
    switch (c.kind) {
      case 'write':
      case 'claim': {
        if (open[c.p] !== undefined) {
          assert.throws(
            () => producers[c.p]!.tryWrite(new Uint8Array(1)),
            { code: ErrorCodes.INVALID_ARGUMENT },
            `${what}: a second claim of one producer`,
          );
          break;
        }
        const bytes = randomBytes(c.seed, Math.round(c.fraction * max));
        const beforeTail = model.tail;
        const entry = model.claim(bytes.length, c.p, seqs[c.p]!, bytes);
        if (entry !== undefined && (beforeTail % capacity) + entry.size > capacity) totals.wraps++;
        if (c.kind === 'write') {
          const ok = producers[c.p]!.tryWrite(bytes, c.type);
          assert.equal(ok, entry !== undefined, `${what}: tryWrite of ${bytes.length} bytes`);
          if (entry === undefined) {
            totals.full++;
            break;
          }
          entry.state = 'message';
          entry.type = c.type;
        } else {
          const offset = producers[c.p]!.claim(bytes.length);
          assert.equal(offset >= 0, entry !== undefined, `${what}: claim(${bytes.length}) returned ${offset}`);
          if (entry === undefined) {
            totals.full++;
            break;
          }
          assert.ok(
            offset >= M.MPSC_RECORD_HEADER && offset + bytes.length <= capacity,
            `${what}: claim offset ${offset} outside the data area`,
          );
          producers[c.p]!.data.set(bytes, offset);
          open[c.p] = { offset, entry };
        }
        seqs[c.p]!++;
        totals.written++;
        break;
      }
      case 'finish': {
        const claim = open[c.p];
        if (claim === undefined) {
          assert.throws(() => producers[c.p]!.commit(0), { code: ErrorCodes.INVALID_ARGUMENT }, `${what}: commit without a claim`);
          break;
        }
        open[c.p] = undefined;
        if (c.end === 'commit') {
          producers[c.p]!.commit(claim.offset, c.type);
          claim.entry.state = 'message';
          claim.entry.type = c.type;
        } else {
          producers[c.p]!.abort(claim.offset);
          claim.entry.state = 'pad';
          totals.aborted++;
        }
        break;
      }
      case 'read': {
        const message = consumer.tryRead();
        const expected = model.take();
        if (message === null) {
          assert.equal(expected, undefined, `${what}: tryRead gave nothing but the model has a committed message first`);
          if (model.entries.length !== 0) totals.stuckBehindClaim++;
        } else {
          got(expected, message, consumer.lastType, what);
        }
        break;
      }
      case 'drain': {
        const limit = c.limit ?? Infinity;
        let handled = 0;
        const n = consumer.drain((data, offset, length, type) => {
          handled++;
          got(model.take(), data.slice(offset, offset + length), type, `${what} #${handled}`);
        }, c.limit);
        assert.equal(n, handled);
        if (n < limit) {
          // It stopped because nothing committed was next: the model agrees (and consumed the same padding).
          assert.equal(model.take(), undefined, `${what}: drain stopped before a committed message`);
        }
        break;
      }
    }
    assert.equal(consumer.size, (model.tail - model.head) >>> 0, `${what}: size`);
    assert.equal(Atomics.load(ctl, L.PRODUCER_POSITION_I32) >>> 0, model.tail, `${what}: producer position`);
    assert.equal(Atomics.load(ctl, L.CONSUMER_POSITION_I32) >>> 0, model.head, `${what}: consumer position`);
  }
  // Finish every open claim by commit, then everything written comes out, in order.
  for (const [p, claim] of open.entries()) {
    if (claim === undefined) continue;
    producers[p]!.commit(claim.offset, 7);
    claim.entry.state = 'message';
    claim.entry.type = 7;
  }
  for (;;) {
    const message = consumer.tryRead();
    const expected = model.take();
    if (message === null) {
      assert.equal(expected, undefined, 'final drain: a committed message is left');
      break;
    }
    got(expected, message, consumer.lastType, 'final drain');
  }
  assert.equal(model.entries.length, 0, 'final drain: the model still holds entries');
  assert.equal(consumer.size, 0);
  // Free space is all zero again, and nothing was written past the ring.
  assert.ok(
    consumer.data.every((b) => b === 0),
    'the consumed data area is not zeroed',
  );
  assert.ok(
    new Uint8Array(region.buffer, ringSize).every((b) => b === CANARY),
    'bytes past the ring were overwritten',
  );
  totals.runs++;
}

describe('MpscRing behaves as its model (fast-check)', function () {
  this.timeout(60_000);

  it('tryWrite / claim-commit-abort from three producers, tryRead / drain, across wraps', function () {
    fc.assert(
      fc.property(
        fc.constantFrom(...CAPACITIES),
        startPosition,
        fc.array(commandArb, { minLength: 1, maxLength: 150, size: 'max' }),
        (capacity, start, commands) => runCommands(capacity, start, commands),
      ),
      { numRuns: NUM_RUNS },
    );
  });

  after(function () {
    console.log('      mpsc model totals', JSON.stringify(totals));
    // The generators must have reached the interesting states, or the property says little.
    assert.ok(totals.wraps > 100, `only ${totals.wraps} wraps`);
    assert.ok(totals.aborted > 50, `only ${totals.aborted} aborts`);
    assert.ok(totals.full > 50, `only ${totals.full} full refusals`);
    assert.ok(totals.stuckBehindClaim > 50, `only ${totals.stuckBehindClaim} reads stopped by an open claim`);
  });
});
