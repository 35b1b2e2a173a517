/**
 * The worker side of the channel section's worker row (channel.ts): counts
 * the small objects the main thread sends, checking that their ids run 0,
 * 1, 2, … The value 'end' closes a block: it is answered with { count, bad }
 * and the counts start again. Posts { ready: true } on its parentPort once
 * it listens.
 *
 *   channel-count   openChannel(handle) (a channelPair handle, its port transferred); for await over the values
 *   port-count      a MessagePort (transferred): 'message' events; { ack: count } every `ackEvery` values, for
 *                   the sender's flow control (postMessage has none of its own)
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { openChannel, type ChannelHandle } from '@shmring/channel';
import type { Order } from './channel-common.js';

const data = workerData as { role: string; handle?: ChannelHandle; port?: MessagePort; ackEvery?: number };

async function channelCount(): Promise<void> {
  const ch = openChannel(data.handle!);
  parentPort!.postMessage({ ready: true });
  let count = 0;
  let bad = 0;
  for await (const value of ch) {
    if (value === 'end') {
      await ch.send({ count, bad });
      count = bad = 0;
      continue;
    }
    if ((value as Order).id !== count) bad++;
    count++;
  }
}

function portCount(): void {
  const port = data.port!;
  const ackEvery = data.ackEvery ?? 1024;
  let count = 0;
  let bad = 0;
  port.on('message', (value: Order | 'end') => {
    if (value === 'end') {
      port.postMessage({ count, bad });
      count = bad = 0;
      return;
    }
    if (value.id !== count) bad++;
    count++;
    if (count % ackEvery === 0) port.postMessage({ ack: count });
  });
  parentPort!.postMessage({ ready: true });
}

switch (data.role) {
  case 'channel-count':
    await channelCount();
    break;
  case 'port-count':
    portCount();
    break;
  default:
    throw new Error(`channel-worker: unknown role ${data.role}`);
}
