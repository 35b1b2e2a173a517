/**
 * Region: one mapping of shared memory, the ground every ring stands on.
 *
 * Backings:
 *  - 'memfd': an anonymous memory file (memfd_create). Shared by inheriting
 *    its fd (child_process stdio) or passing it over a Unix socket
 *    (sendRegion / receiveRegion). Sealed against shrinking and growing once
 *    sized, so no peer can truncate it under us.
 *  - 'posix': a named POSIX shared memory object (/dev/shm/<name>), found by
 *    name from any process. Created exclusive, mode 0600, unless asked.
 *  - 'file': a file on any filesystem (tmpfs for speed); its bytes outlive
 *    the processes.
 *  - 'sysv': a System V shared memory segment (shmget / shmat), found by
 *    its numeric key (or, for a private one, its id) from any process.
 *    Created exclusive, mode 0600, unless asked. It has no fd: it lives in
 *    the kernel until unlink() marks it for removal (IPC_RMID) and its last
 *    attach is gone.
 *  - 'sab': a SharedArrayBuffer, shared with worker threads by postMessage.
 *
 * Huge pages (`hugePages: true`, memfd and sysv): see hugepages.ts.
 *
 * A Region owns its fd and its mapping, and hands both to the backend's
 * mapping (mmap with ownFd; a sysv region has only its attach): close() detaches the ArrayBuffer (stale views
 * then read as length 0 instead of faulting), unmaps it and closes the fd;
 * a region dropped without close() gives both back when its ArrayBuffer is
 * collected. Exactly one ArrayBuffer exists per mapping; hand out views of
 * `buffer`.
 *
 * Every fd a region owns is opened (or duplicated, by fromFd) and closed by
 * the backend, never by node:fs: in a worker, Node warns about each fd
 * fs.closeSync closes that fs did not open, and closes the fds fs opened
 * again when the worker ends.
 *
 * A failed system call keeps its errno `code`, and its message names the
 * object (the POSIX name, the path, the fd) and says what to do.
 */
import { constants as bufferConstants } from 'node:buffer';
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import {
  ErrorCodes,
  ShmringError,
  ShmringRangeError,
  ShmringTypeError,
  checkBoolean,
  checkInteger,
  checkOptionNames,
  fileKind,
  shown,
  onObject,
} from './errors.js';
import { type HugePagePool, hugePagePool, isHugePageShortage, noHugePages, roundToHugePages } from './hugepages.js';
import { readSegments, type Segment } from './segments.js';
import { runBeforeUnmap } from './unmap.js';
import {
  holdName,
  lockFileByte,
  NAME_LOCK_BYTE,
  namesObject,
  releaseLocksOf,
  retryFor,
  SIZING_LOCK_BYTE,
  unlockFileByte,
  waitForFileByte,
} from './locks.js';
import { backend } from './native/loader.js';

export type Backing = 'memfd' | 'posix' | 'file' | 'sysv' | 'sab';

export interface CreateOptions {
  backing: Backing;
  /** Bytes to map; at least 1 (with hugePages, rounded up to whole huge pages). */
  size: number;
  /** 'posix': the object's name (no '/'). 'memfd': a label shown in /proc/<pid>/fd. */
  name?: string;
  /** 'file': the file's path. */
  path?: string;
  /**
   * 'sysv': the segment's key, an integer in [1, 0xffffffff] as `ipcs -m`
   * prints it (a negative int32 is the same key as C's signed key_t sees
   * it). Omitted: IPC_PRIVATE, a new segment reachable only by its `id`
   * (Region.open({ backing: 'sysv', id })).
   */
  key?: number;
  /** Permission bits of a new POSIX object, file or System V segment ('sysv': at most 0o777); default 0o600. */
  mode?: number;
  /** Fail with EEXIST if the POSIX object, file or System V key exists (default true). */
  exclusive?: boolean;
  /**
   * 'memfd' and 'sysv': back the region with huge pages (MFD_HUGETLB,
   * SHM_HUGETLB) of the default size (Hugepagesize in /proc/meminfo, 2 MiB
   * on x86_64); `size` is rounded up to whole huge pages. Every page is
   * taken from the pool the administrator reserved (vm.nr_hugepages) and
   * faulted in before create returns: too few free pages is
   * ERR_SHMRING_NO_HUGE_PAGES, never a SIGBUS later. Default false.
   */
  hugePages?: boolean;
  /**
   * 'posix', 'file' and 'sysv': remove the name (mark the segment for removal) when this process exits normally,
   * by process.exit() or by an uncaught exception (it runs in an 'exit'
   * listener). It cannot run when the process dies of a signal: a SIGKILL
   * (the OOM killer, `kill -9`) runs nothing, and neither does a SIGTERM,
   * SIGINT or SIGHUP that no handler catches (Node's default is to die
   * without 'exit'): install `process.on('SIGTERM', () => process.exit())`
   * if those should clean up too. `shmring inspect` tells whether a leftover
   * ring is stale and `shmring unlink-stale` removes such rings.
   *
   * In a worker thread, 'exit' is the worker's own: a region created there
   * with unlinkOnExit is unlinked when that worker ends (returns, or calls
   * process.exit()), not when the process does, and the main thread and
   * the other workers lose the name (what they have mapped stays valid).
   * A worker ended by terminate() runs no JavaScript and leaves the name.
   * Create a name that outlives the worker in the main thread, or leave
   * unlinkOnExit out and unlink() it yourself. Default false.
   */
  unlinkOnExit?: boolean;
}

/** The options each constructor takes; any other name is refused (checkOptionNames). */
const CREATE_OPTION_NAMES: readonly string[] = ['backing', 'size', 'name', 'path', 'key', 'mode', 'exclusive', 'hugePages', 'unlinkOnExit'];
const OPEN_OPTION_NAMES: readonly string[] = ['backing', 'name', 'path', 'key', 'id', 'readOnly'];
const FROM_FD_OPTION_NAMES: readonly string[] = ['readOnly', 'requireSealed', 'requireFixedSize'];
const SYNC_OPTION_NAMES: readonly string[] = ['async'];
const SNAPSHOT_OPTION_NAMES: readonly string[] = ['size', 'name'];

/**
 * The options each backing takes, besides `backing` and `size`: one given
 * to a backing it does not apply to (a `key` for 'posix', a `mode` for a
 * memfd, a `name` for a 'file') would be ignored without a word, and the
 * region would not be the one meant. hugePages is checked by checkHugePages.
 */
const CREATE_OPTIONS_OF: Readonly<Record<Backing, readonly string[]>> = {
  memfd: ['name', 'hugePages'],
  posix: ['name', 'mode', 'exclusive', 'unlinkOnExit', 'hugePages'],
  file: ['path', 'mode', 'exclusive', 'unlinkOnExit', 'hugePages'],
  sysv: ['key', 'mode', 'exclusive', 'unlinkOnExit', 'hugePages'],
  // A name labels a memfd and nothing else; a 'sab' takes it as well, so that one options object can make
  // either (the choice between the two is often a flag).
  sab: ['name', 'hugePages'],
};
const OPEN_OPTIONS_OF: Readonly<Record<OpenOptions['backing'], readonly string[]>> = {
  posix: ['name', 'readOnly'],
  file: ['path', 'readOnly'],
  sysv: ['key', 'id', 'readOnly'],
};

/**
 * Refuses an option (not undefined) that `backing` does not take
 * (`applicable[backing]`): a ShmringTypeError, ERR_SHMRING_INVALID_ARGUMENT,
 * naming the option, the backing, and the backings that do take it. Does
 * nothing for a backing the table does not know (the caller's
 * INVALID_BACKING says that).
 */
function checkApplicable(options: object, applicable: Readonly<Record<string, readonly string[]>>, verb: string): void {
  const backing = (options as { backing?: unknown }).backing;
  if (typeof backing !== 'string' || !Object.hasOwn(applicable, backing)) return;
  const takes = applicable[backing]!;
  for (const key in options) {
    if (key === 'backing' || key === 'size' || takes.includes(key)) continue;
    const value = (options as Record<string, unknown>)[key];
    if (value === undefined) continue;
    const owners = Object.keys(applicable).filter((b) => applicable[b]!.includes(key));
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: option ${key}=${shown(value)} does not apply to backing '${backing}' ` +
        `(it takes ${takes.filter((k) => k !== 'hugePages' || backing === 'memfd' || backing === 'sysv').join(', ') || 'only size'}); ` +
        `remove it${owners.length === 0 ? '' : `, or use the backing it is for (${owners.map((b) => `'${b}'`).join(', ')})`}`,
    );
  }
}

/** Names to remove at exit, by backing. */
const unlinkAtExit = new Map<string, () => void>();
/** Whether the exit listener that empties unlinkAtExit is added: once, though unlink() may empty the map many times. */
let exitListener = false;

function removeAtExit(key: string, remove: () => void): void {
  if (!exitListener) {
    exitListener = true;
    process.once('exit', () => {
      for (const run of unlinkAtExit.values()) {
        try {
          run();
        } catch {
          // already gone: nothing to clean
        }
      }
    });
  }
  unlinkAtExit.set(key, remove);
}

export interface OpenOptions {
  backing: 'posix' | 'file' | 'sysv';
  name?: string;
  path?: string;
  /** 'sysv': the key the segment was created with (give this or `id`). */
  key?: number;
  /** 'sysv': the segment's id (shmid), the only way to reach a private segment. */
  id?: number;
  /** Map read-only (PROT_READ). Default false. */
  readOnly?: boolean;
}

export interface FromFdOptions {
  readOnly?: boolean;
  /**
   * Accept only a memfd that no process can change any more: sealed
   * against writing (F_SEAL_WRITE: F_SEAL_FUTURE_WRITE alone still lets the
   * sender write through a mapping it made before), shrinking and
   * growing; anything else is ERR_SHMRING_NOT_SEALED. An accepted region is
   * mapped read-only whatever `readOnly` says. Default false.
   */
  requireSealed?: boolean;
  /**
   * Accept only a memfd sealed against shrinking (the seal is added if the
   * memfd allows it): anything else, a memfd that forbids sealing or a
   * file, is ERR_SHMRING_NOT_SEALED. Its sender cannot then make this
   * process fault (SIGBUS) by truncating it: the choice for a peer that
   * is not trusted with this process's life. Default false.
   */
  requireFixedSize?: boolean;
}

export interface SnapshotOptions {
  /** Bytes of the snapshot: required with a fill function; default bytes.length (at least 1). */
  size?: number;
  /** A label shown in /proc/<pid>/fd; default 'shmring-snapshot'. */
  name?: string;
}

/** Linux seal bits (fcntl F_ADD_SEALS). */
const F_SEAL_SEAL = 0x1;
const F_SEAL_SHRINK = 0x2;
const F_SEAL_GROW = 0x4;
const F_SEAL_WRITE = 0x8;
const F_SEAL_FUTURE_WRITE = 0x10;
/**
 * What requireSealed asks of a region: no write, no shrink, no grow. F_SEAL_WRITE, not F_SEAL_FUTURE_WRITE:
 * that one refuses only new writable mappings, and the sender could go on writing through one it kept.
 */
function immutable(seals: number | undefined): boolean {
  return seals !== undefined && (seals & F_SEAL_WRITE) !== 0 && (seals & F_SEAL_SHRINK) !== 0 && (seals & F_SEAL_GROW) !== 0;
}

/** Largest region we map: far above any ring, far below what a size_t or a double can hold. */
const MAX_REGION_SIZE = 2 ** 40;
/** NAME_MAX of /dev/shm on Linux. */
const MAX_NAME_LENGTH = 255;

const { O_RDONLY, O_RDWR, O_CREAT, O_EXCL } = fs.constants;
/**
 * Opening a FIFO read-only waits for a writer, for ever if none comes:
 * every open of an object to map is non-blocking (no effect on a regular
 * file or a shared memory object), and what it opened is then refused as
 * not mappable (mappableStat).
 */
const { O_NONBLOCK } = fs.constants;

/** shmget(2) flags (sys/ipc.h, sys/shm.h). */
const IPC_CREAT = 0o1000;
const IPC_EXCL = 0o2000;
const SHM_HUGETLB = 0o4000;
/** Largest System V id (an int). */
const MAX_SYSV_ID = 2 ** 31 - 1;

/** Checks a System V key and returns it as ipcs prints it (unsigned); 0 (IPC_PRIVATE) is refused. */
function sysvKey(key: unknown, verb: string): number {
  if (typeof key !== 'number' || !Number.isInteger(key)) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: key must be an integer System V IPC key (such as 0x73680001), got ${typeof key === 'string' ? JSON.stringify(key) : String(key)}`,
    );
  }
  if (key < -(2 ** 31) || key > 0xffff_ffff) {
    throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: key=${key} is out of range [-2147483648, 4294967295]`);
  }
  if (key === 0) {
    throw new ShmringRangeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: key=0 is IPC_PRIVATE: omit key to create a private segment, which others open by its id`,
    );
  }
  return key >>> 0;
}

/** A System V key as ipcs prints it. */
function hexKey(key: number): string {
  return `0x${key.toString(16).padStart(8, '0')}`;
}

/**
 * What the kernel says of System V segment `id` (its size, and how many
 * attaches it has): undefined where it cannot tell (no /proc, no such
 * segment). The native backends offer no IPC_STAT of their own.
 */
function sysvSegment(id: number): Segment | undefined {
  return readSegments()?.find((segment) => segment.id === id);
}

/**
 * Checks, before shmat, that segment `id` can be mapped here: a segment
 * larger than buffer.constants.MAX_LENGTH would be attached and then fail
 * to become an ArrayBuffer (an untyped error; the koffi backend aborts the
 * process). Passes where /proc cannot tell its size.
 */
function checkSysvMappable(id: number, verb: string, described: Described): void {
  const size = sysvSegment(id)?.size;
  if (size !== undefined) checkMappable(size, verb, described.object, EXISTING_TOO_LARGE);
}

function checkSysvId(id: unknown, verb: string): number {
  return checkInteger('id', id, 0, MAX_SYSV_ID, verb);
}

/** Checks `hugePages` and that the backing offers them. */
function checkHugePages(options: CreateOptions): boolean {
  if (!checkBoolean('hugePages', options.hugePages, 'Region.create')) return false;
  if (options.backing !== 'memfd' && options.backing !== 'sysv') {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `Region.create: hugePages is for 'memfd' and 'sysv' regions, not backing=${String(options.backing)} ` +
        "(for a 'file' region, put the file on a mounted hugetlbfs instead)",
    );
  }
  return true;
}

/** Checks a POSIX shared memory name and returns it with the leading '/' shm_open wants; `verb` heads the errors. */
export function posixName(name: unknown, verb: string): string {
  if (typeof name !== 'string') {
    throw new ShmringTypeError(ErrorCodes.INVALID_NAME, `${verb}: name must be a string, got ${typeof name}`);
  }
  const bare = name.startsWith('/') ? name.slice(1) : name;
  if (bare.length === 0 || bare === '.' || bare === '..') {
    throw new ShmringTypeError(ErrorCodes.INVALID_NAME, `${verb}: name=${JSON.stringify(name)} is not a valid POSIX shared memory name`);
  }
  if (bare.includes('/') || bare.includes('\0')) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_NAME,
      `${verb}: name=${JSON.stringify(name)} must not contain '/' or NUL (after an optional leading '/')`,
    );
  }
  if (Buffer.byteLength(bare) > MAX_NAME_LENGTH) {
    throw new ShmringRangeError(
      ErrorCodes.INVALID_NAME,
      `${verb}: name is ${Buffer.byteLength(bare)} bytes long; the limit is ${MAX_NAME_LENGTH}`,
    );
  }
  return `/${bare}`;
}

function checkSize(size: unknown, verb?: string): number {
  return checkInteger('size', size, 1, MAX_REGION_SIZE, verb);
}

/** A SharedArrayBuffer of `size` bytes, or a typed error when V8 cannot allocate it (its own RangeError has no code). */
function allocateShared(size: number): SharedArrayBuffer {
  try {
    return new SharedArrayBuffer(size);
  } catch (err) {
    const e = new ShmringRangeError(
      'ENOMEM',
      `Region.create of a 'sab' region of ${size} bytes: V8 could not allocate the SharedArrayBuffer (${(err as Error).message}); ask for less, or use a 'memfd' region`,
    );
    throw Object.assign(e, { cause: err });
  }
}

/**
 * fstat of an fd about to be mapped; a pipe, socket, terminal or directory
 * has no bytes to map (its size 0 would read as "empty"): INVALID_ARGUMENT.
 */
function mappableStat(fd: number, object: string, verb: string): fs.Stats {
  const stat = fs.fstatSync(fd);
  if (!stat.isFile()) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb} ${object}: it is ${fileKind(stat)}, not shared memory: only a memfd, a POSIX shared memory object or a regular file can be mapped`,
    );
  }
  return stat;
}

/** shm_open's EINVAL for a name that exists: what opening it for writing means (Linux refuses a directory so). */
const notAnObjectHint = 'the name is not a shared memory object (a directory in /dev/shm?): pick another name, or remove what is there';

/**
 * Largest mapping this Node can wrap in one ArrayBuffer: an external
 * ArrayBuffer is made as a Buffer, whose length is capped at
 * buffer.constants.MAX_LENGTH (4 GiB on Node 20). A 'sab' region is a
 * SharedArrayBuffer and has no such cap.
 */
const MAX_MAPPED_SIZE = Math.min(MAX_REGION_SIZE, bufferConstants.MAX_LENGTH);

/** How many times openNamed opens a name that keeps losing its object before it gives up. */
const NAME_ATTEMPTS = 20;

/**
 * Opens a posix or file object by its name (`open`) and holds its name
 * lock (holdName, locks.ts) on the new fd: the fd returned is the object
 * the name leads to now, and `shmring unlink-stale` cannot remove the
 * name while the region is open. An fd whose object lost the name before
 * the lock was taken (unlink-stale removed it between our open and its
 * unlink, or someone replaced it) is closed and the name opened again:
 * ENOENT then, or the object that has the name now.
 */
function openNamed(open: () => number, described: Described): number {
  for (let attempt = 1; ; attempt++) {
    const fd = open();
    let named: boolean;
    try {
      named = holdName(fd, described.path!, described.object);
    } catch (err) {
      backend().close(fd);
      throw err;
    }
    if (named) return fd;
    backend().close(fd);
    if (attempt === NAME_ATTEMPTS) {
      throw new ShmringError(
        ErrorCodes.BUSY,
        `${described.object} was removed or replaced each of the ${NAME_ATTEMPTS} times it was opened; find what keeps removing it (shmring unlink-stale in a loop?)`,
      );
    }
  }
}

/**
 * What an adopted fd (Region.fromFd, receiveRegion) maps, from the link
 * /proc/self/fd/<fd>: a memfd ('/memfd:<label> (deleted)'), a POSIX
 * object ('/dev/shm/<name>', its name), or a file (its path). Only a
 * tmpfs file supports seals (`sealable`): a memfd, a POSIX object, or a
 * file of another tmpfs. A name or path that was unlinked since, or that
 * the link cannot give, stays undefined, and unlink() then has nothing to
 * remove.
 */
function fdIdentity(fd: number, sealable: boolean): { backing: 'memfd' | 'posix' | 'file'; name?: string; path?: string } {
  let link: string | undefined;
  try {
    link = fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    // no /proc: a sealable fd is taken for a memfd, as one most often is
  }
  if (link === undefined) return { backing: sealable ? 'memfd' : 'file' };
  if (sealable && link.startsWith('/memfd:')) return { backing: 'memfd' };
  const linked = link.endsWith(' (deleted)') ? undefined : link;
  const inShm = /^\/dev\/shm\/([^/]+)$/.exec(link.replace(/ \(deleted\)$/, ''));
  if (sealable && inShm !== null) return linked === undefined ? { backing: 'posix' } : { backing: 'posix', name: `/${inShm[1]}` };
  return linked === undefined ? { backing: 'file' } : { backing: 'file', path: linked };
}

/**
 * Sizes a posix or file object that Region.create opened and returns the
 * size to map. An object is never shrunk: other processes may have it
 * mapped, and a page cut off under them raises SIGBUS at their next touch.
 * A smaller one grows to `size`; a larger one keeps its size and is mapped
 * whole, as a System V segment is. This holds for creators that race: the
 * look at the size and the ftruncate happen under an exclusive lock on
 * SIZING_LOCK_BYTE of the file, so two processes that both find the object
 * smaller than their sizes grow it one after the other, and the second
 * sees the first's size (without the lock, the smaller size could land
 * last). Even the exclusive creator takes it: an `exclusive: false` peer
 * may have opened and grown the object between its creation and now.
 *
 * An object this create made (`mode` given: see openCreating) gets exactly
 * `mode` before it grows: open(2) and shm_open(3) narrow the mode by the
 * process's umask (0644 for 0666 under the usual 022), where shmget(2), for
 * a System V segment, does not. A mode asked for is the mode the object
 * has; an object found there keeps its own (`mode` undefined).
 */
function sizeFor(fd: number, size: number, what: string, mode: number | undefined): number {
  mappableStat(fd, what, 'Region.create of'); // a FIFO or a directory that had the name: nothing to size
  let locked = lockForSizing(fd, what);
  try {
    const stat = fs.fstatSync(fd);
    const existing = stat.size;
    if (mode !== undefined && (stat.mode & 0o7777) !== mode) fs.fchmodSync(fd, mode);
    if (existing >= size) {
      checkMappable(existing, 'Region.create of', `${what} (it exists, with ${existing} bytes)`, EXISTING_TOO_LARGE);
      return existing;
    }
    reserve(fd, size);
    return size;
  } catch (err) {
    // The sizing failed (ENOSPC, say): that is the error to report, not one of the unlock's.
    if (locked) {
      locked = false;
      try {
        unlockFileByte(fd, SIZING_LOCK_BYTE);
      } catch {
        // the fd is closed next (withFd), and its lock with it
      }
    }
    throw err;
  } finally {
    if (locked) unlockFileByte(fd, SIZING_LOCK_BYTE);
  }
}

/**
 * Grows the object behind `fd` to `size` bytes with its memory reserved
 * (fallocate): a /dev/shm or disk too small for it fails here with ENOSPC.
 * An ftruncate alone makes a sparse file that tmpfs does not count: the
 * create succeeded, and the first touch of a page past the limit (Docker's
 * /dev/shm is 64 MiB) killed the process with SIGBUS. A file system that
 * cannot reserve gets the ftruncate. The memory is committed at once: a
 * tmpfs allocates and zeroes every page here (about 27 ms for 256 MiB on
 * the test machine), not at first touch.
 */
function reserve(fd: number, size: number): void {
  try {
    backend().allocate(fd, 0, size);
  } catch (err) {
    // Where fallocate cannot be had: a file system without it (EOPNOTSUPP, some EINVAL), a seccomp filter or a
    // sandbox kernel (ENOSYS). ENOSPC, EFBIG and the rest are the answer.
    const code = (err as { code?: string }).code;
    if (code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS' && code !== 'EINVAL') throw err;
    fs.ftruncateSync(fd, size);
  }
}

/**
 * Opens the object `open` names (its flags: O_CREAT | O_EXCL, or none),
 * creating it if it does not exist; `created` says which. With `exclusive`
 * only a new one will do (EEXIST otherwise). Without it: create, and on
 * EEXIST open the one there, and again if that went meanwhile (ENOENT).
 * Only the creator gives an object its mode: an existing one keeps its own
 * (a group-shared file's 0660 stayed 0600 after an exclusive: false
 * create that found it empty, shutting its group out).
 */
function openCreating(open: (extra: number) => number, exclusive: boolean): { fd: number; created: boolean } {
  for (let attempt = 1; ; attempt++) {
    try {
      return { fd: open(O_CREAT | O_EXCL), created: true };
    } catch (err) {
      if (exclusive || (err as { code?: string }).code !== 'EEXIST') throw err;
    }
    try {
      return { fd: open(0), created: false };
    } catch (err) {
      if ((err as { code?: string }).code !== 'ENOENT') throw err;
      // EEXIST, then ENOENT, again and again: a symbolic link to nothing (O_EXCL never follows one). O_CREAT
      // alone makes its target, as it did before; whether it was this call that made it, nothing tells.
      if (attempt === NAME_ATTEMPTS) return { fd: open(O_CREAT), created: false };
    }
  }
}

/** How long Region.create waits for another creator's sizing (a few system calls) before it gives up. */
const SIZING_WAIT_MS = 10_000;

/**
 * How long Region.open looks at an empty object before it says so: its
 * creator may be between its open and its sizing lock (a few system calls,
 * unless it was preempted there).
 */
const EMPTY_WAIT_MS = 100;

/**
 * Takes the sizing lock (locks.ts, SIZING_LOCK_BYTE) on `fd`, waiting
 * while another creator holds it. False where the file system has no such
 * locks: the sizing then goes unserialized, as it did before.
 */
function lockForSizing(fd: number, what: string): boolean {
  return waitForFileByte(
    fd,
    SIZING_LOCK_BYTE,
    false,
    SIZING_WAIT_MS,
    `Region.create of ${what}: another process (stopped in the middle?) has been sizing it`,
  );
}

/** checkMappable's advice for a region that is to be made. */
const NEW_TOO_LARGE = "use a smaller region, or a 'sab' region (a SharedArrayBuffer), which this limit does not bind";
/** checkMappable's advice for an object that exists (a file, a POSIX object, a System V segment) and is too large. */
const EXISTING_TOO_LARGE =
  'it exists with that size and cannot be mapped here: check that it is the object meant (a sparse file of that size, say), ' +
  'or recreate it smaller';

/** Checks that a region of `size` bytes of a mapped backing can be mapped here: before anything is created, or before an existing object is mapped. */
function checkMappable(size: number, what: string, object: string, advice = NEW_TOO_LARGE): void {
  if (size > MAX_MAPPED_SIZE) {
    throw new ShmringRangeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${what} ${object}: size=${size} is more than this Node maps as one ArrayBuffer (${MAX_MAPPED_SIZE} bytes, buffer.constants.MAX_LENGTH); ` +
        advice,
    );
  }
}

function checkMode(mode: unknown): number {
  return mode === undefined ? 0o600 : checkInteger('mode', mode, 0, 0o7777, 'Region.create');
}

/** The advice for a 'file' region's path that names a directory. */
const IS_A_DIRECTORY = 'it is a directory: give the path of a file (one in that directory, say)';

function isDirectory(path: string): boolean {
  try {
    return fs.statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function checkPath(path: unknown, verb: string): string {
  if (typeof path !== 'string' || path.length === 0) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_ARGUMENT,
      `${verb}: path must be a non-empty string for the 'file' backing, got ${String(path)}`,
    );
  }
  if (path.includes('\0')) {
    // The kernel would read the path up to the NUL: another file than the one named.
    throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${verb}: path ${JSON.stringify(path)} must not contain a NUL character`);
  }
  // Made absolute against the working directory of this call: unlink() and unlinkOnExit remove this file,
  // whatever the directory is by then (a relative path would name another one after a process.chdir()). Not
  // normalized (nodePath.resolve would drop `link/..` by its text, where the kernel follows the link first).
  return nodePath.isAbsolute(path) ? path : `${process.cwd()}/${path}`;
}

/** Checks a memfd's label (shown in /proc/<pid>/fd): a string without NUL (memfd_create refuses one over 249 bytes: EINVAL). */
function checkLabel(label: unknown, verb: string): string {
  if (typeof label !== 'string') {
    throw new ShmringTypeError(ErrorCodes.INVALID_NAME, `${verb}: a memfd's name must be a string, got ${typeof label}`);
  }
  if (label.includes('\0')) {
    throw new ShmringTypeError(
      ErrorCodes.INVALID_NAME,
      `${verb}: a memfd's name ${JSON.stringify(label)} must not contain a NUL character`,
    );
  }
  return label;
}

/** A file's identity: its device and inode. */
interface ObjectId {
  dev: number;
  ino: number;
}

function objectOf(fd: number): ObjectId | undefined {
  try {
    const { dev, ino } = fs.fstatSync(fd);
    return { dev, ino };
  } catch {
    return undefined;
  }
}

/**
 * Throws ENOENT unless `path` still leads to `object`: the region's own name
 * was removed (by hand, or another process's unlink) and a newer object,
 * another process's, took it; unlinking that would pull it from under its
 * users. (A rename in the instant between this look and the unlink is not
 * caught.) Does nothing where the object is not known, or the path is gone
 * (the unlink then says ENOENT itself).
 */
function stillNames(path: string, object: ObjectId | undefined): void {
  if (object === undefined) return;
  const now = fs.statSync(path, { throwIfNoEntry: false });
  if (now === undefined || (now.dev === object.dev && now.ino === object.ino)) return;
  throw Object.assign(new Error(`unlink failed: ${path} names another object now (ENOENT)`), {
    code: 'ENOENT',
    errno: 2,
    syscall: 'unlink',
  });
}

/**
 * Runs `body` with `fd`; if it throws, runs `undo` (with `fd` still open:
 * it may take a lock on it) and then closes the fd, each whatever the
 * other does, and rethrows the body's error.
 */
function withFd<T>(fd: number, body: (fd: number) => T, undo?: () => void): T {
  try {
    return body(fd);
  } catch (err) {
    try {
      undo?.();
    } catch {
      // the first error is the one to report
    }
    try {
      backend().close(fd);
    } catch {
      // the first error is the one to report
    }
    throw err;
  }
}

/**
 * Removes (`remove`) the name `path` of an object that this Region.create
 * made on `fd` and could not complete (its sizing ran out of space, its
 * mmap failed), unless another has joined it meanwhile: an
 * `exclusive: false` create or an open of the name, which hold
 * NAME_LOCK_BYTE shared from their open on (openNamed), and may be using
 * the object already; the name is theirs then, and stays. Our own shared
 * lock is converted to an exclusive one, which the kernel refuses while any
 * other description holds the byte, and held (until the caller closes
 * `fd`) across the check that `path` still leads to our object and the
 * unlink: one that opens the name meanwhile waits for the lock, then finds
 * the object nameless and opens the name again (holdName). Where the file
 * system has no OFD locks, the name is removed if it still leads to our
 * object, as before.
 */
function removeIfNobodyJoined(fd: number, path: string, remove: () => void): void {
  if (lockFileByte(fd, NAME_LOCK_BYTE) === false) return;
  if (namesObject(fd, path, false)) remove();
}

// ---- naming the object in system call errors ----

/** How a message names an object, and the `path` its errors carry. */
interface Described {
  object: string;
  path?: string;
}

function describePosix(name: string): Described {
  const bare = name.slice(1);
  return { object: `POSIX shared memory object '${bare}' (/dev/shm/${bare})`, path: `/dev/shm/${bare}` };
}

function describeFile(path: string): Described {
  return { object: `file '${path}'`, path };
}

function describeSysv(key: number | undefined, id: number | undefined): Described {
  if (key === undefined && id === undefined) return { object: 'a new private System V shared memory segment' };
  if (key === undefined) return { object: `System V shared memory segment id ${id}` };
  return { object: `System V shared memory segment key ${hexKey(key)}${id === undefined ? '' : ` (id ${id})`}` };
}

/** What to do about the errors of shmget, shmat and shmctl, in Region.create (`creating`) or open and unlink. */
function sysvHint(code: string, creating: boolean, hugePages = false): string | undefined {
  switch (code) {
    case 'EEXIST':
      return existsHint(
        'the key',
        '`shmring inspect --all` lists the rings in System V segments and ' +
          'whether their processes still live (`ipcs -m` lists every segment)',
      );
    case 'ENOENT':
      return (
        "no segment has this key: create it first (Region.create with backing 'sysv'), or check the key " +
        '(`ipcs -m`, `shmring inspect --all`)'
      );
    case 'EINVAL':
    case 'EIDRM':
      return creating
        ? 'size is above kernel.shmmax (/proc/sys/kernel/shmmax), or (exclusive: false) the segment with this key is smaller than size'
        : 'no segment has this id: it was removed (unlink()) and every process detached, or it never existed (`ipcs -m`)';
    case 'ENOSPC':
      return (
        'the system limit of segments (kernel.shmmni) or of shared memory (kernel.shmall) is reached: ' +
        'remove the segments nobody uses (`ipcs -m`, `ipcrm`)'
      );
    case 'EPERM':
      if (hugePages) return 'huge page segments need CAP_IPC_LOCK or the group in /proc/sys/vm/hugetlb_shm_group';
      return undefined;
    default:
      return undefined;
  }
}

/** What to do about the errors any region operation can meet. */
function commonHint(code: string): string | undefined {
  switch (code) {
    case 'EMFILE':
    case 'ENFILE':
      return 'too many open files: close() the regions you no longer use, or raise the limit (ulimit -n)';
    case 'ENOMEM':
      return 'out of memory: free some, or ask for a smaller size';
    case 'ENOSPC':
      return (
        'out of space on its file system (for /dev/shm, a tmpfs: `df -h /dev/shm`; a container gets 64 MiB ' +
        'unless started with a larger --shm-size): free some, ask for a smaller size, or use a memfd region'
      );
    case 'EACCES':
    case 'EPERM':
      return 'it belongs to another user or its mode forbids this: run as its owner, or have it created with a wider `mode`';
    case 'ENAMETOOLONG':
      return 'use a shorter name or path';
    default:
      return undefined;
  }
}

/** The EEXIST hint of Region.create: how to tell a leftover from a live object. */
function existsHint(
  target: string,
  inspection = `\`shmring inspect ${target}\` shows whether the processes of a ring in it still live`,
): string {
  return (
    'it may be a leftover of a process that died before unlink(): ' +
    `${inspection} ` +
    '(`shmring unlink-stale` removes the rings nobody holds: no ring object of any process is attached, no process has the object open by name); ' +
    `otherwise pick another ${target === 'the key' ? 'key' : 'name'}, or pass exclusive: false to reuse it`
  );
}

/** Rethrows `err` from `operation` on `described`, named (see onObject), with `hint` before the common hints. */
function failOn(err: unknown, operation: string, described: Described, hint?: (code: string) => string | undefined): never {
  throw onObject(err, operation, described.object, {
    ...(described.path === undefined ? {} : { path: described.path }),
    hint: (code) => hint?.(code) ?? commonHint(code),
  });
}

function fromFdHint(code: string): string | undefined {
  return code === 'EBADF' ? 'the fd is not open: pass an fd this process inherited or received (and has not closed)' : undefined;
}

/** Whether `fd` is a memfd sealed against writing (a writable shared mapping of it fails with EPERM). */
function writeSealed(fd: number): boolean {
  try {
    return (backend().getSeals(fd) & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) !== 0;
  } catch {
    return false; // no memfd (EINVAL), or the fd is gone: the EPERM is another's
  }
}

/** Region.#adopt, handed out by Region's static block (adoptFd needs the private constructor's path). */
let adoptFdImpl: (fd: number, options: FromFdOptions, object: string) => Region;

/**
 * Maps an fd that nobody else holds (received by receiveRegion, or the
 * duplicate fromFd makes) and makes it the region's: closed with the region,
 * or by this function if it cannot be mapped. Internal to @shmring/core.
 */
export function adoptFd(fd: number, options: FromFdOptions = {}, object = `fd ${fd}`): Region {
  return withFd(fd, () => {
    try {
      // The options are checked by the callers (Region.fromFd, receiveRegion).
      return adoptFdImpl(fd, options, object);
    } catch (err) {
      failOn(err, 'Region.fromFd of', { object }, (code) =>
        code === 'EPERM' && writeSealed(fd)
          ? 'the memfd is sealed against writing (F_SEAL_WRITE: a Region.snapshot(), say): map it with { readOnly: true }'
          : fromFdHint(code),
      );
    }
  });
}

export class Region {
  /** How the memory is backed. */
  readonly backing: Backing;
  /** Size of the mapping in bytes. */
  readonly size: number;
  /** The POSIX name (with its leading '/'), for 'posix' regions. */
  readonly name: string | undefined;
  /** The file's path, for 'file' regions: absolute (a relative one is resolved against the working directory of the create or open). */
  readonly path: string | undefined;
  /**
   * 'sysv': the key it was created or opened with, unsigned (as `ipcs -m`
   * prints it); undefined for a private segment and one opened by id.
   */
  readonly key: number | undefined;
  /** 'sysv': the segment's id (shmid), by which any process may open it (Region.open({ backing: 'sysv', id })). */
  readonly id: number | undefined;
  /** True when mapped PROT_READ only. */
  readonly readOnly: boolean;
  #fd: number;
  #buffer: ArrayBuffer | SharedArrayBuffer | undefined;
  /** A 'posix' or 'file' region's object (device and inode), for unlink(): its name may lead elsewhere by then. */
  readonly #object: ObjectId | undefined;

  private constructor(init: {
    backing: Backing;
    size: number;
    fd: number;
    buffer: ArrayBuffer | SharedArrayBuffer;
    name?: string;
    path?: string;
    key?: number;
    id?: number;
    readOnly?: boolean;
  }) {
    this.backing = init.backing;
    this.size = init.size;
    this.name = init.name;
    this.path = init.path;
    this.key = init.key;
    this.id = init.id;
    this.readOnly = init.readOnly ?? false;
    this.#fd = init.fd;
    this.#buffer = init.buffer;
    this.#object = (init.backing === 'posix' || init.backing === 'file') && init.fd >= 0 ? objectOf(init.fd) : undefined;
  }

  /** Creates a new region. See the module comment for what each backing is. */
  static create(options: CreateOptions): Region {
    if (options === null || typeof options !== 'object') {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, 'Region.create needs an options object');
    }
    checkOptionNames(options, CREATE_OPTION_NAMES, 'Region.create');
    checkBoolean('exclusive', options.exclusive, 'Region.create', true);
    checkBoolean('unlinkOnExit', options.unlinkOnExit, 'Region.create');
    const requested = checkSize(options.size, 'Region.create');
    const hugePages = checkHugePages(options);
    checkApplicable(options, CREATE_OPTIONS_OF, 'Region.create');
    const pool = hugePages ? hugePagePool() : undefined;
    const size = pool === undefined ? requested : checkSize(roundToHugePages(requested, pool), 'Region.create');
    if (options.backing !== 'sab') checkMappable(size, 'Region.create of', `a '${String(options.backing)}' region`);
    switch (options.backing) {
      case 'sab':
        return Region.fromSharedArrayBuffer(allocateShared(size));
      case 'memfd': {
        const label = checkLabel(options.name ?? 'shmring', 'Region.create');
        const described = { object: `memfd '${label}'` };
        if (hugePages && pool === undefined) throw noHugePages('Region.create of', described.object, size, pool);
        try {
          const fd = backend().memfdCreate(label, hugePages);
          const region = withFd(fd, () => {
            fs.ftruncateSync(fd, size);
            // Seal the size: no peer can shrink the file (which would SIGBUS us) or grow it.
            backend().addSeals(fd, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
            return Region.#map('memfd', fd, size, false, {});
          });
          // Outside withFd: from here on the mapping owns the fd, and close() gives it back.
          if (hugePages) Region.#populate(region);
          return region;
        } catch (err) {
          if (hugePages && isHugePageShortage(err)) throw noHugePages('Region.create of', described.object, size, pool, err);
          // memfd_create's EINVAL is its name (over 249 bytes); an EINVAL of ftruncate, F_ADD_SEALS or mmap is not.
          const syscall = (err as { syscall?: unknown }).syscall;
          failOn(err, 'Region.create of', described, (code) =>
            code === 'EINVAL' && syscall === 'memfd_create' ? 'a memfd name is at most 249 bytes' : undefined,
          );
        }
      }
      case 'sysv':
        return Region.#createSysv(options, size, hugePages, pool);
      case 'posix': {
        const name = posixName(options.name, 'Region.create');
        return Region.#createNamed(options, size, {
          backing: 'posix',
          names: { name },
          described: describePosix(name),
          open: (flags, mode) => backend().shmOpen(name, flags, mode),
          remove: () => backend().shmUnlink(name),
          unlink: () => backend().shmUnlink(name),
          hint: (code) => {
            if (code === 'EEXIST') return existsHint(name.slice(1));
            return code === 'EINVAL' ? notAnObjectHint : undefined;
          },
          exitKey: `posix:${name}`,
          exitPath: `/dev/shm/${name.slice(1)}`,
        });
      }
      case 'file': {
        const path = checkPath(options.path, 'Region.create');
        return Region.#createNamed(options, size, {
          backing: 'file',
          names: { path },
          described: describeFile(path),
          open: (flags, mode) => backend().open(path, flags, mode),
          remove: () => fs.rmSync(path, { force: true }),
          unlink: () => fs.unlinkSync(path),
          hint: (code) => {
            if (code === 'EEXIST') return isDirectory(path) ? IS_A_DIRECTORY : existsHint(nodePath.resolve(path));
            if (code === 'EISDIR') return IS_A_DIRECTORY;
            if (code === 'ENOENT') return 'its directory does not exist: create the directory first';
            return undefined;
          },
          exitKey: `file:${path}`,
          exitPath: path,
        });
      }
      default:
        throw new ShmringTypeError(
          ErrorCodes.INVALID_BACKING,
          `Region.create: backing=${String(options.backing)} is not one of 'memfd', 'posix', 'file', 'sysv', 'sab'`,
        );
    }
  }

  /**
   * A new System V segment (shmget with IPC_CREAT, IPC_EXCL unless
   * exclusive: false; IPC_PRIVATE without a key), attached read-write. A
   * segment this call created is removed again if it cannot be attached.
   */
  static #createSysv(options: CreateOptions, size: number, hugePages: boolean, pool: HugePagePool | undefined): Region {
    const key = options.key === undefined ? undefined : sysvKey(options.key, 'Region.create');
    const exclusive = key === undefined || options.exclusive !== false;
    const mode = checkInteger('mode', options.mode ?? 0o600, 0, 0o777, 'Region.create');
    if (hugePages && pool === undefined) throw noHugePages('Region.create of', describeSysv(key, undefined).object, size, pool);
    let id: number;
    // Whether this call made the segment: without `exclusive` it may take one that is there (EEXIST on the
    // exclusive try, then the plain one), which a failure here must leave alone.
    let created = true;
    const flags = IPC_CREAT | mode | (hugePages ? SHM_HUGETLB : 0);
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          id = backend().shmGet(key ?? 0, size, flags | IPC_EXCL);
          break;
        } catch (err) {
          if (exclusive || (err as { code?: string }).code !== 'EEXIST') throw err;
        }
        // The key's segment, without IPC_CREAT: removed since (ENOENT), the exclusive create is tried again, so
        // that `created` always says who made the segment.
        try {
          id = backend().shmGet(key ?? 0, size, flags & ~IPC_CREAT);
          created = false;
          break;
        } catch (err) {
          if ((err as { code?: string }).code !== 'ENOENT' || attempt === NAME_ATTEMPTS) throw err;
        }
      }
    } catch (err) {
      const described = describeSysv(key, undefined);
      if (hugePages && isHugePageShortage(err)) throw noHugePages('Region.create of', described.object, size, pool, err);
      failOn(err, 'Region.create of', described, (code) => sysvHint(code, true, hugePages));
    }
    let region: Region;
    try {
      // Found there (exclusive: false), it may be larger than `size`, and than what this Node maps.
      checkSysvMappable(id, 'Region.create of', describeSysv(key, id));
      const buffer = backend().shmAttach(id, true);
      region = new Region({ backing: 'sysv', size: buffer.byteLength, fd: -1, buffer, id, ...(key === undefined ? {} : { key }) });
      if (hugePages) Region.#populate(region);
    } catch (err) {
      // Made by this call (with `exclusive: false` too, when nobody had the key): it goes, unless another
      // process has attached it meanwhile (an exclusive: false create or an open of its key), whose it is then.
      // A process that has looked its id up but not attached yet is not seen: it attaches a segment marked
      // for removal, whose key is gone.
      if (created && (sysvSegment(id)?.attached ?? 0) === 0) {
        try {
          backend().shmRemove(id);
        } catch {
          // the first error is the one to report
        }
      }
      const described = describeSysv(key, id);
      if (hugePages && isHugePageShortage(err)) throw noHugePages('Region.create of', described.object, size, pool, err);
      failOn(err, 'Region.create of', described, (code) => sysvHint(code, false, hugePages));
    }
    if (options.unlinkOnExit) removeAtExit(`sysv:${id}`, () => backend().shmRemove(id));
    return region;
  }

  /** Opens an existing System V segment by key or by id. */
  static #openSysv(options: OpenOptions, readOnly: boolean): Region {
    if (options.key !== undefined && options.id !== undefined) {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, "Region.open of a 'sysv' segment takes its key or its id, not both");
    }
    if (options.key === undefined && options.id === undefined) {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, "Region.open of a 'sysv' segment needs its key or its id");
    }
    const key = options.key === undefined ? undefined : sysvKey(options.key, 'Region.open');
    let id = options.id === undefined ? undefined : checkSysvId(options.id, 'Region.open');
    try {
      id ??= backend().shmGet(key!, 0, 0);
      checkSysvMappable(id, 'Region.open of', describeSysv(key, id));
      const buffer = backend().shmAttach(id, !readOnly);
      return new Region({ backing: 'sysv', size: buffer.byteLength, fd: -1, buffer, id, readOnly, ...(key === undefined ? {} : { key }) });
    } catch (err) {
      failOn(err, 'Region.open of', describeSysv(key, id), (code) => sysvHint(code, false));
    }
  }

  /**
   * Faults in every page of a new huge-page region (MADV_POPULATE_WRITE),
   * so that a page the pool cannot give fails here instead of raising
   * SIGBUS at its first touch; closes the region if that fails. A kernel
   * without the advice (EINVAL, Linux < 5.14) keeps the reservation that
   * mmap or shmget made, which covers every case but a hugetlb cgroup limit.
   */
  static #populate(region: Region): void {
    try {
      backend().populate(region.buffer as ArrayBuffer);
    } catch (err) {
      if ((err as { code?: string }).code === 'EINVAL' && (err as { syscall?: string }).syscall === 'madvise') return;
      try {
        region.close();
      } catch {
        // the first error is the one to report
      }
      throw err;
    }
  }

  /** Opens an existing POSIX object, file or System V segment; its size is the region's size. */
  static open(options: OpenOptions): Region {
    if (options === null || typeof options !== 'object') {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, 'Region.open needs an options object');
    }
    checkOptionNames(options, OPEN_OPTION_NAMES, 'Region.open');
    checkApplicable(options, OPEN_OPTIONS_OF, 'Region.open');
    const readOnly = checkBoolean('readOnly', options.readOnly, 'Region.open');
    const flags = (readOnly ? O_RDONLY : O_RDWR) | O_NONBLOCK;
    switch (options.backing) {
      case 'posix': {
        const name = posixName(options.name, 'Region.open');
        try {
          const fd = openNamed(() => backend().shmOpen(name, flags, 0), describePosix(name));
          return withFd(fd, () =>
            Region.#map('posix', fd, Region.#existingSize(fd, describePosix(name).object, undefined, true), readOnly, { name }),
          );
        } catch (err) {
          failOn(err, 'Region.open of', describePosix(name), (code) => {
            if (code === 'ENOENT') return 'nothing has that name: create it first (Region.create), or check the name (ls /dev/shm)';
            return code === 'EINVAL' ? notAnObjectHint : undefined;
          });
        }
      }
      case 'file': {
        const path = checkPath(options.path, 'Region.open');
        try {
          const fd = openNamed(() => backend().open(path, flags, 0), describeFile(path));
          return withFd(fd, () =>
            Region.#map('file', fd, Region.#existingSize(fd, describeFile(path).object, undefined, true), readOnly, { path }),
          );
        } catch (err) {
          failOn(err, 'Region.open of', describeFile(path), (code) =>
            code === 'ENOENT'
              ? 'no such file: create it first (Region.create), or check the path'
              : code === 'EISDIR'
                ? IS_A_DIRECTORY
                : undefined,
          );
        }
      }
      case 'sysv':
        return Region.#openSysv(options, readOnly);
      default:
        throw new ShmringTypeError(
          ErrorCodes.INVALID_BACKING,
          `Region.open: backing=${String((options as { backing?: unknown }).backing)} cannot be opened; use 'posix', 'file' or 'sysv' ` +
            '(a memfd region is shared by its fd: Region.fromFd; a sab region by its buffer: Region.fromSharedArrayBuffer)',
        );
    }
  }

  /**
   * Maps an fd this process inherited or received (or that another thread
   * of it passed along). The region maps and owns a duplicate of the fd
   * (F_DUPFD_CLOEXEC: the same open file), which close() closes, and GC of
   * a region dropped without close(); the fd passed in stays the caller's,
   * to close when it is no longer needed. So a worker may map the fd of a
   * region the main thread owns, and an fd that node:fs opened stays fs's.
   * A memfd without a shrink seal is sealed here so that no peer can
   * truncate it under us.
   */
  static fromFd(fd: number, options: FromFdOptions = {}): Region {
    checkInteger('fd', fd, 0, 2 ** 31 - 1, 'Region.fromFd');
    if (options === null || typeof options !== 'object') {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `Region.fromFd: options=${shown(options)} must be an object`);
    }
    checkOptionNames(options, FROM_FD_OPTION_NAMES, 'Region.fromFd');
    checkBoolean('readOnly', options.readOnly, 'Region.fromFd');
    checkBoolean('requireSealed', options.requireSealed, 'Region.fromFd');
    checkBoolean('requireFixedSize', options.requireFixedSize, 'Region.fromFd');
    let own: number;
    try {
      own = backend().dup(fd);
    } catch (err) {
      failOn(err, 'Region.fromFd of', { object: `fd ${fd}` }, fromFdHint);
    }
    return adoptFd(own, options, `fd ${fd}`);
  }

  /** Maps `fd` and owns it from the start (see adoptFd). */
  static #adopt(fd: number, options: FromFdOptions, object: string): Region {
    const readOnly = options.readOnly === true;
    const requireSealed = options.requireSealed === true;
    let seals: number | undefined;
    try {
      seals = backend().getSeals(fd);
    } catch (err) {
      if ((err as { code?: string }).code !== 'EINVAL') throw err;
    }
    if (requireSealed && !immutable(seals)) {
      throw new ShmringError(
        ErrorCodes.NOT_SEALED,
        seals === undefined
          ? `${object} is not a memfd: it cannot be sealed, and whoever can open its file can change it; ask the peer for a Region.snapshot()`
          : `${object}: the memfd's seals (0x${seals.toString(16)}) still let a peer change it: it needs F_SEAL_WRITE (F_SEAL_FUTURE_WRITE leaves the sender's own mappings writable), F_SEAL_SHRINK and F_SEAL_GROW; ask the peer for a Region.snapshot()`,
      );
    }
    // The shrink seal first, then the size: a sender that shrank the file between a look at its size and
    // the seal would leave a mapping past its end (SIGBUS at the first touch there).
    // A memfd handed over read-only (an fd opened O_RDONLY, as /proc/<pid>/fd/<n> of it can be) takes no seal
    // from us (EPERM: adding seals needs an fd open for writing): mapped as it is, unless a fixed size is required.
    let readOnlyFd = false;
    if (seals !== undefined && (seals & F_SEAL_SHRINK) === 0 && (seals & F_SEAL_SEAL) === 0) {
      try {
        backend().addSeals(fd, F_SEAL_SHRINK);
        seals |= F_SEAL_SHRINK;
      } catch (err) {
        if ((err as { code?: string }).code !== 'EPERM') throw err;
        readOnlyFd = true;
      }
    }
    if (options.requireFixedSize === true && (seals === undefined || (seals & F_SEAL_SHRINK) === 0)) {
      throw new ShmringError(
        ErrorCodes.NOT_SEALED,
        seals === undefined
          ? `${object} is not a memfd: whoever can open its file can shrink it, and this process would fault (SIGBUS) on the pages cut off; have the peer send a memfd`
          : readOnlyFd
            ? `${object} is a memfd open read-only here, so this process cannot seal it against shrinking (EPERM), and its sender still can shrink it (this process would fault, SIGBUS, on the pages cut off); have the peer seal it (F_SEAL_SHRINK) before it sends it, or send an fd open for writing`
            : `${object} cannot be sealed against shrinking (seals 0x${seals.toString(16)}: a memfd made without MFD_ALLOW_SEALING, or a POSIX object or tmpfs file): its sender can shrink it, and this process would fault (SIGBUS) on the pages cut off; have the peer send a memfd made with MFD_ALLOW_SEALING (Region.create's)`,
      );
    }
    const size = Region.#existingSize(fd, object, 'Region.fromFd of');
    // A sealed one maps read-only: a writable shared mapping of it is refused (EPERM), and nobody may write it anyway.
    const { backing, ...names } = fdIdentity(fd, seals !== undefined);
    return Region.#map(backing, fd, size, readOnly || requireSealed, names);
  }

  static {
    adoptFdImpl = (fd, options, object) => Region.#adopt(fd, options, object);
  }

  /**
   * Region.create of a named object (a POSIX shared memory object or a
   * file): opens it exclusively, or creating it if need be
   * (`exclusive: false`; the mode only on one this call made), sizes and
   * maps it; a failure removes what this call made, never what it found;
   * `unlinkOnExit` removes the name at exit if it still leads to this object.
   */
  static #createNamed(
    options: CreateOptions,
    size: number,
    named: {
      backing: 'posix' | 'file';
      names: { name?: string; path?: string };
      described: Described;
      open: (flags: number, mode: number) => number;
      /** Removes what a failed create made (quietly). */
      remove: () => void;
      /** Removes the name at exit (unlinkOnExit). */
      unlink: () => void;
      hint: (code: string) => string | undefined;
      exitKey: string;
      exitPath: string;
    },
  ): Region {
    const exclusive = options.exclusive !== false;
    const mode = checkMode(options.mode);
    const { described } = named;
    let region: Region;
    try {
      let created = exclusive;
      const fd = openNamed(() => {
        const opened = openCreating((extra) => named.open(O_RDWR | O_NONBLOCK | extra, mode), exclusive);
        created = opened.created;
        return opened.fd;
      }, described);
      region = withFd(
        fd,
        () => Region.#map(named.backing, fd, sizeFor(fd, size, described.object, created ? mode : undefined), false, named.names),
        // What this create made goes if it fails (sizing out of space, say), unless someone joined it
        // meanwhile; one found there stays.
        () => {
          if (created) removeIfNobodyJoined(fd, named.exitPath, named.remove);
        },
      );
    } catch (err) {
      failOn(err, 'Region.create of', described, named.hint);
    }
    if (options.unlinkOnExit) {
      const object = region.#object;
      removeAtExit(named.exitKey, () => {
        stillNames(named.exitPath, object);
        named.unlink();
      });
    }
    return region;
  }

  /**
   * A sealed snapshot: a memfd of `bytes` (or of `size` bytes that `fill`
   * writes through a view), sealed with F_SEAL_WRITE, F_SEAL_SHRINK,
   * F_SEAL_GROW and F_SEAL_SEAL, and mapped read-only. The kernel itself
   * keeps it immutable: no process, this one included, can write, resize or
   * unseal it, so a peer that receives it (sendRegion, or its fd inherited
   * or passed to a worker) and maps it with `requireSealed: true` may use it
   * directly, without a copy or a check of its contents.
   */
  static snapshot(content: Uint8Array | ((view: Uint8Array) => void), options: SnapshotOptions = {}): Region {
    const fill = typeof content === 'function' ? content : undefined;
    if (fill === undefined && !(content instanceof Uint8Array)) {
      throw new ShmringTypeError(
        ErrorCodes.INVALID_ARGUMENT,
        'Region.snapshot needs a Uint8Array or a function (view) => void that fills it',
      );
    }
    if (options === null || typeof options !== 'object') {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, 'Region.snapshot: options must be an object');
    }
    checkOptionNames(options, SNAPSHOT_OPTION_NAMES, 'Region.snapshot');
    const bytes = fill === undefined ? (content as Uint8Array) : undefined;
    if (fill !== undefined && options.size === undefined) {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, 'Region.snapshot with a fill function needs options.size (bytes)');
    }
    const size = checkSize(options.size ?? bytes!.length, 'Region.snapshot');
    checkMappable(size, 'Region.snapshot of', 'a memfd region');
    if (bytes !== undefined && bytes.length > size) {
      throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `Region.snapshot: ${bytes.length} bytes do not fit size=${size}`);
    }
    const label = checkLabel(options.name ?? 'shmring-snapshot', 'Region.snapshot');
    let fd: number;
    try {
      fd = backend().memfdCreate(label);
    } catch (err) {
      failOn(err, 'Region.snapshot of', { object: `memfd '${label}'` });
    }
    return withFd(fd, () => {
      fs.ftruncateSync(fd, size);
      // Filled through a writable mapping of our own, unmapped before the seal: F_SEAL_WRITE
      // is refused (EBUSY) while any writable shared mapping of the file exists.
      const scratch = backend().mmap(fd, size, true, false);
      try {
        const view = new Uint8Array(scratch);
        if (fill !== undefined) fill(view);
        else view.set(bytes!);
      } finally {
        backend().munmap(scratch);
      }
      backend().addSeals(fd, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
      return Region.#map('memfd', fd, size, true, {});
    });
  }

  /** Wraps a SharedArrayBuffer (e.g. one received from a worker). */
  static fromSharedArrayBuffer(sab: SharedArrayBuffer): Region {
    if (!(sab instanceof SharedArrayBuffer)) {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, 'fromSharedArrayBuffer needs a SharedArrayBuffer');
    }
    return new Region({ backing: 'sab', size: sab.byteLength, fd: -1, buffer: sab });
  }

  static #existingSize(fd: number, object: string, verb = 'Region.open of', byName = false): number {
    let stat = mappableStat(fd, object, verb);
    if (byName) {
      // A creator sizing the object (Region.create holds SIZING_LOCK_BYTE exclusively from before its size
      // check to after its fallocate) is waited for: the size is read once it is done, not mid-way (0, or a
      // part of it where the file system grows the file as it allocates). One caught between its open and
      // that lock shows size 0 for a few system calls: looked at again for a moment before "empty" is said.
      const settled = (): fs.Stats => {
        const what = `${verb} ${object}: its creator (stopped in the middle?) has been sizing it`;
        if (waitForFileByte(fd, SIZING_LOCK_BYTE, true, SIZING_WAIT_MS, what)) unlockFileByte(fd, SIZING_LOCK_BYTE);
        return fs.fstatSync(fd);
      };
      stat = settled();
      // Empty: its creator may be between its open and its lock. Sized meanwhile, or sizing now (it holds the
      // lock: a large fallocate sets the size only at its end), it is waited for again.
      const sizingNow = (): boolean => {
        const got = lockFileByte(fd, SIZING_LOCK_BYTE, true);
        if (got === true) unlockFileByte(fd, SIZING_LOCK_BYTE);
        return got === false;
      };
      if (stat.size === 0 && retryFor(EMPTY_WAIT_MS, () => fs.fstatSync(fd).size > 0 || sizingNow())) stat = settled();
    }
    if (stat.size === 0) {
      throw new ShmringError(
        ErrorCodes.REGION_TOO_SMALL,
        `${object} is empty (size 0): there is nothing to map; was it created and sized by its owner?`,
      );
    }
    // No checkSize: its "size=… is out of range" would name neither the object nor what to do.
    checkMappable(stat.size, verb, object, EXISTING_TOO_LARGE);
    return stat.size;
  }

  /** Maps `fd`; on success the mapping owns the fd (the backend closes it with the mapping). */
  static #map(backing: Backing, fd: number, size: number, readOnly: boolean, names: { name?: string; path?: string }): Region {
    const buffer = backend().mmap(fd, size, !readOnly, true);
    return new Region({ backing, size, fd, buffer, readOnly, ...names });
  }

  /** The region's memory: the one ArrayBuffer over the mapping (or the SharedArrayBuffer). */
  get buffer(): ArrayBuffer | SharedArrayBuffer {
    if (this.#buffer === undefined) {
      throw new ShmringError(ErrorCodes.CLOSED, `this ${this.backing} region is closed; create or open a new one`);
    }
    return this.#buffer;
  }

  /** The file descriptor (-1 for 'sab' and 'sysv', which have none). */
  get fd(): number {
    if (this.#buffer === undefined) {
      throw new ShmringError(ErrorCodes.CLOSED, `this ${this.backing} region is closed`);
    }
    return this.#fd;
  }

  /**
   * Makes what was written to the region durable against a machine crash,
   * as msync(MS_SYNC) does: for a 'file' region the Promise resolves once
   * the file's dirty pages (written through any mapping of it) and its size
   * are on the device (fdatasync, in libuv's thread pool: the event loop
   * goes on meanwhile). With `{ async: true }` it resolves at once: that is
   * msync(MS_ASYNC) on Linux, where the kernel writes dirty pages of a
   * shared mapping back on its own schedule (vm.dirty_expire_centisecs,
   * 30 s by default) and MS_ASYNC starts nothing sooner. 'memfd', 'posix'
   * and 'sab' regions live in memory only: there is nothing to write back,
   * and it resolves at once. ERR_SHMRING_CLOSED once the region is closed.
   */
  async sync(options: { async?: boolean } = {}): Promise<void> {
    if (options === null || typeof options !== 'object') {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, 'region.sync: options must be an object');
    }
    checkOptionNames(options, SYNC_OPTION_NAMES, 'region.sync');
    const async = checkBoolean('async', options.async, 'region.sync');
    const fd = this.fd; // throws ERR_SHMRING_CLOSED for a closed region
    if (this.backing !== 'file' || async) return;
    // A duplicate of the fd, its own until the sync is done: a close() of the region meanwhile (sync() then
    // close() at once, say) closes the region's fd, and the thread pool would sync a closed fd (EBADF) or
    // whatever file reused its number. The same open file: its dirty pages are the region's.
    let own: number;
    try {
      own = backend().dup(fd);
    } catch (err) {
      failOn(err, 'region.sync() of', this.#described(fd));
    }
    try {
      await new Promise<void>((resolve, reject) => fs.fdatasync(own, (err) => (err ? reject(err) : resolve())));
    } catch (err) {
      failOn(err, 'region.sync() of', this.#described(fd));
    } finally {
      backend().close(own);
    }
  }

  /** True once close() ran. */
  get closed(): boolean {
    return this.#buffer === undefined;
  }

  /** How messages name this region. */
  #described(fd = this.#fd): Described {
    if (this.backing === 'posix') return describePosix(this.name!);
    if (this.backing === 'file') return describeFile(this.path!);
    if (this.backing === 'sysv') return describeSysv(this.key, this.id);
    return { object: `${this.backing} region (fd ${fd})` };
  }

  /**
   * Unmaps (stale views become empty) and closes the fd (the mapping owns
   * it); a 'sysv' region detaches its segment (shmdt), which stays in the
   * kernel unless unlink() marked it. Idempotent.
   */
  close(): void {
    const buffer = this.#buffer;
    if (buffer === undefined) return;
    this.#buffer = undefined;
    if (this.backing === 'sab') return;
    releaseLocksOf(this); // the rings' role locks on this file go with it
    runBeforeUnmap(buffer); // what this thread's waits parked on it must write first (unmap.ts)
    const fd = this.#fd;
    this.#fd = -1;
    try {
      backend().munmap(buffer as ArrayBuffer);
    } catch (err) {
      failOn(err, 'region.close() of', this.#described(fd));
    }
  }

  /**
   * Removes the name ('posix') or the file ('file') so no new process can
   * open it; mappings that exist stay valid. 'sysv': marks the segment for
   * removal (IPC_RMID): its key is free at once (opening by key fails with
   * ENOENT), and the kernel destroys it when the last process detaches,
   * even one that dies without close() (a process may still open it by id
   * until then: Linux allows that). A no-op for 'memfd' and 'sab', which
   * have no name. Works after close() too.
   */
  unlink(): void {
    if (this.backing !== 'posix' && this.backing !== 'file' && this.backing !== 'sysv') return;
    // Adopted from an fd whose name was unlinked, or that no link named: nothing to remove.
    if ((this.backing === 'posix' && this.name === undefined) || (this.backing === 'file' && this.path === undefined)) return;
    try {
      if (this.backing === 'sysv') {
        unlinkAtExit.delete(`sysv:${this.id}`);
        backend().shmRemove(this.id!);
      } else if (this.backing === 'posix') {
        // The name first: one that leads to a newer object keeps that object's unlinkOnExit, if it has one.
        stillNames(`/dev/shm/${this.name!.slice(1)}`, this.#object);
        unlinkAtExit.delete(`posix:${this.name}`);
        backend().shmUnlink(this.name!);
      } else {
        stillNames(this.path!, this.#object);
        unlinkAtExit.delete(`file:${this.path}`);
        fs.unlinkSync(this.path!);
      }
    } catch (err) {
      failOn(err, 'region.unlink() of', this.#described(), (code) =>
        code === 'ENOENT' || code === 'EINVAL' || code === 'EIDRM'
          ? 'it is gone already: unlinked before, by this region or by another process (its name may lead to a newer object now, which is left alone)' +
            (this.backing === 'sysv' ? ', and detached by every process' : '')
          : undefined,
      );
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
