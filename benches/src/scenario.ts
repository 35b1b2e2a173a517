/**
 * Runs one benchmark scenario in a fresh process (run.ts starts one per
 * scenario, in its own process group, and kills the group afterwards) and
 * prints `{ records, notes }` as its last stdout line.
 *
 *   node benches/dist/scenario.js <kind> <name> '<params JSON>'
 */
import { allocation } from './alloc.js';
import { bridgeScenario, type BridgeParams } from './bridge.js';
import { broadcastScenario, type BroadcastParams } from './broadcast.js';
import { channelScenario, type ChannelParams } from './channel.js';
import { eventLoop, type EventLoopParams } from './eventloop.js';
import { latestScenario, type LatestParams } from './latest.js';
import { floorMemcpy, floorRoundTrip, floorStream, floorWake } from './floor.js';
import { exitWithParent, killChildren } from './harness.js';
import { processRoundTrip, type ProcessRoundTrip, type RoundTripOptions } from './latency.js';
import type { Measurement } from './measurement.js';
import { micro } from './micro.js';
import { mpscScenario, type MpscParams } from './mpsc.js';
import { syncScenario, type SyncParams } from './sync-cost.js';
import { threadRoundTrip, threadStream, type THREAD_ROUND_TRIPS, type THREAD_STREAMS } from './threads.js';
import { processStream, type ProcessStream, type StreamOptions } from './throughput.js';

export type Kind =
  | 'floor-rtt'
  | 'floor-stream'
  | 'floor-memcpy'
  | 'floor-wake'
  | 'rtt-proc'
  | 'rtt-thread'
  | 'tput-proc'
  | 'tput-thread'
  | 'micro'
  | 'alloc'
  | 'eventloop'
  | 'channel'
  | 'bridge'
  | 'latest'
  | 'sync'
  | 'mpsc'
  | 'broadcast';

interface Outcome {
  records: Measurement[];
  notes: string[];
  /** Parts that failed while the rest was measured (the runner counts the scenario as failed). */
  failures?: string[];
}

async function run(kind: Kind, name: string, params: Record<string, unknown>): Promise<Outcome> {
  const records = (r: Measurement[]): Outcome => ({ records: r, notes: [] });
  switch (kind) {
    case 'floor-rtt':
      return floorRoundTrip(params.rounds as number);
    case 'floor-stream':
      return floorStream(params.sizes as number[], params.ms as number);
    case 'floor-memcpy':
      return floorMemcpy(params.sizes as number[], params.ms as number);
    case 'floor-wake':
      return floorWake(params.rounds as number, params.idleUs as number);
    case 'rtt-proc':
      return records(await processRoundTrip(name as ProcessRoundTrip, params as unknown as RoundTripOptions));
    case 'rtt-thread':
      return records(await threadRoundTrip(name as keyof typeof THREAD_ROUND_TRIPS, params as unknown as RoundTripOptions));
    case 'tput-proc':
      return records(await processStream(name as ProcessStream, params as unknown as StreamOptions));
    case 'tput-thread':
      return records(await threadStream(name as keyof typeof THREAD_STREAMS, params as unknown as StreamOptions));
    case 'micro':
      return records(await micro(Boolean(params.quick)));
    case 'alloc':
      return allocation(params.messages as number);
    case 'eventloop':
      return eventLoop(name, params as unknown as EventLoopParams);
    case 'channel':
      return channelScenario(name, params as unknown as ChannelParams);
    case 'bridge':
      return bridgeScenario(name, params as unknown as BridgeParams);
    case 'latest':
      return latestScenario(params as unknown as LatestParams);
    case 'sync':
      return syncScenario(params as unknown as SyncParams);
    case 'mpsc':
      return mpscScenario(params as unknown as MpscParams);
    case 'broadcast':
      return broadcastScenario(params as unknown as BroadcastParams);
    default:
      throw new Error(`scenario: unknown kind ${String(kind)}`);
  }
}

const [kind, name, params] = process.argv.slice(2);
exitWithParent(); // an orphaned scenario ends itself (spin loops check through their Watchdog)
try {
  const outcome = await run(kind as Kind, name ?? '', JSON.parse(params ?? '{}') as Record<string, unknown>);
  process.stdout.write(`${JSON.stringify(outcome)}\n`);
} finally {
  killChildren();
}
process.exit(0); // workers and handles left by a transport must not keep us alive
