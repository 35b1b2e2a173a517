/**
 * Channels over NATS, beyond what the parity suites (requests, order,
 * misuse: each runs once per transport) check: addresses that are wrong or
 * lead nowhere give typed errors naming the address; a peer's death is
 * known within the documented bound, whether its process died (the server
 * answers the heartbeat with "no responders") or went silent (its
 * heartbeats stopped while its connection stayed up).
 */
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as net from 'node:net';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { connect as natsConnect } from 'nats';
import { connect, listen, type Channel } from '../src/index.js';
import { closeEvent, killAllPeers, rejectsWith, sleep, startPeer, waitUntil } from './helpers.js';
import { freePort, NatsServer, sharedNats, skipWithoutNats, uniqueSubject } from './nats-server.js';

describe('channels over NATS', function () {
  this.timeout(30_000);
  let nats: NatsServer;

  before(async function () {
    skipWithoutNats(this);
    nats = await sharedNats();
  });

  afterEach(async function () {
    await killAllPeers();
  });

  describe('addresses', function () {
    for (const [address, why] of [
      ['nats://127.0.0.1:4222', /subject is missing/],
      ['nats://127.0.0.1:4222/a..b', /empty token/],
      ['nats://127.0.0.1:4222/jobs.*', /wildcard/],
      ['nats://127.0.0.1:4222/jobs?jetstream=S', /unknown option 'jetstream'/],
      ['nats:/jobs', /expected nats:\/\/host:port/],
      ['NATS://127.0.0.1:4222', /subject is missing/],
      ['nats://127.0.0.1:0/jobs', /port 0/],
      ['nats://127.0.0.1:99999/jobs', /the port '99999' is not a port number/],
      ['nats://127.0.0.1:-1/jobs', /the port '-1' is not a port number/],
      ['nats://u%E0:p@127.0.0.1:4222/jobs', /the user name has a malformed percent-encoding/],
      ['nats://u:p%ZZ@127.0.0.1:4222/jobs', /the password has a malformed percent-encoding/],
      ['nats://127.0.0.1:4222/%E0', /the subject has a malformed percent-encoding/],
      ['nats://127.0.0.1:4222/a%00b', /NUL character/],
    ] as const) {
      it(`connect and listen reject '${address}' with ERR_SHMRING_INVALID_ENDPOINT naming it`, async function () {
        for (const verb of [connect, listen]) {
          const err = await rejectsWith(verb(address), ErrorCodes.INVALID_ENDPOINT, why);
          // Credentials are never quoted: the userinfo is blanked.
          assert.ok(err.message.includes(address.replace(/\/\/[^/]*@/, '//***@')), err.message);
        }
      });
    }

    for (const address of [
      'nats://u:s3cr3t@127.0.0.1:4222/a..b',
      'nats://t0k3n@127.0.0.1:4222/jobs.*',
      'nats://u:s3cr3t@127.0.0.1:99999/jobs',
    ]) {
      it(`connect and listen reject '${address}' without its credentials in the message`, async function () {
        for (const verb of [connect, listen]) {
          const err = await rejectsWith(verb(address), ErrorCodes.INVALID_ENDPOINT);
          assert.doesNotMatch(err.message, /s3cr3t|t0k3n/);
          assert.match(err.message, /'nats:\/\/\*\*\*@127\.0\.0\.1/);
        }
      });
    }

    it('connect and listen to a port where no NATS server runs reject with ERR_SHMRING_UNREACHABLE naming the server', async function () {
      const port = await freePort();
      const address = `nats://127.0.0.1:${port}/jobs`;
      await rejectsWith(connect(address, { timeoutMs: 2000 }), ErrorCodes.UNREACHABLE, `127.0.0.1:${port}`);
      await rejectsWith(listen(address), ErrorCodes.UNREACHABLE, `127.0.0.1:${port}`);
    });

    it('connect with a signal that aborts while the NATS connection is being opened rejects with an AbortError at the abort', async function () {
      // A server that accepts and never speaks: the NATS handshake waits.
      const silent = net.createServer((socket) => socket.on('error', () => {}));
      silent.listen(0, '127.0.0.1');
      await once(silent, 'listening');
      try {
        const { port } = silent.address() as net.AddressInfo;
        const started = performance.now();
        await rejectsWith(
          connect(`nats://127.0.0.1:${port}/jobs`, { timeoutMs: 4000, signal: AbortSignal.timeout(200) }),
          ErrorCodes.ABORTED,
        );
        const took = performance.now() - started;
        assert.ok(took < 1000, `rejected after ${took.toFixed(0)} ms (aborted at 200, timeoutMs 4000)`);
      } finally {
        silent.close();
      }
    });

    it('connect to a subject nobody listens on rejects at once with ERR_SHMRING_NO_SERVER naming the address', async function () {
      const address = nats.url(uniqueSubject('nobody'));
      const started = performance.now();
      await rejectsWith(connect(address, { timeoutMs: 10_000 }), ErrorCodes.NO_SERVER, address);
      assert.ok(performance.now() - started < 5000, 'no-responders answers at once, not at the timeout');
    });

    it('connect with another codec than the server rejects with ERR_SHMRING_CODEC_MISMATCH, and the server sees no channel', async function () {
      const address = nats.url(uniqueSubject('codec'));
      const server = await listen(address, { codec: 'json' });
      let channels = 0;
      server.on('channel', () => channels++);
      try {
        await rejectsWith(connect(address), ErrorCodes.CODEC_MISMATCH, /json/);
        assert.equal(channels, 0);
      } finally {
        await server.close();
      }
    });
    it('connect to a server whose welcome has a heartbeat of 0 ms rejects with ERR_SHMRING_NOT_A_CHANNEL (it would beat every ms and end at once)', async function () {
      const subject = uniqueSubject('beat0');
      const fake = await natsConnect({ servers: `127.0.0.1:${nats.port}` });
      try {
        fake.subscribe(subject, {
          callback: (err, msg) => {
            if (err !== null) return;
            const hello = JSON.parse(new TextDecoder().decode(msg.data)) as { v: number; codec: number };
            msg.respond(new TextEncoder().encode(JSON.stringify({ v: hello.v, codec: hello.codec, inbox: '_INBOX.fake', beatMs: 0 })));
          },
        });
        await fake.flush();
        await rejectsWith(connect(nats.url(subject), { timeoutMs: 5000 }), ErrorCodes.NOT_A_CHANNEL, /beatMs 0/);
      } finally {
        await fake.close();
      }
    });
  });

  describe('a peer that dies', function () {
    const BEAT_MS = 100;

    /** A server (heartbeat `serverBeatMs`) and its channel to a peer process (heartbeat `peerBeatMs`). */
    async function serverWithPeer(
      serverBeatMs = BEAT_MS,
      peerBeatMs = BEAT_MS,
    ): Promise<{
      server: Awaited<ReturnType<typeof listen>>;
      channel: Channel;
      peer: ReturnType<typeof startPeer>;
    }> {
      const address = nats.url(uniqueSubject('peer'));
      const server = await listen(address, { heartbeatMs: serverBeatMs });
      const accepted = once(server, 'channel') as Promise<[Channel]>;
      const peer = startPeer({ role: 'client', path: address, heartbeatMs: peerBeatMs });
      await peer.next('connected');
      const [channel] = await accepted;
      return { server, channel, peer };
    }

    /** SIGSTOPs the peer (its connection stays open): how `channel` ends, and how long after. */
    async function stopPeer(channel: Channel, peer: ReturnType<typeof startPeer>): Promise<{ error: Error; took: number }> {
      const ended = closeEvent(channel);
      const stoppedAt = performance.now();
      process.kill(peer.pid, 'SIGSTOP');
      const error = await ended;
      const took = performance.now() - stoppedAt;
      assert.equal((error as { code?: string } | undefined)?.code, ErrorCodes.PEER_DEAD, String(error));
      return { error: error!, took };
    }

    it('SIGKILLed: its channel ends with ERR_SHMRING_PEER_DEAD within one heartbeat and a round trip; a pending request rejects with it', async function () {
      const { server, channel, peer } = await serverWithPeer();
      try {
        assert.equal(await channel.request('ping', { timeoutMs: 5000 }), 'ping');
        const ended = closeEvent(channel);
        const killedAt = await peer.kill();
        const pending = channel.request('never answered');
        const error = await ended;
        const took = performance.now() - killedAt;
        assert.equal((error as { code?: string } | undefined)?.code, ErrorCodes.PEER_DEAD, String(error));
        assert.match(error!.message, /no responders/);
        assert.ok(
          took < BEAT_MS * 2 + 500,
          `noticed after ${took.toFixed(0)} ms (bound: one heartbeat of ${BEAT_MS} ms plus a round trip)`,
        );
        await rejectsWith(pending, ErrorCodes.PEER_DEAD);
      } finally {
        await server.close();
      }
    });

    it('alive while the wall clock is stepped (NTP, date -s): a jump of Date.now() by minutes either way ends no channel', async function () {
      const { server, channel } = await serverWithPeer();
      const realNow = Date.now;
      let ended: unknown;
      channel.once('close', (err?: unknown) => (ended = err ?? 'closed'));
      try {
        for (const step of [10 * 60_000, -20 * 60_000]) {
          Date.now = () => realNow() + step;
          await new Promise((resolve) => setTimeout(resolve, BEAT_MS * 6)); // six of its heartbeats
          assert.equal(ended, undefined, `the channel ended after a clock step of ${step / 60_000} min: ${String(ended)}`);
          assert.equal(await channel.request('ping', { timeoutMs: 5000 }), 'ping');
        }
      } finally {
        Date.now = realNow;
        await server.close();
      }
    });

    it('silent (SIGSTOPped, its connection still open): its channel ends with ERR_SHMRING_PEER_DEAD after 3 missed heartbeats', async function () {
      const { server, channel, peer } = await serverWithPeer();
      try {
        const { error, took } = await stopPeer(channel, peer);
        assert.match(error.message, /nothing came from it/);
        assert.ok(took >= BEAT_MS * 2, `noticed after ${took.toFixed(0)} ms: too early for ${BEAT_MS} ms heartbeats`);
        assert.ok(took < BEAT_MS * 5 + 500, `noticed after ${took.toFixed(0)} ms (bound: 4 heartbeats of ${BEAT_MS} ms)`);
      } finally {
        process.kill(peer.pid, 'SIGCONT');
        await server.close();
      }
    });

    // An outside tester: a peer beating every 300 ms, silent, was judged only at this end's own 1000 ms
    // ticks, so its end came after some 1800 ms where the README promises 4 of its periods (1200 ms).
    // (Run on the old code, this test passes about one time in ten: when this end's tick happens to fall in time.)
    it('silent, beating faster than this end: judged at its own pace, within 4 of its periods', async function () {
      // This end's ticks 5 s apart: judged only at them, the silence would mostly be seen seconds late.
      const { server, channel, peer } = await serverWithPeer(5000, 200);
      try {
        const { error, took } = await stopPeer(channel, peer);
        assert.match(error.message, /its heartbeat is every 200 ms/);
        // 400 ms for this loaded machine: the timer ticks late, and the last beat may still be in nats-server when the peer stops.
        assert.ok(took < 4 * 200 + 400, `noticed after ${took.toFixed(0)} ms (bound: 4 of its 200 ms heartbeats)`);
      } finally {
        process.kill(peer.pid, 'SIGCONT');
        await server.close();
      }
    });

    it('a clean close() of the peer ends the channel cleanly (no error), after every value it sent', async function () {
      const address = nats.url(uniqueSubject('clean'));
      const server = await listen(address, { heartbeatMs: BEAT_MS });
      try {
        const accepted = once(server, 'channel') as Promise<[Channel]>;
        const client = await connect(address, { heartbeatMs: BEAT_MS });
        const [channel] = await accepted;
        // Sends for longer than a run of writes without a turn of the event loop (10 ms): each send has
        // published its value when it returns, so close() comes after all of them, and each one resolves.
        const sends: Array<Promise<void>> = [];
        const until = performance.now() + 50;
        while (performance.now() < until) sends.push(client.send(sends.length));
        client.close();
        const got: unknown[] = [];
        for await (const v of channel) got.push(v);
        assert.ok(sends.length > 100, `only ${sends.length} sends in 50 ms`);
        assert.deepEqual(
          got,
          Array.from({ length: sends.length }, (_, i) => i),
        );
        const settled = await Promise.allSettled(sends);
        assert.deepEqual(
          settled.filter((r) => r.status === 'rejected'),
          [],
        );
        assert.equal(await closeEventOrUndefined(channel), undefined);
        await client.closed;
      } finally {
        await server.close();
      }
    });
  });

  describe('records lost in transit (core NATS is at most once)', function () {
    const BEAT_MS = 200;

    /**
     * A channel, and a third connection that watches every message of the
     * server: it learns the server end's inbox (where the client's records
     * go) and the header values of the client's records, to forge one.
     */
    async function watched(tag: string) {
      const address = nats.url(uniqueSubject(tag));
      const server = await listen(address, { heartbeatMs: BEAT_MS });
      const spy = await natsConnect({ servers: `127.0.0.1:${nats.port}` });
      const seen: { subject: string; type: string; seq: string }[] = [];
      spy.subscribe('_INBOX.>', {
        callback: (_err, msg) => {
          const type = msg.headers?.get('Shmring-Type');
          if (type) seen.push({ subject: msg.subject, type, seq: msg.headers!.get('Shmring-Seq') });
        },
      });
      await spy.flush();
      const accepted = once(server, 'channel') as Promise<[Channel]>;
      const client = await connect(address, { heartbeatMs: BEAT_MS });
      const [channel] = await accepted;
      await client.send('first');
      assert.equal(await channel.receive(), 'first');
      await spy.flush();
      const first = seen.find((m) => m.seq === '0');
      assert.ok(first !== undefined, `the spy saw no record numbered 0: ${JSON.stringify(seen)}`);
      const { headers } = await import('nats');
      /** Publishes to the server end's inbox, as the client end would, with these headers. */
      const forge = async (fields: Record<string, string>): Promise<void> => {
        const h = headers();
        for (const [k, v] of Object.entries(fields)) h.set(k, v);
        spy.publish(first.subject, new Uint8Array(0), { headers: h });
        await spy.flush();
      };
      return { server, client, channel, spy, first, forge, seen };
    }

    it('a record that comes after a gap ends both channels with ERR_SHMRING_MESSAGE_LOST, after what came before it; a pending request rejects with it', async function () {
      const { server, client, channel, spy, first, forge, seen } = await watched('lost-record');
      const clientClosed = closeEvent(client);
      try {
        const pending = client.request('never answered'); // record 1: no handler on the server, it waits there
        const pendingRejected = rejectsWith(pending, ErrorCodes.MESSAGE_LOST); // attached now: it rejects before the loop ends
        await client.send('second'); // record 2
        // Routed by the server (to the spy, and so to the server end before anything the spy sends after).
        await waitUntil(() => seen.some((m) => m.seq === '2'), 'the spy to see record 2');
        await forge({ 'Shmring-Type': first.type, 'Shmring-Seq': '5' }); // records 3 and 4 "lost"
        await client.send('after the gap'); // record 3 comes after the forged 5: never delivered
        const got: unknown[] = [];
        const error = await (async () => {
          try {
            for await (const v of channel) got.push(v);
          } catch (err) {
            return err as Error & { code?: string };
          }
          return undefined;
        })();
        assert.deepEqual(got, ['second'], 'what came before the gap, in order, and nothing after it');
        assert.equal(error?.code, ErrorCodes.MESSAGE_LOST, String(error));
        assert.match(error!.message, /2 records from the other side went missing in transit \(record 3 was due, record 5 came\)/);
        const rejected = await pendingRejected;
        assert.match(rejected.message, /found records of this end's lost in transit/);
        assert.equal(((await clientClosed) as { code?: string } | undefined)?.code, ErrorCodes.MESSAGE_LOST);
      } finally {
        client.close();
        await server.close();
        await spy.close();
      }
    });

    it('a heartbeat counting records that never came ends the channel within a heartbeat: a lost last request does not hang', async function () {
      const { server, client, channel, spy, forge } = await watched('lost-tail');
      try {
        // Waits for a record that "was sent and lost" (the rejection handled from the start).
        const receiving = rejectsWith(channel.receive(), ErrorCodes.MESSAGE_LOST);
        await forge({ 'Shmring-Control': 'beat', 'Shmring-Seq': '2' }); // the client "sent" records 1 too
        const error = await receiving;
        assert.match(error.message, /1 record from the other side went missing in transit \(record 1 was due, a message counting 2 came\)/);
        await rejectsWith(client.request('x'), ErrorCodes.MESSAGE_LOST);
      } finally {
        client.close();
        await server.close();
        await spy.close();
      }
    });
  });

  describe('a sender that never waits', function () {
    it('await send() in a loop for 1.5 s lets timers run, and neither live end is taken for dead (100 ms heartbeats)', async function () {
      const BEAT_MS = 100;
      const address = nats.url(uniqueSubject('flood'));
      const server = await listen(address, { heartbeatMs: BEAT_MS });
      try {
        const accepted = once(server, 'channel') as Promise<[Channel]>;
        const client = await connect(address, { heartbeatMs: BEAT_MS });
        const [channel] = await accepted;
        const ended: string[] = [];
        client.on('close', (err?: Error) => ended.push(`client: ${String(err)}`));
        channel.on('close', (err?: Error) => ended.push(`server's channel: ${String(err)}`));
        let received = 0;
        let outOfOrder = 0;
        const receiving = (async () => {
          for await (const v of channel) {
            if (v !== received) outOfOrder++;
            received++;
          }
        })();
        let ticks = 0;
        const ticker = setInterval(() => ticks++, 20);
        let sent = 0;
        const until = performance.now() + 1500;
        while (performance.now() < until) await client.send(sent++);
        clearInterval(ticker);
        // Publishing never waits; what the loop sent arrives after it.
        const deadline = performance.now() + 10_000;
        while (received < sent && performance.now() < deadline && ended.length === 0) await sleep(10);
        assert.deepEqual(ended, [], 'a live end was taken for dead');
        assert.equal(received, sent, `received ${received} of ${sent} values`);
        assert.equal(outOfOrder, 0);
        // 75 ticks of 20 ms in 1.5 s with an idle loop; a loop that never turns gets none.
        assert.ok(ticks >= 10, `a 20 ms interval ran ${ticks} times during the 1.5 s loop of ${sent} sends`);
        console.log(`      (${sent} sends in 1.5 s; the 20 ms interval ran ${ticks} times)`);
        client.close();
        await receiving;
      } finally {
        await server.close();
      }
    });
  });

  describe('the process of an idle channel', function () {
    const INDEX = fileURLToPath(new URL('../src/index.js', import.meta.url));

    /**
     * A process that connects and runs `body` (with `c`, the channel, and
     * `ready()`, which the body calls once it is where the test looks at it);
     * resolves with its exit code, or 'alive' when it runs `ms` after ready()
     * (the window starts there: the process's start and connection, slow on
     * a loaded machine, are not in it).
     */
    async function client(address: string, body: string, ms: number): Promise<number | 'alive'> {
      const child = spawn(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `const ready = () => process.stdout.write('ready\\n'); const m = await import(${JSON.stringify(INDEX)}); const c = await m.connect(${JSON.stringify(address)}); ${body}`,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      const exited = once(child, 'exit').then(([code]) => code as number);
      let out = '';
      const ready = new Promise<void>((resolve) =>
        child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
          out += chunk;
          if (out.includes('ready')) resolve();
        }),
      );
      const started = await Promise.race([ready.then(() => 'ready' as const), exited]);
      assert.equal(started, 'ready', `the client exited (code ${String(started)}) before it was ready`);
      const result = await Promise.race([exited, new Promise<'alive'>((resolve) => setTimeout(() => resolve('alive'), ms))]);
      if (result === 'alive') {
        child.kill('SIGKILL');
        await exited;
      }
      return result;
    }

    it('exits once nothing waits on its NATS channel, as with a socket path; a pending receive keeps it alive', async function () {
      const address = nats.url(uniqueSubject('idle'));
      const server = await listen(address);
      try {
        const serving = (async () => {
          for await (const channel of server) channel.handle((v) => v);
        })();
        assert.equal(await client(address, 'await c.request(1); ready();', 1500), 0, 'an idle channel kept its process alive');
        assert.equal(
          await client(address, 'const r = c.receive(); ready(); await r;', 1000),
          'alive',
          'a pending receive let its process exit',
        );
        await server.close();
        await serving;
      } finally {
        await server.close();
      }
    });
  });

  describe('a NATS server restart', function () {
    this.timeout(60_000); // heartbeats of 5 s, and a server stopped and started again
    /**
     * A TCP relay to the server, for the listening end: `shut` (the
     * relay's connections closed, new ones refused) keeps that end from
     * reconnecting after the server restarts, as long as the test wants,
     * so that the other end is deterministically back first.
     */
    async function relay(port: number): Promise<{ port: number; shut(on: boolean): void; close(): void }> {
      let shut = false;
      const pairs = new Set<[net.Socket, net.Socket]>();
      const server = net.createServer((inner) => {
        inner.on('error', () => {});
        if (shut) {
          inner.destroy();
          return;
        }
        const outer = net.connect({ host: '127.0.0.1', port });
        outer.on('error', () => {});
        const pair: [net.Socket, net.Socket] = [inner, outer];
        pairs.add(pair);
        const end = (): void => {
          pairs.delete(pair);
          inner.destroy();
          outer.destroy();
        };
        inner.once('close', end);
        outer.once('close', end);
        inner.pipe(outer);
        outer.pipe(inner);
      });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const setShut = (on: boolean): void => {
        shut = on;
        if (!on) return;
        for (const [inner, outer] of pairs) {
          inner.destroy();
          outer.destroy();
        }
      };
      return {
        port: (server.address() as net.AddressInfo).port,
        shut: setShut,
        close() {
          setShut(true);
          server.close();
        },
      };
    }

    /** A listening end behind a relay (echoing requests) and a client connected to the server directly. */
    async function ends(own: NatsServer, beatMs: number) {
      const gate = await relay(own.port);
      const subject = uniqueSubject('restart');
      const server = await listen(`nats://127.0.0.1:${gate.port}/${subject}`, { heartbeatMs: beatMs });
      void (async () => {
        for await (const channel of server) channel.handle((v) => v);
      })();
      const client = await connect(own.url(subject), { heartbeatMs: beatMs });
      assert.equal(await client.request('before', { timeoutMs: 5000 }), 'before');
      return { gate, server, client };
    }

    it('shorter than the heartbeat bound, with one end back a heartbeat before the other, leaves the channel open', async function () {
      // The client's heartbeats (and requests) between its reconnection and the listener's are answered "no
      // responders": the peer is not subscribed yet, though alive. The listener is kept away for more than
      // a period after the client is back, so that at least one heartbeat falls there; the whole outage
      // stays within the bound (3 periods of silence): beat + restart + that wait + reconnect < 3 * beat,
      // with some 4 s to spare for a slow restart on a loaded machine.
      const BEAT_MS = 5000;
      await NatsServer.using(async (own) => {
        const { gate, server, client } = await ends(own, BEAT_MS);
        try {
          let ended: Error | undefined | 'open' = 'open';
          client.once('close', (error?: Error) => {
            ended = error;
          });
          gate.shut(true);
          await own.stop();
          await own.restart();
          await sleep(350 + BEAT_MS * 1.1); // the client reconnects within 350 ms (250 ms + jitter), then beats
          assert.equal(ended, 'open', `the client's channel ended while the listener was reconnecting: ${String(ended)}`);
          gate.shut(false);
          // What is sent before the listener is back is lost (at most once): it reconnects within 350 ms.
          await sleep(1000);
          assert.equal(await client.request('after', { timeoutMs: 5000 }), 'after');
          await sleep(BEAT_MS); // the listener's side too saw nothing end
          assert.equal(server.channels, 1, "the listener's channel ended");
          assert.equal(ended, 'open', `the client's channel ended: ${String(ended)}`);
        } finally {
          client.close();
          await server.close();
          gate.close();
        }
      });
    });

    it('a peer that does not come back is still known dead within 4 heartbeats of the last thing it sent', async function () {
      // Its "no responders" after the restart does not end the channel at once (it may be reconnecting):
      // the silence does, within the bound.
      const BEAT_MS = 300;
      await NatsServer.using(async (own) => {
        const { gate, server, client } = await ends(own, BEAT_MS);
        try {
          // Timed when the channel ends, not once the restart is over (a slow restart is not the channel's time).
          const closing = closeEvent(client).then((error) => ({ error, at: performance.now() }));
          gate.shut(true); // for good: the listener is as gone as a dead process
          const lostAt = performance.now();
          await own.stop();
          await own.restart();
          const { error, at } = await closing;
          const took = at - lostAt;
          assert.equal((error as { code?: string } | undefined)?.code, ErrorCodes.PEER_DEAD, String(error));
          assert.match(error!.message, /nothing came from it/);
          assert.ok(took < BEAT_MS * 4 + 1000, `noticed after ${took.toFixed(0)} ms (bound: 4 heartbeats of ${BEAT_MS} ms)`);
        } finally {
          client.close();
          await server.close();
          gate.close();
        }
      });
    });
  });

  it('server.close() closes its channels (clients see a clean close) and its iterator ends', async function () {
    const address = nats.url(uniqueSubject('close'));
    const server = await listen(address);
    // Iterating before the clients come: a channel that arrives with nobody to take it is closed at once.
    const seen: Channel[] = [];
    const iterating = (async () => {
      for await (const ch of server) seen.push(ch);
    })();
    const clients = await Promise.all([connect(address), connect(address)]);
    while (server.channels < 2) await new Promise((r) => setTimeout(r, 5));
    const ends = clients.map((c) => closeEvent(c));
    await server.close();
    await iterating;
    assert.deepEqual(await Promise.all(ends), [undefined, undefined]);
    for (const c of clients) await rejectsWith(c.send(1), ErrorCodes.CLOSED);
  });
});

/**
 * A connection attempt that fails must not keep its process alive: nats.js
 * leaves the socket of an attempt it gave up before the handshake open
 * (still connecting, or waiting for an INFO that never comes). Each case
 * runs a child against a server that accepts and never speaks, and checks
 * that it exits soon after its connect rejected. No nats-server is needed.
 */
describe('a NATS connection attempt given up', function () {
  this.timeout(30_000);
  const INDEX = fileURLToPath(new URL('../src/index.js', import.meta.url));
  const BRIDGE_BIN = fileURLToPath(new URL('../../bin/shmring-bridge.js', import.meta.url));
  /** How soon the process must exit once its attempt failed. */
  const EXIT_BOUND_MS = 1500;
  let silent: net.Server;
  let accepted: net.Socket[];
  let port: number;

  beforeEach(async function () {
    accepted = [];
    silent = net.createServer((socket) => {
      socket.on('error', () => {});
      accepted.push(socket);
    });
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    ({ port } = silent.address() as net.AddressInfo);
  });

  afterEach(function () {
    for (const socket of accepted) socket.destroy();
    silent.close();
  });

  /**
   * Runs node with `args`; resolves with when `marker` appeared on its stderr (NaN: never) and when it
   * exited (Infinity: not within 15 s), in ms after its start. `onStart` sees the child.
   */
  async function timeline(
    args: string[],
    marker?: string,
    onStart?: (child: ChildProcess) => void,
  ): Promise<{ marked: number; exited: number; stderr: string }> {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const started = performance.now();
    let stderr = '';
    let marked = Number.NaN;
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      if (Number.isNaN(marked) && marker !== undefined && stderr.includes(marker)) marked = performance.now() - started;
    });
    onStart?.(child);
    const exitedAt = once(child, 'exit').then(() => performance.now() - started);
    const late = new Promise<number>((resolve) => setTimeout(() => resolve(Number.POSITIVE_INFINITY), 15_000));
    const exited = await Promise.race([exitedAt, late]);
    if (exited === Number.POSITIVE_INFINITY) {
      child.kill('SIGKILL');
      await exitedAt;
    }
    return { marked, exited, stderr };
  }

  function client(options: string): string[] {
    return [
      '--input-type=module',
      '-e',
      `const m = await import(${JSON.stringify(INDEX)});
       try { await m.connect('nats://127.0.0.1:${port}/jobs', ${options}); } catch (err) { console.error('rejected', err.code); }`,
    ];
  }

  /** Runs a client whose connect() takes `options`: it must reject with `code`, and its process exit right after. */
  async function exitsRightAfterRejecting(options: string, code: string): Promise<void> {
    const t = await timeline(client(options), `rejected ${code}`);
    assert.ok(Number.isFinite(t.marked), `connect did not reject with ${code}: ${t.stderr}`);
    assert.ok(
      t.exited - t.marked < EXIT_BOUND_MS,
      `rejected at ${t.marked.toFixed(0)} ms, exited at ${t.exited === Number.POSITIVE_INFINITY ? 'never (killed at 15 s)' : `${t.exited.toFixed(0)} ms`}`,
    );
  }

  it('a connect that times out (timeoutMs 500) lets its process exit right after it rejects', async function () {
    await exitsRightAfterRejecting('{ timeoutMs: 500 }', ErrorCodes.UNREACHABLE);
  });

  it('a connect aborted by its signal lets its process exit right after it rejects, not at timeoutMs', async function () {
    await exitsRightAfterRejecting('{ timeoutMs: 10_000, signal: AbortSignal.timeout(300) }', ErrorCodes.ABORTED);
  });

  it('shmring bridge stopped by SIGTERM while it connects exits at once, not at the connect timeout', async function () {
    const name = `shmring-attempt-test-${process.pid}`;
    const region = Region.create({ backing: 'posix', name, size: SpscRing.regionSize({ capacity: 1 << 12 }) });
    try {
      SpscRing.create(region, { capacity: 1 << 12 });
      let signalled = Number.NaN;
      const started = performance.now();
      const t = await timeline([BRIDGE_BIN, `shm:${name}`, `nats://127.0.0.1:${port}/x`], '\u0000', (child) => {
        // Once the bridge's connection is accepted (the ring is open by then), it waits for an INFO that never comes.
        void (async () => {
          while (accepted.length === 0 && child.exitCode === null) await new Promise((r) => setTimeout(r, 10));
          signalled = performance.now() - started;
          child.kill('SIGTERM');
        })();
      });
      assert.ok(Number.isFinite(signalled), `the bridge exited before it connected: ${t.stderr}`);
      assert.ok(
        t.exited - signalled < EXIT_BOUND_MS,
        `SIGTERM at ${signalled.toFixed(0)} ms, exited at ${t.exited === Number.POSITIVE_INFINITY ? 'never (killed at 15 s)' : `${t.exited.toFixed(0)} ms`}: ${t.stderr}`,
      );
    } finally {
      region.unlink();
      region.close();
    }
  });
});

async function closeEventOrUndefined(channel: Channel): Promise<Error | undefined> {
  let error: Error | undefined;
  channel.once('close', (e?: Error) => {
    error = e;
  });
  await channel.closed;
  return error;
}
