/**
 * Chooses the native backend: the Rust addon (@shmring/shm-sys) when it is
 * built, else koffi. `SHMRING_BACKEND=koffi` (or `=addon`) forces one.
 * The choice is made once, lazily, at the first system call.
 */
import { createRequire } from 'node:module';
import { ErrorCodes, ShmringError } from '../errors.js';
import type { NativeBackend } from './backend.js';
import { koffiBackend } from './koffi.js'; // loads koffi itself only when called

const require = createRequire(import.meta.url);
let current: NativeBackend | undefined;
const loaded = new Map<string, NativeBackend>();

export type BackendKind = NativeBackend['kind'];

/** Loads one backend by kind; throws ERR_SHMRING_NO_BACKEND with the reason when it cannot. */
export function loadBackend(kind: BackendKind): NativeBackend {
  const cached = loaded.get(kind);
  if (cached) return cached;
  let backend: NativeBackend;
  try {
    backend = kind === 'addon'
      ? (require('@shmring/shm-sys') as NativeBackend)
      : koffiBackend();
  } catch (cause) {
    throw new ShmringError(
      ErrorCodes.NO_BACKEND,
      `the ${kind} backend could not be loaded (${(cause as Error).message}); ` +
        (kind === 'addon' ? 'build it with `pnpm build` (needs cargo)' : 'reinstall koffi with `pnpm install`'),
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

/** The backend in use: SHMRING_BACKEND if set, else the addon, else koffi. */
export function backend(): NativeBackend {
  if (current) return current;
  const forced = process.env.SHMRING_BACKEND;
  if (forced === 'addon' || forced === 'koffi') {
    current = loadBackend(forced);
  } else if (forced !== undefined && forced !== '') {
    throw new ShmringError(ErrorCodes.NO_BACKEND, `SHMRING_BACKEND=${forced} is not a backend; use 'addon' or 'koffi'`);
  } else {
    try {
      current = loadBackend('addon');
    } catch {
      current = loadBackend('koffi');
    }
  }
  return current;
}

/** Switches the backend of this process (tests run the core suite against each). */
export function useBackend(kind: BackendKind): void {
  current = loadBackend(kind);
}
