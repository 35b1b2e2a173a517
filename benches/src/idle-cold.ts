/**
 * What an idle gap costs a request, a standalone program: one request after
 * a 1 ms gap, through a channel (`request()` against `handle(async (v) => v)`)
 * and through JSON lines over a Unix socket (the baseline of the channel
 * benchmarks), the server of both in one second process; the client spends
 * each gap either asleep (`await setTimeout(1)`, its CPU may halt) or busy
 * (a loop on performance.now() for 1 ms, its CPU stays hot). The server
 * always sleeps between requests.
 *
 *   node benches/dist/idle-cold.js [--requests N] [--out dir]   (default 1000 per row)
 *
 * Rows alternate in blocks of 50 (the first request of a block is not
 * counted). Prints JSON (one object) and a Markdown table, and writes them
 * to <dir>/idle-cold.json and .md with --out. The ratio of the two gaps says
 * how much of an idle request is paid for running on a CPU that slept.
 */
import { fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { connect, listen, type Channel } from '@shmring/channel';

const SELF = fileURLToPath(import.meta.url);
const BLOCK = 50;
const ORDER = (id: number): { id: number; name: string; values: number[] } => ({ id, name: 'order', values: [1, 2, 3] });

type Gap = 'asleep' | 'busy';
type Transport = 'channel' | 'json-socket';

/** Child: the channel server and the JSON-lines server, until the parent disconnects. */
async function server(dir: string): Promise<void> {
  const channels = await listen(path.join(dir, 'channel.sock'));
  channels.on('channel', (ch: Channel) => ch.handle(async (value: unknown) => value));
  const json = net.createServer((socket) => {
    socket.setEncoding('utf8');
    let buffered = '';
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
        const { id, params } = JSON.parse(buffered.slice(0, nl)) as { id: number; params: unknown };
        buffered = buffered.slice(nl + 1);
        void Promise.resolve(params).then((result) => socket.write(`${JSON.stringify({ id, result })}\n`));
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => json.listen(path.join(dir, 'json.sock'), resolve));
  process.on('disconnect', () => void channels.close().then(() => process.exit(0)));
  process.send!('ready');
}

/** A JSON-lines client: one request at a time, replies matched by id. */
async function jsonClient(socketPath: string): Promise<{ request(v: unknown): Promise<unknown>; close(): void }> {
  const socket = net.connect(socketPath);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.setEncoding('utf8');
  const waiting = new Map<number, (result: unknown) => void>();
  let buffered = '';
  let next = 0;
  socket.on('data', (chunk: string) => {
    buffered += chunk;
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const { id, result } = JSON.parse(buffered.slice(0, nl)) as { id: number; result: unknown };
      buffered = buffered.slice(nl + 1);
      waiting.get(id)?.(result);
      waiting.delete(id);
    }
  });
  return {
    request: (params) =>
      new Promise((resolve) => {
        const id = next++;
        waiting.set(id, resolve);
        socket.write(`${JSON.stringify({ id, params })}\n`);
      }),
    close: () => socket.destroy(),
  };
}

async function gap(kind: Gap): Promise<void> {
  if (kind === 'asleep') return sleep(1);
  const end = performance.now() + 1;
  while (performance.now() < end);
}

function median(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[sorted.length >> 1]!;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { requests: { type: 'string', default: '1000' }, out: { type: 'string' } } });
  const requests = Number(values.requests);
  if (!Number.isInteger(requests) || requests < BLOCK) throw new RangeError(`--requests=${values.requests} must be an integer >= ${BLOCK}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-idle-cold-'));
  const child = fork(SELF, ['--child', dir], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  try {
    await new Promise<void>((resolve, reject) => child.once('message', () => resolve()).once('exit', reject));
    const channel = await connect(path.join(dir, 'channel.sock'));
    const json = await jsonClient(path.join(dir, 'json.sock'));
    const clients: Record<Transport, (v: unknown) => Promise<unknown>> = {
      channel: (v) => channel.request(v),
      'json-socket': (v) => json.request(v),
    };
    const samples = new Map<string, number[]>();
    for (let done = 0; done < requests; done += BLOCK) {
      for (const g of ['asleep', 'busy'] as const) {
        for (const t of ['channel', 'json-socket'] as const) {
          const key = `${g} ${t}`;
          const list = samples.get(key) ?? [];
          samples.set(key, list);
          for (let i = 0; i <= BLOCK; i++) {
            await gap(g);
            const t0 = performance.now();
            const reply = (await clients[t](ORDER(i))) as { id: number };
            const us = (performance.now() - t0) * 1000;
            if (reply.id !== i) throw new Error(`${key}: request ${i} got the reply of ${reply.id}`);
            if (i > 0) list.push(us);
          }
        }
      }
    }
    channel.close();
    json.close();
    const rows = (['asleep', 'busy'] as const).map((g) => {
      const ch = median(samples.get(`${g} channel`)!);
      const js = median(samples.get(`${g} json-socket`)!);
      return { gap: g, channelP50Us: Number(ch.toFixed(1)), jsonSocketP50Us: Number(js.toFixed(1)), ratio: Number((ch / js).toFixed(2)) };
    });
    const result = { date: new Date().toISOString(), cpus: os.cpus().length, requestsPerRow: requests, rows };
    const md = [
      `# idle-cold (${result.date.slice(0, 10)}, ${result.cpus} CPUs, ${requests} requests per row, benches/src/idle-cold.ts)`,
      '',
      '| client during the 1 ms gap | channel p50 µs | JSON over a Unix socket p50 µs | channel ÷ JSON |',
      '| --- | ---: | ---: | ---: |',
      ...rows.map((r) => `| ${r.gap} | ${r.channelP50Us} | ${r.jsonSocketP50Us} | ${r.ratio}× |`),
      '',
    ].join('\n');
    process.stdout.write(`${JSON.stringify(result)}\n${md}`);
    if (values.out !== undefined) {
      fs.mkdirSync(values.out, { recursive: true });
      fs.writeFileSync(path.join(values.out, 'idle-cold.json'), `${JSON.stringify(result, null, 2)}\n`);
      fs.writeFileSync(path.join(values.out, 'idle-cold.md'), md);
    }
  } finally {
    child.disconnect();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') await server(process.argv[3]!);
else await main();
