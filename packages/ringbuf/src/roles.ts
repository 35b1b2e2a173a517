/**
 * Who holds a ring, as the kernel vouches for it (docs/LAYOUT.md,
 * "Liveness"): each ring object holds open file description locks on bytes
 * of its region's file, which the kernel drops when the object lets go or
 * its process dies, whatever PID namespace it ran in.
 *
 *  - HOLDER byte, shared: this object is attached to the ring (from create
 *    or attach until close, detach or its region's close). `inspect` calls
 *    a ring stale only when nobody holds it; `unlink-stale` holds it
 *    exclusively across its last check and the unlink, so that no attach
 *    completes in between (hold waits). A create holds it exclusively
 *    until it has laid the ring out (holdToCreate, share; a Broadcast's
 *    only where it finds nobody attached: holdFirst), and the sides that
 *    attach hold it before they read the header (hold), waiting meanwhile.
 *  - PRODUCER / CONSUMER byte: this object acts in that role. SpscRing
 *    takes it exclusive (one producer, one consumer: a second live one is
 *    ERR_SHMRING_BUSY); MpmcQueue shared (any number).
 *
 * A region without a file to lock ('sab': threads of one process; 'sysv': a
 * System V segment has no fd; or no /proc to reopen the file through) has
 * no Roles: an exclusive role is claimed by a CAS of its pid word
 * (Queue.#claim in queue.ts), and liveness falls back to the pid words
 * (liveness.ts).
 */
import { ErrorCodes, FileLocks, heldByAnyone, heldExclusively, retryFor, ShmringError, type Region } from '@shmring/core';
import * as L from './layout.js';

export type Role = 'producer' | 'consumer';

export class Roles {
  readonly #locks: FileLocks;
  readonly #region: Region;
  readonly #base: number;

  private constructor(locks: FileLocks, region: Region, base: number) {
    this.#locks = locks;
    this.#region = region;
    this.#base = base;
  }

  /**
   * Holds the ring at `base` of `region` (the HOLDER lock, shared: every
   * object attached to the ring holds it at once), or returns undefined
   * where the region cannot take locks. Waits (up to HOLDER_WAIT_MS) while
   * another description holds it exclusively: unlink-stale across its
   * check and unlink (a ring attached without its HOLDER lock would look
   * stale to it), or a creator laying a ring out (holdToCreate, holdFirst),
   * so that a side that reads the header after holding reads it whole.
   * `what` names the call for the ERR_SHMRING_BUSY that ends the wait.
   */
  static hold(region: Region, base: number, what: string): Roles | undefined {
    const locks = FileLocks.open(region);
    if (locks === undefined) return undefined;
    waitForHolder(locks, what, () => locks.lock(base + L.HOLDER_LOCK_OFFSET, true));
    return new Roles(locks, region, base);
  }

  /**
   * Holds the ring at `base` of `region` exclusively if no other object
   * holds it (`alone`), else shared as hold() does; undefined where the
   * region cannot take locks. Alone, the caller may lay out a new ring
   * that nobody is attached to, and nobody can attach (hold waits)
   * until it calls share(). Waits (up to HOLDER_WAIT_MS) while another
   * creator holds it exclusively: that one is laying out a ring there.
   */
  static holdFirst(region: Region, base: number, what: string): { roles: Roles; alone: boolean } | undefined {
    const locks = FileLocks.open(region);
    if (locks === undefined) return undefined;
    const byte = base + L.HOLDER_LOCK_OFFSET;
    let alone = false;
    waitForHolder(locks, what, () => {
      const got = lockHolder(locks, byte);
      alone = got === 'alone';
      return got !== 'none';
    });
    return { roles: new Roles(locks, region, base), alone };
  }

  /**
   * Holds the ring at `base` of `region` (in `buffer`, its mapping) for a
   * create() that lays out a new ring there: exclusively, which it gets only
   * once no other object, in this process or another, holds it.
   *
   * While no ring is published there (MAGIC does not read right), whoever
   * holds it is an attach that looks under the lock, finds no ring and lets
   * go (one of another implementation: this one's look first, holdToAttach),
   * or a Broadcast.create laying one out under a shared lock
   * (others held it when it came): it waits for them (up to
   * HOLDER_WAIT_MS, blocking the thread), and throws ERR_SHMRING_BUSY if a
   * ring appears meanwhile. While a ring is published there, its shared
   * holders are attached to it (or looking at it), and laying out a new one
   * would wipe what it holds under them: ERR_SHMRING_BUSY at once; an
   * exclusive holder (unlink-stale, another creator laying a ring out) is
   * waited for, as above.
   *
   * The caller keeps it exclusively until it has stored the new MAGIC, then
   * share()s: an attach that comes meanwhile waits for the ring (hold), and
   * another create, a Broadcast's included (which takes the lock shared
   * where others hold it), finds it laid out, published and held, and
   * refuses. Shared any sooner, while MAGIC read 0, the lock let a
   * Broadcast.create lay its ring out over the one being laid out, both
   * creates succeeding. undefined where the region cannot take locks
   * (System V, a SharedArrayBuffer): there create() cannot tell, and
   * overwrites. `where` names the ring (queue.ts ringWhere).
   */
  static holdToCreate(region: Region, buffer: ArrayBufferLike, base: number, what: string, where: string): Roles | undefined {
    const locks = FileLocks.open(region);
    if (locks === undefined) return undefined;
    const byte = base + L.HOLDER_LOCK_OFFSET;
    // Set when the place is taken for good: a ring is published there and attached (shared holders).
    let refused = false;
    const decided = retryFor(HOLDER_WAIT_MS, () => {
      // Shared holders of a place with no ring published are attaches that will let go; an exclusive
      // holder is another creator laying a ring out (over the one published, if any), or unlink-stale
      // removing it: all let go soon, so wait. Shared holders of a published ring are attached to it: refused.
      const published = L.ringPublished(buffer, base);
      const got = published ? lockHolder(locks, byte) : locks.lock(byte, false) ? 'alone' : 'none';
      refused = got === 'shared';
      return got !== 'none';
    });
    if (decided && !refused) return new Roles(locks, region, base);
    locks.release();
    throw new ShmringError(
      ErrorCodes.BUSY,
      refused
        ? `${what}: ${where} is in use (another object, in this process or another, is attached to it or looking at it); ` +
            'creating one there would wipe what it holds: attach() to it instead, or close the objects attached to it first'
        : `${what}: ${where} has been held for ${HOLDER_WAIT_MS} ms while no ring was published there, or exclusively ` +
            '(another create laying out a large ring; attaches that lock before they look, retried without a pause; ' +
            'or a create or an unlink-stale stopped half-way?); ' +
            'try again, or look with shmring inspect',
    );
  }

  /**
   * An attach's hold: holds the ring (as hold()), and only then runs `look`
   * (its read of the header, its view of the ring), so that no create()
   * lays a new ring out between the look and the hold (create takes the
   * HOLDER exclusively, which a held ring refuses). Releases the hold if
   * `look` throws.
   *
   * First, holding nothing, it asks `missing` whether a ring is published
   * there at all (header.ts missingRing): where none is and nobody holds
   * the ring exclusively (a creator laying one out, waited for as before),
   * it throws that error without taking the lock. An attach
   * that finds no ring would hold the lock only to let it go; attaches
   * retried back to back, by several processes, then held it most of the
   * time, and the create() they wait for, which needs it exclusively, with
   * them (8 processes: 95-155 ms before it got it; 2 s gave up).
   */
  static holdToAttach<T>(
    region: Region,
    base: number,
    what: string,
    missing: () => Error | undefined,
    look: (roles: Roles | undefined) => T,
  ): T {
    const none = missing();
    // No ring, and no creator laying one out under an exclusive lock: none is coming; unless one came
    // meanwhile (a creator stores MAGIC before its lock turns shared, so seen shared, it is there).
    if (none !== undefined && heldExclusively(region, base + L.HOLDER_LOCK_OFFSET) !== true && missing() !== undefined) throw none;
    let roles: Roles | undefined;
    try {
      roles = Roles.hold(region, base, what);
    } catch (err) {
      // Held exclusively for all that time (BUSY), and still no ring: a create laying out a large one
      // (zeroing its data) is as likely as one stopped half-way, and an attach that finds no ring may try again.
      if ((err as ShmringError).code === ErrorCodes.BUSY) throw missing() ?? err;
      throw err;
    }
    try {
      return look(roles);
    } catch (err) {
      roles?.release();
      throw err;
    }
  }

  /** After holdToCreate, or holdFirst alone: the ring is laid out; others may attach (HOLDER exclusive becomes shared). */
  share(): void {
    this.#locks.lock(this.#base + L.HOLDER_LOCK_OFFSET, true);
  }

  /**
   * Takes an exclusive lock on the byte at `offset` of the ring (a
   * Broadcast subscriber's slot), on this object's description: released
   * with its other locks. False: another live holder has it.
   */
  lockByte(offset: number): boolean {
    return this.#locks.lock(this.#base + offset, false);
  }

  /** Takes `role`: exclusive (SpscRing) or shared (MpmcQueue). False: another live holder has it exclusively or, for exclusive, at all. */
  take(role: Role, exclusive: boolean): boolean {
    return this.#locks.lock(this.#byte(role), !exclusive);
  }

  /** Whether any object, of any process, holds `role` now (this one included). */
  held(role: Role): boolean {
    return heldByAnyone(this.#region, this.#byte(role)) === true;
  }

  /** Lets go of every lock of this object. Idempotent. */
  release(): void {
    this.#locks.release();
  }

  #byte(role: Role): number {
    return this.#base + (role === 'producer' ? L.PRODUCER_LOCK_OFFSET : L.CONSUMER_LOCK_OFFSET);
  }
}

/**
 * How long hold, holdFirst and holdToCreate wait for an exclusive HOLDER
 * before giving up: unlink-stale holds it for a few system calls, a create
 * while it lays a ring out (milliseconds; zeroing a large MpscRing's data
 * area, longer).
 */
const HOLDER_WAIT_MS = 2_000;

/**
 * One try at the HOLDER byte at `byte`: 'alone' when this description now
 * holds it exclusively (nobody else holds it), 'shared' when it holds it
 * shared beside other shared holders, 'none' (taking nothing) while
 * another description holds it exclusively. An exclusive holder that lets
 * go between the exclusive and the shared try leaves this one holding it
 * shared, perhaps alone: so the shared lock is tried again as exclusive
 * (OFD locks convert in place, and a failed conversion keeps the shared
 * lock), which tells the two apart.
 */
function lockHolder(locks: FileLocks, byte: number): 'alone' | 'shared' | 'none' {
  if (locks.lock(byte, false)) return 'alone';
  if (!locks.lock(byte, true)) return 'none';
  return locks.lock(byte, false) ? 'alone' : 'shared';
}

/** Calls `take` until it returns true (retryFor); ERR_SHMRING_BUSY (the locks released) after HOLDER_WAIT_MS. */
function waitForHolder(locks: FileLocks, what: string, take: () => boolean): void {
  if (retryFor(HOLDER_WAIT_MS, take)) return;
  locks.release();
  throw new ShmringError(
    ErrorCodes.BUSY,
    `${what}: another process has held the ring exclusively for ${HOLDER_WAIT_MS} ms (a create laying out a large ring, ` +
      'or a create or shmring unlink-stale stopped half-way?); try again, or look with shmring inspect',
  );
}

/**
 * A create's lay-out, under the exclusive HOLDER lock of holdToCreate:
 * runs `steps` (unpublish, the ring's own initialisation, writeHeader,
 * whose MAGIC store publishes the ring), then makes the lock shared
 * (share()), so that others may attach. If `steps` throws, lets go of the
 * ring instead: an exclusive lock left behind would keep every attach and
 * create out until GC or region.close().
 */
export function layOut(roles: Roles | undefined, steps: () => void): void {
  try {
    steps();
  } catch (err) {
    roles?.release();
    throw err;
  }
  roles?.share();
}

/**
 * From outside (inspect): whether anyone holds the ring at `base`, or
 * `role` of it; undefined where the region cannot tell (no file).
 */
export function ringHeld(region: Region, base: number, role?: Role): boolean | undefined {
  const offset = role === undefined ? L.HOLDER_LOCK_OFFSET : role === 'producer' ? L.PRODUCER_LOCK_OFFSET : L.CONSUMER_LOCK_OFFSET;
  return heldByAnyone(region, base + offset);
}
