/**
 * A fast path for structured clone: the common values (plain objects, dense
 * arrays, strings, numbers, booleans, null, undefined) encoded and decoded
 * here, in V8's own serialization format (the subset of tags those values
 * use), and everything else left to v8.serialize / v8.deserialize.
 *
 * Why: v8.serialize and v8.deserialize construct a serializer object per
 * call, cost about 2 µs each for a small object, and allocate a Buffer per
 * value; a channel pays one of each per message on each side. Writing the
 * same bytes here into a reused scratch buffer, and reading them straight
 * from the ring, costs a fraction of that.
 *
 * The bytes are V8's format: v8.deserialize reads what encode() writes, and
 * decode() reads what v8.serialize writes (it hands the whole value to
 * v8.deserialize as soon as it meets a tag outside the subset). encode()
 * gives up (returns undefined, and the caller uses v8.serialize) on
 * anything else: another prototype, a Map, a Date, a BigInt, a typed array,
 * an array with holes or extra properties, an object met twice (shared or
 * cyclic references keep their identity only through v8), a graph deeper
 * or larger than the limits below.
 */
import { types } from 'node:util';
import v8 from 'node:v8';

// Tags of V8's ValueSerializer (src/objects/value-serializer.cc), as bytes.
const TAG_PADDING = 0x00;
const TAG_VERSION = 0xff;
const TAG_NULL = 0x30; // '0'
const TAG_UNDEFINED = 0x5f; // '_'
const TAG_TRUE = 0x54; // 'T'
const TAG_FALSE = 0x46; // 'F'
const TAG_INT32 = 0x49; // 'I', zigzag varint
const TAG_UINT32 = 0x55; // 'U', varint
const TAG_DOUBLE = 0x4e; // 'N', 8 bytes little-endian
const TAG_ONE_BYTE_STRING = 0x22; // '"', varint byte length, Latin-1
const TAG_TWO_BYTE_STRING = 0x63; // 'c', varint byte length, UTF-16LE
const TAG_UTF8_STRING = 0x53; // 'S', varint byte length, UTF-8
const TAG_BEGIN_OBJECT = 0x6f; // 'o'
const TAG_END_OBJECT = 0x7b; // '{', varint property count
const TAG_BEGIN_DENSE_ARRAY = 0x41; // 'A', varint length
const TAG_END_DENSE_ARRAY = 0x24; // '$', varint property count, varint length

/** The header v8.serialize writes (version tag and this V8's format version). */
const HEADER = v8.serialize(null).subarray(0, -1);
// The format version is one varint byte (below 128) in every V8 Node has
// shipped; a V8 that writes another header gets no fast path at all.
const HEADER_LENGTH = 2;
const HEADER_VERSION = HEADER[1]!;
const FAST = HEADER.length === HEADER_LENGTH && HEADER[0] === TAG_VERSION;

/** Largest encoding the fast path writes into its scratch buffer (1 MiB). */
export const SCRATCH_MAX = 1 << 20;

/** Objects and arrays one value may hold on the fast path. */
const MAX_OBJECTS = 64;
/** Nesting depth on the fast path. */
const MAX_DEPTH = 32;
/** Longest array on the fast path. */
const MAX_ARRAY = 256;
/** Strings up to this length are written char by char; longer ones through Buffer's Latin-1 writer. */
const SHORT_STRING = 32;
// eslint-disable-next-line no-control-regex
const NOT_LATIN1 = /[^\u0000-\u00ff]/;

/** Buffer's own decoder, without toString's argument handling (it is on Buffer.prototype, untyped). */
interface SliceMethods {
  latin1Slice(start: number, end: number): string;
}

class Bail extends Error {}
const BAIL = new Bail();

/** Thrown by a Writer whose target is fixed (claimed ring space) when the value does not fit. */
const NO_ROOM = new Bail();

/**
 * Writes values into a scratch buffer that is reused from one value to the
 * next (and grows), or into a fixed target: claimed ring space, through a
 * Buffer over its memory, up to `limit`.
 */
class Writer {
  scratch: Buffer = Buffer.allocUnsafe(4096);
  buf: Buffer = this.scratch;
  pos = 0;
  /** End of the room in `buf`. */
  limit = this.buf.length;
  /** Writing into a fixed target: running out of room throws NO_ROOM instead of growing. */
  fixed = false;
  /** A value is being written: an encode that starts meanwhile (a getter that sends) leaves this one alone. */
  busy = false;
  /** Objects and arrays of the value being written, in seen[0, seenCount). */
  readonly seen: Array<object | undefined> = new Array<object | undefined>(MAX_OBJECTS).fill(undefined);
  seenCount = 0;

  reserve(n: number): void {
    if (this.pos + n <= this.limit) return;
    if (this.fixed) throw NO_ROOM;
    // The scratch buffer lives as long as the thread: a value larger than SCRATCH_MAX (a long string) goes to
    // v8.serialize, whose buffer goes with the value, instead of keeping that much memory for good.
    if (this.pos + n > SCRATCH_MAX) throw BAIL;
    const bigger = Buffer.allocUnsafe(Math.min(SCRATCH_MAX, Math.max(this.buf.length * 2, this.pos + n)));
    this.buf.copy(bigger, 0, 0, this.pos);
    this.scratch = this.buf = bigger;
    this.limit = bigger.length;
  }

  varint(n: number): void {
    if (n < 0x80 && this.pos < this.limit) {
      this.buf[this.pos++] = n;
      return;
    }
    this.reserve(10);
    const buf = this.buf;
    while (n >= 0x80) {
      buf[this.pos++] = (n & 0x7f) | 0x80;
      n = Math.floor(n / 128);
    }
    buf[this.pos++] = n;
  }

  string(s: string): void {
    const length = s.length;
    if (length <= SHORT_STRING) {
      this.reserve(length + 6);
      const start = this.pos;
      const buf = this.buf;
      buf[start] = TAG_ONE_BYTE_STRING;
      buf[start + 1] = length; // below 128: a one-byte varint
      let at = start + 2;
      for (let i = 0; i < length; i++) {
        const c = s.charCodeAt(i);
        if (c > 0xff) {
          this.pos = start;
          this.twoByte(s);
          return;
        }
        buf[at++] = c;
      }
      this.pos = at;
      return;
    }
    if (NOT_LATIN1.test(s)) {
      this.twoByte(s);
      return;
    }
    this.reserve(length + 11);
    this.buf[this.pos++] = TAG_ONE_BYTE_STRING;
    this.varint(length);
    this.pos += this.buf.write(s, this.pos, length, 'latin1');
  }

  twoByte(s: string): void {
    const bytes = s.length * 2;
    this.reserve(bytes + 12);
    // V8 aligns two-byte contents to 2 bytes, with a padding tag before the string's tag.
    if (((this.pos + 1 + varintSize(bytes)) & 1) !== 0) this.buf[this.pos++] = TAG_PADDING;
    this.buf[this.pos++] = TAG_TWO_BYTE_STRING;
    this.varint(bytes);
    this.pos += this.buf.write(s, this.pos, bytes, 'utf16le');
  }

  value(v: unknown, depth: number): void {
    switch (typeof v) {
      case 'string':
        this.string(v);
        return;
      case 'number':
        if ((v | 0) === v && !(v === 0 && 1 / v < 0)) {
          this.reserve(6);
          this.buf[this.pos++] = TAG_INT32;
          this.varint(((v << 1) ^ (v >> 31)) >>> 0);
        } else {
          this.reserve(9);
          this.buf[this.pos++] = TAG_DOUBLE;
          this.pos = this.buf.writeDoubleLE(v, this.pos);
        }
        return;
      case 'boolean':
        this.reserve(1);
        this.buf[this.pos++] = v ? TAG_TRUE : TAG_FALSE;
        return;
      case 'undefined':
        this.reserve(1);
        this.buf[this.pos++] = TAG_UNDEFINED;
        return;
      case 'object':
        if (v === null) {
          this.reserve(1);
          this.buf[this.pos++] = TAG_NULL;
          return;
        }
        if (depth >= MAX_DEPTH || this.seenCount >= MAX_OBJECTS) throw BAIL;
        // A Proxy goes to v8.serialize, which refuses it as structuredClone does (DataCloneError): read
        // here through its traps, a small one would travel as the plain object it poses as and a larger
        // one (past the limits above) be refused, and a revoked one would throw from Array.isArray.
        if (types.isProxy(v)) throw BAIL;
        for (let i = 0; i < this.seenCount; i++) if (this.seen[i] === v) throw BAIL;
        this.seen[this.seenCount++] = v;
        if (Array.isArray(v)) this.array(v, depth);
        else this.object(v, depth);
        return;
      default:
        // bigint, function, symbol: v8.serialize's business (and its error).
        throw BAIL;
    }
  }

  array(a: unknown[], depth: number): void {
    const length = a.length;
    if (length > MAX_ARRAY || Object.getPrototypeOf(a) !== Array.prototype) throw BAIL;
    // Object.keys lists the indices first, ascending, then the named properties: `length` keys of which the
    // last is index length - 1 are exactly the indices 0 .. length - 1, no hole and nothing else on the array
    // (a count alone let a named property stand in for a hole: [1, , 3] with a.tag came out [1, undefined, 3]).
    const keys = Object.keys(a);
    if (keys.length !== length || (length > 0 && keys[length - 1] !== String(length - 1))) throw BAIL;
    this.reserve(1);
    this.buf[this.pos++] = TAG_BEGIN_DENSE_ARRAY;
    this.varint(length);
    for (let i = 0; i < length; i++) this.value(a[i], depth + 1);
    this.reserve(1);
    this.buf[this.pos++] = TAG_END_DENSE_ARRAY;
    this.varint(0);
    this.varint(length);
  }

  object(o: object, depth: number): void {
    const proto: unknown = Object.getPrototypeOf(o);
    if (proto !== Object.prototype && proto !== null) throw BAIL;
    const keys = Object.keys(o);
    this.reserve(1);
    this.buf[this.pos++] = TAG_BEGIN_OBJECT;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      this.string(key);
      this.value((o as Record<string, unknown>)[key], depth + 1);
    }
    this.reserve(1);
    this.buf[this.pos++] = TAG_END_OBJECT;
    this.varint(keys.length);
  }
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

const writer = new Writer();

/** Writes the header and `value` from w.pos on; false if the value needs v8.serialize. Throws NO_ROOM (fixed target) and a getter's error. */
function write(w: Writer, value: unknown): boolean {
  w.reserve(HEADER_LENGTH);
  w.buf[w.pos] = TAG_VERSION;
  w.buf[w.pos + 1] = HEADER_VERSION;
  w.pos += HEADER_LENGTH;
  w.seenCount = 0;
  w.busy = true;
  try {
    w.value(value, 0);
    return true;
  } catch (err) {
    if (err === BAIL) return false;
    throw err; // NO_ROOM, or a getter that threw: the caller reports it
  } finally {
    w.busy = false;
    // Drop the references (the objects are the caller's), cheaply: only the slots used.
    const seen = w.seen;
    for (let i = 0; i < w.seenCount; i++) seen[i] = undefined;
  }
}

/**
 * Encodes `value` on the fast path: a view of the scratch buffer, valid until
 * the next call; undefined if the value needs v8.serialize.
 */
export function fastEncode(value: unknown): Uint8Array | undefined {
  const w = writer;
  if (!FAST || w.busy) return undefined;
  w.buf = w.scratch;
  w.limit = w.buf.length;
  w.fixed = false;
  w.pos = 0;
  if (!write(w, value)) return undefined;
  // A plain view, not Buffer's subarray (whose FastBuffer construction costs more than the rest of a small value).
  return new Uint8Array(w.buf.buffer, w.buf.byteOffset, w.pos);
}

/** fastEncodeInto: the value does not fit in the room given. */
export const ENCODE_NO_ROOM = -1;
/** fastEncodeInto: the value needs v8.serialize (or an encode is in progress). */
export const ENCODE_NOT_FAST = -2;

/** The memory fastEncodeInto last wrote to (the ring's data area, usually), and a Buffer over it. */
let targetOf: ArrayBufferLike | undefined;
let target: Buffer = Buffer.alloc(0) as Buffer;

/**
 * Encodes `value` on the fast path straight into `data[start, end)` (claimed
 * ring space): returns where the encoding ends, ENCODE_NO_ROOM if it does
 * not fit (what was written there is garbage), or ENCODE_NOT_FAST. Throws
 * what a getter of the value throws.
 */
export function fastEncodeInto(value: unknown, data: Uint8Array, start: number, end: number): number {
  const w = writer;
  if (!FAST || w.busy) return ENCODE_NOT_FAST;
  if (data.buffer !== targetOf) {
    targetOf = data.buffer;
    target = Buffer.from(data.buffer, 0, data.buffer.byteLength);
  }
  const base = data.byteOffset;
  w.buf = target;
  w.limit = base + end;
  w.fixed = true;
  w.pos = base + start;
  try {
    return write(w, value) ? w.pos - base : ENCODE_NOT_FAST;
  } catch (err) {
    if (err === NO_ROOM) return ENCODE_NO_ROOM;
    throw err;
  } finally {
    w.buf = w.scratch;
    w.limit = w.buf.length;
    w.fixed = false;
  }
}

/** Reads values of the subset from a Buffer; throws BAIL at anything else. */
class Reader {
  buf: Buffer = Buffer.alloc(0);
  pos = 0;
  end = 0;

  byte(): number {
    if (this.pos >= this.end) throw BAIL;
    return this.buf[this.pos++]!;
  }

  varint(): number {
    const first = this.pos < this.end ? this.buf[this.pos]! : 0x80;
    if (first < 0x80) {
      this.pos++;
      return first;
    }
    let result = 0;
    let scale = 1;
    for (;;) {
      const b = this.byte();
      result += (b & 0x7f) * scale;
      if (b < 0x80) return result;
      scale *= 128;
      if (scale > 2 ** 49) throw BAIL;
    }
  }

  value(): unknown {
    let tag = this.byte();
    while (tag === TAG_PADDING) tag = this.byte();
    switch (tag) {
      case TAG_INT32: {
        const z = this.varint();
        if (z > 0xffffffff) throw BAIL; // no zigzag int32
        return (z >>> 1) ^ -(z & 1);
      }
      case TAG_UINT32: {
        const u = this.varint();
        if (u > 0xffffffff) throw BAIL; // no uint32: v8.deserialize says what it makes of it
        return u;
      }
      case TAG_DOUBLE: {
        if (this.pos + 8 > this.end) throw BAIL;
        const d = this.buf.readDoubleLE(this.pos);
        this.pos += 8;
        return d;
      }
      case TAG_ONE_BYTE_STRING:
        return this.text('latin1');
      case TAG_TWO_BYTE_STRING:
        return this.text('ucs2');
      case TAG_UTF8_STRING:
        return this.text('utf8');
      case TAG_TRUE:
        return true;
      case TAG_FALSE:
        return false;
      case TAG_NULL:
        return null;
      case TAG_UNDEFINED:
        return undefined;
      case TAG_BEGIN_OBJECT:
        return this.object();
      case TAG_BEGIN_DENSE_ARRAY:
        return this.array();
      default:
        throw BAIL;
    }
  }

  text(encoding: 'latin1' | 'ucs2' | 'utf8'): string {
    const length = this.varint();
    const start = this.pos;
    if (start + length > this.end || (encoding === 'ucs2' && (length & 1) !== 0)) throw BAIL; // UTF-16: whole code units
    this.pos = start + length;
    if (encoding !== 'latin1') return this.buf.toString(encoding, start, start + length);
    if (length > CACHED_STRING) return (this.buf as unknown as SliceMethods).latin1Slice(start, start + length);
    return this.shortText(start, length);
  }

  /**
   * A short Latin-1 string, from a small cache when the same bytes came
   * recently: object keys and enum-like values repeat from one message to
   * the next, and a hit costs neither a string nor a call into C++.
   */
  shortText(start: number, length: number): string {
    const buf = this.buf;
    let h = length;
    for (let i = 0; i < length; i++) h = (Math.imul(h, 31) + buf[start + i]!) | 0;
    const slot = (h ^ (h >>> 8)) & (STRING_CACHE_SIZE - 1);
    const bytes = cachedBytes[slot];
    if (bytes !== undefined && bytes.length === length) {
      let same = true;
      for (let i = 0; i < length; i++) {
        if (bytes[i] !== buf[start + i]) {
          same = false;
          break;
        }
      }
      if (same) return cachedStrings[slot]!;
    }
    const text = (buf as unknown as SliceMethods).latin1Slice(start, start + length);
    cachedBytes[slot] = Uint8Array.prototype.slice.call(buf, start, start + length); // a copy: buf is the ring's memory
    cachedStrings[slot] = text;
    return text;
  }

  object(): Record<string, unknown> {
    const o: Record<string, unknown> = {};
    let count = 0;
    for (;;) {
      if (this.pos < this.end && this.buf[this.pos] === TAG_END_OBJECT) {
        this.pos++;
        if (this.varint() !== count) throw BAIL;
        return o;
      }
      const key = this.value();
      if (typeof key !== 'string' && typeof key !== 'number') throw BAIL;
      const value = this.value();
      if (typeof key === 'string' && PROTOTYPE_KEYS.has(key)) {
        // An own property, as V8 defines it: not the prototype setter of __proto__, nor an assignment that a
        // read-only Object.prototype.toString (frozen intrinsics) refuses or a setter put there intercepts.
        Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true });
      } else {
        o[key] = value;
      }
      count++;
    }
  }

  array(): unknown[] {
    const length = this.varint();
    if (length > this.end - this.pos) throw BAIL; // each element takes a byte at least
    const a = new Array<unknown>(length);
    for (let i = 0; i < length; i++) a[i] = this.value();
    if (this.byte() !== TAG_END_DENSE_ARRAY || this.varint() !== 0 || this.varint() !== length) throw BAIL;
    return a;
  }
}

/** The names of Object.prototype's own properties (__proto__ among them), as the decoder's objects inherit them. */
const PROTOTYPE_KEYS = new Set(Object.getOwnPropertyNames(Object.prototype));

/** Latin-1 strings up to this many bytes go through the cache. */
const CACHED_STRING = 24;
const STRING_CACHE_SIZE = 256;
const cachedBytes: Array<Uint8Array | undefined> = new Array<Uint8Array | undefined>(STRING_CACHE_SIZE).fill(undefined);
const cachedStrings: Array<string | undefined> = new Array<string | undefined>(STRING_CACHE_SIZE).fill(undefined);

const reader = new Reader();
/** A Buffer over the memory last decoded from (the ring's data area, usually), reused while it is the same. */
let viewOf: ArrayBufferLike | undefined;
let view: Buffer = Buffer.alloc(0);

/** Decodes V8-format bytes `data[start, end)`, on the fast path when it can. */
export function fastDecode(data: Uint8Array, start: number, end: number): unknown {
  if (data.buffer !== viewOf) {
    viewOf = data.buffer;
    view = Buffer.from(data.buffer, 0, data.buffer.byteLength);
  }
  const from = data.byteOffset + start;
  const to = data.byteOffset + end;
  const r = reader;
  r.buf = view;
  r.pos = from;
  r.end = to;
  try {
    if (FAST && to - from > HEADER_LENGTH && view[from] === TAG_VERSION && view[from + 1] === HEADER_VERSION) {
      r.pos = from + HEADER_LENGTH;
      const value = r.value();
      if (r.pos === to) return value;
    }
  } catch (err) {
    if (err !== BAIL) throw err;
  } finally {
    r.buf = EMPTY_BUFFER;
  }
  // A copy: Node's deserializer returns aligned typed arrays as views of its input, here the ring.
  return v8.deserialize(Buffer.from(view.subarray(from, to)));
}

const EMPTY_BUFFER = Buffer.alloc(0);

/** Forgets the memory fastDecode last read from and fastEncodeInto last wrote to (its region is being unmapped). */
export function forgetDecodeView(buffer: ArrayBufferLike): void {
  if (viewOf === buffer) {
    viewOf = undefined;
    view = EMPTY_BUFFER;
  }
  if (targetOf === buffer) {
    targetOf = undefined;
    target = EMPTY_BUFFER;
  }
}
