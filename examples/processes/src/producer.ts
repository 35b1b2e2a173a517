/**
 * The producer: creates a ring, tells the consumer where it is, writes
 * `count` messages (each: a sequence number and some text), then closes.
 *
 *   node producer.js posix <name> <count>     the consumer finds the ring by its POSIX name
 *   node producer.js memfd <socket> <count>   the ring is a memfd, handed over a Unix socket
 *
 * Stopped early (main.js gone, SIGINT, SIGTERM), or ending on an error
 * (exit 1, the error in one line on stderr), it removes the POSIX name or
 * the socket file it made.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { once } from 'node:events';
import { Region, sendRegion } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { endWithParent, failWith } from './lifeline.js';

const USAGE = 'usage: node producer.js posix|memfd <name or socket> [count]';
const [how, where, countArg = '100000'] = process.argv.slice(2);
if ((how !== 'posix' && how !== 'memfd') || where === undefined) {
  console.error(`${USAGE}: the first argument is posix or memfd, the second a POSIX name or a socket path`);
  process.exit(2);
}
if (!/^\d+$/.test(countArg) || !Number.isSafeInteger(Number(countArg))) {
  console.error(`${USAGE}: count is an integer from 0 to ${Number.MAX_SAFE_INTEGER}, got '${countArg}'`);
  process.exit(2);
}
const count = Number(countArg);
const capacity = 1 << 16;
const size = SpscRing.regionSize({ capacity });

let region: Region | undefined;
let listening = false; // the socket file at `where` is this process's (not one that was there before it)
// Run when it is stopped, and when it ends on an error (failWith).
endWithParent('producer', () => {
  if (how === 'memfd') {
    if (listening) fs.rmSync(where, { force: true });
  } else if (region !== undefined) {
    try {
      region.unlink();
    } catch {
      // The consumer unlinked it already.
    }
  }
});

try {
  region = how === 'posix' ? Region.create({ backing: 'posix', name: where, size }) : Region.create({ backing: 'memfd', size });
  const ring = SpscRing.create(region, { capacity });

  if (how === 'memfd') {
    // Hand the region to the first process that connects, then stop listening.
    const server = net.createServer({ pauseOnConnect: true });
    server.once('listening', () => (listening = true));
    server.listen(where);
    const [socket] = (await once(server, 'connection')) as [net.Socket];
    await sendRegion(socket, region);
    socket.end();
    server.close(); // removes the socket file
    listening = false;
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
} catch (err) {
  failWith('producer', err);
}
