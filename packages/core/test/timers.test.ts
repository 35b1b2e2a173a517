/**
 * The timer behind the packages' timeoutMs options (timers.ts): setTimeout
 * takes at most 2^31 − 1 ms (and fires after 1 ms when given more), so a
 * longer delay waits in steps of at most that, and fires once, at its end;
 * Infinity sets no timer at all. The steps are shortened here so that the
 * test does not take 25 days.
 */
import { strict as assert } from 'node:assert';
import { LongTimeout, MAX_TIMER_MS, startTimer } from '../src/timers.js';

describe('timers longer than setTimeout takes', function () {
  it('wait in steps, and fire once, at the end of the whole delay', async function () {
    const started = performance.now();
    const fired: number[] = [];
    await new Promise<void>((resolve) => {
      new LongTimeout(
        () => {
          fired.push(performance.now() - started);
          resolve();
        },
        35,
        10,
      );
    });
    assert.equal(fired.length, 1);
    // Not after its first step (10 ms); timers may fire a millisecond early by this clock.
    assert.ok(fired[0]! >= 30, `fired after ${fired[0]!.toFixed(1)} ms, before the 35 ms it was set for`);
  });

  it('clear() stops one that is in a later step', async function () {
    let fired = false;
    const timer = new LongTimeout(() => (fired = true), 40, 10);
    await new Promise((resolve) => setTimeout(resolve, 15)); // past its first step
    timer.clear();
    await new Promise((resolve) => setTimeout(resolve, 60));
    assert.equal(fired, false);
  });

  it('startTimer: a plain setTimeout up to 2^31 − 1 ms, a LongTimeout past it, and nothing for Infinity', function () {
    const noop = (): void => {};
    const plain = startTimer(noop, MAX_TIMER_MS);
    const long = startTimer(noop, MAX_TIMER_MS + 1);
    try {
      assert.ok(plain !== undefined && !(plain instanceof LongTimeout));
      assert.ok(long instanceof LongTimeout);
      assert.equal(startTimer(noop, Infinity), undefined);
    } finally {
      if (plain !== undefined && !(plain instanceof LongTimeout)) clearTimeout(plain);
      (long as LongTimeout).clear();
    }
  });
});
