export { SpscRing } from './spsc.js';
export type { SpscOptions, AttachOptions, DrainHandler } from './spsc.js';
export { MpmcQueue } from './mpmc.js';
export type { MpmcOptions } from './mpmc.js';
export type { WaitOptions, WriteOptions } from './queue.js';
export { setDefaultPoll, getDefaultPoll, DEFAULT_POLL_MICROS } from './pacing.js';
export { inspect, listRings, unlinkStale, describeRing, isStale } from './inspect.js';
export type { RingInfo, ProcessInfo } from './inspect.js';
export { select, selectSync, type SelectEntry, type SelectOptions, type SelectPeerDeadError } from './select.js';
