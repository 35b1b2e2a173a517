/**
 * An MpscRing consumer checks that a record lies below the tail against the
 * tail it loaded last, and takes a record a little past it on trust (up to
 * TRUST_RECORDS in a row, ending at most an eighth of the ring past it)
 * until its next load of the tail, which then checks them all: a record a
 * corrupt peer made longer than its claim is reported ERR_SHMRING_CORRUPT,
 * late (at the next load: a record past those bounds, or a parked reader's
 * peer check) but never missed. One that ends far past the loaded tail is
 * reported at once.
 */
import { strict as assert } from 'node:assert';
import { ErrorCodes, Region } from '@shmring/core';
import { MpscRing } from '../src/index.js';
import * as M from '../src/mpsc-layout.js';

/** 4096 data bytes: records up to 512 bytes (an eighth) past the loaded tail are taken on trust. */
const CAPACITY = 4096;

/** A ring with one committed message (a 16-byte record at 0), and a record forged behind it that nobody claimed. */
function forged(forgedLength: number): { ring: MpscRing; region: Region } {
  const region = Region.create({ backing: 'sab', size: MpscRing.regionSize({ capacity: CAPACITY }) });
  const ring = MpscRing.create(region, { capacity: CAPACITY });
  assert.ok(ring.tryWrite(Uint8Array.of(1, 2, 3)));
  assert.deepEqual([...ring.tryRead()!], [1, 2, 3]); // the consumer has loaded the tail: 16
  assert.ok(ring.tryWrite(Uint8Array.of(4)));
  // The record at 16 is rewritten to claim `forgedLength` bytes: past the tail (32), as no correct producer writes.
  const words = new Int32Array(ring.data.buffer, ring.data.byteOffset, CAPACITY / 4);
  Atomics.store(words, 16 / 4 + M.MPSC_LENGTH_I32, forgedLength);
  return { ring, region };
}

describe('MpscRing: records past the tail last loaded', function () {
  it('a record that ends a little past the loaded tail is handed out on trust, and a parked read reports the corruption at its peer check', async function () {
    const { ring, region } = forged(M.MPSC_RECORD_HEADER + 40); // ends at 64, the tail at 32
    try {
      assert.equal(ring.tryRead()!.length, 40, 'taken on trust');
      const t0 = performance.now();
      await assert.rejects(ring.read({ timeoutMs: 20_000, peerTimeoutMs: 40 }), { code: ErrorCodes.CORRUPT });
      assert.ok(performance.now() - t0 < 10_000, 'reported at a peer check (every 10 ms here), not at the timeout');
    } finally {
      ring.close();
      region.close();
    }
  });

  it('a record that ends more than an eighth of the ring past the loaded tail is ERR_SHMRING_CORRUPT at once (tryRead and drain)', function () {
    for (const verb of ['tryRead', 'drain'] as const) {
      const { ring, region } = forged(M.MPSC_RECORD_HEADER + 600); // ends at 624: 592 bytes past the tail
      try {
        let handed = 0;
        assert.throws(() => (verb === 'tryRead' ? ring.tryRead() : ring.drain(() => handed++)), { code: ErrorCodes.CORRUPT }, verb);
        assert.equal(handed, 0, `${verb} handed the record out`);
      } finally {
        ring.close();
        region.close();
      }
    }
  });

  it('at most 4096 records (TRUST_RECORDS) are taken on trust in a row, however small: the next one loads the tail and finds the head past it', function () {
    // A ring large enough that 8-byte records stay within the byte bound (an eighth: 128 KiB) for 16,384 of them.
    const capacity = 1 << 20;
    const region = Region.create({ backing: 'sab', size: MpscRing.regionSize({ capacity }) });
    const ring = MpscRing.create(region, { capacity });
    try {
      assert.ok(ring.tryWrite(Uint8Array.of(1, 2, 3)));
      assert.deepEqual([...ring.tryRead()!], [1, 2, 3]); // the consumer has loaded the tail: 16
      // 6000 empty records forged from 16 on (8 bytes each, TYPE 0 as the zeroed ring reads), none claimed.
      const words = new Int32Array(ring.data.buffer, ring.data.byteOffset, capacity / 4);
      for (let i = 0; i < 6000; i++) Atomics.store(words, (16 + i * M.MPSC_RECORD_HEADER) / 4 + M.MPSC_LENGTH_I32, M.MPSC_RECORD_HEADER);
      let handed = 0;
      assert.throws(
        () => {
          for (;;) {
            assert.equal(ring.tryRead()!.length, 0);
            handed++;
          }
        },
        (err: Error & { code?: string }) => {
          assert.equal(err.code, ErrorCodes.CORRUPT);
          assert.match(err.message, /past the producer position/);
          return true;
        },
      );
      assert.equal(handed, 4096, 'records handed out on trust before the tail was loaded again');
    } finally {
      ring.close();
      region.close();
    }
  });

  it('records taken on trust are checked at the next load of the tail: a record past the trust bounds finds the head past the tail', function () {
    const { ring, region } = forged(M.MPSC_RECORD_HEADER + 40); // ends at 64, the tail at 32
    try {
      assert.equal(ring.tryRead()!.length, 40);
      // A record at the head (64) that ends past the loaded tail by more than the trust bounds: the tail is
      // loaded, and found behind the head, which the record taken on trust led past it.
      const words = new Int32Array(ring.data.buffer, ring.data.byteOffset, CAPACITY / 4);
      Atomics.store(words, 64 / 4 + M.MPSC_LENGTH_I32, M.MPSC_RECORD_HEADER + 600);
      assert.throws(
        () => ring.tryRead(),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, ErrorCodes.CORRUPT);
          assert.match(err.message, /past the producer position/);
          return true;
        },
      );
    } finally {
      ring.close();
      region.close();
    }
  });
});
