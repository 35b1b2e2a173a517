/**
 * A pipeline of channels between threads: main → worker A (square) →
 * worker B (add one) → main. Values travel as values ({ seq, x }, by
 * structured clone), and the main thread reads the results with
 * `for await`, never blocking its event loop.
 * node examples/workers/dist/src/main.js [count]
 *
 * Wiring: each stage creates the channel it reads from and posts its handle
 * back; main passes it to the stage before (B's input handle goes to A as
 * A's output), and opens A's input itself.
 */
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { channelPair, openChannel, type ChannelHandle } from '@shmring/channel';
import type { Item, StageData, Step } from './stage.js';

const STAGE = new URL('./stage.js', import.meta.url);

/**
 * For tests only: makes one stage throw, as a stage with a bug would, on the value whose sequence number is `seq`,
 * or (`'start'`) before it posts the handle of its input, as a stage that fails to start; the test checks that
 * pipeline() then rejects with that error.
 */
export interface FailAt {
  step: Step;
  seq: number | 'start';
}

/**
 * Starts a stage that writes to `output`; resolves with the stage and the handle of its input. Rejects, the worker
 * gone, when the stage fails (throws, or exits) before it posts that handle.
 */
async function stage(step: Step, output: ChannelHandle, failAt: FailAt | undefined): Promise<{ worker: Worker; input: ChannelHandle }> {
  const failAtSeq = failAt?.step === step ? failAt.seq : undefined;
  const worker = new Worker(STAGE, { workerData: { output, step, failAtSeq } satisfies StageData, transferList: [output.port] });
  const stop = new AbortController();
  try {
    // once() rejects with what the stage threw ('error'); a stage that exits without throwing must not be waited for
    // for ever either.
    const exited = once(worker, 'exit', { signal: stop.signal }).then(([code]) => {
      throw new Error(`stage ${step} exited with ${code} before it posted the handle of its input`);
    });
    const [input] = (await Promise.race([once(worker, 'message', { signal: stop.signal }), exited])) as [ChannelHandle];
    return { worker, input };
  } catch (err) {
    await worker.terminate();
    throw err;
  } finally {
    stop.abort();
  }
}

/**
 * Sends `count` values through the pipeline; resolves with what came back. Rejects with the error of the part that
 * failed (a stage's own error rather than the peer deaths it causes down the line).
 */
export async function pipeline(count: number, options: { failAt?: FailAt } = {}): Promise<{ received: number; wrong: number; ms: number }> {
  const [fromB, forB] = channelPair({ capacity: 1 << 16 });
  const workers: Worker[] = [];
  // Each stage's end, watched from its start: one that fails while the next starts is not left unhandled.
  const exited: Promise<void>[] = [];
  const watch = (w: Worker): void => {
    workers.push(w);
    const end = new Promise<void>((resolve, reject) => {
      w.once('error', reject); // what the stage threw
      w.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`a stage exited with ${code}`))));
    });
    end.catch(() => undefined); // handled below, once the run is under way: not an unhandled rejection meanwhile
    exited.push(end);
  };
  let a: Awaited<ReturnType<typeof stage>>;
  try {
    const b = await stage('increment', forB, options.failAt);
    watch(b.worker);
    a = await stage('square', b.input, options.failAt);
    watch(a.worker);
  } catch (err) {
    // A stage that did not start ends the run: what did start stops, or it would wait for its input for ever (and
    // keep this process alive).
    await Promise.all(workers.map((w) => w.terminate()));
    await Promise.allSettled(exited);
    fromB.close();
    throw err;
  }
  const toA = openChannel(a.input);

  const started = performance.now();
  const producing = (async () => {
    for (let seq = 0; seq < count; seq++) {
      await toA.send({ seq, x: seq } satisfies Item); // waits while the ring is full; never blocks the loop
    }
    toA.close(); // A's for await ends after the last value, then A closes its output, and so on
  })();
  let received = 0;
  let wrong = 0;
  const consuming = (async () => {
    for await (const value of fromB) {
      const { seq, x } = value as Item;
      if (seq !== received || x !== seq * seq + 1) wrong++;
      received++;
    }
  })();
  // Every part gets its handler now, not after the others are done: a stage that throws would otherwise be an
  // unhandled rejection, which ends the process. When one part fails the others follow, each seeing its peer
  // die (ERR_SHMRING_PEER_DEAD) in turn; the error to report is the first that is not such a knock-on.
  const failures: unknown[] = [];
  await Promise.all([...exited, producing, consuming].map((part) => part.catch((err: unknown) => void failures.push(err))));
  if (failures.length > 0) {
    throw failures.find((err) => (err as { code?: string }).code !== 'ERR_SHMRING_PEER_DEAD') ?? failures[0];
  }
  return { received, wrong, ms: performance.now() - started };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const count = process.argv[2] ?? '200000';
  if (!/^\d+$/.test(count) || !Number.isSafeInteger(Number(count))) {
    console.error(`usage: node main.js [count]: count is the number of values, a non-negative integer up to 2^53 - 1; got '${count}'`);
    process.exit(2);
  }
  try {
    const r = await pipeline(Number(count));
    console.log(`${r.received} values through main → A → B → main, ${r.wrong} wrong, ${r.ms.toFixed(0)} ms`);
    if (r.received !== Number(count) || r.wrong !== 0) {
      console.error(`main.js: ${r.received} of ${count} values came back, ${r.wrong} of them wrong`);
      process.exitCode = 1;
    }
  } catch (err) {
    const e = err as { message?: string; code?: string };
    console.error(`main.js: ${e.message ?? String(err)}${e.code === undefined ? '' : ` (${e.code})`}`);
    process.exitCode = 1;
  }
}
