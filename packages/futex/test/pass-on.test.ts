/**
 * A publisher that wakes one waiter of a word may pick a wait whose caller
 * then drops the wake: a waitAnyAsync whose race another word decided, a
 * waitAsync aborted after it was woken but before it heard. Such a wake
 * must reach the word's next sleeper, who would sleep on otherwise.
 *
 * Each case queues the dropping wait first and a plain wait on the same
 * word after it: the kernel wakes a word's sleepers in the order they came,
 * so one wake of one waiter goes to the first. Where async waits use
 * io_uring, the two wakes of a case complete in one reap and both waits
 * settle before any reaction runs, which is the order that drops a wake.
 * Only there: on the other paths the order of deliveries is the waiter
 * threads' (and a futex_waitv lane, or koffi's slices, end a wait whose
 * word moved anyway), so a case there proves nothing and may see another
 * order (async-paths.test.ts checks each path's pass-on across threads).
 */
import assert from 'node:assert/strict';
import { asyncWaitKind, backendKind, nativeFutex, Region } from '@shmring/core';
import { waitAnyAsync, waitAsync, wakeNative } from '../src/index.js';

const tick = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** io_uring waits are in the kernel, in the order they were started, by the time a tick has passed (not so for waiter threads). */
const inKernelInOrder = (): boolean => backendKind() === 'addon' && asyncWaitKind() === 'io_uring';

/** Wakes one sleeper of `i32[index]`, and checks that one was there. */
function wakeOne(i32: Int32Array, index: number): void {
  assert.equal(wakeNative(i32, index, 1), 1, `no sleeper on word ${index}`);
}

describe('@shmring/futex: a wake its caller drops goes to the next sleeper', () => {
  let mapped: Region | undefined;
  let shared: Region | undefined;
  let i32: Int32Array;
  beforeEach(function () {
    if (!inKernelInOrder()) {
      console.log(`      SKIPPED: async waits use ${asyncWaitKind()} here (${backendKind()}), not io_uring`);
      this.skip();
    }
    try {
      mapped = Region.create({ backing: 'memfd', size: 4096 });
    } catch (err) {
      console.log(`      (skipped: no memfd region: ${(err as Error).message})`);
      this.skip();
    }
    i32 = new Int32Array(mapped.buffer, 0, 16);
  });
  afterEach(() => {
    mapped?.close();
    shared?.close();
    mapped = shared = undefined;
  });

  it('waitAnyAsync waiting word by word passes on the wake of a word woken after another decided', async () => {
    // A SharedArrayBuffer word in the list makes it wait word by word (one native wait per mapped word).
    shared = Region.create({ backing: 'sab', size: 64 });
    const sab = new Int32Array(shared.buffer, 0, 4);
    const many = waitAnyAsync(
      [
        [sab, 0, 0],
        [i32, 1, 0],
        [i32, 2, 0],
      ],
      5000,
    );
    await tick(20);
    const single = waitAsync(i32, 2, 0, 2000); // queued after the wait of word 2
    await tick(20);
    Atomics.store(i32, 1, 1); // a publisher's change, before its wake
    Atomics.store(i32, 2, 1); // the same, for the other word
    wakeOne(i32, 1);
    wakeOne(i32, 2);
    const woken = await many;
    assert.ok(woken === 1 || woken === 2, `woken at ${String(woken)}`);
    assert.equal(await single, 'ok', 'the wake of the word that did not decide was dropped');
  });

  it('passes nothing on for the waits it cancelled itself (no wake was taken)', async function () {
    shared = Region.create({ backing: 'sab', size: 64 });
    const sab = new Int32Array(shared.buffer, 0, 4);
    const controller = new AbortController();
    const many = waitAnyAsync(
      [
        [sab, 0, 0],
        [i32, 3, 0],
      ],
      5000,
      controller.signal,
    ).catch((err: Error) => err.name);
    await tick(20);
    const single = waitAsync(i32, 3, 0, 150); // queued after the wait of word 3
    await tick(20);
    controller.abort();
    assert.equal(await many, 'AbortError');
    assert.equal(await single, 'timed-out', 'a cancelled wait passed on a wake it never took');
  });

  it('waitAsync aborted after its wait was woken, before it heard, passes the wake on', async () => {
    const controller = new AbortController();
    // Settles in the same reap as the aborted wait, just before it: its reaction aborts between the
    // aborted wait's settling and its reaction (a raw native wait, so no reaction of ours comes first).
    const trigger = nativeFutex.waitAsync(i32.buffer as ArrayBuffer, i32.byteOffset + 4 * 5, 0, 5000);
    const triggered = trigger.promise.then(() => controller.abort());
    await tick(20);
    const aborted = waitAsync(i32, 6, 0, 5000, controller.signal).catch((err: Error) => err.name);
    await tick(20);
    const single = waitAsync(i32, 6, 0, 2000); // queued after the aborted one
    await tick(20);
    Atomics.store(i32, 5, 1);
    Atomics.store(i32, 6, 1); // a publisher's change, before its wake
    wakeOne(i32, 5);
    wakeOne(i32, 6);
    await triggered;
    assert.ok(['AbortError', 'ok'].includes(String(await aborted)), String(await aborted));
    assert.equal(await single, 'ok', 'the wake the aborted wait took was dropped');
  });
});
