/**
 * The structured-clone fast path (clone.ts) against its model, v8 itself:
 * whatever it encodes, v8.deserialize reads as the value v8.serialize would
 * have given; whatever v8.serialize writes, fastDecode reads the same way.
 * Values are compared with sameClone below.
 */
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import v8 from 'node:v8';
import fc from 'fast-check';
import { fastDecode, fastEncode, SCRATCH_MAX } from '../src/clone.js';

/**
 * Equal as structured clones: deep-equal, or (for what isDeepStrictEqual
 * never calls equal, an invalid Date) the same v8 serialization. Not the
 * serialization alone: V8 writes an ASCII string as one- or two-byte as it
 * happens to hold it.
 */
const sameClone = (a: unknown, b: unknown): boolean => isDeepStrictEqual(a, b) || v8.serialize(a).equals(v8.serialize(b));

const anything = fc.anything({
  withBigInt: true,
  withDate: true,
  withMap: true,
  withSet: true,
  withTypedArray: true,
  withSparseArray: true,
  withNullPrototype: true,
  withObjectString: true,
  withBoxedValues: true,
});

describe('structured-clone fast path (clone.ts)', () => {
  it('writes bytes that v8.deserialize reads as the value v8 would clone, and reads them back the same', () => {
    let fast = 0;
    fc.assert(
      fc.property(anything, (value) => {
        const expected = v8.deserialize(v8.serialize(value));
        const encoded = fastEncode(value);
        if (encoded === undefined) return;
        fast++;
        const bytes = Buffer.from(encoded);
        assert.ok(sameClone(v8.deserialize(bytes), expected), 'v8.deserialize of the fast bytes');
        assert.ok(sameClone(fastDecode(bytes, 0, bytes.length), expected), 'fastDecode of the fast bytes');
      }),
      { numRuns: 3000 },
    );
    assert.ok(fast > 300, `the fast path took only ${fast} of 3000 values`);
  });

  it('reads whatever v8.serialize writes as v8.deserialize does', () => {
    fc.assert(
      fc.property(anything, (value) => {
        const bytes = v8.serialize(value);
        assert.ok(sameClone(fastDecode(bytes, 0, bytes.length), v8.deserialize(bytes)));
      }),
      { numRuns: 3000 },
    );
  });

  it('keeps the edge cases of numbers, strings and keys', () => {
    const cases: unknown[] = [
      -0,
      0,
      2 ** 31,
      -(2 ** 31),
      2 ** 31 - 1,
      1.5,
      NaN,
      Infinity,
      -Infinity,
      Number.MAX_SAFE_INTEGER,
      '',
      'é',
      'ü€x',
      `${'a'.repeat(100)}€`,
      'ÿ'.repeat(200),
      '\u0000',
      'x'.repeat(1 << 16),
      JSON.parse('{"__proto__": 5}'),
      { 1: 'a', b: 2, 0: 'z' },
      [[[]]],
      [undefined, null, true, false],
    ];
    for (const value of cases) {
      const encoded = fastEncode(value);
      assert.ok(encoded !== undefined, `fast path for ${String(value).slice(0, 20)}`);
      const bytes = Buffer.from(encoded);
      const expected = v8.deserialize(v8.serialize(value));
      assert.ok(sameClone(v8.deserialize(bytes), expected));
      assert.ok(sameClone(fastDecode(bytes, 0, bytes.length), expected));
    }
    const decode = (value: unknown): unknown => {
      const bytes = Buffer.from(fastEncode(value)!);
      return fastDecode(bytes, 0, bytes.length);
    };
    assert.equal(Object.is(decode(-0), -0), true);
    const proto = decode(JSON.parse('{"__proto__": 5}')) as object;
    assert.equal(Object.getPrototypeOf(proto), Object.prototype, '__proto__ stays an own property');
  });

  it('leaves shared and cyclic references, holes, extra array properties and class instances to v8', () => {
    const shared = { a: 1 };
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    class Point {
      constructor(readonly x = 1) {}
    }
    // eslint-disable-next-line no-sparse-arrays
    // A hole and a named property together: as many keys as elements, yet not a dense array.
    const holeAndTag = Object.assign([1, , 3], { tag: 'x' });
    const deletedAndTag = Object.assign([1, 2], { tag: 'x' });
    delete deletedAndTag[0];
    for (const value of [
      { x: shared, y: shared },
      cyclic,
      [1, , 3],
      Object.assign([1], { extra: 2 }),
      holeAndTag,
      deletedAndTag,
      new Point(),
      new Map(),
      1n,
    ]) {
      assert.equal(fastEncode(value), undefined, `taken on the fast path: ${String(value)}`);
    }
  });

  it('leaves a value whose encoding passes SCRATCH_MAX (1 MiB) to v8.serialize: the scratch buffer, kept for the thread, never grows past it', () => {
    const big = 'x'.repeat(SCRATCH_MAX + 1);
    assert.equal(fastEncode(big), undefined);
    assert.equal(fastEncode({ list: [big] }), undefined);
    const underLimit = 'y'.repeat(SCRATCH_MAX - 64);
    const encoded = fastEncode(underLimit)!;
    assert.ok(encoded.buffer.byteLength <= SCRATCH_MAX, `a scratch buffer of ${encoded.buffer.byteLength} bytes`);
    assert.equal(fastDecode(encoded, 0, encoded.length), underLimit);
  });

  it('sends an array with both a hole and a named property as v8 does: the hole and the property kept', () => {
    const value = Object.assign([1, , 3], { tag: 'x' });
    const encoded = fastEncode(value) ?? v8.serialize(value);
    const back = fastDecode(encoded, 0, encoded.length) as unknown[] & { tag?: string };
    assert.equal(1 in back, false, 'the hole came back as an element');
    assert.equal(back.tag, 'x');
    assert.equal(back.length, 3);
  });

  it("decodes an object's keys named like Object.prototype's properties as own properties, also with frozen intrinsics", () => {
    const value = { constructor: 1, toString: 'x', hasOwnProperty: null, __proto__x: 2 };
    const encoded = fastEncode(value)!;
    const frozen = Object.getOwnPropertyDescriptor(Object.prototype, 'toString')!;
    // What --frozen-intrinsics (or SES lockdown) makes of it: an assignment over it throws in strict code.
    Object.defineProperty(Object.prototype, 'toString', { ...frozen, writable: false });
    try {
      assert.deepEqual(fastDecode(encoded, 0, encoded.length), v8.deserialize(Buffer.from(encoded)));
    } finally {
      Object.defineProperty(Object.prototype, 'toString', frozen);
    }
  });

  it('hands malformed strings and integers to v8.deserialize (its error), not a shortened or widened value', () => {
    const header = v8.serialize(null).subarray(0, -1);
    const odd = Buffer.concat([header, Buffer.from([0x63, 3, 0x41, 0, 0x42])]); // a two-byte string of 3 bytes
    assert.throws(() => fastDecode(odd, 0, odd.length));
    const wide = Buffer.concat([header, Buffer.from([0x55, 0xff, 0xff, 0xff, 0xff, 0x7f])]); // a uint32 of 35 bits
    let got: unknown;
    try {
      got = fastDecode(wide, 0, wide.length);
    } catch {
      got = 'threw';
    }
    assert.ok(got === 'threw' || (typeof got === 'number' && got <= 0xffffffff), `decoded ${String(got)}`);
  });

  it('decodes at an offset inside a larger buffer (a record inside the ring)', () => {
    const encoded = Buffer.from(fastEncode({ id: 7, name: 'order', values: [1, 2, 3] })!);
    const ring = Buffer.alloc(encoded.length + 100, 0xee);
    encoded.copy(ring, 37);
    assert.deepEqual(fastDecode(ring, 37, 37 + encoded.length), { id: 7, name: 'order', values: [1, 2, 3] });
  });
});

describe('structured-clone fast path: short strings from reused memory', () => {
  it('decodes whatever short strings pass through the same bytes, in any order (cache slots collide)', () => {
    const ring = Buffer.alloc(64);
    fc.assert(
      fc.property(
        fc.array(fc.string({ unit: fc.constantFrom('a', 'b', 'c', 'é'), minLength: 3, maxLength: 3 }), { minLength: 50, maxLength: 300 }),
        (words) => {
          for (const word of words) {
            const encoded = Buffer.from(fastEncode(word)!);
            encoded.copy(ring, 8);
            assert.equal(fastDecode(ring, 8, 8 + encoded.length), word);
          }
        },
      ),
      { numRuns: 50 },
    );
  });

  it('decodes the bytes now in the memory, not a string remembered from earlier bytes there', () => {
    const ring = Buffer.alloc(64);
    for (const word of ['order', 'ordex', 'Order', 'order', 'o', 'ordered', 'order']) {
      const encoded = Buffer.from(fastEncode({ [word]: word })!);
      ring.fill(0);
      encoded.copy(ring, 8);
      assert.deepEqual(fastDecode(ring, 8, 8 + encoded.length), { [word]: word });
    }
  });
});
