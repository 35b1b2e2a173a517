/**
 * The main job: a producer process (this one) and a consumer process
 * exchange a few million messages through an SpscRing in a memfd region
 * (tryWrite, corked: one publication per STREAM_BATCH messages),
 * with a progress line; then the same exchange over a Unix domain socket,
 * and a ping-pong round trip over each, side by side.
 *
 *   DEMO_MESSAGES=4000000 DEMO_SIZE=64 node benches/dist/demo.js
 */
import * as os from 'node:os';
import { backendKind } from '@shmring/core';
import {
  formatRate,
  micros,
  pingPongRing,
  pingPongSocket,
  ringRegion,
  socketPair,
  startPeer,
  STREAM_BATCH,
  streamRing,
  streamSocket,
} from './harness.js';

const MESSAGES = Number(process.env.DEMO_MESSAGES ?? 4_000_000);
const SIZE = Number(process.env.DEMO_SIZE ?? 64);
const SOCKET_MESSAGES = Math.min(MESSAGES, 1_000_000);
const ROUND_TRIPS = Number(process.env.DEMO_ROUND_TRIPS ?? 50_000);
const isTTY = process.stdout.isTTY;

function progress(label: string, done: number, total: number): void {
  const line = `  ${label}: ${done.toLocaleString('en')} / ${total.toLocaleString('en')} messages`;
  process.stdout.write(isTTY ? `\r${line}` : `${line}\n`);
}

/** How the ring compares, as "3.1x faster" or "1.3x slower", from speed(ring) / speed(socket). */
function versus(speedup: number): string {
  if (speedup >= 0.95 && speedup <= 1.05) return 'as fast';
  return speedup > 1 ? `${speedup.toFixed(1)}x faster` : `${(1 / speedup).toFixed(1)}x slower`;
}

async function main(): Promise<void> {
  console.log(`shmring demo: ${MESSAGES.toLocaleString('en')} messages of ${SIZE} B between two processes (backend: ${backendKind()})`);

  // 1. Streaming through a ring: this process produces, a child consumes and checks every sequence number.
  const stream = ringRegion(1 << 20);
  const sink = startPeer('ring-sink', [stream.region]);
  let lastPrint = 0;
  const ring = streamRing(stream.ring, MESSAGES, SIZE, (sent) => {
    const now = performance.now();
    if (now - lastPrint > 250) {
      lastPrint = now;
      progress('ring', sent, MESSAGES);
    }
  });
  stream.ring.close();
  const ringReport = await sink.result;
  progress('ring', MESSAGES, MESSAGES);
  process.stdout.write('\n');
  if (ringReport.count !== MESSAGES || ringReport.bad !== 0) {
    throw new Error(`the consumer saw ${ringReport.count} messages, ${ringReport.bad} out of order`);
  }
  stream.region.close();

  // 2. The same over a Unix domain socket (length-framed, batched writes).
  const server = await socketPair();
  const socketSink = startPeer('socket-sink', [], server.path);
  const socket = await server.accepted;
  progress('unix socket', 0, SOCKET_MESSAGES);
  const sock = await streamSocket(socket, SOCKET_MESSAGES, SIZE);
  const sockReport = await socketSink.result;
  progress('unix socket', SOCKET_MESSAGES, SOCKET_MESSAGES);
  process.stdout.write('\n');
  if (sockReport.count !== SOCKET_MESSAGES || sockReport.bad !== 0) throw new Error('the socket consumer lost messages');
  server.close();

  // 3. Round trips, one message in flight.
  const out = ringRegion(1 << 16);
  const back = ringRegion(1 << 16);
  const echo = startPeer('ring-echo', [out.region, back.region]);
  const ringRtt = await pingPongRing(out.ring, back.ring, ROUND_TRIPS, SIZE, 'spin');
  out.ring.close();
  await echo.result;
  const server2 = await socketPair();
  const socketEcho = startPeer('socket-echo', [], server2.path);
  const sockRtt = await pingPongSocket(await server2.accepted, Math.min(ROUND_TRIPS, 20_000), SIZE);
  await socketEcho.result;
  server2.close();

  const ringRate = ring.messages / ring.seconds;
  const sockRate = sock.messages / sock.seconds;
  const rows = [
    ['', 'SpscRing (memfd)', 'Unix socket', 'ring / socket'],
    [`throughput, ${SIZE} B`, formatRate(ringRate), formatRate(sockRate), versus(ringRate / sockRate)],
    [
      'round trip p50',
      `${micros(ringRtt, 50).toFixed(2)} µs`,
      `${micros(sockRtt, 50).toFixed(2)} µs`,
      versus(micros(sockRtt, 50) / micros(ringRtt, 50)),
    ],
    [
      'round trip p99',
      `${micros(ringRtt, 99).toFixed(2)} µs`,
      `${micros(sockRtt, 99).toFixed(2)} µs`,
      versus(micros(sockRtt, 99) / micros(ringRtt, 99)),
    ],
  ];
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  console.log('');
  for (const row of rows) console.log(row.map((cell, c) => cell.padEnd(widths[c]!)).join('  '));
  console.log(
    `\nStreaming: the ring publishes once per ${STREAM_BATCH} messages (cork/uncork), the socket writes ~64 KiB batches; round trips: one message in flight, the ring's sides spinning (tryWrite/tryRead), the socket's waiting in the event loop as a socket program does (rates and percentiles over ${MESSAGES.toLocaleString('en')} / ${SOCKET_MESSAGES.toLocaleString('en')} messages and ${ROUND_TRIPS.toLocaleString('en')} / ${Math.min(ROUND_TRIPS, 20_000).toLocaleString('en')} round trips: the socket's are fewer, to keep the demo short).`,
  );
  const load = os.loadavg()[0]!;
  const cores = os.availableParallelism();
  if (load > cores / 2) {
    console.log(
      `the machine was busy meanwhile (load average ${load.toFixed(2)} on ${cores} cores): spinning pairs need two idle cores, so these figures understate both; run it again on a quiet machine.`,
    );
  }
  console.log(
    `every message arrived once and in order (${MESSAGES.toLocaleString('en')} through the ring, ${SOCKET_MESSAGES.toLocaleString('en')} through the socket).`,
  );
}

await main();
