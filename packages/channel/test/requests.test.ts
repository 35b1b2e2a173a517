/**
 * Requests and replies: each reply reaches its own caller whatever order the
 * handler answers in; what a handler throws reaches the caller as a
 * RemoteError with the remote message and code, whatever it is (even what
 * String() cannot convert); a caller that stops waiting (timeoutMs,
 * AbortSignal) rejects at once, its handler's signal aborts and a late reply
 * is dropped, and a timeoutMs of Infinity (or past what setTimeout takes)
 * waits; a request sent before the other side has a
 * handler is answered once it registers one; and a request whose channel
 * ends, from either side, rejects instead of hanging.
 *
 * Most tests run over both transports (a connect/listen channel and a
 * channelPair opened in this thread); the late-reply test needs a handler
 * that blocks its own thread, so its other end is a worker.
 */
import { strict as assert } from 'node:assert';
import { channelPair, type CodecName, type CodecOption, RemoteError } from '../src/index.js';
import {
  endsPerTest,
  pairEnds,
  transports,
  transportTitle,
  rejectsWith,
  settledWithin,
  sleep,
  startWorker,
  terminateAllWorkers,
  waitUntil,
  workerEvent,
} from './helpers.js';

function deferred<T = unknown>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** What `promise` settles with, or an error (without a code) if it has not settled within 2 s. */
async function settlesSoon(promise: Promise<unknown>): Promise<unknown> {
  const outcome = await settledWithin(promise, 2000);
  if (outcome.status === 'pending') throw new Error('no answer within 2 s (did the handler side crash?)');
  if (outcome.status === 'rejected') throw outcome.reason;
  return outcome.value;
}

describe('requests', function () {
  this.timeout(30_000);

  afterEach(async function () {
    await terminateAllWorkers();
  });

  for (const transport of transports()) {
    describe(`over a ${transportTitle(transport)}`, function () {
      const ends = endsPerTest(transport, { capacity: 4096 });

      it('each reply reaches its own caller when the handler resolves later requests first', async function () {
        const { a, b } = ends;
        const N = 8;
        const held = new Map<number, { resolve: (v: unknown) => void }>();
        b.handle((value) => {
          const d = deferred();
          held.set(value as number, d);
          return d.promise;
        });
        const order: number[] = [];
        const replies = Array.from({ length: N }, (_, i) =>
          a.request(i).then((r) => {
            order.push(i);
            return r;
          }),
        );
        await waitUntil(() => held.size === N, 'the handler to hold every request');
        // Answer the last request first, then the rest backwards, one turn apart.
        for (let i = N - 1; i >= 0; i--) {
          held.get(i)!.resolve({ answer: i * 10 });
          await sleep(1);
        }
        assert.deepEqual(
          await Promise.all(replies),
          Array.from({ length: N }, (_, i) => ({ answer: i * 10 })),
        );
        assert.deepEqual(
          order,
          Array.from({ length: N }, (_, i) => N - 1 - i),
          'the replies settled in the order they were answered',
        );
      });

      it('requests from both sides at once are answered independently (each side numbers its own)', async function () {
        const { a, b } = ends;
        a.handle((value) => ['a', value]);
        b.handle(async (value) => {
          await sleep((value as number) % 3);
          return ['b', value];
        });
        const fromA = Array.from({ length: 20 }, (_, i) => a.request(i));
        const fromB = Array.from({ length: 20 }, (_, i) => b.request(i));
        assert.deepEqual(
          await Promise.all(fromA),
          Array.from({ length: 20 }, (_, i) => ['b', i]),
        );
        assert.deepEqual(
          await Promise.all(fromB),
          Array.from({ length: 20 }, (_, i) => ['a', i]),
        );
      });

      it('a handler that throws: the caller gets a RemoteError with the remote message, code and name', async function () {
        const { a, b } = ends;
        b.handle((value) => {
          switch (value) {
            case 'sync-coded':
              throw Object.assign(new Error('sync failure'), { code: 'EBOOM' });
            case 'async-coded':
              return Promise.reject(Object.assign(new RangeError('async failure'), { code: 'E_ASYNC' }));
            case 'uncoded':
              throw new TypeError('no code here');
            case 'numeric-code':
              throw Object.assign(new Error('numbered'), { code: 42 });
            case 'string':
              throw 'a bare string'; // eslint-disable-line no-throw-literal
            default:
              return 'fine';
          }
        });
        const coded = await rejectsWith(a.request('sync-coded'), 'EBOOM', 'sync failure');
        assert.ok(coded instanceof RemoteError);
        assert.equal(coded.name, 'RemoteError');
        assert.equal((coded as RemoteError).remoteName, 'Error');

        const asyncCoded = await rejectsWith(a.request('async-coded'), 'E_ASYNC', 'async failure');
        assert.equal((asyncCoded as RemoteError).remoteName, 'RangeError');

        const uncoded = await rejectsWith(a.request('uncoded'), 'ERR_SHMRING_REMOTE', 'no code here');
        assert.ok(uncoded instanceof RemoteError);
        assert.equal((uncoded as RemoteError).remoteName, 'TypeError');

        await rejectsWith(a.request('numeric-code'), '42', 'numbered');
        await rejectsWith(a.request('string'), 'ERR_SHMRING_REMOTE', 'a bare string');
        // The channel goes on.
        assert.equal(await a.request('other'), 'fine');
      });

      // Regression: an error was written as one record; past the largest record (half the ring, or the
      // NATS server's max_payload) its write failed unseen and the caller waited for ever.
      it('a handler that throws an error larger than one record (a 2 MiB message, a 64 KiB name): the caller gets all of it', async function () {
        const { a, b } = ends;
        const message = 'm'.repeat(2 << 20);
        const name = `N${'n'.repeat(64 << 10)}`;
        b.handle((value) => {
          if (value === 'long message') throw Object.assign(new Error(message), { code: 'E_LONG' });
          if (value === 'long name') throw Object.assign(new Error('short'), { name });
          return 'fine';
        });
        const long = await settledWithin(a.request('long message'), 10_000);
        assert.equal(long.status, 'rejected', 'no answer within 10 s');
        const error = (long as { reason: RemoteError }).reason;
        assert.ok(error instanceof RemoteError);
        assert.equal(error.code, 'E_LONG');
        assert.equal(error.message.length, message.length);
        assert.ok(error.message === message, 'the message came through changed');
        const named = await settledWithin(a.request('long name'), 10_000);
        assert.equal(named.status, 'rejected', 'no answer within 10 s');
        assert.equal((named as { reason: RemoteError }).reason.remoteName, name);
        assert.equal(await a.request('other'), 'fine');
      });

      // Regression: describing these threw inside the channel (String() of an object without a
      // prototype, a getter that throws): the handler's side crashed and the caller waited for ever.
      it('a handler that throws what cannot be described (no prototype, throwing getters, a revoked Proxy) or returns a broken thenable: the caller gets a RemoteError, and the channel goes on', async function () {
        const { a, b } = ends;
        b.handle((value) => {
          switch (value) {
            case 'null-prototype':
              throw Object.create(null);
            case 'null-prototype, async':
              return Promise.reject(Object.create(null));
            case 'throwing getters':
              throw {
                get name(): string {
                  throw new Error('name getter');
                },
                get message(): string {
                  throw new Error('message getter');
                },
                get code(): string {
                  throw new Error('code getter');
                },
              };
            case 'revoked proxy': {
              const { proxy, revoke } = Proxy.revocable({}, {});
              revoke();
              throw proxy;
            }
            case 'throwing then getter':
              return {
                get then(): never {
                  throw Object.assign(new Error('then getter'), { code: 'E_THEN_GETTER' });
                },
              };
            case 'then that throws':
              return {
                then(): never {
                  throw new RangeError('then threw');
                },
              };
            default:
              return 'fine';
          }
        });
        // The getters are skipped; String() of the object is all there is to say.
        const getters = await rejectsWith(settlesSoon(a.request('throwing getters')), 'ERR_SHMRING_REMOTE', '[object Object]');
        assert.ok(getters instanceof RemoteError);
        assert.equal((getters as RemoteError).remoteName, 'Error');
        // Not even String() works on these.
        for (const thrown of ['null-prototype', 'null-prototype, async', 'revoked proxy']) {
          const err = await rejectsWith(settlesSoon(a.request(thrown)), 'ERR_SHMRING_REMOTE', 'cannot be described');
          assert.ok(err instanceof RemoteError, thrown);
          assert.equal((err as RemoteError).remoteName, 'Error');
        }
        assert.ok(
          (await rejectsWith(settlesSoon(a.request('throwing then getter')), 'E_THEN_GETTER', 'then getter')) instanceof RemoteError,
        );
        const then = await rejectsWith(settlesSoon(a.request('then that throws')), 'ERR_SHMRING_REMOTE', 'then threw');
        assert.equal((then as RemoteError).remoteName, 'RangeError');
        assert.equal(await a.request('other'), 'fine');
      });

      it('a reply the codec cannot encode reaches the caller as a RemoteError with ERR_SHMRING_ENCODE, and the channel goes on', async function () {
        const { a, b } = ends;
        b.handle((value) => (value === 'bad' ? { f: () => 1 } : value));
        await rejectsWith(a.request('bad'), 'ERR_SHMRING_ENCODE');
        assert.equal(await a.request('good'), 'good');
      });

      it("timeoutMs: the request rejects with ERR_SHMRING_TIMEOUT, the handler's signal aborts, and the next request gets its own reply", async function () {
        const { a, b } = ends;
        let first = true;
        const handlerSignal = deferred<AbortSignal>();
        b.handle((value, { signal }) => {
          if (first) {
            first = false;
            handlerSignal.resolve(signal);
            return new Promise((resolve) => signal.addEventListener('abort', () => setTimeout(() => resolve('too late'), 20)));
          }
          return { own: value };
        });
        const started = performance.now();
        await rejectsWith(a.request('slow', { timeoutMs: 50 }), 'ERR_SHMRING_TIMEOUT', 'timeoutMs=50');
        const elapsed = performance.now() - started;
        assert.ok(elapsed >= 45, `rejected after ${elapsed.toFixed(1)} ms, before timeoutMs=50`);
        assert.ok(elapsed < 2000, `rejected after ${elapsed.toFixed(1)} ms`);
        const signal = await handlerSignal.promise;
        await waitUntil(() => signal.aborted, "the handler's signal to abort");
        await sleep(40); // the handler resolves 'too late' meanwhile: nothing may come of it
        assert.deepEqual(await a.request('next'), { own: 'next' });
        assert.equal((await settledWithin(a.receive(), 30)).status, 'pending', 'the late answer must not turn up as a value');
      });

      it('timeoutMs: 0 rejects with ERR_SHMRING_TIMEOUT instead of waiting for a reply that never comes', async function () {
        const { a, b } = ends;
        b.handle(() => new Promise(() => {}));
        const pending = a.request('x', { timeoutMs: 0 });
        await rejectsWith(pending, 'ERR_SHMRING_TIMEOUT');
      });

      // Regression: setTimeout takes at most 2^31 − 1 ms and fires after 1 ms when given more, so these
      // rejected with ERR_SHMRING_TIMEOUT at once (and Node warned).
      it('timeoutMs: Infinity, or more than setTimeout takes (2^31 − 1 ms), waits for the reply', async function () {
        const { a, b } = ends;
        const warnings: Error[] = [];
        const onWarning = (warning: Error): void => void warnings.push(warning);
        process.on('warning', onWarning);
        try {
          const answer = deferred<void>();
          b.handle(async (value) => {
            await answer.promise;
            return value;
          });
          const long = [Infinity, 2 ** 31, 1e10];
          const replies = long.map((timeoutMs) => a.request(timeoutMs, { timeoutMs }));
          const early = await settledWithin(Promise.race(replies), 50);
          assert.equal(early.status, 'pending', `a request settled at once: ${JSON.stringify(early)}`);
          answer.resolve();
          assert.deepEqual(await Promise.all(replies), long);
          assert.deepEqual(
            warnings.map((w) => `${w.name}: ${w.message}`),
            [],
          );
        } finally {
          process.off('warning', onWarning);
        }
      });

      it("an AbortSignal aborts the caller (AbortError) and reaches the handler's signal", async function () {
        const { a, b } = ends;
        const seen = deferred<{ aborted: boolean; reason: unknown }>();
        const started = deferred<void>();
        b.handle((_value, { signal }) => {
          started.resolve();
          return new Promise((resolve) => {
            signal.addEventListener('abort', () => {
              seen.resolve({ aborted: signal.aborted, reason: signal.reason });
              resolve('after abort');
            });
          });
        });
        const controller = new AbortController();
        const pending = a.request('work', { signal: controller.signal });
        await started.promise;
        controller.abort(new Error('caller gave up'));
        const err = await rejectsWith(pending, 'ABORT_ERR');
        assert.equal(err.name, 'AbortError');
        const observed = await Promise.race([seen.promise, sleep(5000).then(() => undefined)]);
        assert.ok(observed !== undefined, "the handler's signal never aborted");
        assert.equal(observed.aborted, true);
        // The late answer went nowhere.
        assert.equal((await settledWithin(a.receive(), 30)).status, 'pending');
      });

      it('a request with an already-aborted signal rejects at once and is never sent', async function () {
        const { a, b } = ends;
        let calls = 0;
        b.handle((v) => {
          calls++;
          return v;
        });
        await rejectsWith(a.request('never', { signal: AbortSignal.abort() }), 'ABORT_ERR');
        assert.equal(await a.request('after'), 'after');
        assert.equal(calls, 1, 'the aborted request reached the handler');
      });

      it('a request sent before the other side has a handler is answered once it registers one (in order)', async function () {
        const { a, b } = ends;
        const replies = [a.request('early 1'), a.request('early 2')];
        await sleep(50);
        assert.equal((await settledWithin(replies[0]!, 1)).status, 'pending');
        const order: unknown[] = [];
        b.handle((value) => {
          order.push(value);
          return `answer to ${String(value)}`;
        });
        assert.deepEqual(await Promise.all(replies), ['answer to early 1', 'answer to early 2']);
        assert.deepEqual(order, ['early 1', 'early 2']);
        assert.equal(await a.request('later'), 'answer to later');
      });

      // Regression: a CANCEL behind requests kept for a handler was read only after handle() had handed
      // them out, so the handler ran, with a live signal, for requests whose callers had given up.
      it('a request whose caller gave up (timeoutMs, abort) before the other side had a handler is never handed to it', async function () {
        const { a, b } = ends;
        const timedOut = a.request('timed out', { timeoutMs: 50 });
        const controller = new AbortController();
        const aborted = a.request('aborted', { signal: controller.signal });
        const kept = a.request('kept');
        await rejectsWith(timedOut, 'ERR_SHMRING_TIMEOUT');
        controller.abort();
        await assert.rejects(aborted, { name: 'AbortError' });
        await sleep(100); // the CANCELs reach the other side
        const seen: unknown[] = [];
        b.handle((value) => {
          seen.push(value);
          return `answer to ${String(value)}`;
        });
        assert.equal(await kept, 'answer to kept');
        assert.equal(await a.request('later'), 'answer to later');
        assert.deepEqual(seen, ['kept', 'later']);
      });

      it('requests whose callers gave up while a value waited to be received are never handed to the handler registered after', async function () {
        const { a, b } = ends;
        await a.send('a value first'); // what an idle read of b takes; nothing more is taken while it waits
        const given = Array.from({ length: 40 }, (_, i) => a.request(`gave up ${i}`, { timeoutMs: 50 }));
        for (const request of given) await rejectsWith(request, 'ERR_SHMRING_TIMEOUT');
        await sleep(transport === 'nats' ? 500 : 100); // the CANCELs reach the other side (through nats-server: later)
        const seen: unknown[] = [];
        b.handle((value) => {
          seen.push(value);
          return `answer to ${String(value)}`;
        });
        assert.equal(await a.request('later'), 'answer to later');
        assert.deepEqual(seen, ['later'], 'requests given up on were handed to the handler (in batches, before their CANCELs)');
        assert.equal(await b.receive(), 'a value first');
      });

      // Regression: with a receive (or a request) pending on the handler-less side, its pump took every
      // record, and kept every request in memory (40,000 of 4 KB: 6 -> 170 MB of heap) with no
      // back-pressure to the sender.
      // Over nats:// there is no back-pressure between the ends (README): records wait in the receiver's
      // memory, not in a ring, so this runs over the rings only.
      if (transport !== 'nats') {
        it('requests that come before a handler is registered are kept up to a bound, then wait in the ring: the sender feels back-pressure while the other side waits for a value and a reply; once a handler comes, all are answered', async function () {
          const { a, b } = ends;
          const N = 3000; // well past the 1024 kept and what a 4 KiB ring holds
          const received = b.receive();
          const asked = b.request('b asks');
          const payload = 'x'.repeat(100);
          const replies: Array<Promise<unknown>> = [];
          for (let i = 0; i < N; i++) replies.push(a.request(`${i} ${payload}`));
          const marker = a.send('marker');
          await sleep(300);
          assert.equal((await settledWithin(marker, 1)).status, 'pending', "the sender's send did not wait: the requests were all taken");
          assert.equal((await settledWithin(received, 1)).status, 'pending', 'the value behind the requests was taken past the bound');
          // The handler of the first request starts a receive, which would start the (stopped) pump, and hand
          // out what it takes from the ring before the kept requests after the first: the order is checked.
          const order: unknown[] = [];
          let second: Promise<unknown> | undefined;
          b.handle((value) => {
            order.push(value);
            second ??= b.receive();
            return value;
          });
          const answers = await settledWithin(Promise.all(replies), 20_000);
          assert.equal(answers.status, 'fulfilled');
          assert.deepEqual(
            (answers as { value: unknown[] }).value,
            replies.map((_, i) => `${i} ${payload}`),
          );
          assert.deepEqual(
            order,
            replies.map((_, i) => `${i} ${payload}`),
            'the handler was not called in arrival order',
          );
          await marker;
          assert.equal(await received, 'marker');
          void a.send('second');
          assert.equal(await second, 'second');
          a.handle((value) => value);
          assert.equal(await asked, 'b asks');
        });
      }

      it('a request whose handler side closes without a handler rejects with ERR_SHMRING_CLOSED', async function () {
        const { a, b } = ends;
        const pending = a.request('anyone?');
        await sleep(30);
        b.close();
        await rejectsWith(pending, 'ERR_SHMRING_CLOSED');
        await a.closed;
      });

      it("a request pending when its handler side closes mid-handling rejects with ERR_SHMRING_CLOSED, and the handler's signal aborts", async function () {
        const { a, b } = ends;
        const handlerSignal = deferred<AbortSignal>();
        b.handle((_v, { signal }) => {
          handlerSignal.resolve(signal);
          return new Promise(() => {});
        });
        const pending = a.request('x');
        const signal = await handlerSignal.promise;
        b.close();
        await rejectsWith(pending, 'ERR_SHMRING_CLOSED');
        assert.equal(signal.aborted, true, 'closing the channel aborts the signals of the requests it was handling');
      });

      it('closing this side with a request pending rejects it with ERR_SHMRING_CLOSED', async function () {
        const { a, b } = ends;
        b.handle(() => new Promise(() => {}));
        const pending = a.request('x');
        await sleep(10);
        a.close();
        await rejectsWith(pending, 'ERR_SHMRING_CLOSED', 'closed before the reply');
      });
    });

    describe(`over a ${transportTitle(transport)}, a codec that calls back`, function () {
      /** Called (once) by the next decode on either end, before it decodes. */
      let onDecode: (() => void) | undefined;
      const codec: CodecOption = {
        encode: (value) => Buffer.from(JSON.stringify(value)),
        decode: (bytes) => {
          const hook = onDecode;
          onDecode = undefined;
          hook?.();
          return JSON.parse(Buffer.from(bytes).toString()) as unknown;
        },
      };
      const ends = endsPerTest(transport, { capacity: 4096, codec });

      // handle() takes what the other side published at once; from inside the end's own drain that take is
      // refused (ERR_SHMRING_BUSY) and left to the drain, so the requests behind this one are not handled first.
      it("a handler registered from inside the codec's decode of a request (the end's drain re-entered) is handed every request in arrival order", async function () {
        const { a, b } = ends;
        const order: unknown[] = [];
        const received = b.receive(); // so b's pump takes what comes, in batches
        const kept = [0, 1, 2, 3, 4].map((v) => a.request(v)); // taken, and kept until a handler comes
        await sleep(50);
        onDecode = () =>
          b.handle((value) => {
            order.push(value);
            return value;
          });
        const later = [5, 6, 7, 8, 9].map((v) => a.request(v)); // published at once: 6 to 9 behind the one decoded
        const values = Array.from({ length: 10 }, (_, i) => i);
        assert.deepEqual(await Promise.all([...kept, ...later]), values);
        assert.equal(onDecode, undefined, 'the decode hook ran');
        assert.deepEqual(order, values);
        await a.send('the value b waits for');
        assert.equal(await received, 'the value b waits for');
      });
    });
  }

  // An outside tester's strict TypeScript program: handle((text: string) => …) did not compile (the handler
  // had to take unknown), nor `const r: string = await request(…)`, and channel.codec was a plain string.
  // This test is first of all its types: the suite does not compile if they regress.
  it('types: a handler names what it takes, request, receive and messages what they expect, codec one of four names', async function () {
    const ends = pairEnds({ capacity: 4096 });
    try {
      ends.b.handle((text: string) => text.toUpperCase());
      const reply: string = await ends.a.request<string>('hello');
      assert.equal(reply, 'HELLO');
      await ends.b.send({ sku: 'A-1', qty: 2 });
      const order: { sku: string; qty: number } = await ends.a.receive<{ sku: string; qty: number }>();
      assert.deepEqual(order, { sku: 'A-1', qty: 2 });
      await ends.b.send(7);
      for await (const n of ends.a.messages<number>()) {
        const doubled: number = n * 2;
        assert.equal(doubled, 14);
        break;
      }
      const codec: CodecName = ends.a.codec;
      assert.equal(codec, 'structured-clone');
    } finally {
      await ends.dispose();
    }
  });

  it("the only reply due goes out at once, not at the end of its handler's turn", async function () {
    // The worker's handler answers synchronously, then a microtask of the same turn blocks its thread
    // for 1 s: a reply held until the turn's microtasks end would come only after that.
    const [ch, handle] = channelPair({ capacity: 4096 });
    try {
      const worker = startWorker(handle, { role: 'busy-after-reply', busyMs: 1000 });
      await workerEvent(worker, 'ready');
      const started = performance.now();
      assert.equal(await ch.request('lone'), 'lone');
      const ms = performance.now() - started;
      assert.ok(ms < 500, `the reply came ${ms.toFixed(0)} ms after the request, after the handler side's turn`);
    } finally {
      ch.close();
      await ch.closed;
    }
  });

  it('a reply that comes after its caller timed out is dropped; the next request gets its own reply', async function () {
    // The worker's handler blocks its thread for 300 ms, so its reply is
    // written before it can read the CANCEL of the caller that gave up at 50 ms.
    const [ch, handle] = channelPair({ capacity: 4096 });
    try {
      const worker = startWorker(handle, { role: 'busy-echo', busyMs: 300 });
      await workerEvent(worker, 'ready');
      await rejectsWith(ch.request('first', { timeoutMs: 50 }), 'ERR_SHMRING_TIMEOUT');
      // 'first' comes back meanwhile, for an id nobody waits on.
      assert.equal(await ch.request('second'), 'second');
      assert.equal(await ch.request('third'), 'third');
      assert.equal((await settledWithin(ch.receive(), 50)).status, 'pending', 'the late reply turned up as a value');
    } finally {
      ch.close();
      await ch.closed;
    }
  });
});
