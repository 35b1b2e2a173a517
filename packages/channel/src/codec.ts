/**
 * Codecs: how a channel turns values into bytes and back. Structured clone
 * (v8.serialize) is the default; 'json', 'bytes' and a user's own
 * { encode, decode } are the others. Both ends of a channel must use the
 * same one; the channel header records which (a custom codec only as
 * "custom": its two ends must agree by themselves).
 */
import { types } from 'node:util';
import v8 from 'node:v8';
import { ErrorCodes, ShmringError, ShmringTypeError } from '@shmring/core';
import { ENCODE_NO_ROOM, ENCODE_NOT_FAST, fastDecode, fastEncode, fastEncodeInto } from './clone.js';

export { ENCODE_NO_ROOM, ENCODE_NOT_FAST };

export interface Codec {
  /** Turns a value into bytes; throws if it cannot. */
  encode(value: unknown): Uint8Array;
  /** Turns bytes made by encode() back into a value. The bytes are the codec's to keep. */
  decode(bytes: Uint8Array): unknown;
}

export type CodecOption = 'structured-clone' | 'json' | 'bytes' | Codec;

/** A codec as the channel uses it. */
/** What `channel.codec` says: the codec both ends use ('custom': one given as an object). */
export type CodecName = 'structured-clone' | 'json' | 'bytes' | 'custom';

export interface ChannelCodec {
  readonly id: number;
  readonly name: CodecName;
  /** Buffers bypass the codec (sent as RAW records) when this is true. */
  readonly rawBuffers: boolean;
  /**
   * Encodes `value`. The bytes may be a scratch buffer that the next encode()
   * (of any channel of this thread) overwrites: `lastOwned` says whether the
   * bytes of the last call are the caller's to keep. `notFast`: encodeInto
   * just answered ENCODE_NOT_FAST for this value, so a codec with a fast path
   * goes straight to its general one (a getter of the value is not read a
   * third time).
   */
  encode(value: unknown, notFast?: boolean): Uint8Array;
  readonly lastOwned: boolean;
  /**
   * Encodes `value` straight into `data[start, end)` (claimed ring space),
   * when the codec can: returns where the encoding ends, ENCODE_NO_ROOM if
   * it does not fit, ENCODE_NOT_FAST if the value needs encode().
   */
  readonly encodeInto?: (value: unknown, data: Uint8Array, start: number, end: number) => number;
  /**
   * Decodes `data[start, end)`, a view that may point into the ring and is
   * valid only during the call: a codec that keeps bytes must copy them.
   */
  decode(data: Uint8Array, start: number, end: number): unknown;
}

export const CODEC_STRUCTURED = 1;
export const CODEC_JSON = 2;
export const CODEC_BYTES = 3;
export const CODEC_CUSTOM = 4;

export const CODEC_NAMES: Record<number, string> = {
  [CODEC_STRUCTURED]: 'structured-clone',
  [CODEC_JSON]: 'json',
  [CODEC_BYTES]: 'bytes',
  [CODEC_CUSTOM]: 'custom',
};

function encodeError(value: unknown, codec: string, cause?: unknown): ShmringError {
  let what: string;
  try {
    what = types.isProxy(value)
      ? codec === 'structured-clone'
        ? 'a Proxy (structured clone takes none; send a plain copy of what it stands for)'
        : 'this Proxy'
      : typeof value === 'function'
        ? 'a function'
        : typeof value === 'symbol'
          ? 'a symbol'
          : `this ${typeof value}`;
  } catch {
    what = 'this value';
  }
  const reason = cause instanceof Error ? `: ${cause.message.replace(/\.$/, '')}` : '';
  return new ShmringError(
    ErrorCodes.ENCODE,
    `the channel's ${codec} codec cannot encode ${what}${reason}; nothing was sent (send values it can encode, or choose another codec)`,
    cause === undefined ? undefined : { cause },
  );
}

function decodeError(codec: string, cause: unknown): ShmringError {
  const reason = cause instanceof Error ? `: ${cause.message.replace(/\.$/, '')}` : '';
  return new ShmringError(
    ErrorCodes.DECODE,
    `the channel's ${codec} codec could not decode a value from the other side${reason}; do both ends use the same codec?`,
    { cause },
  );
}

/** A copy of `bytes` that the caller may keep (ring memory is reused). */
export function copyBytes(bytes: Uint8Array): Buffer {
  const copy = Buffer.allocUnsafe(bytes.length);
  copy.set(bytes);
  return copy;
}

/** A Buffer over the same memory (no copy), for Buffer's decoders. */
function bufferView(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

const structured: ChannelCodec = {
  id: CODEC_STRUCTURED,
  name: 'structured-clone',
  rawBuffers: true,
  lastOwned: true,
  encode(value, notFast) {
    try {
      const fast = notFast === true ? undefined : fastEncode(value);
      (this as { lastOwned: boolean }).lastOwned = fast === undefined;
      return fast ?? v8.serialize(value);
    } catch (err) {
      throw encodeError(value, 'structured-clone', err);
    }
  },
  encodeInto(value, data, start, end) {
    try {
      return fastEncodeInto(value, data, start, end);
    } catch (err) {
      throw encodeError(value, 'structured-clone', err);
    }
  },
  decode(data, start, end) {
    try {
      // fastDecode copies what it keeps (strings; typed arrays come from a copy of the bytes).
      return fastDecode(data, start, end);
    } catch (err) {
      throw decodeError('structured-clone', err);
    }
  },
};

const json: ChannelCodec = {
  id: CODEC_JSON,
  name: 'json',
  rawBuffers: false,
  lastOwned: true,
  encode(value) {
    let text: string | undefined;
    try {
      text = JSON.stringify(value);
    } catch (err) {
      throw encodeError(value, 'json', err);
    }
    if (text === undefined) throw encodeError(value, 'json');
    return Buffer.from(text, 'utf8');
  },
  decode(data, start, end) {
    try {
      return JSON.parse(bufferView(data).toString('utf8', start, end));
    } catch (err) {
      throw decodeError('json', err);
    }
  },
};

const bytesCodec: ChannelCodec = {
  id: CODEC_BYTES,
  name: 'bytes',
  rawBuffers: false,
  lastOwned: true,
  encode(value) {
    // Brand checks, not instanceof: they run no code of the value's (a Proxy's getPrototypeOf trap, which
    // throws for a revoked one) and take no Proxy for bytes.
    if (ArrayBuffer.isView(value)) {
      return value instanceof Uint8Array ? value : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    }
    if (types.isArrayBuffer(value)) return new Uint8Array(value);
    throw new ShmringError(
      ErrorCodes.ENCODE,
      `the channel's bytes codec sends Uint8Arrays, Buffers, other ArrayBuffer views and ArrayBuffers, not ${value === null ? 'null' : typeof value}; nothing was sent`,
    );
  },
  decode: (data, start, end) => copyBytes(data.subarray(start, end)),
};

function custom(user: Codec): ChannelCodec {
  return {
    id: CODEC_CUSTOM,
    name: 'custom',
    rawBuffers: false,
    // The user's encode() may hand back a buffer it reuses (or the value itself): a record that must
    // wait for room, or a split value, is copied, as the scratch buffer of structured clone is.
    lastOwned: false,
    encode(value) {
      let bytes: unknown;
      try {
        bytes = user.encode(value);
      } catch (err) {
        throw encodeError(value, 'custom', err);
      }
      // isView first: instanceof would run the getPrototypeOf trap of a Proxy that encode() returned.
      if (!ArrayBuffer.isView(bytes) || !(bytes instanceof Uint8Array)) {
        throw new ShmringError(
          ErrorCodes.ENCODE,
          `the channel's custom codec returned ${typeof bytes} from encode(), not a Uint8Array; nothing was sent`,
        );
      }
      return bytes;
    },
    decode(data, start, end) {
      try {
        return user.decode(copyBytes(data.subarray(start, end)));
      } catch (err) {
        throw decodeError('custom', err);
      }
    },
  };
}

/** The codec an option names (default: structured clone); a typed error for anything else. */
export function resolveCodec(option: unknown): ChannelCodec {
  if (option === undefined || option === 'structured-clone') return structured;
  if (option === 'json') return json;
  if (option === 'bytes') return bytesCodec;
  if (
    option !== null &&
    typeof option === 'object' &&
    typeof (option as Codec).encode === 'function' &&
    typeof (option as Codec).decode === 'function'
  ) {
    return custom(option as Codec);
  }
  throw new ShmringTypeError(
    ErrorCodes.INVALID_ARGUMENT,
    `codec must be 'structured-clone', 'json', 'bytes' or an object with encode() and decode(), got ${typeof option === 'string' ? JSON.stringify(option) : typeof option}`,
  );
}

/** Checks that the other end's codec (from the channel header) is ours. */
export function checkCodecMatch(ours: ChannelCodec, theirs: number, what: string): void {
  if (theirs === ours.id) return;
  throw new ShmringError(
    ErrorCodes.CODEC_MISMATCH,
    `${what} uses the ${CODEC_NAMES[theirs] ?? `unknown (${theirs})`} codec but this end was given ${ours.name}; pass the same codec option to both ends`,
  );
}
