/**
 * A peer that rewrites record headers WHILE the consumer reads them: the
 * checks of a length or a type are worth nothing if the value handed out is
 * read again from shared memory after the check. A worker thread writes
 * random words into the data area (or the slots) without pause, while this
 * thread writes and reads messages; every length and type handed out must
 * be one that passed the bounds checks. For each of SpscRing, MpmcQueue,
 * MpscRing and Broadcast (a lossy and a lossless subscriber).
 */
import { strict as assert } from 'node:assert';
import { Worker } from 'node:worker_threads';
import { ErrorCodes, Region, ShmringError } from '@shmring/core';
import { Broadcast, type BroadcastSubscriber, MpmcQueue, MpscRing, SpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import * as B from '../src/broadcast-layout.js';

/** How long each queue kind is attacked. */
const ATTACK_MS = 1500;

/** Scribbles random 32-bit values into the buffer's `words` (indices) until told to stop (word 0 of `stop`). */
const SCRIBBLER = `
const { workerData } = require('node:worker_threads');
const { buffer, words, stop } = workerData;
const i32 = new Int32Array(buffer);
const flag = new Int32Array(stop);
let x = 0x9e3779b9 | 0;
while (Atomics.load(flag, 0) === 0) {
  for (let k = 0; k < 4096; k++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    const word = words[(x >>> 0) % words.length];
    // Lengths far out of range, negative types, and small values, in turn.
    i32[word] = (k & 3) === 0 ? x : (k & 3) === 1 ? -1 : (k & 3) === 2 ? 0x7fffffff : (x & 0xff);
  }
}
`;

interface Attack {
  stop(): Promise<void>;
}

function scribble(buffer: SharedArrayBuffer, words: number[]): Attack {
  const stop = new SharedArrayBuffer(4);
  const worker = new Worker(SCRIBBLER, { eval: true, workerData: { buffer, words, stop } });
  return {
    async stop() {
      Atomics.store(new Int32Array(stop), 0, 1);
      await new Promise((resolve, reject) => {
        worker.once('exit', resolve);
        worker.once('error', reject);
      });
    },
  };
}

/** tryRead once: a message, if any, must fit and carry a valid type. */
function checkRead(queue: SpscRing | MpmcQueue | MpscRing | BroadcastSubscriber, maxLength: number, handed: () => void): void {
  const got = queue.tryRead();
  if (got === null) return;
  assert.ok(got.length <= maxLength, `tryRead returned ${got.length} bytes`);
  assert.ok(queue.lastType >= 0 && queue.lastType <= L.MAX_TYPE, `tryRead left type ${queue.lastType}`);
  handed();
}

/**
 * Runs `traffic` over fresh queues from `create` for ATTACK_MS while a worker
 * scribbles on `words` of the region; ERR_SHMRING_CORRUPT (the attack
 * detected) replaces the queue, anything else fails the test. Asserts that
 * both messages and detections were many, so the test did attack something.
 */
async function underAttack<Q>(
  what: string,
  region: Region,
  words: number[],
  create: () => Q,
  traffic: (queue: Q, handed: () => void) => void,
): Promise<void> {
  const attack = scribble(region.buffer as SharedArrayBuffer, words);
  const counts = { handed: 0, corrupt: 0 };
  const handed = (): void => {
    counts.handed++;
  };
  try {
    let queue = create();
    const until = performance.now() + ATTACK_MS;
    while (performance.now() < until) {
      try {
        traffic(queue, handed);
      } catch (err) {
        // CORRUPT: a check caught it; TIMEOUT: an MpscRing producer's commit found its header rewritten.
        if ((err as ShmringError).code !== ErrorCodes.CORRUPT && (err as ShmringError).code !== ErrorCodes.TIMEOUT) throw err;
        counts.corrupt++;
        queue = create(); // a fresh queue: the corrupted one cannot be trusted
      }
    }
  } finally {
    await attack.stop();
  }
  console.log(`      ${what}: ${counts.handed} messages handed out, ${counts.corrupt} corruptions detected`);
  assert.ok(counts.handed > 10_000 && counts.corrupt > 10, `too little traffic under attack: ${JSON.stringify(counts)}`);
}

describe('a peer rewriting records while they are read', function () {
  this.timeout(ATTACK_MS + 20_000);

  it('SpscRing hands drain() and tryRead() only lengths and types that passed the bounds checks', async function () {
    const capacity = 4096;
    const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity }) });
    const message = new Uint8Array(200);
    // Every word of the data area: record lengths, types and payloads alike.
    const words = Array.from({ length: capacity / 4 }, (_, i) => L.DATA_OFFSET / 4 + i);
    await underAttack(
      'SpscRing',
      region,
      words,
      () => SpscRing.create(region, { capacity }),
      (ring, handed) => {
        for (let round = 0; round < 200; round++) {
          while (ring.tryWrite(message.subarray(0, (round * 37) % 200), round)) {
            /* fill */
          }
          ring.drain((data, offset, length, type) => {
            assert.ok(
              length <= ring.maxMessageLength && offset >= 0 && offset + length <= capacity,
              `drain handed offset ${offset} length ${length} (capacity ${capacity})`,
            );
            assert.ok(type >= 0 && type <= L.MAX_TYPE, `drain handed type ${type}`);
            assert.equal(data, ring.data);
            handed();
          });
          ring.tryWrite(message.subarray(0, round % 200), round);
          checkRead(ring, ring.maxMessageLength, handed);
        }
      },
    );
  });

  it('MpmcQueue hands drain() and tryRead() only lengths and types that passed the bounds checks', async function () {
    const options = { capacity: 64, slotSize: 200 };
    const region = Region.create({ backing: 'sab', size: MpmcQueue.regionSize(options) });
    const message = new Uint8Array(options.slotSize);
    // Only the slots' LENGTH and TYPE words: a scribbled SEQUENCE would just stall the queue.
    const stride32 = L.slotStride(options.slotSize) / 4;
    const slots = Array.from({ length: options.capacity }, (_, i) => L.DATA_OFFSET / 4 + i * stride32);
    const words = slots.flatMap((w) => [w + L.SLOT_LENGTH_I32, w + L.SLOT_TYPE_I32]);
    await underAttack(
      'MpmcQueue',
      region,
      words,
      () => MpmcQueue.create(region, options),
      (queue, handed) => {
        for (let i = 0; i < 32; i++) queue.tryWrite(message.subarray(0, i * 5), i);
        queue.drain((data, offset, length, type) => {
          assert.ok(
            length <= options.slotSize && offset >= 0 && offset + length <= data.length,
            `drain handed offset ${offset} length ${length}`,
          );
          assert.ok(type >= 0 && type <= L.MAX_TYPE, `drain handed type ${type}`);
          handed();
        }, 16);
        checkRead(queue, options.slotSize, handed);
      },
    );
  });

  it('MpscRing hands drain() and tryRead() only lengths and types that passed the bounds checks', async function () {
    const capacity = 4096;
    const region = Region.create({ backing: 'sab', size: MpscRing.regionSize({ capacity }) });
    const message = new Uint8Array(200);
    const words = Array.from({ length: capacity / 4 }, (_, i) => L.DATA_OFFSET / 4 + i);
    let producer: MpscRing | undefined;
    let idle = 0;
    await underAttack(
      'MpscRing',
      region,
      words,
      () => {
        producer = undefined;
        idle = 0;
        return MpscRing.create(region, { capacity, peerTimeoutMs: 0 });
      },
      (ring, handed) => {
        producer ??= MpscRing.attach(region);
        let got = 0;
        for (let round = 0; round < 200; round++) {
          while (producer.tryWrite(message.subarray(0, (round * 37) % 200), round)) {
            /* fill */
          }
          got += ring.drain((_data, offset, length, type) => {
            assert.ok(
              length <= ring.maxMessageLength && offset >= 0 && offset + length <= capacity,
              `drain handed offset ${offset} length ${length} (capacity ${capacity})`,
            );
            assert.ok(type >= 0 && type <= L.MAX_TYPE, `drain handed type ${type}`);
            handed();
          });
          checkRead(ring, ring.maxMessageLength, () => {
            got++;
            handed();
          });
        }
        // A scribbled header can stall the ring for good (a zero where a record was): start afresh, as for a detection.
        if (got === 0 && ++idle > 3) throw new ShmringError(ErrorCodes.CORRUPT, 'stalled');
      },
    );
  });

  for (const lossless of [false, true]) {
    it(`a ${lossless ? 'lossless' : 'lossy'} Broadcast subscriber hands drain() and tryRead() only lengths and types that passed the bounds checks`, async function () {
      const capacity = 4096;
      const subscribers = 1;
      const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity, subscribers }) });
      const message = new Uint8Array(200);
      // Every word of the data area (after the subscriber slots): record lengths, types and payloads alike.
      const words = Array.from({ length: capacity / 4 }, (_, i) => B.broadcastDataOffset(subscribers) / 4 + i);
      let publisher: ReturnType<typeof Broadcast.create> | undefined;
      let subscriber: ReturnType<typeof Broadcast.subscribe> | undefined;
      await underAttack(
        `Broadcast (${lossless ? 'lossless' : 'lossy'})`,
        region,
        words,
        () => {
          // Both leave first: a Broadcast is laid out anew only once nobody holds it (else create refuses or takes it over).
          subscriber?.close();
          publisher?.close();
          publisher = Broadcast.create(region, { capacity, lossless, subscribers });
          subscriber = Broadcast.subscribe(region);
          return subscriber;
        },
        (sub, handed) => {
          const pub = publisher!;
          for (let round = 0; round < 200; round++) {
            // Lossless: until full. Lossy (never full): less than a ring's worth, so the subscriber is rarely lapped.
            for (let i = 0; i < 15 && pub.tryWrite(message.subarray(0, (round * 37 + i) % 200), round); i++) {
              /* fill */
            }
            sub.drain((data, offset, length, type) => {
              // Lossless: the ring's data in place; lossy: the subscriber's checked copy.
              assert.ok(
                length <= sub.maxMessageLength && offset >= 0 && offset + length <= data.length,
                `drain handed offset ${offset} length ${length} (a buffer of ${data.length})`,
              );
              if (lossless) assert.equal(data.length, capacity);
              assert.ok(type >= 0 && type <= L.MAX_TYPE, `drain handed type ${type}`);
              handed();
            });
            pub.tryWrite(message.subarray(0, round % 200), round);
            checkRead(sub, sub.maxMessageLength, handed);
          }
        },
      );
    });
  }
});
