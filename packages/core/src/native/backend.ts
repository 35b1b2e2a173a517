/**
 * The native interface of @shmring/core: every system call shmring makes goes
 * through one object of this shape, declared once, with each member's
 * contract, in crates/shm-sys/index.d.ts. Two implementations exist:
 *
 *  - `addon`: the Rust Node-API addon in crates/shm-sys (package @shmring/shm-sys);
 *  - `koffi`: the same calls made through libc with koffi (./koffi.ts).
 *
 * Contract shared by both:
 *  - A failed system call throws an `Error` with `code` (the errno name, e.g.
 *    'ENOENT'), `errno` (the positive errno number), `syscall` (e.g. 'shm_open')
 *    and a message of the form `${syscall} failed: ${strerror} (${code})`.
 *  - A bad argument (negative size, offset outside the buffer, misaligned
 *    futex word, an ArrayBuffer that is not one of ours) throws TypeError or
 *    RangeError before any system call, and never crashes the process.
 *  - File descriptors are plain numbers. A region's fds are opened (memfdCreate,
 *    shmOpen, open) and closed (close, or munmap of a mapping made with
 *    ownFd) by the backend, never by node:fs, which in a worker tracks the
 *    fds it opened and warns about any other it closes. ftruncate and fstat
 *    the caller does with node:fs.
 */
export type { AsyncWait, AsyncWaitKind, NativeBackend, WaitResult } from '@shmring/shm-sys';

/** Result codes of futexWait / futexWaitAsync. */
export const WAIT_OK = 0;
export const WAIT_NOT_EQUAL = 1;
export const WAIT_TIMED_OUT = 2;
