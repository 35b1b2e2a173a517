/**
 * A consumer that takes over the consumer role goes on from where the last
 * one stopped: an object attached early, while another consumer reads,
 * starts from the position that consumer released when it left (detach,
 * or SIGKILL in another process), not from the one it saw when it
 * attached. Exactly the remaining messages, in order, none twice, none
 * lost: SpscRing and MpscRing over POSIX, memfd and System V regions.
 */
import { strict as assert } from 'node:assert';
import { fileURLToPath } from 'node:url';
import { Region } from '@shmring/core';
import { MpscRing, selectSync, SpscRing } from '../src/index.js';
import { LinePeer, memfdUnavailable } from './helpers.js';

const PEER = fileURLToPath(new URL('./fixtures/takeover-peer.js', import.meta.url));
const CAPACITY = 1024;
const MESSAGES = 6;
const FIRST_READS = 2;

type Ring = SpscRing | MpscRing;
interface Kind {
  name: string;
  size: number;
  create(region: Region, options: { capacity: number }): Ring;
  attach(region: Region): Ring;
}
const KINDS: Record<'spsc' | 'mpsc', Kind> = {
  spsc: {
    name: 'SpscRing',
    size: SpscRing.regionSize({ capacity: CAPACITY }),
    create: (region, options) => SpscRing.create(region, options),
    attach: (region) => SpscRing.attach(region),
  },
  mpsc: {
    name: 'MpscRing',
    size: MpscRing.regionSize({ capacity: CAPACITY }),
    create: (region, options) => MpscRing.create(region, options),
    attach: (region) => MpscRing.attach(region),
  },
};

/** A region of `backing`, and how a child opens it (its argument, and the fd it inherits, if any). */
function makeRegion(backing: 'posix' | 'memfd' | 'sysv', size: number): { region: Region; target: string; fd?: number } {
  const tag = `${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
  if (backing === 'posix') {
    const name = `shmring-takeover-${tag}`;
    return { region: Region.create({ backing, name, size }), target: `posix:${name}` };
  }
  if (backing === 'sysv') {
    const key = (0x5e00_0000 | Math.floor(Math.random() * 0x00ff_ffff)) >>> 0;
    return { region: Region.create({ backing, key, size }), target: `sysv:${key}` };
  }
  const region = Region.create({ backing, size });
  return { region, target: 'fd:3', fd: region.fd };
}

/** Everything `ring` reads now, by tryRead, as one array of the messages' single bytes. */
function readAll(ring: Ring): number[] {
  const got: number[] = [];
  for (let message = ring.tryRead(); message !== null; message = ring.tryRead()) got.push(...message);
  return got;
}

/** Everything `ring` drains now. */
function drainAll(ring: Ring): number[] {
  const got: number[] = [];
  ring.drain((data, offset, length) => got.push(...data.subarray(offset, offset + length)));
  return got;
}

const remaining = Array.from({ length: MESSAGES - FIRST_READS }, (_, i) => FIRST_READS + i);

describe('a consumer that takes over the role goes on from where the last one stopped', function () {
  this.timeout(60_000);

  for (const backing of ['posix', 'memfd', 'sysv'] as const) {
    for (const kind of ['spsc', 'mpsc'] as const) {
      const { name, size, create, attach } = KINDS[kind];

      it(`${name} over ${backing}: an object attached early reads exactly what a detached consumer left`, function () {
        if (backing === 'memfd' && memfdUnavailable()) this.skip();
        const { region } = makeRegion(backing, size);
        try {
          const producer = create(region, { capacity: CAPACITY });
          for (let i = 0; i < MESSAGES; i++) assert.ok(producer.tryWrite(new Uint8Array([i])));
          const early = attach(region); // attached, not consuming yet
          const first = attach(region);
          assert.deepEqual([...first.tryRead()!, ...first.tryRead()!], [0, 1]);
          first.detach();
          assert.equal(selectSync([early], { timeoutMs: 200 }), 0, 'select sees what the early object will read');
          assert.deepEqual(readAll(early), remaining, 'the rest, in order, none twice');
          assert.ok(producer.tryWrite(new Uint8Array([MESSAGES])));
          assert.deepEqual(readAll(early), [MESSAGES], 'and what comes next');
          early.detach();
          producer.detach();
        } finally {
          if (backing !== 'memfd') region.unlink();
          region.close();
        }
      });

      it(`${name} over ${backing}: an object attached early drains exactly what a SIGKILLed consumer of another process left`, async function () {
        if (backing === 'memfd' && memfdUnavailable()) this.skip();
        const { region, target, fd } = makeRegion(backing, size);
        let peer: LinePeer | undefined;
        try {
          const producer = create(region, { capacity: CAPACITY });
          for (let i = 0; i < MESSAGES; i++) assert.ok(producer.tryWrite(new Uint8Array([i])));
          const early = attach(region);
          peer = new LinePeer(PEER, [target, kind, String(FIRST_READS)], [], fd);
          assert.equal(await peer.line('read'), 'read 0,1');
          await peer.kill();
          assert.deepEqual(drainAll(early), remaining, 'the rest, in order, none twice');
          early.detach();
          producer.detach();
        } finally {
          await peer?.kill();
          if (backing !== 'memfd') region.unlink();
          region.close();
        }
      });
    }
  }
});
