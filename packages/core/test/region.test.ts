import assert from 'node:assert/strict';
import { constants as bufferConstants } from 'node:buffer';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { Region, sendRegion, receiveRegion, ShmringError, type CreateOptions } from '@shmring/core';
import { SIZING_LOCK_BYTE } from '../src/locks.js';
import { availableBackends, backend } from '../src/native/loader.js';
import { assertClosed, fileOf, PEER, runNode, uniqueName, withBackend } from './helpers.js';

const kinds = availableBackends();

/**
 * Runs `code` (an ES module; `args` its process.argv[1..]) in a node process
 * of a private mount namespace where `mount` (a shell command) ran first;
 * skips the test (saying so) where no such namespace can be had here. The
 * child's stdout, stderr and status; asserts it was not killed by a signal.
 */
function withMount(
  test: Mocha.Context,
  mount: string,
  what: string,
  code: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): { stdout: string; stderr: string; status: number | null } {
  const asRoot = process.geteuid?.() === 0;
  const child = spawnSync(
    'unshare',
    [
      ...(asRoot ? [] : ['-r']),
      '-m',
      'sh',
      '-c',
      `${mount} && code="$1" && shift && exec "$0" --input-type=module -e "$code" "$@"`,
      process.execPath,
      code,
      ...args,
    ],
    { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 30_000 },
  );
  if (child.error !== undefined || (child.status !== 0 && child.signal === null && child.stdout === '')) {
    console.log(`      (skipped: no private mount namespace with ${what} here: ${child.error?.message ?? child.stderr.trim()})`);
    test.skip();
  }
  assert.equal(child.signal, null, `the child died of ${child.signal}: ${child.stderr}`);
  return child;
}

describe('Region', () => {
  it('has at least the koffi backend available', () => {
    assert.ok(kinds.includes('koffi'), `available: ${kinds.join(', ')}`);
  });

  for (const kind of kinds) {
    describe(`with the ${kind} backend`, () => {
      const env = { SHMRING_BACKEND: kind };
      withBackend(kind);

      it('shares a memfd region with a child that inherits its fd', async () => {
        using region = Region.create({ backing: 'memfd', size: 4096 });
        const i32 = new Int32Array(region.buffer);
        const child = runNode(PEER, ['echo-fd'], { stdio: ['ignore', 'pipe', 'pipe', region.fd], env });
        Atomics.store(i32, 0, 41);
        const { code, stderr } = await child.done;
        assert.equal(code, 0, stderr);
        assert.equal(Atomics.load(i32, 1), 42);
      });

      it('fails Region.create with ENOSPC, leaving nothing, where /dev/shm is too small for the region (no SIGBUS at the first touch)', function () {
        // A private mount namespace whose /dev/shm is a 1 MiB tmpfs, as a container's 64 MiB one is for a larger ring.
        const code = `
          import * as fs from 'node:fs';
          const { Region } = await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});
          const out = {};
          for (const [backing, where] of [['posix', { name: 'shmring-enospc' }], ['file', { path: '/dev/shm/shmring-enospc-file' }],
              ['posix', { name: 'shmring-enospc-shared', exclusive: false }]]) {
            try {
              const region = Region.create({ backing, ...where, size: 4 << 20 });
              new Uint8Array(region.buffer).fill(1); // every page touched: a sparse object dies of SIGBUS here
              region.unlink();
              region.close();
              out[backing] = 'created';
            } catch (err) {
              out[backing + (where.exclusive === false ? ', exclusive: false' : '')] = err.code + (err.message.includes('--shm-size') ? ' with the hint' : '');
            }
          }
          out.left = fs.readdirSync('/dev/shm');
          console.log(JSON.stringify(out));`;
        const child = withMount(this, 'mount -t tmpfs -o size=1m shmring-test /dev/shm', 'a tmpfs', code, [], env);
        assert.deepEqual(
          JSON.parse(child.stdout),
          { posix: 'ENOSPC with the hint', file: 'ENOSPC with the hint', 'posix, exclusive: false': 'ENOSPC with the hint', left: [] },
          child.stderr,
        );
      });

      it('creates a file region where the file system has no fallocate (EOPNOTSUPP, which Node names ENOTSUP): sized by ftruncate', function () {
        // A private mount namespace with a ramfs, which has no fallocate, mounted on an empty directory.
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-ramfs-'));
        try {
          const code = `
            const { Region } = await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});
            try {
              const region = Region.create({ backing: 'file', path: process.argv[1] + '/ring', size: 64 << 10 });
              new Uint8Array(region.buffer).fill(7);
              console.log(JSON.stringify({ size: region.size }));
              region.unlink();
              region.close();
            } catch (err) {
              console.log(JSON.stringify({ code: err.code, message: err.message }));
            }`;
          const child = withMount(this, `mount -t ramfs shmring-test '${dir}'`, 'a ramfs', code, [dir], env);
          assert.deepEqual(JSON.parse(child.stdout), { size: 64 << 10 }, child.stderr);
        } finally {
          fs.rmSync(dir, { recursive: true, force: true });
        }
      });

      it('lets two processes open one POSIX region by name', async () => {
        const name = uniqueName('posix');
        using region = Region.create({ backing: 'posix', name, size: 8192 });
        try {
          assert.equal(region.name, `/${name}`);
          assert.equal(fs.statSync(`/dev/shm/${name}`).mode & 0o777, 0o600);
          const i32 = new Int32Array(region.buffer);
          Atomics.store(i32, 0, 41);
          const { code, stderr } = await runNode(PEER, ['echo-posix', name], { env }).done;
          assert.equal(code, 0, stderr);
          assert.equal(Atomics.load(i32, 1), 42);
        } finally {
          region.unlink();
        }
        assert.equal(fs.existsSync(`/dev/shm/${name}`), false);
      });

      it('takes a relative file path against the working directory of the create: unlink() after a chdir() removes that file', () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-relative-'));
        const elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-elsewhere-'));
        const cwd = process.cwd();
        try {
          process.chdir(dir);
          const region = Region.create({ backing: 'file', path: 'ring', size: 4096 });
          assert.equal(region.path, path.join(fs.realpathSync(dir), 'ring'));
          process.chdir(elsewhere);
          fs.writeFileSync('ring', 'not the region'); // what the relative path names now
          region.unlink();
          region.close();
          assert.equal(fs.existsSync(path.join(dir, 'ring')), false, 'the region file stayed');
          assert.equal(fs.readFileSync(path.join(elsewhere, 'ring'), 'utf8'), 'not the region');
          // `link/..` where link is a symbolic link to a directory: the kernel's `..` is that directory's parent.
          process.chdir(dir);
          fs.mkdirSync(path.join(dir, 'x', 'y'), { recursive: true });
          fs.symlinkSync(path.join(dir, 'x', 'y'), path.join(dir, 'link'));
          const linked = Region.create({ backing: 'file', path: 'link/../ring2', size: 4096 });
          assert.ok(fs.existsSync(path.join(dir, 'x', 'ring2')), 'made where the kernel put it');
          process.chdir(elsewhere);
          linked.unlink();
          linked.close();
          assert.equal(fs.existsSync(path.join(dir, 'x', 'ring2')), false, 'unlink() looked elsewhere');
        } finally {
          process.chdir(cwd);
          fs.rmSync(dir, { recursive: true, force: true });
          fs.rmSync(elsewhere, { recursive: true, force: true });
        }
      });

      it('keeps the bytes of a file region after close and reopen', () => {
        const file = path.join(os.tmpdir(), uniqueName('file'));
        try {
          const a = Region.create({ backing: 'file', path: file, size: 1000 });
          new Uint8Array(a.buffer).set([1, 2, 3], 997);
          a.close();
          using b = Region.open({ backing: 'file', path: file });
          assert.equal(b.size, 1000);
          assert.deepEqual([...new Uint8Array(b.buffer, 997)], [1, 2, 3]);
        } finally {
          fs.rmSync(file, { force: true });
        }
      });

      it("refuses a peer's ftruncate of a sealed memfd with EPERM", async () => {
        using region = Region.create({ backing: 'memfd', size: 4096 });
        const { stdout } = await runNode(PEER, ['truncate-fd'], { stdio: ['ignore', 'pipe', 'pipe', region.fd], env }).done;
        assert.equal(stdout, 'EPERM');
        assert.equal(fs.fstatSync(region.fd).size, 4096);
      });

      it('maps its own duplicate of the fd given to fromFd and leaves that fd to the caller', () => {
        using original = Region.create({ backing: 'memfd', name: 'fromfd-dup', size: 4096 });
        const region = Region.fromFd(original.fd);
        assert.notEqual(region.fd, original.fd);
        assert.equal(region.backing, 'memfd');
        new Uint8Array(region.buffer)[7] = 9;
        assert.equal(new Uint8Array(original.buffer)[7], 9);
        const own = region.fd;
        const file = fileOf(own);
        region.close();
        assertClosed(own, file);
        assert.equal(fs.fstatSync(original.fd).size, 4096);
      });

      it('maps a memfd handed over read-only (an fd opened O_RDONLY), which it cannot seal; requireFixedSize says why', () => {
        const fd = backend().memfdCreate(uniqueName('readonly-fd'));
        try {
          fs.ftruncateSync(fd, 4096);
          fs.writeSync(fd, Uint8Array.of(42), 0, 1, 100);
          const readOnlyFd = fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_RDONLY);
          try {
            using region = Region.fromFd(readOnlyFd, { readOnly: true });
            assert.equal(region.size, 4096);
            assert.equal(new Uint8Array(region.buffer)[100], 42);
            assert.throws(() => Region.fromFd(readOnlyFd, { readOnly: true, requireFixedSize: true }), {
              code: 'ERR_SHMRING_NOT_SEALED',
              message: /open read-only here, so this process cannot seal it/,
            });
          } finally {
            fs.closeSync(readOnlyFd);
          }
        } finally {
          fs.closeSync(fd);
        }
      });

      it("leaves a closed region's old views empty instead of faulting", () => {
        const region = Region.create({ backing: 'memfd', size: 4096 });
        const view = new Uint8Array(region.buffer);
        view[10] = 7;
        region.close();
        assert.equal(view.length, 0);
        assert.equal(view[10], undefined);
        assert.throws(() => region.buffer, { code: 'ERR_SHMRING_CLOSED' });
        region.close(); // idempotent
      });

      it('hands a memfd region to an unrelated process over a Unix socket', async () => {
        const socketPath = path.join(os.tmpdir(), `${uniqueName('sock')}.sock`);
        using region = Region.create({ backing: 'memfd', size: 65536 });
        const i32 = new Int32Array(region.buffer);
        Atomics.store(i32, 0, 41);
        const server = net.createServer({ pauseOnConnect: true });
        await new Promise<void>((resolve) => server.listen(socketPath, resolve));
        try {
          const sent = new Promise<void>((resolve, reject) =>
            server.once('connection', (socket) => {
              sendRegion(socket, region).then(() => {
                socket.end();
                resolve();
              }, reject);
            }),
          );
          const child = runNode(PEER, ['receive', socketPath], { env });
          await sent;
          const { code, stdout, stderr } = await child.done;
          assert.equal(code, 0, stderr);
          assert.equal(stdout, 'memfd:65536');
          assert.equal(Atomics.load(i32, 1), 42);
        } finally {
          server.close();
        }
      });

      describe('errors', () => {
        it('fails with EEXIST when an exclusive POSIX name exists', () => {
          const name = uniqueName('dup');
          using region = Region.create({ backing: 'posix', name, size: 4096 });
          try {
            assert.throws(() => Region.create({ backing: 'posix', name, size: 4096 }), {
              code: 'EEXIST',
              errno: os.constants.errno.EEXIST,
              syscall: 'shm_open',
            });
          } finally {
            region.unlink();
          }
        });

        it('fails with ENOENT when opening a POSIX name that does not exist', () => {
          assert.throws(() => Region.open({ backing: 'posix', name: uniqueName('none') }), { code: 'ENOENT', syscall: 'shm_open' });
        });

        it('fails with ENOENT when unlinking a POSIX name twice', () => {
          const name = uniqueName('twice');
          using region = Region.create({ backing: 'posix', name, size: 4096 });
          region.unlink();
          assert.throws(() => region.unlink(), { code: 'ENOENT' });
        });

        it('names the POSIX object in an EEXIST from Region.create and says how to tell whether it is stale', () => {
          const name = uniqueName('exists');
          using region = Region.create({ backing: 'posix', name, size: 4096 });
          try {
            assert.throws(
              () => Region.create({ backing: 'posix', name, size: 4096 }),
              (err: Error & Record<string, unknown>) => {
                assert.equal(err.code, 'EEXIST');
                assert.equal(err.syscall, 'shm_open');
                assert.equal(err.path, `/dev/shm/${name}`);
                assert.ok(err.message.includes(`'${name}'`), err.message);
                assert.ok(err.message.includes(`shmring inspect ${name}`), err.message);
                assert.ok(err.message.includes('exclusive: false'), err.message);
                return true;
              },
            );
          } finally {
            region.unlink();
          }
        });

        it('names the path in an EEXIST from Region.create of a file and says how to inspect it', () => {
          const file = path.join(os.tmpdir(), uniqueName('exists'));
          fs.writeFileSync(file, 'x');
          try {
            assert.throws(
              () => Region.create({ backing: 'file', path: file, size: 4096 }),
              (err: Error & Record<string, unknown>) => {
                assert.equal(err.code, 'EEXIST');
                assert.equal(err.syscall, 'open');
                assert.equal(err.path, file);
                assert.ok(err.message.includes(`'${file}'`), err.message);
                assert.ok(err.message.includes(`shmring inspect ${file}`), err.message);
                return true;
              },
            );
            assert.equal(fs.readFileSync(file, 'utf8'), 'x', 'the existing file is left alone');
          } finally {
            fs.rmSync(file, { force: true });
          }
        });

        it('names the POSIX name in an ENOENT from Region.open', () => {
          const name = uniqueName('missing');
          assert.throws(
            () => Region.open({ backing: 'posix', name }),
            (err: ShmringError) => {
              // Typed: ShmringError declares what a failed system call leaves on it (an outside tester's strict
              // TypeScript program could not read errno, syscall or path).
              assert.ok(err instanceof ShmringError);
              const { code, errno, syscall, path: where }: { code: string; errno?: number; syscall?: string; path?: string } = err;
              assert.deepEqual([code, errno, syscall, where], ['ENOENT', 2, 'shm_open', `/dev/shm/${name}`]);
              assert.ok(err.message.includes(`'${name}'`), err.message);
              assert.ok(err.message.includes('create it first'), err.message);
              return true;
            },
          );
        });

        it('names the path in an ENOENT from Region.open of a file', () => {
          const file = path.join(os.tmpdir(), uniqueName('missing'));
          assert.throws(
            () => Region.open({ backing: 'file', path: file }),
            (err: Error & Record<string, unknown>) => {
              assert.equal(err.code, 'ENOENT');
              assert.equal(err.syscall, 'open');
              assert.equal(err.path, file);
              assert.ok(err.message.includes(`'${file}'`), err.message);
              return true;
            },
          );
        });

        it('names the path when the directory of a new file region does not exist', () => {
          const file = path.join(os.tmpdir(), uniqueName('nodir'), 'region');
          assert.throws(
            () => Region.create({ backing: 'file', path: file, size: 4096 }),
            (err: Error) => {
              assert.equal((err as { code?: string }).code, 'ENOENT');
              assert.ok(err.message.includes(`'${file}'`), err.message);
              assert.ok(err.message.includes('directory'), err.message);
              return true;
            },
          );
        });

        it('names the POSIX name and the path in an ENOENT from a second unlink', () => {
          const name = uniqueName('gone');
          using posix = Region.create({ backing: 'posix', name, size: 4096 });
          posix.unlink();
          assert.throws(
            () => posix.unlink(),
            (err: Error & Record<string, unknown>) => {
              assert.equal(err.code, 'ENOENT');
              assert.equal(err.syscall, 'shm_unlink');
              assert.ok(err.message.includes(`'${name}'`), err.message);
              return true;
            },
          );
          const file = path.join(os.tmpdir(), uniqueName('gone'));
          using created = Region.create({ backing: 'file', path: file, size: 4096 });
          created.unlink();
          assert.throws(
            () => created.unlink(),
            (err: Error & Record<string, unknown>) => {
              assert.equal(err.code, 'ENOENT');
              assert.equal(err.syscall, 'unlink');
              assert.ok(err.message.includes(`'${file}'`), err.message);
              return true;
            },
          );
        });

        it('names the fd in an EBADF from Region.fromFd', () => {
          assert.throws(
            () => Region.fromFd(987654),
            (err: Error) => {
              assert.equal((err as { code?: string }).code, 'EBADF');
              assert.ok(err.message.includes('fd 987654'), err.message);
              return true;
            },
          );
        });

        it('refuses an fd of a pipe, a directory or a device with a message that says what it is, and leaks no fd', () => {
          const dir = fs.openSync(os.tmpdir(), 'r');
          const device = fs.openSync('/dev/null', 'r');
          const fifo = path.join(os.tmpdir(), `shmring-fifo-${process.pid}`);
          execFileSync('mkfifo', [fifo]);
          const readEnd = fs.openSync(fifo, 'r+'); // O_RDWR: a FIFO opens at once without a writer
          fs.unlinkSync(fifo);
          const before = fs.readdirSync('/proc/self/fd').length;
          try {
            for (const [fd, kind] of [
              [readEnd, 'a pipe (FIFO)'],
              [dir, 'a directory'],
              [device, 'a character device'],
            ] as const) {
              assert.throws(
                () => Region.fromFd(fd),
                (err: Error) => {
                  assert.equal((err as { code?: string }).code, 'ERR_SHMRING_INVALID_ARGUMENT');
                  assert.ok(err.message.startsWith(`Region.fromFd of fd ${fd}: it is ${kind}, not shared memory`), err.message);
                  return true;
                },
              );
            }
            assert.throws(
              () => Region.open({ backing: 'file', path: '/dev/null' }),
              (err: Error) => {
                assert.ok(err.message.includes("Region.open of file '/dev/null': it is a character device"), err.message);
                return true;
              },
            );
            assert.equal(fs.readdirSync('/proc/self/fd').length, before);
          } finally {
            for (const fd of [dir, device, readEnd]) fs.closeSync(fd);
          }
        });

        it('a FIFO under a POSIX name or a file path is refused at once (no open that waits for a writer), leaking no fd', function () {
          const name = uniqueName('fifo');
          const file = path.join(os.tmpdir(), `${uniqueName('fifo')}.region`);
          execFileSync('mkfifo', [`/dev/shm/${name}`, file]);
          const before = fs.readdirSync('/proc/self/fd').length;
          try {
            // Read-only, an open that waits would wait for ever, and no test timeout ends a synchronous call: in a child.
            for (const [how, target] of [
              ['open-posix', name],
              ['open-file', file],
            ]) {
              const child = spawnSync(process.execPath, [PEER, how!, target!], { encoding: 'utf8', timeout: 10_000 });
              assert.equal(child.signal, null, `Region.open of the FIFO (${how}) still waited after 10 s`);
              assert.equal(child.stdout, 'ERR_SHMRING_INVALID_ARGUMENT', child.stderr);
            }
            assert.throws(() => Region.open({ backing: 'posix', name }), {
              code: 'ERR_SHMRING_INVALID_ARGUMENT',
              message: / is a pipe \(FIFO\), not shared memory/,
            });
            for (const options of [
              { backing: 'posix' as const, name, size: 4096, exclusive: false },
              { backing: 'file' as const, path: file, size: 4096, exclusive: false },
            ]) {
              assert.throws(() => Region.create(options), {
                code: 'ERR_SHMRING_INVALID_ARGUMENT',
                message: / is a pipe \(FIFO\), not shared memory/,
              });
            }
            assert.equal(fs.readdirSync('/proc/self/fd').length, before);
          } finally {
            fs.rmSync(`/dev/shm/${name}`, { force: true });
            fs.rmSync(file, { force: true });
          }
        });

        it('a POSIX name that is a directory: a typed error that says so, read-only or not', () => {
          const name = uniqueName('dir');
          fs.mkdirSync(`/dev/shm/${name}`);
          try {
            assert.throws(() => Region.open({ backing: 'posix', name, readOnly: true }), {
              code: 'ERR_SHMRING_INVALID_ARGUMENT',
              message: / is a directory, not shared memory/,
            });
            for (const attempt of [
              () => Region.open({ backing: 'posix', name }),
              () => Region.create({ backing: 'posix', name, size: 4096, exclusive: false }),
            ]) {
              assert.throws(attempt, { code: 'EINVAL', message: /not a shared memory object \(a directory in \/dev\/shm\?\)/ });
            }
          } finally {
            fs.rmdirSync(`/dev/shm/${name}`);
          }
        });

        it('names the object in the error for an empty file', () => {
          const file = path.join(os.tmpdir(), `shmring-empty-${process.pid}`);
          fs.writeFileSync(file, '');
          try {
            assert.throws(
              () => Region.open({ backing: 'file', path: file }),
              (err: Error) => {
                assert.equal((err as { code?: string }).code, 'ERR_SHMRING_REGION_TOO_SMALL');
                assert.ok(err.message.startsWith(`file '${file}' is empty (size 0)`), err.message);
                return true;
              },
            );
          } finally {
            fs.unlinkSync(file);
          }
        });

        it("gives a 'sab' region V8 cannot allocate a RangeError with code ENOMEM", () => {
          assert.throws(
            () => Region.create({ backing: 'sab', size: 2 ** 40 }),
            (err: Error) => {
              assert.ok(err instanceof RangeError);
              assert.equal((err as { code?: string }).code, 'ENOMEM');
              assert.ok(err.message.includes("'sab' region of 1099511627776 bytes"), err.message);
              return true;
            },
          );
        });

        it('rejects POSIX names with a slash, empty, or too long', () => {
          for (const name of ['a/b', '', '/', '..', 'x'.repeat(256), 'nul\0']) {
            assert.throws(
              () => Region.create({ backing: 'posix', name, size: 4096 }),
              { code: 'ERR_SHMRING_INVALID_NAME' },
              JSON.stringify(name),
            );
          }
        });

        it('rejects a NUL in a file path or a memfd name with a typed error (the kernel would read another name), creating nothing', () => {
          const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-nul-'));
          try {
            assert.throws(() => Region.create({ backing: 'file', path: path.join(dir, 'a\0b'), size: 4096 }), {
              code: 'ERR_SHMRING_INVALID_ARGUMENT',
              name: 'TypeError',
              message: /must not contain a NUL character/,
            });
            assert.deepEqual(fs.readdirSync(dir), [], 'a file was made at the path cut at the NUL');
          } finally {
            fs.rmSync(dir, { recursive: true, force: true });
          }
          for (const make of [
            () => Region.create({ backing: 'memfd', name: 'a\0b', size: 4096 }),
            () => Region.snapshot(new Uint8Array(8), { name: 'a\0b' }),
          ]) {
            assert.throws(make, { code: 'ERR_SHMRING_INVALID_NAME', name: 'TypeError', message: /must not contain a NUL character/ });
          }
        });

        it('rejects an unknown backing', () => {
          assert.throws(() => Region.create({ backing: 'tmp' as 'sab', size: 10 }), {
            code: 'ERR_SHMRING_INVALID_BACKING',
            message: /^Region\.create: backing=tmp is not one of/,
          });
          assert.throws(() => Region.open({ backing: 'memfd' as 'posix' }), {
            code: 'ERR_SHMRING_INVALID_BACKING',
            message: /^Region\.open: backing=memfd cannot be opened; .*Region\.fromFd/,
          });
          assert.throws(() => Region.open({ backing: 'sab' as 'posix' }), {
            code: 'ERR_SHMRING_INVALID_BACKING',
            message: /^Region\.open: backing=sab cannot be opened; .*Region\.fromSharedArrayBuffer/,
          });
        });

        it('rejects a size that is not a positive integer', () => {
          for (const size of [0, -1, 1.5, NaN, 2 ** 41]) {
            assert.throws(() => Region.create({ backing: 'memfd', size }), { code: 'ERR_SHMRING_INVALID_ARGUMENT' }, String(size));
          }
          assert.throws(() => Region.create({ backing: 'memfd', size: '4096' as unknown as number }), TypeError);
        });

        // An outside tester: read as `=== true`, requireSealed: 1 let an unsealed, writable memfd through.
        it('refuses a boolean option that is not a boolean (requireSealed: 1 must not skip the seal check), and region.sync a misspelt option', async () => {
          const name = uniqueName('bool');
          const posix = Region.create({ backing: 'posix', name, size: 4096 });
          const memfd = Region.create({ backing: 'memfd', size: 4096 });
          const typed = (option: string) => ({
            name: 'TypeError',
            code: 'ERR_SHMRING_INVALID_ARGUMENT',
            message: new RegExp(`${option}=.* must be a boolean`),
          });
          try {
            assert.throws(() => Region.fromFd(memfd.fd, { requireSealed: 1 as unknown as boolean }), typed('requireSealed'));
            assert.throws(() => Region.fromFd(memfd.fd, { readOnly: 'true' as unknown as boolean }), typed('readOnly'));
            assert.throws(() => Region.fromFd(memfd.fd, 5 as never), {
              code: 'ERR_SHMRING_INVALID_ARGUMENT',
              message: /options=5 must be an object/,
            });
            assert.throws(() => Region.open({ backing: 'posix', name, readOnly: 1 as unknown as boolean }), typed('readOnly'));
            for (const option of ['exclusive', 'unlinkOnExit']) {
              assert.throws(() => Region.create({ backing: 'posix', name, size: 4096, [option]: 'false' } as CreateOptions), typed(option));
            }
            await assert.rejects(memfd.sync({ asnyc: true } as never), {
              code: 'ERR_SHMRING_INVALID_ARGUMENT',
              message: /unknown option "asnyc" \(did you mean "async"\?\)/,
            });
            await assert.rejects(memfd.sync({ async: 1 as unknown as boolean }), typed('async'));
            const readOnly = Region.open({ backing: 'posix', name, readOnly: true });
            assert.equal(readOnly.readOnly, true);
            readOnly.close();
          } finally {
            memfd.close();
            posix.unlink();
            posix.close();
          }
        });

        // An outside tester: under the usual umask 022, mode 0o666 made 0644 posix and file objects, 0666 sysv ones.
        it('gives a new posix or file object exactly the mode asked, whatever the umask, and leaves an existing one its own', () => {
          const name = uniqueName('mode');
          const file = path.join(os.tmpdir(), uniqueName('mode'));
          const umask = process.umask(0o022);
          const made: Region[] = [];
          try {
            made.push(Region.create({ backing: 'posix', name, size: 64, mode: 0o666 }));
            assert.equal(fs.statSync(`/dev/shm/${name}`).mode & 0o777, 0o666);
            made.push(Region.create({ backing: 'file', path: file, size: 64, mode: 0o660, exclusive: false }));
            assert.equal(fs.statSync(file).mode & 0o777, 0o660);
            made.push(Region.create({ backing: 'file', path: file, size: 64, mode: 0o600, exclusive: false }));
            assert.equal(fs.statSync(file).mode & 0o777, 0o660, 'an existing object keeps its mode');
            // A symbolic link to nothing: exclusive: false makes its target, as open(O_CREAT) does.
            const target = path.join(os.tmpdir(), uniqueName('mode-target'));
            const link = path.join(os.tmpdir(), uniqueName('mode-link'));
            fs.symlinkSync(target, link);
            try {
              made.push(Region.create({ backing: 'file', path: link, size: 64, exclusive: false }));
              assert.equal(fs.statSync(target).size, 64, 'the link target was made');
            } finally {
              fs.rmSync(link, { force: true });
              fs.rmSync(target, { force: true });
            }
            // An existing empty one too: a group-shared file made by hand (touch; chmod 660), sized by the create.
            const empty = path.join(os.tmpdir(), uniqueName('mode-empty'));
            fs.writeFileSync(empty, '');
            fs.chmodSync(empty, 0o640);
            try {
              made.push(Region.create({ backing: 'file', path: empty, size: 64, exclusive: false }));
              assert.equal(fs.statSync(empty).mode & 0o777, 0o640, 'an existing empty object keeps its mode');
              assert.equal(fs.statSync(empty).size, 64);
            } finally {
              fs.rmSync(empty, { force: true });
            }
          } finally {
            process.umask(umask);
            for (const region of made) region.close();
            fs.rmSync(file, { force: true });
            fs.rmSync(`/dev/shm/${name}`, { force: true });
          }
        });

        // An outside tester: the fd of a POSIX object came back as a 'memfd' region, whose unlink() did nothing.
        it('fromFd tells what the fd maps: a POSIX object by its name (unlink removes it), a memfd, a file by its path', () => {
          const name = uniqueName('fromfd');
          const file = path.join(os.tmpdir(), uniqueName('fromfd'));
          const posix = Region.create({ backing: 'posix', name, size: 4096 });
          const memfd = Region.create({ backing: 'memfd', size: 4096 });
          const onDisk = Region.create({ backing: 'file', path: file, size: 4096 });
          const adopted: Region[] = [];
          const adopt = (fd: number) => {
            const region = Region.fromFd(fd);
            adopted.push(region);
            return region;
          };
          try {
            const a = adopt(posix.fd);
            assert.deepEqual([a.backing, a.name, a.path], ['posix', `/${name}`, undefined]);
            const m = adopt(memfd.fd);
            assert.deepEqual([m.backing, m.name], ['memfd', undefined]);
            const f = adopt(onDisk.fd);
            assert.deepEqual([f.backing, f.path], ['file', file]);
            // A file of a tmpfs that is not a POSIX object (a directory under /dev/shm): it supports seals as a
            // memfd does, but it is a file, with a path.
            const tmpfsDir = fs.mkdtempSync('/dev/shm/shmring-fromfd-');
            try {
              const tmpfsFile = Region.create({ backing: 'file', path: path.join(tmpfsDir, 'f'), size: 4096 });
              adopted.push(tmpfsFile);
              const t = adopt(tmpfsFile.fd);
              assert.deepEqual([t.backing, t.path], ['file', path.join(tmpfsDir, 'f')]);
            } finally {
              fs.rmSync(tmpfsDir, { recursive: true, force: true });
            }
            a.unlink();
            assert.equal(fs.existsSync(`/dev/shm/${name}`), false, 'unlink() of the adopted region removed the name');
            const gone = adopt(posix.fd);
            assert.deepEqual([gone.backing, gone.name], ['posix', undefined], 'an unlinked object has no name left');
            gone.unlink(); // nothing to remove: no error
          } finally {
            for (const region of [...adopted, posix, memfd, onDisk]) region.close();
            fs.rmSync(file, { force: true });
            fs.rmSync(`/dev/shm/${name}`, { force: true });
          }
        });

        it('fails with EBADF for an fd that is not open', () => {
          assert.throws(() => Region.fromFd(987654), { code: 'EBADF' });
        });

        it('rejects sending a SharedArrayBuffer region over a socket', async () => {
          const region = Region.create({ backing: 'sab', size: 64 });
          await assert.rejects(sendRegion(new net.Socket(), region), { code: 'ERR_SHMRING_INVALID_BACKING' });
        });

        it('times out receiving when the peer never sends', async () => {
          const socketPath = path.join(os.tmpdir(), `${uniqueName('quiet')}.sock`);
          const server = net.createServer({ pauseOnConnect: true }, () => {});
          await new Promise<void>((resolve) => server.listen(socketPath, resolve));
          const socket = net.connect({ path: socketPath });
          try {
            await assert.rejects(receiveRegion(socket, { timeoutMs: 50 }), { code: 'ERR_SHMRING_TIMEOUT' });
          } finally {
            socket.destroy();
            server.close();
          }
        });

        it('reports a peer that closes the socket without sending', async () => {
          const socketPath = path.join(os.tmpdir(), `${uniqueName('eof')}.sock`);
          const server = net.createServer({ pauseOnConnect: true }, (s) => s.end());
          await new Promise<void>((resolve) => server.listen(socketPath, resolve));
          const socket = net.connect({ path: socketPath });
          try {
            await assert.rejects(receiveRegion(socket, { timeoutMs: 5000 }), { code: 'ERR_SHMRING_NO_FD' });
          } finally {
            socket.destroy();
            server.close();
          }
        });

        it('fails with EACCES when another user opens a POSIX region created with the default mode 0600', async function () {
          if (process.getuid?.() !== 0) this.skip(); // needs root to start a process as another user
          const name = uniqueName('perm');
          using region = Region.create({ backing: 'posix', name, size: 4096 });
          try {
            const { stdout, stderr } = await runNode(PEER, ['open-posix', name], { env, uid: 65534, gid: 65534 }).done;
            assert.equal(stdout, 'EACCES', stderr);
          } finally {
            region.unlink();
          }
        });

        it('maps a region read-only when asked and reads what the writer wrote', () => {
          const name = uniqueName('ro');
          using region = Region.create({ backing: 'posix', name, size: 4096 });
          try {
            new Uint8Array(region.buffer)[5] = 9;
            using ro = Region.open({ backing: 'posix', name, readOnly: true });
            assert.equal(ro.readOnly, true);
            assert.equal(new Uint8Array(ro.buffer)[5], 9);
          } finally {
            region.unlink();
          }
        });
      });

      it('uses the backend it was asked for', () => {
        assert.equal(backend().kind, kind);
      });
    });
  }
});

describe('unlinkOnExit', () => {
  /** Starts a peer that creates `name` with unlinkOnExit, waits until it has, sends SIGTERM; resolves with how it ended. */
  async function terminate(name: string, withHandler: boolean): Promise<{ code: number | null; signal: string | null }> {
    const child = spawn(process.execPath, [PEER, 'unlink-on-exit', name, ...(withHandler ? ['handler'] : [])], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const [ready] = (await once(child.stdout!, 'data')) as [Buffer];
    assert.equal(String(ready), 'ready');
    assert.ok(fs.existsSync(`/dev/shm/${name}`));
    const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
    child.kill('SIGTERM');
    const [code, signal] = await exited;
    return { code, signal };
  }

  it('cannot remove the name when a SIGTERM that no handler catches kills the process', async () => {
    const name = uniqueName('sigterm');
    try {
      assert.deepEqual(await terminate(name, false), { code: null, signal: 'SIGTERM' });
      assert.equal(fs.existsSync(`/dev/shm/${name}`), true, 'no exit handler runs on a default SIGTERM');
    } finally {
      fs.rmSync(`/dev/shm/${name}`, { force: true });
    }
  });

  it('adds one exit listener per process, however many regions are created with it and unlinked', () => {
    // Each create after an unlink() had emptied the list of names added another, never removed (MaxListenersExceededWarning).
    const before = process.listenerCount('exit');
    for (let i = 0; i < 20; i++) {
      const region = Region.create({ backing: 'posix', name: uniqueName(`exit-listener-${i}`), size: 4096, unlinkOnExit: true });
      region.unlink();
      region.close();
    }
    assert.ok(process.listenerCount('exit') <= before + 1, `${process.listenerCount('exit') - before} exit listeners were added`);
  });

  it("leaves alone a newer object that took the name after this region's was removed: at exit, and at unlink()", () => {
    const name = uniqueName('renamed');
    const file = path.join(os.tmpdir(), `${uniqueName('renamed')}.region`);
    const index = new URL('../src/index.js', import.meta.url).href;
    // A child creates both with unlinkOnExit, someone removes their names, another creator takes them; the child exits.
    const code = `
      import * as fs from 'node:fs';
      const { Region } = await import(${JSON.stringify(index)});
      const ours = [Region.create({ backing: 'posix', name: ${JSON.stringify(name)}, size: 4096, unlinkOnExit: true }),
        Region.create({ backing: 'file', path: ${JSON.stringify(file)}, size: 4096, unlinkOnExit: true })];
      fs.rmSync('/dev/shm/${name}');
      fs.rmSync(${JSON.stringify(file)});
      const newer = [Region.create({ backing: 'posix', name: ${JSON.stringify(name)}, size: 4096 }),
        Region.create({ backing: 'file', path: ${JSON.stringify(file)}, size: 4096 })];
      // The POSIX one is left to the exit; the file's unlink() is called.
      let said = 'unlinked';
      try { ours[1].unlink(); } catch (err) { said = err.code; }
      console.log(JSON.stringify(said));`;
    try {
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8' });
      assert.equal(child.status, 0, child.stderr);
      assert.equal(JSON.parse(child.stdout), 'ENOENT', "unlink() of the file's removed path");
      assert.ok(fs.existsSync(`/dev/shm/${name}`), "the newer POSIX object's name was removed");
      assert.ok(fs.existsSync(file), "the newer file's path was removed");
    } finally {
      fs.rmSync(`/dev/shm/${name}`, { force: true });
      fs.rmSync(file, { force: true });
    }
  });

  it("keeps the newer object's own unlinkOnExit when unlink() of the older one finds the name taken", () => {
    const name = uniqueName('taken');
    const index = new URL('../src/index.js', import.meta.url).href;
    const code = `
      import * as fs from 'node:fs';
      const { Region } = await import(${JSON.stringify(index)});
      const older = Region.create({ backing: 'posix', name: ${JSON.stringify(name)}, size: 4096, unlinkOnExit: true });
      fs.rmSync('/dev/shm/${name}');
      Region.create({ backing: 'posix', name: ${JSON.stringify(name)}, size: 4096, unlinkOnExit: true });
      try { older.unlink(); } catch (err) { console.log(err.code); }`;
    try {
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8' });
      assert.equal(child.status, 0, child.stderr);
      assert.equal(child.stdout.trim(), 'ENOENT');
      assert.equal(fs.existsSync(`/dev/shm/${name}`), false, "the newer region's unlinkOnExit was dropped by the older one's unlink()");
    } finally {
      fs.rmSync(`/dev/shm/${name}`, { force: true });
    }
  });

  it('removes the name when a SIGTERM handler calls process.exit()', async () => {
    const name = uniqueName('sigterm-handled');
    try {
      assert.deepEqual(await terminate(name, true), { code: 0, signal: null });
      assert.equal(fs.existsSync(`/dev/shm/${name}`), false);
    } finally {
      fs.rmSync(`/dev/shm/${name}`, { force: true });
    }
  });
});

describe('Region sizes this Node cannot map, and objects reused with exclusive: false', () => {
  for (const kind of kinds) {
    describe(`with the ${kind} backend`, () => {
      withBackend(kind);

      // Node 20 makes an external ArrayBuffer as a Buffer, capped at buffer.constants.MAX_LENGTH (4 GiB);
      // mapping more once freed the mapping twice and aborted the process.
      it('a mapped region larger than buffer.constants.MAX_LENGTH is a RangeError before anything is created', function () {
        const MAX_LENGTH = bufferConstants.MAX_LENGTH;
        if (MAX_LENGTH >= 2 ** 40) this.skip(); // a Node whose Buffers reach the region limit
        const name = uniqueName('huge');
        const file = path.join(os.tmpdir(), `${uniqueName('huge')}.region`);
        for (const options of [
          { backing: 'memfd' as const, size: MAX_LENGTH + 1 },
          { backing: 'posix' as const, name, size: MAX_LENGTH + 1 },
          { backing: 'file' as const, path: file, size: MAX_LENGTH + 1 },
        ]) {
          assert.throws(() => Region.create(options), { code: 'ERR_SHMRING_INVALID_ARGUMENT', name: 'RangeError', message: /MAX_LENGTH/ });
        }
        assert.equal(fs.existsSync(`/dev/shm/${name}`), false, 'no POSIX object was made');
        assert.equal(fs.existsSync(file), false, 'no file was made');
        assert.throws(() => Region.snapshot(() => undefined, { size: MAX_LENGTH + 1 }), { code: 'ERR_SHMRING_INVALID_ARGUMENT' });
      });

      it('creators that race size the object one after the other: the smaller size never lands last', async function () {
        this.timeout(20_000);
        const name = uniqueName('sizing');
        // Stands for a creator caught between its look at the size (0) and its ftruncate to 4096.
        const fd = fs.openSync(`/dev/shm/${name}`, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
        try {
          assert.ok(backend().ofdLock(fd, SIZING_LOCK_BYTE, 1), 'took the sizing lock');
          const child = spawn(process.execPath, [PEER, 'create-shared', name, '8192'], { stdio: ['pipe', 'pipe', 'inherit'] });
          const exited = once(child, 'exit');
          let out = '';
          child.stdout.on('data', (d: Buffer) => (out += d));
          await new Promise((resolve) => setTimeout(resolve, 300));
          assert.equal(out, '', 'the other creator mapped while this one was sizing');
          fs.ftruncateSync(fd, 4096);
          backend().ofdLock(fd, SIZING_LOCK_BYTE, 2);
          child.stdin.write('go');
          const [code, signal] = await exited;
          assert.equal(signal, null, `the other creator died of ${signal}: the object shrank under its mapping`);
          assert.equal(code, 0);
          assert.equal(out, 'mapped 8192\ntouched\n');
          assert.equal(fs.fstatSync(fd).size, 8192, 'the larger size landed last');
        } finally {
          fs.closeSync(fd);
          fs.rmSync(`/dev/shm/${name}`, { force: true });
        }
      });

      it('an open of a name whose creator is still sizing it waits for the size, rather than failing on an empty object', async function () {
        this.timeout(20_000);
        for (const lockFirst of [true, false]) {
          const name = uniqueName('opening');
          // A creator between its O_EXCL open and its fallocate: holding the sizing lock, or (a few system calls
          // earlier) not yet.
          const fd = fs.openSync(`/dev/shm/${name}`, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
          try {
            if (lockFirst) assert.ok(backend().ofdLock(fd, SIZING_LOCK_BYTE, 1), 'took the sizing lock');
            const child = spawn(process.execPath, [PEER, 'open-size', name], { stdio: ['ignore', 'pipe', 'inherit'] });
            const exited = once(child, 'exit');
            let out = '';
            child.stdout.on('data', (d: Buffer) => (out += d));
            while (!out.includes('opening\n')) await new Promise((resolve) => setTimeout(resolve, 1));
            // Not locked yet: the creator takes its lock a moment later, while the open looks at the empty object (for
            // up to 100 ms), and sizes it only at the end of a long fallocate.
            if (!lockFirst) {
              await new Promise((resolve) => setTimeout(resolve, 10));
              assert.ok(backend().ofdLock(fd, SIZING_LOCK_BYTE, 1), 'took the sizing lock');
            }
            await new Promise((resolve) => setTimeout(resolve, 300)); // a long fallocate: the size comes at its end
            assert.equal(out, 'opening\n', `the open ended before the object was sized (${lockFirst ? 'locked' : 'not locked yet'})`);
            fs.ftruncateSync(fd, 8192);
            backend().ofdLock(fd, SIZING_LOCK_BYTE, 2);
            await exited;
            assert.equal(out, 'opening\nopened 8192', lockFirst ? 'sizing lock held' : 'before the sizing lock');
          } finally {
            fs.closeSync(fd);
            fs.rmSync(`/dev/shm/${name}`, { force: true });
          }
        }
      });

      it("create with exclusive: false never shrinks an existing POSIX object or file: the other holders' pages stay", () => {
        const name = uniqueName('noshrink');
        const file = path.join(os.tmpdir(), `${uniqueName('noshrink')}.region`);
        const pairs: [CreateOptions, CreateOptions][] = [
          [
            { backing: 'posix' as const, name, size: 65536 },
            { backing: 'posix' as const, name, size: 4096, exclusive: false },
          ],
          [
            { backing: 'file' as const, path: file, size: 65536 },
            { backing: 'file' as const, path: file, size: 4096, exclusive: false },
          ],
        ];
        for (const [first, again] of pairs) {
          const holder = Region.create(first);
          try {
            using reused = Region.create(again);
            assert.equal(reused.size, 65536, 'mapped at the size it has');
            const view = new Uint8Array(holder.buffer);
            view[65535] = 7; // past 4096: a shrunk object would raise SIGBUS here
            assert.equal(new Uint8Array(reused.buffer)[65535], 7);
            using grown = Region.create({ ...again, size: 131072 });
            assert.equal(grown.size, 131072, 'a smaller object grows to the size asked');
          } finally {
            holder.unlink();
            holder.close();
          }
        }
      });
    });
  }
});
