/**
 * A pipeline over SharedArrayBuffer rings: main → worker A (square) →
 * worker B (add one) → main, with `for await` on the main thread, which
 * never blocks its event loop.  node examples/workers/dist/src/main.js [count]
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';

const STAGE = new URL('./stage.js', import.meta.url);
const CAPACITY = 1 << 14;

function ring(): SpscRing {
  return SpscRing.create(Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: CAPACITY }) }), { capacity: CAPACITY });
}

function sab(r: SpscRing): SharedArrayBuffer {
  return r.data.buffer as SharedArrayBuffer;
}

export async function pipeline(count: number): Promise<{ received: number; wrong: number; ms: number }> {
  const toA = ring();
  const toB = ring();
  const toMain = ring();
  const workers = [
    new Worker(STAGE, { workerData: { input: sab(toA), output: sab(toB), step: 'square' } }),
    new Worker(STAGE, { workerData: { input: sab(toB), output: sab(toMain), step: 'increment' } }),
  ];
  const exited = workers.map((w) => new Promise<void>((resolve, reject) => {
    w.once('error', reject);
    w.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`a stage exited with ${code}`))));
  }));
  const started = performance.now();
  const value = new Float64Array(1);
  const bytes = new Uint8Array(value.buffer);
  const producing = (async () => {
    for (let i = 0; i < count; i++) {
      value[0] = i;
      await toA.write(bytes, { type: i & 0xffff }); // waits while the ring is full; never blocks the loop
    }
    toA.close();
  })();
  let received = 0;
  let wrong = 0;
  for await (const message of toMain) {
    const y = new Float64Array(message.buffer, message.byteOffset, 1)[0];
    if (y !== received * received + 1 || toMain.lastType !== (received & 0xffff)) wrong++;
    received++;
  }
  await producing;
  await Promise.all(exited);
  return { received, wrong, ms: performance.now() - started };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await pipeline(Number(process.argv[2] ?? 200_000));
  console.log(`${r.received} messages through main → A → B → main, ${r.wrong} wrong, ${r.ms.toFixed(0)} ms`);
}
