/**
 * waitReadable(): the Promise wait that takes nothing, for a consumer that
 * then drains in place. On every kind with a reading side (SpscRing,
 * MpscRing, MpmcQueue, a Broadcast subscriber): it resolves at once when a
 * message is there and leaves it; parks and resolves when one is written
 * later (by this thread, a worker, and, over a memfd, another process);
 * resolves while messages written before a close remain, then rejects
 * with ERR_SHMRING_CLOSED; honours timeoutMs, signal and ref; and a
 * Broadcast publisher refuses it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { backendKind, Region } from '@shmring/core';
import { Broadcast, MpmcQueue, MpscRing, SpscRing, select, type WaitOptions } from '../src/index.js';

/** The verbs this file calls, which every kind's writing and reading objects have (each its own half of them). */
interface Reader {
  tryWrite(bytes: Uint8Array): boolean;
  tryRead(): Uint8Array | null;
  drain(handler: (data: Uint8Array, offset: number) => void): number;
  waitReadable(options?: WaitOptions): Promise<void>;
  close(): void;
}

interface Kind {
  name: string;
  size: number;
  /** The writing object and the reading one, over `region`. */
  open(region: Region): { writer: Reader; reader: Reader };
}

const KINDS: Kind[] = [
  {
    name: 'SpscRing',
    size: SpscRing.regionSize({ capacity: 1024 }),
    open(region) {
      return { writer: SpscRing.create(region, { capacity: 1024 }) as Reader, reader: SpscRing.attach(region) as Reader };
    },
  },
  {
    name: 'MpscRing',
    size: MpscRing.regionSize({ capacity: 1024 }),
    open(region) {
      MpscRing.create(region, { capacity: 1024 });
      return { writer: MpscRing.attach(region) as Reader, reader: MpscRing.attach(region) as Reader };
    },
  },
  {
    name: 'MpmcQueue',
    size: MpmcQueue.regionSize({ capacity: 8, slotSize: 64 }),
    open(region) {
      return { writer: MpmcQueue.create(region, { capacity: 8, slotSize: 64 }) as Reader, reader: MpmcQueue.attach(region) as Reader };
    },
  },
  {
    name: 'Broadcast',
    size: Broadcast.regionSize({ capacity: 1024, subscribers: 2 }),
    open(region) {
      const writer = Broadcast.create(region, { capacity: 1024, subscribers: 2 });
      return { writer: writer as unknown as Reader, reader: Broadcast.subscribe(region) as unknown as Reader };
    },
  },
];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** 'pending' if `promise` has not settled within `ms`, else how it settled. */
async function stateAfter(promise: Promise<unknown>, ms: number): Promise<string> {
  let state = 'pending';
  promise.then(
    () => (state = 'resolved'),
    (err: { code?: string }) => (state = `rejected ${err.code}`),
  );
  await sleep(ms);
  return state;
}

function message(byte: number): Uint8Array {
  return new Uint8Array([byte, byte, byte]);
}

describe('waitReadable(): wait for a message without taking it', function () {
  this.timeout(30_000);

  for (const kind of KINDS) {
    describe(kind.name, function () {
      let region: Region;
      let writer: Reader;
      let reader: Reader;

      beforeEach(function () {
        region = Region.create({ backing: 'sab', size: kind.size });
        ({ writer, reader } = kind.open(region));
      });

      afterEach(function () {
        region.close();
      });

      it('resolves at once when a message is there, and leaves it for tryRead', async function () {
        assert.ok(writer.tryWrite(message(1)));
        await reader.waitReadable();
        await reader.waitReadable(); // still there: nothing was taken
        assert.deepEqual(reader.tryRead(), message(1));
        assert.equal(reader.tryRead(), null);
      });

      it('parks while the ring is empty and resolves when a message is written, which drain then takes in place', async function () {
        const waiting = reader.waitReadable();
        assert.equal(await stateAfter(waiting, 30), 'pending');
        assert.ok(writer.tryWrite(message(2)));
        await waiting;
        const seen: number[] = [];
        assert.equal(
          reader.drain((data, offset) => seen.push(data[offset]!)),
          1,
        );
        assert.deepEqual(seen, [2]);
      });

      if (kind.name === 'MpscRing') {
        it("goes on waiting when a producer closes (it ends its own part only), and rejects with ERR_SHMRING_CLOSED when the reader's object closes", async function () {
          assert.ok(writer.tryWrite(message(3)));
          writer.close();
          await reader.waitReadable();
          assert.deepEqual(reader.tryRead(), message(3));
          const waiting = reader.waitReadable();
          assert.equal(await stateAfter(waiting, 50), 'pending');
          reader.close();
          await assert.rejects(waiting, { code: 'ERR_SHMRING_CLOSED' });
        });
      } else {
        it('resolves while messages written before the close remain, then rejects with ERR_SHMRING_CLOSED', async function () {
          assert.ok(writer.tryWrite(message(3)));
          const waitingBeforeClose = reader.waitReadable();
          writer.close();
          await waitingBeforeClose;
          await reader.waitReadable();
          assert.deepEqual(reader.tryRead(), message(3));
          await assert.rejects(reader.waitReadable(), { code: 'ERR_SHMRING_CLOSED' });
        });

        it('a pending wait on an empty ring rejects with ERR_SHMRING_CLOSED when the writer closes', async function () {
          const waiting = reader.waitReadable();
          assert.equal(await stateAfter(waiting, 20), 'pending');
          writer.close();
          await assert.rejects(waiting, { code: 'ERR_SHMRING_CLOSED' });
        });
      }

      it('times out with ERR_SHMRING_TIMEOUT and aborts with an AbortError, taking nothing', async function () {
        await assert.rejects(reader.waitReadable({ timeoutMs: 20 }), { code: 'ERR_SHMRING_TIMEOUT' });
        const controller = new AbortController();
        const waiting = reader.waitReadable({ signal: controller.signal });
        setTimeout(() => controller.abort(), 10);
        await assert.rejects(waiting, { name: 'AbortError' });
        assert.ok(writer.tryWrite(message(4)));
        assert.deepEqual(reader.tryRead(), message(4));
      });
    });
  }

  it('an SpscRing consumer holding what it took waits for the next message, and so does select()', async function () {
    const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: 1024 }) });
    const writer = SpscRing.create(region, { capacity: 1024 });
    const reader = SpscRing.attach(region);
    reader.holdReads();
    assert.ok(writer.tryWrite(message(5)));
    assert.equal(
      reader.drain(() => {}),
      1,
    );
    // The held record is still in the ring (its room not given back), but it is not the next one.
    await assert.rejects(reader.waitReadable({ timeoutMs: 30 }), { code: 'ERR_SHMRING_TIMEOUT' });
    await assert.rejects(select([reader], { timeoutMs: 30 }), { code: 'ERR_SHMRING_TIMEOUT' });
    const waiting = reader.waitReadable();
    assert.ok(writer.tryWrite(message(6)));
    await waiting;
    assert.deepEqual(reader.tryRead(), message(6));
    region.close();
  });

  for (const how of ['waitReadable', 'select'] as const) {
    for (const cause of ['an aborted claim', 'a shortened commit'] as const) {
      it(`MpscRing: padding at the head (${cause}) is taken by ${how}(), so a producer waiting for its room goes on`, async function () {
        const region = Region.create({ backing: 'memfd', size: MpscRing.regionSize({ capacity: 256 }) });
        const consumer = MpscRing.create(region, { capacity: 256 });
        const producer = MpscRing.attach(region);
        try {
          assert.ok(producer.tryWrite(new Uint8Array(8))); // 16 bytes
          if (cause === 'an aborted claim') {
            producer.abort(producer.claim(120)); // 128 bytes of padding
          } else {
            producer.commit(producer.claim(120), 0, 0); // an 8-byte record, then 120 bytes of padding
            assert.equal(consumer.tryRead()?.length, 8);
          }
          assert.equal(consumer.tryRead()?.length, cause === 'an aborted claim' ? 8 : 0);
          // Padding alone is left at the head, up to position 144. A record of 120 bytes (128) must wrap (112
          // bytes to the end): it needs the padding's room too.
          const writing = producer.write(new Uint8Array(120), { timeoutMs: 3000 });
          const taken: number[] = [];
          const waiting = async (): Promise<void> => {
            for (;;) {
              if (how === 'waitReadable') await consumer.waitReadable({ timeoutMs: 3000 });
              else await select([consumer], { timeoutMs: 3000 });
              if (consumer.drain((_d, _o, length) => taken.push(length)) > 0) return;
            }
          };
          await Promise.all([writing, waiting()]);
          assert.deepEqual(taken, [120]);
          assert.equal(consumer.size, 0);
        } finally {
          producer.close();
          consumer.close();
          region.close();
        }
      });
    }
  }

  it('a Broadcast publisher refuses it (it reads nothing)', async function () {
    const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity: 1024, subscribers: 1 }) });
    const pub = Broadcast.create(region, { capacity: 1024, subscribers: 1 });
    await assert.rejects(pub.waitReadable(), /publisher/);
    region.close();
  });

  it('wakes when a worker thread writes (SharedArrayBuffer)', async function () {
    const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: 1024 }) });
    const ring = SpscRing.create(region, { capacity: 1024 });
    const waiting = ring.waitReadable({ timeoutMs: 10_000 });
    const worker = new Worker(
      `const { workerData } = require('node:worker_threads');
       Promise.all([import(workerData.url), import(workerData.core)]).then(([{ SpscRing }, { Region }]) => {
         setTimeout(() => { SpscRing.attach(Region.fromSharedArrayBuffer(workerData.sab)).tryWrite(new Uint8Array([7])); }, 50);
       });`,
      {
        eval: true,
        workerData: {
          url: new URL('../src/index.js', import.meta.url).href,
          sab: region.buffer,
          core: import.meta.resolve('@shmring/core'),
        },
      },
    );
    await waiting;
    assert.deepEqual(ring.tryRead(), new Uint8Array([7]));
    await new Promise((r) => worker.once('exit', r));
    region.close();
  });

  it('wakes when another process writes (memfd, the native futex)', function () {
    if (backendKind() !== 'addon') {
      console.log('      (koffi backend: its async waits hold a pool thread; the same path, checked here too)');
    }
    const core = JSON.stringify(import.meta.resolve('@shmring/core'));
    const ringbuf = JSON.stringify(new URL('../src/index.js', import.meta.url).href);
    // The child makes the ring, parks in waitReadable, and its own child process writes after 100 ms.
    const child = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { spawn } from 'node:child_process';
         import { Region } from ${core};
         import { SpscRing } from ${ringbuf};
         const region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity: 1024 }) });
         const ring = SpscRing.create(region, { capacity: 1024 });
         const writer = spawn(process.execPath, ['--input-type=module', '-e',
           "import { Region } from " + ${JSON.stringify(core)} + "; import { SpscRing } from " + ${JSON.stringify(ringbuf)} + ";" +
           "setTimeout(() => { SpscRing.attach(Region.fromFd(3)).tryWrite(new Uint8Array([9])); }, 100);"],
           { stdio: ['ignore', 'inherit', 'inherit', region.fd] });
         await ring.waitReadable({ timeoutMs: 10_000 });
         console.log('readable', ring.tryRead()[0]);
         writer.on('exit', () => region.close());`,
      ],
      { encoding: 'utf8', timeout: 20_000 },
    );
    assert.equal(child.status, 0, child.stderr);
    assert.equal(child.stdout.trim(), 'readable 9');
  });
});
