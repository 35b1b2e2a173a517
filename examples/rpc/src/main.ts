/**
 * Request/response between two processes over a channel: starts the pricing
 * server (server.ts) as a child process, connects to its socket path, sends
 * N orders with 64 in flight, prints throughput and latency, then closes the
 * channel and stops the server. If the server dies, the run stops at once
 * and says so; if this process ends, however it ends, the server stops too
 * (its IPC channel closes) and removes its socket path. A server that could
 * not remove it (killed by SIGKILL, crashed) leaves it to this process, which
 * removes it once the server has ended. A run with a wrong answer exits 1.
 *
 *   node examples/rpc/dist/src/main.js [requests] [socket path]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { connect } from '@shmring/channel';
import { run, RunStopped } from './client.js';

const IN_FLIGHT = 64;
const requestsArg = process.argv[2] ?? '100000';
if (!/^\d+$/.test(requestsArg) || !Number.isSafeInteger(Number(requestsArg))) {
  console.error(
    `usage: node main.js [requests] [socket path]: requests is a non-negative integer up to ${Number.MAX_SAFE_INTEGER}; got '${requestsArg}'`,
  );
  process.exit(2);
}
const requests = Number(requestsArg);
const socketPath = process.argv[3] ?? path.join(os.tmpdir(), `shmring-rpc-${process.pid}.sock`);
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

/** How a child ended: its exit code, or the signal that killed it. */
interface Ending {
  code: number | null;
  signal: NodeJS.Signals | null;
}
const said = (e: Ending): string => (e.signal !== null ? `was killed by ${e.signal}` : `exited with ${e.code}`);

/** Starts the server; resolves once it prints "listening". Its later lines go to `lines`. */
function startServer(lines: string[]): Promise<ChildProcess> {
  const serverJs = fileURLToPath(new URL('./server.js', import.meta.url));
  // The IPC channel is the server's lifeline: it closes when this process ends, and the server stops.
  const child = spawn(process.execPath, [serverJs, socketPath], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => reject(new Error(`the server ${said({ code, signal })} before listening`)));
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('listening ')) resolve(child);
      else lines.push(line);
    });
  });
}

/**
 * Resolves once the server has exited and its stdout is read to the end, and its socket path is gone: a server that
 * ends cleanly removes it itself, one killed by SIGKILL (or crashed) cannot, and the file would stay.
 */
function closed(child: ChildProcess): Promise<Ending> {
  return new Promise((resolve) =>
    child.once('close', (code, signal) => {
      fs.rmSync(socketPath, { force: true });
      resolve({ code, signal });
    }),
  );
}

function fail(message: string): never {
  console.error(`main.js: ${message}`);
  process.exit(1);
}

const serverLines: string[] = [];
const server = await startServer(serverLines).catch((err: Error) => fail(err.message));
const serverClosed = closed(server);
// Signalled: stop the server (it closes its channels and removes the socket path) and end.
for (const [signal, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
] as const) {
  process.once(signal, () => {
    server.kill('SIGTERM');
    process.exit(code);
  });
}
let failed: string | undefined; // what was wrong with a run that ended
try {
  console.log(`pricing server: pid ${server.pid}, ${socketPath}`);
  const channel = await connect(socketPath, { timeoutMs: 10_000 });
  console.log(`client: connected, sending ${fmt(requests)} requests`);
  const r = await run(channel, requests, IN_FLIGHT);
  channel.close();
  await channel.closed;

  const refused =
    Object.entries(r.refused)
      .map(([code, n]) => `${fmt(n)} ${code}`)
      .join(', ') || 'none';
  console.log(
    `client: ${fmt(r.requests)} requests, ${Math.min(IN_FLIGHT, r.requests)} in flight: ${fmt(r.priced)} priced, refused: ${refused}, ${r.wrong} wrong`,
  );
  console.log(`throughput: ${fmt((r.requests / r.ms) * 1000)} requests/s (${fmt(r.ms)} ms)`);
  const us = (p: number): string => fmt(r.latencies.percentile(p));
  if (r.latencies.count === 0) console.log('latency µs: none (no requests)');
  else console.log(`latency µs: p50 ${us(0.5)}  p90 ${us(0.9)}  p99 ${us(0.99)}  max ${fmt(r.latencies.max)}`);
  // A run with wrong answers is a failed run, however fast it was (the server is stopped and heard from first).
  const answered = r.priced + Object.values(r.refused).reduce((a, b) => a + b, 0);
  if (r.wrong !== 0 || answered !== requests) {
    failed = `${fmt(answered)} of ${fmt(requests)} requests answered, ${fmt(r.wrong)} of the answers wrong`;
  }
} catch (err) {
  server.kill('SIGTERM');
  // How the server ended, if it did (a server that died is why the run stopped).
  const ending = await Promise.race([serverClosed, sleep(1000).then(() => undefined)]);
  const stopped = err instanceof RunStopped ? `stopped after ${fmt(err.answered)} of ${fmt(requests)} requests were answered: ` : '';
  const why = ending !== undefined && ending.signal !== 'SIGTERM' ? `; the server ${said(ending)}` : '';
  fail(`${stopped}${(err as Error).message}${why}`);
}
server.kill('SIGTERM');
const ending = await serverClosed;
for (const line of serverLines) console.log(line);
if (ending.code !== 0) fail(`the server ${said(ending)}`);
if (failed !== undefined) fail(failed);
