/**
 * What an SpscRing's or MpscRing's drain() handler may do with its own
 * object. drain() gives the record in hand back to the producers only once
 * the handler returns, so a read of the same object from the handler is
 * ERR_SHMRING_BUSY (it would give that record back, or hand records out
 * again), and a close() or detach() from it is completed by drain(): drain()
 * stops after the record in hand, stores the head for what it took, and
 * only then gives up the consumer role, so a next consumer takes exactly
 * the records the handler was not handed, and meets no store of this one.
 */
import { strict as assert } from 'node:assert';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { Broadcast, MpscRing, SpscRing } from '../src/index.js';
import * as L from '../src/layout.js';

const CAPACITY = 1024;

const KINDS = [
  { name: 'SpscRing', ring: SpscRing },
  { name: 'MpscRing', ring: MpscRing },
] as const;

type Ring = SpscRing | MpscRing;

/** Message `seq`: 8 bytes, the first one `seq`. */
function message(seq: number): Uint8Array {
  return Uint8Array.of(seq, 1, 2, 3, 4, 5, 6, 7);
}

/** The first byte of each message `read` takes until it finds none. */
function readAll(read: () => Uint8Array | null): number[] {
  const got: number[] = [];
  for (let m = read(); m !== null; m = read()) got.push(m[0]!);
  return got;
}

/** The error code `call` throws, or rejects with; 'none' if it returns. */
async function codeOf(call: () => unknown): Promise<string> {
  try {
    await call();
    return 'none';
  } catch (err) {
    return (err as ShmringError).code;
  }
}

describe('drain() handler re-entry', function () {
  this.timeout(30_000);
  const regions: Region[] = [];

  afterEach(() => {
    for (const r of regions.splice(0)) r.close();
  });

  for (const { name, ring } of KINDS) {
    /** A ring of `backing` with messages 0 .. count-1 in it, and its producer. */
    const filled = (backing: 'memfd' | 'sab', count: number): { region: Region; producer: Ring } => {
      const region = Region.create({ backing, size: ring.regionSize({ capacity: CAPACITY }), name: 'shmring-drain-reentry' });
      regions.push(region);
      ring.create(region, { capacity: CAPACITY }).detach();
      const producer = ring.attach(region);
      for (let seq = 0; seq < count; seq++) assert.ok(producer.tryWrite(message(seq)));
      return { region, producer };
    };

    it(`${name}: a read from its own drain() handler is ERR_SHMRING_BUSY naming the ring, moves nothing, and the batch arrives whole`, async function () {
      const { region, producer } = filled('memfd', 3);
      const consumer = ring.attach(region);
      const ctl = new Int32Array(region.buffer, 0, L.DATA_OFFSET / 4);
      const got: number[] = [];
      const codes: string[] = [];
      const messages: string[] = [];
      const pending: Array<Promise<unknown>> = [];
      const taken = consumer.drain((data, offset) => {
        got.push(data[offset]!);
        // Observes the consumer position as drain() left it before this handler: no read below may move it.
        const before = Atomics.load(ctl, L.CONSUMER_POSITION_I32);
        const reads: Array<() => unknown> = [
          () => consumer.tryRead(),
          () => consumer.readSync({ timeoutMs: 0 }),
          () => consumer.drain(() => {}),
        ];
        if (consumer instanceof SpscRing) reads.push(() => consumer.rewindReads());
        for (const read of reads) {
          try {
            read();
            codes.push('none');
          } catch (err) {
            codes.push((err as ShmringError).code);
            messages.push((err as Error).message);
          }
        }
        // The Promise reads reject (settled after drain() returns, checked below).
        pending.push(consumer.read({ timeoutMs: 0 }), consumer.messages({ timeoutMs: 0 }).next());
        // Observes any store of the head a read from the handler made.
        assert.equal(Atomics.load(ctl, L.CONSUMER_POSITION_I32), before, 'a read from the handler moved the consumer position');
      });
      assert.equal(taken, 3);
      assert.deepEqual(got, [0, 1, 2]);
      const verbs = consumer instanceof SpscRing ? 4 : 3;
      assert.deepEqual(codes, Array(3 * verbs).fill(ErrorCodes.BUSY));
      for (const text of messages) {
        assert.match(text, new RegExp(`^${name}: .*drain\\(\\) handler .*memfd region .*return from the handler first`));
      }
      for (const p of pending) assert.equal(await codeOf(() => p), ErrorCodes.BUSY);
      // Once drain() has returned, the reads work again: nothing is left, nothing was taken twice.
      assert.equal(consumer.tryRead(), null);
      assert.equal(consumer.size, 0);
      assert.ok(producer.tryWrite(message(9)));
      assert.deepEqual(
        readAll(() => consumer.tryRead()),
        [9],
      );
    });

    it(`${name}: waitReadable() from its own drain() handler takes nothing`, async function () {
      const { region } = filled('memfd', 2);
      const consumer = ring.attach(region);
      const waits: Array<Promise<void>> = [];
      const got: number[] = [];
      assert.equal(
        consumer.drain((data, offset) => {
          got.push(data[offset]!);
          if (got.length === 1) waits.push(consumer.waitReadable({ timeoutMs: 5_000 })); // message 1 is there
        }),
        2,
      );
      await Promise.all(waits);
      assert.deepEqual(got, [0, 1]);
      assert.equal(consumer.tryRead(), null);
    });

    for (const backing of ['memfd', 'sab'] as const) {
      for (const [verb, throws] of [
        ['close', false],
        ['detach', false],
        ['detach', true],
      ] as const) {
        const then = throws ? ', then throws' : '';
        it(`${name} (${backing}): ${verb}() from a drain() handler${then}: the consumer role goes only after drain's last store, and a next consumer takes exactly the rest`, function () {
          const { region, producer } = filled(backing, 6);
          const first = ring.attach(region);
          const other = ring.attach(region); // would-be consumer, refused while the first still stores
          const ctl = new Int32Array(region.buffer, 0, L.DATA_OFFSET / 4);
          const data = new Uint8Array(region.buffer, L.DATA_OFFSET, CAPACITY);
          // With role locks: what the ring held when the first gave its role up (roles.release).
          let atRelease: { head: number; data: number[] } | undefined;
          const roles = (first as unknown as { roles?: { release(): void } }).roles;
          if (roles !== undefined) {
            const release = roles.release.bind(roles);
            roles.release = () => {
              // Observes the last consumer-position store made before the role went.
              atRelease ??= { head: Atomics.load(ctl, L.CONSUMER_POSITION_I32), data: [...data] };
              release();
            };
          }
          const got: number[] = [];
          let otherCode = '';
          const boom = new Error('the handler failed');
          const handler = (bytes: Uint8Array, offset: number): void => {
            got.push(bytes[offset]!);
            if (got.length < 3) return;
            first[verb]();
            assert.equal(first.closed, true, 'the object is closed at once');
            assert.throws(() => first.tryWrite(message(99)), { code: ErrorCodes.CLOSED });
            try {
              other.tryRead();
              otherCode = 'none';
            } catch (err) {
              otherCode = (err as ShmringError).code;
            }
            if (throws) throw boom;
          };
          if (throws)
            assert.throws(
              () => first.drain(handler),
              (err) => err === boom,
            );
          else assert.equal(first.drain(handler), 3, 'drain() stops after the record in hand');
          assert.deepEqual(got, [0, 1, 2]);
          assert.equal(otherCode, ErrorCodes.BUSY, 'another consumer took the role while drain() still had stores to make');
          assert.throws(() => first.tryRead(), { code: ErrorCodes.CLOSED });
          // The head drain() stored covers exactly the three records taken (16 bytes each).
          // Observes drain()'s last store of the head.
          assert.equal(Atomics.load(ctl, L.CONSUMER_POSITION_I32), 3 * 16);
          if (roles !== undefined) {
            assert.ok(atRelease, 'the role was given up');
            assert.equal(atRelease.head, 3 * 16, 'the head was stored after the role was given up');
            assert.deepEqual(atRelease.data, [...data], 'the data area was written after the role was given up');
          }
          assert.equal(producer.closed, verb === 'close');
          // A consumer attached afterwards (and the one refused before) takes exactly what the handler was not handed.
          const next = ring.attach(region);
          assert.deepEqual(
            readAll(() => next.tryRead()),
            [3, 4, 5],
          );
          assert.equal(next.size, 0);
          next.detach();
          other.detach();
        });
      }
    }
  }

  describe('a Broadcast subscriber', function () {
    const name = `/shmring-drain-reentry-${process.pid}`;

    /** A POSIX-named Broadcast (one slot), its publisher with messages 0 .. count-1, and a subscriber that joined first. */
    const published = (lossless: boolean, count: number) => {
      const region = Region.create({ backing: 'posix', name, size: Broadcast.regionSize({ capacity: CAPACITY, subscribers: 1 }) });
      regions.push(region);
      const publisher = Broadcast.create(region, { capacity: CAPACITY, subscribers: 1, lossless });
      const subscriber = Broadcast.subscribe(region);
      for (let seq = 0; seq < count; seq++) assert.ok(publisher.tryWrite(message(seq)));
      return { region, publisher, subscriber };
    };

    for (const lossless of [false, true]) {
      it(`(${lossless ? 'lossless' : 'lossy'}) refuses a read from its own drain() handler with ERR_SHMRING_BUSY, and the batch arrives whole`, function () {
        const { region, publisher, subscriber } = published(lossless, 3);
        region.unlink(); // the object lives while mapped
        const got: number[] = [];
        const codes: string[] = [];
        const taken = subscriber.drain((data, offset) => {
          got.push(data[offset]!);
          for (const read of [() => subscriber.tryRead(), () => subscriber.readSync({ timeoutMs: 0 }), () => subscriber.drain(() => {})]) {
            try {
              read();
              codes.push('none');
            } catch (err) {
              codes.push((err as ShmringError).code);
              assert.match((err as Error).message, /drain\(\) handler/);
            }
          }
        });
        assert.equal(taken, 3);
        assert.deepEqual(got, [0, 1, 2]);
        assert.deepEqual(new Set(codes), new Set([ErrorCodes.BUSY]));
        assert.equal(subscriber.tryRead(), null);
        subscriber.close();
        publisher.close();
      });
    }

    it('(lossless) a detach() in the handler keeps the slot until drain() has stored the cursor: a newcomer meanwhile finds it taken', function () {
      const { region, publisher, subscriber } = published(true, 3);
      let newcomer: string | undefined;
      const taken = subscriber.drain((_data, _offset) => {
        if (newcomer !== undefined) return;
        subscriber.detach();
        // Another description of the same object: its slot lock is not ours.
        const other = Region.open({ backing: 'posix', name });
        regions.push(other);
        try {
          Broadcast.subscribe(other).close();
          newcomer = 'joined';
        } catch (err) {
          newcomer = (err as ShmringError).code;
        }
      });
      assert.equal(taken, 1, 'drain() stops after the record in hand');
      assert.equal(newcomer, ErrorCodes.BUSY, "a newcomer took the slot while drain() still had the cursor's store to make");
      // Once drain() returned, the slot is free, and a newcomer joins at the tail with a cursor of its own.
      const again = Region.open({ backing: 'posix', name });
      regions.push(again);
      region.unlink();
      const next = Broadcast.subscribe(again);
      assert.equal(next.tryRead(), null);
      assert.ok(publisher.tryWrite(message(9)));
      assert.equal(next.tryRead()![0], 9);
      next.close();
      publisher.close();
    });
  });
});
