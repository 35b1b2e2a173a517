/**
 * The consumer: finds the producer's ring, reads every message with
 * `for await`, checks the sequence numbers, and prints a one-line JSON summary.
 * With a POSIX name, it removes the name once it has the ring mapped: only
 * then is it sure to need the name no more (the producer may be done and
 * gone before the consumer opens it).
 *
 *   node consumer.js posix <name>     open the ring by POSIX name (waits about 5 s for it to appear, then fails)
 *   node consumer.js memfd <socket>   receive the ring's memfd over a Unix socket
 */
import * as net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Region, receiveRegion } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { endWithParent, failWith } from './lifeline.js';

const [how, where] = process.argv.slice(2);
if ((how !== 'posix' && how !== 'memfd') || where === undefined) {
  console.error('usage: node consumer.js posix <name> | memfd <socket path>');
  process.exit(2);
}
// Stopped early or ending on an error (failWith) in posix mode, it removes the name the producer made if it is
// still there: the producer may be done and gone (a small count) before this process opened it.
endWithParent('consumer', () => {
  if (how !== 'posix') return;
  try {
    Region.open({ backing: 'posix', name: where }).unlink();
  } catch {
    // Not there (never made, or unlinked already).
  }
});

/**
 * Retries `attempt` while the producer has not created its side yet, for about 5 s (some 500 tries, 10 ms
 * apart); then it throws the last error (a producer that never came, or died before it made its side).
 */
async function retry<T>(attempt: () => T | Promise<T>): Promise<T> {
  for (let tries = 0; ; tries++) {
    try {
      return await attempt();
    } catch (err) {
      const code = (err as { code?: string }).code;
      // Not there yet, or there but not yet sized (REGION_TOO_SMALL) or set up (NOT_A_RING) by the producer.
      const notYet =
        code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'ERR_SHMRING_REGION_TOO_SMALL' || code === 'ERR_SHMRING_NOT_A_RING';
      if (!notYet || tries > 500) throw err;
      await sleep(10);
    }
  }
}

try {
  const region =
    how === 'posix'
      ? await retry(() => {
          const opened = Region.open({ backing: 'posix', name: where });
          opened.unlink(); // mapped now: the name in /dev/shm can go
          return opened;
        })
      : await retry(async () => {
          const socket = net.connect({ path: where });
          socket.pause();
          try {
            return await receiveRegion(socket, { timeoutMs: 10_000 });
          } finally {
            socket.destroy();
          }
        });
  const ring = await retry(() => SpscRing.attach(region));

  const decoder = new TextDecoder();
  let received = 0;
  let outOfOrder = 0;
  for await (const message of ring) {
    const seq = Number(decoder.decode(message).split(':', 1)[0]);
    if (seq !== received || ring.lastType !== seq % 3) outOfOrder++;
    received++;
  }
  region.close();
  console.log(JSON.stringify({ received, outOfOrder }));
} catch (err) {
  failWith('consumer', err);
}
