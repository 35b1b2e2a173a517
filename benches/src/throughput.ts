/**
 * Streaming across two processes: this process produces messages of one size
 * as fast as the transport takes them for `durationMs` (after the consumer
 * said it is ready), then ends the stream; the consumer (peer.ts) checks every
 * sequence number and times its steady state (after `warmupMs`). The rate is
 * the consumer's.
 *
 *   SpscRing copy        tryWrite → tryRead (a copy into the ring, a copy out of it)
 *   SpscRing zero-copy   claim / commit → drain: the producer fills the claimed
 *                        space (ring.data.set of the message: the one copy that
 *                        puts the bytes in shared memory), the consumer reads
 *                        them in place: the sequence number, and one word of
 *                        each cache line of the payload (harness.ts, LineSum),
 *                        so that every line of it reaches the consumer's CPU
 *   … corked             the same, with ring.cork() / uncork() around every
 *                        CORK_BATCH messages: one publication per batch, as
 *                        the socket baseline makes one write per batch
 *   MpmcQueue            tryWrite → drain (1 producer, 1 consumer; read in place
 *                        as the zero-copy consumer reads)
 *   Unix socket          4-byte length framing, frames copied into batches of
 *                        as many as fit in SOCKET_BATCH bytes (at least one),
 *                        one write per batch, honouring back-pressure (the
 *                        baseline); and, for scale, one write per message,
 *                        where a batch holds more than one frame (socketBatch:
 *                        from 32 KiB on, the batched stream is that already,
 *                        and says so in its note)
 */
import { once } from 'node:events';
import { Region } from '@shmring/core';
import { MpmcQueue, type SpscRing } from '@shmring/ringbuf';
import { accepted, pow2AtLeast, ringRegion, socketPair, stamp, startPeer, Watchdog } from './harness.js';
import { throughputRecords, type Measurement } from './measurement.js';

export interface StreamOptions {
  size: number;
  durationMs: number;
  warmupMs: number;
  /** Independent streams (a fresh peer each); the median one is reported. Default 1. */
  repeats?: number;
}

/**
 * Runs `o.repeats` streams one after the other and returns the one with the
 * median rate, with every stream's rate: a pair of spinning processes settles
 * into a fast or a slow regime for a whole stream (how the two contend for
 * the lines they share), so one stream can be an outlier of either kind.
 */
export async function medianStream(
  o: StreamOptions,
  run: (o: StreamOptions) => Promise<ConsumerReport>,
): Promise<ConsumerReport & { rates: number[] }> {
  const reports: ConsumerReport[] = [];
  for (let i = 0; i < Math.max(1, o.repeats ?? 1); i++) reports.push(await run(o));
  const sorted = [...reports].sort((a, b) => a.rate - b.rate);
  return { ...sorted[(sorted.length - 1) >> 1]!, rates: reports.map((r) => r.rate) };
}

const LIMIT_MS = 120_000;

/** SpscRing capacity for messages of `size`: at least 1 MiB, and room for several of the largest (capacity/2 - 8 >= size). */
export function spscCapacity(size: number): number {
  return Math.max(1 << 20, pow2AtLeast(4 * (size + 8)));
}

/** MpmcQueue slots for messages of `size`: about 8 MiB of slots, between 4 and 8192 of them. */
export function mpmcSlots(size: number): number {
  const stride = Math.ceil((16 + size) / 64) * 64;
  let slots = 4;
  while (slots * 2 * stride <= 8 << 20 && slots < 8192) slots *= 2;
  return slots;
}

/** How often (mask of the message count) a producer looks at the clock. */
function clockMask(size: number): number {
  return size < 4096 ? 1023 : 15;
}

/** What a consuming peer reports (Meter.finish plus its checks). */
export interface ConsumerReport {
  count: number;
  bad: number;
  messages: number;
  seconds: number;
  rate: number;
  meanRate: number;
  windows: number;
}

function checkReport(what: string, sent: number, r: ConsumerReport): void {
  if (r.count !== sent || r.bad !== 0) throw new Error(`${what}: sent ${sent}, the consumer saw ${r.count} (${r.bad} out of sequence)`);
}

/** Messages per publication in the corked streams (a power of two). */
const CORK_BATCH = 32;

/**
 * Calls `put(seq)` (which waits for room itself) for seq = 0, 1, … until
 * `o.durationMs` is over; returns how many. With `corked`, that ring is
 * uncorked after every CORK_BATCH messages, and at the end.
 */
function produce(o: StreamOptions, put: (seq: number) => void, corked?: SpscRing): number {
  const mask = clockMask(o.size);
  const deadline = performance.now() + o.durationMs;
  let seq = 0;
  corked?.cork();
  for (;;) {
    put(seq);
    seq++;
    if (corked && (seq & (CORK_BATCH - 1)) === 0) {
      corked.uncork();
      corked.cork();
    }
    if ((seq & mask) === 0 && performance.now() > deadline) break;
  }
  corked?.uncork();
  return seq;
}

function produceCopy(ring: SpscRing, o: StreamOptions, corked: boolean): number {
  const message = new Uint8Array(o.size);
  const watchdog = new Watchdog('SpscRing copy producer', LIMIT_MS);
  return produce(
    o,
    (seq) => {
      stamp(message, seq);
      while (!ring.tryWrite(message)) watchdog.tick();
    },
    corked ? ring : undefined,
  );
}

function produceZeroCopy(ring: SpscRing, o: StreamOptions, corked: boolean): number {
  const message = new Uint8Array(o.size);
  const data = ring.data;
  const watchdog = new Watchdog('SpscRing zero-copy producer', LIMIT_MS);
  return produce(
    o,
    (seq) => {
      let at: number;
      while ((at = ring.claim(o.size)) < 0) watchdog.tick();
      data.set(message, at);
      if (o.size >= 4) stamp(data, seq, at);
      ring.commit(at);
    },
    corked ? ring : undefined,
  );
}

function produceMpmc(queue: MpmcQueue, o: StreamOptions): number {
  const message = new Uint8Array(o.size);
  const watchdog = new Watchdog('MpmcQueue producer', LIMIT_MS);
  return produce(o, (seq) => {
    stamp(message, seq);
    while (!queue.tryWrite(message)) watchdog.tick();
  });
}

/**
 * Starts the consuming peer `role` on `region`, runs `send` (which returns
 * how many messages it sent), closes `queue` so the peer ends, and checks
 * the peer's count against it.
 */
async function streamTo(
  queue: SpscRing | MpmcQueue,
  region: Region,
  role: string,
  peerOptions: Record<string, unknown>,
  o: StreamOptions,
  what: string,
  send: () => number,
): Promise<ConsumerReport> {
  const peer = startPeer(role, [region], { ...peerOptions, warmupMs: o.warmupMs, limitMs: LIMIT_MS, size: o.size });
  try {
    await peer.ready;
    const sent = send();
    queue.close();
    const report = (await peer.result) as unknown as ConsumerReport;
    checkReport(what, sent, report);
    return report;
  } finally {
    queue.close();
    region.close();
  }
}

export async function spscStream(mode: 'copy' | 'zero-copy', o: StreamOptions, corked = false): Promise<ConsumerReport> {
  const { region, ring } = ringRegion(spscCapacity(o.size));
  return streamTo(ring, region, 'ring-count', { mode }, o, `SpscRing ${mode}`, () =>
    mode === 'copy' ? produceCopy(ring, o, corked) : produceZeroCopy(ring, o, corked),
  );
}

export async function mpmcStream(o: StreamOptions): Promise<ConsumerReport> {
  const options = { capacity: mpmcSlots(o.size), slotSize: o.size };
  const region = Region.create({ backing: 'memfd', size: MpmcQueue.regionSize(options) });
  const queue = MpmcQueue.create(region, options);
  return streamTo(queue, region, 'mpmc-count', {}, o, 'MpmcQueue', () => produceMpmc(queue, o));
}

/** Bytes the batched socket stream gathers frames into, before one write. */
const SOCKET_BATCH = 65536;

/** Frames of `size`-byte messages (4-byte length prefix) per write of the batched socket stream: at least one. */
export function socketBatch(size: number): number {
  return Math.max(1, Math.floor(SOCKET_BATCH / (4 + size)));
}

/** Length-framed messages over a Unix socket: copied into batches (socketBatch), or one write per message (`batched` false). */
export async function socketStream(o: StreamOptions, batched = true): Promise<ConsumerReport> {
  const server = await socketPair();
  const peer = startPeer('socket-count', [], { socketPath: server.path, warmupMs: o.warmupMs, size: o.size });
  try {
    const socket = await accepted(peer, server);
    const frame = 4 + o.size;
    const perBatch = batched ? socketBatch(o.size) : 1;
    const message = Buffer.alloc(o.size);
    const deadline = performance.now() + o.durationMs;
    let seq = 0;
    while (performance.now() < deadline) {
      const batch = Buffer.allocUnsafe(perBatch * frame);
      for (let i = 0; i < perBatch; i++, seq++) {
        if (o.size >= 4) stamp(message, seq);
        batch.writeUInt32LE(o.size, i * frame);
        message.copy(batch, i * frame + 4);
      }
      if (!socket.write(batch)) await once(socket, 'drain');
    }
    socket.end();
    const report = (await peer.result) as unknown as ConsumerReport;
    checkReport('Unix socket', seq, report);
    return report;
  } finally {
    server.close();
  }
}

export const PROCESS_STREAMS = {
  'tput.proc.spsc-copy': { transport: 'SpscRing copy (tryWrite → tryRead)', run: (o: StreamOptions) => spscStream('copy', o) },
  'tput.proc.spsc-zc': { transport: 'SpscRing zero-copy (claim/commit → drain)', run: (o: StreamOptions) => spscStream('zero-copy', o) },
  'tput.proc.spsc-copy-cork': {
    transport: `SpscRing copy, corked (${CORK_BATCH} per publication)`,
    run: (o: StreamOptions) => spscStream('copy', o, true),
  },
  'tput.proc.spsc-zc-cork': {
    transport: `SpscRing zero-copy, corked (${CORK_BATCH} per publication)`,
    run: (o: StreamOptions) => spscStream('zero-copy', o, true),
  },
  'tput.proc.mpmc': { transport: 'MpmcQueue 1→1 (tryWrite → drain)', run: mpmcStream },
  'tput.proc.unix-socket': {
    transport: `Unix socket (framed, batched writes: as many frames as fit in ${SOCKET_BATCH / 1024} KiB, at least one)`,
    run: (o: StreamOptions) => socketStream(o, true),
  },
  'tput.proc.unix-socket-unbatched': {
    transport: 'Unix socket (framed, one write per message)',
    run: (o: StreamOptions) => socketStream(o, false),
  },
} as const;

export type ProcessStream = keyof typeof PROCESS_STREAMS;

export async function processStream(name: ProcessStream, o: StreamOptions): Promise<Measurement[]> {
  const scenario = PROCESS_STREAMS[name];
  const records = throughputRecords(name, scenario.transport, o.size, await medianStream(o, scenario.run));
  if (name !== 'tput.proc.unix-socket' || socketBatch(o.size) > 1) return records;
  // run.ts does not run the one-write-per-message row at this size: this row is that row.
  const alone = `one frame per write: a frame of ${4 + o.size} bytes fills a batch alone, so this is also one write per message`;
  return records.map((r) => ({ ...r, note: `${alone}; ${r.note}` }));
}
