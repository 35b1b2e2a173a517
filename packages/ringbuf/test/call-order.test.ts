/**
 * The Promise verbs of one object are served in call order (CallLine):
 * write()s made without awaiting each other put their messages in the ring
 * in the order of the calls, however the ring's room comes back; read()s and
 * iterators' next() calls made while others wait get the messages in the
 * order of the calls. Aborting a queued call takes it out of the line without
 * disturbing the others, and its timeoutMs counts from the call.
 */
import { strict as assert } from 'node:assert';
import { mock } from 'node:test';
import { ErrorCodes, MAX_TIMER_MS, Region, type ShmringError } from '@shmring/core';
import { Broadcast, MpmcQueue, MpscRing, SpscRing } from '../src/index.js';
import type { Queue } from '../src/queue.js';

const CAPACITY = 256;
const regions: Region[] = [];

interface Pair {
  writer: Queue;
  reader: Queue;
}

const KINDS: Record<string, () => Pair> = {
  SpscRing: () => {
    const region = memfd(SpscRing.regionSize({ capacity: CAPACITY }));
    return { reader: SpscRing.create(region, { capacity: CAPACITY }), writer: SpscRing.attach(region) };
  },
  MpscRing: () => {
    const region = memfd(MpscRing.regionSize({ capacity: CAPACITY }));
    return { reader: MpscRing.create(region, { capacity: CAPACITY }), writer: MpscRing.attach(region) };
  },
  MpmcQueue: () => {
    const options = { capacity: 8, slotSize: 16 };
    const region = memfd(MpmcQueue.regionSize(options));
    return { reader: MpmcQueue.create(region, options), writer: MpmcQueue.attach(region) };
  },
  'Broadcast (lossless)': () => {
    const region = memfd(Broadcast.regionSize({ capacity: CAPACITY }));
    const writer = Broadcast.create(region, { capacity: CAPACITY, lossless: true });
    return { writer, reader: Broadcast.subscribe(region) };
  },
};

function memfd(size: number): Region {
  const region = Region.create({ backing: 'memfd', size, name: 'shmring-call-order' });
  regions.push(region);
  return region;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Reads `count` one-byte messages with tryRead, pausing now and then so that room comes back a little at a time. */
async function takeSlowly(reader: Pair['reader'], count: number): Promise<number[]> {
  const got: number[] = [];
  while (got.length < count) {
    const m = reader.tryRead();
    if (m === null) await sleep(1);
    else {
      got.push(m[0]!);
      if (got.length % 5 === 0) await sleep(2);
    }
  }
  return got;
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

describe('Promise verbs of one object are served in call order', () => {
  afterEach(() => {
    for (const r of regions.splice(0)) r.close();
  });

  for (const [kind, make] of Object.entries(KINDS)) {
    it(`${kind}: write()s not awaited one by one land in call order while the ring is full`, async () => {
      const { writer, reader } = make();
      const writes = range(60).map((i) => writer.write(Uint8Array.of(i), { timeoutMs: 10_000 }));
      const got = await takeSlowly(reader, 60);
      await Promise.all(writes);
      assert.deepEqual(got, range(60));
    });

    it(`${kind}: lastType after awaiting a read() is the type of that read's message, not of the one a queued read took next`, async () => {
      const { writer, reader } = make();
      // Four reads pending on an empty ring, then four messages: the first read wakes, the three queued ones
      // find theirs waiting at once.
      const reads = [1, 2, 3, 4].map(() => reader.read({ timeoutMs: 10_000 }));
      for (const type of [1, 2, 3, 4]) assert.equal(writer.tryWrite(Uint8Array.of(type), type), true);
      for (const [i, read] of reads.entries()) {
        assert.deepEqual([...(await read)], [i + 1]);
        assert.equal(
          reader.lastType,
          i + 1,
          `a queued read started before the await of read ${i + 1} resumed, and took its message's type`,
        );
      }
      // The same for next() calls of an iterator, queued behind one another.
      const iterator = reader.messages({ timeoutMs: 10_000 });
      const nexts = [1, 2, 3].map(() => iterator.next());
      for (const type of [5, 6, 7]) assert.equal(writer.tryWrite(Uint8Array.of(type), type), true);
      for (const [i, next] of nexts.entries()) {
        assert.deepEqual([...((await next).value as Uint8Array)], [i + 5]);
        assert.equal(reader.lastType, i + 5, `next() ${i + 1}`);
      }
      await iterator.return?.();
    });

    it(`${kind}: read()s made while others wait get the messages in call order`, async () => {
      const { writer, reader } = make();
      const reads = range(4).map(() => reader.read({ timeoutMs: 10_000 }));
      await sleep(5); // every read has found the ring empty: the first waits, the others are queued
      for (const i of range(4)) assert.equal(writer.tryWrite(Uint8Array.of(100 + i)), true);
      // A read made now must not overtake the four before it, although a message is there for it.
      const late = reader.read({ timeoutMs: 10_000 });
      assert.equal(writer.tryWrite(Uint8Array.of(104)), true);
      const got = (await Promise.all([...reads, late])).map((m) => m[0]);
      assert.deepEqual(got, [100, 101, 102, 103, 104]);
    });
  }

  it('promises of queued writes settle in call order', async () => {
    const { writer, reader } = KINDS.SpscRing!();
    const order: number[] = [];
    const writes = range(40).map((i) => writer.write(Uint8Array.of(i)).then(() => order.push(i)));
    await takeSlowly(reader, 40);
    await Promise.all(writes);
    assert.deepEqual(order, range(40));
  });

  it('an abort of a queued write takes only that write out; the others keep their order', async () => {
    const { writer, reader } = KINDS.SpscRing!();
    // Fill the ring, so the next write waits.
    let filled = 0;
    while (writer.tryWrite(Uint8Array.of(200))) filled++;
    const controller = new AbortController();
    const first = writer.write(Uint8Array.of(1));
    const aborted = writer.write(Uint8Array.of(2), { signal: controller.signal });
    const third = writer.write(Uint8Array.of(3));
    controller.abort();
    await assert.rejects(aborted, { name: 'AbortError' });
    const got = (await takeSlowly(reader, filled + 2)).slice(filled);
    await Promise.all([first, third]);
    assert.deepEqual(got, [1, 3]);
    assert.equal(reader.tryRead(), null);
  });

  it("a queued write's timeoutMs counts from its call, not from when its turn came", async () => {
    const { writer } = KINDS.SpscRing!();
    while (writer.tryWrite(Uint8Array.of(0))) {}
    const first = writer.write(Uint8Array.of(1), { timeoutMs: 150 });
    const second = writer.write(Uint8Array.of(2), { timeoutMs: 200 });
    await assert.rejects(first, (err: ShmringError) => err.code === ErrorCodes.TIMEOUT);
    const firstEnded = performance.now();
    await assert.rejects(second, (err: ShmringError) => err.code === ErrorCodes.TIMEOUT);
    const after = performance.now() - firstEnded;
    // Counted from its call, the second ends some 50 ms after the first (less when the first's timer was late);
    // counted from when its turn came (the first's end), 200 ms after.
    assert.ok(
      after < 130,
      `the second write timed out ${after.toFixed(0)} ms after the first (timeoutMs 200 and 150, from the same moment)`,
    );
  });

  it("a queued call that times out after its turn came names the caller's timeoutMs, not what was left of it", async () => {
    const { writer, reader } = KINDS.SpscRing!();
    const timedOutAfter = (timeoutMs: number) => (err: ShmringError) => {
      assert.equal(err.code, ErrorCodes.TIMEOUT, String(err));
      assert.match(err.message, new RegExp(`timed out after timeoutMs=${timeoutMs}$`));
      return true;
    };
    // In each pair the first call times out after 40 ms; the second then starts with 60 ms left of its 100, and waits them out.
    const reads = [reader.read({ timeoutMs: 40 }), reader.read({ timeoutMs: 100 })];
    await assert.rejects(reads[0]!, timedOutAfter(40));
    await assert.rejects(reads[1]!, timedOutAfter(100));
    while (writer.tryWrite(Uint8Array.of(0))) {}
    const writes = [writer.write(Uint8Array.of(1), { timeoutMs: 40 }), writer.write(Uint8Array.of(2), { timeoutMs: 100 })];
    await assert.rejects(writes[0]!, timedOutAfter(40));
    await assert.rejects(writes[1]!, timedOutAfter(100));
  });

  it('a queued call times out in the line when the call ahead of it never ends', async () => {
    const { writer, reader } = KINDS.SpscRing!();
    while (writer.tryWrite(Uint8Array.of(0))) {}
    const stuck = writer.write(Uint8Array.of(1)); // no timeout: waits for room that never comes
    const started = performance.now();
    await assert.rejects(writer.write(Uint8Array.of(2), { timeoutMs: 50 }), (err: ShmringError) => err.code === ErrorCodes.TIMEOUT);
    assert.ok(performance.now() - started < 1_000);
    const read = reader.read(); // the line of reads is empty: a message is there, taken at once
    assert.equal((await read)[0], 0);
    await stuck; // room came: the first write went in; the timed-out one never did
    const rest: number[] = [];
    for (let m = reader.tryRead(); m !== null; m = reader.tryRead()) rest.push(m[0]!);
    assert.equal(rest.at(-1), 1);
    assert.equal(rest.includes(2), false);
  });

  it("a queued call's timeoutMs past setTimeout's limit (2^31 − 1 ms) waits the whole of it", async () => {
    const { writer, reader } = KINDS.SpscRing!();
    while (writer.tryWrite(Uint8Array.of(0))) {}
    const stuck = writer.write(Uint8Array.of(1)); // no timeout: parked until room comes
    const settleTurns = async (): Promise<void> => {
      for (let i = 0; i < 5; i++) await new Promise(setImmediate);
    };
    mock.timers.enable({ apis: ['setTimeout'] });
    let queued: Promise<void>;
    let settled = false;
    try {
      queued = writer.write(Uint8Array.of(2), { timeoutMs: MAX_TIMER_MS + 1_000 });
      queued.then(
        () => (settled = true),
        () => (settled = true),
      );
      mock.timers.tick(MAX_TIMER_MS); // where a timer capped at the limit fires (a plain setTimeout: at 1 ms)
      await settleTurns();
      assert.equal(settled, false, 'the queued write timed out before its timeoutMs');
      mock.timers.tick(1_000);
      await settleTurns();
    } finally {
      mock.timers.reset();
    }
    await assert.rejects(queued, (err: ShmringError) => err.code === ErrorCodes.TIMEOUT);
    assert.equal(reader.tryRead()?.[0], 0); // room for the stuck one
    await stuck;
  });

  it("an iterator's next() calls and read()s of one object take messages in call order", async () => {
    const { writer, reader } = KINDS.SpscRing!();
    const iterator = reader.messages();
    const calls = [iterator.next(), iterator.next(), reader.read(), iterator.next()];
    await sleep(5);
    for (const i of range(4)) assert.equal(writer.tryWrite(Uint8Array.of(10 + i)), true);
    const [a, b, c, d] = await Promise.all(calls);
    const value = (r: IteratorResult<Uint8Array> | Uint8Array): number => (r instanceof Uint8Array ? r[0]! : (r.value as Uint8Array)[0]!);
    assert.deepEqual(
      [a, b, c, d].map((r) => value(r!)),
      [10, 11, 12, 13],
    );
    await iterator.return!();
  });

  it('return() ends every next() of that iterator still queued, and leaves the other reads in line', async () => {
    const { writer, reader } = KINDS.SpscRing!();
    const first = reader.read();
    const iterator = reader.messages();
    const dropped = [iterator.next(), iterator.next()];
    const after = reader.read();
    await iterator.return!();
    assert.deepEqual(await Promise.all(dropped), [
      { done: true, value: undefined },
      { done: true, value: undefined },
    ]);
    assert.equal(writer.tryWrite(Uint8Array.of(1)), true);
    assert.equal(writer.tryWrite(Uint8Array.of(2)), true);
    assert.equal((await first)[0], 1);
    assert.equal((await after)[0], 2);
  });

  it('an aborted signal rejects a queued read at once and takes nothing', async () => {
    const { writer, reader } = KINDS.SpscRing!();
    const first = reader.read({ timeoutMs: 10_000 });
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(reader.read({ signal: controller.signal }), { name: 'AbortError' });
    assert.equal(writer.tryWrite(Uint8Array.of(7)), true);
    assert.equal((await first)[0], 7);
  });

  it("an iterator's next() queued behind a read() gets the message after it, and return() ends it without taking any", async () => {
    const { writer, reader } = KINDS.SpscRing!();
    const first = reader.read({ timeoutMs: 10_000 });
    const iterator = reader.messages();
    const queued = iterator.next();
    const abandoned = reader.messages();
    const dropped = abandoned.next();
    assert.deepEqual(await abandoned.return!(), { done: true, value: undefined });
    assert.deepEqual(await dropped, { done: true, value: undefined });
    assert.equal(writer.tryWrite(Uint8Array.of(1)), true);
    assert.equal(writer.tryWrite(Uint8Array.of(2)), true);
    assert.equal((await first)[0], 1);
    const next = await queued;
    assert.equal(next.done, false);
    assert.equal((next.value as Uint8Array)[0], 2);
    await iterator.return!();
    assert.equal(reader.tryRead(), null);
  });

  it('close() of the object ends the waiting write and every queued one with ERR_SHMRING_CLOSED', async () => {
    const { writer } = KINDS.SpscRing!();
    while (writer.tryWrite(Uint8Array.of(0))) {}
    const writes = range(5).map((i) => writer.write(Uint8Array.of(i)));
    await sleep(5);
    writer.close();
    const outcomes = await Promise.allSettled(writes);
    for (const o of outcomes) {
      assert.equal(o.status, 'rejected');
      assert.equal(((o as PromiseRejectedResult).reason as ShmringError).code, ErrorCodes.CLOSED);
    }
  });
});
