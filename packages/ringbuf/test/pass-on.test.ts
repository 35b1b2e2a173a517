/**
 * A wait that takes nothing passes its wake-up on (docs/LAYOUT.md,
 * "Waiting"). An SpscRing's or MpscRing's publisher wakes one sleeper of
 * the block; besides the consumer's read() there may be a select() or a
 * waitReadable() parked there (of the same object, or of an observer in
 * another thread), and the wake-up may reach that one. It resolves
 * without taking the message, so it must wake the next sleeper, or the
 * read() stays parked beside the message until its timeout. The same
 * holds for the writing side (a select on room beside a parked write()).
 *
 * Every region here is a memfd: all its sleepers are the kernel's (over a
 * SharedArrayBuffer, V8's sleepers and the kernel's are woken apart).
 * The sleeper that takes nothing parks first, so the kernel (FIFO among
 * the waiters of a word) gives it the wake-up.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { asyncWaitKind, backendKind, nativeFutex, Region } from '@shmring/core';
import { MpscRing, SpscRing, select, type WaitOptions } from '../src/index.js';

/** A read that is not passed its wake-up waits out this timeout (and the test fails with ERR_SHMRING_TIMEOUT). */
const PARKED: WaitOptions = { poll: 0, timeoutMs: 3000 };

interface Ring {
  tryWrite(bytes: Uint8Array): boolean;
  read(options?: WaitOptions): Promise<Uint8Array>;
  waitReadable(options?: WaitOptions): Promise<void>;
  tryRead(): Uint8Array | null;
  close(): void;
}

const KINDS = [
  {
    name: 'SpscRing',
    open(): { region: Region; writer: Ring; reader: Ring } {
      const region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity: 1024 }) });
      return { region, writer: SpscRing.create(region, { capacity: 1024 }), reader: SpscRing.attach(region) };
    },
  },
  {
    name: 'MpscRing',
    open(): { region: Region; writer: Ring; reader: Ring } {
      const region = Region.create({ backing: 'memfd', size: MpscRing.regionSize({ capacity: 1024 }) });
      MpscRing.create(region, { capacity: 1024 });
      return { region, writer: MpscRing.attach(region), reader: MpscRing.attach(region) };
    },
  },
];

const WAITS = [
  { name: 'select()', park: (reader: Ring) => select([reader as SpscRing], PARKED).then(() => undefined) },
  { name: 'waitReadable()', park: (reader: Ring) => reader.waitReadable(PARKED) },
];

/** Parks a read() on `reader`, then writes [byte]: the read gets it well within a second (not at its timeout). */
async function readsAtOnce(writer: Ring, reader: Ring, byte: number): Promise<void> {
  const read = reader.read(PARKED);
  await sleep(20);
  const t0 = performance.now();
  writer.tryWrite(new Uint8Array([byte]));
  assert.deepEqual(await read, new Uint8Array([byte]));
  assert.ok(performance.now() - t0 < 1000, `the read took ${performance.now() - t0} ms`);
}

describe('a wait that takes nothing passes its wake-up on', function () {
  this.timeout(20_000);

  for (const kind of KINDS) {
    for (const wait of WAITS) {
      it(`${kind.name}: a read() parked after a ${wait.name} of the same object gets the message at once`, async function () {
        const { region, writer, reader } = kind.open();
        try {
          const first = wait.park(reader);
          await sleep(20);
          await readsAtOnce(writer, reader, 42);
          await first;
        } finally {
          writer.close();
          reader.close();
          region.close();
        }
      });
    }

    it(`${kind.name}: a read() aborted after a publisher woke it, before it heard, passes the wake-up on to a waitReadable() parked after it`, async function () {
      const { region, writer, reader } = kind.open();
      const other = Region.create({ backing: 'memfd', size: 4096 });
      try {
        const controller = new AbortController();
        // A raw native wait woken just before the ring's wake-up: where async waits use io_uring both complete
        // in one reap, and its reaction aborts the read between the read's wait settling and its reaction.
        const trigger = new Int32Array(other.buffer, 0, 1);
        void nativeFutex.waitAsync(other.buffer as ArrayBuffer, 0, 0, 5000).promise.then(() => controller.abort());
        const read = reader.read({ ...PARKED, signal: controller.signal }).then(
          (message) => message,
          (err: Error) => err,
        );
        await sleep(20);
        const stopReadable = new AbortController();
        const readable = reader.waitReadable({ ...PARKED, signal: stopReadable.signal }); // parks after the read
        await sleep(20);
        Atomics.store(trigger, 0, 1);
        nativeFutex.wake(other.buffer as ArrayBuffer, 0, 1);
        const t0 = performance.now();
        writer.tryWrite(new Uint8Array([9])); // wakes one sleeper: the read, parked first
        const outcome = await read;
        if (outcome instanceof Uint8Array) {
          // The read heard of its wake-up before the abort (waiter threads deliver one at a time): it has the message.
          assert.ok(
            backendKind() !== 'addon' || asyncWaitKind() !== 'io_uring',
            'io_uring delivers both in one reap: the abort came first',
          );
          assert.deepEqual(outcome, new Uint8Array([9]));
          stopReadable.abort();
          await readable.catch(() => undefined);
          return;
        }
        assert.equal(outcome.name, 'AbortError', String(outcome));
        await readable;
        assert.ok(performance.now() - t0 < 1000, `the waitReadable() took ${performance.now() - t0} ms`);
        assert.deepEqual(reader.tryRead(), new Uint8Array([9]), 'the message is still there for the next read');
      } finally {
        writer.close();
        reader.close();
        region.close();
        other.close();
      }
    });

    it(`${kind.name}: a read() parked beside an observer blocked in selectSync() in a worker gets the message at once`, async function () {
      const { region, writer, reader } = kind.open();
      const worker = new Worker(
        `const { workerData, parentPort } = require('node:worker_threads');
         Promise.all([import(workerData.ringbuf), import(workerData.core)]).then(([rb, { Region }]) => {
           const observer = rb[workerData.kind].attach(Region.fromFd(workerData.fd));
           parentPort.postMessage('parking');
           const index = rb.selectSync([observer], { timeoutMs: 5000 });
           parentPort.postMessage({ index });
         });`,
        {
          eval: true,
          workerData: {
            kind: kind.name,
            fd: region.fd,
            ringbuf: new URL('../src/index.js', import.meta.url).href,
            core: import.meta.resolve('@shmring/core'),
          },
        },
      );
      try {
        await once(worker, 'message'); // 'parking'
        await sleep(100); // it is asleep in the kernel by now
        await readsAtOnce(writer, reader, 7);
        assert.deepEqual((await once(worker, 'message'))[0], { index: 0 });
      } finally {
        await worker.terminate();
        writer.close();
        reader.close();
        region.close();
      }
    });
  }

  it('SpscRing: a write() parked on a full ring after a select() on room of the same object gets the room at once', async function () {
    const region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity: 64 }) });
    const writer = SpscRing.create(region, { capacity: 64 });
    const reader = SpscRing.attach(region);
    try {
      const message = new Uint8Array(24); // two fit in 64 bytes with their headers
      let written = 0;
      while (writer.tryWrite(message)) written++;
      const room = select([{ queue: writer, write: message.length }], PARKED);
      await sleep(20);
      const write = writer.write(new Uint8Array(24).fill(9), PARKED);
      await sleep(20);
      const t0 = performance.now();
      assert.notEqual(reader.tryRead(), null);
      await write;
      assert.ok(performance.now() - t0 < 1000, `the write took ${performance.now() - t0} ms`);
      for (let i = 1; i < written; i++) assert.notEqual(reader.tryRead(), null);
      assert.deepEqual(reader.tryRead(), new Uint8Array(24).fill(9));
      // Woken with the write, the select may have found the room taken by it and parked again: now there is room.
      assert.equal(await room, 0);
    } finally {
      writer.close();
      reader.close();
      region.close();
    }
  });

  // Writers that wait for different amounts of room: room wakes every one of them (a woken writer that finds
  // too little parks again, passing nothing on). Found by a reviewer of the pass-on change.
  for (const first of ['select', 'write'] as const) {
    it(`SpscRing: room enough for a parked ${first === 'select' ? 'write() reaches it though a select() for more room parked first' : 'select() reaches it though a write() of a larger message parked first'}`, async function () {
      const region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity: 256 }) });
      const writer = SpscRing.create(region, { capacity: 256 });
      const reader = SpscRing.attach(region);
      try {
        let written = 0;
        while (writer.tryWrite(new Uint8Array(24))) written++;
        // The one that needs more than one record's room parks first; the one that a single record's room serves, second.
        const big = first === 'select' ? select([{ queue: writer, write: 100 }], PARKED) : writer.write(new Uint8Array(100), PARKED);
        const bigSettled = big.then(
          () => 'room',
          (err: { code?: string }) => err.code,
        );
        await sleep(20);
        const small =
          first === 'select' ? writer.write(new Uint8Array(24).fill(9), PARKED) : select([{ queue: writer, write: 24 }], PARKED);
        await sleep(20);
        const t0 = performance.now();
        assert.notEqual(reader.tryRead(), null); // room for one 24-byte record, not for 100 bytes
        await small;
        assert.ok(performance.now() - t0 < 1000, `the ${first === 'select' ? 'write' : 'select'} took ${performance.now() - t0} ms`);
        if (first === 'write') assert.ok(writer.tryWrite(new Uint8Array(24).fill(9)));
        for (let i = 1; i < written; i++) assert.notEqual(reader.tryRead(), null);
        assert.deepEqual(reader.tryRead(), new Uint8Array(24).fill(9));
        assert.equal(await bigSettled, 'room'); // the ring is empty now: room for 100 bytes
      } finally {
        writer.close();
        reader.close();
        region.close();
      }
    });
  }
});
