/**
 * The asymmetric fence of membarrier(2), for a protocol whose store-load
 * fence is frequent on one side and rare on the other: an MpscRing
 * producer fences after every commit (so that its load of READ_WAITERS
 * comes after its store of LENGTH), its consumer only when it is about to
 * park (after its announcement in READ_WAITERS, before its re-check). The
 * frequent side registers its process once (register()) and then fences
 * with nothing; the rare side calls heavy(), which returns only once every
 * thread of every registered process that is running on a CPU has
 * executed a full memory barrier (a thread that is not running passed one
 * when it was switched out). So a producer's commit is either visible to
 * the consumer's re-check after heavy(), or its load of READ_WAITERS comes
 * after heavy() and sees the consumer's announcement.
 *
 * SHMRING_MEMBARRIER=off turns it off for this process (both calls return
 * false), as a kernel without it (before Linux 4.16) or a seccomp profile
 * that refuses it does: the frequent side then fences itself, the rare
 * side naps briefly instead of trusting a wake-up (see MpscRing).
 */
import { backend } from './loader.js';

/** membarrier(2) commands (include/uapi/linux/membarrier.h). */
const CMD_QUERY = 0;
const CMD_GLOBAL_EXPEDITED = 1 << 1;
const CMD_REGISTER_GLOBAL_EXPEDITED = 1 << 2;

/** Whether this process registered for CMD_GLOBAL_EXPEDITED (undefined: not asked yet). */
let registered: boolean | undefined;
/** false once heavy() was refused for good (no membarrier, the command unknown or forbidden): it is not asked again. */
let heavyWorks = true;
/** The errors of a refusal for good; any other (ENOMEM, say) fails one call only. */
const REFUSALS = new Set(['ENOSYS', 'EINVAL', 'EPERM']);

/** SHMRING_MEMBARRIER=off, read once when this module loads. */
const OFF = process.env.SHMRING_MEMBARRIER === 'off';

export const membarrier = {
  /**
   * Registers this process (once; every thread of it) as one whose threads
   * heavy() makes fence. Returns whether it did: false where the kernel or
   * its seccomp profile refuses, where no native backend loads, or with
   * SHMRING_MEMBARRIER=off. Only a process for which it returned true may
   * leave out the fences that heavy() stands in for.
   */
  register(): boolean {
    if (registered !== undefined) return registered;
    registered = false;
    if (OFF) return false;
    try {
      const native = backend();
      const supported = native.membarrier(CMD_QUERY);
      const needed = CMD_GLOBAL_EXPEDITED | CMD_REGISTER_GLOBAL_EXPEDITED;
      if ((supported & needed) !== needed) return false;
      native.membarrier(CMD_REGISTER_GLOBAL_EXPEDITED);
      registered = true;
    } catch {
      // No backend (a SharedArrayBuffer-only program), or membarrier refused: fence as before.
    }
    return registered;
  },

  /**
   * MEMBARRIER_CMD_GLOBAL_EXPEDITED: a full memory barrier on every running
   * thread of every registered process, this call's own accesses ordered
   * around it. Returns false if it could not (refused, no backend,
   * SHMRING_MEMBARRIER=off); then the caller must not rely on it.
   */
  heavy(): boolean {
    if (!heavyWorks || OFF) return false;
    try {
      backend().membarrier(CMD_GLOBAL_EXPEDITED);
      return true;
    } catch (err) {
      // No backend at all (ERR_SHMRING_NO_BACKEND: a SharedArrayBuffer-only program) is as final as a refusal.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === undefined || REFUSALS.has(code) || code.startsWith('ERR_')) heavyWorks = false;
      return false;
    }
  },
};
