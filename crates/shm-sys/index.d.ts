/**
 * @shmring/shm-sys: the Rust Node-API addon of shmring, exported as the
 * `NativeBackend` of @shmring/core (kind 'addon'). The interface below is the
 * contract of both native backends: @shmring/core takes its type from here
 * (packages/core/src/native/backend.ts) and its koffi backend implements it too.
 *
 * Errors: a failed system call throws an `Error` with `code` (errno name),
 * `errno` (positive number), `syscall` and the message
 * `${syscall} failed: ${strerror} (${code})`. A bad argument throws a
 * `TypeError` (code ERR_INVALID_ARG_TYPE) or `RangeError` (ERR_OUT_OF_RANGE)
 * before any system call.
 *
 * Futex calls: `buffer` may be an ArrayBuffer (a mapping from `mmap`, or any
 * other) or a SharedArrayBuffer. Only a mapping of a shared fd is shared
 * across processes; on a SharedArrayBuffer prefer `Atomics.wait` / `notify`
 * within one process (a native futex wake does wake a native waiter on the
 * same SharedArrayBuffer, but not an `Atomics.wait`er, and vice versa).
 */

declare namespace backend {
  /** Result of futexWait / futexWaitAsync: 0 woken ('ok', possibly spuriously), 1 'not-equal', 2 'timed-out'. */
  export type WaitResult = 0 | 1 | 2;

  export type AsyncWaitKind = 'io_uring' | 'futex_waitv' | 'threads' | 'libuv-threadpool';

  /** The handle of futexWaitAnyAsync: its promise (index woken, -1 not equal, -2 timed out), and cancel(). */
  export interface AsyncWaitAny {
    readonly promise: Promise<number>;
    /**
     * Ends the wait promptly with 0 (re-check every word), passing on a wake
     * it took: true. False when the wait had ended on its own first: a no-op,
     * and the promise keeps its outcome (an index woken is a wake this caller
     * holds, to pass on if it drops it). Repeated calls return the first's answer.
     */
    cancel(): boolean;
  }

  export interface AsyncWait {
    readonly promise: Promise<WaitResult>;
    /** Ends the wait promptly with 0 ('ok'): true; false once it had ended on its own (as AsyncWaitAny.cancel). */
    cancel(): boolean;
  }

  /**
   * Every system call shmring makes goes through one object of this shape:
   * this addon (kind 'addon') or @shmring/core's koffi backend (kind 'koffi').
   * File descriptors are plain numbers. The fds a region owns are opened and
   * closed here, never with node:fs: in a worker Node tracks the fds that
   * `fs.open` made (it warns when `fs.close` closes another, and closes its
   * own again when the worker ends), so an fd must be closed by whoever
   * opened it. ftruncate and fstat, which Node does not track, the caller
   * does with node:fs.
   *
   * The fds that memfdCreate, shmOpen, open, dup and recvFd return belong
   * to the thread that called them until `close` closes them or `mmap`
   * (ownFd) takes them: when that thread ends without closing them (a
   * worker's terminate(), process.exit() in it, its script returning), the
   * addon closes them as its env is torn down, and the OFD locks held on
   * them go too. So close them only with `close` (never node:fs): an fd
   * closed otherwise would be closed again at the thread's end, when its
   * number may be someone else's. The koffi backend does the same from an
   * 'exit' listener of a worker, which terminate() does not run.
   */
  export interface NativeBackend {
    /** 'addon' or 'koffi'. */
    readonly kind: 'addon' | 'koffi';

    /**
     * memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING), | MFD_HUGETLB with
     * `hugePages` (default false); returns the fd. A huge-page memfd takes
     * only sizes that are multiples of the huge page size (ftruncate EINVAL
     * otherwise) and reserves its pages at mmap (ENOMEM when too few are free).
     */
    memfdCreate(name: string, hugePages?: boolean): number;

    /**
     * shm_open(name, oflag | O_CLOEXEC, mode); `name` starts with '/'
     * (validated by the caller). oflag uses the Linux values of
     * O_RDONLY/O_RDWR/O_CREAT/O_EXCL/O_TRUNC (as in `fs.constants`). Returns the fd.
     */
    shmOpen(name: string, oflag: number, mode: number): number;

    /** shm_unlink(name). */
    shmUnlink(name: string): void;

    /**
     * open(path, oflag | O_CLOEXEC, mode), retried on EINTR; oflag and mode
     * as for shmOpen. Returns the fd.
     */
    open(path: string, oflag: number, mode: number): number;

    /**
     * fcntl(fd, F_DUPFD_CLOEXEC, 0): a new close-on-exec fd for the same
     * open file description (same file, offset, locks). Returns the fd.
     */
    dup(fd: number): number;

    /**
     * close(fd) of an fd opened by this backend (or inherited or received);
     * EINTR counts as closed (Linux has released the fd by then). The fd is
     * no longer closed when its thread ends (see above).
     */
    close(fd: number): void;

    /**
     * fcntl(fd, F_OFD_SETLK) on the one byte at `start` (any offset, also
     * past the end of the file): `type` 0 takes a shared lock, 1 an
     * exclusive one, 2 releases. Returns false, having taken nothing, when
     * another open file description holds a conflicting lock (EAGAIN or
     * EACCES); any other failure throws. Never waits. The lock belongs to
     * the open file description of `fd`: fds that share it (dup, fork,
     * SCM_RIGHTS) share the lock, and the kernel drops it when the last of
     * them closes, at the latest when its process dies.
     */
    ofdLock(fd: number, start: number, type: 0 | 1 | 2): boolean;

    /**
     * fcntl(fd, F_OFD_GETLK) on the byte at `start`: the type (0 shared, 1
     * exclusive) of a lock held there by another open file description that
     * would conflict with a lock of `type`, or 2 if none would. With `type`
     * 1: whether anyone else holds the byte at all.
     */
    ofdTest(fd: number, start: number, type: 0 | 1): 0 | 1 | 2;

    /**
     * mmap(NULL, length, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0),
     * wrapped in exactly one external ArrayBuffer of `length` bytes whose
     * finalizer unmaps it if `munmap` was never called. `length` must be a
     * positive safe integer (RangeError). Never write through a view of a
     * read-only mapping: the write faults.
     *
     * With `ownFd` true the mapping takes `fd` once it returns (if it
     * throws, the caller still owns it): `munmap`, or the finalizer after
     * GC or at the thread's exit, closes it too, so an abandoned mapping
     * gives back its fd along with its memory. Default false.
     */
    mmap(fd: number, length: number, writable: boolean, ownFd?: boolean): ArrayBuffer;

    /**
     * Wakes the pending futexWaitAsync waits on the mapping (they resolve 0;
     * callers re-check), detaches `buffer` (every stale view reads as length
     * 0 and Atomics on it throw TypeError), munmaps it (shmdt for a buffer
     * of `shmAttach`) and closes the fd it owns (see mmap). TypeError if
     * `buffer` was not returned by `mmap` or `shmAttach` of this backend (on
     * this thread); a second call on the same buffer is a no-op.
     */
    munmap(buffer: ArrayBuffer): void;

    /**
     * madvise(MADV_POPULATE_WRITE) over the whole of a writable mapping made
     * by `mmap` or `shmAttach`: every page is allocated now, so memory the
     * kernel cannot provide (huge pages running out, a hugetlb cgroup limit)
     * fails here (ENOMEM, EFAULT) instead of raising SIGBUS at the first
     * touch. Writes nothing. EINVAL on Linux < 5.14 (no such advice).
     * TypeError for a buffer not ours or detached.
     */
    populate(buffer: ArrayBuffer): void;

    /**
     * fallocate(fd, 0, offset, length): reserves the file's blocks (a tmpfs
     * file's pages) over that range now, growing the file if the range ends
     * past its size, so that a file system too small for it (a container's
     * 64 MiB /dev/shm) fails here (ENOSPC) instead of raising SIGBUS at the
     * first touch of a page it cannot provide. EOPNOTSUPP where the file
     * system cannot reserve. `length` at least 1.
     */
    allocate(fd: number, offset: number, length: number): void;

    /**
     * shmget(key, size, flags): the id of a System V shared memory segment.
     * `key` is an integer in [-2^31, 2^32), taken modulo 2^32 as the C key_t
     * (0 is IPC_PRIVATE: a new segment reachable only by its id). `flags`:
     * permission bits (0o777) | IPC_CREAT (0o1000) | IPC_EXCL (0o2000) |
     * SHM_HUGETLB (0o4000); other bits are a RangeError. `size` 0 with no
     * IPC_CREAT looks up an existing segment.
     */
    shmGet(key: number, size: number, flags: number): number;

    /**
     * shmat(id, NULL, writable ? 0 : SHM_RDONLY), wrapped like `mmap` in
     * exactly one external ArrayBuffer of the segment's size (IPC_STAT's
     * shm_segsz), type-tagged as this backend's: `munmap(buffer)` detaches
     * the ArrayBuffer and then the segment (shmdt), and so does the
     * finalizer after GC if munmap was never called. A segment marked with
     * `shmRemove` goes away at its last detach.
     */
    shmAttach(id: number, writable: boolean): ArrayBuffer;

    /** shmctl(id, IPC_RMID, NULL): frees the key now; the segment goes with its last detach. */
    shmRemove(id: number): void;

    /** fcntl(fd, F_ADD_SEALS, seals). F_SEAL_SEAL=1, SHRINK=2, GROW=4, WRITE=8. */
    addSeals(fd: number, seals: number): void;

    /** fcntl(fd, F_GET_SEALS); throws EINVAL for an fd that does not support sealing. */
    getSeals(fd: number): number;

    /**
     * FUTEX_WAIT (shared, not FUTEX_PRIVATE_FLAG) on the 32-bit word at
     * `byteOffset` of `buffer`, blocking the calling thread. The futex works
     * on any memory, but only a mapping of a shared fd is shared across
     * processes. `byteOffset`: a multiple of 4 inside the buffer, else
     * RangeError. `timeoutMs`: finite >= 0, or Infinity / negative / NaN for
     * no timeout. EINTR is retried with the remaining time.
     */
    futexWait(buffer: ArrayBuffer | SharedArrayBuffer, byteOffset: number, expected: number, timeoutMs: number): WaitResult;

    /**
     * FUTEX_WAKE (shared) of up to `count` waiters on the word; returns how
     * many woke. `count` is clamped like Atomics.notify's (NaN or <= 0 wakes none).
     */
    futexWake(buffer: ArrayBuffer | SharedArrayBuffer, byteOffset: number, count: number): number;

    /**
     * membarrier(cmd, 0, 0) (Linux; the expedited global commands since
     * 4.16): the command's result, a bit mask for MEMBARRIER_CMD_QUERY (0),
     * else 0. A refusal throws its errno (EINVAL: a command this kernel does
     * not have; EPERM: a private command before its registration, or a
     * seccomp profile's refusal; ENOSYS: no membarrier). `cmd`: an integer
     * >= 0, else RangeError.
     */
    membarrier(cmd: number): number;

    /**
     * `futex_waitv` (Linux >= 5.16) on up to 128 words at once, blocking the
     * calling thread: the index of the word woken (possibly spuriously), -1
     * when some word did not hold its expected value when the wait began
     * (which one is not told: re-check them all), -2 on timeout. Shared
     * futexes, as futexWait. RangeError for an empty list or more than 128.
     */
    futexWaitAny(
      targets: ReadonlyArray<{ buffer: ArrayBuffer | SharedArrayBuffer; byteOffset: number; expected: number }>,
      timeoutMs: number,
    ): number;

    /**
     * How futexWaitAsync waits in the kernel in this thread: 'io_uring' (one
     * io_uring per event loop, polled by libuv: no thread per wait),
     * 'futex_waitv' (the fallback where io_uring or its FUTEX_WAIT is
     * refused: one thread per 127 pending waits of the process), 'threads'
     * (one native thread per pending wait: Linux < 5.16), 'libuv-threadpool'
     * (the koffi backend). SHMRING_ASYNC_WAIT=io_uring|futex_waitv|threads
     * forces one (an error where the kernel refuses it). Decided at the
     * first call.
     */
    asyncWaitKind(): AsyncWaitKind;

    /**
     * The wait of `futexWait` without blocking the event loop (see
     * asyncWaitKind for how). The pending promise keeps the event loop
     * alive, unless `ref` is false (then, like an unref'd timer, it lets
     * the process exit; the koffi backend cannot do that: its waits hold a
     * libuv pool thread, which keeps the loop alive); a settled or
     * cancelled one does not. The buffer stays referenced (so not unmapped
     * by GC) while the wait is pending. Resolves at once with 1 if the word
     * already differs, with 2 for a timeout of 0.
     */
    futexWaitAsync(
      buffer: ArrayBuffer | SharedArrayBuffer,
      byteOffset: number,
      expected: number,
      timeoutMs: number,
      ref?: boolean,
    ): AsyncWait;

    /**
     * The wait of `futexWaitAny` without blocking the event loop, as one
     * wait on up to 16384 words (MAX_WAIT_ANY_ASYNC), where async waits use
     * io_uring (asyncWaitKind() 'io_uring'; TypeError otherwise): one
     * kernel request per 128 words, not one per word, so that waiting on
     * many words, and cancelling the wait, costs a few system calls.
     * Resolves with the index of the word woken (possibly spuriously), -1
     * when some word did not hold its expected value (at once when one
     * already does not), -2 on timeout; cancel() resolves it with 0
     * (callers re-check every word). Wakes it may have swallowed as it
     * ended (the one a cancelled entry reports, and one for each word that
     * no longer holds its expected value) are passed on. `ref` and the buffers as
     * futexWaitAsync. Absent from the koffi backend.
     */
    futexWaitAnyAsync?(
      targets: ReadonlyArray<{ buffer: ArrayBuffer | SharedArrayBuffer; byteOffset: number; expected: number }>,
      timeoutMs: number,
      ref?: boolean,
    ): AsyncWaitAny;

    /**
     * sendmsg(MSG_DONTWAIT | MSG_NOSIGNAL) on the Unix domain socket
     * `socketFd`: one byte with `fd` attached as SCM_RIGHTS. Throws EAGAIN if
     * the socket buffer is full.
     */
    sendFd(socketFd: number, fd: number): void;

    /**
     * recvmsg(MSG_DONTWAIT | MSG_CMSG_CLOEXEC): the received fd (>= 0); -1 if
     * nothing is waiting yet (EAGAIN); -2 if the peer closed the connection
     * (EOF); -3 if a message arrived without an fd; -4 if one arrived with
     * an fd the kernel could not install here (MSG_CTRUNC: this process is
     * out of fds, or a security module refused it; the fd is gone).
     */
    recvFd(socketFd: number): number;
  }
}

declare const backend: backend.NativeBackend & { readonly kind: 'addon' };
export = backend;
