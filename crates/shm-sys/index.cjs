'use strict';
/**
 * @shmring/shm-sys: loads the native addon built by `napi build --platform
 * --release` and exports it as the `NativeBackend` of @shmring/core
 * (packages/core/src/native/backend.ts). Thin on purpose: it only
 *  - picks the binary for this platform,
 *  - turns a SharedArrayBuffer into a Uint8Array over it for the futex calls
 *    (Node 20's napi_get_arraybuffer_info rejects SharedArrayBuffers),
 *  - builds the `{ promise, cancel }` handle of futexWaitAsync around the
 *    native futexWaitStart / futexWaitCancel pair.
 */

/** Binaries by `${process.platform}-${process.arch}`. */
const BINARIES = {
  'linux-x64': 'shm-sys.linux-x64-gnu.node',
};

function loadNative() {
  const key = `${process.platform}-${process.arch}`;
  const file = BINARIES[key];
  if (file === undefined) {
    throw new Error(
      `@shmring/shm-sys has no native binary for ${key} (supported: ${Object.keys(BINARIES).join(', ')})`,
    );
  }
  try {
    return require(`./${file}`);
  } catch (cause) {
    throw new Error(
      `@shmring/shm-sys could not load ./${file} (${cause && cause.message}); ` +
        'build it with `npx napi build --platform --release` in crates/shm-sys',
      { cause },
    );
  }
}

const native = loadNative();

/** One Uint8Array per SharedArrayBuffer, so the futex calls allocate nothing. */
const sabViews = new WeakMap();

/** What the native futex calls accept: an ArrayBuffer or a view. */
function futexTarget(buffer) {
  if (buffer instanceof SharedArrayBuffer) {
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
  asyncWaitKind() {
    return native.asyncWaitKind();
  },
  futexWaitAsync(buffer, byteOffset, expected, timeoutMs) {
    const id = ++lastWaitId;
    const promise = native.futexWaitStart(futexTarget(buffer), byteOffset, expected, timeoutMs, id);
    return {
      promise,
      cancel() {
        native.futexWaitCancel(id);
      },
    };
  },
  sendFd: native.sendFd,
  recvFd: native.recvFd,
});

module.exports = backend;
