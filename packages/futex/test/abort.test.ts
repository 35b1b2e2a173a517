/**
 * waitAsync / waitAnyAsync and their AbortSignal: one 'abort' listener per
 * signal however many waits used it (@shmring/core's watchAbort), so a
 * caller that passes the same signal to every wait pays no listener pair
 * per wait.
 */
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { Region } from '@shmring/core';
import { waitAnyAsync, waitAsync, wake } from '../src/index.js';

describe('futex waits and their AbortSignal', function () {
  this.timeout(20_000);

  for (const backing of ['sab', 'memfd'] as const) {
    it(`keeps one abort listener on a signal a thousand successive waitAsync and waitAnyAsync calls used (${backing})`, async function () {
      const region = Region.create({ backing, size: 64 });
      const i32 = new Int32Array(region.buffer, 0, 2);
      const controller = new AbortController();
      try {
        for (let i = 0; i < 1000; i++) {
          const one = waitAsync(i32, 0, i, 5_000, controller.signal);
          const any = waitAnyAsync([[i32, 1, i]], 5_000, controller.signal);
          await new Promise((resolve) => setImmediate(resolve));
          assert.equal(getEventListeners(controller.signal, 'abort').length, 1, 'two pending waits, one listener');
          // Changes each word, then wakes it (a wait not yet asleep sees the new value: 'not-equal').
          Atomics.store(i32, 0, i + 1);
          Atomics.store(i32, 1, i + 1);
          wake(i32, 0);
          wake(i32, 1);
          assert.ok(['ok', 'not-equal'].includes(await one));
          assert.ok([0, 'not-equal'].includes(await any));
        }
        assert.equal(getEventListeners(controller.signal, 'abort').length, 1);
        const pending = waitAsync(i32, 0, 1000, 5_000, controller.signal);
        controller.abort();
        await assert.rejects(pending, { name: 'AbortError' });
        assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
      } finally {
        region.close();
      }
    });
  }
});
