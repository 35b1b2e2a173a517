/**
 * One stage of the pipeline, run in a worker: reads numbers from its input
 * ring (parking in readSync: a worker may block), applies its step, writes
 * the result to its output ring (parking while full), and closes the output
 * when the input ends, so the end travels down the pipeline.
 */
import { workerData } from 'node:worker_threads';
import { ErrorCodes, Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';

const { input, output, step } = workerData as { input: SharedArrayBuffer; output: SharedArrayBuffer; step: 'square' | 'increment' };
const from = SpscRing.attach(Region.fromSharedArrayBuffer(input));
const to = SpscRing.attach(Region.fromSharedArrayBuffer(output));
const out = new Float64Array(1);
const outBytes = new Uint8Array(out.buffer);

for (;;) {
  let message: Uint8Array;
  try {
    message = from.readSync();
  } catch (err) {
    if ((err as { code?: string }).code === ErrorCodes.CLOSED) break; // the stage before us is done
    throw err;
  }
  const x = new Float64Array(message.buffer, message.byteOffset, 1)[0]!;
  out[0] = step === 'square' ? x * x : x + 1;
  to.writeSync(outBytes, { type: from.lastType });
}
to.close();
