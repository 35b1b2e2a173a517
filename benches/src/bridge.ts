/**
 * The bridge section: `bridge(shm:<ring>, nats://…)` from @shmring/channel
 * (what `shmring bridge` runs) against the nats client alone, both talking
 * to a real nats-server that the scenario starts on free loopback ports
 * (nats-server.ts) and stops. Without nats-server the section is skipped,
 * saying why, in the notes. One scenario process per row (run.ts:
 * `bridge.<row>`); records `bridge.<row>.<contender>`:
 *
 *   tput     messages/s and bytes/s into nats-server, per message size. bridge: this
 *            process writes a ring (tryWrite, and write() when it is full: the ring
 *            stays full, so the bridge is what limits) that a bridge process
 *            (bridge-peer.ts) drains into a subject; nats: a process publishing the
 *            same message from memory with the nats client, with the bridge's header
 *            encoded once, in batches of BRIDGE_BATCH publishes and one flush, waiting
 *            for the previous batch's flush before the next batch (what the bridge does
 *            per batch). Nobody subscribes: the rate is what the server takes in,
 *            read from its /varz before and after each block, so both contenders are
 *            counted in the same way. Blocks alternate between the contenders, the
 *            order rotating; a rate is the median of the blocks' rates.
 *   latency  one 64-byte message every gapMs (a sparse stream: every side has parked
 *            in between), from a source process (bridge-peer.ts) to a subscription
 *            of this process: p50, p99. bridge: the source writes it into the ring
 *            (tryWrite) → bridge process → nats-server → subscriber; nats: the source
 *            publishes it → nats-server → subscriber. Each message carries the
 *            source's process.hrtime (CLOCK_MONOTONIC, one clock for every process of
 *            the machine) when it was handed over; the subscriber subtracts it from its
 *            own at arrival. The difference of the p50s is what the bridge adds to a
 *            NATS hop. Each bridge process runs bridge(…, { dedicated: true }), as
 *            `shmring bridge` does (it parks its thread while the ring is empty).
 *            bridge-poll: the same through a second ring and bridge process started
 *            with { poll: BRIDGE_POLL_US }; bridge-loop: through a third, without
 *            dedicated, as a program that calls bridge() beside its own work runs it
 *            (it waits on the event loop). Blocks of messages alternate as above.
 */
import { randomFillSync } from 'node:crypto';
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { connect, type Msg, type NatsConnection } from 'nats';
import { processCpuNs } from './channel.js';
import { droppedNote, percentiles, Samples, startPeer, type Peer } from './harness.js';
import type { Measurement, Metric } from './measurement.js';
import { BenchNats, NATS_MISSING } from './nats-server.js';

const PEER = new URL('./bridge-peer.js', import.meta.url).pathname;

/** The rows, each a scenario process of its own (`bridge.<row>`). */
export const BRIDGE_ROWS = ['tput', 'latency'] as const;
export type BridgeRow = (typeof BRIDGE_ROWS)[number];

/** Publishes per flush of the baseline publisher: the bridge's batch (packages/channel/src/bridge/bridge.ts, BATCH). */
export const BRIDGE_BATCH = 512;
/** Bytes of the throughput row's ring: room for 256 messages, at least 1 MiB (a ring sized for its messages, as a user would). */
export function tputRingCapacity(size: number): number {
  let capacity = 1 << 20;
  while (capacity < 256 * size) capacity *= 2;
  return capacity;
}

function sizeLabel(size: number): string {
  return size >= 1 << 20 ? `${size / (1 << 20)} MiB` : size >= 1024 ? `${size / 1024} KiB` : `${size} B`;
}
const LATENCY_RING_CAPACITY = 1 << 20;
const LATENCY_SIZE = 64;
/** Flags for the bridge process only, for profiling: SHMRING_BRIDGE_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'. */
const BRIDGE_NODE_ARGS = (process.env.SHMRING_BRIDGE_NODE_ARGS ?? '').split(' ').filter(Boolean);

export interface BridgeParams {
  tput: { sizes: number[]; warmupMs: number; blocks: number; blockMs: number };
  latency: { warmup: number; blocks: number; perBlock: number; gapMs: number };
}

export interface Outcome {
  records: Measurement[];
  notes: string[];
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A POSIX-named SpscRing the bridge opens by name; the name is removed once the bridge has it (unlinkName), or at the end. */
class NamedRing {
  readonly region: Region;
  readonly ring: SpscRing;
  #unlinked = false;

  constructor(
    readonly name: string,
    capacity: number,
  ) {
    this.region = Region.create({ backing: 'posix', name, size: SpscRing.regionSize({ capacity }) });
    try {
      this.ring = SpscRing.create(this.region, { capacity });
    } catch (err) {
      this.close();
      throw err;
    }
  }

  unlinkName(): void {
    if (this.#unlinked) return;
    this.#unlinked = true;
    this.region.unlink();
  }

  close(): void {
    this.unlinkName();
    this.region.close();
  }
}

/** Starts a bridge process `from` → `to` and waits until it is ready; `dedicated` as `shmring bridge` runs it (the default). */
async function startBridge(from: string, to: string, poll?: number, dedicated = true): Promise<Peer> {
  const peer = startPeer('bridge', [], poll === undefined ? { from, to, dedicated } : { from, to, poll, dedicated }, {
    script: PEER,
    nodeArgs: BRIDGE_NODE_ARGS,
  });
  await peer.ready;
  if (peer.child.exitCode !== null) throw new Error(`the bridge ${from} → ${to} exited before it was ready`);
  return peer;
}

/** SIGTERM (the bridge aborts, lets go of the ring and the connection, and exits normally), SIGKILL after 5 s. */
async function stopPeer(peer: Peer): Promise<void> {
  if (peer.child.exitCode !== null || peer.child.signalCode !== null) return;
  const timer = setTimeout(() => peer.child.kill('SIGKILL'), 5000);
  peer.child.kill('SIGTERM');
  await peer.result.catch(() => undefined);
  clearTimeout(timer);
}

// ---- throughput ----

interface Contender {
  id: 'bridge' | 'nats';
  /** The process that publishes (the bridge; the baseline publisher): its CPU time per message is reported. */
  pid: number | undefined;
  rates: number[];
  /** Over the measured windows: messages the server took in, and CPU ns of the publishing process meanwhile. */
  msgs: number;
  cpuNs: number;
  start(): void;
  stop(): Promise<void>;
}

/** Waits until the server's inbound count stops moving (what a contender had in flight has arrived). */
async function quiesce(nats: BenchNats): Promise<void> {
  let last = (await nats.inbound()).msgs;
  for (let i = 0; i < 200; i++) {
    await sleep(20);
    const now = (await nats.inbound()).msgs;
    if (now === last) return;
    last = now;
  }
  throw new Error('nats-server kept receiving for 4 s after a block ended');
}

/** A sample of the server's inbound count, timed at the middle of the request. */
async function sample(nats: BenchNats): Promise<{ msgs: number; at: number }> {
  const t0 = performance.now();
  const { msgs } = await nats.inbound();
  return { msgs, at: (t0 + performance.now()) / 2 };
}

/** One block: the contender runs for warmupMs, then for ms while the server's count is read before and after. */
async function tputBlock(nats: BenchNats, c: Contender, warmupMs: number, ms: number, record: boolean): Promise<void> {
  c.start();
  try {
    await sleep(warmupMs);
    const cpu = processCpuNs(c.pid);
    const a = await sample(nats);
    await sleep(ms);
    const b = await sample(nats);
    if (record) {
      c.rates.push(((b.msgs - a.msgs) * 1000) / (b.at - a.at));
      c.msgs += b.msgs - a.msgs;
      c.cpuNs += processCpuNs(c.pid) - cpu;
    }
  } finally {
    await c.stop();
  }
  await quiesce(nats);
}

/** The ring's producer: writes the same message for as long as it runs, waiting in write() while the ring is full. */
function ringContender(named: NamedRing, payload: Uint8Array, bridgePid: number | undefined): Contender {
  let running = false;
  let loop: Promise<void> = Promise.resolve();
  const { ring } = named;
  const produce = async (): Promise<void> => {
    let n = 0;
    while (running) {
      if (!ring.tryWrite(payload, 1)) await ring.write(payload, { type: 1, peerTimeoutMs: Infinity, timeoutMs: 10_000 });
      else if ((++n & 1023) === 0) await yieldToLoop(); // the bridge keeps up: let the timers run
    }
  };
  return {
    id: 'bridge',
    pid: bridgePid,
    rates: [],
    msgs: 0,
    cpuNs: 0,
    start: () => {
      running = true;
      loop = produce();
    },
    stop: async () => {
      running = false;
      await loop;
      // The bridge empties the ring (quiesce() waits for the server to have it all).
      for (let i = 0; i < 500 && ring.size > 0; i++) await sleep(10);
    },
  };
}

function publisherContender(peer: Peer): Contender {
  const { child } = peer;
  return {
    id: 'nats',
    pid: child.pid,
    rates: [],
    msgs: 0,
    cpuNs: 0,
    start: () => child.send!('run'),
    stop: () =>
      new Promise<void>((resolve, reject) => {
        const onExit = (): void => reject(new Error('the baseline publisher exited'));
        child.once('exit', onExit);
        child.once('message', () => {
          child.off('exit', onExit);
          resolve();
        });
        child.send!('stop');
      }),
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function fmtRange(xs: number[]): string {
  const r = (x: number): string => (x >= 100 ? Math.round(x).toString() : x.toPrecision(3));
  return `${r(Math.min(...xs))}–${r(Math.max(...xs))}`;
}

async function tputSize(nats: BenchNats, size: number, p: BridgeParams['tput']): Promise<Measurement[]> {
  const subject = `bench.bridge.tput.${size}`;
  const capacity = tputRingCapacity(size);
  const named = new NamedRing(`shmring-bench-bridge-${process.pid}-${size}`, capacity);
  const peers: Peer[] = [];
  try {
    const payload = randomFillSync(new Uint8Array(size));
    const bridgePeer = await startBridge(`shm:${named.name}`, nats.url(subject));
    peers.push(bridgePeer);
    named.unlinkName(); // the bridge has it mapped: nothing is left in /dev/shm if we die
    const publisher = startPeer('publish', [], { server: nats.server, subject, size, batch: BRIDGE_BATCH }, { script: PEER, ipc: true });
    peers.push(publisher);
    await publisher.ready;
    const contenders = [ringContender(named, payload, bridgePeer.child.pid), publisherContender(publisher)];
    for (const c of contenders) await tputBlock(nats, c, p.warmupMs, p.blockMs, false);
    for (let b = 0; b < p.blocks; b++) {
      for (let i = 0; i < contenders.length; i++) {
        const c = contenders[(b + i) % contenders.length]!;
        await tputBlock(nats, c, 20, p.blockMs, true);
      }
    }
    publisher.child.send!('exit');
    return contenders.flatMap((c) => {
      const rate = median(c.rates);
      const transport = c.id === 'bridge' ? 'ring → bridge → nats-server' : 'nats client alone, publishing from memory';
      const note =
        `median of ${c.rates.length} blocks of ${p.blockMs} ms interleaved with the other's (${fmtRange(c.rates)} msg/s), ` +
        `counted by nats-server (/varz in_msgs)${c.id === 'bridge' ? `; a ring of ${sizeLabel(capacity)} kept full` : `; ${BRIDGE_BATCH} publishes per flush, the previous batch's flush awaited before the next batch, as the bridge does`}; ` +
        `CPU of the ${c.id === 'bridge' ? 'bridge' : 'publisher'} process: ${(c.cpuNs / c.msgs / 1000).toFixed(2)} µs per message`;
      return [
        rec(`bridge.tput.${c.id}`, transport, size, 'messages/s', rate, 'msg/s', note),
        rec(`bridge.tput.${c.id}`, transport, size, 'bytes/s', rate * size, 'B/s', note),
      ];
    });
  } finally {
    for (const peer of peers) await stopPeer(peer);
    named.close();
  }
}

async function tputRow(p: BridgeParams['tput']): Promise<Outcome> {
  const nats = await BenchNats.start();
  try {
    const records: Measurement[] = [];
    for (const size of p.sizes) records.push(...(await tputSize(nats, size, p)));
    return { records, notes: [] };
  } finally {
    await nats.stop();
  }
}

// ---- latency ----

/** Offsets in a latency message: its sequence number, and when the source handed it over (process.hrtime, ns). */
const SEQ_AT = 0;
const SENT_AT = 8;

/** The subscriber: one latency sample per message, `process.hrtime` at arrival less the stamp the source put in it. */
class Arrivals {
  samples: Samples | undefined;
  received = 0;
  lastSeq = -1;
  gaps = 0;

  receive(msg: Msg): void {
    const now = process.hrtime.bigint();
    const view = new DataView(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength);
    this.record(view.getUint32(SEQ_AT, true), Number(now - view.getBigUint64(SENT_AT, true)));
  }

  /** A message numbered `seq` that took `ns` (the subscriber's measure, or the hop peer's). */
  record(seq: number, ns: number): void {
    if (seq !== this.lastSeq + 1) this.gaps++;
    this.lastSeq = seq;
    this.received++;
    this.samples?.addMs(ns / 1e6);
  }
}

/**
 * Sends `count` messages through the source process, `via` the ring and
 * the bridge or straight to NATS, and waits until they have all arrived.
 */
async function latencyBlock(source: Peer, arrivals: Arrivals, via: LatencyId, count: number, gapMs: number): Promise<void> {
  const expected = arrivals.received + count;
  await new Promise<void>((resolve, reject) => {
    const onExit = (): void => reject(new Error('the latency source exited'));
    source.child.once('exit', onExit);
    source.child.once('message', () => {
      source.child.off('exit', onExit);
      resolve();
    });
    source.child.send!({ via, count, gapMs });
  });
  for (let i = 0; i < 500 && arrivals.received < expected; i++) await sleep(2);
  if (arrivals.received < expected) throw new Error(`latency: ${expected - arrivals.received} of ${count} messages ${via} never arrived`);
}

/**
 * The latency row's contenders: the bridge as `shmring bridge` runs it, the same with BRIDGE_POLL_US,
 * bridge() sharing its event loop (not dedicated), and the nats client alone; and, as a floor for what
 * the bridge adds, `ring-hop`: the ring read by a process parked as the dedicated bridge parks, alone
 * (no bridge, no NATS: the wake-up of a parked Node process, measured in that process).
 */
const LATENCY_IDS = ['bridge', 'bridge-poll', 'bridge-loop', 'nats', 'ring-hop'] as const;
/** The contenders whose messages go through a ring (the source writes them there). */
const RING_IDS = ['bridge', 'bridge-poll', 'bridge-loop', 'ring-hop'] as const;
type LatencyId = (typeof LATENCY_IDS)[number];
/** The poll window (µs) of the `bridge-poll` contender: longer than the 1 ms between messages. */
export const BRIDGE_POLL_US = 2000;

async function latencyRow(p: BridgeParams['latency']): Promise<Outcome> {
  const nats = await BenchNats.start();
  const rings: NamedRing[] = [];
  const peers: Peer[] = [];
  let sub: NatsConnection | undefined;
  try {
    sub = await connect({ servers: nats.server, name: 'shmring bench subscriber' });
    const arrivals = Object.fromEntries(LATENCY_IDS.map((id) => [id, new Arrivals()])) as Record<LatencyId, Arrivals>;
    for (const id of LATENCY_IDS) {
      sub.subscribe(`bench.bridge.latency.${id}`, { callback: (err, msg) => err === null && arrivals[id].receive(msg) });
    }
    await sub.flush();
    const ringNames: Record<string, string> = {};
    for (const id of RING_IDS) {
      const named = new NamedRing(`shmring-bench-bridge-${process.pid}-${id}`, LATENCY_RING_CAPACITY);
      rings.push(named);
      ringNames[id] = named.name;
      if (id === 'ring-hop') {
        const hop = startPeer('hop', [], { ring: named.name }, { script: PEER, ipc: true });
        peers.push(hop);
        hop.child.on('message', ([seq, ns]: [number, number]) => arrivals['ring-hop'].record(seq, ns));
        await hop.ready;
        continue;
      }
      peers.push(
        await startBridge(
          `shm:${named.name}`,
          nats.url(`bench.bridge.latency.${id}`),
          id === 'bridge-poll' ? BRIDGE_POLL_US : undefined,
          id !== 'bridge-loop',
        ),
      );
    }
    const source = startPeer(
      'source',
      [],
      { rings: ringNames, server: nats.server, subject: 'bench.bridge.latency.nats', size: LATENCY_SIZE },
      { script: PEER, ipc: true },
    );
    peers.push(source);
    await source.ready;
    for (const named of rings) named.unlinkName();
    for (const id of LATENCY_IDS) await latencyBlock(source, arrivals[id], id, p.warmup, p.gapMs);
    for (const id of LATENCY_IDS) arrivals[id].samples = new Samples(p.blocks * p.perBlock);
    for (let b = 0; b < p.blocks; b++) {
      for (let i = 0; i < LATENCY_IDS.length; i++) {
        const id = LATENCY_IDS[(b + i) % LATENCY_IDS.length]!;
        await latencyBlock(source, arrivals[id], id, p.perBlock, p.gapMs);
      }
    }
    source.child.send!('exit');
    const records: Measurement[] = [];
    const transports: Record<LatencyId, string> = {
      bridge: 'ring → bridge → nats-server → subscriber',
      'bridge-poll': `ring → bridge (poll ${BRIDGE_POLL_US} µs) → nats-server → subscriber`,
      'bridge-loop': 'ring → bridge() on its event loop (not dedicated) → nats-server → subscriber',
      nats: 'publish → nats-server → subscriber',
      'ring-hop': 'ring → a process parked in readSync as the dedicated bridge (no bridge, no NATS)',
    };
    for (const id of LATENCY_IDS) {
      const q = percentiles(arrivals[id].samples!);
      const note =
        `one ${LATENCY_SIZE}-byte message every ${p.gapMs} ms (setTimeout) from a source process, ${id === 'nats' ? 'published' : 'written into the ring'}; ` +
        `${q.count} messages in ${p.blocks} blocks of ${p.perBlock}, interleaved with the others'; ` +
        `process.hrtime at arrival in the ${id === 'ring-hop' ? "reader's" : "subscriber's"} process less the source's stamp` +
        `${arrivals[id].gaps > 0 ? `; ${arrivals[id].gaps} gaps in the sequence` : ''}${droppedNote(q)}`;
      for (const metric of ['p50', 'p99', 'p99.9', 'max', 'mean'] as const) {
        records.push(rec(`bridge.latency.${id}`, transports[id], LATENCY_SIZE, metric, Math.round(q[metric]), 'ns', note));
      }
    }
    return { records, notes: [] };
  } finally {
    for (const peer of peers) await stopPeer(peer);
    await sub?.close().catch(() => undefined);
    for (const named of rings) named.close();
    await nats.stop();
  }
}

function rec(name: string, transport: string, messageSize: number, metric: Metric, value: number, unit: string, note: string): Measurement {
  return { name, transport, messageSize, metric, value: Number(value.toPrecision(6)), unit, note };
}

/** One scenario process: the row `bridge.<row>`; without nats-server, no records and a note that says why. */
export async function bridgeScenario(name: string, params: BridgeParams): Promise<Outcome> {
  const row = name.slice('bridge.'.length) as BridgeRow;
  try {
    switch (row) {
      case 'tput':
        return await tputRow(params.tput);
      case 'latency':
        return await latencyRow(params.latency);
      default:
        throw new Error(`bridge: unknown row ${name} (rows: ${BRIDGE_ROWS.map((r) => `bridge.${r}`).join(', ')})`);
    }
  } catch (err) {
    if ((err as Error).message === NATS_MISSING) return { records: [], notes: [`${name} skipped: ${NATS_MISSING}`] };
    throw err;
  }
}
