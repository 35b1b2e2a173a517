/**
 * Shared roles with role locks (a POSIX region): when the last producer
 * leaves, what the consumer's read concludes depends only on how that last
 * one left (close(): it waits for the next; killed: ERR_SHMRING_PEER_DEAD),
 * not on which of them registered last.
 *
 * Shared roles where the region has no file to lock (a System V segment):
 * the role's pid words name one registrant of many producers. A producer
 * that leaves gives the words back to the producer it replaced, if that one
 * lives, so one producer's close() does not hide the death of the others
 * (the consumer's read ends with ERR_SHMRING_PEER_DEAD, not a timeout) and
 * does not report a death while one of them still lives.
 */
import { strict as assert } from 'node:assert';
import { ErrorCodes, Region } from '@shmring/core';
import { MpmcQueue, MpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import { LinePeer } from './helpers.js';

const CAPACITY = 4096;

/** A child process that joins the `kind` ring in segment `key` as a producer, writes [`byte`], says 'ready' and stays. */
function childProducer(key: number, kind: 'MpscRing' | 'MpmcQueue' = 'MpscRing', byte = 7): LinePeer {
  const core = import.meta.resolve('@shmring/core');
  const ringbuf = new URL('../src/index.js', import.meta.url).href;
  const script = `
    import { Region } from ${JSON.stringify(core)};
    import { ${kind} } from ${JSON.stringify(ringbuf)};
    ${kind}.attach(Region.open({ backing: 'sysv', key: ${key} })).tryWrite(new Uint8Array([${byte}]));
    console.log('ready');
    setTimeout(() => {}, 60000);`;
  return new LinePeer('--input-type=module', ['-e', script]);
}

const randomKey = (): number => (0x5c00_0000 | Math.floor(Math.random() * 0x00ff_ffff)) >>> 0;

// An outside tester: the words named the last producer to join, and its death ended the consumer's read
// with PEER_DEAD while another producer process lived and wrote on (into a ring nobody read any more).
describe('Shared roles in a System V segment: the death of the producer the words name', function () {
  this.timeout(60_000);

  for (const kind of ['MpscRing', 'MpmcQueue'] as const) {
    it(`${kind}: the consumer keeps waiting while another producer process has the segment attached, then PEER_DEAD once it is gone too`, async () => {
      const key = randomKey();
      const Kind = kind === 'MpscRing' ? MpscRing : MpmcQueue;
      const options = kind === 'MpscRing' ? { capacity: CAPACITY } : { capacity: 64, slotSize: 64 };
      const region = Region.create({ backing: 'sysv', key, size: Kind.regionSize(options as never) });
      const consumer = Kind.create(region, options as never);
      const first = childProducer(key, kind, 1);
      let last: LinePeer | undefined;
      try {
        await first.line('ready');
        last = childProducer(key, kind, 2);
        await last.line('ready');
        const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
        assert.equal(Atomics.load(ctl, L.PRODUCER_PID_I32), last.child.pid, 'the words name the last to join');
        await last.kill();
        assert.deepEqual([...(await consumer.read())!, ...(await consumer.read())!], [1, 2]);
        await assert.rejects(
          consumer.read({ timeoutMs: 600, peerTimeoutMs: 100 }),
          { code: ErrorCodes.TIMEOUT },
          'the first producer still lives: no death',
        );
        await first.kill();
        const t0 = performance.now();
        await assert.rejects(consumer.read({ timeoutMs: 5000, peerTimeoutMs: 100 }), { code: ErrorCodes.PEER_DEAD });
        assert.ok(performance.now() - t0 < 4000, 'the death is seen at a check period, not at the timeout');
      } finally {
        consumer.close();
        await last?.kill();
        await first.kill();
        region.unlink();
        region.close();
      }
    });
  }
});

describe('MpscRing producers in a System V segment: the shared producer words', function () {
  this.timeout(60_000);

  it("one producer's close() hands the words back to the producer it replaced: the consumer sees that one live, then dead", async () => {
    const key = randomKey();
    const region = Region.create({ backing: 'sysv', key, size: MpscRing.regionSize({ capacity: CAPACITY }) });
    const peer = childProducer(key);
    try {
      const consumer = MpscRing.create(region, { capacity: CAPACITY, peerTimeoutMs: 100 });
      await peer.line('ready');
      const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
      const mine = MpscRing.attach(region);
      const also = MpscRing.attach(region);
      assert.ok(mine.tryWrite(new Uint8Array([8])));
      assert.ok(also.tryWrite(new Uint8Array([9])));
      assert.equal(Atomics.load(ctl, L.PRODUCER_PID_I32), process.pid, 'the last to join is named');
      mine.close();
      assert.equal(Atomics.load(ctl, L.PRODUCER_PID_I32), process.pid, 'another producer of this thread is still there');
      also.close();
      assert.equal(Atomics.load(ctl, L.PRODUCER_PID_I32), peer.child.pid, 'back to the child, which lives');
      assert.deepEqual([...consumer.tryRead()!, ...consumer.tryRead()!, ...consumer.tryRead()!], [7, 8, 9]);
      await assert.rejects(consumer.read({ timeoutMs: 400 }), { code: ErrorCodes.TIMEOUT }, 'no death while the child lives');
      await peer.kill();
      const t0 = performance.now();
      await assert.rejects(consumer.read({ timeoutMs: 5000 }), { code: ErrorCodes.PEER_DEAD });
      assert.ok(performance.now() - t0 < 4000, 'the death is seen at a check period, not at the timeout');
      consumer.close();
    } finally {
      await peer.kill();
      region.unlink();
      region.close();
    }
  });
});

/** A child process that joins the MpscRing at POSIX name `name` as a producer, writes [id], says 'ready', and on SIGUSR1 closes it and says 'closed' (and stays). */
function lockedProducer(name: string, id: number): LinePeer {
  const core = import.meta.resolve('@shmring/core');
  const ringbuf = new URL('../src/index.js', import.meta.url).href;
  const script = `
    import { Region } from ${JSON.stringify(core)};
    import { MpscRing } from ${JSON.stringify(ringbuf)};
    const ring = MpscRing.attach(Region.open({ backing: 'posix', name: ${JSON.stringify(name)} }));
    ring.tryWrite(new Uint8Array([${id}]));
    process.on('SIGUSR1', () => { ring.close(); console.log('closed'); });
    console.log('ready');
    setTimeout(() => {}, 60000);`;
  return new LinePeer('--input-type=module', ['-e', script]);
}

describe('MpscRing producers in a POSIX region: how the last one left decides', function () {
  this.timeout(60_000);

  type Leave = 'close' | 'kill';
  async function leave(peer: LinePeer, how: Leave): Promise<void> {
    if (how === 'kill') return peer.kill();
    peer.child.kill('SIGUSR1');
    await peer.line('closed', 10_000);
  }

  // Regression: a producer's close() withdrew the pid word only if it named itself, so after two clean
  // close()s the word still named the one that registered last if it had closed first: the consumer's
  // read ended with ERR_SHMRING_PEER_DEAD ("has died") though nobody had died.
  const cases: Array<{ first: 'first' | 'second'; how: [Leave, Leave]; expect: string }> = [
    { first: 'second', how: ['close', 'close'], expect: ErrorCodes.TIMEOUT },
    { first: 'first', how: ['close', 'close'], expect: ErrorCodes.TIMEOUT },
    { first: 'second', how: ['kill', 'close'], expect: ErrorCodes.TIMEOUT },
    { first: 'first', how: ['kill', 'close'], expect: ErrorCodes.TIMEOUT },
    { first: 'second', how: ['close', 'kill'], expect: ErrorCodes.PEER_DEAD },
    { first: 'first', how: ['close', 'kill'], expect: ErrorCodes.PEER_DEAD },
  ];
  for (const { first, how, expect } of cases) {
    const title =
      `the producer that registered ${first} ${how[0] === 'close' ? 'closes' : 'is killed'}, then the other ` +
      `${how[1] === 'close' ? 'closes' : 'is killed'}: the consumer's read ends with ${expect}`;
    it(title, async () => {
      const name = `/shmring-test-last-${process.pid}-${Math.floor(Math.random() * 1e9)}`;
      const region = Region.create({ backing: 'posix', name, size: MpscRing.regionSize({ capacity: CAPACITY }) });
      const peers: LinePeer[] = [];
      try {
        const consumer = MpscRing.create(region, { capacity: CAPACITY });
        for (const id of [1, 2]) {
          const peer = lockedProducer(name, id);
          peers.push(peer);
          await peer.line('ready'); // in turn: the second registers last
        }
        assert.deepEqual([...consumer.tryRead()!, ...consumer.tryRead()!], [1, 2]);
        const order = first === 'first' ? [peers[0]!, peers[1]!] : [peers[1]!, peers[0]!];
        await leave(order[0]!, how[0]);
        await leave(order[1]!, how[1]);
        const t0 = performance.now();
        await assert.rejects(consumer.read({ timeoutMs: 800, peerTimeoutMs: 100 }), { code: expect });
        if (expect === ErrorCodes.PEER_DEAD)
          assert.ok(performance.now() - t0 < 700, 'the death is seen at a check period, not at the timeout');
        consumer.close();
      } finally {
        for (const peer of peers) await peer.kill();
        region.unlink();
        region.close();
      }
    });
  }
});
