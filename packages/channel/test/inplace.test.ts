/**
 * Values encoded in place: under structured clone, a value the fast
 * encoder takes is written straight into room claimed in the ring (twice
 * the last value's size, within one record), and the record is committed
 * with the length written (channel.ts #writeInPlace). Every encoded size
 * around the ring's limits (the claim's guess, the largest record, the
 * whole ring) arrives whole and in order, at every position of the ring
 * (so across its end), in sequences that grow and shrink (a guess too small
 * falls back to the scratch encoder; one larger than a record skips the
 * claim), from both directions, as sends, requests and replies; values
 * that need v8.serialize and Buffers between them; a full ring; and a
 * getter that sends while its value is being encoded in place. And a
 * Buffer taken by a receive that waited for it (the copy read() made is
 * the value: not copied again, and not shared with the ring).
 */
import { strict as assert } from 'node:assert';
import v8 from 'node:v8';
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { ends, pairEnds } from './helpers.js';

const CAPACITY = 1024;

function maxMessageLength(capacity: number): number {
  const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity }) });
  try {
    return SpscRing.create(region, { capacity }).maxMessageLength;
  } finally {
    region.close();
  }
}

const MAX = maxMessageLength(CAPACITY);

/** A plain object (on the fast path) whose v8 encoding is exactly `n` bytes, n >= 16. */
function ofSize(n: number, seed: number): { s: string; i: number } {
  const tag = String.fromCharCode(97 + (seed % 26));
  for (let l = Math.max(0, n - 24); l <= n; l++) {
    const value = { s: tag.repeat(l), i: seed % 50 };
    if (v8.serialize(value).length === n) return value;
  }
  throw new Error(`no value of ${n} bytes`);
}

/** Encoded sizes around the edges: the smallest claim (256), its double, the largest record, the ring. */
function edgeSizes(): number[] {
  const sizes = new Set<number>();
  for (const n of [
    16,
    17,
    24,
    128,
    255,
    256,
    257,
    511,
    512,
    513,
    MAX - 1,
    MAX,
    MAX + 1,
    CAPACITY - 8,
    CAPACITY,
    CAPACITY + 1,
    3 * CAPACITY,
  ]) {
    sizes.add(n);
  }
  return [...sizes].sort((x, y) => x - y);
}

const SIZES = edgeSizes();

describe('values encoded in place in the ring', () => {
  for (const transport of ['pair', 'socket'] as const) {
    const open = (): ReturnType<typeof ends> => ends(transport, { capacity: CAPACITY });

    it(`${transport}: every size around the ring's limits, at every position of the ring, arrives whole and in order`, async function () {
      this.timeout(120_000);
      const { a, b, dispose } = await open();
      try {
        let seed = 0;
        // A small value first shifts the ring's position by 8..64 bytes each round, so the sizes meet the end of the ring everywhere.
        for (let shift = 0; shift < CAPACITY / 8 + 4; shift++) {
          const sent: unknown[] = [];
          sent.push(ofSize(16 + (shift % 8) * 8, seed++));
          for (const n of SIZES) sent.push(ofSize(n, seed++));
          for (const n of [...SIZES].reverse()) sent.push(ofSize(n, seed++));
          const received = (async () => {
            const got: unknown[] = [];
            for (let i = 0; i < sent.length; i++) got.push(await b.receive());
            return got;
          })();
          // Not awaited one by one: a full ring makes the later ones wait behind the first that did not fit.
          await Promise.all(sent.map((v) => a.send(v)));
          assert.deepEqual(await received, sent, `round ${shift}`);
        }
      } finally {
        await dispose();
      }
    });

    it(`${transport}: requests and replies of every size, both ways, mixed with values for v8.serialize and Buffers`, async function () {
      this.timeout(60_000);
      const { a, b, dispose } = await open();
      try {
        a.handle((v) => v);
        b.handle((v) => v);
        const values: unknown[] = [];
        let seed = 0;
        for (const n of SIZES) {
          values.push(ofSize(n, seed++));
          values.push(new Map([[seed, ofSize(Math.min(n, 600), seed)]]));
          values.push(Buffer.alloc(n % 300, seed));
          values.push(new Date(seed));
        }
        for (const [from, name] of [
          [a, 'a'],
          [b, 'b'],
        ] as const) {
          const replies = await Promise.all(values.map((v) => from.request(v)));
          assert.deepEqual(replies, values, `requests from ${name}`);
        }
      } finally {
        await dispose();
      }
    });
  }

  it('a getter that sends while its value is encoded in place: both arrive, the outer value first', async () => {
    const { a, b, dispose } = pairEnds({ capacity: CAPACITY });
    try {
      await a.send({ warm: 'up' }); // the claim's guess is known
      assert.deepEqual(await b.receive(), { warm: 'up' });
      let inner: Promise<void> | undefined;
      const outer = {
        get x(): number {
          inner ??= a.send({ inner: true });
          return 1;
        },
      };
      await a.send(outer);
      await inner;
      const first = await b.receive();
      const second = await b.receive();
      assert.deepEqual([first, second], [{ x: 1 }, { inner: true }]);
    } finally {
      await dispose();
    }
  });

  it('a getter of a value the fast path gives up on (a Date in it) is read at most twice: in place, then by v8.serialize', async () => {
    const { a, b, dispose } = pairEnds({ capacity: CAPACITY });
    try {
      await a.send({ warm: 'up' }); // the claim's guess is known
      assert.deepEqual(await b.receive(), { warm: 'up' });
      let reads = 0;
      const value = {
        get seq(): number {
          return ++reads;
        },
        at: new Date(0),
      };
      await a.send(value);
      const got = (await b.receive()) as { seq: number; at: Date };
      assert.equal(reads, 2, 'the in-place attempt, then v8.serialize (once there was a second fast attempt between them)');
      assert.equal(got.seq, 2);
      assert.deepEqual(got.at, new Date(0));
    } finally {
      await dispose();
    }
  });

  it('a getter that throws during an in-place encode: ERR_SHMRING_ENCODE, nothing sent, the channel goes on', async () => {
    const { a, b, dispose } = pairEnds({ capacity: CAPACITY });
    try {
      await a.send({ warm: 'up' });
      const bad = {
        get x(): number {
          throw new Error('no');
        },
      };
      await assert.rejects(a.send(bad), { code: 'ERR_SHMRING_ENCODE' });
      await a.send({ after: 1 });
      assert.deepEqual(await b.receive(), { warm: 'up' });
      assert.deepEqual(await b.receive(), { after: 1 });
    } finally {
      await dispose();
    }
  });

  it('a getter that sends and then throws during an in-place encode: the outer send fails, the inner one still goes out', async () => {
    const { a, b, dispose } = pairEnds({ capacity: CAPACITY });
    try {
      await a.send({ warm: 'up' });
      assert.deepEqual(await b.receive(), { warm: 'up' });
      let inner: Promise<void> | undefined;
      const bad = {
        get x(): number {
          inner ??= a.send({ inner: true });
          throw new Error('no');
        },
      };
      await assert.rejects(a.send(bad), { code: 'ERR_SHMRING_ENCODE' });
      // Nothing else is sent that would start the writer: the inner send must go out on its own.
      const settled = await Promise.race([inner!.then(() => 'sent'), new Promise((r) => setTimeout(() => r('stuck'), 500))]);
      assert.equal(settled, 'sent', 'the send made by the getter was left queued');
      assert.deepEqual(await b.receive(), { inner: true });
    } finally {
      await dispose();
    }
  });

  for (const transport of ['pair', 'socket'] as const) {
    it(`${transport}: a Buffer that reaches a receive() already waiting is the value's own memory, untouched by later traffic`, async () => {
      const { a, b, dispose } = await ends(transport, { capacity: CAPACITY });
      try {
        const got: Buffer[] = [];
        for (const n of [0, 1, 63, 64, 65, 300, MAX]) {
          const waiting = b.receive(); // waits: the value comes after
          await new Promise((resolve) => setTimeout(resolve, 2));
          const sent = Buffer.alloc(n, n & 0xff);
          await a.send(sent);
          const value = await waiting;
          assert.ok(Buffer.isBuffer(value), `${n}: a Buffer`);
          assert.ok(value.equals(sent), `${n}: its bytes`);
          got.push(value);
        }
        // Fill the ring over and over: what was received stays as it was.
        for (let i = 0; i < 20; i++) {
          const p = b.receive();
          await a.send(Buffer.alloc(MAX, 0xee));
          await p;
        }
        for (const [i, n] of [0, 1, 63, 64, 65, 300, MAX].entries()) assert.ok(got[i]!.equals(Buffer.alloc(n, n & 0xff)), `${n} kept`);
      } finally {
        await dispose();
      }
    });
  }
});
