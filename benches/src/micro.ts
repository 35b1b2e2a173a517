/**
 * In-process micro-benchmarks with tinybench: the cost of the queue
 * operations themselves, no second process, no cache line crossing cores.
 * Each task call runs BATCH pairs of operations on 64-byte messages (a single
 * pair is shorter than tinybench's timer overhead); the figure is ns per pair.
 * Rings live in a memfd region (an external ArrayBuffer, as across processes)
 * and, for comparison, in a SharedArrayBuffer.
 */
import { Bench } from 'tinybench';
import { Region } from '@shmring/core';
import { MpmcQueue, SpscRing } from '@shmring/ringbuf';
import { LineSum } from './harness.js';
import type { Measurement } from './measurement.js';

const BATCH = 1000;
const SIZE = 64;

type Backing = 'memfd' | 'sab';

function spsc(backing: Backing): SpscRing {
  const capacity = 1 << 16;
  return SpscRing.create(Region.create({ backing, size: SpscRing.regionSize({ capacity }) }), { capacity });
}

function mpmc(backing: Backing): MpmcQueue {
  const options = { capacity: 1024, slotSize: SIZE };
  return MpmcQueue.create(Region.create({ backing, size: MpmcQueue.regionSize(options) }), options);
}

function tasks(backing: Backing): Record<string, () => void> {
  const message = new Uint8Array(SIZE);
  const ring = spsc(backing);
  const zc = spsc(backing);
  const queue = mpmc(backing);
  // biome-ignore lint/correctness/noUnusedVariables: a sink the reads add their lengths to, so that the JIT cannot drop them
  let sink = 0;
  // The zero-copy pair moves the whole message too, as tryWrite + tryRead do: the producer writes all 64 bytes
  // into its claim, the consumer reads a word of each cache line of it in place (LineSum).
  const lines = new LineSum();
  const onRecord = (data: Uint8Array, offset: number, length: number): void => {
    lines.add(data, offset, length);
    sink += length + lines.sum;
  };
  return {
    [`SpscRing tryWrite + tryRead (${backing})`]: () => {
      for (let i = 0; i < BATCH; i++) {
        ring.tryWrite(message);
        sink += ring.tryRead()!.length;
      }
    },
    [`SpscRing claim/commit + drain (${backing})`]: () => {
      for (let i = 0; i < BATCH; i++) {
        const at = zc.claim(SIZE);
        message[0] = i;
        zc.data.set(message, at);
        zc.commit(at);
        zc.drain(onRecord);
      }
    },
    [`MpmcQueue tryWrite + tryRead (${backing})`]: () => {
      for (let i = 0; i < BATCH; i++) {
        queue.tryWrite(message);
        sink += queue.tryRead()!.length;
      }
    },
  };
}

export async function micro(quick: boolean): Promise<Measurement[]> {
  const bench = new Bench({ time: quick ? 150 : 600, warmupTime: quick ? 50 : 200 });
  const all = { ...tasks('memfd'), ...tasks('sab') };
  for (const [name, fn] of Object.entries(all)) bench.add(name, fn);
  await bench.run();
  const out: Measurement[] = [];
  for (const task of bench.tasks) {
    const result = task.result;
    if (!('latency' in result)) throw new Error(`micro-benchmark ${task.name}: ${result.state}`);
    const nsPerPair = (result.latency.p50 * 1e6) / BATCH;
    out.push({
      name: `micro.${task.name
        .replace(/[^a-z]+/gi, '-')
        .replace(/-+$/, '')
        .toLowerCase()}`,
      transport: task.name,
      messageSize: SIZE,
      metric: 'ns/op',
      value: Math.round(nsPerPair * 10) / 10,
      unit: 'ns',
      note: `median of ${result.latency.samplesCount} samples of ${BATCH} pairs`,
    });
  }
  return out;
}
