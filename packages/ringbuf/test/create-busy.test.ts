/**
 * create() over a ring that an object is attached to: in a region that
 * takes locks (POSIX, file, memfd) it is refused with ERR_SHMRING_BUSY and
 * changes nothing, whether that object is in this process or another; once
 * every object closed, create() lays out a new ring as before. (A
 * Broadcast's create() is its publisher's takeover: broadcast-takeover.
 * System V segments and SharedArrayBuffers take no locks: there create()
 * cannot tell, and overwrites, as docs/LAYOUT.md says.)
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ErrorCodes, Region, ShmringError } from '@shmring/core';
import { LatestValue, MpmcQueue, MpscRing, SpscRing } from '../src/index.js';

interface Kind {
  name: string;
  size: number;
  /** create(), as the kind takes it. */
  create(region: Region): { close(): void };
  /** Something the ring holds, and a way to see that it still does. */
  fill(ring: { close(): void }): void;
  holds(region: Region): boolean;
}

const KINDS: Kind[] = [
  {
    name: 'SpscRing',
    size: SpscRing.regionSize({ capacity: 1024 }),
    create: (region) => SpscRing.create(region, { capacity: 1024 }),
    fill: (ring) => assert.ok((ring as SpscRing).tryWrite(new Uint8Array([1, 2, 3]))),
    holds: (region) => {
      const reader = SpscRing.attach(region);
      try {
        return reader.size > 0;
      } finally {
        reader.close();
      }
    },
  },
  {
    name: 'MpscRing',
    size: MpscRing.regionSize({ capacity: 1024 }),
    create: (region) => MpscRing.create(region, { capacity: 1024 }),
    fill: (ring) => assert.ok((ring as MpscRing).tryWrite(new Uint8Array([1, 2, 3]))),
    holds: (region) => {
      const reader = MpscRing.attach(region);
      try {
        return reader.size > 0;
      } finally {
        reader.close();
      }
    },
  },
  {
    name: 'MpmcQueue',
    size: MpmcQueue.regionSize({ capacity: 8, slotSize: 64 }),
    create: (region) => MpmcQueue.create(region, { capacity: 8, slotSize: 64 }),
    fill: (ring) => assert.ok((ring as MpmcQueue).tryWrite(new Uint8Array([1, 2, 3]))),
    holds: (region) => {
      const q = MpmcQueue.attach(region);
      try {
        return q.size > 0;
      } finally {
        q.detach();
      }
    },
  },
  {
    name: 'LatestValue',
    size: LatestValue.regionSize({ maxSize: 64 }),
    create: (region) => LatestValue.create(region, { maxSize: 64 }),
    fill: (ring) => void (ring as LatestValue).publish(new Uint8Array([1, 2, 3])),
    holds: (region) => {
      const v = LatestValue.attach(region);
      try {
        return v.read().version > 0;
      } finally {
        v.close();
      }
    },
  },
];

const isBusy = (err: unknown): boolean =>
  err instanceof ShmringError && err.code === ErrorCodes.BUSY && /is in use/.test(err.message) && /attach\(\)/.test(err.message);

describe('create() over a ring an object is attached to', function () {
  this.timeout(30_000);
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-create-busy-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  for (const kind of KINDS) {
    for (const backing of ['memfd', 'file'] as const) {
      it(`${kind.name} (${backing}): ERR_SHMRING_BUSY while an object of this process is attached; the ring keeps what it holds; after close() create() works`, function () {
        const region =
          backing === 'memfd'
            ? Region.create({ backing: 'memfd', size: kind.size })
            : Region.create({ backing: 'file', path: path.join(dir, `${kind.name}-${backing}`), size: kind.size });
        try {
          const first = kind.create(region);
          kind.fill(first);
          assert.throws(() => kind.create(region), isBusy);
          assert.ok(kind.holds(region), 'the refused create() changed nothing');
          first.close();
          kind.create(region).close();
          assert.equal(kind.holds(region), false, 'a create() after close() laid out an empty ring');
        } finally {
          region.close();
          if (backing === 'file') fs.rmSync(path.join(dir, `${kind.name}-${backing}`), { force: true });
        }
      });
    }
  }

  it('SpscRing (file): ERR_SHMRING_BUSY while another process is attached, and create() works once that process exited', async function () {
    const file = path.join(dir, 'other-process');
    const region = Region.create({ backing: 'file', path: file, size: SpscRing.regionSize({ capacity: 1024 }) });
    try {
      SpscRing.create(region, { capacity: 1024 }).close();
      const core = JSON.stringify(import.meta.resolve('@shmring/core'));
      const ringbuf = JSON.stringify(new URL('../src/index.js', import.meta.url).href);
      const child = spawn(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `import { Region } from ${core};
           import { SpscRing } from ${ringbuf};
           const ring = SpscRing.attach(Region.open({ backing: 'file', path: ${JSON.stringify(file)} }));
           ring.tryWrite(new Uint8Array([5]));
           console.log('attached');
           process.stdin.on('data', () => process.exit(0));`,
        ],
        { stdio: ['pipe', 'pipe', 'inherit'] },
      );
      await once(child.stdout!, 'data');
      assert.throws(() => SpscRing.create(region, { capacity: 1024 }), isBusy);
      child.stdin!.write('x');
      await once(child, 'exit');
      SpscRing.create(region, { capacity: 1024 }).close();
    } finally {
      region.close();
      fs.rmSync(file, { force: true });
    }
  });
});
