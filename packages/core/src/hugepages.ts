/**
 * Huge pages for regions (`hugePages: true`): how big a huge page is, how
 * many the kernel holds, and the typed error when a region cannot get them.
 *
 * Huge pages come from a pool the administrator reserves (vm.nr_hugepages).
 * A region takes its pages from it when it is mapped (memfd with
 * MFD_HUGETLB: at mmap) or created (System V with SHM_HUGETLB: at shmget),
 * and the creator then faults every page in with MADV_POPULATE_WRITE, which
 * fails with an error where a first touch would raise SIGBUS (a hugetlb
 * cgroup limit, a NUMA policy the reservation did not see). So a region
 * either has all its pages when Region.create returns, or Region.create
 * throws ERR_SHMRING_NO_HUGE_PAGES; it never SIGBUSes later.
 */
import * as fs from 'node:fs';
import { ErrorCodes, ShmringError } from './errors.js';

/** What /proc/meminfo says about the default huge page size's pool. */
export interface HugePagePool {
  /** Bytes per huge page (Hugepagesize), e.g. 2 MiB on x86_64. */
  pageSize: number;
  /** HugePages_Total: pages in the pool (vm.nr_hugepages, plus surplus ones). */
  total: number;
  /** HugePages_Free: pages not faulted in by anyone. */
  free: number;
  /** HugePages_Rsvd: free pages already promised to a mapping or segment. */
  reserved: number;
}

/** The default huge page pool, or undefined where the kernel has no huge pages (no Hugepagesize line). */
export function hugePagePool(meminfo = '/proc/meminfo'): HugePagePool | undefined {
  let text: string;
  try {
    text = fs.readFileSync(meminfo, 'utf8');
  } catch {
    return undefined;
  }
  const field = (name: string): number | undefined => {
    const match = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text);
    return match ? Number(match[1]) : undefined;
  };
  const kB = field('Hugepagesize');
  if (kB === undefined || kB === 0) return undefined;
  return {
    pageSize: kB * 1024,
    total: field('HugePages_Total') ?? 0,
    free: field('HugePages_Free') ?? 0,
    reserved: field('HugePages_Rsvd') ?? 0,
  };
}

/** `size` rounded up to a whole number of huge pages of `pool`. */
export function roundToHugePages(size: number, pool: HugePagePool): number {
  return Math.ceil(size / pool.pageSize) * pool.pageSize;
}

/**
 * True when `err` (from creating, mapping or populating a huge-page region)
 * means the pool could not provide the pages: ENOMEM / ENOSPC from mmap,
 * ENOMEM from shmget or madvise, EFAULT from madvise (a fault that would
 * SIGBUS), ENOENT from memfd_create (no hugetlbfs for the default size).
 * ENOSPC from shmget is the segment limits (kernel.shmmni, shmall), not
 * the pool: it keeps its own error and hint.
 */
export function isHugePageShortage(err: unknown): boolean {
  const { code, syscall } = (err ?? {}) as { code?: unknown; syscall?: unknown };
  if (syscall === 'memfd_create') return code === 'ENOENT';
  if (syscall === 'madvise') return code === 'ENOMEM' || code === 'EFAULT';
  if (syscall === 'shmget') return code === 'ENOMEM';
  return syscall === 'mmap' && (code === 'ENOMEM' || code === 'ENOSPC');
}

/**
 * ERR_SHMRING_NO_HUGE_PAGES for `operation` on `object` that needed `size`
 * bytes of huge pages: what the pool holds and the command that reserves
 * enough. Keeps the system call's errno and syscall, and `cause`.
 */
export function noHugePages(
  operation: string,
  object: string,
  size: number,
  pool: HugePagePool | undefined,
  cause?: unknown,
): ShmringError {
  let message: string;
  if (pool === undefined) {
    message =
      `${operation} ${object} with hugePages: this kernel offers no huge pages (no Hugepagesize in /proc/meminfo); ` +
      'create the region without hugePages';
  } else {
    const needed = Math.ceil(size / pool.pageSize);
    const available = Math.max(pool.free - pool.reserved, 0);
    const enough = pool.total + Math.max(needed - available, 1);
    message =
      `${operation} ${object} with hugePages: not enough huge pages: it needs ${needed} huge pages of ${pool.pageSize / 1024} kB ` +
      `and ${available} are available (HugePages_Total ${pool.total}, HugePages_Free ${pool.free}, HugePages_Rsvd ${pool.reserved} ` +
      `in /proc/meminfo); reserve more as root with \`sysctl -w vm.nr_hugepages=${enough}\` ` +
      `(or \`echo ${enough} > /proc/sys/vm/nr_hugepages\`), or create the region without hugePages`;
  }
  const failure = (cause ?? {}) as { errno?: unknown; syscall?: unknown };
  const err = new ShmringError(ErrorCodes.NO_HUGE_PAGES, message, cause === undefined ? undefined : { cause });
  if (typeof failure.errno === 'number') Object.assign(err, { errno: failure.errno });
  if (typeof failure.syscall === 'string') Object.assign(err, { syscall: failure.syscall });
  return err;
}
