/**
 * A message read is a copy the ring no longer owns (copy.ts). Those of 65
 * bytes to 4 KiB are views into a shared slab, as Node's small Buffers are
 * into its pool: putting one's buffer in a transfer list must neither empty
 * the other messages nor break the reads that follow.
 */
import { strict as assert } from 'node:assert';
import { MessageChannel } from 'node:worker_threads';
import { Region } from '@shmring/core';
import { SpscRing } from '../src/index.js';

const CAPACITY = 4096;

function ring(): SpscRing {
  return SpscRing.create(Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: CAPACITY }) }), { capacity: CAPACITY });
}

function message(n: number, length = 100): Uint8Array {
  return new Uint8Array(length).fill(n);
}

describe('a message read is a copy of its own', function () {
  const transfers: [string, (m: Uint8Array) => Uint8Array][] = [
    ['structuredClone', (m) => structuredClone(m, { transfer: [m.buffer as ArrayBuffer] })],
    [
      'MessagePort.postMessage',
      (m) => {
        const { port1, port2 } = new MessageChannel();
        port1.postMessage(m, [m.buffer as ArrayBuffer]);
        port1.close();
        port2.close();
        return m;
      },
    ],
  ];
  for (const [how, transfer] of transfers) {
    it(`keeps the other messages whole when a 100-byte message's buffer is put in a transfer list (${how}), and reads go on`, function () {
      const q = ring();
      for (const n of [1, 2, 3]) assert.ok(q.tryWrite(message(n)));
      const first = q.tryRead()!;
      const second = q.tryRead()!;
      try {
        transfer(first); // Node 20 copies a buffer marked untransferable ...
      } catch (err) {
        assert.equal((err as Error).name, 'DataCloneError', String(err)); // ... Node 21 and later refuse it
      }
      assert.deepEqual([first.length, second.length], [100, 100], 'a message emptied by the transfer of another');
      assert.deepEqual(second, message(2));
      assert.deepEqual(q.tryRead(), message(3), 'the read after the transfer');
      assert.ok(q.tryWrite(message(4)));
      assert.deepEqual(q.tryRead(), message(4));
      q.close();
    });
  }

  it('gives each message a view of its own bytes, 8-byte aligned, whatever the buffer beside it holds', function () {
    const q = ring();
    for (const n of [5, 6]) assert.ok(q.tryWrite(message(n, 101)));
    const [a, b] = [q.tryRead()!, q.tryRead()!];
    assert.deepEqual([a.length, b.length, a.byteOffset % 8, b.byteOffset % 8], [101, 101, 0, 0]);
    a.fill(0); // the reader's own memory: writing it leaves the next message alone
    assert.deepEqual(b, message(6, 101));
    q.close();
  });
});
