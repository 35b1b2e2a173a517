/**
 * MpmcQueue's slots are published out of position order, so a publication
 * must wake every parked reader (docs/LAYOUT.md, "Waiting"; the lost
 * wake-up models/mpmc.pml finds when it wakes one): with producer A slow
 * between its claim of position 0 and its publication, B publishes
 * position 1 while nobody waits; two readers park (the slot of position 0
 * is not ready); A's publication must then wake both, one for each slot.
 */
import { strict as assert } from 'node:assert';
import { Worker } from 'node:worker_threads';
import { Region } from '@shmring/core';
import { MpmcQueue } from '../src/index.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('MpmcQueue: a publication that completes out of position order', function () {
  this.timeout(30_000);

  it('wakes every parked reader: two readers parked behind a slow producer both get a message', async () => {
    const options = { capacity: 4, slotSize: 16 };
    const region = Region.create({ backing: 'sab', size: MpmcQueue.regionSize(options) });
    const b = MpmcQueue.create(region, options);
    const [r1, r2] = [MpmcQueue.attach(region), MpmcQueue.attach(region)];
    const gate = new Int32Array(new SharedArrayBuffer(4));
    const a = new Worker(new URL('./fixtures/slow-producer.js', import.meta.url), {
      workerData: { sab: region.buffer, gate: gate.buffer },
    });
    try {
      // A has claimed position 0 and stopped before publishing it.
      const claimed = await Atomics.waitAsync(gate, 0, 0, 10_000).value;
      assert.notEqual(claimed, 'timed-out', 'the slow producer never claimed');
      assert.ok(b.tryWrite(new TextEncoder().encode('B')), 'B claims and publishes position 1');
      const got: string[] = [];
      const options2 = { spin: 0, poll: 0, peerTimeoutMs: Infinity, timeoutMs: 20_000 };
      const reads = [r1, r2].map((r) => r.read(options2).then((m) => got.push(new TextDecoder().decode(m))));
      await sleep(100); // both parked: position 0's slot is not ready
      Atomics.store(gate, 0, 2);
      Atomics.notify(gate, 0); // A publishes position 0, waking as the queue does
      const released = performance.now();
      await Promise.all(reads);
      const took = performance.now() - released;
      assert.deepEqual(got.sort(), ['A', 'B']);
      assert.ok(took < 2000, `the second reader slept ${took.toFixed(0)} ms beside a readable message (a lost wake-up)`);
    } finally {
      await a.terminate();
    }
  });
});
