/**
 * From the measurements of one run to what is written: the records with
 * their ratios to the baselines of the same run (the Unix socket, the C
 * floor, MessagePort for threads), the targets, the Markdown tables and the
 * latency chart (SVG, drawn by hand).
 */
import { bridgeRecord, bridgeSection, bridgeTargets } from './bridge-report.js';
import { channelRecord, channelSection, channelTargets } from './channel-report.js';
import { wakeFloorName } from './floor.js';
import type { Measurement, Metric } from './measurement.js';

export interface BenchRecord extends Measurement {
  /** value / the Unix socket's value for the same metric and size (latency: lower is better; rates: higher). */
  ratioToUnixSocket: number | null;
  /** Latency: value / the C floor's; messages/s: value / the C ring's; bytes/s: value / memcpy bandwidth for the same block size. */
  ratioToFloor: number | null;
  /** Worker-thread scenarios: value / MessagePort's. */
  ratioToMessagePort?: number | null;
  /** Channel and bridge sections (channel.ts, bridge.ts): value / each baseline measured beside it, by the baseline's contender id. */
  ratios?: Record<string, number | null>;
}

export interface Target {
  target: string;
  measured: string;
  value: number | null;
  met: boolean | null;
}

export interface Machine {
  cpu: string;
  cores: number;
  node: string;
  kernel: string;
  backend: string;
  loadAverageAtStart: number[];
}

export interface Run {
  date: string;
  mode: 'full' | 'quick';
  seconds: number;
  machine: Machine;
  notes: string[];
  targets: Target[];
  records: BenchRecord[];
}

const LATENCY: ReadonlySet<Metric> = new Set(['p50', 'p99', 'p99.9', 'max', 'mean']);
const SOCKET_RTT = 'rtt.proc.unix-socket';
/** The Unix socket's round trip with an idle gap before each send (run.ts: gapMs 0.2), as the parked row's. */
const SOCKET_RTT_IDLE = 'rtt.proc.unix-socket-idle';
/** Round trips measured with an idle gap before each send: divided by the socket with the same gap, not the back-to-back one. */
const IDLE_RTT: ReadonlySet<string> = new Set(['rtt.proc.spsc-parked', SOCKET_RTT_IDLE]);
const SOCKET_TPUT = 'tput.proc.unix-socket';
/** The SpscRing streams, each with the label a target line gives it. */
const SPSC_STREAM_LABELS = {
  'tput.proc.spsc-copy': 'copy',
  'tput.proc.spsc-zc': 'zero-copy',
  'tput.proc.spsc-copy-cork': 'copy, corked',
  'tput.proc.spsc-zc-cork': 'zero-copy, corked',
} as const;
type SpscStream = keyof typeof SPSC_STREAM_LABELS;
const SPSC_STREAMS = Object.keys(SPSC_STREAM_LABELS) as SpscStream[];
const FLOOR_RTT = 'rtt.floor';
const FLOOR_MEMCPY = 'tput.floor.memcpy';
const FLOOR_RING = 'tput.floor.c-ring';
/** region.sync() (sync-cost.ts) and its baseline, write(2) + fdatasync of the same bytes. */
const SYNC_REGION = 'persist.sync.region';
const SYNC_BASELINE = 'persist.sync.write-fdatasync';

function find(records: Measurement[], name: string, metric: Metric, messageSize?: number): Measurement | undefined {
  return records.find((r) => r.name === name && r.metric === metric && (messageSize === undefined || r.messageSize === messageSize));
}

function ratio(value: number, base: Measurement | undefined): number | null {
  if (!base || !(base.value > 0)) return null;
  return Number((value / base.value).toPrecision(4));
}

/** Adds the same-run ratios to every measurement. */
export function withRatios(measurements: Measurement[]): BenchRecord[] {
  return measurements.map((m) => {
    if (m.name.startsWith('channel.')) return channelRecord(measurements, m);
    if (m.name.startsWith('bridge.')) return bridgeRecord(measurements, m);
    let socket: Measurement | undefined;
    let floor: Measurement | undefined;
    let port: Measurement | undefined;
    if (LATENCY.has(m.metric) && m.name.startsWith('rtt.')) {
      socket = find(measurements, IDLE_RTT.has(m.name) ? SOCKET_RTT_IDLE : SOCKET_RTT, m.metric);
      floor = find(measurements, FLOOR_RTT, m.metric);
      if (m.name.startsWith('rtt.thread.')) port = find(measurements, 'rtt.thread.messageport', m.metric);
    } else if ((m.metric === 'messages/s' || m.metric === 'bytes/s') && m.name.startsWith('tput.')) {
      socket = find(measurements, SOCKET_TPUT, m.metric, m.messageSize);
      if (m.metric === 'messages/s' && m.name !== FLOOR_RING) floor = find(measurements, FLOOR_RING, 'messages/s', m.messageSize);
      if (m.metric === 'bytes/s' && m.name !== FLOOR_MEMCPY) floor = find(measurements, FLOOR_MEMCPY, 'bytes/s', m.messageSize);
      if (m.name.startsWith('tput.thread.')) port = find(measurements, 'tput.thread.messageport', m.metric, m.messageSize);
    }
    if (m.name.startsWith('loop.')) socket = loopBaseline(measurements, m);
    if (m.name.startsWith('wake.floor.')) socket = find(measurements, wakeFloorName('unix-socket'), m.metric);
    if (m.name.startsWith('latest.read.')) floor = find(measurements, 'latest.read.atomics-load', 'ns/op');
    if (m.name.startsWith('latest.wake.')) socket = find(measurements, 'latest.wake.unix-socket', m.metric);
    const record: BenchRecord = { ...m, ratioToUnixSocket: ratio(m.value, socket), ratioToFloor: ratio(m.value, floor) };
    if (m.name === SYNC_REGION)
      record.ratios = { 'write-fdatasync': ratio(m.value, find(measurements, SYNC_BASELINE, 'ns/op', m.messageSize)) };
    if (m.name.startsWith('rtt.thread.') || m.name.startsWith('tput.thread.')) record.ratioToMessagePort = ratio(m.value, port);
    const shapeBase = shapeBaseline(measurements, m);
    if (shapeBase) record.ratios = { [shapeBase.label]: ratio(m.value, shapeBase.record) };
    return record;
  });
}

// ---- many to one and one to many (mpsc.ts, broadcast.ts) ----

/** `mpsc.<kind>.<producers>` and `broadcast.<kind>.<subscribers>`: the kind and the count. */
function shapeParts(name: string): { kind: string; count: number } {
  const [, kind = '', count = '0'] = name.split('.');
  return { kind, count: Number(count) };
}

/** The baseline of a many-to-one or one-to-many row: MpmcQueue with as many producers; SpscRing's producer. */
function shapeBaseline(measurements: Measurement[], m: Measurement): { label: string; record: Measurement | undefined } | undefined {
  if (m.metric !== 'messages/s') return undefined;
  const { kind, count } = shapeParts(m.name);
  if (m.name.startsWith('mpsc.MpscRing.')) return { label: 'MpmcQueue', record: find(measurements, `mpsc.MpmcQueue.${count}`, m.metric) };
  if (m.name.startsWith('broadcast.') && kind !== 'spsc')
    return { label: 'SpscRing', record: find(measurements, 'broadcast.spsc.1', m.metric) };
  return undefined;
}

/** MpscRing beside MpmcQueue per producer count; Broadcast's publisher beside SpscRing's producer. */
function shapesSection(r: BenchRecord[]): string | undefined {
  const parts: string[] = [];
  const mpsc = r.filter((x) => x.name.startsWith('mpsc.MpscRing.'));
  if (mpsc.length > 0) {
    parts.push(
      `**Many producers, one consumer** (${mpsc[0]!.messageSize}-byte messages, producer processes spinning on \`tryWrite\`, the consumer on \`drain\`; ` +
        'msg/s taken by the consumer, the median of runs that alternate the two kinds; 1 MiB of ring for each). ' +
        'With one producer the rate is bistable: a consumer that caught up polls the record being written and slows its producer; ' +
        'the records per drain say which state a kind was in (near 1: caught up).\n\n' +
        table(
          [
            'producers',
            'MpscRing msg/s',
            'MpmcQueue msg/s',
            'MpscRing ÷ MpmcQueue',
            'MpscRing runs, M msg/s (records per drain in the median run)',
            'MpmcQueue runs',
          ],
          mpsc.map((x) => {
            const { count } = shapeParts(x.name);
            const base = r.find((b) => b.name === `mpsc.MpmcQueue.${count}` && b.metric === 'messages/s');
            const runs = (y: BenchRecord | undefined): string => {
              const each = /runs \(M msg\/s\): ([^;]*)/.exec(y?.note ?? '')?.[1];
              const drain = /records per drain: (.*)$/.exec(y?.note ?? '')?.[1];
              return each === undefined ? '–' : `${each} (${drain ?? '?'})`;
            };
            return [String(count), fmtRate(x.value), fmtRate(base?.value), fmtRatio(x.ratios?.MpmcQueue), runs(x), runs(base)];
          }),
        ),
    );
  }
  const bcast = r.filter((x) => x.name.startsWith('broadcast.'));
  if (bcast.length > 0) {
    parts.push(
      `**One publisher, many subscribers** (${bcast[0]!.messageSize}-byte messages, one publisher, subscriber processes draining and parking when empty; ` +
        "the publisher's rate from its first timed write to its last, after an untimed warm-up, beside an SpscRing's producer with one consumer; " +
        'each row the median of runs in alternating order; what each subscriber lost of the timed messages in that run):\n\n' +
        table(
          ['ring', 'publisher msg/s', '÷ SpscRing', 'lost per subscriber'],
          bcast.map((x) => [
            x.transport,
            fmtRate(x.value),
            x.name === 'broadcast.spsc.1' ? '–' : fmtRatio(x.ratios?.SpscRing),
            /lost per subscriber: (.*)$/.exec(x.note ?? '')?.[1] ?? '–',
          ]),
        ),
    );
  }
  return parts.length > 0 ? parts.join('\n\n') : undefined;
}

/** MpscRing at least as fast as MpmcQueue with the same producers and message size. */
function shapeTargets(records: Measurement[]): Target[] {
  return records
    .filter((m) => m.name.startsWith('mpsc.MpscRing.') && m.metric === 'messages/s')
    .map((m) => {
      const { count } = shapeParts(m.name);
      const base = find(records, `mpsc.MpmcQueue.${count}`, 'messages/s');
      const target = `MpscRing ≥ MpmcQueue with ${count} producer process${count === 1 ? '' : 'es'}, ${m.messageSize} B (msg/s, median of the runs)`;
      if (!base || !(base.value > 0)) return { target, measured: 'not measured (no MpmcQueue row)', value: null, met: null };
      const v = m.value / base.value;
      return {
        target,
        measured: `${fmtRatio(v)} (${fmtRate(m.value)} vs ${fmtRate(base.value)} msg/s)`,
        value: Number(v.toPrecision(4)),
        met: v >= 1,
      };
    });
}

// ---- the event-loop section (eventloop.ts) ----

/** `loop.<row>.<transport id>` → row and id (an id may hold dots: `ring.threads`). */
function loopParts(name: string): { row: string; id: string } {
  const [, row = '', ...id] = name.split('.');
  return { row, id: id.join('.') };
}

/**
 * The socket's record a loop record is compared with: the same row (the
 * poll row: the idle row) and metric, measured beside the record's column
 * (`socket@<column>`, interleaved with it), or else the socket's own
 * (`socket`: the pending reads).
 */
function loopBaseline(measurements: Measurement[], m: Measurement): Measurement | undefined {
  if (m.metric === 'extra threads' || m.metric === 'CPU %') return undefined; // the socket's are ~0: shown beside, not divided by
  const { row, id } = loopParts(m.name);
  if (id.startsWith('socket')) return undefined;
  const base = row === 'idle-poll' ? 'idle' : row;
  return find(measurements, `loop.${base}.socket@${id}`, m.metric) ?? find(measurements, `loop.${base}.socket`, m.metric);
}

/** The socket's record shown in the socket column: the one beside the default column, else beside any, else its own. */
function socketShown(records: Measurement[], row: string, metric: Metric): Measurement | undefined {
  return (
    find(records, `loop.${row}.socket@ring`, metric) ??
    records.find((r) => r.name.startsWith(`loop.${row}.socket@`) && r.metric === metric) ??
    find(records, `loop.${row}.socket`, metric)
  );
}

interface LoopRow {
  label: string;
  row: string;
  metric: Metric;
  /** The socket's row, where it is not `row` (the poll rows compare with the idle socket). */
  socketRow?: string;
  show: (v: number) => string;
  /** The target of the issue: on the ratio to the socket, or on the value. */
  target?: { text: string; on: 'ratio' | 'value'; met: (x: number) => boolean; describe: string };
}

const usCell = (ns: number): string => fmtNs(ns);
const LOOP_ROWS: LoopRow[] = [
  {
    label: 'round trip after 1 ms idle, p50 µs',
    row: 'idle',
    metric: 'p50',
    show: usCell,
    target: {
      text: '≤ 0.8×',
      on: 'ratio',
      met: (x) => x <= 0.8,
      describe: "round trip after 1 ms idle, both sides async and parked, ≤ 0.8× the socket's (p50)",
    },
  },
  { label: 'round trip after 1 ms idle, p99 µs', row: 'idle', metric: 'p99', show: usCell },
  { label: 'the same, client and echo pinned to two CPUs, p50 µs', row: 'idle-pinned', metric: 'p50', show: usCell },
  { label: 'the same in a long-running program (the pairs warm), p50 µs', row: 'idle-warm', metric: 'p50', show: usCell },
  {
    label: 'back-to-back round trip, p50 µs',
    row: 'b2b',
    metric: 'p50',
    show: usCell,
    target: { text: '≤ 0.1×', on: 'ratio', met: (x) => x <= 0.1, describe: "back-to-back async round trip ≤ 0.1× the socket's (p50)" },
  },
  {
    label: `64 requests in flight, round trips/s`,
    row: 'inflight64',
    metric: 'messages/s',
    show: (v) => fmtRate(v),
    target: { text: '≥ 5×', on: 'ratio', met: (x) => x >= 5, describe: "64 requests in flight ≥ 5× the socket's rate" },
  },
  {
    label: '1000 pending reads: extra threads',
    row: 'pending',
    metric: 'extra threads',
    show: (v) => v.toFixed(0),
    target: { text: '≤ 2', on: 'value', met: (x) => x <= 2, describe: '1000 pending reads: ≤ 2 extra threads' },
  },
  {
    label: '1000 pending reads: CPU, % of one CPU',
    row: 'pending',
    metric: 'CPU %',
    show: (v) => `${v.toFixed(v < 10 ? 2 : 1)}%`,
    target: { text: '< 1%', on: 'value', met: (x) => x < 1, describe: '1000 pending reads: < 1% of a CPU while idle' },
  },
  {
    label: '1000 pending reads: event-loop delay p99, µs',
    row: 'pending',
    metric: 'event-loop delay p99',
    show: usCell,
    target: { text: '< 1 ms', on: 'value', met: (x) => x < 1e6, describe: '1000 pending reads: event-loop delay p99 < 1 ms' },
  },
  { label: 'idle round trips: client event-loop delay p99, µs', row: 'idle', metric: 'event-loop delay p99', show: usCell },
  { label: 'idle round trips: echo event-loop delay p99, µs', row: 'idle', metric: 'echo event-loop delay p99', show: usCell },
  {
    label: 'poll 2000 µs: round trip after 1 ms idle, p50 µs',
    row: 'idle-poll',
    socketRow: 'idle',
    metric: 'p50',
    show: usCell,
    target: {
      text: '≤ 0.1×',
      on: 'ratio',
      met: (x) => x <= 0.1,
      describe: "with cooperative polling (poll 2000 µs): round trip after 1 ms idle ≤ 0.1× the socket's (p50)",
    },
  },
  { label: 'poll 2000 µs: round trip after 1 ms idle, p99 µs', row: 'idle-poll', socketRow: 'idle', metric: 'p99', show: usCell },
  {
    label: 'poll 2000 µs: client event-loop delay p99, µs',
    row: 'idle-poll',
    socketRow: 'idle',
    metric: 'event-loop delay p99',
    show: usCell,
    target: {
      text: '< 0.2 ms',
      on: 'value',
      met: (x) => x < 2e5,
      describe: 'with cooperative polling: client event-loop delay p99 < 0.2 ms',
    },
  },
  {
    label: 'poll 2000 µs: echo event-loop delay p99, µs',
    row: 'idle-poll',
    socketRow: 'idle',
    metric: 'echo event-loop delay p99',
    show: usCell,
    target: {
      text: '< 0.2 ms',
      on: 'value',
      met: (x) => x < 2e5,
      describe: 'with cooperative polling: echo event-loop delay p99 < 0.2 ms (the echo polls between messages)',
    },
  },
];

/** Column ids of the event-loop records: the socket first, then the rings in the order they ran. */
function loopIds(records: BenchRecord[]): string[] {
  const ids = [...new Set(records.filter((r) => r.name.startsWith('loop.')).map((r) => loopParts(r.name).id))];
  const rings = ids.filter((id) => !id.startsWith('socket'));
  return [...(ids.length > rings.length ? ['socket'] : []), ...rings];
}

function loopRecord(records: Measurement[], row: string, id: string, metric: Metric): Measurement | undefined {
  return id === 'socket' ? socketShown(records, row, metric) : find(records, `loop.${row}.${id}`, metric);
}

/** The value a target judges (the ratio to the socket, or the value), or null when a side is missing. */
function loopTargetValue(records: BenchRecord[], spec: LoopRow, id: string): number | null {
  const r = records.find((x) => x.name === `loop.${spec.row}.${id}` && x.metric === spec.metric);
  if (!r || !spec.target) return null;
  return spec.target.on === 'ratio' ? r.ratioToUnixSocket : r.value;
}

function eventLoopSection(records: BenchRecord[]): string | undefined {
  const ids = loopIds(records);
  if (ids.length === 0) return undefined;
  const label = (id: string): string =>
    id === 'socket'
      ? 'Unix socket (net)'
      : (records.find((r) => r.name.startsWith('loop.') && loopParts(r.name).id === id && r.metric !== 'extra threads')?.transport ??
        records.find((r) => r.name.startsWith('loop.') && loopParts(r.name).id === id)?.transport ??
        id);
  const rows = LOOP_ROWS.filter((spec) => ids.some((id) => id !== 'socket' && loopRecord(records, spec.row, id, spec.metric))).map(
    (spec) => [
      spec.label,
      ...ids.map((id) => {
        const r = loopRecord(records, id === 'socket' ? (spec.socketRow ?? spec.row) : spec.row, id, spec.metric) as
          | BenchRecord
          | undefined;
        if (!r) return '–';
        const showRatio = id !== 'socket' && spec.metric !== 'extra threads' && spec.metric !== 'CPU %';
        const judged = id === 'socket' ? null : loopTargetValue(records, spec, id);
        const mark = judged === null || !spec.target ? '' : spec.target.met(judged) ? ' ✓' : ' ✗';
        return `${spec.show(r.value)}${showRatio ? ` (${fmtRatio(r.ratioToUnixSocket)})` : ''}${mark}`;
      }),
      spec.target?.text ?? '',
    ],
  );
  const header = ['', ...ids.map(label), 'target'];
  const notes: string[] = [];
  const mech = (id: string): string | undefined =>
    records.find((r) => r.name.startsWith('loop.') && loopParts(r.name).id === id)?.mechanism;
  for (const id of ids.filter((x) => x !== 'socket' && x !== 'ring')) {
    if (mech(id) !== undefined && mech(id) === mech('ring')) {
      notes.push(
        `${label(id)}: the same mechanism as the default (${mech(id)}): this build does not tell them apart, or ignores the variable`,
      );
    }
  }
  if (ids.some((id) => id !== 'socket' && mech(id) !== undefined && !mech(id)!.includes(':'))) {
    notes.push(
      'mechanisms: @shmring/core of this build reports the backend only (no asyncWaitKind()), so a column is named by its backend',
    );
  }
  const poll = records.find((r) => r.name.startsWith('loop.idle-poll.') && r.metric === 'p50');
  if (poll?.note?.includes('not detected'))
    notes.push(
      'poll: the `poll` option was not detected in this build (an invalid value was accepted); the poll rows passed `{ poll: 2000 }` all the same',
    );
  const cpuOf = (r: Measurement | undefined): string | undefined => r?.note?.match(/client [\d.]+%, echo [\d.]+%/)?.[0];
  const cpu = ids
    .filter((id) => id !== 'socket')
    .map((id) => {
      const idle = cpuOf(loopRecord(records, 'idle', id, 'p50'));
      const polled = cpuOf(loopRecord(records, 'idle-poll', id, 'p50'));
      const socket = cpuOf(find(records, `loop.idle.socket@${id}`, 'p50'));
      return idle
        ? `${label(id).replace(/ \(.*\)$/, '')}: ${idle}${polled ? `; with poll: ${polled}` : ''}${socket ? `; its socket: ${socket}` : ''}`
        : undefined;
    })
    .filter(Boolean);
  if (cpu.length > 0) notes.push(`CPU (% of one CPU) during the idle round trips: ${cpu.join('. ')}`);
  const alone = ids
    .map((id) => {
      const x = loopRecord(records, 'pending', id, 'CPU %');
      const before = x?.note?.match(/alone before them: ([\d.]+%)/)?.[1];
      return x && before ? `${label(id).replace(/ \(.*\)$/, '')} ${x.value.toFixed(2)}% (alone ${before})` : undefined;
    })
    .filter(Boolean);
  if (alone.length > 0) {
    notes.push(`1000 pending reads, CPU (% of one CPU) beside the same process alone just before, nothing pending: ${alone.join(', ')}`);
  }
  const kernel = wakeFloorNote(records);
  if (kernel !== undefined) notes.push(kernel);
  const beside = ids
    .filter((id) => id !== 'socket')
    .map((id) => {
      const get = (row: string, metric: Metric): Measurement | undefined => find(records, `loop.${row}.socket@${id}`, metric);
      const idle = get('idle', 'p50');
      const b2b = get('b2b', 'p50');
      const inflight = get('inflight64', 'messages/s');
      if (!idle && !b2b && !inflight) return undefined;
      return `${label(id).replace(/ \(.*\)$/, '')}: ${idle ? fmtNs(idle.value) : '–'} / ${b2b ? fmtNs(b2b.value) : '–'} µs / ${inflight ? fmtRate(inflight.value) : '–'}`;
    })
    .filter(Boolean);
  if (beside.length > 0) {
    notes.push(
      "the Unix socket is measured in each column's process, interleaved with the rings in short blocks, and each ratio is to the socket " +
        `beside it (the socket column shows the one beside the default); idle p50 / back-to-back p50 / 64 in flight: ${beside.join('; ')}`,
    );
  }
  return (
    `**Event loop**: two processes, 64-byte messages, both sides async. The client awaits \`ping.write(m)\` then \`pong.read()\`; ` +
    'the echo runs `for await (const m of ping) await pong.write(m)` (SpscRings in memfd regions). The baseline is a Unix socket (net) with the same pattern: ' +
    'the client writes each message and awaits each reply; the echo writes each chunk back as it arrives; fixed 64-byte messages, no length prefix. ' +
    'Each ring column runs in processes of its own, the mechanism forced by environment and named as the process reports it, ' +
    'and measures the socket beside the rings in the same process, interleaved in short blocks. ' +
    'In brackets: × that socket; ✓/✗: the target of issue 10 (the targets apply to the default column; the fallbacks are held to the same bar).\n\n' +
    `${table(header, rows)}\n\n` +
    'Idle: `await setTimeout(1 ms)` before each round trip, so both sides park. ' +
    'Pinned: the same, the client on one CPU and the echo on another during the pair’s blocks (taskset). Unpinned, Linux mostly runs ' +
    'the woken echo on the client’s CPU (benches/c/wake.c counts how often), whichever the transport, so the work each side does around ' +
    'a wake-up (for the rings, the read that parks after the write) runs one after the other with the peer’s; pinned, it overlaps. ' +
    'Long-running: the idle row again on the same two pairs, once each has made thousands more idle round trips (the note says how many): ' +
    'the idle row measures fresh processes, whose JavaScript V8 has not yet optimized, and both transports get faster over the first few thousand. ' +
    'Back to back: one round trip after the other. ' +
    '64 in flight: the client writes 64, then one more per reply. 1000 pending reads: 1000 rings (or 1000 connected Unix sockets) in one process, ' +
    'one `read()` pending on each, nothing arriving: threads added (/proc/self/task), CPU of all threads (process.cpuUsage) over the window. ' +
    'Event-loop delay: a probe process writes its clock (CLOCK_MONOTONIC) to a socketpair at random gaps of 0.5–2.5 ms and the ' +
    "measured process's data callback takes the difference: how late a callback that became ready runs, waking an idle loop included " +
    '(perf_hooks.monitorEventLoopDelay times a libuv timer whose clock has whole milliseconds: an idle process shows 1–2 ms there). ' +
    'In the idle rows the client and the echo each run a probe during a second series of round trips, after the timed ones (the long-running row’s included, so on warm pairs); ' +
    'with `poll` the client sleeps between pings while the echo polls between messages.' +
    (notes.length > 0 ? `\n\n${notes.map((n) => `- ${n}`).join('\n')}` : '')
  );
}

/**
 * The kernel's part of the idle row (benches/c/wake.c in the same run): the
 * same wake-ups between two C processes, beside the Node round trips.
 */
function wakeFloorNote(records: BenchRecord[]): string | undefined {
  const socket = find(records, wakeFloorName('unix-socket'), 'p50');
  if (socket === undefined) return undefined;
  const uring = find(records, wakeFloorName('io-uring-futex'), 'p50');
  const futex = find(records, wakeFloorName('futex'), 'p50');
  const ring = loopRecord(records, 'idle', 'ring', 'p50');
  const nodeSocket = find(records, 'loop.idle.socket@ring', 'p50');
  const hop = (m: Measurement | undefined): string => {
    const h = m?.note?.match(/hop[^)]*\) ([\d.]+ µs)/)?.[1] ?? '–';
    const same = m?.note?.match(/client's CPU in (\d+%)/)?.[1];
    return same ? `${h}, the echo on the client's CPU in ${same}` : h;
  };
  return (
    `the kernel's part (benches/c/wake.c, two C processes in the same run, 1 ms asleep before each round trip, round trip p50): ` +
    `a Unix socket ${fmtNs(socket.value)} µs (hop ${hop(socket)})` +
    (uring
      ? `, the rings' futex through io_uring ${fmtNs(uring.value)} µs (hop ${hop(uring)}, ${fmtRatio(ratio(uring.value, socket))})`
      : '') +
    (futex ? `, a futex_wait ${fmtNs(futex.value)} µs (hop ${hop(futex)})` : '') +
    (ring && nodeSocket
      ? `; the same round trips between Node processes above: ${fmtNs(ring.value)} µs through the rings, ${fmtNs(nodeSocket.value)} µs ` +
        'through the socket. Beyond the C figures, Node programs pay for user space (Node, V8, this library) and for where Linux ' +
        'runs the woken process (the pinned row)'
      : '')
  );
}

// ---- targets ----

const fmtX = (x: number): string => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

export function targets(records: Measurement[]): Target[] {
  const out: Target[] = [];
  const add = (
    target: string,
    value: number | null,
    met: (v: number) => boolean,
    measured: (v: number) => string,
    missing: string,
  ): void => {
    out.push(
      value === null || !Number.isFinite(value)
        ? { target, measured: `not measured (${missing})`, value: null, met: null }
        : { target, measured: measured(value), value: Number(value.toPrecision(4)), met: met(value) },
    );
  };
  const p50 = (name: string): number | undefined => find(records, name, 'p50')?.value;
  const socketRtt = p50(SOCKET_RTT);
  const floorRtt = p50(FLOOR_RTT);
  const nodeFloor = p50('rtt.proc.node-floor');
  const spins = (['rtt.proc.spsc-spin', 'rtt.proc.spsc-spin-zc'] as const)
    .map((name) => ({ name, value: p50(name) }))
    .filter((s): s is { name: 'rtt.proc.spsc-spin' | 'rtt.proc.spsc-spin-zc'; value: number } => s.value !== undefined)
    .sort((a, b) => a.value - b.value);
  const spin = spins[0];
  const spinLabel = spin ? (spin.name === 'rtt.proc.spsc-spin' ? 'tryWrite/tryRead' : 'claim/commit + drain') : '';
  const us = (ns: number): string => `${(ns / 1000).toPrecision(3)} µs`;

  add(
    'spinning round trip ≤ 2× the C floor (p50)',
    spin && floorRtt ? spin.value / floorRtt : null,
    (v) => v <= 2,
    (v) =>
      `${fmtX(v)}× (${us(spin!.value)} ${spinLabel} vs ${us(floorRtt!)}` +
      `${nodeFloor ? `; Node's own floor, one word bounced with Atomics: ${us(nodeFloor)}, ${fmtX(nodeFloor / floorRtt!)}× the C floor` : ''})`,
    'no C floor or no spinning round trip',
  );
  const twoWords = p50('rtt.proc.node-floor-2');
  add(
    "spinning round trip ≤ 1.3× Node's floor (p50)",
    spin && nodeFloor ? spin.value / nodeFloor : null,
    (v) => v <= 1.3,
    (v) =>
      `${fmtX(v)}× (${us(spin!.value)} ${spinLabel} vs ${us(nodeFloor!)}, one word bounced` +
      `${twoWords ? `; against the floor of two one-way queues, one word each way in two regions, ${us(twoWords)}: ${fmtX(spin!.value / twoWords)}×` : ''})`,
    'no Node floor or no spinning round trip',
  );
  add(
    'spinning round trip ≥ 100× faster than the Unix socket (p50)',
    spin && socketRtt ? socketRtt / spin.value : null,
    (v) => v >= 100,
    (v) => `${fmtX(v)}× faster (${us(spin!.value)} vs ${us(socketRtt!)})`,
    'missing scenario',
  );
  // Both sides wait the same idle gap before each send (run.ts, gapMs): the socket without it is an aside.
  const parked = p50('rtt.proc.spsc-parked');
  const idleSocket = p50(SOCKET_RTT_IDLE);
  add(
    "parked-consumer round trip ≤ 0.3× the Unix socket's with the same idle gap (p50)",
    parked && idleSocket ? parked / idleSocket : null,
    (v) => v <= 0.3,
    (v) =>
      `${fmtX(v)}× (${us(parked!)} vs ${us(idleSocket!)}` +
      `${socketRtt ? `; vs the socket back to back, no gap, ${us(socketRtt)}: ${fmtX(parked! / socketRtt)}×` : ''})`,
    'missing scenario (the parked row or the idle socket row)',
  );
  const asyncs = (['rtt.proc.spsc-async', 'rtt.proc.spsc-async-read'] as const)
    .map((name) => ({ name, value: p50(name) }))
    .filter((s): s is { name: 'rtt.proc.spsc-async' | 'rtt.proc.spsc-async-read'; value: number } => s.value !== undefined)
    .sort((a, b) => a.value - b.value);
  const asyncLabel = (name: string): string => (name === 'rtt.proc.spsc-async' ? 'for await' : 'read()');
  add(
    "async-consumer round trip ≤ 0.5× the Unix socket's (p50)",
    asyncs[0] && socketRtt ? asyncs[0].value / socketRtt : null,
    (v) => v <= 0.5,
    (v) =>
      `${fmtX(v)}× (echo with ${asyncLabel(asyncs[0]!.name)}: ${us(asyncs[0]!.value)} vs ${us(socketRtt!)}` +
      `${asyncs[1] ? `; with ${asyncLabel(asyncs[1].name)}: ${us(asyncs[1].value)}, ${fmtX(asyncs[1].value / socketRtt!)}×` : ''})`,
    'missing scenario',
  );

  const rate = (name: string, size: number): number | undefined => find(records, name, 'messages/s', size)?.value;
  const best64 = SPSC_STREAMS.map((name) => ({ name, value: rate(name, 64) }))
    .filter((s): s is { name: SpscStream; value: number } => s.value !== undefined)
    .sort((a, b) => b.value - a.value)[0];
  const bestLabel = best64 ? SPSC_STREAM_LABELS[best64.name] : '';
  const socket64 = rate(SOCKET_TPUT, 64);
  const unbatched64 = rate('tput.proc.unix-socket-unbatched', 64);
  const cRing64 = rate(FLOOR_RING, 64);
  add(
    '64 B across processes ≥ 20 M msg/s',
    best64 ? best64.value : null,
    (v) => v >= 20e6,
    (v) =>
      `${(v / 1e6).toFixed(2)} M msg/s (SpscRing ${bestLabel})${cRing64 ? `; the same ring in C: ${(cRing64 / 1e6).toFixed(1)} M` : ''}`,
    'missing scenario',
  );
  add(
    '64 B across processes ≥ 30× the Unix socket',
    best64 && socket64 ? best64.value / socket64 : null,
    (v) => v >= 30,
    (v) =>
      `${fmtX(v)}× (${(best64!.value / 1e6).toFixed(2)} M vs ${(socket64! / 1e6).toFixed(2)} M msg/s batched` +
      `${unbatched64 ? `; vs one write per message, ${(unbatched64 / 1e6).toFixed(2)} M: ${fmtX(best64!.value / unbatched64)}×` : ''})`,
    'missing scenario',
  );

  const mib = 1 << 20;
  const bestMiB = SPSC_STREAMS.map((name) => ({ name, value: find(records, name, 'bytes/s', mib)?.value }))
    .filter((s): s is { name: SpscStream; value: number } => s.value !== undefined)
    .sort((a, b) => b.value - a.value)[0];
  const memcpyMiB = find(records, FLOOR_MEMCPY, 'bytes/s', mib)?.value;
  add(
    '1 MiB messages at ≥ 50% of memcpy bandwidth',
    bestMiB && memcpyMiB ? bestMiB.value / memcpyMiB : null,
    (v) => v >= 0.5,
    (v) =>
      `${(v * 100).toFixed(0)}% (${(bestMiB!.value / 1e9).toFixed(2)} GB/s SpscRing ${SPSC_STREAM_LABELS[bestMiB!.name]} ` +
      `vs memcpy ${(memcpyMiB! / 1e9).toFixed(2)} GB/s)`,
    'no C floor or no 1 MiB run',
  );

  for (const spec of LOOP_ROWS) {
    if (!spec.target) continue;
    const r = find(records, `loop.${spec.row}.ring`, spec.metric);
    const base = r ? (loopBaseline(records, r) ?? socketShown(records, spec.socketRow ?? spec.row, spec.metric)) : undefined;
    const value = r === undefined ? null : spec.target.on === 'ratio' ? (base && base.value > 0 ? r.value / base.value : null) : r.value;
    const shown = (v: number): string =>
      spec
        .show(v)
        .replace(
          /^(.*)$/,
          spec.metric === 'messages/s' ? '$1 rt/s' : spec.metric.startsWith('extra') || spec.metric === 'CPU %' ? '$1' : '$1 µs',
        );
    add(
      `event loop: ${spec.target.describe}`,
      value,
      spec.target.met,
      (v) =>
        spec.target!.on === 'ratio'
          ? `${fmtX(v)}× (${shown(r!.value)} vs ${shown(base!.value)}${r!.mechanism ? `; ${r!.mechanism}` : ''})`
          : `${shown(v)}${base ? ` (Unix socket: ${shown(base.value)})` : ''}${r!.mechanism ? `; ${r!.mechanism}` : ''}`,
      'missing scenario',
    );
  }

  out.push(...channelTargets(records));
  out.push(...bridgeTargets(records));
  out.push(...shapeTargets(records));

  const heap = find(records, 'alloc.spsc-zc', 'heap growth')?.value;
  add(
    'heap growth < 1 MiB over 10 M zero-copy messages',
    heap ?? null,
    (v) => v < 1 << 20,
    (v) => `${(v / 1024).toFixed(1)} KiB`,
    'missing scenario',
  );
  return out;
}

// ---- Markdown ----

function fmtNs(ns: number | undefined): string {
  if (ns === undefined) return '–';
  const us = ns / 1000;
  if (us < 10) return us.toFixed(2);
  if (us < 100) return us.toFixed(1);
  return Math.round(us).toLocaleString('en');
}

function fmtRate(v: number | undefined): string {
  if (v === undefined) return '–';
  if (v >= 1e6) return `${(v / 1e6).toFixed(v >= 1e8 ? 0 : 2)} M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v >= 1e5 ? 0 : 1)} k`;
  return v.toFixed(0);
}

function fmtBytes(v: number | undefined): string {
  if (v === undefined) return '–';
  if (v >= 1e9) return `${(v / 1e9).toFixed(2)} GB/s`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(v >= 1e8 ? 0 : 1)} MB/s`;
  return `${(v / 1e3).toFixed(0)} kB/s`;
}

function fmtRatio(r: number | null | undefined, suffix = '×'): string {
  if (r === null || r === undefined) return '–';
  return `${r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r >= 0.1 ? r.toFixed(2) : r.toPrecision(2)}${suffix}`;
}

export function sizeLabel(size: number): string {
  if (size >= 1 << 20) return `${size / (1 << 20)} MiB`;
  if (size >= 1024) return `${size / 1024} KiB`;
  return `${size} B`;
}

function table(header: string[], rows: string[][]): string {
  const align = header.map((_, i) => (i === 0 ? '---' : '---:'));
  return [header, align, ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
}

/** The scenarios of a group, in the order they first appear. */
function scenarios(records: BenchRecord[], prefix: string): { name: string; transport: string }[] {
  const seen = new Map<string, string>();
  for (const r of records) if (r.name.startsWith(prefix) && !seen.has(r.name)) seen.set(r.name, r.transport);
  return [...seen].map(([name, transport]) => ({ name, transport }));
}

function latencyTable(records: BenchRecord[], names: { name: string; transport: string }[], baseline: 'socket' | 'port'): string {
  const rows = names.map(({ name, transport }) => {
    const get = (metric: Metric): BenchRecord | undefined => records.find((r) => r.name === name && r.metric === metric);
    const p50 = get('p50');
    const base = baseline === 'socket' ? p50?.ratioToUnixSocket : p50?.ratioToMessagePort;
    return [
      transport,
      fmtNs(p50?.value),
      fmtNs(get('p99')?.value),
      fmtNs(get('p99.9')?.value),
      fmtNs(get('max')?.value),
      fmtRatio(base),
      fmtRatio(p50?.ratioToFloor),
    ];
  });
  return table(
    [
      'transport',
      'p50 µs',
      'p99 µs',
      'p99.9 µs',
      'max µs',
      `p50 / ${baseline === 'socket' ? 'Unix socket (with the same idle gap)' : 'MessagePort'}`,
      'p50 / C floor',
    ],
    rows,
  );
}

function throughputTables(records: BenchRecord[], prefix: string, baseline: 'socket' | 'port'): string {
  const sizes = [...new Set(records.filter((r) => r.name.startsWith(prefix) && r.metric === 'messages/s').map((r) => r.messageSize))].sort(
    (a, b) => a - b,
  );
  // The C floors' rows, where they measured one of these sizes.
  const floors = scenarios(records, 'tput.floor.').filter(({ name }) =>
    records.some((r) => r.name === name && sizes.includes(r.messageSize)),
  );
  const names = [...scenarios(records, prefix), ...floors];
  const cell = (name: string, size: number, metric: Metric): string => {
    const r = records.find((x) => x.name === name && x.messageSize === size && x.metric === metric);
    if (!r) return '–';
    if (metric === 'bytes/s')
      return r.ratioToFloor === null ? fmtBytes(r.value) : `${fmtBytes(r.value)} (${(r.ratioToFloor * 100).toFixed(0)}%)`;
    const base = baseline === 'socket' ? r.ratioToUnixSocket : r.ratioToMessagePort;
    const isBase = baseline === 'socket' ? name === SOCKET_TPUT : name.endsWith('.messageport');
    const brackets = [
      ...(isBase || base === null || name.startsWith('tput.floor.') ? [] : [fmtRatio(base)]),
      ...(r.ratioToFloor === null ? [] : [`${(r.ratioToFloor * 100).toFixed(0)}%`]),
    ];
    return brackets.length > 0 ? `${fmtRate(r.value)} (${brackets.join(', ')})` : fmtRate(r.value);
  };
  const header = ['transport', ...sizes.map(sizeLabel)];
  const rows = (metric: Metric, skip: string): string[][] =>
    names.filter((n) => n.name !== skip).map(({ name, transport }) => [transport, ...sizes.map((size) => cell(name, size, metric))]);
  const messages = table(header, rows('messages/s', FLOOR_MEMCPY));
  const bytes = table(header, rows('bytes/s', FLOOR_RING));
  const against = `× ${baseline === 'socket' ? 'the Unix socket' : 'MessagePort'} at that size, and % of the same ring in C (across processes)`;
  return (
    `Messages per second (in brackets: ${against}):\n\n${messages}\n\n` +
    `Bytes per second (in brackets: % of the C memcpy bandwidth for that block size):\n\n${bytes}`
  );
}

export function machineLine(m: Machine): string {
  return `${m.cores} cores, ${m.cpu}, Linux ${m.kernel}, Node ${m.node}, native backend: ${m.backend}`;
}

/** The tables of a run (no title), as they go into README.md and latest.md. */
export function markdownBody(run: Run): string {
  const r = run.records;
  const parts: string[] = [];
  parts.push(
    `${run.date.slice(0, 10)}, ${run.mode} run (${Math.round(run.seconds)} s): ${machineLine(run.machine)}; ` +
      `load average at start ${run.machine.loadAverageAtStart.map((x) => x.toFixed(2)).join(' / ')}. ` +
      'Every ratio is to a baseline measured in the same run.',
  );
  const procRtt = scenarios(r, 'rtt.proc.');
  const threadRtt = scenarios(r, 'rtt.thread.');
  const floorRtt = scenarios(r, FLOOR_RTT);
  if (procRtt.length + floorRtt.length > 0) {
    const size = r.find((x) => x.name.startsWith('rtt.proc.'))?.messageSize ?? 64;
    parts.push(
      `**Round trip across two processes**, one ${size}-byte message in flight (µs; lower is better):\n\n${latencyTable(r, [...procRtt, ...floorRtt], 'socket')}`,
    );
    const floorNote = r.find((x) => x.name === FLOOR_RTT)?.note;
    if (floorNote) parts.push(`C floor: ${floorNote}.`);
    const parkedNote = r.find((x) => x.name === 'rtt.proc.spsc-parked')?.note;
    const idleP50 = find(r, SOCKET_RTT_IDLE, 'p50')?.value;
    const b2bP50 = find(r, SOCKET_RTT, 'p50')?.value;
    const idleSocketVsB2b = idleP50 && b2bP50 ? `${fmtX(idleP50 / b2bP50)}×` : undefined;
    if (parkedNote) {
      parts.push(
        `Parked: ${parkedNote} (the Unix socket row "idle before each send" has the same gap, and is the baseline of the parked row's ` +
          `ratio; the other rows' is the socket back to back${idleSocketVsB2b ? `, of which the socket with the gap takes ${idleSocketVsB2b}` : ''}). ` +
          "Back to back, readSync's bounded spinning usually catches the reply before it parks. " +
          'Async: the main side awaits write() and read(); the echo uses for await or read().',
      );
    }
  }
  if (r.some((x) => x.name.startsWith('tput.proc.'))) {
    parts.push(
      `**Throughput across two processes** (one producer process, one consumer process; the consumer's steady-state rate):\n\n${throughputTables(r, 'tput.proc.', 'socket')}\n\n` +
        'Copy: `tryWrite` copies the message in, `tryRead` copies it out into a new Uint8Array. Zero-copy: the producer fills the claimed ' +
        'space (`ring.data.set`), the consumer reads the record in place in `drain`. memcpy: the C floor copying blocks of that size into an area as large as the ring.',
    );
  }
  const loop = eventLoopSection(r);
  if (loop) parts.push(loop);
  if (threadRtt.length > 0) parts.push(`**Worker threads: round trip** (µs):\n\n${latencyTable(r, threadRtt, 'port')}`);
  if (r.some((x) => x.name.startsWith('tput.thread.')))
    parts.push(`**Worker threads: throughput**:\n\n${throughputTables(r, 'tput.thread.', 'port')}`);
  const channel = channelSection(r);
  if (channel) parts.push(channel);
  const bridge = bridgeSection(r);
  if (bridge) parts.push(bridge);
  const shapes = shapesSection(r);
  if (shapes) parts.push(shapes);
  const micro = r.filter((x) => x.name.startsWith('micro.'));
  if (micro.length > 0) {
    const ops = [...new Set(micro.map((x) => x.transport.replace(/ \((memfd|sab)\)$/, '')))];
    const get = (op: string, backing: string): string => fmtNumber(micro.find((x) => x.transport === `${op} (${backing})`)?.value);
    parts.push(
      `**In-process micro-benchmarks** (tinybench; ns per write+read pair of a 64-byte message, both sides in one thread):\n\n` +
        table(
          ['operation pair', 'memfd region (ArrayBuffer)', 'SharedArrayBuffer'],
          ops.map((op) => [op, get(op, 'memfd'), get(op, 'sab')]),
        ),
    );
  }
  const latest = latestSection(r);
  if (latest) parts.push(latest);
  const sync = syncSection(r);
  if (sync) parts.push(sync);
  const heap = r.find((x) => x.name === 'alloc.spsc-zc' && x.metric === 'heap growth');
  if (heap)
    parts.push(
      `**Allocation**: heap growth over the zero-copy path (claim/commit + drain), after a forced GC: **${(heap.value / 1024).toFixed(1)} KiB** (${heap.note}).`,
    );
  if (run.targets.length > 0) {
    parts.push(
      `**Targets**:\n\n${table(
        ['target', 'measured', 'met'],
        run.targets.map((t) => [t.target, t.measured, t.met === null ? '–' : t.met ? 'yes' : '**no**']),
      )}`,
    );
  }
  if (run.notes.length > 0) parts.push(`Notes:\n\n${run.notes.map((n) => `- ${n}`).join('\n')}`);
  return parts.join('\n\n');
}

/** LatestValue (latest.ts): read() against an Atomics.load, the two protocols under a writer, publish-to-wake against a socket. */
function latestSection(r: BenchRecord[]): string | undefined {
  const reads = r.filter((x) => x.name.startsWith('latest.read.'));
  if (reads.length === 0) return undefined;
  const parts = [
    `**LatestValue: read()** (ns per call, one thread; ratio to one \`Atomics.load\` of one word, same run):\n\n` +
      table(
        ['operation', 'ns', '× Atomics.load'],
        reads.map((x) => [x.transport, fmtNumber(x.value), x.name.endsWith('atomics-load') ? '–' : fmtRatio(x.ratioToFloor)]),
      ),
  ];
  const contended = r.filter((x) => x.name.startsWith('latest.contended.'));
  if (contended.length > 0) {
    parts.push(
      `**LatestValue: the two protocols under a writer** (ns per read while a worker thread publishes as fast as it can; retries per read):\n\n` +
        table(
          ['protocol', 'value bytes', 'ns / read', 'retries / read'],
          contended.map((x) => [
            x.transport,
            String(x.messageSize),
            fmtNumber(x.value),
            x.note?.startsWith('retries not') ? '–' : (x.note?.split(' ')[0] ?? '–'),
          ]),
        ),
    );
  }
  const wake = r.filter((x) => x.name.startsWith('latest.wake.'));
  if (wake.length > 0) {
    const names = [...new Set(wake.map((x) => x.name))];
    parts.push(
      `**LatestValue: publish to wake** of a reader parked in another process (µs; ${wake[0]!.note}):\n\n` +
        table(
          ['reader', 'p50 µs', 'p99 µs', 'p50 / Unix socket'],
          names.map((n) => {
            const get = (metric: string): BenchRecord | undefined => wake.find((x) => x.name === n && x.metric === metric);
            return [
              get('p50')!.transport,
              fmtNumber((get('p50')?.value ?? 0) / 1000),
              fmtNumber((get('p99')?.value ?? 0) / 1000),
              n.endsWith('unix-socket') ? '–' : fmtRatio(get('p50')?.ratioToUnixSocket ?? null),
            ];
          }),
        ),
    );
  }
  return parts.join('\n\n');
}

/** Rings that survive restarts (sync-cost.ts): region.sync() against write + fdatasync of the same bytes, per size. */
function syncSection(r: BenchRecord[]): string | undefined {
  const synced = r.filter((x) => x.name === SYNC_REGION);
  if (synced.length === 0) return undefined;
  const rows = synced.map((x) => {
    const base = r.find((b) => b.name === SYNC_BASELINE && b.messageSize === x.messageSize);
    const mib = x.messageSize / (1 << 20);
    return [
      sizeLabel(x.messageSize),
      fmtNumber(x.value / 1e6),
      fmtNumber(base === undefined ? undefined : base.value / 1e6),
      fmtRatio(x.ratios?.['write-fdatasync'] ?? null),
      fmtNumber(x.value / 1e6 / mib),
    ];
  });
  return (
    `**Persistence: region.sync()** of a \`file\` region (ms; ${synced[0]!.note}; the baseline writes the same bytes into a plain file with write(2) and fdatasyncs it, in the same run):\n\n` +
    table(['size', 'region.sync() ms', 'write + fdatasync ms', '× write + fdatasync', 'region.sync() ms per MiB'], rows)
  );
}

function fmtNumber(v: number | undefined): string {
  return v === undefined ? '–' : v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

export function markdown(run: Run): string {
  return `# shmring benchmarks\n\n${markdownBody(run)}\n`;
}

// ---- SVG ----

const escapeXml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function nsLabel(ns: number): string {
  if (ns >= 1e6) return `${ns / 1e6} ms`;
  if (ns >= 1e3) return `${ns / 1e3} µs`;
  return `${ns} ns`;
}

/** Round-trip percentiles per transport as grouped horizontal bars on a logarithmic axis. */
export function latencySvg(run: Run): string {
  const metrics = ['p50', 'p99', 'p99.9', 'max'] as const;
  const colors = ['#2b6cb0', '#38a169', '#d69e2e', '#c53030'];
  const rows = [...scenarios(run.records, 'rtt.proc.'), ...scenarios(run.records, 'rtt.thread.'), ...scenarios(run.records, FLOOR_RTT)].map(
    ({ name, transport }) => ({
      label: name.startsWith('rtt.thread.') ? `${transport}` : transport,
      values: metrics.map((m) => run.records.find((x) => x.name === name && x.metric === m)?.value ?? 0),
    }),
  );
  const all = rows.flatMap((row) => row.values).filter((v) => v > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.min(...all, 100)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...all, 1000)));
  const left = 340;
  const plot = 560;
  const bar = 7;
  const rowHeight = metrics.length * bar + 10;
  const top = 58;
  const height = top + rows.length * rowHeight + 34;
  const width = left + plot + 20;
  const x = (ns: number): number => left + (plot * Math.log10(Math.max(ns, lo) / lo)) / Math.log10(hi / lo);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
  );
  out.push(`<rect width="${width}" height="${height}" fill="#fff"/>`);
  out.push('<text x="10" y="16" font-size="13" font-weight="bold">Round trip, one message in flight (log scale; shorter is better)</text>');
  out.push(
    `<text x="10" y="31" fill="#555">${escapeXml(run.date.slice(0, 10))}, ${run.mode} run: ${escapeXml(machineLine(run.machine))}</text>`,
  );
  metrics.forEach((m, i) => {
    out.push(
      `<rect x="${left + i * 80}" y="38" width="10" height="10" fill="${colors[i]}"/><text x="${left + i * 80 + 14}" y="47">${m}</text>`,
    );
  });
  for (let t = lo; t <= hi; t *= 10) {
    const tx = x(t).toFixed(1);
    out.push(`<line x1="${tx}" y1="${top - 4}" x2="${tx}" y2="${height - 28}" stroke="#ddd"/>`);
    out.push(`<text x="${tx}" y="${height - 14}" text-anchor="middle" fill="#555">${nsLabel(t)}</text>`);
  }
  rows.forEach((row, i) => {
    const y = top + i * rowHeight;
    out.push(`<text x="${left - 8}" y="${y + (metrics.length * bar) / 2 + 4}" text-anchor="end">${escapeXml(row.label)}</text>`);
    row.values.forEach((v, j) => {
      if (!(v > 0)) return;
      const w = Math.max(1, x(v) - left);
      out.push(
        `<rect x="${left}" y="${y + j * bar}" width="${w.toFixed(1)}" height="${bar - 1}" fill="${colors[j]}"><title>${escapeXml(row.label)} ${metrics[j]}: ${(v / 1000).toFixed(3)} µs</title></rect>`,
      );
      if (j === 0)
        out.push(`<text x="${(left + w + 4).toFixed(1)}" y="${y + bar - 1}" font-size="9" fill="${colors[0]}">${fmtNs(v)} µs</text>`);
    });
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
