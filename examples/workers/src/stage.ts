/**
 * One stage of the pipeline, run in a worker. It makes the channel it reads
 * from (channelPair) and posts that channel's handle to the main thread,
 * which gives it to the stage before; it opens the channel it writes to
 * from the handle in its workerData. Then: `for await` over its input,
 * apply its step, send the result on (send waits while the next stage is
 * behind), and close the output when the input ends, so the end travels
 * down the pipeline.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { channelPair, openChannel, type ChannelHandle } from '@shmring/channel';

export interface Item {
  seq: number;
  x: number;
}

export type Step = 'square' | 'increment';

/**
 * What main passes a stage: the channel it writes to, its step, and (tests only, main.ts's FailAt) the seq it throws
 * on, or 'start' to throw before it posts its input's handle.
 */
export interface StageData {
  output: ChannelHandle;
  step: Step;
  failAtSeq: number | 'start' | undefined;
}

const { output: outputHandle, step, failAtSeq } = workerData as StageData;
if (failAtSeq === 'start') throw new Error(`stage ${step}: failing before it starts, as the test asked (failAt)`);
const [input, inputHandle] = channelPair({ capacity: 1 << 16 });
parentPort!.postMessage(inputHandle, [inputHandle.port]);
const output = openChannel(outputHandle);

for await (const value of input) {
  const { seq, x } = value as Item;
  if (seq === failAtSeq) throw new Error(`stage ${step}: failing on seq ${seq}, as the test asked (failAt)`);
  await output.send({ seq, x: step === 'square' ? x * x : x + 1 });
}
output.close();
