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
  return backend().asyncWaitKind();
}

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
    return backend().futexWaitAny(targets, timeoutMs);
  },
  /** `ref` false: the pending wait does not keep the event loop alive (not on the koffi backend). */
  waitAsync(buffer: ArrayBuffer, byteOffset: number, expected: number, timeoutMs: number, ref = true): AsyncWait {
    return backend().futexWaitAsync(buffer, byteOffset, expected, timeoutMs, ref);
  },
};
