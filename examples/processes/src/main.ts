/**
 * Runs the two uses side by side: a producer and a consumer process that
 * find each other by a POSIX name, then the same over a memfd handed over a
 * Unix socket.  node examples/processes/dist/src/main.js [count]
 *
 * If either child fails, the other is stopped; if this process ends, however
 * it ends, both children stop and clean up (lifeline.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** How a child ended, for a message: its exit code or the signal that killed it. */
function ending(code: number | null, signal: NodeJS.Signals | null): string {
  return signal !== null ? `was killed by ${signal}` : `exited with ${code}`;
}

/** Starts `script`; `done` resolves with its stdout once it exits 0, and rejects (naming how it ended) otherwise. */
function start(script: string, args: string[]): { child: ChildProcess; done: Promise<string> } {
  // The IPC channel is the children's lifeline: it closes when this process ends, and they stop (lifeline.ts).
  const child = spawn(process.execPath, [path.join(here, script), ...args], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  const done = new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d));
    child.on('error', reject);
    child.on('close', (code, signal) => (code === 0 ? resolve(out.trim()) : reject(new Error(`${script} ${ending(code, signal)}`))));
  });
  return { child, done };
}

export async function exchange(how: 'posix' | 'memfd', n: string): Promise<{ received: number; outOfOrder: number; ms: number }> {
  const where =
    how === 'posix'
      ? `shmring-example-${process.pid}-${Date.now()}`
      : path.join(os.tmpdir(), `shmring-example-${process.pid}-${Date.now()}.sock`);
  const started = performance.now();
  const producer = start('producer.js', [how, where, n]);
  const consumer = start('consumer.js', [how, where]);
  // One failing stops the other: a producer left alone would wait for its consumer for ever.
  const stopOther = (other: ChildProcess) => (err: unknown) => {
    other.kill('SIGTERM');
    throw err;
  };
  const [, summary] = await Promise.all([producer.done.catch(stopOther(consumer.child)), consumer.done.catch(stopOther(producer.child))]);
  return { ...(JSON.parse(summary) as { received: number; outOfOrder: number }), ms: performance.now() - started };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const count = process.argv[2] ?? '100000';
  if (!/^\d+$/.test(count) || !Number.isSafeInteger(Number(count))) {
    console.error(
      `usage: node main.js [count]: count is the number of messages, a non-negative integer up to ${Number.MAX_SAFE_INTEGER}; got '${count}'`,
    );
    process.exit(2);
  }
  // Signalled, say so and end at once: the children see their lifeline close, stop and clean up. (On Ctrl-C the
  // children get SIGINT too and stay quiet: this is the one line that says why the run stopped.)
  process.once('SIGINT', () => {
    console.error('main.js: interrupted (SIGINT); stopped');
    process.exit(130);
  });
  process.once('SIGTERM', () => {
    console.error('main.js: terminated (SIGTERM); stopped');
    process.exit(143);
  });
  try {
    for (const how of ['posix', 'memfd'] as const) {
      const r = await exchange(how, count);
      console.log(`${how}: ${r.received} messages, ${r.outOfOrder} out of order, ${r.ms.toFixed(0)} ms`);
      // A run that lost or reordered messages fails, and the next run still goes (its result is worth seeing too).
      if (r.received !== Number(count) || r.outOfOrder !== 0) {
        console.error(`main.js: ${how}: ${r.received} of ${count} messages came, ${r.outOfOrder} out of order`);
        process.exitCode = 1;
      }
    }
  } catch (err) {
    console.error(`main.js: ${(err as Error).message}`);
    process.exit(1);
  }
}
