/**
 * The server side of connect-by-path: listen() replaces the socket file a
 * SIGKILLed server left behind, and refuses (EADDRINUSE) a path where a
 * live server answers or that is not a socket, leaving both alone; one
 * server serves 200 concurrent clients; server.close() ends every channel
 * it still has (cleanly, for their clients), ends its iterator and removes
 * its path; connect() gives up on a server that never hands a channel over.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import * as fs from 'node:fs';
import net from 'node:net';
import { connect, listen, type Channel } from '../src/index.js';
import { closeEvent, killAllPeers, rejectsWith, sleep, startPeer, TmpDir, waitUntil } from './helpers.js';

const CLIENTS = 200;
const REQUESTS_PER_CLIENT = 5;

describe('server', function () {
  this.timeout(30_000);

  let dir: TmpDir;
  beforeEach(function () {
    dir = new TmpDir();
  });
  afterEach(async function () {
    await killAllPeers();
    dir.remove();
  });

  describe('listen() on a path in use', function () {
    it('replaces the stale socket file of a SIGKILLed server (where connect() gets ECONNREFUSED)', async function () {
      const p = dir.path();
      const peer = startPeer({ role: 'server', path: p, handler: 'echo' });
      await peer.next('listening');
      await peer.kill();
      assert.ok(fs.lstatSync(p).isSocket(), 'the dead server left its socket file');
      await rejectsWith(connect(p), 'ECONNREFUSED', p);

      const server = await listen(p);
      try {
        server.on('channel', (ch: Channel) => ch.handle((v) => ({ fresh: v })));
        const client = await connect(p);
        assert.deepEqual(await client.request(1), { fresh: 1 });
        client.close();
        await client.closed;
      } finally {
        await server.close();
      }
      assert.equal(fs.existsSync(p), false);
    });

    it('rejects with EADDRINUSE where a live server answers, and that server goes on serving', async function () {
      const p = dir.path();
      const peer = startPeer({ role: 'server', path: p, handler: 'echo' });
      await peer.next('listening');
      const err = await rejectsWith(listen(p), 'EADDRINUSE', p);
      assert.equal((err as { path?: string }).path, p);
      const client = await connect(p);
      assert.equal(await client.request('still there'), 'still there');
      client.close();
    });

    // Regression: to tell a live server from a stale socket file, listen()
    // connects to the path and hangs up at once. The live server must not
    // take that probe for a client: no 'channel' event (which would then end
    // with ERR_SHMRING_PEER_DEAD), since it announces a channel only once the
    // client has opened its end.
    it("a failed listen() on a live server's path does not show that server a phantom channel", async function () {
      const p = dir.path();
      const live = await listen(p, { capacity: 4096 });
      try {
        const channels: Channel[] = [];
        live.on('channel', (ch: Channel) => channels.push(ch));
        await rejectsWith(listen(p), 'EADDRINUSE');
        await sleep(200);
        assert.equal(channels.length, 0, `the live server got ${channels.length} channel(s) from the probe of a failed listen()`);
      } finally {
        await live.close();
      }
    });

    it('rejects with EADDRINUSE where the path is a regular file, and leaves the file as it was', async function () {
      const p = dir.path('file');
      fs.writeFileSync(p, 'precious data\n');
      const before = fs.statSync(p);
      await rejectsWith(listen(p), 'EADDRINUSE', 'not a socket');
      const after = fs.statSync(p);
      assert.equal(fs.readFileSync(p, 'utf8'), 'precious data\n');
      assert.equal(after.ino, before.ino, 'the file was replaced');
      assert.equal(after.mtimeMs, before.mtimeMs, 'the file was modified');
      assert.ok(after.isFile());
    });
  });

  it(`serves ${CLIENTS} concurrent clients, each doing requests; all are answered, then all close`, async function () {
    const p = dir.path();
    const server = await listen(p, { capacity: 4096 });
    try {
      const accepted: Channel[] = [];
      server.on('channel', (ch: Channel) => {
        accepted.push(ch);
        ch.handle(async (value) => {
          await sleep(Math.random() * 3);
          return { echo: value };
        });
      });
      const clients = await Promise.all(Array.from({ length: CLIENTS }, () => connect(p)));
      // connect() resolves once the client's end is open; the server announces the channel when the client says so.
      await waitUntil(() => server.channels === CLIENTS, `the server to announce ${CLIENTS} channels`);
      const replies = await Promise.all(
        clients.map((c, i) => Promise.all(Array.from({ length: REQUESTS_PER_CLIENT }, (_, k) => c.request({ client: i, k })))),
      );
      for (const [i, r] of replies.entries()) {
        assert.deepEqual(
          r,
          Array.from({ length: REQUESTS_PER_CLIENT }, (_, k) => ({ echo: { client: i, k } })),
        );
      }
      const serverCloses = accepted.map((ch) => closeEvent(ch));
      for (const c of clients) c.close();
      const args = await Promise.all(serverCloses);
      assert.ok(
        args.every((e) => e === undefined),
        'a server-side channel ended with an error',
      );
      await waitUntil(() => server.channels === 0, 'every server-side channel to close');
    } finally {
      await server.close();
    }
  });

  it('server.close() closes the channels it still has: their clients see a clean close; its iterator ends; the path goes', async function () {
    const p = dir.path();
    const server = await listen(p, { capacity: 4096 });
    const iterated: Channel[] = [];
    const iteration = (async () => {
      for await (const ch of server) iterated.push(ch);
      return 'ended';
    })();
    const clients = await Promise.all([1, 2, 3].map(() => connect(p)));
    await waitUntil(() => iterated.length === 3, 'the iterator to yield three channels');
    assert.equal(server.channels, 3);
    const clientCloses = clients.map((c) => closeEvent(c));
    const pendingReceives = clients.map((c) => c.receive());
    const pendingRequest = clients[0]!.request('unanswered');
    await server.close();
    assert.equal(await iteration, 'ended');
    assert.equal(server.channels, 0);
    assert.deepEqual(await Promise.all(clientCloses), [undefined, undefined, undefined]);
    for (const r of pendingReceives) await rejectsWith(r, 'ERR_SHMRING_CLOSED');
    await rejectsWith(pendingRequest, 'ERR_SHMRING_CLOSED');
    for (const ch of iterated) await ch.closed;
    assert.equal(fs.existsSync(p), false);
    await rejectsWith(connect(p), 'ENOENT', p);
    // Closing again is harmless.
    await server.close();
  });

  describe('connect() to something that is not a channel server', function () {
    it('rejects with ERR_SHMRING_TIMEOUT after timeoutMs when the server never hands a channel over', async function () {
      const p = dir.path();
      const silent = net.createServer(() => {});
      silent.listen(p);
      await once(silent, 'listening');
      const sockets: net.Socket[] = [];
      silent.on('connection', (s) => {
        s.on('error', () => {});
        sockets.push(s);
      });
      try {
        const started = performance.now();
        await rejectsWith(connect(p, { timeoutMs: 100 }), 'ERR_SHMRING_TIMEOUT', 'timeoutMs=100');
        const elapsed = performance.now() - started;
        assert.ok(elapsed >= 95 && elapsed < 3000, `gave up after ${elapsed.toFixed(0)} ms`);
      } finally {
        for (const s of sockets) s.destroy();
        silent.close();
      }
    });

    it('rejects with ABORT_ERR when its signal aborts while it waits for the handover', async function () {
      const p = dir.path();
      const silent = net.createServer(() => {});
      silent.listen(p);
      await once(silent, 'listening');
      const sockets: net.Socket[] = [];
      silent.on('connection', (s) => {
        s.on('error', () => {});
        sockets.push(s);
      });
      try {
        await rejectsWith(connect(p, { signal: AbortSignal.timeout(50) }), 'ABORT_ERR');
        await rejectsWith(connect(p, { signal: AbortSignal.abort() }), 'ABORT_ERR');
      } finally {
        for (const s of sockets) s.destroy();
        silent.close();
      }
    });

    it('rejects with ERR_SHMRING_NO_FD when the server hangs up without handing a channel over', async function () {
      const p = dir.path();
      const rude = net.createServer((s) => {
        s.on('error', () => {}); // the client resets the connection when it gives up
        s.end('not a channel\n');
      });
      rude.listen(p);
      await once(rude, 'listening');
      try {
        await rejectsWith(connect(p), 'ERR_SHMRING_NO_FD', p);
      } finally {
        rude.close();
      }
    });
  });
});
