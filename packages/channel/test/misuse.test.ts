/**
 * Misuse gets a typed error with a stable code and leaves the channel as it
 * was: verbs after close(), a second handler, a handler that is not a
 * function, paths with no server, mismatched codecs, values the codec
 * cannot encode (nothing is written: the next value arrives intact), bytes
 * the codec cannot decode (that receive fails, the channel goes on), bad
 * options, bogus or reused channelPair handles. Then fd leaks: connect and
 * close cycles (and failed connects) give back every fd they took.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { Buffer } from 'node:buffer';
import { once } from 'node:events';
import * as fs from 'node:fs';
import net from 'node:net';
import { MessageChannel } from 'node:worker_threads';
import { Region, sendRegion } from '@shmring/core';
import { resolveCodec } from '../src/codec.js';
import { channelRegionSize } from '../src/layout.js';
import { layOutChannel } from '../src/open.js';
import {
  channelPair,
  connect,
  listen,
  openChannel,
  RemoteError,
  type Channel,
  type ChannelHandle,
  type CodecOption,
} from '../src/index.js';
import {
  endsPerTest,
  transports,
  transportTitle,
  fdCount,
  fdTargets,
  pairEnds,
  rejectsWith,
  settledWithin,
  sleep,
  socketEnds,
  throwsWith,
  TmpDir,
  waitUntil,
} from './helpers.js';

/** Whether `make()` fails with `code`, thrown at once or as the rejection of a promise or of an iterator's first next(). */
async function failsWith(make: () => unknown, code: string): Promise<Error & { code: string }> {
  let result: unknown;
  try {
    result = make();
  } catch (err) {
    assert.equal((err as { code?: string }).code, code, `threw ${String((err as Error)?.stack ?? err)}`);
    return err as Error & { code: string };
  }
  if (result !== null && typeof result === 'object' && typeof (result as AsyncIterator<unknown>).next === 'function') {
    return rejectsWith((result as AsyncIterator<unknown>).next(), code);
  }
  return rejectsWith(result as Promise<unknown>, code);
}

describe('misuse', function () {
  this.timeout(30_000);

  for (const transport of transports()) {
    describe(`over a ${transportTitle(transport)}`, function () {
      const ends = endsPerTest(transport, { capacity: 4096 });

      it('send, request, receive and handle after close() fail with ERR_SHMRING_CLOSED', async function () {
        const { a } = ends;
        a.close();
        await rejectsWith(a.send(1), 'ERR_SHMRING_CLOSED', 'after close()');
        await rejectsWith(a.request(1), 'ERR_SHMRING_CLOSED', 'after close()');
        await rejectsWith(a.receive(), 'ERR_SHMRING_CLOSED');
        throwsWith(() => a.handle((v) => v), 'ERR_SHMRING_CLOSED');
        const it = a.messages();
        assert.deepEqual(await it.next(), { value: undefined, done: true });
      });

      it('a second handle() throws ERR_SHMRING_HANDLER_EXISTS and the first handler stays', async function () {
        const { a, b } = ends;
        b.handle((v) => ['first', v]);
        throwsWith(() => b.handle((v) => ['second', v]), 'ERR_SHMRING_HANDLER_EXISTS');
        assert.deepEqual(await a.request(1), ['first', 1]);
      });

      it('handle() with something that is not a function throws a TypeError (ERR_SHMRING_INVALID_ARGUMENT)', async function () {
        const { a, b } = ends;
        for (const bad of [undefined, null, 'handler', 42, {}, { handle: () => 1 }]) {
          const err = throwsWith(() => b.handle(bad as never), 'ERR_SHMRING_INVALID_ARGUMENT');
          assert.ok(err instanceof TypeError);
        }
        // Nothing was registered: a real handler is still accepted.
        b.handle((v) => v);
        assert.equal(await a.request('ok'), 'ok');
      });

      it('values structured clone cannot encode (function, symbol, ...) reject with ERR_SHMRING_ENCODE and nothing is written', async function () {
        const { a, b } = ends;
        let calls = 0;
        b.handle((v) => {
          calls++;
          return v;
        });
        const unencodable: unknown[] = [
          () => 1,
          Symbol('s'),
          { f() {} },
          [1, Symbol.iterator],
          new WeakMap(),
          Promise.resolve(1),
          {
            get boom(): never {
              throw new Error('getter');
            },
          },
        ];
        for (const v of unencodable) {
          // Named by the channel it failed on, as a decode error is.
          await rejectsWith(a.send(v), 'ERR_SHMRING_ENCODE', /channel .*: the channel's structured-clone codec cannot encode/);
          await rejectsWith(a.request(v), 'ERR_SHMRING_ENCODE', /channel .*: the channel's structured-clone codec cannot encode/);
        }
        await a.send('intact');
        assert.equal(await b.receive(), 'intact', 'the first value to arrive must be the next good one');
        assert.equal(await a.request('asked'), 'asked');
        assert.equal(calls, 1, 'a request that could not be encoded reached the handler');
      });

      it('a Proxy (revoked, with a throwing getPrototypeOf trap, or live) rejects send and request with ERR_SHMRING_ENCODE and nothing is written; a handler returning one rejects the request with ERR_SHMRING_ENCODE', async function () {
        const { a, b } = ends;
        let calls = 0;
        const revocable = Proxy.revocable({ x: 1 }, {});
        revocable.revoke();
        const proxies: Array<[string, unknown]> = [
          ['revoked', revocable.proxy],
          [
            'throwing trap',
            new Proxy(
              {},
              {
                getPrototypeOf() {
                  throw new Error('trap says no');
                },
              },
            ),
          ],
          ['live object', new Proxy({ x: 1 }, {})],
          ['live array', new Proxy([1, 2], {})],
          ['live Buffer', new Proxy(Buffer.from('ab'), {})],
          ['nested', { inner: new Proxy({}, {}) }],
        ];
        b.handle((v) => {
          calls++;
          return typeof v === 'number' ? proxies[v]![1] : v;
        });
        for (const [what, v] of proxies) {
          const sent = await rejectsWith(a.send(v), 'ERR_SHMRING_ENCODE');
          assert.match(sent.message, /nothing was sent/, what);
          await rejectsWith(a.request(v), 'ERR_SHMRING_ENCODE');
        }
        await a.send('intact');
        assert.equal(await b.receive(), 'intact', 'the first value to arrive must be the next good one');
        assert.equal(calls, 0, 'a request that could not be encoded reached the handler');
        for (let i = 0; i < proxies.length; i++) {
          const err = await rejectsWith(a.request(i), 'ERR_SHMRING_ENCODE');
          assert.ok(err instanceof RemoteError, `${proxies[i]![0]}: ${err.name}`);
          // The caller sent nothing wrong: the message is about the handler's reply, not "nothing was sent".
          assert.match(err.message, /the handler's reply could not be encoded/, proxies[i]![0]);
          assert.doesNotMatch(err.message, /nothing was sent/, proxies[i]![0]);
        }
        assert.equal(await a.request('asked'), 'asked');
      });
    });
  }

  describe('codecs', function () {
    it('the json codec rejects BigInt, undefined, functions and cycles with ERR_SHMRING_ENCODE; the next value arrives intact', async function () {
      const p = pairEnds({ capacity: 4096, codec: 'json' });
      try {
        const cyclic: Record<string, unknown> = {};
        cyclic.self = cyclic;
        for (const v of [1n, { n: 2n }, undefined, () => 1, cyclic]) await rejectsWith(p.a.send(v), 'ERR_SHMRING_ENCODE');
        await p.a.send({ ok: [1, 'two'] });
        assert.deepEqual(await p.b.receive(), { ok: [1, 'two'] });
      } finally {
        await p.dispose();
      }
    });

    it('the bytes codec rejects anything but bytes with ERR_SHMRING_ENCODE; the next value arrives intact', async function () {
      const p = pairEnds({ capacity: 4096, codec: 'bytes' });
      try {
        for (const v of ['text', 42, null, undefined, {}, [1, 2], new Set([1])]) {
          await rejectsWith(p.a.send(v), 'ERR_SHMRING_ENCODE');
          await rejectsWith(p.a.request(v), 'ERR_SHMRING_ENCODE');
        }
        await p.a.send(new Uint8Array([1, 2, 3]));
        assert.deepEqual(await p.b.receive(), Buffer.from([1, 2, 3]));
      } finally {
        await p.dispose();
      }
    });

    it('a custom codec whose encode throws or returns no Uint8Array rejects with ERR_SHMRING_ENCODE; nothing is written', async function () {
      const codec: CodecOption = {
        encode: (v) => {
          if (v === 'throw') throw new Error('cannot');
          if (v === 'string') return 'not bytes' as never;
          return Buffer.from(JSON.stringify(v));
        },
        decode: (bytes) => JSON.parse(Buffer.from(bytes).toString()) as unknown,
      };
      const p = pairEnds({ capacity: 4096, codec });
      try {
        await rejectsWith(p.a.send('throw'), 'ERR_SHMRING_ENCODE', 'cannot');
        await rejectsWith(p.a.send('string'), 'ERR_SHMRING_ENCODE');
        await p.a.send('fine');
        assert.equal(await p.b.receive(), 'fine');
      } finally {
        await p.dispose();
      }
    });

    it('a custom codec that reuses its output buffer: values queued behind a full ring, and split ones, arrive as they were sent', async function () {
      // One buffer for every encode: a record the channel kept by reference would change under it.
      const out = new Uint8Array(3000);
      const codec: CodecOption = {
        encode: (v) => {
          const n = v as number;
          out.fill(n & 0xff);
          return out.subarray(0, n);
        },
        // What arrived: its length, and whether every byte is the one its encode wrote (n & 0xff).
        decode: (bytes) => [bytes.length, bytes.every((b) => b === (bytes.length & 0xff))],
      };
      const p = pairEnds({ capacity: 1024, codec }); // records of at most 504 bytes: 2000 and 3000 are split
      try {
        const sizes = [400, 401, 402, 403, 2000, 404, 3000, 405];
        const sent = sizes.map((n) => p.a.send(n)); // the ring fills: the later ones wait in the queue
        const got: unknown[] = [];
        for (let i = 0; i < sizes.length; i++) got.push(await p.b.receive());
        await Promise.all(sent);
        assert.deepEqual(
          got,
          sizes.map((n) => [n, true]),
        );
      } finally {
        await p.dispose();
      }
    });

    it('json takes a live Proxy as JSON.stringify does; a revoked one, and any Proxy under the bytes codec or returned by a custom encode, is ERR_SHMRING_ENCODE', async function () {
      const revocable = Proxy.revocable({}, {});
      revocable.revoke();
      const json = pairEnds({ capacity: 4096, codec: 'json' });
      const bytes = pairEnds({ capacity: 4096, codec: 'bytes' });
      const custom = pairEnds({ capacity: 4096, codec: { encode: () => revocable.proxy as never, decode: (b) => b } });
      try {
        await json.a.send(new Proxy({ x: [1] }, {}));
        assert.deepEqual(await json.b.receive(), { x: [1] });
        await rejectsWith(json.a.send(revocable.proxy), 'ERR_SHMRING_ENCODE');
        for (const v of [revocable.proxy, new Proxy(new Uint8Array(2), {})]) await rejectsWith(bytes.a.send(v), 'ERR_SHMRING_ENCODE');
        await rejectsWith(custom.a.send(1), 'ERR_SHMRING_ENCODE');
        await bytes.a.send(new Uint8Array([7]));
        assert.deepEqual(await bytes.b.receive(), Buffer.from([7]));
      } finally {
        await Promise.all([json.dispose(), bytes.dispose(), custom.dispose()]);
      }
    });

    it('both ends of a channelPair name it alike, and apart from every other pair: worker channel <n> of process <pid>', async function () {
      const first = pairEnds({ capacity: 4096 });
      const second = pairEnds({ capacity: 4096 });
      try {
        first.a.close();
        const mine = (await rejectsWith(first.a.send(1), 'ERR_SHMRING_CLOSED')).message.split(':')[0]!;
        assert.match(mine, new RegExp(`^worker channel \\d+ of process ${process.pid}$`));
        const theirs = (await rejectsWith(first.b.receive(), 'ERR_SHMRING_CLOSED')).message;
        assert.ok(theirs.startsWith(`${mine}:`), `the other end calls it "${theirs}"`);
        second.a.close();
        const other = (await rejectsWith(second.a.send(1), 'ERR_SHMRING_CLOSED')).message.split(':')[0]!;
        assert.notEqual(other, mine);
      } finally {
        await Promise.all([first.dispose(), second.dispose()]);
      }
    });

    it('a custom codec whose decode throws: that receive rejects with ERR_SHMRING_DECODE, and the channel goes on', async function () {
      const codec: CodecOption = {
        encode: (v) => Buffer.from(JSON.stringify(v)),
        decode: (bytes) => {
          const v = JSON.parse(Buffer.from(bytes).toString()) as unknown;
          if (v === 'poison' || (v as { poison?: boolean })?.poison) throw new Error('poisoned');
          return v;
        },
      };
      const s = await socketEnds({ capacity: 4096, codec });
      try {
        const sends = [
          s.client.send('before'),
          s.client.send('poison'),
          s.client.send({ poison: true, pad: 'p'.repeat(5000) }), // split (larger than the ring), and undecodable
          s.client.send('after'),
        ];
        assert.equal(await s.serverSide.receive(), 'before');
        // The error is made inside the channel's pump: its message names the channel (a server has many).
        await rejectsWith(s.serverSide.receive(), 'ERR_SHMRING_DECODE', /^channel \d+ of .*poisoned/);
        await rejectsWith(s.serverSide.receive(), 'ERR_SHMRING_DECODE', 'poisoned');
        assert.equal(await s.serverSide.receive(), 'after');
        await Promise.all(sends);

        // A request the handler side cannot decode: the caller gets ERR_SHMRING_DECODE from the other side.
        s.serverSide.handle((v) => (v === 'reply poison' ? 'poison' : v));
        const remote = await rejectsWith(s.client.request('poison'), 'ERR_SHMRING_DECODE');
        assert.ok(remote instanceof RemoteError);
        // A reply this side cannot decode.
        await rejectsWith(s.client.request('reply poison'), 'ERR_SHMRING_DECODE', /^channel to .*poisoned/);
        assert.equal(await s.client.request('fine'), 'fine');
      } finally {
        await s.dispose();
      }
    });

    it("connect() with another codec than the server's fails with ERR_SHMRING_CODEC_MISMATCH; the server never announces that channel", async function () {
      const dir = new TmpDir();
      const server = await listen(dir.path(), { codec: 'json', capacity: 4096 });
      try {
        const announced: Channel[] = [];
        server.on('channel', (ch: Channel) => announced.push(ch));
        const err = await rejectsWith(connect(dir.path()), 'ERR_SHMRING_CODEC_MISMATCH');
        assert.match(err.message, /json/);
        assert.match(err.message, /structured-clone/);
        await sleep(200);
        assert.equal(announced.length, 0, 'a client that could not open its end must not become a channel');
        assert.equal(server.channels, 0);
        await rejectsWith(connect(dir.path(), { codec: 'bytes' }), 'ERR_SHMRING_CODEC_MISMATCH');
        // The right codec works.
        const client = await connect(dir.path(), { codec: 'json' });
        client.close();
        await client.closed;
      } finally {
        await server.close();
        dir.remove();
      }
    });

    it("openChannel() with another codec than channelPair's fails with ERR_SHMRING_CODEC_MISMATCH; the creator's end ends cleanly; the handle is spent (ERR_SHMRING_BUSY)", async function () {
      const custom = { encode: () => new Uint8Array(), decode: () => 1 };
      for (const codec of [undefined, custom]) {
        const [a, handle] = channelPair({ codec: 'json', capacity: 4096 });
        const pending = a.receive();
        throwsWith(() => openChannel(handle, codec === undefined ? undefined : { codec }), 'ERR_SHMRING_CODEC_MISMATCH');
        await rejectsWith(pending, 'ERR_SHMRING_CLOSED');
        assert.equal((await settledWithin(a.closed, 5000)).status, 'fulfilled');
        // Regression: a second try with the right codec returned a channel on the closed rings.
        const busy = throwsWith(() => openChannel(handle, { codec: 'json' }), 'ERR_SHMRING_BUSY');
        assert.match(busy.message, /ends the pair/);
      }
    });
  });

  describe('close and abort timing', function () {
    it("close() emits 'close' after it returns, also when nothing was pending (no pump running): a listener added right after close() sees it", async function () {
      const p = pairEnds({ capacity: 4096, poll: 100 }); // a poll window: no idle read, so nothing runs on a quiet channel
      try {
        p.a.close();
        const closed = await settledWithin(once(p.a, 'close'), 2000);
        assert.equal(closed.status, 'fulfilled', "'close' was emitted inside close(), before anyone could listen");
      } finally {
        await p.dispose();
      }
    });

    it('receive() with an aborted signal rejects with an AbortError even when a value is kept; that value goes to the next receive', async function () {
      const p = pairEnds({ capacity: 4096 });
      try {
        await p.b.send(1);
        await p.b.send(2);
        assert.equal(await p.a.receive(), 1); // the pump took both: 2 is kept
        const aborted = AbortSignal.abort();
        const err = await rejectsWith(p.a.receive({ signal: aborted }), 'ABORT_ERR');
        assert.equal(err.name, 'AbortError');
        await assert.rejects(p.a.messages({ signal: aborted }).next(), { name: 'AbortError' });
        assert.equal(await p.a.receive(), 2);
      } finally {
        await p.dispose();
      }
    });
  });

  describe('bad options and arguments', function () {
    it('a capacity that is not a power of two in [64, 2^30] is ERR_SHMRING_INVALID_ARGUMENT (listen, channelPair)', async function () {
      const dir = new TmpDir();
      try {
        for (const capacity of [1000, 4095, 32, 0, -4096, 2 ** 31, 4096.5, NaN, '4096']) {
          await failsWith(() => listen(dir.path(), { capacity: capacity as number }), 'ERR_SHMRING_INVALID_ARGUMENT');
          await failsWith(() => channelPair({ capacity: capacity as number }), 'ERR_SHMRING_INVALID_ARGUMENT');
        }
        assert.deepEqual(fs.readdirSync(dir.dir), [], 'a failed listen() left a socket file');
      } finally {
        dir.remove();
      }
    });

    it('a misspelt option (`timeout` for `timeoutMs`, `capacty`) is ERR_SHMRING_INVALID_ARGUMENT naming it, not ignored (a request would never time out)', async function () {
      const dir = new TmpDir();
      const [here, handle] = channelPair({ capacity: 4096 });
      const there = openChannel(handle);
      try {
        const named = async (make: () => unknown, key: string, near: string): Promise<void> => {
          const err = await failsWith(make, 'ERR_SHMRING_INVALID_ARGUMENT');
          assert.match(err.message, new RegExp(`unknown option "${key}" \\(did you mean "${near}"\\?\\)`));
        };
        await named(() => here.request(1, { timeout: 50 } as never), 'timeout', 'timeoutMs');
        await named(() => here.receive({ sigal: new AbortController().signal } as never), 'sigal', 'signal');
        await named(() => here.messages({ singal: new AbortController().signal } as never), 'singal', 'signal');
        await named(() => listen(dir.path(), { capacty: 4096 } as never), 'capacty', 'capacity');
        await named(() => connect(dir.path(), { timeout: 100 } as never), 'timeout', 'timeoutMs');
        await named(() => channelPair({ capasity: 64 } as never), 'capasity', 'capacity');
        await named(() => openChannel(handle, { pol: 10 } as never), 'pol', 'poll');
        // A name with no near neighbour is refused all the same; one set to undefined sets nothing and passes.
        await failsWith(() => here.request(1, { retries: 3 } as never), 'ERR_SHMRING_INVALID_ARGUMENT');
        there.handle((v) => v);
        assert.equal(await here.request(7, { timeoutMs: 5000, timeout: undefined } as never), 7);
        assert.deepEqual(fs.readdirSync(dir.dir), [], 'a refused listen() left a socket file');
      } finally {
        here.close();
        there.close();
        dir.remove();
      }
    });

    it('an unknown codec or an empty path is ERR_SHMRING_INVALID_ARGUMENT (listen, connect, channelPair)', async function () {
      const dir = new TmpDir();
      try {
        for (const codec of ['xml', 42, {}, { encode: () => new Uint8Array() }, null]) {
          await failsWith(() => listen(dir.path(), { codec: codec as never }), 'ERR_SHMRING_INVALID_ARGUMENT');
          await failsWith(() => connect(dir.path(), { codec: codec as never }), 'ERR_SHMRING_INVALID_ARGUMENT');
          await failsWith(() => channelPair({ codec: codec as never }), 'ERR_SHMRING_INVALID_ARGUMENT');
        }
        for (const path of ['', undefined, 42]) {
          await failsWith(() => listen(path as never), 'ERR_SHMRING_INVALID_ARGUMENT');
          await failsWith(() => connect(path as never), 'ERR_SHMRING_INVALID_ARGUMENT');
        }
      } finally {
        dir.remove();
      }
    });

    // Regression: Node truncates a longer path without a word, so listen() bound the truncated name (a
    // file nobody asked for) and close() then removed the full path, which was not there, leaving it.
    it('a socket path longer than a Unix socket address holds (107 bytes of UTF-8) is ERR_SHMRING_INVALID_ARGUMENT (listen, connect); nothing is bound', async function () {
      const dir = new TmpDir();
      try {
        /** A path in `dir` of `bytes` bytes, its name made of `char`s. */
        const pathOf = (bytes: number, char: string): string => {
          const room = bytes - Buffer.byteLength(`${dir.dir}/`);
          return dir.path(char.repeat(Math.floor(room / Buffer.byteLength(char))) + 'x'.repeat(room % Buffer.byteLength(char)));
        };
        const ascii = pathOf(108, 'a');
        // Fewer than 107 characters, but more than 107 bytes.
        const accented = pathOf(120, 'é');
        assert.ok(accented.length < 107 && Buffer.byteLength(accented) === 120);
        for (const [path, bytes] of [
          [ascii, 108],
          [accented, 120],
        ] as const) {
          for (const verb of [listen, connect]) {
            const err = await rejectsWith(verb(path), 'ERR_SHMRING_INVALID_ARGUMENT', `is ${bytes} bytes long`);
            assert.ok(err instanceof RangeError);
            assert.match(err.message, /more than the 107 /);
            assert.match(err.message, /shorter path/);
          }
        }
        assert.deepEqual(fs.readdirSync(dir.dir), [], 'a rejected listen() bound something');

        // 107 bytes is the longest path that works, and close() removes it.
        const longest = pathOf(107, 'b');
        const server = await listen(longest, { capacity: 4096 });
        server.on('channel', (ch: Channel) => ch.handle((v) => v));
        const client = await connect(longest);
        assert.equal(await client.request('fits'), 'fits');
        client.close();
        await client.closed;
        await server.close();
        assert.deepEqual(fs.readdirSync(dir.dir), []);

        // A Linux abstract name (a leading NUL, no file) may use all 108 bytes, not one more.
        const abstract = `\0shmring-test-${process.pid}-`;
        const err = await rejectsWith(listen(abstract.padEnd(109, 'c')), 'ERR_SHMRING_INVALID_ARGUMENT', 'is 109 bytes long');
        assert.match(err.message, /more than the 108 /);
        const named = await listen(abstract.padEnd(108, 'c'), { capacity: 4096 });
        await named.close();

        // A nats:// address is no socket path: no such limit (this one fails for its wildcard instead).
        await rejectsWith(listen(`nats://127.0.0.1:4222/${'s'.repeat(150)}.>`), 'ERR_SHMRING_INVALID_ENDPOINT');
      } finally {
        dir.remove();
      }
    });

    it('options one transport ignores are checked on both: capacity, poll and handoverTimeoutMs on nats://, heartbeatMs on a socket path', async function () {
      const dir = new TmpDir();
      try {
        // No NATS server is needed: a bad option is refused before anything connects.
        const nats = 'nats://127.0.0.1:1/orders';
        for (const [verb, options] of [
          ['listen', { capacity: 3 }],
          ['listen', { poll: -1 }],
          ['listen', { handoverTimeoutMs: Number.NaN }],
          ['connect', { poll: '5' }],
        ] as const) {
          const made = verb === 'listen' ? listen(nats, options as never) : connect(nats, options as never);
          await rejectsWith(made, 'ERR_SHMRING_INVALID_ARGUMENT');
        }
        for (const heartbeatMs of [0, 5, Number.NaN, '1000', 7_200_000]) {
          const err = await rejectsWith(listen(dir.path(), { heartbeatMs: heartbeatMs as number }), 'ERR_SHMRING_INVALID_ARGUMENT');
          assert.match(err.message, /heartbeatMs/);
          await rejectsWith(connect(dir.path(), { heartbeatMs: heartbeatMs as number }), 'ERR_SHMRING_INVALID_ARGUMENT');
        }
        assert.deepEqual(fs.readdirSync(dir.dir), [], 'a listen with a bad option bound its path');
      } finally {
        dir.remove();
      }
    });

    it('listen() with a handoverTimeoutMs negative, NaN or not a number is ERR_SHMRING_INVALID_ARGUMENT; nothing is bound', async function () {
      const dir = new TmpDir();
      try {
        for (const handoverTimeoutMs of [-1, NaN, '100', null]) {
          const err = await rejectsWith(
            listen(dir.path(), { handoverTimeoutMs: handoverTimeoutMs as number }),
            'ERR_SHMRING_INVALID_ARGUMENT',
          );
          assert.match(err.message, /handoverTimeoutMs/);
        }
        assert.deepEqual(fs.readdirSync(dir.dir), []);
      } finally {
        dir.remove();
      }
    });

    it('request(): timeoutMs negative, NaN or not a number, or a signal that is not an AbortSignal, is ERR_SHMRING_INVALID_ARGUMENT and sends nothing', async function () {
      const p = pairEnds({ capacity: 4096 });
      try {
        let calls = 0;
        p.b.handle((v) => {
          calls++;
          return v;
        });
        for (const timeoutMs of [-1, -0.5, NaN]) {
          const err = await rejectsWith(p.a.request(1, { timeoutMs: timeoutMs as number }), 'ERR_SHMRING_INVALID_ARGUMENT');
          assert.ok(err instanceof RangeError);
        }
        for (const timeoutMs of ['100', null]) {
          const err = await rejectsWith(p.a.request(1, { timeoutMs: timeoutMs as never }), 'ERR_SHMRING_INVALID_ARGUMENT');
          assert.ok(err instanceof TypeError);
        }
        for (const signal of ['abort', {}, { aborted: false, addEventListener() {} }, new AbortController()]) {
          const err = await rejectsWith(p.a.request(1, { signal: signal as never }), 'ERR_SHMRING_INVALID_ARGUMENT');
          assert.ok(err instanceof TypeError);
        }
        assert.equal(await p.a.request('real'), 'real');
        assert.equal(calls, 1, 'a request with bad options was sent');
      } finally {
        await p.dispose();
      }
    });

    it("an option of the wrong type (timeoutMs: '5', poll: '5', capacity: '64') is a TypeError that shows the string quoted; a number out of range a RangeError", async function () {
      const p = pairEnds({ capacity: 4096 });
      const dir = new TmpDir();
      try {
        const typeErrors: Array<[string, () => unknown]> = [
          ['timeoutMs', () => p.a.request(1, { timeoutMs: '5' as never })],
          ['timeoutMs', () => connect(dir.path(), { timeoutMs: '5' as never })],
          ['handoverTimeoutMs', () => listen(dir.path(), { handoverTimeoutMs: '5' as never })],
          ['poll', () => listen(dir.path(), { poll: '5' as never })],
          ['poll', () => channelPair({ poll: '5' as never })],
          ['capacity', () => channelPair({ capacity: '64' as never })],
          // Checked before any connection is tried (nothing listens on port 1).
          ['heartbeatMs', () => connect('nats://127.0.0.1:1/misuse', { heartbeatMs: '5' as never })],
          ['heartbeatMs', () => listen('nats://127.0.0.1:1/misuse', { heartbeatMs: '5' as never })],
        ];
        for (const [name, make] of typeErrors) {
          const err = await failsWith(make, 'ERR_SHMRING_INVALID_ARGUMENT');
          assert.ok(err instanceof TypeError, `${name}: ${err.name}, not a TypeError: ${err.message}`);
          assert.match(err.message, new RegExp(`${name}.*got "(5|64)"`), err.message);
        }
        for (const make of [
          () => p.a.request(1, { timeoutMs: -5 }),
          () => listen(dir.path(), { poll: -5 }),
          () => connect('nats://127.0.0.1:1/misuse', { heartbeatMs: -5 }),
        ]) {
          const err = await failsWith(make, 'ERR_SHMRING_INVALID_ARGUMENT');
          assert.ok(err instanceof RangeError, `${err.name}: ${err.message}`);
          assert.match(err.message, /got -5$/);
        }
        assert.deepEqual(fs.readdirSync(dir.dir), []);
      } finally {
        await p.dispose();
        dir.remove();
      }
    });

    it('receive() and messages() with a signal that is not an AbortSignal are ERR_SHMRING_INVALID_ARGUMENT', async function () {
      const p = pairEnds({ capacity: 4096 });
      try {
        for (const signal of ['abort', {}, new AbortController()]) {
          await failsWith(() => p.b.receive({ signal: signal as never }), 'ERR_SHMRING_INVALID_ARGUMENT');
          await failsWith(() => p.b.messages({ signal: signal as never }), 'ERR_SHMRING_INVALID_ARGUMENT');
        }
        await p.a.send('still fine');
        assert.equal(await p.b.receive(), 'still fine');
      } finally {
        await p.dispose();
      }
    });

    // Regression: connect() validates timeoutMs and signal up front, as
    // request() does. Unchecked, a negative timeoutMs gave up or connected
    // depending on timing, a string waited forever, and a non-AbortSignal was
    // ignored or surfaced as ABORT_ERR.
    it('connect() with timeoutMs negative or not a number, or a signal that is not an AbortSignal, is ERR_SHMRING_INVALID_ARGUMENT', async function () {
      const dir = new TmpDir();
      const server = await listen(dir.path(), { capacity: 4096 });
      server.on('channel', (ch: Channel) => ch.close());
      try {
        const bad: Array<Record<string, unknown>> = [{ timeoutMs: -1 }, { timeoutMs: 'soon' }, { signal: 'abort' }, { signal: {} }];
        const outcomes: string[] = [];
        for (const options of bad) {
          try {
            const ch = await connect(dir.path(), options as never);
            ch.close();
            outcomes.push(`${JSON.stringify(options)}: connected`);
          } catch (err) {
            if ((err as { code?: string }).code !== 'ERR_SHMRING_INVALID_ARGUMENT') {
              outcomes.push(`${JSON.stringify(options)}: ${(err as { code?: string }).code ?? String(err)}`);
            }
          }
        }
        assert.deepEqual(outcomes, [], 'connect() accepted bad options');
      } finally {
        await server.close();
        dir.remove();
      }
    });
  });

  describe('channelPair handles', function () {
    it('openChannel() with something that is not a channelPair handle throws ERR_SHMRING_NOT_A_CHANNEL', function () {
      const { port1, port2 } = new MessageChannel();
      try {
        const bogus: unknown[] = [
          null,
          undefined,
          42,
          {},
          { kind: 'shmring-channel' },
          { kind: 'shmring-channel', buffer: new ArrayBuffer(4096), port: port1 },
          { kind: 'other', buffer: new SharedArrayBuffer(4096), port: port1 },
          { kind: 'shmring-channel', buffer: new SharedArrayBuffer(4096), port: 'port' },
          // The right shape, but no channel in the buffer (too small, or zeros).
          { kind: 'shmring-channel', buffer: new SharedArrayBuffer(16), port: port1 },
          { kind: 'shmring-channel', buffer: new SharedArrayBuffer(1 << 16), port: port1 },
        ];
        for (const h of bogus) throwsWith(() => openChannel(h as ChannelHandle), 'ERR_SHMRING_NOT_A_CHANNEL');
      } finally {
        port1.close();
        port2.close();
      }
    });

    it('opening the same handle twice throws ERR_SHMRING_BUSY, and the first end keeps working', async function () {
      const [a, handle] = channelPair({ capacity: 4096 });
      const b = openChannel(handle);
      try {
        throwsWith(() => openChannel(handle), 'ERR_SHMRING_BUSY');
        await a.send('to the first opener');
        assert.equal(await b.receive(), 'to the first opener');
        b.handle((v) => v);
        assert.equal(await a.request('still'), 'still');
      } finally {
        a.close();
        b.close();
        await Promise.all([a.closed, b.closed]);
      }
    });
  });

  describe('a process without a native backend', function () {
    it('runs a channelPair (SharedArrayBuffer) from request to close without touching the backend: close() does not throw its error', function () {
      // SHMRING_BACKEND names no backend: loading one throws ERR_SHMRING_NO_BACKEND, so any use of it fails the child.
      const index = new URL('../src/index.js', import.meta.url).href;
      const script =
        `const { channelPair, openChannel } = await import(${JSON.stringify(index)});\n` +
        'const [a, handle] = channelPair({ capacity: 4096 });\n' +
        'const b = openChannel(handle);\n' +
        'b.handle((v) => v * 2);\n' +
        'const reply = await a.request(21);\n' +
        'a.close(); b.close();\n' +
        'await Promise.all([a.closed, b.closed]);\n' +
        'console.log(JSON.stringify({ reply }));\n';
      const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
        env: { ...process.env, SHMRING_BACKEND: 'no-such-backend' },
        encoding: 'utf8',
        timeout: 30_000,
      });
      assert.deepEqual(JSON.parse(out.trim()), { reply: 42 });
    });
  });

  describe('connect() to a path without a live server', function () {
    it('a missing path is ENOENT, with the path in the message', async function () {
      const dir = new TmpDir();
      try {
        const p = dir.path('nobody-here');
        const err = await rejectsWith(connect(p), 'ENOENT', p);
        assert.equal((err as { path?: string }).path, p);
      } finally {
        dir.remove();
      }
    });

    it('a socket file nobody listens on is ECONNREFUSED, with the path in the message', async function () {
      // A socket file whose server is gone without removing it: bound, then its path renamed away from the server.
      const dir = new TmpDir();
      const server = net.createServer();
      server.listen(dir.path('live'));
      await once(server, 'listening');
      fs.renameSync(dir.path('live'), dir.path('dead'));
      server.close();
      await once(server, 'close');
      try {
        assert.ok(fs.lstatSync(dir.path('dead')).isSocket());
        await rejectsWith(connect(dir.path('dead')), 'ECONNREFUSED', dir.path('dead'));
      } finally {
        dir.remove();
      }
    });
  });

  describe('connect() to a server that sends a region it can shrink', function () {
    it('refuses it with ERR_SHMRING_NOT_A_CHANNEL naming the path: a truncate would kill this process (SIGBUS)', async function () {
      const dir = new TmpDir();
      const p = dir.path('shrinker');
      const name = `shmring-shrinker-${process.pid}`;
      // A well-formed channel region, but in a POSIX object (no seals): its sender could ftruncate it to 0.
      const region = Region.create({ backing: 'posix', name, size: channelRegionSize(4096) });
      region.unlink();
      layOutChannel(region, resolveCodec(undefined), 4096);
      const server = net.createServer((peer) => void sendRegion(peer, region).catch(() => peer.destroy()));
      server.listen(p);
      await once(server, 'listening');
      try {
        const err = await rejectsWith(connect(p, { timeoutMs: 5000 }), 'ERR_SHMRING_NOT_A_CHANNEL', p);
        assert.match(err.message, /can still shrink/);
      } finally {
        server.close();
        region.close();
        dir.remove();
      }
    });
  });

  describe('connect() to a server that sends a region it cannot map writable', function () {
    it('refuses a write-sealed memfd (a snapshot) with ERR_SHMRING_NOT_A_CHANNEL naming the path, not a bare EPERM', async function () {
      const dir = new TmpDir();
      const p = dir.path('sealed');
      const region = Region.snapshot(new Uint8Array(channelRegionSize(4096)));
      const server = net.createServer((peer) => void sendRegion(peer, region).catch(() => peer.destroy()));
      server.listen(p);
      await once(server, 'listening');
      try {
        const err = await rejectsWith(connect(p, { timeoutMs: 5000 }), 'ERR_SHMRING_NOT_A_CHANNEL', p);
        assert.match(err.message, /cannot map for reading and writing/);
      } finally {
        server.close();
        region.close();
        dir.remove();
      }
    });
  });

  describe('fds', function () {
    it('50 connect/close cycles give back every fd (and so do failed connects)', async function () {
      const dir = new TmpDir();
      const p = dir.path();
      const server = await listen(p, { capacity: 4096 });
      const mismatched = await listen(dir.path('json'), { capacity: 4096, codec: 'json' });
      server.on('channel', (ch: Channel) => ch.handle((v) => v));
      try {
        const cycle = async (): Promise<void> => {
          const accepted = once(server, 'channel') as Promise<[Channel]>;
          const c = await connect(p);
          const [s] = await accepted;
          assert.equal(await c.request('x'), 'x');
          c.close();
          await Promise.all([c.closed, s.closed]);
        };
        // Warm up: the first channel may open fds that live as long as the process (the async wait machinery).
        await cycle();
        await rejectsWith(connect(dir.path('json')), 'ERR_SHMRING_CODEC_MISMATCH');
        await sleep(20);
        const start = fdCount();
        const startTargets = fdTargets();
        for (let i = 0; i < 50; i++) await cycle();
        for (let i = 0; i < 10; i++) {
          await rejectsWith(connect(dir.path('json')), 'ERR_SHMRING_CODEC_MISMATCH');
          await rejectsWith(connect(dir.path('missing')), 'ENOENT');
        }
        await waitUntil(() => server.channels === 0 && mismatched.channels === 0, "the servers' channels to close");
        // Socket handles close in a later turn of the event loop.
        let now = fdCount();
        for (let i = 0; i < 50 && now > start; i++) {
          await sleep(10);
          now = fdCount();
        }
        assert.equal(
          now,
          start,
          `fds went from ${start} to ${now}:\nbefore: ${startTargets.join(', ')}\nafter:  ${fdTargets().join(', ')}`,
        );
      } finally {
        await server.close();
        await mismatched.close();
        dir.remove();
      }
    });
  });
});
