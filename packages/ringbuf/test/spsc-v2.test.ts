/**
 * Layout version 2 (docs/LAYOUT.md "Records (version 2)", "SpscRing"): the
 * record header publishes the record.
 *
 *  - A property test against a model: a producer written here from the
 *    document publishes records step by step (payload and TYPE, the zeroed
 *    word ahead, LENGTH, the padding's TYPE and LENGTH, PRODUCER_POSITION),
 *    and the real consumer reads between every two steps: it must see a
 *    record exactly when its publishing LENGTH store has happened, never
 *    before, never twice. The hand producer then "dies" after any step,
 *    and a new SpscRing producer attaches and goes on: one that died between
 *    its LENGTH store and its position store must be neither duplicated nor
 *    lost (the new producer walks on over the published headers); one that
 *    died before it, or with a corked batch whose first header was never
 *    stored, is lost as a whole and never seen.
 *  - A version 1 ring of every kind is refused with ERR_SHMRING_VERSION_MISMATCH.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { Region } from '@shmring/core';
import { LatestValue, MpmcQueue, SpscRing } from '../src/index.js';
import * as L from '../src/layout.js';

const NUM_RUNS = 1000;

interface Message {
  bytes: Uint8Array;
  type: number;
}

type Command =
  | { op: 'write'; length: number; type: number }
  | { op: 'read' }
  | { op: 'drain'; limit: number }
  | { op: 'die'; messages: Array<{ length: number; type: number }>; steps: number; corked: boolean };

function messageOf(length: number, type: number, serial: number): Message {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (serial * 31 + i) & 0xff;
  return { bytes, type };
}

/**
 * The ring as the model sees it: the true end of what was written (published
 * or not yet), the consumer position, and the published messages not read.
 */
class Model {
  end: number;
  consumer: number;
  readonly published: Message[] = [];
  delivered = 0;
  constructor(
    readonly capacity: number,
    start: number,
  ) {
    this.end = start;
    this.consumer = start;
  }

  /** Bytes a record of `length` needs at the end now (padding included), or -1 if it does not fit with the 8-byte reserve. */
  span(length: number, end = this.end): number {
    const size = L.recordSize(length);
    const toEnd = this.capacity - (end & (this.capacity - 1));
    const span = size <= toEnd ? size : toEnd + size;
    return this.capacity - ((end - this.consumer) >>> 0) >= span + L.RECORD_RESERVE ? span : -1;
  }
}

/**
 * One publication by hand, as docs/LAYOUT.md's producer steps say, cut into
 * its steps; `published` is the index of the step whose store publishes it.
 */
function handSteps(
  data32: Int32Array,
  data: Uint8Array,
  ctl: Int32Array,
  capacity: number,
  position: number,
  m: Message,
  defer: boolean,
  corked: boolean,
): { steps: Array<() => void>; published: number; deferredStore: () => void } {
  const mask = capacity - 1;
  const size = L.recordSize(m.bytes.length);
  const index = position & mask;
  const toEnd = capacity - index;
  const wraps = size > toEnd;
  const at = wraps ? 0 : index;
  const end = (position + (wraps ? toEnd + size : size)) | 0;
  const first = wraps ? index : at; // the header that publishes (deferred if corked)
  const firstLength = wraps ? toEnd : m.bytes.length + L.RECORD_HEADER;
  const storeFirst = (): void => {
    Atomics.store(data32, first >> 2, firstLength);
  };
  const steps: Array<() => void> = [
    () => {
      data.set(m.bytes, at + L.RECORD_HEADER);
      data32[(at >> 2) + L.RECORD_TYPE_I32] = m.type;
    },
    () => {
      data32[((at + size) & mask) >> 2] = 0;
    },
  ];
  if (wraps) {
    steps.push(() => Atomics.store(data32, at >> 2, m.bytes.length + L.RECORD_HEADER));
    steps.push(() => {
      data32[(index >> 2) + L.RECORD_TYPE_I32] = L.PADDING_TYPE;
    });
  }
  steps.push(defer ? () => undefined : storeFirst);
  const published = steps.length - 1;
  if (!corked) steps.push(() => Atomics.store(ctl, L.PRODUCER_POSITION_I32, end)); // not while a header is deferred
  return { steps, published, deferredStore: storeFirst };
}

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant('write' as const),
      length: fc.integer({ min: 0, max: 24 }),
      type: fc.integer({ min: 0, max: 9 }),
    }),
  },
  { weight: 4, arbitrary: fc.constant({ op: 'read' as const }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('drain' as const), limit: fc.integer({ min: 1, max: 4 }) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('die' as const),
      messages: fc.array(fc.record({ length: fc.integer({ min: 0, max: 24 }), type: fc.integer({ min: 0, max: 9 }) }), {
        minLength: 1,
        maxLength: 3,
      }),
      steps: fc.integer({ min: 0, max: 8 }),
      corked: fc.integer({ min: 0, max: 3 }).map((k) => k === 0),
    }),
  },
);

/** The counters run() adds to: what the runs exercised, for the assertions that they did. */
function newStats(): Record<string, number> {
  return { runs: 0, handOvers: 0, publishedByHand: 0, diedBeforePositionStore: 0, lostBeforeLength: 0, lostInBatch: 0, delivered: 0 };
}

function run(capacity: number, start: number, commands: readonly Command[], stats: Record<string, number>): void {
  const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity }) });
  SpscRing.create(region, { capacity });
  const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
  Atomics.store(ctl, L.PRODUCER_POSITION_I32, start | 0);
  Atomics.store(ctl, L.CONSUMER_POSITION_I32, start | 0);
  const data = new Uint8Array(region.buffer, L.DATA_OFFSET, capacity);
  const data32 = new Int32Array(region.buffer, L.DATA_OFFSET, capacity / 4);
  const consumer = SpscRing.attach(region);
  let producer = SpscRing.attach(region);
  const model = new Model(capacity, start >>> 0);
  let serial = 0;

  const expect = (got: Uint8Array | null, type: number, what: string): void => {
    const head = model.published.shift();
    if (head === undefined) {
      assert.equal(got, null, `${what}: the consumer read a record that was not published (or twice)`);
      return;
    }
    assert.ok(got !== null, `${what}: a published record was not readable`);
    assert.deepEqual([...got], [...head.bytes], `${what}: payload`);
    assert.equal(type, head.type, `${what}: type`);
    model.delivered++;
  };
  const read = (what: string): void => {
    const got = consumer.tryRead();
    if (got === null) {
      assert.equal(model.published.length, 0, `${what}: ${model.published.length} published records not readable`);
      return;
    }
    expect(got, consumer.lastType, what);
    model.consumer = consumer.readPosition;
  };

  for (const [i, c] of commands.entries()) {
    const what = `command ${i} (${c.op})`;
    switch (c.op) {
      case 'write': {
        const m = messageOf(c.length, c.type, serial++);
        const span = model.span(c.length);
        const ok = producer.tryWrite(m.bytes, m.type);
        assert.equal(ok, span >= 0, `${what}: tryWrite of ${c.length} B; the model says ${span >= 0 ? '' : 'no '}room`);
        if (ok) {
          model.end = (model.end + span) >>> 0;
          model.published.push(m);
          assert.equal(producer.writePosition, model.end, `${what}: the producer's position (after a hand-over: the walk)`);
        }
        break;
      }
      case 'read':
        read(what);
        break;
      case 'drain': {
        const got: Message[] = [];
        consumer.drain((d, offset, length, type) => got.push({ bytes: d.slice(offset, offset + length), type }), c.limit);
        assert.ok(got.length <= c.limit);
        if (got.length < c.limit) assert.ok(got.length === model.published.length, `${what}: drain stopped before the published records`);
        for (const m of got) expect(m.bytes, m.type, what);
        model.consumer = consumer.readPosition;
        break;
      }
      case 'die': {
        // The producer's role passes to a hand producer, which publishes step by step (the consumer reads
        // between the steps) and dies after `steps` steps of its last message; then a new SpscRing producer.
        producer.detach();
        let position = model.end;
        // docs/LAYOUT.md "A new producer", step 3: the hand producer stores the end it walked to before it
        // publishes anything, so the consumer is never more than one publication ahead of PRODUCER_POSITION.
        if (Atomics.load(ctl, L.PRODUCER_POSITION_I32) !== (position | 0)) Atomics.store(ctl, L.PRODUCER_POSITION_I32, position | 0);
        let deferred = false;
        for (const [k, spec] of c.messages.entries()) {
          const m = messageOf(spec.length, spec.type, serial++);
          const span = model.span(spec.length, position >>> 0); // from the hand producer's end (a corked batch's included)
          if (span < 0) break; // no room: the hand producer would wait; it dies here instead
          const defer = c.corked && k === 0;
          const { steps, published } = handSteps(data32, data, ctl, capacity, position, m, defer, c.corked);
          deferred ||= defer;
          const last = k === c.messages.length - 1;
          const todo = last ? Math.min(c.steps, steps.length) : steps.length;
          for (let s = 0; s < todo; s++) {
            steps[s]!();
            if (s === published && !deferred) {
              model.published.push(m);
              stats.publishedByHand!++;
            }
            read(`${what}, message ${k}, after step ${s}`);
          }
          if (todo > published && !deferred) {
            position = (position + span) | 0;
            model.end = position >>> 0; // published: the next producer must resume after it
            if (todo === published + 1) stats.diedBeforePositionStore!++;
          } else if (deferred) {
            // Behind the never-stored first header of a corked batch: the whole batch is lost; the next producer
            // resumes at the batch's start (model.end stays) and writes over it.
            position = (position + span) | 0;
            stats.lostInBatch!++;
          } else {
            stats.lostBeforeLength!++;
          }
          if (todo < steps.length) break; // died mid-publication
        }
        producer = SpscRing.attach(region);
        stats.handOvers!++;
        break;
      }
    }
    assert.ok(consumer.size <= capacity, `${what}: size ${consumer.size}`);
  }
  // The end: every published record is delivered once, in order.
  while (model.published.length > 0) read('the end');
  assert.equal(consumer.tryRead(), null, 'the end: nothing after the last published record');
  stats.delivered! += model.delivered;
}

describe('SpscRing layout version 2: the record header publishes the record', function () {
  this.timeout(120_000);
  const stats = newStats();

  it('the consumer sees a record exactly once its LENGTH is stored; a producer that dies after any step is handed over without a duplicate or a loss', function () {
    fc.assert(
      fc.property(
        fc.constantFrom(64, 128, 256),
        fc.oneof(
          fc.integer({ min: 0, max: 64 }).map((k) => k * 8),
          fc.integer({ min: 1, max: 128 }).map((k) => 2 ** 32 - k * 8),
        ),
        fc.array(commandArb, { minLength: 1, maxLength: 80 }),
        (capacity, start, commands) => {
          stats.runs!++;
          run(capacity, start, commands, stats);
        },
      ),
      { numRuns: NUM_RUNS },
    );
    console.log(`      ${JSON.stringify(stats)}`);
    assert.ok(stats.diedBeforePositionStore! > 30, 'few producers died between their LENGTH store and their position store');
    assert.ok(stats.lostBeforeLength! > 20 && stats.lostInBatch! > 5 && stats.handOvers! > 100);
  });

  it('a producer that died between its LENGTH store and its position store: the next one walks on, the consumer gets each record once', function () {
    const capacity = 64;
    const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity }) });
    const first = SpscRing.create(region, { capacity });
    const consumer = SpscRing.attach(region);
    assert.ok(first.tryWrite(new Uint8Array([1]), 1));
    first.detach();
    const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
    const data32 = new Int32Array(region.buffer, L.DATA_OFFSET, capacity / 4);
    // By hand at position 16: a record of 2 bytes, published (LENGTH stored), the position not stored.
    new Uint8Array(region.buffer, L.DATA_OFFSET + 16 + 8, 2).set([2, 2]);
    data32[(16 >> 2) + 1] = 2;
    data32[32 >> 2] = 0;
    Atomics.store(data32, 16 >> 2, 8 + 2);
    assert.equal(Atomics.load(ctl, L.PRODUCER_POSITION_I32), 16);
    assert.equal(consumer.size, 16, 'size counts what the stored position says');
    const next = SpscRing.attach(region);
    const at = next.claim(3);
    assert.ok(at >= 0);
    // LAYOUT.md "A new producer", step 3: the walked end is stored before this producer publishes anything.
    assert.equal(Atomics.load(ctl, L.PRODUCER_POSITION_I32), 32, 'the walked end, stored before the first publication');
    next.data.set([3, 3, 3], at);
    next.commit(at, 3);
    assert.equal(next.writePosition, 48);
    const got: number[][] = [];
    for (let m = consumer.tryRead(); m !== null; m = consumer.tryRead()) got.push([consumer.lastType, ...m]);
    assert.deepEqual(got, [
      [1, 1],
      [2, 2, 2],
      [3, 3, 3, 3],
    ]);
  });

  it('two producers in a row die between their LENGTH and position stores: the third attaches, walks on, and loses nothing', function () {
    // fast-check's counterexample (seed 575856113): the second dying producer publishes past the first one's
    // unstored end; it stored that end first (step 3 of "A new producer"), so the third one's attach finds
    // the positions at most one publication apart.
    const stats = newStats();
    run(
      64,
      168,
      [
        { op: 'write', length: 1, type: 0 },
        {
          op: 'die',
          messages: [
            { length: 1, type: 0 },
            { length: 17, type: 0 },
          ],
          steps: 3,
          corked: false,
        },
        { op: 'die', messages: [{ length: 9, type: 0 }], steps: 5, corked: false },
        { op: 'write', length: 0, type: 0 },
      ],
      stats,
    );
    assert.equal(stats.diedBeforePositionStore, 2);
    assert.equal(stats.delivered, 5);
  });

  it('refuses a version 1 ring of every kind with ERR_SHMRING_VERSION_MISMATCH, saying what to do', function () {
    const rings: Array<[string, () => Region, (r: Region) => unknown]> = [
      [
        'SpscRing',
        () => {
          const r = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: 64 }) });
          SpscRing.create(r, { capacity: 64 });
          return r;
        },
        (r) => SpscRing.attach(r),
      ],
      [
        'MpmcQueue',
        () => {
          const r = Region.create({ backing: 'sab', size: MpmcQueue.regionSize({ capacity: 4, slotSize: 8 }) });
          MpmcQueue.create(r, { capacity: 4, slotSize: 8 });
          return r;
        },
        (r) => MpmcQueue.attach(r),
      ],
      [
        'LatestValue',
        () => {
          const r = Region.create({ backing: 'sab', size: LatestValue.regionSize({ maxSize: 16 }) });
          LatestValue.create(r, { maxSize: 16 });
          return r;
        },
        (r) => LatestValue.attach(r),
      ],
    ];
    assert.equal(L.LAYOUT_VERSION, 2);
    for (const [name, make, attach] of rings) {
      const region = make();
      new Int32Array(region.buffer)[L.VERSION_I32] = 1;
      assert.throws(
        () => attach(region),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'ERR_SHMRING_VERSION_MISMATCH', name);
          assert.match(err.message, /layout version 1\b/, name);
          assert.match(err.message, /speaks version 2\b/, name);
          assert.match(err.message, /recreate the ring/, name);
          return true;
        },
      );
    }
  });
});
