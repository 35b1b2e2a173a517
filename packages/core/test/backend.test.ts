/**
 * Contract tests of the native layer (src/native/backend.ts), run against
 * every backend that loads here: the Rust addon when it is built, and koffi.
 * Cross-process claims are checked with real child processes that inherit
 * a memfd as fd 3 and load the same backend (SHMRING_BACKEND).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { NativeBackend } from '../src/native/backend.js';
import { saidWhatToDo } from '../src/native/info.js';
import { errnoName } from '../src/native/koffi.js';
import { availableBackends, loadBackend, type BackendKind } from '../src/native/loader.js';
import { assertClosed, fileOf, uniqueName } from './helpers.js';

/** The compiled loader, for child processes (dist/test → dist/src). */
const LOADER_URL = new URL('../src/native/loader.js', import.meta.url).href;
const PAGE = 4096;
const F_SEAL_SHRINK = 2;
const { O_CREAT, O_EXCL, O_RDWR } = fs.constants;
const O_CLOEXEC = 0o2000000;

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True if the parent had to kill the child because it did not exit in time. */
  killed: boolean;
}

/**
 * Runs `body` as an ES module in a new node process with `b` = the backend
 * `kind`, and fd 3 = `fd` when given. The child is killed after `killAfterMs`.
 */
function runChild(
  kind: BackendKind,
  body: string,
  options: { fd?: number; nodeArgs?: string[]; killAfterMs?: number; env?: NodeJS.ProcessEnv } = {},
): { done: Promise<ChildResult> } {
  const code =
    `import { loadBackend } from ${JSON.stringify(LOADER_URL)};\n` + `const b = loadBackend(process.env.SHMRING_BACKEND);\n${body}`;
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), '--input-type=module', '-e', code], {
    stdio: ['ignore', 'pipe', 'pipe', options.fd ?? 'ignore'],
    env: { ...process.env, ...options.env, SHMRING_BACKEND: kind },
  });
  let stdout = '';
  let stderr = '';
  let killed = false;
  child.stdout!.on('data', (d: Buffer) => (stdout += d));
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  const killer = setTimeout(() => {
    killed = true;
    child.kill('SIGKILL');
  }, options.killAfterMs ?? 30_000);
  const done = new Promise<ChildResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, stdout, stderr, killed });
    });
  });
  return { done };
}

/** Polls `condition` until it holds; fails after `timeoutMs`. */
async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await sleep(2);
  }
}

/** A new memfd of `size` bytes. */
function memfd(b: NativeBackend, size = PAGE): number {
  const fd = b.memfdCreate(uniqueName('backend'));
  fs.ftruncateSync(fd, size);
  return fd;
}

const kinds = availableBackends();

describe('the native backends', () => {
  it('include koffi, which needs nothing built', () => {
    assert.ok(kinds.includes('koffi'), `available: ${kinds.join(', ')}`);
  });

  it('an error of a way to wait the kernel refuses says what to do, and keeps its code, errno and syscall', () => {
    const sysError = (syscall: string, code: string, errno: number): NodeJS.ErrnoException =>
      Object.assign(new Error(`${syscall} failed (${code})`), { syscall, code, errno });
    const before = process.env.SHMRING_ASYNC_WAIT;
    try {
      process.env.SHMRING_ASYNC_WAIT = 'io_uring';
      const refused = saidWhatToDo(sysError('io_uring_setup', 'EPERM', 1)) as NodeJS.ErrnoException;
      assert.deepEqual([refused.code, refused.errno, refused.syscall], ['EPERM', 1, 'io_uring_setup']);
      assert.match(refused.message, /^io_uring_setup failed \(EPERM\); SHMRING_ASYNC_WAIT=io_uring forces .*unset it \(or set auto\)/);
      delete process.env.SHMRING_ASYNC_WAIT;
      const old = saidWhatToDo(sysError('futex_waitv', 'ENOSYS', 38)) as Error;
      assert.match(old.message, /needs futex_waitv, Linux 5\.16 or later: use select\(\) on the event loop/);
      const other = sysError('mmap', 'ENOMEM', 12);
      assert.equal((saidWhatToDo(other) as Error).message, 'mmap failed (ENOMEM)', 'other errors are left as they are');
      const plain = new RangeError('not a system call');
      assert.equal(saidWhatToDo(plain), plain);
    } finally {
      if (before === undefined) delete process.env.SHMRING_ASYNC_WAIT;
      else process.env.SHMRING_ASYNC_WAIT = before;
    }
  });

  it("the koffi backend's errors name an errno libuv has no name for as os.constants.errno does (EIDRM, EDQUOT), as the addon's do", () => {
    assert.equal(errnoName(os.constants.errno.EIDRM), 'EIDRM');
    assert.equal(errnoName(os.constants.errno.EDQUOT), 'EDQUOT');
    assert.equal(errnoName(os.constants.errno.ENOENT), 'ENOENT');
    assert.equal(errnoName(os.constants.errno.EOPNOTSUPP), 'ENOTSUP', "libuv's name first, as Node's own errors have it");
    assert.equal(errnoName(100_000), 'E100000');
  });

  it("the koffi backend names errno 0 (a call that failed without setting errno) E0, as the addon does, instead of throwing Node's RangeError", () => {
    assert.equal(errnoName(0), 'E0');
  });

  it("the koffi backend's futex calls on a buffer whose region was closed are ERR_SHMRING_CLOSED where it cannot detach the buffer (no wait that no close would end)", async () => {
    // Code generation from strings disallowed: koffi cannot compile its detacher, so munmap leaves the
    // buffer its length and the memory mapped until GC ('released').
    const { code, stdout, stderr } = await runChild(
      'koffi',
      `const fd = b.memfdCreate('closed'); (await import('node:fs')).ftruncateSync(fd, 4096);
       const buffer = b.mmap(fd, 4096, true, true);
       b.munmap(buffer);
       const seen = [buffer.byteLength];
       for (const call of [() => b.futexWake(buffer, 0, 1), () => b.futexWait(buffer, 0, 0, 10), () => b.futexWaitAsync(buffer, 0, 0, 10_000),
                           () => b.futexWaitAny([{ buffer, byteOffset: 0, expected: 0 }], 10)]) {
         try { const r = call(); seen.push(r && r.promise ? 'started a wait' : String(r)); if (r && r.cancel) r.cancel(); }
         catch (err) { seen.push(err.code + ': ' + err.message); }
       }
       console.log(JSON.stringify(seen));`,
      { nodeArgs: ['--disallow-code-generation-from-strings'] },
    ).done;
    assert.equal(code, 0, stderr);
    const [length, ...calls] = JSON.parse(stdout) as [number, ...string[]];
    assert.equal(length, 4096, 'the buffer was detached: this run does not test the case without a detacher');
    for (const seen of calls)
      assert.match(seen, /^ERR_SHMRING_CLOSED: futex: the buffer was unmapped \(its region was closed\): keep the region open/);
  });

  it('the koffi backend answers a futexWaitAny of timeout 0 from the words, with no system call (none queues where a wake-one could land)', () => {
    const k = loadBackend('koffi') as NativeBackend & { native: { syscall: (...args: unknown[]) => number } };
    const buffer = new SharedArrayBuffer(16);
    const targets = [0, 4, 8].map((byteOffset) => ({ buffer, byteOffset, expected: 0 }));
    const syscall = k.native.syscall;
    let calls = 0;
    k.native.syscall = (...args: unknown[]) => {
      calls++;
      return syscall(...args);
    };
    try {
      assert.equal(k.futexWaitAny(targets, 0), -2, 'all equal: timed out');
      Atomics.store(new Int32Array(buffer), 2, 1);
      assert.equal(k.futexWaitAny(targets, 0), -1, 'one differs');
      assert.equal(calls, 0, 'futex_waitv was called');
    } finally {
      k.native.syscall = syscall;
    }
  });

  it('the koffi backend works where the application loaded a library through koffi first (koffi then refuses a new config)', () => {
    const index = new URL('../src/index.js', import.meta.url).href;
    const code = `import { createRequire } from 'node:module';
      createRequire(${JSON.stringify(index)})('koffi').load('libc.so.6'); // the application's own use of koffi
      const { Region } = await import(${JSON.stringify(index)});
      try { Region.create({ backing: 'memfd', size: 4096 }).close(); console.log('ok'); }
      catch (err) { console.log(err.code + ' ' + err.message); }`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
      env: { ...process.env, SHMRING_BACKEND: 'koffi' },
      encoding: 'utf8',
    });
    assert.equal(child.stdout.trim(), 'ok', child.stderr);
  });

  it('a misspelt SHMRING_BACKEND or SHMRING_ASYNC_WAIT is ERR_SHMRING_NO_BACKEND naming the value, at the first use, whichever backend', () => {
    const code = `const { Region } = await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});
      try { Region.create({ backing: 'memfd', size: 4096 }).close(); console.log('ok'); }
      catch (err) { console.log(err.code + ' ' + err.message); }`;
    const run = (env: Record<string, string>): string =>
      spawnSync(process.execPath, ['--input-type=module', '-e', code], { env: { ...process.env, ...env }, encoding: 'utf8' }).stdout.trim();
    assert.equal(run({ SHMRING_BACKEND: 'adon' }), "ERR_SHMRING_NO_BACKEND SHMRING_BACKEND=adon is not a backend; use 'addon' or 'koffi'");
    for (const backend of kinds) {
      // Regression: the addon refused it only at the first async wait, with Node's ERR_OUT_OF_RANGE; koffi ignored it.
      assert.match(
        run({ SHMRING_BACKEND: backend, SHMRING_ASYNC_WAIT: 'io-uring' }),
        /^ERR_SHMRING_NO_BACKEND SHMRING_ASYNC_WAIT=io-uring is not a way/,
      );
      for (const way of ['auto', 'threads'])
        assert.equal(run({ SHMRING_BACKEND: backend, SHMRING_ASYNC_WAIT: way }), 'ok', `${backend}, ${way}`);
    }
  });
});

for (const kind of kinds) {
  describe(`the ${kind} backend`, () => {
    const b = loadBackend(kind);
    /** fds and mappings a test opened, released after it. */
    let fds: number[] = [];
    let buffers: ArrayBuffer[] = [];
    const open = (size = PAGE) => {
      const fd = memfd(b, size);
      fds.push(fd);
      return fd;
    };
    const map = (fd: number, size = PAGE) => {
      const buffer = b.mmap(fd, size, true);
      buffers.push(buffer);
      return buffer;
    };
    afterEach(() => {
      for (const buffer of buffers) b.munmap(buffer);
      for (const fd of fds) fs.closeSync(fd);
      fds = [];
      buffers = [];
    });

    it(`says it is the ${kind} backend`, () => {
      assert.equal(b.kind, kind);
    });

    describe('memfd and mappings', () => {
      it('maps a memfd read/write so that bytes written through the buffer reach the file and back', () => {
        const fd = open(2 * PAGE);
        const buffer = map(fd, 2 * PAGE);
        assert.equal(buffer.byteLength, 2 * PAGE);
        const bytes = new Uint8Array(buffer);
        bytes[0] = 0xa5;
        bytes[2 * PAGE - 1] = 0x5a;
        const check = Buffer.alloc(1);
        fs.readSync(fd, check, 0, 1, 0);
        assert.equal(check[0], 0xa5);
        fs.readSync(fd, check, 0, 1, 2 * PAGE - 1);
        assert.equal(check[0], 0x5a);
        fs.writeSync(fd, Buffer.from([7, 8, 9]), 0, 3, 100);
        assert.deepEqual([...bytes.subarray(100, 103)], [7, 8, 9]);
      });

      it('creates memfds close-on-exec', () => {
        const fd = open();
        const flags = /flags:\s+([0-7]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1];
        assert.ok(flags !== undefined);
        assert.equal(parseInt(flags, 8) & O_CLOEXEC, O_CLOEXEC);
      });

      it('shares a mapping with a child process that maps the inherited fd', async () => {
        const fd = open();
        const i32 = new Int32Array(map(fd));
        Atomics.store(i32, 0, 1234); // seen by the child's Atomics.load
        const child = runChild(
          kind,
          `
          const i32 = new Int32Array(b.mmap(3, ${PAGE}, true));
          const seen = Atomics.load(i32, 0);
          Atomics.store(i32, 1, seen + 1);
          process.stdout.write(String(seen));
        `,
          { fd },
        );
        const { code, stdout, stderr } = await child.done;
        assert.equal(code, 0, stderr);
        assert.equal(stdout, '1234');
        assert.equal(Atomics.load(i32, 1), 1235); // the child's Atomics.store
      });

      it('rejects a length of 0, a negative or a fractional length with RangeError', () => {
        const fd = open();
        for (const length of [0, -1, -PAGE, 1.5, NaN, Number.MAX_SAFE_INTEGER + 2]) {
          assert.throws(() => b.mmap(fd, length, true), RangeError, `length ${length}`);
        }
      });

      it('reports a failed mmap of a bad fd as EBADF', () => {
        // A number the kernel gives out only to a process with nearly a million open fds (a number just
        // closed could be given to another thread's open before the call).
        const fd = 987654;
        assert.throws(() => b.mmap(fd, PAGE, true), { code: 'EBADF', errno: os.constants.errno.EBADF, syscall: 'mmap' });
      });

      it('refuses to munmap an ArrayBuffer it did not map, with TypeError', () => {
        assert.throws(() => b.munmap(new ArrayBuffer(PAGE)), TypeError);
        assert.throws(() => b.munmap(new SharedArrayBuffer(PAGE) as unknown as ArrayBuffer), TypeError);
        assert.throws(() => b.munmap(new Uint8Array(8) as unknown as ArrayBuffer), TypeError);
      });

      it('treats a second munmap of the same buffer as a no-op', () => {
        const buffer = b.mmap(open(), PAGE, true);
        b.munmap(buffer);
        assert.doesNotThrow(() => b.munmap(buffer));
        assert.equal(buffer.byteLength, 0);
      });

      it('leaves stale views empty after munmap instead of faulting', () => {
        const buffer = b.mmap(open(), PAGE, true);
        const bytes = new Uint8Array(buffer);
        const i32 = new Int32Array(buffer);
        bytes[0] = 42;
        assert.equal(bytes[0], 42);
        b.munmap(buffer);
        assert.equal(buffer.byteLength, 0);
        assert.equal(bytes.length, 0);
        assert.equal(bytes[0], undefined);
        assert.equal(bytes[PAGE - 1], undefined);
        assert.throws(() => Atomics.load(i32, 0), TypeError);
        assert.throws(() => b.futexWait(buffer, 0, 0, 0), RangeError);
      });

      it('unmaps the memory of a buffer that was garbage collected without munmap', async () => {
        const label = uniqueName('gc');
        const child = runChild(
          kind,
          `
          import * as fs from 'node:fs';
          const fd = b.memfdCreate(${JSON.stringify(label)});
          fs.ftruncateSync(fd, ${4 * PAGE});
          const maps = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\\n')
            .filter((line) => line.includes(${JSON.stringify(label)})).length;
          let buffer = b.mmap(fd, ${4 * PAGE}, true);
          new Uint8Array(buffer)[0] = 1;
          const before = maps();
          buffer = null;
          for (let i = 0; i < 50 && maps() > 0; i++) {
            globalThis.gc();
            await new Promise((resolve) => setTimeout(resolve, 10));
          }
          process.stdout.write(JSON.stringify({ before, after: maps() }));
        `,
          { nodeArgs: ['--expose-gc'] },
        );
        const { code, stdout, stderr } = await child.done;
        assert.equal(code, 0, stderr);
        assert.deepEqual(JSON.parse(stdout), { before: 1, after: 0 });
      });
    });

    describe('fds a mapping owns', () => {
      /** True while `fd` is open on the memfd labelled `label` (a number alone may be reused). */
      const isOpenOn = (fd: number, label: string) => {
        try {
          return fs.readlinkSync(`/proc/self/fd/${fd}`).includes(label);
        } catch {
          return false;
        }
      };

      it('closes the fd given with ownFd at munmap, and leaves an fd it does not own open', () => {
        const label = uniqueName('own');
        const owned = b.memfdCreate(label);
        fs.ftruncateSync(owned, PAGE);
        b.munmap(b.mmap(owned, PAGE, true, true));
        assert.equal(isOpenOn(owned, label), false);
        const kept = open();
        b.munmap(b.mmap(kept, PAGE, true));
        assert.equal(fs.fstatSync(kept).size, PAGE);
      });

      it('leaves the fd with the caller when mmap fails, even with ownFd', () => {
        const file = path.join(os.tmpdir(), uniqueName('own-fail'));
        fs.writeFileSync(file, Buffer.alloc(PAGE));
        try {
          const fd = b.open(file, fs.constants.O_RDONLY, 0);
          fds.push(fd);
          // A writable shared mapping of a read-only fd: the kernel refuses it.
          assert.throws(() => b.mmap(fd, PAGE, true, true), { code: 'EACCES', syscall: 'mmap' });
          assert.throws(() => b.mmap(fd, PAGE, false, 'yes' as unknown as boolean), TypeError);
          assert.equal(isOpenOn(fd, path.basename(file)), true);
        } finally {
          fs.rmSync(file, { force: true });
        }
      });

      it('closes the fd a mapping owns when its buffer is garbage collected', async () => {
        const label = uniqueName('own-gc');
        const child = runChild(
          kind,
          `
          import * as fs from 'node:fs';
          const open = () => fs.readdirSync('/proc/self/fd').filter((fd) => {
            try { return fs.readlinkSync('/proc/self/fd/' + fd).includes(${JSON.stringify(label)}); } catch { return false; }
          }).length;
          let buffers = [];
          for (let i = 0; i < 10; i++) {
            const fd = b.memfdCreate(${JSON.stringify(label)});
            fs.ftruncateSync(fd, ${PAGE});
            buffers.push(b.mmap(fd, ${PAGE}, true, true));
          }
          const before = open();
          buffers = null;
          for (let i = 0; i < 50 && open() > 0; i++) {
            globalThis.gc();
            await new Promise((resolve) => setTimeout(resolve, 10));
          }
          process.stdout.write(JSON.stringify({ before, after: open() }));
        `,
          { nodeArgs: ['--expose-gc'] },
        );
        const { code, stdout, stderr } = await child.done;
        assert.equal(code, 0, stderr);
        assert.deepEqual(JSON.parse(stdout), { before: 10, after: 0 });
      });

      it('opens a file close-on-exec with open, reports ENOENT with the syscall, and closes it with close', () => {
        const file = path.join(os.tmpdir(), uniqueName('open'));
        try {
          const fd = b.open(file, fs.constants.O_RDWR | O_CREAT | O_EXCL, 0o600);
          const flags = /flags:\s+([0-7]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1];
          assert.equal(parseInt(flags!, 8) & O_CLOEXEC, O_CLOEXEC);
          assert.equal(fs.statSync(file).mode & 0o777, 0o600);
          const opened = fileOf(fd);
          b.close(fd);
          assertClosed(fd, opened);
          assert.throws(() => b.open(file, O_RDWR | O_CREAT | O_EXCL, 0o600), { code: 'EEXIST', syscall: 'open' });
          assert.throws(() => b.open(`${file}.none`, O_RDWR, 0), { code: 'ENOENT', syscall: 'open' });
          assert.throws(() => b.close(987654), { code: 'EBADF', syscall: 'close' });
        } finally {
          fs.rmSync(file, { force: true });
        }
      });
    });

    describe('seals', () => {
      it('makes a shrinking ftruncate fail with EPERM once F_SEAL_SHRINK is added', () => {
        const fd = open(2 * PAGE);
        assert.equal(b.getSeals(fd), 0);
        b.addSeals(fd, F_SEAL_SHRINK);
        assert.equal(b.getSeals(fd), F_SEAL_SHRINK);
        assert.throws(() => fs.ftruncateSync(fd, PAGE), { code: 'EPERM' });
        assert.equal(fs.fstatSync(fd).size, 2 * PAGE);
        fs.ftruncateSync(fd, 3 * PAGE); // growing is still allowed
        assert.equal(fs.fstatSync(fd).size, 3 * PAGE);
      });

      it('reports getSeals of an fd that cannot be sealed as EINVAL from fcntl', () => {
        const fd = fs.openSync('/dev/null', 'r');
        try {
          assert.throws(() => b.getSeals(fd), { code: 'EINVAL', errno: os.constants.errno.EINVAL, syscall: 'fcntl' });
        } finally {
          fs.closeSync(fd);
        }
      });
    });

    describe('open file description locks', () => {
      /** Another open file description of the memfd `fd` (what FileLocks makes). */
      const reopen = (fd: number): number => {
        const other = b.open(`/proc/self/fd/${fd}`, O_RDWR, 0);
        fds.push(other);
        return other;
      };

      it('keeps a second description out of an exclusive lock, lets shared ones share, and reports holders to a third', () => {
        const fd = open();
        const [a, c] = [reopen(fd), reopen(fd)];
        assert.equal(b.ofdTest(fd, 44, 1), 2, 'nobody holds byte 44 yet');
        assert.equal(b.ofdLock(a, 44, 1), true);
        assert.equal(b.ofdLock(c, 44, 1), false, 'a second exclusive lock was granted');
        assert.equal(b.ofdLock(c, 44, 0), false, 'a shared lock was granted over an exclusive one');
        assert.equal(b.ofdTest(fd, 44, 1), 1);
        assert.equal(b.ofdTest(fd, 45, 1), 2, 'the lock covers one byte');
        assert.equal(b.ofdLock(a, 48, 0), true);
        assert.equal(b.ofdLock(c, 48, 0), true);
        assert.equal(b.ofdTest(fd, 48, 0), 2, 'shared locks do not conflict with a shared one');
        assert.equal(b.ofdTest(fd, 48, 1), 0);
        assert.equal(b.ofdLock(a, 44, 2), true);
        assert.equal(b.ofdTest(fd, 44, 1), 2, 'released');
        assert.equal(b.ofdLock(c, 44, 1), true);
      });

      it('shares locks between fds of one description (a dup never conflicts), and drops them when the last one closes', () => {
        const fd = open();
        const a = reopen(fd);
        const copy = b.dup(a);
        assert.equal(b.ofdLock(a, 0, 1), true);
        assert.equal(b.ofdLock(copy, 0, 1), true, 'a dup of the holder conflicted with it');
        assert.equal(b.ofdTest(a, 0, 1), 2, 'the holder does not see its own lock');
        b.close(a);
        fds.splice(fds.indexOf(a), 1);
        assert.equal(b.ofdTest(fd, 0, 1), 1, 'the dup still holds the lock');
        b.close(copy);
        assert.equal(b.ofdTest(fd, 0, 1), 2);
      });

      it('drops the locks of a process that is killed', async () => {
        const fd = open();
        const loader = new URL('../src/native/loader.js', import.meta.url).href;
        const child = spawn(
          process.execPath,
          [
            '--input-type=module',
            '-e',
            `
          import { loadBackend } from ${JSON.stringify(loader)};
          const b = loadBackend(${JSON.stringify(kind)});
          const own = b.open('/proc/self/fd/3', ${O_RDWR}, 0);
          if (!b.ofdLock(own, 7, 1)) throw new Error('the lock was refused');
          process.stdout.write('locked');
          setInterval(() => {}, 1000);
        `,
          ],
          { stdio: ['ignore', 'pipe', 'inherit', fd] },
        );
        await new Promise((resolve) => child.stdout!.once('data', resolve));
        assert.equal(b.ofdTest(fd, 7, 1), 1, 'the child holds the lock');
        assert.equal(b.ofdLock(reopen(fd), 7, 0), false);
        child.kill('SIGKILL');
        await new Promise((resolve) => child.once('close', resolve));
        assert.equal(b.ofdTest(fd, 7, 1), 2, 'the lock outlived its process');
      });

      it('rejects a bad lock type or offset before any system call', () => {
        const fd = open();
        assert.throws(() => b.ofdLock(fd, -1, 1), RangeError);
        assert.throws(() => b.ofdLock(fd, 0, 3 as 1), RangeError);
        assert.throws(() => b.ofdTest(fd, 0, 2 as 1), RangeError);
      });
    });

    describe('POSIX shared memory', () => {
      it('refuses a second exclusive shm_open of one name with EEXIST, errno and syscall', () => {
        const name = `/${uniqueName('excl')}`;
        const flags = O_RDWR | O_CREAT | O_EXCL;
        const fd = b.shmOpen(name, flags, 0o600);
        try {
          assert.ok(fd >= 0);
          assert.equal(fs.statSync(`/dev/shm${name}`).mode & 0o777, 0o600);
          assert.throws(
            () => b.shmOpen(name, flags, 0o600),
            (err: NodeJS.ErrnoException) => {
              assert.ok(err instanceof Error);
              assert.equal(err.code, 'EEXIST');
              assert.equal(err.errno, os.constants.errno.EEXIST);
              assert.equal(err.syscall, 'shm_open');
              assert.match(err.message, /^shm_open failed: .+ \(EEXIST\)$/);
              return true;
            },
          );
        } finally {
          fs.closeSync(fd);
          b.shmUnlink(name);
        }
        assert.equal(fs.existsSync(`/dev/shm${name}`), false);
      });

      it('opens POSIX shared memory close-on-exec', () => {
        const name = `/${uniqueName('cloexec')}`;
        const fd = b.shmOpen(name, O_RDWR | O_CREAT | O_EXCL, 0o600);
        try {
          const flags = /flags:\s+([0-7]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1];
          assert.equal(parseInt(flags ?? '0', 8) & O_CLOEXEC, O_CLOEXEC);
        } finally {
          fs.closeSync(fd);
          b.shmUnlink(name);
        }
      });

      it('reports shm_unlink of a missing name as ENOENT', () => {
        const name = `/${uniqueName('missing')}`;
        assert.throws(() => b.shmUnlink(name), { code: 'ENOENT', errno: os.constants.errno.ENOENT, syscall: 'shm_unlink' });
        assert.throws(() => b.shmOpen(name, O_RDWR, 0), { code: 'ENOENT', syscall: 'shm_open' });
      });
    });

    describe('argument types, the same on both backends', () => {
      it('rejects a futexWaitAsync ref that is not a boolean with TypeError before any wait starts, and takes undefined as the default', async () => {
        const buffer = new SharedArrayBuffer(8);
        for (const ref of ['yes', 1, null]) {
          assert.throws(
            () => b.futexWaitAsync(buffer, 0, 0, 10_000, ref as unknown as boolean),
            (err: NodeJS.ErrnoException) =>
              err instanceof TypeError && err.code === 'ERR_INVALID_ARG_TYPE' && /^ref must be a boolean/.test(err.message),
            String(ref),
          );
        }
        assert.equal(await b.futexWaitAsync(buffer, 0, 1, 10_000, undefined).promise, 1);
      });

      it('rejects a membarrier command that is not a number with TypeError (one that is no command is a RangeError)', () => {
        for (const cmd of ['x', undefined, 1n]) {
          assert.throws(
            () => b.membarrier(cmd as unknown as number),
            (err: NodeJS.ErrnoException) => err instanceof TypeError && err.code === 'ERR_INVALID_ARG_TYPE',
            String(cmd),
          );
        }
      });

      it('rejects futexWaitAny targets that are not an array with TypeError (an empty one is a RangeError)', () => {
        for (const targets of [{}, undefined, 7]) {
          assert.throws(
            () => b.futexWaitAny(targets as never, 0),
            (err: Error) => err instanceof TypeError,
            String(targets),
          );
        }
        assert.throws(() => b.futexWaitAny([], 0), RangeError);
      });
    });

    describe('futex', () => {
      it('returns 1 at once when the word does not hold the expected value', () => {
        const i32 = new Int32Array(map(open()));
        Atomics.store(i32, 2, 5);
        const started = performance.now();
        assert.equal(b.futexWait(i32.buffer as ArrayBuffer, 8, 4, 5_000), 1);
        assert.ok(performance.now() - started < 1_000);
      });

      it('returns 2 after about the timeout asked', () => {
        const buffer = map(open());
        const started = performance.now();
        assert.equal(b.futexWait(buffer, 4, 0, 50), 2);
        const elapsed = performance.now() - started;
        assert.ok(elapsed >= 40 && elapsed <= 1_000, `elapsed ${elapsed} ms`);
      });

      it('compares the expected value as 32 bits (negative and unsigned forms agree)', () => {
        const buffer = map(open());
        new Int32Array(buffer)[0] = -1;
        assert.equal(b.futexWait(buffer, 0, 0xffff_ffff, 0), 2);
        assert.equal(b.futexWait(buffer, 0, -1, 0), 2);
        assert.equal(b.futexWait(buffer, 0, 0, 0), 1);
      });

      it('rejects a misaligned or out-of-range byteOffset with RangeError', () => {
        const buffer = map(open());
        for (const offset of [1, 2, 3, 4094, -4, PAGE, PAGE - 2, 0.5]) {
          assert.throws(() => b.futexWait(buffer, offset, 0, 0), RangeError, `offset ${offset}`);
          assert.throws(() => b.futexWake(buffer, offset, 1), RangeError, `offset ${offset}`);
          assert.throws(() => b.futexWaitAsync(buffer, offset, 0, 0), RangeError, `offset ${offset}`);
        }
      });

      it('wakes nobody when nobody waits, and makes no call for a count of 0', () => {
        const buffer = map(open());
        assert.equal(b.futexWake(buffer, 0, 1), 0);
        assert.equal(b.futexWake(buffer, 0, 0), 0);
      });

      it('wakes a child process blocked in futexWait', async () => {
        const fd = open();
        const i32 = new Int32Array(map(fd));
        const child = runChild(
          kind,
          `
          const i32 = new Int32Array(b.mmap(3, ${PAGE}, true));
          Atomics.store(i32, 1, 1); // handshake: about to wait on word 0
          const started = performance.now();
          const result = b.futexWait(i32.buffer, 0, 0, 20000);
          process.stdout.write(JSON.stringify({ result, ms: performance.now() - started }));
        `,
          { fd },
        );
        await until(() => Atomics.load(i32, 1) === 1, 'the child announces its wait');
        // Word 0 never changes: the child returns 0 only if this process's
        // FUTEX_WAKE reaches it, and the wake counts it only if it sleeps.
        let woken = 0;
        const deadline = Date.now() + 10_000;
        while (woken === 0 && Date.now() < deadline) {
          await sleep(5);
          woken = b.futexWake(i32.buffer as ArrayBuffer, 0, 1);
        }
        assert.equal(woken, 1);
        const { code, stdout, stderr } = await child.done;
        assert.equal(code, 0, stderr);
        const { result, ms } = JSON.parse(stdout) as { result: number; ms: number };
        assert.equal(result, 0);
        assert.ok(ms < 20_000, `the child waited ${ms} ms`);
      });
    });

    describe('membarrier', () => {
      /** MEMBARRIER_CMD_QUERY's answer, or undefined where the kernel or a seccomp profile refuses membarrier. */
      const query = (): number | undefined => {
        try {
          return b.membarrier(0);
        } catch (err) {
          if (['ENOSYS', 'EPERM'].includes((err as NodeJS.ErrnoException).code!)) return undefined;
          throw err;
        }
      };

      it('answers MEMBARRIER_CMD_QUERY with the commands this kernel has, the expedited global fence among them here', function () {
        const supported = query();
        if (supported === undefined) this.skip(); // no membarrier here: shmring fences without it
        assert.ok(Number.isInteger(supported) && supported! >= 0);
        // GLOBAL_EXPEDITED and its registration (Linux >= 4.16): what MpscRing's light producers rely on.
        if ((supported! & 0b110) !== 0b110) return; // an older kernel: nothing more to check here
        assert.equal(b.membarrier(1 << 2), 0, 'REGISTER_GLOBAL_EXPEDITED');
        assert.equal(b.membarrier(1 << 1), 0, 'GLOBAL_EXPEDITED');
      });

      it('throws the errno of a command the kernel refuses, and RangeError for one that is no command', function () {
        for (const bad of [-1, 1.5, Number.NaN, 2 ** 31]) {
          assert.throws(
            () => b.membarrier(bad),
            (err: NodeJS.ErrnoException) => err instanceof RangeError && err.code === 'ERR_OUT_OF_RANGE',
            String(bad),
          );
        }
        if (query() === undefined) this.skip(); // no membarrier here: every command is refused alike
        assert.throws(
          () => b.membarrier(1 << 30),
          (err: NodeJS.ErrnoException) => err.code === 'EINVAL' && err.syscall === 'membarrier' && /membarrier failed/.test(err.message),
        );
      });
    });

    describe('futexWaitAny (futex_waitv)', () => {
      /** `n` targets on words 64 bytes apart (one per cache line) of `buffer`, all expecting 0. */
      const targets = (buffer: ArrayBuffer | SharedArrayBuffer, n: number, first = 0) =>
        Array.from({ length: n }, (_, i) => ({ buffer, byteOffset: first + 64 * i, expected: 0 }));

      /** Wakes the word at `byteOffset` until a wake finds a sleeper; returns the last count. */
      async function wakeSleeper(buffer: ArrayBuffer | SharedArrayBuffer, byteOffset: number): Promise<number> {
        let woken = 0;
        const deadline = Date.now() + 10_000;
        while ((woken = b.futexWake(buffer, byteOffset, 1)) === 0 && Date.now() < deadline) await sleep(2);
        return woken;
      }

      it('returns the index of the word that another process wakes', async () => {
        const fd = open();
        const buffer = map(fd);
        const i32 = new Int32Array(buffer);
        const handshake = 16 * 64; // after the 5 words waited on
        const child = runChild(
          kind,
          `
          const buffer = b.mmap(3, ${PAGE}, true);
          const words = Array.from({ length: 5 }, (_, i) => ({ buffer, byteOffset: 64 * i, expected: 0 }));
          Atomics.store(new Int32Array(buffer), ${handshake / 4}, 1); // about to wait
          const started = performance.now();
          const index = b.futexWaitAny(words, 20000);
          process.stdout.write(JSON.stringify({ index, ms: performance.now() - started }));
        `,
          { fd },
        );
        await until(() => Atomics.load(i32, handshake / 4) === 1, 'the child announces its wait');
        // No word changes: only a wake that reaches the child's futex_waitv ends it, and
        // the count is 1 only if the child sleeps on that word.
        assert.equal(await wakeSleeper(buffer, 3 * 64), 1);
        const { code, stdout, stderr } = await child.done;
        assert.equal(code, 0, stderr);
        const { index, ms } = JSON.parse(stdout) as { index: number; ms: number };
        assert.equal(index, 3);
        assert.ok(ms < 20_000, `the child waited ${ms} ms`);
      });

      it('returns the index of the word that another thread wakes, among 128 words', async () => {
        const sab = new SharedArrayBuffer(128 * 64);
        const worker = new Worker(
          `
          const { workerData, parentPort } = require('node:worker_threads');
          import(workerData.loader).then(({ loadBackend }) => {
            const b = loadBackend(workerData.kind);
            const words = Array.from({ length: 128 }, (_, i) => ({ buffer: workerData.sab, byteOffset: 64 * i, expected: 0 }));
            parentPort.postMessage(b.futexWaitAny(words, 20000));
          });
        `,
          { eval: true, workerData: { sab, kind, loader: LOADER_URL } },
        );
        // Listened for at once: the worker posts and exits in one go, maybe before an await here resumes.
        const exited = once(worker, 'exit');
        const result = new Promise<number>((resolve, reject) => {
          worker.once('message', resolve);
          worker.once('error', reject);
        });
        // A wake of one word finds the worker only once it sleeps in futex_waitv.
        assert.equal(await wakeSleeper(sab, 127 * 64), 1);
        assert.equal(await result, 127);
        await exited;
      });

      it('returns -1 at once when a word does not hold its expected value, whichever it is', () => {
        const buffer = map(open());
        const i32 = new Int32Array(buffer);
        for (const k of [0, 2, 4]) {
          Atomics.store(i32, (64 * k) / 4, 7);
          const started = performance.now();
          assert.equal(b.futexWaitAny(targets(buffer, 5), 10_000), -1, `word ${k} differs`);
          assert.ok(performance.now() - started < 1_000);
          Atomics.store(i32, (64 * k) / 4, 0);
        }
        // Compared as 32 bits, like futexWait: -1 and 0xffffffff are one value.
        Atomics.store(i32, 0, -1);
        assert.equal(b.futexWaitAny([{ buffer, byteOffset: 0, expected: 0xffff_ffff }], 0), -2);
        assert.equal(b.futexWaitAny([{ buffer, byteOffset: 0, expected: 0 }], 0), -1);
      });

      it('returns -2 after about the timeout asked, and at once for a timeout of 0', () => {
        const buffer = map(open());
        let started = performance.now();
        assert.equal(b.futexWaitAny(targets(buffer, 3), 50), -2);
        const elapsed = performance.now() - started;
        assert.ok(elapsed >= 40 && elapsed <= 2_000, `elapsed ${elapsed} ms`);
        started = performance.now();
        assert.equal(b.futexWaitAny(targets(buffer, 3), 0), -2);
        assert.ok(performance.now() - started < 1_000);
      });

      it('waits on words of a mapping and of a SharedArrayBuffer in one call', async () => {
        const buffer = map(open());
        const sab = new SharedArrayBuffer(256);
        const worker = new Worker(
          `
          const { workerData, parentPort } = require('node:worker_threads');
          import(workerData.loader).then(({ loadBackend }) => {
            const b = loadBackend(workerData.kind);
            const words = [
              { buffer: workerData.sab, byteOffset: 0, expected: 0 },
              { buffer: workerData.sab, byteOffset: 128, expected: 0 },
            ];
            parentPort.postMessage(b.futexWaitAny(words, 20000));
          });
        `,
          { eval: true, workerData: { sab, kind, loader: LOADER_URL } },
        );
        const exited = once(worker, 'exit'); // at once: the worker posts and exits in one go
        const result = new Promise<number>((resolve) => worker.once('message', resolve));
        assert.equal(await wakeSleeper(sab, 128), 1);
        assert.equal(await result, 1);
        await exited;
        // Both kinds of memory in one list.
        Atomics.store(new Int32Array(sab), 0, 5);
        assert.equal(
          b.futexWaitAny(
            [
              { buffer, byteOffset: 0, expected: 0 },
              { buffer: sab, byteOffset: 0, expected: 0 },
            ],
            1_000,
          ),
          -1,
        );
        assert.equal(
          b.futexWaitAny(
            [
              { buffer, byteOffset: 0, expected: 0 },
              { buffer: sab, byteOffset: 0, expected: 5 },
            ],
            0,
          ),
          -2,
        );
      });

      it('takes 1 to 128 words: RangeError for 0 or 129, and for a bad byteOffset', () => {
        const buffer = map(open(128 * 64), 128 * 64);
        assert.throws(() => b.futexWaitAny([], 0), RangeError);
        assert.throws(
          () =>
            b.futexWaitAny(
              targets(buffer, 129, 0).map((t, i) => ({ ...t, byteOffset: 4 * i })),
              0,
            ),
          RangeError,
        );
        assert.equal(b.futexWaitAny(targets(buffer, 128), 0), -2);
        assert.equal(b.futexWaitAny(targets(buffer, 1), 0), -2);
        for (const byteOffset of [2, -4, 128 * 64]) {
          assert.throws(() => b.futexWaitAny([{ buffer, byteOffset, expected: 0 }], 0), RangeError, `byteOffset ${byteOffset}`);
        }
      });
    });

    describe('futexWaitAsync', () => {
      it('resolves 1 without waiting when the word differs, and 2 after its timeout', async () => {
        const buffer = map(open());
        new Int32Array(buffer)[0] = 9;
        assert.equal(await b.futexWaitAsync(buffer, 0, 8, 10_000).promise, 1);
        const started = performance.now();
        assert.equal(await b.futexWaitAsync(buffer, 4, 0, 50).promise, 2);
        const elapsed = performance.now() - started;
        assert.ok(elapsed >= 40 && elapsed <= 1_000, `elapsed ${elapsed} ms`);
      });

      it('keeps timers running while it waits and resolves 0 when another process wakes it', async () => {
        const fd = open();
        const buffer = map(fd);
        let ticks = 0;
        const ticker = setInterval(() => ticks++, 10);
        try {
          const wait = b.futexWaitAsync(buffer, 0, 0, 20_000);
          const child = runChild(
            kind,
            `
            const buffer = b.mmap(3, ${PAGE}, true);
            const nap = new Int32Array(new SharedArrayBuffer(4));
            Atomics.wait(nap, 0, 0, 200); // let the parent's event loop show it is free
            let woken = 0;
            for (let i = 0; i < 2000 && woken === 0; i++) {
              woken = b.futexWake(buffer, 0, 1);
              if (woken === 0) Atomics.wait(nap, 0, 0, 5);
            }
            process.stdout.write(String(woken));
          `,
            { fd },
          );
          assert.equal(await wait.promise, 0);
          const { code, stdout, stderr } = await child.done;
          assert.equal(code, 0, stderr);
          assert.equal(stdout, '1'); // the child's wake found the parent's waiting thread
          assert.ok(ticks >= 5, `only ${ticks} timer ticks while waiting`);
        } finally {
          clearInterval(ticker);
        }
      });

      it('resolves a SharedArrayBuffer wait with 0 when woken in this process', async () => {
        const sab = new SharedArrayBuffer(16);
        const wait = b.futexWaitAsync(sab, 8, 0, 20_000);
        let woken = 0;
        await until(() => (woken = b.futexWake(sab, 8, 1)) === 1, 'the wait is parked');
        assert.equal(woken, 1);
        assert.equal(await wait.promise, 0);
      });

      if (kind === 'koffi') {
        // Regression: past koffi's cap the call threw koffi's own untyped Error.
        // In a child: 4096 pending calls queue behind the libuv pool's 4 threads, which this process's later
        // tests (fs, crypto, zlib) would wait behind for a long time.
        it("refuses a wait past koffi's 4096 pending async calls with ERR_SHMRING_TOO_MANY_WAITS, and takes one again once a wait settles", async () => {
          const { code, signal, stdout, stderr } = await runChild(
            kind,
            `
            const fd = b.memfdCreate('shmring-cap');
            (await import('node:fs')).ftruncateSync(fd, ${PAGE});
            const buffer = b.mmap(fd, ${PAGE}, true);
            const waits = [];
            let refusal;
            // koffi counts its calls as its pool takes them: the cap is reached at 4096 pending, give or take.
            while (refusal === undefined && waits.length < 4200) {
              try { waits.push(b.futexWaitAsync(buffer, 0, 0, Infinity)); } catch (err) { refusal = err; }
            }
            const pending = waits.length;
            waits.pop().cancel();
            let again = false;
            for (let i = 0; i < 2000 && !again; i++) {
              try { waits.push(b.futexWaitAsync(buffer, 0, 0, Infinity)); again = true; }
              catch { await new Promise((r) => setTimeout(r, 5)); } // the cancelled call's pool thread has not returned yet
            }
            process.stdout.write(JSON.stringify({ pending, code: refusal?.code, message: refusal?.message, again }));
            // The pool threads stay blocked in FUTEX_WAIT, and koffi aborts a process that exits under them: killed instead.
            process.kill(process.pid, 'SIGKILL');
          `,
          ).done;
          assert.ok(stdout.startsWith('{'), `exit ${code}, ${signal}: ${stderr}`);
          const r = JSON.parse(stdout) as { pending: number; code?: string; message?: string; again: boolean };
          assert.ok(r.pending >= 4000, `refused at ${r.pending} pending waits`);
          assert.equal(r.code, 'ERR_SHMRING_TOO_MANY_WAITS', r.message);
          assert.match(r.message!, /use the addon/);
          assert.equal(r.again, true, 'no wait was taken once one had settled');
        });
      }

      it('resolves 0 promptly when cancelled, and ignores a second cancel', async () => {
        const buffer = map(open());
        const wait = b.futexWaitAsync(buffer, 0, 0, Infinity);
        await sleep(20);
        const started = performance.now();
        wait.cancel();
        assert.equal(await wait.promise, 0);
        assert.ok(performance.now() - started < 1_000);
        wait.cancel();
        // A wait cancelled before its thread got going also ends.
        const early = b.futexWaitAsync(buffer, 4, 0, Infinity);
        early.cancel();
        assert.equal(await early.promise, 0);
      });

      it('is settled with 0 by munmap of its mapping', async () => {
        const buffer = b.mmap(open(), PAGE, true);
        const wait = b.futexWaitAsync(buffer, 12, 0, Infinity);
        await sleep(10);
        b.munmap(buffer);
        assert.equal(await wait.promise, 0);
        assert.equal(buffer.byteLength, 0);
      });

      it('does not keep a child alive once its only wait is cancelled', async () => {
        const child = runChild(
          kind,
          `
          const wait = b.futexWaitAsync(new SharedArrayBuffer(8), 0, 0, Infinity);
          setTimeout(() => wait.cancel(), 50);
          wait.promise.then((result) => process.stdout.write(String(result)));
        `,
          { killAfterMs: 10_000 },
        );
        const { code, stdout, stderr, killed } = await child.done;
        assert.equal(killed, false, 'the child had to be killed: the cancelled wait kept its loop alive');
        assert.equal(code, 0, stderr);
        assert.equal(stdout, '0');
      });

      it('does not keep a child alive when a wait is cancelled before its thread started', async () => {
        // One pool thread: the second wait is still queued when it is
        // cancelled, so the wake of its cancel comes before it sleeps.
        const child = runChild(
          kind,
          `
          const sab = new SharedArrayBuffer(8);
          const first = b.futexWaitAsync(sab, 0, 0, Infinity);
          const queued = b.futexWaitAsync(sab, 4, 0, Infinity);
          queued.cancel();
          setTimeout(() => first.cancel(), 50);
          Promise.all([first.promise, queued.promise]).then((results) => process.stdout.write(results.join(',')));
        `,
          { killAfterMs: 10_000, env: { UV_THREADPOOL_SIZE: '1' } },
        );
        const { code, stdout, stderr, killed } = await child.done;
        assert.equal(killed, false, 'the child had to be killed: a cancelled wait kept its loop alive');
        assert.equal(code, 0, stderr);
        assert.equal(stdout, '0,0');
      });

      it('lets a child exit promptly once it cancels waits queued behind one pool thread', async () => {
        // koffi: one pool thread, so 15 of the 16 calls are still queued when
        // all are cancelled. Each must return as soon as the thread takes it,
        // not sleep on its word until its wait's next kick. Cancelled last
        // first, the kicks of each round run in that order too (timers of one
        // expiry run in the order they were set), so each comes before the
        // call it would free has started: a call that sleeps costs a round of
        // kicks (up to 50 ms), about 0.5 s in all.
        const child = runChild(
          kind,
          `
          const sab = new SharedArrayBuffer(4 * 16);
          const waits = [];
          for (let i = 0; i < 16; i++) waits.push(b.futexWaitAsync(sab, 4 * i, 0, Infinity));
          setTimeout(() => {
            const cancelled = performance.now();
            for (const wait of waits.reverse()) wait.cancel();
            process.on('exit', () => process.stdout.write(String(Math.round(performance.now() - cancelled))));
          }, 50);
        `,
          { killAfterMs: 20_000, env: { UV_THREADPOOL_SIZE: '1' } },
        );
        const { code, stdout, stderr, killed } = await child.done;
        assert.equal(killed, false, 'the child had to be killed: cancelled waits kept its loop alive');
        assert.equal(code, 0, stderr);
        const ms = Number(stdout);
        assert.ok(ms < 150, `the loop ended ${ms} ms after the waits were cancelled`);
      });

      it('resolves 0, not 1, when the word changes after the call but before its thread sleeps', async () => {
        // One pool thread, held by the first wait: the second is still queued
        // (koffi) when its word changes and is woken. Equal at the call, so
        // the change is a wake, whatever the kernel later says (EAGAIN).
        const child = runChild(
          kind,
          `
          const sab = new SharedArrayBuffer(8);
          const first = b.futexWaitAsync(sab, 0, 0, Infinity);
          const late = b.futexWaitAsync(sab, 4, 0, Infinity);
          Atomics.store(new Int32Array(sab), 1, 1);
          b.futexWake(sab, 4, 1);
          setTimeout(() => first.cancel(), 50);
          Promise.all([first.promise, late.promise]).then((results) => process.stdout.write(results.join(',')));
        `,
          { killAfterMs: 10_000, env: { UV_THREADPOOL_SIZE: '1' } },
        );
        const { code, stdout, stderr, killed } = await child.done;
        assert.equal(killed, false);
        assert.equal(code, 0, stderr);
        assert.equal(stdout, '0,0');
      });

      it('keeps a child alive while its only wait is pending', async () => {
        const child = runChild(
          kind,
          `
          const started = performance.now();
          b.futexWaitAsync(new SharedArrayBuffer(8), 0, 0, 300).promise.then((result) =>
            process.stdout.write(JSON.stringify({ result, ms: performance.now() - started })));
        `,
          { killAfterMs: 10_000 },
        );
        const { code, stdout, stderr, killed } = await child.done;
        assert.equal(killed, false);
        assert.equal(code, 0, stderr);
        const { result, ms } = JSON.parse(stdout) as { result: number; ms: number };
        assert.equal(result, 2);
        assert.ok(ms >= 250, `resolved after ${ms} ms`);
      });
    });

    describe('fd passing', () => {
      let server: net.Server | undefined;
      let sockets: net.Socket[] = [];
      afterEach(async () => {
        for (const socket of sockets) socket.destroy();
        sockets = [];
        if (server) await new Promise((resolve) => server!.close(resolve));
        server = undefined;
      });

      /** A connected pair of Unix domain sockets; the accepted end is paused (nothing reads it). */
      async function socketPair(): Promise<{ sender: net.Socket; receiver: net.Socket }> {
        const where = path.join(os.tmpdir(), `${uniqueName('sock')}.sock`);
        server = net.createServer({ pauseOnConnect: true });
        server.listen(where);
        await once(server, 'listening');
        const accepted = once(server, 'connection');
        const sender = net.connect(where);
        await once(sender, 'connect');
        const [receiver] = (await accepted) as [net.Socket];
        sockets.push(sender, receiver);
        return { sender, receiver };
      }
      const fdOf = (socket: net.Socket) => (socket as unknown as { _handle: { fd: number } })._handle.fd;

      async function receive(socketFd: number): Promise<number> {
        let received = -1;
        await until(() => (received = b.recvFd(socketFd)) !== -1, 'a message arrives');
        return received;
      }

      it('passes an fd that maps the same memory, and reports an empty socket, a message without fd and EOF', async () => {
        const { sender, receiver } = await socketPair();
        const receiverFd = fdOf(receiver);
        assert.equal(b.recvFd(receiverFd), -1); // nothing sent yet

        sender.write('x');
        assert.equal(await receive(receiverFd), -3);

        const fd = open();
        b.sendFd(fdOf(sender), fd);
        const received = await receive(receiverFd);
        assert.ok(received >= 0 && received !== fd, `received ${received}`);
        fds.push(received);
        assert.equal(fs.fstatSync(received).ino, fs.fstatSync(fd).ino);
        const ours = new Int32Array(map(fd));
        const theirs = new Int32Array(map(received));
        Atomics.store(ours, 5, 0x1234_5678); // observed through the other mapping
        assert.equal(Atomics.load(theirs, 5), 0x1234_5678);

        sender.end();
        assert.equal(await receive(receiverFd), -2);
      });

      it('rejects a bad fd with TypeError or RangeError and a closed socket with EBADF', () => {
        assert.throws(() => b.sendFd(-1, 0), RangeError);
        assert.throws(() => b.recvFd(1.5), RangeError);
        assert.throws(() => b.recvFd('3' as unknown as number), TypeError);
        assert.throws(() => b.recvFd(987654), { code: 'EBADF', syscall: 'recvmsg' });
      });
    });
  });
}

// An outside tester: where the platform package is installed but its addon does not load (an older glibc
// than the 2.34 it needs), the loader still said to install that package.
describe("@shmring/shm-sys's loader", () => {
  const loader = path.resolve(fileURLToPath(import.meta.url), '../../../../../crates/shm-sys/index.cjs');

  /** Runs a copy of the loader in a directory with `files`; what its error says (or 'loaded'). */
  function loadIn(files: Record<string, string>): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-loader-'));
    try {
      fs.copyFileSync(loader, path.join(dir, 'index.cjs'));
      for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
      const r = spawnSync(
        process.execPath,
        [
          '-e',
          `try { require(${JSON.stringify(path.join(dir, 'index.cjs'))}); console.log('loaded'); } catch (e) { console.log(e.message); }`,
        ],
        // Without NODE_PATH: pnpm's bin shims (mocha's) set it to the workspace's modules, where the platform package is.
        { encoding: 'utf8', env: { ...process.env, NODE_PATH: '' } },
      );
      return r.stdout.trim();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  it('says to install the platform package where none is found', function () {
    assert.match(loadIn({}), /found no addon for linux-x64-gnu .*; install @shmring\/shm-sys-linux-x64-gnu/);
  });

  it('says to use koffi, not to install it again, where an addon is found but does not load', function () {
    const said = loadIn({ 'shm-sys.linux-x64-gnu.node': 'not an ELF file' });
    assert.match(said, /is installed but does not load here \(it needs glibc 2\.34 or later\): use koffi instead \(npm install koffi\)/);
    assert.doesNotMatch(said, /install @shmring\/shm-sys-linux-x64-gnu \(/);
  });
});
