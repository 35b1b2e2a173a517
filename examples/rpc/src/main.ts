/**
 * Request/response between two processes over a channel: starts the pricing
 * server (server.ts) as a child process, connects to its socket path, sends
 * N orders with 64 in flight, prints throughput and latency, then closes the
 * channel and stops the server.
 *
 *   node examples/rpc/dist/src/main.js [requests] [socket path]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { connect } from '@shmring/channel';
import { percentile, run } from './client.js';

const IN_FLIGHT = 64;
const requestsArg = process.argv[2] ?? '100000';
if (!/^\d+$/.test(requestsArg) || !Number.isSafeInteger(Number(requestsArg))) {
  console.error(`usage: node main.js [requests] [socket path]: requests is a non-negative integer; got '${requestsArg}'`);
  process.exit(2);
}
const requests = Number(requestsArg);
const socketPath = process.argv[3] ?? path.join(os.tmpdir(), `shmring-rpc-${process.pid}.sock`);
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

/** Starts the server; resolves once it prints "listening". Its later lines go to `lines`. */
function startServer(lines: string[]): Promise<ChildProcess> {
  const serverJs = fileURLToPath(new URL('./server.js', import.meta.url));
  const child = spawn(process.execPath, [serverJs, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`the server exited with ${code} before listening`)));
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('listening ')) resolve(child);
      else lines.push(line);
    });
  });
}

/** Resolves with the exit code once the child has exited and its stdout is read to the end. */
function closed(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => child.once('close', (code) => resolve(code)));
}

const serverLines: string[] = [];
const server = await startServer(serverLines);
const serverClosed = closed(server);
try {
  console.log(`pricing server: pid ${server.pid}, ${socketPath}`);
  const channel = await connect(socketPath, { timeoutMs: 10_000 });
  const r = await run(channel, requests, IN_FLIGHT);
  channel.close();
  await channel.closed;

  const refused =
    Object.entries(r.refused)
      .map(([code, n]) => `${fmt(n)} ${code}`)
      .join(', ') || 'none';
  console.log(
    `client: ${fmt(r.requests)} requests, ${IN_FLIGHT} in flight: ${fmt(r.priced)} priced, refused: ${refused}, ${r.wrong} wrong`,
  );
  console.log(`throughput: ${fmt((r.requests / r.ms) * 1000)} requests/s (${fmt(r.ms)} ms)`);
  const us = (p: number): string => fmt(percentile(r.latencies, p));
  if (r.latencies.length === 0) console.log('latency µs: none (no requests)');
  else console.log(`latency µs: p50 ${us(0.5)}  p90 ${us(0.9)}  p99 ${us(0.99)}  max ${fmt(r.latencies[r.latencies.length - 1]!)}`);
} finally {
  server.kill('SIGTERM');
}
const code = await serverClosed;
for (const line of serverLines) console.log(line);
if (code !== 0) throw new Error(`the server exited with ${code}`);
