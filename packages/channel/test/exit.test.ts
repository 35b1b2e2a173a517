/**
 * What keeps a process alive: a pending request, receive or `for await`,
 * and a handler do; an idle channel does not, although its reader stays
 * parked between uses where the wait backend makes that cheap (unref'd,
 * its link held while someone waits). Each case runs a child that holds
 * nothing but its channel, on every wait path this machine has: io_uring
 * (the default), the addon's futex_waitv fallback, and the koffi backend
 * (whose channels do not park between uses). Also: a channel nobody reads
 * takes at most one value off the ring, so its sender still feels the
 * back-pressure.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { backendKind } from '@shmring/core';
import { channelPair, listen, openChannel, type Channel, type ChannelServer } from '../src/index.js';
import { killAllPeers, sleep, startPeer, TmpDir, type Peer } from './helpers.js';

const IDLE_WORKER_URL = new URL('./fixtures/idle-worker.js', import.meta.url);
/** How long a child must stay alive while something holds it. */
const HELD_MS = 400;
/** How soon a child must exit once nothing holds it. */
const EXIT_BOUND_MS = 5_000;

const PATHS: Array<{ title: string; env: Record<string, string>; addon: boolean }> = [
  { title: 'io_uring waits (the default)', env: { SHMRING_ASYNC_WAIT: 'io_uring' }, addon: true },
  { title: 'futex_waitv waits (the fallback)', env: { SHMRING_ASYNC_WAIT: 'futex_waitv' }, addon: true },
  { title: 'the koffi backend', env: { SHMRING_BACKEND: 'koffi' }, addon: false },
];

/** Resolves true if `peer` exits within `ms`, false if it is still running then. */
async function exitsWithin(peer: Peer, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  const exited = await Promise.race([peer.exited.then(() => true as const), late]);
  clearTimeout(timer);
  return exited;
}

describe('what keeps a process alive', function () {
  this.timeout(60_000);

  for (const path of PATHS) {
    describe(`a channel client on ${path.title}`, function () {
      let dir: TmpDir;
      let server: ChannelServer;
      let accepted: Channel[];

      before(function () {
        if (path.addon && backendKind() !== 'addon') {
          console.log('      SKIPPED: the Rust addon is not built here (no cargo)');
          this.skip();
        }
      });

      beforeEach(async function () {
        dir = new TmpDir();
        accepted = [];
        server = await listen(dir.path());
        server.on('channel', (ch: Channel) => {
          accepted.push(ch);
          ch.handle(async (value) => {
            if (value === 'slow') await sleep(HELD_MS);
            return value;
          });
        });
      });

      afterEach(async function () {
        await killAllPeers();
        for (const ch of accepted) ch.close();
        await server.close();
        dir.remove();
      });

      function holder(holds: 'nothing' | 'request' | 'receive' | 'handler'): Peer {
        return startPeer({ role: 'holder', path: dir.path(), holds }, { env: path.env });
      }

      async function exitsCleanly(peer: Peer): Promise<void> {
        assert.equal(await exitsWithin(peer, EXIT_BOUND_MS), true, `the child did not exit; events: ${JSON.stringify(peer.events)}`);
        const { code, signal } = await peer.exited;
        assert.equal(code, 0, `the child exited with ${code ?? signal}; stderr:\n${peer.stderr}`);
      }

      it('exits by itself once its channel is idle, open and never closed', async function () {
        const peer = holder('nothing');
        assert.equal((await peer.next('replied')).value, 'hi');
        await exitsCleanly(peer);
      });

      it('stays alive while its request is pending, and exits after the reply', async function () {
        const peer = holder('request');
        await peer.next('asking');
        assert.equal(await exitsWithin(peer, HELD_MS / 2), false, 'the child exited with its request pending');
        assert.equal((await peer.next('replied')).value, 'slow');
        await exitsCleanly(peer);
      });

      it('stays alive while a receive is pending, and exits once a value came', async function () {
        const peer = holder('receive');
        await peer.next('waiting');
        assert.equal(await exitsWithin(peer, HELD_MS), false, 'the child exited with its receive pending');
        await accepted[0]!.send('hello');
        assert.equal((await peer.next('received')).value, 'hello');
        await exitsCleanly(peer);
      });

      it('stays alive while it has a handler, and exits once the other side closes the channel', async function () {
        const peer = holder('handler');
        await peer.next('handling');
        assert.equal(await exitsWithin(peer, HELD_MS), false, 'the child exited with a handler registered');
        assert.equal(await accepted[0]!.request(42), 42, 'the handler did not answer');
        accepted[0]!.close();
        await peer.next('close');
        await exitsCleanly(peer);
      });
    });
  }

  it('a worker whose channelPair end is idle, open and never closed exits by itself', async function () {
    const [ch, handle] = channelPair();
    ch.handle((value) => value);
    const worker = new Worker(IDLE_WORKER_URL, { workerData: { handle }, transferList: [handle.port] });
    const timer = setTimeout(() => void worker.terminate(), EXIT_BOUND_MS);
    const [code] = (await once(worker, 'exit')) as [number];
    clearTimeout(timer);
    assert.equal(code, 0, 'the worker did not exit by itself (terminated, or failed)');
    ch.close();
    await ch.closed;
  });

  it('a channel nobody reads takes at most one value off the ring: later sends wait, and all arrive in order', async function () {
    const [a, handle] = channelPair({ capacity: 4096 });
    const b = openChannel(handle);
    try {
      const states: string[] = [];
      const sends = Array.from({ length: 10 }, (_, i) => {
        states[i] = 'pending';
        return a.send(Buffer.alloc(1000, i)).then(() => (states[i] = 'sent'));
      });
      await sleep(50);
      // A 4096-byte ring holds three 1000-byte records (each with its header); one more is in b's inbox.
      const sent = states.filter((s) => s === 'sent').length;
      assert.ok(sent <= 5, `${sent} of 10 sends completed with nobody reading (the reader took more than one value)`);
      assert.ok(sent >= 3, `only ${sent} sends completed: the ring should hold three`);
      for (let i = 0; i < 10; i++) {
        const value = (await b.receive()) as Buffer;
        assert.equal(value.length, 1000);
        assert.equal(value[0], i, `value ${i} arrived out of order`);
      }
      await Promise.all(sends);
    } finally {
      a.close();
      b.close();
      await Promise.all([a.closed, b.closed]);
    }
  });

  it('a channel with no handler takes at most one request off the ring: what follows waits, and is answered in order once a handler comes', async function () {
    const [a, handle] = channelPair({ capacity: 4096 });
    const b = openChannel(handle);
    try {
      // A 4096-byte ring holds three 1000-byte records: the fourth request fits only once the reader took one.
      const replies = Array.from({ length: 4 }, (_, i) => a.request(Buffer.alloc(1000, i)));
      // With three requests in the ring and one kept for a handler, a fifth 1000-byte record must wait; it would
      // fit if the reader had taken two.
      let sent = false;
      const send = a.send(Buffer.alloc(1000, 0xee)).then(() => (sent = true));
      await sleep(50);
      assert.equal(sent, false, 'the send behind four requests completed: the reader took more than one request off the ring');
      const seen: number[] = [];
      b.handle((value) => {
        seen.push((value as Buffer)[0]!);
        return (value as Buffer).length;
      });
      assert.deepEqual(await Promise.all(replies), Array(4).fill(1000));
      assert.deepEqual(seen, [0, 1, 2, 3], 'the requests were handled out of order');
      await send;
      assert.equal(((await b.receive()) as Buffer)[0], 0xee);
    } finally {
      a.close();
      b.close();
      await Promise.all([a.closed, b.closed]);
    }
  });
});
