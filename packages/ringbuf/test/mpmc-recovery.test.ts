/**
 * MpmcQueue's recovery of a slot a dead producer claimed (docs/LAYOUT.md,
 * "A reader's check"): the reader judges the producer dead only between
 * two loads of the slot's SEQUENCE that both find it unpublished. A
 * producer that publishes and exits between the first load and the
 * verdict must keep its message.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { Region } from '@shmring/core';
import { MpmcQueue } from '../src/index.js';
import * as L from '../src/layout.js';

const require = createRequire(import.meta.url);
const fs = require('node:fs') as typeof import('node:fs');

/** A pid no process has now: a child that ran and was reaped. */
function deadPid(): number {
  return Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());
}

describe('MpmcQueue: a parked reader recovering a dead producer’s slot', function () {
  this.timeout(10_000);

  it('keeps the message of a producer that published and exited while the reader judged it', async function () {
    const options = { capacity: 4, slotSize: 16 };
    const region = Region.create({ backing: 'memfd', size: MpmcQueue.regionSize(options) });
    const consumer = MpmcQueue.create(region, options);
    const producer = MpmcQueue.attach(region);
    const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
    const slot0 = new Int32Array(region.buffer, L.DATA_OFFSET, L.slotStride(options.slotSize) / 4);
    const pid = deadPid();
    // A producer claimed position 0 and marked the slot, as a live one does before it writes.
    Atomics.add(ctl, L.PRODUCER_POSITION_I32, 1);
    Atomics.store(slot0, L.SLOT_OWNER_I32, pid);
    // It writes, clears its mark, publishes and exits just as the reader's check asks about it.
    const readFileSync = fs.readFileSync;
    let judged = 0;
    fs.readFileSync = ((file: unknown, ...rest: unknown[]) => {
      if (file === `/proc/${pid}/stat`) {
        judged++;
        new Uint8Array(region.buffer, L.DATA_OFFSET + L.slotPayload(0), 3).fill(7);
        Atomics.store(slot0, L.SLOT_LENGTH_I32, 3);
        Atomics.store(slot0, L.SLOT_TYPE_I32, 0);
        Atomics.store(slot0, L.SLOT_OWNER_I32, 0);
        Atomics.store(slot0, L.SLOT_SEQUENCE_I32, 1); // published
        throw Object.assign(new Error(`ENOENT: no such file or directory, open '${file}'`), { code: 'ENOENT' });
      }
      return (readFileSync as (...args: unknown[]) => unknown)(file, ...rest);
    }) as typeof fs.readFileSync;
    syncBuiltinESMExports();
    try {
      const read = consumer.read({ peerTimeoutMs: 40, timeoutMs: 5000 }); // parks: position 0 is unpublished
      while (judged === 0) await new Promise((r) => setTimeout(r, 5)); // the watchdog's check has run
      assert.ok(producer.tryWrite(new Uint8Array([9]))); // position 1, and a wake-up for the reader
      assert.deepEqual([...(await read)], [7, 7, 7], 'the message published before the verdict was skipped');
      assert.equal(consumer.recoveredSlots, 0);
      assert.deepEqual([...consumer.tryRead()!], [9]);
    } finally {
      fs.readFileSync = readFileSync;
      syncBuiltinESMExports();
      consumer.close();
      producer.close();
      region.close();
    }
  });
});
