import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Region } from '@shmring/core';
import { wait, waitAsync, wake } from '../src/index.js';

const PEER = fileURLToPath(new URL('./fixtures/peer.js', import.meta.url));

function peer(region: Region, args: string[]): { done: Promise<{ code: number | null; stdout: string; ms: number }> } {
  const started = performance.now();
  const child = spawn(process.execPath, [PEER, ...args], { stdio: ['ignore', 'pipe', 'inherit', region.fd] });
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d));
  return {
    done: new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, ms: performance.now() - started }));
    }),
  };
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

  describe('across threads (Atomics on a SharedArrayBuffer)', () => {
    it('resolves waitAsync when a worker wakes it', async () => {
      const i32 = new Int32Array(new SharedArrayBuffer(16));
      const pending = waitAsync(i32, 0, 0, 10_000);
      const worker = new Worker(
        `const { workerData: i32 } = require('node:worker_threads');
         setTimeout(() => { Atomics.store(i32, 0, 1); Atomics.notify(i32, 0); }, 50);`,
        { eval: true, workerData: i32 });
      assert.equal(await pending, 'ok');
      await new Promise((r) => worker.once('exit', r));
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
  });

  describe('bad input', () => {
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
