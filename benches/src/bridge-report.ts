/**
 * The bridge section's part of report.ts: the same-run ratios of the
 * bridge's records to the nats client's measured beside them (bridge.ts),
 * its table and its targets.
 */
import { BRIDGE_BATCH, BRIDGE_POLL_US } from './bridge.js';
import { fmtBytes, fmtRate } from './channel-report.js';
import type { Measurement, Metric } from './measurement.js';
import type { BenchRecord, Target } from './report.js';

const BRIDGE = 'bridge';
/** The latency row's bridge started with { poll: BRIDGE_POLL_US }. */
const BRIDGE_POLL = 'bridge-poll';
/** The latency row's bridge() without { dedicated }: waiting on its event loop, as beside other work. */
const BRIDGE_LOOP = 'bridge-loop';
const BASELINE = 'nats';
/** The latency row's floor: the ring read by a process parked as the dedicated bridge parks, alone (no bridge, no NATS). */
const RING_HOP = 'ring-hop';
const TPUT_SIZES = [64, 64 << 10];
/** Throughput: bridge ÷ nats client alone, at least this. */
const TPUT_SHARE = 0.8;
/** Latency: bridge p50 − direct publish p50, at most this (ns). */
const ADDED_P50_NS = 50_000;

function find(records: Measurement[], row: string, id: string, metric: Metric, size?: number): Measurement | undefined {
  return records.find((r) => r.name === `bridge.${row}.${id}` && r.metric === metric && (size === undefined || r.messageSize === size));
}

/** A bridge record with its ratio to the nats client's (`ratios.nats`); the baseline's own records get none. */
export function bridgeRecord(measurements: Measurement[], m: Measurement): BenchRecord {
  const record: BenchRecord = { ...m, ratioToUnixSocket: null, ratioToFloor: null };
  const [, row = '', id = ''] = m.name.split('.');
  if (id !== BRIDGE && id !== BRIDGE_POLL && id !== BRIDGE_LOOP) return record;
  const base = find(measurements, row, BASELINE, m.metric, m.messageSize);
  record.ratios = { [BASELINE]: base && base.value > 0 ? Number((m.value / base.value).toPrecision(4)) : null };
  return record;
}

function sizeLabel(size: number): string {
  return size >= 1024 ? `${size / 1024} KiB` : `${size} B`;
}

function tputTarget(records: Measurement[], size: number): Target {
  const target = `bridge: ring → NATS, ${sizeLabel(size)} messages, ≥ ${TPUT_SHARE * 100}% of the nats client alone publishing from memory (msg/s)`;
  const b = find(records, 'tput', BRIDGE, 'messages/s', size);
  const n = find(records, 'tput', BASELINE, 'messages/s', size);
  if (!b || !n || !(n.value > 0)) return { target, measured: 'not measured (missing scenario)', value: null, met: null };
  const x = b.value / n.value;
  return {
    target,
    measured: `${(x * 100).toFixed(0)}% (${fmtRate(b.value)} vs ${fmtRate(n.value)} msg/s; ${fmtBytes(b.value * size)} vs ${fmtBytes(n.value * size)})`,
    value: Number(x.toPrecision(4)),
    met: x >= TPUT_SHARE,
  };
}

function latencyTarget(records: Measurement[], id: string): Target {
  const target =
    `bridge: latency added to a NATS hop ≤ ${ADDED_P50_NS / 1000} µs (p50, one message per ms, ring → bridge → NATS → subscriber ` +
    `vs publish → NATS → subscriber)${id === BRIDGE_POLL ? `, bridge with poll: ${BRIDGE_POLL_US}` : ''}`;
  const b = find(records, 'latency', id, 'p50');
  const n = find(records, 'latency', BASELINE, 'p50');
  if (!b || !n || !(n.value > 0)) return { target, measured: 'not measured (missing scenario)', value: null, met: null };
  const added = b.value - n.value;
  const hop = find(records, 'latency', RING_HOP, 'p50');
  const floor = id === BRIDGE && hop ? `; a parked process's wake-up alone, ring → readSync: ${fmtUs(hop.value)} µs` : '';
  return {
    target,
    measured: `${fmtUs(added)} µs added (${fmtUs(b.value)} vs ${fmtUs(n.value)} µs, ${fmtRatio(b.value / n.value)}${floor})`,
    value: added,
    met: added <= ADDED_P50_NS,
  };
}

export function bridgeTargets(records: Measurement[]): Target[] {
  if (!records.some((r) => r.name.startsWith('bridge.'))) return [];
  return [...TPUT_SIZES.map((size) => tputTarget(records, size)), latencyTarget(records, BRIDGE), latencyTarget(records, BRIDGE_POLL)];
}

export function bridgeSection(records: BenchRecord[]): string | undefined {
  if (!records.some((r) => r.name.startsWith('bridge.'))) return undefined;
  const rows: string[][] = [];
  for (const size of TPUT_SIZES) {
    const b = find(records, 'tput', BRIDGE, 'messages/s', size);
    const n = find(records, 'tput', BASELINE, 'messages/s', size);
    if (!b && !n) continue;
    const x = b && n && n.value > 0 ? b.value / n.value : null;
    const show = (m: Measurement | undefined): string => (m ? `${fmtRate(m.value)} (${fmtBytes(m.value * size)})` : '–');
    rows.push([
      `ring → NATS, ${sizeLabel(size)}, msg/s`,
      show(b),
      show(n),
      x === null ? '–' : `${(x * 100).toFixed(0)}%${x >= TPUT_SHARE ? ' ✓' : ' ✗'}`,
      `≥ ${TPUT_SHARE * 100}%`,
    ]);
  }
  const variant: Record<string, string> = {
    [BRIDGE]: '',
    [BRIDGE_POLL]: `, bridge with poll ${BRIDGE_POLL_US} µs`,
    [BRIDGE_LOOP]: ', bridge() on its event loop',
  };
  for (const id of [BRIDGE, BRIDGE_POLL, BRIDGE_LOOP]) {
    for (const metric of ['p50', 'p99'] as const) {
      const b = find(records, 'latency', id, metric);
      const n = find(records, 'latency', BASELINE, metric);
      if (!b && !n) continue;
      const added = b && n ? b.value - n.value : null;
      const targeted = metric === 'p50' && id !== BRIDGE_LOOP;
      const mark = targeted && added !== null ? (added <= ADDED_P50_NS ? ' ✓' : ' ✗') : '';
      rows.push([
        `64 B, one per ms${variant[id]}, ${metric} µs`,
        b ? fmtUs(b.value) : '–',
        n ? fmtUs(n.value) : '–',
        added === null ? '–' : `${fmtRatio(b!.value / n!.value)}, ${added >= 0 ? '+' : '−'}${fmtUs(Math.abs(added))} µs${mark}`,
        targeted ? `≤ +${ADDED_P50_NS / 1000} µs` : '',
      ]);
    }
  }
  for (const metric of ['p50', 'p99'] as const) {
    const hop = find(records, 'latency', RING_HOP, metric);
    if (hop)
      rows.push([`64 B, one per ms, ring → a parked process alone (no bridge, no NATS), ${metric} µs`, fmtUs(hop.value), '', '', '']);
  }
  const align = ['---', '---:', '---:', '---:', '---:'];
  const table = [['', 'bridge', 'nats client alone', 'bridge ÷ nats client', 'target'], align, ...rows]
    .map((r) => `| ${r.join(' | ')} |`)
    .join('\n');
  return (
    "**Ring → NATS bridge** (`bridge('shm:<ring>', 'nats://…')`, the function behind `shmring bridge`, in a process of its own) " +
    'against the `nats` client alone, both talking to a nats-server the scenario starts on loopback; core NATS, no subscriber for the rates. ' +
    'Throughput: this process keeps a ring full (room for 256 messages, at least 1 MiB) and the bridge drains it into a subject; the baseline process ' +
    `publishes the same message from memory, with the bridge's \`Shmring-Type\` header (encoded once, as the bridge's), ${BRIDGE_BATCH} publishes per flush, waiting for the previous batch's flush (not this one's) before the next batch, as the bridge does; ` +
    "both counted by nats-server (`/varz`), in blocks that alternate, a rate being the median of the blocks'. " +
    'Latency: a source process sends one 64-byte message per ms (every side parks in between), into a ring that a bridge process drains, or `publish`ed ' +
    'itself; a subscription in a third process takes `process.hrtime` at arrival less the stamp the source put in the message (one clock for all processes). ' +
    "The bridge as `shmring bridge` runs it (`dedicated`: while the ring is empty it parks its thread on the ring's futex, in slices of 20 to 200 ms with a turn of " +
    `the event loop between them), the same with \`poll: ${BRIDGE_POLL_US}\` (it looks for the next record for ${BRIDGE_POLL_US / 1000} ms before parking, ` +
    'keeping a CPU busy meanwhile), and `bridge()` without `dedicated`, as a program that runs it beside its own work does (it waits on the event loop, ' +
    'polling 50 µs between turns before it parks). The last rows are a floor for what the dedicated bridge adds: the same messages into a ring whose ' +
    'reader parks as that bridge does (`readSync`, no spin) and does nothing else, timed in the reader when `readSync` returns: the wake-up of a ' +
    'parked Node process, without the bridge, NATS or the subscriber.\n\n' +
    table +
    cpuLine(records)
  );
}

/** CPU time per message of the bridge process and of the baseline publisher, from the notes of the throughput records. */
function cpuLine(records: BenchRecord[]): string {
  const per = (id: string, size: number): string | undefined =>
    find(records, 'tput', id, 'messages/s', size)?.note?.match(/([\d.]+) µs per message/)?.[1];
  const parts = TPUT_SIZES.map((size) => {
    const b = per(BRIDGE, size);
    const n = per(BASELINE, size);
    return b && n ? `${sizeLabel(size)}: bridge ${b} µs, nats client alone ${n} µs` : undefined;
  }).filter(Boolean);
  return parts.length > 0 ? `\n\nCPU time of the publishing process per message (while measuring): ${parts.join('; ')}.` : '';
}

// ---- formatting (as channel-report.ts's) ----

function fmtUs(ns: number): string {
  const us = ns / 1000;
  if (Math.abs(us) < 10) return us.toFixed(2);
  if (Math.abs(us) < 100) return us.toFixed(1);
  return Math.round(us).toLocaleString('en');
}

function fmtRatio(r: number): string {
  return `${r >= 10 ? r.toFixed(1) : r.toFixed(2)}×`;
}
