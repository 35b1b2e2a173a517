/**
 * A futex wait the kernel refuses for the moment (io_uring_enter or
 * futex_waitv short of memory: EAGAIN, ENOMEM) is not the reader's failure:
 * the parked read naps a millisecond and waits again. Other errors still end
 * it. Staged by standing in for the backend's async wait, which the rings
 * call through core's nativeFutex.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { nativeFutex, Region } from '@shmring/core';
import { SpscRing } from '../src/index.js';

type WaitAsync = typeof nativeFutex.waitAsync;

/** Runs `body` with the first `count` async waits refused with `code`. */
async function withRefusals(count: number, code: string, body: (refused: () => number) => Promise<void>): Promise<void> {
  const real: WaitAsync = nativeFutex.waitAsync;
  let refused = 0;
  nativeFutex.waitAsync = (...args: Parameters<WaitAsync>) => {
    if (refused === count) return real.apply(nativeFutex, args);
    refused++;
    const err = Object.assign(new Error(`io_uring_enter failed: ${code}`), { code });
    return { promise: Promise.reject(err), cancel: () => false };
  };
  try {
    await body(() => refused);
  } finally {
    nativeFutex.waitAsync = real;
  }
}

/** Runs `body` with a fresh SpscRing (in a memfd: native futex waits), closed after. */
async function withRing(body: (writer: SpscRing, reader: SpscRing) => Promise<void>): Promise<void> {
  const region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity: 1024 }) });
  const writer = SpscRing.create(region, { capacity: 1024 });
  const reader = SpscRing.attach(region);
  try {
    await body(writer, reader);
  } finally {
    writer.close();
    reader.close();
    region.close();
  }
}

describe('a futex wait the kernel refuses for now', () => {
  for (const code of ['ENOMEM', 'EAGAIN']) {
    it(`a parked read refused with ${code} naps and waits on, then takes the message`, () =>
      withRing((writer, reader) =>
        withRefusals(3, code, async (refused) => {
          const read = reader.read({ poll: 0, timeoutMs: 5000 });
          await sleep(50);
          assert.equal(refused(), 3, 'the read went round again after each refusal');
          writer.tryWrite(new Uint8Array([7]));
          assert.deepEqual(await read, new Uint8Array([7]));
        }),
      ));
  }

  it('a read napping after a refusal still ends at its timeout', () =>
    withRing((_writer, reader) =>
      withRefusals(Number.MAX_SAFE_INTEGER, 'ENOMEM', async () => {
        const t0 = performance.now();
        await assert.rejects(reader.read({ poll: 0, timeoutMs: 60 }), { code: 'ERR_SHMRING_TIMEOUT' });
        assert.ok(performance.now() - t0 < 1000);
      }),
    ));

  it('a read napping after a refusal ends at its abort', () =>
    withRing((_writer, reader) =>
      withRefusals(Number.MAX_SAFE_INTEGER, 'ENOMEM', async () => {
        const controller = new AbortController();
        const read = reader.read({ poll: 0, signal: controller.signal });
        await sleep(20);
        controller.abort();
        await assert.rejects(read, { name: 'AbortError' });
      }),
    ));

  it("a read refused for longer than a moment (5 s: a limit, not a shortage) fails with the kernel's error after all", function () {
    this.timeout(20_000);
    return withRing((_writer, reader) =>
      withRefusals(Number.MAX_SAFE_INTEGER, 'EAGAIN', async (refused) => {
        const t0 = performance.now();
        await assert.rejects(reader.read({ poll: 0 }), { code: 'EAGAIN' });
        const ms = performance.now() - t0;
        assert.ok(ms >= 4900 && ms < 10_000, `failed after ${Math.round(ms)} ms`);
        // Naps doubling from 1 ms up to 100 ms: some 55 refusals in 5 s, not 5000.
        assert.ok(refused() > 20 && refused() < 200, `${refused()} refusals`);
      }),
    );
  });

  it('any other error of the wait still fails the read', () =>
    withRing((_writer, reader) =>
      withRefusals(1, 'EFAULT', async () => {
        await assert.rejects(reader.read({ poll: 0, timeoutMs: 5000 }), { code: 'EFAULT' });
      }),
    ));
});
