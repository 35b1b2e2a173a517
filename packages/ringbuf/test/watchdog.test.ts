/**
 * Idle costs nothing: a parked Promise wait sleeps until it is woken or its
 * deadline passes, and the dead-peer checks of all of them run on one timer
 * per thread (watchdog.ts), at the shortest period asked for, which stops
 * at its first tick after the last parked wait ended. A producer SIGKILLed under one of many parked
 * reads is still noticed within about peerTimeoutMs.
 */
import { strict as assert } from 'node:assert';
import { createHook } from 'node:async_hooks';
import { mock } from 'node:test';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import fc from 'fast-check';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { MpscRing, SpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import { waitCounters } from '../src/waiting.js';
import { unwatch, watch, type Watched, watchdogState } from '../src/watchdog.js';
import { Peer } from './fixtures/fault-peer.js';

const CAPACITY = 1024;
const RINGS = 200;

interface Ring {
  region: Region;
  ring: SpscRing;
}

function memfdRings(n: number): Ring[] {
  const size = SpscRing.regionSize({ capacity: CAPACITY });
  return Array.from({ length: n }, () => {
    const region = Region.create({ backing: 'memfd', size, name: 'shmring-watchdog' });
    return { region, ring: SpscRing.create(region, { capacity: CAPACITY }) };
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** How a promise ended, without an unhandled rejection meanwhile. */
function track<T>(promise: Promise<T>): { settled?: { value?: T; error?: ShmringError; at: number }; done: Promise<void> } {
  const box: { settled?: { value?: T; error?: ShmringError; at: number }; done: Promise<void> } = { done: undefined as never };
  box.done = promise.then(
    (value) => void (box.settled = { value, at: performance.now() }),
    (error: ShmringError) => void (box.settled = { error, at: performance.now() }),
  );
  return box;
}

/**
 * Records the timers (Timeout resources, ref'd or not) that the ring
 * library creates until the returned function is called, which gives their
 * creation stacks. (mocha's own timeout timers are left out.)
 */
function recordTimers(): () => string[] {
  const stacks: string[] = [];
  const hook = createHook({
    init: (_id, type) => {
      if (type !== 'Timeout') return;
      const stack = new Error().stack ?? '';
      if (stack.includes('/ringbuf/dist/src/')) stacks.push(stack);
    },
  });
  hook.enable();
  return () => {
    hook.disable();
    return stacks;
  };
}

describe('watchdog: one timer for the dead-peer checks of every parked Promise wait', function () {
  this.timeout(30_000);
  const open: Ring[] = [];

  afterEach(function () {
    for (const { ring, region } of open.splice(0)) {
      ring.close();
      region.close();
    }
  });

  it(`parks ${RINGS} reads on ${RINGS} rings with one timer, and none of them wakes while nothing happens`, async function () {
    open.push(...memfdRings(RINGS));
    const before = { ...waitCounters };
    // peerTimeoutMs 100: the old naps of a quarter of it would wake each read 40 times a second.
    const timers = recordTimers();
    const reads = open.map(({ ring }) => track(ring.read({ peerTimeoutMs: 100 })));
    await sleep(50); // the reads' native waits have started
    const made = timers();
    assert.ok(made.length <= 1, `${made.length} timers were created for ${RINGS} parked reads:\n${made.join('\n')}`);
    assert.deepEqual(watchdogState(), { watched: RINGS, running: true, periodMs: 25 });
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await sleep(500);
    const cpu = process.cpuUsage(cpu0);
    const cpuShare = (cpu.user + cpu.system) / 1000 / (performance.now() - t0);
    console.log(
      `      ${RINGS} parked reads, 500 ms: ${waitCounters.asyncWaits - before.asyncWaits} futex waits started, ` +
        `${(cpuShare * 100).toFixed(2)}% of a CPU (this process, checks every 25 ms included)`,
    );
    assert.equal(waitCounters.asyncParks - before.asyncParks, RINGS);
    assert.equal(waitCounters.asyncWaits - before.asyncWaits, RINGS, 'parked reads woke up and waited again');
    assert.ok(
      reads.every((r) => r.settled === undefined),
      'a read ended while nothing happened',
    );
    // One message wakes one read; closing ends the rest; then the timer stops.
    open[7]!.ring.tryWrite(new Uint8Array([7]));
    await reads[7]!.done;
    assert.equal(reads[7]!.settled?.value?.[0], 7);
    assert.equal(watchdogState().watched, RINGS - 1);
    for (const { ring } of open) ring.close();
    await Promise.all(reads.map((r) => r.done));
    assert.ok(reads.every((r, i) => i === 7 || r.settled?.error?.code === ErrorCodes.CLOSED));
    assert.equal(watchdogState().watched, 0);
    await sleep(40); // a tick of 25 ms finds nothing left
    assert.deepEqual(watchdogState(), { watched: 0, running: false, periodMs: Infinity });
  });

  it(`ends the read of a SIGKILLed producer with ERR_SHMRING_PEER_DEAD within about peerTimeoutMs, among ${RINGS} parked reads`, async function () {
    open.push(...memfdRings(RINGS));
    const victim = open[RINGS - 1]!;
    const plan = { seed: 9, producers: 1, perProducer: 1, maxLength: 50 };
    const producer = new Peer({ role: 'spsc-producer', region: { kind: 'fd', fd: 3 }, plan, id: 0, count: 1 }, victim.region.fd);
    try {
      await producer.next('ready');
      await victim.ring.read(); // its one message: the producer is registered
      const peerTimeoutMs = 200;
      const reads = open.map(({ ring }) => track(ring.read({ peerTimeoutMs })));
      await sleep(1.5 * peerTimeoutMs);
      assert.ok(
        reads.every((r) => r.settled === undefined),
        'a read ended while its producer was alive',
      );
      const killedAt = await producer.kill();
      await Promise.race([reads[RINGS - 1]!.done, sleep(5000)]);
      const end = reads[RINGS - 1]!.settled;
      assert.equal(end?.error?.code, ErrorCodes.PEER_DEAD, `the read ended with ${end?.error?.code ?? 'nothing'}`);
      const took = end.at - killedAt;
      console.log(`      PEER_DEAD ${took.toFixed(0)} ms after the kill (peerTimeoutMs ${peerTimeoutMs})`);
      assert.ok(took < peerTimeoutMs + 300, `PEER_DEAD came ${took.toFixed(0)} ms after the kill`);
      assert.ok(
        reads.slice(0, -1).every((r) => r.settled === undefined),
        'the other reads ended too',
      );
      assert.equal(watchdogState().watched, RINGS - 1);
    } finally {
      producer.child.kill('SIGKILL');
      await producer.exited;
    }
  });

  // Regression: each pass asked each ring's role lock (a system call each, some 4 µs on these VMs): 1000
  // reads parked on the rings of one live producer process cost 2-3% of a CPU. An MpscRing's shared
  // producer role: the same, by its live registrant.
  for (const kind of ['SpscRing', 'MpscRing'] as const) {
    it(`${kind}: a pass asks about one role lock per live registrant, each ring its own one pass in four; a death still ends every read`, async function () {
      const N = 100;
      const Kind = kind === 'SpscRing' ? SpscRing : MpscRing;
      const prefix = `shmring-watchdog-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
      const size = Kind.regionSize({ capacity: CAPACITY });
      const rings = Array.from({ length: N }, (_, i) => {
        const region = Region.create({ backing: 'posix', name: `${prefix}-${i}`, size });
        return { region, ring: Kind.create(region, { capacity: CAPACITY }) };
      });
      const child = spawn(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `const { Region } = await import(${JSON.stringify(import.meta.resolve('@shmring/core'))});
         const { ${kind} } = await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});
         for (let i = 0; i < ${N}; i++) {
           ${kind}.attach(Region.open({ backing: 'posix', name: '${prefix}-' + i })).tryWrite(new Uint8Array([i]));
         }
         console.log('ready');
         setInterval(() => {}, 60_000);`,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      try {
        await new Promise<void>((resolve, reject) => {
          child.stdout!.once('data', () => resolve());
          child.once('exit', (code) => reject(new Error(`the producer exited (${code})`)));
        });
        for (const { region } of rings) region.unlink(); // both have them mapped: nothing is left in /dev/shm
        for (const [i, { ring }] of rings.entries()) assert.deepEqual([...ring.tryRead()!], [i]); // registered
        const peerTimeoutMs = 400; // a pass every 100 ms
        const reads = rings.map(({ ring }) => track(ring.read({ peerTimeoutMs })));
        const asked = waitCounters.peerLocks;
        const t0 = performance.now();
        await sleep(1000);
        const passes = (performance.now() - t0) / (peerTimeoutMs / 4);
        const perPass = (waitCounters.peerLocks - asked) / passes;
        console.log(`      ${perPass.toFixed(1)} role locks asked per pass for ${N} reads parked on one producer's rings`);
        // About N / 4 + 1; N without the pass's memo.
        assert.ok(perPass < N / 2, `${perPass.toFixed(1)} locks asked per pass`);
        assert.ok(
          reads.every((r) => r.settled === undefined),
          'a read ended while its producer was alive',
        );
        const killedAt = performance.now();
        child.kill('SIGKILL');
        await Promise.all(reads.map((r) => Promise.race([r.done, sleep(5000)])));
        for (const r of reads)
          assert.equal(r.settled?.error?.code, ErrorCodes.PEER_DEAD, `a read ended with ${r.settled?.error?.code ?? 'nothing'}`);
        const slowest = Math.max(...reads.map((r) => r.settled!.at - killedAt));
        assert.ok(slowest < peerTimeoutMs + 300, `the last PEER_DEAD came ${slowest.toFixed(0)} ms after the kill`);
      } finally {
        child.kill('SIGKILL');
        for (const { ring, region } of rings) {
          ring.close();
          region.close();
        }
        for (let i = 0; i < N; i++) fs.rmSync(`/dev/shm/${prefix}-${i}`, { force: true }); // if the test failed before unlinking
      }
    });
  }

  it('a pass over many parked reads whose producer is one registrant asks about a quarter of their role locks, not all of them every fourth pass', async function () {
    // The watchdog's interval runs on mock timers: each tick() is one pass, its lock questions counted. The
    // interval of earlier tests' waits stops at its first tick with nothing registered.
    for (let waited = 0; watchdogState().running && waited < 5000; waited += 10) await sleep(10);
    assert.equal(watchdogState().running, false, 'the watchdog of earlier waits did not stop');
    mock.timers.enable({ apis: ['setInterval'] });
    const probe = setInterval(() => {}, 1000);
    const unrefs = typeof (probe as { unref?: unknown }).unref === 'function';
    clearInterval(probe);
    if (!unrefs) {
      // Node before 20.12: a mock interval has no unref(), which the watchdog calls.
      mock.timers.reset();
      this.skip();
    }
    const rings = memfdRings(40);
    const producers = rings.map(({ region }) => SpscRing.attach(region));
    const reads: Promise<unknown>[] = [];
    try {
      for (const [i, { ring }] of rings.entries()) {
        assert.ok(producers[i]!.tryWrite(Uint8Array.of(1))); // the producer registers (this process, one registrant)
        assert.deepEqual([...ring.tryRead()!], [1]);
        const read = ring.read({ peerTimeoutMs: 400 }); // a check every 100 ms
        read.catch(() => {});
        reads.push(read);
      }
      for (let waited = 0; watchdogState().watched < rings.length && waited < 5000; waited += 5) await sleep(5);
      assert.equal(watchdogState().watched, rings.length, 'every read parked');
      const asked: number[] = [];
      for (let pass = 0; pass < 12; pass++) {
        const before = waitCounters.peerLocks;
        mock.timers.tick(100);
        asked.push(waitCounters.peerLocks - before);
      }
      const total = asked.reduce((a, b) => a + b, 0);
      // Every lock asked once in four passes (each ring's own), and the registrant's first ring every pass.
      assert.ok(total >= 3 * rings.length, `asked ${total} in 12 passes: ${asked.join(' ')}`);
      // Phases drawn at random: a quarter (10) each pass on average; 30 of 40 in one pass has a chance of about 1e-10.
      assert.ok(Math.max(...asked) < 30, `one pass asked most of the locks: ${asked.join(' ')}`);
    } finally {
      for (const p of producers) p.close();
      for (const { ring, region } of rings) {
        ring.close();
        region.close();
      }
      await Promise.allSettled(reads);
      mock.timers.tick(100); // the pass that finds nothing registered stops the (mock) interval
      mock.timers.reset();
    }
    assert.equal(watchdogState().running, false);
  });

  it('runs at the shortest period asked for, goes back to a longer one when that wait ends, and stops after the last', async function () {
    await sleep(100); // the timer of the test before has stopped
    open.push(...memfdRings(2));
    const slow = track(open[0]!.ring.read({ peerTimeoutMs: 2000 }));
    assert.deepEqual(watchdogState(), { watched: 1, running: true, periodMs: 500 });
    const controller = new AbortController();
    const fast = track(open[1]!.ring.read({ peerTimeoutMs: 40, signal: controller.signal }));
    assert.deepEqual(watchdogState(), { watched: 2, running: true, periodMs: 10 });
    controller.abort();
    await fast.done;
    assert.equal(fast.settled?.error?.name, 'AbortError');
    await sleep(30); // a tick at the short period sees only the slow wait left
    assert.deepEqual(watchdogState(), { watched: 1, running: true, periodMs: 500 });
    open[0]!.ring.tryWrite(new Uint8Array([1]));
    await slow.done;
    assert.equal(watchdogState().watched, 0);
    await sleep(600); // its next tick finds nothing left
    assert.deepEqual(watchdogState(), { watched: 0, running: false, periodMs: Infinity });
  });

  it('keeps one timer for a stream of short parks instead of making one per park', async function () {
    open.push(...memfdRings(1));
    const { ring } = open[0]!;
    const timers = recordTimers();
    let made: string[];
    try {
      for (let i = 0; i < 50; i++) {
        const read = ring.read({ poll: 0 });
        setImmediate(() => ring.tryWrite(new Uint8Array([i])));
        assert.equal((await read)[0], i);
      }
    } finally {
      made = timers();
    }
    assert.ok(made.length <= 1, `50 parks made ${made.length} timers:\n${made.join('\n')}`);
  });

  it('watches nothing for peerTimeoutMs: Infinity', async function () {
    await sleep(600); // the timer of the tests before has stopped
    open.push(...memfdRings(1));
    const { ring, region } = open[0]!;
    const read = track(ring.read({ peerTimeoutMs: Infinity }));
    // Observes the announcement: the read is parked.
    assert.equal(Atomics.load(new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH), L.READ_WAITERS_I32), 1);
    assert.deepEqual(watchdogState(), { watched: 0, running: false, periodMs: Infinity });
    ring.tryWrite(new Uint8Array([1]));
    await read.done;
  });
});

describe('watchdog: the registry of parked waits', () => {
  /** A registered thing that counts the checks it gets. */
  function watcher(periodMs: number): Watched & { checks: number } {
    return {
      periodMs,
      watchSlot: -1,
      checks: 0,
      check() {
        this.checks++;
      },
    };
  }

  it('holds exactly the waits registered and not withdrawn, in any order of watch and unwatch, and checks exactly those (against a model)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.boolean(), fc.nat(7)), { maxLength: 60 }), async (ops) => {
        const ws = Array.from({ length: 8 }, () => watcher(5));
        const model = new Set<number>();
        for (const [add, i] of ops) {
          if (add) {
            watch(ws[i]!);
            model.add(i);
          } else {
            unwatch(ws[i]!);
            model.delete(i);
          }
          assert.equal(watchdogState().watched, model.size);
          const slots = ws.filter((_, k) => model.has(k)).map((w) => w.watchSlot);
          assert.deepEqual(
            [...slots].sort((a, b) => a - b),
            Array.from({ length: model.size }, (_, k) => k),
            'the registered waits do not hold the slots 0 .. n-1',
          );
          assert.ok(
            ws.every((w, k) => model.has(k) || w.watchSlot === -1),
            'a withdrawn wait kept a slot',
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 12)); // at least one tick of 5 ms
        for (const [k, w] of ws.entries()) {
          if (model.has(k)) assert.ok(w.checks > 0, `registered wait ${k} was never checked`);
          else assert.equal(w.checks, 0, `withdrawn wait ${k} was checked`);
        }
        for (const w of ws) unwatch(w);
        assert.equal(watchdogState().watched, 0);
      }),
      { numRuns: 40 },
    );
    await new Promise((resolve) => setTimeout(resolve, 12)); // the timer's next tick stops it
    assert.equal(watchdogState().running, false);
  });
});
