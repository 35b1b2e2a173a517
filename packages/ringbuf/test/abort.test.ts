/**
 * Parked Promise waits and their AbortSignal (abort.ts): one 'abort'
 * listener per signal, however many waits park on it, one after the other
 * or at once; an abort ends every wait parked on the signal and only those.
 */
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { Region, unwatchAbort, watchAbort } from '@shmring/core';
import { SpscRing } from '../src/index.js';

const CAPACITY = 4096;

/** Runs `body` with `count` fresh rings in one memfd region, and closes them however it ends. */
async function withRings(count: number, body: (rings: SpscRing[]) => Promise<void>): Promise<void> {
  const one = SpscRing.regionSize({ capacity: CAPACITY });
  const region = Region.create({ backing: 'memfd', size: one * count });
  const list = Array.from({ length: count }, (_, i) => SpscRing.create(region, { capacity: CAPACITY, offset: i * one }));
  try {
    await body(list);
  } finally {
    for (const ring of list) ring.close();
    region.close();
  }
}

/** A read that parks at once (poll 0) and its outcome, once settled. */
function parkedRead(ring: SpscRing, signal: AbortSignal): { promise: Promise<unknown>; outcome: () => string } {
  let outcome = 'pending';
  const promise = ring.read({ signal, poll: 0 }).then(
    (m) => {
      outcome = `read ${[...m].join(',')}`;
    },
    (err: Error) => {
      outcome = err.name;
    },
  );
  return { promise, outcome: () => outcome };
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('Promise waits and their AbortSignal', function () {
  this.timeout(20_000);

  it('keeps one abort listener on a signal that a thousand successive parked reads used, and none once it aborted', async function () {
    const controller = new AbortController();
    await withRings(1, async ([ring]) => {
      for (let i = 0; i < 1000; i++) {
        const read = parkedRead(ring!, controller.signal);
        await turn(); // parked: the read has registered on the signal
        assert.equal(read.outcome(), 'pending');
        assert.ok(ring!.tryWrite(new Uint8Array([i & 0xff])));
        await read.promise;
        assert.equal(read.outcome(), `read ${i & 0xff}`);
      }
      assert.equal(getEventListeners(controller.signal, 'abort').length, 1, 'one listener for the signal, not one per wait');
      controller.abort();
      assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
    });
  });

  it('ends every read parked on a signal when it aborts, and none parked on another signal', async function () {
    const first = new AbortController();
    const second = new AbortController();
    await withRings(6, async (list) => {
      const onFirst = list.slice(0, 4).map((ring) => parkedRead(ring, first.signal));
      const onSecond = list.slice(4).map((ring) => parkedRead(ring, second.signal));
      await turn();
      assert.equal(getEventListeners(first.signal, 'abort').length, 1, 'four parked reads share one listener');
      first.abort();
      await Promise.all(onFirst.map((r) => r.promise));
      assert.deepEqual(
        onFirst.map((r) => r.outcome()),
        ['AbortError', 'AbortError', 'AbortError', 'AbortError'],
      );
      await turn();
      assert.deepEqual(
        onSecond.map((r) => r.outcome()),
        ['pending', 'pending'],
      );
      list[4]!.tryWrite(new Uint8Array([4]));
      list[5]!.tryWrite(new Uint8Array([5]));
      await Promise.all(onSecond.map((r) => r.promise));
      assert.deepEqual(
        onSecond.map((r) => r.outcome()),
        ['read 4', 'read 5'],
      );
    });
  });

  it('takes its listener off a signal no wait watched for a second, so an AbortSignal.any() made per call is not kept', async function () {
    const never = new AbortController();
    const composite = AbortSignal.any([never.signal]);
    await withRings(1, async ([ring]) => {
      const read = parkedRead(ring!, composite);
      await turn();
      assert.equal(getEventListeners(composite, 'abort').length, 1);
      assert.ok(ring!.tryWrite(new Uint8Array([9])));
      await read.promise;
      assert.equal(getEventListeners(composite, 'abort').length, 1, 'kept for the next wait a while');
      await new Promise((resolve) => setTimeout(resolve, 1_300));
      assert.equal(getEventListeners(composite, 'abort').length, 0, 'taken off once no wait watched it');
      assert.equal(getEventListeners(never.signal, 'abort').length, 0, 'nothing left on the source either');
    });
  });

  it('runs a callback registered on a signal already aborted (in a microtask), every callback when one throws, and not one unregistered by another', async function () {
    const calls: string[] = [];
    const aborted = new AbortController();
    aborted.abort();
    watchAbort(aborted.signal, () => calls.push('late'));
    assert.equal(calls.length, 0, 'not at once');
    await Promise.resolve();
    assert.equal(calls.join(), 'late');

    const controller = new AbortController();
    const thrown: unknown[] = [];
    const onUncaught = (err: unknown): void => {
      thrown.push(err);
    };
    const listeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.on('uncaughtException', onUncaught);
    try {
      const second = (): void => {
        calls.push('second');
      };
      watchAbort(controller.signal, () => {
        calls.push('first');
        unwatchAbort(controller.signal, second);
      });
      watchAbort(controller.signal, second);
      watchAbort(controller.signal, () => {
        throw new Error('a callback that throws');
      });
      watchAbort(controller.signal, () => calls.push('fourth'));
      controller.abort();
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off('uncaughtException', onUncaught);
      for (const listener of listeners) process.on('uncaughtException', listener);
    }
    assert.deepEqual(calls, ['late', 'first', 'fourth']);
    assert.equal(thrown.length, 1);
    assert.equal((thrown[0] as Error).message, 'a callback that throws');
  });

  it('calls a registered callback once on abort, and not one that was unregistered', function () {
    const controller = new AbortController();
    const calls: string[] = [];
    const kept = (): void => {
      calls.push('kept');
    };
    const dropped = (): void => {
      calls.push('dropped');
    };
    watchAbort(controller.signal, kept);
    watchAbort(controller.signal, dropped);
    unwatchAbort(controller.signal, dropped);
    controller.abort();
    controller.abort();
    assert.deepEqual(calls, ['kept']);
  });
});
