/**
 * Channels over NATS facing what the network or the NATS server does wrong:
 * a peer whose HELLO or WELCOME names a subject that is not an inbox, a
 * server that refuses permissions (at the handshake, to the inbox, to a
 * listener after a reconnection), a connection that goes away while
 * listen() waits for its answer, a connect with timeoutMs 0, a sender
 * faster than the connection.
 */
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { ErrorCodes } from '@shmring/core';
import { connect as natsConnect, type Msg } from 'nats';
import { connect, listen, type Channel } from '../src/index.js';
import { closeEvent, rejectsWith, sleep } from './helpers.js';
import { freePort, NATS_SERVER, NatsServer, sharedNats, skipWithoutNats, uniqueSubject } from './nats-server.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A nats-server run from a configuration of `body` on `port` (or a free one); stop() kills it. */
async function configServer(body: string, port?: number): Promise<{ port: number; stop(): Promise<void> }> {
  const at = port ?? (await freePort());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-nats-faults-'));
  const config = path.join(dir, 'nats.conf');
  fs.writeFileSync(config, `listen: "127.0.0.1:${at}"\n${body}\n`);
  const child: ChildProcess = spawn(NATS_SERVER!, ['-c', config], { stdio: 'ignore' });
  const exited = once(child, 'exit');
  const deadline = performance.now() + 10_000;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host: '127.0.0.1', port: at });
      socket.once('data', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (up) break;
    if (performance.now() > deadline || child.exitCode !== null) assert.fail(`nats-server (${body}) did not start`);
    await sleep(20);
  }
  return {
    port: at,
    stop: async () => {
      child.kill('SIGKILL');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const user = (permissions: string): string => `authorization { users = [ { user: "u", password: "p", permissions: ${permissions} } ] }`;

describe('channels over NATS: faults', function () {
  this.timeout(60_000);
  let nats: NatsServer;

  before(async function () {
    skipWithoutNats(this);
    nats = await sharedNats();
  });

  describe('a peer that names a subject that is no inbox', function () {
    // A server of its own: the spy below watches every subject, where the shared server carries the
    // heartbeats of other tests' channels still open.
    let own: NatsServer;
    before(async function () {
      own = await NatsServer.start();
    });
    after(async function () {
      await own?.stop();
    });

    // SPY: a subject the test watches, which a hostile HELLO tries to have the listener publish to.
    for (const inbox of ['', 'SPY', '_INBOX.a b', '_INBOX.x\r\nPUB SPY 2\r\nhi', '_INBOX.*', '_INBOX.>', '_INBOX.\u0001', '_INBOX.']) {
      it(`listen ignores a HELLO with inbox ${JSON.stringify(inbox)}: nothing is published to it, no channel opens, and the listener serves the next client`, async function () {
        const subject = uniqueSubject('hello');
        const address = own.url(subject);
        const server = await listen(address, { heartbeatMs: 100 });
        let channels = 0;
        server.on('channel', (ch: Channel) => {
          channels++;
          ch.handle((v) => v);
        });
        const raw = await natsConnect({ servers: `127.0.0.1:${own.port}` });
        try {
          const spy = uniqueSubject('spy');
          // What the listener publishes on its own (heartbeats carry Shmring-Control), or anything on SPY.
          const seen: string[] = [];
          raw.subscribe('>', {
            callback: (err, msg: Msg) => {
              if (err === null && (msg.subject === spy || msg.headers?.get('Shmring-Control') !== undefined)) seen.push(msg.subject);
            },
          });
          await raw.flush();
          // The server's codec, from its answer to a HELLO that asks for none (-1): a HELLO with its codec and a
          // good inbox would open a channel.
          const probe = await raw.request(
            subject,
            encoder.encode(JSON.stringify({ v: 1, codec: -1, inbox: '_INBOX.probe', beatMs: 100 })),
            {
              timeout: 5000,
            },
          );
          const { codec } = JSON.parse(decoder.decode(probe.data)) as { codec: number };
          const hello = { v: 1, codec, inbox: inbox.replaceAll('SPY', spy), beatMs: 100 };
          const answered = await raw.request(subject, encoder.encode(JSON.stringify(hello)), { timeout: 500 }).then(
            (m) => decoder.decode(m.data),
            (e: { code?: string }) => e.code,
          );
          assert.equal(answered, 'TIMEOUT', `the HELLO was answered: ${String(answered)}`);
          await sleep(400); // four of the listener's heartbeat periods
          assert.deepEqual(seen, [], 'the listener published to the subject a HELLO named');
          assert.equal(channels, 0);
          const client = await connect(address, { timeoutMs: 5000 });
          try {
            assert.equal(await client.request('after', { timeoutMs: 5000 }), 'after');
          } finally {
            client.close();
          }
        } finally {
          await raw.close();
          await server.close();
        }
      });
    }

    for (const inbox of ['', 'a b', '_INBOX.x\r\nPUB y 0\r\n', '_INBOX.>', 'not.an.inbox']) {
      it(`connect to a server whose WELCOME names inbox ${JSON.stringify(inbox)} rejects with ERR_SHMRING_NOT_A_CHANNEL naming the address`, async function () {
        const subject = uniqueSubject('welcome');
        const fake = await natsConnect({ servers: `127.0.0.1:${nats.port}` });
        try {
          fake.subscribe(subject, {
            callback: (err, msg) => {
              if (err !== null) return;
              const hello = JSON.parse(decoder.decode(msg.data)) as { v: number; codec: number };
              msg.respond(encoder.encode(JSON.stringify({ v: hello.v, codec: hello.codec, inbox, beatMs: 1000 })));
            },
          });
          await fake.flush();
          const err = await rejectsWith(connect(nats.url(subject), { timeoutMs: 5000 }), ErrorCodes.NOT_A_CHANNEL, /inbox/);
          assert.ok(err.message.includes(nats.url(subject)), err.message);
        } finally {
          await fake.close();
        }
      });
    }
  });

  describe('what the NATS server refuses', function () {
    it('connect whose HELLO the server does not let it publish rejects with ERR_SHMRING_NOT_PERMITTED naming the address and the subject', async function () {
      const own = await configServer(user('{ publish: { deny: ["denied.>"] } }'));
      try {
        const address = `nats://u:p@127.0.0.1:${own.port}/denied.x`;
        const err = await rejectsWith(connect(address, { timeoutMs: 5000 }), ErrorCodes.NOT_PERMITTED, /publish to 'denied\.x'/);
        assert.ok(err.message.includes(`connect to nats://127.0.0.1:${own.port}/denied.x`), err.message);
        assert.ok(!err.message.includes('u:p@'), err.message);
      } finally {
        await own.stop();
      }
    });

    it('a listener whose subscription is refused after a reconnection ends its for await with ERR_SHMRING_NOT_PERMITTED (no error listener)', async function () {
      const port = await freePort();
      let own = await configServer(user('{ subscribe: { allow: [">"] } }'), port);
      try {
        const server = await listen(`nats://u:p@127.0.0.1:${port}/jobs.x`);
        try {
          const iterated = (async () => {
            for await (const ch of server) ch.close();
            return 'ended without an error';
          })().then(
            (how) => how,
            (err: unknown) => err as Error & { code?: string },
          );
          await own.stop();
          own = await configServer(user('{ subscribe: { deny: ["jobs.>"] } }'), port);
          const outcome = await Promise.race([iterated, sleep(10_000).then(() => 'still iterating after 10 s')]);
          assert.equal(typeof outcome, 'object', String(outcome));
          const err = outcome as Error & { code?: string };
          assert.equal(err.code, ErrorCodes.NOT_PERMITTED, String(err));
          assert.match(err.message, /listen on nats:\/\/127\.0\.0\.1:\d+\/jobs\.x: .*subscribe to 'jobs\.x'/);
        } finally {
          await server.close();
        }
      } finally {
        await own.stop();
      }
    });

    it("a channel whose inbox subscription the server refuses ends with ERR_SHMRING_NOT_PERMITTED naming the channel, not as the peer's death", async function () {
      // The client may subscribe to its request inbox (the handshake) but to no other _INBOX subject: its channel's
      // own inbox is refused once the handshake is done.
      const own = await configServer(
        'authorization { users = [ { user: "s", password: "p" }, { user: "c", password: "p", permissions: { subscribe: { allow: ["_INBOX.*.*"] } } } ] }',
      );
      try {
        const server = await listen(`nats://s:p@127.0.0.1:${own.port}/jobs`, { heartbeatMs: 100 });
        server.on('channel', () => {});
        try {
          const outcome = await connect(`nats://c:p@127.0.0.1:${own.port}/jobs`, { timeoutMs: 5000, heartbeatMs: 100 }).then(
            async (ch) => {
              const ended = await closeEvent(ch);
              return ended;
            },
            (err: unknown) => err as Error,
          );
          assert.equal((outcome as { code?: string } | undefined)?.code, ErrorCodes.NOT_PERMITTED, String(outcome));
          assert.match(String(outcome), /channel to nats:\/\/127\.0\.0\.1:\d+\/jobs/);
        } finally {
          await server.close();
        }
      } finally {
        await own.stop();
      }
    });
  });

  describe('connections that go away or never come', function () {
    it('listen whose connection goes away before the server confirms its subscription rejects with ERR_SHMRING_UNREACHABLE and stops reconnecting', async function () {
      // A NATS server in words only: INFO, a PONG to the client's first PING, and the connection cut at its SUB.
      let connections = 0;
      const fake = net.createServer((socket) => {
        connections++;
        socket.on('error', () => {});
        socket.write(
          'INFO {"server_id":"fake","version":"2.10.0","go":"go","host":"127.0.0.1","port":4222,"headers":true,"max_payload":1048576,"proto":1}\r\n',
        );
        let text = '';
        let ponged = false;
        socket.on('data', (chunk: Buffer) => {
          text += chunk.toString('latin1');
          if (!ponged && text.includes('PING\r\n')) {
            ponged = true;
            socket.write('PONG\r\n');
            text = text.slice(text.indexOf('PING\r\n') + 6);
          }
          if (ponged && text.includes('SUB ')) socket.destroy();
        });
      });
      fake.listen(0, '127.0.0.1');
      await once(fake, 'listening');
      try {
        const { port } = fake.address() as net.AddressInfo;
        const err = await rejectsWith(listen(`nats://127.0.0.1:${port}/jobs`), ErrorCodes.UNREACHABLE, `127.0.0.1:${port}`);
        assert.match(err.message, /listen on nats:\/\/127\.0\.0\.1:\d+\/jobs/);
        await sleep(300); // a reconnection already dialling when listen() gave up
        const after = connections;
        await sleep(1000); // nats.js reconnects every 250 ms
        assert.equal(connections, after, 'the connection listen() opened reconnects after listen() rejected');
      } finally {
        fake.close();
      }
    });

    it('connect with timeoutMs 0 to a server that never answers rejects at once, not after 20 s', async function () {
      const silent = net.createServer((socket) => socket.on('error', () => {}));
      silent.listen(0, '127.0.0.1');
      await once(silent, 'listening');
      try {
        const { port } = silent.address() as net.AddressInfo;
        const started = performance.now();
        await rejectsWith(connect(`nats://127.0.0.1:${port}/jobs`, { timeoutMs: 0 }), ErrorCodes.UNREACHABLE);
        const took = performance.now() - started;
        assert.ok(took < 2000, `rejected after ${took.toFixed(0)} ms`);
      } finally {
        silent.close();
      }
    });
  });

  describe('a sender faster than its connection', function () {
    it('await send() in a loop while the NATS server reads nothing stops resolving once about OUTBOUND_HIGH_WATER is queued, and everything arrives, in order, once it reads again', async function () {
      await NatsServer.using(async (own) => {
        const address = own.url('fast');
        const server = await listen(address, { heartbeatMs: 30_000 });
        const accepted = once(server, 'channel') as Promise<[Channel]>;
        const client = await connect(address, { heartbeatMs: 30_000 });
        const [peer] = await accepted;
        try {
          const value = new Uint8Array(64 * 1024);
          const LIMIT = 256 * 1024 * 1024;
          let sent = 0;
          let stop = false;
          own.pause();
          const sending = (async () => {
            let n = 0;
            while (!stop && sent < LIMIT) {
              value[0] = n++ & 0xff;
              await client.send(value);
              sent += value.length;
            }
            return n;
          })();
          await sleep(1500);
          const whilePaused = sent;
          own.resume();
          stop = true;
          const count = await sending;
          // The kernel's socket buffers (a few MiB on the loopback) and OUTBOUND_HIGH_WATER (1 MiB): about 5 MiB
          // here; without the wait, some 45 MiB in these 1.5 s, and growing.
          assert.ok(whilePaused < 16 * 1024 * 1024, `${(whilePaused / 2 ** 20).toFixed(0)} MiB resolved while the server read nothing`);
          let got = 0;
          for await (const v of peer) {
            assert.equal((v as Uint8Array)[0], got & 0xff, `value ${got}`);
            if (++got === count) break;
          }
          assert.equal(got, count);
        } finally {
          client.close();
          await server.close();
        }
      });
    });
  });
});
