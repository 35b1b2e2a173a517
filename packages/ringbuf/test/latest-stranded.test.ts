/**
 * A LatestValue writer that dies after its step 4 (PUBLISHED stored) and
 * before its wake-up (step 5: unpark) leaves its readers parked beside the
 * value it published (models/latest.pml had no death point there; a review
 * of the models against the code found it). No other writer may ever come,
 * so the waits look at PUBLISHED on the watchdog's timer: a parked
 * changed() takes the value within a look. Staged by publishing version 2
 * by hand, steps 1-4 of publish() without the wake, with the layout's
 * offsets (latest-layout.ts).
 */
import { strict as assert } from 'node:assert';
import { setTimeout as sleep } from 'node:timers/promises';
import { Region } from '@shmring/core';
import { LatestValue } from '../src/index.js';
import * as V from '../src/latest-layout.js';

const MAX_SIZE = 16;

/** publish() of `version` (its slot: version & 1) without its step 5: the writer died before waking anyone. */
function publishWithoutWaking(ctl: Int32Array, version: number, value: Uint8Array): void {
  const h = V.slotOffset(MAX_SIZE, version & 1) / 4;
  // Steps 1-3, as publish() makes them: SEQ odd, the contents, SEQ even.
  const begin = (Atomics.load(ctl, h + V.SEQ_I32) | 1) + 2;
  Atomics.store(ctl, h + V.SEQ_I32, begin);
  new Uint8Array(ctl.buffer, ctl.byteOffset + (h + V.VALUE_I32) * 4, value.length).set(value);
  ctl[h + V.LENGTH_I32] = value.length;
  ctl[h + V.TYPE_I32] = 0;
  ctl[h + V.VERSION_LO_I32] = version;
  ctl[h + V.VERSION_HI_I32] = 0;
  Atomics.store(ctl, h + V.SEQ_I32, begin + 1);
  // Step 4: the newest value. Publishes it to a reader's load of PUBLISHED; nobody is woken.
  Atomics.store(ctl, V.PUBLISHED_I32, version);
}

describe('LatestValue: a writer that died between publishing and waking', () => {
  for (const backing of ['memfd', 'sab'] as const) {
    it(`a parked changed() takes the value it published within a look, with no writer left (${backing})`, async () => {
      const region = Region.create({ backing, size: LatestValue.regionSize({ maxSize: MAX_SIZE }) });
      const writer = LatestValue.create(region, { maxSize: MAX_SIZE });
      const reader = LatestValue.attach(region);
      try {
        assert.equal(writer.publish(new Uint8Array([1])), 1);
        writer.close(); // the role is free: a new writer could come, none does
        const changed = reader.changed(1, { poll: 0, timeoutMs: 3000 });
        await sleep(50); // parked
        publishWithoutWaking(new Int32Array(region.buffer), 2, new Uint8Array([2]));
        const t0 = performance.now();
        const got = await changed;
        assert.equal(got.version, 2);
        assert.deepEqual([...got.value], [2]);
        assert.ok(performance.now() - t0 < 1500, `took ${Math.round(performance.now() - t0)} ms`);
      } finally {
        reader.close();
        region.close();
      }
    });
  }
});
