/**
 * What a scenario reports: one Measurement per (scenario, message size,
 * metric). The runner adds the ratios to the baselines measured in the same
 * run (report.ts).
 */
import { droppedNote, type Percentiles } from './harness.js';

export type Metric =
  | 'p50'
  | 'p99'
  | 'p99.9'
  | 'max'
  | 'mean'
  | 'messages/s'
  | 'bytes/s'
  | 'ns/op'
  | 'heap growth'
  | 'extra threads'
  | 'CPU %'
  | 'event-loop delay p99'
  | 'echo event-loop delay p99';

export interface Measurement {
  /** Scenario id, e.g. `rtt.proc.spsc-spin`: unique together with messageSize and metric. */
  name: string;
  /** What carries the messages, as the tables show it. */
  transport: string;
  /** Payload bytes per message. */
  messageSize: number;
  metric: Metric;
  value: number;
  /** 'ns' | 'msg/s' | 'B/s' | 'B' */
  unit: string;
  /** How it was measured, when the transport name does not say it all. */
  note?: string;
  /** Event-loop rows: the wait mechanism the measuring process reported (backend, async wait). */
  mechanism?: string;
}

/** The five latency records of a round-trip scenario. */
export function latencyRecords(name: string, transport: string, messageSize: number, p: Percentiles, given?: string): Measurement[] {
  const metrics = ['p50', 'p99', 'p99.9', 'max', 'mean'] as const;
  const dropped = droppedNote(p).replace(/^; /, '');
  const note = given && dropped ? `${given}; ${dropped}` : given || dropped;
  return metrics.map((metric) => ({
    name,
    transport,
    messageSize,
    metric,
    value: Math.round(p[metric]),
    unit: 'ns',
    ...(note ? { note } : {}),
  }));
}

/** messages/s and bytes/s of a streaming scenario, from the consumer's steady-state report. */
export function throughputRecords(
  name: string,
  transport: string,
  messageSize: number,
  r: { messages: number; seconds: number; rate: number; meanRate: number; windows: number; rates?: number[] },
): Measurement[] {
  if (!(r.rate > 0)) throw new Error(`${name} (${messageSize} B): no steady-state measurement (${r.messages} messages in ${r.seconds} s)`);
  const streams =
    r.rates && r.rates.length > 1
      ? `the median of ${r.rates.length} streams (msg/s: ${r.rates.map((x) => Math.round(x)).join(', ')}); in it, `
      : '';
  const note = `${streams}median of ${r.windows} windows of >= 50 ms; mean over ${r.seconds.toFixed(2)} s: ${Math.round(r.meanRate)} msg/s`;
  return [
    { name, transport, messageSize, metric: 'messages/s', value: Math.round(r.rate), unit: 'msg/s', note },
    { name, transport, messageSize, metric: 'bytes/s', value: Math.round(r.rate * messageSize), unit: 'B/s', note },
  ];
}
