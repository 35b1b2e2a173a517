/**
 * Every kind of value round-trips: fast-check values sent through real
 * channels (a connect/listen channel over a memfd region, and a channelPair
 * opened in this thread) arrive equal to their model, in both directions,
 * as sends and as requests answered by an echo handler.
 *
 * The model of a structured-clone value is v8.deserialize(v8.serialize(x)):
 * the codec is v8's serializer, so the channel must deliver exactly what it
 * delivers (-0, holes of sparse arrays, own "__proto__" keys, boxed values,
 * null-prototype objects that come back with Object.prototype, ...), compared
 * with util.isDeepStrictEqual. The json codec's model is
 * JSON.parse(JSON.stringify(x)); the bytes codec's is a Buffer of the bytes.
 *
 * Rings are 4096 bytes (largest record 2040 bytes), so larger values take
 * the split path too. Typed arrays of every kind, views at offsets, Buffers
 * (the raw fast path, which must come back as a Buffer) and ArrayBuffers
 * get their own tests.
 *
 * Two regression tests check that a typed array received through the
 * structured-clone codec is the receiver's own copy, not a view of the
 * ring's memory.
 */
import { strict as assert } from 'node:assert';
import { Buffer } from 'node:buffer';
import util from 'node:util';
import v8 from 'node:v8';
import fc from 'fast-check';
import type { Channel, CodecOption } from '../src/index.js';
import { endsPerTest, pairEnds, socketEnds, type Transport } from './helpers.js';

const CAPACITY = 4096;
const NUM_RUNS = 200;

/** Whether `value` holds an invalid Date anywhere (util.isDeepStrictEqual never finds two of them equal). */
function hasInvalidDate(value: unknown, seen = new Set<unknown>()): boolean {
  if (value === null || typeof value !== 'object' || seen.has(value)) return false;
  seen.add(value);
  if (value instanceof Date) return Number.isNaN(value.getTime());
  if (ArrayBuffer.isView(value)) return false;
  if (value instanceof Map) return [...value].some(([k, v]) => hasInvalidDate(k, seen) || hasInvalidDate(v, seen));
  if (value instanceof Set) return [...value].some((v) => hasInvalidDate(v, seen));
  return Object.values(value).some((v) => hasInvalidDate(v, seen));
}

const anythingArb = fc
  .anything({
    withBoxedValues: true,
    withMap: true,
    withSet: true,
    withNullPrototype: true,
    withBigInt: true,
    withDate: true,
    withTypedArray: true,
    withSparseArray: true,
    withObjectString: true,
    stringUnit: 'binary',
    maxDepth: 4,
    // 'medium' makes about half the values larger than a 4096-byte ring's largest record: split.
    size: 'medium',
  })
  .filter((value) => !hasInvalidDate(value)); // those are checked by hand below

function structuredModel(value: unknown): unknown {
  return v8.deserialize(v8.serialize(value));
}

function assertModel(got: unknown, model: unknown, sent: unknown): void {
  if (!util.isDeepStrictEqual(got, model)) {
    assert.fail(
      `received ${util.inspect(got, { depth: 8, showHidden: true })}\n  expected ${util.inspect(model, { depth: 8, showHidden: true })}\n  sent ${util.inspect(sent, { depth: 8 })}`,
    );
  }
}

/** Sends `value` from `from` to `to` and returns what `to` received. */
async function viaSend(from: Channel, to: Channel, value: unknown): Promise<unknown> {
  const received = to.receive();
  await from.send(value);
  return received;
}

/**
 * Sends `value` and only then receives it: the record is in the ring before
 * the receiver's pump runs, so it is taken with drain() (a view of the ring)
 * rather than read() (a copy).
 */
async function sendThenReceive(from: Channel, to: Channel, value: unknown): Promise<unknown> {
  // A value that fits is in the ring (published) after this turn of the event loop; a larger one is
  // written as the receiver makes room.
  const sent = from.send(value);
  await new Promise(setImmediate);
  const received = await to.receive();
  await sent;
  return received;
}

describe('round trip: every value kind arrives as its model', function () {
  this.timeout(60_000);

  for (const transport of ['socket', 'pair'] as Transport[]) {
    describe(`over a ${transport === 'socket' ? 'connect/listen channel' : 'channelPair'}`, function () {
      const ends = endsPerTest(transport, { capacity: CAPACITY });

      it('fc.anything() values sent either way arrive equal to their v8 round trip', async function () {
        const { a, b } = ends;
        await fc.assert(
          fc.asyncProperty(anythingArb, fc.boolean(), fc.boolean(), async (value, forward, receiveFirst) => {
            const model = structuredModel(value);
            const [from, to] = forward ? [a, b] : [b, a];
            const got = receiveFirst ? await viaSend(from, to, value) : await sendThenReceive(from, to, value);
            assertModel(got, model, value);
          }),
          { numRuns: NUM_RUNS },
        );
      });

      it('fc.anything() values as requests come back from an echo handler equal to their v8 round trip', async function () {
        const { a, b } = ends;
        a.handle((value) => value);
        b.handle((value) => value);
        await fc.assert(
          fc.asyncProperty(anythingArb, fc.boolean(), async (value, forward) => {
            const model = structuredModel(value);
            const got = forward ? await a.request(value) : await b.request(value);
            assertModel(got, model, value);
          }),
          { numRuns: NUM_RUNS },
        );
      });

      it('typed arrays of every kind, DataViews and ArrayBuffers arrive with their type and bytes', async function () {
        const { a, b } = ends;
        const typedArb = fc.oneof(
          fc.int8Array(),
          fc.uint8Array(),
          fc.uint8ClampedArray(),
          fc.int16Array(),
          fc.uint16Array(),
          fc.int32Array(),
          fc.uint32Array(),
          fc.float32Array(),
          fc.float64Array(),
          fc.bigInt64Array(),
          fc.bigUint64Array(),
          fc.uint8Array({ maxLength: 64 }).map((u) => new DataView(u.buffer)),
          fc.uint8Array({ maxLength: 64 }).map((u) => u.buffer),
          // Views that start and end inside their buffer.
          fc
            .tuple(fc.float64Array({ minLength: 2 }), fc.nat(), fc.nat())
            .map(([f, x, y]) => f.subarray(x % f.length, Math.max(x % f.length, y % (f.length + 1)))),
          fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 5000 }), fc.nat()).map(([u, x]) => u.subarray(x % u.length)),
        );
        await fc.assert(
          fc.asyncProperty(typedArb, fc.boolean(), fc.boolean(), async (value, nested, receiveFirst) => {
            const sent = nested ? { value, list: [value] } : value;
            const model = structuredModel(sent);
            const got = receiveFirst ? await viaSend(a, b, sent) : await sendThenReceive(a, b, sent);
            assertModel(got, model, sent);
          }),
          { numRuns: NUM_RUNS },
        );
      });

      it('a Buffer (the raw fast path) arrives as a Buffer with the same bytes, at any size', async function () {
        const { a, b } = ends;
        await fc.assert(
          fc.asyncProperty(fc.uint8Array({ maxLength: 3 * CAPACITY }), fc.nat(), async (bytes, cut) => {
            // A Buffer that is a view at an offset of a larger one.
            const whole = Buffer.concat([Buffer.from([7, 7, 7]), Buffer.from(bytes)]);
            const sent = whole.subarray(3 + (bytes.length === 0 ? 0 : cut % (bytes.length + 1)));
            const got = cut % 2 === 0 ? await viaSend(b, a, sent) : await sendThenReceive(b, a, sent);
            assert.ok(Buffer.isBuffer(got), `expected a Buffer, got ${util.inspect(got)}`);
            assert.ok(sent.equals(got as Buffer));
            const nested = await viaSend(a, b, { sent });
            assertModel(nested, structuredModel({ sent }), { sent });
          }),
          { numRuns: 100 },
        );
      });

      it('the awkward values: -0, NaN, holes, own "__proto__" keys, lone surrogates, undefined, null-prototype objects', async function () {
        const { a, b } = ends;
        const proto = JSON.parse('{"__proto__": {"x": 1}, "y": [1, 2]}') as unknown;
        const nullProto = Object.assign(Object.create(null) as object, { k: 1 });
        // eslint-disable-next-line no-sparse-arrays
        const cases: unknown[] = [
          -0,
          NaN,
          [1, , 3],
          new Array(5),
          proto,
          '\ud800x\udfff',
          undefined,
          null,
          nullProto,
          new Date(0),
          /re+/gi,
          new Map([[{ k: 1 }, new Set([1n])]]),
          Object(1n),
          Object('s'),
          2n ** 80n,
          new Error('boom'),
        ];
        for (const value of cases) {
          const got = await viaSend(a, b, value);
          assertModel(got, structuredModel(value), value);
        }
        const invalid = (await viaSend(a, b, [new Date(NaN), new Map([[1, new Date(NaN)]])])) as [Date, Map<number, Date>];
        assert.ok(invalid[0] instanceof Date && Number.isNaN(invalid[0].getTime()), 'an invalid Date stays one');
        assert.ok(invalid[1].get(1) instanceof Date && Number.isNaN(invalid[1].get(1)!.getTime()));
        // -0 keeps its sign (isDeepStrictEqual would also accept only -0, but say it plainly).
        assert.ok(Object.is(await viaSend(a, b, -0), -0));
        const holes = (await viaSend(a, b, [1, , 3])) as unknown[];
        assert.equal(1 in holes, false, 'the hole stays a hole');
        const own = (await viaSend(a, b, proto)) as object;
        assert.ok(Object.hasOwn(own, '__proto__'), '"__proto__" stays an own key');
        assert.equal(Object.getPrototypeOf(own), Object.prototype, 'and does not become the prototype');
      });
    });
  }

  it('json codec: fc.jsonValue() values arrive as JSON.parse(JSON.stringify(value))', async function () {
    const s = await socketEnds({ capacity: CAPACITY, codec: 'json' });
    try {
      s.serverSide.handle((value) => value);
      await fc.assert(
        fc.asyncProperty(fc.jsonValue(), fc.boolean(), async (value, asRequest) => {
          const model = JSON.parse(JSON.stringify(value)) as unknown;
          const got = asRequest ? await s.client.request(value) : await viaSend(s.serverSide, s.client, value);
          assertModel(got, model, value);
        }),
        { numRuns: NUM_RUNS },
      );
    } finally {
      await s.dispose();
    }
  });

  it('bytes codec: Uint8Arrays, other views and ArrayBuffers arrive as Buffers of their bytes', async function () {
    const p = pairEnds({ capacity: CAPACITY, codec: 'bytes' });
    try {
      const viewArb = fc.oneof(
        fc.uint8Array({ maxLength: 3 * CAPACITY }),
        fc.uint16Array({ maxLength: 100 }),
        fc.float64Array({ maxLength: 100 }),
        fc.uint8Array({ maxLength: 200 }).map((u) => u.buffer),
        fc.uint8Array({ minLength: 1, maxLength: 200 }).map((u) => new DataView(u.buffer, 1)),
      );
      await fc.assert(
        fc.asyncProperty(viewArb, async (value) => {
          const bytes = value instanceof ArrayBuffer ? Buffer.from(value) : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
          const expected = Buffer.from(bytes); // a copy, before anything is sent
          const got = await viaSend(p.a, p.b, value);
          assert.ok(Buffer.isBuffer(got), `expected a Buffer, got ${util.inspect(got)}`);
          assert.ok(expected.equals(got as Buffer), `bytes differ for ${util.inspect(value)}`);
        }),
        { numRuns: NUM_RUNS },
      );
    } finally {
      await p.dispose();
    }
  });

  it('a custom codec: what decode() returns for what encode() made arrives, for sends, requests and replies', async function () {
    const codec: CodecOption = {
      encode: (value) => Buffer.from(`<${JSON.stringify(value)}>`, 'utf8'),
      decode: (bytes) => JSON.parse(Buffer.from(bytes).toString('utf8').slice(1, -1)) as unknown,
    };
    const s = await socketEnds({ capacity: CAPACITY, codec });
    try {
      assert.equal(s.client.codec, 'custom');
      s.serverSide.handle((value) => ({ echo: value }));
      await fc.assert(
        fc.asyncProperty(fc.jsonValue(), async (value) => {
          const model = JSON.parse(JSON.stringify(value)) as unknown;
          assertModel(await viaSend(s.client, s.serverSide, value), model, value);
          assertModel(await s.client.request(value), { echo: model }, value);
        }),
        { numRuns: 100 },
      );
    } finally {
      await s.dispose();
    }
  });

  describe("received typed arrays are the receiver's own memory", function () {
    // Regression: Node's v8 deserializer returns an aligned typed array as a
    // *view* of its input buffer (lib/v8.js DefaultDeserializer._readHostObject).
    // Handed the ring's memory, a received Uint8Array (or Buffer / Int32Array
    // / ... inside a value) would alias the ring: later traffic would
    // overwrite it, and once a memfd channel ends it would be detached
    // (length 0). The decoder must give it bytes of its own.
    it('a Uint8Array received through structured clone keeps its bytes when later values reuse the ring', async function () {
      const p = pairEnds({ capacity: CAPACITY });
      try {
        const first = (await sendThenReceive(p.a, p.b, new Uint8Array([1, 2, 3, 4]))) as Uint8Array;
        assert.deepEqual([...first], [1, 2, 3, 4]);
        // Lap the ring a few times.
        for (let i = 0; i < 200; i++) await viaSend(p.a, p.b, new Uint8Array(100).fill(i));
        assert.deepEqual([...first], [1, 2, 3, 4], 'the first value changed under the receiver: it is a view of the ring');
      } finally {
        await p.dispose();
      }
    });

    it('a typed array received over a connect/listen channel keeps its bytes after the channel closed', async function () {
      const s = await socketEnds({ capacity: CAPACITY });
      let got: { u8: Uint8Array; i32: Int32Array; buf: Buffer };
      try {
        got = (await sendThenReceive(s.serverSide, s.client, {
          u8: new Uint8Array([9, 8, 7]),
          i32: new Int32Array([-1, 5]),
          buf: Buffer.from('kept'),
        })) as typeof got;
      } finally {
        await s.dispose();
      }
      assert.deepEqual([...got.u8], [9, 8, 7], 'the Uint8Array lost its bytes when the region was unmapped');
      assert.deepEqual([...got.i32], [-1, 5], 'the Int32Array lost its bytes when the region was unmapped');
      assert.equal(got.buf.toString(), 'kept', 'the Buffer lost its bytes when the region was unmapped');
    });
  });
});
