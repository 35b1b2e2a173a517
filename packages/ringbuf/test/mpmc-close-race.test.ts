/**
 * A MpmcQueue write that raced a close() (docs/LAYOUT.md, "The closed
 * flag"): the writer looked at the flag, another side closed the queue, and
 * the readers, finding it empty with no claim pending, ended with
 * ERR_SHMRING_CLOSED. The writer's claim comes after that. Published as a
 * message it would be read by nobody, while the writer was told it was
 * written; the writer must give the slot up as a skip and fail instead,
 * and readers must pass over the skip. The write here is a tryWrite after
 * the close, which is the same interleaving with the writer's own look at
 * the flag taken out.
 */
import { strict as assert } from 'node:assert';
import { ErrorCodes, Region } from '@shmring/core';
import { MpmcQueue } from '../src/index.js';
import * as L from '../src/layout.js';

const OPTIONS = { capacity: 4, slotSize: 16 };

describe('MpmcQueue: a write that wins its slot after the queue was closed', () => {
  for (const backing of ['memfd', 'sab'] as const) {
    it(`fails with ERR_SHMRING_CLOSED instead of leaving a message nobody reads (${backing})`, async () => {
      const region = Region.create({ backing, size: MpmcQueue.regionSize(OPTIONS) });
      const first = MpmcQueue.create(region, OPTIONS);
      const late = MpmcQueue.attach(region);
      const reader = MpmcQueue.attach(region);
      try {
        assert.ok(first.tryWrite(new Uint8Array([1])));
        first.close(); // closes the queue for every side
        assert.deepEqual(await reader.read({ timeoutMs: 1000 }), new Uint8Array([1]), 'what came before the close is read');
        await assert.rejects(reader.read({ timeoutMs: 1000 }), { code: ErrorCodes.CLOSED }, 'the reader ended: empty, no claim pending');
        assert.throws(() => late.tryWrite(new Uint8Array([2])), { code: ErrorCodes.CLOSED });
        assert.equal(reader.tryRead(), null, 'the slot the late write gave up is no message, and no corruption');
        assert.equal(late.size, 0);
      } finally {
        late.close();
        reader.close();
        region.close();
      }
    });
  }

  it('lets a reader still draining pass over a skip to a message behind it', () => {
    const region = Region.create({ backing: 'sab', size: MpmcQueue.regionSize(OPTIONS) });
    const q = MpmcQueue.create(region, OPTIONS);
    const late = MpmcQueue.attach(region);
    const early = MpmcQueue.attach(region);
    const reader = MpmcQueue.attach(region);
    const flags = new Int32Array(region.buffer, 0, L.FLAGS_I32 + 1);
    try {
      assert.ok(q.tryWrite(new Uint8Array([1])));
      MpmcQueue.attach(region).close(); // another side closes the queue
      assert.throws(() => late.tryWrite(new Uint8Array([2])), { code: ErrorCodes.CLOSED }); // position 1: a skip
      // Position 2: a producer whose look at FLAGS came before the close (its claim after the skip's), as
      // sequential consistency allows: its message stands, and the readers wait for it (claims pending).
      Atomics.and(flags, L.FLAGS_I32, ~L.FLAG_CLOSED);
      assert.ok(early.tryWrite(new Uint8Array([3])));
      Atomics.or(flags, L.FLAGS_I32, L.FLAG_CLOSED);
      const got: number[] = [];
      assert.equal(
        reader.drain((data, offset) => got.push(data[offset]!)),
        2,
      );
      assert.deepEqual(got, [1, 3], 'the messages around the skip, and nothing for the skip');
      assert.equal(reader.tryRead(), null);
    } finally {
      for (const side of [q, late, early, reader]) side.close();
      region.close();
    }
  });
});
