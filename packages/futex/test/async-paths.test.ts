/**
 * The same checks of waitAsync on every path an async wait can take, each
 * in child processes started with the environment that selects the path
 * (fixtures/async-paths-peer.ts does the checking and prints its figures):
 *
 *  - 'io_uring'          the addon's default on Linux >= 6.7: FUTEX_WAIT entries of one
 *                        io_uring per event loop, polled by libuv (no thread per wait);
 *  - 'futex_waitv'       the addon's fallback where io_uring is refused, forced with
 *                        SHMRING_ASYNC_WAIT=futex_waitv: one thread per 127 pending waits;
 *  - 'threads'           the last resort (Linux < 5.16), forced with SHMRING_ASYNC_WAIT=threads:
 *                        one native thread per pending wait;
 *  - 'libuv-threadpool'  the koffi backend (SHMRING_BACKEND=koffi).
 *
 * Each child reports asyncWaitKind(), and the test fails if it is not the
 * path asked for: a default that silently fell back to threads fails here.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { backendKind, Region } from '@shmring/core';
import { wake } from '../src/index.js';

const PEER = fileURLToPath(new URL('./fixtures/async-paths-peer.js', import.meta.url));
/** A child still running after this long is killed, and the test fails. */
const KILL_AFTER_MS = 30_000;
/** Pending waits of the `many` check (koffi: below its cap of 256 async calls in flight, see below). */
const MANY = 1000;
const MANY_KOFFI = 200;
/** libuv's threadpool size in the koffi children (its default). */
const UV_THREADPOOL_SIZE = 4;

type Kind = 'io_uring' | 'futex_waitv' | 'threads' | 'libuv-threadpool';

interface Path {
  title: string;
  /** What the child sets on top of an environment cleared of both variables. */
  env: NodeJS.ProcessEnv;
  kind: Kind;
}

/**
 * The kind the addon must choose by default here: io_uring, unless the
 * kernel is older than 6.7 (no IORING_OP_FUTEX_WAIT) or io_uring is switched
 * off by sysctl; those are the only acceptable reasons to fall back.
 */
function defaultKind(): { kind: Kind; why: string } {
  const [major = 0, minor = 0] = os.release().split(/[.-]/).map(Number);
  const fallback: Kind = major > 5 || (major === 5 && minor >= 16) ? 'futex_waitv' : 'threads';
  if (major < 6 || (major === 6 && minor < 7)) return { kind: fallback, why: `kernel ${os.release()} < 6.7` };
  try {
    const disabled = fs.readFileSync('/proc/sys/kernel/io_uring_disabled', 'utf8').trim();
    if (disabled !== '0') return { kind: fallback, why: `kernel.io_uring_disabled=${disabled}` };
  } catch {
    // No such sysctl (older kernels): io_uring is allowed.
  }
  return { kind: 'io_uring', why: `kernel ${os.release()}` };
}

const DEFAULT = defaultKind();

const PATHS: Path[] = [
  { title: `the default path (${DEFAULT.kind}: ${DEFAULT.why})`, env: {}, kind: DEFAULT.kind },
  { title: 'the futex_waitv path (SHMRING_ASYNC_WAIT=futex_waitv)', env: { SHMRING_ASYNC_WAIT: 'futex_waitv' }, kind: 'futex_waitv' },
  { title: 'the threads path (SHMRING_ASYNC_WAIT=threads)', env: { SHMRING_ASYNC_WAIT: 'threads' }, kind: 'threads' },
  { title: 'the koffi path (SHMRING_BACKEND=koffi)', env: { SHMRING_BACKEND: 'koffi' }, kind: 'libuv-threadpool' },
];

interface ChildRun {
  /** Whether the process has exited. */
  exited(): boolean;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; killed: boolean; ms: number }>;
}

function childEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.SHMRING_ASYNC_WAIT;
  delete env.SHMRING_BACKEND;
  return { ...env, ...extra };
}

/** Runs one check of the peer with the path's environment; `fd` becomes its fd 3. */
function runPeer(path: Path, args: string[], fd?: number, extraEnv: NodeJS.ProcessEnv = {}): ChildRun {
  const started = performance.now();
  const child = spawn(process.execPath, [PEER, ...args], {
    stdio: ['ignore', 'pipe', 'pipe', ...(fd === undefined ? [] : [fd])],
    env: childEnv({ ...path.env, ...extraEnv }),
  });
  let stdout = '';
  let stderr = '';
  let killed = false;
  let exited = false;
  child.stdout!.on('data', (d: Buffer) => (stdout += d));
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  const killer = setTimeout(() => {
    killed = true;
    child.kill('SIGKILL');
  }, KILL_AFTER_MS);
  const done = new Promise<Awaited<ChildRun['done']>>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', () => (exited = true));
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, stdout, stderr, killed, ms: performance.now() - started });
    });
  });
  return { exited: () => exited, done };
}

/** The child's report (its last stdout line), after checking that it exited cleanly and took its path. */
async function reportOf<T>(path: Path, run: ChildRun): Promise<T & { kind: Kind; backend: string }> {
  const { code, signal, stdout, stderr, killed } = await run.done;
  assert.equal(killed, false, `the child had to be killed after ${KILL_AFTER_MS} ms; stdout: ${stdout}\nstderr: ${stderr}`);
  assert.equal(code, 0, `the child exited with ${code ?? signal}; stdout: ${stdout}\nstderr: ${stderr}`);
  const line = stdout.trim().split('\n').pop() ?? '';
  const report = JSON.parse(line) as T & { kind: Kind; backend: string };
  assert.equal(report.kind, path.kind, `asyncWaitKind() in the child: ${report.kind}, expected ${path.kind}`);
  return report;
}

async function until(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await sleep(2);
  }
}

/** Wakes word `index` until a wake finds a sleeper (the count is 1) or `ms` pass; returns the last count. */
async function wakeSleeper(i32: Int32Array, index: number, ms = 10_000): Promise<number> {
  const deadline = Date.now() + ms;
  let woken = 0;
  while ((woken = wake(i32, index, 1)) === 0 && Date.now() < deadline) await sleep(2);
  return woken;
}

/** One line of figures per path, printed after the file. */
const figures: string[] = [];

/**
 * Skips a test of an addon path where the Rust addon is not built (a machine
 * without cargo: this process, like the children, runs on koffi).
 */
function needsAddon(ctx: Mocha.Context, kind: Kind): void {
  if (kind !== 'libuv-threadpool' && backendKind() !== 'addon') {
    console.log('      SKIPPED: the Rust addon is not built here (no cargo), so only the koffi path runs');
    ctx.skip();
  }
}

describe('waitAsync on every async wait path', function () {
  this.timeout(60_000);

  after(() => {
    for (const line of figures) console.log(`      ${line}`);
  });

  it('rejects an unknown SHMRING_ASYNC_WAIT with ERR_SHMRING_NO_BACKEND instead of picking a path', async function () {
    needsAddon(this, 'io_uring');
    const run = runPeer(PATHS[0]!, ['kind'], undefined, { SHMRING_ASYNC_WAIT: 'carrier-pigeon' });
    const { code, stderr } = await run.done;
    assert.notEqual(code, 0);
    assert.match(stderr, /ERR_SHMRING_NO_BACKEND/);
    assert.match(stderr, /SHMRING_ASYNC_WAIT=carrier-pigeon is not a way to wait/);
  });

  if (DEFAULT.kind === 'io_uring') {
    it('takes io_uring when SHMRING_ASYNC_WAIT=io_uring requires it', async function () {
      needsAddon(this, 'io_uring');
      const path: Path = { title: 'required', env: { SHMRING_ASYNC_WAIT: 'io_uring' }, kind: 'io_uring' };
      await reportOf(path, runPeer(path, ['kind']));
    });
  }

  for (const path of PATHS) {
    describe(path.title, () => {
      beforeEach(function () {
        needsAddon(this, path.kind);
      });
      let region: Region | undefined;
      afterEach(() => {
        region?.close();
        region = undefined;
      });

      it(`reports asyncWaitKind() '${path.kind}'`, async () => {
        const report = await reportOf<object>(path, runPeer(path, ['kind']));
        assert.equal(report.backend, path.kind === 'libuv-threadpool' ? 'koffi' : 'addon');
      });

      it('resolves waitAsync with ok when another process wakes it, the event loop turning meanwhile', async () => {
        region = Region.create({ backing: 'memfd', size: 4096 });
        const i32 = new Int32Array(region.buffer);
        const run = runPeer(path, ['wake'], region.fd);
        await until(() => Atomics.load(i32, 1) === 1 || run.exited(), 'the child started its wait');
        await sleep(100); // its loop turns with the wait pending
        // Word 0 stays 0: only a wake that reaches the parked wait can end it, and the
        // count is 1 only if it was asleep in the kernel.
        assert.equal(await wakeSleeper(i32, 0), 1, 'no wake found the child asleep');
        const report = await reportOf<{ result: string; ms: number; ticks: number }>(path, run);
        assert.equal(report.result, 'ok');
        assert.ok(report.ticks >= 5, `the child's 5 ms timer ticked only ${report.ticks} times while it waited`);
      });

      it('times out in about the time asked, leaving no sleeper behind', async () => {
        const report = await reportOf<{ result: string; ms: number; ticks: number; stale: number }>(
          path,
          runPeer(path, ['timeout', '150']),
        );
        assert.equal(report.result, 'timed-out');
        assert.ok(report.ms >= 145 && report.ms < 3_000, `timed out after ${report.ms} ms`);
        assert.ok(report.ticks >= 3, `the timer ticked only ${report.ticks} times`);
        assert.equal(report.stale, 0, 'a wake after the timeout still found the wait asleep in the kernel');
      });

      it('ends promptly on abort (AbortError) and on cancel() (ok), leaving nothing asleep and nothing keeping the process alive', async () => {
        const run = runPeer(path, ['abort']);
        const report = await reportOf<{ code: string; abortMs: number; rawResult: number; cancelMs: number; stale: number }>(path, run);
        assert.equal(report.code, 'ABORT_ERR');
        assert.ok(report.abortMs < 1_000, `rejected ${report.abortMs} ms after the abort`);
        assert.equal(report.rawResult, 0);
        assert.ok(report.cancelMs < 1_000, `resolved ${report.cancelMs} ms after cancel()`);
        assert.equal(report.stale, 0, 'a cancelled wait was still asleep in the kernel 200 ms later');
        // The waits had no deadline: the child exited by itself only if nothing kept its loop alive.
        const { ms } = await run.done;
        assert.ok(ms < 15_000, `the child took ${ms} ms to exit`);
      });

      it('passes on a wake that a wait cancelled right after it consumed, so the other waiter of the word still wakes', async () => {
        const r = await reportOf<{ woken: number; firstResult: number; secondResult: string; secondMs: number }>(
          path,
          runPeer(path, ['cancel-woken']),
        );
        assert.equal(r.woken, 1, 'the wake found no sleeper');
        assert.equal(r.firstResult, 0);
        // Without the pass-on, the second wait sleeps until its 10 s timeout: a lost wake-up.
        assert.equal(r.secondResult, 'ok', 'the second wait slept until its timeout: the wake the cancelled wait had consumed was lost');
        assert.ok(r.secondMs < 5_000, `the second wait settled ${r.secondMs} ms after the cancel`);
      });

      it('passes on a wake a wait took before its cancel when the word had changed (as a publisher changes it): another thread still wakes', async () => {
        const r = await reportOf<{ woken: number; stopped: boolean; firstResult: number; sleeperCode: number; sleeperMs: number }>(
          path,
          runPeer(path, ['cancel-woken-moved']),
        );
        assert.equal(r.woken, 1, 'the wake found no sleeper');
        assert.equal(r.firstResult, 0);
        // Without the pass-on, the other thread sleeps until its 10 s timeout (2): a lost wake-up.
        assert.equal(r.sleeperCode, 0, `the other thread's wait returned ${r.sleeperCode}: the wake the cancelled wait took was lost`);
        assert.ok(r.sleeperMs < 5_000, `the other thread woke after ${r.sleeperMs} ms`);
      });

      it("passes on a wake a terminated worker's wait took before its loop heard of it: another thread still wakes", async function () {
        if (path.kind === 'libuv-threadpool') {
          // As for the teardown tests below: koffi aborts the process when a call of a terminated worker
          // returns (packages/core/src/native/koffi.ts, "Workers (not met)").
          console.log('      SKIPPED: koffi cannot end a worker terminated with a wait in flight');
          this.skip();
        }
        const r = await reportOf<{ woken: number; sleeperCode: number; sleeperMs: number }>(path, runPeer(path, ['teardown-woken']));
        assert.equal(r.woken, 1, 'the wake found no sleeper');
        assert.equal(r.sleeperCode, 0, `the other thread's wait returned ${r.sleeperCode}: the wake the worker's wait took was lost`);
        assert.ok(r.sleeperMs < 5_000, `the other thread woke after ${r.sleeperMs} ms`);
      });

      it('keeps the process alive while a wait is pending, and lets it exit once the wait settled', async () => {
        region = Region.create({ backing: 'memfd', size: 4096 });
        const i32 = new Int32Array(region.buffer);
        const run = runPeer(path, ['alive'], region.fd);
        await until(() => Atomics.load(i32, 1) === 1 || run.exited(), 'the child started its wait');
        await sleep(1_000);
        assert.equal(run.exited(), false, 'the child exited with its wait pending');
        assert.equal(await wakeSleeper(i32, 0), 1, 'no wake found the child asleep');
        const report = await reportOf<{ result: string; exitAfterSettleMs: number }>(path, run);
        assert.equal(report.result, 'ok');
        assert.ok(report.exitAfterSettleMs < 2_000, `the child exited ${report.exitAfterSettleMs} ms after its wait settled`);
      });

      it("lets the process exit with a wait started with ref false pending, once its ref'd waits settled", async function () {
        if (path.kind === 'libuv-threadpool') {
          console.log("      SKIPPED: koffi's waits hold a libuv pool thread, which keeps the loop alive (documented)");
          this.skip();
        }
        region = Region.create({ backing: 'memfd', size: 4096 });
        const i32 = new Int32Array(region.buffer);
        const run = runPeer(path, ['unref'], region.fd);
        await until(() => Atomics.load(i32, 1) === 1 || run.exited(), 'the child started its waits');
        await sleep(500);
        assert.equal(run.exited(), false, "the child exited with its ref'd wait pending");
        assert.equal(await wakeSleeper(i32, 2), 1, "no wake found the child's ref'd wait asleep");
        const report = await reportOf<{ unrefd: string; refd: string; exitAfterSettleMs: number }>(path, run);
        assert.equal(report.refd, 'ok');
        assert.equal(report.unrefd, 'pending', "the unref'd wait settled, though nothing woke it");
        assert.ok(report.exitAfterSettleMs < 2_000, `the child exited ${report.exitAfterSettleMs} ms after its ref'd wait settled`);
      });

      const many = path.kind === 'libuv-threadpool' ? MANY_KOFFI : MANY;
      const bound =
        path.kind === 'io_uring'
          ? 'at most 2 more threads'
          : path.kind === 'futex_waitv'
            ? 'one thread per 127 waits'
            : path.kind === 'threads'
              ? 'one thread per wait'
              : `no more threads than libuv's pool (${UV_THREADPOOL_SIZE})`;
      it(`holds ${many} pending waits on ${many} words with ${bound}${path.kind === 'libuv-threadpool' ? '' : ', costing under 1% of a CPU while idle (beside the same process before it started any)'}, and wakes every one`, async function () {
        this.timeout(60_000);
        interface Many {
          n: number;
          threadsBefore: number;
          threadsPending: number;
          threadsAfter: number;
          startMs: number;
          cpuPercent: number;
          baseCpuPercent: number;
          loopDelayP99Ms: number;
          loopDelayMaxMs: number;
          woken: number;
          settleMs: number;
          counts: Record<string, number>;
        }
        const r = await reportOf<Many>(
          path,
          runPeer(path, ['many', String(many)], undefined, { UV_THREADPOOL_SIZE: String(UV_THREADPOOL_SIZE) }),
        );
        const extra = r.threadsPending - r.threadsBefore;
        // What the pending waits cost: the idle process's CPU with them (and their waiter threads), less its CPU
        // before it started any (the same process, as long): the target is the waits' cost, not V8's background
        // work. Beside it, a loose ceiling on the whole.
        const waitsCpu = r.cpuPercent - r.baseCpuPercent;
        if (path.kind !== 'libuv-threadpool')
          assert.ok(r.cpuPercent < 3, `${r.cpuPercent.toFixed(2)}% of a CPU while ${r.n} waits were pending`);
        figures.push(
          `${path.kind}: ${r.n} pending waits: +${extra} threads (${r.threadsBefore} -> ${r.threadsPending}), ` +
            `${r.cpuPercent.toFixed(2)}% CPU idle over 2 s (the same process before any: ${r.baseCpuPercent.toFixed(2)}%), loop delay p99 ${r.loopDelayP99Ms.toFixed(2)} ms (1 ms sampling), ` +
            `started in ${r.startMs.toFixed(1)} ms, all woken and settled in ${r.settleMs.toFixed(1)} ms (${r.woken} found asleep)`,
        );
        if (path.kind === 'io_uring') {
          assert.ok(extra <= 2, `${r.n} pending waits added ${extra} threads`);
        } else if (path.kind === 'futex_waitv') {
          const lanes = Math.ceil(r.n / 127);
          assert.ok(extra >= lanes && extra <= lanes + 2, `${r.n} pending waits added ${extra} threads, expected ${lanes} lanes`);
        } else if (path.kind === 'threads') {
          assert.ok(extra >= r.n - 2 && extra <= r.n + 4, `${r.n} pending waits added ${extra} threads, expected about one each`);
        } else {
          assert.ok(
            extra <= UV_THREADPOOL_SIZE + 2,
            `${r.n} pending waits added ${extra} threads (libuv's pool has ${UV_THREADPOOL_SIZE})`,
          );
        }
        if (path.kind === 'libuv-threadpool') {
          // koffi's waits go through libuv's pool 4 at a time, re-issued every second (see
          // koffi.ts): not free while idle, but bounded.
          assert.ok(r.cpuPercent < 25, `${r.cpuPercent.toFixed(2)}% of a CPU while idle`);
          // Only the waits holding a pool thread are in the kernel; the queued ones see the new
          // value when they get a thread. Every wait settles either way.
          assert.ok(r.woken <= UV_THREADPOOL_SIZE, `${r.woken} waits asleep in the kernel at once`);
          assert.equal((r.counts.ok ?? 0) + (r.counts['not-equal'] ?? 0), r.n, JSON.stringify(r.counts));
        } else if (path.kind === 'futex_waitv') {
          assert.ok(
            waitsCpu < 1,
            `${r.cpuPercent.toFixed(2)}% of a CPU while ${r.n} waits were pending (${r.baseCpuPercent.toFixed(2)}% before any)`,
          );
          // A lane's thread is one sleeper for its 127 words: the first wake of a lane finds it,
          // the next ones may find it re-arming; the words changed first, so every wait settles.
          assert.ok(r.woken >= Math.ceil(r.n / 127), `${r.woken} wakes found a lane asleep`);
          assert.deepEqual(r.counts, { ok: r.n });
        } else {
          assert.ok(
            waitsCpu < 1,
            `${r.cpuPercent.toFixed(2)}% of a CPU while ${r.n} waits were pending (${r.baseCpuPercent.toFixed(2)}% before any)`,
          );
          // Each wait was asleep in the kernel: one wake per word found exactly one sleeper.
          assert.equal(r.woken, r.n, 'waits found asleep in the kernel by one wake per word');
          assert.deepEqual(r.counts, { ok: r.n });
        }
      });

      for (const how of ['terminate', 'exit', 'throw', 'cancel'] as const) {
        const title = {
          terminate: 'a worker terminated with async waits pending',
          exit: 'a worker that calls process.exit() with async waits pending',
          throw: 'a worker that dies of an uncaught exception with async waits pending',
          cancel: 'a worker that aborts its pending async waits and returns',
        }[how];
        it(`tears down ${title} cleanly: no crash, no hang, no wait left asleep, the main thread's wait unharmed`, async function () {
          const run = runPeer(path, ['worker-exit', how]);
          const { code, signal, stderr } = await run.done;
          if (
            path.kind === 'libuv-threadpool' &&
            how !== 'cancel' &&
            signal === 'SIGABRT' &&
            stderr.includes('FATAL ERROR: Error::ThrowAsJavaScriptException')
          ) {
            // Known and documented in packages/core/src/native/koffi.ts ("Workers (not met)"):
            // the in-flight koffi call completes during the worker's teardown and koffi aborts
            // the process. Anything else fails the test.
            console.log(`      (known koffi limitation: the process aborted: ${stderr.split('\n')[0]})`);
            this.skip();
          }
          interface WorkerExit {
            how: string;
            workerKind: string;
            exitCode: number;
            exitMs: number;
            workerError: string;
            stale: number;
            threadsBefore: number;
            threadsAfter: number;
            mineWoken: number;
            mineResult: string;
          }
          const r = await reportOf<WorkerExit>(path, run);
          assert.equal(r.workerKind, path.kind, "the worker's asyncWaitKind()");
          assert.equal(r.exitCode, { terminate: 1, exit: 0, throw: 1, cancel: 0 }[how], 'the worker exit code');
          if (how === 'throw') assert.equal(r.workerError, 'the worker fails with waits pending');
          assert.ok(r.exitMs < 5_000, `the worker took ${r.exitMs} ms to exit`);
          assert.equal(r.stale, 0, "wakes found the ended worker's waits still asleep in the kernel");
          assert.equal(r.mineWoken, 1, "no wake found the main thread's wait asleep after the worker ended");
          assert.equal(r.mineResult, 'ok', "the main thread's wait after the worker ended");
          assert.equal(code, 0, stderr);
        });
      }
    });
  }
});
