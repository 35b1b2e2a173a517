/**
 * FileLocks whose fd is gone (the region closed, or release()) say so with
 * ERR_SHMRING_CLOSED naming the region: a lock() that returned false would
 * read as "another holder has it", an unlock() that did nothing as done.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { ErrorCodes, FileLocks, Region } from '../src/index.js';
import { availableBackends } from '../src/native/loader.js';
import { uniqueName, withBackend } from './helpers.js';

for (const kind of availableBackends()) {
  describe(`FileLocks of a closed region with the ${kind} backend`, () => {
    withBackend(kind);

    it('lock() and unlock() throw ERR_SHMRING_CLOSED naming the region once it is closed', () => {
      const name = uniqueName('locks-closed');
      const region = Region.create({ backing: 'posix', name, size: 4096 });
      try {
        const locks = FileLocks.open(region)!;
        assert.equal(locks.lock(10, false), true);
        region.close();
        for (const call of [() => locks.lock(10, false), () => locks.lock(11, true), () => locks.unlock(10)]) {
          assert.throws(call, {
            name: 'ShmringError',
            code: ErrorCodes.CLOSED,
            message: new RegExp(`^FileLocks\\.(un)?lock: the posix region /${name} is closed`),
          });
        }
      } finally {
        region.close();
        fs.rmSync(`/dev/shm/${name}`, { force: true });
      }
    });

    it('lock() and unlock() throw ERR_SHMRING_CLOSED after release(), and release() stays idempotent', () => {
      using region = Region.create({ backing: 'memfd', size: 4096 });
      const locks = FileLocks.open(region)!;
      locks.release();
      locks.release();
      assert.throws(() => locks.lock(1, true), { code: ErrorCodes.CLOSED, message: /the memfd region were released \(release\(\)\)/ });
      assert.throws(() => locks.unlock(1), { code: ErrorCodes.CLOSED });
      // Another FileLocks of the open region still works.
      const other = FileLocks.open(region)!;
      assert.equal(other.lock(1, false), true);
      other.release();
    });
  });
}
