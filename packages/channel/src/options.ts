import { checkOptionNames, ErrorCodes, ShmringRangeError, ShmringTypeError, shown } from '@shmring/core';

/** The options each verb takes; any other name is refused (checkOptions). */
export const OptionNames = {
  listen: ['heartbeatMs', 'capacity', 'codec', 'poll', 'handoverTimeoutMs'],
  connect: ['heartbeatMs', 'codec', 'timeoutMs', 'signal', 'poll'],
  channelPair: ['capacity', 'codec', 'poll'],
  openChannel: ['codec', 'poll'],
  request: ['timeoutMs', 'signal'],
  receive: ['signal'],
  bridge: ['signal', 'log', 'onReady', 'poll', 'dedicated'],
} as const satisfies Record<string, readonly string[]>;

/**
 * Checks a verb's options: undefined, or an object whose names the verb
 * takes (a `timeout` for `timeoutMs` would otherwise never time out, a
 * `capacty` silently give the default). ERR_SHMRING_INVALID_ARGUMENT.
 */
export function checkOptions(options: unknown, names: readonly string[], verb: string): void {
  if (options === undefined) return;
  if (options === null || typeof options !== 'object') {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: options must be an object, got ${options === null ? 'null' : typeof options}`,
    );
  }
  checkOptionNames(options, names, verb);
}

/** Bytes of each ring's data area unless the options say otherwise. */
export const DEFAULT_CAPACITY = 1 << 20;
const MIN_CAPACITY = 64;
const MAX_CAPACITY = 1 << 30;

/** Checks a ring capacity option: undefined (the default) or a power of two in [64, 2^30]. */
export function checkCapacity(capacity: unknown, verb: string): number {
  if (capacity === undefined) return DEFAULT_CAPACITY;
  if (typeof capacity !== 'number' || !Number.isInteger(capacity)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: capacity must be an integer, got ${shown(capacity)}`);
  }
  if (capacity < MIN_CAPACITY || capacity > MAX_CAPACITY || (capacity & (capacity - 1)) !== 0) {
    throw new ShmringRangeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: capacity=${capacity} must be a power of two in [${MIN_CAPACITY}, ${MAX_CAPACITY}] (bytes of each ring)`,
    );
  }
  return capacity;
}

/** The range of heartbeatMs (NATS channels): 10 ms to an hour. */
export const MIN_BEAT_MS = 10;
export const MAX_BEAT_MS = 3_600_000;

/**
 * Checks a heartbeatMs option: undefined (the default) or ms in
 * [MIN_BEAT_MS, MAX_BEAT_MS]. Checked on every path, though only NATS
 * channels beat: a wrong value is refused wherever it is given.
 */
export function checkHeartbeat(beatMs: unknown, verb: string): number | undefined {
  return beatMs === undefined ? undefined : checkNumberIn(beatMs, verb, 'heartbeatMs', 'ms', MIN_BEAT_MS, MAX_BEAT_MS);
}

/** Longest poll window a channel accepts (µs): past a second, park. */
const MAX_POLL = 1_000_000;

/**
 * Checks a poll option: undefined (the rings' adaptive default) or the
 * microseconds a channel keeps looking for the other side's next record
 * between event-loop turns before it parks.
 */
export function checkPoll(poll: unknown, verb: string): number | undefined {
  return poll === undefined ? undefined : checkNumberIn(poll, verb, 'poll', 'microseconds', 0, MAX_POLL);
}

/**
 * Checks a number option that must lie in [min, max]: a wrong type is a
 * TypeError, a number out of range (or NaN) a RangeError (docs/ERRORS.md);
 * a string is shown quoted, so that poll: '5' does not read as the number 5.
 */
export function checkNumberIn(value: unknown, verb: string, name: string, unit: string, min: number, max: number): number {
  const expected = `${verb}: ${name} must be a number of ${unit} in [${min}, ${max}]`;
  if (typeof value !== 'number') throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${expected}, got ${shown(value)}`);
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${expected}, got ${String(value)}`);
  }
  return value;
}

/** Checks an AbortSignal option. */
export function checkSignal(signal: unknown, verb: string): AbortSignal | undefined {
  if (signal === undefined) return undefined;
  if (!(signal instanceof AbortSignal)) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: signal must be an AbortSignal, got ${signal === null ? 'null' : typeof signal === 'string' ? shown(signal) : typeof signal}`,
    );
  }
  return signal;
}

/** Checks a timeout option: undefined or a number of milliseconds >= 0 (Infinity: no timeout). */
export function checkTimeout(timeoutMs: unknown, verb: string, name = 'timeoutMs'): number | undefined {
  if (timeoutMs === undefined) return undefined;
  // As checkPoll: a TypeError for a wrong type (quoted if a string), a RangeError for NaN or a negative.
  if (typeof timeoutMs !== 'number') {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: ${name} must be a number >= 0, got ${shown(timeoutMs)}`);
  }
  if (Number.isNaN(timeoutMs) || timeoutMs < 0) {
    throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: ${name} must be a number >= 0, got ${timeoutMs}`);
  }
  return timeoutMs;
}
