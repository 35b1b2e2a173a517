/**
 * An MpscRing consumer releases each padding record's room as soon as it
 * has zeroed it (docs/LAYOUT.md, MpscRing consumer, MUST): zeroed and not
 * released, the padding would read as a claim whose header is not written
 * yet to a next consumer, if this one stopped before its next store of the
 * head, and hold that consumer while any producer lives.
 */
import { strict as assert } from 'node:assert';
import { ErrorCodes, Region } from '@shmring/core';
import { MpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import * as M from '../src/mpsc-layout.js';

describe('MpscRing: padding taken by a consumer', function () {
  // (drain() stores the head before each handler anyway; tryRead() stored it once, after the copy.)
  for (const verb of ['tryRead'] as const) {
    it(`${verb}: the head is stored past a zeroed padding before the record behind it is looked at`, function () {
      const region = Region.create({ backing: 'sab', size: MpscRing.regionSize({ capacity: 1024 }) });
      const producer = MpscRing.create(region, { capacity: 1024 });
      const consumer = MpscRing.attach(region);
      // An aborted claim of 8 bytes: a padding record of 16 bytes at the head, then a message behind it.
      producer.abort(producer.claim(8));
      assert.ok(producer.tryWrite(Uint8Array.of(1, 2, 3)));
      const padding = M.recordBytes(M.MPSC_RECORD_HEADER + 8);
      // The record behind the padding gets an impossible type: the consumer stops there (ERR_SHMRING_CORRUPT),
      // as one killed at that point would, before any later store of the head.
      const words = new Int32Array(consumer.data.buffer, consumer.data.byteOffset, consumer.data.length / 4);
      Atomics.store(words, padding / 4 + M.MPSC_TYPE_I32, -7);
      assert.throws(() => (verb === 'tryRead' ? consumer.tryRead() : consumer.drain(() => {})), { code: ErrorCodes.CORRUPT });
      const ctl = new Int32Array(region.buffer, 0, L.DATA_OFFSET / 4);
      // Observes the consumer's last store of the head: it must cover the zeroed padding.
      assert.equal(Atomics.load(ctl, L.CONSUMER_POSITION_I32), padding, 'the zeroed padding was left unreleased at the head');
      producer.detach();
      consumer.detach();
    });
  }
});
