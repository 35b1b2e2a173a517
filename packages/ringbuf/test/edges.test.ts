/**
 * The edges a new user hits: a region closed under a pending wait.
 */
import { strict as assert } from 'node:assert';
import { ErrorCodes, Region } from '@shmring/core';
import { MpmcQueue, SpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import { memfdUnavailable } from './helpers.js';

type AnyQueue = SpscRing | MpmcQueue;

interface Kind {
  name: string;
  size: number;
  create(region: Region): AnyQueue;
  attach(region: Region): AnyQueue;
}

const KINDS: Kind[] = [
  {
    name: 'SpscRing',
    size: SpscRing.regionSize({ capacity: 256 }),
    create: (region) => SpscRing.create(region, { capacity: 256 }),
    attach: (region) => SpscRing.attach(region),
  },
  {
    name: 'MpmcQueue',
    size: MpmcQueue.regionSize({ capacity: 4, slotSize: 16 }),
    create: (region) => MpmcQueue.create(region, { capacity: 4, slotSize: 16 }),
    attach: (region) => MpmcQueue.attach(region),
  },
];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function fill(queue: AnyQueue): void {
  while (queue.tryWrite(new Uint8Array(4))) { /* until full */ }
}

/** How a promise ends: its value, or the error's name, code and message. */
function outcome<T>(promise: Promise<T>): Promise<{ value?: T; name?: string; code?: string; message?: string }> {
  return promise.then(
    (value) => ({ value }),
    (err: Error & { code?: string }) => ({ name: err.name, code: err.code, message: err.message }),
  );
}

describe('edges: a region closed under a pending wait', function () {
  this.timeout(20_000);

  /** The Promise verbs that can be pending on a ring; each gets a ring in the state it waits on. */
  const PENDING: { verb: string; start(queue: AnyQueue): Promise<unknown> }[] = [
    { verb: 'read()', start: (q) => q.read({ poll: 0 }) },
    { verb: 'read() while it polls', start: (q) => q.read({ poll: 10_000_000 }) },
    { verb: 'write() on a full ring', start: (q) => (fill(q), q.write(new Uint8Array(4), { poll: 0 })) },
    { verb: 'messages().next()', start: (q) => q.messages({ poll: 0 }).next() },
    {
      verb: 'for await',
      start: async (q) => {
        for await (const _ of q) throw new Error('a message came from an empty ring');
      },
    },
  ];

  for (const backing of ['memfd', 'posix', 'file'] as const) {
    for (const kind of KINDS) {
      for (const { verb, start } of PENDING) {
        it(`rejects a pending ${verb} of a ${kind.name} with ERR_SHMRING_CLOSED when its ${backing} region is closed`, async function () {
          if (backing === 'memfd' && memfdUnavailable() !== undefined) this.skip();
          const tag = `shmring-edges-${process.pid}-${Math.random().toString(36).slice(2)}`;
          const region = Region.create(backing === 'memfd' ? { backing, size: kind.size }
            : backing === 'posix' ? { backing, size: kind.size, name: tag } : { backing, size: kind.size, path: `/dev/shm/${tag}` });
          region.unlink();
          const queue = kind.create(region);
          const pending = outcome(start(queue));
          await sleep(30);
          region.close();
          const ended = await pending;
          assert.deepEqual([ended.name, ended.code], ['ShmringError', ErrorCodes.CLOSED], JSON.stringify(ended));
          // And every later call says the same.
          assert.throws(() => queue.tryRead(), { code: ErrorCodes.CLOSED });
          await assert.rejects(queue.read(), { code: ErrorCodes.CLOSED });
          queue.close();
        });
      }
    }
  }

  for (const kind of KINDS) {
    it(`leaves a ${kind.name} over a 'sab' region working when the region is closed (its memory lives while a view does); attach then throws ERR_SHMRING_CLOSED`, async function () {
      const region = Region.create({ backing: 'sab', size: kind.size });
      const queue = kind.create(region);
      const writer = kind.attach(region);
      const pending = outcome(queue.read({ poll: 0 }));
      await sleep(30);
      region.close();
      assert.throws(() => kind.attach(region), { code: ErrorCodes.CLOSED });
      assert.ok(writer.tryWrite(new Uint8Array([42])));
      assert.deepEqual([...(await pending).value as Uint8Array], [42]);
      // close() of the ring is what ends its waits there.
      const next = outcome(queue.read({ poll: 0 }));
      await sleep(30);
      writer.close();
      assert.equal((await next).code, ErrorCodes.CLOSED);
    });
  }
});
