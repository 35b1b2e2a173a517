/**
 * The pricing service: listens on a Unix socket path and answers every
 * client's requests with a quote. An unknown SKU makes the handler throw an
 * error with code UNKNOWN_SKU, which the caller gets as a RemoteError with
 * that code. On SIGTERM or SIGINT it closes the server (which closes its
 * channels and removes the socket path), prints a summary and exits; the
 * same when main.js, which started it, ends.
 *
 *   node examples/rpc/dist/src/server.js <socket path>    prints "listening <path>" once ready
 */
import { listen, type Channel } from '@shmring/channel';
import { price, type Order } from './pricing.js';

const socketPath = process.argv[2];
if (socketPath === undefined) {
  console.error('usage: server.js <socket path>');
  process.exit(2);
}

let server: Awaited<ReturnType<typeof listen>>;
try {
  server = await listen(socketPath);
} catch (err) {
  const e = err as { message?: string; code?: string };
  console.error(`server: ${e.message}${e.code === undefined ? '' : ` (${e.code})`}`);
  process.exit(1);
}
let clients = 0;
let priced = 0;
let refused = 0;

server.on('channel', (channel: Channel) => {
  clients++;
  channel.handle((order) => {
    try {
      const quote = price(order as Order);
      priced++;
      return quote;
    } catch (err) {
      refused++;
      throw err; // the caller's request() rejects with this message and code
    }
  });
});

let stopping = false;
function stop(): void {
  if (stopping) return;
  stopping = true;
  void server.close().then(
    () => console.log(`server: ${clients} client${clients === 1 ? '' : 's'}, ${priced} orders priced, ${refused} refused`),
    (err: unknown) => {
      // Not closed cleanly (the socket path may be left, a channel not ended): say so, and exit with 1 for main.js
      // to see; what is left of the server would otherwise keep the process (and main.js, waiting for it) alive.
      const e = err as { message?: string; code?: string };
      console.error(`server: close failed: ${e.message ?? String(err)}${e.code === undefined ? '' : ` (${e.code})`}`);
      process.exit(1);
    },
  );
}
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, stop);
// Started by main.js with an IPC channel: it closes when main.js ends, however it ends (even SIGKILL), and the
// server stops with it rather than listen for ever. (Unref'd: the channel alone keeps nothing alive.)
process.channel?.unref();
process.once('disconnect', stop);
if (process.send !== undefined && !process.connected) stop(); // main.js was gone before this listener was set
console.log(`listening ${socketPath}`);
