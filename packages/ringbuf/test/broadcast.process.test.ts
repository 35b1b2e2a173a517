/**
 * Broadcast across processes and threads: a publisher in this process and
 * subscriber processes (fixtures/broadcast-peer.ts) that check every
 * message by content (whole, in order, every gap counted in `lost`):
 * lossy with a subscriber slow enough to be lapped, lossless where each
 * gets everything; a lossless subscriber SIGKILLed without reading (the
 * publisher frees its slot within peerTimeoutMs and goes on); a late
 * joiner; worker_threads subscribers over a SharedArrayBuffer; and the
 * typed errors of wrong use.
 */
import { strict as assert } from 'node:assert';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { Broadcast, describeRing, SpscRing, type BroadcastPublisher } from '../src/index.js';
import { broadcastPayload, type SubscriberReport } from './fixtures/broadcast-peer.js';
import { LinePeer } from './helpers.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/broadcast-peer.js', import.meta.url));

function isCode(code: string): (err: unknown) => boolean {
  return (err) => (err as ShmringError).code === code;
}

/** Publishes messages from..to-1 with write() (lossless: waits for room), yielding to the loop now and then. */
async function publish(pub: BroadcastPublisher, from: number, to: number, options: { peerTimeoutMs?: number } = {}): Promise<void> {
  for (let i = from; i < to; i++) {
    if (!pub.tryWrite(broadcastPayload(i), i & 0xffff)) await pub.write(broadcastPayload(i), { type: i & 0xffff, ...options });
    if ((i & 0x3fff) === 0) await new Promise((r) => setImmediate(r));
  }
}

describe('Broadcast across processes', function () {
  this.timeout(120_000);
  let name: string;
  let region: Region;
  let pub: BroadcastPublisher;
  const peers: LinePeer[] = [];

  function open(capacity: number, lossless: boolean): void {
    name = `shmring-bcast-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
    region = Region.create({ backing: 'posix', name, size: Broadcast.regionSize({ capacity }) });
    pub = Broadcast.create(region, { capacity, lossless });
  }

  async function subscriber(part: string, arg = 0): Promise<LinePeer> {
    const p = new LinePeer(FIXTURE, [name, part, String(arg)]);
    peers.push(p);
    await p.line('ready');
    return p;
  }

  async function report(p: LinePeer): Promise<SubscriberReport> {
    return JSON.parse(await p.line('{')) as SubscriberReport;
  }

  afterEach(async function () {
    await Promise.all(peers.splice(0).map((p) => p.kill()));
    pub.close();
    region.close();
    region.unlink();
  });

  it('lossy: a lapped subscriber counts exactly what it missed and never sees a torn record', async function () {
    const N = 200_000;
    open(4096, false);
    const subs = [await subscriber('iter'), await subscriber('drain'), await subscriber('slow', 1)];
    await publish(pub, 0, N);
    pub.close();
    const reports = await Promise.all(subs.map(report));
    console.log(`      received/lost: ${reports.map((r) => `${r.received}/${r.lost}`).join(', ')}`);
    for (const r of reports) {
      assert.equal(r.torn, 0);
      assert.equal(r.disorder, 0);
      assert.equal(r.received + r.lost, N, 'received + lost = published');
      assert.equal(r.first, r.lostAtFirst, 'the first message came after exactly the ones counted lost');
    }
    assert.ok(reports[2]!.lost > 0, 'the slow subscriber was lapped');
  });

  it('lossless: every subscriber gets every message, checked by content', async function () {
    const N = 100_000;
    open(4096, true);
    const subs = [await subscriber('iter'), await subscriber('sync'), await subscriber('drain')];
    await publish(pub, 0, N);
    pub.close();
    for (const r of await Promise.all(subs.map(report))) {
      assert.deepEqual(r, { received: N, lost: 0, torn: 0, disorder: 0, first: 0, last: N - 1, lostAtFirst: 0 });
    }
  });

  it('lossless: a subscriber SIGKILLed without reading stops holding the publisher back once its peer check runs', async function () {
    const N = 20_000;
    open(1024, true);
    const stuck = await subscriber('hold');
    const live = await subscriber('iter');
    const started = performance.now();
    const done = publish(pub, 0, N, { peerTimeoutMs: 400 });
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(pub.published < N, 'the silent subscriber holds the publisher back');
    await stuck.kill();
    const killed = performance.now();
    await done;
    const after = performance.now() - killed;
    pub.close();
    assert.deepEqual(await report(live), { received: N, lost: 0, torn: 0, disorder: 0, first: 0, last: N - 1, lostAtFirst: 0 });
    console.log(`      all ${N} published ${Math.round(after)} ms after the kill (${Math.round(killed - started)} ms before it)`);
    assert.ok(after < 5000, `the publisher was held back ${Math.round(after)} ms after the kill`);
  });

  it('a late subscriber starts at the next message published', async function () {
    open(4096, false);
    await publish(pub, 0, 10);
    const late = await subscriber('iter');
    await publish(pub, 10, 20);
    pub.close();
    assert.deepEqual(await report(late), { received: 10, lost: 0, torn: 0, disorder: 0, first: 10, last: 19, lostAtFirst: 0 });
  });
});

describe('Broadcast across worker threads', function () {
  this.timeout(60_000);

  for (const lossless of [false, true]) {
    it(`worker_threads subscribers over a SharedArrayBuffer region (${lossless ? 'lossless' : 'lossy'})`, async function () {
      const N = 50_000;
      const sabRegion = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity: 4096 }) });
      const sabPub = Broadcast.create(sabRegion, { capacity: 4096, lossless });
      const workers = ['iter', 'sync'].map((part) => new Worker(FIXTURE, { workerData: { sab: sabRegion.buffer, part, arg: 0 } }));
      const lines = workers.map((w) => {
        const got: string[] = [];
        w.on('message', (line: string) => got.push(line));
        w.on('error', (err) => got.push(`error ${String(err)}`));
        return got;
      });
      const line = async (i: number, prefix: string): Promise<string> => {
        for (;;) {
          const found = lines[i]!.find((l) => l.startsWith(prefix) || l.startsWith('error'));
          if (found !== undefined) return found;
          await new Promise((r) => setTimeout(r, 5));
        }
      };
      try {
        await Promise.all([line(0, 'ready'), line(1, 'ready')]);
        await publish(sabPub, 0, N);
        sabPub.close();
        for (let i = 0; i < workers.length; i++) {
          const r = JSON.parse(await line(i, '{')) as SubscriberReport;
          assert.equal(r.torn, 0);
          assert.equal(r.disorder, 0);
          assert.equal(r.received + r.lost, N);
          if (lossless) assert.equal(r.received, N);
        }
      } finally {
        await Promise.all(workers.map((w) => w.terminate()));
        sabPub.close();
        sabRegion.close();
      }
    });
  }
});

describe('Broadcast: wrong use', function () {
  let region: Region;
  beforeEach(function () {
    region = Region.create({ backing: 'memfd', size: Broadcast.regionSize({ capacity: 1024 }) });
  });
  afterEach(function () {
    region.close();
  });

  it('refuses a capacity that is not a power of two, or of the wrong type, naming it', function () {
    assert.throws(
      () => Broadcast.create(region, { capacity: 1000 }),
      (err: ShmringError) => err instanceof RangeError && err.code === ErrorCodes.INVALID_ARGUMENT && /capacity=1000/.test(err.message),
    );
    assert.throws(
      () => Broadcast.regionSize({ capacity: '1024' as unknown as number }),
      (err: ShmringError) => err instanceof TypeError && isCode(ErrorCodes.INVALID_ARGUMENT)(err),
    );
    assert.throws(
      () => Broadcast.create(region, { capacity: 1024, lossless: 'yes' as unknown as boolean }),
      (err: ShmringError) => err instanceof TypeError && /lossless/.test(err.message),
    );
    assert.throws(
      () => Broadcast.create(region, { capacity: 1024, subscribers: -1 }),
      (err: ShmringError) => err instanceof RangeError && /subscribers/.test(err.message),
    );
  });

  it('refuses a message larger than half the ring, a wrong type and a non-Uint8Array, writing nothing', function () {
    const pub = Broadcast.create(region, { capacity: 1024 });
    const sub = Broadcast.subscribe(region);
    assert.throws(() => pub.tryWrite(new Uint8Array(pub.maxMessageLength + 1)), isCode(ErrorCodes.MESSAGE_TOO_LARGE));
    assert.throws(
      () => pub.tryWrite(new Uint8Array(1), -1),
      (err: ShmringError) => err instanceof RangeError && /type=-1/.test(err.message),
    );
    assert.throws(
      () => pub.tryWrite('hi' as unknown as Uint8Array),
      (err: ShmringError) => err instanceof TypeError && isCode(ErrorCodes.INVALID_ARGUMENT)(err),
    );
    assert.equal(sub.tryRead(), null);
    assert.ok(pub.tryWrite(new Uint8Array(pub.maxMessageLength)));
    assert.equal(sub.tryRead()!.length, pub.maxMessageLength);
    sub.close();
    pub.close();
  });

  it('the wrong end of a Broadcast, a second live publisher and a region holding another kind are typed errors', function () {
    const pub = Broadcast.create(region, { capacity: 1024 });
    const sub = Broadcast.subscribe(region);
    assert.throws(
      () => pub.tryRead(),
      (err: ShmringError) => err.code === ErrorCodes.INVALID_ARGUMENT && /publisher/.test(err.message),
    );
    assert.throws(
      () => sub.tryWrite(new Uint8Array(1)),
      (err: ShmringError) => err.code === ErrorCodes.INVALID_ARGUMENT && /subscriber/.test(err.message),
    );
    assert.throws(() => Broadcast.create(region, { capacity: 1024 }), isCode(ErrorCodes.BUSY));
    assert.ok(pub.tryWrite(new Uint8Array([7])), 'the refused create touched nothing');
    assert.deepEqual(sub.tryRead(), new Uint8Array([7]));
    sub.close();
    pub.close();
    const other = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity: 1024 }) });
    SpscRing.create(other, { capacity: 1024 }).close();
    assert.throws(
      () => Broadcast.subscribe(other),
      (err: ShmringError) => err.code === ErrorCodes.WRONG_KIND && /SpscRing/.test(err.message),
    );
    other.close();
    const empty = Region.create({ backing: 'memfd', size: 4096 });
    assert.throws(() => Broadcast.subscribe(empty), isCode(ErrorCodes.NOT_A_RING));
    empty.close();
  });

  it('lossless: no free slot is ERR_SHMRING_BUSY saying to raise `subscribers`; a slot freed by close is reused', function () {
    const small = Region.create({ backing: 'memfd', size: Broadcast.regionSize({ capacity: 256, subscribers: 1 }) });
    const pub = Broadcast.create(small, { capacity: 256, lossless: true, subscribers: 1 });
    const first = Broadcast.subscribe(small);
    assert.throws(
      () => Broadcast.subscribe(small),
      (err: ShmringError) => err.code === ErrorCodes.BUSY && /subscribers/.test(err.message),
    );
    first.close();
    const second = Broadcast.subscribe(small);
    assert.ok(pub.tryWrite(new Uint8Array([1])));
    assert.deepEqual(second.tryRead(), new Uint8Array([1]));
    second.close();
    pub.close();
    small.close();
  });
});

describe('Broadcast: inspect', function () {
  it("describeRing shows the kind, the mode and each subscriber's cursor and lag", function () {
    const region = Region.create({ backing: 'memfd', size: Broadcast.regionSize({ capacity: 1024, subscribers: 4 }) });
    const pub = Broadcast.create(region, { capacity: 1024, lossless: true, subscribers: 4 });
    const behind = Broadcast.subscribe(region);
    const current = Broadcast.subscribe(region);
    for (let i = 0; i < 3; i++) assert.ok(pub.tryWrite(new Uint8Array(24))); // 32-byte records
    while (current.tryRead() !== null);
    const info = describeRing(region, 'bcast')!;
    assert.equal(info.kind, 'Broadcast');
    assert.equal(info.producerPosition, 96);
    assert.equal(info.used, 96);
    assert.deepEqual(info.broadcast, {
      lossless: true,
      slots: 4,
      subscribers: [
        { slot: 0, pid: process.pid, alive: true, cursor: 0, lag: 96 },
        { slot: 1, pid: process.pid, alive: true, cursor: 96, lag: 0 },
      ],
    });
    behind.close();
    assert.deepEqual(
      describeRing(region, 'bcast')!.broadcast!.subscribers.map((s) => s.slot),
      [1],
    );
    current.close();
    pub.close();
    region.close();
  });
});
