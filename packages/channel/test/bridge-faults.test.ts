/**
 * The bridge when things go wrong, against a real nats-server: an abort
 * while NATS is down (or while the connection is being opened) stops it at
 * once, cleanly, the records left in the ring; a JetStream stream or server
 * that cannot serve the endpoint is a typed error saying what to do, and a
 * stream that stops taking messages is said once, not retried silently; a
 * NATS message too large for the ring is dropped (core) or terminated
 * (JetStream) and said, and the bridge goes on; an MpscRing is bridged
 * where it can be, and refused with a typed error where it cannot.
 */
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { getEventListeners, once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { connect, type Msg, type NatsConnection } from 'nats';
import { bridge, listen } from '../src/index.js';
import { subjectMatches } from '../src/bridge/bridge.js';
import { rejectsWith, sleep, waitUntil } from './helpers.js';
import { TestRings } from './bridge-rings.js';
import { freePort, NATS_SERVER, NatsServer, sharedNats, skipWithoutNats, uniqueSubject } from './nats-server.js';

const BRIDGE_BIN = fileURLToPath(new URL('../../bin/shmring-bridge.js', import.meta.url));
const CAPACITY = 4096;

const rings = new TestRings('bridge-faults', CAPACITY);

/** Starts `bridge(from, to)`; resolves once it is ready, with its promise and its log. */
async function started(
  from: string,
  to: string,
  signal: AbortSignal,
  dedicated = false,
): Promise<{ running: Promise<void>; lines: string[] }> {
  const lines: string[] = [];
  let running!: Promise<void>;
  await new Promise<void>((ready, fail) => {
    running = bridge(from, to, { signal, dedicated, onReady: ready, log: (line) => lines.push(line) });
    running.catch(fail);
  });
  return { running, lines };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

interface ConfigServer {
  port: number;
  url: (subject: string, query?: string) => string;
  /** Kills the server and waits for its exit (its port is free then), and removes its directory. */
  stop: () => Promise<void>;
  dispose: () => void;
}

/** A nats-server (with JetStream) run from a configuration file of `body` (what no flag sets), on `port` or a free one. */
async function configServer(body: string, children: ChildProcess[], port?: number): Promise<ConfigServer> {
  const at = port ?? (await freePort());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-nats-config-'));
  const config = path.join(dir, 'nats.conf');
  fs.writeFileSync(config, `listen: "127.0.0.1:${at}"\n${body}\njetstream { store_dir: "${dir}" }\n`);
  const server = spawn(NATS_SERVER!, ['-c', config], { stdio: 'ignore' });
  children.push(server);
  const exited = once(server, 'exit');
  const deadline = performance.now() + 10_000;
  while (!(await accepts(at))) {
    if (performance.now() > deadline || server.exitCode !== null) assert.fail(`nats-server (${body}) did not start`);
    await sleep(20);
  }
  const dispose = (): void => {
    server.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return {
    port: at,
    url: (subject, query = '') => `nats://127.0.0.1:${at}/${subject}${query}`,
    stop: async () => {
      dispose();
      await exited;
    },
    dispose,
  };
}

/** A nats-server (with JetStream) whose max_payload is `maxPayload` (a configuration file: no flag sets it). */
function smallPayloadServer(maxPayload: number, children: ChildProcess[]): Promise<ConfigServer> {
  return configServer(`max_payload: ${maxPayload}`, children);
}

/** Unhandled rejections while `body` runs (and `settleMs` after it). */
async function unhandledDuring(body: () => Promise<void>, settleMs = 300): Promise<unknown[]> {
  const seen: unknown[] = [];
  const listener = (reason: unknown): void => {
    seen.push(reason);
  };
  // Mocha's own listener would fail the run: ours alone while the body runs.
  const others = process.listeners('unhandledRejection');
  process.removeAllListeners('unhandledRejection');
  process.on('unhandledRejection', listener);
  try {
    await body();
    await sleep(settleMs);
  } finally {
    process.off('unhandledRejection', listener);
    for (const other of others) process.on('unhandledRejection', other);
  }
  return seen;
}

describe('bridge faults', function () {
  this.timeout(30_000);
  let nats: NatsServer;
  let nc: NatsConnection;
  let controller: AbortController;
  const children: ChildProcess[] = [];

  before(async function () {
    skipWithoutNats(this);
    nats = await sharedNats();
    nc = await connect({ servers: `127.0.0.1:${nats.port}` });
  });

  after(async () => {
    await nc?.close();
  });

  beforeEach(function () {
    controller = new AbortController();
  });

  afterEach(async function () {
    controller.abort();
    for (const child of children.splice(0)) {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGKILL');
        await exited;
      }
    }
    rings.clean();
  });

  describe('the abort while NATS is down', function () {
    it('ring → core NATS (dedicated): bridge() resolves, no rejection is left unhandled, and the records stay in the ring', async function () {
      await NatsServer.using(async (own) => {
        const a = rings.make();
        const { running, lines } = await started(`shm:${a.name}`, own.url(uniqueSubject('down')), controller.signal, true);
        await own.stop();
        await waitUntil(() => lines.length > 0, 'the bridge to say the server is gone');
        for (let i = 0; i < 3; i++) assert.ok(a.ring.tryWrite(new Uint8Array(10), 1));
        await sleep(200);
        const unhandled = await unhandledDuring(async () => {
          controller.abort();
          await running;
        });
        assert.deepEqual(unhandled.map(String), [], 'a rejection of the nats client was left unhandled');
        assert.equal(a.ring.size, 3 * 24, 'the records not published stay in the ring');
      });
    });

    it('shmring bridge (ring → core NATS) exits 0 on SIGTERM while NATS is down', async function () {
      await NatsServer.using(async (own) => {
        const a = rings.make();
        const child = spawn(process.execPath, [BRIDGE_BIN, `shm:${a.name}`, own.url(uniqueSubject('sigterm'))], {
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        children.push(child);
        let stderr = '';
        child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
        await waitUntil(() => stderr.includes(': running'), 'the bridge to start');
        await own.stop();
        await waitUntil(() => stderr.includes('lost the NATS server'), 'the bridge to say the server is gone');
        for (let i = 0; i < 3; i++) assert.ok(a.ring.tryWrite(new Uint8Array(10), 1));
        await sleep(300);
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        const [code, signal] = await exited;
        assert.equal(code, 0, `exit code ${code} (signal ${signal}): ${stderr}`);
        assert.doesNotMatch(stderr, /DISCONNECT|Error/);
      });
    });

    it('ring → JetStream: bridge() resolves within 600 ms of the abort (before its 1 s wait for acknowledgements), the records unacknowledged stay in the ring', async function () {
      await NatsServer.using(async (own) => {
        const a = rings.make();
        const stream = `AD${process.pid}_${rings.counter}`;
        const { running, lines } = await started(
          `shm:${a.name}`,
          own.url(uniqueSubject('jsdown'), `?jetstream=${stream}`),
          controller.signal,
        );
        await own.stop();
        await waitUntil(() => lines.length > 0, 'the bridge to say the server is gone');
        for (let i = 0; i < 3; i++) assert.ok(a.ring.tryWrite(new Uint8Array(10), 1));
        await sleep(300);
        const unhandled = await unhandledDuring(async () => {
          const t0 = performance.now();
          controller.abort();
          await running;
          const took = performance.now() - t0;
          assert.ok(took < 600, `stopped ${Math.round(took)} ms after the abort`);
        });
        assert.deepEqual(unhandled.map(String), []);
        assert.equal(a.ring.size, 3 * 24);
      });
    });

    it('bridge() aborted while the connection is being opened resolves at the abort, not at the connect timeout', async function () {
      // A server that accepts and never speaks: the NATS handshake waits.
      const silent = net.createServer((socket) => socket.on('error', () => {}));
      silent.listen(0, '127.0.0.1');
      await once(silent, 'listening');
      const { port } = silent.address() as net.AddressInfo;
      try {
        const a = rings.make();
        setTimeout(() => controller.abort(), 200);
        const t0 = performance.now();
        await bridge(`shm:${a.name}`, `nats://127.0.0.1:${port}/x`, { signal: controller.signal });
        const took = performance.now() - t0;
        assert.ok(took < 1000, `resolved ${Math.round(took)} ms after the start (aborted at 200 ms; the connect timeout is 5000 ms)`);
      } finally {
        silent.close();
      }
    });
  });

  describe('the abort with NATS up', function () {
    it('ring → JetStream: the batch the stream acknowledged is released, so the ring holds nothing the stream has', async function () {
      const a = rings.make();
      const stream = `REL${process.pid}_${++rings.counter}`;
      const subject = uniqueSubject('release');
      const jsm = await nc.jetstreamManager();
      try {
        // Aborted as the second message (the first of the second batch) reaches the server: that batch's acks are on their way.
        let seen = 0;
        const sub = nc.subscribe(subject, { callback: () => ++seen === 2 && controller.abort() });
        await nc.flush();
        const { running } = await started(`shm:${a.name}`, nats.url(subject, `?jetstream=${stream}`), controller.signal);
        const N = 100;
        for (let i = 0; i < N; i++) assert.ok(a.ring.tryWrite(new Uint8Array(10), 1));
        await running;
        sub.unsubscribe();
        const stored = (await jsm.streams.info(stream)).state.messages;
        assert.ok(stored >= 2, `the stream has ${stored} messages`);
        assert.equal(a.ring.size, (N - stored) * 24, `the stream has ${stored} of ${N} records; the ring still holds ${a.ring.size / 24}`);
      } finally {
        await jsm.streams.delete(stream).catch(() => {});
      }
    });
  });

  describe('JetStream message ids', function () {
    it('ring → JetStream: a ring laid out again in the same file names its records anew (CREATION_ID): the stream keeps the records of both', async function () {
      const a = rings.make();
      const stream = `IDS${process.pid}_${++rings.counter}`;
      const subject = uniqueSubject('ids');
      const jsm = await nc.jetstreamManager();
      const ids: string[] = [];
      const sub = nc.subscribe(subject, { callback: (_err, m) => ids.push(m.headers?.get('Nats-Msg-Id') ?? '(none)') });
      await nc.flush();
      const again = Region.open({ backing: 'posix', name: a.name });
      try {
        const bridgeFive = async (ring: SpscRing): Promise<void> => {
          const own = new AbortController();
          const { running } = await started(`shm:${a.name}`, nats.url(subject, `?jetstream=${stream}`), own.signal);
          for (let i = 0; i < 5; i++) assert.ok(ring.tryWrite(new Uint8Array(10), 1));
          await waitUntil(() => ring.size === 0, 'the stream acknowledged the five (the bridge released them)');
          own.abort();
          await running;
        };
        await bridgeFive(a.ring);
        a.ring.detach();
        // The same file (inode), laid out again: its positions start at 0 again.
        const ring = SpscRing.create(again, { capacity: CAPACITY });
        await bridgeFive(ring);
        ring.detach();
        await waitUntil(() => ids.length === 10, 'ten messages on the subject');
        const [first, second] = [ids.slice(0, 5), ids.slice(5)];
        const counts = (list: string[]): string[] => list.map((id) => id.slice(id.lastIndexOf(':') + 1));
        assert.deepEqual(counts(first), ['24', '48', '72', '96', '120'], 'named by the bytes consumed since the creation');
        assert.deepEqual(counts(second), counts(first));
        const identity = (id: string): string => id.slice(0, id.lastIndexOf(':'));
        assert.notEqual(identity(second[0]!), identity(first[0]!), `the second ring's ids are the first's: ${second[0]}`);
        assert.equal((await jsm.streams.info(stream)).state.messages, 10, 'the stream dropped records of the second ring as duplicates');
      } finally {
        sub.unsubscribe();
        again.close();
        await jsm.streams.delete(stream).catch(() => {});
      }
    });
  });

  describe('JetStream that cannot serve the endpoint', function () {
    it('a stream that exists without the subject: ERR_SHMRING_INVALID_ENDPOINT naming the stream, its subjects and the subject, both ways', async function () {
      const jsm = await nc.jetstreamManager();
      const stream = `OTHER${process.pid}_${++rings.counter}`;
      const subject = uniqueSubject('notcovered');
      await jsm.streams.add({ name: stream, subjects: [`${subject}.elsewhere`] });
      try {
        const a = rings.make();
        const url = nats.url(subject, `?jetstream=${stream}`);
        for (const [from, to] of [
          [`shm:${a.name}`, url],
          [url, `shm:${a.name}`],
        ] as const) {
          const err = await rejectsWith(bridge(from, to, { signal: AbortSignal.timeout(10_000) }), ErrorCodes.INVALID_ENDPOINT);
          assert.ok(err.message.includes(`'${stream}'`), err.message);
          assert.ok(err.message.includes(`'${subject}.elsewhere'`), err.message);
          assert.ok(err.message.includes(`'${subject}'`), err.message);
          assert.match(err.message, /add the subject to the stream/);
        }
      } finally {
        await jsm.streams.delete(stream);
      }
    });

    it('a subject another stream takes: ERR_SHMRING_INVALID_ENDPOINT naming that stream', async function () {
      const jsm = await nc.jetstreamManager();
      const owner = `OWNER${process.pid}_${++rings.counter}`;
      const subject = uniqueSubject('taken');
      await jsm.streams.add({ name: owner, subjects: [subject] });
      try {
        const a = rings.make();
        const err = await rejectsWith(bridge(`shm:${a.name}`, nats.url(subject, '?jetstream=MINE')), ErrorCodes.INVALID_ENDPOINT);
        assert.ok(err.message.includes(`?jetstream=${owner}`), err.message);
      } finally {
        await jsm.streams.delete(owner);
      }
    });

    it('JetStream → ring from a mirror (no subjects of its own): bridged; ring → the mirror: refused', async function () {
      const jsm = await nc.jetstreamManager();
      const origin = `ORIGIN${process.pid}_${++rings.counter}`;
      const mirror = `MIRROR${process.pid}_${rings.counter}`;
      const subject = uniqueSubject('mirrored');
      await jsm.streams.add({ name: origin, subjects: [subject] });
      await jsm.streams.add({ name: mirror, mirror: { name: origin } });
      try {
        const b = rings.make();
        const url = nats.url(subject, `?jetstream=${mirror}`);
        await started(url, `shm:${b.name}`, controller.signal);
        await nc.jetstream().publish(subject, new Uint8Array([7]));
        const bytes = await b.ring.read({ signal: AbortSignal.timeout(5000), peerTimeoutMs: Infinity });
        assert.deepEqual([...bytes], [7]);
        const a = rings.make();
        await rejectsWith(
          bridge(`shm:${a.name}`, url, { signal: AbortSignal.timeout(10_000) }),
          ErrorCodes.INVALID_ENDPOINT,
          /does not take subject/,
        );
      } finally {
        controller.abort();
        await jsm.streams.delete(mirror);
        await jsm.streams.delete(origin);
      }
    });

    it("ring → JetStream: a record larger than the stream's max_msg_size is dropped and said, and the records after it reach the stream", async function () {
      const jsm = await nc.jetstreamManager();
      const stream = `SMALL${process.pid}_${++rings.counter}`;
      const subject = uniqueSubject('small-stream');
      await jsm.streams.add({ name: stream, subjects: [subject], max_msg_size: 300 });
      try {
        const a = rings.make();
        const { running, lines } = await started(`shm:${a.name}`, nats.url(subject, `?jetstream=${stream}`), controller.signal);
        assert.ok(a.ring.tryWrite(new Uint8Array(1000), 1));
        assert.ok(a.ring.tryWrite(new Uint8Array(10), 1));
        // Released once the stream acknowledged the small one: both have left the ring then.
        await waitUntil(() => a.ring.size === 0, 'the ring released past both records');
        assert.equal((await jsm.streams.info(stream)).state.messages, 1, 'the small record in the stream');
        const said = lines.filter((line) => line.includes('max_msg_size'));
        assert.equal(said.length, 1, JSON.stringify(lines));
        assert.match(
          said[0]!,
          new RegExp(`dropped a record of 1000 bytes .*shm:${a.name}.*the stream '${stream}'.*max_msg_size 300 bytes.*1 dropped so far`),
        );
        controller.abort();
        await running;
      } finally {
        await jsm.streams.delete(stream);
      }
    });

    it('bridge() that fails leaves no abort listener on its (long-lived) signal', async function () {
      const jsm = await nc.jetstreamManager();
      const stream = `LISTEN${process.pid}_${++rings.counter}`;
      const subject = uniqueSubject('listeners');
      await jsm.streams.add({ name: stream, subjects: [`${subject}.elsewhere`] });
      try {
        const a = rings.make();
        for (const [from, to] of [
          [`shm:${a.name}`, nats.url(subject, `?jetstream=${stream}`)],
          [nats.url(subject, `?jetstream=${stream}`), `shm:${a.name}`],
        ] as const) {
          await rejectsWith(bridge(from, to, { signal: controller.signal }), ErrorCodes.INVALID_ENDPOINT);
          assert.equal(getEventListeners(controller.signal, 'abort').length, 0, `${from} → ${to} left a listener`);
        }
      } finally {
        await jsm.streams.delete(stream);
      }
    });

    it('a server without JetStream: ERR_SHMRING_NO_SERVER naming the server and saying to start it with -js (bridge() and shmring bridge)', async function () {
      const port = await freePort();
      const server = spawn(NATS_SERVER!, ['-a', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
      children.push(server);
      const deadline = performance.now() + 10_000;
      while (!(await accepts(port))) {
        if (performance.now() > deadline) assert.fail('nats-server (without -js) did not start');
        await sleep(20);
      }
      const a = rings.make();
      const url = `nats://127.0.0.1:${port}/x?jetstream=S`;
      await rejectsWith(bridge(`shm:${a.name}`, url), ErrorCodes.NO_SERVER, new RegExp(`127\\.0\\.0\\.1:${port} has no JetStream.*-js`));
      await rejectsWith(bridge(url, `shm:${a.name}`), ErrorCodes.NO_SERVER, /has no JetStream/);
      const cli = spawn(process.execPath, [BRIDGE_BIN, `shm:${a.name}`, url], { stdio: ['ignore', 'ignore', 'pipe'] });
      children.push(cli);
      let stderr = '';
      cli.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      const [code] = await once(cli, 'exit');
      assert.equal(code, 1, stderr);
      assert.match(stderr, /has no JetStream.*\(ERR_SHMRING_NO_SERVER\)/);
    });

    it('a stream that stops taking the messages is said once, not per retry, and once again when it takes them', async function () {
      const a = rings.make();
      const stream = `GONE${process.pid}_${++rings.counter}`;
      const subject = uniqueSubject('gone');
      const { lines } = await started(`shm:${a.name}`, nats.url(subject, `?jetstream=${stream}`), controller.signal);
      const jsm = await nc.jetstreamManager();
      await jsm.streams.delete(stream);
      for (let i = 0; i < 5; i++) assert.ok(a.ring.tryWrite(new Uint8Array(8), 1));
      await waitUntil(() => lines.length > 0, 'the bridge to say the stream does not take the messages');
      await sleep(1000); // 4 retries
      assert.equal(lines.length, 1, JSON.stringify(lines));
      assert.ok(lines[0]!.includes(`'${stream}'`) && lines[0]!.includes(subject), lines[0]);
      await jsm.streams.add({ name: stream, subjects: [subject] });
      await waitUntil(() => lines.length === 2, 'the bridge to say the stream takes them again');
      assert.match(lines[1]!, /again/);
      await waitUntil(() => a.ring.size === 0, 'the ring to drain');
    });
  });

  it('JetStream → ring: a stream deleted under the running bridge is said once, not retried silently, and once again when it is back', async function () {
    const b = rings.make();
    const stream = `DEL${process.pid}_${++rings.counter}`;
    const subject = uniqueSubject('deleted');
    const { lines } = await started(nats.url(subject, `?jetstream=${stream}`), `shm:${b.name}`, controller.signal);
    const jsm = await nc.jetstreamManager();
    await jsm.streams.delete(stream);
    await waitUntil(() => lines.length > 0, 'the bridge to say the stream is gone', 5000);
    await sleep(1000); // 4 retries
    assert.equal(lines.length, 1, JSON.stringify(lines));
    assert.ok(lines[0]!.includes(`'${stream}'`) && lines[0]!.includes(subject), lines[0]);
    assert.match(lines[0]!, /does not exist any more/);
    await jsm.streams.add({ name: stream, subjects: [subject] });
    await waitUntil(() => lines.length === 2, 'the bridge to say it consumes the stream again');
    assert.match(lines[1]!, /consuming the stream .* again/);
    await nc.jetstream().publish(subject, new Uint8Array([5]));
    const bytes = await b.ring.read({ signal: AbortSignal.timeout(5000), peerTimeoutMs: Infinity });
    assert.deepEqual([...bytes], [5]);
    await jsm.streams.delete(stream);
  });

  it('JetStream → ring: its consumer removed under the running bridge (by hand, or by the server when idle) is made again, and nothing is lost', async function () {
    const b = rings.make();
    const stream = `CDEL${process.pid}_${++rings.counter}`;
    const subject = uniqueSubject('consumer-gone');
    const { lines } = await started(nats.url(subject, `?jetstream=${stream}`), `shm:${b.name}`, controller.signal);
    const jsm = await nc.jetstreamManager();
    const js = nc.jetstream();
    await js.publish(subject, new Uint8Array([1]));
    assert.deepEqual([...(await b.ring.read({ signal: AbortSignal.timeout(5000), peerTimeoutMs: Infinity }))], [1]);
    const consumers: string[] = [];
    for await (const info of jsm.consumers.list(stream)) consumers.push(info.name);
    assert.equal(consumers.length, 1);
    await jsm.consumers.delete(stream, consumers[0]!);
    await js.publish(subject, new Uint8Array([2]));
    assert.deepEqual([...(await b.ring.read({ signal: AbortSignal.timeout(10_000), peerTimeoutMs: Infinity }))], [2]);
    assert.equal(b.ring.tryRead(), null, 'a message came again');
    const said = lines.filter((line) => line.includes('does not exist any more'));
    assert.equal(said.length, 1, JSON.stringify(lines));
    assert.match(
      said[0]!,
      /removed by the server after 60 min without a pull while the ring stayed full\); the bridge makes its consumer again/,
    );
    await jsm.streams.delete(stream);
  });

  describe('what the NATS server refuses', function () {
    const users = (password: string, permissions = ''): string =>
      `authorization { users = [ { user: "bridge", password: "${password}"${permissions} } ] }`;

    it('ring → core NATS: credentials the server stops taking are retried, not given up: the bridge goes on once they match again', async function () {
      const port = await freePort();
      let own = await configServer(users('right'), children, port);
      try {
        const a = rings.make();
        const subject = uniqueSubject('auth');
        const { running, lines } = await started(`shm:${a.name}`, `nats://bridge:right@127.0.0.1:${port}/${subject}`, controller.signal);
        let ended: string | undefined;
        running.then(
          () => (ended = 'resolved'),
          (err: unknown) => (ended = String(err)),
        );
        await own.stop();
        own = await configServer(users('changed'), children, port);
        await sleep(1500); // reconnections refused: nats.js gives up for good after two by default
        await own.stop();
        own = await configServer(users('right'), children, port);
        await waitUntil(() => lines.some((line) => line.includes('reconnected')) || ended !== undefined, 'the bridge to reconnect');
        assert.equal(ended, undefined, `the bridge ended while its credentials did not match: ${JSON.stringify(lines)}`);
        const other = await connect({ servers: `127.0.0.1:${port}`, user: 'bridge', pass: 'right' });
        try {
          const got: number[] = [];
          other.subscribe(subject, { callback: (err, msg: Msg) => err === null && got.push(msg.data.length) });
          await other.flush();
          assert.ok(a.ring.tryWrite(new Uint8Array(7), 1));
          await waitUntil(() => got.length === 1, 'the record written after the reconnection');
          assert.deepEqual(got, [7]);
        } finally {
          await other.close();
        }
        controller.abort();
        await running;
      } finally {
        own.dispose();
      }
    });

    it('ring → core NATS: publishes the server refuses (no permission) are said, with the subject and a count, not lost in silence', async function () {
      const own = await configServer(users('p', ', permissions: { publish: { deny: ["denied.>"] } }'), children);
      try {
        const a = rings.make();
        const { running, lines } = await started(`shm:${a.name}`, `nats://bridge:p@127.0.0.1:${own.port}/denied.x`, controller.signal);
        for (let i = 0; i < 3; i++) assert.ok(a.ring.tryWrite(new Uint8Array(4), 1));
        await waitUntil(() => lines.some((line) => line.includes('PERMISSIONS_VIOLATION')), 'the refusal to be said');
        const said = lines.filter((line) => line.includes('PERMISSIONS_VIOLATION'));
        assert.equal(said.length, 1, JSON.stringify(said));
        assert.match(said[0]!, /refused: PERMISSIONS_VIOLATION \(publish 'denied\.x'\), 1 time so far; each record refused is lost/);
        controller.abort();
        await running;
      } finally {
        await own.stop();
      }
    });
    /**
     * What bridge(`path` on a server whose user "bridge" has `permissions`, into a ring) ends with: it must end
     * with an error, which is returned; the server is stopped after.
     */
    async function bridgeRefused(permissions: string, path: string): Promise<ShmringError & { lines: string[] }> {
      const own = await configServer(users('p', `, permissions: ${permissions}`), children);
      try {
        const b = rings.make();
        const lines: string[] = [];
        const err = await bridge(`nats://bridge:p@127.0.0.1:${own.port}/${path}`, `shm:${b.name}`, {
          signal: AbortSignal.timeout(10_000),
          log: (line) => lines.push(line),
        }).then(
          () => assert.fail(`the bridge ended without an error: ${JSON.stringify(lines)}`),
          (e: unknown) => e as ShmringError,
        );
        return Object.assign(err, { lines });
      } finally {
        await own.stop();
      }
    }

    it('core NATS → ring: a subscription the server refuses (no permission) rejects with ERR_SHMRING_NOT_PERMITTED naming the subject', async function () {
      const err = await bridgeRefused('{ subscribe: { deny: ["denied.>"] } }', 'denied.x');
      assert.equal(err.code, 'ERR_SHMRING_NOT_PERMITTED', String(err));
      assert.match(err.message, /subscribe to 'denied\.x'/);
      assert.match(err.message, /permission/);
    });

    it('listen over NATS on a subject the server does not let it subscribe to rejects with ERR_SHMRING_NOT_PERMITTED naming the subject', async function () {
      const own = await configServer(users('p', ', permissions: { subscribe: { deny: ["denied.>"] } }'), children);
      try {
        const err = await listen(`nats://bridge:p@127.0.0.1:${own.port}/denied.x`).then(
          async (server) => {
            await server.close();
            return assert.fail('listen resolved');
          },
          (e: unknown) => e as ShmringError,
        );
        assert.equal(err.code, 'ERR_SHMRING_NOT_PERMITTED', String(err));
        assert.match(err.message, /listen on nats:\/\/.*subscribe to 'denied\.x'/);
      } finally {
        await own.stop();
      }
    });

    it('NATS → JetStream → ring: a consumer call the server refuses after the stream checks (deleting its consumer) ends the bridge with ERR_SHMRING_NOT_PERMITTED, not retries for ever', async function () {
      const err = await bridgeRefused('{ publish: { deny: ["$JS.API.CONSUMER.DELETE.>"] } }', `js.y?jetstream=NODEL${process.pid}`);
      assert.equal(err.code, 'ERR_SHMRING_NOT_PERMITTED', `${String(err)}; log: ${JSON.stringify(err.lines)}`);
      assert.match(err.message, /CONSUMER\.DELETE/);
    });

    it('NATS → JetStream → ring: a consumer the server refuses (no permission for the JetStream API) rejects with ERR_SHMRING_NOT_PERMITTED', async function () {
      const err = await bridgeRefused('{ publish: { deny: ["$JS.API.>"] } }', `js.x?jetstream=DENIED${process.pid}`);
      assert.equal(err.code, 'ERR_SHMRING_NOT_PERMITTED', String(err));
      assert.match(err.message, /\$JS\.API/);
    });
  });

  describe("a ring record larger than the server's max_payload", function () {
    const MAX_PAYLOAD = 1024;

    for (const kind of ['spsc', 'mpsc', 'jetstream'] as const) {
      it(`${kind === 'jetstream' ? 'ring → JetStream' : `ring (${kind}) → core NATS`}: warned at the start, dropped and said (size, ring, limit, count), the bridge goes on`, async function () {
        const own = await smallPayloadServer(MAX_PAYLOAD, children);
        const other = await connect({ servers: `127.0.0.1:${own.port}` });
        try {
          const a = rings.make(kind === 'mpsc' ? 'mpsc' : 'spsc');
          const subject = uniqueSubject('payload');
          const got: number[] = [];
          const sub = other.subscribe(subject, { callback: (err, msg: Msg) => err === null && got.push(msg.data.length) });
          await other.flush();
          const { running, lines } = await started(
            `shm:${a.name}`,
            own.url(subject, kind === 'jetstream' ? `?jetstream=PAYLOAD${process.pid}_${rings.counter}` : ''),
            controller.signal,
          );
          let failed: unknown;
          running.catch((err: unknown) => (failed = err));
          assert.equal(lines.length, 1, JSON.stringify(lines));
          assert.match(lines[0]!, new RegExp(`shm:${a.name} takes records of up to ${a.ring.maxMessageLength} bytes.*max_payload`));
          assert.ok(a.ring.tryWrite(new Uint8Array(1), 1));
          assert.ok(a.ring.tryWrite(new Uint8Array(2000), 1));
          assert.ok(a.ring.tryWrite(new Uint8Array(3), 1));
          assert.ok(a.ring.tryWrite(new Uint8Array(2001), 1));
          assert.ok(a.ring.tryWrite(new Uint8Array(5), 1));
          await waitUntil(() => got.length >= 3 || failed !== undefined, 'the records that fit');
          assert.equal(failed, undefined, String(failed));
          assert.deepEqual(got, [1, 3, 5]);
          assert.equal(lines.length, 3, JSON.stringify(lines));
          assert.ok(lines[1]!.includes('2000 bytes') && lines[1]!.includes(`shm:${a.name}`), lines[1]);
          assert.match(lines[1]!, new RegExp(`max_payload ${MAX_PAYLOAD} bytes.*1 dropped so far`));
          assert.match(lines[2]!, /2001 bytes.*2 dropped so far/);
          if (kind !== 'mpsc') await waitUntil(() => a.ring.size === 0, 'the ring to be released past the large records');
          controller.abort();
          await running;
          sub.unsubscribe();
        } finally {
          await other.close();
          own.dispose();
        }
      });
    }
  });

  describe('a NATS message larger than the ring takes', function () {
    it('core NATS: dropped and said with its size, subject and the ring limit; the bridge goes on', async function () {
      const b = rings.make();
      const subject = uniqueSubject('large');
      const { running, lines } = await started(nats.url(subject), `shm:${b.name}`, controller.signal);
      nc.publish(subject, new Uint8Array([1]));
      nc.publish(subject, new Uint8Array(CAPACITY));
      nc.publish(subject, new Uint8Array([2]));
      const got: number[] = [];
      while (got.length < 2) got.push((await b.ring.read({ signal: AbortSignal.timeout(5000), peerTimeoutMs: Infinity }))[0]!);
      assert.deepEqual(got, [1, 2]);
      assert.equal(lines.length, 1, JSON.stringify(lines));
      assert.ok(lines[0]!.includes(`${CAPACITY} bytes`) && lines[0]!.includes(subject), lines[0]);
      assert.ok(lines[0]!.includes(`(${b.ring.maxMessageLength} bytes)`), lines[0]);
      assert.match(lines[0]!, /1 dropped so far/);
      controller.abort();
      await running;
    });

    it('JetStream: terminated (never redelivered, also to a restarted bridge), said, and the bridge goes on', async function () {
      const b = rings.make();
      const stream = `LARGE${process.pid}_${++rings.counter}`;
      const subject = uniqueSubject('jslarge');
      const url = nats.url(subject, `?jetstream=${stream}`);
      const first = await started(url, `shm:${b.name}`, controller.signal);
      const js = nc.jetstream();
      await js.publish(subject, new Uint8Array([1]));
      await js.publish(subject, new Uint8Array(CAPACITY));
      await js.publish(subject, new Uint8Array([2]));
      const read = async (): Promise<number> => (await b.ring.read({ signal: AbortSignal.timeout(5000), peerTimeoutMs: Infinity }))[0]!;
      assert.deepEqual([await read(), await read()], [1, 2]);
      assert.equal(first.lines.length, 1, JSON.stringify(first.lines));
      assert.match(first.lines[0]!, /terminated \(stream sequence 2/);
      // The last message before the restart is a large one: only the marker (COMMITTED past it) keeps the
      // restarted bridge from starting at it.
      await js.publish(subject, new Uint8Array(CAPACITY));
      await waitUntil(() => first.lines.length === 2, 'the bridge to terminate the second large message');
      assert.match(first.lines[1]!, /terminated \(stream sequence 4/);
      controller.abort();
      await first.running;
      // A new bridge starts after what the ring holds: the large ones are not delivered again.
      controller = new AbortController();
      const second = await started(url, `shm:${b.name}`, controller.signal);
      await js.publish(subject, new Uint8Array([3]));
      assert.equal(await read(), 3);
      assert.deepEqual(second.lines, []);
    });
  });

  describe('an MpscRing', function () {
    it('ring → core NATS and core NATS → ring: bridged, in order, with the types', async function () {
      const a = rings.make('mpsc');
      const subject = uniqueSubject('mpsc');
      const got: Array<[number, string | undefined]> = [];
      const sub = nc.subscribe(subject, {
        callback: (err, msg: Msg) => err === null && got.push([msg.data[0]!, msg.headers?.get('Shmring-Type')]),
      });
      await nc.flush();
      for (let i = 0; i < 3; i++) assert.ok(a.ring.tryWrite(new Uint8Array([i]), 7));
      await started(`shm:${a.name}`, nats.url(subject), controller.signal);
      await waitUntil(() => got.length >= 3, 'three messages from the MpscRing');
      assert.deepEqual(got, [
        [0, '7'],
        [1, '7'],
        [2, '7'],
      ]);
      sub.unsubscribe();

      const b = rings.make('mpsc');
      const into = uniqueSubject('mpscin');
      await started(nats.url(into), `shm:${b.name}`, controller.signal);
      nc.publish(into, new Uint8Array([9]));
      const bytes = await b.ring.read({ signal: AbortSignal.timeout(5000) });
      assert.deepEqual([...bytes], [9]);
    });

    it('with JetStream, either way: ERR_SHMRING_WRONG_KIND saying a JetStream bridge needs a SpscRing', async function () {
      const a = rings.make('mpsc');
      const url = nats.url(uniqueSubject('mpscjs'), '?jetstream=MPSC');
      await rejectsWith(bridge(`shm:${a.name}`, url), ErrorCodes.WRONG_KIND, /is a MpscRing; a JetStream bridge needs a SpscRing/);
      await rejectsWith(bridge(url, `shm:${a.name}`), ErrorCodes.WRONG_KIND, /is a MpscRing; a JetStream bridge needs a SpscRing/);
    });
  });

  it('SHM: is taken as shm: (the scheme in any case, like NATS://)', async function () {
    const a = rings.make();
    const subject = uniqueSubject('upper');
    const got: number[] = [];
    const sub = nc.subscribe(subject, { callback: (err, msg: Msg) => err === null && got.push(msg.data[0]!) });
    await nc.flush();
    await started(`SHM:${a.name}`, nats.url(subject).replace('nats://', 'NATS://'), controller.signal);
    assert.ok(a.ring.tryWrite(new Uint8Array([4]), 1));
    await waitUntil(() => got.length === 1, 'the message');
    assert.deepEqual(got, [4]);
    sub.unsubscribe();
  });

  it('subjectMatches: a stream subject with wildcards covers the subjects it matches', function () {
    assert.ok(subjectMatches('a.b', 'a.b'));
    assert.ok(subjectMatches('a.*', 'a.b'));
    assert.ok(subjectMatches('a.>', 'a.b.c'));
    assert.ok(subjectMatches('>', 'a'));
    assert.ok(!subjectMatches('a.*', 'a.b.c'));
    assert.ok(!subjectMatches('a.>', 'a'));
    assert.ok(!subjectMatches('a.b', 'a.b.c'));
    assert.ok(!subjectMatches('a.b.c', 'a.b'));
  });
});
