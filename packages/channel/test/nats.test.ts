/**
 * Channels over NATS, beyond what the parity suites (requests, order,
 * misuse: each runs once per transport) check: addresses that are wrong or
 * lead nowhere give typed errors naming the address; a peer's death is
 * known within the documented bound, whether its process died (the server
 * answers the heartbeat with "no responders") or went silent (its
 * heartbeats stopped while its connection stayed up).
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { ErrorCodes } from '@shmring/core';
import { connect, listen, type Channel } from '../src/index.js';
import { closeEvent, killAllPeers, rejectsWith, startPeer } from './helpers.js';
import { freePort, sharedNats, skipWithoutNats, uniqueSubject, type NatsServer } from './nats-server.js';

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
    ] as const) {
      it(`connect and listen reject '${address}' with ERR_SHMRING_INVALID_ENDPOINT naming it`, async function () {
        for (const verb of [connect, listen]) {
          const err = await rejectsWith(verb(address), ErrorCodes.INVALID_ENDPOINT, why);
          assert.ok(err.message.includes(address), err.message);
        }
      });
    }

    it('connect and listen to a port where no NATS server runs reject with ERR_SHMRING_UNREACHABLE naming the server', async function () {
      const port = await freePort();
      const address = `nats://127.0.0.1:${port}/jobs`;
      await rejectsWith(connect(address, { timeoutMs: 2000 }), ErrorCodes.UNREACHABLE, `127.0.0.1:${port}`);
      await rejectsWith(listen(address), ErrorCodes.UNREACHABLE, `127.0.0.1:${port}`);
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
  });

  describe('a peer that dies', function () {
    const BEAT_MS = 100;

    async function serverWithPeer(): Promise<{
      server: Awaited<ReturnType<typeof listen>>;
      channel: Channel;
      peer: ReturnType<typeof startPeer>;
    }> {
      const address = nats.url(uniqueSubject('peer'));
      const server = await listen(address, { heartbeatMs: BEAT_MS });
      const accepted = once(server, 'channel') as Promise<[Channel]>;
      const peer = startPeer({ role: 'client', path: address, heartbeatMs: BEAT_MS });
      await peer.next('connected');
      const [channel] = await accepted;
      return { server, channel, peer };
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

    it('silent (SIGSTOPped, its connection still open): its channel ends with ERR_SHMRING_PEER_DEAD after 3 missed heartbeats', async function () {
      const { server, channel, peer } = await serverWithPeer();
      try {
        const ended = closeEvent(channel);
        const stoppedAt = performance.now();
        process.kill(peer.pid, 'SIGSTOP');
        const error = await ended;
        const took = performance.now() - stoppedAt;
        assert.equal((error as { code?: string } | undefined)?.code, ErrorCodes.PEER_DEAD, String(error));
        assert.match(error!.message, /nothing came from it/);
        assert.ok(took >= BEAT_MS * 2, `noticed after ${took.toFixed(0)} ms: too early for ${BEAT_MS} ms heartbeats`);
        assert.ok(took < BEAT_MS * 5 + 500, `noticed after ${took.toFixed(0)} ms (bound: 4 heartbeats of ${BEAT_MS} ms)`);
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
        for (let i = 0; i < 100; i++) void client.send(i);
        client.close();
        const got: unknown[] = [];
        for await (const v of channel) got.push(v);
        assert.deepEqual(
          got,
          Array.from({ length: 100 }, (_, i) => i),
        );
        assert.equal(await closeEventOrUndefined(channel), undefined);
        await client.closed;
      } finally {
        await server.close();
      }
    });
  });

  it('server.close() closes its channels (clients see a clean close) and its iterator ends', async function () {
    const address = nats.url(uniqueSubject('close'));
    const server = await listen(address);
    const clients = await Promise.all([connect(address), connect(address)]);
    const seen: Channel[] = [];
    const iterating = (async () => {
      for await (const ch of server) seen.push(ch);
    })();
    while (server.channels < 2) await new Promise((r) => setTimeout(r, 5));
    const ends = clients.map((c) => closeEvent(c));
    await server.close();
    await iterating;
    assert.deepEqual(await Promise.all(ends), [undefined, undefined]);
    for (const c of clients) await rejectsWith(c.send(1), ErrorCodes.CLOSED);
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
