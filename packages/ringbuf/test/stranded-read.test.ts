/**
 * A publisher that dies between publishing a record and waking the parked
 * reader (unpark) leaves that reader asleep beside the record; where other
 * publishers live on (a MpmcQueue's, an MpscRing's producers), the reader's
 * peer check says "alive", and it slept until the next publication, for
 * good if none came. A parked read now also looks for a record on the
 * watchdog's timer. Staged by publishing while the reader's announcement
 * is hidden (READ_WAITERS lowered for the write), so the publication wakes
 * nobody, as a publisher killed before its unpark.
 */
import { strict as assert } from 'node:assert';
import { setTimeout as sleep } from 'node:timers/promises';
import { Region } from '@shmring/core';
import { MpmcQueue, MpscRing } from '../src/index.js';
import * as L from '../src/layout.js';

interface Side {
  tryWrite(bytes: Uint8Array): boolean;
  read(options?: { poll?: number; timeoutMs?: number }): Promise<Uint8Array>;
  waitReadable(options?: { poll?: number; timeoutMs?: number }): Promise<void>;
  close(): void;
}

const KINDS = [
  {
    name: 'MpmcQueue',
    open(region: Region): [Side, Side, Side] {
      const q = MpmcQueue.create(region, { capacity: 4, slotSize: 16 });
      return [q, MpmcQueue.attach(region), MpmcQueue.attach(region)];
    },
    size: MpmcQueue.regionSize({ capacity: 4, slotSize: 16 }),
  },
  {
    name: 'MpscRing',
    open(region: Region): [Side, Side, Side] {
      const reader = MpscRing.create(region, { capacity: 1024 });
      return [reader, MpscRing.attach(region), MpscRing.attach(region)];
    },
    size: MpscRing.regionSize({ capacity: 1024 }),
  },
];

/** Publishes `bytes` through `writer` with the parked readers hidden from it: no wake-up, as if it died before its unpark. */
function publishUnwoken(ctl: Int32Array, writer: Side, bytes: Uint8Array): void {
  const hidden = Atomics.exchange(ctl, L.READ_WAITERS_I32, 0); // hides every announcement from the unpark
  try {
    assert.ok(writer.tryWrite(bytes));
  } finally {
    Atomics.add(ctl, L.READ_WAITERS_I32, hidden); // puts them back: the parked waits withdraw them
  }
}

describe('a record published without its wake-up, other publishers alive', () => {
  for (const kind of KINDS) {
    for (const verb of ['read', 'waitReadable'] as const) {
      it(`a parked ${kind.name} ${verb}() finds it within a check period`, async () => {
        const region = Region.create({ backing: 'memfd', size: kind.size });
        // `reader` reads; `quiet` is a live producer that publishes nothing; `dying` publishes once, unwoken.
        const [reader, quiet, dying] = kind.open(region);
        try {
          quiet.tryWrite(new Uint8Array([0])); // registers as a producer (alive for the reader's check)
          assert.deepEqual([...(await reader.read())], [0]);
          const wait = reader[verb]({ poll: 0, timeoutMs: 3000 });
          await sleep(50); // parked
          publishUnwoken(new Int32Array(region.buffer), dying, new Uint8Array([1]));
          const t0 = performance.now();
          const got = await wait;
          if (verb === 'read') assert.deepEqual([...(got as Uint8Array)], [1]);
          assert.ok(performance.now() - t0 < 1500, `took ${Math.round(performance.now() - t0)} ms`);
        } finally {
          for (const side of [dying, quiet, reader]) side.close();
          region.close();
        }
      });
    }
  }
});
