/**
 * LatestValue (issue 16), each figure beside its baseline from the same run:
 *
 *  - `latest.read.atomics-load`: one Atomics.load of one word (the floor of
 *    any read); `latest.read.unchanged`: LatestValue.read() of a version it
 *    read before (two loads and a compare); `latest.read.copy-64`: read()
 *    of a new 64-byte version each time (the copy path; publish outside the
 *    timed loop is impossible, so this is publish + read minus publish).
 *    ns/op, one thread; ratioToFloor = ÷ the Atomics.load.
 *  - `latest.contended.<protocol>`: a reader thread calling read() while a
 *    worker thread publishes as fast as it can, for the two protocols the
 *    seeds describe, written the same way (bench-only copies of the read
 *    path) so that only the protocol differs: a single-buffer seqlock and
 *    LatestValue's double buffer (two seqlocked slots and a PUBLISHED word);
 *    and LatestValue itself. ns per read, retries per read in the note.
 *  - `latest.wake.changed`: publish-to-wake latency of a reader in another
 *    process parked in `await lv.changed()` (1 ms idle before each publish,
 *    so it sleeps in its futex), against `latest.wake.unix-socket`: the same
 *    process woken by an 8-byte message on a Unix socket after the same idle.
 *    Blocks alternate between the two. Clock: process.hrtime (CLOCK_MONOTONIC,
 *    the same in both processes). ratioToUnixSocket = ÷ the socket.
 */
import { fork } from 'node:child_process';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Region } from '@shmring/core';
import { LatestValue } from '@shmring/ringbuf';
import type { Measurement } from './measurement.js';
import { track } from './harness.js';

export interface LatestParams {
  quick: boolean;
}

const PEER = fileURLToPath(new URL('./latest-peer.js', import.meta.url));

/** ns per call of `op`, the best of `rounds` timed batches of `batch` calls. */
function nsPerOp(op: () => void, batch: number, rounds: number): number {
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) op();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / batch);
  }
  return best;
}

function readRows(quick: boolean): Measurement[] {
  const batch = quick ? 200_000 : 2_000_000;
  const rounds = quick ? 5 : 15;
  const words = new Int32Array(new SharedArrayBuffer(64));
  const region = Region.create({ backing: 'memfd', size: LatestValue.regionSize({ maxSize: 64 }) });
  const lv = LatestValue.create(region, { maxSize: 64 });
  const reader = LatestValue.attach(region);
  const value = new Uint8Array(64).fill(1);
  lv.publish(value);
  let sink = 0;
  const load = nsPerOp(
    () => {
      sink += Atomics.load(words, 0);
    },
    batch,
    rounds,
  );
  const unchanged = nsPerOp(
    () => {
      sink += reader.read().version;
    },
    batch,
    rounds,
  );
  const publish = nsPerOp(
    () => {
      lv.publish(value);
    },
    batch / 10,
    rounds,
  );
  const both = nsPerOp(
    () => {
      lv.publish(value);
      sink += reader.read().version;
    },
    batch / 10,
    rounds,
  );
  if (sink === -1) console.log(sink);
  const row = (name: string, transport: string, v: number, note: string): Measurement => ({
    name,
    transport,
    messageSize: name.endsWith('copy-64') ? 64 : 4,
    metric: 'ns/op',
    value: Number(v.toFixed(2)),
    unit: 'ns',
    note,
  });
  reader.close();
  lv.close();
  region.close();
  return [
    row('latest.read.atomics-load', 'Atomics.load of one word', load, `best of ${rounds} batches of ${batch}`),
    row('latest.read.unchanged', 'LatestValue.read(), version unchanged', unchanged, `best of ${rounds} batches of ${batch}; memfd region`),
    row(
      'latest.read.copy-64',
      'LatestValue.read() of a new 64-byte version',
      Math.max(0, both - publish),
      `publish + read ${both.toFixed(1)} ns minus publish alone ${publish.toFixed(1)} ns`,
    ),
  ];
}

/** A reader against a writer in a worker thread, for each protocol (latest-peer.ts has the writers). */
async function contendedRows(quick: boolean): Promise<Measurement[]> {
  const records: Measurement[] = [];
  const ms = quick ? 300 : 1000;
  for (const size of [64, 4096]) {
    for (const protocol of ['seqlock', 'double-buffer', 'latestvalue'] as const) {
      const result = await new Promise<{ nsPerRead: number; retriesPerRead: number; reads: number; publishes: number; torn: number }>(
        (resolve, reject) => {
          const w = new Worker(PEER, { workerData: { protocol, size, ms } });
          w.once('message', resolve);
          w.once('error', reject);
        },
      );
      if (result.torn !== 0) throw new Error(`latest.contended.${protocol}: ${result.torn} torn reads`);
      records.push({
        name: `latest.contended.${protocol}`,
        transport:
          protocol === 'latestvalue'
            ? 'LatestValue.read() (double buffer)'
            : protocol === 'seqlock'
              ? 'seqlock (one slot)'
              : 'double buffer (two slots + PUBLISHED)',
        messageSize: size,
        metric: 'ns/op',
        value: Number(result.nsPerRead.toFixed(1)),
        unit: 'ns',
        note: `${protocol === 'latestvalue' ? 'retries not counted' : `${result.retriesPerRead.toFixed(3)} retries per read`}; ${result.reads} reads while the writer published ${result.publishes} versions in ${ms} ms (two threads)`,
      });
    }
  }
  return records;
}

/** Publish-to-wake of a reader parked in changed() in another process, and of a Unix socket message. */
async function wakeRows(quick: boolean): Promise<Measurement[]> {
  const count = quick ? 200 : 1000;
  const block = 50;
  const gapMs = 1;
  const name = `shmring-bench-latest-${process.pid}`;
  const region = Region.create({ backing: 'posix', name, size: LatestValue.regionSize({ maxSize: 64 }) });
  const lv = LatestValue.create(region, { maxSize: 64 });
  const sockPath = path.join(os.tmpdir(), `${name}.sock`);
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(sockPath, r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const child = track(fork(PEER, ['wake', name, sockPath, String(count)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  const messages: unknown[] = [];
  const next = async (): Promise<unknown> => {
    while (messages.length === 0) await new Promise<void>((r) => child.once('message', (m) => r(void messages.push(m))));
    return messages.shift();
  };
  const socket = await accepted;
  socket.setNoDelay(true);
  await next(); // 'ready': the peer listens on both
  const stamp = new Uint8Array(8);
  const view = new DataView(stamp.buffer);
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  for (let sent = 0; sent < count; sent += block) {
    for (const kind of (sent / block) % 2 === 0 ? ['ring', 'socket'] : ['socket', 'ring']) {
      for (let i = 0; i < block; i++) {
        await sleep(gapMs);
        view.setBigUint64(0, process.hrtime.bigint(), true);
        if (kind === 'ring') lv.publish(stamp);
        else socket.write(stamp);
      }
    }
  }
  const { ring, socket: sock } = (await next()) as { ring: number[]; socket: number[] };
  socket.destroy();
  server.close();
  lv.close();
  region.close();
  region.unlink();
  const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
  const records: Measurement[] = [];
  for (const [id, xs, transport] of [
    ['changed', ring, 'LatestValue: await changed() parked'],
    ['unix-socket', sock, 'Unix socket message (net, data event)'],
  ] as const) {
    for (const [metric, p] of [
      ['p50', 0.5],
      ['p99', 0.99],
    ] as const) {
      records.push({
        name: `latest.wake.${id}`,
        transport,
        messageSize: 8,
        metric,
        value: Math.round(pct(xs, p)),
        unit: 'ns',
        note: `${xs.length} wakes, ${gapMs} ms idle before each; blocks of ${block} alternating with the other`,
      });
    }
  }
  return records;
}

export async function latestScenario(params: LatestParams): Promise<{ records: Measurement[]; notes: string[] }> {
  const records = [...readRows(params.quick), ...(await contendedRows(params.quick)), ...(await wakeRows(params.quick))];
  return { records, notes: [] };
}
