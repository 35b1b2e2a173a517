/**
 * Host B: a bridge (bridge(), the function behind `shmring bridge`, here on this
 * process's event loop; the command adds `dedicated`) moves the NATS
 * subject's messages into a ring of its own, which this process reads
 * until the END message, checking that every order came, in order, with
 * its type, and as many as END says host A sent (orders lost just before
 * END leave no gap to see). Prints `ready` once subscribed, then a one-line
 * JSON summary; exits 1, saying on stderr what was missing or out of order,
 * when the run did not all come in order.
 * Given a run id (host A's), it passes over the messages of other runs (a
 * JetStream stream keeps earlier runs, and a new consumer gets them first)
 * and counts them as `skipped`; without one it checks the first run that
 * comes.
 *
 *   node host-b.js nats://host:port/<subject>[?jetstream=<stream>] [timeout s] [run]
 */
import { bridge } from '@shmring/channel';
import { Region } from '@shmring/core';
import { setTimeout as sleep } from 'node:timers/promises';
import { endingOf, stopOnEnd, stopWithBridge } from './lifeline.js';
import { createRing, END, isRun, parse } from './orders.js';

const [url, timeoutArg = '600', wanted] = process.argv.slice(2);
if (
  url === undefined ||
  !/^\d+$/.test(timeoutArg) ||
  Number(timeoutArg) === 0 ||
  !Number.isSafeInteger(Number(timeoutArg) * 1000) ||
  (wanted !== undefined && !isRun(wanted))
) {
  console.error(
    'usage: node host-b.js nats://host:port/<subject>[?jetstream=<stream>] [timeout s] [run]: the timeout is a positive integer (seconds each read may wait), run up to 16 hex digits',
  );
  process.exit(2);
}
const timeoutMs = Number(timeoutArg) * 1000;

const stop = new AbortController();
stopOnEnd(stop);
let created: ReturnType<typeof createRing> | undefined;
let bridged: Promise<void> | undefined;
let unlinked = false;
try {
  created = createRing('b');
  const { name, region, ring } = created;
  let onReady!: () => void;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  // The bridge is a producer of the ring: it writes each NATS message, waiting for room when the ring is full.
  bridged = bridge(url, `shm:${name}`, { signal: stop.signal, onReady });
  // A bridge that ends before this host stops it (it failed) stops the host: its reads would wait for nothing.
  stopWithBridge(bridged, stop);
  await Promise.race([ready, bridged]);
  stop.signal.throwIfAborted(); // stopped while the bridge was connecting
  region.unlink(); // the bridge has the ring mapped: nothing stays in /dev/shm, however this process ends
  unlinked = true;
  console.log('ready');
  let run = wanted;
  let received = 0;
  let outOfOrder = 0;
  let skipped = 0;
  let started = 0;
  let sent: number;
  for (;;) {
    // Each wait: up to `timeoutMs` for the next message (ERR_SHMRING_TIMEOUT after it).
    const message = await ring.read({ timeoutMs, peerTimeoutMs: Infinity, signal: stop.signal });
    const { run: of, n } = parse(message);
    run ??= of;
    if (of !== run) {
      skipped++; // another run's, END included
      continue;
    }
    if (received === 0) started = performance.now();
    if (ring.lastType === END) {
      sent = n; // the count of orders host A sent
      break;
    }
    if (n !== received || ring.lastType !== received % 3) outOfOrder++;
    received++;
  }
  stop.abort();
  await bridged;
  const missing = Math.max(0, sent - received);
  const ms = Math.round(performance.now() - started);
  console.log(JSON.stringify({ host: 'B', run, sent, received, missing, outOfOrder, skipped, ms }));
  const fault = faultOf(run!, sent, received, outOfOrder);
  if (fault !== undefined) {
    console.error(`host B: ${fault}`);
    process.exitCode = 1;
  }
} catch (err) {
  // A typed error (ERR_SHMRING_UNREACHABLE, ERR_SHMRING_INVALID_ENDPOINT, …) names the address.
  console.error(`host B: ${endingOf(err, stop)}`);
  process.exitCode ||= 1;
} finally {
  stop.abort();
  if (created !== undefined) {
    // The aborted bridge writes its marker no more once it has ended: the marker goes then. A bridge still going
    // after 2 s (stopped early, it may be) does not hold up the rest: the marker goes now, and again once it ends.
    const marker = `${created.name}.jsbridge`;
    const settled = (bridged ?? Promise.resolve()).then(
      () => true,
      () => true,
    );
    const ended = await Promise.race([settled, sleep(2000, false, { ref: false })]);
    if (!unlinked) created.region.unlink(); // the bridge never got going
    created.region.close();
    removeMarker(marker);
    if (!ended) {
      void settled
        .then(() => removeMarker(marker))
        .catch((err: unknown) => console.error(`host B: cannot remove ${marker}: ${(err as Error).message}`));
    }
  }
}

/** What went wrong with run `run`, which END says sent `sent` orders, of which `received` came; undefined if nothing did. */
function faultOf(run: string, sent: number, received: number, outOfOrder: number): string | undefined {
  if (Number.isNaN(sent)) return `run ${run}: its END carries no count of orders (from a host A older than this host B?)`;
  if (received === sent && outOfOrder === 0) return undefined;
  // In order, the orders that came are 0 … received - 1: those lost are the last ones before END.
  if (received < sent && outOfOrder === 0) {
    const lost = sent - received === 1 ? `order ${received} is` : `orders ${received} to ${sent - 1} are`;
    return `run ${run}: host A sent ${sent} orders, ${received} came: ${lost} missing`;
  }
  return `run ${run}: host A sent ${sent} orders, ${received} came, ${outOfOrder} out of order`;
}

/**
 * With ?jetstream=, the bridge keeps a marker object beside the ring
 * (`<ring>.jsbridge`: the last stream sequence the ring holds) so that a
 * bridge restarted on the same ring neither loses nor repeats a message.
 * This ring dies with the process, so its marker goes too.
 */
function removeMarker(marker: string): void {
  try {
    Region.open({ backing: 'posix', name: marker }).unlink();
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOENT') throw err;
  }
}
