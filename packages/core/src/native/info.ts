import type { AsyncWait } from './backend.js';
import { backend } from './loader.js';

/** Which native backend this process uses: 'addon' (Rust) or 'koffi'. */
export function backendKind(): 'addon' | 'koffi' {
  return backend().kind;
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
  waitAsync(buffer: ArrayBuffer, byteOffset: number, expected: number, timeoutMs: number): AsyncWait {
    return backend().futexWaitAsync(buffer, byteOffset, expected, timeoutMs);
  },
};
