/**
 * Faults with real processes: every test here SIGKILLs a real child
 * (fixtures/fault-peer.ts) at a chosen point and checks what the survivors
 * see. A parked reader or writer whose SpscRing peer died ends with
 * ERR_SHMRING_PEER_DEAD within about peerTimeoutMs, after every committed
 * message; a record claimed and not committed is never delivered; a
 * MpmcQueue slot claimed by a dead producer does not stop the queue; and the
 * POSIX objects of dead processes are found and removed by unlinkStale(),
 * while unlinkOnExit removes them at a normal exit.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { inspect, isStale, MpmcQueue, SpscRing, unlinkStale, type WaitOptions } from '../src/index.js';
import * as L from '../src/layout.js';
import { GONE, isAlive, readStartTime, startTimeOf, UNKNOWN_START } from '../src/liveness.js';
import { Peer, type FaultConfig, type RegionRef } from './fixtures/fault-peer.js';
import { Checker, fillPayload, messageLength, messageType, type TrafficPlan } from './fixtures/traffic.js';

/** Default WaitOptions.peerTimeoutMs (docs/ERRORS.md). */
const DEFAULT_PEER_TIMEOUT_MS = 1000;
/** A death must be noticed within this long, for the default and a short peerTimeoutMs. */
const BOUND_DEFAULT_MS = 2000;
const BOUND_SHORT_MS = 1000;
const SHORT_PEER_TIMEOUT_MS = 200;

/** Reads (checking every message) until a read fails; returns that error. */
async function readUntilError(ring: SpscRing, checker: Checker): Promise<ShmringError> {
  for (;;) {
    try {
      const m = await ring.read({ peerTimeoutMs: SHORT_PEER_TIMEOUT_MS, timeoutMs: 20_000 });
      assert.ok(checker.check(m, 0, m.length, ring.lastType), checker.error);
    } catch (err) {
      return err as ShmringError;
    }
  }
}

const totals = { kills: 0 };

function uniqueName(tag: string): string {
  return `shmring-fault-${tag}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

interface Shared {
  region: Region;
  ref: RegionRef;
  /** memfd: the fd a child inherits as its fd 3. */
  fd: number | undefined;
  dispose(): void;
}

function makeRegion(backing: 'memfd' | 'posix', size: number): Shared {
  if (backing === 'memfd') {
    const region = Region.create({ backing: 'memfd', size, name: 'shmring-fault' });
    return { region, ref: { kind: 'fd', fd: 3 }, fd: region.fd, dispose: () => region.close() };
  }
  const name = uniqueName('ring');
  const region = Region.create({ backing: 'posix', name, size });
  return { region, ref: { kind: 'posix', name }, fd: undefined, dispose: () => region.unlink() };
}

function message(plan: TrafficPlan, id: number, seq: number): Uint8Array {
  const bytes = new Uint8Array(messageLength(plan, id, seq));
  fillPayload(plan, id, seq, bytes, 0, bytes.length);
  return bytes;
}

/** A promise's outcome, and when it settled. */
interface Settled<T> {
  value?: T;
  error?: ShmringError;
  at: number;
}

function track<T>(promise: Promise<T>): { settled: Settled<T> | undefined; done: Promise<Settled<T>> } {
  const box: { settled: Settled<T> | undefined; done: Promise<Settled<T>> } = { settled: undefined, done: undefined as never };
  box.done = promise.then(
    (value) => (box.settled = { value, at: performance.now() }),
    (error: ShmringError) => (box.settled = { error, at: performance.now() }),
  );
  return box;
}

function peerOptions(peerTimeoutMs: number | undefined): WaitOptions {
  return peerTimeoutMs === undefined ? {} : { peerTimeoutMs };
}

function boundFor(peerTimeoutMs: number | undefined): number {
  return peerTimeoutMs === undefined ? BOUND_DEFAULT_MS : BOUND_SHORT_MS;
}

/** How long to check that a parked side stays parked while its peer lives: longer than the peer timeout. */
function aliveCheckMs(peerTimeoutMs: number | undefined): number {
  return Math.round(1.3 * (peerTimeoutMs ?? DEFAULT_PEER_TIMEOUT_MS));
}

const peers: Peer[] = [];
function start(config: FaultConfig, fd?: number): Peer {
  const peer = new Peer(config, fd);
  peers.push(peer);
  return peer;
}

async function kill(peer: Peer): Promise<number> {
  totals.kills++;
  return peer.kill();
}

/**
 * Runs `script` (CommonJS) in a child process limited to 200 fds (prlimit) and resolves with what it printed once it
 * exited 0; skips the test where prlimit is missing.
 */
async function withFewFds(script: string, test: Mocha.Context): Promise<string> {
  const child = spawn('prlimit', ['--nofile=200:200', process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  const code = await new Promise<number | null | 'missing'>((resolve, reject) => {
    child.on('exit', resolve);
    child.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? resolve('missing') : reject(err)));
  });
  if (code === 'missing') {
    console.log('      (skipped: no prlimit (util-linux) to start a child with few fds)');
    test.skip();
  }
  assert.equal(code, 0, `the child failed: ${out}`);
  return out;
}

describe('faults: SIGKILLed peers', function () {
  this.timeout(60_000);

  afterEach(async function () {
    // Whatever a failed test left running.
    for (const peer of peers.splice(0)) {
      peer.child.kill('SIGKILL');
      await peer.exited;
    }
  });

  after(function () {
    console.log(`      processes SIGKILLed: ${totals.kills}`);
  });

  describe('a parked reader gets ERR_SHMRING_PEER_DEAD within a bounded time after its producer is killed', function () {
    const K = 50;
    for (const backing of ['memfd', 'posix'] as const) {
      for (const peerTimeoutMs of [undefined, SHORT_PEER_TIMEOUT_MS]) {
        const label = `${backing}, peerTimeoutMs ${peerTimeoutMs ?? 'default'}`;

        it(`a parked read() on the main thread (${label})`, async function () {
          const shared = makeRegion(backing, SpscRing.regionSize({ capacity: 4096 }));
          try {
            const ring = SpscRing.create(shared.region, { capacity: 4096 });
            const plan: TrafficPlan = { seed: 11, producers: 1, perProducer: K, maxLength: 300 };
            const producer = start({ role: 'spsc-producer', region: shared.ref, plan, id: 0, count: K }, shared.fd);
            const checker = new Checker(plan, true);
            let n = 0;
            for await (const m of ring) {
              assert.ok(checker.check(m, 0, m.length, ring.lastType), checker.error);
              if (++n === K) break;
            }
            await producer.next('ready');
            const pending = track(ring.read(peerOptions(peerTimeoutMs)));
            await sleep(aliveCheckMs(peerTimeoutMs));
            assert.equal(
              pending.settled,
              undefined,
              `the read ended (${pending.settled?.error?.code ?? 'with a message'}) while the producer was alive`,
            );
            const killedAt = await kill(producer);
            const end = await pending.done;
            assert.equal(end.error?.code, ErrorCodes.PEER_DEAD, `the read ended with ${end.error?.code ?? 'a message'}`);
            const took = end.at - killedAt;
            assert.ok(took < boundFor(peerTimeoutMs), `PEER_DEAD came ${took.toFixed(0)} ms after the kill`);
            // for await ends the same way.
            await assert.rejects(
              async () => {
                for await (const m of ring) assert.fail(`a message of ${m.length} bytes after the producer died`);
              },
              { code: ErrorCodes.PEER_DEAD },
            );
          } finally {
            shared.dispose();
          }
        });

        it(`a parked readSync in a child process (${label})`, async function () {
          const shared = makeRegion(backing, SpscRing.regionSize({ capacity: 4096 }));
          try {
            SpscRing.create(shared.region, { capacity: 4096 });
            const plan: TrafficPlan = { seed: 12, producers: 1, perProducer: K, maxLength: 300 };
            const reader = start(
              {
                role: 'spsc-sync-reader',
                region: shared.ref,
                plan,
                id: 0,
                expect: K,
                timeoutMs: 15_000,
                ...(peerTimeoutMs === undefined ? {} : { peerTimeoutMs }),
              },
              shared.fd,
            );
            const producer = start({ role: 'spsc-producer', region: shared.ref, plan, id: 0, count: K }, shared.fd);
            await reader.next('got');
            await producer.next('ready');
            await sleep(aliveCheckMs(peerTimeoutMs));
            assert.equal(
              reader.events.find((e) => e.event === 'end'),
              undefined,
              'the readSync ended while the producer was alive',
            );
            const killedAt = await kill(producer);
            const end = await reader.next('end', 20_000);
            const took = performance.now() - killedAt;
            assert.equal(end.code, ErrorCodes.PEER_DEAD);
            assert.ok(took < boundFor(peerTimeoutMs), `PEER_DEAD came ${took.toFixed(0)} ms after the kill`);
          } finally {
            shared.dispose();
          }
        });

        it(`a parked write() on a full ring whose consumer is killed (${label})`, async function () {
          const shared = makeRegion(backing, SpscRing.regionSize({ capacity: 1024 }));
          try {
            const ring = SpscRing.create(shared.region, { capacity: 1024 });
            const consumer = start({ role: 'spsc-idle-consumer', region: shared.ref }, shared.fd);
            await consumer.next('ready');
            const bytes = new Uint8Array(100).fill(1);
            while (ring.tryWrite(bytes));
            const pending = track(ring.write(bytes, peerOptions(peerTimeoutMs)));
            await sleep(aliveCheckMs(peerTimeoutMs));
            assert.equal(
              pending.settled,
              undefined,
              `the write ended (${pending.settled?.error?.code ?? 'went through'}) while the consumer was alive`,
            );
            const killedAt = await kill(consumer);
            const end = await pending.done;
            assert.equal(end.error?.code, ErrorCodes.PEER_DEAD, `the write ended with ${end.error?.code ?? 'success'}`);
            const took = end.at - killedAt;
            assert.ok(took < boundFor(peerTimeoutMs), `PEER_DEAD came ${took.toFixed(0)} ms after the kill`);
          } finally {
            shared.dispose();
          }
        });

        it(`a parked writeSync in a child process whose consumer is killed (${label})`, async function () {
          const shared = makeRegion(backing, SpscRing.regionSize({ capacity: 1024 }));
          try {
            SpscRing.create(shared.region, { capacity: 1024 });
            const consumer = start({ role: 'spsc-idle-consumer', region: shared.ref }, shared.fd);
            await consumer.next('ready');
            const writer = start(
              {
                role: 'spsc-sync-writer',
                region: shared.ref,
                timeoutMs: 15_000,
                ...(peerTimeoutMs === undefined ? {} : { peerTimeoutMs }),
              },
              shared.fd,
            );
            await writer.next('full');
            await sleep(aliveCheckMs(peerTimeoutMs));
            assert.equal(
              writer.events.find((e) => e.event === 'end'),
              undefined,
              'the writeSync ended while the consumer was alive',
            );
            const killedAt = await kill(consumer);
            const end = await writer.next('end', 20_000);
            const took = performance.now() - killedAt;
            assert.equal(end.code, ErrorCodes.PEER_DEAD);
            assert.ok(took < boundFor(peerTimeoutMs), `PEER_DEAD came ${took.toFixed(0)} ms after the kill`);
          } finally {
            shared.dispose();
          }
        });
      }
    }

    // A process blocked in readSync cannot reap its own dead child (libuv reaps on the
    // event loop), so the dead producer stays a zombie while the reader waits.
    it('a parked readSync notices its producer died even when that producer is its own unreaped child (zombie)', async function () {
      const shared = makeRegion('posix', SpscRing.regionSize({ capacity: 4096 }));
      try {
        SpscRing.create(shared.region, { capacity: 4096 });
        const plan: TrafficPlan = { seed: 13, producers: 1, perProducer: K, maxLength: 300 };
        const producerConfig: FaultConfig = { role: 'spsc-producer', region: shared.ref, plan, id: 0, count: K };
        const reader = start({
          role: 'spsc-sync-reader',
          region: shared.ref,
          plan,
          id: 0,
          expect: K,
          timeoutMs: 6000,
          peerTimeoutMs: SHORT_PEER_TIMEOUT_MS,
          spawnProducer: producerConfig,
        });
        const { pid } = (await reader.next('producer')) as unknown as { pid: number };
        await reader.next('got');
        const killedAt = performance.now();
        process.kill(pid, 'SIGKILL');
        totals.kills++;
        await sleep(100);
        const state = processState(pid);
        const end = await reader.next('end', 20_000);
        const took = performance.now() - killedAt;
        assert.equal(
          end.code,
          ErrorCodes.PEER_DEAD,
          `the reader ended with ${String(end.code)} after ${took.toFixed(0)} ms: its dead child producer (a zombie, ` +
            `/proc state ${state} 100 ms after the kill) still counts as alive`,
        );
        assert.ok(took < BOUND_SHORT_MS, `PEER_DEAD came ${took.toFixed(0)} ms after the kill`);
      } finally {
        shared.dispose();
      }
    });
  });

  it('a start time whose low 32 bits read as -1 or -2 (an int32) is a start time, not "gone" or "unknown"', function () {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-stat-'));
    try {
      for (const [ticks, recorded] of [
        [2 ** 32 - 1, -1],
        [2 ** 32 - 2, -2],
        [5 * 2 ** 32 + 7, 7],
      ]) {
        // /proc/<pid>/stat: pid (comm) state, then fields 4..52; field 22 is the start time.
        const fields = Array.from({ length: 49 }, (_, i) => (i === 18 ? String(ticks) : '0'));
        fs.writeFileSync(path.join(dir, 'stat'), `4242 (a (b) c) S ${fields.join(' ')}\n`);
        const start = readStartTime(4242, dir);
        assert.equal(start, recorded);
        assert.notEqual(start, GONE);
        assert.notEqual(start, UNKNOWN_START);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the pid rule (no lock to ask: sysv, sab) counts a real unreaped child, a zombie, as dead', function () {
    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    const pid = child.pid!;
    try {
      // Everything below is synchronous: the event loop, which reaps children (libuv), never runs until the end.
      const start = startTimeOf(pid);
      assert.notEqual(start, GONE, 'the child runs');
      assert.equal(isAlive(pid, start), true);
      process.kill(pid, 'SIGKILL');
      totals.kills++;
      const deadline = performance.now() + 5000;
      while (processState(pid) !== 'Z') {
        assert.ok(performance.now() < deadline, `the killed child never became a zombie (state ${processState(pid)})`);
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
      }
      assert.equal(startTimeOf(pid), GONE, 'a zombie has no start time to match');
      assert.equal(isAlive(pid, start), false, 'a zombie with the recorded start time counts as dead');
      assert.equal(isAlive(pid, 0), false, 'a zombie counts as dead without a start time too');
      assert.equal(processState(pid), 'Z', 'still unreaped when asked');
    } finally {
      child.kill('SIGKILL'); // a failure before the kill above must not leave `sleep 60` running (a no-op once it is dead)
    }
  });

  it('a process out of fds (EMFILE) cannot read /proc: its live peer still counts as alive', async function () {
    // A child with few fds: it opens /dev/null until EMFILE, then asks about its parent (a live process).
    const liveness = new URL('../src/liveness.js', import.meta.url).href;
    const script = `
      const fs = require('node:fs');
      import(${JSON.stringify(liveness)}).then(({ isAlive, startTimeOf }) => {
        const parentStart = startTimeOf(process.ppid);
        const held = [];
        try { for (;;) held.push(fs.openSync('/dev/null', 'r')); } catch (err) { if (err.code !== 'EMFILE') throw err; }
        let emfile = '';
        try { fs.readFileSync('/proc/' + process.ppid + '/stat'); } catch (err) { emfile = err.code; }
        const report = { emfile, parent: isAlive(process.ppid, parentStart), parentAny: isAlive(process.ppid, 0) };
        for (const fd of held) fs.closeSync(fd);
        report.after = isAlive(process.ppid, parentStart);
        process.stdout.write(JSON.stringify(report));
      });`;
    const out = await withFewFds(script, this);
    const report = JSON.parse(out) as { emfile: string; parent: boolean; parentAny: boolean; after: boolean };
    assert.equal(report.emfile, 'EMFILE', 'the child did not run out of fds');
    assert.equal(report.parent, true, 'a live parent counted as dead because /proc could not be read (EMFILE)');
    assert.equal(report.parentAny, true);
    assert.equal(report.after, true);
  });

  it('a process out of fds (EMFILE) before it ever read its own start time: its own registrations still count as alive', async function () {
    const liveness = new URL('../src/liveness.js', import.meta.url).href;
    const script = `
      const fs = require('node:fs');
      import(${JSON.stringify(liveness)}).then(({ isAlive, ownThread }) => {
        const held = [];
        try { for (;;) held.push(fs.openSync('/dev/null', 'r')); } catch (err) { if (err.code !== 'EMFILE') throw err; }
        // A registration of this process with its start time (as another thread of it wrote it): ours, alive.
        const report = { own: isAlive(process.pid, 12345), threadStart: ownThread().start };
        for (const fd of held) fs.closeSync(fd);
        report.threadStartAfter = ownThread().start;
        process.stdout.write(JSON.stringify(report));
      });`;
    const out = await withFewFds(script, this);
    const report = JSON.parse(out) as { own: boolean; threadStart: number; threadStartAfter: number };
    assert.equal(report.own, true, 'this process judged its own registration dead because it could not read its start time');
    assert.equal(report.threadStart, 0, 'unknown while out of fds');
    assert.notEqual(report.threadStartAfter, 0, 'the unknown start time was kept: never asked again');
  });

  it('a LatestValue attached while its process is out of fds (EMFILE) fails with EMFILE, never a writer beside the lock holder', async function () {
    // The writer holds the role's lock; a second object, attached with no fd left for its own locks,
    // fell back to the WRITER_TOKEN of lock-less regions, which the lock holder never looks at: both wrote.
    const index = new URL('../src/index.js', import.meta.url).href;
    const core = import.meta.resolve('@shmring/core');
    const script = `
      const fs = require('node:fs');
      Promise.all([import(${JSON.stringify(core)}), import(${JSON.stringify(index)})]).then(([{ Region }, { LatestValue }]) => {
        const region = Region.create({ backing: 'memfd', size: LatestValue.regionSize({ maxSize: 64 }) });
        const writer = LatestValue.create(region, { maxSize: 64 });
        writer.publish(new Uint8Array([1]));
        const held = [];
        try { for (;;) held.push(fs.openSync('/dev/null', 'r')); } catch (err) { if (err.code !== 'EMFILE') throw err; }
        const report = {};
        try {
          const second = LatestValue.attach(region);
          report.published = second.publish(new Uint8Array([2]));
        } catch (err) {
          report.code = err.code;
          report.message = err.message;
        }
        for (const fd of held) fs.closeSync(fd);
        process.stdout.write(JSON.stringify(report));
      });`;
    const out = await withFewFds(script, this);
    const report = JSON.parse(out) as { published?: number; code?: string; message?: string };
    assert.equal(report.published, undefined, `a second writer published version ${report.published} beside the lock holder`);
    assert.equal(report.code, 'EMFILE', report.message);
    assert.match(report.message!, /taking the role locks of the memfd region: open failed: .*ulimit -n/);
  });

  describe('a producer killed between claim and commit loses only the uncommitted record', function () {
    const seeds = [101, 202, 303, 404, 505];
    for (const [i, seed] of seeds.entries()) {
      const backing = i % 2 === 0 ? 'memfd' : 'posix';
      it(`delivers every committed message, never the half-written one, then PEER_DEAD (seed ${seed}, ${backing})`, async function () {
        const capacity = 1024;
        const shared = makeRegion(backing, SpscRing.regionSize({ capacity }));
        try {
          const ring = SpscRing.create(shared.region, { capacity });
          // A random number of committed messages (several laps of the ring for most seeds).
          const count = (seed * 7919) % 400;
          const plan: TrafficPlan = { seed, producers: 1, perProducer: count + 1, maxLength: 200 };
          const producer = start({ role: 'spsc-producer', region: shared.ref, plan, id: 0, count, claimAfter: true }, shared.fd);
          const killed = producer.next('claimed').then(() => kill(producer));
          const checker = new Checker(plan, true);
          const end = await readUntilError(ring, checker);
          await killed;
          assert.equal(end.code, ErrorCodes.PEER_DEAD, `the reader ended with ${end.code}: ${end.message}`);
          assert.equal(checker.count, count, `received ${checker.count} of the ${count} committed messages`);
          assert.equal(ring.tryRead(), null, 'a record appeared after the producer died');
          assert.equal(ring.size, 0, 'the producer position moved past the committed records');
          await assert.rejects(ring.read({ peerTimeoutMs: SHORT_PEER_TIMEOUT_MS, timeoutMs: 5000 }), { code: ErrorCodes.PEER_DEAD });
        } finally {
          shared.dispose();
        }
      });
    }

    it('delivers an intact prefix of the stream when the producer is killed at random moments', async function () {
      const capacity = 512;
      let prefixes = 0;
      for (let round = 0; round < 6; round++) {
        const shared = makeRegion(round % 2 === 0 ? 'memfd' : 'posix', SpscRing.regionSize({ capacity }));
        try {
          const ring = SpscRing.create(shared.region, { capacity });
          const plan: TrafficPlan = { seed: 900 + round, producers: 1, perProducer: 1 << 23, maxLength: 200 };
          const producer = start({ role: 'spsc-stream', region: shared.ref, plan, id: 0 }, shared.fd);
          const killed = producer.next('ready').then(async () => {
            await sleep(20 + ((round * 37) % 200));
            return kill(producer);
          });
          const checker = new Checker(plan, true);
          const end = await readUntilError(ring, checker);
          await killed;
          assert.equal(end.code, ErrorCodes.PEER_DEAD, `round ${round}: the reader ended with ${end.code}: ${end.message}`);
          assert.equal(ring.tryRead(), null, `round ${round}: a record appeared after the producer died`);
          prefixes += checker.count;
        } finally {
          shared.dispose();
        }
      }
      assert.ok(prefixes > 0, 'no message was delivered in any round: the kills came too early to test anything');
    });
  });

  describe('MpmcQueue', function () {
    for (const how of ['manual', 'hook'] as const) {
      const label = how === 'manual' ? 'a CAS of the producer position, as LAYOUT.md describes' : 'tryWrite stopped inside its copy';
      it(`a slot claimed by a producer killed before it published is recovered so the queue goes on (claim: ${label})`, async function () {
        const capacity = 8;
        const slotSize = 64;
        const shared = makeRegion('memfd', MpmcQueue.regionSize({ capacity, slotSize }));
        try {
          const q = MpmcQueue.create(shared.region, { capacity, slotSize });
          const M = 100;
          const plan: TrafficPlan = { seed: 31, producers: 3, perProducer: M, maxLength: slotSize };
          // Producer 0 is this process, 1 the living child, 2 the one that dies holding a slot.
          for (let seq = 0; seq < 2; seq++) assert.ok(q.tryWrite(message(plan, 0, seq), messageType(0, seq)));
          const checker = new Checker(plan, true);
          const expected = 2 + 1 + M;
          let stuck: string | undefined;
          const consumed = (async () => {
            const deadline = performance.now() + 15_000;
            while (checker.count < expected) {
              try {
                const m = await q.read({ peerTimeoutMs: 300, timeoutMs: Math.max(0, deadline - performance.now()) });
                assert.ok(checker.check(m, 0, m.length, q.lastType), checker.error);
              } catch (err) {
                const ctl = new Int32Array(shared.region.buffer, 0, L.CONTROL_I32_LENGTH);
                stuck =
                  `the consumer stopped with ${(err as ShmringError).code ?? String(err)} after ${checker.count} of ${expected} messages ` +
                  `(per producer ${JSON.stringify(checker.report().perProducer)}; positions producer ${Atomics.load(ctl, L.PRODUCER_POSITION_I32)}, ` +
                  `consumer ${Atomics.load(ctl, L.CONSUMER_POSITION_I32)})`;
                return;
              }
            }
          })();
          const dying = start({ role: 'mpmc-dead-claim', region: shared.ref, plan, id: 2, how }, shared.fd);
          await dying.next('claimed');
          const killedAt = await kill(dying);
          const living = start({ role: 'mpmc-producer', region: shared.ref, plan, id: 1, count: M, timeoutMs: 12_000 }, shared.fd);
          await consumed;
          const took = performance.now() - killedAt;
          assert.equal(stuck, undefined, stuck);
          assert.deepEqual(checker.report().perProducer, [2, M, 1]);
          assert.ok(took < 8000, `the queue took ${took.toFixed(0)} ms to get past the dead producer's slot`);
          await living.next('done');
          // The queue goes on.
          for (let round = 0; round < 3 * capacity; round++) {
            assert.ok(q.tryWrite(new Uint8Array([round]), 5), `tryWrite refused on round ${round}: the queue looks full`);
            const m = q.tryRead();
            assert.deepEqual(m && [...m], [round], `round ${round}`);
          }
          assert.equal(q.size, 0);
        } finally {
          shared.dispose();
        }
      });
    }
    it('a slot claimed by a consumer killed before it freed it is recovered so writers go on', async function () {
      const capacity = 4;
      const slotSize = 32;
      const shared = makeRegion('posix', MpmcQueue.regionSize({ capacity, slotSize }));
      try {
        const q = MpmcQueue.create(shared.region, { capacity, slotSize });
        const plan: TrafficPlan = { seed: 41, producers: 1, perProducer: 100, maxLength: slotSize };
        for (let seq = 0; seq < capacity; seq++) assert.ok(q.tryWrite(message(plan, 0, seq), messageType(0, seq)));
        const dying = start({ role: 'mpmc-dead-reader', region: shared.ref }, shared.fd);
        const claimed = await dying.next('claimed');
        assert.equal(claimed.type, messageType(0, 0));
        const killedAt = await kill(dying);
        // The queue is full: slot 0 is held by the dead consumer, 1..3 hold messages.
        assert.equal(q.tryWrite(message(plan, 0, capacity), messageType(0, capacity)), false);
        await q.write(message(plan, 0, capacity), { type: messageType(0, capacity), peerTimeoutMs: 300, timeoutMs: 8000 });
        const took = performance.now() - killedAt;
        assert.ok(took < 5000, `the writer took ${took.toFixed(0)} ms to get past the dead consumer's slot`);
        // Message 0 died with its consumer; the rest come in order.
        for (let seq = 1; seq <= capacity; seq++) {
          const m = q.tryRead();
          assert.ok(m, `message ${seq} is missing`);
          assert.equal(q.lastType, messageType(0, seq));
          assert.deepEqual(m, message(plan, 0, seq));
        }
        assert.equal(q.tryRead(), null);
        for (let round = 0; round < 3 * capacity; round++) {
          assert.ok(q.tryWrite(new Uint8Array([round]), 5), `tryWrite refused on round ${round}`);
          assert.deepEqual([...q.tryRead()!], [round]);
        }
      } finally {
        shared.dispose();
      }
    });

    // KNOWN BUG while the 'left at 0' case fails: LAYOUT.md says "A peer that leaves OWNER
    // at 0 stays correct; its slots are only recovered later", but a parked reader that sees
    // OWNER 0 for two naps takes the slot of a LIVE producer. When that producer publishes,
    // the slot's sequence goes back from p + capacity to p + 1: its message is lost and the
    // queue wedges (looks full while empty). The 'set' case is the control.
    for (const owner of [true, false]) {
      it(`a live producer that takes its time between claim and publication keeps its slot (OWNER ${owner ? 'set' : 'left at 0, as LAYOUT.md allows'})`, async function () {
        const capacity = 4;
        const slotSize = 64;
        const shared = makeRegion('memfd', MpmcQueue.regionSize({ capacity, slotSize }));
        try {
          const q = MpmcQueue.create(shared.region, { capacity, slotSize });
          const plan: TrafficPlan = { seed: 51, producers: 1, perProducer: 1, maxLength: slotSize };
          const slow = start({ role: 'mpmc-slow-claim', region: shared.ref, plan, id: 0, owner, delayMs: 400 }, shared.fd);
          await slow.next('claimed');
          let got: Uint8Array | undefined;
          let failure: string | undefined;
          try {
            // Naps of 10 ms: the producer takes 40 of them.
            got = await q.read({ peerTimeoutMs: 40, timeoutMs: 3000 });
          } catch (err) {
            failure = (err as ShmringError).code;
          }
          const published = await slow.next('published');
          assert.equal(
            published.sequenceBefore,
            published.position,
            `the slot the live producer claimed was freed under it (its sequence was ${String(published.sequenceBefore)} ` +
              `when it published position ${String(published.position)}); the reader ${failure === undefined ? 'got a message' : `ended with ${failure}`}`,
          );
          assert.equal(failure, undefined, `the read ended with ${failure}`);
          assert.deepEqual(got, message(plan, 0, 0));
          assert.equal(q.lastType, messageType(0, 0));
          for (let round = 0; round < 3 * capacity; round++) {
            assert.ok(q.tryWrite(new Uint8Array([round]), 5), `tryWrite refused on round ${round} (size ${q.size}): the queue is wedged`);
            assert.deepEqual([...q.tryRead()!], [round]);
          }
        } finally {
          shared.dispose();
        }
      });
    }
  });

  describe('leftovers', function () {
    const cleanup: (() => void)[] = [];
    afterEach(function () {
      for (const run of cleanup.splice(0)) {
        try {
          run();
        } catch {
          // already gone
        }
      }
    });

    it('unlinkStale removes a POSIX ring whose creator and peers were all killed, and keeps a live one', async function () {
      const dead = uniqueName('dead');
      const live = uniqueName('live');
      cleanup.push(() => fs.rmSync(`/dev/shm/${dead}`, { force: true }));
      const liveRegion = Region.create({ backing: 'posix', name: live, size: SpscRing.regionSize({ capacity: 1024 }) });
      cleanup.push(() => liveRegion.unlink());
      const liveRing = SpscRing.create(liveRegion, { capacity: 1024 });
      assert.ok(liveRing.tryWrite(new Uint8Array([42])));

      const child = start({ role: 'create-ring', backing: 'posix', name: dead, unlinkOnExit: false, then: 'block' });
      await child.next('ready');
      assert.ok(!unlinkStale({ dryRun: true }).includes(dead), 'a ring whose creator is alive was called stale');

      await kill(child);
      const info = inspect(dead);
      assert.ok(info, "the killed creator's ring is not there");
      assert.deepEqual(
        [info.creator, info.producer, info.consumer],
        [
          { pid: child.pid, alive: false },
          { pid: child.pid, alive: false },
          { pid: child.pid, alive: false },
        ],
      );
      assert.ok(isStale(info));
      assert.equal(isStale(inspect(live)!), false);

      const wouldRemove = unlinkStale({ dryRun: true });
      assert.ok(wouldRemove.includes(dead), `dry run lists ${JSON.stringify(wouldRemove)}`);
      assert.ok(!wouldRemove.includes(live), 'the dry run lists a ring this process created');
      assert.ok(fs.existsSync(`/dev/shm/${dead}`), 'the dry run removed something');

      const removed = unlinkStale();
      assert.ok(removed.includes(dead), `removed ${JSON.stringify(removed)}`);
      assert.ok(!removed.includes(live), 'removed a ring this process created');
      assert.ok(!fs.existsSync(`/dev/shm/${dead}`), 'the stale ring is still in /dev/shm');
      assert.ok(fs.existsSync(`/dev/shm/${live}`), 'the live ring was removed');
      // The live ring still works, with its message.
      const again = SpscRing.attach(Region.open({ backing: 'posix', name: live }));
      assert.deepEqual([...again.tryRead()!], [42]);
    });

    it('unlinkStale({ dir }) removes a file ring whose processes were killed, and keeps a live one', async function () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-fault-'));
      cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
      const dead = path.join(dir, 'dead-ring');
      const live = path.join(dir, 'live-ring');
      fs.writeFileSync(path.join(dir, 'not-a-ring'), 'hello');
      const liveRegion = Region.create({ backing: 'file', path: live, size: MpmcQueue.regionSize({ capacity: 4, slotSize: 8 }) });
      cleanup.push(() => liveRegion.close());
      MpmcQueue.create(liveRegion, { capacity: 4, slotSize: 8 });
      const child = start({ role: 'create-ring', backing: 'file', name: dead, unlinkOnExit: false, then: 'block' });
      await child.next('ready');
      await kill(child);
      assert.deepEqual(unlinkStale({ dir, dryRun: true }), [dead]);
      assert.ok(fs.existsSync(dead));
      assert.deepEqual(unlinkStale({ dir }), [dead]);
      assert.deepEqual(fs.readdirSync(dir).sort(), ['live-ring', 'not-a-ring']);
    });

    for (const backing of ['posix', 'file'] as const) {
      for (const then of ['return', 'exit', 'throw'] as const) {
        const how = { return: 'returns from its main module', exit: 'calls process.exit()', throw: 'dies of an uncaught exception' }[then];
        it(`a region created with unlinkOnExit disappears when its process exits (${backing}; the process ${how})`, async function () {
          const name = backing === 'posix' ? uniqueName('exit') : path.join(os.tmpdir(), uniqueName('exit'));
          const where = backing === 'posix' ? `/dev/shm/${name}` : name;
          cleanup.push(() => fs.rmSync(where, { force: true }));
          const child = start({ role: 'create-ring', backing, name, unlinkOnExit: true, then });
          await child.next('ready');
          const { code } = await child.exited;
          assert.equal(code, then === 'throw' ? 1 : 0, child.stderr);
          assert.ok(!fs.existsSync(where), `${where} is still there after its creator exited`);
        });
      }
      it(`a region created with unlinkOnExit stays after a SIGKILL, for unlinkStale to find (${backing})`, async function () {
        const name = backing === 'posix' ? uniqueName('kill') : path.join(os.tmpdir(), uniqueName('kill'));
        const where = backing === 'posix' ? `/dev/shm/${name}` : name;
        cleanup.push(() => fs.rmSync(where, { force: true }));
        const child = start({ role: 'create-ring', backing, name, unlinkOnExit: true, then: 'block' });
        await child.next('ready');
        await kill(child);
        assert.ok(fs.existsSync(where), 'a SIGKILLed process ran its exit handlers?');
        assert.ok(isStale(inspect(name)!));
      });
    }
  });
});

/** The state letter of `pid` in /proc (Z: a zombie), for failure messages. */
function processState(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? '?';
  } catch {
    return 'gone';
  }
}
