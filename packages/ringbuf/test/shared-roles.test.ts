/**
 * Shared roles where the region has no file to lock (a System V segment):
 * the role's pid words name one registrant of many producers. A producer
 * that leaves gives the words back to the producer it replaced, if that one
 * lives, so one producer's close() does not hide the death of the others
 * (the consumer's read ends with ERR_SHMRING_PEER_DEAD, not a timeout) and
 * does not report a death while one of them still lives.
 */
import { strict as assert } from 'node:assert';
import { ErrorCodes, Region } from '@shmring/core';
import { MpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import { LinePeer } from './helpers.js';

const CAPACITY = 4096;

/** A child process that joins the MpscRing in segment `key` as a producer, writes [7], says 'ready' and stays. */
function childProducer(key: number): LinePeer {
  const core = import.meta.resolve('@shmring/core');
  const ringbuf = new URL('../src/index.js', import.meta.url).href;
  const script = `
    import { Region } from ${JSON.stringify(core)};
    import { MpscRing } from ${JSON.stringify(ringbuf)};
    MpscRing.attach(Region.open({ backing: 'sysv', key: ${key} })).tryWrite(new Uint8Array([7]));
    console.log('ready');
    setTimeout(() => {}, 60000);`;
  return new LinePeer('--input-type=module', ['-e', script]);
}

describe('MpscRing producers in a System V segment: the shared producer words', function () {
  this.timeout(60_000);

  it("one producer's close() hands the words back to the producer it replaced: the consumer sees that one live, then dead", async () => {
    const key = (0x5c00_0000 | Math.floor(Math.random() * 0x00ff_ffff)) >>> 0;
    const region = Region.create({ backing: 'sysv', key, size: MpscRing.regionSize({ capacity: CAPACITY }) });
    const peer = childProducer(key);
    try {
      const consumer = MpscRing.create(region, { capacity: CAPACITY, peerTimeoutMs: 100 });
      await peer.line('ready');
      const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
      const mine = MpscRing.attach(region);
      const also = MpscRing.attach(region);
      assert.ok(mine.tryWrite(new Uint8Array([8])));
      assert.ok(also.tryWrite(new Uint8Array([9])));
      assert.equal(Atomics.load(ctl, L.PRODUCER_PID_I32), process.pid, 'the last to join is named');
      mine.close();
      assert.equal(Atomics.load(ctl, L.PRODUCER_PID_I32), process.pid, 'another producer of this thread is still there');
      also.close();
      assert.equal(Atomics.load(ctl, L.PRODUCER_PID_I32), peer.child.pid, 'back to the child, which lives');
      assert.deepEqual([...consumer.tryRead()!, ...consumer.tryRead()!, ...consumer.tryRead()!], [7, 8, 9]);
      await assert.rejects(consumer.read({ timeoutMs: 400 }), { code: ErrorCodes.TIMEOUT }, 'no death while the child lives');
      await peer.kill();
      const t0 = performance.now();
      await assert.rejects(consumer.read({ timeoutMs: 5000 }), { code: ErrorCodes.PEER_DEAD });
      assert.ok(performance.now() - t0 < 4000, 'the death is seen at a check period, not at the timeout');
      consumer.close();
    } finally {
      await peer.kill();
      region.unlink();
      region.close();
    }
  });
});
