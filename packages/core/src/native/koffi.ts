/**
 * The koffi backend: the NativeBackend contract (./backend.ts) implemented by
 * calling libc through koffi, for when the Rust addon is not built or
 * `SHMRING_BACKEND=koffi`. Importing this module loads nothing: koffi and
 * libc are loaded by the first `koffiBackend()` call.
 *
 * Linux only, x86_64 and arm64 (LP64: the struct layouts below are computed
 * by koffi, the constants are the same on both except SYS_futex).
 *
 * How it differs from the addon, and why:
 *
 *  - **Mappings.** `koffi.view(ptr, len)` makes one external ArrayBuffer over
 *    the mapping (or the System V segment shmat attached) but cannot attach
 *    a finalizer, so a FinalizationRegistry keyed on the ArrayBuffer unmaps
 *    it (shmdt for a segment; and closes the fd it owns) after GC. A FinalizationRegistry does not run when a worker ends:
 *    there an 'exit' listener unmaps what the worker left and closes its fds
 *    (see below). (Consequence: do not move
 *    a mapping's ArrayBuffer to a worker with a postMessage transfer list.
 *    Node marks koffi's external ArrayBuffers untransferable anyway, so such
 *    a transfer copies the bytes instead of moving them.)
 *  - **Detaching.** JS cannot call `napi_detach_arraybuffer`, and
 *    `structuredClone(buffer, { transfer })` copies external (untransferable)
 *    ArrayBuffers instead of detaching them. So `munmap` detaches with V8's
 *    `%ArrayBufferDetach`, compiled once with `--allow-natives-syntax`
 *    switched on just for that compilation (see `makeDetacher`). If that is
 *    impossible (code generation from strings disallowed, a future V8),
 *    `munmap` leaves the memory mapped and the FinalizationRegistry unmaps
 *    it at GC: stale views keep their length, but nothing can fault.
 *  - **Async futex waits.** A koffi `.async` call runs FUTEX_WAIT on a libuv
 *    threadpool thread. Each pending wait occupies one of the pool's
 *    threads (4 by default, `UV_THREADPOOL_SIZE`), starving fs, dns and
 *    crypto work queued behind it and queueing further waits: this is why
 *    the addon, with its own waiter threads, is preferred. koffi also caps
 *    pending async calls (256 by default; raised here to its maximum, 4096)
 *    and throws past that: a new wait then fails (ERR_SHMRING_TOO_MANY_WAITS),
 *    never one already admitted, whose next slice waits for a free slot
 *    (KoffiWait.reissue).
 *  - **errno of async calls** is the pool thread's and cannot be read from
 *    JS, so a failed async FUTEX_WAIT is diagnosed again on this thread:
 *    the word is read, and if it still holds the expected value, a
 *    FUTEX_WAIT that cannot block tells ETIMEDOUT from an error (see
 *    `probeWord`, and why it passes on a wake it takes).
 *  - **Cancelling an async wait** moves its deadline to the epoch, in the
 *    timespec its call reads (koffi passes the ArrayBuffer's memory), so a
 *    call still queued for a pool thread returns at once when it runs; and
 *    it wakes every waiter of the word (spurious wakes for the others,
 *    which re-check), repeating the wake until the pool thread has
 *    returned, since a call that read its deadline before the change can
 *    still be on its way into the kernel. Until then the native call keeps
 *    the loop alive, briefly; in a worker, the wait's promise is not settled until
 *    then: once it is, no call of it is left in the pool. A wait that nobody awaits any more
 *    but that was never cancelled keeps the loop alive until it is woken
 *    or times out.
 *  - **Exit.** libuv joins its pool threads when the process exits, so a
 *    thread asleep in FUTEX_WAIT would hang `process.exit()`. An 'exit'
 *    listener therefore cancels every pending wait (which empties the
 *    pool's queue at once, above), and a pool thread never sleeps longer
 *    than ASYNC_SLICE_NS per call (the wait is re-issued until its own
 *    deadline), which bounds the delay a wait no cancel reached can add.
 *    The price: a long wait costs one pool round trip per second.
 *  - **Workers that end without close().** The addon closes what a
 *    worker leaves open (its fds, its rings' role-lock fds, its mappings)
 *    from its env cleanup hook, which Node runs however the worker ends.
 *    JS has no such hook: here an 'exit' listener of the worker
 *    (releaseAtWorkerExit) does it, after the beforeUnmap hooks (unmap.ts)
 *    have written what they must to the memory; that covers process.exit()
 *    in the worker and its script returning, but not worker.terminate(), which
 *    emits no 'exit' in the worker: a terminated worker's fds, locks and
 *    mappings stay until the process exits (core's README).
 *  - **Workers (not met).** If a worker thread ends (terminate(),
 *    process.exit() in the worker, an uncaught exception) while one of its
 *    async waits is pending, koffi aborts the whole process: the wait's
 *    completion runs during the worker's teardown, calling into JS fails
 *    there, and koffi's node-addon-api build turns that into a fatal error.
 *    In a worker, end pending waits (close, abort) and let their promises
 *    settle before it ends (a cancelled wait settles only once its pool
 *    call has returned, so that is enough; @shmring/futex's waitAsync and
 *    waitAnyAsync, aborted, stopped or decided, settle only once every
 *    native wait they cancelled has), or use the addon.
 */
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as util from 'node:util';
import * as v8 from 'node:v8';
import { isMainThread } from 'node:worker_threads';
import type * as Koffi from 'koffi';
import { ErrorCodes, ShmringError } from '../errors.js';
import { runBeforeExit } from '../unmap.js';
import type { AsyncWait, NativeBackend } from './backend.js';

type WaitResult = 0 | 1 | 2;
type AnyBuffer = ArrayBuffer | SharedArrayBuffer;

// ---- Linux constants (uapi headers; identical on x86_64 and arm64 unless noted) ----

/** SYS_futex: arch/x86/entry/syscalls/syscall_64.tbl, asm-generic/unistd.h. */
const SYS_FUTEX: Partial<Record<string, number>> = { x64: 202, arm64: 98 };
/** SYS_membarrier: arch/x86/entry/syscalls/syscall_64.tbl, asm-generic/unistd.h. */
const SYS_MEMBARRIER: Partial<Record<string, number>> = { x64: 324, arm64: 283 };
/** futex_waitv(2), Linux >= 5.16 (the same number on every architecture). */
const SYS_FUTEX_WAITV = 449;
const FUTEX2_SIZE_U32 = 0x02;
const FUTEX_WAITV_MAX = 128;
/** sizeof(struct futex_waitv): u64 val, u64 uaddr, u32 flags, u32 reserved. */
const FUTEX_WAITV_SIZE = 24;
const MFD_CLOEXEC = 0x1;
const MFD_ALLOW_SEALING = 0x2;
const MFD_HUGETLB = 0x4;
/** shmget flags shmGet passes through: permission bits, IPC_CREAT, IPC_EXCL, SHM_HUGETLB. */
const SHMGET_FLAGS = 0o777 | 0o1000 | 0o2000 | 0o4000;
const IPC_RMID = 0;
const IPC_STAT = 2;
const SHM_RDONLY = 0o10000;
/** sizeof(struct shmid_ds) on x86_64 and arm64 glibc (shm_segsz, a size_t, at offset 48). */
const SHMID_DS_SIZE = 112;
const SHM_SEGSZ_OFFSET = 48;
/** madvise(2), Linux >= 5.14: fault every page in now, or fail instead of a later SIGBUS. */
const MADV_POPULATE_WRITE = 23;
const O_CLOEXEC = 0o2000000;
const PROT_READ = 0x1;
const PROT_WRITE = 0x2;
const MAP_SHARED = 0x1;
/** mmap's MAP_FAILED, (void *)-1, as koffi.address reports it. */
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;
const F_DUPFD_CLOEXEC = 1030;
const F_ADD_SEALS = 1033;
const F_GET_SEALS = 1034;
const F_OFD_GETLK = 36;
const F_OFD_SETLK = 37;
/** struct flock on x86_64 / arm64: l_type i16 @0, l_whence i16 @2, l_start i64 @8, l_len i64 @16, l_pid i32 @24. */
const FLOCK_SIZE = 32;
const FUTEX_WAKE = 1;
/** FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so a retried wait keeps its deadline. */
const FUTEX_WAIT_BITSET = 9;
/** With this bitset a FUTEX_WAIT_BITSET waiter is woken by a plain FUTEX_WAKE (any program's). */
const FUTEX_BITSET_MATCH_ANY = 0xffff_ffff;
const CLOCK_MONOTONIC = 1;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x4000_0000;
const MSG_CTRUNC = 0x8;
/** Room for this many fds in one received SCM_RIGHTS message (extras are closed). */
const MAX_RECEIVED_FDS = 16;

const { EACCES, EAGAIN, EINTR, ETIMEDOUT } = os.constants.errno;

const INT32_MAX = 0x7fff_ffff;
/** Timeouts longer than this (~31 years) mean no timeout, as in the addon. */
const MAX_TIMEOUT_MS = 1e12;
/** Longest pause between two wakes of a cancelled wait whose thread has not returned yet. */
const MAX_KICK_INTERVAL_MS = 50;
/**
 * Longest single FUTEX_WAIT of a pool thread; longer waits are re-issued
 * from JS. libuv joins its pool threads at exit, so this bounds how long a
 * wait no cancel reached (one started after the exit hook ran) can delay
 * process exit.
 */
const ASYNC_SLICE_NS = 1_000_000_000n;

// ---- errors ----

/** errno → name, for the values libuv has no name for (EIDRM, EDQUOT, ENOLCK, …): os.constants.errno reversed. */
const errnoNames = new Map(Object.entries(os.constants.errno).map(([name, value]) => [value, name]));

/**
 * errno → the name Node reports (libuv's, as the addon's errors do); where
 * libuv has none, os.constants.errno's (the addon asks the C library,
 * which has the same names); `E<n>` where neither has one.
 */
export function errnoName(errno: number): string {
  // getSystemErrorName takes negative integers only: 0 (a call that failed without setting errno) would throw.
  if (!(Number.isInteger(errno) && errno > 0)) return `E${errno}`;
  const name = util.getSystemErrorName(-errno);
  return /^E[A-Z0-9]+$/.test(name) ? name : (errnoNames.get(errno) ?? `E${errno}`);
}

function typeError(message: string): TypeError {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_ARG_TYPE' });
}

function rangeError(message: string): RangeError {
  return Object.assign(new RangeError(message), { code: 'ERR_OUT_OF_RANGE' });
}

// ---- argument checks (before any system call, like the addon's) ----

function checkNumber(value: unknown, what: string): number {
  if (typeof value !== 'number') throw typeError(`${what} must be a number (got ${typeof value})`);
  return value;
}

function checkInteger(value: unknown, what: string, min: number, max: number): number {
  const n = checkNumber(value, what);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw rangeError(`${what}=${n} must be an integer in [${min}, ${max}]`);
  }
  return n;
}

function checkFd(value: unknown, what: string): number {
  return checkInteger(value, what, 0, INT32_MAX);
}

function checkCString(value: unknown, what: string): string {
  if (typeof value !== 'string') throw typeError(`${what} must be a string (got ${typeof value})`);
  if (value.includes('\0')) throw typeError(`${what} must not contain a NUL character`);
  return value;
}

/** `expected`: an integer in [-2^31, 2^32), compared as its 32 low bits; returned as an int32. */
function checkExpected(value: unknown): number {
  return checkInteger(value, 'expected', -0x8000_0000, 0xffff_ffff) | 0;
}

/** Milliseconds to wait, or Infinity for no timeout (undefined, NaN, negative, infinite, absurd). */
function checkTimeout(value: unknown): number {
  if (value === undefined) return Infinity;
  const ms = checkNumber(value, 'timeoutMs');
  return ms >= 0 && ms <= MAX_TIMEOUT_MS ? ms : Infinity;
}

// ---- the backend ----

/** One mmap (or shmat) made by this backend: the memory behind exactly one ArrayBuffer. */
interface Mapping {
  /** 'mmap': undone by munmap. 'shm': a System V segment attached by shmat, undone by shmdt. */
  readonly kind: 'mmap' | 'shm';
  /** The koffi pointer (an External) returned by mmap or shmat. */
  readonly ptr: unknown;
  readonly address: bigint;
  readonly length: number;
  /**
   * 'mapped': live. 'detached': munmap detached the buffer; the memory is
   * unmapped once no pool thread waits on it. 'released': munmap could not
   * detach, so the memory stays mapped until GC. 'unmapped': gone.
   */
  state: 'mapped' | 'detached' | 'released' | 'unmapped';
  /** The fd closed with the mapping (mmap's ownFd), or -1. */
  fd: number;
  /** Its one ArrayBuffer, for the worker's exit hook to detach (weak: the FinalizationRegistry still sees it die). */
  readonly buffer: WeakRef<ArrayBuffer>;
  /** Async waits on a word of this mapping that have not settled. */
  readonly waits: Set<KoffiWait>;
  /** Pool threads currently inside FUTEX_WAIT on a word of this mapping. */
  inFlight: number;
}

/** A validated futex word: where it is, and a view to read it with. */
interface Word {
  /** The ArrayBuffer or SharedArrayBuffer holding it (kept alive by a pending wait). */
  readonly owner: AnyBuffer;
  readonly i32: Int32Array;
  readonly index: number;
  readonly address: bigint;
  readonly mapping: Mapping | undefined;
}

type Native = ReturnType<typeof bindLibc>;

/** koffi and the libc functions this backend calls. */
function bindLibc(koffi: typeof Koffi) {
  const libc = koffi.load('libc.so.6');
  const func = (proto: string): Koffi.KoffiFunction => libc.func(proto);
  let shmLib = libc;
  try {
    libc.func('int shm_unlink(const char *name)');
  } catch {
    shmLib = koffi.load('librt.so.1'); // glibc < 2.34 keeps shm_open in librt
  }
  // Pointer fields are declared uintptr_t: we only ever store addresses of
  // our own ArrayBuffers there (off-heap backing stores, which never move),
  // and koffi still computes the C layout (same size and alignment as void *).
  const iovec = koffi.struct({ iov_base: 'uintptr_t', iov_len: 'size_t' });
  const msghdr = koffi.struct({
    msg_name: 'uintptr_t',
    msg_namelen: 'uint32_t',
    msg_iov: 'uintptr_t',
    msg_iovlen: 'size_t',
    msg_control: 'uintptr_t',
    msg_controllen: 'size_t',
    msg_flags: 'int',
  });
  // x86_64 / arm64: cmsg_len is a size_t, so the header is 16 bytes, 8-aligned.
  const cmsghdr = koffi.struct({ cmsg_len: 'size_t', cmsg_level: 'int', cmsg_type: 'int' });
  return {
    koffi,
    iovec,
    msghdr,
    cmsghdr,
    memfd_create: func('int memfd_create(const char *name, unsigned int flags)'),
    shm_open: shmLib.func('int shm_open(const char *name, int oflag, unsigned int mode)'),
    shm_unlink: shmLib.func('int shm_unlink(const char *name)'),
    open: func('int open(const char *path, int flags, ...)'),
    mmap: func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)'),
    munmap: func('int munmap(void *addr, size_t length)'),
    madvise: func('int madvise(void *addr, size_t length, int advice)'),
    fallocate: func('int fallocate(int fd, int mode, int64_t offset, int64_t len)'),
    shmget: func('int shmget(int key, size_t size, int shmflg)'),
    shmat: func('void *shmat(int shmid, void *shmaddr, int shmflg)'),
    shmdt: func('int shmdt(void *shmaddr)'),
    // glibc adds IPC_64 itself: buf is the 64-bit struct shmid_ds (SHMID_DS_SIZE bytes).
    shmctl: func('int shmctl(int shmid, int cmd, void *buf)'),
    close: func('int close(int fd)'),
    fcntl: func('int fcntl(int fd, int cmd, ...)'),
    syscall: func('long syscall(long number, ...)'),
    // koffi cannot run a variadic function asynchronously, so the async futex
    // wait calls syscall through this fixed-arity prototype. That is ABI-safe
    // on x86_64 and arm64 Linux: integer/pointer variadic arguments travel in
    // the same registers as named ones, and glibc's syscall (assembly) never
    // reads %al, the only register a variadic caller sets in addition.
    futexWaitFixed: func('long syscall(long number, uintptr_t uaddr, long op, long val, void *timeout, long uaddr2, long val3)'),
    clock_gettime: func('int clock_gettime(int clockid, void *tp)'),
    sendmsg: func('intptr_t sendmsg(int sockfd, void *msg, int flags)'),
    recvmsg: func('intptr_t recvmsg(int sockfd, void *msg, int flags)'),
    strerror: func('const char *strerror(int errnum)'),
  };
}

/**
 * A function that detaches an ArrayBuffer, or null if this runtime allows
 * none. `%ArrayBufferDetach` is V8's own detach (what napi_detach_arraybuffer
 * does); natives syntax is a parse-time flag, so it is switched on only
 * while this one function is compiled, unless the user already enabled it.
 */
function makeDetacher(): ((buffer: ArrayBuffer) => void) | null {
  const compile = () => new Function('buffer', '%ArrayBufferDetach(buffer);') as (buffer: ArrayBuffer) => void;
  let compiled: (buffer: ArrayBuffer) => void;
  try {
    try {
      compiled = compile(); // natives syntax already enabled by the user: leave the flag alone
    } catch {
      v8.setFlagsFromString('--allow-natives-syntax');
      try {
        compiled = compile();
      } finally {
        v8.setFlagsFromString('--no-allow-natives-syntax');
      }
    }
    const probe = new ArrayBuffer(8);
    compiled(probe);
    if (probe.byteLength !== 0) return null;
  } catch {
    return null;
  }
  let detach = compiled;
  return (buffer) => {
    try {
      detach(buffer);
    } catch (err) {
      // V8 may flush an unused function's bytecode and reparse it lazily,
      // now without natives syntax: compile it again with the flag on.
      if (!(err instanceof SyntaxError)) throw err;
      v8.setFlagsFromString('--allow-natives-syntax');
      try {
        detach = compile();
      } finally {
        v8.setFlagsFromString('--no-allow-natives-syntax');
      }
      detach(buffer);
    }
  };
}

/** An async futex wait in flight on a libuv pool thread (see the module comment). */
class KoffiWait implements AsyncWait {
  readonly promise: Promise<WaitResult>;
  private resolve!: (value: WaitResult) => void;
  private reject!: (reason: unknown) => void;
  private settled = false;
  /** cancel() was called: the wait settles 'ok' once its call has returned. */
  private cancelled = false;
  private inFlight = false;
  private kickDelayMs = 1;
  private kickTimer: NodeJS.Timeout | undefined;
  /** reissue()'s pending retry of a slice koffi refused (its slot not freed yet), if any. */
  private retryTimer: NodeJS.Timeout | undefined;

  /** The timespec of the current native call: min(deadline, now + ASYNC_SLICE_NS). */
  private readonly sliceEnd = new ArrayBuffer(16);

  constructor(
    private readonly backend: KoffiBackend,
    private readonly word: Word,
    private readonly expected: number,
    /** Absolute CLOCK_MONOTONIC deadline in ns, or null for no timeout. */
    private readonly deadlineNs: bigint | null,
  ) {
    this.promise = new Promise<WaitResult>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  /** Starts the wait; throws (nothing pending) if koffi refuses the call. */
  start(): void {
    this.issue();
    this.word.mapping?.waits.add(this);
    this.backend.pendingWaits.add(this);
  }

  /**
   * Ends the wait ('ok'): true (also for a repeated call); false when it had
   * settled on its own first, whose promise keeps its outcome. In a worker its promise settles only once the
   * pool call has returned: a worker may end as soon as every wait of it
   * has settled, and koffi aborts the process if a call of a worker that
   * ended returns (module comment, "Workers"). The kicks bring a sleeping
   * thread back within a few ms, and a call still queued for a pool thread
   * (more waits pending than the pool has threads) returns as soon as a
   * thread takes it, which waits that were not cancelled and hold every
   * thread can delay by up to a slice. The main thread has no such
   * teardown: its wait settles at once.
   */
  cancel(): boolean {
    if (this.cancelled) return true;
    if (this.settled) return false; // ended on its own: the promise has its outcome
    this.cancelled = true;
    // A call still queued for a pool thread then times out as soon as it runs (FUTEX_WAIT_BITSET's
    // timeout is absolute), where it would sleep until a kick: with more waits than pool threads,
    // cancelling them all (close(), the exit hook) took one kick interval per queued call. The
    // kernel copies the timespec at the call's entry: a call that read it already is kicked. A copy
    // taken during these stores reads zero bytes where they landed: a valid time, never later than the old one.
    writeTimespec(this.sliceEnd, 0n);
    if (this.inFlight) this.kick();
    if (!this.inFlight || isMainThread) this.settle(0);
    return true;
  }

  private issue(): void {
    const { backend } = this;
    const sliceEnd = backend.monotonicNs() + ASYNC_SLICE_NS;
    writeTimespec(this.sliceEnd, this.deadlineNs !== null && this.deadlineNs < sliceEnd ? this.deadlineNs : sliceEnd);
    // The pool thread blocks in the kernel on word.address; `this` (and so
    // word.owner, the buffer) stays reachable from koffi's callback until
    // it returns, so GC cannot unmap the word under the thread.
    try {
      backend.native.futexWaitFixed.async(
        backend.sysFutex,
        this.word.address,
        FUTEX_WAIT_BITSET,
        this.expected,
        this.sliceEnd,
        0,
        FUTEX_BITSET_MATCH_ANY,
        (err: unknown, ret: number) => this.returned(err, ret),
      );
    } catch (err) {
      if (!/too many asynchronous calls/i.test((err as Error).message)) throw err;
      throw new ShmringError(
        ErrorCodes.TOO_MANY_WAITS,
        `the koffi backend has ${asyncCallLimit} async waits on mapped regions pending, as many as koffi allows: ` +
          'settle some first (their timeoutMs, signal, or close()), or use the addon, whose waits have no such limit',
        { cause: err },
      );
    }
    this.inFlight = true;
    if (this.word.mapping) this.word.mapping.inFlight += 1;
  }

  /** The pool thread's FUTEX_WAIT returned (on the JS thread). */
  private returned(err: unknown, ret: number): void {
    this.inFlight = false;
    const mapping = this.word.mapping;
    if (mapping) mapping.inFlight -= 1;
    try {
      if (this.cancelled) {
        // Cancelled: settles now if it has not yet (a worker's), 'ok', with nothing to deliver. But a publisher that wakes one sleeper
        // (unpark's WAKE_ONE) may have picked this thread instead of a live
        // waiter on the same word (a later select's, in this or another
        // process), whom nothing else would wake before its slice ends. So a
        // cancelled wait that was woken passes one wake on, as the addon does
        // for its cancelled io_uring waits; at worst a waiter re-checks in vain.
        // Only where the word changed, as a publisher changes it before its wake:
        // a word that still holds `expected` woke this thread by cancel()'s own
        // kick (which woke every waiter of the word then), and passing that on
        // would end a later wait on the word for nothing, whose cancelled
        // siblings (waitAny) would pass it on again: a chain of empty wakes.
        // The word is still mapped: a mapping closed meanwhile is unmapped, at
        // the earliest, by the finally below.
        if (!err && ret >= 0 && this.backend.probeWord(this.word, this.expected) === 1) this.backend.wakeAddress(this.word.address, 1);
        this.settle(0);
        return;
      }
      if (err) throw err;
      if (ret >= 0) return this.settle(0);
      // Failed: EAGAIN, ETIMEDOUT or EINTR, but its errno is the pool thread's.
      // The word equalled `expected` when futexWaitAsync was called (checked
      // there), so a word that differs now changed while the wait was queued
      // or in flight: a wake the pool thread came too late to sleep through,
      // 'ok' as with the addon (which treats io_uring's -EAGAIN as a wake).
      if (this.backend.probeWord(this.word, this.expected) === 1) return this.settle(0);
      if (this.deadlineNs !== null && this.backend.monotonicNs() >= this.deadlineNs) return this.settle(2);
      this.reissue(); // end of a slice, EINTR, or the word went away and back: wait on until the deadline
    } catch (error) {
      this.settle(null, error);
    } finally {
      if (!this.inFlight) {
        clearTimeout(this.kickTimer);
        if (mapping) this.backend.unmapIfIdle(mapping);
      }
    }
  }

  /**
   * Issues the next slice of a wait already admitted, from returned(): that
   * runs inside koffi's completion of the last slice, whose async-call slot
   * koffi frees only after it, so with every slot taken (asyncCallLimit
   * waits pending) the call is refused. A wait admitted must not fail for
   * that: it issues again once the slot is free (a timer of 0), and after
   * that (a new wait took the slot first) every few ms. Between two
   * attempts no thread sleeps on the word: a publisher changes the word
   * before it wakes, so each attempt first looks at the word (and the
   * deadline), as the kernel's compare would.
   */
  private reissue(): void {
    try {
      this.issue();
    } catch (err) {
      if (!(err instanceof ShmringError && err.code === ErrorCodes.TOO_MANY_WAITS)) throw err;
      this.retryIssue(0);
    }
  }

  /** reissue()'s retry `delayMs` from now (0: at the next timer phase, once koffi has freed the slot). */
  private retryIssue(delayMs: number): void {
    const retry = (): void => {
      this.retryTimer = undefined;
      if (this.settled || this.cancelled) return; // cancel() settled it: no call is in flight
      try {
        if (this.backend.probeWord(this.word, this.expected) === 1) return this.settle(0);
        if (this.deadlineNs !== null && this.backend.monotonicNs() >= this.deadlineNs) return this.settle(2);
        this.issue();
      } catch (err) {
        if (err instanceof ShmringError && err.code === ErrorCodes.TOO_MANY_WAITS) {
          this.retryIssue(Math.min(Math.max(delayMs * 2, 1), MAX_KICK_INTERVAL_MS));
        } else {
          this.settle(null, err);
        }
      }
    };
    // Ref'd: the wait keeps the loop alive between its slices too, as its native call does.
    this.retryTimer = setTimeout(retry, delayMs);
  }

  private settle(value: WaitResult | null, error?: unknown): void {
    if (this.settled) return;
    this.settled = true;
    if (this.retryTimer !== undefined) {
      // Cancelled (or settled by the retry itself) between two slices: no retry is left to keep the loop alive.
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    this.word.mapping?.waits.delete(this);
    this.backend.pendingWaits.delete(this);
    if (value === null) this.reject(error);
    else this.resolve(value);
  }

  /**
   * Wakes the word until the cancelled thread has returned: a wake that
   * comes before the thread entered FUTEX_WAIT is lost. Unref'd: the native
   * call itself keeps the loop alive until it returns.
   */
  private kick(): void {
    try {
      this.backend.wakeAddress(this.word.address, INT32_MAX);
    } catch {
      // Cannot fail on a mapped word; and cancel() and timers must not throw.
    }
    clearTimeout(this.kickTimer);
    this.kickTimer = setTimeout(() => {
      if (!this.inFlight) return;
      this.kickDelayMs = Math.min(this.kickDelayMs * 2, MAX_KICK_INTERVAL_MS);
      this.kick();
    }, this.kickDelayMs);
    this.kickTimer.unref();
  }
}

/** Nanoseconds of a timespec held in an ArrayBuffer. */
function timespecNs(timespec: ArrayBuffer): bigint {
  const [sec, nsec] = new BigInt64Array(timespec, 0, 2);
  return sec! * 1_000_000_000n + nsec!;
}

/** Stores `ns` nanoseconds as a timespec in `into`. */
function writeTimespec(into: ArrayBuffer, ns: bigint): ArrayBuffer {
  const ts = new BigInt64Array(into, 0, 2);
  ts[0] = ns / 1_000_000_000n;
  ts[1] = ns % 1_000_000_000n;
  return into;
}

class KoffiBackend implements NativeBackend {
  readonly kind = 'koffi' as const;
  readonly sysFutex: number;
  /** Async waits not settled yet, for the exit hook. */
  readonly pendingWaits = new Set<KoffiWait>();
  private exitHooked = false;
  private workerExitHooked = false;
  /**
   * The fds this backend returned that are still open and that no mapping
   * owns (a FileLocks' fd, one between two calls): what the worker's exit
   * hook closes (releaseAtWorkerExit).
   */
  private readonly looseFds = new Set<number>();
  /** Mappings not unmapped yet, for the worker's exit hook (they do not keep their ArrayBuffers alive). */
  private readonly liveMappings = new Set<Mapping>();
  /** Mappings by their one ArrayBuffer. */
  private readonly mappings = new WeakMap<ArrayBuffer, Mapping>();
  /** Base addresses of other buffers used as futex words (their backing stores never move). */
  private readonly baseAddresses = new WeakMap<AnyBuffer, bigint>();
  /** An Int32Array over each buffer used as futex words, to read words with Atomics. */
  private readonly int32Views = new WeakMap<AnyBuffer, Int32Array>();
  /** Unmaps a mapping whose ArrayBuffer was collected without munmap, and closes the fd it owns. */
  private readonly unmapAtGc = new FinalizationRegistry<Mapping>((mapping) => {
    this.closeOwnedFd(mapping);
    if (mapping.state === 'unmapped') return;
    mapping.state = 'unmapped';
    this.liveMappings.delete(mapping);
    this.release(mapping);
  });
  private readonly detach = makeDetacher();
  /** Scratch timespec of synchronous waits (this backend lives on one JS thread). */
  private readonly syncDeadline = new ArrayBuffer(16);
  /** An absolute deadline long past: a FUTEX_WAIT with it never sleeps. */
  private readonly pastDeadline = new ArrayBuffer(16);
  private readonly clockScratch = new ArrayBuffer(16);
  // sendmsg / recvmsg buffers, built once: msghdr → iovec → one payload byte; msghdr → control.
  private readonly msg: ArrayBuffer;
  private readonly iov: ArrayBuffer;
  private readonly payload = new ArrayBuffer(1);
  private readonly control: ArrayBuffer;
  private readonly cmsgHeaderSize: number;

  constructor(readonly native: Native) {
    const sysFutex = SYS_FUTEX[process.arch];
    if (process.platform !== 'linux' || sysFutex === undefined) {
      throw new Error(`the koffi backend supports Linux on x64 and arm64, not ${process.platform}/${process.arch}`);
    }
    this.sysFutex = sysFutex;
    const { koffi } = native;
    this.msg = new ArrayBuffer(koffi.sizeof(native.msghdr));
    this.iov = new ArrayBuffer(koffi.sizeof(native.iovec));
    this.cmsgHeaderSize = koffi.sizeof(native.cmsghdr);
    this.control = new ArrayBuffer(this.cmsgSpace(4 * MAX_RECEIVED_FDS));
    koffi.encode(this.iov, 0, native.iovec, { iov_base: koffi.address(this.payload), iov_len: 1 });
  }

  // ---- errors ----

  private sysError(syscall: string, errno: number): Error {
    const code = errnoName(errno);
    let text: string;
    try {
      text = String(this.native.strerror(errno));
    } catch {
      text = code;
    }
    return Object.assign(new Error(`${syscall} failed: ${text} (${code})`), { code, errno, syscall });
  }

  /** errno of the last call on this thread, read right after it (before anything else can set it). */
  private errno(): number {
    return this.native.koffi.errno();
  }

  // ---- memfd, shm ----

  memfdCreate(name: string, hugePages = false): number {
    const label = checkCString(name, 'name');
    if (typeof hugePages !== 'boolean') throw typeError(`hugePages must be a boolean (got ${typeof hugePages})`);
    const fd: number = this.native.memfd_create(label, MFD_CLOEXEC | MFD_ALLOW_SEALING | (hugePages ? MFD_HUGETLB : 0));
    if (fd < 0) throw this.sysError('memfd_create', this.errno());
    return this.opened(fd);
  }

  shmOpen(name: string, oflag: number, mode: number): number {
    const path = checkCString(name, 'name');
    const flags = checkInteger(oflag, 'oflag', 0, INT32_MAX);
    const perms = checkInteger(mode, 'mode', 0, 0o7777);
    const fd: number = this.native.shm_open(path, flags | O_CLOEXEC, perms);
    if (fd < 0) throw this.sysError('shm_open', this.errno());
    return this.opened(fd);
  }

  shmUnlink(name: string): void {
    const path = checkCString(name, 'name');
    if (this.native.shm_unlink(path) < 0) throw this.sysError('shm_unlink', this.errno());
  }

  // ---- files (opened and closed here, not by node:fs: see NativeBackend) ----

  open(path: string, oflag: number, mode: number): number {
    const file = checkCString(path, 'path');
    const flags = checkInteger(oflag, 'oflag', 0, INT32_MAX);
    const perms = checkInteger(mode, 'mode', 0, 0o7777);
    for (;;) {
      // open is variadic: its third argument is declared explicitly (mode_t).
      const fd: number = this.native.open(file, flags | O_CLOEXEC, 'unsigned int', perms);
      if (fd >= 0) return this.opened(fd);
      const errno = this.errno();
      if (errno !== EINTR) throw this.sysError('open', errno);
    }
  }

  dup(fd: number): number {
    const file = checkFd(fd, 'fd');
    const copy: number = this.native.fcntl(file, F_DUPFD_CLOEXEC, 'int', 0);
    if (copy < 0) throw this.sysError('fcntl', this.errno());
    return this.opened(copy);
  }

  /**
   * Records `fd`, just returned by the kernel, as open and owned by no
   * mapping, so that the worker's exit hook closes it if nothing else did.
   */
  private opened(fd: number): number {
    this.looseFds.add(fd);
    this.hookWorkerExit();
    return fd;
  }

  close(fd: number): void {
    const file = checkFd(fd, 'fd');
    this.looseFds.delete(file); // closed here: the exit hook must not close its number again
    // EINTR counts as closed: Linux released the fd before reporting it.
    if (this.native.close(file) < 0) {
      const errno = this.errno();
      if (errno !== EINTR) throw this.sysError('close', errno);
    }
  }

  /** Closes the fd `mapping` owns, once; throws its error only when asked. */
  private closeOwnedFd(mapping: Mapping, throwOnError = false): void {
    const fd = mapping.fd;
    if (fd < 0) return;
    mapping.fd = -1;
    try {
      this.close(fd);
    } catch (err) {
      if (throwOnError) throw err;
    }
  }

  // ---- mappings ----

  mmap(fd: number, length: number, writable: boolean, ownFd = false): ArrayBuffer {
    const file = checkFd(fd, 'fd');
    const size = checkNumber(length, 'length');
    if (!(Number.isSafeInteger(size) && size >= 1)) throw rangeError(`length=${size} must be a positive safe integer`);
    if (typeof writable !== 'boolean') throw typeError(`writable must be a boolean (got ${typeof writable})`);
    if (typeof ownFd !== 'boolean') throw typeError(`ownFd must be a boolean (got ${typeof ownFd})`);
    const { koffi } = this.native;
    const prot = PROT_READ | (writable ? PROT_WRITE : 0);
    const ptr: unknown = this.native.mmap(null, size, prot, MAP_SHARED, file, 0);
    const errno = this.errno();
    const address = ptr === null ? MAP_FAILED : koffi.address(ptr);
    if (address === MAP_FAILED) throw this.sysError('mmap', errno);
    let buffer: ArrayBuffer;
    try {
      // The one ArrayBuffer over this mapping: no copy, writes reach the file.
      buffer = koffi.view(ptr, size);
    } catch (err) {
      this.native.munmap(ptr, size);
      throw err;
    }
    // Nothing can fail from here on, so the fd changes hands now (see NativeBackend.mmap).
    return this.expose(
      {
        kind: 'mmap',
        ptr,
        address,
        length: size,
        state: 'mapped',
        fd: ownFd ? file : -1,
        buffer: new WeakRef(buffer),
        waits: new Set(),
        inFlight: 0,
      },
      buffer,
    );
  }

  /** Makes `buffer` the one ArrayBuffer of `mapping`, released by munmap or at GC. */
  private expose(mapping: Mapping, buffer: ArrayBuffer): ArrayBuffer {
    // The fd is the mapping's now (closeOwnedFd), no longer loose.
    if (mapping.fd >= 0) this.looseFds.delete(mapping.fd);
    this.mappings.set(buffer, mapping);
    this.liveMappings.add(mapping);
    this.hookWorkerExit();
    // koffi.view attaches no finalizer: unmap or detach (and close) when the buffer is collected.
    this.unmapAtGc.register(buffer, mapping, mapping);
    return buffer;
  }

  /** munmap or shmdt, by the mapping's kind; returns the error instead of throwing it. */
  private release(mapping: Mapping): Error | undefined {
    const failed = mapping.kind === 'shm' ? this.native.shmdt(mapping.ptr) < 0 : this.native.munmap(mapping.ptr, mapping.length) < 0;
    return failed ? this.sysError(mapping.kind === 'shm' ? 'shmdt' : 'munmap', this.errno()) : undefined;
  }

  munmap(buffer: ArrayBuffer): void {
    const mapping = util.types.isArrayBuffer(buffer) ? this.mappings.get(buffer) : undefined;
    if (!mapping) throw typeError('buffer must be an ArrayBuffer returned by mmap or shmAttach');
    if (mapping.state !== 'mapped') return; // second call: a no-op
    for (const wait of [...mapping.waits]) wait.cancel(); // resolve with 0 and wake their threads
    if (!this.detach) {
      // Cannot detach: unmapping would let stale views fault, so leave the
      // memory mapped until the FinalizationRegistry sees the buffer die.
      // The fd is not needed by the mapping: it goes now.
      mapping.state = 'released';
      this.closeOwnedFd(mapping, true);
      return;
    }
    // Detach first: every stale view now has length 0 and Atomics on it throw.
    this.detach(buffer);
    mapping.state = 'detached';
    this.unmapAtGc.unregister(mapping);
    try {
      this.unmapIfIdle(mapping, true);
    } finally {
      this.closeOwnedFd(mapping, true);
    }
  }

  /** Unmaps a detached mapping once no pool thread waits on it (the last one to return does it). */
  unmapIfIdle(mapping: Mapping, throwOnError = false): void {
    if (mapping.state !== 'detached' || mapping.inFlight > 0) return;
    mapping.state = 'unmapped';
    this.liveMappings.delete(mapping);
    const err = this.release(mapping);
    if (err && throwOnError) throw err;
  }

  /** madvise(MADV_POPULATE_WRITE) over a live mapping of ours (see NativeBackend.populate). */
  populate(buffer: ArrayBuffer): void {
    const mapping = util.types.isArrayBuffer(buffer) ? this.mappings.get(buffer) : undefined;
    if (!mapping) throw typeError('buffer must be an ArrayBuffer returned by mmap or shmAttach');
    if (mapping.state !== 'mapped') throw typeError('buffer is detached (its region was closed)');
    for (;;) {
      if (this.native.madvise(mapping.ptr, mapping.length, MADV_POPULATE_WRITE) >= 0) return;
      const errno = this.errno();
      if (errno !== EINTR) throw this.sysError('madvise', errno);
    }
  }

  /** fallocate(fd, 0, offset, length) (see NativeBackend.allocate). */
  allocate(fd: number, offset: number, length: number): void {
    const file = checkFd(fd, 'fd');
    const from = checkInteger(offset, 'offset', 0, Number.MAX_SAFE_INTEGER);
    const bytes = checkInteger(length, 'length', 1, Number.MAX_SAFE_INTEGER);
    for (;;) {
      if (this.native.fallocate(file, 0, from, bytes) === 0) return;
      const errno = this.errno();
      if (errno !== EINTR) throw this.sysError('fallocate', errno);
    }
  }

  // ---- System V shared memory ----

  shmGet(key: number, size: number, flags: number): number {
    // key_t is a C int: keys above 2^31 (as ipcs prints them, in hex) wrap to negative ones.
    const k = checkInteger(key, 'key', -0x8000_0000, 0xffff_ffff) | 0;
    const bytes = checkInteger(size, 'size', 0, Number.MAX_SAFE_INTEGER);
    const bits = checkInteger(flags, 'flags', 0, INT32_MAX);
    if ((bits & ~SHMGET_FLAGS) !== 0) {
      throw rangeError(`flags=0o${bits.toString(8)} has bits other than mode, IPC_CREAT, IPC_EXCL, SHM_HUGETLB`);
    }
    const id: number = this.native.shmget(k, bytes, bits);
    if (id < 0) throw this.sysError('shmget', this.errno());
    return id;
  }

  shmAttach(id: number, writable: boolean): ArrayBuffer {
    const shmid = checkInteger(id, 'id', 0, INT32_MAX);
    if (typeof writable !== 'boolean') throw typeError(`writable must be a boolean (got ${typeof writable})`);
    const { koffi } = this.native;
    const ptr: unknown = this.native.shmat(shmid, null, writable ? 0 : SHM_RDONLY);
    const errno = this.errno();
    const address = ptr === null ? MAP_FAILED : koffi.address(ptr);
    if (address === MAP_FAILED) throw this.sysError('shmat', errno);
    // Sized after the attach, which pins the segment: it cannot go away meanwhile.
    let buffer: ArrayBuffer;
    try {
      const stat = new ArrayBuffer(SHMID_DS_SIZE);
      if (this.native.shmctl(shmid, IPC_STAT, stat) < 0) throw this.sysError('shmctl', this.errno());
      const size = Number(new DataView(stat).getBigUint64(SHM_SEGSZ_OFFSET, true));
      if (!(size >= 1 && Number.isSafeInteger(size))) throw rangeError(`segment id=${shmid} has size ${size}, which cannot be mapped`);
      // The one ArrayBuffer over this attach: no copy, writes reach the segment.
      buffer = koffi.view(ptr, size);
    } catch (err) {
      this.native.shmdt(ptr);
      throw err;
    }
    return this.expose(
      {
        kind: 'shm',
        ptr,
        address,
        length: buffer.byteLength,
        state: 'mapped',
        fd: -1,
        buffer: new WeakRef(buffer),
        waits: new Set(),
        inFlight: 0,
      },
      buffer,
    );
  }

  shmRemove(id: number): void {
    const shmid = checkInteger(id, 'id', 0, INT32_MAX);
    if (this.native.shmctl(shmid, IPC_RMID, null) < 0) throw this.sysError('shmctl', this.errno());
  }

  // ---- open file description locks ----

  /** A struct flock for the one byte at `start` (SEEK_SET, l_pid 0, as the OFD commands require). */
  private flock(start: number, type: number): Buffer {
    const lock = Buffer.alloc(FLOCK_SIZE);
    lock.writeInt16LE(type, 0); // F_RDLCK 0, F_WRLCK 1, F_UNLCK 2: the values JS passes
    lock.writeBigInt64LE(BigInt(start), 8);
    lock.writeBigInt64LE(1n, 16);
    return lock;
  }

  ofdLock(fd: number, start: number, type: 0 | 1 | 2): boolean {
    const file = checkFd(fd, 'fd');
    const lock = this.flock(checkInteger(start, 'start', 0, Number.MAX_SAFE_INTEGER), checkInteger(type, 'type', 0, 2));
    if (this.native.fcntl(file, F_OFD_SETLK, 'void *', lock) === 0) return true;
    const errno = this.errno();
    if (errno === EAGAIN || errno === EACCES) return false;
    throw this.sysError('fcntl', errno);
  }

  ofdTest(fd: number, start: number, type: 0 | 1): 0 | 1 | 2 {
    const file = checkFd(fd, 'fd');
    const lock = this.flock(checkInteger(start, 'start', 0, Number.MAX_SAFE_INTEGER), checkInteger(type, 'type', 0, 1));
    if (this.native.fcntl(file, F_OFD_GETLK, 'void *', lock) < 0) throw this.sysError('fcntl', this.errno());
    return lock.readInt16LE(0) as 0 | 1 | 2;
  }

  // ---- seals ----

  addSeals(fd: number, seals: number): void {
    const file = checkFd(fd, 'fd');
    const bits = checkInteger(seals, 'seals', 0, INT32_MAX);
    // fcntl is variadic: its third argument is declared explicitly as an int.
    if (this.native.fcntl(file, F_ADD_SEALS, 'int', bits) < 0) throw this.sysError('fcntl', this.errno());
  }

  getSeals(fd: number): number {
    const file = checkFd(fd, 'fd');
    const seals: number = this.native.fcntl(file, F_GET_SEALS);
    if (seals < 0) throw this.sysError('fcntl', this.errno());
    return seals;
  }

  // ---- futex ----

  /** Checks `byteOffset` of `buffer` (ArrayBuffer, SharedArrayBuffer or a view) and locates the word. */
  private word(buffer: unknown, byteOffset: unknown): Word {
    let owner: AnyBuffer;
    let start = 0;
    let length: number;
    if (util.types.isArrayBuffer(buffer) || util.types.isSharedArrayBuffer(buffer)) {
      owner = buffer;
      length = buffer.byteLength;
    } else if (ArrayBuffer.isView(buffer)) {
      owner = buffer.buffer;
      start = buffer.byteOffset;
      length = buffer.byteLength;
    } else {
      throw typeError('buffer must be an ArrayBuffer, a SharedArrayBuffer or a typed array');
    }
    const mapping = util.types.isArrayBuffer(owner) ? this.mappings.get(owner) : undefined;
    // munmap ran without a detacher ('released'): the buffer keeps its length and would pass the checks
    // below, and a wait on it would be one that no later munmap cancels. (A detached one has no words left:
    // a RangeError below, as the addon's; checkWord of @shmring/futex says ERR_SHMRING_CLOSED for both.)
    if (mapping !== undefined && mapping.state === 'released') {
      throw new ShmringError(
        ErrorCodes.CLOSED,
        'futex: the buffer was unmapped (its region was closed): keep the region open while its words are waited on or woken, ' +
          'or open it again and use a view of its new buffer',
      );
    }
    const offset = checkNumber(byteOffset, 'byteOffset');
    if (!(Number.isInteger(offset) && offset >= 0 && offset + 4 <= length && (start + offset) % 4 === 0)) {
      throw rangeError(`byteOffset=${offset} must be a multiple of 4 with byteOffset + 4 <= byteLength=${length}`);
    }
    const at = start + offset;
    const base = mapping ? mapping.address : this.baseAddress(owner);
    let i32 = this.int32Views.get(owner);
    if (!i32 || i32.length * 4 < at + 4) {
      i32 = new Int32Array(owner, 0, owner.byteLength >>> 2);
      this.int32Views.set(owner, i32);
    }
    return { owner, i32, index: at >>> 2, address: base + BigInt(at), mapping };
  }

  private baseAddress(owner: AnyBuffer): bigint {
    let base = this.baseAddresses.get(owner);
    if (base === undefined) {
      // ArrayBuffer backing stores are off-heap and never move; koffi reads a
      // SharedArrayBuffer's address only through a view of it.
      base = this.native.koffi.address(new Uint8Array(owner));
      this.baseAddresses.set(owner, base);
    }
    return base;
  }

  /** CLOCK_MONOTONIC now, in nanoseconds (the clock FUTEX_WAIT_BITSET deadlines use). */
  monotonicNs(): bigint {
    if (this.native.clock_gettime(CLOCK_MONOTONIC, this.clockScratch) < 0) throw this.sysError('clock_gettime', this.errno());
    return timespecNs(this.clockScratch);
  }

  /** The absolute CLOCK_MONOTONIC deadline `timeoutMs` from now, in ns; null when there is no timeout. */
  private deadlineAfter(timeoutMs: number): bigint | null {
    return timeoutMs === Infinity ? null : this.monotonicNs() + BigInt(Math.round(timeoutMs * 1e6));
  }

  /** One FUTEX_WAIT_BITSET through the variadic syscall; returns the raw result (-1 = see errno). */
  private futexWaitCall(address: bigint, expected: number, deadline: ArrayBuffer | null): number {
    return this.native.syscall(
      this.sysFutex,
      'uintptr_t',
      address,
      'long',
      FUTEX_WAIT_BITSET,
      'long',
      expected,
      'void *',
      deadline,
      'void *',
      null,
      'long',
      FUTEX_BITSET_MATCH_ANY,
    );
  }

  futexWait(buffer: AnyBuffer, byteOffset: number, expected: number, timeoutMs: number): WaitResult {
    const word = this.word(buffer, byteOffset);
    const value = checkExpected(expected);
    const timeout = checkTimeout(timeoutMs);
    if (timeout === 0) {
      // A wait that may not sleep answers from the word itself: a FUTEX_WAIT of an expired deadline would
      // sit in the word's queue for a moment, where a wake-one meant for a sleeper could pick it.
      return Atomics.load(word.i32, word.index) !== value ? 1 : 2;
    }
    const deadlineNs = this.deadlineAfter(timeout);
    const deadline = deadlineNs === null ? null : writeTimespec(this.syncDeadline, deadlineNs);
    for (;;) {
      if (this.futexWaitCall(word.address, value, deadline) >= 0) return 0;
      const errno = this.errno();
      if (errno === EAGAIN) return 1;
      if (errno === ETIMEDOUT) return 2;
      if (errno !== EINTR) throw this.sysError('futex', errno);
      // EINTR: wait again; the absolute deadline makes it the remaining time.
    }
  }

  /**
   * Whether the word still holds `expected` (0) or changed (1), after a
   * pool-thread wait returned. Read with an atomic load where the word's
   * view is live, which takes nothing from anyone. Only where the value is
   * still equal (or the view was detached by munmap, the memory still
   * mapped until the last pool thread returns) does it ask the kernel, on
   * this thread, with a FUTEX_WAIT whose deadline is long past: it fails
   * with EAGAIN (changed) or ETIMEDOUT (equal), and anything else is thrown
   * with its errno, which is how a failed pool-thread wait is diagnosed.
   * That probe sits in the word's wait queue for a moment, so a FUTEX_WAKE
   * of one (a publisher's unpark) can pick it instead of a sleeper: it then
   * passes that wake on, or the sleeper would sleep out its slice.
   */
  probeWord(word: Word, expected: number): 0 | 1 {
    if (word.index < word.i32.length) {
      // Observes the publisher's change of the word, which it makes before its FUTEX_WAKE.
      if (Atomics.load(word.i32, word.index) !== (expected | 0)) return 1;
    }
    for (;;) {
      if (this.futexWaitCall(word.address, expected, this.pastDeadline) >= 0) {
        this.wakeAddress(word.address, 1); // woken while queued: the wake was meant for a sleeper
        return 1; // and whoever woke it changed the word first
      }
      const errno = this.errno();
      if (errno === EAGAIN) return 1;
      if (errno === ETIMEDOUT) return 0;
      if (errno !== EINTR) throw this.sysError('futex', errno);
    }
  }

  membarrier(cmd: number): number {
    checkNumber(cmd, 'cmd'); // not a number: a TypeError, as the addon's
    if (!Number.isInteger(cmd) || cmd < 0 || cmd > 0x7fffffff) {
      throw rangeError(`cmd=${String(cmd)} must be a membarrier command (an integer >= 0)`);
    }
    const result: number = this.native.syscall(SYS_MEMBARRIER[process.arch]!, 'int', cmd, 'unsigned int', 0, 'int', 0);
    if (result < 0) throw this.sysError('membarrier', this.errno());
    return result;
  }

  /** FUTEX_WAKE (shared) at an address known to be a mapped, aligned word. */
  wakeAddress(address: bigint, count: number): number {
    const woken: number = this.native.syscall(this.sysFutex, 'uintptr_t', address, 'long', FUTEX_WAKE, 'long', count);
    if (woken < 0) throw this.sysError('futex', this.errno());
    return woken;
  }

  futexWake(buffer: AnyBuffer, byteOffset: number, count: number): number {
    const word = this.word(buffer, byteOffset);
    const n = count === undefined ? Infinity : checkNumber(count, 'count');
    if (Number.isNaN(n) || n < 1) return 0; // like Atomics.notify: nobody to wake, no system call
    return this.wakeAddress(word.address, n >= INT32_MAX ? INT32_MAX : Math.floor(n));
  }

  futexWaitAny(targets: ReadonlyArray<{ buffer: AnyBuffer; byteOffset: number; expected: number }>, timeoutMs: number): number {
    if (!Array.isArray(targets)) throw typeError(`targets must be an array (got ${typeof targets})`); // as the addon's
    if (targets.length === 0 || targets.length > FUTEX_WAITV_MAX) {
      throw rangeError(`targets.length=${targets.length} must be in [1, ${FUTEX_WAITV_MAX}]`);
    }
    const list = new ArrayBuffer(FUTEX_WAITV_SIZE * targets.length);
    const view = new DataView(list);
    const timeout = checkTimeout(timeoutMs);
    let differs = false;
    targets.forEach(({ buffer, byteOffset, expected }, i) => {
      const word = this.word(buffer, byteOffset);
      const value = checkExpected(expected);
      // Observes the word as a waiter's check does (a publisher changes it before its wake): timeout 0 answers from it.
      if (timeout === 0 && Atomics.load(word.i32, word.index) !== value) differs = true;
      view.setBigUint64(i * FUTEX_WAITV_SIZE, BigInt(value >>> 0), true);
      view.setBigUint64(i * FUTEX_WAITV_SIZE + 8, word.address, true);
      view.setUint32(i * FUTEX_WAITV_SIZE + 16, FUTEX2_SIZE_U32, true);
    });
    // A wait that may not sleep answers from the words, as futexWait and the addon do: futex_waitv with an
    // expired deadline would queue on every word for a moment, where a wake-one meant for a sleeper could land.
    if (timeout === 0) return differs ? -1 : -2;
    const deadlineNs = this.deadlineAfter(timeout);
    const deadline = deadlineNs === null ? null : writeTimespec(this.syncDeadline, deadlineNs);
    for (;;) {
      const index: number = this.native.syscall(
        SYS_FUTEX_WAITV,
        'void *',
        list,
        'long',
        targets.length,
        'long',
        0,
        'void *',
        deadline,
        'long',
        CLOCK_MONOTONIC,
      );
      if (index >= 0) return index;
      const errno = this.errno();
      if (errno === EAGAIN) return -1;
      if (errno === ETIMEDOUT) return -2;
      if (errno !== EINTR) throw this.sysError('futex_waitv', errno);
    }
  }

  /** Async waits run on libuv's threadpool here (see the module comment). */
  asyncWaitKind(): 'libuv-threadpool' {
    return 'libuv-threadpool';
  }

  /** `ref` (false: do not keep the loop alive) cannot be honoured here: a pool thread's pending work keeps the loop alive. */
  futexWaitAsync(buffer: AnyBuffer, byteOffset: number, expected: number, timeoutMs: number, ref?: boolean): AsyncWait {
    const word = this.word(buffer, byteOffset);
    const value = checkExpected(expected);
    const timeout = checkTimeout(timeoutMs);
    // Checked though unused, as the addon checks it: a caller's mistake shows on either backend.
    if (ref !== undefined && typeof ref !== 'boolean') throw typeError(`ref must be a boolean (got ${ref === null ? 'null' : typeof ref})`);
    // Observes the word as the kernel's first check would; settles at once, with no thread, if it differs.
    if (Atomics.load(word.i32, word.index) !== value) return settledWait(1);
    if (timeout === 0) return settledWait(2);
    const wait = new KoffiWait(this, word, value, this.deadlineAfter(timeout));
    this.hookExit();
    wait.start();
    return wait;
  }

  /** At exit, wakes every pending wait: libuv joins its pool threads, which must not be asleep. */
  private hookExit(): void {
    if (this.exitHooked) return;
    this.exitHooked = true;
    process.once('exit', () => {
      for (const wait of [...this.pendingWaits]) wait.cancel();
    });
  }

  /**
   * In a worker, at its first fd or mapping: an 'exit' listener that gives
   * back what the worker leaves open (releaseAtWorkerExit). A worker's
   * FinalizationRegistry callbacks never run once it ends, and its fds and
   * mappings would otherwise stay for the life of the process. The main
   * thread needs none: its process's end releases everything. worker.terminate()
   * does not emit 'exit' in the worker, so what a terminated worker leaves
   * stays (the addon closes it from its env cleanup hook; README).
   */
  private hookWorkerExit(): void {
    if (this.workerExitHooked || isMainThread) return;
    this.workerExitHooked = true;
    process.once('exit', () => this.releaseAtWorkerExit());
  }

  /**
   * The worker is ending (process.exit() in it, or its script returned):
   * cancels its pending waits, detaches and unmaps every mapping it still
   * has (a later 'exit' listener that touches one sees an empty view, as
   * after close(), instead of faulting), closes the fds those owned and
   * every loose fd. Closing an fd drops the OFD locks held through it, as
   * the worker's death should. Each fd is closed once: close() and mmap
   * took theirs out of looseFds, closeOwnedFd clears mapping.fd.
   */
  private releaseAtWorkerExit(): void {
    // What parked waits must still write to the memory (withdrawing their announcements) goes before it is
    // unmapped: unmap.ts's own 'exit' listener comes first, this makes sure (hooks taken on after it).
    runBeforeExit();
    for (const wait of [...this.pendingWaits]) wait.cancel();
    for (const mapping of [...this.liveMappings]) {
      try {
        if (mapping.state === 'mapped' || mapping.state === 'released') {
          const buffer = mapping.buffer.deref();
          if (buffer === undefined || this.detach) {
            // Collected (no view can read it any more), or detached now: safe to unmap.
            if (buffer !== undefined) this.detach!(buffer);
            mapping.state = 'detached';
            this.unmapAtGc.unregister(mapping);
          }
          // Else it cannot be detached: the memory stays mapped (as munmap leaves it then); its fd goes.
          // ('released': munmap ran without a detacher, so the buffer may be alive; unmapped if collected.)
        }
        this.unmapIfIdle(mapping); // not while a pool thread still waits on one of its words
      } catch {
        // The detacher failed: the memory stays mapped, as munmap leaves it then; an exit listener must not throw.
      }
      this.closeOwnedFd(mapping); // never throws
    }
    for (const fd of [...this.looseFds]) {
      try {
        this.close(fd);
      } catch {
        // EBADF: closed behind our back; nothing is left to release
      }
    }
  }

  // ---- fd passing ----

  /** CMSG_ALIGN: control messages are padded to the alignment of cmsghdr (size_t). */
  private cmsgAlign(n: number): number {
    return (n + 7) & ~7;
  }

  /** CMSG_SPACE(n): bytes one control message with n data bytes takes. */
  private cmsgSpace(n: number): number {
    return this.cmsgAlign(this.cmsgHeaderSize) + this.cmsgAlign(n);
  }

  /** CMSG_LEN(n): the cmsg_len of a control message with n data bytes. */
  private cmsgLen(n: number): number {
    return this.cmsgAlign(this.cmsgHeaderSize) + n;
  }

  /** Fills the msghdr: one payload byte, and `controlLength` bytes of control buffer. */
  private prepareMsg(controlLength: number): void {
    const { koffi, msghdr } = this.native;
    koffi.encode(this.msg, 0, msghdr, {
      msg_name: 0,
      msg_namelen: 0,
      msg_iov: koffi.address(this.iov),
      msg_iovlen: 1,
      msg_control: koffi.address(this.control),
      msg_controllen: controlLength,
      msg_flags: 0,
    });
  }

  sendFd(socketFd: number, fd: number): void {
    const sock = checkFd(socketFd, 'socketFd');
    const passed = checkFd(fd, 'fd');
    const { koffi, cmsghdr } = this.native;
    new Uint8Array(this.control).fill(0);
    new Uint8Array(this.payload)[0] = 0x46; // 'F': the one byte that carries the fd
    koffi.encode(this.control, 0, cmsghdr, { cmsg_len: this.cmsgLen(4), cmsg_level: SOL_SOCKET, cmsg_type: SCM_RIGHTS });
    new DataView(this.control).setInt32(this.cmsgAlign(this.cmsgHeaderSize), passed, true);
    this.prepareMsg(this.cmsgSpace(4));
    for (;;) {
      // Non-blocking, as the addon's (EAGAIN on a full socket buffer): a blocking socket must not hold the loop.
      if (this.native.sendmsg(sock, this.msg, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) return;
      const errno = this.errno();
      if (errno !== EINTR) throw this.sysError('sendmsg', errno);
    }
  }

  recvFd(socketFd: number): number {
    const sock = checkFd(socketFd, 'socketFd');
    this.prepareMsg(this.control.byteLength);
    let received: number;
    for (;;) {
      received = Number(this.native.recvmsg(sock, this.msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
      if (received >= 0) break;
      const errno = this.errno();
      if (errno === EAGAIN) return -1;
      if (errno !== EINTR) throw this.sysError('recvmsg', errno);
    }
    const fds = this.receivedFds();
    const [first, ...extra] = fds;
    for (const fd of extra) this.native.close(fd); // more fds than we asked for: do not leak them
    if (first !== undefined) return this.opened(first);
    const { msg_flags: flags } = this.native.koffi.decode(this.msg, 0, this.native.msghdr) as { msg_flags: number };
    if ((flags & MSG_CTRUNC) !== 0) return -4; // an fd the kernel could not install here (see NativeBackend.recvFd)
    return received === 0 ? -2 : -3;
  }

  /** The fds of the SCM_RIGHTS messages in the control buffer after recvmsg (CMSG_FIRSTHDR / NXTHDR). */
  private receivedFds(): number[] {
    const { koffi, msghdr, cmsghdr } = this.native;
    const header = koffi.decode(this.msg, 0, msghdr) as { msg_controllen: number | bigint };
    const controlLength = Math.min(Number(header.msg_controllen), this.control.byteLength);
    const data = new DataView(this.control);
    const fds: number[] = [];
    for (let at = 0; at + this.cmsgHeaderSize <= controlLength; ) {
      const cmsg = koffi.decode(this.control, at, cmsghdr) as { cmsg_len: number | bigint; cmsg_level: number; cmsg_type: number };
      const length = Number(cmsg.cmsg_len);
      if (length < this.cmsgHeaderSize || at + length > controlLength) break;
      if (cmsg.cmsg_level === SOL_SOCKET && cmsg.cmsg_type === SCM_RIGHTS) {
        const first = at + this.cmsgAlign(this.cmsgHeaderSize);
        for (let p = first; p + 4 <= at + length; p += 4) fds.push(data.getInt32(p, true));
      }
      at += this.cmsgAlign(length);
    }
    // With MSG_CTRUNC set, the kernel already closed the fds that did not fit.
    return fds;
  }
}

/** A wait that settled before any thread was involved. */
function settledWait(value: WaitResult): AsyncWait {
  return { promise: Promise.resolve(value), cancel: () => false }; // ended on its own
}

let instance: KoffiBackend | undefined;

/** koffi's own maximum of pending async calls (see koffi's doc/misc.md). */
const MAX_ASYNC_CALLS = 4096;
/** The limit of pending async calls in effect: MAX_ASYNC_CALLS, or koffi's own where it could not be raised. */
let asyncCallLimit = MAX_ASYNC_CALLS;

/**
 * The koffi backend of this thread. Loads koffi and libc on the first call;
 * throws if koffi cannot be loaded or the platform is not supported.
 */
export function koffiBackend(): NativeBackend {
  if (!instance) {
    const koffi = createRequire(import.meta.url)('koffi') as typeof Koffi;
    // Every pending async wait is one koffi async call; its default cap (256)
    // is below what a process with a few hundred channels or rings waits on.
    // koffi refuses a new config once any library is loaded through it (the application's own, say): the
    // backend then works within the limit in effect, rather than not at all.
    const config = koffi.config();
    asyncCallLimit = config.max_async_calls ?? 0;
    if (asyncCallLimit < MAX_ASYNC_CALLS) {
      try {
        koffi.config({ ...config, max_async_calls: MAX_ASYNC_CALLS });
        asyncCallLimit = MAX_ASYNC_CALLS;
      } catch {
        // the limit stays koffi's; a wait past it is ERR_SHMRING_TOO_MANY_WAITS, with that number
      }
    }
    instance = new KoffiBackend(bindLibc(koffi));
  }
  return instance;
}
