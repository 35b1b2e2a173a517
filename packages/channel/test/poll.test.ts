/**
 * The `poll` option (µs an end keeps looking for the other side's next
 * record between event-loop turns before it parks): listen, connect,
 * channelPair and openChannel take any number of microseconds in
 * [0, 1_000_000] and reject anything else with ERR_SHMRING_INVALID_ARGUMENT
 * naming `poll`, before they touch a path, a server or a handle. A channel
 * with `poll: 2000` on both ends delivers values and requests as any other,
 * across gaps shorter than the window (caught while polling) and longer
 * ones (parked).
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { channelPair, connect, listen, openChannel, type Channel } from '../src/index.js';
import { ends, rejectsWith, sleep, throwsWith, TmpDir, type Transport } from './helpers.js';

const GOOD_POLLS = [0, 1, 50, 2000, 1_000_000];
const BAD_POLLS: unknown[] = [NaN, -1, -0.5, -Infinity, 1_000_001, Infinity, '2000', '0', ''];

/** The message of a rejected poll names the option. */
const NAMES_POLL = /\bpoll\b/;

function label(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

describe('the poll option', function () {
  this.timeout(30_000);

  describe('validation', function () {
    it(`listen, connect, channelPair and openChannel accept poll in [0, 1_000_000] µs (${GOOD_POLLS.join(', ')}) and the channel works`, async function () {
      for (const poll of GOOD_POLLS) {
        const dir = new TmpDir();
        const server = await listen(dir.path(), { capacity: 4096, poll });
        try {
          server.on('channel', (ch: Channel) => ch.handle((v) => ['server', v]));
          const client = await connect(dir.path(), { poll });
          assert.deepEqual(await client.request(poll), ['server', poll], `listen/connect with poll ${poll}`);
          client.close();
          await client.closed;
        } finally {
          await server.close();
          dir.remove();
        }
        const [a, handle] = channelPair({ capacity: 4096, poll });
        const b = openChannel(handle, { poll });
        try {
          b.handle((v) => ['b', v]);
          assert.deepEqual(await a.request(poll), ['b', poll], `channelPair/openChannel with poll ${poll}`);
          await b.send(poll);
          assert.equal(await a.receive(), poll);
        } finally {
          a.close();
          b.close();
          await Promise.all([a.closed, b.closed]);
        }
      }
    });

    it('listen() with poll NaN, negative, over 1_000_000 or a string is ERR_SHMRING_INVALID_ARGUMENT naming poll, and binds nothing', async function () {
      const dir = new TmpDir();
      try {
        for (const poll of BAD_POLLS) {
          const err = await rejectsWith(listen(dir.path(), { poll: poll as number }), 'ERR_SHMRING_INVALID_ARGUMENT', NAMES_POLL);
          assert.match(err.message, /^listen\b/, `poll ${label(poll)}: ${err.message}`);
        }
        assert.deepEqual(fs.readdirSync(dir.dir), [], 'a rejected listen() left a socket file');
      } finally {
        dir.remove();
      }
    });

    it('connect() with a bad poll is ERR_SHMRING_INVALID_ARGUMENT naming poll; the server sees no channel', async function () {
      const dir = new TmpDir();
      const server = await listen(dir.path(), { capacity: 4096 });
      const announced: Channel[] = [];
      server.on('channel', (ch: Channel) => {
        announced.push(ch);
        ch.handle((v) => v);
      });
      try {
        for (const poll of BAD_POLLS) {
          const err = await rejectsWith(connect(dir.path(), { poll: poll as number }), 'ERR_SHMRING_INVALID_ARGUMENT', NAMES_POLL);
          assert.match(err.message, /^connect\b/, `poll ${label(poll)}: ${err.message}`);
        }
        await sleep(50);
        assert.equal(announced.length, 0, 'a rejected connect() reached the server');
        // The server is untouched: a good connect still gets a channel.
        const client = await connect(dir.path(), { poll: 2000 });
        assert.equal(await client.request('after'), 'after');
        assert.equal(announced.length, 1);
        client.close();
        await client.closed;
      } finally {
        await server.close();
        dir.remove();
      }
    });

    it('channelPair() and openChannel() with a bad poll throw ERR_SHMRING_INVALID_ARGUMENT naming poll; the handle stays unopened', async function () {
      for (const poll of BAD_POLLS) {
        const err = throwsWith(() => channelPair({ capacity: 4096, poll: poll as number }), 'ERR_SHMRING_INVALID_ARGUMENT');
        assert.match(err.message, NAMES_POLL);
        assert.match(err.message, /^channelPair\b/, `poll ${label(poll)}: ${err.message}`);
      }
      const [a, handle] = channelPair({ capacity: 4096 });
      let b: Channel | undefined;
      try {
        for (const poll of BAD_POLLS) {
          const err = throwsWith(() => openChannel(handle, { poll: poll as number }), 'ERR_SHMRING_INVALID_ARGUMENT');
          assert.match(err.message, NAMES_POLL);
          assert.match(err.message, /^openChannel\b/, `poll ${label(poll)}: ${err.message}`);
        }
        // The rejected calls did not take the handle: it opens now, and the channel works.
        b = openChannel(handle, { poll: 2000 });
        b.handle((v) => v);
        assert.equal(await a.request('opened'), 'opened');
      } finally {
        a.close();
        b?.close();
        await Promise.all([a.closed, b?.closed]);
      }
    });
  });

  describe('with poll: 2000 on both ends', function () {
    const N = 300;
    type Msg = { side: string; i: number; pad: string };
    // Every 25th value is larger than a 4096-byte ring's largest record (split); every 4th call is a request.
    const value = (side: string, i: number): Msg => ({ side, i, pad: i % 25 === 24 ? 'p'.repeat(3000 + i) : '' });

    for (const transport of ['socket', 'pair'] as Transport[]) {
      it(`over a ${transport === 'socket' ? 'connect/listen channel' : 'channelPair'}, values and requests from both sides arrive in call order, across gaps shorter and longer than the window`, async function () {
        const { a, b, dispose } = await ends(transport, { capacity: 4096, poll: 2000 });
        try {
          const run = async (me: Channel, side: string, otherSide: string): Promise<{ handled: number[]; received: number[] }> => {
            const handled: number[] = [];
            me.handle((v) => {
              const m = v as Msg;
              assert.deepEqual(m, value(otherSide, m.i));
              handled.push(m.i);
              return { re: m.i };
            });
            const receiving = (async () => {
              const received: number[] = [];
              for (let i = 0; i < N; i++) {
                if (i % 4 === 0) continue;
                const m = (await me.receive()) as Msg;
                assert.deepEqual(m, value(otherSide, m.i));
                received.push(m.i);
              }
              return received;
            })();
            receiving.catch(() => {}); // awaited below
            const calls: Array<Promise<unknown>> = [];
            for (let i = 0; i < N; i++) {
              const call = i % 4 === 0 ? me.request(value(side, i)).then((r) => assert.deepEqual(r, { re: i })) : me.send(value(side, i));
              call.catch(() => {}); // reported by the Promise.all below
              calls.push(call);
              if (i % 10 === 9) {
                // Quiet gaps: 1 ms (within the 2 ms window) mostly, 6 ms (past it) now and then.
                await Promise.all(calls);
                await sleep(i % 100 === 99 ? 6 : 1);
              }
            }
            await Promise.all(calls);
            return { handled, received: await receiving };
          };
          const [ra, rb] = await Promise.all([run(a, 'a', 'b'), run(b, 'b', 'a')]);
          const all = Array.from({ length: N }, (_, i) => i);
          const expectedValues = all.filter((i) => i % 4 !== 0);
          const expectedRequests = all.filter((i) => i % 4 === 0);
          assert.deepEqual(ra.received, expectedValues, 'values b sent, as a received them');
          assert.deepEqual(rb.received, expectedValues, 'values a sent, as b received them');
          assert.deepEqual(ra.handled, expectedRequests, 'requests b made, as a handled them');
          assert.deepEqual(rb.handled, expectedRequests, 'requests a made, as b handled them');
        } finally {
          await dispose();
        }
      });
    }
  });
});
