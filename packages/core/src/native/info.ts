import type { AsyncWaitAny } from '@shmring/shm-sys';
import type { AsyncWait, AsyncWaitKind } from './backend.js';
import { backend } from './loader.js';

/** Which native backend this process uses: 'addon' (Rust) or 'koffi'. */
export function backendKind(): 'addon' | 'koffi' {
  return backend().kind;
}

/**
 * How async waits (futex waitAsync, the rings' read / write / for await)
 * wait in this thread: 'io_uring' (no thread per wait; one wake-up through
 * the event loop), 'futex_waitv' (the addon's fallback: one thread per 127
 * pending waits), 'threads' (one thread per pending wait, Linux < 5.16),
 * 'libuv-threadpool' (the koffi backend). SHMRING_ASYNC_WAIT forces one.
 */
export function asyncWaitKind(): AsyncWaitKind {
  try {
    return backend().asyncWaitKind();
  } catch (err) {
    throw saidWhatToDo(err);
  }
}

/**
 * A system call's error from the wait machinery, with what to do appended
 * to its message where the kernel refused the way to wait (its code, errno
 * and syscall stay): SHMRING_ASYNC_WAIT forced a way this kernel refuses
 * (io_uring disabled, a seccomp profile; futex_waitv before Linux 5.16),
 * or a futex_waitv wait (selectSync) on a kernel without it.
 */
export function saidWhatToDo(err: unknown): unknown {
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.syscall !== 'string' || typeof e.message !== 'string') return err;
  const forced = process.env.SHMRING_ASYNC_WAIT;
  if (forced !== undefined && forced !== '' && forced !== 'auto' && /^(io_uring|futex_waitv)/.test(e.syscall)) {
    e.message += `; SHMRING_ASYNC_WAIT=${forced} forces this way to wait, which this kernel refuses: unset it (or set auto) to take the first way that works`;
  } else if (e.syscall === 'futex_waitv' && e.code === 'ENOSYS') {
    e.message +=
      '; waiting on several words at once (selectSync, waitAny) needs futex_waitv, Linux 5.16 or later: use select() on the event loop instead';
  }
  return err;
}

/** Most words of one nativeFutex.waitAnyAsync (128 FUTEX_WAITV entries of 128). */
export const MAX_WAIT_ANY_ASYNC = 16384;

/** Whether this thread's async waits use io_uring (decided once per thread, at the first asking). */
let ringWaits: boolean | undefined;

/**
 * The native futex of the backend in use, on the 32-bit word at `byteOffset`
 * of a mapping's ArrayBuffer. Shared (not FUTEX_PRIVATE_FLAG), so it works
 * across processes. This is the low-level door @shmring/futex builds on;
 * applications use @shmring/futex instead.
 */
export const nativeFutex = {
  wait(buffer: ArrayBuffer, byteOffset: number, expected: number, timeoutMs: number): 0 | 1 | 2 {
    return backend().futexWait(buffer, byteOffset, expected, timeoutMs);
  },
  wake(buffer: ArrayBuffer, byteOffset: number, count: number): number {
    return backend().futexWake(buffer, byteOffset, count);
  },
  /** futex_waitv: index woken, -1 some word differed, -2 timed out (see NativeBackend.futexWaitAny). */
  waitAny(
    targets: ReadonlyArray<{ buffer: ArrayBuffer | SharedArrayBuffer; byteOffset: number; expected: number }>,
    timeoutMs: number,
  ): number {
    try {
      return backend().futexWaitAny(targets, timeoutMs);
    } catch (err) {
      throw saidWhatToDo(err);
    }
  },
  /**
   * One asynchronous wait on several words (index woken, -1 some word
   * differed, -2 timed out; see NativeBackend.futexWaitAnyAsync), or
   * undefined where this thread's async waits do not use io_uring (then
   * wait on each word with waitAsync). At most MAX_WAIT_ANY_ASYNC words.
   */
  waitAnyAsync(
    targets: ReadonlyArray<{ buffer: ArrayBuffer; byteOffset: number; expected: number }>,
    timeoutMs: number,
    ref = true,
  ): AsyncWaitAny | undefined {
    const b = backend();
    if (b.futexWaitAnyAsync === undefined) return undefined;
    ringWaits ??= asyncWaitKind() === 'io_uring';
    if (!ringWaits) return undefined;
    try {
      return b.futexWaitAnyAsync(targets, timeoutMs, ref);
    } catch (err) {
      throw saidWhatToDo(err);
    }
  },
  /** `ref` false: the pending wait does not keep the event loop alive (not on the koffi backend). */
  waitAsync(buffer: ArrayBuffer, byteOffset: number, expected: number, timeoutMs: number, ref = true): AsyncWait {
    try {
      return backend().futexWaitAsync(buffer, byteOffset, expected, timeoutMs, ref);
    } catch (err) {
      throw saidWhatToDo(err);
    }
  },
};
