/**
 * Allocation on the zero-copy path: 10 million 64-byte messages through
 * claim/commit and drain, in one process (both sides of one ring), and the
 * heap before and after, each after a forced full GC. Needs --expose-gc.
 * Also reported: how many GCs ran during the loop (none means nothing was
 * allocated per message) and the heap growth without the final GC.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import type { Measurement } from './measurement.js';

const SIZE = 64;

export async function allocation(messages: number): Promise<{ records: Measurement[]; notes: string[] }> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('the allocation scenario needs node --expose-gc');
  const capacity = 1 << 20;
  const ring = SpscRing.create(Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity }) }), { capacity });
  let received = 0;
  let sum = 0;
  const onRecord = (data: Uint8Array, offset: number, length: number): void => {
    sum = (sum + data[offset]! + length) | 0;
    received++;
  };
  const data = ring.data;
  const run = (n: number): void => {
    for (let sent = 0; sent < n; ) {
      const at = ring.claim(SIZE);
      if (at < 0) {
        ring.drain(onRecord);
        continue;
      }
      data[at] = sent;
      ring.commit(at);
      sent++;
      if ((sent & 63) === 0) ring.drain(onRecord);
    }
    ring.drain(onRecord);
  };
  /** Full GCs until the heap stops shrinking (finalizers and weak references get a turn in between). */
  const settledHeap = async (): Promise<number> => {
    let used = Infinity;
    for (let i = 0; i < 10; i++) {
      gc();
      await new Promise((resolve) => setImmediate(resolve));
      const now = process.memoryUsage().heapUsed;
      if (now >= used) return now;
      used = now;
    }
    return used;
  };
  run(200_000); // warm up: compile the hot paths
  const before = await settledHeap();
  let gcs = 0;
  const observer = new PerformanceObserver((list) => (gcs += list.getEntries().length));
  observer.observe({ entryTypes: ['gc'] });
  const started = performance.now();
  received = 0;
  run(messages);
  const seconds = (performance.now() - started) / 1000;
  const unforced = process.memoryUsage().heapUsed - before;
  await new Promise((resolve) => setImmediate(resolve)); // let the observer see the loop's GCs
  const gcsDuringLoop = gcs;
  observer.disconnect();
  const growth = (await settledHeap()) - before;
  if (received !== messages) throw new Error(`allocation: ${messages} sent, ${received} drained`);
  const name = 'alloc.spsc-zc';
  const transport = 'SpscRing claim/commit + drain, one process';
  const note =
    `${messages.toLocaleString('en')} messages in ${seconds.toFixed(2)} s; ${gcsDuringLoop} GC runs during the loop; ` +
    `heap growth before the final GC ${unforced} B`;
  return {
    records: [
      { name, transport, messageSize: SIZE, metric: 'heap growth', value: growth, unit: 'B', note },
      {
        name,
        transport,
        messageSize: SIZE,
        metric: 'messages/s',
        value: Math.round(messages / seconds),
        unit: 'msg/s',
        note: 'in-process, one thread',
      },
    ],
    notes: [],
  };
}
