/**
 * The channel section's part of report.ts: the same-run ratios of each
 * @shmring/channel record to the baselines measured beside it (channel.ts),
 * its table and its targets.
 */
import { IDLE_POLL_US } from './channel-common.js';
import type { Measurement, Metric } from './measurement.js';
import type { BenchRecord, Target } from './report.js';

/** The contenders that are @shmring/channel (their records get ratios): its default setting, and the idle row's `poll` one. */
const CHANNEL_IDS = new Set(['channel', 'channel-poll']);

/** `channel.<row>.<contender>` → row and contender. */
function parts(name: string): { row: string; id: string } {
  const [, row = '', id = ''] = name.split('.');
  return { row, id };
}

function find(records: Measurement[], row: string, id: string, metric: Metric): Measurement | undefined {
  return records.find((r) => r.name === `channel.${row}.${id}` && r.metric === metric);
}

interface Spec {
  label: string;
  row: string;
  /** The channel contender of the line: 'channel' (default options) unless given. */
  id?: string;
  metric: Metric;
  baseline: string;
  show: (v: number) => string;
  /** On the ratio channel ÷ baseline. */
  target?: { text: string; met: (x: number) => boolean; describe: string };
}

const SPECS: Spec[] = [
  {
    label: '64 requests in flight, req/s',
    row: 'inflight64',
    metric: 'messages/s',
    baseline: 'json-socket',
    show: (v) => fmtRate(v),
    target: { text: '≥ 3×', met: (x) => x >= 3, describe: '64 requests in flight ≥ 3× JSON over a Unix socket (req/s)' },
  },
  {
    label: '64 requests in flight, req/s',
    row: 'inflight64',
    metric: 'messages/s',
    baseline: 'json-socket-corked',
    show: (v) => fmtRate(v),
  },
  {
    label: '64 requests in flight, req/s',
    row: 'inflight64',
    metric: 'messages/s',
    baseline: 'ipc',
    show: (v) => fmtRate(v),
    target: { text: '≥ 3×', met: (x) => x >= 3, describe: "64 requests in flight ≥ 3× process.send with serialization 'advanced' (req/s)" },
  },
  { label: 'one request at a time, back to back, p50 µs', row: 'b2b', metric: 'p50', baseline: 'json-socket', show: (v) => fmtUs(v) },
  { label: 'one request at a time, back to back, p50 µs', row: 'b2b', metric: 'p50', baseline: 'ipc', show: (v) => fmtUs(v) },
  { label: 'one request at a time, back to back, p99 µs', row: 'b2b', metric: 'p99', baseline: 'json-socket', show: (v) => fmtUs(v) },
  {
    label: 'request after 1 ms idle, p50 µs',
    row: 'idle',
    metric: 'p50',
    baseline: 'json-socket',
    show: (v) => fmtUs(v),
    target: { text: '≤ 0.8×', met: (x) => x <= 0.8, describe: 'one request after 1 ms idle ≤ 0.8× JSON over a Unix socket (p50)' },
  },
  { label: 'request after 1 ms idle, p99 µs', row: 'idle', metric: 'p99', baseline: 'json-socket', show: (v) => fmtUs(v) },
  {
    label: `request after 1 ms idle, poll ${IDLE_POLL_US} µs, p50 µs`,
    row: 'idle',
    id: 'channel-poll',
    metric: 'p50',
    baseline: 'json-socket',
    show: (v) => fmtUs(v),
    target: {
      text: '≤ 0.8×',
      met: (x) => x <= 0.8,
      describe: `one request after 1 ms idle ≤ 0.8× JSON over a Unix socket (p50), poll: ${IDLE_POLL_US}`,
    },
  },
  {
    label: `request after 1 ms idle, poll ${IDLE_POLL_US} µs, p99 µs`,
    row: 'idle',
    id: 'channel-poll',
    metric: 'p99',
    baseline: 'json-socket',
    show: (v) => fmtUs(v),
  },
  {
    label: '1 MiB Buffers one way, bytes/s',
    row: 'bulk',
    metric: 'bytes/s',
    baseline: 'socket',
    show: (v) => fmtBytes(v),
    target: {
      text: '≥ 3×',
      met: (x) => x >= 3,
      describe: '1 MiB Buffers one way across processes ≥ 3× a Unix socket with length-prefixed frames (bytes/s)',
    },
  },
  {
    label: 'small objects main → worker, msg/s',
    row: 'workers',
    metric: 'messages/s',
    baseline: 'messageport',
    show: (v) => fmtRate(v),
    target: { text: '≥ 3×', met: (x) => x >= 3, describe: 'small objects main thread → worker ≥ 3× MessagePort postMessage (msg/s)' },
  },
];

function ratio(value: number, base: Measurement | undefined): number | null {
  if (!base || !(base.value > 0)) return null;
  return Number((value / base.value).toPrecision(4));
}

/** A channel record with its ratios: a channel contender's to each baseline beside it (`ratios`, by contender), none for the baselines. */
export function channelRecord(measurements: Measurement[], m: Measurement): BenchRecord {
  const { row, id } = parts(m.name);
  const record: BenchRecord = { ...m, ratioToUnixSocket: null, ratioToFloor: null };
  if (!CHANNEL_IDS.has(id)) return record;
  const ratios: Record<string, number | null> = {};
  for (const spec of SPECS.filter((s) => s.row === row && (s.id ?? 'channel') === id && s.metric === m.metric)) {
    ratios[spec.baseline] = ratio(m.value, find(measurements, row, spec.baseline, m.metric));
  }
  if (m.metric === 'mean') ratios['json-socket'] = ratio(m.value, find(measurements, row, 'json-socket', m.metric));
  if (Object.keys(ratios).length === 0) return record;
  record.ratios = ratios;
  record.ratioToUnixSocket = ratios['json-socket'] ?? ratios.socket ?? null;
  if (row === 'workers') record.ratioToMessagePort = ratios.messageport ?? null;
  return record;
}

export function channelSection(records: BenchRecord[]): string | undefined {
  if (!records.some((r) => r.name.startsWith('channel.'))) return undefined;
  const rows: string[][] = [];
  let previous = '';
  for (const spec of SPECS) {
    const ch = find(records, spec.row, spec.id ?? 'channel', spec.metric);
    const base = find(records, spec.row, spec.baseline, spec.metric);
    if (!ch && !base) continue;
    const x = ch && base && base.value > 0 ? ch.value / base.value : null;
    const mark = x === null || !spec.target ? '' : spec.target.met(x) ? ' ✓' : ' ✗';
    const same = spec.label === previous;
    previous = spec.label;
    rows.push([
      same ? '' : spec.label,
      same ? '' : ch ? spec.show(ch.value) : '–',
      base?.transport ?? spec.baseline,
      base ? spec.show(base.value) : '–',
      `${fmtRatio(x)}${mark}`,
      spec.target?.text ?? '',
    ]);
  }
  const notes: string[] = [];
  const mech = records.find((r) => r.name.startsWith('channel.') && r.mechanism)?.mechanism;
  if (mech) notes.push(`wait mechanism of the channel processes: ${mech}`);
  const cpu = (row: string, id: string, metric: Metric): string | undefined =>
    find(records, row, id, metric)
      ?.note?.match(/CPU while measuring \(of one CPU\): [^;]*/)?.[0]
      ?.replace('CPU while measuring (of one CPU): ', '');
  const cpuLines = [
    ['64 in flight', 'inflight64', 'messages/s', ['channel', 'json-socket', 'json-socket-corked', 'ipc']],
    ['back to back', 'b2b', 'p50', ['channel', 'json-socket', 'ipc']],
    ['after 1 ms idle', 'idle', 'p50', ['channel', 'channel-poll', 'json-socket']],
    ['1 MiB one way', 'bulk', 'bytes/s', ['channel', 'socket']],
    ['to a worker', 'workers', 'messages/s', ['channel', 'messageport']],
  ] as const;
  const cpuText = cpuLines
    .map(([label, row, metric, ids]) => {
      const each = ids
        .map((id) => {
          const c = cpu(row, id, metric as Metric);
          return c ? `${id} ${c}` : undefined;
        })
        .filter(Boolean);
      return each.length > 0 ? `${label}: ${each.join('; ')}` : undefined;
    })
    .filter(Boolean);
  if (cpuText.length > 0) notes.push(`CPU while measuring, % of one CPU: ${cpuText.join('. ')}`);
  if (find(records, 'idle', 'channel-poll', 'p50')) {
    const polled = cpu('idle', 'channel-poll', 'p50');
    const parked = cpu('idle', 'channel', 'p50');
    notes.push(
      `idle, poll ${IDLE_POLL_US} µs (channel-poll): \`listen(path, { poll: ${IDLE_POLL_US} })\` and \`connect(path, { poll: ${IDLE_POLL_US} })\`: ` +
        `an end waiting for the other side's next record looks for it between event-loop turns for up to ${IDLE_POLL_US / 1000} ms before it parks. ` +
        'The server, its handler always waiting for requests, so never parks across the 1 ms gaps: polling keeps a CPU busy during each gap. ' +
        'The client waits only for its replies' +
        (polled ? `. CPU while measuring, % of one CPU: ${polled}` : '') +
        (parked ? ` (default setting: ${parked})` : '') +
        ". Both idle targets are reported, the default setting's and this one's",
    );
  }
  const idleNote = find(records, 'idle', 'channel', 'p50')?.note?.match(/^\d+ requests/)?.[0];
  if (idleNote) notes.push(`idle: ${idleNote} per contender`);
  return (
    '**Channel** (`@shmring/channel`, default options: structured clone, 1 MiB rings; Buffers take the raw path; ' +
    `the idle row also with \`poll: ${IDLE_POLL_US}\` on both ends): ` +
    'what a program sees against what it would otherwise use, all async on the event loop. ' +
    "The value is a small object `{ id, name: 'order', values: [1, 2, 3] }`, a fresh one each time. " +
    'Each row runs in a process of its own; the channel and its baselines each have their own peer and are measured in turn in short blocks, ' +
    "the order rotating; a rate is the median of the blocks' rates. In the ratio column: channel ÷ baseline, from the same process and moments.\n\n" +
    `${table(['', '@shmring/channel', 'baseline', 'baseline value', 'channel ÷ baseline', 'target'], rows)}\n\n` +
    '64 in flight: 64 async loops in the client each `await`ing one request after the other against an async echo handler in a second process ' +
    '(channel: `connect(path)` → `request()`, the server `listen(path)` → `handle(async (v) => v)`; JSON: `{id, params}` lines over a Unix socket, ' +
    "replies matched by id, one write per message; JSON corked (64 in flight only): the same, each end corking its socket at its first write of an event-loop turn and uncorking it on nextTick, as the channel publishes its records once per turn (at most 16 a batch): the baseline that batches as the channel does; IPC: `child_process.fork` with `serialization: 'advanced'`, `{id, params}` → `process.send({id, result})`). " +
    'Back to back: one loop in the client, each request sent when the reply to the last came (peers of its own, as above), after a warm-up block each ' +
    '(a fresh pair of processes takes some thousands of requests to reach its pace, on every transport). ' +
    `Idle: \`await setTimeout(1)\` before each request; the channel with its default polling, and with \`poll: ${IDLE_POLL_US}\` ` +
    `(µs) on both ends, its own peer and line. ` +
    '1 MiB one way: the producer `await`s each `send(buffer)` (the socket: length prefix and buffer in one corked write, waiting for `drain` ' +
    "while more than 4 MiB are queued) for the block's time, then sends an end; the rate is the bytes the consumer acknowledged over the time to its answer. " +
    'To a worker: `channelPair()` / `openChannel(handle)` against `postMessage` on a MessageChannel (at most 8192 unacknowledged), the worker counting.' +
    (notes.length > 0 ? `\n\n${notes.map((n) => `- ${n}`).join('\n')}` : '')
  );
}

export function channelTargets(records: Measurement[]): Target[] {
  const out: Target[] = [];
  for (const spec of SPECS) {
    if (!spec.target) continue;
    const ch = find(records, spec.row, spec.id ?? 'channel', spec.metric);
    const base = find(records, spec.row, spec.baseline, spec.metric);
    const target = `channel: ${spec.target.describe}`;
    if (!ch || !base || !(base.value > 0)) {
      out.push({ target, measured: 'not measured (missing scenario)', value: null, met: null });
      continue;
    }
    const x = ch.value / base.value;
    const unit = spec.metric === 'p50' ? ' µs' : '';
    out.push({
      target,
      measured: `${fmtRatio(x)} (${spec.show(ch.value)}${unit} vs ${spec.show(base.value)}${unit}${ch.mechanism ? `; ${ch.mechanism}` : ''})`,
      value: Number(x.toPrecision(4)),
      met: spec.target.met(x),
    });
  }
  return out;
}

// ---- formatting (as report.ts's) ----

function fmtUs(ns: number): string {
  const us = ns / 1000;
  if (us < 10) return us.toFixed(2);
  if (us < 100) return us.toFixed(1);
  return Math.round(us).toLocaleString('en');
}

export function fmtRate(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(v >= 1e8 ? 0 : 2)} M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v >= 1e5 ? 0 : 1)} k`;
  return v.toFixed(0);
}

export function fmtBytes(v: number): string {
  if (v >= 1e9) return `${(v / 1e9).toFixed(2)} GB/s`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(v >= 1e8 ? 0 : 1)} MB/s`;
  return `${(v / 1e3).toFixed(0)} kB/s`;
}

function fmtRatio(r: number | null): string {
  if (r === null) return '–';
  return `${r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r >= 0.1 ? r.toFixed(2) : r.toPrecision(2)}×`;
}

function table(header: string[], rows: string[][]): string {
  const align = header.map((_, i) => (i === 0 || i === 2 ? '---' : '---:'));
  return [header, align, ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}
