/**
 * LatestValue in one process: versions, waiting (changed, changedSync,
 * updates), the writer role, and typed errors for bad input.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { ErrorCodes, Region, ShmringRangeError, ShmringTypeError, type ShmringError } from '@shmring/core';
import { describeRing, LatestValue, SpscRing } from '../src/index.js';
import * as V from '../src/latest-layout.js';
import { waitCounters } from '../src/waiting.js';

const MAX = 256;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function expectCode(fn: () => unknown, code: string, kind?: abstract new (...args: never[]) => Error): void {
  assert.throws(fn, (err: ShmringError) => {
    assert.equal(err.code, code, err.message);
    if (kind !== undefined) assert.ok(err instanceof kind, `${err.constructor.name} is not a ${kind.name}`);
    return true;
  });
}

async function rejectsCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: ShmringError) => {
    assert.equal(err.code, code, err.message);
    return true;
  });
}

for (const backing of ['sab', 'memfd'] as const) {
  describe(`LatestValue (${backing} region)`, function () {
    this.timeout(20_000);
    let region: Region;
    let lv: LatestValue;
    let other: LatestValue;

    beforeEach(function () {
      region = Region.create({ backing, size: LatestValue.regionSize({ maxSize: MAX }) });
      lv = LatestValue.create(region, { maxSize: MAX });
      other = LatestValue.attach(region);
    });
    afterEach(function () {
      lv.close();
      other.close();
      region.close();
    });

    it("read() after exactly 2^32 publishes returns the new version, not the one it cached (PUBLISHED's low bits and SEQ read as then)", function () {
      lv.publish(new Uint8Array([1]));
      assert.equal(other.read().version, 1); // `other` caches version 1
      // What 2^32 more publishes leave: PUBLISHED's low 32 bits and slot 1's SEQ (2^31 rewrites of +2) as they
      // were, its VERSION_HI one more. Written by hand while SEQ is odd, as a writer would.
      const ctl = new Int32Array(region.buffer);
      const slot = V.slotOffset(MAX, 1) / 4;
      // Observes the slot's SEQ (even: version 1 whole); the stores below pose as the writer's step 1 to 3.
      const seq = Atomics.load(ctl, slot + V.SEQ_I32);
      Atomics.store(ctl, slot + V.SEQ_I32, seq + 1);
      ctl[slot + V.VERSION_HI_I32] = 1;
      Atomics.store(ctl, slot + V.SEQ_I32, seq);
      assert.equal(other.read().version, 2 ** 32 + 1, 'the cached version 1 was returned');
    });

    it('refuses every publish, not only the first, while the published slot contradicts PUBLISHED (CORRUPT)', function () {
      lv.publish(new Uint8Array([1]));
      lv.publish(new Uint8Array([2]));
      lv.close();
      const ctl = new Int32Array(region.buffer);
      Atomics.store(ctl, V.PUBLISHED_I32, 6); // slot 0 holds version 2
      const writer = LatestValue.attach(region);
      try {
        expectCode(() => writer.publish(new Uint8Array([3])), ErrorCodes.CORRUPT);
        // Before, the first refusal left it a writer at version 0: the next publish wrote version 1.
        expectCode(() => writer.publish(new Uint8Array([3])), ErrorCodes.CORRUPT);
        assert.equal(Atomics.load(ctl, V.PUBLISHED_I32), 6, 'nothing published');
      } finally {
        writer.close();
      }
    });

    it('changed() and changedSync() resolve at once for a sinceVersion 2^32 away from the version (equal low 32 bits)', async function () {
      lv.publish(new Uint8Array([1]));
      assert.equal((await other.changed(1 + 2 ** 32, { timeoutMs: 2000 })).version, 1);
      assert.equal(other.changedSync(1 + 2 ** 32, { timeoutMs: 2000 }).version, 1);
      await rejectsCode(other.changed(1, { timeoutMs: 20 }), ErrorCodes.TIMEOUT); // the same version: it waits
    });

    it('read() reports a published slot rewritten under it (SEQ changing, PUBLISHED not) as CORRUPT, not a read that never ends', async function () {
      if (backing !== 'sab') this.skip(); // the rewriting thread needs the memory: a SharedArrayBuffer
      lv.publish(new Uint8Array([1]));
      const seqI32 = V.slotOffset(MAX, 1) / 4 + V.SEQ_I32; // version 1's slot
      const { Worker } = await import('node:worker_threads');
      const flag = new Int32Array(new SharedArrayBuffer(4));
      // A misbehaving writer: bumps the published slot's SEQ by 2 (even: "whole") for ever, PUBLISHED unchanged.
      const worker = new Worker(
        `const { workerData } = require('node:worker_threads');
         const ctl = new Int32Array(workerData.sab); const flag = new Int32Array(workerData.flag);
         Atomics.store(flag, 0, 1);
         while (Atomics.load(flag, 0) === 1) Atomics.add(ctl, workerData.seqI32, 2);`,
        { eval: true, workerData: { sab: region.buffer, flag: flag.buffer, seqI32 } },
      );
      try {
        while (Atomics.load(flag, 0) !== 1) await new Promise((r) => setTimeout(r, 1));
        // Reads until one meets a change (the worker must be on a CPU meanwhile: on a busy host it may not be for a
        // while, so the reads go on for up to 5 s, giving the loop a turn every thousand).
        let corrupt = 0;
        let reads = 0;
        for (const until = performance.now() + 5000; corrupt === 0 && performance.now() < until; ) {
          try {
            assert.equal(other.read().version, 1);
          } catch (err) {
            assert.equal((err as ShmringError).code, ErrorCodes.CORRUPT, String(err));
            corrupt++;
          }
          if (++reads % 1000 === 0) await new Promise((r) => setImmediate(r));
        }
        assert.ok(corrupt > 0, `none of ${reads} reads saw the slot change under it`);
      } finally {
        Atomics.store(flag, 0, 0);
        await worker.terminate();
      }
    });

    it('reads version 0, an empty value of type 0, before any publish', function () {
      assert.deepEqual({ ...other.read(), value: [...other.read().value] }, { version: 0, value: [], type: 0 });
    });

    it('grows the version by one per publish and reads the newest value and type', function () {
      for (let v = 1; v <= 5; v++) {
        assert.equal(lv.publish(new Uint8Array(v).fill(v), v * 10), v);
        const r = other.read();
        assert.equal(r.version, v);
        assert.equal(r.type, v * 10);
        assert.deepEqual([...r.value], new Array(v).fill(v));
      }
    });

    it('returns the same frozen result while the version has not changed, a new one after', function () {
      lv.publish(new Uint8Array([1]));
      const a = other.read();
      assert.equal(other.read(), a);
      assert.ok(Object.isFrozen(a));
      lv.publish(new Uint8Array([2]));
      assert.notEqual(other.read(), a);
      assert.deepEqual([...a.value], [1], 'an earlier result keeps its own copy');
    });

    it('takes values of exactly maxSize bytes and of none', function () {
      lv.publish(new Uint8Array(MAX).fill(7));
      assert.equal(other.read().value.length, MAX);
      lv.publish(new Uint8Array(0), 3);
      assert.equal(other.read().value.length, 0);
      assert.equal(other.read().type, 3);
    });

    it('gives a second live writer ERR_SHMRING_BUSY, and the role to it once the first closes', function () {
      lv.publish(new Uint8Array([1]));
      expectCode(() => other.publish(new Uint8Array([2])), ErrorCodes.BUSY);
      assert.equal(other.read().version, 1, 'the refused publish changed nothing');
      lv.close();
      assert.equal(other.publish(new Uint8Array([3])), 2, 'the new writer continues from the published version');
      assert.deepEqual([...other.read().value], [3]);
    });

    it('changed() resolves at once when the version already differs', async function () {
      lv.publish(new Uint8Array([1]));
      assert.equal((await other.changed(0)).version, 1);
    });

    it('changed() parks and wakes on the next publish', async function () {
      const parks = waitCounters.asyncParks;
      const p = other.changed(0, { timeoutMs: 5000, poll: 0 });
      await sleep(20);
      assert.equal(waitCounters.asyncParks, parks + 1, 'the wait parked');
      lv.publish(new Uint8Array([9]), 4);
      const r = await p;
      assert.deepEqual([r.version, r.type, [...r.value]], [1, 4, [9]]);
    });

    it('wakes every parked reader with one publish', async function () {
      const readers = [LatestValue.attach(region), LatestValue.attach(region), LatestValue.attach(region)];
      const waits = readers.map((r) => r.changed(0, { timeoutMs: 5000 }));
      await sleep(20);
      lv.publish(new Uint8Array([1]));
      assert.deepEqual(
        (await Promise.all(waits)).map((r) => r.version),
        [1, 1, 1],
      );
      for (const r of readers) r.close();
    });

    it('changed() rejects with ERR_SHMRING_TIMEOUT after timeoutMs and changedSync() throws it', async function () {
      const started = performance.now();
      await rejectsCode(other.changed(0, { timeoutMs: 50 }), ErrorCodes.TIMEOUT);
      assert.ok(performance.now() - started >= 45);
      expectCode(() => other.changedSync(0, { timeoutMs: 20 }), ErrorCodes.TIMEOUT);
    });

    it('changed() rejects with an AbortError when its signal fires, and at once if already aborted', async function () {
      const ac = new AbortController();
      const p = other.changed(0, { signal: ac.signal });
      setTimeout(() => ac.abort(), 20);
      await assert.rejects(p, { name: 'AbortError' });
      await assert.rejects(other.changed(0, { signal: AbortSignal.abort() }), { name: 'AbortError' });
      assert.throws(() => other.changedSync(0, { signal: AbortSignal.abort() }), { name: 'AbortError' });
      lv.publish(new Uint8Array([1]));
      assert.equal((await other.changed(0, { timeoutMs: 100 })).version, 1, 'waits still work after an abort');
    });

    it('updates() yields each version a fast reader can see, with skipped 0', async function () {
      const got: number[] = [];
      const done = (async () => {
        for await (const u of other.updates({ timeoutMs: 5000 })) {
          got.push(u.version, u.skipped);
          if (u.version === 5) break;
        }
      })();
      for (let v = 1; v <= 5; v++) {
        await sleep(5);
        lv.publish(new Uint8Array([v]));
        // A fast reader by construction: the next version comes once this one was seen (a fixed gap
        // was not enough on a loaded machine, where a parked reader's wake-up can take longer).
        const until = performance.now() + 5_000;
        while (got.length < 2 * v && performance.now() < until) await sleep(1);
      }
      await done;
      assert.deepEqual(got, [1, 0, 2, 0, 3, 0, 4, 0, 5, 0]);
    });

    it('updates() counts the versions a slow reader missed in skipped', async function () {
      const it = other.updates({ since: 0 });
      lv.publish(new Uint8Array([1]));
      assert.deepEqual((await it.next()).value, { version: 1, value: new Uint8Array([1]), type: 0, skipped: 0 });
      for (let v = 2; v <= 7; v++) lv.publish(new Uint8Array([v]));
      const u = (await it.next()).value!;
      assert.deepEqual([u.version, u.skipped], [7, 5]);
      await it.return();
    });

    // An outside tester: updates() was an async generator, whose return() waited behind the pending next()
    // (for the next publish, for ever if none came), and the process did not exit.
    it('updates(): return() with a next() waiting ends both at once, and the wait no longer holds the process', async function () {
      const it = other.updates({ since: 0 });
      lv.publish(new Uint8Array([1]));
      assert.equal((await it.next()).value?.version, 1);
      const pending = it.next();
      await sleep(50);
      const t0 = performance.now();
      assert.deepEqual(await it.return(), { done: true, value: undefined });
      assert.deepEqual(await pending, { done: true, value: undefined }, 'the waiting next() resolves done');
      assert.ok(performance.now() - t0 < 200);
      lv.publish(new Uint8Array([2]));
      assert.deepEqual(await it.next(), { done: true, value: undefined }, 'nothing after return()');
      if (backing === 'memfd') {
        const script = `
          const { Region } = await import(${JSON.stringify(import.meta.resolve('@shmring/core'))});
          const { LatestValue } = await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});
          const region = Region.create({ backing: 'memfd', size: LatestValue.regionSize({ maxSize: 8 }) });
          const lv = LatestValue.create(region, { maxSize: 8 });
          lv.publish(new Uint8Array([1]));
          const it = lv.updates();
          await it.next();
          void it.next();
          await new Promise((r) => setTimeout(r, 50));
          await it.return();
          console.log('returned');`;
        const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 10_000 });
        assert.equal(child.signal, null, 'the process exits by itself once return() ended the wait');
        assert.equal(child.stdout.trim(), 'returned', child.stderr);
      }
    });

    it('updates() starts with the current value by default, and after `since` when given', async function () {
      for (let v = 1; v <= 3; v++) lv.publish(new Uint8Array([v]));
      const first = await other.updates().next();
      assert.deepEqual([first.value!.version, first.value!.skipped], [3, 0]);
      const fromOne = await other.updates({ since: 1 }).next();
      assert.deepEqual([fromOne.value!.version, fromOne.value!.skipped], [3, 1]);
    });

    it('refuses bad input with typed errors, changing nothing', async function () {
      const bad = ErrorCodes.INVALID_ARGUMENT;
      expectCode(() => LatestValue.regionSize({ maxSize: '5' as unknown as number }), bad, ShmringTypeError);
      expectCode(() => LatestValue.regionSize({ maxSize: 1.5 }), bad, ShmringTypeError);
      expectCode(() => LatestValue.regionSize({ maxSize: -1 }), bad, ShmringRangeError);
      expectCode(() => LatestValue.regionSize({ maxSize: 2 ** 31 }), bad, ShmringRangeError);
      expectCode(() => LatestValue.regionSize(undefined as unknown as { maxSize: number }), bad, ShmringTypeError);
      expectCode(() => LatestValue.create(region, { maxSize: MAX, offset: 3 }), bad, ShmringRangeError);
      expectCode(() => LatestValue.create({} as Region, { maxSize: MAX }), bad, ShmringTypeError);
      expectCode(() => LatestValue.create(region, { maxSize: MAX * 4 }), ErrorCodes.REGION_TOO_SMALL);
      expectCode(() => lv.publish([1, 2] as unknown as Uint8Array), bad, ShmringTypeError);
      expectCode(() => lv.publish('ab' as unknown as Uint8Array), bad, ShmringTypeError);
      expectCode(() => lv.publish(new Uint8Array(MAX + 1)), ErrorCodes.MESSAGE_TOO_LARGE, ShmringRangeError);
      expectCode(() => lv.publish(new Uint8Array(1), -1), bad, ShmringRangeError);
      expectCode(() => lv.publish(new Uint8Array(1), 1.5), bad, ShmringTypeError);
      expectCode(() => lv.publish(new Uint8Array(1), 2 ** 31), bad, ShmringRangeError);
      expectCode(() => other.changedSync(-1), bad, ShmringRangeError);
      expectCode(() => other.changedSync('1' as unknown as number), bad, ShmringTypeError);
      expectCode(() => other.changedSync(0, { timeoutMs: -1 }), bad, ShmringRangeError);
      await rejectsCode(other.changed(0.5), bad);
      await rejectsCode(other.changed(0, { signal: 'x' as unknown as AbortSignal }), bad);
      await rejectsCode(other.updates({ since: -2 }).next(), bad);
      assert.equal(other.read().version, 0, 'nothing was published');
      assert.equal(lv.isWriter, false, 'a refused publish does not take the role');
    });

    it('refuses a region that holds no LatestValue, or a ring of another kind', function () {
      const empty = Region.create({ backing, size: LatestValue.regionSize({ maxSize: MAX }) });
      expectCode(() => LatestValue.attach(empty), ErrorCodes.NOT_A_RING);
      SpscRing.create(empty, { capacity: 64 });
      expectCode(() => LatestValue.attach(empty), ErrorCodes.WRONG_KIND);
      empty.close();
      expectCode(() => SpscRing.attach(region), ErrorCodes.WRONG_KIND);
    });

    it('throws ERR_SHMRING_CLOSED once closed, and a parked wait rejects with it when the region closes', async function () {
      other.close();
      expectCode(() => other.read(), ErrorCodes.CLOSED);
      expectCode(() => other.publish(new Uint8Array(1)), ErrorCodes.CLOSED);
      other.close(); // idempotent
      if (backing === 'sab') return; // closing a SharedArrayBuffer region detaches nothing
      const reader = LatestValue.attach(region);
      const p = reader.changed(0, { timeoutMs: 5000 });
      await sleep(20);
      region.close();
      await rejectsCode(p, ErrorCodes.CLOSED);
    });

    it("close() ends this object's own pending changed() and updates() at once with ERR_SHMRING_CLOSED, not another's", async function () {
      lv.publish(new Uint8Array([1]));
      const bystander = LatestValue.attach(region);
      const waits = [other.changed(1), other.updates({ since: 1 }).next(), other.changed(1, { poll: 0 })];
      const goesOn = bystander.changed(1);
      await sleep(20); // parked (or polling)
      const t0 = performance.now();
      other.close();
      const late = sleep(1000).then(() => 'still pending');
      for (const p of waits) {
        const outcome = await Promise.race([
          p.then(
            () => 'resolved',
            (err: ShmringError) => err,
          ),
          late,
        ]);
        assert.ok(outcome instanceof Error, `the wait is ${String(outcome)} after close()`);
        assert.equal((outcome as ShmringError).code, ErrorCodes.CLOSED, (outcome as Error).message);
      }
      assert.ok(performance.now() - t0 < 500, 'the waits ended at close(), not later');
      lv.publish(new Uint8Array([2]));
      assert.equal((await goesOn).version, 2);
      bystander.close();
    });

    it('shows up in describeRing as a LatestValue with its version', function () {
      lv.publish(new Uint8Array([1]));
      lv.publish(new Uint8Array([2]));
      const info = describeRing(region, 'x')!;
      assert.equal(info.kind, 'LatestValue');
      assert.equal(info.capacity, MAX);
      assert.equal(info.latestVersion, 2);
      assert.equal(info.producer?.pid, process.pid);
    });
  });
}
