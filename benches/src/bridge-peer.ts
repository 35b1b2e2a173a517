/**
 * The child processes of the bridge section (bridge.ts). argv[2] is the
 * role, argv[3] a JSON object of options; each prints `ready` once it can
 * be measured.
 *
 *   bridge    bridge(from, to, { poll, dedicated }) from @shmring/channel: with
 *             dedicated, as `shmring bridge` runs it (the process is the bridge's);
 *             without, as a program that calls bridge() beside its own work.
 *             SIGTERM aborts it and the process ends normally (so that
 *             SHMRING_BRIDGE_NODE_ARGS='--cpu-prof …' writes its profile).
 *   publish   (child_process.fork) the baseline: the nats client alone publishing
 *             one message of `size` bytes from memory, again and again, with the
 *             bridge's header (`Shmring-Type`, encoded once, as the bridge's are), in
 *             batches of `batch` publishes, each followed by its flush, the loop
 *             waiting for the previous batch's flush before the next batch, as the
 *             bridge does. 'run' starts the loop, 'stop' stops it and is answered with
 *             { published }; 'exit' closes the connection and ends the process.
 *   hop       (child_process.fork) the latency row's floor: the consumer of the ring `ring`
 *             (a POSIX name) parked as the dedicated bridge parks (readSync, no spin, in
 *             slices with a turn of the event loop between them), and nothing else: for
 *             each message, [sequence number, process.hrtime at its return less the
 *             source's stamp (ns)] over IPC. What the bridge's wait alone costs a message,
 *             without the bridge's work or NATS. SIGTERM, or the source's end, ends it.
 *   source    (child_process.fork) the latency row's sender: the producer of the rings
 *             `rings` (by contender) and a nats connection. { via, count, gapMs } sends
 *             `count` messages of `size` bytes, one every gapMs, each stamped with its
 *             sequence number and process.hrtime at hand-over, into the ring of `via`
 *             or, via 'nats', published on `subject`; then answers 'done'. 'exit' ends it.
 */
import { randomFillSync } from 'node:crypto';
import { bridge } from '@shmring/channel';
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { connect, headers, type MsgHdrs } from 'nats';
import { exitWithParent } from './harness.js';

const role = process.argv[2];
const options = JSON.parse(process.argv[3] ?? '{}') as {
  from?: string;
  to?: string;
  poll?: number;
  dedicated?: boolean;
  rings?: Record<string, string>;
  ring?: string;
  server?: string;
  subject?: string;
  size?: number;
  batch?: number;
};

function ready(): void {
  process.stdout.write('ready\n');
}

async function runBridge(): Promise<void> {
  const stop = new AbortController();
  process.once('SIGTERM', () => stop.abort());
  await bridge(options.from!, options.to!, { signal: stop.signal, onReady: ready, poll: options.poll, dedicated: options.dedicated });
}

/**
 * publish()'s options with the bridge's `Shmring-Type` header, made and encoded once, as the bridge's
 * TypeHeaders does (packages/channel/src/bridge/bridge.ts): the client asks the headers for their bytes on
 * each publish, and gets the ones encoded here.
 */
function onceEncodedHeaders(): { headers: MsgHdrs } {
  const h = headers();
  h.set('Shmring-Type', '1');
  const encodable = h as MsgHdrs & { encode?: () => Uint8Array };
  if (typeof encodable.encode === 'function') {
    const bytes = encodable.encode();
    encodable.encode = () => bytes;
  }
  return { headers: h };
}

async function publisher(): Promise<void> {
  const nc = await connect({ servers: options.server!, name: 'shmring bench baseline publisher' });
  const payload = randomFillSync(new Uint8Array(options.size!));
  const withHeader = onceEncodedHeaders();
  const batch = options.batch!;
  let running = false;
  let published = 0;
  let loop: Promise<void> = Promise.resolve();
  // As the bridge's ringToCore: each batch's flush is started right after the batch, and the loop waits for
  // the previous batch's flush, not this one's, so one batch travels while the next is published.
  const run = async (): Promise<void> => {
    let previous: Promise<unknown> = Promise.resolve();
    while (running) {
      for (let i = 0; i < batch; i++) nc.publish(options.subject!, payload, withHeader);
      published += batch;
      const flushed = nc.flush();
      await previous;
      previous = flushed.catch(() => undefined);
    }
    await previous; // 'stop' answers once the server has every batch
  };
  process.on('message', (m: string) => {
    if (m === 'run' && !running) {
      running = true;
      loop = run();
    } else if (m === 'stop') {
      running = false;
      void loop.then(() => process.send!({ published }));
    } else if (m === 'exit') {
      running = false;
      void loop.then(() => nc.close()).then(() => process.exit(0));
    }
  });
  ready();
}

/** Offsets in a latency message (bridge.ts): its sequence number, and the source's process.hrtime at hand-over. */
const SEQ_AT = 0;
const SENT_AT = 8;
/** ms the hop parks at most before it lets the event loop turn (IPC, SIGTERM), as the dedicated bridge's first slice. */
const HOP_SLICE_MS = 20;

async function hop(): Promise<void> {
  const region = Region.open({ backing: 'posix', name: options.ring! });
  const ring = SpscRing.attach(region);
  let running = true;
  process.once('SIGTERM', () => (running = false));
  ready();
  while (running) {
    let m: Uint8Array | null = null;
    try {
      m = ring.readSync({ timeoutMs: HOP_SLICE_MS, spin: 0 });
    } catch (err) {
      const code = (err as { code?: string }).code;
      // The source exits at the end of the row, before this process is told to: the end, not a failure.
      if (code === 'ERR_SHMRING_PEER_DEAD' || code === 'ERR_SHMRING_CLOSED') break;
      if (code !== 'ERR_SHMRING_TIMEOUT') throw err;
    }
    if (m !== null) {
      const now = process.hrtime.bigint();
      const view = new DataView(m.buffer, m.byteOffset, m.byteLength);
      process.send!([view.getUint32(SEQ_AT, true), Number(now - view.getBigUint64(SENT_AT, true))]);
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  ring.detach();
  region.close();
  process.exit(0);
}

async function source(): Promise<void> {
  const regions = new Map(Object.entries(options.rings!).map(([via, name]) => [via, Region.open({ backing: 'posix', name })]));
  const rings = new Map([...regions].map(([via, region]) => [via, SpscRing.attach(region)]));
  const nc = await connect({ servers: options.server!, name: 'shmring bench latency source' });
  const h = headers();
  h.set('Shmring-Type', '1');
  const payload = new Uint8Array(options.size!);
  const view = new DataView(payload.buffer);
  const seq = new Map<string, number>();
  process.on('message', (m: 'exit' | { via: string; count: number; gapMs: number }) => {
    if (m === 'exit') {
      void nc.close().then(() => {
        for (const region of regions.values()) region.close();
        process.exit(0);
      });
      return;
    }
    void (async () => {
      for (let i = 0; i < m.count; i++) {
        await new Promise((resolve) => setTimeout(resolve, m.gapMs));
        const n = seq.get(m.via) ?? 0;
        seq.set(m.via, n + 1);
        view.setUint32(SEQ_AT, n, true);
        view.setBigUint64(SENT_AT, process.hrtime.bigint(), true);
        if (m.via === 'nats') nc.publish(options.subject!, payload, { headers: h });
        else if (!rings.get(m.via)!.tryWrite(payload, 1)) throw new Error(`latency source: the ring of ${m.via} is full`);
      }
      process.send!('done');
    })();
  });
  ready();
}

exitWithParent();
switch (role) {
  case 'bridge':
    await runBridge();
    break;
  case 'publish':
    await publisher();
    break;
  case 'source':
    await source();
    break;
  case 'hop':
    await hop();
    break;
  default:
    throw new Error(`bridge-peer: unknown role ${role}`);
}
