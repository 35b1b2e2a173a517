export { Region } from './region.js';
export type { Backing, CreateOptions, OpenOptions, FromFdOptions, SnapshotOptions } from './region.js';
export { sendRegion, receiveRegion } from './transfer.js';
export type { ReceiveOptions } from './transfer.js';
export { ErrorCodes, ShmringError, ShmringRangeError, ShmringTypeError, abortError, checkInteger } from './errors.js';
export type { ErrorCode } from './errors.js';
export { asyncWaitKind, backendKind, nativeFutex } from './native/info.js';
export type { AsyncWait, AsyncWaitKind } from './native/backend.js';
export { FileLocks, heldByAnyone } from './locks.js';
