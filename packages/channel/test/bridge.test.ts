/**
 * The ring ↔ NATS bridge against a real nats-server: ring → NATS → ring in
 * order with nothing lost; with JetStream, exactly once while the bridges
 * are SIGKILLed and restarted and the server restarted mid-stream; records
 * published from the ring in place are never changed by the writes that
 * reuse their bytes; a dedicated bridge parks its thread while idle, costs
 * no CPU, and still takes sparse records and stops on abort; the ring fills (back-pressure) while the server is
 * down, the bridge says so once per outage, and what the client had not
 * sent goes out once NATS is back; endpoints that are wrong or lead nowhere give typed
 * errors that name them.
 */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, Region } from '@shmring/core';
import { AckPolicy, connect, DeliverPolicy, headers, type Msg, type RetentionPolicy } from 'nats';
import type { SpscRing } from '@shmring/ringbuf';
import { bridge } from '../src/index.js';
import { CONSUMER_INACTIVE_MS, CONSUMER_TAG, defaultConsumer } from '../src/bridge/bridge.js';
import { randomBytes, rejectsWith, sleep, waitUntil } from './helpers.js';
import { TestRings } from './bridge-rings.js';
import { freePort, NatsServer, sharedNats, skipWithoutNats, uniqueSubject } from './nats-server.js';

const BRIDGE_BIN = fileURLToPath(new URL('../../bin/shmring-bridge.js', import.meta.url));
const CAPACITY = 1 << 16;

const rings = new TestRings('bridge-test', CAPACITY);

function message(i: number): Uint8Array {
  const bytes = new Uint8Array(16);
  new DataView(bytes.buffer).setUint32(0, i, true);
  bytes.fill(i & 0xff, 4);
  return bytes;
}

/** Writes messages 0..count-1 (type i % 7) as the ring lets it. */
async function produce(ring: SpscRing, count: number, signal: AbortSignal): Promise<void> {
  for (let i = 0; i < count; i++) {
    const bytes = message(i);
    if (!ring.tryWrite(bytes, i % 7)) await ring.write(bytes, { type: i % 7, signal, peerTimeoutMs: Infinity });
  }
}

/** Reads `count` messages and checks each is the next one, whole, with its type. */
async function consumeInOrder(ring: SpscRing, count: number, signal: AbortSignal): Promise<void> {
  let next = 0;
  while (next < count) {
    const bytes = await ring.read({ signal, peerTimeoutMs: Infinity });
    const i = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
    assert.equal(i, next, `message ${next} expected, got ${i} (a loss, a duplicate or a reordering)`);
    assert.equal(ring.lastType, i % 7, `message ${i} lost its type`);
    assert.equal(bytes.length, 16);
    assert.ok(
      bytes.subarray(4).every((b) => b === (i & 0xff)),
      `message ${i} changed`,
    );
    next++;
  }
}

/** A header saying the record type `type`, as the bridge reads it. */
function typeHeader(type: number): ReturnType<typeof headers> {
  const h = headers();
  h.set('Shmring-Type', String(type));
  return h;
}

/** Waits until the asynchronous `condition` holds (for at most 15 s). */
async function until(condition: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = performance.now() + 15_000;
  while (!(await condition())) {
    if (performance.now() > deadline) assert.fail(`timed out after 15 s waiting for ${what}`);
    await sleep(20);
  }
}

/** `shmring-bridge from to` as a child process; resolves once it runs. */
class BridgeProcess {
  child!: ChildProcess;
  stderr = '';
  constructor(
    readonly from: string,
    readonly to: string,
    readonly flags: string[] = [],
  ) {}
  async start(): Promise<void> {
    this.child = spawn(process.execPath, [BRIDGE_BIN, ...this.flags, this.from, this.to], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    await waitUntil(
      () => this.stderr.includes(': running') || this.child.exitCode !== null,
      `the bridge ${this.from} → ${this.to} to start`,
    );
    assert.ok(this.child.exitCode === null, `the bridge exited: ${this.stderr}`);
  }
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = once(this.child, 'exit');
    this.child.kill(signal);
    await exited;
  }
}

describe('bridge', function () {
  this.timeout(60_000);
  let nats: NatsServer;
  const stop = new AbortController();
  let controller: AbortController;
  const children: BridgeProcess[] = [];

  before(async function () {
    skipWithoutNats(this);
    nats = await sharedNats();
  });

  beforeEach(function () {
    controller = new AbortController();
  });

  afterEach(async function () {
    controller.abort();
    await Promise.all(children.splice(0).map((c) => c.kill()));
    rings.clean();
  });

  after(() => stop.abort());

  it('100 k messages ring → NATS → ring arrive in order, none lost, each with its type', async function () {
    const a = rings.make();
    const b = rings.make();
    const subject = uniqueSubject('bridge');
    const N = 100_000;
    const running: Array<Promise<void>> = [];
    await new Promise<void>((ready) =>
      running.push(bridge(nats.url(subject), `shm:${b.name}`, { signal: controller.signal, onReady: ready })),
    );
    await new Promise<void>((ready) =>
      running.push(bridge(`shm:${a.name}`, nats.url(subject), { signal: controller.signal, onReady: ready })),
    );
    await Promise.all([produce(a.ring, N, controller.signal), consumeInOrder(b.ring, N, controller.signal)]);
    controller.abort();
    await Promise.all(running);
  });

  it('with a poll window (bridge(…, { poll }), shmring bridge --poll) messages still arrive in order, sparse ones too', async function () {
    const a = rings.make();
    const b = rings.make();
    const subject = uniqueSubject('poll');
    const running: Array<Promise<void>> = [];
    await new Promise<void>((ready) =>
      running.push(bridge(nats.url(subject), `shm:${b.name}`, { signal: controller.signal, onReady: ready, poll: 2000 })),
    );
    const out = new BridgeProcess(`shm:${a.name}`, nats.url(subject), ['--poll', '2000']);
    children.push(out);
    await out.start();
    const N = 2000;
    const producing = (async () => {
      for (let i = 0; i < N; i++) {
        if (i % 100 === 0) await sleep(3); // now and then a gap longer than the default poll window
        const bytes = message(i);
        if (!a.ring.tryWrite(bytes, i % 7)) await a.ring.write(bytes, { type: i % 7, signal: controller.signal, peerTimeoutMs: Infinity });
      }
    })();
    await Promise.all([producing, consumeInOrder(b.ring, N, controller.signal)]);
    controller.abort();
    await Promise.all(running);
  });

  it('a record published from the ring in place is never changed by the writes that reuse its bytes', async function () {
    // The bridge (a process of its own) lends the client views of the ring; the producer writes as fast as
    // the ring lets it, over and over the same bytes (a 64 KiB ring, 3000 messages of up to 30 KB).
    const a = rings.make();
    const subject = uniqueSubject('inplace');
    const N = 3000;
    const sizeOf = (i: number): number => (i % 8 === 0 ? 12_000 + ((i * 7919) % 18_000) : 4 + ((i * 131) % 3000));
    const expected = (i: number): Buffer => {
      const bytes = randomBytes(i + 1, sizeOf(i));
      bytes.writeUInt32LE(i, 0);
      return bytes;
    };
    const nc = await connect({ servers: `127.0.0.1:${nats.port}` });
    try {
      let next = 0;
      let failure: Error | undefined;
      nc.subscribe(subject, {
        callback: (err, msg: Msg) => {
          if (err !== null || failure !== undefined) return;
          try {
            const i = next++;
            assert.equal(
              Buffer.from(msg.data.buffer, msg.data.byteOffset, 4).readUInt32LE(0),
              i,
              `message ${i} expected (a loss or a reordering)`,
            );
            assert.ok(Buffer.from(msg.data).equals(expected(i)), `message ${i} (${msg.data.length} bytes) changed after it was published`);
            assert.equal(msg.headers?.get('Shmring-Type'), String(i % 7), `message ${i} lost its type`);
          } catch (e) {
            failure = e as Error;
          }
        },
      });
      await nc.flush();
      const out = new BridgeProcess(`shm:${a.name}`, nats.url(subject));
      children.push(out);
      await out.start();
      for (let i = 0; i < N; i++) {
        const bytes = expected(i);
        if (!a.ring.tryWrite(bytes, i % 7)) await a.ring.write(bytes, { type: i % 7, signal: controller.signal, peerTimeoutMs: Infinity });
      }
      await waitUntil(() => next >= N || failure !== undefined, `${N} messages through`, 30_000);
      if (failure !== undefined) throw failure;
    } finally {
      await nc.close();
    }
  });

  it('dedicated (shmring bridge): parks its thread while the ring is empty, keeps no CPU busy, takes sparse records in order and stops on abort', async function () {
    const a = rings.make();
    const subject = uniqueSubject('dedicated');
    const nc = await connect({ servers: `127.0.0.1:${nats.port}` });
    try {
      const got: number[] = [];
      nc.subscribe(subject, {
        callback: (err, msg: Msg) => err === null && got.push(new DataView(msg.data.buffer, msg.data.byteOffset).getUint32(0, true)),
      });
      await nc.flush();
      const own = new AbortController();
      let running!: Promise<void>;
      await new Promise<void>((ready) => {
        running = bridge(`shm:${a.name}`, nats.url(subject), { signal: own.signal, onReady: ready, dedicated: true });
      });
      // Idle: the thread sleeps on the futex (20 ms slices), this test's loop runs between them.
      await sleep(100);
      const cpu = process.cpuUsage();
      const t0 = performance.now();
      await sleep(1000);
      const used = process.cpuUsage(cpu);
      const share = (used.user + used.system) / 1000 / (performance.now() - t0);
      assert.ok(share < 0.1, `an idle dedicated bridge used ${(share * 100).toFixed(1)}% of a CPU`);
      // Sparse records (gaps longer than a slice) and bursts, in order.
      for (let i = 0; i < 40; i++) {
        assert.ok(a.ring.tryWrite(message(i), i % 7));
        if (i % 4 === 3) await sleep(30);
      }
      await waitUntil(() => got.length >= 40, '40 messages through');
      assert.deepEqual(
        got,
        Array.from({ length: 40 }, (_, i) => i),
      );
      const t1 = performance.now();
      own.abort();
      await running;
      assert.ok(performance.now() - t1 < 1000, `stopped ${Math.round(performance.now() - t1)} ms after the abort`);
    } finally {
      await nc.close();
    }
  });

  it('JetStream: exactly once, in order, while each bridge is SIGKILLed and restarted and the server restarted mid-stream', async function () {
    // Its own server: the restart must not disturb the other tests.
    const own = await NatsServer.start();
    try {
      const a = rings.make();
      const b = rings.make();
      const stream = `S${process.pid}_${rings.counter}`;
      const url = own.url(uniqueSubject('js'), `?jetstream=${stream}`);
      const out = new BridgeProcess(`shm:${a.name}`, url);
      const into = new BridgeProcess(url, `shm:${b.name}`);
      children.push(out, into);
      await out.start();
      await into.start();
      const N = 10_000;
      let received = 0;
      const producing = produce(a.ring, N, controller.signal);
      const consuming = (async () => {
        let next = 0;
        while (next < N) {
          const bytes = await b.ring.read({ signal: controller.signal, peerTimeoutMs: Infinity });
          const i = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
          assert.equal(i, next, `message ${next} expected, got ${i}`);
          assert.equal(b.ring.lastType, i % 7);
          received = ++next;
        }
      })();
      const failed = Promise.race([producing, consuming]).then(() => new Promise(() => {}));
      const at = async (count: number): Promise<void> => {
        await Promise.race([waitUntil(() => received >= count, `${count} messages through`, 30_000), failed]);
      };
      await at(N * 0.2);
      await out.kill();
      await out.start();
      await at(N * 0.4);
      await into.kill();
      await into.start();
      await at(N * 0.6);
      await own.stop();
      await sleep(300);
      await own.restart();
      await at(N * 0.8);
      await out.kill();
      await out.start();
      await into.kill();
      await into.start();
      await Promise.all([producing, consuming]);
      // Nothing more comes: no duplicate after the last one.
      await sleep(500);
      assert.equal(b.ring.tryRead(), null, 'a message came after the last one (a duplicate)');
      assert.match(out.stderr + into.stderr, /lost the NATS server/);
    } finally {
      controller.abort();
      await Promise.all(children.splice(0).map((c) => c.kill()));
      await own.dispose();
    }
  });

  describe('JetStream consumers of bridges on several hosts', function () {
    it('the default consumer name holds the host and the ring, in the characters JetStream takes, at most 128 of them', function () {
      assert.equal(defaultConsumer('orders', 'hosta'), 'shmring-bridge-hosta-orders');
      assert.match(defaultConsumer('orders', 'host-a.example.com'), /^shmring-bridge-host-a_example_com-orders-[0-9a-f]{16}$/);
      assert.notEqual(defaultConsumer('orders', 'host-a'), defaultConsumer('orders', 'host-b'));
      const long = (host: string): string => defaultConsumer('r'.repeat(250), host);
      assert.equal(long('a').length, 128);
      assert.match(long('a'), /^[A-Za-z0-9_-]+$/);
      assert.notEqual(long('a'), long('b'), 'two hosts with long ring names still differ');
    });

    it('two bridges whose host and ring would spell the same default consumer name get different names', function () {
      // Replaced characters: rings orders.eu and orders_eu on one host.
      assert.notEqual(defaultConsumer('orders.eu', 'hosta'), defaultConsumer('orders_eu', 'hosta'));
      assert.notEqual(defaultConsumer('orders', 'host.a'), defaultConsumer('orders', 'host_a'));
      // Where the host ends: host web-1 with ring orders, host web with ring 1-orders.
      assert.notEqual(defaultConsumer('orders', 'web-1'), defaultConsumer('1-orders', 'web'));
      for (const [ring, host] of [
        ['orders.eu', 'hosta'],
        ['orders', 'web-1'],
        ['1-orders', 'web'],
      ] as const) {
        const name = defaultConsumer(ring, host);
        assert.match(name, /^[A-Za-z0-9_-]+$/);
        assert.ok(name.length <= 128);
      }
    });

    it('a bridge without consumer= names its durable consumer after its host and its ring', async function () {
      const b = rings.make();
      const stream = `CH${process.pid}_${rings.counter}`;
      const url = nats.url(uniqueSubject('consumer'), `?jetstream=${stream}`);
      await new Promise<void>((ready, fail) => bridge(url, `shm:${b.name}`, { signal: controller.signal, onReady: ready }).catch(fail));
      const nc = await connect({ servers: `127.0.0.1:${nats.port}` });
      try {
        const names: string[] = [];
        const thresholds: unknown[] = [];
        for await (const info of (await nc.jetstreamManager()).consumers.list(stream)) {
          names.push(info.name);
          thresholds.push(info.config.inactive_threshold);
        }
        assert.deepEqual(names, [`shmring-bridge-${hostname().replace(/[^A-Za-z0-9_-]/g, '_')}-${b.name}`]);
        // An outside tester: each run of examples/two-hosts (a ring per process) left a consumer for ever.
        assert.deepEqual(thresholds, [CONSUMER_INACTIVE_MS * 1e6], 'the server removes it once its bridge is gone for good');
      } finally {
        await nc.close();
      }
    });

    it('two bridges of one stream with their own consumer= (two hosts) each get every message', async function () {
      const stream = `CC${process.pid}_${rings.counter}`;
      const subject = uniqueSubject('fanout');
      const hosts = [rings.make(), rings.make()];
      for (const [i, host] of hosts.entries()) {
        const url = nats.url(subject, `?jetstream=${stream}&consumer=host${i}`);
        await new Promise<void>((ready, fail) =>
          bridge(url, `shm:${host.name}`, { signal: controller.signal, onReady: ready }).catch(fail),
        );
      }
      const nc = await connect({ servers: `127.0.0.1:${nats.port}` });
      try {
        const js = nc.jetstream();
        const N = 2000;
        for (let i = 0; i < N; i++) await js.publish(subject, message(i), { headers: typeHeader(i % 7) });
        await Promise.all(hosts.map((host) => consumeInOrder(host.ring, N, AbortSignal.timeout(20_000))));
      } finally {
        await nc.close();
      }
    });
  });

  describe("JetStream into a ring whose marker is another stream's", function () {
    /** Bridges `url` into `ring` until `count` messages came (checked: message(from..), in order); returns its log. */
    async function bridgeInto(url: string, ring: { name: string; ring: SpscRing }, count: number, from = 0): Promise<string[]> {
      const lines: string[] = [];
      const stopBridge = new AbortController();
      let running!: Promise<void>;
      await new Promise<void>((ready, fail) => {
        running = bridge(url, `shm:${ring.name}`, { signal: stopBridge.signal, onReady: ready, log: (line) => lines.push(line) });
        running.catch(fail);
      });
      try {
        for (let next = from; next < from + count; next++) {
          const bytes = await ring.ring.read({ signal: AbortSignal.timeout(10_000), peerTimeoutMs: Infinity }).catch((err: Error) => {
            assert.fail(
              `${next - from} of ${count} messages of ${url} came into the ring (then ${err.message}); log: ${lines.join(' | ')}`,
            );
          });
          assert.equal(new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true), next, `message ${next} of ${url} expected`);
        }
      } finally {
        stopBridge.abort();
        await running;
      }
      return lines;
    }

    it('another stream, then the same stream deleted and made again: every message of each comes into the ring, and the reset is said', async function () {
      const nc = await connect({ servers: `127.0.0.1:${nats.port}` });
      try {
        const jsm = await nc.jetstreamManager();
        const js = nc.jetstream();
        const b = rings.make();
        const fill = async (stream: string, subject: string, count: number): Promise<string> => {
          await jsm.streams.add({ name: stream, subjects: [subject] });
          for (let i = 0; i < count; i++) await js.publish(subject, message(i));
          return nats.url(subject, `?jetstream=${stream}`);
        };
        const first = `MA${process.pid}_${rings.counter}`;
        const firstSubject = uniqueSubject('marker');
        const firstUrl = await fill(first, firstSubject, 100);
        assert.deepEqual(await bridgeInto(firstUrl, b, 100), [], 'a fresh ring: nothing to say');
        // Sequences 1..50 of another stream: the marker says 100 are in the ring already.
        const second = `MB${process.pid}_${rings.counter}`;
        const lines = await bridgeInto(await fill(second, uniqueSubject('marker'), 50), b, 50);
        assert.equal(lines.filter((l) => l.includes('.jsbridge')).length, 1, lines.join('\n'));
        assert.match(lines.join('\n'), new RegExp(`the ring shm:${b.name} gets the stream '${second}' from its first message`));
        // The first stream made again under its name: its sequences restart at 1.
        await jsm.streams.delete(first);
        const again = await bridgeInto(await fill(first, firstSubject, 30), b, 30);
        assert.match(again.join('\n'), /for other messages/);
        // The marker is this stream's now: a bridge started again on it goes on after what the ring has.
        await js.publish(firstSubject, message(30));
        assert.deepEqual(await bridgeInto(firstUrl, b, 1, 30), []);
      } finally {
        await nc.close();
      }
    });

    for (const retention of ['interest', 'workqueue'] as const) {
      it(`${retention === 'interest' ? 'an' : 'a'} ${retention} stream: what is published while the bridge is away comes into the ring when it starts again, once, in order`, async function () {
        const nc = await connect({ servers: `127.0.0.1:${nats.port}` });
        try {
          const jsm = await nc.jetstreamManager();
          const js = nc.jetstream();
          const b = rings.make();
          const stream = `MR${process.pid}_${rings.counter}`;
          const subject = uniqueSubject('retention');
          await jsm.streams.add({ name: stream, subjects: [subject], retention: retention as RetentionPolicy });
          const url = nats.url(subject, `?jetstream=${stream}`);
          await bridgeInto(url, b, 0); // its consumer made: an interest stream keeps nothing nobody wants
          for (let i = 0; i < 20; i++) await js.publish(subject, message(i));
          await bridgeInto(url, b, 20);
          // Away: an interest stream kept these for the bridge's consumer (its delete at the next start dropped them);
          // a work queue takes no consumer that starts after a sequence (the next start stalled, for ever).
          for (let i = 20; i < 40; i++) await js.publish(subject, message(i));
          await bridgeInto(url, b, 20, 20);
          for (let i = 40; i < 45; i++) await js.publish(subject, message(i));
          await bridgeInto(url, b, 5, 40);
          assert.equal(b.ring.tryRead(), null, 'a message came again');
          const consumers: string[] = [];
          for await (const info of jsm.consumers.list(stream)) consumers.push(info.name);
          assert.equal(consumers.length, 1, `the bridge's consumers: ${consumers.join(', ')}`);
        } finally {
          await nc.close();
        }
      });
    }

    it("an interest stream with both of the bridge's consumers left (stopped between its add and its delete): it starts again, nothing lost; another's consumer under its name is refused, not deleted", async function () {
      const nc = await connect({ servers: `127.0.0.1:${nats.port}` });
      try {
        const jsm = await nc.jetstreamManager();
        const js = nc.jetstream();
        const b = rings.make();
        const stream = `MI${process.pid}_${rings.counter}`;
        const subject = uniqueSubject('interest');
        await jsm.streams.add({ name: stream, subjects: [subject], retention: 'interest' as RetentionPolicy });
        const url = nats.url(subject, `?jetstream=${stream}`);
        const durable = defaultConsumer(b.name, hostname());
        await bridgeInto(url, b, 0); // makes `durable`
        for (let i = 0; i < 10; i++) await js.publish(subject, message(i));
        await bridgeInto(url, b, 10); // makes `durable-b`, deletes `durable`
        // What a bridge stopped between its add and its delete leaves: both, the second one behind.
        await jsm.consumers.add(stream, {
          durable_name: durable,
          description: `${CONSUMER_TAG} ${durable}`,
          ack_policy: AckPolicy.Explicit,
          filter_subject: subject,
          deliver_policy: DeliverPolicy.StartSequence,
          opt_start_seq: 3,
        });
        for (let i = 10; i < 20; i++) await js.publish(subject, message(i));
        await bridgeInto(url, b, 10, 10);
        assert.equal(b.ring.tryRead(), null, 'a message came again');
        const names: string[] = [];
        for await (const info of jsm.consumers.list(stream)) names.push(info.name);
        assert.equal(names.length, 1, names.join(', '));
        // Another's consumer under the name this bridge takes next: refused, and left alone.
        const next = names[0] === durable ? `${durable}-b` : durable;
        await jsm.consumers.add(stream, {
          durable_name: next,
          ack_policy: AckPolicy.Explicit,
          filter_subject: subject,
          description: 'someone else',
        });
        await assert.rejects(bridge(url, `shm:${b.name}`, { signal: controller.signal }), (err: Error & { code?: string }) => {
          assert.equal(err.code, 'ERR_SHMRING_INVALID_ENDPOINT', String(err));
          assert.match(err.message, new RegExp(`consumer '${next}' that is not this bridge's`));
          return true;
        });
        assert.ok((await jsm.consumers.info(stream, next)).config.description === 'someone else', 'the other consumer was deleted');
        await jsm.streams.delete(stream);
      } finally {
        await nc.close();
      }
    });

    it("a marker that records no stream (an older bridge upgraded in place) is taken as the stream's: the bridge goes on after it, replaying nothing", async function () {
      const nc = await connect({ servers: `127.0.0.1:${nats.port}` });
      try {
        const jsm = await nc.jetstreamManager();
        const js = nc.jetstream();
        const b = rings.make();
        const stream = `MU${process.pid}_${rings.counter}`;
        const subject = uniqueSubject('marker');
        await jsm.streams.add({ name: stream, subjects: [subject] });
        for (let i = 0; i < 40; i++) await js.publish(subject, message(i));
        const url = nats.url(subject, `?jetstream=${stream}`);
        assert.deepEqual(await bridgeInto(url, b, 40), []);
        // What an older bridge left: its sequence (40), and nothing where the stream is now recorded.
        const marker = Region.open({ backing: 'posix', name: `${b.name}.jsbridge` });
        try {
          new Uint8Array(marker.buffer, 32, 16).fill(0);
        } finally {
          marker.close();
        }
        for (let i = 40; i < 45; i++) await js.publish(subject, message(i));
        // Messages 40..44 come next, not the stream again from 0; and there is nothing to say.
        assert.deepEqual(await bridgeInto(url, b, 5, 40), []);
      } finally {
        await nc.close();
      }
    });
  });

  it('while the server is down the ring fills (its producer sees back-pressure); the bridge says so once, reconnects and drains it', async function () {
    const own = await NatsServer.start();
    const lines: string[] = [];
    try {
      const a = rings.make();
      const subject = uniqueSubject('down');
      const running = new Promise<void>((ready, fail) => {
        bridge(`shm:${a.name}`, own.url(subject), { signal: controller.signal, onReady: ready, log: (line) => lines.push(line) }).catch(
          fail,
        );
      });
      await running;
      await own.stop();
      await waitUntil(() => lines.length > 0, 'the bridge to say the server is gone');
      // The ring fills: the producer's tryWrite returns false.
      let written = 0;
      await waitUntil(() => {
        while (a.ring.tryWrite(message(written), 0)) written++;
        return true;
      }, 'the ring to fill');
      // The bridge may take what its last wait was for; after that, nothing.
      await sleep(300);
      while (a.ring.tryWrite(message(written), 0)) written++;
      await sleep(500);
      assert.equal(a.ring.tryWrite(message(written), 0), false, 'the ring is still full while NATS is down');
      assert.equal(lines.length, 1, `said once per outage, not per message: ${JSON.stringify(lines)}`);
      assert.match(lines[0]!, new RegExp(`lost the NATS server at 127.0.0.1:${own.port}`));
      await own.restart();
      await waitUntil(() => lines.length === 2, 'the bridge to say it reconnected', 15_000);
      assert.match(lines[1]!, /reconnected/);
      await waitUntil(() => a.ring.tryWrite(message(written), 0), 'the ring to drain once NATS is back', 15_000);
    } finally {
      controller.abort();
      await own.dispose();
    }
  });

  it('a log that throws does not stop the bridge: across an outage it reconnects and drains the ring, and each throw is a process warning', async function () {
    const own = await NatsServer.start();
    const warnings: string[] = [];
    const onWarning = (w: Error): void => {
      if (w.name === 'ShmringBridgeWarning') warnings.push(w.message);
    };
    process.on('warning', onWarning);
    try {
      const a = rings.make();
      const running = new Promise<void>((ready, fail) => {
        bridge(`shm:${a.name}`, own.url(uniqueSubject('badlog')), {
          signal: controller.signal,
          onReady: ready,
          log: () => {
            throw new Error('log broke');
          },
        }).catch(fail);
      });
      await running;
      await own.stop();
      await waitUntil(() => warnings.length > 0, 'the warning of the outage line');
      let written = 0;
      while (a.ring.tryWrite(message(written), 0)) written++;
      await own.restart();
      // Once reconnected (the line said after the wake-ups, its throw a warning too), the bridge drains the ring.
      await waitUntil(() => a.ring.tryWrite(message(written), 0), 'the ring to drain once NATS is back', 15_000);
      await waitUntil(() => warnings.some((w) => w.includes('reconnected')), 'the reconnection line, as a warning');
      assert.ok(
        warnings.every((w) => w.includes('log broke')),
        JSON.stringify(warnings),
      );
    } finally {
      process.off('warning', onWarning);
      controller.abort();
      await own.dispose();
    }
  });

  // An outside tester: shmring bridge exited 1 with ERR_SHMRING_CLOSED when the ring's producer closed it, the
  // ordinary end of its stream.
  for (const direction of ['ring → NATS', 'NATS → ring'] as const) {
    it(`${direction}: the other side closing the ring ends the bridge cleanly (it resolves, says so), ring → NATS after sending all`, async function () {
      const a = rings.make();
      const subject = uniqueSubject('ends');
      const lines: string[] = [];
      const nc = await connect({ servers: `127.0.0.1:${nats.port}` });
      try {
        const N = 1000;
        let received = 0;
        const sub = nc.subscribe(subject);
        const counting = (async () => {
          for await (const _ of sub) if (++received === N) break;
        })();
        await nc.flush();
        let running!: Promise<void>;
        const [from, to] = direction === 'ring → NATS' ? [`shm:${a.name}`, nats.url(subject)] : [nats.url(subject), `shm:${a.name}`];
        await new Promise<void>((ready, fail) => {
          running = bridge(from, to, { signal: controller.signal, onReady: ready, log: (l) => lines.push(l) });
          running.catch(fail);
        });
        if (direction === 'ring → NATS') {
          await produce(a.ring, N, controller.signal);
          a.ring.close(); // the producer is done
          await running; // resolves: no ERR_SHMRING_CLOSED
          await Promise.race([counting, sleep(10_000)]);
          assert.equal(received, N, 'everything the ring held went out before the bridge ended');
          assert.ok(
            lines.some((l) => /was closed by its producer and everything in it went to/.test(l)),
            lines.join('\n'),
          );
        } else {
          a.ring.close(); // the consumer stops
          nc.publish(subject, message(0)); // the bridge meets the closed ring at its next write
          await running;
          assert.ok(
            lines.some((l) => /was closed by its consumer: the bridge ends/.test(l)),
            lines.join('\n'),
          );
        }
        sub.unsubscribe();
      } finally {
        await nc.close();
      }
    });
  }

  // An outside tester: a header 'abc', '-1' or '4294967296', or one named in lower case, went into the ring as
  // type 0 without a word.
  it('NATS → ring: the type header is read whatever its case; one that is not a type goes in as 0, said once', async function () {
    const b = rings.make();
    const subject = uniqueSubject('types');
    const lines: string[] = [];
    await new Promise<void>((ready, fail) => {
      bridge(nats.url(subject), `shm:${b.name}`, { signal: controller.signal, onReady: ready, log: (l) => lines.push(l) }).catch(fail);
    });
    const nc = await connect({ servers: `127.0.0.1:${nats.port}` });
    try {
      const sent: Array<[string | undefined, string | undefined]> = [
        ['shmring-type', '5'],
        ['SHMRING-TYPE', '2147483647'],
        ['Shmring-Type', 'abc'],
        ['Shmring-Type', '-1'],
        ['Shmring-Type', '4294967296'],
        [undefined, undefined],
      ];
      for (const [name, value] of sent) {
        const h = headers();
        if (name !== undefined) h.set(name, value!);
        nc.publish(subject, new Uint8Array([1]), name === undefined ? {} : { headers: h });
      }
      await nc.flush();
      const types: number[] = [];
      for (let i = 0; i < sent.length; i++) {
        await b.ring.read({ timeoutMs: 10_000 });
        types.push(b.ring.lastType);
      }
      assert.deepEqual(types, [5, 2147483647, 0, 0, 0, 0]);
      const said = lines.filter((l) => /header that is not a type/.test(l));
      assert.equal(said.length, 1, lines.join('\n'));
      assert.match(said[0]!, new RegExp(`a message on '${subject}' has a Shmring-Type header that is not a type \\("abc"`));
    } finally {
      await nc.close();
    }
  });

  it('NATS → ring, the outage line says what core NATS loses meanwhile, not that the ring fills', async function () {
    await NatsServer.using(async (own) => {
      const b = rings.make();
      const lines: string[] = [];
      await new Promise<void>((ready, fail) => {
        bridge(own.url(uniqueSubject('down')), `shm:${b.name}`, {
          signal: controller.signal,
          onReady: ready,
          log: (l) => lines.push(l),
        }).catch(fail);
      });
      await own.stop();
      await waitUntil(() => lines.length > 0, 'the bridge to say the server is gone');
      controller.abort();
      assert.match(lines[0]!, /lost the NATS server at .*; reconnecting \(what is published to '.*' meanwhile is lost: core NATS/);
      assert.doesNotMatch(lines[0]!, /the ring fills/);
    });
  });

  it('what the client had not sent when the server went away stays in the ring and goes out once it is back: none lost', async function () {
    // A stream on the subject keeps every core NATS message the server takes in, across its restart.
    const own = await NatsServer.start();
    const lines: string[] = [];
    const nc = await connect({ servers: `127.0.0.1:${own.port}`, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    try {
      const a = rings.make();
      const subject = uniqueSubject('outage');
      const stream = `O${process.pid}_${rings.counter}`;
      const jsm = await nc.jetstreamManager();
      await jsm.streams.add({ name: stream, subjects: [subject] });
      const stored = async (): Promise<number> => (await jsm.streams.info(stream)).state.messages;
      await new Promise<void>((ready, fail) => {
        bridge(`shm:${a.name}`, own.url(subject), { signal: controller.signal, onReady: ready, log: (line) => lines.push(line) }).catch(
          fail,
        );
      });
      let written = 0;
      for (; written < 100; written++) assert.ok(a.ring.tryWrite(message(written), written % 7));
      await until(async () => (await stored()) === 100, 'the first 100 messages in the stream');
      await own.stop();
      await waitUntil(() => lines.length > 0, 'the bridge to say the server is gone');
      // Written while NATS is away: the bridge takes the first, lends it to the client, which cannot send it.
      for (const end = written + 50; written < end; written++) assert.ok(a.ring.tryWrite(message(written), written % 7));
      await sleep(300);
      await own.restart();
      await waitUntil(() => lines.length === 2, 'the bridge to say it reconnected', 15_000);
      await until(async () => (await stored().catch(() => 0)) >= written, `${written} messages in the stream`);
      await sleep(200);
      assert.equal(await stored(), written, 'no message twice');
      const consumer = await nc.jetstream().consumers.get(stream);
      const fetched = await consumer.fetch({ max_messages: written, expires: 5000 });
      let next = 0;
      for await (const m of fetched) {
        const i = new DataView(m.data.buffer, m.data.byteOffset).getUint32(0, true);
        assert.equal(i, next, `message ${next} expected, got ${i} (a loss, a duplicate or a reordering)`);
        assert.equal(m.headers?.get('Shmring-Type'), String(i % 7));
        if (++next === written) break;
      }
      assert.equal(next, written);
    } finally {
      controller.abort();
      await nc.close().catch(() => {});
      await own.dispose();
    }
  });

  for (const direction of ['ring → NATS', 'NATS → ring'] as const) {
    it(`a second bridge ${direction} on the same ring fails with ERR_SHMRING_BUSY before it is ready (never says it runs)`, async function () {
      const a = rings.make();
      const url = nats.url(uniqueSubject('busy'));
      const [from, to] = direction === 'ring → NATS' ? [`shm:${a.name}`, url] : [url, `shm:${a.name}`];
      let first!: Promise<void>;
      await new Promise<void>((ready) => (first = bridge(from, to, { signal: controller.signal, onReady: ready })));
      let secondReady = false;
      const err = await rejectsWith(
        bridge(from, to, {
          signal: controller.signal,
          onReady: () => {
            secondReady = true;
          },
        }),
        ErrorCodes.BUSY,
        direction === 'ring → NATS' ? /consumer role/ : /producer role/,
      );
      assert.ok(err.message.includes(a.name), err.message);
      assert.equal(secondReady, false, 'the second bridge said it was ready');
      controller.abort();
      await first;
    });
  }

  it('shmring bridge --help and -h print the usage on stdout and exit 0 (also as a subcommand of the shmring CLI)', function () {
    const cli = fileURLToPath(new URL('../../../ringbuf/bin/shmring.js', import.meta.url));
    for (const args of [
      [BRIDGE_BIN, '--help'],
      [BRIDGE_BIN, '-h'],
      [cli, 'bridge', '--help'],
      [BRIDGE_BIN, 'shm:a', '--help'],
    ]) {
      const r = spawnSync(process.execPath, args, { encoding: 'utf8', cwd: fileURLToPath(new URL('../..', import.meta.url)) });
      const shown = `${args.slice(1).join(' ')}: exit ${r.status}, stderr ${r.stderr}`;
      assert.equal(r.status, 0, shown);
      assert.match(r.stdout, /^usage: shmring bridge \[--poll <µs>\] <from> <to>\n/, shown);
      assert.match(r.stdout, /-h, --help/, shown);
      assert.equal(r.stderr, '', shown);
    }
  });

  describe('endpoints', function () {
    for (const [from, to, why] of [
      ['shm:a', 'shm:b', /one on each side/],
      ['shm:', 'nats://127.0.0.1:4222/x', /shm:<name>/],
      ['shm:a', 'nats://127.0.0.1:4222/x?stream=S', /unknown option 'stream'/],
      ['tcp://127.0.0.1:1/x', 'shm:a', /expected shm:<name> or nats:/],
      ['shm:a', 'nats://127.0.0.1:4222/x?jetstream=A&jetstream=B', /jetstream= is given twice/],
      ['NATS://127.0.0.1:4222/x?stream=S', 'shm:a', /unknown option 'stream'/],
      ['shm:a', 'nats://127.0.0.1:4222/%E0', /the subject has a malformed percent-encoding/],
      ['nats://127.0.0.1:4222/x%00', 'shm:a', /NUL character/],
      ['shm:a', 'nats://127.0.0.1:70000/x', /the port '70000' is not a port number/],
      ['shm:a', 'nats://127.0.0.1:4222/x?jetstream=S&consumer=c', /a bridge into NATS has none/],
      ['nats://127.0.0.1:4222/x?consumer=c', 'shm:a', /needs jetstream=<stream>/],
      ['nats://127.0.0.1:4222/x?jetstream=S&consumer=a.b', 'shm:a', /the consumer name 'a.b' must be/],
      ['nats://127.0.0.1:4222/x?jetstream=S&consumer=a&consumer=b', 'shm:a', /consumer= is given twice/],
    ] as const) {
      it(`bridge('${from}', '${to}') rejects with ERR_SHMRING_INVALID_ENDPOINT naming the endpoint`, async function () {
        const err = await rejectsWith(bridge(from, to), ErrorCodes.INVALID_ENDPOINT, why);
        assert.ok(err.message.includes(from) || err.message.includes(to), err.message);
      });
    }

    for (const [poll, Class] of [
      [-1, RangeError],
      [Number.NaN, RangeError],
      [Infinity, RangeError],
      ['50', TypeError],
    ] as const) {
      it(`bridge(…, { poll: ${typeof poll === 'string' ? JSON.stringify(poll) : String(poll)} }) rejects with ERR_SHMRING_INVALID_ARGUMENT naming poll, a ${Class.name}`, async function () {
        const a = rings.make();
        const err = await rejectsWith(
          bridge(`shm:${a.name}`, 'nats://127.0.0.1:4222/x', { poll: poll as number }),
          ErrorCodes.INVALID_ARGUMENT,
          'poll',
        );
        assert.ok(err instanceof Class, `${err.name}: a ${Class.name}`);
      });
    }

    for (const [name, value] of [
      ['dedicated', 'true'],
      ['dedicated', 1],
      ['onReady', 123],
    ] as const) {
      it(`bridge(…, { ${name}: ${JSON.stringify(value)} }) rejects with a TypeError (ERR_SHMRING_INVALID_ARGUMENT) naming it, before it connects`, async function () {
        const a = rings.make();
        const err = await rejectsWith(
          bridge(`shm:${a.name}`, 'nats://127.0.0.1:1/x', { [name]: value } as never),
          ErrorCodes.INVALID_ARGUMENT,
          name,
        );
        assert.ok(err instanceof TypeError, `${err.name}: a TypeError`);
      });
    }

    it('shmring bridge --poll takes microseconds >= 0, and exits 2 with its usage otherwise', async function () {
      const a = rings.make();
      const child = spawn(process.execPath, [BRIDGE_BIN, '--poll', 'soon', `shm:${a.name}`, 'nats://127.0.0.1:4222/x'], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      const [code] = await once(child, 'exit');
      assert.equal(code, 2, stderr);
      assert.match(stderr, /--poll soon: expected a decimal number of microseconds >= 0/);
    });

    it('shmring bridge with a malformed endpoint is bad usage: exit 2, the error with its code said once, then the usage', function () {
      const ringbufCli = fileURLToPath(new URL('../../../ringbuf/bin/shmring.js', import.meta.url));
      for (const [args, said] of [
        [
          [BRIDGE_BIN, 'shm:x', 'nats://127.0.0.1:4222/%E0'],
          /^shmring bridge: 'nats:\/\/127\.0\.0\.1:4222\/%E0' is not a valid endpoint: the subject has a malformed percent-encoding/,
        ],
        [[BRIDGE_BIN, 'nosuch1', 'nosuch2'], /^shmring bridge: 'nosuch1' is not a valid endpoint: expected shm:<name> or nats:/],
        [[BRIDGE_BIN, 'shm:a', 'shm:b'], /^shmring bridge: shm:a → shm:b: .*one on each side/],
        [[ringbufCli, 'bridge', 'nosuch1', 'nosuch2'], /^shmring bridge: 'nosuch1' is not a valid endpoint/],
      ] as const) {
        const r = spawnSync(process.execPath, args, { encoding: 'utf8', cwd: fileURLToPath(new URL('../..', import.meta.url)) });
        const shown = `${args.slice(1).join(' ')}: exit ${r.status}, stderr ${r.stderr}`;
        assert.equal(r.status, 2, shown);
        const [first, usage] = r.stderr.split('\n');
        assert.match(first!, said, shown);
        assert.match(first!, / \(ERR_SHMRING_INVALID_ENDPOINT\)$/, shown);
        assert.equal(r.stderr.match(/ERR_SHMRING_INVALID_ENDPOINT/g)?.length, 1, shown);
        assert.match(usage!, /^usage: shmring bridge \[--poll <µs>\] <from> <to>$/, shown);
      }
    });

    it('shmring bridge to a NATS server that does not answer exits 1, a failure at run time, not bad usage', async function () {
      const a = rings.make();
      const port = await freePort();
      const r = spawnSync(process.execPath, [BRIDGE_BIN, `shm:${a.name}`, `nats://127.0.0.1:${port}/x`], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`127\\.0\\.0\\.1:${port}.*ERR_SHMRING_UNREACHABLE`));
      assert.doesNotMatch(r.stderr, /usage:/);
    });

    it('shmring bridge to a ring that does not exist exits 1 naming it, with its error code said once', function () {
      const name = `shmring-bridge-test-${process.pid}-missing`;
      const r = spawnSync(process.execPath, [BRIDGE_BIN, `shm:${name}`, 'nats://127.0.0.1:4222/x'], { encoding: 'utf8' });
      assert.equal(r.status, 1, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(`^shmring bridge: Region.open of POSIX shared memory object '${name}'.*\\(ENOENT\\); nothing has that name`),
      );
      assert.equal(r.stderr.match(/ENOENT/g)?.length, 1, r.stderr);
    });

    it('a NATS server that does not answer: ERR_SHMRING_UNREACHABLE naming it', async function () {
      const a = rings.make();
      const port = await freePort();
      await rejectsWith(bridge(`shm:${a.name}`, `nats://127.0.0.1:${port}/x`), ErrorCodes.UNREACHABLE, `127.0.0.1:${port}`);
    });

    it('shmring bridge (the ringbuf CLI) runs the bridge of @shmring/channel, and exits 2 with its usage on bad arguments', async function () {
      const cli = fileURLToPath(new URL('../../../ringbuf/bin/shmring.js', import.meta.url));
      const child = spawn(process.execPath, [cli, 'bridge', 'only-one'], {
        stdio: ['ignore', 'ignore', 'pipe'],
        cwd: fileURLToPath(new URL('../..', import.meta.url)),
      });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      const [code] = await once(child, 'exit');
      assert.equal(code, 2, stderr);
      assert.match(stderr, /usage: shmring bridge \[--poll <µs>\] <from> <to>/);
    });
  });
});
