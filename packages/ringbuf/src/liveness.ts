/**
 * Is a process alive, and is it still the process that registered? A pid
 * alone is not enough: pids are reused. Each side records its pid and its
 * start time (clock ticks since boot, field 22 of /proc/<pid>/stat, low 32
 * bits); a peer is alive while a process with that pid exists and started
 * at that time.
 */
import * as fs from 'node:fs';
import { isMainThread, threadId } from 'node:worker_threads';
import { ownAttaches, readSegments } from './sysv-segments.js';

/**
 * Start time of `pid` (low 32 bits of its clock ticks since boot, as an
 * int32, as the rings record it), or GONE if no such process runs. A zombie (state Z, dead but not yet reaped by its
 * parent) or a dying process (X) counts as gone: it will never write again.
 * UNKNOWN_START where /proc cannot tell (EMFILE, ENFILE, EACCES, …, and a
 * missing entry where /proc may hide processes: procShowsAll): such a
 * process counts as alive, as threadGone's doubt does. Judged dead on a
 * failed read, a live peer was reported PEER_DEAD, had its role taken over,
 * or its MpmcQueue slot skipped, the moment this process ran out of fds.
 */
export function startTimeOf(pid: number): number {
  const known = memo?.get(pid);
  if (known !== undefined) return known;
  // Missing from a /proc that may hide it (hidepid, `ProtectProc=invisible`: another user's live process is
  // ENOENT there; or no /proc at all) is doubt, not death: judged dead, a live MpmcQueue producer had its slot
  // taken, a live LatestValue writer its role, and two wrote.
  const start = readStartTime(pid, `/proc/${pid}`, procShowsAll() ? GONE : UNKNOWN_START);
  memo?.set(pid, start);
  return start;
}

/** Start times read during the current onePass (pid → start time; -tid → a thread's of this process), or undefined outside one. */
let memo: Map<number, number> | undefined;

/**
 * Runs `checks` with startTimeOf memoized per pid (and a thread's per tid),
 * and with what seenHolding answers collected: the many liveness checks of
 * one pass (the watchdog's tick over every parked wait) read
 * /proc/<pid>/stat once per process, not once per wait, and ask a role lock
 * about once per registrant.
 */
export function onePass(checks: () => void): void {
  const outer = memo;
  const outerHeld = heldSeen;
  const outerAttached = attachedSeen;
  memo ??= new Map();
  heldSeen ??= new Set();
  attachedSeen ??= new Map();
  try {
    checks();
  } finally {
    memo = outer;
    heldSeen = outerHeld;
    attachedSeen = outerAttached;
  }
}

/** Whether a onePass is running: its memo makes a process's liveness one read of /proc per pass. */
export function inOnePass(): boolean {
  return memo !== undefined;
}

/** What othersAttached answered in the current onePass, by segment id; undefined outside one. */
let attachedSeen: Map<number, boolean> | undefined;

/**
 * Whether a process other than this one has System V segment `id`
 * attached: the segment's attach count (`nattch` in /proc/sysvipc/shm,
 * which the kernel keeps across PID namespaces, and which a process that
 * exits or dies leaves) beyond this process's own attaches (its mappings
 * of the segment that start at the segment's first byte, in
 * /proc/self/maps: every thread's). True if either cannot be read (out of
 * fds, say): doubt is "someone may be attached", never a death.
 * Memoized in a onePass.
 */
export function othersAttached(id: number, table?: string): boolean {
  const known = attachedSeen?.get(id);
  if (known !== undefined) return known;
  const segments = readSegments(table);
  const own = ownAttaches(id);
  const attached = segments?.find((segment) => segment.id === id)?.attached ?? 0;
  const others = segments === undefined || own === Infinity || attached - own > 0;
  attachedSeen?.set(id, others);
  return others;
}

/** Registrants (role, id and start-time words) whose role lock a check of the current onePass found held; undefined outside one. */
let heldSeen: Set<string> | undefined;

/**
 * Whether a check of the current onePass found the registrant named by
 * `key` (holdingKey: a role and the id and start-time words) holding that
 * role of another ring: the same process, unless another PID namespace
 * reused both the id and the start tick. Always false outside a pass.
 */
export function seenHolding(key: string): boolean {
  return heldSeen?.has(key) === true;
}

/** Records, for the rest of the current onePass, that the registrant named by `key` holds its role of a ring. */
export function noteHolding(key: string): void {
  heldSeen?.add(key);
}

/** The key of seenHolding and noteHolding for the registrant (`id`, `start`) of `role`. */
export function holdingKey(role: string, id: number, start: number): string {
  return `${role} ${id} ${start}`;
}

/**
 * The fields of `<dir>/stat` from field 3 (the state) on, or the error
 * code (ENOENT, …) if it cannot be read. The command name (field 2) may
 * hold spaces and parentheses: the fields resume after the last ')'.
 */
function statFields(dir: string): string[] | string {
  let stat: string;
  try {
    stat = fs.readFileSync(`${dir}/stat`, 'latin1');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'EIO';
  }
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** A state (stat field 3) of a task that will never run again: zombie, dead. */
function exited(state: string | undefined): boolean {
  return state === 'Z' || state === 'X' || state === 'x';
}

/**
 * What startTimeOf says of a process (thread) that is not running. Outside
 * the int32 range of start times, as UNKNOWN_START is: as -1 and -2 they
 * were the start times of processes whose low 32 bits of ticks happened to
 * be 0xffffffff or 0xfffffffe, judged gone (or unknown) by every check.
 */
export const GONE = 2 ** 32;

/** What readStartTime says of a process (thread) that /proc could not be asked about: alive, as far as anyone can tell. */
export const UNKNOWN_START = 2 ** 32 + 1;

/** The start time in `dir`/stat; `missing` (GONE) where that is ENOENT or ESRCH. */
export function readStartTime(pid: number, dir = `/proc/${pid}`, missing = GONE): number {
  const fields = statFields(dir);
  if (typeof fields === 'string') return fields === 'ENOENT' || fields === 'ESRCH' ? missing : UNKNOWN_START;
  if (exited(fields[0])) return GONE;
  const ticks = fields[19]; // field 22 of the whole line
  return ticks === undefined ? UNKNOWN_START : Number(BigInt(ticks) & 0xffffffffn) | 0;
}

let ownStart: number | undefined;

/**
 * This process's start time, as recorded in a ring; 0 (which the checks
 * read as "compare the pid only") if /proc cannot tell it now (not kept:
 * the next call asks again).
 */
export function ownStartTime(): number {
  ownStart ??= knownStart(startTimeOf(process.pid));
  return ownStart ?? 0;
}

/** A start time to record for ourselves: undefined for one /proc could not tell. */
function knownStart(start: number): number | undefined {
  return start === UNKNOWN_START || start === GONE ? undefined : start;
}

let ownPidNamespace: number | undefined;

/**
 * This process's PID namespace: the inode of /proc/self/ns/pid (the kernel
 * numbers namespaces below 2^32), or 0 where that cannot be read (no /proc).
 * Two processes whose numbers are equal and not 0 see the same pids and
 * thread ids. A process never changes its own PID namespace, so the answer
 * is cached (per thread: module state).
 */
export function pidNamespace(): number {
  if (ownPidNamespace === undefined) {
    try {
      const ino = fs.statSync('/proc/self/ns/pid').ino;
      ownPidNamespace = Number.isSafeInteger(ino) && ino > 0 && ino <= 0xffffffff ? ino : 0;
    } catch {
      ownPidNamespace = 0;
    }
  }
  return ownPidNamespace;
}

/**
 * Whether the mount at /proc, as /proc/self/mountinfo describes it, hides
 * other users' processes (`hidepid` other than 0 or off). Of several
 * mounts at /proc (a proc mounted over another: `unshare --mount-proc`) the
 * last one listed is the one /proc shows. No mount at /proc, or one that is
 * not proc, counts as hiding: nothing there can be gone by.
 */
export function hidesProcesses(mountinfo: string): boolean {
  let hides = true;
  for (const line of mountinfo.split('\n')) {
    // "<id> <parent> <dev> <root> <mount point> <options> [optional fields] - <type> <source> <super options>"
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    if (dash < 0 || fields[4] !== '/proc') continue;
    hides =
      fields[dash + 1] !== 'proc' ||
      (fields[dash + 3] ?? '')
        .split(',')
        .some((option) => option.startsWith('hidepid=') && option !== 'hidepid=0' && option !== 'hidepid=off');
  }
  return hides;
}

let procComplete: boolean | undefined;

/**
 * Whether /proc lists every process of this process's PID namespace: it is
 * that namespace's proc (its /proc/self is this process) and hides none
 * (hidesProcesses). Cached: neither changes under a running process.
 */
export function procShowsAll(): boolean {
  if (procComplete === undefined) {
    try {
      procComplete =
        fs.readlinkSync('/proc/self') === String(process.pid) && !hidesProcesses(fs.readFileSync('/proc/self/mountinfo', 'utf8'));
    } catch {
      procComplete = false;
    }
  }
  return procComplete;
}

/**
 * Whether thread `tid` of this PID namespace has certainly exited: /proc
 * lists every process here (procShowsAll) and /proc/<tid>/stat is missing
 * (ENOENT, ESRCH) or shows a zombie (Z, X, x). Any doubt (another error,
 * such as EMFILE or EACCES, or a /proc that may hide it) counts as alive:
 * an MpscRing consumer takes a claim back on this answer, and a live
 * claimer may commit with a plain store (mpsc.ts). Our own pid is alive;
 * an id <= 0 names no thread.
 */
export function threadGone(tid: number): boolean {
  if (tid <= 0) return true;
  // An id of ownThread's own (no /proc/thread-self to tell the tid): nothing says it is gone.
  if (tid === process.pid || tid >= UNNAMED_THREAD_BASE || !procShowsAll()) return false;
  const fields = statFields(`/proc/${tid}`);
  if (typeof fields === 'string') return fields === 'ENOENT' || fields === 'ESRCH';
  return exited(fields[0]);
}

let ownThreadId: { id: number; start: number } | undefined;

/** Where the ids of worker threads begin when /proc/thread-self cannot tell their tids (see ownThread). */
const UNNAMED_THREAD_BASE = 2 ** 30;

/**
 * This thread's id (its tid: Linux's threads share the pid number space,
 * and /proc/<tid>/stat describes the thread) and start time, for a role
 * taken on a SharedArrayBuffer ring: its sides are threads of one process,
 * and a worker that exits is a dead peer although its process lives on.
 * The main thread's tid is the pid. Read from /proc/thread-self (Linux
 * 3.17 and later); where that is missing, the process stands for the
 * thread. Module state is per thread, so each thread caches its own.
 */
export function ownThread(): { id: number; start: number } {
  if (ownThreadId !== undefined) return ownThreadId;
  let tid = 0;
  try {
    tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop());
  } catch {
    // no /proc/thread-self (no /proc, or a kernel before 3.17): below
  }
  if (!(Number.isSafeInteger(tid) && tid > 0)) {
    // The main thread is the pid; a worker gets an id of its own that no Linux thread has (their ids are below
    // 2^22), from its process's pid and its threadId, so that two threads never pass for one, of this process
    // or of another: with the pid for every thread, a worker took a role the main thread held (two producers on
    // one SpscRing). With no /proc to ask about it, every side counts it alive (isAlive, isThreadAlive,
    // threadGone). (A process running more than 256 workers at once may give two of them one id.)
    tid = isMainThread ? process.pid : UNNAMED_THREAD_BASE + (process.pid % 2 ** 22) * 2 ** 8 + (threadId % 2 ** 8);
  }
  const start = tid === process.pid ? ownStartTime() : (knownStart(threadStartTime(tid)) ?? 0);
  const own = { id: tid, start };
  // An unknown start (/proc unreadable now: EMFILE) is not kept: the next call asks again.
  if (start !== 0) ownThreadId = own;
  return own;
}

/**
 * Start time of thread `tid` of this process, or GONE if this process has no
 * such thread (or it is a zombie). Memoized in a onePass as startTimeOf
 * is, under -tid (ids are positive): a worker peer of a thousand rings is
 * read once a pass, not a thousand times.
 */
function threadStartTime(tid: number): number {
  if (!(Number.isInteger(tid) && tid > 0)) return GONE;
  const known = memo?.get(-tid);
  if (known !== undefined) return known;
  const start = readStartTime(tid, `/proc/self/task/${tid}`);
  memo?.set(-tid, start);
  return start;
}

/**
 * True if the thread of this process registered as (`tid`, `start`) still
 * runs (a ring in a SharedArrayBuffer: its sides can only be threads of
 * this process, so an id that names no thread of it is dead, whatever
 * process has that number). The main thread's id is the pid: alive.
 */
export function isThreadAlive(tid: number, start: number): boolean {
  if (tid === process.pid || tid >= UNNAMED_THREAD_BASE) return true; // the latter: see threadGone
  const now = threadStartTime(tid);
  if (now === GONE) return false;
  return start === 0 || now === start || now === UNKNOWN_START;
}

/**
 * True if the process registered as (`pid`, `start`) still runs. pid 0 means
 * nobody registered yet, which counts as alive (the peer may come). Our own
 * pid with another start time is a process that had our pid before us (a
 * container restarted as pid 1): dead.
 */
export function isAlive(pid: number, start: number): boolean {
  if (pid === 0) return true;
  if (pid === process.pid) {
    // Our own start time unknown (/proc unreadable now: EMFILE): doubt, so alive, not another process of our pid.
    const own = ownStartTime();
    return start === 0 || own === 0 || start === own;
  }
  if (pid < 0) return false;
  if (pid >= UNNAMED_THREAD_BASE) return true; // a worker without /proc/thread-self (ownThread): nothing says it is gone
  const now = startTimeOf(pid);
  if (now === GONE) return false;
  return start === 0 || now === start || now === UNKNOWN_START;
}

/**
 * Whether the registrant in a role's pid words lives: a process or thread
 * of this PID namespace (its id and start time, /proc/<id>); in a
 * SharedArrayBuffer ring (`threads`), a thread of this process. One caught
 * registering (its id negated, start time not yet stored) is alive while
 * that id is.
 */
export function registrantAlive(pid: number, start: number, threads: boolean): boolean {
  if (threads) return pid < 0 ? isThreadAlive(-pid, 0) : isThreadAlive(pid, start);
  return pid < 0 ? isAlive(-pid, 0) : isAlive(pid, start);
}

/**
 * Who registers in a role's or a slot's pid words: this process, or in a
 * SharedArrayBuffer (`threads`: sides that are threads of this process)
 * this thread, so that a worker that ends is a dead registrant.
 */
export function registrant(threads: boolean): { id: number; start: number } {
  return threads ? ownThread() : { id: process.pid, start: ownStartTime() };
}

/** A registrant as an id word and its start-time word name it (docs/LAYOUT.md, "Liveness"); id 0 is none. */
export interface Registrant {
  readonly id: number;
  readonly start: number;
}

/**
 * Registers `who` in an id word and its start-time word where no lock can
 * be taken (docs/LAYOUT.md, "Liveness": System V segments, and the roles of
 * rings in a SharedArrayBuffer): a CAS of the id word from what was seen to
 * -id (registering: the start time is not stored yet), then the start
 * time, then the id. `refuse(holder, start)` judges what the words name (0
 * free; -id a registrant caught half-way) and returns the error to throw
 * when the role is held, undefined to take it; `wait(holder)`, if given,
 * says to look again instead (a registrant a few instructions from done).
 * Returns the registrant the registration replaced (id 0: none).
 *
 * The start time is read again after `refuse` (which reads /proc) and
 * before the CAS: a registrant that took the word meanwhile stored its
 * start time before its id, and if its id is the holder's (a recycled id),
 * the word reads the same and only the start time tells. What remains is a
 * registrant that stores both words between that load and the CAS
 * (adjacent instructions, no system call between); closing it would need
 * one CAS over both words, which are not adjacent in the layout.
 */
export function registerInWord(
  ctl: Int32Array,
  idIndex: number,
  startIndex: number,
  who: Registrant,
  refuse: (holder: number, start: number) => Error | undefined,
  wait?: (holder: number) => boolean,
): Registrant {
  for (;;) {
    // Observes the registration in the word: 0 free, -id being registered, else an id whose start time was stored before it.
    const holder = Atomics.load(ctl, idIndex);
    // Observes the holder's start time (stored before its id; a -id holder is judged by its id alone).
    const start = Atomics.load(ctl, startIndex);
    if (wait?.(holder)) continue;
    const refused = refuse(holder, start);
    if (refused !== undefined) throw refused;
    // Observes the start time again, after refuse() read /proc (see above): a successor's start store.
    if (Atomics.load(ctl, startIndex) !== start) continue;
    // Claims the word; a registrant that moved first makes the CAS fail, and the words are looked at again.
    if (Atomics.compareExchange(ctl, idIndex, holder, -who.id) !== holder) continue;
    // Our start time, while the word reads -id: nobody pairs it with our id before the store below.
    Atomics.store(ctl, startIndex, who.start);
    // Publishes the registration: whoever reads this id reads its start time (stored before).
    Atomics.store(ctl, idIndex, who.id);
    return { id: holder, start };
  }
}
