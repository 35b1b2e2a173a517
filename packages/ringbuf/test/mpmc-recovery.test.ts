/**
 * MpmcQueue's recovery of a slot a dead producer claimed (docs/LAYOUT.md,
 * "A reader's check"): the reader judges the producer dead only between
 * two loads of the slot's SEQUENCE that both find it unpublished. A
 * producer that publishes and exits between the first load and the
 * verdict must keep its message. A blocked reader (readSync) that live
 * producers keep waking must still get to that check.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { Worker } from 'node:worker_threads';
import { Region } from '@shmring/core';
import { MpmcQueue } from '../src/index.js';
import * as L from '../src/layout.js';

const require = createRequire(import.meta.url);
const fs = require('node:fs') as typeof import('node:fs');

/** A pid no process has now: a child that ran and was reaped. */
function deadPid(): number {
  return Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());
}

/** A MpmcQueue of `capacity` 16-byte slots in a memfd region: the creating object, a second one, its control words, and slot i's words. */
function queue(capacity: number): {
  region: Region;
  first: MpmcQueue;
  second: MpmcQueue;
  ctl: Int32Array;
  slot: (i: number) => Int32Array;
} {
  const options = { capacity, slotSize: 16 };
  const region = Region.create({ backing: 'memfd', size: MpmcQueue.regionSize(options) });
  const first = MpmcQueue.create(region, options);
  const second = MpmcQueue.attach(region);
  const stride = L.slotStride(options.slotSize);
  return {
    region,
    first,
    second,
    ctl: new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH),
    slot: (i) => new Int32Array(region.buffer, L.DATA_OFFSET + i * stride, stride / 4),
  };
}

describe('MpmcQueue: a parked reader recovering a dead producer’s slot', function () {
  this.timeout(10_000);

  it('keeps the message of a producer that published and exited while the reader judged it', async function () {
    const { region, first: consumer, second: producer, ctl, slot } = queue(4);
    const slot0 = slot(0);
    const pid = deadPid();
    // A producer claimed position 0 and marked the slot, as a live one does before it writes.
    Atomics.add(ctl, L.PRODUCER_POSITION_I32, 1);
    Atomics.store(slot0, L.SLOT_OWNER_I32, pid);
    // It writes, clears its mark, publishes and exits just as the reader's check asks about it.
    const readFileSync = fs.readFileSync;
    let judged = 0;
    fs.readFileSync = ((file: unknown, ...rest: unknown[]) => {
      if (file === `/proc/${pid}/stat`) {
        judged++;
        new Uint8Array(region.buffer, L.DATA_OFFSET + L.slotPayload(0), 3).fill(7);
        Atomics.store(slot0, L.SLOT_LENGTH_I32, 3);
        Atomics.store(slot0, L.SLOT_TYPE_I32, 0);
        Atomics.store(slot0, L.SLOT_OWNER_I32, 0);
        Atomics.store(slot0, L.SLOT_SEQUENCE_I32, 1); // published
        throw Object.assign(new Error(`ENOENT: no such file or directory, open '${file}'`), { code: 'ENOENT' });
      }
      return (readFileSync as (...args: unknown[]) => unknown)(file, ...rest);
    }) as typeof fs.readFileSync;
    syncBuiltinESMExports();
    try {
      const read = consumer.read({ peerTimeoutMs: 40, timeoutMs: 5000 }); // parks: position 0 is unpublished
      while (judged === 0) await new Promise((r) => setTimeout(r, 5)); // the watchdog's check has run
      assert.ok(producer.tryWrite(new Uint8Array([9]))); // position 1, and a wake-up for the reader
      assert.deepEqual([...(await read)], [7, 7, 7], 'the message published before the verdict was skipped');
      assert.equal(consumer.recoveredSlots, 0);
      assert.deepEqual([...consumer.tryRead()!], [9]);
    } finally {
      fs.readFileSync = readFileSync;
      syncBuiltinESMExports();
      consumer.close();
      producer.close();
      region.close();
    }
  });

  for (const verb of ['readSync', 'selectSync'] as const) {
    it(`lets a ${verb} behind a dead producer’s slot skip it within about peerTimeoutMs while live producers keep waking it`, async function () {
      const options = { capacity: 256, slotSize: 8 };
      const region = Region.create({ backing: 'memfd', size: MpmcQueue.regionSize(options) });
      const producer = MpmcQueue.create(region, options);
      const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
      const slot0 = new Int32Array(region.buffer, L.DATA_OFFSET, L.slotStride(options.slotSize) / 4);
      // A producer that died between its claim of position 0 and its publication.
      Atomics.add(ctl, L.PRODUCER_POSITION_I32, 1);
      Atomics.store(slot0, L.SLOT_OWNER_I32, deadPid());
      const peerTimeoutMs = 400;
      const worker = new Worker(
        `const { workerData, parentPort } = require('node:worker_threads');
       (async () => {
         const { Region } = await import(workerData.core);
         const { MpmcQueue, selectSync } = await import(workerData.ringbuf);
         const queue = MpmcQueue.attach(Region.fromFd(workerData.fd));
         const started = performance.now();
         // spin 0: no tryRead in a spin, whose every 64th empty poll looks at the stuck slot itself (tryRead's own recovery).
         const options = { peerTimeoutMs: workerData.peerTimeoutMs, timeoutMs: 10_000, spin: 0 };
         const message = workerData.verb === 'readSync' ? queue.readSync(options) : (selectSync([queue], options), queue.tryRead());
         parentPort.postMessage({ first: message[0], ms: performance.now() - started, skipped: queue.recoveredSlots });
       })().catch((err) => parentPort.postMessage({ error: String(err) }));`,
        {
          eval: true,
          workerData: {
            fd: region.fd,
            peerTimeoutMs,
            verb,
            core: import.meta.resolve('@shmring/core'),
            ringbuf: new URL('../src/index.js', import.meta.url).href,
          },
        },
      );
      const answer = new Promise<{ first?: number; ms?: number; skipped?: number; error?: string }>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      // A live producer writes every 20 ms for 4 s: each write wakes the parked reader, none times its nap out.
      let n = 1;
      const writer = setInterval(() => {
        if (n <= 200) producer.tryWrite(new Uint8Array([n++]));
      }, 20);
      try {
        const got = await answer;
        assert.equal(got.error, undefined);
        assert.equal(got.first, 1, 'the first live message');
        assert.equal(got.skipped, 1);
        assert.ok(got.ms! < peerTimeoutMs * 2, `${verb} returned after ${got.ms!.toFixed(0)} ms (peerTimeoutMs ${peerTimeoutMs})`);
      } finally {
        clearInterval(writer);
        await worker.terminate();
        producer.close();
        region.close();
      }
    });
  }

  it('a close does not strand what was claimed before it: a reader waits for a slow producer’s slot, then reads the rest, then CLOSED', async function () {
    const options = { capacity: 4, slotSize: 16 };
    const region = Region.create({ backing: 'sab', size: MpmcQueue.regionSize(options) });
    MpmcQueue.create(region, options);
    const producer = MpmcQueue.attach(region);
    const consumer = MpmcQueue.attach(region);
    const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
    const slot0 = new Int32Array(region.buffer, L.DATA_OFFSET, L.slotStride(options.slotSize) / 4);
    Atomics.add(ctl, L.PRODUCER_POSITION_I32, 1); // position 0: claimed by a producer still writing
    assert.ok(producer.tryWrite(new Uint8Array([2]))); // position 1
    producer.close();
    let outcome: string | undefined;
    const read = consumer.read({ timeoutMs: 5000 }).then(
      (m) => (outcome = `message ${[...m]}`),
      (err: { code?: string }) => (outcome = String(err.code)),
    );
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(outcome, undefined, 'the read ended before the slot claimed ahead of the close was published');
    // The slow producer publishes position 0 and wakes the readers, as its tryWrite would.
    new Uint8Array(region.buffer, L.DATA_OFFSET + L.slotPayload(0), 1)[0] = 1;
    Atomics.store(slot0, L.SLOT_LENGTH_I32, 1);
    Atomics.store(slot0, L.SLOT_SEQUENCE_I32, 1);
    Atomics.add(ctl, L.READ_SIGNAL_I32, 1);
    Atomics.notify(ctl, L.READ_SIGNAL_I32);
    await read;
    assert.equal(outcome, 'message 1');
    assert.deepEqual([...(await consumer.read())], [2]);
    await assert.rejects(consumer.read(), { code: 'ERR_SHMRING_CLOSED' });
    consumer.close();
  });

  it('a queue laid out again over an old one clears the OWNER words: a live producer that does not mark (as the C peer) keeps its claim when the old owner is dead', function () {
    const options = { capacity: 4, slotSize: 16 };
    const { region, first, second, ctl, slot } = queue(4);
    try {
      // The old queue's slots name a process that is gone by now.
      const dead = deadPid();
      for (let i = 0; i < 4; i++) Atomics.store(slot(i), L.SLOT_OWNER_I32, dead);
      first.detach();
      second.detach();
      MpmcQueue.create(region, options).detach();
      for (let i = 0; i < 4; i++) assert.equal(Atomics.load(slot(i), L.SLOT_OWNER_I32), 0, `slot ${i}'s OWNER`);
      // A producer that claims position 0 and leaves OWNER alone, slow to publish.
      Atomics.add(ctl, L.PRODUCER_POSITION_I32, 1);
      const consumer = MpmcQueue.attach(region);
      try {
        const until = performance.now() + 300; // past the dead-holder looks of a polling consumer (#pollLook)
        while (performance.now() < until) assert.equal(consumer.tryRead(), null, 'the live claim was skipped');
        assert.equal(consumer.recoveredSlots, 0);
        // It publishes: length, type, payload, then SEQUENCE = position + 1.
        const words = slot(0);
        words[L.SLOT_LENGTH_I32] = 1;
        words[L.SLOT_TYPE_I32] = 3;
        new Uint8Array(words.buffer, words.byteOffset + L.SLOT_HEADER, 1)[0] = 42;
        Atomics.store(words, L.SLOT_SEQUENCE_I32, 1);
        assert.deepEqual(consumer.tryRead(), Uint8Array.of(42));
      } finally {
        consumer.detach();
      }
    } finally {
      region.close();
    }
  });

  it('a consumer that only polls (tryRead, drain) skips a dead producer’s claim; a producer that only polls (tryWrite) frees a dead consumer’s slot', function () {
    const { region, first: producer, second: consumer, ctl, slot } = queue(4);
    const slot0 = slot(0);
    const dead = deadPid();
    /** Polls `poll` (no wait, no sleep) until it gives something, for at most 2 s; undefined if it never did. */
    const pollFor = <T>(poll: () => T | null | false): T | undefined => {
      const deadline = performance.now() + 2000;
      while (performance.now() < deadline) {
        const got = poll();
        if (got !== null && got !== false) return got;
      }
      return undefined;
    };
    try {
      // A producer died between its claim of position 0 and its publication; a live one published position 1.
      Atomics.add(ctl, L.PRODUCER_POSITION_I32, 1);
      Atomics.store(slot0, L.SLOT_OWNER_I32, dead);
      assert.ok(producer.tryWrite(new Uint8Array([1])));
      assert.deepEqual([...(pollFor(() => consumer.tryRead()) ?? [])], [1], 'tryRead never got past the dead claim');
      assert.equal(consumer.recoveredSlots, 1);
      // drain, the same way: position 2 claimed by the dead producer, 3 published.
      Atomics.add(ctl, L.PRODUCER_POSITION_I32, 1);
      const slot2 = slot(2);
      Atomics.store(slot2, L.SLOT_OWNER_I32, dead);
      assert.ok(producer.tryWrite(new Uint8Array([3])));
      let drained: number[] = [];
      assert.ok(pollFor(() => consumer.drain((data, offset, length) => (drained = [...data.subarray(offset, offset + length)])) > 0));
      assert.deepEqual(drained, [3]);
      // A consumer died holding the message of position 4 (taken, never freed); the queue is full for position 8.
      for (let i = 4; i < 8; i++) assert.ok(producer.tryWrite(new Uint8Array([i])));
      assert.equal(producer.tryWrite(new Uint8Array([8])), false, 'full');
      Atomics.add(ctl, L.CONSUMER_POSITION_I32, 1); // position 4 taken ...
      Atomics.store(slot0, L.SLOT_OWNER_I32, dead); // ... by a consumer now dead
      assert.equal(
        pollFor(() => producer.tryWrite(new Uint8Array([8]))),
        true,
        'tryWrite never got the dead consumer’s slot back',
      );
      assert.equal(producer.recoveredSlots, 1);
      assert.deepEqual(
        [5, 6, 7, 8].map(() => [...consumer.tryRead()!][0]),
        [5, 6, 7, 8],
      );
    } finally {
      producer.close();
      consumer.close();
      region.close();
    }
  });
  it("a writer recovering a dead consumer's slot leaves it alone when, while it judged the mark, the slot was freed and claimed by a producer that died: that claim is still skipped", function () {
    const { region, first: producer, second: consumer, ctl, slot } = queue(4);
    const slot0 = slot(0);
    const dead = deadPid();
    const readFileSync = fs.readFileSync;
    let judged = 0;
    try {
      for (let i = 0; i < 4; i++) assert.ok(producer.tryWrite(new Uint8Array([i])));
      // A consumer took position 0 (its message still in slot 0), and the writer's first looks see that.
      // Publishes that consumer's claim of position 0, as its CAS would.
      Atomics.add(ctl, L.CONSUMER_POSITION_I32, 1);
      // Its OWNER load comes after a live consumer freed the slot for position 4 and producer `dead` claimed
      // position 4 and marked it: it reads that producer's mark, and judges it dead.
      // Publishes the dead producer's mark, as its store after its claim would.
      Atomics.store(slot0, L.SLOT_OWNER_I32, dead);
      fs.readFileSync = ((file: unknown, ...rest: unknown[]) => {
        if (file === `/proc/${dead}/stat` && judged++ === 0) {
          // What came between the writer's looks at SEQ and at OWNER: the free (SEQ = 4), the claim of 4.
          // Publishes the live consumer's free of the slot for position 4, as its store of SEQ would.
          Atomics.store(slot0, L.SLOT_SEQUENCE_I32, 4);
          // Publishes the dead producer's claim of position 4, as its CAS of the tail would.
          Atomics.add(ctl, L.PRODUCER_POSITION_I32, 1);
        }
        return (readFileSync as (...args: unknown[]) => unknown)(file, ...rest);
      }) as typeof fs.readFileSync;
      syncBuiltinESMExports();
      // A writer that only polls looks at a dead consumer's slot now and then (as a parked one's check does).
      const deadline = performance.now() + 2000;
      while (judged === 0 && performance.now() < deadline) {
        assert.equal(producer.tryWrite(new Uint8Array([9])), false, 'full: position 5 is slot 1, still holding message 1');
      }
      assert.ok(judged > 0, "the writer never judged the slot's mark");
      assert.equal(producer.recoveredSlots, 0, "the writer took the slot from the dead producer's claim");
      // Messages 1-3, then position 4: the dead producer's claim, skipped; then what a live producer writes next.
      assert.deepEqual(
        [1, 2, 3].map(() => [...consumer.readSync({ timeoutMs: 2000 })][0]),
        [1, 2, 3],
      );
      assert.ok(producer.tryWrite(new Uint8Array([5])));
      assert.deepEqual(
        [...consumer.readSync({ timeoutMs: 3000, peerTimeoutMs: 40 })],
        [5],
        'the dead claim of position 4 stalled the queue',
      );
      assert.equal(consumer.recoveredSlots, 1);
    } finally {
      fs.readFileSync = readFileSync;
      syncBuiltinESMExports();
      producer.close();
      consumer.close();
      region.close();
    }
  });
});
