/**
 * Locks on single bytes of a region's file that the kernel keeps true:
 * open file description locks (fcntl F_OFD_SETLK), which the kernel drops
 * when the holder's open file description goes, and so when its process
 * dies, in whatever PID namespace it ran. The rings use them to say "this
 * ring is in use" and "I am its consumer", and to ask whether anyone still
 * does, where pids cannot answer (containers sharing /dev/shm).
 *
 * Rules:
 *  - A FileLocks holds its locks on an open file description of its own,
 *    made by opening /proc/self/fd/<region fd> again: fds that share a
 *    description share its locks (dup, fork, an fd passed over a socket),
 *    so a lock taken through the region's own fd would not conflict with
 *    the peer that received that fd, nor with a second FileLocks of this
 *    process.
 *  - Questions (heldByAnyone) are asked through the region's fd, which
 *    holds no locks: they see every holder, this process's included.
 *  - The locks go with the FileLocks' release(), with the region's
 *    close(), when the FileLocks is collected, when the thread that opened
 *    it ends (a worker: the backend closes the fds a thread left open, see
 *    crates/shm-sys/src/fds.rs and koffi.ts), or with the process. A
 *    FinalizationRegistry never runs at a worker's end, so that last but
 *    one is what frees a worker's roles when it is terminated.
 *  - Regions without a file ('sab', and 'sysv': a System V segment has no
 *    fd) or a /proc to reopen it through get no FileLocks: callers fall
 *    back to what they did before (pids).
 */
import * as fs from 'node:fs';
import { ErrorCodes, onObject, ShmringError } from './errors.js';
import { backend } from './native/loader.js';

/** What these functions need of a Region (not imported: region.ts imports this module). */
interface Region {
  readonly backing: string;
  readonly closed: boolean;
  readonly fd: number;
  readonly name?: string | undefined;
  readonly path?: string | undefined;
}

/** ofdLock / ofdTest lock types. */
const SHARED = 0;
const EXCLUSIVE = 1;
const UNLOCKED = 2;

/** Whether `region` has a file to lock: open, with an fd ('sab' and 'sysv' regions have none: fd -1). */
function hasFile(region: Region): boolean {
  return !region.closed && region.fd >= 0;
}

/** An fd that whichever comes first closes: release(), the region's close(), GC, or the backend when its thread ends. */
interface Cell {
  fd: number;
}

/** The FileLocks' fds of each open region, closed by its close(). */
const byRegion = new WeakMap<Region, Set<Cell>>();

function closeCell(cell: Cell): void {
  const fd = cell.fd;
  if (fd < 0) return;
  cell.fd = -1;
  try {
    backend().close(fd);
  } catch {
    // EBADF only if someone else closed our fd; nothing is left to release
  }
}

/** A FileLocks dropped without release() gives its locks back when collected. */
const collected = new FinalizationRegistry<Cell>(closeCell);

export class FileLocks {
  readonly #cell: Cell;
  readonly #region: Region;

  private constructor(region: Region, fd: number) {
    this.#region = region;
    this.#cell = { fd };
    let cells = byRegion.get(region);
    if (cells === undefined) byRegion.set(region, (cells = new Set()));
    cells.add(this.#cell);
    collected.register(this, this.#cell, this);
  }

  /**
   * An open file description of the region's file for this object's locks,
   * or undefined where the region has none ('sab', 'sysv', closed) or it
   * cannot be reopened (no /proc mounted, or permission refused).
   */
  static open(region: Region): FileLocks | undefined {
    if (!hasFile(region)) return undefined;
    let fd: number;
    try {
      fd = backend().open(`/proc/self/fd/${region.fd}`, fs.constants.O_RDWR, 0);
    } catch (err) {
      // Out of fds or memory is this moment's, not the region's: without locks the caller would fall back
      // to the protocol of a region that has none (a LatestValue's WRITER_TOKEN, a Broadcast's slot CAS)
      // beside objects that hold locks, and two writers could write. So it fails instead.
      const code = (err as { code?: string }).code;
      if (code === 'EMFILE' || code === 'ENFILE' || code === 'ENOMEM') {
        const where = region.name ?? region.path;
        throw onObject(err, 'taking the role locks of', `the ${region.backing} region${where === undefined ? '' : ` ${where}`}`, {
          hint: () =>
            'the process is out of file descriptors or memory: close the regions and rings it no longer uses, or raise the limit (ulimit -n), and try again',
        });
      }
      return undefined;
    }
    return new FileLocks(region, fd);
  }

  /**
   * Takes a lock on the byte at `byte` of the file: shared (any number of
   * holders) or exclusive (one). Returns false, taking nothing, when
   * another holder's lock conflicts. Taking a lock this object holds again
   * (another type) converts it. ERR_SHMRING_CLOSED once the region is
   * closed or release() ran (as unlock()).
   */
  lock(byte: number, shared: boolean): boolean {
    return backend().ofdLock(this.#open('lock'), byte, shared ? SHARED : EXCLUSIVE);
  }

  /** Releases this object's lock on `byte`, if it holds one. */
  unlock(byte: number): void {
    backend().ofdLock(this.#open('unlock'), byte, UNLOCKED);
  }

  /**
   * The fd the locks are on; ERR_SHMRING_CLOSED once it is gone (the
   * region's close(), or release()): false from lock() would read as
   * "another holder has it", and an unlock() that did nothing as done.
   */
  #open(verb: string): number {
    const fd = this.#cell.fd;
    if (fd >= 0) return fd;
    const region = this.#region;
    const where = region.name ?? region.path;
    const which = `the ${region.backing} region${where === undefined ? '' : ` ${where}`}`;
    throw new ShmringError(
      ErrorCodes.CLOSED,
      region.closed
        ? `FileLocks.${verb}: ${which} is closed, and its locks went with it; open the region again for new ones`
        : `FileLocks.${verb}: these locks of ${which} were released (release()); take new ones with FileLocks.open`,
    );
  }

  /** Releases every lock of this object and its fd. Idempotent. */
  release(): void {
    collected.unregister(this);
    byRegion.get(this.#region)?.delete(this.#cell);
    closeCell(this.#cell);
  }
}

/**
 * Whether any open file description, of any process, holds a lock on the
 * byte at `byte` of the region's file; undefined where the question cannot
 * be asked (a 'sab' or 'sysv' region, a closed one).
 */
export function heldByAnyone(region: Region, byte: number): boolean | undefined {
  if (!hasFile(region)) return undefined;
  return backend().ofdTest(region.fd, byte, EXCLUSIVE) !== UNLOCKED;
}

/**
 * Whether an open file description, of any process, holds the byte at
 * `byte` of the region's file exclusively (shared holders do not count);
 * undefined where the question cannot be asked.
 */
export function heldExclusively(region: Region, byte: number): boolean | undefined {
  if (!hasFile(region)) return undefined;
  // The conflicting lock's type: an exclusive one excludes every shared one.
  return backend().ofdTest(region.fd, byte, EXCLUSIVE) === EXCLUSIVE;
}

/**
 * An exclusive lock on the byte at `byte` of the file behind `fd`, on
 * `fd`'s own open file description (for a file no Region maps yet: a
 * creator sizing it). True if taken, false if another description holds
 * it, undefined where the file system has no such locks.
 */
export function lockFileByte(fd: number, byte: number, shared = false): boolean | undefined {
  try {
    return backend().ofdLock(fd, byte, shared ? SHARED : EXCLUSIVE);
  } catch {
    return undefined; // ENOLCK, EINVAL: no OFD locks here
  }
}

/**
 * lockFileByte, waiting up to `waitMs` while another description holds a
 * conflicting lock. True once taken, false where the file system has no
 * such locks (nothing to wait for); throws ERR_SHMRING_BUSY, saying
 * `what` holds it for how long, when the wait runs out.
 */
export function waitForFileByte(fd: number, byte: number, shared: boolean, waitMs: number, what: string): boolean {
  let supported = true;
  const taken = retryFor(waitMs, () => {
    const got = lockFileByte(fd, byte, shared);
    supported = got !== undefined;
    return got !== false;
  });
  if (!taken) throw new ShmringError(ErrorCodes.BUSY, `${what} for ${waitMs} ms; try again, or find the process (fuser, lsof)`);
  return supported;
}

/**
 * Bytes of a posix or file object's own locks, far past the largest region
 * (MAX_REGION_SIZE), so that they never meet the locks the rings take on
 * bytes of their own regions. Every shm_open or open makes a description of
 * its own, so openers in one process exclude each other too, and the kernel
 * drops the locks of one that dies.
 *
 * SIZING_LOCK_BYTE: held exclusively by Region.create while it sizes the
 * object (region.ts, sizeFor).
 */
export const SIZING_LOCK_BYTE = 2 ** 52;

/**
 * NAME_LOCK_BYTE: every Region opened or created by its name holds it
 * shared, on the region's own description, for as long as the region is
 * open (fds duplicated or passed from it share it, and so does its
 * mapping: the lock goes when the last of them does, which for the koffi
 * backend is when the waits parked on a closed region have returned). `shmring unlink-stale`
 * holds it exclusively across its last check and the unlink(2): so it
 * never removes a name that a Region has open (its owner may attach a ring
 * any moment), and an open that got the fd just before the unlink waits
 * for the lock, then sees that its object lost the name and opens the name
 * again (holdName).
 */
export const NAME_LOCK_BYTE = SIZING_LOCK_BYTE + 1;
/** How long an open waits for unlink-stale's exclusive NAME_LOCK_BYTE (a few system calls) before it gives up. */
const NAME_WAIT_MS = 2_000;

/**
 * Holds NAME_LOCK_BYTE of the object a Region just opened by `path`
 * shared on `fd`'s description (waiting up to NAME_WAIT_MS while
 * unlink-stale holds it exclusively), then tells whether `path` still
 * leads to that object: false when it was unlinked (st_nlink 0) or
 * replaced (another device and inode at the path) before the lock was
 * taken. The caller then closes `fd` and opens the name again. True as
 * well where the file system has no OFD locks (nothing to serialize with).
 * Throws ERR_SHMRING_BUSY if the lock stays held.
 */
export function holdName(fd: number, path: string, object: string): boolean {
  const what = `${object}: another process (shmring unlink-stale?) has held its name lock exclusively`;
  if (!waitForFileByte(fd, NAME_LOCK_BYTE, true, NAME_WAIT_MS, what)) return true;
  // A file path given as a symbolic link names what it leads to; one that leads to an object without a name
  // (/proc/<pid>/fd/<n> of a memfd, or of a file unlinked while open) has no name for unlink-stale to remove.
  return namesObject(fd, path, true) || reachesNameless(fd, path);
}

/** Whether `path` (a /proc/<pid>/fd/<n> link) leads to the object open on `fd`, which has no name (st_nlink 0). */
function reachesNameless(fd: number, path: string): boolean {
  const mine = fs.fstatSync(fd, { bigint: true });
  if (mine.nlink !== 0n) return false;
  const reached = fs.statSync(path, { bigint: true, throwIfNoEntry: false });
  return reached !== undefined && reached.dev === mine.dev && reached.ino === mine.ino;
}

/**
 * Whether `path` leads to the object open on `fd`: the object still has a
 * name (st_nlink > 0) and `path` has its device and inode. `follow`: stat
 * the path, following a symbolic link; else lstat (the directory entry
 * itself: what an unlink of `path` would remove).
 */
export function namesObject(fd: number, path: string, follow: boolean): boolean {
  const mine = fs.fstatSync(fd, { bigint: true });
  if (mine.nlink === 0n) return false;
  const options = { bigint: true, throwIfNoEntry: false } as const;
  const named = follow ? fs.statSync(path, options) : fs.lstatSync(path, options);
  return named !== undefined && named.dev === mine.dev && named.ino === mine.ino;
}

/** Releases lockFileByte's lock. */
export function unlockFileByte(fd: number, byte: number): void {
  backend().ofdLock(fd, byte, UNLOCKED);
}

/** What retryFor sleeps on between tries: Atomics.wait on a word nobody wakes (a synchronous caller holds its thread anyway). */
const nap = new Int32Array(new SharedArrayBuffer(4));

/**
 * Calls `take` (a lock taken without waiting) until it returns true,
 * sleeping 0.1 ms between tries, for up to `ms`; false if it never did.
 * For locks held for a few system calls: a creator sizing an object or
 * laying out a ring.
 */
export function retryFor(ms: number, take: () => boolean): boolean {
  const deadline = performance.now() + ms;
  while (!take()) {
    if (performance.now() > deadline) return false;
    Atomics.wait(nap, 0, 0, 0.1);
  }
  return true;
}

/** Called by region.close(): every FileLocks of the region lets go. */
export function releaseLocksOf(region: Region): void {
  const cells = byRegion.get(region);
  if (cells === undefined) return;
  byRegion.delete(region);
  for (const cell of cells) closeCell(cell);
}
