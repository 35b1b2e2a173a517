import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import * as vm from 'node:vm';
import { backendKind, nativeFutex, Region } from '@shmring/core';
import { wait, waitAsync, wake, wakeNative } from '../src/index.js';
import { runModule } from './helpers.js';

const PEER = fileURLToPath(new URL('./fixtures/peer.js', import.meta.url));
const SLEEPER_SOURCE = fileURLToPath(new URL('../../test/c/futex_sleeper.c', import.meta.url));

interface Run {
  /** The child's pid. */
  pid: number;
  done: Promise<{ code: number | null; stdout: string; ms: number }>;
}

/** Runs the fixture peer with the region as its fd 3; `env` is added to ours. */
function peer(region: Region, args: string[], env: NodeJS.ProcessEnv = {}): Run {
  return run(process.execPath, [PEER, ...args], region, env);
}

function run(command: string, args: string[], region: Region, env: NodeJS.ProcessEnv = {}): Run {
  const started = performance.now();
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit', region.fd], env: { ...process.env, ...env } });
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d));
  return {
    pid: child.pid!,
    done: new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, ms: performance.now() - started }));
    }),
  };
}

/** Shared futex ops (docs/LAYOUT.md, Waiting); FUTEX_PRIVATE_FLAG (128) is in neither. */
const FUTEX_WAIT = 0;
const FUTEX_WAIT_BITSET = 9;
/** SYS_futex on this machine's architecture. */
const SYS_FUTEX = ({ x64: 202, arm64: 98 } as Partial<Record<string, number>>)[process.arch];

/** A futex call of a sleeping thread, from /proc/<pid>/syscall: its op (FUTEX_PRIVATE_FLAG included), val and val3. */
interface FutexCall {
  op: number;
  val: number;
  val3: number;
}

/**
 * Waits until the main thread of `child` sleeps in a futex call that
 * `match` accepts, and returns it. Throws, with the last call seen, if the
 * child exits first or 10 s pass.
 */
async function futexCall(child: Run, match: (call: FutexCall) => boolean): Promise<FutexCall> {
  let exited = false;
  void child.done.then(() => (exited = true));
  const pid = child.pid;
  const deadline = Date.now() + 10_000;
  let last = '';
  for (;;) {
    try {
      last = fs.readFileSync(`/proc/${pid}/syscall`, 'latin1').trim();
    } catch (err) {
      last = String((err as NodeJS.ErrnoException).code);
    }
    // "<nr> <arg1> … <arg6> <sp> <pc>": arg1 the word's address (this process's own), arg2 op, arg3 val, arg6 val3.
    const fields = last.split(' ');
    if (Number(fields[0]) === SYS_FUTEX) {
      const call = { op: Number(fields[2]), val: Number(fields[3]), val3: Number(fields[6]) };
      if (match(call)) return call;
    }
    if (exited || Date.now() > deadline) {
      throw new Error(
        `pid ${pid} never slept in the futex call expected (${exited ? 'it exited' : 'for 10 s'}); /proc/${pid}/syscall: ${last}`,
      );
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function killAndWait(child: Run): Promise<void> {
  try {
    process.kill(child.pid, 'SIGKILL');
  } catch {
    // exited already
  }
  await child.done;
}

async function until(predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition never became true');
    await new Promise((r) => setTimeout(r, 1));
  }
}

describe('@shmring/futex', () => {
  describe('across processes (native futex on a memfd region)', () => {
    let region: Region;
    let i32: Int32Array;
    beforeEach(() => {
      region = Region.create({ backing: 'memfd', size: 4096 });
      i32 = new Int32Array(region.buffer);
    });
    afterEach(() => region.close());

    it('wakes a waiter blocked in another process', async () => {
      const child = peer(region, ['wait', '10000']);
      await until(() => Atomics.load(i32, 1) === 1);
      await new Promise((r) => setTimeout(r, 50)); // let it enter futex_wait
      Atomics.store(i32, 0, 1);
      let woken = 0;
      const deadline = Date.now() + 5000;
      while (woken === 0 && Date.now() < deadline) woken = wake(i32, 0);
      const { code, stdout } = await child.done;
      assert.equal(code, 0);
      const report = JSON.parse(stdout) as { result: string; ms: number };
      assert.ok(['ok', 'not-equal'].includes(report.result), stdout);
      assert.ok(report.ms < 9000, `woken after ${report.ms} ms`);
    });

    it('times out in about the time asked', () => {
      const started = performance.now();
      assert.equal(wait(i32, 0, 0, 100), 'timed-out');
      const ms = performance.now() - started;
      assert.ok(ms >= 95 && ms < 1000, `took ${ms} ms`);
    });

    it("answers a timeoutMs of 0 from the word, without sleeping: 'timed-out' while it holds the value, else 'not-equal'", () => {
      Atomics.store(i32, 0, 7);
      const started = performance.now();
      assert.equal(wait(i32, 0, 7, 0), 'timed-out');
      assert.equal(wait(i32, 0, 6, 0), 'not-equal');
      assert.ok(performance.now() - started < 50);
      Atomics.store(i32, 0, 0);
    });

    it("returns 'not-equal' at once when the word differs", () => {
      Atomics.store(i32, 0, 5);
      assert.equal(wait(i32, 0, 4, 10_000), 'not-equal');
    });

    it('keeps the event loop turning while waitAsync waits, and resolves when another process wakes it', async () => {
      let ticks = 0;
      const timer = setInterval(() => ticks++, 5);
      try {
        const child = peer(region, ['wake', '200']);
        const result = await waitAsync(i32, 0, 0, 10_000);
        assert.equal(result, 'ok');
        assert.equal(Atomics.load(i32, 0), 1);
        assert.ok(ticks >= 5, `only ${ticks} timer ticks while waiting`);
        const { stdout } = await child.done;
        assert.equal(stdout, '1');
      } finally {
        clearInterval(timer);
      }
    });

    it('keeps a process alive while waitAsync is pending, and lets it exit once it settles', async () => {
      const { code, stdout, ms } = await peer(region, ['hold', '300']).done;
      assert.equal(code, 0);
      assert.equal(stdout, 'timed-out');
      assert.ok(ms >= 300, `exited after ${ms} ms`);
    });

    it('rejects an aborted waitAsync with ABORT_ERR and does not keep the process alive', async () => {
      const { code, stdout, ms } = await peer(region, ['abort']).done;
      assert.equal(code, 0);
      assert.equal(stdout, 'ABORT_ERR');
      assert.ok(ms < 5000, `exited after ${ms} ms`);
    });

    it('rejects at once when the signal is already aborted', async () => {
      await assert.rejects(waitAsync(i32, 0, 0, 1000, AbortSignal.abort()), { code: 'ABORT_ERR' });
    });
  });

  // docs/LAYOUT.md, Waiting: "Every way to sleep on the word interoperates": a C peer's
  // plain FUTEX_WAIT and this library's FUTEX_WAIT_BITSET with all bits share one wait
  // queue, and one FUTEX_WAKE reaches both. Each sleeper's system call is read back from
  // /proc/<pid>/syscall, so a library wait that went private, or used a narrower bitset,
  // fails here even though a full-bitset wake would still find it.
  describe('a plain FUTEX_WAIT sleeper and a FUTEX_WAIT_BITSET sleeper on one word', () => {
    let sleeper: string;
    let workDir: string;
    before(function () {
      if (SYS_FUTEX === undefined) {
        console.log(`      (skipped: no SYS_FUTEX number known for ${process.arch}, to read the sleepers' calls from /proc/<pid>/syscall)`);
        this.skip();
      }
      const probe = spawnSync('cc', ['--version'], { stdio: 'ignore' });
      if (probe.status !== 0) {
        console.log(
          `      (skipped: no C compiler: \`cc --version\` failed${probe.error ? ` with ${(probe.error as NodeJS.ErrnoException).code}` : ''})`,
        );
        this.skip();
      }
      workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-futex-'));
      sleeper = path.join(workDir, 'futex_sleeper');
      const build = spawnSync('cc', ['-O2', '-std=c11', '-Wall', '-Wextra', '-Werror', '-o', sleeper, SLEEPER_SOURCE], {
        encoding: 'utf8',
      });
      assert.equal(build.status, 0, `cc futex_sleeper.c failed:\n${build.stderr}`);
    });
    after(() => {
      if (workDir !== undefined) fs.rmSync(workDir, { recursive: true, force: true });
    });

    for (const backend of ['addon', 'koffi'] as const) {
      it(`one wake of 2 reaches a C sleeper in FUTEX_WAIT and the ${backend} backend's sleeper in FUTEX_WAIT_BITSET with all bits`, async function () {
        if (backend === 'addon' && backendKind() !== 'addon') {
          console.log(
            '      SKIPPED: the Rust addon is not loaded here (not built without cargo, or SHMRING_BACKEND=koffi), so only the koffi sleeper runs',
          );
          this.skip();
        }
        const region = Region.create({ backing: 'memfd', size: 4096 });
        const i32 = new Int32Array(region.buffer);
        const plain = run(sleeper, ['0', '10000'], region);
        const bitset = peer(region, ['wait', '10000'], { SHMRING_BACKEND: backend });
        try {
          // A private or otherwise different wait never matches: the lookup fails with the call it saw.
          const plainCall = await futexCall(plain, (call) => call.op === FUTEX_WAIT);
          assert.equal(plainCall.val, 0, 'the C sleeper waits while the word holds 0');
          const bitsetCall = await futexCall(bitset, (call) => call.op === FUTEX_WAIT_BITSET);
          assert.deepEqual(
            [bitsetCall.val, bitsetCall.val3],
            [0, 0xffff_ffff],
            `the ${backend} sleeper waits with shared FUTEX_WAIT_BITSET while the word holds 0, bitset 0xffffffff`,
          );
          // The word still holds 0: a sleeper returns 'woken' / 'ok' only if this wake found it.
          assert.equal(wake(i32, 0, 2), 2, 'one FUTEX_WAKE of 2 woke both sleepers');
          const [fromPlain, fromBitset] = await Promise.all([plain.done, bitset.done]);
          assert.deepEqual([fromPlain.code, fromPlain.stdout.trim()], [0, 'woken']);
          assert.equal(fromBitset.code, 0);
          assert.equal((JSON.parse(fromBitset.stdout) as { result: string }).result, 'ok');
        } finally {
          await Promise.all([killAndWait(plain), killAndWait(bitset)]);
          region.close();
        }
      });
    }
  });

  describe('across threads (Atomics on a SharedArrayBuffer)', () => {
    it('resolves waitAsync when a worker wakes it', async () => {
      const i32 = new Int32Array(new SharedArrayBuffer(16));
      const pending = waitAsync(i32, 0, 0, 10_000);
      const worker = new Worker(
        `const { workerData: i32 } = require('node:worker_threads');
         setTimeout(() => { Atomics.store(i32, 0, 1); Atomics.notify(i32, 0); }, 50);`,
        { eval: true, workerData: i32 },
      );
      // Listen before awaiting anything: the worker may exit, and its 'exit' be emitted, before the wait resolves here.
      const exited = new Promise((r) => worker.once('exit', r));
      assert.equal(await pending, 'ok');
      await exited;
    });

    it('times out a SharedArrayBuffer wait in about the time asked', async () => {
      const i32 = new Int32Array(new SharedArrayBuffer(16));
      const started = performance.now();
      assert.equal(await waitAsync(i32, 0, 0, 60), 'timed-out');
      assert.ok(performance.now() - started >= 55);
      assert.equal(wait(i32, 0, 0, 10), 'timed-out');
      assert.equal(wake(i32, 0), 0);
    });

    it('ends an aborted SharedArrayBuffer wait', async () => {
      const i32 = new Int32Array(new SharedArrayBuffer(16));
      const controller = new AbortController();
      const pending = waitAsync(i32, 0, 0, 10_000, controller.signal);
      setTimeout(() => controller.abort(), 10);
      await assert.rejects(pending, { code: 'ABORT_ERR' });
    });

    it('waits on a SharedArrayBuffer made in another realm (a vm context) with Atomics, as on one of its own: Atomics.notify wakes it', async () => {
      const i32 = new Int32Array(vm.runInNewContext('new SharedArrayBuffer(16)') as SharedArrayBuffer);
      assert.ok(!(i32.buffer instanceof SharedArrayBuffer), 'the buffer is of this realm: this tests nothing');
      const pending = waitAsync(i32, 0, 0, 10_000);
      assert.equal(Atomics.notify(i32, 0), 1, "the wait is not in V8's wait list: it went to the native futex");
      assert.equal(await pending, 'ok');
      // And the native backend's own calls take it as a SharedArrayBuffer (the addon's rejected it with TypeError).
      assert.equal(nativeFutex.wake(i32.buffer as unknown as ArrayBuffer, 0, 1), 0);
      assert.equal(wakeNative(i32, 0), 0);
    });

    it("a SharedArrayBuffer wait started with ref false lets the process exit; a ref'd one keeps it alive until woken", () => {
      const run = (ref: boolean): { ms: number; out: string } => {
        const started = performance.now();
        const child = runModule(
          ['waitAsync', 'wake'],
          `const i32 = new Int32Array(new SharedArrayBuffer(16));
           waitAsync(i32, 0, 0, undefined, undefined, ${ref}).then((r) => console.log(r));
           // Only a ref'd wait is still there to be woken after 300 ms (by an unref'd timer: nothing else holds the loop).
           setTimeout(() => wake(i32, 0), 300).unref();`,
        );
        assert.equal(child.status, 0, child.stderr);
        return { ms: performance.now() - started, out: child.stdout.trim() };
      };
      const unrefd = run(false);
      assert.equal(unrefd.out, '', "the unref'd wait settled, though nothing woke it");
      const refd = run(true);
      assert.equal(refd.out, 'ok', "the ref'd wait did not keep the process alive until woken");
    });
  });

  /** A child's lines that make `region`, a memfd of 4096 bytes, or report that it cannot (see reportOf). */
  const MEMFD_OR_SKIP = `let region;
        try {
          region = Region.create({ backing: 'memfd', size: 4096 });
        } catch (err) {
          process.stdout.write(JSON.stringify({ skip: err.message }));
          process.exit(0);
        }`;

  /** A child's JSON report; skips the test if the child could not make its memfd (MEMFD_OR_SKIP). */
  function reportOf<T>(context: Mocha.Context, stdout: string): T {
    const r = JSON.parse(stdout) as T & { skip?: string };
    if (r.skip !== undefined) {
      console.log(`      (skipped: no memfd region: ${r.skip})`);
      context.skip();
    }
    return r;
  }

  describe('a wait that cannot start', () => {
    it("waitAsync rejects (it does not throw) past koffi's cap of pending waits, as waitAnyAsync does", function () {
      // In a child on koffi: 4096 pending waits hold its calls (killed at the end: koffi aborts a process
      // that exits under them).
      const child = runModule(
        ['waitAsync'],
        `
        ${MEMFD_OR_SKIP}
        const i32 = new Int32Array(region.buffer, 0, 4);
        let threw;
        let rejected;
        for (let i = 0; i < 4200 && threw === undefined; i++) {
          try {
            waitAsync(i32, 0, 0).catch((err) => (rejected ??= err.code));
          } catch (err) {
            threw = err.code;
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
        process.stdout.write(JSON.stringify({ threw, rejected }));
        process.kill(process.pid, 'SIGKILL');
      `,
        { SHMRING_BACKEND: 'koffi' },
      );
      assert.ok(child.stdout.startsWith('{'), `${child.signal}: ${child.stderr}`);
      const r = reportOf<{ threw?: string; rejected?: string }>(this, child.stdout);
      assert.equal(r.threw, undefined, 'waitAsync threw at the cap instead of rejecting');
      assert.equal(r.rejected, 'ERR_SHMRING_TOO_MANY_WAITS');
    });
  });

  describe('a word whose memory goes away while its wait pends', () => {
    it('a waitAnyAsync on a region closed under it settles, where koffi cannot detach the buffer: it does not wait again on the words (a wait no close would end)', () => {
      // Code generation from strings disallowed: koffi cannot compile its detacher, and close() leaves the
      // buffer its length. The close's cancel wakes the waits; the words still hold their values, so waitAnyAsync
      // took that for another wait's kick and waited again, on memory no close would end a wait on: for ever.
      const futexUrl = JSON.stringify(new URL('../src/index.js', import.meta.url).href);
      const coreUrl = JSON.stringify(import.meta.resolve('@shmring/core'));
      const child = spawnSync(
        process.execPath,
        [
          '--disallow-code-generation-from-strings',
          '--input-type=module',
          '-e',
          `import { Region } from ${coreUrl};
           import { waitAnyAsync } from ${futexUrl};
           const region = Region.create({ backing: 'memfd', size: 4096 });
           const i32 = new Int32Array(region.buffer);
           const pending = waitAnyAsync([[i32, 0, 0], [i32, 16, 0]]);
           setTimeout(() => region.close(), 50);
           pending.then((r) => console.log(JSON.stringify({ length: i32.length, result: r })),
                        (err) => console.log(JSON.stringify({ length: i32.length, result: err.code })));`,
        ],
        { encoding: 'utf8', timeout: 10_000, env: { ...process.env, SHMRING_BACKEND: 'koffi' } },
      );
      assert.equal(child.signal, null, 'the wait was still pending after 10 s: it waited again on the closed region');
      assert.equal(child.status, 0, child.stderr);
      const { length, result } = JSON.parse(child.stdout) as { length: number; result: unknown };
      assert.equal(length, 1024, 'the buffer was detached: this run does not test the case without a detacher');
      assert.equal(result, 'ERR_SHMRING_CLOSED');
    });

    it("the futex_waitv lanes read a plain ArrayBuffer's word through the kernel: a buffer shrunk under its wait does not crash the process", function () {
      // A resizable ArrayBuffer shrunk to 0 gives its pages back: a lane that loaded the word itself would fault
      // (SIGSEGV) at its next look, which any other wait's start or cancel causes.
      if (backendKind() !== 'addon') {
        console.log('      (skipped: the Rust addon is not built here (no cargo): the lanes are its)');
        this.skip();
      }
      const child = runModule(
        ['waitAsync'],
        `
        const rab = new ArrayBuffer(4096, { maxByteLength: 1 << 20 });
        let refused;
        const pending = waitAsync(new Int32Array(rab, 0, 4), 0, 0, 2000).catch((err) => (refused = err.code));
        rab.resize(0);
        ${MEMFD_OR_SKIP}
        const controller = new AbortController();
        const other = waitAsync(new Int32Array(region.buffer, 0, 4), 0, 0, 5000, controller.signal).catch(() => 'aborted');
        controller.abort(); // the lane looks at its list again
        await other;
        await new Promise((resolve) => setTimeout(resolve, 100));
        process.stdout.write(JSON.stringify({ alive: true, refused }));
        process.exit(0);
      `,
        { SHMRING_ASYNC_WAIT: 'futex_waitv' },
      );
      assert.ok(child.stdout.startsWith('{'), `killed by ${child.signal}, exit ${child.status}: ${child.stderr}`);
      const r = reportOf<{ alive?: boolean; refused?: string }>(this, child.stdout);
      if (r.refused !== undefined) {
        // No lane took the wait (futex_waitv missing or refused here): nothing of the lanes was tested.
        console.log(`      (skipped: the futex_waitv lanes are not available here: ${r.refused})`);
        this.skip();
      }
      assert.equal(r.alive, true);
    });
  });

  describe('bad input', () => {
    it('rejects a ref that is not a boolean, with a typed error', () => {
      const i32 = new Int32Array(new SharedArrayBuffer(8));
      assert.throws(() => waitAsync(i32, 0, 0, 10, undefined, 'no' as unknown as boolean), {
        code: 'ERR_SHMRING_INVALID_ARGUMENT',
        name: 'TypeError',
      });
    });

    it('rejects an index outside the array', () => {
      const i32 = new Int32Array(new SharedArrayBuffer(8));
      assert.throws(() => wait(i32, 2, 0, 1), { code: 'ERR_SHMRING_INVALID_ARGUMENT', name: 'RangeError' });
      assert.throws(() => wake(i32, -1), RangeError);
    });

    it('rejects a view that is not an Int32Array', () => {
      assert.throws(() => wake(new Uint32Array(new SharedArrayBuffer(8)) as unknown as Int32Array, 0), TypeError);
    });

    it('rejects a timeout that is not a number', () => {
      const i32 = new Int32Array(new SharedArrayBuffer(8));
      assert.throws(() => wait(i32, 0, 0, 'soon' as unknown as number), TypeError);
    });
  });
});
