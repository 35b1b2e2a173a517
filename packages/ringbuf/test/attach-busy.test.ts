/**
 * attach() checks a ring's positions on a pair read while the producer
 * position held still (the check inspect makes too): a ring whose
 * producers and consumer run flat out in worker threads moves between any
 * two loads, and is never called corrupt for it; a ring whose positions are
 * impossible still is.
 */
import { strict as assert } from 'node:assert';
import { Worker } from 'node:worker_threads';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { MpscRing, SpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import { BARRIER_I32, START_I32, STOP_I32, type BusyPeerConfig, type BusyPeerReport } from './fixtures/busy-ring-peer.js';

const PEER_URL = new URL('./fixtures/busy-ring-peer.js', import.meta.url);
/** The smallest ring: the consumer laps it, and passes the tail an attach loaded, within a few records. */
const CAPACITY = 64;
/** How long the attaches go on while the ring is busy. */
const ATTACH_MS = 2_000;
/** The barrier, start and stop words, after the ring. */
const CONTROL_BYTES = 64;

const KINDS = [
  { name: 'SpscRing', kind: 'spsc', ring: SpscRing, producers: 1 },
  { name: 'MpscRing', kind: 'mpsc', ring: MpscRing, producers: 2 },
] as const;

function runPeer(config: BusyPeerConfig): { worker: Worker; report: Promise<BusyPeerReport> } {
  const worker = new Worker(PEER_URL, { workerData: { busyRingPeer: config } });
  const report = new Promise<BusyPeerReport>((resolve, reject) => {
    let got: BusyPeerReport | undefined;
    worker.on('message', (message: BusyPeerReport) => (got = message));
    worker.on('error', reject);
    worker.on('exit', (code) =>
      got !== undefined ? resolve(got) : reject(new Error(`${config.role} worker exited ${code} without a report`)),
    );
  });
  return { worker, report };
}

describe('attach on a busy ring', function () {
  this.timeout(60_000);

  for (const { name, kind, ring, producers } of KINDS) {
    it(`${name}.attach never calls a ring corrupt whose producers and consumer run flat out in workers`, async function () {
      const size = ring.regionSize({ capacity: CAPACITY });
      const region = Region.create({ backing: 'sab', size: size + CONTROL_BYTES });
      ring.create(region, { capacity: CAPACITY }).detach();
      const words = new Int32Array(region.buffer, size, 3);
      const roles = [...Array.from({ length: producers }, () => 'producer' as const), 'consumer' as const];
      const peers = roles.map((role) => runPeer({ kind, role, sab: region.buffer as SharedArrayBuffer, control: size }));
      try {
        // Every peer attached (while the ring was still): then all start at once.
        // Observes each peer's add to BARRIER (it attached); then START releases them all, waking their Atomics.wait.
        while (Atomics.load(words, BARRIER_I32) < peers.length) await new Promise((r) => setTimeout(r, 5));
        Atomics.store(words, START_I32, 1);
        Atomics.notify(words, START_I32);
        const failures = new Map<string, number>();
        let attaches = 0;
        const until = performance.now() + ATTACH_MS;
        while (performance.now() < until) {
          try {
            ring.attach(region).detach();
          } catch (err) {
            const key = `${(err as ShmringError).code}: ${(err as Error).message}`;
            failures.set(key, (failures.get(key) ?? 0) + 1);
          }
          attaches++;
        }
        // Publishes the stop to the peers' every-64-turns load.
        Atomics.store(words, STOP_I32, 1);
        const reports = await Promise.all(peers.map((p) => p.report));
        const taken = reports.at(-1)!.moved;
        assert.deepEqual([...failures], [], `${attaches} attaches`);
        assert.ok(attaches > 100, `only ${attaches} attaches`);
        assert.ok(taken > 100, `the ring was not busy: ${taken} messages taken`);
      } finally {
        // A failure before the start: stop first, then release peers still parked on START, so each ends at once.
        Atomics.store(words, STOP_I32, 1);
        Atomics.store(words, START_I32, 1);
        Atomics.notify(words, START_I32);
        await Promise.allSettled(peers.map((p) => p.report));
      }
    });

    it(`${name}.attach never calls a ring corrupt whose sides move on by more than a lap between its loads of the positions`, function () {
      // The race made certain: each load of the consumer position by an attach first lets a producer and
      // the consumer (objects of this thread) pass more than a lap of records through the ring.
      const region = Region.create({ backing: 'sab', size: ring.regionSize({ capacity: CAPACITY }) });
      ring.create(region, { capacity: CAPACITY }).detach();
      const producer = ring.attach(region);
      const consumer = ring.attach(region);
      const message = new Uint8Array(8); // a record of 16 bytes
      const ignore = (): void => {};
      const passLap = (): void => {
        for (let i = 0; i <= CAPACITY / 16; i++) {
          assert.ok(producer.tryWrite(message));
          assert.equal(consumer.drain(ignore), 1);
        }
      };
      passLap(); // both roles taken before the loads are watched
      const load = Atomics.load;
      let moving = false;
      let laps = 0;
      Atomics.load = ((array: Int32Array, index: number): number => {
        if (!moving && array.buffer === region.buffer && array.byteOffset === 0 && index === L.CONSUMER_POSITION_I32) {
          moving = true; // the producer's and the consumer's own loads are not watched
          try {
            passLap();
            laps++;
          } finally {
            moving = false;
          }
        }
        return load(array, index);
      }) as typeof Atomics.load;
      try {
        for (let i = 0; i < 3; i++) ring.attach(region).detach();
      } finally {
        Atomics.load = load;
      }
      assert.ok(laps >= 3, `${laps} laps`);
      producer.detach();
      consumer.detach();
    });

    it(`${name}.attach still refuses a ring whose positions are impossible, naming it`, function () {
      const region = Region.create({ backing: 'sab', size: ring.regionSize({ capacity: CAPACITY }) });
      ring.create(region, { capacity: CAPACITY }).detach();
      const ctl = new Int32Array(region.buffer, 0, L.DATA_OFFSET / 4);
      for (const [producer, consumer] of [
        [0, 8], // the consumer ahead of the producer (MpscRing), by less than a lap (SpscRing allows that)
        [0, 8 + 2 * CAPACITY], // the consumer more than a lap ahead
        [3 * CAPACITY, 0], // the producer more than a lap ahead
        [12, 0], // not a multiple of 8
      ] as const) {
        if (kind === 'spsc' && consumer === 8) continue;
        ctl[L.PRODUCER_POSITION_I32] = producer;
        ctl[L.CONSUMER_POSITION_I32] = consumer;
        assert.throws(() => ring.attach(region), {
          code: ErrorCodes.CORRUPT,
          message: new RegExp(`${name}: positions producer=${producer} consumer=${consumer} are inconsistent .*a SharedArrayBuffer`),
        });
      }
    });
  }
});
