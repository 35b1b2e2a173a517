/**
 * waitAny / waitAnyAsync / wakeNative: waiting on several words at once.
 *
 * Blocking waits run in a worker (fixtures/any-peer.ts: given the region's
 * SharedArrayBuffer, or a memfd it maps again), which announces itself in
 * word 15 and reports the result.
 */
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { backendKind, ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { MAX_WAIT_ANY, waitAny, waitAnyAsync, waitAnyStoppable, wake, wakeNative, type WaitTarget } from '../src/index.js';
import { runModule } from './helpers.js';

const PEER = new URL('./fixtures/any-peer.js', import.meta.url);

function blockedWorker(
  source: { sab?: SharedArrayBuffer; fd?: number },
  count: number,
  timeoutMs: number,
): Promise<{ result: unknown; ms: number }> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(PEER, { workerData: { ...source, count, timeoutMs } });
    worker.on('message', resolve);
    worker.on('error', reject);
  });
}

async function until(predicate: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('condition never became true');
    await new Promise((r) => setTimeout(r, 1));
  }
}

let memfdProblem: string | undefined;
function memfd(context: Mocha.Context): Region {
  try {
    return Region.create({ backing: 'memfd', size: 4096 });
  } catch (err) {
    memfdProblem = (err as Error).message;
    console.log(`      (skipped: no memfd region: ${memfdProblem})`);
    context.skip();
  }
}

describe('@shmring/futex waitAny / waitAnyAsync', () => {
  for (const backing of ['sab', 'memfd'] as const) {
    describe(`on a ${backing === 'sab' ? 'SharedArrayBuffer' : 'memfd'}`, () => {
      let region: Region | undefined;
      let i32: Int32Array;
      beforeEach(function () {
        region = backing === 'sab' ? Region.create({ backing: 'sab', size: 4096 }) : memfd(this);
        i32 = new Int32Array(region.buffer, 0, 16);
      });
      afterEach(() => region?.close());
      const words = (count: number): WaitTarget[] => Array.from({ length: count }, (_, i) => [i32, i, 0] as const);

      it('waitAnyAsync resolves with the index of the word woken, and leaves no wait on the others', async () => {
        const pending = waitAnyAsync(words(3), 5000);
        await new Promise((r) => setTimeout(r, 20));
        Atomics.store(i32, 2, 1); // the change a waker publishes before waking
        wake(i32, 2);
        assert.equal(await pending, 2);
        if (backing === 'sab') {
          // The others' Atomics.waitAsync were cancelled: nothing is left to notify on them.
          assert.equal(Atomics.notify(i32, 0), 0);
          assert.equal(Atomics.notify(i32, 1), 0);
        }
      });

      it('waitAnyAsync: not-equal when a word already differs, timed-out after its timeout, AbortError on abort', async () => {
        Atomics.store(i32, 1, 7);
        assert.equal(await waitAnyAsync(words(3), 5000), 'not-equal');
        Atomics.store(i32, 1, 0);
        // A wait may end spuriously (the futex contract: 'ok' means "re-check"); seen once in a
        // few full-suite runs here. Nothing changes the words, so a retry must time out.
        let result: unknown;
        let started = 0;
        for (let attempt = 0; attempt < 3 && result !== 'timed-out'; attempt++) {
          started = performance.now();
          result = await waitAnyAsync(words(2), 30);
        }
        assert.equal(result, 'timed-out');
        assert.ok(performance.now() - started >= 25);
        // The abort, likewise: a spurious end before it ('ok') is a retry, never a resolution after it.
        let controller = new AbortController();
        let aborted: unknown;
        for (let attempt = 0; attempt < 3 && aborted === undefined; attempt++) {
          controller = new AbortController();
          const signal = controller.signal;
          setTimeout(() => controller.abort(), 20);
          const outcome = await waitAnyAsync(words(2), 5000, signal).catch((err: unknown) => (aborted = err));
          assert.ok(aborted !== undefined || !signal.aborted || outcome !== 'timed-out', 'resolved after its abort');
        }
        assert.ok(
          aborted instanceof Error && aborted.name === 'AbortError' && (aborted as ShmringError).code === ErrorCodes.ABORTED,
          String(aborted),
        );
        await assert.rejects(waitAnyAsync(words(2), 5000, controller.signal), (err: Error) => err.name === 'AbortError');
      });

      it('waitAnyAsync with a timeout of 0 answers from all the words: not-equal when any differs, a later one too; timed-out when none does', async () => {
        assert.equal(await waitAnyAsync(words(3), 0), 'timed-out');
        Atomics.store(i32, 2, 5); // the last word: every earlier one would time out at once
        assert.equal(await waitAnyAsync(words(3), 0), 'not-equal');
        assert.equal(waitAny(words(3), 0), 'not-equal', 'waitAny says the same');
        Atomics.store(i32, 2, 0);
      });

      it("two waitAnyAsync loops sharing two words do not wake each other for ever: another wait's cancel is not a publication", async () => {
        // Each loop waits on the two shared words and a word of its own, as two select()s over two common
        // queues do; a cancel that wakes every sleeper of a word (Atomics.notify, koffi's kick) must not
        // count as a wake-up of the other loop, whose own cancels would then wake the first, and so on.
        // (On a memfd with io_uring waits all words are one native wait, whose cancel wakes nobody: there
        // this checks that that mode has no such loop either; koffi and the thread paths take the other.)
        const rounds = [0, 0];
        let stop = false;
        const loop = async (me: number, own: number): Promise<void> => {
          while (!stop) {
            const list: WaitTarget[] = [0, 1, own].map((k) => [i32, k, Atomics.load(i32, k)] as const);
            await waitAnyAsync(list, 400);
            rounds[me]!++;
          }
        };
        const loops = [loop(0, 2), loop(1, 3)];
        await new Promise((r) => setTimeout(r, 50));
        Atomics.add(i32, 2, 1); // a publication on the first loop's own word
        if (backing === 'sab') wake(i32, 2);
        else wakeNative(i32, 2);
        await new Promise((r) => setTimeout(r, 300));
        stop = true;
        Atomics.add(i32, 0, 1); // ends both loops' last waits
        if (backing === 'sab') wake(i32, 0);
        else wakeNative(i32, 0);
        await Promise.all(loops);
        // The publication wakes the first loop once; its cancels may wake the second once or twice; 400 ms
        // timeouts add at most one round each. Woken by each other's cancels, each made thousands.
        assert.ok(rounds[0]! <= 4 && rounds[1]! <= 4, `rounds ${rounds.join(', ')}`);
        assert.ok(rounds[0]! >= 1, 'the publication did not wake the first loop');
        Atomics.store(i32, 0, 0);
        Atomics.store(i32, 2, 0);
      });

      it('waitAnyStoppable: stop() rejects it with the reason given (an AbortError by default), leaving no wait asleep', async () => {
        const stopped = waitAnyStoppable(words(3), 5000);
        await new Promise((r) => setTimeout(r, 20));
        stopped.stop();
        await assert.rejects(stopped.promise, (err: ShmringError) => err.name === 'AbortError' && err.code === ErrorCodes.ABORTED);
        if (backing === 'sab') {
          assert.equal(Atomics.notify(i32, 0) + Atomics.notify(i32, 2), 0, 'a wait of it is still pending');
        } else if (backendKind() === 'addon') {
          assert.equal(wakeNative(i32, 0) + wakeNative(i32, 2), 0, 'a wait of it is still asleep in the kernel');
        }
        const reason = new Error('the caller moved on');
        const again = waitAnyStoppable(words(3), 5000);
        again.stop(reason);
        again.stop(new Error('a second stop changes nothing'));
        await assert.rejects(again.promise, (err: unknown) => err === reason);
        // Settled first, a stop changes nothing either.
        Atomics.store(i32, 1, 1); // a stale snapshot: settles 'not-equal' at once
        const settled = waitAnyStoppable(words(3), 5000);
        Atomics.store(i32, 1, 0); // (the words of the cases after this one start at 0)
        const result = await settled.promise;
        settled.stop();
        assert.equal(result, 'not-equal');
      });

      it('waitAny (futex_waitv) in a worker returns the index woken by a native wake', async () => {
        const blocked = blockedWorker(backing === 'sab' ? { sab: region!.buffer as SharedArrayBuffer } : { fd: region!.fd! }, 3, 5000);
        await until(() => Atomics.load(i32, 15) === 1);
        await new Promise((r) => setTimeout(r, 30)); // in the kernel by now, most likely
        Atomics.store(i32, 1, 1);
        if (backing === 'sab') {
          // V8's notify does not reach a thread blocked in the kernel.
          assert.equal(Atomics.notify(i32, 1), 0, 'Atomics.notify found a waiter');
        }
        let woken = 0;
        const deadline = Date.now() + 5000;
        while (woken === 0 && Date.now() < deadline) woken = wakeNative(i32, 1);
        const { result, ms } = await blocked;
        assert.ok(result === 1 || result === 'not-equal', `result ${String(result)}`);
        assert.ok(ms < 4000, `woken after ${ms} ms`);
      });
    });
  }

  it('waitAny: not-equal, timed-out, and typed errors for bad lists', () => {
    const i32 = new Int32Array(new SharedArrayBuffer(16));
    i32[0] = 3;
    assert.equal(
      waitAny(
        [
          [i32, 1, 0],
          [i32, 0, 0],
        ],
        1000,
      ),
      'not-equal',
    );
    assert.equal(
      waitAny(
        [
          [i32, 1, 0],
          [i32, 2, 0],
        ],
        10,
      ),
      'timed-out',
    );
    assert.throws(
      () => waitAny([]),
      (err: ShmringError) => err instanceof RangeError && err.code === ErrorCodes.INVALID_ARGUMENT,
    );
    const many = Array.from({ length: MAX_WAIT_ANY + 1 }, () => [i32, 1, 0] as const);
    assert.throws(
      () => waitAny(many, 0),
      (err: ShmringError) => err instanceof RangeError && err.code === ErrorCodes.INVALID_ARGUMENT,
    );
    assert.throws(
      () => waitAny([[new Uint32Array(4) as never, 0, 0]]),
      (err: ShmringError) => err instanceof TypeError,
    );
    assert.throws(
      () => waitAny([[i32, 4, 0]]),
      (err: ShmringError) => err instanceof RangeError,
    );
  });

  it('waitAnyAsync: a ref that is not a boolean is a typed error', () => {
    const i32 = new Int32Array(new SharedArrayBuffer(16));
    assert.throws(
      () => waitAnyAsync([[i32, 0, 0]], 10, undefined, 1 as unknown as boolean),
      (err: ShmringError) => err instanceof TypeError && err.code === ErrorCodes.INVALID_ARGUMENT,
    );
  });

  for (const backing of ['sab', 'memfd'] as const) {
    it(`waitAnyAsync with ref false lets the process exit (${backing}); a ref'd one keeps it alive until woken`, function () {
      if (backing === 'memfd' && backendKind() !== 'addon') {
        console.log("      SKIPPED: the koffi backend's waits hold a libuv pool thread, which keeps the loop alive (documented)");
        this.skip();
      }
      if (backing === 'memfd') memfd(this).close(); // skips here, as the other memfd cases do, where there is none
      const run = (ref: boolean): string => {
        const child = runModule(
          ['waitAnyAsync', 'wake'],
          `const region = Region.create({ backing: '${backing}', size: 4096 });
           const i32 = new Int32Array(region.buffer, 0, 4);
           waitAnyAsync([[i32, 0, 0], [i32, 1, 0]], undefined, undefined, ${ref}).then((r) => console.log('woken', r));
           // Only a ref'd wait is still there to be woken after 300 ms (by an unref'd timer: nothing else holds the loop).
           setTimeout(() => { Atomics.store(i32, 1, 1); wake(i32, 1); }, 300).unref();`,
        );
        assert.equal(child.status, 0, child.stderr);
        return child.stdout.trim();
      };
      assert.equal(run(false), '', "the unref'd wait kept the process alive until woken");
      assert.equal(run(true), 'woken 1', "the ref'd wait let the process exit before it was woken");
    });
  }
});
