/**
 * The System V shared memory segments of this IPC namespace, as the kernel
 * lists them in /proc/sysvipc/shm (every owner's, every PID namespace's):
 * what Region asks before it attaches or removes a segment, and what
 * ringbuf's inspect lists. The one parser of that table.
 */
import * as fs from 'node:fs';

/** One row of /proc/sysvipc/shm: what listing and staleness need. */
export interface Segment {
  key: number;
  id: number;
  size: number;
  /** How many attaches the segment has now (shm_nattch), every process's and every PID namespace's. */
  attached: number;
}

/**
 * The rows of the segment table (keys unsigned), or undefined where the
 * table exists and cannot be read (EMFILE, ENFILE, EACCES, …; `onFailure`
 * hears why): nothing can be said of any segment then. No table at all
 * (ENOENT: no System V IPC in this kernel) is no segments.
 */
export function readSegments(table = '/proc/sysvipc/shm', onFailure?: (err: NodeJS.ErrnoException) => void): Segment[] | undefined {
  let text: string;
  try {
    text = fs.readFileSync(table, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    onFailure?.(err as NodeJS.ErrnoException);
    return undefined;
  }
  const [header, ...rows] = text.trim().split('\n');
  const columns = header?.trim().split(/\s+/) ?? [];
  const at = (name: string) => columns.indexOf(name);
  const [keyAt, idAt, sizeAt, attachedAt] = [at('key'), at('shmid'), at('size'), at('nattch')];
  if (keyAt < 0 || idAt < 0 || sizeAt < 0 || attachedAt < 0) return [];
  return rows
    .map((row) => row.trim().split(/\s+/))
    .map((cells) => ({
      key: Number(cells[keyAt]) >>> 0,
      id: Number(cells[idAt]),
      size: Number(cells[sizeAt]),
      attached: Number(cells[attachedAt]),
    }));
}
