/**
 * System call errors carry a positive errno (os.constants.errno's), whether
 * the call was the backend's or Node's fs (whose errors carry libuv's
 * negated number): docs/ERRORS.md.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { onObject } from '../src/errors.js';
import { Region } from '../src/index.js';
import { uniqueName } from './helpers.js';

describe('system call errors', () => {
  it("gives a 'file' region's failed fs call a positive errno, as a posix region's has", () => {
    const file = Region.create({ backing: 'file', path: path.join(os.tmpdir(), uniqueName('errno')), size: 4096 });
    const posix = Region.create({ backing: 'posix', name: uniqueName('errno'), size: 4096 });
    try {
      for (const region of [file, posix]) {
        region.unlink();
        assert.throws(
          () => region.unlink(),
          (err: Error & { code?: string; errno?: number }) => {
            assert.equal(err.code, 'ENOENT');
            assert.equal(err.errno, os.constants.errno.ENOENT, `${region.backing}: errno ${err.errno}`);
            return true;
          },
        );
      }
    } finally {
      file.close();
      posix.close();
    }
  });

  it("onObject makes the negative errno of Node's fs errors positive, and keeps a positive one", () => {
    let nodeError: unknown;
    try {
      fs.statSync(path.join(os.tmpdir(), uniqueName('missing')));
    } catch (err) {
      nodeError = err;
    }
    assert.ok((nodeError as { errno: number }).errno < 0, 'Node changed its fs errors: errno is not negative any more');
    const named = onObject(nodeError, 'stat', 'the file') as { errno: number; code: string };
    assert.equal(named.code, 'ENOENT');
    assert.equal(named.errno, os.constants.errno.ENOENT);
    const positive = Object.assign(new Error('x'), { code: 'EACCES', errno: os.constants.errno.EACCES, syscall: 'open' });
    assert.equal((onObject(positive, 'open', 'the file') as { errno: number }).errno, os.constants.errno.EACCES);
  });
});
