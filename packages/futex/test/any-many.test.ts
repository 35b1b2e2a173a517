/**
 * waitAnyAsync over many words of mapped regions: where async waits use
 * io_uring, one native wait covers them all (FUTEX_WAITV entries of 128
 * words each), so these cases cross the entries' boundaries (words 127 /
 * 128, 255 / 256) and span several mappings. They hold on every other path
 * too (one wait per word), which the forced-fallback CI runs take; not
 * on the koffi backend's pool threads (skipped there).
 */
import assert from 'node:assert/strict';
import { asyncWaitKind, backendKind, MAX_WAIT_ANY_ASYNC, Region } from '@shmring/core';
import { waitAnyAsync, waitAsync, wake, wakeNative, type WaitTarget } from '../src/index.js';

/** Words per region: 100, so 300 words lie in three mappings. */
const PER_REGION = 100;

describe('@shmring/futex waitAnyAsync over many words', () => {
  let regions: Region[] = [];
  let views: Int32Array[] = [];
  beforeEach(function () {
    if (backendKind() === 'koffi') {
      // Its waits run on libuv's pool (4 threads by default): most of 300 wait their turn outside the kernel,
      // where a FUTEX_WAKE cannot find them, and may end spuriously when run (packages/core/README.md).
      console.log('      SKIPPED: the koffi backend waits word by word on a few pool threads');
      this.skip();
    }
    try {
      regions = Array.from({ length: 3 }, () => Region.create({ backing: 'memfd', size: 4096 }));
    } catch (err) {
      console.log(`      (skipped: no memfd region: ${(err as Error).message})`);
      this.skip();
    }
    views = regions.map((r) => new Int32Array(r.buffer, 0, PER_REGION));
  });
  afterEach(() => {
    for (const r of regions) r.close();
    regions = [];
  });

  /** Word `k` of the 300: its view and index. */
  const at = (k: number): [Int32Array, number] => [views[Math.floor(k / PER_REGION)]!, k % PER_REGION];
  const words = (count: number): WaitTarget[] =>
    Array.from({ length: count }, (_, k) => {
      const [i32, index] = at(k);
      return [i32, index, Atomics.load(i32, index)] as const;
    });
  const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

  it('resolves with the index of the word woken, in the first, second and third group of 128 words', async () => {
    for (const k of [0, 127, 128, 255, 256, 299]) {
      const pending = waitAnyAsync(words(300), 5000);
      await tick(5);
      const [i32, index] = at(k);
      Atomics.add(i32, index, 1); // the change a waker publishes before waking
      wake(i32, index);
      assert.equal(await pending, k, `word ${k}`);
    }
  });

  it('is not-equal at once when any word differs, times out past its timeout, and rejects an abort', async () => {
    const stale = words(300);
    const [i32, index] = at(200);
    Atomics.add(i32, index, 1);
    assert.equal(await waitAnyAsync(stale, 5000), 'not-equal');
    // Nothing changes the words: a wait may end spuriously ('ok': re-check), so a retry must time out.
    let result: unknown;
    let started = 0;
    for (let attempt = 0; attempt < 3 && result !== 'timed-out'; attempt++) {
      started = performance.now();
      result = await waitAnyAsync(words(300), 30);
    }
    assert.equal(result, 'timed-out');
    assert.ok(performance.now() - started >= 25);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 20);
    await assert.rejects(waitAnyAsync(words(300), 5000, controller.signal), (err: Error) => err.name === 'AbortError');
  });

  it('passes on a wake it took just before it was aborted, to the next sleeper of that word', async () => {
    // The wait on 300 words queues first, then a plain wait on word 150: the kernel wakes a word's sleepers in
    // the order they came, so one FUTEX_WAKE of one waiter goes to the wait on 300. Aborted in the same turn,
    // before its completion is delivered, it must hand that wake to the plain wait, which would sleep on otherwise.
    const controller = new AbortController();
    const many = waitAnyAsync(words(300), 5000, controller.signal).catch((err: Error) => err.name);
    await tick(5);
    const [i32, index] = at(150);
    const single = waitAsync(i32, index, Atomics.load(i32, index), 2000);
    await tick(5);
    assert.equal(wakeNative(i32, index, 1), 1, 'no sleeper was woken');
    controller.abort();
    assert.equal(await many, 'AbortError');
    assert.equal(await single, 'ok', 'the wake the aborted wait took was not passed on');
  });

  it('settles when a region of its words is closed under it, and leaves the others untouched', async () => {
    const pending = waitAnyAsync(words(300), 5000);
    await tick(5);
    regions[1]!.close();
    const result = await pending;
    assert.equal(typeof result, 'number', `settled with ${String(result)}`);
    // The other mappings still work: a new wait on them is woken as usual.
    const rest: WaitTarget[] = [];
    for (const i32 of [views[0]!, views[2]!]) for (let i = 0; i < PER_REGION; i++) rest.push([i32, i, Atomics.load(i32, i)]);
    const again = waitAnyAsync(rest, 5000);
    await tick(5);
    const [i32, index] = at(250);
    Atomics.add(i32, index, 1);
    wake(i32, index);
    assert.equal(await again, 150);
  });

  it(`takes up to MAX_WAIT_ANY_ASYNC (${MAX_WAIT_ANY_ASYNC}) words of one mapping, and more the word-by-word way`, async function () {
    this.timeout(60_000);
    const big = Region.create({ backing: 'memfd', size: 4 * (MAX_WAIT_ANY_ASYNC + 8) });
    try {
      const i32 = new Int32Array(big.buffer);
      for (const count of [MAX_WAIT_ANY_ASYNC, MAX_WAIT_ANY_ASYNC + 1]) {
        const list: WaitTarget[] = Array.from({ length: count }, (_, k) => [i32, k, 0] as const);
        const pending = waitAnyAsync(list, 10_000);
        await tick(20);
        Atomics.store(i32, count - 1, 1);
        wake(i32, count - 1);
        assert.equal(await pending, count - 1, `${count} words (${asyncWaitKind()})`);
        Atomics.store(i32, count - 1, 0);
      }
    } finally {
      big.close();
    }
  });
});
