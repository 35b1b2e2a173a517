/**
 * Runs the two uses side by side: a producer and a consumer process that
 * find each other by a POSIX name, then the same over a memfd handed over a
 * Unix socket.  node examples/processes/dist/src/main.js [count]
 */
import { spawn } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

function run(script: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(here, script), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`${script} exited with ${code}`))));
  });
}

export async function exchange(how: 'posix' | 'memfd', n: string): Promise<{ received: number; outOfOrder: number; ms: number }> {
  const where =
    how === 'posix'
      ? `shmring-example-${process.pid}-${Date.now()}`
      : path.join(os.tmpdir(), `shmring-example-${process.pid}-${Date.now()}.sock`);
  const started = performance.now();
  const [, summary] = await Promise.all([run('producer.js', [how, where, n]), run('consumer.js', [how, where])]);
  return { ...(JSON.parse(summary) as { received: number; outOfOrder: number }), ms: performance.now() - started };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const count = process.argv[2] ?? '100000';
  if (!/^\d+$/.test(count) || !Number.isSafeInteger(Number(count))) {
    console.error(`usage: node main.js [count]: count is the number of messages, a non-negative integer; got '${count}'`);
    process.exit(2);
  }
  for (const how of ['posix', 'memfd'] as const) {
    const r = await exchange(how, count);
    console.log(`${how}: ${r.received} messages, ${r.outOfOrder} out of order, ${r.ms.toFixed(0)} ms`);
  }
}
