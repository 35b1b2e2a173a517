/**
 * Liveness of the threads of one process on a SharedArrayBuffer ring: with
 * no file to lock, an exclusive role (an SpscRing's producer and consumer)
 * registers its thread (tid and start time) instead of the process, so a
 * worker that is terminated is a dead peer, although the process it ran in
 * lives on.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import fs from 'node:fs'; // the module object: its readFileSync can be replaced (the namespace follows, syncBuiltinESMExports)
import { syncBuiltinESMExports } from 'node:module';
import { Worker } from 'node:worker_threads';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { Broadcast, LatestValue, MpmcQueue, SpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import { waitCounters } from '../src/waiting.js';
import { startWorker } from './fixtures/waiting-peer.js';
import { inMountNamespace, nodeAfterMount } from './helpers.js';

const CAPACITY = 1024;

function sabRing(): { ring: SpscRing; sab: SharedArrayBuffer; ctl: Int32Array } {
  const size = SpscRing.regionSize({ capacity: CAPACITY });
  const region = Region.create({ backing: 'sab', size });
  const sab = region.buffer as SharedArrayBuffer;
  return { ring: SpscRing.create(region, { capacity: CAPACITY }), sab, ctl: new Int32Array(sab, 0, L.CONTROL_I32_LENGTH) };
}

describe('SharedArrayBuffer rings: a worker that ends is a dead peer', function () {
  this.timeout(30_000);

  it('ends a parked read() with ERR_SHMRING_PEER_DEAD within about peerTimeoutMs once the producing worker is terminated, and not while it lives', async function () {
    const ping = sabRing();
    const pong = sabRing();
    const worker = startWorker({ role: 'echo', inbound: { sab: ping.sab }, outbound: { sab: pong.sab } });
    try {
      await once(worker, 'message'); // ready
      assert.ok(ping.ring.tryWrite(new Uint8Array([7])));
      assert.deepEqual([...(await pong.ring.read({ timeoutMs: 10_000 }))], [7]);
      // The worker registered as pong's producer with its own thread id, not the process's.
      const tid = Atomics.load(pong.ctl, L.PRODUCER_PID_I32);
      assert.notEqual(tid, 0);
      assert.notEqual(tid, process.pid, 'the producer registered the process, not its thread');
      // Alive and quiet: the read times out, it is not a death.
      await assert.rejects(pong.ring.read({ peerTimeoutMs: 100, timeoutMs: 500 }), (err: ShmringError) => err.code === ErrorCodes.TIMEOUT);
      const parked = pong.ring.read({ peerTimeoutMs: 200 });
      const killedAt = performance.now();
      await worker.terminate();
      await assert.rejects(parked, (err: ShmringError) => err.code === ErrorCodes.PEER_DEAD);
      const ms = performance.now() - killedAt;
      console.log(`      PEER_DEAD ${ms.toFixed(0)} ms after terminate() (peerTimeoutMs 200)`);
      assert.ok(ms < 5_000, `took ${ms.toFixed(0)} ms`);
    } finally {
      await worker.terminate();
      ping.ring.close();
      pong.ring.close();
    }
  });

  // Regression: the start time of a worker peer was memoized for processes only, so each pass read
  // /proc/self/task/<tid>/stat once per ring: 1000 idle reads on a worker's rings cost 20% of a CPU.
  it("a pass of the dead-peer checks reads a worker peer's /proc entry once, however many of its rings have a read parked", async function () {
    const N = 100;
    const rings = Array.from({ length: N }, () => sabRing());
    const worker = new Worker(
      `const { workerData, parentPort } = await import('node:worker_threads');
       const { Region } = await import(${JSON.stringify(import.meta.resolve('@shmring/core'))});
       const { SpscRing } = await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});
       const rings = workerData.map((sab) => SpscRing.attach(Region.fromSharedArrayBuffer(sab)));
       for (const ring of rings) ring.tryWrite(new Uint8Array([1])); // takes each producer role: this thread registers
       parentPort.postMessage('registered');
       parentPort.once('message', () => { for (const ring of rings) ring.tryWrite(new Uint8Array([2])); parentPort.postMessage('written'); });`,
      { eval: true, workerData: rings.map((r) => r.sab) },
    );
    const realRead = fs.readFileSync;
    let taskReads = 0;
    try {
      await once(worker, 'message');
      for (const r of rings) assert.deepEqual([...r.ring.tryRead()!], [1]);
      fs.readFileSync = ((file: fs.PathOrFileDescriptor, ...rest: unknown[]): unknown => {
        if (String(file).includes('/task/')) taskReads++;
        return (realRead as (...args: unknown[]) => unknown)(file, ...rest);
      }) as typeof fs.readFileSync;
      syncBuiltinESMExports();
      const before = waitCounters.asyncParks;
      const reads = rings.map((r) => r.ring.read({ peerTimeoutMs: 400 })); // a pass every 100 ms
      await new Promise((r) => setTimeout(r, 650));
      assert.equal(waitCounters.asyncParks - before, N, 'every read parked');
      worker.postMessage('write');
      for (const got of await Promise.all(reads)) assert.deepEqual([...got], [2]);
      // 6 passes or so, and the stamps of the rings' own registrations; per ring per pass (600 or so) without the memo.
      assert.ok(taskReads <= 20, `${taskReads} reads of /proc/self/task/<tid>/stat for ${N} parked reads over 650 ms`);
    } finally {
      fs.readFileSync = realRead;
      syncBuiltinESMExports();
      await worker.terminate();
      for (const r of rings) r.ring.close();
    }
  });

  it('registers the main thread as the process (its tid is the pid), so a ring between the main thread and a worker is alive as long as the process', function () {
    const { ring, ctl } = sabRing();
    assert.ok(ring.tryWrite(new Uint8Array([1])));
    assert.equal(Atomics.load(ctl, L.PRODUCER_PID_I32), process.pid);
    ring.close();
  });

  it('withdraws a thread registration on detach(), so the next producer of the ring is awaited rather than mourned', async function () {
    const { ring, ctl, sab } = sabRing();
    const consumer = SpscRing.attach(Region.fromSharedArrayBuffer(sab));
    assert.ok(ring.tryWrite(new Uint8Array([1])));
    assert.equal(Atomics.load(ctl, L.PRODUCER_PID_I32), process.pid);
    ring.detach();
    assert.equal(Atomics.load(ctl, L.PRODUCER_PID_I32), 0);
    assert.deepEqual([...consumer.tryRead()!], [1]);
    await assert.rejects(consumer.read({ peerTimeoutMs: 50, timeoutMs: 300 }), (err: ShmringError) => err.code === ErrorCodes.TIMEOUT);
    consumer.close();
  });

  it('gives a second live producer thread of a SharedArrayBuffer ring ERR_SHMRING_BUSY, and the role to the next thread once the holder detached or its worker ended', async function () {
    const { ring, sab } = sabRing();
    const tryWrite = async (): Promise<{ code: string; message?: string; worker: Worker }> => {
      const worker = startWorker({ role: 'try-write', ring: { sab } });
      const [end] = (await once(worker, 'message')) as [{ code: string; message?: string }];
      return { ...end, worker };
    };
    assert.ok(ring.tryWrite(new Uint8Array([0]))); // the main thread holds the producer role
    const second = await tryWrite();
    assert.equal(second.code, ErrorCodes.BUSY, second.message);
    assert.match(second.message!, /another live thread/);
    await second.worker.terminate();
    ring.detach();
    const third = await tryWrite();
    assert.equal(third.code, 'ok', 'the role is free once its holder detached');
    const fourth = await tryWrite();
    assert.equal(fourth.code, ErrorCodes.BUSY, 'the third worker holds it now');
    await fourth.worker.terminate();
    await third.worker.terminate(); // ends without close(): its thread is gone
    const fifth = await tryWrite();
    assert.equal(fifth.code, 'ok', 'the role of a terminated worker is free');
    // The main thread is no exception: a live worker holds the role now.
    const again = SpscRing.attach(Region.fromSharedArrayBuffer(sab));
    assert.throws(
      () => again.tryWrite(new Uint8Array([9])),
      (err: ShmringError) => err.code === ErrorCodes.BUSY,
    );
    again.close();
    fifth.worker.postMessage('exit');
    await once(fifth.worker, 'exit');
  });

  it('marks an MpmcQueue slot with the claiming worker thread, so the slot of a worker terminated mid-write is skipped and what came after it delivered', async function () {
    const capacity = 8;
    const region = Region.create({ backing: 'sab', size: MpmcQueue.regionSize({ capacity, slotSize: 16 }) });
    const queue = MpmcQueue.create(region, { capacity, slotSize: 16 });
    // The worker claims position 0 through tryWrite and is stopped inside its payload copy (after
    // the OWNER mark, before the publication), then terminated: a worker that died holding a slot.
    const source = `
      const { workerData, parentPort } = require('node:worker_threads');
      (async () => {
        const { Region } = await import(workerData.core);
        const { MpmcQueue } = await import(workerData.ringbuf);
        const queue = MpmcQueue.attach(Region.fromSharedArrayBuffer(workerData.sab));
        const set = Uint8Array.prototype.set;
        Uint8Array.prototype.set = function () {
          Uint8Array.prototype.set = set;
          parentPort.postMessage(require('node:fs').readlinkSync('/proc/thread-self'));
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
        };
        queue.tryWrite(new Uint8Array([9]));
      })();`;
    const worker = new Worker(source, {
      eval: true,
      workerData: {
        sab: region.buffer,
        core: import.meta.resolve('@shmring/core'),
        ringbuf: new URL('../src/index.js', import.meta.url).href,
      },
    });
    const [link] = (await once(worker, 'message')) as [string];
    const tid = Number(link.split('/').pop());
    const slots = new Int32Array(region.buffer, L.DATA_OFFSET);
    assert.equal(Atomics.load(slots, L.SLOT_OWNER_I32), tid, 'the slot is marked with the worker thread, not the process');
    await worker.terminate();
    assert.ok(queue.tryWrite(new Uint8Array([1])));
    assert.ok(queue.tryWrite(new Uint8Array([2])));
    assert.equal(queue.tryRead(), null, 'the claimed slot holds up the queue until someone looks at its owner');
    assert.deepEqual([...(await queue.read({ peerTimeoutMs: 100, timeoutMs: 5_000 }))], [1]);
    assert.deepEqual([...queue.tryRead()!], [2]);
    assert.equal(queue.recoveredSlots, 1);
    queue.close();
  });

  it('frees the LatestValue writer role of a worker that ended without closing, and keeps it from a second object of a live thread', async function () {
    const region = Region.create({ backing: 'sab', size: LatestValue.regionSize({ maxSize: 64 }) });
    const lv = LatestValue.create(region, { maxSize: 64 });
    const source = `
      const { workerData, parentPort } = require('node:worker_threads');
      (async () => {
        const { Region } = await import(workerData.core);
        const { LatestValue } = await import(workerData.ringbuf);
        const lv = LatestValue.attach(Region.fromSharedArrayBuffer(workerData.sab));
        lv.publish(new Uint8Array([5]));
        parentPort.postMessage('published');
        setInterval(() => {}, 1 << 30); // holds the role, never closes: a worker whose loop empties would end by itself
      })();`;
    const worker = new Worker(source, {
      eval: true,
      workerData: {
        sab: region.buffer,
        core: import.meta.resolve('@shmring/core'),
        ringbuf: new URL('../src/index.js', import.meta.url).href,
      },
    });
    await once(worker, 'message');
    assert.throws(
      () => lv.publish(new Uint8Array([6])),
      (err: ShmringError) => err.code === ErrorCodes.BUSY,
    );
    await worker.terminate();
    assert.equal(lv.publish(new Uint8Array([6])), 2, 'the role of the ended worker is free');
    const second = LatestValue.attach(region);
    assert.throws(
      () => second.publish(new Uint8Array([7])),
      (err: ShmringError) => err.code === ErrorCodes.BUSY,
      'another object of this (live) thread',
    );
    second.close();
    lv.close();
  });

  it('frees the lossless Broadcast slot of a subscriber worker terminated without closing, so the publisher goes on', async function () {
    const capacity = 1024;
    const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity }) });
    const publisher = Broadcast.create(region, { capacity, lossless: true });
    const source = `
      const { workerData, parentPort } = require('node:worker_threads');
      (async () => {
        const { Region } = await import(workerData.core);
        const { Broadcast } = await import(workerData.ringbuf);
        Broadcast.subscribe(Region.fromSharedArrayBuffer(workerData.sab)); // takes a slot, never reads
        parentPort.postMessage('subscribed');
        setInterval(() => {}, 1 << 30); // lives on until terminated: a worker whose loop empties would end by itself
      })();`;
    const worker = new Worker(source, {
      eval: true,
      workerData: {
        sab: region.buffer,
        core: import.meta.resolve('@shmring/core'),
        ringbuf: new URL('../src/index.js', import.meta.url).href,
      },
    });
    try {
      await once(worker, 'message');
      const message = new Uint8Array(64);
      let written = 0;
      while (publisher.tryWrite(message)) written++;
      assert.ok(written > 0 && written < capacity / 64, `the subscriber that never reads holds the publisher back (${written} written)`);
      let done = false;
      const parked = publisher.write(message, { peerTimeoutMs: 100, timeoutMs: 5_000 }).finally(() => {
        done = true;
      });
      parked.catch(() => {}); // awaited below; a failed assertion before that must not leave it unhandled
      await new Promise((resolve) => setTimeout(resolve, 400));
      assert.equal(done, false, 'a live subscriber worker keeps the lossless publisher waiting past peerTimeoutMs');
      await worker.terminate();
      await parked; // its slot freed (its thread is gone), the write goes through
      assert.ok(publisher.tryWrite(message), 'nobody holds the publisher back any more');
    } finally {
      await worker.terminate();
      publisher.close();
    }
  });
});

describe('threads told apart without /proc', function () {
  it('a worker does not take the producer role of a SharedArrayBuffer ring the main thread holds, where /proc is not mounted', function () {
    // A private mount namespace without /proc: /proc/thread-self cannot tell the threads' ids. With the pid
    // for every thread, the worker's role check took the main thread's registration for its own: two producers.
    const core = new URL('../../../core/dist/src/index.js', import.meta.url).href;
    const index = new URL('../src/index.js', import.meta.url).href;
    const code = `
      import * as fs from 'node:fs';
      import { Worker } from 'node:worker_threads';
      const { Region } = await import(${JSON.stringify(core)});
      const { SpscRing } = await import(${JSON.stringify(index)});
      if (fs.existsSync('/proc/self')) throw new Error('/proc is mounted');
      const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: 4096 }) });
      const ring = SpscRing.create(region, { capacity: 4096 });
      ring.tryWrite(new Uint8Array(1)); // the producer role is the main thread's
      const worker = new Worker(\`
        const { workerData, parentPort } = require('node:worker_threads');
        Promise.all([import(\${JSON.stringify(${JSON.stringify(core)})}), import(\${JSON.stringify(${JSON.stringify(index)})})]).then(([{ Region }, { SpscRing }]) => {
          const ring = SpscRing.attach(Region.fromSharedArrayBuffer(workerData));
          try { ring.tryWrite(new Uint8Array(1)); parentPort.postMessage('wrote'); } catch (err) { parentPort.postMessage(err.code); }
        });\`, { eval: true, workerData: region.buffer, execArgv: [] });
      worker.on('message', (m) => { console.log(m); process.exit(0); });`;
    // Whether a private mount namespace without /proc can be had here at all (a container may refuse it).
    const probe = inMountNamespace('umount -l /proc && echo ok', [], 10_000);
    if (probe.error !== undefined || probe.stdout.trim() !== 'ok') {
      console.log(`      (skipped: no mount namespace without /proc here: ${probe.error?.message ?? probe.stderr.trim()})`);
      this.skip();
    }
    const child = nodeAfterMount('umount -l /proc', code);
    // A hang (the timeout) or a crash fails the test; only the probe above skips it.
    assert.equal(child.error, undefined, String(child.error));
    assert.equal(child.stdout.trim(), ErrorCodes.BUSY, child.stderr);
  });
});
