/**
 * What a thread's end owes the memory it shares, and the koffi backend's
 * async waits around a worker's end and at its cap of async calls: each
 * case in a child process (fixtures/worker-end-peer.ts) with this run's
 * backend, since koffi aborts the whole process when a pool call of an
 * ended worker returns.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { backendKind } from '@shmring/core';

const PEER = new URL('./fixtures/worker-end-peer.js', import.meta.url).pathname;

/** Runs the peer in `mode`; its one JSON line, after checking it exited 0. */
function peer<T>(...args: string[]): T {
  const child = spawnSync(process.execPath, [PEER, ...args], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(child.signal, null, `the child died of ${child.signal}: ${child.stderr.split('\n')[0]}`);
  assert.equal(child.status, 0, child.stderr);
  return JSON.parse(child.stdout.trim().split('\n').pop()!) as T;
}

describe('a worker that ends', function () {
  this.timeout(60_000);

  for (const how of ['exit', 'end'] as const) {
    const ending = how === 'exit' ? 'calls process.exit()' : 'lets its script return';
    it(`with a wait parked (ref: false) that it ${ending} withdraws its announcement before its mappings go: the shared waiter count is back to 0`, () => {
      const { exitCode, waiters } = peer<{ exitCode: number; waiters: number }>('hooks', how);
      assert.equal(exitCode, 0);
      assert.equal(waiters, 0, "the worker's beforeUnmap hook ran after its memory was unmapped: every later publication pays a wake");
    });
  }

  for (const how of ['abort', 'decided', 'stop'] as const) {
    const what = {
      abort: "an aborted waitAsync's rejection",
      decided: 'a waitAnyAsync decided by one of its words',
      stop: "a stopped waitAnyStoppable's rejection",
    }[how];
    it(`may call process.exit() as soon as ${what} settles: no wait of it is left running to abort the process`, () => {
      const { exitCodes } = peer<{ exitCodes: number[] }>('settle-exit', how);
      assert.deepEqual(exitCodes, [0, 0, 0, 0, 0]);
    });
  }
});

describe("the koffi backend at koffi's cap of async calls", function () {
  this.timeout(60_000);

  it('keeps a long wait it admitted waiting past its first slice: no ERR_SHMRING_TOO_MANY_WAITS for a wait already pending', function () {
    if (backendKind() !== 'koffi') this.skip(); // the addon has no such cap
    const { ended } = peer<{ ended: { result: string; ms: number }[] }>('cap');
    /** Refused as they started (past the cap), which the caller sees at once; the others were admitted. */
    const refusedAtStart = ({ result, ms }: { result: string; ms: number }): boolean => result === 'ERR_SHMRING_TOO_MANY_WAITS' && ms < 500;
    const admitted = ended.filter((wait) => !refusedAtStart(wait));
    assert.ok(admitted.length < ended.length, 'no wait was refused as it started: this run is not at the cap');
    assert.ok(admitted.length >= 4, `${admitted.length} waits admitted`);
    for (const { result, ms } of admitted) {
      assert.equal(result, 'timed-out', `a wait admitted ended ${result} after ${ms} ms`);
      assert.ok(ms >= 2_400, `a wait of 2500 ms timed out after ${ms} ms`);
    }
  });
});
