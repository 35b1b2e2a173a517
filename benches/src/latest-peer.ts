/**
 * The other side of latest.ts's measurements:
 *  - a worker thread (workerData { protocol, size, ms }): measures a reader
 *    against a writer in a nested worker (workerData { writer: true, … })
 *    that publishes as fast as it can, and posts the reader's figures;
 *  - a process (`wake <region name> <socket path> <count>`): attaches to the
 *    LatestValue, connects to the socket, and records for each publish and
 *    each socket message how long after its stamp (hrtime, in its bytes)
 *    this process woke; sends { ring, socket } (ns) over IPC at the end.
 */
import * as net from 'node:net';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Region } from '@shmring/core';
import { LatestValue } from '@shmring/ringbuf';
import { protocolBytes, Slots, type Protocol } from './latest-protocols.js';

interface Contended {
  protocol: Protocol | 'latestvalue';
  size: number;
  ms: number;
  writer?: boolean;
  sab?: SharedArrayBuffer;
  stop?: SharedArrayBuffer;
}

/** Whether `value` is whole: every byte equals the low byte of the version in its first 4 bytes. */
function whole(value: Uint8Array): boolean {
  const v = value[0]!;
  for (let i = 4; i < value.length; i++) if (value[i] !== v) return false;
  return true;
}

function writer(d: Contended): void {
  const stop = new Int32Array(d.stop!);
  const value = new Uint8Array(d.size);
  let publishes = 0;
  const publish =
    d.protocol === 'latestvalue'
      ? (
          (lv) => (v: Uint8Array) =>
            lv.publish(v)
        )(LatestValue.attach(Region.fromSharedArrayBuffer(d.sab!)))
      : (
          (s) => (v: Uint8Array) =>
            s.publish(v)
        )(new Slots(d.sab!, d.protocol, d.size));
  Atomics.store(stop, 1, 1); // started
  while (Atomics.load(stop, 0) === 0) {
    value.fill(++publishes & 0xff);
    publish(value);
  }
  parentPort!.postMessage(publishes);
}

async function reader(d: Contended): Promise<void> {
  const sab = new SharedArrayBuffer(d.protocol === 'latestvalue' ? LatestValue.regionSize({ maxSize: d.size }) : protocolBytes(d.size));
  const stop = new SharedArrayBuffer(8);
  let read: () => { value: Uint8Array };
  let retries = (): number => 0;
  if (d.protocol === 'latestvalue') {
    const region = Region.fromSharedArrayBuffer(sab);
    LatestValue.create(region, { maxSize: d.size });
    const lv = LatestValue.attach(region);
    read = () => lv.read();
  } else {
    const s = new Slots(sab, d.protocol, d.size);
    read = () => s.read();
    retries = () => s.retries;
  }
  const w = new Worker(fileURLToPath(import.meta.url), { workerData: { ...d, writer: true, sab, stop } });
  const stopWords = new Int32Array(stop);
  while (Atomics.load(stopWords, 1) === 0) await new Promise((r) => setTimeout(r, 1));
  let reads = 0,
    torn = 0;
  const t0 = process.hrtime.bigint();
  const until = t0 + BigInt(d.ms * 1e6);
  while (process.hrtime.bigint() < until) {
    for (let i = 0; i < 256; i++) {
      if (!whole(read().value)) torn++;
    }
    reads += 256;
  }
  const ns = Number(process.hrtime.bigint() - t0);
  Atomics.store(stopWords, 0, 1);
  const publishes = await new Promise<number>((r) => w.once('message', r));
  await w.terminate();
  parentPort!.postMessage({ nsPerRead: ns / reads, retriesPerRead: retries() / reads, reads, publishes, torn });
}

async function wake(name: string, sockPath: string, count: number): Promise<void> {
  const lv = LatestValue.attach(Region.open({ backing: 'posix', name }));
  const socket = net.connect(sockPath);
  socket.setNoDelay(true);
  const ring: number[] = [];
  const sock: number[] = [];
  let pending = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    const now = process.hrtime.bigint();
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 8) {
      sock.push(Number(now - pending.readBigUInt64LE(0)));
      pending = pending.subarray(8);
    }
  });
  await new Promise<void>((r) => socket.once('connect', () => r()));
  process.send!('ready');
  let version = lv.read().version;
  while (version < count) {
    // versions 1..count; a late wake may skip one (fewer samples)
    const r = await lv.changed(version, { poll: 0 });
    const now = process.hrtime.bigint();
    ring.push(Number(now - new DataView(r.value.buffer, r.value.byteOffset).getBigUint64(0, true)));
    version = r.version;
  }
  while (sock.length < count) await new Promise((r) => setTimeout(r, 5));
  process.send!({ ring, socket: sock }, () => process.exit(0));
}

if (!isMainThread) {
  const d = workerData as Contended;
  if (d.writer) writer(d);
  else void reader(d);
} else if (process.argv[2] === 'wake') {
  void wake(process.argv[3]!, process.argv[4]!, Number(process.argv[5]));
}
