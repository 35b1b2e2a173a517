/**
 * A new publisher takes over a Broadcast whose publisher let go of it
 * (detach()) or died (SIGKILL): Broadcast.create on the region goes on
 * after the last record published, so every subscriber, in this thread
 * and in a child process, keeps `received + lost` equal to what was
 * published, in order, none torn; lossless slots survive, so the new
 * publisher waits for a slow live subscriber. What cannot be taken over
 * while subscribers hold it is a typed error that touches nothing: other
 * options, a Broadcast its publisher closed (a record left half-written
 * is repaired: broadcast-repair.test.ts). Nobody holding it, create lays
 * out a new one.
 */
import { strict as assert } from 'node:assert';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, FileLocks, Region, type ShmringError } from '@shmring/core';
import * as L from '../src/layout.js';
import { Broadcast, type BroadcastPublisher, type BroadcastSubscriber } from '../src/index.js';
import { broadcastPayload, Tally, type SubscriberReport } from './fixtures/broadcast-peer.js';
import { assertCounted, BroadcastPerTest, LinePeer } from './helpers.js';

const SUBSCRIBER = fileURLToPath(new URL('./fixtures/broadcast-peer.js', import.meta.url));
const PUBLISHER = fileURLToPath(new URL('./fixtures/broadcast-publisher.js', import.meta.url));
const CAPACITY = 4096;

/** Publishes messages from..to-1 (lossless: waiting for room), yielding to the loop now and then so the subscribers of this thread read. */
async function publish(pub: BroadcastPublisher, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i++) {
    if (!pub.tryWrite(broadcastPayload(i), i & 0xffff)) await pub.write(broadcastPayload(i), { type: i & 0xffff });
    if ((i & 0x3ff) === 0) await new Promise((r) => setImmediate(r));
  }
}

/** A subscriber of this thread reading with for await until the Broadcast is closed (a dead publisher is waited for). */
function readAll(sub: BroadcastSubscriber): Promise<SubscriberReport> {
  const tally = new Tally(sub);
  return (async () => {
    for await (const msg of sub.messages({ peerTimeoutMs: 600_000 })) tally.see(msg, sub.lastType);
    return tally.report();
  })();
}

function isCode(code: string): (err: unknown) => boolean {
  return (err) => (err as ShmringError).code === code;
}

describe('Broadcast: a new publisher takes over', function () {
  this.timeout(120_000);
  const t = new BroadcastPerTest('shmring-bcast-takeover', CAPACITY);
  const create = (lossless: boolean): BroadcastPublisher => t.create(lossless);
  const subscribe = (): BroadcastSubscriber => t.subscribe();

  /** A subscriber process: `patient` (for await, waiting for a dead publisher's successor) or `slow` (pausing `arg` ms every 64 messages). */
  async function childSubscriber(part: 'patient' | 'slow' = 'patient', arg = 0): Promise<LinePeer> {
    const p = new LinePeer(SUBSCRIBER, [t.name, part, String(arg)]);
    t.peer(p);
    await p.line('ready');
    return p;
  }

  function check(r: SubscriberReport, published: number, lossless: boolean): void {
    if (lossless) {
      assert.deepEqual(r, { received: published, lost: 0, torn: 0, disorder: 0, first: 0, last: published - 1, lostAtFirst: 0 });
      return;
    }
    assertCounted(r, published, lossless ? 'lossless' : 'lossy');
    assert.equal(r.first, r.lostAtFirst, 'the first message came after exactly the ones counted lost');
  }

  for (const lossless of [false, true]) {
    const mode = lossless ? 'lossless' : 'lossy';

    it(`${mode}: subscribers here and in a child process lose nothing uncounted across detach() and a new publisher`, async function () {
      const N = 30_000;
      const first = create(lossless);
      const here = readAll(subscribe());
      const child = await childSubscriber();
      await publish(first, 0, N / 3);
      first.detach();
      const second = create(lossless);
      const resumed = second.published;
      await publish(second, N / 3, (2 * N) / 3);
      second.detach();
      const third = create(lossless);
      await publish(third, (2 * N) / 3, N);
      third.close();
      check(await here, N, lossless);
      check(JSON.parse(await child.line('{')) as SubscriberReport, N, lossless);
      assert.deepEqual([resumed, third.published], [N / 3, N], 'each new publisher goes on from the records published');
    });

    it(`${mode}: subscribers here and in a child process lose nothing uncounted when the publisher's process is SIGKILLed and a new one takes over`, async function () {
      const N = 30_000;
      const first = create(lossless);
      const here = readAll(subscribe());
      const child = await childSubscriber();
      await publish(first, 0, N / 3);
      first.detach(); // the child process takes the role over, publishes, and is killed holding it
      const killed = new LinePeer(PUBLISHER, [t.name, String(CAPACITY), String(lossless), String(N / 3), String((2 * N) / 3)]);
      t.peer(killed);
      assert.equal(await killed.line('published'), `published ${(2 * N) / 3}`);
      await killed.kill();
      const last = create(lossless);
      const resumed = last.published;
      await publish(last, (2 * N) / 3, N);
      last.close();
      check(await here, N, lossless);
      check(JSON.parse(await child.line('{')) as SubscriberReport, N, lossless);
      assert.equal(resumed, (2 * N) / 3, 'the new publisher goes on from the records published');
    });
  }

  it('lossless: the slots survive a takeover, so the new publisher waits for a slow live subscriber', async function () {
    const first = create(true);
    const sub = subscribe();
    const message = new Uint8Array(248); // 256-byte records: 16 fill the ring
    let sent = 0;
    while (first.tryWrite(message, sent)) sent++;
    assert.equal(sent, CAPACITY / 256);
    first.detach();
    const second = create(true);
    assert.equal(second.tryWrite(message, sent), false, 'the new publisher would overwrite what the subscriber has not read');
    const writing = second.write(message, { type: sent, timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 50));
    for (let i = 0; i <= sent; i++) {
      const got = sub.tryRead() ?? (await sub.read({ timeoutMs: 10_000 }));
      assert.equal(got.length, message.length);
      assert.equal(sub.lastType, i, 'every record, in order');
      if (i === 0) await writing; // the read made room: the parked write went in
    }
    assert.deepEqual([sub.received, sub.lost], [sent + 1, 0]);
  });

  it('lossless: a child-process subscriber that reads slowly is waited for across the takeover', async function () {
    const first = create(true);
    const child = await childSubscriber('slow', 2);
    const N = 6_000;
    await publish(first, 0, N / 2);
    first.detach();
    const second = create(true);
    await publish(second, N / 2, N);
    second.close();
    check(JSON.parse(await child.line('{')) as SubscriberReport, N, true);
  });

  it('a create with other options while subscribers hold the Broadcast is ERR_SHMRING_INVALID_ARGUMENT and touches nothing', function () {
    const first = create(false);
    const sub = subscribe();
    assert.ok(first.tryWrite(new Uint8Array([1])));
    first.detach();
    const refused = (what: RegExp) => (err: ShmringError) =>
      err.code === ErrorCodes.INVALID_ARGUMENT &&
      /holds a Broadcast of capacity=4096, subscribers=16, lossless=false/.test(err.message) &&
      what.test(err.message);
    assert.throws(() => Broadcast.create(t.region, { capacity: CAPACITY, lossless: true }), refused(/lossless=true/));
    assert.throws(() => Broadcast.create(t.region, { capacity: CAPACITY / 2 }), refused(/capacity=2048/));
    assert.throws(() => Broadcast.create(t.region, { capacity: CAPACITY / 2, subscribers: 8 }), refused(/subscribers=8/));
    const again = create(false); // the refusals let go of the role
    assert.ok(again.tryWrite(new Uint8Array([2])));
    assert.deepEqual([[...sub.tryRead()!], [...sub.tryRead()!]], [[1], [2]], 'nothing was overwritten');
    again.close();
    sub.close();
    const other = Broadcast.create(t.region, { capacity: CAPACITY / 2, lossless: true }); // nobody holds it: laid out anew
    t.track(other);
    assert.deepEqual([other.capacity, other.lossless, other.published], [CAPACITY / 2, true, 0]);
  });

  it('a create over a Broadcast its publisher closed is ERR_SHMRING_CLOSED while subscribers hold it; then a new one', async function () {
    const first = create(false);
    const sub = subscribe();
    assert.ok(first.tryWrite(new Uint8Array([1])));
    first.close();
    assert.throws(
      () => Broadcast.create(t.region, { capacity: CAPACITY }),
      (err: ShmringError) => err.code === ErrorCodes.CLOSED && /closed by its publisher.*not reopened/.test(err.message),
    );
    assert.deepEqual([...(await sub.read())], [1], 'what was published before the close is still read');
    await assert.rejects(sub.read(), isCode(ErrorCodes.CLOSED));
    sub.close();
    const next = create(false);
    assert.equal(next.published, 0, 'a new Broadcast');
    assert.equal(next.closed, false);
    const fresh = subscribe();
    assert.ok(next.tryWrite(new Uint8Array([2])));
    assert.deepEqual([...fresh.tryRead()!], [2]);
  });

  it('a subscriber does not join while a creator holds the ring exclusively to lay it out, and joins once it lets go', async function () {
    const pub = create(false);
    pub.detach(); // nobody holds the ring now: a create would lay out a new one, holding it exclusively meanwhile
    const creator = FileLocks.open(t.region)!;
    try {
      assert.ok(creator.lock(L.HOLDER_LOCK_OFFSET, false), 'held the ring exclusively, as a creator laying it out does');
      const p = new LinePeer(SUBSCRIBER, [t.name, 'hold', '0']);
      t.peer(p);
      const early = await Promise.race([p.line('ready').then(() => true), new Promise((r) => setTimeout(() => r(false), 400))]);
      assert.equal(early, false, 'the subscriber read the header while a creator was laying the ring out');
      creator.release();
      await p.line('ready', 5_000);
    } finally {
      creator.release();
    }
  });

  it("lossless: a create over a Broadcast nobody holds lays out a new one: a dead subscriber's slot is not carried over", async function () {
    const first = create(true);
    const dead = await childSubscriber('slow', 60_000); // takes a slot, then reads nothing for a minute
    for (let i = 0; i < 10; i++) assert.ok(first.tryWrite(new Uint8Array(64)));
    await dead.kill(); // SIGKILL: its slot keeps its owner and a cursor far behind
    first.detach();
    const next = create(true);
    const started = performance.now();
    for (let i = 0; i < 200; i++) assert.ok(next.tryWrite(new Uint8Array(64)), `tryWrite ${i} found the ring full`);
    assert.ok(performance.now() - started < 500);
  });

  it('peerTimeoutMs set on a publisher is checked like the option', function () {
    const pub = create(true);
    for (const bad of [Number.NaN, -1, '5' as unknown as number]) {
      assert.throws(() => {
        pub.peerTimeoutMs = bad;
      }, isCode(ErrorCodes.INVALID_ARGUMENT));
    }
    pub.peerTimeoutMs = 50;
    assert.equal(pub.peerTimeoutMs, 50);
  });
});

describe('Broadcast: a new publisher takes over in a SharedArrayBuffer', function () {
  it('a lossy subscriber without a slot reads on across a takeover: no new layout under it, no torn record', function () {
    const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity: 256, subscribers: 0 }) });
    let pub = Broadcast.create(region, { capacity: 256, subscribers: 0 });
    const sub = Broadcast.subscribe(region); // no slot: nothing in the region says it is there
    assert.ok(pub.tryWrite(new Uint8Array(16), 1));
    assert.ok(sub.tryRead());
    pub.detach();
    pub = Broadcast.create(region, { capacity: 256, subscribers: 0 });
    // Payloads that read as record headers if the subscriber's cursor were left in a new layout.
    for (let i = 0; i < 4; i++) assert.ok(pub.tryWrite(new Uint8Array(new Int32Array([12, 5]).buffer), 2));
    const types: number[] = [];
    for (let m = sub.tryRead(); m !== null; m = sub.tryRead()) {
      assert.equal(m.length, 8);
      types.push(sub.lastType);
    }
    assert.deepEqual(types, [2, 2, 2, 2]);
    assert.deepEqual([sub.received + sub.lost, pub.published], [5, 5]);
    sub.close();
    pub.close();
    region.close();
  });

  it('a subscriber keeps every message across detach() and a new publisher, and a live publisher is still ERR_SHMRING_BUSY', function () {
    const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity: 256 }) });
    const first = Broadcast.create(region, { capacity: 256, lossless: true });
    const sub = Broadcast.subscribe(region);
    const got: number[] = [];
    let n = 0;
    for (const pub of [first, null, null]) {
      const p = pub ?? Broadcast.create(region, { capacity: 256, lossless: true });
      assert.throws(() => Broadcast.create(region, { capacity: 256, lossless: true }), isCode(ErrorCodes.BUSY));
      for (let i = 0; i < 100; i++, n++) {
        if (!p.tryWrite(new Uint8Array([n & 0xff]), n)) {
          while (sub.tryRead() !== null) got.push(sub.lastType);
          assert.ok(p.tryWrite(new Uint8Array([n & 0xff]), n));
        }
      }
      p.detach();
    }
    while (sub.tryRead() !== null) got.push(sub.lastType);
    assert.deepEqual(
      got,
      Array.from({ length: n }, (_, i) => i),
    );
    assert.deepEqual([sub.received, sub.lost], [n, 0]);
    sub.close();
    region.close();
  });
});
