/**
 * q.messages({ signal, timeoutMs, peerTimeoutMs, poll }): the async iterator
 * with wait options. Each option must reach every read of the iteration;
 * the iteration ends cleanly on close, with the read's error otherwise, and
 * return() leaves no futex wait behind (a child process that returns while a
 * read is parked must exit by itself, at once).
 */
import { strict as assert } from 'node:assert';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { MpmcQueue, SpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import { waitCounters } from '../src/waiting.js';
import { watchdogState } from '../src/watchdog.js';
import { Peer } from './fixtures/fault-peer.js';
import { spawnChild } from './fixtures/waiting-peer.js';

const CAPACITY = 4096;
const BACKINGS = ['sab', 'memfd'] as const;

const regions: Region[] = [];

function ring(backing: 'sab' | 'memfd'): { ring: SpscRing; region: Region; ctl: Int32Array } {
  const size = SpscRing.regionSize({ capacity: CAPACITY });
  const region =
    backing === 'sab'
      ? Region.fromSharedArrayBuffer(new SharedArrayBuffer(size))
      : Region.create({ backing: 'memfd', size, name: 'shmring-messages' });
  regions.push(region);
  return { ring: SpscRing.create(region, { capacity: CAPACITY }), region, ctl: new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH) };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `promise`, or a rejection after `ms` (the test then fails instead of hanging). */
async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** How a promise ended, without an unhandled rejection meanwhile. */
function settle<T>(promise: Promise<T>): Promise<{ value?: T; error?: ShmringError; at: number }> {
  return promise.then(
    (value) => ({ value, at: performance.now() }),
    (error: ShmringError) => ({ error, at: performance.now() }),
  );
}

describe('messages(): the async iterator with wait options', function () {
  this.timeout(20_000);

  afterEach(function () {
    for (const region of regions.splice(0)) region.close();
  });

  for (const backing of BACKINGS) {
    it(`yields every message in order with its type, then ends when the other side closes and it is drained (${backing})`, async function () {
      const { region } = ring(backing);
      const reader = SpscRing.attach(region);
      const writer = SpscRing.attach(region);
      const got: [number, number][] = [];
      const consume = (async () => {
        for await (const m of reader.messages({ timeoutMs: 5000 })) got.push([m[0]!, reader.lastType]);
      })();
      for (let i = 0; i < 100; i++) {
        await writer.write(new Uint8Array([i]), { type: i * 3 });
        if (i % 10 === 0) await sleep(2); // some reads park, some find their message
      }
      writer.close();
      await within(5000, consume, 'the iteration');
      assert.deepEqual(
        got,
        Array.from({ length: 100 }, (_, i) => [i, i * 3]),
      );
    });

    it(`applies timeoutMs to each message's wait: shorter gaps pass, a longer one rejects next() with ERR_SHMRING_TIMEOUT and ends the iteration (${backing})`, async function () {
      const { ring: q } = ring(backing);
      const it = q.messages({ timeoutMs: 150, poll: 0 });
      for (let i = 0; i < 3; i++) {
        setTimeout(() => q.tryWrite(new Uint8Array([i])), 60); // each gap < 150 ms, three of them > 150 ms in all
        const r = await it.next();
        assert.equal(r.done, false);
        assert.equal((r.value as Uint8Array)[0], i);
      }
      const t0 = performance.now();
      const end = await settle(it.next());
      assert.equal(end.error?.code, ErrorCodes.TIMEOUT);
      const took = end.at - t0;
      assert.ok(took >= 145 && took < 1000, `timed out after ${took.toFixed(0)} ms`);
      q.tryWrite(new Uint8Array([9]));
      assert.deepEqual(await it.next(), { done: true, value: undefined }, 'the iteration went on after its error');
    });

    it(`rejects the pending next() with AbortError when the signal aborts, and ends the iteration (${backing})`, async function () {
      const { ring: q, ctl } = ring(backing);
      const controller = new AbortController();
      const it = q.messages({ signal: controller.signal });
      q.tryWrite(new Uint8Array([1]));
      assert.equal(((await it.next()).value as Uint8Array)[0], 1);
      const pending = settle(it.next());
      await sleep(20); // past the poll window: parked
      // Observes the read's announcement.
      assert.equal(Atomics.load(ctl, L.READ_WAITERS_I32), 1, 'the read is parked');
      controller.abort(new Error('enough'));
      const end = await within(1000, pending, 'the aborted next()');
      assert.equal(end.error?.name, 'AbortError');
      assert.equal(end.error?.code, ErrorCodes.ABORTED);
      assert.equal(Atomics.load(ctl, L.READ_WAITERS_I32), 0, 'the announcement was withdrawn');
      q.tryWrite(new Uint8Array([2]));
      assert.deepEqual(await it.next(), { done: true, value: undefined }, 'the iteration went on after the abort');
    });
  }

  it('serves next() calls in order: calls made before the messages come get them in order, and none jumps the queue', async function () {
    const { ring: q } = ring('memfd');
    const it = q.messages();
    const pending = [it.next(), it.next(), it.next()];
    await sleep(5);
    for (let i = 0; i < 4; i++) q.tryWrite(new Uint8Array([i]));
    const fourth = it.next(); // a message is in the ring, but three calls are ahead of it
    const got = await Promise.all([...pending, fourth]);
    assert.deepEqual(
      got.map((r) => (r.value as Uint8Array)[0]),
      [0, 1, 2, 3],
    );
    await it.return!();
  });

  it('rejects the first next() with AbortError when the signal is already aborted, even with messages in the ring', async function () {
    const { ring: q } = ring('sab');
    q.tryWrite(new Uint8Array([1]));
    const it = q.messages({ signal: AbortSignal.abort() });
    await assert.rejects(it.next(), { name: 'AbortError' });
    assert.deepEqual(await it.next(), { done: true, value: undefined });
    assert.equal(q.tryRead()?.[0], 1, 'the message is still there');
  });

  it('return() while a next() is parked resolves it done and cancels its futex wait: the process exits at once', async function () {
    const child = spawnChild({ role: 'messages-return', afterMs: 100 });
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
    let returnedAt = 0;
    const returned = new Promise<void>((resolve) => {
      child.stdout!.on('data', () => {
        if (returnedAt === 0 && out.includes('"returned"')) {
          returnedAt = performance.now();
          resolve();
        }
      });
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await within(10_000, returned, "the child's return()");
      const code = await within(2000, exited, "the child's exit after return() (a futex wait left pending keeps it alive)");
      const lag = performance.now() - returnedAt;
      assert.equal(code, 0, out);
      const events = out
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { event: string; waits?: number; done?: boolean });
      assert.ok((events.find((e) => e.event === 'parked')?.waits ?? 0) >= 1, `the read never parked: ${out}`);
      assert.equal(events.find((e) => e.event === 'returned')?.done, true, 'the pending next() resolved done');
      assert.ok(lag < 1000, `exited ${lag.toFixed(0)} ms after return()`);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('break out of for await leaves nothing parked and nothing watched', async function () {
    const { ring: q, ctl } = ring('memfd');
    for (let i = 0; i < 5; i++) q.tryWrite(new Uint8Array([i]));
    let n = 0;
    for await (const m of q.messages({ peerTimeoutMs: 100 })) {
      assert.equal(m[0], n);
      if (++n === 5) break;
    }
    assert.equal(Atomics.load(ctl, L.READ_WAITERS_I32), 0);
    assert.equal(watchdogState().watched, 0);
  });

  it("polls each message's wait for the poll window, or parks it at once with poll: 0", async function () {
    const { ring: q, ctl } = ring('memfd');
    for (const poll of [0, 200_000]) {
      const it = q.messages({ poll });
      q.tryWrite(new Uint8Array([1]));
      await it.next();
      const before = { ...waitCounters };
      const pending = it.next();
      await sleep(30);
      // Observes whether the read announced itself (parked) or still polls.
      const waiters = Atomics.load(ctl, L.READ_WAITERS_I32);
      q.tryWrite(new Uint8Array([2]));
      await within(1000, pending, 'the second next()');
      if (poll === 0) {
        assert.equal(waiters, 1, 'poll: 0 did not park at once');
        assert.equal(waitCounters.polls, before.polls);
        assert.equal(waitCounters.asyncParks, before.asyncParks + 1);
      } else {
        assert.equal(waiters, 0, 'poll: 200 ms parked within 30 ms');
        assert.equal(waitCounters.polls, before.polls + 1);
        assert.equal(waitCounters.asyncParks, before.asyncParks, 'it parked although the message came within the window');
      }
      await it.return!();
    }
  });

  it('applies peerTimeoutMs: a killed producer ends the iteration with ERR_SHMRING_PEER_DEAD within about peerTimeoutMs', async function () {
    const region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity: CAPACITY }), name: 'shmring-messages-peer' });
    regions.push(region);
    const q = SpscRing.create(region, { capacity: CAPACITY });
    const plan = { seed: 5, producers: 1, perProducer: 1, maxLength: 50 };
    const producer = new Peer({ role: 'spsc-producer', region: { kind: 'fd', fd: 3 }, plan, id: 0, count: 1 }, region.fd);
    try {
      await producer.next('ready');
      const it = q.messages({ peerTimeoutMs: 200 });
      assert.equal((await it.next()).done, false);
      const pending = settle(it.next());
      await sleep(300); // longer than peerTimeoutMs: a live producer is not taken for dead
      const killedAt = await producer.kill();
      const end = await within(5000, pending, 'next() after the producer died');
      assert.equal(end.error?.code, ErrorCodes.PEER_DEAD);
      const took = end.at - killedAt;
      // Bounded loosely for a loaded machine (the watchdog's period, the reaping of the child); not taken for dead, it would never end.
      assert.ok(took < 1000, `PEER_DEAD came ${took.toFixed(0)} ms after the kill`);
      assert.deepEqual(await it.next(), { done: true, value: undefined });
    } finally {
      producer.child.kill('SIGKILL');
      await producer.exited;
    }
  });

  it('works on MpmcQueue too, and the plain for await is messages() without options', async function () {
    const size = MpmcQueue.regionSize({ capacity: 8, slotSize: 8 });
    const region = Region.fromSharedArrayBuffer(new SharedArrayBuffer(size));
    const q = MpmcQueue.create(region, { capacity: 8, slotSize: 8 });
    const writer = MpmcQueue.attach(region);
    const got: number[] = [];
    const consume = (async () => {
      for await (const m of q) got.push(m[0]!);
    })();
    for (let i = 0; i < 20; i++) await writer.write(new Uint8Array([i]));
    writer.close();
    await within(5000, consume, 'the iteration');
    assert.deepEqual(
      got,
      Array.from({ length: 20 }, (_, i) => i),
    );
  });
});
