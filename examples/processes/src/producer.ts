/**
 * The producer: creates a ring, tells the consumer where it is, writes
 * `count` messages (each: a sequence number and some text), then closes.
 *
 *   node producer.js posix <name> <count>     the consumer finds the ring by its POSIX name
 *   node producer.js memfd <socket> <count>   the ring is a memfd, handed over a Unix socket
 */
import * as net from 'node:net';
import { once } from 'node:events';
import { Region, sendRegion } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';

const [how, where, countArg = '100000'] = process.argv.slice(2);
if ((how !== 'posix' && how !== 'memfd') || where === undefined || !/^\d+$/.test(countArg) || !Number.isSafeInteger(Number(countArg))) {
  console.error(`usage: node producer.js posix|memfd <name or socket> [count]: count is a non-negative integer, got '${countArg}'`);
  process.exit(2);
}
const count = Number(countArg);
const capacity = 1 << 16;
const size = SpscRing.regionSize({ capacity });

let region: Region;
if (how === 'posix') {
  region = Region.create({ backing: 'posix', name: where!, size });
} else {
  region = Region.create({ backing: 'memfd', size });
}
const ring = SpscRing.create(region, { capacity });

if (how === 'memfd') {
  // Hand the region to the first process that connects, then stop listening.
  const server = net.createServer({ pauseOnConnect: true });
  server.listen(where!);
  const [socket] = (await once(server, 'connection')) as [net.Socket];
  await sendRegion(socket, region);
  socket.end();
  server.close();
}

const encoder = new TextEncoder();
for (let seq = 0; seq < count; seq++) {
  // write() waits (without blocking the event loop) while the ring is full.
  await ring.write(encoder.encode(`${seq}:hello from ${process.pid}`), { type: seq % 3 });
}
ring.close(); // done: the consumer's for await ends after the last message
// The POSIX name stays: the consumer may not have opened it yet (with a small
// count this process can be done before it starts); it unlinks the name once
// it has the ring mapped.
region.close();
