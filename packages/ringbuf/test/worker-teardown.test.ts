/**
 * A worker that uses rings and ends without close() leaves nothing in the
 * process: not the fds of its regions or of its rings' role locks (one open
 * file description each), not their mappings (and so the memfds' memory),
 * and not the roles it held. Each case runs in a child process
 * (test/fixtures/worker-teardown.ts) so that its fd counts are its own, on
 * this process's backend.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { backendKind } from '@shmring/core';

const FIXTURE = fileURLToPath(new URL('./fixtures/worker-teardown.js', import.meta.url));

/** Runs node with `args` on `backend`; asserts it exits 0 (its stderr says why not) and returns its stdout. */
async function node(args: string[], backend: string): Promise<string> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SHMRING_BACKEND: backend } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const [code] = (await once(child, 'close')) as [number | null];
  assert.equal(code, 0, stderr);
  return stdout;
}

async function run(how: string): Promise<Record<string, unknown>> {
  return JSON.parse(await node([FIXTURE, how], backendKind())) as Record<string, unknown>;
}

describe('rings of a worker that ends without close()', function () {
  this.timeout(60_000);

  for (const how of ['terminate', 'exit', 'return'] as const) {
    const ending = { terminate: 'is terminated', exit: 'calls process.exit()', return: 'returns' }[how];
    it(`give back their fds, mappings and roles when the worker ${ending}, 8 times over`, async function () {
      // koffi has no hook that runs at terminate(): a terminated worker's fds stay (core's README).
      if (backendKind() === 'koffi' && how === 'terminate') this.skip();
      const { start, end, left, mappings, consumerFree } = await run(how);
      assert.deepEqual({ left, mappings, consumerFree }, { left: 0, mappings: 0, consumerFree: true });
      assert.ok((end as number) <= (start as number), `fds: ${String(start)} before 8 workers, ${String(end)} after`);
    });
  }

  // An outside tester: under koffi a cancelled wait settled at once while its pool thread was still out, and a
  // worker terminated (or exiting) once every read had rejected then aborted the whole process (exit 134).
  for (const ending of ['terminate', 'exit'] as const) {
    it(`koffi: a worker whose reads were ended by close() and awaited may ${ending === 'terminate' ? 'be terminated' : 'call process.exit()'} at once: the process lives, 6 times over`, async function () {
      const core = JSON.stringify(import.meta.resolve('@shmring/core'));
      const ringbuf = JSON.stringify(new URL('../src/index.js', import.meta.url).href);
      const worker = `
        const { parentPort } = require('node:worker_threads');
        Promise.all([import(${core}), import(${ringbuf})]).then(async ([{ Region }, { SpscRing }]) => {
          const rings = [];
          for (let i = 0; i < 3; i++) {
            const region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity: 64 }) });
            rings.push({ region, ring: SpscRing.create(region, { capacity: 64 }) });
          }
          const reads = rings.map(({ ring }) => ring.read({ poll: 0 }).catch((err) => err.code));
          parentPort.postMessage('parked');
          parentPort.once('message', async () => {
            for (const { ring, region } of rings) { ring.close(); region.close(); }
            const codes = await Promise.all(reads);
            parentPort.postMessage(codes.join(','));
            if (${JSON.stringify(ending)} === 'exit') process.exit(0);
            setInterval(() => {}, 1000);
          });
        });`;
      const script = `
        import { Worker } from 'node:worker_threads';
        import { once } from 'node:events';
        for (let i = 0; i < 6; i++) {
          const w = new Worker(${JSON.stringify(worker)}, { eval: true, execArgv: [] }); // CommonJS, not this --input-type
          await once(w, 'message');
          await new Promise((r) => setTimeout(r, 50 + 100 * Math.random())); // the pool threads are in the kernel
          const exited = once(w, 'exit'); // at once: after its answer the worker may exit before an await here resumes
          w.postMessage('close');
          const [codes] = await once(w, 'message');
          if (codes !== 'ERR_SHMRING_CLOSED,ERR_SHMRING_CLOSED,ERR_SHMRING_CLOSED') throw new Error(codes);
          if (${JSON.stringify(ending)} === 'terminate') await w.terminate();
          else await exited;
        }
        console.log('lived');`;
      assert.equal((await node(['--input-type=module', '-e', script], 'koffi')).trim(), 'lived');
    });
  }
});
