/**
 * Pieces the demo and the benchmarks share: starting a peer process, ring
 * regions to hand it, and the round-trip / streaming loops over a ring and
 * over a Unix socket.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';

const PEER = fileURLToPath(new URL('./peer.js', import.meta.url));

export interface Peer {
  child: ChildProcess;
  /** The first JSON line the peer prints (its report), once it exits. */
  result: Promise<Record<string, number>>;
}

/** Starts the peer process in `role`, handing it `regions` as fds 3, 4, … */
export function startPeer(role: string, regions: Region[] = [], socketPath?: string): Peer {
  const child = spawn(process.execPath, [PEER, role, ...(socketPath ? [socketPath] : [])], {
    stdio: ['ignore', 'pipe', 'inherit', ...regions.map((r) => r.fd)],
  });
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d));
  const result = new Promise<Record<string, number>>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`peer ${role} exited with code ${code}`));
      else resolve(stdout.trim() ? (JSON.parse(stdout.trim().split('\n')[0]!) as Record<string, number>) : {});
    });
  });
  return { child, result };
}

/** A memfd region holding a fresh SpscRing of `capacity` bytes. */
export function ringRegion(capacity: number): { region: Region; ring: SpscRing } {
  const region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity }) });
  return { region, ring: SpscRing.create(region, { capacity }) };
}

/** A Unix socket server on a fresh path; resolves with the first connection. */
export async function socketPair(): Promise<{ path: string; accepted: Promise<net.Socket>; close(): void }> {
  const socketPath = path.join(os.tmpdir(), `shmring-bench-${process.pid}-${Math.random().toString(36).slice(2)}.sock`);
  const server = net.createServer();
  server.listen(socketPath);
  await once(server, 'listening');
  const accepted = once(server, 'connection').then(([s]) => s as net.Socket);
  return { path: socketPath, accepted, close: () => server.close() };
}

/** Writes the message number into the first four bytes (little-endian). */
export function stamp(message: Uint8Array, seq: number): void {
  message[0] = seq;
  message[1] = seq >>> 8;
  message[2] = seq >>> 16;
  message[3] = seq >>> 24;
}

export interface Stream {
  messages: number;
  seconds: number;
}

/** Streams `count` messages of `size` bytes into `ring` (spinning while full). */
export function streamRing(ring: SpscRing, count: number, size: number, progress?: (sent: number) => void): Stream {
  const message = new Uint8Array(size);
  const started = performance.now();
  for (let seq = 0; seq < count; seq++) {
    stamp(message, seq);
    while (!ring.tryWrite(message)) {
      // full: the consumer is behind; spin
    }
    if ((seq & 0xffff) === 0 && progress) progress(seq);
  }
  return { messages: count, seconds: (performance.now() - started) / 1000 };
}

/** Streams `count` length-framed messages of `size` bytes over `socket`, in batches, honouring back-pressure. */
export async function streamSocket(socket: net.Socket, count: number, size: number): Promise<Stream> {
  const frame = 4 + size;
  const perBatch = Math.max(1, Math.floor(65536 / frame));
  const started = performance.now();
  for (let seq = 0; seq < count;) {
    const n = Math.min(perBatch, count - seq);
    const batch = Buffer.alloc(n * frame);
    for (let i = 0; i < n; i++, seq++) {
      batch.writeUInt32LE(size, i * frame);
      if (size >= 4) batch.writeUInt32LE(seq >>> 0, i * frame + 4);
    }
    if (!socket.write(batch)) await once(socket, 'drain');
  }
  socket.end();
  return { messages: count, seconds: (performance.now() - started) / 1000 };
}

/** `count` ping-pongs of one `size`-byte message through two rings; returns the round-trip histogram (ns). */
export async function pingPongRing(
  out: SpscRing, back: SpscRing, count: number, size: number, mode: 'spin' | 'async',
): Promise<RecordableHistogram> {
  const histogram = createHistogram();
  const message = new Uint8Array(size);
  for (let i = 0; i < count; i++) {
    stamp(message, i);
    const t0 = process.hrtime.bigint();
    out.writeSync(message);
    if (mode === 'spin') {
      while (back.tryRead() === null) {
        // one message in flight: spin until it returns
      }
    } else {
      await back.read();
    }
    histogram.record(Number(process.hrtime.bigint() - t0) || 1);
  }
  return histogram;
}

/** `count` ping-pongs of one framed message over a Unix socket. */
export async function pingPongSocket(socket: net.Socket, count: number, size: number): Promise<RecordableHistogram> {
  const histogram = createHistogram();
  const frame = Buffer.alloc(4 + size);
  frame.writeUInt32LE(size, 0);
  socket.setNoDelay?.(true);
  let pending = 0;
  let resolveOne: (() => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    pending += chunk.length;
    while (pending >= 4 + size && resolveOne) {
      pending -= 4 + size;
      const r = resolveOne;
      resolveOne = undefined;
      r();
    }
  });
  for (let i = 0; i < count; i++) {
    const t0 = process.hrtime.bigint();
    const back = new Promise<void>((resolve) => (resolveOne = resolve));
    socket.write(frame);
    await back;
    histogram.record(Number(process.hrtime.bigint() - t0) || 1);
  }
  socket.end();
  return histogram;
}

/** Microseconds from a histogram percentile in ns. */
export function micros(histogram: RecordableHistogram, percentile: number): number {
  return histogram.percentile(percentile) / 1000;
}

export function formatRate(perSecond: number): string {
  return perSecond >= 1e6 ? `${(perSecond / 1e6).toFixed(2)} M/s` : `${(perSecond / 1e3).toFixed(1)} k/s`;
}
