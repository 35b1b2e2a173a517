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
import type { Item } from './stage.js';

const STAGE = new URL('./stage.js', import.meta.url);

/** Starts a stage that writes to `output`; resolves with the stage and the handle of its input. */
async function stage(step: 'square' | 'increment', output: ChannelHandle): Promise<{ worker: Worker; input: ChannelHandle }> {
  const worker = new Worker(STAGE, { workerData: { output, step }, transferList: [output.port] });
  const [input] = (await once(worker, 'message')) as [ChannelHandle];
  return { worker, input };
}

export async function pipeline(count: number): Promise<{ received: number; wrong: number; ms: number }> {
  const [fromB, forB] = channelPair({ capacity: 1 << 16 });
  const b = await stage('increment', forB);
  const a = await stage('square', b.input);
  const toA = openChannel(a.input);
  const exited = [a.worker, b.worker].map(
    (w) =>
      new Promise<void>((resolve, reject) => {
        w.once('error', reject);
        w.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`a stage exited with ${code}`))));
      }),
  );

  const started = performance.now();
  const producing = (async () => {
    for (let seq = 0; seq < count; seq++) {
      await toA.send({ seq, x: seq } satisfies Item); // waits while the ring is full; never blocks the loop
    }
    toA.close(); // A's for await ends after the last value, then A closes its output, and so on
  })();
  let received = 0;
  let wrong = 0;
  for await (const value of fromB) {
    const { seq, x } = value as Item;
    if (seq !== received || x !== seq * seq + 1) wrong++;
    received++;
  }
  await producing;
  await Promise.all(exited);
  return { received, wrong, ms: performance.now() - started };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const count = process.argv[2] ?? '200000';
  if (!/^\d+$/.test(count) || !Number.isSafeInteger(Number(count))) {
    console.error(`usage: node main.js [count]: count is the number of values, a non-negative integer up to 2^53 - 1; got '${count}'`);
    process.exit(2);
  }
  const r = await pipeline(Number(count));
  console.log(`${r.received} values through main → A → B → main, ${r.wrong} wrong, ${r.ms.toFixed(0)} ms`);
}
