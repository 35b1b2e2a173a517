/**
 * What a Region.create that fails leaves behind (never a name, or a System
 * V segment, that another process joined meanwhile; always one nobody
 * joined), and the errors of objects and options a region cannot be made
 * of: a System V segment or a file too large to map, options that do not
 * apply to the backing, an EINVAL that is not memfd_create's. Where a
 * failure cannot be had from the kernel at will, the koffi backend (a
 * class instance, unlike the addon's frozen exports) has one of its calls
 * replaced for the test.
 */
import assert from 'node:assert/strict';
import { constants as bufferConstants } from 'node:buffer';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { type CreateOptions, ErrorCodes, Region } from '../src/index.js';
import type { NativeBackend } from '../src/native/backend.js';
import { availableBackends, backend, useBackend } from '../src/native/loader.js';
import { SIZING_LOCK_BYTE } from '../src/locks.js';
import { uniqueName, withBackend } from './helpers.js';
import { ownSegments, segments, uniqueKey } from './segments.js';

/** A failed system call as the backends throw it. */
function sysError(code: string, errno: number, syscall: string): Error {
  return Object.assign(new Error(`${syscall} failed: (${code})`), { code, errno, syscall });
}

/** Replaces `name` of the (koffi) backend `b` by `fn` until the returned function is called. */
function replace<K extends keyof NativeBackend>(b: NativeBackend, name: K, fn: NativeBackend[K]): () => void {
  assert.ok(!Object.isFrozen(b), `the ${b.kind} backend cannot be stubbed`);
  const own = Object.getOwnPropertyDescriptor(b, name);
  Object.defineProperty(b, name, { value: fn, writable: true, configurable: true });
  return () => {
    if (own === undefined) delete (b as unknown as Record<string, unknown>)[name];
    else Object.defineProperty(b, name, own);
  };
}

const hasKoffi = availableBackends().includes('koffi');

describe('Region.create that fails with the koffi backend (calls of it replaced)', function () {
  let previous: NativeBackend['kind'];
  before(function () {
    if (!hasKoffi) this.skip();
    previous = backend().kind;
    useBackend('koffi');
  });
  after(() => {
    if (hasKoffi) useBackend(previous);
  });

  const named = (): { options: CreateOptions; where: string }[] => {
    const name = uniqueName('joined');
    const file = path.join(os.tmpdir(), `${uniqueName('joined')}.region`);
    return [
      { options: { backing: 'posix', name, size: 8192 }, where: `/dev/shm/${name}` },
      { options: { backing: 'file', path: file, size: 8192 }, where: file },
    ];
  };

  it('leaves the POSIX name or file it made when another create joined it before its mmap failed', () => {
    const b = backend();
    for (const { options, where } of named()) {
      const mmap = b.mmap;
      let joined: Region | undefined;
      let armed = true;
      const restore = replace(b, 'mmap', function (this: NativeBackend, ...args: Parameters<NativeBackend['mmap']>) {
        if (armed) {
          armed = false;
          // Another creator (exclusive: false) opens the object, sizes it and maps it: it uses it from now on.
          joined = Region.create({ ...options, exclusive: false });
          throw sysError('ENOMEM', 12, 'mmap');
        }
        return mmap.apply(this, args);
      });
      try {
        assert.throws(() => Region.create(options), { code: 'ENOMEM' });
        assert.ok(joined !== undefined, 'the other create ran');
        assert.equal(fs.existsSync(where), true, `${where} was removed under the create that joined it`);
        // The name still leads to what the joined region maps.
        using again = Region.open(
          options.backing === 'posix' ? { backing: 'posix', name: options.name! } : { backing: 'file', path: where },
        );
        new Uint8Array(joined!.buffer)[5] = 42;
        assert.equal(new Uint8Array(again.buffer)[5], 42);
      } finally {
        restore();
        joined?.close();
        fs.rmSync(where, { force: true });
      }
    }
  });

  it('removes the POSIX name or file it made when its mmap fails and nobody joined it, even if closing its fd fails too', () => {
    const b = backend();
    for (const closeFails of [false, true]) {
      for (const { options, where } of named()) {
        const close = b.close;
        let failing: number | undefined;
        const restoreMmap = replace(b, 'mmap', (fd: number) => {
          failing = fd;
          throw sysError('ENOMEM', 12, 'mmap');
        });
        const restoreClose = replace(b, 'close', function (this: NativeBackend, fd: number) {
          close.call(this, fd);
          if (closeFails && fd === failing) throw sysError('EIO', 5, 'close');
        });
        try {
          assert.throws(() => Region.create(options), { code: 'ENOMEM' });
          assert.equal(fs.existsSync(where), false, `${where} stayed (close fails: ${closeFails})`);
        } finally {
          restoreMmap();
          restoreClose();
          fs.rmSync(where, { force: true });
        }
      }
    }
  });

  it('reports the sizing error (ENOSPC), not a failure to release its sizing lock', () => {
    const b = backend();
    for (const { options, where } of named()) {
      const ofdLock = b.ofdLock;
      const restoreAllocate = replace(b, 'allocate', () => {
        throw sysError('ENOSPC', 28, 'fallocate');
      });
      const restoreLock = replace(b, 'ofdLock', function (this: NativeBackend, fd: number, start: number, type: 0 | 1 | 2) {
        if (start === SIZING_LOCK_BYTE && type === 2) throw sysError('EIO', 5, 'fcntl');
        return ofdLock.call(this, fd, start, type);
      });
      try {
        assert.throws(() => Region.create(options), { code: 'ENOSPC', message: /out of space/ });
        assert.equal(fs.existsSync(where), false, 'the object it made is removed');
      } finally {
        restoreAllocate();
        restoreLock();
        fs.rmSync(where, { force: true });
      }
    }
  });

  describe('System V', () => {
    let before: Set<number>;
    beforeEach(() => {
      before = new Set(ownSegments());
    });
    afterEach(() => {
      const left = ownSegments().filter((id) => !before.has(id));
      for (const id of left) backend().shmRemove(id);
      assert.deepEqual(left, [], 'segments left behind');
    });

    it('leaves the segment it made when another process attached it before its own attach failed', () => {
      const b = backend();
      const key = uniqueKey();
      const shmAttach = b.shmAttach;
      let joined: Region | undefined;
      let armed = true;
      const restore = replace(b, 'shmAttach', function (this: NativeBackend, id: number, writable: boolean) {
        if (armed) {
          armed = false;
          joined = Region.create({ backing: 'sysv', key, size: 4096, exclusive: false });
          throw sysError('ENOMEM', 12, 'shmat');
        }
        return shmAttach.call(this, id, writable);
      });
      try {
        assert.throws(() => Region.create({ backing: 'sysv', key, size: 4096 }), { code: 'ENOMEM' });
        assert.ok(joined !== undefined, 'the other create ran');
        const segment = segments().get(joined!.id!);
        assert.equal(segment?.key, key, 'the key still leads to the segment the other create attached');
        using again = Region.open({ backing: 'sysv', key });
        assert.equal(again.id, joined!.id);
      } finally {
        restore();
        joined?.unlink();
        joined?.close();
      }
    });

    it('removes the segment it made when its attach fails and nobody attached it', () => {
      const key = uniqueKey();
      const restore = replace(backend(), 'shmAttach', () => {
        throw sysError('ENOMEM', 12, 'shmat');
      });
      try {
        assert.throws(() => Region.create({ backing: 'sysv', key, size: 4096 }), { code: 'ENOMEM' });
        assert.deepEqual(
          [...segments().values()].filter((s) => s.key === key),
          [],
        );
      } finally {
        restore();
      }
    });
  });

  it("gives memfd_create's EINVAL the hint about the name's length, and no other EINVAL", () => {
    assert.throws(() => Region.create({ backing: 'memfd', name: 'x'.repeat(300), size: 4096 }), {
      code: 'EINVAL',
      message: /memfd_create failed.*a memfd name is at most 249 bytes/,
    });
    const restore = replace(backend(), 'addSeals', () => {
      throw sysError('EINVAL', 22, 'fcntl');
    });
    try {
      assert.throws(
        () => Region.create({ backing: 'memfd', size: 4096 }),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'EINVAL');
          assert.match(err.message, /fcntl failed/);
          assert.doesNotMatch(err.message, /249 bytes/);
          return true;
        },
      );
    } finally {
      restore();
    }
  });
});

for (const kind of availableBackends()) {
  describe(`Regions too large to map, and options a backing does not take, with the ${kind} backend`, () => {
    withBackend(kind);

    it('refuses to attach a System V segment larger than buffer.constants.MAX_LENGTH, naming its key or id', function () {
      const MAX_LENGTH = bufferConstants.MAX_LENGTH;
      if (MAX_LENGTH >= 2 ** 40) this.skip();
      const key = uniqueKey();
      // A segment takes no memory until a page of it is touched: none is here.
      const id = backend().shmGet(key, MAX_LENGTH + 4096, 0o1000 | 0o600);
      try {
        const tooLarge = (object: RegExp) => ({
          name: 'RangeError',
          code: ErrorCodes.INVALID_ARGUMENT,
          message: new RegExp(`${object.source}: size=${MAX_LENGTH + 4096} is more than this Node maps.*MAX_LENGTH`),
        });
        const hex = `0x${key.toString(16).padStart(8, '0')}`;
        assert.throws(() => Region.open({ backing: 'sysv', key }), tooLarge(new RegExp(`^Region.open of .*key ${hex} \\(id ${id}\\)`)));
        assert.throws(() => Region.open({ backing: 'sysv', id }), tooLarge(new RegExp(`^Region.open of .*segment id ${id}`)));
        assert.throws(
          () => Region.create({ backing: 'sysv', key, size: 4096, exclusive: false }),
          tooLarge(new RegExp(`^Region.create of .*key ${hex} \\(id ${id}\\)`)),
        );
        assert.equal(segments().get(id)?.key, key, 'the segment it found stays');
      } finally {
        backend().shmRemove(id);
      }
    });

    it('refuses to map a 2 TiB sparse file, naming its path and saying what to do', () => {
      const file = path.join(os.tmpdir(), `${uniqueName('sparse')}.region`);
      fs.writeFileSync(file, '');
      try {
        fs.truncateSync(file, 2 ** 41);
        assert.throws(() => Region.open({ backing: 'file', path: file }), {
          name: 'RangeError',
          code: ErrorCodes.INVALID_ARGUMENT,
          message: new RegExp(`^Region.open of file '${file}': size=${2 ** 41} is more than this Node maps.*recreate it smaller`),
        });
        const fd = fs.openSync(file, 'r+');
        try {
          assert.throws(() => Region.fromFd(fd), {
            code: ErrorCodes.INVALID_ARGUMENT,
            message: new RegExp(`^Region.fromFd of fd ${fd}: size=${2 ** 41} is more`),
          });
        } finally {
          fs.closeSync(fd);
        }
      } finally {
        fs.rmSync(file, { force: true });
      }
    });

    it('refuses an option the backing does not take, naming the option, the backing and the backings it is for', () => {
      const name = uniqueName('inapplicable');
      const file = path.join(os.tmpdir(), `${name}.region`);
      const refused: [Record<string, unknown>, string, string][] = [
        [{ backing: 'posix', name, key: 5, size: 4096 }, 'key', "'sysv'"],
        [{ backing: 'posix', name, path: file, size: 4096 }, 'path', "'file'"],
        [{ backing: 'memfd', mode: 0o640, size: 4096 }, 'mode', "'posix', 'file', 'sysv'"],
        [{ backing: 'memfd', exclusive: false, size: 4096 }, 'exclusive', "'posix', 'file', 'sysv'"],
        [{ backing: 'memfd', unlinkOnExit: true, size: 4096 }, 'unlinkOnExit', "'posix', 'file', 'sysv'"],
        [{ backing: 'memfd', key: 5, size: 4096 }, 'key', "'sysv'"],
        [{ backing: 'file', path: file, name, size: 4096 }, 'name', "'memfd', 'posix', 'sab'"],
        [{ backing: 'sysv', name, size: 4096 }, 'name', "'memfd', 'posix', 'sab'"],
        [{ backing: 'sab', exclusive: true, size: 4096 }, 'exclusive', "'posix', 'file', 'sysv'"],
      ];
      // A name labels a memfd; a 'sab' takes one too, so that one options object makes either.
      Region.create({ backing: 'sab', name, size: 4096 }).close();
      try {
        for (const [options, option, owners] of refused) {
          assert.throws(() => Region.create(options as unknown as CreateOptions), {
            name: 'TypeError',
            code: ErrorCodes.INVALID_ARGUMENT,
            message: new RegExp(`^Region.create: option ${option}=.* does not apply to backing '${options.backing}' .*for \\(${owners}\\)`),
          });
        }
        for (const [options, option] of [
          [{ backing: 'posix', name, path: file }, 'path'],
          [{ backing: 'file', path: file, name }, 'name'],
          [{ backing: 'posix', name, key: 5 }, 'key'],
          [{ backing: 'file', path: file, id: 5 }, 'id'],
          [{ backing: 'sysv', key: 5, name }, 'name'],
        ] as const) {
          assert.throws(() => Region.open(options as never), {
            name: 'TypeError',
            code: ErrorCodes.INVALID_ARGUMENT,
            message: new RegExp(`^Region.open: option ${option}=.* does not apply to backing '${options.backing}'`),
          });
        }
        assert.equal(fs.existsSync(`/dev/shm/${name}`), false, 'nothing was created');
        assert.equal(fs.existsSync(file), false, 'nothing was created');
      } finally {
        // Only a create that accepted what it should refuse makes anything.
        fs.rmSync(`/dev/shm/${name}`, { force: true });
        fs.rmSync(file, { force: true });
      }
      // What applies passes, and an option set to undefined sets nothing.
      using memfd = Region.create({ backing: 'memfd', name: 'label', size: 4096, mode: undefined, hugePages: false });
      using sab = Region.create({ backing: 'sab', size: 4096, key: undefined });
      assert.deepEqual([memfd.backing, sab.backing], ['memfd', 'sab']);
    });
  });
}
