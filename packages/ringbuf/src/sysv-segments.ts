/**
 * The System V shared memory segments of this IPC namespace, as the
 * kernel lists them (/proc/sysvipc/shm), and this process's own attaches
 * of one (/proc/self/maps): what inspect lists and judges stale, and what
 * a ring without locks in a segment asks about other processes
 * (liveness.ts, othersAttached).
 */
import * as fs from 'node:fs';
import * as util from 'node:util';
import { readSegments, type Segment, ShmringError } from '@shmring/core';

export { readSegments, type Segment };

/**
 * The System V shared memory segments of this IPC namespace (/proc/sysvipc/shm), keys unsigned: what a
 * listing goes by. A table that exists and cannot be read (EMFILE, ENFILE, EACCES, …) throws, typed (its
 * errno name as `code`): read as no segments, it would make a listing report no rings where it looked at
 * none. No table at all (no System V IPC in this kernel) is no segments.
 */
export function sysvSegments(table = '/proc/sysvipc/shm'): Segment[] {
  let failure: NodeJS.ErrnoException | undefined;
  const segments = readSegments(table, (err) => {
    failure = err;
  });
  if (segments !== undefined) return segments;
  throw unreadableTable(table, failure);
}

/** The typed error of a segment table that cannot be read: names the table, the errno and what to do. */
function unreadableTable(table: string, err: NodeJS.ErrnoException | undefined): ShmringError {
  const code = err?.code ?? 'EIO';
  const why = err?.errno === undefined ? code : (util.getSystemErrorMap().get(-Math.abs(err.errno))?.[1] ?? code);
  const hint =
    code === 'EMFILE' || code === 'ENFILE'
      ? 'this process (or the system) is out of file descriptors: close some, or raise the limit (ulimit -n), and run it again'
      : code === 'EACCES' || code === 'EPERM'
        ? 'this user may not read it (a hardened /proc, a security module): run it as a user who may'
        : 'run it again, or list the segments with ipcs -m';
  const error = new ShmringError(
    code,
    `listing System V segments: ${table} could not be read: ${why} (${code}), so which segments exist is unknown; ${hint}`,
    { cause: err },
  );
  return Object.assign(error, {
    path: table,
    ...(err?.errno === undefined ? {} : { errno: Math.abs(err.errno) }),
    ...(err?.syscall === undefined ? {} : { syscall: err.syscall }),
  });
}

/**
 * This process's attaches of segment `id` (every thread's): its mappings
 * of it that start at the segment's first byte in /proc/self/maps (a
 * mapping split in two counts once), Infinity if the file cannot be read.
 */
export function ownAttaches(id: number): number {
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/maps', 'latin1');
  } catch {
    return Infinity;
  }
  let count = 0;
  for (const line of text.split('\n')) {
    // address perms offset dev inode path: a System V mapping's inode is the segment's id, its path /SYSV<key>.
    const [, , offset, , inode, path] = line.split(/\s+/);
    if (path?.startsWith('/SYSV') && Number(inode) === id && Number.parseInt(offset ?? '', 16) === 0) count++;
  }
  return count;
}
