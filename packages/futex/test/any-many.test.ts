/**
 * waitAnyAsync over many words of mapped regions where async waits use
 * io_uring: one native wait covers them all (FUTEX_WAITV entries of 128
 * words each), so these cases cross the entries' boundaries (words 127 /
 * 128, 255 / 256) and span several mappings. Skipped on the other paths
 * (the forced fallbacks, koffi), whose waiter threads may not be in the
 * kernel yet when a case wakes (any.test.ts covers them).
 */
import assert from 'node:assert/strict';
import { asyncWaitKind, backendKind, MAX_WAIT_ANY_ASYNC, nativeFutex, Region } from '@shmring/core';
import { waitAnyAsync, waitAsync, wake, wakeNative, type WaitTarget } from '../src/index.js';

/** Words per region: 100, so 300 words lie in three mappings. */
const PER_REGION = 100;

describe('@shmring/futex waitAnyAsync over many words', () => {
  let regions: Region[] = [];
  let views: Int32Array[] = [];
  beforeEach(function () {
    if (backendKind() !== 'addon' || asyncWaitKind() !== 'io_uring') {
      console.log(`      SKIPPED: async waits use ${asyncWaitKind()} here, not io_uring's FUTEX_WAITV`);
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
      return [i32, index, Atomics.load(i32, index)] as const; // the snapshot a waiter takes
    });
  const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

  it('resolves with the index of the word woken, in the first, second and third group of 128 words', async () => {
    // The one-wait path is there (where it is not, waitAnyAsync waits word by word and these cases prove less).
    const probe = nativeFutex.waitAnyAsync(
      words(2).map(([i32, index, expected]) => ({ buffer: i32.buffer as ArrayBuffer, byteOffset: index * 4, expected })),
      0,
    );
    assert.ok(probe !== undefined, 'nativeFutex.waitAnyAsync is not available with io_uring waits');
    assert.equal(await probe.promise, -2, 'a timeout of 0 over unchanged words');
    for (const k of [0, 127, 128, 255, 256, 299]) {
      const pending = waitAnyAsync(words(300), 5000);
      await tick(5);
      const [i32, index] = at(k);
      Atomics.add(i32, index, 1); // the change a publisher makes before its wake
      wake(i32, index);
      assert.equal(await pending, k, `word ${k}`);
    }
  });

  it('is not-equal at once when any word differs, times out past its timeout, and rejects an abort', async () => {
    const stale = words(300);
    const [i32, index] = at(200);
    Atomics.add(i32, index, 1); // makes the snapshot stale
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
    const single = waitAsync(i32, index, Atomics.load(i32, index), 2000); // on the snapshot of the word
    await tick(5);
    assert.equal(wakeNative(i32, index, 1), 1, 'no sleeper was woken');
    controller.abort();
    assert.equal(await many, 'AbortError');
    assert.equal(await single, 'ok', 'the wake the aborted wait took was not passed on');
  });

  it('passes on the wakes of two of its entries that were woken in the same reap', async () => {
    // Words 0 and 150 lie in different FUTEX_WAITV entries (0-127, 128-255); the second is queued before a
    // plain wait on word 150. Two wakes of one waiter in one turn: each claims its entry. The first completion ends the
    // wait; the second entry's wake must reach the plain wait, though it completes in the same reap.
    const many = waitAnyAsync(words(300), 5000);
    await tick(5);
    const [i32, index] = at(150);
    const single = waitAsync(i32, index, Atomics.load(i32, index), 2000); // on the snapshot of the word
    await tick(5);
    const [first, at0] = at(0);
    Atomics.add(first, at0, 1); // a publisher's change, before its wake
    Atomics.add(i32, index, 1); // the same, for the word of the other wake
    assert.equal(wakeNative(first, at0, 1), 1);
    assert.equal(wakeNative(i32, index, 1), 1);
    const woken = await many;
    assert.ok(woken === 0 || woken === 150, `woken at ${String(woken)}`);
    assert.equal(await single, 'ok', "the second entry's wake was not passed on");
  });

  it('settles when a region of its words is closed under it, and leaves the others untouched', async () => {
    const pending = waitAnyAsync(words(300), 5000);
    await tick(5);
    regions[1]!.close();
    const result = await pending;
    assert.equal(typeof result, 'number', `settled with ${String(result)}`);
    // The other mappings still work: a new wait on them is woken as usual.
    const rest: WaitTarget[] = [];
    // The snapshot a waiter takes, of the words still mapped.
    for (const i32 of [views[0]!, views[2]!]) for (let i = 0; i < PER_REGION; i++) rest.push([i32, i, Atomics.load(i32, i)]);
    const again = waitAnyAsync(rest, 5000);
    await tick(5);
    const [i32, index] = at(250);
    Atomics.add(i32, index, 1); // a publisher's change, before its wake
    wake(i32, index);
    assert.equal(await again, 150);
  });

  it('ends every one of its native waits when aborted, over more than MAX_WAIT_ANY_ASYNC words', async function () {
    this.timeout(60_000);
    const count = MAX_WAIT_ANY_ASYNC + 1; // two native waits: 16384 words, then one
    const big = Region.create({ backing: 'memfd', size: 4 * (count + 8) });
    try {
      const i32 = new Int32Array(big.buffer);
      const list: WaitTarget[] = Array.from({ length: count }, (_, k) => [i32, k, 0] as const);
      const controller = new AbortController();
      const pending = waitAnyAsync(list, 10_000, controller.signal);
      await tick(20);
      controller.abort();
      await assert.rejects(pending, (err: Error) => err.name === 'AbortError');
      // Nothing of it is left asleep in the kernel, in either native wait.
      assert.equal(wakeNative(i32, 0), 0, 'the first native wait is still asleep on word 0');
      assert.equal(wakeNative(i32, count - 1), 0, 'the second native wait is still asleep on its word');
    } finally {
      big.close();
    }
  });

  it('passes on the wake of a second native wait that ended in the same reap, over more than MAX_WAIT_ANY_ASYNC words', async function () {
    this.timeout(60_000);
    // Two native waits (words 0..16383, then 16384): both are woken in one turn, so both complete in one
    // reap and settle before either's reaction runs. The first decides; the second's wake, taken before a
    // plain wait on its word, must reach that plain wait, though its native wait had ended on its own.
    const count = MAX_WAIT_ANY_ASYNC + 1;
    const big = Region.create({ backing: 'memfd', size: 4 * (count + 8) });
    try {
      const i32 = new Int32Array(big.buffer);
      const list: WaitTarget[] = Array.from({ length: count }, (_, k) => [i32, k, 0] as const);
      const many = waitAnyAsync(list, 10_000);
      await tick(20);
      const last = count - 1;
      const single = waitAsync(i32, last, 0, 2000); // queued after the second native wait
      await tick(5);
      Atomics.store(i32, 0, 1); // a publisher's change, before its wake
      Atomics.store(i32, last, 1); // the same, for the word of the other wake
      assert.equal(wakeNative(i32, 0, 1), 1);
      assert.equal(wakeNative(i32, last, 1), 1);
      assert.equal(await many, 0);
      assert.equal(await single, 'ok', "the second native wait's wake was not passed on");
    } finally {
      big.close();
    }
  });

  it(`takes MAX_WAIT_ANY_ASYNC (${MAX_WAIT_ANY_ASYNC}) words of one mapping in one native wait, and one more in two`, async function () {
    this.timeout(60_000);
    const big = Region.create({ backing: 'memfd', size: 4 * (MAX_WAIT_ANY_ASYNC + 8) });
    try {
      const i32 = new Int32Array(big.buffer);
      for (const count of [MAX_WAIT_ANY_ASYNC, MAX_WAIT_ANY_ASYNC + 1]) {
        const list: WaitTarget[] = Array.from({ length: count }, (_, k) => [i32, k, 0] as const);
        const pending = waitAnyAsync(list, 10_000);
        await tick(20);
        Atomics.store(i32, count - 1, 1); // a publisher's change, before its wake
        wake(i32, count - 1);
        assert.equal(await pending, count - 1, `${count} words (${asyncWaitKind()})`);
        Atomics.store(i32, count - 1, 0); // back, for the next count's snapshot
      }
    } finally {
      big.close();
    }
  });
});
