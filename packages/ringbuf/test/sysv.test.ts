/**
 * Rings in System V segments: an SpscRing between two processes over a
 * 'sysv' region (and over huge pages where some are free), and
 * `shmring inspect` / listRings() / unlinkStale() finding the rings in
 * segments by key and by id; a LatestValue writer SIGKILLed in a segment
 * (which has no file to lock) freeing the writer role for the next one
 * (exactly one of three racing processes), as does a dead writer whose pid
 * is now ours.
 */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { ErrorCodes, Region } from '@shmring/core';
import { wake } from '@shmring/futex';
import { inspect, isStale, LatestValue, listRings, SpscRing, unlinkStale, type RingInfo } from '../src/index.js';
import * as L from '../src/layout.js';
import * as V from '../src/latest-layout.js';
import { isAlive, othersAttached, ownStartTime } from '../src/liveness.js';
import { latestPayload } from './fixtures/latest-values.js';
import { message } from './fixtures/sysv-ring-peer.js';
import { LinePeer, UNSHARE, unshareRefused } from './helpers.js';

const PEER = fileURLToPath(new URL('./fixtures/sysv-ring-peer.js', import.meta.url));
const LATEST_PEER = fileURLToPath(new URL('./fixtures/latest-peer.js', import.meta.url));
const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const ROLE_PEER = fileURLToPath(new URL('./fixtures/role-peer.js', import.meta.url));

/** A key no other test run uses. */
function uniqueKey(): number {
  return (0x5f00_0000 | Math.floor(Math.random() * 0x00ff_ffff)) >>> 0;
}

/** The key as `shmring inspect` names its segment. */
function target(key: number): string {
  return `sysv:0x${key.toString(16).padStart(8, '0')}`;
}

/** Whether segment `id` exists (/proc/sysvipc/shm). */
function segmentExists(id: number): boolean {
  return fs
    .readFileSync('/proc/sysvipc/shm', 'utf8')
    .split('\n')
    .slice(1)
    .some((row) => row.trim().split(/\s+/)[1] === String(id));
}

/** A System V segment with `key` for a LatestValue of values up to 64 bytes; skips the test where there are none. */
function latestSegment(test: Mocha.Context, key: number): Region {
  try {
    return Region.create({ backing: 'sysv', key, size: LatestValue.regionSize({ maxSize: 64 }) });
  } catch (err) {
    console.log(`      (skipped: no System V shared memory here: ${(err as Error).message})`);
    return test.skip();
  }
}

/** Runs the peer to its end; rejects unless it exits 0. */
function runPeer(...args: string[]): Promise<string> {
  const child = spawn(process.execPath, [PEER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  return new Promise((resolve, reject) =>
    child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`peer exited ${code}: ${stderr}`)))),
  );
}

describe('rings in System V segments', function () {
  this.timeout(60_000);

  for (const hugePages of [false, true]) {
    it(`carries 5000 messages from a child producer over a sysv region${hugePages ? ' of huge pages' : ''}`, async function () {
      const key = uniqueKey();
      const size = SpscRing.regionSize({ capacity: 4096 });
      let region: Region;
      try {
        region = Region.create({ backing: 'sysv', key, size, hugePages });
      } catch (err) {
        if ((err as { code?: string }).code !== 'ERR_SHMRING_NO_HUGE_PAGES') throw err;
        console.log(`      (skipped: ${(err as Error).message})`);
        return this.skip();
      }
      try {
        const ring = SpscRing.create(region, { capacity: 4096 });
        const producer = runPeer('produce', String(key), '5000');
        for (let i = 0; i < 5000; i++) {
          const got = await ring.read({ timeoutMs: 20_000 });
          assert.deepEqual(got, message(i), `message ${i}`);
        }
        await producer;
        ring.close();
      } finally {
        region.unlink();
        region.close();
      }
      assert.equal(segmentExists(region.id!), false);
    });
  }

  it('lists rings in keyed and private segments in listRings(), inspect() and `shmring inspect`', () => {
    const key = uniqueKey();
    const size = SpscRing.regionSize({ capacity: 1024 });
    using keyed = Region.create({ backing: 'sysv', key, size });
    using anonymous = Region.create({ backing: 'sysv', size });
    using notARing = Region.create({ backing: 'sysv', size });
    try {
      const ring = SpscRing.create(keyed, { capacity: 1024 });
      assert.ok(ring.tryWrite(new Uint8Array(100)));
      SpscRing.create(anonymous, { capacity: 1024 });
      const privateTarget = `sysv-id:${anonymous.id}`;

      const listed = new Map(listRings().map((r) => [r.name, r]));
      assert.equal(listed.get(target(key))?.used, 112, 'one record of 8 + 100 bytes, padded to 8');
      assert.equal(listed.get(target(key))?.sysvId, keyed.id);
      assert.equal(listed.get(privateTarget)?.kind, 'SpscRing');
      assert.ok(![...listed.values()].some((r) => r.sysvId === notARing.id), 'a segment without a ring is not listed');
      assert.equal(inspect(target(key))?.capacity, 1024);
      assert.equal(inspect(privateTarget)?.sysvId, anonymous.id);
      assert.equal(inspect(`sysv-id:${notARing.id}`), undefined);

      const all = spawnSync(process.execPath, [CLI, 'inspect', '--all'], { encoding: 'utf8' });
      assert.equal(all.status, 0, all.stderr);
      const row = all.stdout.split('\n').find((line) => line.startsWith(`${target(key)} `));
      assert.match(row ?? '', /SpscRing\s+1024 B\s+112 B/, all.stdout);
      assert.ok(all.stdout.includes(privateTarget), all.stdout);
      const one = spawnSync(process.execPath, [CLI, 'inspect', target(key), '--json'], { encoding: 'utf8' });
      assert.equal(one.status, 0, one.stderr);
      assert.equal((JSON.parse(one.stdout) as RingInfo).used, 112);
    } finally {
      keyed.unlink();
      anonymous.unlink();
      notARing.unlink();
    }
  });

  it('counts a ring whose owner runs in another PID namespace (unshare) as held by the attach count, not stale, until it is killed', async function () {
    const why = unshareRefused();
    if (why !== undefined) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    const key = uniqueKey();
    const owner = new LinePeer(ROLE_PEER, [`sysv:${key}`, 'creator'], UNSHARE);
    try {
      await owner.line('ready');
      const info = inspect(target(key))!;
      assert.equal(info.held, true, 'the owner has the segment attached');
      assert.equal(isStale(info), false);
      assert.equal(info.creator.pid, 1, 'the owner wrote its pid in its own namespace');
      assert.deepEqual([info.creator.alive, info.producer?.alive], [undefined, undefined], 'held, and the pids say nothing here');
      assert.ok(!unlinkStale({ dryRun: true }).includes(target(key)), 'unlink-stale would remove a ring a live process holds');
      const table = spawnSync(process.execPath, [CLI, 'inspect', target(key)], { encoding: 'utf8' });
      assert.match(table.stdout, /1 \(unknown\)\s+-\s+1 \(unknown\)\s+open/, table.stdout);
      await owner.kill();
      const dead = inspect(target(key))!;
      assert.deepEqual([dead.held, isStale(dead), dead.creator.alive, dead.producer?.alive], [false, true, false, false]);
      assert.ok(unlinkStale().includes(target(key)), 'stale once nobody has it attached');
      assert.equal(segmentExists(dead.sysvId!), false);
    } finally {
      await owner.kill();
      try {
        using leftover = Region.open({ backing: 'sysv', key });
        leftover.unlink();
      } catch {
        // removed by unlinkStale
      }
    }
  });

  it("gives a second SpscRing consumer or producer ERR_SHMRING_BUSY at once, in another process or this one, and a SIGKILLed owner's role to the next", async () => {
    const key = uniqueKey();
    using region = Region.create({ backing: 'sysv', key, size: SpscRing.regionSize({ capacity: 1024 }) });
    const peers: LinePeer[] = [];
    const peer = (role: string, ...args: string[]): LinePeer => {
      const started = new LinePeer(ROLE_PEER, [`sysv:${key}`, role, ...args]);
      peers.push(started);
      return started;
    };
    try {
      const producer = SpscRing.create(region, { capacity: 1024 });
      for (let i = 0; i < 3; i++) assert.ok(producer.tryWrite(new Uint8Array([i])));
      const first = peer('consumer'); // reads [0]
      await first.line('ready');
      assert.equal(await peer('consumer').line('busy'), `busy ${ErrorCodes.BUSY}`, 'a second consumer in another process');
      assert.equal(await peer('producer', '1').line('busy'), `busy ${ErrorCodes.BUSY}`, 'a second producer in another process');
      assert.throws(() => SpscRing.attach(region).tryRead(), { code: ErrorCodes.BUSY }, 'a second consumer in this process');
      assert.throws(
        () => SpscRing.attach(region).tryWrite(new Uint8Array([9])),
        { code: ErrorCodes.BUSY },
        'a second producer object of this thread',
      );
      await first.kill();
      const next = SpscRing.attach(region);
      assert.deepEqual([...next.tryRead()!], [1], 'the role is free once its owner is killed, and nothing was read twice');
      next.detach();
      assert.deepEqual([...SpscRing.attach(region).tryRead()!], [2], 'and once its owner detached');
      producer.close();
    } finally {
      for (const started of peers) await started.kill();
      region.unlink();
    }
  });

  it('shows a side caught registering (its pid word negated) by its pid, alive while that process runs, in inspect() and `shmring inspect`', async () => {
    const key = uniqueKey();
    using region = Region.create({ backing: 'sysv', key, size: SpscRing.regionSize({ capacity: 1024 }) });
    try {
      SpscRing.create(region, { capacity: 1024 });
      const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
      Atomics.store(ctl, L.PRODUCER_START_I32, 12345); // a start time that is not its own: it has not stored one yet
      Atomics.store(ctl, L.PRODUCER_PID_I32, -process.pid); // forges a producer that is registering now
      assert.deepEqual(inspect(target(key))?.producer, { pid: process.pid, alive: true });
      const table = spawnSync(process.execPath, [CLI, 'inspect', target(key)], { encoding: 'utf8' });
      assert.equal(table.status, 0, table.stderr);
      const row = table.stdout.split('\n').find((line) => line.startsWith(`${target(key)} `)) ?? '';
      assert.ok(row.includes(` ${process.pid} `) && !row.includes(`-${process.pid}`) && !row.includes('(unknown)'), table.stdout);
      const reaped = spawnSync('true').pid; // a pid no process has now
      Atomics.store(ctl, L.PRODUCER_PID_I32, -reaped); // one that died registering: we hold the ring, its pid says nothing here
      assert.equal(inspect(target(key))?.producer?.alive, undefined);
    } finally {
      region.unlink();
    }
  });

  it('takes a segment whose attach table cannot be read (out of fds, say) as attached by others: doubt is never a death', () => {
    const region = Region.create({ backing: 'sysv', size: 4096 });
    try {
      assert.equal(othersAttached(region.id!), false, 'only this process has it attached');
      // A table read that fails for another reason than its absence (here EISDIR, as EMFILE would).
      assert.equal(othersAttached(region.id!, '/proc'), true);
      // No table at all: no System V IPC here, so nobody is attached.
      assert.equal(othersAttached(region.id!, '/proc/no-such-table'), false);
    } finally {
      region.unlink();
      region.close();
    }
  });

  it('unlinkStale marks the segment of a ring whose processes are all dead for removal, and keeps a live one', async () => {
    const deadKey = uniqueKey();
    const { id } = JSON.parse(await runPeer('create-and-exit', String(deadKey))) as { id: number };
    using live = Region.create({ backing: 'sysv', key: uniqueKey(), size: SpscRing.regionSize({ capacity: 1024 }) });
    try {
      SpscRing.create(live, { capacity: 1024 });
      const dead = inspect(target(deadKey));
      assert.ok(dead && isStale(dead), 'the ring of a process that exited is stale');
      assert.ok(unlinkStale({ dryRun: true }).includes(target(deadKey)));
      assert.ok(segmentExists(id), 'a dry run removes nothing');
      const removed = unlinkStale();
      assert.ok(removed.includes(target(deadKey)), JSON.stringify(removed));
      assert.ok(!removed.includes(target(live.key!)), 'a live ring is kept');
      assert.equal(segmentExists(id), false, 'gone: nobody was attached');
      assert.ok(segmentExists(live.id!));
    } finally {
      live.unlink();
      if (segmentExists(id)) Region.open({ backing: 'sysv', id }).unlink();
    }
  });

  it('frees the LatestValue writer role of a SIGKILLed writer (its pid and start time), and keeps it from a live one', async function () {
    const key = uniqueKey();
    const region = latestSegment(this, key);
    const peers: LinePeer[] = [];
    const peer = (part: string): LinePeer => {
      const p = new LinePeer(LATEST_PEER, [`sysv:${key}`, part]);
      peers.push(p);
      return p;
    };
    const tokenOf = (): number => Atomics.load(new Int32Array(region.buffer, 0, V.WRITER_TOKEN_I32 + 1), V.WRITER_TOKEN_I32); // the writer's registration
    try {
      const lv = LatestValue.create(region, { maxSize: 64 });
      const holder = peer('hold');
      await holder.line('ready');
      assert.equal(tokenOf(), holder.child.pid, 'the token names the writing process');
      const busy = new RegExp(
        `the writer role of the sysv region id ${region.id}, key 0x[0-9a-f]{8} is held by .*id ${holder.child.pid} in its WRITER_TOKEN`,
      );
      assert.throws(() => lv.publish(latestPayload(2, 64)), { code: ErrorCodes.BUSY, message: busy });
      assert.equal(await peer('try').line('busy'), `busy ${ErrorCodes.BUSY}`);
      await holder.kill();
      assert.equal(lv.read().version, 1);
      assert.equal(lv.publish(latestPayload(2, 64)), 2, 'the next writer takes the role of the dead one');
      assert.equal(tokenOf(), process.pid);
      const second = LatestValue.attach(region);
      assert.throws(() => second.publish(latestPayload(3, 64)), { code: ErrorCodes.BUSY }, 'a second object of the writing process');
      second.close();
      assert.equal(await peer('try').line('busy'), `busy ${ErrorCodes.BUSY}`, 'a live other process');
      lv.close();
      assert.equal(tokenOf(), 0, 'close() gives the role back');
      // A writer that died while registering (its pid negated: no start time stored yet) frees it too.
      Atomics.store(new Int32Array(region.buffer, 0, V.WRITER_TOKEN_I32 + 1), V.WRITER_TOKEN_I32, -holder.child.pid!); // forges that registration
      const next = LatestValue.attach(region);
      assert.equal(next.publish(latestPayload(3, 64)), 3);
      next.close();
    } finally {
      await Promise.all(peers.map((p) => p.kill()));
      region.unlink();
      region.close(); // ends the LatestValue objects too, if a failure left them open
    }
  });

  it('registers a worker thread that writes a LatestValue in a segment by its thread id: the main thread is refused while it runs, and takes the role once it is terminated', async function () {
    const key = uniqueKey();
    const region = latestSegment(this, key);
    const urls = { core: import.meta.resolve('@shmring/core'), ringbuf: new URL('../src/index.js', import.meta.url).href };
    let worker: Worker | undefined;
    try {
      const lv = LatestValue.create(region, { maxSize: 64 });
      worker = new Worker(
        `const { parentPort, workerData } = require('node:worker_threads');
       (async () => {
         const { Region } = await import(workerData.core);
         const { LatestValue } = await import(workerData.ringbuf);
         LatestValue.attach(Region.open({ backing: 'sysv', key: workerData.key })).publish(new Uint8Array([1]));
         parentPort.postMessage(Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').pop()));
       })();`,
        { eval: true, workerData: { ...urls, key } },
      );
      const [tid] = (await once(worker, 'message')) as [number];
      const ctl = new Int32Array(region.buffer, 0, V.WRITER_TOKEN_I32 + 1);
      // Observes the worker's registration.
      assert.deepEqual([Atomics.load(ctl, V.WRITER_TOKEN_I32), Atomics.load(ctl, L.PRODUCER_PID_I32)], [tid, tid]);
      assert.notEqual(tid, process.pid, 'the worker registered its thread, not the process');
      assert.throws(() => lv.publish(latestPayload(2, 64)), { code: ErrorCodes.BUSY }, 'a live worker of this process holds the role');
      await worker.terminate();
      assert.equal(lv.publish(latestPayload(2, 64)), 2, 'the terminated worker left the role to the next writer');
      lv.close();
    } finally {
      await worker?.terminate();
      region.unlink();
      region.close();
    }
  });

  it("lets exactly one of 3 processes racing for a dead writer's LatestValue role take it; the others get ERR_SHMRING_BUSY", async function () {
    const ROUNDS = 3;
    const key = uniqueKey();
    const region = latestSegment(this, key);
    const gateKey = uniqueKey();
    using gateRegion = Region.create({ backing: 'sysv', key: gateKey, size: 4096 });
    const gate = new Int32Array(gateRegion.buffer, 0, 1);
    const peers: LinePeer[] = [];
    const peer = (...args: string[]): LinePeer => {
      const started = new LinePeer(LATEST_PEER, [`sysv:${key}`, ...args]);
      peers.push(started);
      return started;
    };
    try {
      LatestValue.create(region, { maxSize: 64 });
      const token = new Int32Array(region.buffer, 0, V.WRITER_TOKEN_I32 + 1);
      for (let round = 1; round <= ROUNDS; round++) {
        Atomics.store(gate, 0, 0); // closed: the racers park until the store of 1 below
        const holder = peer('hold');
        await holder.line('ready');
        const racers = [0, 1, 2].map(() => peer('race', String(gateKey)));
        for (const racer of racers) await racer.line('ready');
        await holder.kill(); // the dead owner's token stays in WRITER_TOKEN
        // Observes the dead holder's token, then opens the gate: the store each racer's load after its park sees.
        assert.equal(Atomics.load(token, V.WRITER_TOKEN_I32), holder.child.pid, `round ${round}: the dead owner's token`);
        Atomics.store(gate, 0, 1);
        wake(gate, 0); // every parked racer at once
        const said = await Promise.all(racers.map((racer) => racer.line('raced')));
        const winners = racers.filter((_, i) => said[i] === 'raced won');
        assert.equal(winners.length, 1, `round ${round}: ${JSON.stringify(said)}`);
        const busy = `raced busy ${ErrorCodes.BUSY}`;
        assert.deepEqual(
          said.filter((line) => line !== 'raced won'),
          [busy, busy],
          `round ${round}`,
        );
        // Observes the winner's registration.
        assert.equal(Atomics.load(token, V.WRITER_TOKEN_I32), winners[0]!.child.pid, `round ${round}: the token names the winner`);
        for (const racer of racers) await racer.kill(); // the winner dies too: the next round's holder takes its role
      }
    } finally {
      await Promise.all(peers.map((p) => p.kill()));
      gateRegion.unlink();
      region.unlink();
      region.close();
    }
  });

  it('takes over a LatestValue writer token with our pid left by a dead writer (another start time, or caught registering) or by an object of ours whose region was closed', function () {
    const key = uniqueKey();
    const region = latestSegment(this, key);
    const ctl = new Int32Array(region.buffer, 0, V.WRITER_TOKEN_I32 + 1);
    // Forges a registration in the header, as a writer that had our pid before us left it when it died.
    const forge = (token: number, start: number): void => {
      Atomics.store(ctl, L.PRODUCER_START_I32, start); // its start time, stored before its token
      Atomics.store(ctl, V.WRITER_TOKEN_I32, token); // then its token
    };
    const other = (ownStartTime() + 1000) | 0; // a start time that is not ours
    try {
      assert.equal(isAlive(process.pid, other), false, 'our pid with another start time is a dead process');
      assert.equal(isAlive(process.pid, ownStartTime()), true);
      const lv = LatestValue.create(region, { maxSize: 64 });
      forge(process.pid, other);
      assert.equal(lv.publish(latestPayload(1, 64)), 1, 'our pid with another start time: a dead predecessor, taken over');
      // Observes our registration.
      assert.deepEqual([Atomics.load(ctl, V.WRITER_TOKEN_I32), Atomics.load(ctl, L.PRODUCER_START_I32)], [process.pid, ownStartTime()]);
      lv.close();
      forge(-process.pid, other);
      const second = LatestValue.attach(region);
      assert.equal(second.publish(latestPayload(2, 64)), 2, 'our pid caught registering: a predecessor that died there, taken over');
      second.close();
      // An object of ours that holds the role when its region is closed under it (its close() can give nothing back).
      const lost = Region.open({ backing: 'sysv', key });
      assert.equal(LatestValue.attach(lost).publish(latestPayload(3, 64)), 3);
      lost.close();
      // Observes the token the lost object left.
      assert.equal(Atomics.load(ctl, V.WRITER_TOKEN_I32), process.pid, 'the lost object still names us in the token');
      const third = LatestValue.attach(region);
      assert.equal(third.publish(latestPayload(4, 64)), 4, 'our own token with no live object of ours behind it: taken over');
      assert.throws(
        () => LatestValue.attach(region).publish(latestPayload(5, 64)),
        { code: ErrorCodes.BUSY },
        'while a live one is refused',
      );
      third.close();
    } finally {
      region.unlink();
      region.close();
    }
  });
});
