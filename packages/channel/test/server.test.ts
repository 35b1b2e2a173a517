/**
 * The server side of connect-by-path: listen() replaces the socket file a
 * SIGKILLed server left behind (one listen() at a time, when several race
 * for it), and refuses (EADDRINUSE) a path where a live server answers or
 * that is not a socket, leaving both alone; one server serves 200
 * concurrent clients; server.close() ends every channel it still has
 * (cleanly, for their clients) and every handover in progress, ends its
 * iterator and removes its path (only its own file); a client that stays
 * silent in the handover is dropped; a channel nobody takes is closed at
 * once; connect() gives up on a server that never hands a channel over.
 */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import nodePath from 'node:path';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { lockFileByte, receiveRegion } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { connect, listen, type Channel } from '../src/index.js';
import { HEADER_SIZE, OPENED_I32, readChannelHeader, VERSION_I32 } from '../src/layout.js';
import { closeEvent, killAllPeers, rejectsWith, settledWithin, sleep, startPeer, TmpDir, waitUntil } from './helpers.js';

const CLIENTS = 200;
const REQUESTS_PER_CLIENT = 5;

/** Makes a FIFO at `p` (mkfifo(1): Node has no mkfifo). */
function spawnFifo(p: string): void {
  const made = spawnSync('mkfifo', [p]);
  assert.equal(made.status, 0, `mkfifo ${p}: ${made.stderr}`);
}

/** Leaves a socket file at `p` that no server listens on, as a server that died does. */
async function staleSocket(p: string): Promise<void> {
  const server = net.createServer();
  server.listen(`${p}.live`);
  await once(server, 'listening');
  fs.renameSync(`${p}.live`, p);
  server.close(); // removes `${p}.live`, which is gone: `p` stays
  await once(server, 'close');
}

/**
 * A child process that calls listen() on the path in argv each time a line
 * 'go <time>' comes on its stdin, at that time (ms since the epoch: it
 * spins until then, so that two children start within microseconds of each
 * other), and reports how it went on stdout (a JSON line); 'close' closes
 * the server it got. Its servers answer every request with the child's pid.
 */
const LISTENER_SCRIPT = `
const { listen } = await import(process.env.CHANNEL_INDEX);
const path = process.argv[1];
let server;
const say = (fields) => process.stdout.write(JSON.stringify(fields) + '\\n');
for await (const line of (await import('node:readline')).createInterface({ input: process.stdin })) {
  if (line.startsWith('go ')) {
    const at = Number(line.slice(3));
    while (performance.timeOrigin + performance.now() < at);
    try {
      server = await listen(path, { capacity: 4096 });
      server.on('channel', (ch) => ch.handle(() => process.pid));
      say({ ok: true, pid: process.pid });
    } catch (err) {
      say({ ok: false, code: err.code, message: err.message });
    }
  } else if (line === 'close') {
    await server.close();
    say({ closed: true });
  }
}
`;

interface Listener {
  child: ChildProcess;
  send(line: string): void;
  next(): Promise<Record<string, unknown>>;
}

function startListener(path: string): Listener {
  const child = spawn(process.execPath, ['--input-type=module', '-e', LISTENER_SCRIPT, path], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, CHANNEL_INDEX: new URL('../src/index.js', import.meta.url).href },
  });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  return {
    child,
    send: (line) => child.stdin!.write(`${line}\n`),
    async next() {
      const { value, done } = await lines.next();
      if (done) throw new Error(`the listener child exited (${child.exitCode ?? child.signalCode})`);
      return JSON.parse(value as string) as Record<string, unknown>;
    },
  };
}

/** `promise` rejects with `code` within 2 s, instead of waiting for ever. */
async function rejectsSoon(promise: Promise<unknown>, code: string): Promise<void> {
  const outcome = await settledWithin(promise, 2000);
  assert.equal(outcome.status, 'rejected', `expected a rejection with ${code} within 2 s, got: ${outcome.status}`);
  const reason = (outcome as { reason: { code?: string; stack?: string } }).reason;
  assert.equal(reason?.code, code, String(reason?.stack ?? reason));
}

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

    // Regression: listen() took any failed probe for "nobody answers", EAGAIN included, and replaced
    // the socket file of a live server whose queue of connections was full; that server was then out
    // of reach. And connect() to it said only "connect EAGAIN".
    it('a live server whose queue of connections is full (stopped) keeps its path: listen() is EADDRINUSE, connect() EAGAIN saying to retry later', async function () {
      const p = dir.path();
      // A plain server with a queue of one, stopped (SIGSTOP) so that it accepts nothing.
      const child = spawn(
        process.execPath,
        ['-e', `require('net').createServer().listen({ path: ${JSON.stringify(p)}, backlog: 1 }, () => process.stdout.write('ready\\n'))`],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      const fillers: net.Socket[] = [];
      try {
        await once(createInterface({ input: child.stdout! }), 'line');
        const inode = fs.statSync(p).ino;
        child.kill('SIGSTOP');
        let full: NodeJS.ErrnoException | undefined;
        while (full === undefined && fillers.length < 4096) {
          const socket = net.connect({ path: p });
          const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
            socket.once('connect', () => resolve(undefined));
            socket.once('error', resolve);
          });
          if (error === undefined) fillers.push(socket);
          else full = error;
        }
        assert.equal(full?.code, 'EAGAIN', 'the queue of the stopped server never filled');
        const busy = await rejectsWith(connect(p, { timeoutMs: 2000 }), 'EAGAIN', p);
        assert.match(busy.message, /queue of pending connections is full.*retry later/);
        const taken = await rejectsWith(listen(p), 'EADDRINUSE', p);
        assert.match(taken.message, /queue of pending connections is full/);
        assert.equal(fs.statSync(p).ino, inode, 'listen() replaced the socket file of the live server');
        for (const socket of fillers) socket.destroy();
        child.kill('SIGCONT');
        // The server is still the one at the path: a connection reaches it, once the woken server has
        // accepted the queue's leftovers (until then a connect may still find the queue full: EAGAIN).
        for (let tries = 0; ; tries++) {
          const again = net.connect({ path: p });
          const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
            again.once('connect', () => resolve(undefined));
            again.once('error', resolve);
          });
          again.destroy();
          if (error === undefined) break;
          if (error.code !== 'EAGAIN' || tries >= 100) throw error;
          await sleep(20);
        }
      } finally {
        for (const socket of fillers) socket.destroy();
        child.kill('SIGKILL');
        await once(child, 'exit').catch(() => {});
      }
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

    // Regression: each listen() found the stale file, removed it and bound the path: all of them
    // succeeded, and all but the last listened on a file another had removed, out of reach.
    it('concurrent listen() calls on a stale socket file: one replaces it, the others get EADDRINUSE, and nothing else is left on disk', async function () {
      const p = dir.path();
      await staleSocket(p);
      const outcomes = await Promise.allSettled([listen(p), listen(p), listen(p)]);
      const servers = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
      try {
        assert.equal(servers.length, 1, `${servers.length} of 3 listen() calls succeeded`);
        for (const o of outcomes) if (o.status === 'rejected') assert.equal((o.reason as { code?: string }).code, 'EADDRINUSE');
        servers[0]!.on('channel', (ch: Channel) => ch.handle((v) => ['winner', v]));
        const client = await connect(p);
        assert.deepEqual(await client.request(1), ['winner', 1]);
        client.close();
        await client.closed;
        assert.deepEqual(fs.readdirSync(dir.dir), ['sock']);
      } finally {
        await Promise.all(servers.map((server) => server.close()));
      }
      assert.deepEqual(fs.readdirSync(dir.dir), []);
    });

    // Regression: each process that found the stale file dead removed whatever was at the path by then
    // (the other's fresh socket too) and bound it: both listen() calls succeeded in a round out of ten
    // or so, one of the two servers out of reach. Then, with three or more: a latecomer moved the
    // winner's socket aside for a few system calls, and a third bound the empty path meanwhile, so two
    // servers believed they had it. Replacing is serialized by a lock file now, removed by its holder.
    it('listen() calls of four processes racing on one stale socket file: one gets the path, the others EADDRINUSE, round after round, and nothing is left on disk', async function () {
      this.timeout(120_000);
      const p = dir.path();
      const listeners = Array.from({ length: 4 }, () => startListener(p));
      try {
        for (let round = 0; round < 40; round++) {
          await staleSocket(p);
          const at = Date.now() + 20;
          for (const l of listeners) l.send(`go ${at}`);
          const outcomes = await Promise.all(listeners.map((l) => l.next()));
          const won = outcomes.flatMap((o, i) => (o.ok === true ? [i] : []));
          assert.equal(won.length, 1, `round ${round}: ${JSON.stringify(outcomes)}`);
          for (const o of outcomes) if (o.ok !== true) assert.equal(o.code, 'EADDRINUSE', JSON.stringify(o));
          const client = await connect(p);
          assert.equal(await client.request('who'), outcomes[won[0]!]!.pid, 'the path leads to the other server');
          client.close();
          await client.closed;
          assert.deepEqual(fs.readdirSync(dir.dir), [nodePath.basename(p)], `round ${round}: files beside the socket`);
          listeners[won[0]!]!.send('close');
          assert.deepEqual(await listeners[won[0]!]!.next(), { closed: true });
          assert.deepEqual(fs.readdirSync(dir.dir), [], `round ${round} left files`);
        }
      } finally {
        for (const l of listeners) l.child.kill('SIGKILL');
      }
    });

    // The interleaving of the race above, driven: a listen() that found the file stale must not replace
    // it while another process is replacing it (holds the lock file), and then finds that one's server.
    it('a listen() that found a socket file stale waits while another process replaces it, then gets EADDRINUSE and leaves that server the path', async function () {
      const p = dir.path();
      await staleSocket(p);
      const lockPath = `${p}.shmring-lock`;
      const fd = fs.openSync(lockPath, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
      let other: net.Server | undefined;
      try {
        assert.equal(lockFileByte(fd, 0), true);
        let settled = false;
        const pending = listen(p, { capacity: 4096 });
        pending.then(
          (server) => server.close(),
          () => {},
        );
        void pending.finally(() => (settled = true)).catch(() => {});
        await sleep(300);
        assert.equal(settled, false, 'listen() replaced the stale socket file while another process was replacing it');
        // What the process holding the lock does: removes the stale file, binds its server, lets go.
        fs.rmSync(p);
        other = net.createServer((socket) => socket.end('other\n'));
        other.listen(p);
        await once(other, 'listening');
        fs.rmSync(lockPath);
        fs.closeSync(fd);
        await rejectsWith(pending, 'EADDRINUSE', p);
        const probe = net.connect(p);
        const [greeting] = (await once(probe, 'data')) as [Buffer];
        assert.equal(greeting.toString(), 'other\n', 'the path no longer leads to the server that replaced the file');
        probe.destroy();
        assert.deepEqual(fs.readdirSync(dir.dir), [nodePath.basename(p)]);
      } finally {
        try {
          fs.closeSync(fd);
        } catch {
          // closed above
        }
        if (other) await new Promise((resolve) => other!.close(resolve));
      }
      assert.deepEqual(fs.readdirSync(dir.dir), []);
    });

    // Regression: close() removed whatever was at the path, so a server that had lost the path to
    // another (a race of two processes replacing one stale file) took the winner's file with it.
    it("a server that replaced a stale socket file leaves the path alone on close() once another server's socket is there", async function () {
      const p = dir.path();
      await staleSocket(p);
      const server = await listen(p, { capacity: 4096 });
      // Another server, put in its place the way listen() replaces a stale file: renamed over the path.
      const other = net.createServer((s) => s.end('other\n'));
      other.listen(dir.path('other'));
      await once(other, 'listening');
      try {
        fs.renameSync(dir.path('other'), p);
        await server.close();
        assert.ok(fs.lstatSync(p, { throwIfNoEntry: false })?.isSocket(), "closing the first server removed the other's socket file");
        const probe = net.connect(p);
        const [greeting] = (await once(probe, 'data')) as [Buffer];
        assert.equal(greeting.toString(), 'other\n');
        probe.destroy();
      } finally {
        other.close();
      }
    });

    for (const [what, misbehave] of [
      ['sends its byte without opening its end (nc -U, say)', (_words: Int32Array) => {}],
      [
        'writes over the channel header it was handed, then opens',
        (words: Int32Array) => {
          Atomics.store(words, OPENED_I32, 1); // as an opener's claim
          Atomics.store(words, VERSION_I32, 99);
        },
      ],
      [
        "zeroes ring A's header it was handed, then opens",
        (words: Int32Array) => {
          Atomics.store(words, OPENED_I32, 1);
          Atomics.store(new Int32Array(words.buffer, HEADER_SIZE, 1), 0, 0); // ring A's MAGIC (ring A starts after the header)
        },
      ],
    ] as const) {
      it(`a client that ${what} is dropped: no 'channel', no 'error', and the server goes on`, async function () {
        const p = dir.path();
        const server = await listen(p, { capacity: 4096 });
        const errors: Error[] = [];
        let channels = 0;
        server.on('error', (err: Error) => errors.push(err));
        server.on('channel', (ch: Channel) => {
          channels++;
          ch.handle((v) => v);
        });
        try {
          const raw = net.connect(p);
          const region = await receiveRegion(raw, { timeoutMs: 5000 });
          misbehave(new Int32Array(region.buffer, 0, 8));
          raw.write(Buffer.from([1]));
          await sleep(200);
          assert.equal(channels, 0, 'a channel was announced for it');
          raw.destroy();
          region.close();
          const client = await connect(p);
          assert.equal(await client.request('after'), 'after');
          client.close();
          await client.closed;
          assert.equal(channels, 1);
          assert.deepEqual(
            errors.map((e) => `${(e as { code?: string }).code}: ${e.message}`),
            [],
          );
        } finally {
          await server.close();
        }
      });
    }

    // Regression: the live server took that check (a connection, hung up at once) for a failed handover
    // and emitted 'error' (ECONNRESET) for it.
    it("a failed listen()'s check of a live server's path makes that server emit no 'error'", async function () {
      const p = dir.path();
      const live = await listen(p, { capacity: 4096 });
      try {
        const errors: Error[] = [];
        live.on('error', (err: Error) => errors.push(err));
        live.on('channel', (ch: Channel) => ch.handle((v) => v));
        for (let i = 0; i < 3; i++) await rejectsWith(listen(p), 'EADDRINUSE');
        // The checks' connections came before this client's, and their handovers fail sooner than its own completes.
        const client = await connect(p);
        assert.equal(await client.request('after'), 'after');
        client.close();
        await client.closed;
        assert.deepEqual(
          errors.map((e) => `${(e as { code?: string }).code}: ${e.message}`),
          [],
        );
      } finally {
        await live.close();
      }
    });

    for (const [what, make, tag] of [
      ['a directory', (lock: string) => fs.mkdirSync(lock), 'dir'],
      ['a symbolic link', (lock: string) => fs.symlinkSync('/dev/null', lock), 'link'],
      ['a FIFO', (lock: string) => spawnFifo(lock), 'fifo'],
    ] as const) {
      it(`a stale socket file whose lock file name is ${what} is not replaced (EADDRINUSE): the message says to remove what is there, which stays`, async function () {
        const p = dir.path(`lock-${tag}`);
        await staleSocket(p);
        const lock = `${p}.shmring-lock`;
        make(lock);
        const err = await rejectsWith(listen(p), 'EADDRINUSE', `${lock}, the name listen() locks to replace it`);
        assert.match(err.message, /remove it/);
        assert.ok(fs.lstatSync(lock, { throwIfNoEntry: false }) !== undefined, 'what was at the lock path was removed');
        assert.ok(fs.lstatSync(p).isSocket(), 'the stale socket file was touched');
        fs.rmSync(lock, { recursive: true, force: true });
        const server = await listen(p); // replaced now
        await server.close();
      });
    }

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

  it('a for await busy in its body when server.close() is called ends there: the channels queued for it are not yielded, and are closed', async function () {
    const p = dir.path();
    const server = await listen(p, { capacity: 4096 });
    const yielded: Channel[] = [];
    let closed!: () => void;
    const closeCalled = new Promise<void>((resolve) => {
      closed = resolve;
    });
    const iteration = (async () => {
      for await (const ch of server) {
        yielded.push(ch);
        await closeCalled; // busy with the first channel until the server is closing
      }
      return 'ended';
    })();
    const clients = [await connect(p)];
    await waitUntil(() => yielded.length === 1, 'the first channel');
    clients.push(await connect(p), await connect(p));
    await waitUntil(() => server.channels === 3, 'the other two channels to be queued');
    const clientCloses = clients.map((c) => closeEvent(c));
    const closing = server.close();
    closed();
    await closing;
    assert.deepEqual(await settledWithin(iteration, 5000), { status: 'fulfilled', value: 'ended' });
    assert.equal(yielded.length, 1, 'channels were yielded after server.close()');
    assert.deepEqual(await Promise.all(clientCloses), [undefined, undefined, undefined]);
  });

  it('a for await that registers a handler on each channel goes on when a client connects and leaves at once', async function () {
    const p = dir.path();
    const server = await listen(p, { capacity: 4096 });
    let release!: () => void;
    const busy = new Promise<void>((resolve) => {
      release = resolve;
    });
    let handed = 0;
    const iteration = (async () => {
      for await (const ch of server) {
        ch.handle((v) => v); // a channel whose client already left: nothing to answer, no error
        if (++handed === 1) await busy; // busy while the next client comes and goes
      }
      return 'ended';
    })();
    const first = await connect(p);
    await waitUntil(() => handed === 1, 'the first channel');
    const prober = await connect(p); // a health check: connects and leaves
    prober.close();
    await waitUntil(() => server.channels === 1, "the prober's channel to end on the server");
    release();
    await waitUntil(() => handed === 2, "the loop to reach the prober's channel");
    const later = await connect(p);
    assert.equal(await later.request('still served'), 'still served');
    assert.equal(await first.request('and the first'), 'and the first');
    first.close();
    later.close();
    await server.close();
    assert.deepEqual(await settledWithin(iteration, 5000), { status: 'fulfilled', value: 'ended' });
  });

  it("a 'channel' listener that throws surfaces as an uncaught exception, and the channel it was handed keeps working", async function () {
    const p = dir.path();
    const server = await listen(p, { capacity: 4096 });
    const uncaught: unknown[] = [];
    // Instead of mocha's handler (which would fail this test): what the program would hear.
    process.setUncaughtExceptionCaptureCallback((err) => uncaught.push(err));
    try {
      server.on('channel', (ch) => {
        ch.handle((v) => v);
        throw new Error('boom');
      });
      const client = await connect(p);
      assert.equal(await client.request('answered'), 'answered');
      await waitUntil(() => uncaught.length === 1, 'the uncaught exception');
      assert.equal((uncaught[0] as Error).message, 'boom');
      assert.equal(server.channels, 1);
      const second = await connect(p); // the accept loop goes on
      assert.equal(await second.request('again'), 'again');
      const ended = closeEvent(client);
      client.close();
      await ended;
      second.close();
      await server.close(); // ends: the channels it had all closed
      assert.equal(server.channels, 0);
      assert.equal(uncaught.length, 2);
    } finally {
      process.setUncaughtExceptionCaptureCallback(null);
    }
  });

  describe('the handover', function () {
    // Regression: server.close() waits for every connection to end, and one in the handover never did:
    // close() and a for await over the server never ended.
    it('server.close() resolves, and its for await ends, while a client sits in the handover without opening its end; that client is hung up on', async function () {
      const p = dir.path();
      const server = await listen(p, { capacity: 4096 });
      const iteration = (async () => {
        for await (const ch of server) ch.close();
        return 'ended';
      })();
      const raw = net.connect(p);
      raw.on('error', () => {});
      await once(raw, 'data'); // the region's byte: the client is in the handover now
      const hungUp = once(raw, 'close');
      const closing = await settledWithin(server.close(), 2000);
      assert.equal(closing.status, 'fulfilled', 'server.close() did not resolve');
      assert.equal(await iteration, 'ended');
      await hungUp;
      assert.equal(fs.existsSync(p), false);
    });

    // Regression: a client whose connect() had resolved before the server read its READY was hung up on
    // with the rings open, and took the server's close for its death.
    it("server.close() right after a client's connect() resolved, before the server announced that channel: the client sees a clean close (ERR_SHMRING_CLOSED), not PEER_DEAD", async function () {
      for (let round = 0; round < 5; round++) {
        const p = dir.path();
        const server = await listen(p, { capacity: 4096 });
        let announced = 0;
        server.on('channel', () => announced++);
        const client = await connect(p);
        const closed = closeEvent(client);
        await server.close();
        if (announced !== 0) continue; // the server got to the READY first: the other test's case
        assert.equal(await closed, undefined, 'the close event carries no error: a clean close');
        await rejectsWith(client.request('x'), 'ERR_SHMRING_CLOSED');
        return;
      }
      assert.fail('the server announced the channel before close() in every round');
    });

    it("a client that does not open its end within handoverTimeoutMs is dropped, without an 'error', and the server goes on serving", async function () {
      const p = dir.path();
      const server = await listen(p, { capacity: 4096, handoverTimeoutMs: 100 });
      const errors: Error[] = [];
      server.on('error', (err: Error) => errors.push(err));
      server.on('channel', (ch: Channel) => ch.handle((v) => v));
      try {
        const raw = net.connect(p);
        raw.on('error', () => {});
        await once(raw, 'data');
        const started = performance.now();
        const dropped = await settledWithin(once(raw, 'close'), 2000);
        const ms = performance.now() - started;
        assert.equal(dropped.status, 'fulfilled', 'the silent client was not dropped');
        // The server's clock started as it sent the byte, a moment before it arrived here.
        assert.ok(ms > 50, `dropped after ${ms.toFixed(0)} ms, long before handoverTimeoutMs=100`);
        assert.equal(server.channels, 0);
        const client = await connect(p);
        assert.equal(await client.request('still serving'), 'still serving');
        client.close();
        await client.closed;
        assert.deepEqual(errors, []);
      } finally {
        await server.close();
      }
    });
    it("a client that opened its end while the server's loop was held up past handoverTimeoutMs becomes a channel, not a dropped one", async function () {
      const p = dir.path();
      const server = await listen(p, { capacity: 4096, handoverTimeoutMs: 50 });
      const announced: Channel[] = [];
      server.on('channel', (ch: Channel) => {
        announced.push(ch);
        ch.handle((v) => v);
      });
      try {
        const client = await connect(p); // its end opened, its byte sent: the server's timer runs
        // The loop held up past the timeout (a long synchronous callback): when it turns again, the expired
        // timer runs before the poll that would read the client's byte.
        const until = performance.now() + 150;
        while (performance.now() < until);
        assert.equal(await client.request('served', { timeoutMs: 5000 }), 'served', 'the server dropped the client');
        assert.equal(announced.length, 1);
        client.close();
        await client.closed;
      } finally {
        await server.close();
      }
    });

    it('a client dropped for opening its end too late sees the channel closed (ERR_SHMRING_CLOSED), not a dead server', async function () {
      const p = dir.path();
      const server = await listen(p, { capacity: 4096, handoverTimeoutMs: 50 });
      try {
        const raw = net.connect(p);
        raw.on('error', () => {});
        raw.pause(); // the fd waits unread: this client is slow to take it
        await once(raw, 'connect');
        await sleep(150); // past the timeout: the server dropped the connection
        const region = await receiveRegion(raw, { requireFixedSize: true });
        try {
          const header = new Int32Array(region.buffer, 0, HEADER_SIZE / 4);
          // Observes the server's lay-out of the channel header (published before it sent the fd).
          assert.equal(Atomics.load(header, VERSION_I32), 1, 'the channel header is laid out');
          // What the opener's end would find: both rings closed by the server, as at server.close().
          const g = readChannelHeader(region.buffer, 'test');
          for (const offset of [g.aOffset, g.bOffset]) {
            const ring = SpscRing.attach(region, { offset });
            assert.equal(ring.closed, true, `the ring at ${offset} is open: the client would see a dead peer`);
            ring.close();
          }
        } finally {
          region.close();
          raw.destroy();
        }
      } finally {
        await server.close();
      }
    });
  });

  describe('channels nobody takes', function () {
    // Regression: the server kept such a channel open, out of everyone's reach, and the client's
    // requests waited for ever.
    it("with no 'channel' listener and no for await, a new client's channel is closed at once: its request rejects with ERR_SHMRING_CLOSED", async function () {
      const p = dir.path();
      const server = await listen(p, { capacity: 4096 });
      try {
        const client = await connect(p);
        const ended = closeEvent(client);
        await rejectsSoon(client.request('anyone?'), 'ERR_SHMRING_CLOSED');
        assert.equal(await ended, undefined, 'the channel did not end cleanly');
        assert.equal(server.channels, 0);
      } finally {
        await server.close();
      }
    });

    it("once a for await over the server has broken out, the next client's channel is closed at once", async function () {
      const p = dir.path();
      const server = await listen(p, { capacity: 4096 });
      try {
        const iteration = (async () => {
          for await (const ch of server) {
            ch.handle((v) => v);
            break;
          }
        })();
        const first = await connect(p);
        assert.equal(await first.request('taken'), 'taken');
        await iteration;
        const second = await connect(p);
        await rejectsSoon(second.request('after the break'), 'ERR_SHMRING_CLOSED');
        assert.equal(await first.request('still taken'), 'still taken');
        first.close();
        await first.closed;
      } finally {
        await server.close();
      }
    });

    // An outside tester: the iterator was an async generator, whose return() waited behind the pending next()
    // until a client came, and that client's channel went to the abandoned next(), answered by nobody.
    it('return() with a next() waiting for a client ends both at once; the next client gets a closed channel', async function () {
      const p = dir.path();
      const server = await listen(p, { capacity: 4096 });
      try {
        const it = server[Symbol.asyncIterator]();
        const pending = it.next();
        await sleep(50);
        assert.deepEqual(await settledWithin(it.return(), 200), { status: 'fulfilled', value: { done: true, value: undefined } });
        assert.deepEqual(
          await settledWithin(pending, 200),
          { status: 'fulfilled', value: { done: true, value: undefined } },
          'the waiting next() resolves done',
        );
        const late = await connect(p);
        await rejectsSoon(late.request('after return()'), 'ERR_SHMRING_CLOSED');
        assert.deepEqual(await it.next(), { done: true, value: undefined });
      } finally {
        await server.close();
      }
    });

    it('two next() calls waiting get the next two clients, in call order', async function () {
      const p = dir.path();
      const server = await listen(p, { capacity: 4096 });
      try {
        const it = server[Symbol.asyncIterator]();
        const [one, two] = [it.next(), it.next()];
        const a = await connect(p);
        const first = await one;
        assert.equal(first.done, false);
        first.value!.handle(() => 'one');
        const b = await connect(p);
        const second = await two;
        second.value!.handle(() => 'two');
        assert.deepEqual([await a.request(0), await b.request(0)], ['one', 'two']);
        await it.return();
        a.close();
        b.close();
      } finally {
        await server.close();
      }
    });

    it('the channels a for await had not yielded yet when it broke out are closed; the one it yielded goes on', async function () {
      const p = dir.path();
      const server = await listen(p, { capacity: 4096 });
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      try {
        const iteration = (async () => {
          for await (const ch of server) {
            ch.handle((v) => v);
            await gate;
            break;
          }
        })();
        const first = await connect(p);
        await waitUntil(() => server.channels === 1, 'the server to announce the first channel');
        const second = await connect(p);
        await waitUntil(() => server.channels === 2, 'the server to announce the second channel (for the iterator to yield next)');
        release();
        await iteration;
        await rejectsSoon(second.request('queued'), 'ERR_SHMRING_CLOSED');
        assert.equal(await first.request('yielded'), 'yielded');
        first.close();
        await first.closed;
      } finally {
        release();
        await server.close();
      }
    });
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

    // An outside tester: with no server at the path, an aborted signal lost to ENOENT or ECONNREFUSED.
    it('a signal aborted before the call wins whatever the path: no server, not a socket, a nats:// address', async function () {
      const reason = new Error('gave up before connecting');
      const signal = AbortSignal.abort(reason);
      for (const target of [dir.path(), nodePath.dirname(dir.path()), 'nats://127.0.0.1:1/x.y']) {
        await assert.rejects(connect(target, { signal }), (err: Error & { code?: string }) => {
          assert.equal(err.name, 'AbortError', `${target}: ${err.message}`);
          assert.equal(err.code, 'ABORT_ERR');
          assert.equal(err.cause, reason);
          return true;
        });
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

    // Regression: a server killed with connections still in its queue reset them, and connect() rejected
    // with a bare ECONNRESET from recvmsg, naming no path (an outside tester: 307 of 5,588 connects).
    it('rejects with ECONNRESET naming the path and saying to try again when the server goes away with the connection queued', async function () {
      for (let round = 0; round < 3; round++) {
        const p = dir.path();
        const server = net.createServer();
        server.listen(p);
        await once(server, 'listening');
        const pending = connect(p); // its connect(2) is made now: queued, never accepted
        server.close(); // the queued connection is reset
        const err = (await rejectsWith(pending, 'ECONNRESET', p)) as Error & { path?: string };
        assert.match(err.message, /went away before handing over a channel .*try again/);
        assert.equal(err.path, p);
      }
    });
  });

  describe('relative paths', function () {
    let cwd: string;
    beforeEach(function () {
      cwd = process.cwd();
    });
    afterEach(function () {
      process.chdir(cwd);
    });

    it('a server listening on a relative path, closed after process.chdir(), removes its own socket file and leaves the same name in the new directory alone', async function () {
      const a = dir.path('a');
      const b = dir.path('b');
      fs.mkdirSync(a);
      fs.mkdirSync(b);
      process.chdir(a);
      const server = await listen('r.sock', { capacity: 4096 });
      server.on('channel', (ch: Channel) => ch.handle((v) => v));
      assert.equal(server.path, 'r.sock', 'server.path is the path as given');
      process.chdir(b);
      fs.writeFileSync('r.sock', 'precious');
      // Still reachable where it was bound.
      const client = await connect(nodePath.join(a, 'r.sock'));
      assert.equal(await client.request('hi'), 'hi');
      client.close();
      await server.close();
      assert.equal(fs.readFileSync(nodePath.join(b, 'r.sock'), 'utf8'), 'precious', 'close() removed a file of the new working directory');
      assert.equal(fs.existsSync(nodePath.join(a, 'r.sock')), false, 'close() left its socket file behind');
    });

    it('a relative path whose absolute form is longer than a socket address holds is bound as given, and works from its directory', async function () {
      let deep = dir.dir;
      while (Buffer.byteLength(nodePath.join(deep, 'r.sock')) <= 107) deep = nodePath.join(deep, 'deeper-directory');
      fs.mkdirSync(deep, { recursive: true });
      process.chdir(deep);
      const server = await listen('r.sock', { capacity: 4096 });
      server.on('channel', (ch: Channel) => ch.handle((v) => v));
      const client = await connect('r.sock');
      assert.equal(await client.request(1), 1);
      client.close();
      await server.close();
      assert.equal(fs.existsSync(nodePath.join(deep, 'r.sock')), false);
    });
  });

  describe('paths that cannot hold a socket', function () {
    it('listen() in a directory that does not exist names the path and says the directory does not exist', async function () {
      const p = dir.path('missing/sub/x.sock');
      const err = await listen(p).then(
        () => assert.fail('listen() resolved'),
        (e: Error & { code?: string; path?: string }) => e,
      );
      // Linux says ENOENT; some sandboxes (gVisor) EACCES: the hint comes from looking at the directory.
      assert.ok(err.code === 'ENOENT' || err.code === 'EACCES', `code ${err.code}: ${err.message}`);
      assert.match(
        err.message,
        new RegExp(`^listen on ${p} failed \\(${err.code}\\): the directory ${dir.path('missing')} does not exist: create it first`),
      );
      assert.equal(err.path, p);
    });

    it('connect() in a directory that does not exist says so (no server can listen there)', async function () {
      const p = dir.path('missing/x.sock');
      const err = await rejectsWith(connect(p), 'ENOENT', p);
      assert.match(err.message, new RegExp(`the directory ${dir.path('missing')} does not exist, so no server listens there`));
      // An outside tester: Region.open's ENOENT carried errno 2, connect's -2 (libuv's), where ERRORS.md says positive.
      assert.deepEqual(
        [(err as { errno?: number }).errno, (err as { syscall?: string }).syscall, (err as { path?: string }).path],
        [2, 'connect', p],
      );
    });

    it('listen() and connect() under a regular file say that it is not a directory (ENOTDIR)', async function () {
      fs.writeFileSync(dir.path('file'), '');
      const p = dir.path('file/x.sock');
      for (const verb of [listen, connect]) {
        const err = await rejectsWith(verb(p), 'ENOTDIR', p);
        assert.match(err.message, new RegExp(`${dir.path('file')} is a regular file, not a directory`));
      }
    });

    it('connect() to a directory or a regular file says that it is not a socket, not that a server exited', async function () {
      fs.writeFileSync(dir.path('file'), '');
      for (const [p, kind] of [
        [dir.dir, 'a directory'],
        [dir.path('file'), 'a regular file'],
      ] as const) {
        const err = await rejectsWith(connect(p), 'ECONNREFUSED', p);
        assert.match(err.message, new RegExp(`${p} is ${kind}, not a socket: pass the socket path the server gave listen\\(\\)`));
        assert.doesNotMatch(err.message, /exited without close/);
      }
    });

    it('listen() on a directory says that it is a directory (EADDRINUSE) and leaves it', async function () {
      const err = await rejectsWith(listen(dir.dir), 'EADDRINUSE', dir.dir);
      assert.match(err.message, /is not a socket \(it is a directory\); pick another path/);
      assert.ok(fs.statSync(dir.dir).isDirectory());
    });

    it('listen() in a directory this process may not write names it and says so (EACCES)', async function () {
      // Root may write anywhere: the listen runs in a child as nobody (uid 65534) then.
      const ro = dir.path('read-only');
      fs.mkdirSync(ro);
      fs.chmodSync(dir.dir, 0o755);
      fs.chmodSync(ro, 0o555);
      const p = `${ro}/x.sock`;
      const { code, message } = await failedListenAsNobody(p);
      assert.equal(code, 'EACCES', message);
      assert.match(message, new RegExp(`^listen on ${p} failed \\(EACCES\\): this process may not create a file in the directory ${ro}`));
    });

    it('listen() that must replace a stale socket file but may not open its lock file says to remove it or run as its owner (EACCES)', async function () {
      if (process.getuid?.() !== 0) this.skip(); // the lock file must belong to another user than the listener's
      const open = dir.path('open');
      fs.mkdirSync(open);
      fs.chmodSync(dir.dir, 0o755);
      fs.chmodSync(open, 0o777);
      const p = `${open}/x.sock`;
      await staleSocket(p);
      fs.chmodSync(p, 0o777); // nobody may connect: refused (stale), not EACCES (perhaps another user's live server)
      fs.writeFileSync(`${p}.shmring-lock`, '', { mode: 0o444 }); // root's, read-only
      const { code, message } = await failedListenAsNobody(p);
      assert.equal(code, 'EACCES', message);
      assert.match(
        message,
        /this user may not open .*\.shmring-lock, the lock file listen\(\) uses to replace it, for writing: remove it, or run as its owner/,
      );
      assert.ok(fs.lstatSync(p).isSocket(), 'the stale socket file was touched');
    });

    it("listen() on a socket file this user may not connect to (another user's, perhaps live) does not replace it: EADDRINUSE saying why", async function () {
      if (process.getuid?.() !== 0) this.skip(); // the socket file must belong to another user than the listener's
      const open = dir.path('open');
      fs.mkdirSync(open);
      fs.chmodSync(dir.dir, 0o755);
      fs.chmodSync(open, 0o777); // nobody could remove root's socket file here
      const p = `${open}/x.sock`;
      await staleSocket(p);
      fs.chmodSync(p, 0o755); // connect needs write permission: EACCES for nobody
      const inode = fs.statSync(p).ino;
      const { code, message } = await failedListenAsNobody(p);
      assert.equal(code, 'EADDRINUSE', message);
      assert.match(message, /connecting to it failed with EACCES, not ECONNREFUSED, so a live server may own it/);
      assert.equal(fs.statSync(p).ino, inode, 'the socket file was replaced');
    });

    /** listen(p) in a child process, as nobody (uid 65534) when this one is root; what it failed with. */
    async function failedListenAsNobody(p: string): Promise<{ code: string; message: string }> {
      const index = new URL('../src/index.js', import.meta.url).href;
      const body = `const m = await import(${JSON.stringify(index)});
        try { await m.listen(${JSON.stringify(p)}); console.log('listening'); process.exit(0); }
        catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message })); }`;
      const asNobody = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
      const child = spawn(process.execPath, ['--input-type=module', '-e', body], { stdio: ['ignore', 'pipe', 'inherit'], ...asNobody });
      let out = '';
      child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
      await once(child, 'close');
      assert.ok(out.trim() !== 'listening', `listen(${p}) succeeded`);
      return JSON.parse(out) as { code: string; message: string };
    }
  });
});
