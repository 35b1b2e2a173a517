/**
 * One owner per exclusive role where the region has no file to lock: a
 * SharedArrayBuffer or a System V segment, whose roles are claimed by a CAS
 * of the pid word. The word names a thread, not an object, so a second live
 * object of the same thread must be refused too (ERR_SHMRING_BUSY), for
 * SpscRing's and MpscRing's consumer, SpscRing's producer and Broadcast's
 * publisher; a Broadcast.create over a live publisher of another process
 * is refused before it overwrites anything; and a claim that judged the
 * holder dead does not win against a process that got the holder's pid
 * and registered meanwhile.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { ErrorCodes, Region } from '@shmring/core';
import { Broadcast, MpscRing, SpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import { LinePeer } from './helpers.js';

/** node:fs as liveness.ts sees it: its ESM namespace follows this object after syncBuiltinESMExports(). */
const cjsFs = createRequire(import.meta.url)('node:fs') as typeof fs;

/** Start time of `pid` as the rings record it: field 22 of /proc/<pid>/stat, low 32 bits. */
function startTime(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  return Number(BigInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!) & 0xffffffffn) | 0;
}

const CAPACITY = 1024;

function sabRegion(size: number): Region {
  return Region.fromSharedArrayBuffer(new SharedArrayBuffer(size));
}

function uniqueKey(): number {
  return (0x5d00_0000 | Math.floor(Math.random() * 0x00ff_ffff)) >>> 0;
}

describe('one owner per exclusive role without a file to lock', function () {
  this.timeout(60_000);

  it('gives a second SpscRing consumer or producer object of the same thread ERR_SHMRING_BUSY on a SharedArrayBuffer ring', () => {
    const region = sabRegion(SpscRing.regionSize({ capacity: CAPACITY }));
    const producer = SpscRing.create(region, { capacity: CAPACITY });
    for (let i = 0; i < 3; i++) assert.ok(producer.tryWrite(new Uint8Array([i])));
    const c1 = SpscRing.attach(region);
    assert.deepEqual([...c1.tryRead()!], [0]);
    const c2 = SpscRing.attach(region);
    // Regression: the message said "another live thread of this process" with this thread's own id.
    assert.throws(
      () => c2.tryRead(),
      { code: ErrorCodes.BUSY, message: /held by another object of this thread, id/ },
      'a second consumer object of this thread',
    );
    assert.throws(() => SpscRing.attach(region).tryWrite(new Uint8Array([9])), { code: ErrorCodes.BUSY }, 'a second producer object');
    assert.deepEqual([...c1.tryRead()!], [1], 'the first consumer goes on, nothing taken by the second');
    c1.detach();
    assert.deepEqual([...c2.tryRead()!], [2], 'the role is free once the first detached');
    assert.equal(c2.tryRead(), null);
  });

  it('gives a second MpscRing consumer object of the same thread ERR_SHMRING_BUSY on a SharedArrayBuffer ring', () => {
    const region = sabRegion(MpscRing.regionSize({ capacity: CAPACITY }));
    const producer = MpscRing.create(region, { capacity: CAPACITY });
    for (let i = 0; i < 3; i++) assert.ok(producer.tryWrite(new Uint8Array([i])));
    const c1 = MpscRing.attach(region);
    assert.deepEqual([...c1.tryRead()!], [0]);
    const c2 = MpscRing.attach(region);
    assert.throws(() => c2.tryRead(), { code: ErrorCodes.BUSY, message: /held by another object of this thread, id/ });
    assert.deepEqual([...c1.tryRead()!], [1]);
    c1.close();
    assert.deepEqual([...c2.tryRead()!], [2]);
  });

  for (const backing of ['sab', 'sysv'] as const) {
    it(`refuses a second live Broadcast publisher of the same thread over ${backing}, leaving the first one's Broadcast whole`, () => {
      const size = Broadcast.regionSize({ capacity: CAPACITY });
      const region = backing === 'sab' ? sabRegion(size) : Region.create({ backing, key: uniqueKey(), size });
      try {
        const first = Broadcast.create(region, { capacity: CAPACITY });
        const sub = Broadcast.subscribe(region);
        assert.ok(first.tryWrite(new Uint8Array([1])));
        assert.throws(() => Broadcast.create(region, { capacity: CAPACITY }), { code: ErrorCodes.BUSY });
        assert.ok(first.tryWrite(new Uint8Array([2])));
        assert.deepEqual([[...sub.tryRead()!], [...sub.tryRead()!]], [[1], [2]], 'nothing was overwritten');
        first.detach(); // the role is free: the next publisher takes the Broadcast over (a closed one is not reopened under its subscriber)
        const next = Broadcast.create(region, { capacity: CAPACITY });
        assert.ok(next.tryWrite(new Uint8Array([3])));
        assert.deepEqual([...sub.tryRead()!], [3]);
        sub.close();
        next.close();
      } finally {
        if (backing === 'sysv') region.unlink();
        region.close();
      }
    });
  }

  it('names the ring, and what to do, in its ERR_SHMRING_BUSY messages', () => {
    const key = uniqueKey();
    const hex = `0x${key.toString(16).padStart(8, '0')}`;
    const size = Broadcast.regionSize({ capacity: CAPACITY });
    const region = Region.create({ backing: 'sysv', key, size: size + 64 + SpscRing.regionSize({ capacity: CAPACITY }) });
    const sab = sabRegion(SpscRing.regionSize({ capacity: CAPACITY }));
    try {
      const at = (size + 63) & ~63; // an SpscRing after the Broadcast
      SpscRing.create(region, { capacity: CAPACITY, offset: at }).tryRead();
      assert.throws(() => SpscRing.attach(region, { offset: at }).tryRead(), {
        code: ErrorCodes.BUSY,
        message: new RegExp(
          `^SpscRing: the consumer role of the ring in System V segment key ${hex} \\(id ${region.id}\\) at offset ${at} \\(no file to lock\\) ` +
            '.*close \\(or detach\\) that one first',
        ),
      });
      const publisher = Broadcast.create(region, { capacity: CAPACITY });
      assert.throws(() => Broadcast.create(region, { capacity: CAPACITY }), {
        code: ErrorCodes.BUSY,
        message: new RegExp(
          `^Broadcast.create: a live publisher holds the Broadcast in System V segment key ${hex} \\(id ${region.id}\\); ` +
            `a Broadcast has one publisher: close that one first, .* \\(\`shmring inspect sysv:${hex}\` shows who holds it\\)$`,
        ),
      });
      publisher.close();
      SpscRing.create(sab, { capacity: CAPACITY }).tryRead();
      assert.throws(() => SpscRing.attach(sab).tryRead(), {
        code: ErrorCodes.BUSY,
        message: /consumer role of the ring in a SharedArrayBuffer \(no file/,
      });
    } finally {
      region.unlink();
      region.close();
    }
  });

  it("does not take over a dead holder's role when a process with its recycled pid registers while the holder is judged", async () => {
    // The word names pid C with the start time of a process that had C before and died; while the claim
    // reads /proc/C/stat to judge it, the live process now called C registers (same id, its own start time).
    const region = Region.create({ backing: 'sysv', key: uniqueKey(), size: SpscRing.regionSize({ capacity: CAPACITY }) });
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    const exited = new Promise((resolve) => child.on('close', resolve));
    const readFileSync = cjsFs.readFileSync;
    try {
      const pid = child.pid!;
      const start = startTime(pid);
      const producer = SpscRing.create(region, { capacity: CAPACITY });
      assert.ok(producer.tryWrite(new Uint8Array([1])));
      const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
      Atomics.store(ctl, L.CONSUMER_START_I32, start ^ 1); // the dead predecessor's start time
      Atomics.store(ctl, L.CONSUMER_PID_I32, pid);
      let registered = false;
      cjsFs.readFileSync = ((path: fs.PathOrFileDescriptor, ...rest: unknown[]) => {
        if (!registered && path === `/proc/${pid}/stat`) {
          registered = true;
          // The registration of the process now called C (Queue.#claim's steps): -C, start time, C.
          Atomics.compareExchange(ctl, L.CONSUMER_PID_I32, pid, -pid);
          Atomics.store(ctl, L.CONSUMER_START_I32, start);
          Atomics.store(ctl, L.CONSUMER_PID_I32, pid);
        }
        return (readFileSync as (...args: unknown[]) => unknown)(path, ...rest);
      }) as typeof fs.readFileSync;
      syncBuiltinESMExports();
      const consumer = SpscRing.attach(region);
      assert.throws(() => consumer.tryRead(), { code: ErrorCodes.BUSY }, 'the live registrant keeps the role');
      assert.ok(registered, 'the claim judged the holder by /proc');
      assert.equal(Atomics.load(ctl, L.CONSUMER_PID_I32), pid);
      assert.equal(Atomics.load(ctl, L.CONSUMER_START_I32), start);
    } finally {
      cjsFs.readFileSync = readFileSync;
      syncBuiltinESMExports();
      child.kill('SIGKILL');
      await exited;
      region.unlink();
      region.close();
    }
  });

  it('refuses a Broadcast.create over a live publisher of another process in a System V segment, and allows it once that one is killed', async () => {
    const key = uniqueKey();
    const region = Region.create({ backing: 'sysv', key, size: Broadcast.regionSize({ capacity: CAPACITY }) });
    const core = import.meta.resolve('@shmring/core');
    const ringbuf = new URL('../src/index.js', import.meta.url).href;
    const script = `
      import { Region } from ${JSON.stringify(core)};
      import { Broadcast } from ${JSON.stringify(ringbuf)};
      Broadcast.create(Region.open({ backing: 'sysv', key: ${key} }), { capacity: ${CAPACITY} }).tryWrite(new Uint8Array([7]));
      console.log('ready');
      setTimeout(() => {}, 60000);`;
    const peer = new LinePeer('--input-type=module', ['-e', script]);
    try {
      await peer.line('ready');
      assert.throws(() => Broadcast.create(region, { capacity: CAPACITY }), { code: ErrorCodes.BUSY });
      await peer.kill();
      Broadcast.create(region, { capacity: CAPACITY }).close();
    } finally {
      await peer.kill();
      region.unlink();
      region.close();
    }
  });
});
