/**
 * Chooses the native backend: the Rust addon (@shmring/shm-sys: a build in
 * the workspace, or the prebuilt platform package an install brings) when it
 * loads, else koffi. `SHMRING_BACKEND=koffi` (or `=addon`) forces one.
 * The choice is made once, lazily, at the first system call.
 *
 * koffi is an optional peer dependency, not a dependency: it weighs about
 * 28 MB (prebuilt binaries for every platform), and npm would install it
 * everywhere, also where the prebuilt addon fits. Where no addon loads, the
 * error asks for it (docs/INSTALL.md).
 */
import { createRequire } from 'node:module';
import { ErrorCodes, ShmringError } from '../errors.js';
import type { NativeBackend } from './backend.js';
import { koffiBackend } from './koffi.js'; // loads koffi itself only when called

const require = createRequire(import.meta.url);
let current: NativeBackend | undefined;
const loaded = new Map<string, NativeBackend>();

export type BackendKind = NativeBackend['kind'];

/** What makes each backend loadable, for the error that says it is not (@shmring/shm-sys's own error says it for the addon). */
const HOW_TO_GET: Record<BackendKind, string> = {
  addon: '',
  koffi: '; install koffi next to @shmring/core (`npm install koffi`), the fallback where no prebuilt addon fits',
};

/** Loads one backend by kind; throws ERR_SHMRING_NO_BACKEND with the reason when it cannot. */
export function loadBackend(kind: BackendKind): NativeBackend {
  const cached = loaded.get(kind);
  if (cached) return cached;
  let backend: NativeBackend;
  try {
    backend = kind === 'addon' ? (require('@shmring/shm-sys') as NativeBackend) : koffiBackend();
  } catch (cause) {
    throw new ShmringError(
      ErrorCodes.NO_BACKEND,
      `the ${kind} backend could not be loaded (${String((cause as Error).message).split('\n')[0]})${HOW_TO_GET[kind]}`,
      { cause },
    );
  }
  loaded.set(kind, backend);
  return backend;
}

/** Which backends can be loaded in this process (for tests and diagnostics). */
export function availableBackends(): BackendKind[] {
  const kinds: BackendKind[] = [];
  for (const kind of ['addon', 'koffi'] as const) {
    try {
      loadBackend(kind);
      kinds.push(kind);
    } catch {
      // not available here
    }
  }
  return kinds;
}

/** What SHMRING_ASYNC_WAIT may say (the addon's ways to wait; koffi has one, and ignores it). */
const ASYNC_WAYS = ['', 'auto', 'io_uring', 'futex_waitv', 'threads'];

/** The backend in use: SHMRING_BACKEND if set, else the addon, else koffi; SHMRING_ASYNC_WAIT checked first. */
export function backend(): NativeBackend {
  if (current) return current;
  const way = process.env.SHMRING_ASYNC_WAIT;
  // The addon reads it at the first async wait; a misspelt value is said here, as SHMRING_BACKEND's is, for either backend.
  if (way !== undefined && !ASYNC_WAYS.includes(way)) {
    throw new ShmringError(
      ErrorCodes.NO_BACKEND,
      `SHMRING_ASYNC_WAIT=${way} is not a way to wait; use io_uring, futex_waitv, threads or auto (or unset it)`,
    );
  }
  const forced = process.env.SHMRING_BACKEND;
  if (forced === 'addon' || forced === 'koffi') {
    current = loadBackend(forced);
  } else if (forced !== undefined && forced !== '') {
    throw new ShmringError(ErrorCodes.NO_BACKEND, `SHMRING_BACKEND=${forced} is not a backend; use 'addon' or 'koffi'`);
  } else {
    try {
      current = loadBackend('addon');
    } catch (addonError) {
      try {
        current = loadBackend('koffi');
      } catch (koffiError) {
        throw new ShmringError(
          ErrorCodes.NO_BACKEND,
          `no native backend loads: ${(addonError as Error).message}; and ${(koffiError as Error).message}`,
          { cause: koffiError },
        );
      }
    }
  }
  return current;
}

/** Switches the backend of this process (tests run the core suite against each). */
export function useBackend(kind: BackendKind): void {
  current = loadBackend(kind);
}
