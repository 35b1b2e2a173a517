/**
 * Liveness: a channel learns of its peer's death from its link (the Unix
 * socket the kernel closes when a process dies, the MessagePort Node closes
 * when a worker ends), at once and without polling. A SIGKILLed server
 * process or a terminated worker fails the pending request with
 * ERR_SHMRING_PEER_DEAD within 100 ms (measured from the kill); a SIGKILLed
 * client ends the server's end with 'close' (PEER_DEAD). A clean close from
 * either side is different: what was sent before it is still received,
 * then receive() rejects with ERR_SHMRING_CLOSED, iterators finish, `closed`
 * resolves and 'close' fires without an error. Nothing is left in /dev/shm,
 * and server.close() removes the socket path.
 *
 * PIDs play no part in it: a server process that is PID 1 of its own PID
 * namespace (unshare --pid; this process's PID means nothing there, and its
 * PID means another process here) is found dead as fast when it is
 * SIGKILLed, finds a dead client outside just as well, and is never taken
 * for dead while it lives. Those tests skip where unshare is missing or
 * refused.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import { channelPair, connect, listen, type Channel } from '../src/index.js';
import {
  closeEvent,
  ends,
  killAllPeers,
  rejectsWith,
  settledWithin,
  shmEntries,
  sleep,
  startPeer,
  startWorker,
  terminateAllWorkers,
  TmpDir,
  waitUntil,
  workerEvent,
  type Peer,
  type Transport,
} from './helpers.js';

/** A peer's death must fail what waits on it within this long of the kill. */
const DEATH_BOUND_MS = 100;

/** How long one step of a test may take before it fails, naming the step. */
const STEP_MS = 10_000;

/** `promise`, or a rejection naming `step` (and what `state` says then) if it does not settle within STEP_MS. */
async function within<T>(promise: Promise<T>, step: string, state?: () => Promise<string>): Promise<T> {
  const settled = await settledWithin(promise, STEP_MS);
  if (settled.status === 'fulfilled') return settled.value;
  if (settled.status === 'rejected') throw settled.reason;
  throw new Error(`${step}: still pending after ${STEP_MS} ms${state === undefined ? '' : ` (${await state()})`}`);
}

/** When `promise` settled (performance.now()), and how. */
function track(promise: Promise<unknown>): Promise<{ at: number; error?: Error & { code?: string }; value?: unknown }> {
  return promise.then(
    (value) => ({ at: performance.now(), value }),
    (error: Error) => ({ at: performance.now(), error }),
  );
}

/**
 * The command prefix that runs a process as PID 1 of a new PID namespace
 * with its own /proc, or why there is none here. As root, plain unshare
 * first, then with --map-root-user (a user namespace as well); otherwise
 * only the latter. Each candidate must run `node` and have it report PID 1.
 */
function pidNamespaceWrapper(): { wrapper: string[] } | { reason: string } {
  const base = ['unshare', '--pid', '--fork', '--mount-proc'];
  const mapped = [...base, '--map-root-user'];
  const candidates = process.getuid?.() === 0 ? [base, mapped] : [mapped];
  const failures: string[] = [];
  for (const wrapper of candidates) {
    const r = spawnSync(wrapper[0]!, [...wrapper.slice(1), process.execPath, '-e', 'process.stdout.write(String(process.pid))'], {
      encoding: 'utf8',
      timeout: 10_000,
    });
    if (r.error !== undefined) {
      const code = (r.error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return { reason: 'unshare is not installed (ENOENT)' };
      failures.push(`${wrapper.join(' ')}: ${code ?? r.error.message}`);
      continue;
    }
    if (r.status === 0 && r.stdout === '1') return { wrapper };
    const said = (r.stderr || r.stdout).trim() || 'no output';
    failures.push(
      `${wrapper.join(' ')}: ${r.status === 0 ? `node ran as PID ${r.stdout}, not 1` : `exit ${r.status ?? r.signal}: ${said}`}`,
    );
  }
  return { reason: failures.join('; ') };
}

describe('liveness', function () {
  this.timeout(30_000);

  let dir: TmpDir;
  beforeEach(function () {
    dir = new TmpDir();
  });
  afterEach(async function () {
    await killAllPeers();
    await terminateAllWorkers();
    dir.remove();
  });

  describe('a peer that dies', function () {
    it(`a server process SIGKILLed mid-request fails the request with ERR_SHMRING_PEER_DEAD within ${DEATH_BOUND_MS} ms`, async function () {
      const peer = startPeer({ role: 'server', path: dir.path(), handler: 'hang', capacity: 4096 });
      await peer.next('listening');
      const client = await connect(dir.path());
      const closeArg = closeEvent(client);
      const request = track(client.request({ work: 1 }));
      const receive = track(client.receive());
      await peer.next('request');
      const killedAt = performance.now();
      peer.child.kill('SIGKILL');
      const settled = await request;
      const latency = settled.at - killedAt;
      assert.equal(settled.error?.code, 'ERR_SHMRING_PEER_DEAD', `request settled with ${String(settled.error ?? settled.value)}`);
      assert.ok(latency < DEATH_BOUND_MS, `the request failed ${latency.toFixed(1)} ms after the kill`);
      assert.equal((await receive).error?.code, 'ERR_SHMRING_PEER_DEAD');
      assert.equal(((await closeArg) as { code?: string } | undefined)?.code, 'ERR_SHMRING_PEER_DEAD');
      await client.closed;
      await rejectsWith(client.send('more'), 'ERR_SHMRING_PEER_DEAD');
      await rejectsWith(client.request('more'), 'ERR_SHMRING_PEER_DEAD');
      console.log(`      (request failed ${latency.toFixed(1)} ms after SIGKILL)`);
    });

    it("a client process SIGKILLed ends the server's channel with 'close' (ERR_SHMRING_PEER_DEAD), and its iterator throws", async function () {
      const server = await listen(dir.path(), { capacity: 4096 });
      try {
        const accepted = once(server, 'channel') as Promise<[Channel]>;
        const peer = startPeer({ role: 'client', path: dir.path() });
        const [ch] = await accepted;
        await peer.next('connected');
        assert.equal(server.channels, 1);
        const closeArg = new Promise<{ error: Error | undefined; at: number }>((resolve) =>
          ch.once('close', (error) => resolve({ error, at: performance.now() })),
        );
        const iteration = track(
          (async () => {
            for await (const value of ch) assert.fail(`unexpected value ${String(value)}`);
          })(),
        );
        assert.equal(await ch.request('ping'), 'ping'); // the client answers while it lives
        const killedAt = await peer.kill();
        const { error, at } = await closeArg;
        assert.equal((error as { code?: string } | undefined)?.code, 'ERR_SHMRING_PEER_DEAD');
        assert.equal((await iteration).error?.code, 'ERR_SHMRING_PEER_DEAD', 'the iterator must throw, not finish, when the peer died');
        await ch.closed;
        assert.equal(server.channels, 0);
        console.log(`      ('close' fired ${(at - killedAt).toFixed(1)} ms after SIGKILL)`);
        assert.ok(at - killedAt < 1000, `'close' fired ${(at - killedAt).toFixed(1)} ms after the kill`);
      } finally {
        await server.close();
      }
    });

    it(`a terminated worker fails the pending request with ERR_SHMRING_PEER_DEAD within ${DEATH_BOUND_MS} ms`, async function () {
      const [ch, handle] = channelPair({ capacity: 4096 });
      const worker = startWorker(handle, { role: 'hang' });
      await workerEvent(worker, 'ready');
      const closeArg = closeEvent(ch);
      const request = track(ch.request('work'));
      await workerEvent(worker, 'request');
      const terminatedAt = performance.now();
      void worker.terminate();
      const settled = await request;
      const latency = settled.at - terminatedAt;
      assert.equal(settled.error?.code, 'ERR_SHMRING_PEER_DEAD', `request settled with ${String(settled.error ?? settled.value)}`);
      assert.ok(latency < DEATH_BOUND_MS, `the request failed ${latency.toFixed(1)} ms after terminate()`);
      assert.equal(((await closeArg) as { code?: string } | undefined)?.code, 'ERR_SHMRING_PEER_DEAD');
      await ch.closed;
      console.log(`      (request failed ${latency.toFixed(1)} ms after terminate())`);
    });

    it('a send waiting for room in a full ring fails with ERR_SHMRING_PEER_DEAD when the reader (a worker) is terminated', async function () {
      const [ch, handle] = channelPair({ capacity: 4096 });
      const worker = startWorker(handle, { role: 'idle' });
      await workerEvent(worker, 'ready');
      const sends: Array<Promise<unknown>> = [];
      for (let i = 0; i < 10; i++) sends.push(track(ch.send(Buffer.alloc(1000, i))));
      await sleep(20);
      assert.equal((await settledWithin(sends[9]!, 1)).status, 'pending', 'the ring should be full');
      void worker.terminate();
      const last = (await sends[9]!) as { error?: { code?: string } };
      assert.equal(last.error?.code, 'ERR_SHMRING_PEER_DEAD');
      await ch.closed;
    });

    it('a worker that closes its end and exits is a clean close, not a dead peer', async function () {
      // Each step has a bound of its own, well inside the test's: a hang says which step it was,
      // and whether the worker's end saw its own close.
      const [ch, handle] = channelPair({ capacity: 4096 });
      const worker = startWorker(handle, { role: 'echo' });
      const workerClosed = workerEvent(worker, 'close');
      workerClosed.catch(() => {}); // looked at only if a step hangs
      const exited = once(worker, 'exit');
      await workerEvent(worker, 'ready', STEP_MS);
      assert.equal(await within(ch.request('hi'), 'the request before the close'), 'hi');
      const closeArg = closeEvent(ch);
      worker.postMessage({ stop: true });
      const said = async (): Promise<string> =>
        (await settledWithin(workerClosed, 0)).status === 'fulfilled' ? 'the worker saw its close' : 'no close event from the worker';
      assert.equal(await within(closeArg, "this end's 'close' after the worker's close()", said), undefined);
      await rejectsWith(within(ch.receive(), 'a receive after the close'), 'ERR_SHMRING_CLOSED');
      await within(exited, "the worker's exit", said);
    });
  });

  describe('a peer in another PID namespace (unshare --pid)', function () {
    let wrapper: string[];

    before(function () {
      const found = pidNamespaceWrapper();
      if ('reason' in found) {
        console.log(`      (skipped: cannot start a process in a new PID namespace here: ${found.reason})`);
        this.skip();
      }
      wrapper = found.wrapper;
      console.log(`      (namespaced peers run under: ${wrapper.join(' ')})`);
    });

    /** A server fixture as PID 1 of a new PID namespace, listening on dir.path(). */
    async function namespacedServer(handler: 'echo' | 'hang'): Promise<Peer> {
      const peer = startPeer({ role: 'server', path: dir.path(), handler, capacity: 4096 }, { wrapper });
      const listening = await peer.next('listening');
      assert.equal(listening.pid, 1, 'the server should be PID 1 of its own namespace');
      return peer;
    }

    it(`a server there SIGKILLed mid-request, with its whole unshare tree, fails the request with ERR_SHMRING_PEER_DEAD within ${DEATH_BOUND_MS} ms`, async function () {
      const peer = await namespacedServer('hang');
      const client = await connect(dir.path());
      const closeArg = closeEvent(client);
      const request = track(client.request({ work: 1 }));
      await peer.next('request');
      const killedAt = await peer.kill(); // the process group: unshare and the namespace's PID 1
      const settled = await request;
      const latency = settled.at - killedAt;
      assert.equal(settled.error?.code, 'ERR_SHMRING_PEER_DEAD', `request settled with ${String(settled.error ?? settled.value)}`);
      assert.ok(latency < DEATH_BOUND_MS, `the request failed ${latency.toFixed(1)} ms after the kill`);
      assert.equal(((await closeArg) as { code?: string } | undefined)?.code, 'ERR_SHMRING_PEER_DEAD');
      await client.closed;
      await rejectsWith(client.request('more'), 'ERR_SHMRING_PEER_DEAD');
      console.log(`      (request failed ${latency.toFixed(1)} ms after SIGKILL)`);
    });

    it('a live server there answers requests for 2 s, idle past the 1 s peer timeout in between, with no false ERR_SHMRING_PEER_DEAD', async function () {
      const peer = await namespacedServer('echo');
      const client = await connect(dir.path());
      let closedWith: unknown = 'still open';
      client.once('close', (err?: Error) => (closedWith = err));
      // Parked all along, under the watchdog: it must not end before the close below.
      const parked = track(client.receive());
      const started = performance.now();
      let n = 0;
      while (performance.now() - started < 2000) {
        assert.deepEqual(await client.request({ n }), { n }, `request ${n}`);
        n++;
        // Every 20 ms, but once 1.2 s of silence: both ends park past a 1 s peer timeout.
        await sleep(n === 20 ? 1200 : 20);
      }
      const elapsed = performance.now() - started;
      assert.equal(
        closedWith,
        'still open',
        `the channel ended: ${String((closedWith as { code?: string } | undefined)?.code ?? closedWith)}`,
      );
      assert.equal((await settledWithin(parked, 0)).status, 'pending', 'the parked receive() ended while the peer lived');
      assert.deepEqual(
        peer.events.filter((e) => e.event === 'close' || e.event === 'error'),
        [],
        "the server's end ended or failed",
      );
      assert.ok(peer.child.exitCode === null && peer.child.signalCode === null, 'the server exited');
      // A clean close is a clean close in there too.
      client.close();
      assert.equal((await parked).error?.code, 'ERR_SHMRING_CLOSED');
      assert.equal((await peer.next('close', 5000)).code, null, 'the server saw a dead peer instead of a clean close');
      console.log(`      (${n} requests answered over ${elapsed.toFixed(0)} ms)`);
    });

    it("a client outside SIGKILLed ends the namespaced server's channel with 'close' (ERR_SHMRING_PEER_DEAD)", async function () {
      const server = await namespacedServer('echo');
      const client = startPeer({ role: 'client', path: dir.path() });
      await client.next('connected');
      await server.next('channel');
      const killedAt = await client.kill();
      const closed = await server.next('close', 5000);
      const latency = performance.now() - killedAt;
      assert.equal(closed.code, 'ERR_SHMRING_PEER_DEAD');
      assert.ok(latency < 1000, `the server reported 'close' ${latency.toFixed(1)} ms after the kill`);
      console.log(`      (the namespaced server reported 'close' ${latency.toFixed(1)} ms after SIGKILL)`);
    });
  });

  for (const transport of ['socket', 'pair'] as Transport[]) {
    for (const closer of ['creator', 'opener'] as const) {
      describe(`a clean close by the ${closer} end of a ${transport === 'socket' ? 'connect/listen channel' : 'channelPair'}`, function () {
        let here: Channel; // the side that closes
        let there: Channel;
        let dispose: () => Promise<void>;

        beforeEach(async function () {
          const e = await ends(transport, { capacity: 4096 });
          [here, there] = closer === 'creator' ? [e.a, e.b] : [e.b, e.a];
          dispose = e.dispose;
        });
        afterEach(async function () {
          await dispose();
        });

        it('the other side receives every value sent before the close, then receive() rejects with ERR_SHMRING_CLOSED', async function () {
          const thereClose = closeEvent(there);
          const hereClose = closeEvent(here);
          // The last one is split (larger than the ring's largest record) but fits the ring: nobody reads yet.
          for (const v of ['one', { two: 2 }, Buffer.from('three'), 'x'.repeat(3000)]) await here.send(v);
          here.close();
          assert.equal(await hereClose, undefined, "the closing side's 'close' has no error");
          assert.equal(await thereClose, undefined, "the other side's 'close' has no error");
          await there.closed;
          assert.equal(await there.receive(), 'one');
          assert.deepEqual(await there.receive(), { two: 2 });
          assert.deepEqual(await there.receive(), Buffer.from('three'));
          assert.equal(await there.receive(), 'x'.repeat(3000));
          await rejectsWith(there.receive(), 'ERR_SHMRING_CLOSED', 'the other side closed');
          await rejectsWith(there.receive(), 'ERR_SHMRING_CLOSED');
          await rejectsWith(there.send('late'), 'ERR_SHMRING_CLOSED');
          await rejectsWith(there.request('late'), 'ERR_SHMRING_CLOSED');
          await rejectsWith(here.receive(), 'ERR_SHMRING_CLOSED', 'after close()');
        });

        it('values sent in the same turn as close(), not awaited, still arrive before the end', async function () {
          const sends = [here.send('a'), here.send({ b: 1 }), here.send(Buffer.from('c'))];
          here.close();
          await Promise.all(sends);
          assert.equal(await there.receive(), 'a');
          assert.deepEqual(await there.receive(), { b: 1 });
          assert.deepEqual(await there.receive(), Buffer.from('c'));
          await rejectsWith(there.receive(), 'ERR_SHMRING_CLOSED');
        });

        it("the other side's iterator yields what was sent and then finishes", async function () {
          const collected: unknown[] = [];
          const iteration = (async () => {
            for await (const v of there) collected.push(v);
            return 'finished';
          })();
          for (let i = 0; i < 50; i++) await here.send(i);
          here.close();
          assert.equal(await iteration, 'finished');
          assert.deepEqual(
            collected,
            Array.from({ length: 50 }, (_, i) => i),
          );
          // A new iterator on the ended channel finishes at once.
          const again = there.messages();
          assert.deepEqual(await again.next(), { value: undefined, done: true });
        });

        it('a receive() pending on the other side rejects with ERR_SHMRING_CLOSED instead of hanging', async function () {
          const pending = there.receive();
          await sleep(10);
          here.close();
          await rejectsWith(pending, 'ERR_SHMRING_CLOSED');
          await Promise.all([here.closed, there.closed]);
        });

        it('close() is idempotent and `closed` resolves on both sides', async function () {
          here.close();
          here.close();
          const both = Promise.all([here.closed, there.closed]);
          assert.equal((await settledWithin(both, 5000)).status, 'fulfilled');
          there.close();
        });
      });
    }
  }

  it('no /dev/shm entry appears while channels are open, and server.close() removes the socket path', async function () {
    const before = shmEntries();
    const p = dir.path('srv');
    const server = await listen(p, { capacity: 4096 });
    assert.ok(fs.lstatSync(p).isSocket());
    const accepted: Channel[] = [];
    server.on('channel', (ch: Channel) => {
      accepted.push(ch);
      ch.handle((v) => v);
    });
    const clients = await Promise.all([1, 2, 3].map(() => connect(p)));
    for (const c of clients) assert.equal(await c.request('hi'), 'hi');
    const [pa, ha] = channelPair({ capacity: 4096 });
    const during = shmEntries();
    assert.deepEqual(
      [...during].filter((n) => !before.has(n)),
      [],
      'new /dev/shm entries while channels were open',
    );
    for (const c of clients) c.close();
    pa.close();
    ha.port.close();
    await Promise.all(clients.map((c) => c.closed));
    await waitUntil(() => server.channels === 0, "the server's channels to close");
    await server.close();
    assert.equal(fs.existsSync(p), false, 'the socket path is still there after server.close()');
    assert.deepEqual(
      [...shmEntries()].filter((n) => !before.has(n)),
      [],
      'new /dev/shm entries after everything closed',
    );
    assert.deepEqual(fs.readdirSync(dir.dir), [], 'something was left in the socket directory');
  });
});
