/**
 * Two "hosts" joined through NATS, on one machine: host B (host-b.js: NATS
 * → bridge → its ring → reader) and host A (host-a.js: writer → its ring →
 * bridge → NATS), each a process with its own ring, sharing no memory,
 * only a NATS subject. With no URL it starts a nats-server of its own on a
 * free loopback port, and stops it at the end.
 *
 *   node examples/two-hosts/dist/src/main.js [count] [nats://host:port/<subject>]
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { newRun } from './orders.js';

const here = path.dirname(fileURLToPath(import.meta.url));

export const NATS_MISSING = 'nats-server is not installed (apt-get install -y nats-server)';

/** The nats-server binary, or undefined when it is not installed. */
export function natsServerBinary(): string | undefined {
  for (const candidate of ['nats-server', '/usr/sbin/nats-server', '/usr/bin/nats-server']) {
    const probe = spawnSync(candidate, ['--version'], { stdio: 'ignore' });
    if (probe.error === undefined && probe.status === 0) return candidate;
  }
  return undefined;
}

/** A nats-server on a port the kernel picks (`-p -1`), read from its log line; stop() ends it. */
export async function startNatsServer(
  options: { jetstreamDir?: string } = {},
): Promise<{ url: (subject: string) => string; child: ChildProcess; stop: () => Promise<void> }> {
  const binary = natsServerBinary();
  if (binary === undefined) throw new Error(NATS_MISSING);
  const js = options.jetstreamDir === undefined ? [] : ['-js', '-sd', options.jetstreamDir];
  const child = spawn(binary, ['-a', '127.0.0.1', '-p', '-1', ...js], { stdio: ['ignore', 'ignore', 'pipe'] });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    await exited;
  };
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let log = '';
      const timer = setTimeout(() => reject(new Error(`nats-server did not say its port within 10 s: ${log}`)), 10_000);
      child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
        log += chunk;
        const m = /Listening for client connections on [^\s]+:(\d+)/.exec(log);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`nats-server exited with ${code}: ${log}`));
      });
    });
    child.stderr!.resume();
    return { url: (subject) => `nats://127.0.0.1:${port}/${subject}`, child, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Runs a host process; resolves with its stdout once it exits with 0. `onLine` sees each line as it comes. */
function host(
  script: string,
  args: string[],
  onLine: (line: string) => void = () => undefined,
): { child: ChildProcess; done: Promise<string> } {
  const child = spawn(process.execPath, [path.join(here, script), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    err += chunk;
    process.stderr.write(chunk);
  });
  let out = '';
  let partial = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
    const lines = (partial + chunk).split('\n');
    partial = lines.pop()!;
    for (const line of lines) onLine(line);
  });
  const done = new Promise<string>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) =>
      code === 0 ? resolve(out) : reject(new Error(`${script} exited with ${signal ?? code}: ${err.trim()}`)),
    );
  });
  return { child, done };
}

export interface Outcome {
  sent: number;
  received: number;
  outOfOrder: number;
  ms: number;
}

/** Host B, then (once it is subscribed) host A, on subject `url`; resolves with what they said. */
export async function exchange(url: string, count: number): Promise<Outcome> {
  let onReady!: () => void;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  // Both hosts are told the run: host B checks it, and passes over what a JetStream stream kept of earlier runs.
  const run = newRun();
  const b = host('host-b.js', [url, '60', run], (line) => line === 'ready' && onReady());
  let a: ReturnType<typeof host> | undefined;
  try {
    await Promise.race([
      ready,
      b.done.then(() => {
        throw new Error('host-b.js exited before it was ready');
      }),
    ]);
    const started = performance.now();
    a = host('host-a.js', [url, String(count), run]);
    const [outA, outB] = await Promise.all([a.done, b.done]);
    const last = (out: string): Record<string, number> => JSON.parse(out.trim().split('\n').pop()!) as Record<string, number>;
    const sa = last(outA);
    const sb = last(outB);
    return { sent: sa.sent!, received: sb.received!, outOfOrder: sb.outOfOrder!, ms: performance.now() - started };
  } finally {
    for (const child of [a?.child, b.child]) if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const countArg = process.argv[2] ?? '100000';
  if (!/^\d+$/.test(countArg) || !Number.isSafeInteger(Number(countArg))) {
    console.error(
      `usage: node main.js [count] [nats://host:port/<subject>]: count is the number of orders, a non-negative integer; got '${countArg}'`,
    );
    process.exit(2);
  }
  const count = Number(countArg);
  const given = process.argv[3];
  const server = given === undefined ? await startNatsServer() : undefined;
  try {
    const url = given ?? server!.url('orders');
    const r = await exchange(url, count);
    console.log(
      `${url}: host A sent ${r.sent} orders, host B received ${r.received}, ${r.outOfOrder} out of order, ` +
        `${r.ms.toFixed(0)} ms (${Math.round((r.received * 1000) / r.ms).toLocaleString('en')} orders/s)`,
    );
    if (r.received !== r.sent || r.outOfOrder !== 0) process.exitCode = 1;
  } finally {
    await server?.stop();
  }
}
