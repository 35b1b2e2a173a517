/**
 * select / selectSync against a model: N queues (SpscRings, MpmcQueues,
 * MpscRings and lossless Broadcasts over SharedArrayBuffer regions) and a
 * plain model of each (its messages, and for the byte rings the two byte
 * positions by the rules of their layouts, so the model knows exactly when
 * a message of a given length fits). A Broadcast's read entries are its
 * one subscriber, its write entries its publisher (which nobody closes
 * here: a closed publisher is no entry any more). Random
 * sequences of writes, reads, closes (by a second object: the other side)
 * and selects over a few entry lists (read entries and { queue, write }
 * entries, duplicates allowed). Each select must:
 *  - return the entry the fairness rule names: the first ready one in
 *    cyclic order from the start index, which is one past the index the
 *    last select over the same array returned, or, for an array not passed
 *    before, one past the index this thread's last select returned;
 *  - so never a not-ready entry, and never time out while one is ready;
 *  - when none is ready, time out (selectSync, timeoutMs 0), or (select)
 *    stay pending until an action makes one ready, then resolve with the
 *    entry the rule names at that moment;
 *  - leave every WAITERS word at 0, and consume nothing.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import {
  Broadcast,
  MpmcQueue,
  MpscRing,
  select,
  selectSync,
  SpscRing,
  type BroadcastPublisher,
  type BroadcastSubscriber,
  type SelectEntry,
} from '../src/index.js';
import type { Queue } from '../src/queue.js';
import * as L from '../src/layout.js';

const NUM_RUNS = 500;
/** A pending select must resolve this soon after an action made an entry ready (it never naps: only a wake-up ends it). */
const WOKEN_MS = 2000;

interface QueueSpec {
  kind: 'spsc' | 'mpmc' | 'mpsc' | 'broadcast';
  /** Byte rings: bytes (64..256); MpmcQueue: slots (2..8). */
  capacity: number;
  /** SpscRing, MpscRing: where both positions start (0 or just below 2^32, to cross the wrap). */
  start: number;
}

/** An entry of a list: read from queue `q`, or room for a message of `fraction` of its largest. */
interface EntrySpec {
  q: number;
  write: number | undefined;
}

type Command =
  | { kind: 'write'; q: number; fraction: number }
  | { kind: 'read'; q: number }
  | { kind: 'close'; q: number }
  | { kind: 'select'; list: number; fresh: boolean; sync: boolean; pick: number; how: number };

const SLOT_SIZE = 16;
/** A MpmcQueue slot a write gave up (the queue closed after its claim): tryRead passes over it. */
const SKIP = -1;

const queueSpec: fc.Arbitrary<QueueSpec> = fc.oneof(
  fc.record({
    kind: fc.constant('spsc' as const),
    capacity: fc.constantFrom(64, 128, 256),
    start: fc.oneof(
      fc.constant(0),
      fc.integer({ min: 1, max: 64 }).map((k) => 2 ** 32 - k * 8),
    ),
  }),
  fc.record({ kind: fc.constant('mpmc' as const), capacity: fc.constantFrom(2, 4, 8), start: fc.constant(0) }),
  fc.record({
    kind: fc.constant('mpsc' as const),
    capacity: fc.constantFrom(64, 128, 256),
    start: fc.oneof(
      fc.constant(0),
      fc.integer({ min: 1, max: 64 }).map((k) => 2 ** 32 - k * 8),
    ),
  }),
  fc.record({ kind: fc.constant('broadcast' as const), capacity: fc.constantFrom(64, 128, 256), start: fc.constant(0) }),
);

const fraction = fc.oneof(fc.constant(0), fc.constant(1), fc.double({ min: 0, max: 1, noNaN: true }));

function scenario(): fc.Arbitrary<{ queues: QueueSpec[]; lists: EntrySpec[][]; commands: Command[] }> {
  return fc.array(queueSpec, { minLength: 1, maxLength: 4 }).chain((queues) => {
    const q = fc.nat({ max: queues.length - 1 });
    // Read entries two times in three: queues are empty more often than full.
    const entry = fc.record({
      q,
      write: fc
        .option(fraction, { nil: undefined, freq: 2 })
        .chain((w) => (w === undefined ? fc.constant(undefined) : fc.oneof(fc.constant(undefined), fc.constant(w)))),
    });
    return fc.array(fc.array(entry, { minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 3 }).chain((lists) => {
      const command: fc.Arbitrary<Command> = fc.oneof(
        { weight: 4, arbitrary: fc.record({ kind: fc.constant('write' as const), q, fraction }) },
        { weight: 5, arbitrary: fc.record({ kind: fc.constant('read' as const), q }) },
        { weight: 1, arbitrary: fc.record({ kind: fc.constant('close' as const), q }) },
        {
          weight: 8,
          arbitrary: fc.record({
            kind: fc.constant('select' as const),
            list: fc.nat({ max: lists.length - 1 }),
            fresh: fc.boolean(),
            sync: fc.boolean(),
            // Which not-ready entry an action makes ready (a pending select), and how.
            pick: fc.nat(),
            how: fc.nat({ max: 5 }),
          }),
        },
      );
      return fc.record({
        queues: fc.constant(queues),
        lists: fc.constant(lists),
        commands: fc.array(command, { minLength: 10, maxLength: 60 }),
      });
    });
  });
}

/** One queue and its model. */
class Subject {
  /** The object of read entries, and of write entries (one object but for a Broadcast). */
  readonly queue: Queue;
  readonly writer: Queue;
  /** The other side's object over the same ring (it closes the ring); none for a Broadcast. */
  readonly peer: Queue | undefined;
  readonly ctl: Int32Array;
  readonly max: number;
  /** What the queue holds, oldest first: messages' lengths, and SKIP for a slot a write gave up (MpmcQueue). */
  readonly lengths: number[] = [];
  /** Byte rings: the record bytes (padding included) each message took. */
  readonly taken: number[] = [];
  producer: number;
  consumer: number;
  closed = false;

  constructor(readonly spec: QueueSpec) {
    const size =
      spec.kind === 'spsc'
        ? SpscRing.regionSize({ capacity: spec.capacity })
        : spec.kind === 'mpsc'
          ? MpscRing.regionSize({ capacity: spec.capacity })
          : spec.kind === 'broadcast'
            ? Broadcast.regionSize({ capacity: spec.capacity, subscribers: 1 })
            : MpmcQueue.regionSize({ capacity: spec.capacity, slotSize: SLOT_SIZE });
    const region = Region.create({ backing: 'sab', size });
    this.ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
    if (spec.kind === 'spsc' || spec.kind === 'mpsc') {
      const Kind = spec.kind === 'spsc' ? SpscRing : MpscRing;
      const creator = Kind.create(region, { capacity: spec.capacity });
      // Both positions (an empty ring) at `start`, then attach: the new objects read them.
      Atomics.store(this.ctl, L.PRODUCER_POSITION_I32, spec.start | 0);
      Atomics.store(this.ctl, L.CONSUMER_POSITION_I32, spec.start | 0);
      const queue = Kind.attach(region);
      this.queue = this.writer = queue;
      // The other side that closes the ring: an MpscRing's is its creator (an object that only attached and
      // never wrote nor read would just let go); it has used no position, so `start` stands.
      this.peer = spec.kind === 'mpsc' ? creator : Kind.attach(region);
      this.max = queue.maxMessageLength;
    } else if (spec.kind === 'broadcast') {
      const publisher: BroadcastPublisher = Broadcast.create(region, { capacity: spec.capacity, lossless: true, subscribers: 1 });
      this.writer = publisher;
      this.queue = Broadcast.subscribe(region) as BroadcastSubscriber;
      this.peer = undefined;
      this.max = publisher.maxMessageLength;
    } else {
      this.queue = this.writer = MpmcQueue.create(region, { capacity: spec.capacity, slotSize: SLOT_SIZE });
      this.peer = MpmcQueue.attach(region);
      this.max = SLOT_SIZE;
    }
    this.producer = spec.start;
    this.consumer = spec.start;
  }

  /** Bytes (padding and record) a message of `length` takes at the producer position now; byte rings. */
  #needed(length: number): number {
    const size = L.recordSize(length);
    const toEnd = this.spec.capacity - (this.producer % this.spec.capacity);
    return size <= toEnd ? size : toEnd + size;
  }

  fits(length: number): boolean {
    if (this.spec.kind === 'mpmc') return this.lengths.length < this.spec.capacity;
    // SpscRing keeps RECORD_RESERVE free; MpscRing and a lossless Broadcast fill the ring.
    const reserve = this.spec.kind === 'spsc' ? L.RECORD_RESERVE : 0;
    return this.spec.capacity - ((this.producer - this.consumer) >>> 0) >= this.#needed(length) + reserve;
  }

  /** Nobody closes a Broadcast here (see the header). */
  get closeable(): boolean {
    return this.peer !== undefined;
  }

  write(length: number): boolean {
    if (this.closed && this.spec.kind === 'mpsc') {
      // An MpscRing's producers stop once its consumer side closed it.
      assert.throws(
        () => this.writer.tryWrite(new Uint8Array(length)),
        (err) => (err as ShmringError).code === ErrorCodes.CLOSED,
      );
      return false;
    }
    const fits = this.fits(length);
    if (this.closed && this.spec.kind === 'mpmc') {
      // A closed MpmcQueue takes no message: a write that wins a slot gives it up as a skip, and throws (as a
      // write to a full closed queue does).
      assert.throws(
        () => this.writer.tryWrite(new Uint8Array(length)),
        (err) => (err as ShmringError).code === ErrorCodes.CLOSED,
      );
      if (fits) this.lengths.push(SKIP);
      return false;
    }
    const ok = this.writer.tryWrite(new Uint8Array(length).fill(length & 0xff));
    assert.equal(ok, fits, `tryWrite of ${length} B: the model says ${fits ? '' : 'no '}room`);
    if (ok) {
      if (this.spec.kind !== 'mpmc') {
        const needed = this.#needed(length);
        this.taken.push(needed);
        this.producer = (this.producer + needed) >>> 0;
      }
      this.lengths.push(length);
    }
    return ok;
  }

  read(): void {
    const message = this.queue.tryRead();
    while (this.lengths[0] === SKIP) this.lengths.shift(); // tryRead passes over skips
    if (this.lengths.length === 0) {
      assert.equal(message, null, 'tryRead of an empty queue');
      return;
    }
    assert.ok(message !== null, `tryRead: the model holds ${this.lengths.length} messages`);
    assert.equal(message.length, this.lengths.shift());
    if (this.spec.kind !== 'mpmc') this.consumer = (this.consumer + this.taken.shift()!) >>> 0;
  }

  close(): void {
    if (this.peer === undefined) return;
    this.peer.close();
    this.closed = true;
  }

  length(entry: EntrySpec): number {
    return Math.round(entry.write! * this.max);
  }

  /** Would the entry's verb go ahead now (a message / room is there, or the queue is closed)? */
  ready(entry: EntrySpec): boolean {
    if (this.closed) return true;
    return entry.write === undefined ? this.lengths.length > 0 : this.fits(this.length(entry));
  }

  /** Nobody is announced in either wait block. */
  checkNoWaiters(what: string): void {
    assert.equal(Atomics.load(this.ctl, L.READ_WAITERS_I32), 0, `${what}: READ_WAITERS`);
    assert.equal(Atomics.load(this.ctl, L.WRITE_WAITERS_I32), 0, `${what}: WRITE_WAITERS`);
  }
}

const totals = { runs: 0, selects: 0, immediate: 0, timedOut: 0, woken: 0, notFirst: 0, closedReady: 0 };
/** Selects won by an entry of each kind, read and write. */
const won: Record<string, number> = {};

/** A ready queue outside every run: a select over it must change nothing of a run's fairness state. */
const anchor = (() => {
  const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: 64 }) });
  const ring = SpscRing.create(region, { capacity: 64 });
  ring.tryWrite(new Uint8Array(1));
  return ring;
})();

async function runScenario(queues: QueueSpec[], lists: EntrySpec[][], commands: Command[]): Promise<void> {
  const subjects = queues.map((spec) => new Subject(spec));
  const arrays: SelectEntry[][] = lists.map((list) =>
    list.map((e) => (e.write === undefined ? subjects[e.q]!.queue : { queue: subjects[e.q]!.writer, write: subjects[e.q]!.length(e) })),
  );
  // The model of the fairness state: one past the last index, per array and per the queue its first entry names.
  const cursors = new Map<number, number>();
  const firstCursors = new Map<Queue, number>();
  const firstQueue = (list: EntrySpec[]): Queue =>
    list[0]!.write === undefined ? subjects[list[0]!.q]!.queue : subjects[list[0]!.q]!.writer;
  assert.equal(selectSync([anchor]), 0); // a select over other queues changes nothing here
  totals.runs++;

  const readyIndex = (list: EntrySpec[], start: number): number => {
    for (let k = 0; k < list.length; k++) {
      const i = (start + k) % list.length;
      if (subjects[list[i]!.q]!.ready(list[i]!)) return i;
    }
    return -1;
  };
  const checkAll = (what: string): void => {
    for (const s of subjects) s.checkNoWaiters(what);
  };

  for (const [step, command] of commands.entries()) {
    const what = `step ${step} (${command.kind})`;
    switch (command.kind) {
      case 'write': {
        const s = subjects[command.q]!;
        s.write(Math.round(command.fraction * s.max));
        break;
      }
      case 'read':
        subjects[command.q]!.read();
        break;
      case 'close':
        subjects[command.q]!.close();
        break;
      case 'select': {
        totals.selects++;
        const list = lists[command.list]!;
        const entries = command.fresh ? [...arrays[command.list]!] : arrays[command.list]!;
        const byFirst = firstCursors.get(firstQueue(list)) ?? 0;
        const start = (command.fresh ? byFirst : (cursors.get(command.list) ?? byFirst)) % list.length;
        let expected = readyIndex(list, start);
        let got: number;
        if (expected >= 0) {
          totals.immediate++;
          got = command.sync ? selectSync(entries, { timeoutMs: 0 }) : await select(entries, { timeoutMs: 0 });
        } else if (command.sync) {
          assert.throws(
            () => selectSync(entries, { timeoutMs: 0 }),
            (err) => (err as ShmringError).code === ErrorCodes.TIMEOUT,
            `${what}: selectSync with nothing ready`,
          );
          totals.timedOut++;
          checkAll(what);
          break;
        } else {
          // Nothing is ready: select parks; then one action makes an entry ready.
          let settled = false;
          const pending = select(entries, { peerTimeoutMs: Infinity }).finally(() => (settled = true));
          await new Promise((resolve) => setImmediate(resolve));
          assert.equal(settled, false, `${what}: select resolved while nothing was ready`);
          const notReady = list.map((_e, i) => i).filter((i) => !subjects[list[i]!.q]!.ready(list[i]!));
          const target = list[notReady[command.pick % notReady.length]!]!;
          const s = subjects[target.q]!;
          if (command.how === 0 && s.closeable) {
            s.close();
            totals.closedReady++;
          } else if (target.write === undefined) {
            s.write(Math.min(command.how, s.max)); // an empty queue: it fits
          } else {
            while (!s.ready(target)) s.read(); // a full queue: read until the message fits
          }
          expected = readyIndex(list, start);
          assert.ok(expected >= 0);
          let timer: NodeJS.Timeout | undefined;
          got = await Promise.race([
            pending,
            new Promise<never>((_, reject) => {
              timer = setTimeout(
                () => reject(new Error(`${what}: select still pending ${WOKEN_MS} ms after an entry became ready (a lost wake-up)`)),
                WOKEN_MS,
              );
            }),
          ]).finally(() => clearTimeout(timer));
          totals.woken++;
        }
        assert.equal(
          got,
          expected,
          `${what}: select over [${list.map((e) => `${e.q}${e.write === undefined ? 'r' : 'w'}`)}] from ${start}`,
        );
        if (got !== start) totals.notFirst++;
        const winner = `${subjects[list[got]!.q]!.spec.kind} ${list[got]!.write === undefined ? 'read' : 'write'}`;
        won[winner] = (won[winner] ?? 0) + 1;
        firstCursors.set(firstQueue(list), got + 1);
        if (!command.fresh) cursors.set(command.list, got + 1);
        checkAll(what);
        break;
      }
    }
  }
  // Nothing select did consumed a message: the model's contents are all still there.
  for (const s of subjects) {
    while (s.lengths.length > 0) s.read();
    s.read();
  }
}

describe('select against a model', () => {
  after(() => {
    console.log(
      `      ${totals.runs} runs, ${totals.selects} selects: ${totals.immediate} found a ready entry, ` +
        `${totals.timedOut} timed out, ${totals.woken} woke when an entry became ready (${totals.closedReady} by a close); ` +
        `${totals.notFirst} returned an entry other than the start; won by kind: ${JSON.stringify(won)}`,
    );
  });

  it('returns the first ready entry from the rotating start, never a not-ready one, and wakes when one becomes ready', async () => {
    await fc.assert(
      fc.asyncProperty(scenario(), ({ queues, lists, commands }) => runScenario(queues, lists, commands)),
      { numRuns: NUM_RUNS },
    );
    assert.ok(totals.woken > 200 && totals.timedOut > 200 && totals.notFirst > 200, `coverage: ${JSON.stringify(totals)}`);
    for (const kind of ['spsc', 'mpmc', 'mpsc', 'broadcast']) {
      for (const side of ['read', 'write'])
        assert.ok((won[`${kind} ${side}`] ?? 0) > 50, `coverage: ${kind} ${side} entries won ${JSON.stringify(won)}`);
    }
  });
});
