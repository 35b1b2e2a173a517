/**
 * The waiting policies, driven directly: the spin of the Sync waits (parkSync
 * over a SharedArrayBuffer's wait block with a scripted `attempt`, so the
 * number of attempts and naps shows whether a wait spun first or parked at
 * once), and when a Promise wait polls (PollPacer's decisions).
 */
import assert from 'node:assert/strict';
import { ErrorCodes, nativeFutex, Region } from '@shmring/core';
import { select, SpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import { getDefaultPoll, PollPacer, SpinPacer } from '../src/pacing.js';
import { parkAsync, parkSync, WaitStop, type WaitBlock } from '../src/waiting.js';

const BLOCK: WaitBlock = { waiters: 0, signal: 1 };
/** Naps of peerTimeoutMs / 4 = 10 ms: each failed attempt after announcing costs one. */
const OPTIONS = { peerTimeoutMs: 40 };

/** A pacer whose probes never fire (`probe` false) or always do. */
function pacer(lastWaitMs: number, probe = false): SpinPacer {
  const p = new SpinPacer();
  p.lastWaitMs = lastWaitMs;
  p.random = () => (probe ? 0 : 1);
  return p;
}

/** An attempt that fails until its `succeedOn`th call, counting the calls. */
function scripted(succeedOn: number): { attempt: () => true | undefined; calls: () => number } {
  let calls = 0;
  return { attempt: () => (++calls >= succeedOn ? true : undefined), calls: () => calls };
}

function wait(pacer: SpinPacer, succeedOn: number, spin?: number): { calls: number; ms: number; waiters: number } {
  const ctl = new Int32Array(new SharedArrayBuffer(8));
  const script = scripted(succeedOn);
  const t0 = performance.now();
  parkSync(ctl, BLOCK, script.attempt, { ...OPTIONS, spin }, 'test wait', () => true, pacer);
  return { calls: script.calls(), ms: performance.now() - t0, waiters: Atomics.load(ctl, BLOCK.waiters) };
}

describe('waiting: paced spinning', () => {
  it('spins before parking on the first wait, so an answer within the spin costs no nap', () => {
    const result = wait(new SpinPacer(), 50);
    assert.equal(result.calls, 50);
    assert.ok(result.ms < 10, `took ${result.ms.toFixed(2)} ms: it napped instead of spinning`);
    assert.equal(result.waiters, 0, 'the announcement is withdrawn');
  });

  it('parks at once (no spin) when the previous wait of that side lasted long', () => {
    const result = wait(pacer(5), 2); // 5 ms: far beyond 2.5 × the 20 µs budget
    // Call 1 is the re-check after announcing, then one nap, then call 2: no spin before them.
    assert.equal(result.calls, 2);
    assert.ok(result.ms >= 9, `took ${result.ms.toFixed(2)} ms: it did not nap`);
  });

  it("records each wait's duration, so a short wait turns spinning back on", () => {
    const paced = pacer(5);
    wait(paced, 2); // parks at once, takes one 10 ms nap
    assert.ok(paced.lastWaitMs >= 9, `recorded ${paced.lastWaitMs} ms`);
    // The re-check succeeds: a wait of microseconds, recorded as such. A busy host can preempt one past the
    // 50 µs pace (2.5 × the 20 µs budget; then it rightly does not spin next), so a few tries may be needed.
    let quick = wait(paced, 1);
    for (let i = 0; i < 20 && paced.lastWaitMs * 1000 > 50; i++) quick = wait(paced, 1);
    assert.equal(quick.calls, 1);
    assert.ok(paced.lastWaitMs * 1000 <= 50, `recorded ${paced.lastWaitMs} ms`);
    const spun = wait(paced, 50); // so this one spins again
    assert.equal(spun.calls, 50);
    assert.ok(spun.ms < 10, `took ${spun.ms.toFixed(2)} ms: it napped instead of spinning`);
  });

  it('spins after a long wait when the probe fires, so two parked sides can find out that both could spin', () => {
    const result = wait(pacer(5, true), 50);
    assert.equal(result.calls, 50);
    assert.ok(result.ms < 10, `took ${result.ms.toFixed(2)} ms: it napped instead of spinning`);
  });

  it('probes about one wait in eight after a long one', () => {
    const p = new SpinPacer();
    p.lastWaitMs = 5;
    let spins = 0;
    for (let i = 0; i < 8000; i++) if (p.spinMicros(20) > 0) spins++;
    assert.ok(spins > 800 && spins < 1200, `${spins} of 8000 waits spun`);
  });

  it('spins as asked when the options give spin, whatever the last wait took', () => {
    const result = wait(pacer(5), 50, 20);
    assert.equal(result.calls, 50);
    assert.ok(result.ms < 10, `took ${result.ms.toFixed(2)} ms: it napped instead of spinning`);
  });
});

describe('waiting: when a Promise wait polls (PollPacer)', () => {
  /** A pacer in a given state; its probes never fire (`probe` false) or always do. */
  function poller(hot: boolean, lastWaitMs: number, probe = false): PollPacer {
    const p = new PollPacer();
    p.hot = hot;
    p.lastWaitMs = lastWaitMs;
    p.random = () => (probe ? 0 : 1);
    p.endedAt = 0; // the waits below begin at 0 (now): right after the last one ended
    return p;
  }

  it('parks at once on a side that is not hot (no message yet, or its last wait failed)', () => {
    assert.equal(poller(false, 0).pollMicros(undefined, false, 0), 0);
  });

  it('polls for the default window on a hot side', () => {
    assert.equal(poller(true, 0).pollMicros(undefined, false, 0), getDefaultPoll());
    assert.equal(poller(true, 0.3).pollMicros(undefined, false, 0), getDefaultPoll(), 'a wait of 6 windows without a wake-up did not poll');
  });

  it('does not poll after this thread woke a parked peer, when the previous wait was long', () => {
    assert.equal(poller(true, 0.2).pollMicros(undefined, true, 0), 0); // 200 µs: beyond the pace (1 window), within 8
  });

  it('polls after a wake-up when the previous wait was short (two sides waking each other back to back)', () => {
    assert.equal(poller(true, 0.05).pollMicros(undefined, true, 0), getDefaultPoll());
  });

  it('polls after a wake-up and a wait longer than the pace (but not sparse) when the probe fires, about one wait in eight', () => {
    assert.equal(poller(true, 0.2, true).pollMicros(undefined, true, 0), getDefaultPoll());
    assert.equal(poller(true, 0.2).pollMicros(undefined, true, 0), 0, 'polled without the probe');
    const p = poller(true, 0.2);
    p.random = Math.random;
    let polled = 0;
    for (let i = 0; i < 8000; i++) if (p.pollMicros(undefined, true, 0) > 0) polled++;
    assert.ok(polled > 800 && polled < 1200, `${polled} of 8000 waits polled`);
  });

  it('never polls, probe or not, when the last wait ended more than 8 windows before this one begins', () => {
    assert.equal(poller(true, 0.1).pollMicros(undefined, false, 0.41), 0, 'polled 8.2 windows after the last wait ended');
    assert.equal(poller(true, 0.1, true).pollMicros(undefined, false, 0.41), 0, 'the probe polled');
    assert.equal(poller(true, 0.1, true).pollMicros(undefined, true, 0.41), 0, 'the probe polled after a wake-up');
    assert.equal(poller(true, 0.1).pollMicros(undefined, false, 0.4), getDefaultPoll(), 'did not poll 8 windows after the last wait');
    const busy = poller(true, 0.1);
    busy.clock = () => 1000;
    busy.gotAtOnce();
    assert.equal(
      busy.pollMicros(undefined, false, 1000.4),
      getDefaultPoll(),
      'a side whose last call found its message at once did not poll',
    );
    assert.equal(busy.pollMicros(undefined, true, 1000.4), getDefaultPoll(), 'nor after waking its peer');
    assert.equal(
      busy.pollMicros(undefined, false, 1000.41),
      0,
      'a side that found its message at once, then did something else for 8.2 windows, polled',
    );
    const waited = new PollPacer();
    waited.got(10, 10.1);
    assert.deepEqual([waited.hot, waited.lastWaitMs.toFixed(3), waited.endedAt], [true, '0.100', 10.1]);
  });

  it('marks a wait sparse exactly when it does not poll because the side is sparse (its try on the spot is skipped too)', () => {
    const sparse = (p: PollPacer, wokePeer: boolean, now: number): boolean => {
      p.pollMicros(undefined, wokePeer, now);
      return p.sparse;
    };
    assert.equal(sparse(poller(true, 0.41), false, 0), true, 'a last wait of 8.2 windows');
    assert.equal(sparse(poller(true, 0.1), false, 0.41), true, 'a last wait that ended 8.2 windows before');
    assert.equal(sparse(poller(true, 0.1), false, 0.4), false, 'a wait that polls');
    assert.equal(sparse(poller(true, 0.2), true, 0), false, 'a wait after a wake-up that does not poll (not sparse)');
    assert.equal(sparse(poller(false, 5), false, 100), false, 'a side that is not hot');
    const p = poller(true, 0.41);
    p.pollMicros(undefined, false, 0);
    p.pollMicros(0, false, 0);
    assert.equal(p.sparse, false, 'an explicit poll option left the mark of the previous wait');
  });

  it('stamps a call found at once with the clock for the first after a wait began and one in 4 after it', () => {
    const p = new PollPacer();
    let reads = 0;
    p.clock = () => ++reads;
    p.got(0, 0.5);
    const stamps: number[] = [];
    for (let i = 0; i < 40; i++) {
      p.gotAtOnce();
      stamps.push(p.endedAt);
    }
    assert.equal(reads, 10, 'clock reads for 40 calls found at once');
    assert.deepEqual([stamps[0], stamps[3], stamps[4], stamps[7], stamps[8], stamps[39]], [1, 1, 2, 2, 3, 10]);
    assert.deepEqual([p.hot, p.lastWaitMs], [true, 0]);
    p.got(10, 10.25); // a wait that got its message: the next call found at once is stamped again
    p.gotAtOnce();
    assert.equal(p.endedAt, 11);
    p.gotAtOnce(); // not stamped
    p.pollMicros(undefined, false, 12); // a wait began (and may fail): the next call found at once is stamped
    p.gotAtOnce();
    assert.equal(p.endedAt, 12);
  });

  it('reads the clock once per 4 calls found at once on a side that spends more than 6.25 µs on each, once per 64 on one that calls every 0.78 µs or faster, and adapts when the pace changes', () => {
    const p = new PollPacer();
    let t = 0;
    let reads = 0;
    p.clock = () => {
      reads++;
      return t;
    };
    const calls = (n: number, everyMs: number): void => {
      for (let i = 0; i < n; i++) {
        t += everyMs;
        p.gotAtOnce();
      }
    };
    p.got(0, 0);
    calls(40, 0.1);
    assert.deepEqual([p.atOncePeriod, reads], [4, 10], 'a slow side: period, clock reads for 40 calls');
    calls(1000, 0.0005);
    assert.equal(p.atOncePeriod, 64, 'a side calling every 0.5 µs');
    reads = 0;
    calls(640, 0.0005);
    assert.equal(reads, 10, 'clock reads for 640 fast calls');
    assert.ok(t - p.endedAt < 0.05, `a fast side's stamp is ${((t - p.endedAt) * 1000).toFixed(1)} µs old`);
    calls(64, 0.1); // the period of 64 in which it slowed down: one stamp at its end measures the new pace
    assert.equal(p.atOncePeriod, 4, 'back to a slow pace');
    calls(1000, 0.0005);
    assert.equal(p.atOncePeriod, 64);
    p.pollMicros(undefined, false, t + 10); // a wait began 10 ms later: the next call is stamped, and is no pace
    t += 10;
    calls(1, 0.0005);
    assert.equal(p.endedAt, t, 'the first call after a wait began is stamped');
    assert.equal(p.atOncePeriod, 64, 'the 10 ms across a wait were taken for the pace of calls');
    calls(64, 0.0005);
    assert.equal(p.atOncePeriod, 64);
  });

  it('never polls, probe or not, after a wait of more than 8 windows, with or without a wake-up', () => {
    assert.equal(poller(true, 0.41).pollMicros(undefined, false, 0), 0, 'polled after a wait of 8.2 windows (sparse messages)');
    assert.equal(poller(true, 0.41).pollMicros(undefined, true, 0), 0);
    assert.equal(poller(true, 0.41, true).pollMicros(undefined, false, 0), 0, 'the probe polled');
    assert.equal(poller(true, 0.41, true).pollMicros(undefined, true, 0), 0, 'the probe polled after a wake-up');
    assert.equal(poller(true, 0.4).pollMicros(undefined, false, 0), getDefaultPoll(), 'a wait of exactly 8 windows did not poll');
  });

  it('polls as long as an explicit poll says, whatever the state', () => {
    assert.equal(poller(false, 0).pollMicros(300, false, 0), 300);
    assert.equal(poller(true, 1).pollMicros(0, false, 0), 0);
    assert.equal(poller(true, 1).pollMicros(300, true, 0), 300);
    assert.equal(poller(true, 1000).pollMicros(300, false, 0), 300);
  });
});

describe('waiting: a region closed under a parked Promise wait', () => {
  it('withdraws the wait from WAITERS before the memory goes: a later producer of the ring pays no wake-up for it', async () => {
    const capacity = 4096;
    const region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity }) });
    SpscRing.create(region, { capacity });
    // Another mapping of the same memory, as another process has it: what stays in the shared words.
    const other = Region.fromFd(region.fd);
    try {
      const reader = SpscRing.attach(region);
      const read = reader.read({ poll: 0 }); // parks at once: announced in READ_WAITERS
      const shared = new Int32Array(other.buffer, 0, L.CONTROL_I32_LENGTH);
      // Each observes the reader's announcement (its add to READ_WAITERS as it parks).
      for (let i = 0; i < 200 && Atomics.load(shared, L.READ_WAITERS_I32) === 0; i++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(Atomics.load(shared, L.READ_WAITERS_I32), 1, 'the read parked');
      region.close();
      await assert.rejects(read, { code: ErrorCodes.CLOSED });
      // Observes the withdrawal made for the closed region (in the memory the other mapping sees).
      assert.equal(Atomics.load(shared, L.READ_WAITERS_I32), 0, 'the closed wait stayed announced');
    } finally {
      other.close();
    }
  });
});

describe('select: a region closed under a parked async select', () => {
  it("withdraws the select's announcement on that ring before its memory goes, and the others' as ever", async () => {
    const capacity = 4096;
    const regions = [0, 1].map(() => Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity }) }));
    const others = regions.map((r) => Region.fromFd(r.fd));
    try {
      const rings = regions.map((r) => SpscRing.create(r, { capacity }));
      const selected = select(rings, { poll: 0 });
      const shared = others.map((o) => new Int32Array(o.buffer, 0, L.CONTROL_I32_LENGTH));
      // Each observes the select's announcements (its adds to READ_WAITERS as it parks).
      for (let i = 0; i < 200 && shared.some((w) => Atomics.load(w, L.READ_WAITERS_I32) === 0); i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.deepEqual(
        shared.map((w) => Atomics.load(w, L.READ_WAITERS_I32)),
        [1, 1],
        'the select parked on both',
      );
      regions[0]!.close();
      await assert.rejects(selected, { code: ErrorCodes.CLOSED });
      // Observe both words as the other mappings see them: nothing left announced on either ring.
      assert.deepEqual(
        shared.map((w) => Atomics.load(w, L.READ_WAITERS_I32)),
        [0, 0],
      );
    } finally {
      for (const o of others) o.close();
      regions[1]!.close();
    }
  });
});

describe('waiting: a stop between the poll and the park', () => {
  it("a stop() made after a polling wait's last look, before it parked, ends the wait instead of leaving it asleep", async () => {
    const ctl = new Int32Array(new SharedArrayBuffer(8));
    const stop = new WaitStop();
    // Nothing ever arrives. Each look queues a stop, as a return() of messages() made right after it would.
    const attempt = (): true | undefined => {
      queueMicrotask(() => stop.stop());
      return undefined;
    };
    const wait = parkAsync(
      ctl,
      BLOCK,
      attempt,
      { poll: 2000, spin: 0, peerTimeoutMs: Infinity },
      'test wait',
      () => true,
      new PollPacer(),
      stop,
    );
    // The thread is busy past the poll's 2 ms window: its first look is its last one, and the stop that look
    // queues runs after the poll has ended and before the park starts.
    const busyUntil = performance.now() + 5;
    while (performance.now() < busyUntil);
    const outcome = await Promise.race([
      wait.then(
        () => 'settled with a result',
        (err: Error) => err.name,
      ),
      new Promise((resolve) => setTimeout(resolve, 500, 'still parked after 500 ms')),
    ]);
    assert.equal(outcome, 'AbortError');
    // Its announcement is withdrawn: a publisher would not pay a wake-up for it.
    // Observes the wait's withdrawal (its Atomics.sub, made as it settled).
    assert.equal(Atomics.load(ctl, BLOCK.waiters), 0);
  });
});

describe("waiting: the watchdog's look for a record", () => {
  it('a look that throws (an object closed under it) neither ends nor fails the wait', async () => {
    const region = Region.create({ backing: 'memfd', size: 4096 });
    const ctl = new Int32Array(region.buffer, 0, 2);
    let value: number | undefined;
    let looks = 0;
    try {
      const wait = parkAsync(
        ctl,
        BLOCK,
        () => value,
        { poll: 0, spin: 0, peerTimeoutMs: 4, timeoutMs: 5000 }, // a check every millisecond
        'test wait',
        () => true,
        new PollPacer(),
        undefined,
        undefined,
        undefined,
        () => {
          looks++;
          throw new RangeError('Invalid atomic access index'); // what recordReady() says on swapped-out views
        },
      );
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.ok(looks > 5, `${looks} looks`);
      value = 5;
      // Publishes the value to the wait, as a producer's unpark does: SIGNAL moves, then the futex wake.
      Atomics.add(ctl, BLOCK.signal, 1);
      nativeFutex.wake(region.buffer as ArrayBuffer, BLOCK.signal * 4, 1);
      assert.equal(await wait, 5);
    } finally {
      region.close();
    }
  });
});
