/**
 * A worker that uses a channel by a socket path (connect or listen) and
 * ends without close() leaves nothing in the process: not the memfd of its
 * channel's rings, nor the fds of their role locks, which kept that memory
 * alive. Each case runs in a child process
 * (test/fixtures/worker-teardown.ts) so that its fd counts are its own, on
 * this process's backend.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { backendKind } from '@shmring/core';

const FIXTURE = fileURLToPath(new URL('./fixtures/worker-teardown.js', import.meta.url));

async function run(mode: string, how: string): Promise<Record<string, unknown>> {
  const child = spawn(process.execPath, [FIXTURE, mode, how], {
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

const ENDINGS = { terminate: 'is terminated', exit: 'calls process.exit()', return: 'returns' } as const;

describe('channels of a worker that ends without close()', function () {
  this.timeout(60_000);

  for (const [mode, endings] of [
    ['connect', ['terminate', 'exit', 'return']],
    ['listen', ['terminate', 'exit']],
  ] as const) {
    for (const how of endings) {
      it(`give back every fd when a worker that ${mode === 'connect' ? 'connected' : 'listened'} ${ENDINGS[how]}, 8 times over`, async function () {
        // koffi has no hook that runs at terminate(): a terminated worker's fds stay (core's README).
        // And a koffi worker that ends while an async wait is pending (a server's handler waits for
        // requests) aborts the process: koffi's own limit (core/src/native/koffi.ts, "Workers").
        if (backendKind() === 'koffi' && (how === 'terminate' || mode === 'listen')) this.skip();
        const { start, end, left, serverChannels } = await run(mode, how);
        assert.deepEqual({ left, serverChannels }, { left: 0, serverChannels: 0 });
        assert.ok((end as number) <= (start as number), `fds: ${String(start)} before 8 workers, ${String(end)} after`);
      });
    }
  }
});
