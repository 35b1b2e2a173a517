/**
 * The far side of the worker-thread measurements (threads.ts): a worker
 * started with `workerData = { role, rings?: SharedArrayBuffer[], warmupMs? }`.
 * It posts `{ ready: true }` once attached and `{ result }` at the end.
 *
 *   ring-echo        spin: tryRead on ring 0, tryWrite the same bytes to ring 1
 *   ring-echo-sync   the same parking in readSync / writeSync (Atomics.wait)
 *   ring-count       throughput consumer of ring 0: mode 'copy' (tryRead) or 'zero-copy' (drain)
 *   port-echo        post every message straight back
 *   port-count       count messages (Uint8Array, sequence numbered), acknowledge every `ackEvery`
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { countRing, echoRing, Meter, stampAt } from './harness.js';

const data = workerData as {
  role: string;
  rings?: SharedArrayBuffer[];
  mode?: 'copy' | 'zero-copy';
  warmupMs?: number;
  size?: number;
  ackEvery?: number;
};
const port = parentPort!;
const LIMIT_MS = 120_000;

function ring(i: number): SpscRing {
  return SpscRing.attach(Region.fromSharedArrayBuffer(data.rings![i]!));
}

function ringEcho(mode: 'spin' | 'sync'): void {
  echoRing(ring(0), ring(1), mode, 'worker ring-echo', LIMIT_MS, () => port.postMessage({ ready: true }));
}

function ringCount(): void {
  const result = countRing(ring(0), data, 'worker ring-count', LIMIT_MS, () => port.postMessage({ ready: true }));
  port.postMessage({ result });
}

function portEcho(): void {
  port.on('message', (message: unknown) => {
    if (message === 'end') port.close();
    else port.postMessage(message);
  });
  port.postMessage({ ready: true });
}

function portCount(): void {
  const ackEvery = data.ackEvery ?? 1024;
  const meter = new Meter(data.warmupMs ?? 0, data.size);
  let count = 0;
  let bad = 0;
  port.on('message', (message: Uint8Array | 'end') => {
    if (message === 'end') {
      port.postMessage({ result: { count, bad, ...meter.finish(count) } });
      port.close();
      return;
    }
    if (message.length >= 4 && stampAt(message, 0) !== count >>> 0) bad++;
    count++;
    if (count % ackEvery === 0) port.postMessage({ ack: count });
    meter.check(count);
  });
  port.postMessage({ ready: true });
}

switch (data.role) {
  case 'ring-echo':
    ringEcho('spin');
    break;
  case 'ring-echo-sync':
    ringEcho('sync');
    break;
  case 'ring-count':
    ringCount();
    break;
  case 'port-echo':
    portEcho();
    break;
  case 'port-count':
    portCount();
    break;
  default:
    throw new Error(`worker-peer: unknown role ${data.role}`);
}
