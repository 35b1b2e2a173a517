/**
 * Split values: a value larger than the ring's largest record
 * (maxMessageLength, capacity / 2 - 8) travels as a run of records: a SPLIT
 * head that carries its 8-byte total length, then MORE parts (frames.ts).
 * Every size around the edges of that format arrives whole, in both
 * directions, as a send and as a request with its reply, for the 'bytes'
 * codec, for Buffers under structured clone (the raw fast path) and for
 * structured values whose encoding has exactly that size. The edges: one
 * record or a split (maxMessageLength ± 1), whole multiples of the largest
 * part (k * maxMessageLength ± 1), the same shifted by the 8-byte length
 * prefix (for a head that carries the first bytes too), the whole ring
 * (capacity ± 1) and several rings' worth. Then split values queued behind
 * each other and mixed with small values and requests, and one 64 MiB
 * value through a 1 MiB ring.
 */
import { strict as assert } from 'node:assert';
import { Buffer } from 'node:buffer';
import { randomBytes as cryptoRandomBytes } from 'node:crypto';
import v8 from 'node:v8';
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { endsPerTest, randomBytes, socketEnds, type Transport } from './helpers.js';

const CAPACITY = 4096;
/** Bytes of the total-length prefix of a SPLIT record (frames.ts). */
const PREFIX = 8;

/** The largest record of a ring of `capacity` bytes, as the ring itself says. */
function maxMessageLength(capacity: number): number {
  const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity }) });
  try {
    return SpscRing.create(region, { capacity }).maxMessageLength;
  } finally {
    region.close();
  }
}

const MAX = maxMessageLength(CAPACITY);

/** Encoded sizes at every edge of the split format for MAX. */
function edgeSizes(): number[] {
  const sizes = new Set<number>([0, 1, 2]);
  const around = (n: number): void => {
    for (const d of [-1, 0, 1]) if (n + d >= 0) sizes.add(n + d);
  };
  around(MAX - PREFIX); // what a head record could carry besides the length prefix
  around(MAX); // one record / a split value
  around(2 * MAX - PREFIX); // head with data + one full part / + two parts
  around(2 * MAX); // two full parts / three
  around(3 * MAX - PREFIX);
  around(3 * MAX);
  around(CAPACITY); // larger than the whole ring
  around(5 * CAPACITY + 3);
  return [...sizes].sort((x, y) => x - y);
}

const SIZES = edgeSizes();

/** A structured value whose v8 encoding is exactly `n` bytes (undefined if n is too small for one). */
function structuredOfSize(n: number, seed: number): unknown {
  const tag = String.fromCharCode(97 + (seed % 26));
  for (const make of [
    (l: number) => ({ s: tag.repeat(l) }),
    (l: number) => ({ s: tag.repeat(l), t: 1 }),
    (l: number) => [tag.repeat(l), true],
  ]) {
    for (let l = Math.max(0, n - 24); l <= n; l++) {
      const value = make(l);
      if (v8.serialize(value).length === n) return value;
    }
  }
  return undefined;
}

function assertBytes(got: unknown, want: Uint8Array, what: string): void {
  assert.ok(Buffer.isBuffer(got), `${what}: expected a Buffer, got ${typeof got}`);
  assert.equal((got as Buffer).length, want.length, `${what}: length`);
  assert.ok((got as Buffer).equals(want), `${what}: bytes differ`);
}

interface Kind {
  name: string;
  codec: 'bytes' | undefined;
  /** The value of encoded size n (undefined: none of that size). */
  make(n: number, seed: number): unknown;
  check(got: unknown, sent: unknown, what: string): void;
  /** A small value sent after each one: it must arrive intact right after it. */
  marker: unknown;
}

const KINDS: Kind[] = [
  {
    name: "the 'bytes' codec",
    codec: 'bytes',
    make: (n, seed) => new Uint8Array(randomBytes(seed, n)),
    check: (got, sent, what) => assertBytes(got, sent as Uint8Array, what),
    marker: new Uint8Array([0xab, 0xcd]),
  },
  {
    name: 'Buffers under structured clone (raw records)',
    codec: undefined,
    make: (n, seed) => randomBytes(seed, n),
    check: (got, sent, what) => assertBytes(got, sent as Buffer, what),
    marker: Buffer.from([0xab, 0xcd]),
  },
  {
    name: 'structured values encoded to exactly that size',
    codec: undefined,
    make: (n, seed) => structuredOfSize(n, seed),
    check: (got, sent, what) => {
      assert.deepStrictEqual(got, sent, what);
      assert.equal(v8.serialize(got).length, v8.serialize(sent).length, `${what}: encoded size`);
    },
    marker: { marker: true },
  },
];

describe('split values at every size around the record and ring boundaries', function () {
  this.timeout(60_000);

  it(`the edge sizes are those of a ${CAPACITY}-byte ring (maxMessageLength = capacity / 2 - 8 = ${MAX})`, function () {
    assert.equal(MAX, CAPACITY / 2 - 8);
    assert.ok(SIZES.includes(MAX + 1) && SIZES.includes(2 * MAX - PREFIX + 1) && SIZES.includes(2 * MAX + 1));
    // Every structured size from MAX - 9 up has a value of exactly that encoding.
    for (const n of SIZES.filter((s) => s >= MAX - 9))
      assert.notEqual(structuredOfSize(n, 1), undefined, `no structured value of ${n} bytes`);
  });

  for (const kind of KINDS) {
    for (const transport of ['socket', 'pair'] as Transport[]) {
      describe(`${kind.name}, over a ${transport === 'socket' ? 'connect/listen channel' : 'channelPair'}`, function () {
        const ends = endsPerTest(transport, { capacity: CAPACITY, codec: kind.codec });

        it(`sends of sizes ${SIZES.join(', ')} arrive whole either way, each followed intact by the next value`, async function () {
          const { a, b } = ends;
          let seed = 1;
          for (const n of SIZES) {
            for (const [from, to, dir] of [
              [a, b, 'a→b'],
              [b, a, 'b→a'],
            ] as const) {
              const value = kind.make(n, seed++);
              if (value === undefined) continue;
              const got = to.receive();
              const next = to.receive();
              await Promise.all([from.send(value), from.send(kind.marker)]);
              kind.check(await got, value, `${dir} size ${n}`);
              kind.check(await next, kind.marker, `${dir} the value after size ${n}`);
            }
          }
        });

        it('requests of every edge size get replies of every edge size (both split independently)', async function () {
          const { a, b } = ends;
          a.handle((value) => value);
          b.handle((value) => value);
          let seed = 1000;
          for (const n of SIZES) {
            for (const [from, dir] of [
              [a, 'a→b'],
              [b, 'b→a'],
            ] as const) {
              const value = kind.make(n, seed++);
              if (value === undefined) continue;
              kind.check(await from.request(value), value, `${dir} request of size ${n}`);
            }
          }
        });
      });
    }
  }

  // Regression: split values that wait in the writer queue keep their own
  // bytes, not those of a later value encoded into the same scratch buffer
  // (see 'values queued while the ring is full ...' in order.test.ts).
  it('split values queued back to back, between small values and concurrent requests, arrive whole and in order', async function () {
    const s = await socketEnds({ capacity: CAPACITY });
    try {
      // Replies in reverse order of the requests: split replies are written while other split records are queued.
      const held: Array<() => void> = [];
      s.serverSide.handle(
        (value) =>
          new Promise((resolve) => {
            held.push(() => resolve(value));
            if (held.length === 6) for (const release of held.reverse()) release();
          }),
      );
      const values: Buffer[] = SIZES.map((n, i) => randomBytes(i + 77, n));
      // Nothing is awaited between the verbs: every record waits in the writer queue, in call order.
      const sends: Array<Promise<void>> = [];
      const requests: Array<Promise<unknown>> = [];
      for (const [i, v] of values.entries()) {
        sends.push(s.client.send(v));
        sends.push(s.client.send({ after: i }));
        if (i % 3 === 0 && requests.length < 6) requests.push(s.client.request(randomBytes(i + 500, 2 * MAX + 1 + i)));
      }
      assert.equal(requests.length, 6);
      for (const [i, v] of values.entries()) {
        assertBytes(await s.serverSide.receive(), v, `value ${i} (${v.length} bytes)`);
        assert.deepEqual(await s.serverSide.receive(), { after: i });
      }
      await Promise.all(sends);
      const replies = await Promise.all(requests);
      for (const [j, reply] of replies.entries()) {
        const i = j * 3;
        assertBytes(reply, randomBytes(i + 500, 2 * MAX + 1 + i), `reply ${j}`);
      }
    } finally {
      await s.dispose();
    }
  });

  it('one 64 MiB value crosses a 1 MiB ring whole, as a send and as a request with its reply', async function () {
    const s = await socketEnds({ capacity: 1 << 20 });
    try {
      const big = cryptoRandomBytes(64 << 20);
      const got = s.serverSide.receive();
      await s.client.send(big);
      const received = (await got) as Buffer;
      assert.equal(received.length, big.length);
      assert.ok(received.equals(big), 'the 64 MiB value arrived with different bytes');

      // A structured value holding 64 MiB, answered with it.
      s.serverSide.handle((value) => (value as { data: Uint8Array }).data.subarray(0, 16 << 20));
      const reply = (await s.client.request({ data: new Uint8Array(big.buffer, big.byteOffset, big.length) })) as Uint8Array;
      assert.equal(reply.length, 16 << 20);
      assert.ok(Buffer.from(reply.buffer, reply.byteOffset, reply.length).equals(big.subarray(0, 16 << 20)));
    } finally {
      await s.dispose();
    }
  });
});
