/**
 * The pricing service: listens on a Unix socket path and answers every
 * client's requests with a quote. An unknown SKU makes the handler throw an
 * error with code UNKNOWN_SKU, which the caller gets as a RemoteError with
 * that code. On SIGTERM or SIGINT it closes the server (which closes its
 * channels and removes the socket path), prints a summary and exits.
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

const server = await listen(socketPath);
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

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    void server.close().then(() => {
      console.log(`server: ${clients} client${clients === 1 ? '' : 's'}, ${priced} orders priced, ${refused} refused`);
    });
  });
}
console.log(`listening ${socketPath}`);
