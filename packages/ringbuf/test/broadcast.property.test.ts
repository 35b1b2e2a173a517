/**
 * Broadcast against a model: random sequences of publishes, subscribers
 * joining, reading (tryRead, drain with a limit) and leaving, on a real
 * Broadcast with small capacities (so records wrap and lossy subscribers
 * are lapped), and on a model that is only the list of records published
 * (their byte spans) and each subscriber's index into it. Lossy: a
 * subscriber whose next record was overwritten resumes at the newest one,
 * and received + lost always equals the records published since it
 * joined; no record is ever torn. Lossless: tryWrite refuses exactly when
 * the record would overwrite one a live subscriber has not read, and every
 * subscriber gets every record.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { Broadcast, type BroadcastSubscriber } from '../src/index.js';
import * as L from '../src/layout.js';
import * as B from '../src/broadcast-layout.js';
import { randomBytes } from './helpers.js';

const NUM_RUNS = 150;
const SLOTS = 3;
const CAPACITIES = [64, 128, 256];

type Command =
  | { op: 'publish'; fraction: number; type: number; seed: number }
  | { op: 'subscribe' }
  | { op: 'read'; sub: number }
  | { op: 'drain'; sub: number; limit: number }
  | { op: 'leave'; sub: number };

const command: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      op: fc.constant('publish' as const),
      fraction: fc.oneof(fc.constant(0), fc.constant(1), fc.double({ min: 0, max: 1, noNaN: true })),
      type: fc.integer({ min: 0, max: 0x7fffffff }),
      seed: fc.integer(),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('subscribe' as const) }) },
  { weight: 6, arbitrary: fc.record({ op: fc.constant('read' as const), sub: fc.nat(4) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('drain' as const), sub: fc.nat(4), limit: fc.nat(4) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('leave' as const), sub: fc.nat(4) }) },
);

interface Rec {
  start: number;
  end: number;
  bytes: Uint8Array;
  type: number;
}
interface ModelSub {
  sub: BroadcastSubscriber;
  next: number;
  joined: number;
  lost: number;
  received: number;
}

/** The model's publish: where the record goes (padding before the wrap included), as the layout says. */
function span(tail: number, length: number, capacity: number): { start: number; end: number } {
  const size = L.recordSize(length);
  const toEnd = capacity - (tail % capacity);
  return { start: tail, end: tail + (size <= toEnd ? size : toEnd + size) };
}

function run(capacity: number, lossless: boolean, backing: 'sab' | 'memfd', commands: Command[]): void {
  const size = Broadcast.regionSize({ capacity, subscribers: SLOTS });
  const region = Region.create({ backing, size });
  const pub = Broadcast.create(region, { capacity, lossless, subscribers: SLOTS });
  const records: Rec[] = [];
  let tail = 0;
  const subs: ModelSub[] = [];
  try {
    /** The model's read: the record a subscriber gets next (resuming at the newest when lapped), or undefined. */
    const expectNext = (m: ModelSub): Rec | undefined => {
      if (m.next === records.length) return undefined;
      if (tail - records[m.next]!.start > capacity) {
        assert.ok(!lossless, 'a lossless subscriber was lapped');
        m.lost += records.length - 1 - m.next;
        m.next = records.length - 1;
      }
      m.received++;
      return records[m.next++];
    };
    const check = (_m: ModelSub, got: { bytes: Uint8Array; type: number } | null, want: Rec | undefined): void => {
      if (want === undefined) {
        assert.equal(got, null);
        return;
      }
      assert.ok(got !== null, 'a published record was not delivered');
      assert.deepEqual(got.bytes, want.bytes);
      assert.equal(got.type, want.type);
    };
    const counted = (m: ModelSub): void => {
      assert.equal(m.sub.lost, m.lost);
      assert.equal(m.sub.received, m.received);
    };
    for (const c of commands) {
      switch (c.op) {
        case 'publish': {
          const length = Math.floor(c.fraction * pub.maxMessageLength);
          const bytes = randomBytes(c.seed, length);
          const where = span(tail, length, capacity);
          const live = subs.map((m) => (m.next < records.length ? records[m.next]!.start : tail));
          const fits = !lossless || live.every((cursor) => where.end - cursor <= capacity);
          assert.equal(pub.tryWrite(bytes, c.type), fits);
          if (fits) {
            records.push({ ...where, bytes, type: c.type });
            tail = where.end;
          }
          break;
        }
        case 'subscribe': {
          if (lossless && subs.length === SLOTS) {
            assert.throws(
              () => Broadcast.subscribe(region),
              (err: ShmringError) => err.code === ErrorCodes.BUSY && /subscribers/.test(err.message),
            );
            break;
          }
          subs.push({ sub: Broadcast.subscribe(region), next: records.length, joined: records.length, lost: 0, received: 0 });
          break;
        }
        case 'read': {
          const m = subs[c.sub];
          if (m === undefined) break;
          const got = m.sub.tryRead();
          check(m, got && { bytes: got, type: m.sub.lastType }, expectNext(m));
          counted(m);
          break;
        }
        case 'drain': {
          const m = subs[c.sub];
          if (m === undefined) break;
          const seen: { bytes: Uint8Array; type: number }[] = [];
          const n = m.sub.drain((data, offset, length, type) => seen.push({ bytes: data.slice(offset, offset + length), type }), c.limit);
          assert.equal(n, seen.length);
          for (const got of seen) check(m, got, expectNext(m));
          if (n < c.limit) check(m, null, expectNext(m)); // stopped early: nothing more was published
          counted(m);
          break;
        }
        case 'leave': {
          const m = subs[c.sub];
          if (m === undefined) break;
          m.sub.close();
          assert.throws(
            () => m.sub.tryRead(),
            (err: ShmringError) => err.code === ErrorCodes.CLOSED,
          );
          subs.splice(c.sub, 1);
          break;
        }
      }
    }
    // Everyone takes what is left: received + lost = published since joining; lossless loses nothing.
    pub.close();
    for (const m of subs) {
      while (m.sub.tryRead() !== null) m.received++;
      assert.equal(m.sub.received, m.received);
      assert.equal(m.sub.received + m.sub.lost, records.length - m.joined);
      if (lossless) assert.equal(m.sub.lost, 0);
      assert.throws(
        () => m.sub.readSync({ timeoutMs: 0 }),
        (err: ShmringError) => err.code === ErrorCodes.CLOSED,
      );
      m.sub.close();
    }
  } finally {
    for (const m of subs) m.sub.close();
    pub.close();
    region.close();
  }
}

describe('Broadcast against a model', function () {
  this.timeout(120_000);

  for (const lossless of [false, true]) {
    for (const backing of ['sab', 'memfd'] as const) {
      it(`${lossless ? 'lossless' : 'lossy'} over ${backing}: every subscriber gets what the model says, never a torn record`, function () {
        fc.assert(
          fc.property(fc.constantFrom(...CAPACITIES), fc.array(command, { minLength: 1, maxLength: 120 }), (capacity, commands) =>
            run(capacity, lossless, backing, commands),
          ),
          { numRuns: backing === 'sab' ? NUM_RUNS : NUM_RUNS / 3 },
        );
      });
    }
  }
});

/** Scribbles random words over `words` of the buffer until word 0 of `stop` is set. */
const SCRIBBLER = `
const { workerData } = require('node:worker_threads');
const { buffer, from, to, stop } = workerData;
const i32 = new Int32Array(buffer);
const flag = new Int32Array(stop);
let x = 0x2545f491 | 0;
while (Atomics.load(flag, 0) === 0) {
  for (let k = 0; k < 4096; k++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    const word = from + ((x >>> 0) % (to - from));
    i32[word] = (k & 3) === 0 ? x : (k & 3) === 1 ? -1 : (k & 3) === 2 ? 0x7fffffff : (x & 0xff);
  }
}
`;

describe('Broadcast over hostile memory', function () {
  this.timeout(30_000);

  for (const target of ['data', 'counters and slots'] as const) {
    it(`a peer scribbling over the ${target} gets only whole-looking messages, nulls or ERR_SHMRING_CORRUPT out of a subscriber`, async function () {
      const { Worker } = await import('node:worker_threads');
      const capacity = 256;
      const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity, subscribers: 2 }) });
      const pub = Broadcast.create(region, { capacity, subscribers: 2 });
      const sub = Broadcast.subscribe(region);
      const dataStart = (region.size - capacity) / 4;
      const [from, to] = target === 'data' ? [dataStart, region.size / 4] : [640 / 4, dataStart];
      const stop = new SharedArrayBuffer(4);
      const worker = new Worker(SCRIBBLER, { eval: true, workerData: { buffer: region.buffer, from, to, stop } });
      await new Promise((r) => worker.once('online', r));
      const outcomes = { messages: 0, nulls: 0, corrupt: 0 };
      const until = performance.now() + 1000;
      let i = 0;
      while (performance.now() < until) {
        if ((i++ & 1) === 0) pub.tryWrite(randomBytes(i, i % 100), i & 0xff);
        try {
          const msg = sub.tryRead();
          if (msg === null) {
            outcomes.nulls++;
          } else {
            assert.ok(msg.length <= sub.maxMessageLength, `length ${msg.length} handed out`);
            assert.ok(sub.lastType >= 0, `type ${sub.lastType} handed out`);
            outcomes.messages++;
          }
        } catch (err) {
          assert.equal((err as ShmringError).code, ErrorCodes.CORRUPT, String(err));
          outcomes.corrupt++;
        }
      }
      Atomics.store(new Int32Array(stop), 0, 1);
      await worker.terminate();
      console.log(`      ${JSON.stringify(outcomes)}`);
      // Over scribbled data the subscriber still reads; over scribbled counters its snapshots and lap checks fail, so nulls are right.
      if (target === 'data') assert.ok(outcomes.messages + outcomes.corrupt > 0, 'the subscriber read something');
      sub.close();
      pub.close();
      region.close();
    });
  }
});

describe('Broadcast: positions past 2^32', function () {
  /**
   * A Broadcast of 256 bytes whose records the test writes by hand, as a
   * publisher written from docs/LAYOUT.md alone (a C peer) would: the
   * header laid out by create(), views of the words and the data area, and
   * store64 of the layout for the 64-bit counters.
   */
  function handWritten() {
    const capacity = 256;
    const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity, subscribers: 1 }) });
    const pub = Broadcast.create(region, { capacity, subscribers: 1 });
    const w = new Int32Array(region.buffer);
    const data = new Uint8Array(region.buffer, B.broadcastDataOffset(1), capacity);
    const data32 = new Int32Array(region.buffer, B.broadcastDataOffset(1), capacity / 4);
    const put64 = (c: B.Counter64, v: number): void => {
      Atomics.store(w, c.hi1, Math.floor(v / 2 ** 32));
      Atomics.store(w, c.lo, v | 0);
      Atomics.store(w, c.hi2, Math.floor(v / 2 ** 32));
    };
    return { capacity, region, pub, w, data, data32, put64 };
  }

  /**
   * Starting just below 2^32 bytes, so the 64-bit INTENT and the low-32-bit
   * TAIL and LATEST cross the boundary while a subscriber reads and is lapped.
   */
  it('a subscriber reads across the 2^32-byte boundary and counts a lap across it exactly', function () {
    const { capacity, region, pub, w, data, data32, put64 } = handWritten();
    let tail = 2 ** 32 - 96;
    let count = 5000;
    put64(B.INTENT, tail);
    put64(B.COUNT, count);
    Atomics.store(w, B.TAIL_I32, tail | 0);
    const write = (n: number): void => {
      const bytes = randomBytes(n, 20);
      const size = L.recordSize(bytes.length);
      let index = tail % capacity;
      const toEnd = capacity - index;
      const end = tail + (size <= toEnd ? size : toEnd + size);
      put64(B.INTENT, end);
      put64(B.COUNT, ++count);
      if (size > toEnd) {
        data32[index / 4] = toEnd; // LENGTH: 8 + payload; a padding record's, its whole extent
        data32[index / 4 + 1] = L.PADDING_TYPE;
        index = 0;
      }
      data32[index / 4] = 8 + bytes.length;
      data32[index / 4 + 1] = n;
      data.set(bytes, index + 8);
      Atomics.store(w, B.LATEST_I32, tail | 0);
      Atomics.store(w, B.TAIL_I32, end | 0);
      tail = end;
    };
    const sub = Broadcast.subscribe(region);
    for (let n = 0; n < 40; n++) {
      write(n);
      assert.deepEqual(sub.tryRead(), randomBytes(n, 20));
      assert.equal(sub.lastType, n);
    }
    assert.ok(tail > 2 ** 32 + capacity, 'the positions crossed 2^32');
    for (let n = 40; n < 60; n++) write(n); // 20 records of 32 bytes: more than the ring holds
    assert.deepEqual(sub.tryRead(), randomBytes(59, 20), 'a lapped subscriber resumes at the newest record');
    assert.equal(sub.lost, 19);
    assert.equal(sub.received, 41);
    assert.equal(sub.tryRead(), null);
    sub.close();
    pub.close();
    region.close();
  });

  it('a subscriber lapped by exactly 2^32 bytes sees the lap, though TAIL (32 bits) reads as if it had caught up', async function () {
    const { capacity, region, pub, w, data, data32, put64 } = handWritten();
    let tail = 1024;
    let count = 10;
    put64(B.INTENT, tail);
    put64(B.COUNT, count);
    Atomics.store(w, B.TAIL_I32, tail);
    const sub = Broadcast.subscribe(region);
    assert.equal(sub.tryRead(), null);
    // The publisher goes on through exactly 2^32 bytes: 2^27 records of 32 bytes, of which the ring holds the last.
    const records = 2 ** 27;
    const payload = randomBytes(7, 24);
    const lapExactly = (type: number): void => {
      const end = tail + 2 ** 32;
      const newest = end - 32;
      const index = newest % capacity;
      data32[index / 4] = 8 + payload.length;
      data32[index / 4 + 1] = type;
      data.set(payload, index + 8);
      put64(B.INTENT, end);
      put64(B.COUNT, (count += records));
      Atomics.store(w, B.LATEST_I32, newest | 0);
      Atomics.store(w, B.TAIL_I32, end | 0); // the same 32 bits as the cursor's
      tail = end;
    };
    // A poll looks at INTENT for such a lap every 64th time it finds nothing.
    lapExactly(3);
    let message: Uint8Array | null = null;
    for (let polls = 0; polls < 64 && message === null; polls++) message = sub.tryRead();
    assert.deepEqual(message, payload, 'the lapped subscriber found nothing to read in 64 polls');
    assert.deepEqual([sub.lastType, sub.lost, sub.received], [3, records - 1, 1]);
    assert.equal(sub.tryRead(), null);
    // A wait for readability looks at once.
    lapExactly(4);
    await sub.waitReadable({ timeoutMs: 0 });
    assert.deepEqual(sub.tryRead(), payload);
    assert.deepEqual([sub.lastType, sub.lost, sub.received], [4, 2 * (records - 1), 2]);
    // So does a poll once the publisher closed: received + lost is exact at the end.
    lapExactly(5);
    pub.close();
    assert.deepEqual(sub.tryRead(), payload, 'the lap before the close was not seen');
    assert.deepEqual([sub.lastType, sub.lost, sub.received], [5, 3 * (records - 1), 3]);
    assert.equal(sub.tryRead(), null);
    sub.close();
    pub.close();
    region.close();
  });
});
