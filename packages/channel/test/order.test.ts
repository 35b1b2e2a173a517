/**
 * Order: what one side sends, and the requests it makes, arrive in the
 * order they were called, with nothing lost, duplicated or changed, also
 * while both sides do both at once, while values wait for room in a full
 * ring, and under load between two real processes (a connect/listen
 * channel, 100k messages each way) and between two threads (a channelPair
 * with a worker). The load runs use fixtures/traffic.ts: every value is
 * determined by its side and sequence number, every RAW_EVERY-th is a
 * Buffer, every SPLIT_EVERY-th is split, and every REQUEST_EVERY-th is a
 * request whose reply names it.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { channelPair, listen, type Channel } from '../src/index.js';
import { runStream, STRESS_CAPACITY, type StreamReport } from './fixtures/traffic.js';
import {
  endsPerTest,
  transports,
  transportTitle,
  killAllPeers,
  randomBytes,
  startPeer,
  startWorker,
  terminateAllWorkers,
  TmpDir,
  workerEvent,
} from './helpers.js';

const PROCESS_MESSAGES = 100_000;
const WORKER_MESSAGES = 100_000;
const REQUEST_EVERY = 50;

function checkReport(report: StreamReport, count: number, who: string): void {
  const values = count - Math.floor(count / REQUEST_EVERY);
  assert.deepEqual(report.wrong, [], `${who}: values out of order, lost, duplicated or changed ([expected seq, got seq])`);
  assert.equal(report.received, values, `${who}: values received`);
  assert.equal(report.served, Math.floor(count / REQUEST_EVERY), `${who}: requests served`);
  assert.equal(report.servedOutOfOrder, 0, `${who}: requests served out of order or changed`);
  assert.equal(report.replies, Math.floor(count / REQUEST_EVERY), `${who}: replies`);
  assert.equal(report.badReplies, 0, `${who}: replies that answered another request`);
}

describe('order', function () {
  this.timeout(60_000);

  afterEach(async function () {
    await killAllPeers();
    await terminateAllWorkers();
  });

  for (const transport of transports()) {
    describe(`over a ${transportTitle(transport)}`, function () {
      const ends = endsPerTest(transport, { capacity: 4096 });

      // Regression: values that wait for room in the writer queue keep their
      // own bytes (see 'values queued while the ring is full ...' below).
      it('sends and requests interleaved from both sides at once arrive in call order, each kind complete', async function () {
        const { a, b } = ends;
        const N = 600;
        // Every 10th value is larger than the ring's largest record (split); every 3rd call is a request.
        const value = (side: string, i: number): unknown => ({ side, i, pad: i % 10 === 9 ? 'p'.repeat(3000 + i) : '' });
        const run = async (me: Channel, other: Channel, side: string, otherSide: string) => {
          const requests: number[] = [];
          me.handle((v) => {
            const m = v as { side: string; i: number };
            assert.equal(m.side, otherSide);
            requests.push(m.i);
            return { re: m.i };
          });
          const calls: Array<Promise<unknown>> = [];
          for (let i = 0; i < N; i++) {
            const call = i % 3 === 0 ? me.request(value(side, i)).then((r) => assert.deepEqual(r, { re: i })) : me.send(value(side, i));
            call.catch(() => {}); // reported by the Promise.all below
            calls.push(call);
            if (i % 7 === 0) await call.catch(() => {}); // sometimes the queue is empty, sometimes not
          }
          const values: number[] = [];
          for (let i = 0; i < N; i++) {
            if (i % 3 === 0) continue;
            const got = (await me.receive()) as { side: string; i: number; pad: string };
            assert.equal(got.side, otherSide);
            assert.deepEqual(got, value(otherSide, got.i));
            values.push(got.i);
          }
          await Promise.all(calls);
          return { values, requests, other };
        };
        const [ra, rb] = await Promise.all([run(a, b, 'a', 'b'), run(b, a, 'b', 'a')]);
        const expectedValues = Array.from({ length: N }, (_, i) => i).filter((i) => i % 3 !== 0);
        const expectedRequests = Array.from({ length: N }, (_, i) => i).filter((i) => i % 3 === 0);
        assert.deepEqual(ra.values, expectedValues, 'values b sent, as a received them');
        assert.deepEqual(rb.values, expectedValues, 'values a sent, as b received them');
        assert.deepEqual(ra.requests, expectedRequests, 'requests b made, as a handled them');
        assert.deepEqual(rb.requests, expectedRequests, 'requests a made, as b handled them');
      });

      it('a receive() that was aborted leaves its value for the next receive()', async function () {
        const { a, b } = ends;
        const controller = new AbortController();
        const aborted = b.receive({ signal: controller.signal });
        controller.abort();
        await assert.rejects(aborted, { code: 'ABORT_ERR' });
        await a.send('first');
        await a.send('second');
        assert.equal(await b.receive(), 'first');
        assert.equal(await b.receive(), 'second');
      });

      // Regression: a structured value on clone.ts's fast path is encoded
      // into a scratch buffer that the next encode overwrites. A record that
      // must wait in the queue (ring full), whole or split, has to keep a
      // copy of those bytes, not a view (Buffer#slice is a view), or every
      // queued value arrives as the last one encoded.
      it('values queued while the ring is full arrive as they were sent, not as the last one encoded', async function () {
        const { a, b } = ends;
        // Fill the ring so that what follows waits in the writer's queue.
        const filler = randomBytes(1, 2000);
        const sends: Array<Promise<void>> = [a.send(filler), a.send(filler), a.send(filler)];
        for (let i = 0; i < 10; i++) sends.push(a.send({ queued: i }));
        const got: unknown[] = [];
        for (let i = 0; i < 13; i++) got.push(await b.receive());
        await Promise.all(sends);
        assert.deepEqual(
          got.slice(3),
          Array.from({ length: 10 }, (_, i) => ({ queued: i })),
        );
      });
    });
  }

  // Regression: values that wait for room in the writer queue keep their own
  // bytes (see 'values queued while the ring is full ...' above).
  it(`${PROCESS_MESSAGES} messages each way between two processes arrive in order, none lost, duplicated or changed`, async function () {
    const dir = new TmpDir();
    const server = await listen(dir.path(), { capacity: STRESS_CAPACITY });
    try {
      const accepted = once(server, 'channel') as Promise<[Channel]>;
      const peer = startPeer({ role: 'stress-client', path: dir.path(), count: PROCESS_MESSAGES, requestEvery: REQUEST_EVERY });
      const [ch] = await accepted;
      const closeArg = new Promise<Error | undefined>((r) => ch.once('close', r));
      const mine = await runStream(ch, 'server', 'client', PROCESS_MESSAGES, REQUEST_EVERY).catch(async (err: Error) => {
        await peer.exited;
        throw new Error(`${err.message}\nthe child reported: ${JSON.stringify(peer.events)}\n${peer.stderr}`, { cause: err });
      });
      const theirs = (await peer.next('done')) as unknown as StreamReport;
      checkReport(mine, PROCESS_MESSAGES, 'server (this process)');
      checkReport(theirs, PROCESS_MESSAGES, 'client (the child process)');
      ch.close();
      assert.equal(await closeArg, undefined);
      assert.equal((await peer.next('closed')).code, null, 'the child saw a clean close');
      const exit = await peer.exited;
      assert.equal(exit.code, 0);
      console.log(`      (${PROCESS_MESSAGES} each way: ${mine.ms} ms here, ${theirs.ms} ms in the child)`);
    } finally {
      await server.close();
      dir.remove();
    }
  });

  // Regression: values that wait for room in the writer queue keep their own
  // bytes (see 'values queued while the ring is full ...' above).
  it(`${WORKER_MESSAGES} messages each way between this thread and a worker arrive in order, none lost, duplicated or changed`, async function () {
    const [ch, handle] = channelPair({ capacity: STRESS_CAPACITY });
    const worker = startWorker(handle, { role: 'stress', count: WORKER_MESSAGES, requestEvery: REQUEST_EVERY });
    await workerEvent(worker, 'ready');
    const theirsP = workerEvent(worker, 'done', 50_000);
    theirsP.catch(() => {}); // awaited below, unless this side fails first
    const mine = await runStream(ch, 'main', 'worker', WORKER_MESSAGES, REQUEST_EVERY).catch(async (err: Error) => {
      const theirError = await theirsP.then(
        () => 'none',
        (e: Error) => e.message,
      );
      throw new Error(`${err.message}\nthe worker: ${theirError}`, { cause: err });
    });
    const theirs = (await theirsP) as unknown as StreamReport;
    checkReport(mine, WORKER_MESSAGES, 'this thread');
    checkReport(theirs, WORKER_MESSAGES, 'the worker');
    const closed = workerEvent(worker, 'close');
    ch.close();
    assert.equal((await closed).code, null, 'the worker saw a clean close');
    await ch.closed;
  });
});
