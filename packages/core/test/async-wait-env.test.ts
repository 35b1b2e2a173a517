/**
 * SHMRING_ASYNC_WAIT is read per thread, from the environment the thread's
 * JavaScript sees: a worker given one of its own (`new Worker(file, { env
 * })`) waits as it says, not as the process's environment does. (The addon
 * read the process's with getenv at a worker's first wait, which also raced
 * a setenv of the main thread.)
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { asyncWaitKind, backendKind } from '../src/index.js';

describe('SHMRING_ASYNC_WAIT of a worker', () => {
  it("is the worker's own: a worker given 'threads' waits on threads, whatever its process says", async function () {
    if (backendKind() !== 'addon') this.skip(); // koffi has one way to wait
    const mine = asyncWaitKind();
    const core = JSON.stringify(new URL('../src/index.js', import.meta.url).href);
    for (const way of ['threads', mine]) {
      const worker = new Worker(
        `import(${core}).then(({ asyncWaitKind }) => require('node:worker_threads').parentPort.postMessage(asyncWaitKind()));`,
        { eval: true, env: { ...process.env, SHMRING_ASYNC_WAIT: way } },
      );
      const [kind] = (await once(worker, 'message')) as [string];
      await once(worker, 'exit');
      assert.equal(kind, way, `a worker given SHMRING_ASYNC_WAIT=${way}`);
    }
    assert.equal(asyncWaitKind(), mine, "this thread's own is unchanged");
  });
});
