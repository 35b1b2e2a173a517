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

async function run(how: string): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [FIXTURE, how], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, SHMRING_BACKEND: backendKind() },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const [code] = (await once(child, 'close')) as [number | null];
  assert.equal(code, 0, stderr);
  return JSON.parse(stdout) as Record<string, unknown>;
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
});
