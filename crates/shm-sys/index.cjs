'use strict';
/**
 * @shmring/shm-sys: loads the native addon built by `napi build --platform
 * --release` and exports it as the `NativeBackend` of @shmring/core
 * (packages/core/src/native/backend.ts). Thin on purpose: it only
 *  - picks the binary for this platform: a local build, else the platform
 *    package `@shmring/shm-sys-<target>`,
 *  - turns a SharedArrayBuffer into a Uint8Array over it for the futex calls
 *    (Node 20's napi_get_arraybuffer_info rejects SharedArrayBuffers),
 *  - builds the `{ promise, cancel }` handle of futexWaitAsync (and
 *    futexWaitAnyAsync) around the native futexWaitStart (futexWaitAnyStart)
 *    / futexWaitCancel pair.
 */

/**
 * Prebuilt targets by `${process.platform}-${process.arch}-${libc}`: each is
 * the file `shm-sys.<target>.node`, shipped in the platform package
 * `@shmring/shm-sys-<target>` (an optional dependency that npm installs only
 * where its os / cpu / libc fields match).
 */
const TARGETS = ['linux-x64-gnu'];

/**
 * 'gnu' or 'musl' on Linux, as napi-rs's loaders tell them: ldd (a script
 * that names its C library), else glibc's version in the process report
 * (which costs a few ms, so it comes second).
 */
function libc() {
  if (process.platform !== 'linux') return '';
  try {
    const ldd = require('node:fs').readFileSync('/usr/bin/ldd', 'utf8');
    if (ldd.includes('musl')) return 'musl';
    if (ldd.includes('GNU C Library')) return 'gnu';
  } catch {
    // no ldd: ask the report
  }
  const header = process.report?.getReport?.().header;
  return header?.glibcVersionRuntime ? 'gnu' : 'musl';
}

/**
 * The addon for this platform: first a build in this directory (`napi build
 * --platform` in the workspace), then the installed platform package. The
 * error names every place looked at and why each failed.
 */
function loadNative() {
  const target = [process.platform, process.arch, libc()].filter(Boolean).join('-');
  if (!TARGETS.includes(target)) {
    throw new Error(`@shmring/shm-sys has no prebuilt addon for ${target} (prebuilt: ${TARGETS.join(', ')})`);
  }
  const candidates = [`./shm-sys.${target}.node`, `@shmring/shm-sys-${target}`];
  const failures = [];
  // An addon that is there but does not load (an older glibc than it was built against: 2.34) is not
  // fixed by installing it again.
  let foundButFailed = false;
  for (const candidate of candidates) {
    try {
      return require(candidate);
    } catch (cause) {
      failures.push(`${candidate}: ${firstLine(cause)}`);
      if (cause?.code !== 'MODULE_NOT_FOUND') foundButFailed = true;
    }
  }
  throw new Error(
    `@shmring/shm-sys found no addon for ${target} (${failures.join('; ')}); ` +
      (foundButFailed
        ? 'the prebuilt addon is installed but does not load here (it needs glibc 2.34 or later): use koffi instead (npm install koffi), or build the addon with cargo'
        : `install @shmring/shm-sys-${target} (the prebuilt addon, an optional dependency of @shmring/shm-sys), ` +
          'or build it with cargo (`pnpm build` in the shmring workspace)'),
  );
}

function firstLine(error) {
  return String(error ? error.message : error).split('\n')[0];
}

const native = loadNative();
// How this thread's async waits wait, as its own environment says (a worker may be given one of its
// own): handed over here rather than read by the addon, whose getenv would race a setenv of the main thread.
native.chooseAsyncWait(process.env.SHMRING_ASYNC_WAIT ?? '');

const { isSharedArrayBuffer } = require('node:util').types;

/** One Uint8Array per SharedArrayBuffer, so the futex calls allocate nothing. */
const sabViews = new WeakMap();

/** What the native futex calls accept: an ArrayBuffer or a view. */
function futexTarget(buffer) {
  // Asked of V8, not with instanceof: a SharedArrayBuffer of another realm (a vm context) is one too.
  if (isSharedArrayBuffer(buffer)) {
    let view = sabViews.get(buffer);
    if (view === undefined) {
      view = new Uint8Array(buffer);
      sabViews.set(buffer, view);
    }
    return view;
  }
  return buffer; // ArrayBuffer, or something the native call rejects with TypeError
}

/** Ids of pending async waits, unique within this thread's copy of the addon. */
let lastWaitId = 0;

/**
 * The handle of one native async wait: its promise, and cancel() through
 * its id. A class, so that the method is shared: an object literal with a
 * method would make a function per wait (each parked read or write).
 */
class NativeWait {
  constructor(promise, id) {
    this.promise = promise;
    this.id = id;
    /** What the first cancel() found (undefined: not cancelled yet). */
    this.stopped = undefined;
  }

  cancel() {
    this.stopped ??= native.futexWaitCancel(this.id);
    return this.stopped;
  }
}

/** @type {import('./index').NativeBackend} */
const backend = Object.freeze({
  kind: 'addon',
  memfdCreate: native.memfdCreate,
  shmOpen: native.shmOpen,
  shmUnlink: native.shmUnlink,
  open: native.open,
  dup: native.dup,
  close: native.close,
  ofdLock(fd, start, type) {
    return native.ofdLock(fd, start, type) === 1;
  },
  ofdTest: native.ofdTest,
  mmap: native.mmap,
  munmap: native.munmap,
  addSeals: native.addSeals,
  getSeals: native.getSeals,
  populate: native.populate,
  allocate: native.allocate,
  shmGet: native.shmGet,
  shmAttach: native.shmAttach,
  shmRemove: native.shmRemove,
  futexWait(buffer, byteOffset, expected, timeoutMs) {
    return native.futexWait(futexTarget(buffer), byteOffset, expected, timeoutMs);
  },
  futexWake(buffer, byteOffset, count) {
    return native.futexWake(futexTarget(buffer), byteOffset, count);
  },
  futexWaitAny(targets, timeoutMs) {
    const list = [];
    for (const { buffer, byteOffset, expected } of targets) list.push(futexTarget(buffer), byteOffset, expected);
    return native.futexWaitAny(list, timeoutMs);
  },
  membarrier: native.membarrier,
  asyncWaitKind() {
    return native.asyncWaitKind();
  },
  futexWaitAsync(buffer, byteOffset, expected, timeoutMs, ref = true) {
    const id = ++lastWaitId;
    return new NativeWait(native.futexWaitStart(futexTarget(buffer), byteOffset, expected, timeoutMs, id, ref), id);
  },
  // Optional in the interface: absent from a build that predates it (callers then wait word by word).
  futexWaitAnyAsync:
    native.futexWaitAnyStart === undefined
      ? undefined
      : (targets, timeoutMs, ref = true) => {
          // A fresh list: the native wait holds it (and through it the buffers) while it pends.
          const list = [];
          for (const { buffer, byteOffset, expected } of targets) list.push(futexTarget(buffer), byteOffset, expected);
          const id = ++lastWaitId;
          return new NativeWait(native.futexWaitAnyStart(list, timeoutMs, id, ref), id);
        },
  sendFd: native.sendFd,
  recvFd: native.recvFd,
});

module.exports = backend;
