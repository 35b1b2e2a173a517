/**
 * One owner per role, and liveness the kernel vouches for: an SpscRing's
 * producer and consumer hold open file description locks on their bytes of
 * the region's file (docs/LAYOUT.md, "Liveness"). A second live owner gets
 * ERR_SHMRING_BUSY before it touches anything; the role is free again once
 * its owner closes, detaches, is collected, or dies; and a process in
 * another PID namespace (unshare) counts as alive for the peer, inspect
 * and unlink-stale, and as dead once it is killed.
 */
import { strict as assert } from 'node:assert';
import { fileURLToPath } from 'node:url';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { inspect, isStale, SpscRing, unlinkStale } from '../src/index.js';
import { LinePeer, UNSHARE, unshareRefused } from './helpers.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/role-peer.js', import.meta.url));
const CAPACITY = 1024;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('one owner per role, and liveness the kernel vouches for (OFD locks)', function () {
  this.timeout(60_000);
  let name: string;
  let region: Region;
  const peers: LinePeer[] = [];
  const rings: SpscRing[] = [];

  beforeEach(function () {
    name = `shmring-roles-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
    region = Region.create({ backing: 'posix', name, size: SpscRing.regionSize({ capacity: CAPACITY }) });
    rings.push(SpscRing.create(region, { capacity: CAPACITY }));
  });

  afterEach(async function () {
    for (const peer of peers.splice(0)) await peer.kill();
    for (const ring of rings.splice(0)) ring.detach();
    region.close();
    try {
      region.unlink();
    } catch {
      // removed by the test (unlink-stale)
    }
  });

  function attach(on = region): SpscRing {
    const ring = SpscRing.attach(on);
    rings.push(ring);
    return ring;
  }

  function start(args: string[], prefix?: string[]): LinePeer {
    const peer = new LinePeer(FIXTURE, [name, ...args], prefix);
    peers.push(peer);
    return peer;
  }

  it('a second SpscRing consumer in another process gets ERR_SHMRING_BUSY at once, and nothing is taken from the first', async function () {
    const producer = rings[0]!;
    for (let i = 0; i < 3; i++) assert.ok(producer.tryWrite(new Uint8Array([i])));
    const first = start(['consumer']);
    await first.line('ready');
    assert.equal(producer.size, 2 * 16);
    const second = start(['consumer']);
    assert.equal(await second.line('busy'), `busy ${ErrorCodes.BUSY}`);
    const here = attach();
    assert.throws(
      () => here.tryRead(),
      (err: ShmringError) => {
        assert.equal(err.code, ErrorCodes.BUSY);
        assert.match(err.message, /consumer role of the ring in POSIX shared memory object '[^']+' is held by another live object/);
        assert.ok(err.message.endsWith(` (\`shmring inspect ${name}\` shows who holds it)`), err.message);
        return true;
      },
    );
    assert.throws(() => here.drain(() => {}), { code: ErrorCodes.BUSY });
    await assert.rejects(here.read({ timeoutMs: 1000 }), { code: ErrorCodes.BUSY });
    assert.equal(producer.size, 2 * 16, 'a refused consumer took a message');
  });

  it("does not point at `shmring inspect <name>` once the ring's name is unlinked (inspect would say ENOENT)", async function () {
    const first = start(['consumer']);
    await first.line('ready');
    region.unlink();
    const here = attach();
    assert.throws(
      () => here.tryRead(),
      (err: ShmringError) => {
        assert.equal(err.code, ErrorCodes.BUSY);
        assert.match(err.message, /is held by another live object/);
        assert.ok(!err.message.includes('shmring inspect'), err.message);
        return true;
      },
    );
  });

  it('a second producer object of the same process gets ERR_SHMRING_BUSY before it writes anything', function () {
    const first = rings[0]!;
    assert.ok(first.tryWrite(new Uint8Array([1])));
    const second = attach();
    assert.throws(() => second.tryWrite(new Uint8Array([2])), { code: ErrorCodes.BUSY });
    assert.throws(() => second.claim(8), { code: ErrorCodes.BUSY });
    assert.throws(() => second.writeSync(new Uint8Array([2])), { code: ErrorCodes.BUSY });
    assert.equal(first.size, 16);
    // The roles are distinct: the second object may still be the consumer.
    assert.deepEqual([...second.tryRead()!], [1]);
  });

  it('frees the role for the next owner once its process is SIGKILLed', async function () {
    rings[0]!.tryWrite(new Uint8Array([1]));
    rings[0]!.tryWrite(new Uint8Array([2]));
    const owner = start(['consumer']);
    await owner.line('ready');
    const next = attach();
    assert.throws(() => next.tryRead(), { code: ErrorCodes.BUSY });
    await owner.kill();
    assert.deepEqual([...next.tryRead()!], [2]);
  });

  it('detach() frees the role and leaves the ring open: the next consumer goes on where the first stopped', async function () {
    const producer = rings[0]!;
    for (let i = 0; i < 4; i++) producer.tryWrite(new Uint8Array([i]));
    const first = attach();
    assert.deepEqual([...first.tryRead()!], [0]);
    first.detach();
    assert.throws(() => first.tryRead(), { code: ErrorCodes.CLOSED });
    const second = attach();
    assert.deepEqual([...second.tryRead()!], [1]);
    // A reader parked while the producer role is empty after a detach waits for the next producer.
    producer.detach();
    for (const m of [2, 3]) assert.deepEqual([...second.tryRead()!], [m]);
    const reading = second.read({ peerTimeoutMs: 20, timeoutMs: 10_000 });
    await sleep(300);
    attach().tryWrite(new Uint8Array([9]));
    assert.deepEqual([...(await reading)], [9]);
    // close() frees the role too, and ends the ring for both sides.
    second.close();
    const third = attach();
    assert.equal(third.tryRead(), null);
    assert.equal(third.closed, true);
  });

  it("a region's close() frees the roles of the rings in it", function () {
    const other = Region.open({ backing: 'posix', name });
    const consumer = attach(other);
    rings[0]!.tryWrite(new Uint8Array([5]));
    consumer.tryRead();
    assert.throws(() => attach().tryRead(), { code: ErrorCodes.BUSY });
    other.close();
    rings[0]!.tryWrite(new Uint8Array([6]));
    assert.deepEqual([...attach().tryRead()!], [6]);
  });

  it('a ring object dropped without close() frees its role when it is collected', async function () {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    rings[0]!.tryWrite(new Uint8Array([1]));
    rings[0]!.tryWrite(new Uint8Array([2]));
    (() => {
      SpscRing.attach(region).tryRead(); // the consumer, dropped at once
    })();
    assert.throws(() => SpscRing.attach(region).tryRead(), { code: ErrorCodes.BUSY });
    const next = attach();
    for (let i = 0; i < 50; i++) {
      gc();
      await sleep(10); // finalizers run in a later task
      try {
        assert.deepEqual([...next.tryRead()!], [2]);
        return;
      } catch (err) {
        if ((err as ShmringError).code !== ErrorCodes.BUSY) throw err;
      }
    }
    assert.fail('the dropped consumer still holds the role after 50 collections');
  });

  it('counts a producer in another PID namespace (unshare --pid) as alive for the consumer, inspect and unlink-stale, and as dead once killed', async function () {
    const why = unshareRefused();
    if (why !== undefined) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    for (const ring of rings.splice(0)) ring.detach(); // only the namespaced producer holds the ring now
    const producer = start(['producer', '1'], UNSHARE);
    await producer.line('ready');
    const info = inspect(name)!;
    assert.equal(info.held, true);
    assert.equal(info.producer?.alive, true, `producer ${JSON.stringify(info.producer)}`);
    assert.equal(info.producer?.pid, 1, 'the producer wrote its pid in its own namespace');
    assert.equal(isStale(info), false);
    assert.ok(!unlinkStale({ dryRun: true }).includes(name), 'unlink-stale would remove a ring a live process holds');
    const consumer = attach();
    assert.deepEqual([...consumer.tryRead()!], [0]);
    let settled = false;
    const reading = consumer.read({ peerTimeoutMs: 100, timeoutMs: 20_000 }).finally(() => (settled = true));
    reading.catch(() => {});
    await sleep(1500);
    assert.equal(settled, false, 'the consumer took the live producer for dead');
    await producer.kill();
    await assert.rejects(reading, { code: ErrorCodes.PEER_DEAD });
    assert.equal(inspect(name)!.producer?.alive, false);
    for (const ring of rings.splice(0)) ring.detach();
    // Not stale while a process has its region open by name (it may attach again): close ours.
    assert.equal(isStale(inspect(name)!), false);
    region.close();
    // Stale once nothing has it open. A mapping holds its file open (and so the name lock, on the region's
    // own description): the addon unmaps in close(); the koffi backend once the wait it just cancelled returns.
    for (let i = 0; i < 100 && !isStale(inspect(name)!); i++) await sleep(20);
    assert.equal(isStale(inspect(name)!), true);
    assert.deepEqual(
      unlinkStale().filter((n) => n === name),
      [name],
    );
  });

  it('a consumer in another PID namespace is not taken for dead by a parked writer, and its role is BUSY to others', async function () {
    const why = unshareRefused();
    if (why !== undefined) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    const producer = rings[0]!;
    const consumer = start(['consumer'], UNSHARE);
    await consumer.line('ready');
    assert.throws(() => attach().tryRead(), { code: ErrorCodes.BUSY });
    while (producer.tryWrite(new Uint8Array(100))) {
      /* fill */
    }
    let settled = false;
    const writing = producer.write(new Uint8Array(100), { peerTimeoutMs: 100, timeoutMs: 20_000 }).finally(() => (settled = true));
    writing.catch(() => {});
    await sleep(1500);
    assert.equal(settled, false, 'the writer took the live consumer for dead');
    await consumer.kill();
    await assert.rejects(writing, { code: ErrorCodes.PEER_DEAD });
  });
});
