export { Region } from './region.js';
export type { Backing, CreateOptions, OpenOptions, FromFdOptions, SnapshotOptions } from './region.js';
export { sendRegion, receiveRegion } from './transfer.js';
export type { ReceiveOptions } from './transfer.js';
export { unwatchAbort, watchAbort } from './abort.js';
export {
  ErrorCodes,
  ShmringError,
  ShmringRangeError,
  ShmringTypeError,
  abortError,
  checkBoolean,
  checkInteger,
  checkOptionNames,
  fileKind,
  shown,
} from './errors.js';
export type { ErrorCode } from './errors.js';
export { asyncWaitKind, backendKind, MAX_WAIT_ANY_ASYNC, nativeFutex } from './native/info.js';
export { membarrier } from './native/membarrier.js';
export type { AsyncWait, AsyncWaitKind } from './native/backend.js';
export {
  FileLocks,
  heldByAnyone,
  heldExclusively,
  lockFileByte,
  NAME_LOCK_BYTE,
  namesObject,
  retryFor,
  SIZING_LOCK_BYTE,
} from './locks.js';
export { readSegments } from './segments.js';
export type { Segment } from './segments.js';
export { clearTimer, LongTimeout, MAX_TIMER_MS, startTimer } from './timers.js';
export { beforeUnmap } from './unmap.js';
export type { UnmapHook } from './unmap.js';
export type { Timer } from './timers.js';
