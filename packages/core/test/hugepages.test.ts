/**
 * Huge pages (`hugePages: true`) for memfd and sysv regions: the size is
 * rounded up to whole huge pages, every page is taken from the pool before
 * create returns (HugePages_Free drops by the region's pages), a peer maps
 * the same huge pages, close gives them back; a pool with too few free pages
 * (or none reserved: vm.nr_hugepages=0) is ERR_SHMRING_NO_HUGE_PAGES naming
 * vm.nr_hugepages, with nothing left behind. Against each backend.
 *
 * The happy paths need free huge pages: they skip, saying why, where none
 * can be had (reserve some with `echo 64 > /proc/sys/vm/nr_hugepages`).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { Region } from '@shmring/core';
import { isHugePageShortage } from '../src/hugepages.js';
import { availableBackends } from '../src/native/loader.js';
import { PEER, withBackend } from './helpers.js';
import { SYSV_PEER, assertEchoes, hugePool, openFds, ownSegments } from './segments.js';

const NR_HUGEPAGES = '/proc/sys/vm/nr_hugepages';

/** Free huge pages nobody has reserved yet. */
function available(): number {
  const pool = hugePool();
  return pool === undefined ? 0 : pool.free - pool.reserved;
}

/** Skips the test, saying why, unless `pages` huge pages are free. */
function needPages(context: Mocha.Context, pages: number): number {
  const pool = hugePool();
  if (pool === undefined || available() < pages) {
    console.log(
      `      (skipped: needs ${pages} free huge pages, ${pool === undefined ? 'the kernel has none' : `${available()} are free`}; ` +
        `reserve some: echo 64 > ${NR_HUGEPAGES})`,
    );
    context.skip();
  }
  return pool!.pageSize;
}

/** Checks that `make` throws ERR_SHMRING_NO_HUGE_PAGES saying how to reserve pages, and leaves no fd, segment or page taken. */
function assertNoHugePages(make: () => Region, syscalls: string[]): void {
  const fds = openFds();
  const segments = ownSegments().length;
  const free = hugePool()?.free;
  assert.throws(make, (err: Error & Record<string, unknown>) => {
    assert.equal(err.code, 'ERR_SHMRING_NO_HUGE_PAGES', err.message);
    assert.ok(err.message.includes('vm.nr_hugepages'), err.message);
    assert.ok(syscalls.includes(err.syscall as string), `syscall ${String(err.syscall)}`);
    assert.equal(typeof err.errno, 'number');
    return true;
  });
  assert.equal(openFds(), fds, 'no fd left open');
  assert.equal(ownSegments().length, segments, 'no segment left');
  assert.equal(hugePool()?.free, free, 'no huge page kept');
}

for (const kind of availableBackends()) {
  describe(`Huge pages with the ${kind} backend`, () => {
    const env = { SHMRING_BACKEND: kind };
    withBackend(kind);

    it('backs a memfd region with huge pages taken before create returns, which a child maps by fd', async function () {
      const pageSize = needPages(this, 1);
      const free = hugePool()!.free;
      const region = Region.create({ backing: 'memfd', size: 100_000, hugePages: true });
      try {
        assert.equal(region.size, pageSize, 'rounded up to one huge page');
        assert.equal(hugePool()!.free, free - 1, 'the page is faulted in already');
        assert.equal(fs.fstatSync(region.fd).blksize, pageSize, 'a hugetlbfs file');
        await assertEchoes(region, PEER, ['echo-fd'], { stdio: ['ignore', 'pipe', 'pipe', region.fd], env });
      } finally {
        region.close();
      }
      assert.equal(hugePool()!.free, free, 'given back at close');
    });

    it('backs a sysv region with huge pages, which a child opens by id, and gives them back at unlink and close', async function () {
      const pageSize = needPages(this, 2);
      const free = hugePool()!.free;
      const region = Region.create({ backing: 'sysv', size: pageSize + 1, hugePages: true });
      try {
        assert.equal(region.size, 2 * pageSize);
        assert.equal(hugePool()!.free, free - 2);
        await assertEchoes(region, SYSV_PEER, ['echo-id', String(region.id)], { env });
      } finally {
        region.unlink();
        region.close();
      }
      assert.equal(hugePool()!.free, free);
    });

    it('throws ERR_SHMRING_NO_HUGE_PAGES naming vm.nr_hugepages when the pool has too few free pages', function () {
      const pool = hugePool();
      if (pool === undefined) this.skip(); // covered by the next test's message
      const tooMany = (available() + 1) * pool!.pageSize;
      assertNoHugePages(() => Region.create({ backing: 'memfd', size: tooMany, hugePages: true }), ['mmap', 'madvise']);
      assertNoHugePages(() => Region.create({ backing: 'sysv', size: tooMany, hugePages: true }), ['shmget', 'madvise']);
    });

    it('throws ERR_SHMRING_NO_HUGE_PAGES when no huge pages are reserved (vm.nr_hugepages=0)', function () {
      const reserved = Number(fs.readFileSync(NR_HUGEPAGES, 'utf8'));
      if (reserved !== 0) {
        try {
          fs.writeFileSync(NR_HUGEPAGES, '0');
        } catch (err) {
          console.log(`      (skipped: ${NR_HUGEPAGES} is ${reserved} and cannot be set to 0 here: ${(err as Error).message})`);
          this.skip();
        }
      }
      try {
        if (hugePool()?.total !== 0) {
          console.log(`      (skipped: huge pages in use elsewhere keep HugePages_Total at ${hugePool()?.total})`);
          this.skip();
        }
        assertNoHugePages(() => Region.create({ backing: 'memfd', size: 4096, hugePages: true }), ['mmap', 'madvise']);
        assertNoHugePages(() => Region.create({ backing: 'sysv', size: 4096, hugePages: true }), ['shmget', 'madvise']);
      } finally {
        if (reserved !== 0) fs.writeFileSync(NR_HUGEPAGES, String(reserved));
      }
      assert.equal(Number(fs.readFileSync(NR_HUGEPAGES, 'utf8')), reserved, 'vm.nr_hugepages restored');
    });

    it('refuses hugePages for backings without them and a hugePages that is not a boolean', () => {
      for (const backing of ['posix', 'file', 'sab'] as const) {
        assert.throws(
          () => Region.create({ backing, name: 'x', path: '/tmp/x', size: 4096, hugePages: true }),
          { name: 'TypeError', code: 'ERR_SHMRING_INVALID_ARGUMENT' },
          backing,
        );
      }
      assert.throws(() => Region.create({ backing: 'memfd', size: 4096, hugePages: 1 as unknown as boolean }), {
        name: 'TypeError',
        code: 'ERR_SHMRING_INVALID_ARGUMENT',
      });
    });
  });
}

describe('which errors mean the huge page pool is short', () => {
  it("counts ENOMEM from shmget, mmap and madvise, not shmget's ENOSPC (the segment limits: kernel.shmmni, shmall)", () => {
    const e = (syscall: string, code: string) => ({ syscall, code });
    assert.equal(isHugePageShortage(e('shmget', 'ENOMEM')), true);
    assert.equal(isHugePageShortage(e('shmget', 'ENOSPC')), false, 'a full segment table is not a short pool');
    assert.equal(isHugePageShortage(e('mmap', 'ENOMEM')), true);
    assert.equal(isHugePageShortage(e('mmap', 'ENOSPC')), true);
    assert.equal(isHugePageShortage(e('madvise', 'EFAULT')), true);
    assert.equal(isHugePageShortage(e('memfd_create', 'ENOENT')), true);
    assert.equal(isHugePageShortage(e('shmget', 'EPERM')), false);
  });
});
