/**
 * One test per row of docs/ERRORS.md that concerns the rings: each wrong use
 * gets its typed error and loses nothing already in the ring.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { Broadcast, LatestValue, MpmcQueue, MpscRing, SpscRing, select, selectSync, setDefaultPoll } from '../src/index.js';
import * as L from '../src/layout.js';
import { startWorker } from './fixtures/waiting-peer.js';

function sab(size: number): Region {
  return Region.create({ backing: 'sab', size });
}

function spsc(capacity = 256): { region: Region; ring: SpscRing } {
  const region = sab(SpscRing.regionSize({ capacity }));
  return { region, ring: SpscRing.create(region, { capacity }) };
}

describe('ring errors (docs/ERRORS.md)', () => {
  it('rejects a capacity that is not a power of two, too small or too large', () => {
    for (const capacity of [0, 100, 32, 2 ** 31, -64]) {
      assert.throws(
        () => SpscRing.regionSize({ capacity }),
        { code: 'ERR_SHMRING_INVALID_ARGUMENT', name: 'RangeError' },
        String(capacity),
      );
    }
    for (const capacity of [1, 3, 2 ** 31]) {
      assert.throws(() => MpmcQueue.regionSize({ capacity, slotSize: 8 }), { code: 'ERR_SHMRING_INVALID_ARGUMENT' }, String(capacity));
    }
    assert.throws(() => SpscRing.create(sab(4096), { capacity: 1.5 }), { code: 'ERR_SHMRING_INVALID_ARGUMENT', name: 'TypeError' });
  });

  it('rejects a slot size outside [0, 2^24]', () => {
    for (const slotSize of [-1, 2 ** 24 + 1, 0.5]) {
      assert.throws(() => MpmcQueue.regionSize({ capacity: 4, slotSize }), { code: 'ERR_SHMRING_INVALID_ARGUMENT' }, String(slotSize));
    }
  });

  it('rejects a message larger than the ring allows and keeps what the ring holds', () => {
    const { ring } = spsc(256);
    assert.ok(ring.tryWrite(new Uint8Array([1, 2, 3])));
    assert.throws(() => ring.tryWrite(new Uint8Array(ring.maxMessageLength + 1)), {
      code: 'ERR_SHMRING_MESSAGE_TOO_LARGE',
      name: 'RangeError',
    });
    assert.throws(() => ring.claim(ring.maxMessageLength + 1), { code: 'ERR_SHMRING_MESSAGE_TOO_LARGE' });
    assert.deepEqual([...ring.tryRead()!], [1, 2, 3]);
    assert.equal(ring.tryRead(), null);

    const region = sab(MpmcQueue.regionSize({ capacity: 4, slotSize: 8 }));
    const queue = MpmcQueue.create(region, { capacity: 4, slotSize: 8 });
    assert.ok(queue.tryWrite(new Uint8Array(8)));
    assert.throws(() => queue.tryWrite(new Uint8Array(9)), { code: 'ERR_SHMRING_MESSAGE_TOO_LARGE' });
    assert.equal(queue.tryRead()!.length, 8);
  });

  it('rejects a message that is not bytes, naming the verb that was called', async () => {
    const { region, ring } = spsc();
    try {
      assert.throws(() => ring.writeSync('x' as never), {
        code: 'ERR_SHMRING_INVALID_ARGUMENT',
        name: 'TypeError',
        message: /SpscRing\.writeSync/,
      });
      await assert.rejects(ring.write('x' as never), {
        code: 'ERR_SHMRING_INVALID_ARGUMENT',
        name: 'TypeError',
        message: /SpscRing\.write needs/,
      });
      assert.throws(() => ring.tryWrite('x' as never), { code: 'ERR_SHMRING_INVALID_ARGUMENT', message: /SpscRing\.tryWrite/ });
      assert.equal(ring.size, 0);
    } finally {
      region.close();
    }
  });

  it('rejects a message type outside [0, 2^31 - 1]', () => {
    const { ring } = spsc();
    for (const type of [-1, 2 ** 31, 1.5]) {
      assert.throws(() => ring.tryWrite(new Uint8Array(1), type), { code: 'ERR_SHMRING_INVALID_ARGUMENT' }, String(type));
    }
    assert.equal(ring.tryRead(), null);
  });

  it("rejects a BigInt or Symbol message type, or a BigInt readPosition, with the library's own error, not V8's", async () => {
    const { ring } = spsc();
    const typed = { code: 'ERR_SHMRING_INVALID_ARGUMENT', name: 'TypeError' };
    for (const type of [1n, Symbol('type')] as unknown as number[]) {
      assert.throws(() => ring.tryWrite(new Uint8Array(1), type), typed, 'tryWrite');
      assert.throws(() => ring.writeSync(new Uint8Array(1), { type }), typed, 'writeSync');
      await assert.rejects(ring.write(new Uint8Array(1), { type }), typed, 'write');
      const claimed = ring.claim(1);
      assert.throws(() => ring.commit(claimed, type), typed, 'commit');
      ring.abort(claimed);
    }
    assert.equal(ring.size, 0, 'nothing was written');
    assert.throws(() => ring.releaseReads(8n as unknown as number), { ...typed, message: /SpscRing\.releaseReads: position=8n/ });
  });

  it('names the verb and its class in the error of a bad message type, whichever verb was given it', async () => {
    const { ring } = spsc();
    const queue = MpmcQueue.create(sab(MpmcQueue.regionSize({ capacity: 4, slotSize: 8 })), { capacity: 4, slotSize: 8 });
    const bregion = sab(Broadcast.regionSize({ capacity: 256 }));
    const pub = Broadcast.create(bregion, { capacity: 256 });
    const latest = LatestValue.create(sab(LatestValue.regionSize({ maxSize: 8 })), { maxSize: 8 });
    const one = new Uint8Array(1);
    const named = (verb: string) => ({
      code: 'ERR_SHMRING_INVALID_ARGUMENT',
      message: new RegExp(`^${verb.replace('.', '\\.')}: type=-1 `),
    });
    assert.throws(() => ring.tryWrite(one, -1), named('SpscRing.tryWrite'));
    const claimed = ring.claim(1);
    assert.throws(() => ring.commit(claimed, -1), named('SpscRing.commit'));
    ring.abort(claimed);
    assert.throws(() => ring.writeSync(one, { type: -1 }), named('SpscRing.writeSync'));
    await assert.rejects(ring.write(one, { type: -1 }), named('SpscRing.write'));
    assert.throws(() => queue.tryWrite(one, -1), named('MpmcQueue.tryWrite'));
    const mpsc = MpscRing.create(sab(MpscRing.regionSize({ capacity: 256 })), { capacity: 256 });
    assert.throws(() => mpsc.tryWrite(one, -1), named('MpscRing.tryWrite'));
    const at = mpsc.claim(1);
    assert.throws(() => mpsc.commit(at, -1), named('MpscRing.commit'));
    mpsc.abort(at);
    assert.throws(() => pub.tryWrite(one, -1), named('Broadcast.tryWrite'));
    assert.throws(() => latest.publish(one, -1), named('LatestValue.publish'));
    assert.equal(ring.size + queue.size + pub.published + latest.read().version, 0, 'nothing was written');
  });

  it("names the verb in the error of a Broadcast's subscribers or a LatestValue's maxSize, and says a MpmcQueue's capacity counts slots", () => {
    assert.throws(() => Broadcast.regionSize({ capacity: 256, subscribers: 2000 }), {
      code: 'ERR_SHMRING_INVALID_ARGUMENT',
      message: /^Broadcast\.regionSize: subscribers /,
    });
    assert.throws(() => Broadcast.create(sab(65536), { capacity: 256, subscribers: 1.5 }), {
      code: 'ERR_SHMRING_INVALID_ARGUMENT',
      message: /^Broadcast\.create: subscribers /,
    });
    assert.throws(() => LatestValue.regionSize({ maxSize: -1 }), {
      code: 'ERR_SHMRING_INVALID_ARGUMENT',
      message: /^LatestValue\.regionSize: maxSize=-1 /,
    });
    assert.throws(() => LatestValue.create(sab(65536), { maxSize: 0.5 }), {
      code: 'ERR_SHMRING_INVALID_ARGUMENT',
      message: /^LatestValue\.create: maxSize=0\.5 /,
    });
    assert.throws(
      () => MpmcQueue.regionSize({ capacity: 3, slotSize: 8 }),
      (err: Error) => /\(slots of the queue\)$/.test(err.message),
    );
    assert.throws(
      () => SpscRing.regionSize({ capacity: 100 }),
      (err: Error) => /\(bytes of the ring's data area\)$/.test(err.message),
    );
  });

  it('tells a closed Broadcast end to make a new one with Broadcast.subscribe or Broadcast.create, not to attach one', () => {
    const region = sab(Broadcast.regionSize({ capacity: 256 }));
    const pub = Broadcast.create(region, { capacity: 256 });
    const sub = Broadcast.subscribe(region);
    sub.close();
    pub.close();
    assert.throws(() => sub.tryRead(), { code: 'ERR_SHMRING_CLOSED', message: /subscribe a new one \(Broadcast\.subscribe\) to go on$/ });
    assert.throws(() => pub.tryWrite(new Uint8Array(1)), { code: 'ERR_SHMRING_CLOSED', message: /\(Broadcast\.create\) to go on$/ });
    const { ring } = spsc();
    ring.close();
    assert.throws(
      () => ring.tryRead(),
      { code: 'ERR_SHMRING_CLOSED', message: /attach a new one to go on$/ },
      'the other kinds attach one',
    );
  });

  it('names the ring, and says what to do, in the ERR_SHMRING_CORRUPT of a record no correct peer writes (SpscRing, MpscRing, MpmcQueue)', () => {
    for (const kind of ['SpscRing', 'MpscRing'] as const) {
      const path = `${os.tmpdir()}/shmring-corrupt-${process.pid}-${kind}`;
      const Ring = kind === 'SpscRing' ? SpscRing : MpscRing;
      const region = Region.create({ backing: 'file', path, size: Ring.regionSize({ capacity: 256 }) });
      try {
        const ring = Ring.create(region, { capacity: 256 });
        assert.ok(ring.tryWrite(new Uint8Array(8)));
        // The record's LENGTH, overwritten with one larger than the ring.
        new Int32Array(region.buffer, L.DATA_OFFSET, 64)[L.RECORD_LENGTH_I32] = 4096;
        assert.throws(
          () => ring.tryRead(),
          (err: ShmringError) =>
            err.code === ErrorCodes.CORRUPT && err.message.includes(`file '${path}'`) && /create the ring again/.test(err.message),
        );
        ring.close();
      } finally {
        region.close();
        fs.rmSync(path, { force: true });
      }
    }
    const path = `${os.tmpdir()}/shmring-corrupt-${process.pid}-MpmcQueue`;
    const region = Region.create({ backing: 'file', path, size: MpmcQueue.regionSize({ capacity: 4, slotSize: 16 }) });
    try {
      const queue = MpmcQueue.create(region, { capacity: 4, slotSize: 16 });
      assert.ok(queue.tryWrite(new Uint8Array(8)));
      new Int32Array(region.buffer, L.DATA_OFFSET, 16)[L.SLOT_LENGTH_I32] = 4096; // slot 0's LENGTH, past slotSize
      assert.throws(
        () => queue.tryRead(),
        (err: ShmringError) => err.code === ErrorCodes.CORRUPT && err.message.includes(`file '${path}'`),
      );
      queue.close();
    } finally {
      region.close();
      fs.rmSync(path, { force: true });
    }
  });

  it('rejects a region too small for the ring', () => {
    assert.throws(() => SpscRing.create(sab(SpscRing.regionSize({ capacity: 1024 }) - 1), { capacity: 1024 }), {
      code: 'ERR_SHMRING_REGION_TOO_SMALL',
    });
    assert.throws(() => MpmcQueue.create(sab(1000), { capacity: 64, slotSize: 64 }), { code: 'ERR_SHMRING_REGION_TOO_SMALL' });
  });

  it('rejects attaching to a region whose ring was cut short', () => {
    const { region } = spsc(1024);
    const half = new SharedArrayBuffer(SpscRing.regionSize({ capacity: 1024 }) - 512);
    new Uint8Array(half).set(new Uint8Array(region.buffer, 0, half.byteLength));
    assert.throws(() => SpscRing.attach(Region.fromSharedArrayBuffer(half)), { code: 'ERR_SHMRING_REGION_TOO_SMALL' });
  });

  it('rejects a closed region, and a ring whose region was closed', () => {
    const region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity: 256 }) });
    const ring = SpscRing.create(region, { capacity: 256 });
    region.close();
    assert.throws(() => SpscRing.attach(region), { code: 'ERR_SHMRING_CLOSED' });
    assert.throws(() => ring.tryWrite(new Uint8Array(1)), { code: 'ERR_SHMRING_CLOSED' });
    assert.throws(() => ring.tryRead(), { code: 'ERR_SHMRING_CLOSED' });
  });

  it('rejects every verb of a ring this side closed', async () => {
    const { ring } = spsc();
    ring.close();
    assert.throws(() => ring.tryWrite(new Uint8Array(1)), { code: 'ERR_SHMRING_CLOSED' });
    assert.throws(() => ring.tryRead(), { code: 'ERR_SHMRING_CLOSED' });
    assert.throws(() => ring.claim(1), { code: 'ERR_SHMRING_CLOSED' });
    assert.throws(() => ring.drain(() => {}), { code: 'ERR_SHMRING_CLOSED' });
    assert.throws(() => ring.writeSync(new Uint8Array(1)), { code: 'ERR_SHMRING_CLOSED' });
    await assert.rejects(ring.read(), { code: 'ERR_SHMRING_CLOSED' });
    ring.close(); // idempotent
  });

  it("ends this object's pending waits at once with ERR_SHMRING_CLOSED when it detaches (a Broadcast subscriber's close is one)", async () => {
    const soon = async (pending: Promise<unknown>, what: string): Promise<void> => {
      const started = performance.now();
      await assert.rejects(pending, { code: 'ERR_SHMRING_CLOSED' }, what);
      const ms = performance.now() - started;
      assert.ok(ms < 1000, `${what} ended ${ms.toFixed(0)} ms after detach(), at its timeoutMs: detach() left it asleep`);
    };
    const { ring } = spsc();
    const read = ring.read({ timeoutMs: 5000, poll: 0 });
    await new Promise((resolve) => setTimeout(resolve, 10)); // parked
    ring.detach();
    await soon(read, 'a read()');
    const full = spsc();
    while (full.ring.tryWrite(new Uint8Array(100)));
    const write = full.ring.write(new Uint8Array(100), { timeoutMs: 5000, poll: 0 });
    await new Promise((resolve) => setTimeout(resolve, 10));
    full.ring.detach();
    await soon(write, 'a write()');
    const region = sab(Broadcast.regionSize({ capacity: 1024 }));
    const publisher = Broadcast.create(region, { capacity: 1024 });
    const sub = Broadcast.subscribe(region);
    const next = sub.read({ timeoutMs: 5000, poll: 0 });
    await new Promise((resolve) => setTimeout(resolve, 10));
    sub.close();
    await soon(next, "a Broadcast subscriber's read()");
    publisher.close();
  });

  it('ends the reader after the last message when the writer closes, and refuses later writes', async () => {
    const { region, ring } = spsc();
    const reader = SpscRing.attach(region);
    ring.writeSync(new Uint8Array([7]));
    ring.close();
    assert.deepEqual([...reader.readSync()], [7]);
    assert.throws(() => reader.readSync(), { code: 'ERR_SHMRING_CLOSED' });
    reader.detach(); // one consumer at a time, also in one thread
    const seen: number[] = [];
    for await (const m of SpscRing.attach(region)) seen.push(m.length);
    assert.deepEqual(seen, []);
    assert.throws(() => SpscRing.attach(region).writeSync(new Uint8Array(1)), { code: 'ERR_SHMRING_CLOSED' });
  });

  it('rejects attaching to a region that holds no ring', () => {
    assert.throws(() => SpscRing.attach(sab(4096)), { code: 'ERR_SHMRING_NOT_A_RING' });
    assert.throws(() => MpmcQueue.attach(sab(100)), { code: 'ERR_SHMRING_NOT_A_RING' });
  });

  it('names the verb in an argument error, and the region (its POSIX name) when the region is the problem', () => {
    const name = `shmring-test-names-${process.pid}`;
    const region = Region.create({ backing: 'posix', name, size: 65536 });
    try {
      const says = (f: () => unknown, code: string, message: RegExp): void => {
        assert.throws(f, (err: ShmringError) => err.code === code && message.test(err.message));
      };
      says(() => SpscRing.create(region, { capacity: 1000 }), 'ERR_SHMRING_INVALID_ARGUMENT', /^SpscRing\.create: capacity=1000 /);
      says(() => SpscRing.regionSize({} as { capacity: number }), 'ERR_SHMRING_INVALID_ARGUMENT', /^SpscRing\.regionSize: capacity /);
      says(
        () => MpmcQueue.create(region, { capacity: 4, slotSize: -1 }),
        'ERR_SHMRING_INVALID_ARGUMENT',
        /^MpmcQueue\.create: slotSize=-1 /,
      );
      says(() => Broadcast.create(region, { capacity: 3 }), 'ERR_SHMRING_INVALID_ARGUMENT', /^Broadcast\.create: capacity=3 /);
      says(() => SpscRing.attach(region, { offset: 3 }), 'ERR_SHMRING_INVALID_ARGUMENT', /^SpscRing\.attach: offset=3 /);
      says(() => Region.create({ backing: 'memfd', size: -1 }), 'ERR_SHMRING_INVALID_ARGUMENT', /^Region\.create: size=-1 /);
      const named = new RegExp(`POSIX shared memory object '${name}'`);
      says(() => SpscRing.attach(region), 'ERR_SHMRING_NOT_A_RING', named);
      SpscRing.create(region, { capacity: 1024 }).close();
      says(() => MpmcQueue.attach(region), 'ERR_SHMRING_WRONG_KIND', named);
      says(() => SpscRing.create(region, { capacity: 1 << 20 }), 'ERR_SHMRING_REGION_TOO_SMALL', named);
    } finally {
      region.close();
      region.unlink();
    }
  });

  it('refuses a misspelt option of a waiting verb or a constructor (`timeout` for `timeoutMs`, `capacty`), naming it; never ignores it', async () => {
    const { region, ring } = spsc(256);
    const refused = (message: RegExp) => (err: ShmringError) => err.code === 'ERR_SHMRING_INVALID_ARGUMENT' && message.test(err.message);
    await assert.rejects(
      ring.read({ timeout: 10 } as never),
      refused(/^SpscRing\.read: unknown option "timeout" \(did you mean "timeoutMs"\?\)/),
    );
    assert.throws(
      () => ring.readSync({ timout: 10 } as never),
      refused(/^SpscRing\.readSync: unknown option "timout" \(did you mean "timeoutMs"\?\)/),
    );
    assert.throws(
      () => SpscRing.create(region, { capacty: 256 } as never),
      refused(/^SpscRing\.create: unknown option "capacty" \(did you mean "capacity"\?\)/),
    );
    assert.throws(() => SpscRing.attach(region, { ofset: 64 } as never), refused(/"ofset" \(did you mean "offset"\?\)/));
    assert.throws(() => MpmcQueue.regionSize({ capacity: 4, slotsize: 8 } as never), refused(/"slotsize" \(did you mean "slotSize"\?\)/));
    assert.throws(
      () => Broadcast.create(region, { capacity: 64, losless: true } as never),
      refused(/"losless" \(did you mean "lossless"\?\)/),
    );
    assert.throws(
      () => Region.create({ backing: 'sab', size: 64, hugepages: false } as never),
      refused(/^Region\.create: unknown option "hugepages"/),
    );
    // One options object passed again and again stays right (its names are walked once); a fresh one with a bad name is refused.
    const options = { timeoutMs: 0 };
    for (let i = 0; i < 3; i++) assert.throws(() => ring.readSync(options), { code: 'ERR_SHMRING_TIMEOUT' });
    assert.throws(() => ring.readSync({ timeoutMs: 0, spinn: 1 } as never), refused(/"spinn" \(did you mean "spin"\?\)/));
    assert.ok(ring.tryWrite(new Uint8Array([1])));
    assert.deepEqual([...ring.readSync(options)], [1], 'the ring was left as it was');
  });

  it('MpmcQueue.attach refuses any option (it has none; an offset would be ignored), as the other kinds refuse unknown ones', () => {
    const region = sab(MpmcQueue.regionSize({ capacity: 4, slotSize: 8 }));
    MpmcQueue.create(region, { capacity: 4, slotSize: 8 });
    assert.throws(
      () => MpmcQueue.attach(region, { offset: 4096 } as never),
      (err: ShmringError) => err.code === 'ERR_SHMRING_INVALID_ARGUMENT' && /^MpmcQueue\.attach: unknown option "offset"/.test(err.message),
    );
    assert.throws(() => MpmcQueue.attach(region, 5 as never), { code: 'ERR_SHMRING_INVALID_ARGUMENT', name: 'TypeError' });
    MpmcQueue.attach(region, {}).close();
  });

  it('setDefaultPoll refuses a value that is not a number with a TypeError, a negative or NaN one with a RangeError', () => {
    // Named by the function called: the caller gave no `poll` option.
    assert.throws(() => setDefaultPoll('5' as never), {
      code: 'ERR_SHMRING_INVALID_ARGUMENT',
      name: 'TypeError',
      message: /^setDefaultPoll: poll="5"/,
    });
    assert.throws(() => setDefaultPoll(-1), {
      code: 'ERR_SHMRING_INVALID_ARGUMENT',
      name: 'RangeError',
      message: /^setDefaultPoll: poll=-1/,
    });
    assert.throws(() => setDefaultPoll(Number.NaN), {
      code: 'ERR_SHMRING_INVALID_ARGUMENT',
      name: 'RangeError',
      message: /^setDefaultPoll: /,
    });
  });

  it('a tryWrite or claim that fails its arguments does not take the producer role: the real producer attaches and writes after it', () => {
    const { region } = spsc(256); // the creator neither writes nor reads: both roles are free
    const stray = SpscRing.attach(region);
    assert.throws(() => stray.tryWrite(new Uint8Array(1024)), { code: 'ERR_SHMRING_MESSAGE_TOO_LARGE' });
    assert.throws(() => stray.claim(-1), { code: 'ERR_SHMRING_INVALID_ARGUMENT' });
    const producer = SpscRing.attach(region);
    assert.ok(producer.tryWrite(new Uint8Array([7])), 'the real producer could not write');
    producer.close();
    stray.close();
  });

  it('refuses the options a waiting verb does not use: type on a read, poll and ref on a Sync verb, peerTimeoutMs on a LatestValue wait', async () => {
    const { ring } = spsc();
    const latest = LatestValue.create(sab(LatestValue.regionSize({ maxSize: 8 })), { maxSize: 8 });
    const unknown = (verb: string, name: string) => (err: ShmringError) =>
      err.code === 'ERR_SHMRING_INVALID_ARGUMENT' && err.message.startsWith(`${verb}: unknown option "${name}"`);
    // timeoutMs 0 everywhere: an option ignored would wait on an empty ring, and time out at once.
    const type = { type: 3, timeoutMs: 0 } as never;
    assert.throws(() => ring.readSync(type), unknown('SpscRing.readSync', 'type'));
    await assert.rejects(ring.read(type), unknown('SpscRing.read', 'type'));
    await assert.rejects(ring.waitReadable(type), unknown('SpscRing.waitReadable', 'type'));
    assert.throws(() => ring.messages(type), unknown('SpscRing.messages', 'type'));
    await assert.rejects(select([ring], type), unknown('select', 'type'));
    assert.throws(() => selectSync([ring], type), unknown('selectSync', 'type'));
    for (const [name, value] of [
      ['poll', 0],
      ['ref', false],
    ] as const) {
      const options = { [name]: value, timeoutMs: 0 } as never;
      assert.throws(() => ring.readSync(options), unknown('SpscRing.readSync', name));
      assert.throws(() => selectSync([ring], options), unknown('selectSync', name));
      assert.throws(() => latest.changedSync(0, options), unknown('LatestValue.changedSync', name));
      while (ring.tryWrite(new Uint8Array(1))); // full: an ignored option would time out
      assert.throws(() => ring.writeSync(new Uint8Array(1), options), unknown('SpscRing.writeSync', name));
      while (ring.tryRead() !== null);
    }
    for (const name of ['peerTimeoutMs', 'type']) {
      const options = { [name]: 1, timeoutMs: 0 } as never;
      await assert.rejects(latest.changed(0, options), unknown('LatestValue.changed', name));
      assert.throws(() => latest.changedSync(0, options), unknown('LatestValue.changedSync', name));
      await assert.rejects(latest.updates(options).next(), unknown('LatestValue.updates', name));
    }
    // What each verb uses it still takes.
    const signal = new AbortController().signal;
    ring.writeSync(new Uint8Array([1]), { type: 7, timeoutMs: 0, peerTimeoutMs: 1000, spin: 0, signal });
    await ring.write(new Uint8Array([2]), { type: 8, timeoutMs: 0, peerTimeoutMs: 1000, spin: 0, poll: 0, signal, ref: false });
    assert.deepEqual([...ring.readSync({ timeoutMs: 0, peerTimeoutMs: 1000, spin: 0, signal })], [1]);
    assert.deepEqual([...(await ring.read({ timeoutMs: 0, peerTimeoutMs: 1000, spin: 0, poll: 0, signal, ref: false }))], [2]);
    assert.equal(ring.lastType, 8);
    latest.publish(new Uint8Array([3]));
    assert.equal((await latest.changed(0, { timeoutMs: 0, spin: 0, poll: 0, signal, ref: false })).version, 1);
    assert.equal(latest.changedSync(0, { timeoutMs: 0, spin: 0, signal }).version, 1);
  });

  it('refuses a readable() or writable() option it does not take, or one of the wrong type, naming the verb, before Node sees it', () => {
    const bregion = sab(Broadcast.regionSize({ capacity: 256 }));
    const pub = Broadcast.create(bregion, { capacity: 256 });
    const ends = [
      { name: 'SpscRing', reader: spsc().ring, writer: undefined },
      { name: 'MpscRing', reader: MpscRing.create(sab(MpscRing.regionSize({ capacity: 256 })), { capacity: 256 }), writer: undefined },
      {
        name: 'MpmcQueue',
        reader: MpmcQueue.create(sab(MpmcQueue.regionSize({ capacity: 4, slotSize: 8 })), { capacity: 4, slotSize: 8 }),
        writer: undefined,
      },
      { name: 'Broadcast', reader: Broadcast.subscribe(bregion), writer: pub },
    ];
    const refused = (verb: string, error: string, message: RegExp) => (err: ShmringError) =>
      err.code === 'ERR_SHMRING_INVALID_ARGUMENT' && err.name === error && err.message.startsWith(`${verb}: `) && message.test(err.message);
    for (const { name, reader, writer = reader } of ends) {
      const [readable, writable] = [`${name}.readable`, `${name}.writable`];
      const read = (options: unknown) => () => reader.readable(options as never).destroy();
      const write = (options: unknown) => () => writer.writable(options as never).destroy();
      assert.throws(
        read({ highWatermark: 3 }),
        refused(readable, 'TypeError', /unknown option "highWatermark" \(did you mean "highWaterMark"\?\)/),
      );
      assert.throws(read({ closeOnFinish: true }), refused(readable, 'TypeError', /unknown option "closeOnFinish"/));
      assert.throws(read({ highWaterMark: 'x' }), refused(readable, 'TypeError', /highWaterMark="x"/));
      assert.throws(read({ highWaterMark: -1 }), refused(readable, 'RangeError', /highWaterMark=-1/));
      assert.throws(read({ signal: 5 }), refused(readable, 'TypeError', /signal=5/));
      assert.throws(read(null), refused(readable, 'TypeError', /options=null/));
      assert.throws(
        write({ closeOnFnish: true }),
        refused(writable, 'TypeError', /unknown option "closeOnFnish" \(did you mean "closeOnFinish"\?\)/),
      );
      assert.throws(write({ highWaterMark: 1.5 }), refused(writable, 'TypeError', /highWaterMark=1\.5/));
      assert.throws(write({ signal: {} }), refused(writable, 'TypeError', /signal=/));
      assert.throws(write({ closeOnFinish: 'no' }), refused(writable, 'TypeError', /closeOnFinish="no"/));
      // What they take still passes, and the ring is left open.
      read({ highWaterMark: 0, signal: new AbortController().signal })();
      write({ highWaterMark: 4, signal: new AbortController().signal, closeOnFinish: false })();
      assert.equal(reader.closed, false, name);
    }
  });

  it('refuses offset in regionSize, which would ignore it: a ring at offset needs offset + regionSize() bytes', () => {
    const kinds: [string, (options: object) => number, (region: Region, options: object) => { close(): void }, object][] = [
      ['SpscRing', (o) => SpscRing.regionSize(o as never), (r, o) => SpscRing.create(r, o as never), { capacity: 1024 }],
      ['MpscRing', (o) => MpscRing.regionSize(o as never), (r, o) => MpscRing.create(r, o as never), { capacity: 1024 }],
      ['Broadcast', (o) => Broadcast.regionSize(o as never), (r, o) => Broadcast.create(r, o as never), { capacity: 1024 }],
      ['LatestValue', (o) => LatestValue.regionSize(o as never), (r, o) => LatestValue.create(r, o as never), { maxSize: 8 }],
      ['MpmcQueue', (o) => MpmcQueue.regionSize(o as never), (r, o) => MpmcQueue.create(r, o as never), { capacity: 4, slotSize: 8 }],
    ];
    for (const [name, regionSize, create, options] of kinds) {
      assert.throws(
        () => regionSize({ ...options, offset: 4096 }),
        (err: ShmringError) =>
          err.code === 'ERR_SHMRING_INVALID_ARGUMENT' && new RegExp(`^${name}\\.regionSize: unknown option "offset"`).test(err.message),
        name,
      );
      if (name === 'MpmcQueue') continue; // it is laid out at offset 0 only
      create(sab(4096 + regionSize(options)), { ...options, offset: 4096 }).close();
    }
  });

  it('rejects a ring of another layout version', () => {
    const { region } = spsc();
    new Int32Array(region.buffer)[L.VERSION_I32] = L.LAYOUT_VERSION + 1;
    assert.throws(() => SpscRing.attach(region), { code: 'ERR_SHMRING_VERSION_MISMATCH' });
  });

  it('rejects attaching with the wrong ring kind', () => {
    const { region } = spsc();
    assert.throws(() => MpmcQueue.attach(region), { code: 'ERR_SHMRING_WRONG_KIND' });
    const q = sab(MpmcQueue.regionSize({ capacity: 4, slotSize: 8 }));
    MpmcQueue.create(q, { capacity: 4, slotSize: 8 });
    assert.throws(() => SpscRing.attach(q), { code: 'ERR_SHMRING_WRONG_KIND' });
  });

  it('rejects an inconsistent header as corrupt', () => {
    const { region } = spsc(1024);
    new Int32Array(region.buffer)[L.CAPACITY_I32] = 1000;
    assert.throws(() => SpscRing.attach(region), { code: 'ERR_SHMRING_CORRUPT' });
  });

  it('rejects a read-only region for a ring', () => {
    const name = `shmring-test-ro-${process.pid}`;
    const region = Region.create({ backing: 'posix', name, size: SpscRing.regionSize({ capacity: 256 }) });
    try {
      SpscRing.create(region, { capacity: 256 });
      const ro = Region.open({ backing: 'posix', name, readOnly: true });
      assert.throws(() => SpscRing.attach(ro), { code: 'ERR_SHMRING_READ_ONLY' });
      ro.close();
    } finally {
      region.unlink();
      region.close();
    }
  });

  it('rejects a commit or abort of an offset that is not the open claim', () => {
    const { ring } = spsc();
    assert.throws(() => ring.commit(8), { code: 'ERR_SHMRING_INVALID_ARGUMENT' });
    const offset = ring.claim(4);
    assert.throws(() => ring.commit(offset + 8), { code: 'ERR_SHMRING_INVALID_ARGUMENT' });
    assert.throws(() => ring.tryWrite(new Uint8Array(1)), { code: 'ERR_SHMRING_INVALID_ARGUMENT' });
    ring.abort(offset);
    assert.throws(() => ring.abort(offset), { code: 'ERR_SHMRING_INVALID_ARGUMENT' });
    assert.equal(ring.tryRead(), null);
  });

  it('times out a wait with ERR_SHMRING_TIMEOUT and aborts one with ABORT_ERR', async () => {
    const { ring } = spsc();
    assert.throws(() => ring.readSync({ timeoutMs: 20 }), { code: 'ERR_SHMRING_TIMEOUT' });
    await assert.rejects(ring.read({ timeoutMs: 20 }), { code: 'ERR_SHMRING_TIMEOUT' });
    await assert.rejects(ring.read({ signal: AbortSignal.timeout(20) }), { code: 'ABORT_ERR' });
  });

  it('rejects a peerTimeoutMs that is not a number of ms >= 0 instead of napping for NaN ms', async () => {
    const { ring } = spsc();
    for (const peerTimeoutMs of [NaN, -1, '5' as unknown as number]) {
      assert.throws(() => ring.readSync({ peerTimeoutMs, timeoutMs: 50 }), { code: 'ERR_SHMRING_INVALID_ARGUMENT' });
      await assert.rejects(ring.read({ peerTimeoutMs, timeoutMs: 50, poll: 0 }), { code: 'ERR_SHMRING_INVALID_ARGUMENT' });
    }
  });

  it("names the ring in ERR_SHMRING_PEER_DEAD as CLOSED does, and its dead peer: a process in a POSIX region, a worker's thread in a SharedArrayBuffer", async function () {
    this.timeout(30_000);
    const dead = (message: RegExp) => (err: ShmringError) => {
      assert.equal(err.code, ErrorCodes.PEER_DEAD, String(err));
      assert.match(err.message, message);
      return true;
    };
    const name = `shmring-errors-peer-${process.pid}`;
    const posix = Region.create({ backing: 'posix', name, size: SpscRing.regionSize({ capacity: 256 }), unlinkOnExit: true });
    try {
      const ring = SpscRing.create(posix, { capacity: 256 });
      // A child process takes the producer role (its first write), then exits: nobody holds the role's lock any more.
      const ringbuf = JSON.stringify(new URL('../src/index.js', import.meta.url).href);
      const core = JSON.stringify(import.meta.resolve('@shmring/core'));
      const child = spawnSync(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `import { Region } from ${core}; import { SpscRing } from ${ringbuf};
           const ring = SpscRing.attach(Region.open({ backing: 'posix', name: '${name}' }));
           if (!ring.tryWrite(new Uint8Array([1]))) process.exit(1);`,
        ],
        { encoding: 'utf8', timeout: 10_000 },
      );
      assert.equal(child.status, 0, child.stderr);
      assert.deepEqual([...ring.readSync({ timeoutMs: 1000 })], [1]);
      const where = `the process on the other side of the ring in POSIX shared memory object '${name}' has died`;
      assert.throws(() => ring.readSync({ peerTimeoutMs: 40, timeoutMs: 5000 }), dead(new RegExp(`^SpscRing\\.readSync: ${where}`)));
      await assert.rejects(ring.read({ peerTimeoutMs: 40, timeoutMs: 5000 }), dead(new RegExp(`^SpscRing\\.read: ${where}`)));
      ring.close();
    } finally {
      posix.unlink();
      posix.close();
    }

    const region = sab(SpscRing.regionSize({ capacity: 256 }));
    const ring = SpscRing.create(region, { capacity: 256 });
    // A worker takes the producer role (its tryWrite) and ends: in a SharedArrayBuffer the registrant is its thread.
    const worker = startWorker({ role: 'try-write', ring: { sab: region.buffer as SharedArrayBuffer } });
    const [end] = (await once(worker, 'message')) as [{ code: string }];
    assert.equal(end.code, 'ok');
    await worker.terminate();
    assert.deepEqual([...ring.readSync({ timeoutMs: 1000 })], [1]);
    const ended = /the thread on the other side of the ring in a SharedArrayBuffer has ended \(its worker exited or was terminated\)/;
    assert.throws(() => ring.readSync({ peerTimeoutMs: 40, timeoutMs: 5000 }), dead(ended));
    await assert.rejects(ring.read({ peerTimeoutMs: 40, timeoutMs: 5000 }), dead(ended));
    ring.close();
  });

  it('rejects a non-Uint8Array message with a TypeError', () => {
    const { ring } = spsc();
    assert.throws(() => ring.tryWrite('text' as unknown as Uint8Array), { code: 'ERR_SHMRING_INVALID_ARGUMENT', name: 'TypeError' });
  });
});
