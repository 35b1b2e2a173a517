/**
 * What an idle gap costs a request, a standalone program: one request after
 * a 1 ms gap through a channel and through JSON lines over a Unix socket,
 * the contenders (and their echo servers, each in a process of its own) of
 * the channel section's request rows (channel.ts); the client spends each
 * gap either asleep (`await setTimeout(1)`, its CPU may halt) or busy (a
 * loop on performance.now() for 1 ms, its CPU stays hot). The servers
 * always sleep between requests.
 *
 *   node benches/dist/idle-cold.js [--requests N] [--out dir]   (default 1000 per row)
 *
 * Rows alternate in blocks of 50 (the first request of a block is not
 * counted). Prints JSON (one object) and a Markdown table, and writes them
 * to <dir>/idle-cold.json and .md with --out. The ratio of the two gaps says
 * how much of an idle request is paid for running on a CPU that slept.
 */
import * as os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { checkOrder, order } from './channel-common.js';
import { ChannelRpc, closeAll, JsonSocketRpc, type Rpc } from './channel.js';
import { emitResults, percentiles, Samples } from './harness.js';

const BLOCK = 50;
const GAPS = ['asleep', 'busy'] as const;
type Gap = (typeof GAPS)[number];

async function gap(kind: Gap): Promise<void> {
  if (kind === 'asleep') return sleep(1);
  const end = performance.now() + 1;
  while (performance.now() < end);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { requests: { type: 'string', default: '1000' }, out: { type: 'string' } } });
  const requests = Number(values.requests);
  if (!Number.isInteger(requests) || requests < BLOCK) throw new RangeError(`--requests=${values.requests} must be an integer >= ${BLOCK}`);
  const contenders: Rpc[] = [];
  const samples = new Map<string, Samples>();
  try {
    contenders.push(await ChannelRpc.start('channel'), await JsonSocketRpc.start());
    for (let done = 0; done < requests; done += BLOCK) {
      for (const g of GAPS) {
        for (const c of contenders) {
          const key = `${g} ${c.id}`;
          const list = samples.get(key) ?? new Samples(requests);
          samples.set(key, list);
          for (let i = 0; i <= BLOCK; i++) {
            await gap(g);
            const id = c.seq++;
            const t0 = performance.now();
            const reply = await c.request(order(id));
            const ms = performance.now() - t0;
            checkOrder(reply, id, key);
            if (i > 0) list.addMs(ms);
          }
        }
      }
    }
  } finally {
    await closeAll(contenders);
  }
  const p50Us = (key: string): number => Number((percentiles(samples.get(key)!).p50 / 1000).toFixed(1));
  const rows = GAPS.map((g) => {
    const ch = p50Us(`${g} channel`);
    const js = p50Us(`${g} json-socket`);
    return { gap: g, channelP50Us: ch, jsonSocketP50Us: js, ratio: Number((ch / js).toFixed(2)) };
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
  emitResults('idle-cold', result, md, values.out);
}

await main();
