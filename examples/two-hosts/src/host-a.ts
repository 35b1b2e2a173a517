/**
 * Host A: writes `count` orders into a ring of its own, and a bridge
 * (bridge(), the function behind `shmring bridge`, here on the event loop
 * it shares with the writer; the command adds `dedicated`) moves them to a NATS subject.
 * Prints a one-line JSON summary (with the run's id, new each run unless
 * given) once the bridge has handed everything to NATS.
 *
 *   node host-a.js nats://host:port/<subject>[?jetstream=<stream>] [count] [run]
 */
import { bridge } from '@shmring/channel';
import { endingOf, stopOnEnd, stopWithBridge } from './lifeline.js';
import { createRing, END, end, isRun, newRun, order } from './orders.js';

const [url, countArg = '100000', run = newRun()] = process.argv.slice(2);
if (url === undefined || !/^\d+$/.test(countArg) || !Number.isSafeInteger(Number(countArg)) || !isRun(run)) {
  console.error(
    'usage: node host-a.js nats://host:port/<subject>[?jetstream=<stream>] [count] [run]: count is a non-negative integer up to 2^53 - 1, run up to 16 hex digits',
  );
  process.exit(2);
}
const count = Number(countArg);

const stop = new AbortController();
stopOnEnd(stop);
let created: ReturnType<typeof createRing> | undefined;
let unlinked = false;
try {
  created = createRing('a');
  const { name, region, ring } = created;
  let onReady!: () => void;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  // The bridge is the ring's consumer: it drains it in batches and publishes each record, its type in a header.
  const bridged = bridge(`shm:${name}`, url, { signal: stop.signal, onReady });
  // A bridge that ends before this host stops it (it failed) stops the host: its writes would wait for room for ever.
  stopWithBridge(bridged, stop);
  await Promise.race([ready, bridged]);
  stop.signal.throwIfAborted(); // stopped while the bridge was connecting
  region.unlink(); // the bridge has the ring mapped: nothing stays in /dev/shm, however this process ends
  unlinked = true;
  const started = performance.now();
  const signal = stop.signal;
  for (let seq = 0; seq < count; seq++) {
    const message = order(run, seq);
    // write() waits (without blocking the event loop) while the ring is full: NATS is slow or away.
    if (!ring.tryWrite(message, seq % 3)) await ring.write(message, { type: seq % 3, peerTimeoutMs: Infinity, signal });
  }
  await ring.write(end(run, count), { type: END, peerTimeoutMs: Infinity, signal });
  // The bridge has taken everything once the ring is empty; stopping it flushes what it published.
  while (ring.size > 0) {
    signal.throwIfAborted();
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  stop.abort();
  await bridged;
  console.log(JSON.stringify({ host: 'A', run, sent: count, ms: Math.round(performance.now() - started) }));
} catch (err) {
  // A typed error (ERR_SHMRING_UNREACHABLE, ERR_SHMRING_INVALID_ENDPOINT, …) names the address.
  console.error(`host A: ${endingOf(err, stop)}`);
  process.exitCode ||= 1;
} finally {
  stop.abort();
  if (created !== undefined) {
    if (!unlinked) created.region.unlink(); // the bridge never got going
    created.region.close();
  }
}
