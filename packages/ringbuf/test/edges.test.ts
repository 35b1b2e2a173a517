/**
 * The edges a new user hits: a region closed under a pending wait, a drain()
 * given something that is not a function, close() on an object that is both
 * producer and consumer, argument errors of every verb (their class, code and
 * name, before anything is taken or written), and what docs/LAYOUT.md says an
 * attach and a MpmcQueue consumer refuse.
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
  while (queue.tryWrite(new Uint8Array(4))) {
    /* until full */
  }
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
    {
      verb: 'write() on a full ring',
      start: (q) => {
        fill(q);
        return q.write(new Uint8Array(4), { poll: 0 });
      },
    },
    { verb: 'messages().next()', start: (q) => q.messages({ poll: 0 }).next() },
    {
      verb: 'for await',
      start: async (q) => {
        for await (const _ of q) throw new Error('a message came from an empty ring');
      },
    },
  ];

  for (const backing of ['memfd', 'posix', 'file', 'sysv'] as const) {
    for (const kind of KINDS) {
      for (const { verb, start } of PENDING) {
        it(`rejects a pending ${verb} of a ${kind.name} with ERR_SHMRING_CLOSED when its ${backing} region is closed`, async function () {
          if (backing === 'memfd' && memfdUnavailable() !== undefined) this.skip();
          const tag = `shmring-edges-${process.pid}-${Math.random().toString(36).slice(2)}`;
          const region = Region.create(
            backing === 'memfd' || backing === 'sysv'
              ? { backing, size: kind.size }
              : backing === 'posix'
                ? { backing, size: kind.size, name: tag }
                : { backing, size: kind.size, path: `/dev/shm/${tag}` },
          );
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
      assert.deepEqual([...((await pending).value as Uint8Array)], [42]);
      // close() of the ring is what ends its waits there.
      const next = outcome(queue.read({ poll: 0 }));
      await sleep(30);
      writer.close();
      assert.equal((await next).code, ErrorCodes.CLOSED);
    });
  }
});

describe('edges: drain() with something that is not a function', function () {
  for (const kind of KINDS) {
    it(`throws a TypeError (ERR_SHMRING_INVALID_ARGUMENT) before it takes anything from a ${kind.name}; the message is still readable`, function () {
      const region = Region.create({ backing: 'sab', size: kind.size });
      const queue = kind.create(region);
      assert.ok(queue.tryWrite(new Uint8Array([1, 2, 3]), 7));
      for (const handler of [undefined, null, 'handler', {}, 5]) {
        assert.throws(
          () => queue.drain(handler as never),
          { name: 'TypeError', code: ErrorCodes.INVALID_ARGUMENT, message: /handler=/ },
          String(handler),
        );
      }
      for (const [limit, name] of [
        [-1, 'RangeError'],
        [1.5, 'TypeError'],
        ['2', 'TypeError'],
        [NaN, 'TypeError'],
      ] as const) {
        assert.throws(
          () => queue.drain(() => {}, limit as number),
          { name, code: ErrorCodes.INVALID_ARGUMENT, message: /limit=/ },
          String(limit),
        );
      }
      assert.equal(queue.size, kind.name === 'SpscRing' ? L.recordSize(3) : 1);
      assert.deepEqual([...queue.tryRead()!], [1, 2, 3]);
      assert.equal(queue.lastType, 7);
      assert.equal(
        queue.drain(() => {}, 0),
        0,
      );
    });

    it(`keeps what a ${kind.name} drain() handed out consumed when its handler closes the queue; the ring goes on for the next object`, function () {
      const region = Region.create({ backing: 'sab', size: kind.size });
      const queue = kind.create(region);
      const producer = kind.attach(region);
      for (let i = 0; i < 3; i++) assert.ok(producer.tryWrite(new Uint8Array([i])));
      const seen: number[] = [];
      const n = queue.drain((data, offset) => {
        seen.push(data[offset]!);
        if (seen.length === 2) queue.close();
      });
      assert.deepEqual([n, seen], [2, [0, 1]]);
      const next = kind.attach(region);
      assert.deepEqual([...next.tryRead()!], [2]);
      assert.equal(next.tryRead(), null);
      // Every slot (every byte) is free again: the producer can fill the whole ring once more.
      if (kind.name === 'MpmcQueue') {
        // A closed MpmcQueue takes no message: each write wins a free slot, gives it up as a skip and throws;
        // all `capacity` slots were free (each write took one: none is left), and the full queue throws too.
        const capacity = (producer as MpmcQueue).capacity;
        for (let i = 0; i <= capacity; i++) {
          assert.throws(() => producer.tryWrite(new Uint8Array([i])), { code: ErrorCodes.CLOSED });
          assert.equal(producer.size, Math.min(i + 1, capacity));
        }
        return;
      }
      let written = 0;
      while (producer.tryWrite(new Uint8Array([written]))) written++;
      // (An SpscRing's producer always leaves RECORD_RESERVE bytes free: one record fewer.)
      assert.equal(written, (producer as SpscRing).capacity / L.recordSize(1) - 1);
    });
  }
});

describe('edges: close() by an object that is both producer and consumer', function () {
  for (const kind of KINDS) {
    it(`leaves what a ${kind.name} published and did not read to another object attached to the ring, which then sees the end`, async function () {
      const region = Region.create({ backing: 'sab', size: kind.size });
      const queue = kind.create(region);
      for (const b of [1, 2, 3]) assert.ok(queue.tryWrite(new Uint8Array([b])));
      assert.deepEqual([...queue.tryRead()!], [1]);
      queue.close();
      // Its own verbs end at once: close() is this object's end, reads included (docs: close()).
      assert.throws(() => queue.tryRead(), { code: ErrorCodes.CLOSED });
      await assert.rejects(queue.read(), { code: ErrorCodes.CLOSED });
      const reader = kind.attach(region);
      const rest: number[] = [];
      for await (const m of reader) rest.push(...m);
      assert.deepEqual(rest, [2, 3]);
      assert.throws(() => reader.readSync(), { code: ErrorCodes.CLOSED });
    });
  }

  it('publishes what a corked SpscRing held before it closes, for the next reader', () => {
    const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: 256 }) });
    const ring = SpscRing.create(region, { capacity: 256 });
    ring.cork();
    for (const b of [4, 5]) assert.ok(ring.tryWrite(new Uint8Array([b])));
    assert.equal(ring.tryRead(), null, 'corked: nothing is published yet');
    ring.close();
    const reader = SpscRing.attach(region);
    assert.deepEqual([[...reader.tryRead()!], [...reader.tryRead()!]], [[4], [5]]);
    assert.throws(() => reader.readSync(), { code: ErrorCodes.CLOSED });
  });
});

describe('edges: a write waiting for room when the consumer closes', function () {
  for (const kind of KINDS) {
    it(`fails with ERR_SHMRING_CLOSED on a ${kind.name}, though the consumer freed room just before its close()`, async function () {
      const region = Region.create({ backing: 'sab', size: kind.size });
      const producer = kind.create(region);
      const consumer = kind.attach(region);
      fill(producer);
      const write = outcome(producer.write(new Uint8Array([9]), { poll: 0 }));
      await sleep(20); // parked on the full ring
      assert.ok(consumer.tryRead() !== null); // room, and a wake-up for the parked write
      consumer.close();
      const { code, value } = await write;
      assert.equal(
        code,
        ErrorCodes.CLOSED,
        `the write ${code === undefined ? `succeeded (${String(value)})` : `failed with ${code}`} after the close`,
      );
      producer.close();
    });
  }
});

describe('edges: argument errors have the class and code docs/ERRORS.md gives them', function () {
  /** A bad option value, the class it gets, and the name its message must show. */
  const BAD_OPTIONS: { options: unknown; error: 'TypeError' | 'RangeError'; names: RegExp }[] = [
    { options: 5, error: 'TypeError', names: /options=5/ },
    { options: null, error: 'TypeError', names: /options=null/ },
    { options: { timeoutMs: '5' }, error: 'TypeError', names: /timeoutMs="5"/ },
    { options: { timeoutMs: NaN }, error: 'RangeError', names: /timeoutMs=NaN/ },
    { options: { timeoutMs: -1 }, error: 'RangeError', names: /timeoutMs=-1/ },
    { options: { peerTimeoutMs: NaN }, error: 'RangeError', names: /peerTimeoutMs=NaN/ },
    { options: { peerTimeoutMs: -1 }, error: 'RangeError', names: /peerTimeoutMs=-1/ },
    { options: { peerTimeoutMs: '5' }, error: 'TypeError', names: /peerTimeoutMs="5"/ },
    { options: { spin: 'fast' }, error: 'TypeError', names: /spin="fast"/ },
    { options: { spin: -1 }, error: 'RangeError', names: /spin=-1/ },
    { options: { spin: NaN }, error: 'RangeError', names: /spin=NaN/ },
    { options: { spin: Infinity }, error: 'RangeError', names: /spin=Infinity/ },
    { options: { poll: '50' }, error: 'TypeError', names: /poll="50"/ },
    { options: { poll: -5 }, error: 'RangeError', names: /poll=-5/ },
    { options: { poll: NaN }, error: 'RangeError', names: /poll=NaN/ },
    { options: { signal: {} }, error: 'TypeError', names: /signal=/ },
    { options: { signal: 'abort' }, error: 'TypeError', names: /signal="abort"/ },
    { options: { signal: null }, error: 'TypeError', names: /signal=null/ },
    { options: { ref: 'no' }, error: 'TypeError', names: /ref="no"/ },
    { options: { ref: 0 }, error: 'TypeError', names: /ref=0/ },
  ];
  const BAD_TYPES: { type: unknown; error: 'TypeError' | 'RangeError' }[] = [
    { type: 1.5, error: 'TypeError' },
    { type: '1', error: 'TypeError' },
    { type: -1, error: 'RangeError' },
    { type: 2 ** 31, error: 'RangeError' },
  ];

  /** Each verb that takes wait options, run on a ring that holds one message (reads) or has room (writes). */
  const VERBS: { verb: string; reads: boolean; sync: boolean; call(q: AnyQueue, options: unknown): unknown }[] = [
    { verb: 'readSync', reads: true, sync: true, call: (q, o) => q.readSync(o as never) },
    { verb: 'read', reads: true, sync: false, call: (q, o) => q.read(o as never) },
    { verb: 'messages', reads: true, sync: false, call: (q, o) => q.messages(o as never).next() },
    { verb: 'waitReadable', reads: true, sync: false, call: (q, o) => q.waitReadable(o as never) },
    { verb: 'writeSync', reads: false, sync: true, call: (q, o) => q.writeSync(new Uint8Array(1), o as never) },
    { verb: 'write', reads: false, sync: false, call: (q, o) => q.write(new Uint8Array(1), o as never) },
  ];

  /** A Sync verb takes no poll or ref (the Promise verbs' options): whatever their value, they are unknown options to it. */
  const promiseOnly = (bad: (typeof BAD_OPTIONS)[number]): (typeof BAD_OPTIONS)[number] => {
    const name = typeof bad.options === 'object' && bad.options !== null ? Object.keys(bad.options)[0] : undefined;
    return name === 'poll' || name === 'ref'
      ? { options: bad.options, error: 'TypeError', names: new RegExp(`unknown option "${name}"`) }
      : bad;
  };

  /** Runs `call`, sync or async, and returns what it threw (or undefined). */
  async function thrown(call: () => unknown): Promise<(Error & { code?: string }) | undefined> {
    try {
      await call();
    } catch (err) {
      return err as Error & { code?: string };
    }
    return undefined;
  }

  for (const kind of KINDS) {
    for (const { verb, reads, sync, call } of VERBS) {
      const options = sync ? BAD_OPTIONS.map(promiseOnly) : BAD_OPTIONS;
      const cases = reads ? options : [...options, ...BAD_TYPES.map(({ type, error }) => ({ options: { type }, error, names: /type=/ }))];
      it(`${kind.name}.${verb} refuses ${cases.length} bad options, each before it reads or writes anything, though a message (or room) is there`, async function () {
        const region = Region.create({ backing: 'sab', size: kind.size });
        const queue = kind.create(region);
        assert.ok(queue.tryWrite(new Uint8Array([9])));
        for (const { options, error, names } of cases) {
          const err = await thrown(() => call(queue, options));
          const label = `${kind.name}.${verb}(${JSON.stringify(options, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v))})`;
          assert.ok(err !== undefined, `${label} did not throw`);
          assert.equal(err.name, error, `${label}: ${err.stack}`);
          assert.equal(err.code, ErrorCodes.INVALID_ARGUMENT, label);
          assert.match(err.message, names, label);
          assert.match(err.message, new RegExp(`${kind.name}\\.${verb}|type=`), label);
          assert.equal(queue.size, kind.name === 'SpscRing' ? L.recordSize(1) : 1, `${label} changed the ring`);
        }
        queue.close();
      });
    }
  }

  /** The other verbs and their bad arguments: [what, call, class, code]. */
  it('refuses bad sizes, offsets, lengths, claims and messages with the class and code docs/ERRORS.md gives', function () {
    const sab = (size: number): Region => Region.create({ backing: 'sab', size });
    const ring = SpscRing.create(sab(SpscRing.regionSize({ capacity: 256 })), { capacity: 256 });
    const queue = MpmcQueue.create(sab(MpmcQueue.regionSize({ capacity: 4, slotSize: 8 })), { capacity: 4, slotSize: 8 });
    const INVALID = ErrorCodes.INVALID_ARGUMENT;
    const table: [string, () => unknown, 'TypeError' | 'RangeError' | 'ShmringError', string, RegExp][] = [
      ['SpscRing capacity 100', () => SpscRing.regionSize({ capacity: 100 }), 'RangeError', INVALID, /capacity=100/],
      ['SpscRing capacity 1.5', () => SpscRing.regionSize({ capacity: 1.5 }), 'TypeError', INVALID, /capacity/],
      ['SpscRing capacity "64"', () => SpscRing.regionSize({ capacity: '64' as never }), 'TypeError', INVALID, /capacity/],
      ['SpscRing capacity 2^31', () => SpscRing.regionSize({ capacity: 2 ** 31 }), 'RangeError', INVALID, /capacity=/],
      ['MpmcQueue capacity 3', () => MpmcQueue.regionSize({ capacity: 3, slotSize: 8 }), 'RangeError', INVALID, /capacity=3/],
      ['MpmcQueue slotSize -1', () => MpmcQueue.regionSize({ capacity: 4, slotSize: -1 }), 'RangeError', INVALID, /slotSize/],
      ['MpmcQueue slotSize 0.5', () => MpmcQueue.regionSize({ capacity: 4, slotSize: 0.5 }), 'TypeError', INVALID, /slotSize/],
      [
        'MpmcQueue beyond MAX_SAFE_INTEGER',
        () => MpmcQueue.regionSize({ capacity: 2 ** 30, slotSize: 2 ** 24 }),
        'RangeError',
        INVALID,
        /MAX_SAFE_INTEGER/,
      ],
      [
        'offset 10',
        () => SpscRing.regionSize({ capacity: 64 }) && SpscRing.create(sab(4096), { capacity: 64, offset: 10 }),
        'RangeError',
        INVALID,
        /offset=10/,
      ],
      ['offset -64', () => SpscRing.create(sab(4096), { capacity: 64, offset: -64 }), 'RangeError', INVALID, /offset=-64/],
      ['offset "64"', () => SpscRing.create(sab(4096), { capacity: 64, offset: '64' as never }), 'TypeError', INVALID, /offset="64"/],
      ['attach offset 1.5', () => SpscRing.attach(sab(4096), { offset: 1.5 }), 'TypeError', INVALID, /offset=1.5/],
      ['create on a non-region', () => SpscRing.create({} as never, { capacity: 64 }), 'TypeError', INVALID, /Region/],
      ['claim(-1)', () => ring.claim(-1), 'RangeError', INVALID, /length=-1/],
      ['claim(1.5)', () => ring.claim(1.5), 'TypeError', INVALID, /length=1.5/],
      ['claim("4")', () => ring.claim('4' as never), 'TypeError', INVALID, /length="4"/],
      ['claim(too large)', () => ring.claim(ring.maxMessageLength + 1), 'RangeError', ErrorCodes.MESSAGE_TOO_LARGE, /length=/],
      ['commit(8) with no claim open', () => ring.commit(8), 'RangeError', INVALID, /offset=8/],
      ['commit("8")', () => ring.commit('8' as never), 'TypeError', INVALID, /offset="8"/],
      ['abort(8) with no claim open', () => ring.abort(8), 'RangeError', INVALID, /offset=8/],
      ['SpscRing.tryWrite("text")', () => ring.tryWrite('text' as never), 'TypeError', INVALID, /Uint8Array/],
      ['SpscRing.tryWrite(type 1.5)', () => ring.tryWrite(new Uint8Array(1), 1.5), 'TypeError', INVALID, /type=1.5/],
      ['SpscRing.tryWrite(type -1)', () => ring.tryWrite(new Uint8Array(1), -1), 'RangeError', INVALID, /type=-1/],
      ['MpmcQueue.tryWrite([1,2])', () => queue.tryWrite([1, 2] as never), 'TypeError', INVALID, /Uint8Array/],
      ['MpmcQueue.tryWrite(type "2")', () => queue.tryWrite(new Uint8Array(1), '2' as never), 'TypeError', INVALID, /type="2"/],
      ['MpmcQueue.tryWrite(too large)', () => queue.tryWrite(new Uint8Array(9)), 'RangeError', ErrorCodes.MESSAGE_TOO_LARGE, /slotSize=8/],
    ];
    for (const [what, call, name, code, message] of table) {
      assert.throws(
        call,
        (err: Error & { code?: string }) => {
          assert.equal(err.name, name, `${what}: ${err.stack}`);
          assert.equal(err.code, code, what);
          assert.match(err.message, message, what);
          return true;
        },
        what,
      );
    }
    // A write while a claim is open is a call in the wrong state, not a bad value: a plain Error, same code.
    const offset = ring.claim(4);
    assert.throws(() => ring.tryWrite(new Uint8Array(1)), { name: 'ShmringError', code: INVALID, message: /claim is open/ });
    ring.abort(offset);
    assert.equal(ring.tryRead(), null);
    assert.equal(queue.tryRead(), null);
  });
});

describe('edges: what docs/LAYOUT.md says attach and a MpmcQueue consumer refuse', function () {
  it('refuses a region under 640 bytes as ERR_SHMRING_NOT_A_RING', () => {
    for (const kind of KINDS) {
      assert.throws(
        () => kind.attach(Region.create({ backing: 'sab', size: L.DATA_OFFSET - 1 })),
        { code: ErrorCodes.NOT_A_RING },
        kind.name,
      );
    }
  });

  it('refuses a KIND it does not know as ERR_SHMRING_WRONG_KIND', () => {
    for (const kind of KINDS) {
      const region = Region.create({ backing: 'sab', size: kind.size });
      kind.create(region);
      new Int32Array(region.buffer)[L.KIND_I32] = 7;
      assert.throws(() => kind.attach(region), { code: ErrorCodes.WRONG_KIND, message: /unknown kind 7/ }, kind.name);
    }
  });

  it('a MpmcQueue consumer refuses a negative TYPE as ERR_SHMRING_CORRUPT, frees the slot and goes on', () => {
    const region = Region.create({ backing: 'sab', size: MpmcQueue.regionSize({ capacity: 4, slotSize: 8 }) });
    const queue = MpmcQueue.create(region, { capacity: 4, slotSize: 8 });
    const stride32 = L.slotStride(8) / 4;
    const slots = new Int32Array(region.buffer, L.DATA_OFFSET, 4 * stride32);
    for (const b of [1, 2, 3]) assert.ok(queue.tryWrite(new Uint8Array([b]), b));
    slots[0 * stride32 + L.SLOT_TYPE_I32] = -5;
    slots[1 * stride32 + L.SLOT_TYPE_I32] = L.PADDING_TYPE;
    assert.throws(() => queue.tryRead(), { code: ErrorCodes.CORRUPT, message: /type -5/ });
    assert.throws(() => queue.drain(() => assert.fail('drain handed out a negative type')), {
      code: ErrorCodes.CORRUPT,
      message: /type -1/,
    });
    assert.deepEqual([...queue.tryRead()!], [3]);
    assert.equal(queue.lastType, 3);
    // Both corrupt slots were freed: the queue takes a full capacity again.
    let written = 0;
    while (queue.tryWrite(new Uint8Array(1))) written++;
    assert.equal(written, 4);
  });
});
