/**
 * The table of pending requests (channel.ts PendingTable): ids by slot,
 * skipping the ids whose slot a pending request holds, doubling once half
 * full. Many requests in flight at once (the table grows), a request that
 * stays pending while thousands of others pass its slot, and requests that
 * time out or are aborted in the middle of others: every reply reaches its
 * own caller.
 */
import { strict as assert } from 'node:assert';
import { pairEnds } from './helpers.js';

describe('pending requests by id', () => {
  it('thousands in flight at once, answered out of order, each get their own reply', async () => {
    const { a, b, dispose } = pairEnds({ capacity: 1 << 16 });
    try {
      b.handle(async (v) => {
        await new Promise((resolve) => setTimeout(resolve, (v as number) % 7));
        return (v as number) * 2;
      });
      const n = 3000;
      const replies = await Promise.all(Array.from({ length: n }, (_, i) => a.request(i)));
      assert.deepEqual(
        replies,
        Array.from({ length: n }, (_, i) => i * 2),
      );
    } finally {
      await dispose();
    }
  });

  it('a request that stays pending while many others pass its slot, and others that time out or abort, all settle right', async () => {
    const { a, b, dispose } = pairEnds();
    try {
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      b.handle(async (v) => {
        if (v === 'slow') await held;
        if (v === 'never') await new Promise(() => {});
        return v;
      });
      const slow = a.request('slow');
      const timedOut = a.request('never', { timeoutMs: 20 });
      const controller = new AbortController();
      const aborted = a.request('never', { signal: controller.signal });
      const outcomes = Promise.allSettled([timedOut, aborted]); // rejected before they are looked at
      for (let round = 0; round < 50; round++) {
        const values = Array.from({ length: 100 }, (_, i) => round * 100 + i);
        assert.deepEqual(await Promise.all(values.map((v) => a.request(v))), values);
        if (round === 10) controller.abort();
      }
      const [t, ab] = await outcomes;
      assert.equal(t.status === 'rejected' && (t.reason as { code: string }).code, 'ERR_SHMRING_TIMEOUT');
      assert.equal(ab.status === 'rejected' && (ab.reason as Error).name, 'AbortError');
      release();
      assert.equal(await slow, 'slow');
    } finally {
      await dispose();
    }
  });
});
