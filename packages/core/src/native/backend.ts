/**
 * The native interface of @shmring/core: every system call shmring makes goes
 * through one object of this shape. Two implementations exist:
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
 *  - File descriptors are plain numbers; closing, ftruncate and fstat are done
 *    by the caller with node:fs, not here.
 */
export interface NativeBackend {
  /** 'addon' or 'koffi'. */
  readonly kind: 'addon' | 'koffi';

  /** memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING); returns the fd. */
  memfdCreate(name: string): number;

  /**
   * shm_open(name, oflag, mode); `name` starts with '/' (validated by the
   * caller). oflag uses the Linux values of O_RDONLY/O_RDWR/O_CREAT/O_EXCL/O_TRUNC
   * (as in `fs.constants`); the backend always adds O_CLOEXEC. Returns the fd.
   */
  shmOpen(name: string, oflag: number, mode: number): number;

  /** shm_unlink(name). */
  shmUnlink(name: string): void;

  /**
   * mmap(NULL, length, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0)
   * and wrap the mapping in exactly one external ArrayBuffer of `length` bytes.
   * The ArrayBuffer's finalizer unmaps it if `munmap` was never called.
   * `length` must be > 0 and a safe integer; otherwise RangeError.
   */
  mmap(fd: number, length: number, writable: boolean): ArrayBuffer;

  /**
   * Detach `buffer` (so every stale view of it reads as length 0 and Atomics
   * on it throw TypeError) and then munmap it. Pending asynchronous futex waits
   * on the mapping are woken first (they resolve 'ok'; callers re-check).
   * Throws TypeError if `buffer` was not returned by `mmap` of this backend;
   * calling it twice on the same buffer is a no-op the second time.
   */
  munmap(buffer: ArrayBuffer): void;

  /** fcntl(fd, F_ADD_SEALS, seals). Seal bits as in Linux: F_SEAL_SEAL=1, SHRINK=2, GROW=4, WRITE=8. */
  addSeals(fd: number, seals: number): void;

  /** fcntl(fd, F_GET_SEALS); throws EINVAL for an fd that does not support sealing. */
  getSeals(fd: number): number;

  /**
   * Block the calling thread in FUTEX_WAIT (shared, not FUTEX_PRIVATE_FLAG) on
   * the 32-bit word at `byteOffset` of `buffer` (an ArrayBuffer from `mmap`,
   * or any ArrayBuffer/SharedArrayBuffer: the futex works on any memory, but
   * only a mapping is shared across processes). `byteOffset` must be a
   * multiple of 4 inside the buffer (RangeError otherwise).
   * `timeoutMs`: a finite number >= 0, or Infinity / negative for no timeout.
   * Returns 0 = woken ('ok', possibly spuriously), 1 = the word was not
   * `expected` ('not-equal'), 2 = timed out ('timed-out'). EINTR is retried
   * internally with the remaining time.
   */
  futexWait(buffer: ArrayBuffer | SharedArrayBuffer, byteOffset: number, expected: number, timeoutMs: number): 0 | 1 | 2;

  /** FUTEX_WAKE (shared) of up to `count` waiters on the word; returns how many were woken. */
  futexWake(buffer: ArrayBuffer | SharedArrayBuffer, byteOffset: number, count: number): number;

  /**
   * The same wait as `futexWait`, performed on a native thread: the event loop
   * never blocks. Returns a handle whose `promise` resolves with 0 | 1 | 2 as
   * above. While the promise is pending it keeps the event loop alive; once
   * it settles (or is cancelled) it does not. `cancel()` makes the wait end
   * promptly with 0 ('ok'); calling it after settlement is a no-op. The
   * buffer is kept alive (not unmapped by GC) while the wait is pending.
   */
  futexWaitAsync(buffer: ArrayBuffer | SharedArrayBuffer, byteOffset: number, expected: number, timeoutMs: number): AsyncWait;

  /**
   * sendmsg on the Unix domain socket `socketFd`: one byte of payload with
   * `fd` attached as SCM_RIGHTS. Throws EAGAIN if the socket buffer is full.
   */
  sendFd(socketFd: number, fd: number): void;

  /**
   * recvmsg(MSG_DONTWAIT | MSG_CMSG_CLOEXEC) on `socketFd`: returns the
   * received fd (>= 0); -1 if nothing is waiting yet (EAGAIN); -2 if the peer
   * closed the connection (EOF); -3 if a message arrived without an fd.
   */
  recvFd(socketFd: number): number;
}

export interface AsyncWait {
  readonly promise: Promise<0 | 1 | 2>;
  cancel(): void;
}

/** Result codes of futexWait / futexWaitAsync. */
export const WAIT_OK = 0;
export const WAIT_NOT_EQUAL = 1;
export const WAIT_TIMED_OUT = 2;
