/**
 * Typed errors. Every error shmring throws has a stable `code`:
 *  - `ERR_SHMRING_*` for misuse and for conditions of the library itself;
 *  - the errno name ('ENOENT', 'EEXIST', ...) for a failed system call, with
 *    `syscall` and `errno` as on Node's own fs errors, but `errno` positive
 *    (os.constants.errno's), where Node's carry libuv's negated number.
 * Plain argument mistakes (a negative size, a non-integer) are TypeError or
 * RangeError, also with an `ERR_SHMRING_*` code.
 * docs/ERRORS.md lists every code, its cause and what to do.
 */
import type * as fs from 'node:fs';
import * as util from 'node:util';

export const ErrorCodes = {
  /** An option has the wrong type or is out of range. */
  INVALID_ARGUMENT: 'ERR_SHMRING_INVALID_ARGUMENT',
  /** A POSIX name is empty, too long, or contains '/' or NUL. */
  INVALID_NAME: 'ERR_SHMRING_INVALID_NAME',
  /** An unknown backing kind. */
  INVALID_BACKING: 'ERR_SHMRING_INVALID_BACKING',
  /** The region or ring was closed by this process. */
  CLOSED: 'ERR_SHMRING_CLOSED',
  /** The region is too small for what was asked of it. */
  REGION_TOO_SMALL: 'ERR_SHMRING_REGION_TOO_SMALL',
  /** A write was attempted through a read-only region. */
  READ_ONLY: 'ERR_SHMRING_READ_ONLY',
  /** The native addon is not built and the koffi fallback could not load either. */
  NO_BACKEND: 'ERR_SHMRING_NO_BACKEND',
  /** The koffi backend has as many async waits pending as koffi allows (4096). */
  TOO_MANY_WAITS: 'ERR_SHMRING_TOO_MANY_WAITS',
  /** receiveRegion: the peer closed the socket, or sent a message without an fd, or this process could not take the fd (out of fds). */
  NO_FD: 'ERR_SHMRING_NO_FD',
  /** A wait was aborted through its AbortSignal. */
  ABORTED: 'ABORT_ERR',
  /** A wait ran past its timeout. */
  TIMEOUT: 'ERR_SHMRING_TIMEOUT',
  /** The region does not hold a ring (bad magic). */
  NOT_A_RING: 'ERR_SHMRING_NOT_A_RING',
  /** The ring's layout version is not the one this library speaks. */
  VERSION_MISMATCH: 'ERR_SHMRING_VERSION_MISMATCH',
  /** The region holds a ring of another kind (SpscRing vs MpmcQueue). */
  WRONG_KIND: 'ERR_SHMRING_WRONG_KIND',
  /** A message does not fit the ring (or the slot). */
  MESSAGE_TOO_LARGE: 'ERR_SHMRING_MESSAGE_TOO_LARGE',
  /** Shared memory holds a value that no correct peer writes. */
  CORRUPT: 'ERR_SHMRING_CORRUPT',
  /** The other side of the ring (or of the channel) has died. */
  PEER_DEAD: 'ERR_SHMRING_PEER_DEAD',
  /** A channel's codec cannot encode the value (a function, a symbol, ...); nothing was sent. */
  ENCODE: 'ERR_SHMRING_ENCODE',
  /** A channel received bytes its codec cannot decode. */
  DECODE: 'ERR_SHMRING_DECODE',
  /** A request's handler on the other side threw something without a `code` of its own. */
  REMOTE: 'ERR_SHMRING_REMOTE',
  /** handle() was called on a channel that already has a handler. */
  HANDLER_EXISTS: 'ERR_SHMRING_HANDLER_EXISTS',
  /** The two ends of a channel were given different codecs. */
  CODEC_MISMATCH: 'ERR_SHMRING_CODEC_MISMATCH',
  /** The role (a channel end, a ring side) is taken by another live owner. */
  BUSY: 'ERR_SHMRING_BUSY',
  /** The region (or handle) does not hold a channel. */
  NOT_A_CHANNEL: 'ERR_SHMRING_NOT_A_CHANNEL',
  /** A region with hugePages: true cannot get its huge pages (none or too few reserved: vm.nr_hugepages). */
  NO_HUGE_PAGES: 'ERR_SHMRING_NO_HUGE_PAGES',
  /** A `nats://` or `shm:` endpoint (a channel address, a bridge end) that cannot be parsed. */
  INVALID_ENDPOINT: 'ERR_SHMRING_INVALID_ENDPOINT',
  /** The NATS server at the address did not answer (refused, unresolvable, timed out). */
  UNREACHABLE: 'ERR_SHMRING_UNREACHABLE',
  /** connect over NATS: nobody listens on the subject (NATS answered "no responders"). */
  NO_SERVER: 'ERR_SHMRING_NO_SERVER',
  /** requireSealed: the region's file could still be changed by a peer (not sealed against writing, shrinking and growing). */
  NOT_SEALED: 'ERR_SHMRING_NOT_SEALED',
  /** A channel over core NATS (at most once) lost records in transit: it ends, since what came after may depend on them. */
  MESSAGE_LOST: 'ERR_SHMRING_MESSAGE_LOST',
  /** The NATS server refused this user an operation it needs (a subscription, a publish to the JetStream API): grant it. */
  NOT_PERMITTED: 'ERR_SHMRING_NOT_PERMITTED',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/**
 * An error of shmring itself, with a stable `code`. One that a system call
 * failed with (`code` its errno name) carries, as Node's fs errors do,
 * `errno` (positive: os.constants.errno's) and `syscall`, and `path` where
 * a name or a file was involved; the others leave them undefined.
 */
export class ShmringError extends Error {
  readonly code: string;
  declare readonly errno?: number;
  declare readonly syscall?: string;
  declare readonly path?: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ShmringError';
    this.code = code;
  }
}

/** A RangeError with a stable code (values out of range: sizes, offsets, capacities). */
export class ShmringRangeError extends RangeError {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/** A TypeError with a stable code (wrong kinds of values). */
export class ShmringTypeError extends TypeError {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/** What a failed system call leaves on its error (Node's fs errors and the backends' alike). */
interface SystemCallFailure {
  code: string;
  errno: number;
  syscall: string;
}

function isSystemCallFailure(err: unknown): err is SystemCallFailure {
  const e = err as Partial<SystemCallFailure> | null;
  return typeof e?.code === 'string' && typeof e.errno === 'number' && typeof e.syscall === 'string';
}

/** libuv's description of an errno ("no such file or directory"); errno may be negative (Node's) or positive (the backends'). */
function describeErrno(errno: number): string | undefined {
  return util.getSystemErrorMap().get(-Math.abs(errno))?.[1];
}

/**
 * Says on which object a system call failed, and what to do about it: the
 * error keeps `code`, `errno` and `syscall` (and gets `path` when given);
 * its message reads `${operation} ${object}: ${syscall} failed: ${why}
 * (${code}); ${hint}`, the original error is its `cause`. Anything that is
 * not a failed system call (a ShmringError, a TypeError) is returned as is.
 */
export function onObject(
  err: unknown,
  operation: string,
  object: string,
  options: { path?: string; hint?: (code: string) => string | undefined } = {},
): unknown {
  if (!isSystemCallFailure(err)) return err;
  const { code, errno, syscall } = err;
  const why = describeErrno(errno) ?? code;
  const hint = options.hint?.(code);
  const message = `${operation} ${object}: ${syscall} failed: ${why} (${code})${hint ? `; ${hint}` : ''}`;
  const named = new ShmringError(code, message, { cause: err });
  // errno positive (os.constants.errno's), whichever side failed: Node's fs errors carry libuv's negated number.
  return Object.assign(named, { errno: Math.abs(errno), syscall }, options.path === undefined ? {} : { path: options.path });
}

/** The error a wait throws when its AbortSignal fires, like Node's own AbortError. */
export function abortError(signal?: AbortSignal): Error {
  const err = new ShmringError(ErrorCodes.ABORTED, 'The operation was aborted', { cause: signal?.reason });
  err.name = 'AbortError';
  return err;
}

/** What a file is, for a message that says why it will not do ("a directory"), from its fs.Stats (or lstat's). */
export function fileKind(stat: fs.Stats | fs.BigIntStats): string {
  if (stat.isFile()) return 'a regular file';
  if (stat.isDirectory()) return 'a directory';
  if (stat.isFIFO()) return 'a pipe (FIFO)';
  if (stat.isSocket()) return 'a socket';
  if (stat.isSymbolicLink()) return 'a symbolic link';
  if (stat.isCharacterDevice()) return 'a character device';
  if (stat.isBlockDevice()) return 'a block device';
  return 'a file of no known type';
}

/** A value as an error message shows it: strings quoted, so `'5'` does not read as the number 5. */
export function shown(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`; // 0n, not 0: the type is what is wrong
  try {
    return String(value);
  } catch {
    // An object String() cannot convert (null prototype, a throwing toString): the message must not throw.
    try {
      return Object.prototype.toString.call(value);
    } catch {
      return `[${typeof value}]`; // a revoked Proxy, or one whose traps throw
    }
  }
}

/**
 * Refuses an option that `known` does not list: a misspelt name (`timeout`
 * for `timeoutMs`, `capacty` for `capacity`) would otherwise be ignored
 * without a word, and a wait meant to time out would wait for ever, or a
 * ring be made with the default size. A key whose value is undefined sets
 * nothing and passes. The ShmringTypeError (ERR_SHMRING_INVALID_ARGUMENT)
 * names the key, the known name it is nearest to, and `verb`. The caller
 * has checked that `options` is an object.
 */
export function checkOptionNames(options: object, known: readonly string[], verb: string): void {
  for (const key in options) {
    if (!known.includes(key) && (options as Record<string, unknown>)[key] !== undefined) {
      const near = nearestName(key, known);
      throw new ShmringTypeError(
        ErrorCodes.INVALID_ARGUMENT,
        `${verb}: unknown option ${JSON.stringify(key)}${near === undefined ? '' : ` (did you mean ${JSON.stringify(near)}?)`}; ` +
          `its options are ${known.join(', ')}`,
      );
    }
  }
}

/**
 * The name in `known` that `key` most likely meant: one it begins or ends
 * (timeout → timeoutMs), else the one at most 2 edits away from it or from
 * its stem without the unit (timout → timeoutMs), case aside.
 */
function nearestName(key: string, known: readonly string[]): string | undefined {
  const k = key.toLowerCase();
  const partOf = known.find((name) => {
    const n = name.toLowerCase();
    return k.length >= 3 && (n.startsWith(k) || k.startsWith(n));
  });
  if (partOf !== undefined) return partOf;
  let best: string | undefined;
  let bestDistance = 3;
  for (const name of known) {
    const n = name.toLowerCase();
    const d = Math.min(editDistance(k, n), editDistance(k, n.replace(/ms$/, '')));
    if (d < bestDistance) [best, bestDistance] = [name, d];
  }
  return best;
}

/** Levenshtein distance (insertions, deletions, substitutions) of two short strings. */
function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[b.length]!;
}

/**
 * Checks a boolean option: undefined is `fallback`, true and false are
 * themselves, anything else (1, 'true') a coded TypeError naming it and
 * `verb`: read as truthy or as `=== true`, such a value would silently
 * turn a check off (`requireSealed: 1`) or a default around.
 */
export function checkBoolean(name: string, value: unknown, verb: string, fallback = false): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: ${name}=${shown(value)} must be a boolean (true or false)`);
  }
  return value;
}

/**
 * Checks that `value` is an integer in [min, max]; throws a coded
 * RangeError/TypeError naming it, and the verb that was given it when
 * `verb` says (`Region.create: size=-1 is out of range …`).
 */
export function checkInteger(name: string, value: unknown, min: number, max: number, verb?: string): number {
  const who = verb === undefined ? '' : `${verb}: `;
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${who}${name} must be an integer, got ${shown(value)}`);
  }
  if (value < min || value > max) {
    throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${who}${name}=${value} is out of range [${min}, ${max}]`);
  }
  return value;
}
