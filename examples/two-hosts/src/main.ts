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
import * as os from 'node:os';
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

/**
 * Runs nats-server ("$0" "$@") until this process's pipe to it closes: when
 * stop() ends the pipe, and when this process ends however it ends (SIGKILL
 * too), the watcher in the background kills the server. The shell exits
 * with the server's status (128 + its signal's number if a signal ended it),
 * after it has ended the watcher.
 * A background job of a script ignores SIGINT, so a Ctrl-C reaches the
 * server through the trap. (Node cannot ask the kernel to kill a child with
 * its parent: this is the pipe's way of doing it.)
 */
const TIED_TO_PARENT = [
  '"$0" "$@" & server=$!',
  "trap 'kill $server 2>/dev/null' INT TERM HUP",
  // A background job's stdin is /dev/null unless redirected: the watcher reads the pipe through fd 3.
  'exec 3<&0',
  '(read -r _ <&3; kill $server 2>/dev/null) & watcher=$!',
  'exec 3<&-',
  // wait returns early (over 128) when a trapped signal comes: wait again while the server lives.
  'wait $server; status=$?',
  'while [ $status -gt 128 ] && kill -0 $server 2>/dev/null; do wait $server; status=$?; done',
  // The server is gone: so goes its watcher, which must not kill a pid that may be another process's by now.
  'kill $watcher 2>/dev/null',
  'exit $status',
].join('\n');

/** How a nats-server run by TIED_TO_PARENT ended, from its shell's exit code. */
function natsEnding(code: number | null, signal: NodeJS.Signals | null): string {
  if (signal !== null) return `was killed by ${signal} (its shell was)`;
  const name = code !== null && code > 128 ? Object.entries(os.constants.signals).find(([, n]) => n === code - 128)?.[0] : undefined;
  return name !== undefined ? `was killed by ${name}` : `exited with ${code}`;
}

/**
 * A nats-server on a port the kernel picks (`-p -1`), read from its log line; stop() ends it; `ended` says how it
 * ended. `jetstreamDir` turns JetStream on, its store there; `config` is a configuration file for it (`-c`).
 */
export async function startNatsServer(options: { jetstreamDir?: string; config?: string } = {}): Promise<{
  url: (subject: string) => string;
  child: ChildProcess;
  stop: () => Promise<void>;
  ended: Promise<string>;
}> {
  const binary = natsServerBinary();
  if (binary === undefined) throw new Error(NATS_MISSING);
  const js = options.jetstreamDir === undefined ? [] : ['-js', '-sd', options.jetstreamDir];
  const config = options.config === undefined ? [] : ['-c', options.config];
  // The command line after the file: its address and port win over any the file gives.
  const child = spawn('/bin/sh', ['-c', TIED_TO_PARENT, binary, ...config, '-a', '127.0.0.1', '-p', '-1', ...js], {
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  const ended = new Promise<string>((resolve) => child.once('exit', (code, signal) => resolve(natsEnding(code, signal))));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.stdin!.end(); // the watcher kills the server; the shell exits with it
    await ended;
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
      void ended.then((how) => {
        clearTimeout(timer);
        reject(new Error(`nats-server ${how}: ${log}`));
      });
    });
    child.stderr!.resume();
    return { url: (subject) => `nats://127.0.0.1:${port}/${subject}`, child, stop, ended };
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
  // The IPC channel is the host's lifeline: it closes when this process ends, and the host stops (lifeline.ts).
  const child = spawn(process.execPath, [path.join(here, script), ...args], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
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
    // A host still running (the other failed) stops, and removes its ring's name and its bridge's marker.
    for (const child of [a?.child, b.child]) if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const countArg = process.argv[2] ?? '100000';
  if (!/^\d+$/.test(countArg) || !Number.isSafeInteger(Number(countArg))) {
    console.error(
      `usage: node main.js [count] [nats://host:port/<subject>]: count is the number of orders, a non-negative integer up to 2^53 - 1; got '${countArg}'`,
    );
    process.exit(2);
  }
  const count = Number(countArg);
  const given = process.argv[3];
  let server: Awaited<ReturnType<typeof startNatsServer>> | undefined;
  /** Ends this process: the nats-server it started stops; the hosts see their lifeline close, stop and clean up. */
  let ending = false;
  const end = async (code: number, message?: string): Promise<void> => {
    if (ending) return; // a signal's end stops the server, whose exit must not end the run again
    ending = true;
    if (message !== undefined) console.error(`main.js: ${message}`);
    await server?.stop();
    process.exit(code);
  };
  process.once('SIGINT', () => void end(130));
  process.once('SIGTERM', () => void end(143));
  try {
    // Not installed, or not starting: one line that says so (NATS_MISSING: how to install it), as for any failure.
    if (given === undefined) server = await startNatsServer();
    // The nats-server this process started dying ends the run at once (the hosts would wait for it for a minute).
    const serverDied = new Promise<never>((_, reject) => {
      void server?.ended.then((how) => reject(new Error(`the nats-server main.js started ${how}`)));
    });
    const url = given ?? server!.url('orders');
    const r = await Promise.race([exchange(url, count), serverDied]);
    console.log(
      `${url}: host A sent ${r.sent} orders, host B received ${r.received}, ${r.outOfOrder} out of order, ` +
        `${r.ms.toFixed(0)} ms (${Math.round((r.received * 1000) / r.ms).toLocaleString('en')} orders/s)`,
    );
    await end(r.received !== r.sent || r.outOfOrder !== 0 ? 1 : 0);
  } catch (err) {
    await end(1, (err as Error).message);
  }
}
