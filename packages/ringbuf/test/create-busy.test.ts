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
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ErrorCodes, FileLocks, heldByAnyone, Region, ShmringError } from '@shmring/core';
import { Broadcast, LatestValue, MpmcQueue, MpscRing, SpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import { layOut, Roles } from '../src/roles.js';

const CORE = JSON.stringify(import.meta.resolve('@shmring/core'));
const RINGBUF = JSON.stringify(new URL('../src/index.js', import.meta.url).href);

/** Runs `source`, an ES module, in a child process; it imports @shmring/core from CORE and this package from RINGBUF. */
function spawnModule(source: string, stdio: StdioOptions): ChildProcess {
  return spawn(process.execPath, ['--input-type=module', '-e', source], { stdio });
}

interface Kind {
  name: string;
  size: number;
  /** create(), as the kind takes it. */
  create(region: Region): { close(): void };
  /** Something the ring holds, and a way to see that it still does. */
  fill(ring: { close(): void }): void;
  holds(region: Region): boolean;
}

/** SpscRing and MpscRing: the same verbs for this test. */
function byteRing(ring: typeof SpscRing | typeof MpscRing): Kind {
  return {
    name: ring.name,
    size: ring.regionSize({ capacity: 1024 }),
    create: (region) => ring.create(region, { capacity: 1024 }),
    fill: (q) => assert.ok((q as SpscRing | MpscRing).tryWrite(new Uint8Array([1, 2, 3]))),
    holds: (region) => {
      const reader = ring.attach(region);
      try {
        return reader.size > 0;
      } finally {
        reader.close();
      }
    },
  };
}

const KINDS: Kind[] = [
  byteRing(SpscRing),
  byteRing(MpscRing),
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
      const child = spawnModule(
        `import { Region } from ${CORE};
           import { SpscRing } from ${RINGBUF};
           const ring = SpscRing.attach(Region.open({ backing: 'file', path: ${JSON.stringify(file)} }));
           ring.tryWrite(new Uint8Array([5]));
           console.log('attached');
           process.stdin.on('data', () => process.exit(0));`,
        ['pipe', 'pipe', 'inherit'],
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

  /**
   * Starts a process that holds the HOLDER byte of the ring in `file` shared (as an attach does while it
   * reads the header), or `exclusive`ly (as unlink-stale does across its check and unlink), for `ms`, then
   * prints when it let go (Date.now()). Resolves once it holds it.
   */
  async function holderFor(
    file: string,
    ms: number,
    exclusive = false,
  ): Promise<{ child: ChildProcess; releasedAt: () => Promise<number> }> {
    const child = spawnModule(
      `import { FileLocks, Region } from ${CORE};
         const locks = FileLocks.open(Region.open({ backing: 'file', path: ${JSON.stringify(file)} }));
         if (!locks.lock(0, ${!exclusive})) throw new Error('HOLDER not taken');
         console.log('held');
         setTimeout(() => { const at = Date.now(); locks.release(); console.log('released ' + at); }, ${ms});`,
      ['ignore', 'pipe', 'inherit'],
    );
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exited = once(child, 'exit').then(([code]) => {
      throw new Error(`the holder exited (${code}) before it held the ring`);
    });
    exited.catch(() => undefined); // once it held, its exit is expected
    while (!out.includes('held')) await Promise.race([once(child.stdout!, 'data'), exited]);
    const releasedAt = async (): Promise<number> => {
      while (!/released \d+\n/.test(out)) await once(child.stdout!, 'data');
      return Number(/released (\d+)/.exec(out)![1]);
    };
    return { child, releasedAt };
  }

  type Holder = Awaited<ReturnType<typeof holderFor>>;

  /**
   * Runs `body` with an SpscRing-sized file region `name` (an SpscRing published in it first if
   * `published`) whose HOLDER another process holds for `ms` (holderFor); the holder is stopped and the
   * region closed and removed however `body` ends.
   */
  async function withHolder(
    name: string,
    { published, ms, exclusive = false }: { published: boolean; ms: number; exclusive?: boolean },
    body: (region: Region, holder: Holder, file: string) => Promise<void> | void,
  ): Promise<void> {
    const file = path.join(dir, name);
    const region = Region.create({ backing: 'file', path: file, size: SpscRing.regionSize({ capacity: 1024 }) });
    let holder: Holder | undefined;
    try {
      if (published) SpscRing.create(region, { capacity: 1024 }).close();
      holder = await holderFor(file, ms, exclusive);
      await body(region, holder, file);
    } finally {
      holder?.child.kill();
      region.close();
      fs.rmSync(file, { force: true });
    }
  }

  it('create() where no ring is published waits for an attach that holds the ring while it finds none (a consumer retrying), and succeeds', () =>
    withHolder('probed', { published: false, ms: 300 }, async (region, holder) => {
      const started = performance.now();
      const ring = SpscRing.create(region, { capacity: 1024 }); // before: ERR_SHMRING_BUSY at once
      const returnedAt = Date.now();
      const waited = performance.now() - started;
      ring.close();
      assert.ok(returnedAt >= (await holder.releasedAt()), 'create() returned only once the holder had let go');
      assert.ok(waited < 1_900, `create() waited ${waited.toFixed(0)} ms for a holder that let go after 300 ms`);
    }));

  it('create() where a ring is published and held refuses at once (ERR_SHMRING_BUSY), without waiting for the holder', () =>
    withHolder('held-published', { published: true, ms: 3_000 }, (region) => {
      const started = performance.now();
      assert.throws(() => SpscRing.create(region, { capacity: 1024 }), isBusy);
      const waited = performance.now() - started;
      assert.ok(waited < 500, `refused after ${waited.toFixed(0)} ms`);
    }));

  it('create() where a ring is published and held exclusively (unlink-stale removing it) waits for that holder, and succeeds', () =>
    withHolder('held-exclusively', { published: true, ms: 300, exclusive: true }, async (region, holder) => {
      const ring = SpscRing.create(region, { capacity: 1024 }); // before: ERR_SHMRING_BUSY at once
      const returnedAt = Date.now();
      ring.close();
      assert.ok(returnedAt >= (await holder.releasedAt()), 'create() returned only once the holder had let go');
    }));

  it('create() beside a process that takes and lets go of a published ring exclusively, over and over, is never refused', async function () {
    // The holder lets go between create()'s exclusive and shared tries now and then: before, the shared try
    // then succeeded and create() took it for an attached object (ERR_SHMRING_BUSY, "is in use").
    const file = path.join(dir, 'flickering');
    const region = Region.create({ backing: 'file', path: file, size: SpscRing.regionSize({ capacity: 1024 }) });
    const flicker = spawnModule(
      `import { FileLocks, Region } from ${CORE};
         const locks = FileLocks.open(Region.open({ backing: 'file', path: ${JSON.stringify(file)} }));
         const spin = (ms) => { const until = performance.now() + ms; while (performance.now() < until); };
         console.log('flickering');
         for (;;) { if (locks.lock(0, false)) { spin(0.02); locks.unlock(0); } spin(0.01); }`,
      ['ignore', 'pipe', 'inherit'],
    );
    try {
      SpscRing.create(region, { capacity: 1024 }).close(); // published from here on
      await once(flicker.stdout!, 'data');
      for (let round = 0; round < 2_000; round++) SpscRing.create(region, { capacity: 1024 }).close();
    } finally {
      flicker.kill();
      region.close();
      fs.rmSync(file, { force: true });
    }
  });

  it('create() where no ring is published and the holder does not let go gives up after 2 s with ERR_SHMRING_BUSY that says so', () =>
    withHolder('held-unpublished', { published: false, ms: 10_000 }, (region, _holder, file) => {
      const started = performance.now();
      assert.throws(
        () => SpscRing.create(region, { capacity: 1024 }),
        (err: unknown) =>
          err instanceof ShmringError &&
          err.code === ErrorCodes.BUSY &&
          /has been held for 2000 ms while no ring was published there/.test(err.message) &&
          err.message.includes(file),
      );
      const waited = performance.now() - started;
      assert.ok(waited >= 1_900 && waited < 5_000, `gave up after ${waited.toFixed(0)} ms`);
    }));

  it('a producer that creates its ring while a consumer process retries attach() in a tight loop is never refused', async function () {
    for (let round = 0; round < 10; round++) {
      const file = path.join(dir, `retried-${round}`);
      const region = Region.create({ backing: 'file', path: file, size: SpscRing.regionSize({ capacity: 1024 }) });
      let consumer: ChildProcess | undefined;
      try {
        consumer = spawnModule(
          `import { Region } from ${CORE};
             import { SpscRing } from ${RINGBUF};
             const region = Region.open({ backing: 'file', path: ${JSON.stringify(file)} });
             console.log('probing');
             for (let tries = 0; ; tries++) {
               try { SpscRing.attach(region).close(); break; }
               catch (err) { if (err.code !== 'ERR_SHMRING_NOT_A_RING') throw err; }
             }`,
          ['ignore', 'pipe', 'inherit'],
        );
        await once(consumer.stdout!, 'data');
        await new Promise((resolve) => setTimeout(resolve, 20));
        SpscRing.create(region, { capacity: 1024 }).close(); // before: ERR_SHMRING_BUSY whenever a probe held the ring
        const [code] = (await once(consumer, 'exit')) as [number | null];
        assert.equal(code, 0, 'the consumer attached once the ring was there');
      } finally {
        consumer?.kill(); // refused, the create leaves it probing for ever
        region.close();
        fs.rmSync(file, { force: true });
      }
    }
  });

  it('an attach that finds no ring takes no lock, whatever the kind: a watcher process never sees the place held while attaches are retried back to back', async function () {
    // Held only to be let go, the lock kept a create() out (it needs it exclusively): retried by a few
    // processes, the attaches held it most of the time. The watcher asks the kernel (F_OFD_GETLK)
    // in a loop; as a check that it can see, it must see the ring held once one is attached.
    const attaches: [string, (region: Region) => { close(): void }, (region: Region) => { close(): void }][] = [
      ['SpscRing', (r) => SpscRing.attach(r), (r) => SpscRing.create(r, { capacity: 1024 })],
      ['MpscRing', (r) => MpscRing.attach(r), (r) => MpscRing.create(r, { capacity: 1024 })],
      [
        'MpmcQueue',
        (r) => {
          const q = MpmcQueue.attach(r);
          return { close: () => q.detach() };
        },
        (r) => MpmcQueue.create(r, { capacity: 8, slotSize: 64 }),
      ],
      ['LatestValue', (r) => LatestValue.attach(r), (r) => LatestValue.create(r, { maxSize: 64 })],
      ['Broadcast', (r) => Broadcast.subscribe(r), (r) => Broadcast.create(r, { capacity: 1024 })],
    ];
    const file = path.join(dir, 'watched');
    const region = Region.create({ backing: 'file', path: file, size: 1 << 16 });
    const watcher = spawnModule(
      `import { heldByAnyone, Region } from ${CORE};
       import { createInterface } from 'node:readline';
       const region = Region.open({ backing: 'file', path: ${JSON.stringify(file)} });
       console.log('"ready"');
       for await (const line of createInterface({ input: process.stdin })) {
         const end = performance.now() + Number(line);
         let looks = 0;
         let held = 0;
         while (performance.now() < end) {
           looks++;
           if (heldByAnyone(region, ${L.HOLDER_LOCK_OFFSET})) held++;
         }
         console.log(JSON.stringify({ looks, held }));
       }`,
      ['pipe', 'pipe', 'inherit'],
    );
    const lines = (async function* () {
      let rest = '';
      for await (const chunk of watcher.stdout!) {
        rest += chunk;
        for (let at = rest.indexOf('\n'); at >= 0; at = rest.indexOf('\n')) {
          yield JSON.parse(rest.slice(0, at)) as { looks: number; held: number };
          rest = rest.slice(at + 1);
        }
      }
    })();
    /** Runs `meanwhile` in a loop until the watcher, looking for `ms`, says what it saw. */
    const watch = async (ms: number, meanwhile: () => void): Promise<{ looks: number; held: number }> => {
      watcher.stdin!.write(`${ms}\n`);
      let seen: { looks: number; held: number } | undefined;
      const answer = lines.next().then((r) => (seen = r.value!));
      while (seen === undefined) {
        meanwhile();
        await new Promise(setImmediate); // the pipe's answer gets through
      }
      await answer;
      return seen;
    };
    try {
      await lines.next(); // ready: it looks from the moment it reads a line
      for (const [name, attach, create] of attaches) {
        let refused = 0;
        const empty = await watch(250, () => {
          for (let i = 0; i < 50; i++) {
            try {
              attach(region).close();
            } catch (err) {
              assert.equal((err as ShmringError).code, ErrorCodes.NOT_A_RING, `${name}: ${(err as Error).message}`);
              refused++;
            }
          }
        });
        assert.ok(refused > 0 && empty.looks > 100, `${name}: ${refused} attaches refused, ${empty.looks} looks`);
        assert.equal(
          empty.held,
          0,
          `${name}: the watcher saw the place held ${empty.held} times in ${empty.looks} while ${refused} attaches found no ring`,
        );
        const ring = create(region);
        const attached = attach(region);
        ring.close(); // the attached object alone holds it now
        const full = await watch(50, () => {});
        attached.close();
        assert.ok(full.held > 0, `${name}: the watcher never saw an attached ring held (${full.looks} looks)`);
        new Uint8Array(region.buffer).fill(0); // no ring for the next kind
      }
    } finally {
      watcher.kill();
      region.close();
      fs.rmSync(file, { force: true });
    }
  });

  it('a Broadcast.create that comes while an MpscRing.create lays its ring out waits for it and refuses; the MpscRing is whole', async function () {
    // The MpscRing's create zeroes 16 MiB. It used to make its lock shared once MAGIC read 0: a
    // Broadcast.create that came then took it shared too, found no ring to take over, and laid its
    // own out over the one being laid out; both succeeded. Each side keeps what it created until
    // both have tried (one that closed first would leave the place free for the other).
    const capacity = 1 << 24;
    const file = path.join(dir, 'mpsc-broadcast-race');
    const deadline = performance.now() + 20_000;
    const until = async (what: string, done: () => boolean, child: ChildProcess): Promise<void> => {
      while (!done()) {
        if (child.exitCode !== null || child.signalCode !== null)
          assert.fail(`the creator exited (${child.exitCode ?? child.signalCode}) before ${what}`);
        if (performance.now() > deadline) assert.fail(`timed out waiting until ${what}`);
        await new Promise((resolve) => setImmediate(resolve));
      }
    };
    for (let round = 0; ; round++) {
      let region: Region | undefined;
      let creator: ChildProcess | undefined;
      let publisher: { close(): void } | undefined;
      try {
        region = Region.create({ backing: 'file', path: file, size: MpscRing.regionSize({ capacity }) });
        const magic = new Int32Array(region.buffer, L.MAGIC_OFFSET, 1);
        creator = spawnModule(
          `import { Region } from ${CORE};
           import { MpscRing } from ${RINGBUF};
           const region = Region.open({ backing: 'file', path: ${JSON.stringify(file)} });
           console.log('creating');
           let result;
           let ring;
           try {
             ring = MpscRing.create(region, { capacity: ${capacity} });
             result = { created: true };
           } catch (err) {
             result = { created: false, code: err.code };
           }
           if (ring) {
             const producer = MpscRing.attach(region);
             producer.tryWrite(new Uint8Array([7]));
             result.read = [...(ring.tryRead() ?? [])];
             producer.close();
           }
           console.log(JSON.stringify(result));
           process.stdin.once('data', () => {
             ring?.close();
             process.exit(0);
           });`,
          ['pipe', 'pipe', 'inherit'],
        );
        let out = '';
        creator.stdout!.on('data', (d: Buffer) => (out += d));
        await until('it starts', () => out.includes('creating'), creator);
        // Caught laying out: the place held, no ring published yet. Looked for without yielding (the
        // lay-out takes milliseconds); a ring published first means it was missed: another round.
        let caught = false;
        for (;;) {
          const held = heldByAnyone(region, L.HOLDER_LOCK_OFFSET) === true;
          const published = Atomics.load(magic, 0) !== 0; // observes the creator's MAGIC store
          if (held && !published) caught = true;
          if (caught || published || performance.now() > deadline) break;
        }
        let broadcast: { created: boolean; code?: string } | undefined;
        if (caught) {
          try {
            publisher = Broadcast.create(region, { capacity: 1024 });
            broadcast = { created: true };
          } catch (err) {
            broadcast = { created: false, code: (err as ShmringError).code };
          }
        }
        await until('it says how its create went', () => out.split('\n').length >= 3, creator);
        const mpsc = JSON.parse(out.split('\n')[1]!) as { created: boolean; code?: string; read?: number[] };
        assert.equal(mpsc.created, true, JSON.stringify(mpsc));
        assert.deepEqual(mpsc.read, [7], 'the MpscRing works');
        if (broadcast !== undefined) {
          assert.deepEqual(broadcast, { created: false, code: ErrorCodes.BUSY }, 'the Broadcast.create that came during the lay-out');
          assert.throws(() => Broadcast.subscribe(region!), { code: ErrorCodes.WRONG_KIND });
        }
        creator.stdin!.write('done\n');
        const [code] = (await once(creator, 'exit')) as [number | null];
        assert.equal(code, 0);
        if (caught) break;
        assert.ok(round < 20, 'never caught the MpscRing.create laying its ring out in 20 tries');
      } finally {
        creator?.kill();
        publisher?.close();
        region?.close();
        fs.rmSync(file, { force: true });
      }
    }
  });

  it('a create whose lay-out throws lets go of the place it held exclusively: the next create is not kept out', () => {
    const file = path.join(dir, 'lay-out-throws');
    const region = Region.create({ backing: 'file', path: file, size: SpscRing.regionSize({ capacity: 1024 }) });
    try {
      const roles = Roles.holdToCreate(region, region.buffer, 0, 'the test as a creator', 'the test ring');
      assert.equal(heldByAnyone(region, L.HOLDER_LOCK_OFFSET), true, 'held while it lays out');
      assert.throws(
        () =>
          layOut(roles, () => {
            throw new Error('the lay-out failed');
          }),
        /the lay-out failed/,
      );
      assert.equal(heldByAnyone(region, L.HOLDER_LOCK_OFFSET), false, 'still held after the failed lay-out');
      const started = performance.now();
      SpscRing.create(region, { capacity: 1024 }).close();
      assert.ok(performance.now() - started < 1_000, 'the next create waited for the lock');
    } finally {
      region.close();
      fs.rmSync(file, { force: true });
    }
  });

  it('an attach that waits 2 s for a place held exclusively, with no ring published, reports ERR_SHMRING_NOT_A_RING (retry), not BUSY', () => {
    // What a create laying out a large ring looks like from outside, for longer than an attach waits.
    const file = path.join(dir, 'held-empty');
    const region = Region.create({ backing: 'file', path: file, size: SpscRing.regionSize({ capacity: 1024 }) });
    const creator = FileLocks.open(region)!;
    try {
      assert.ok(creator.lock(L.HOLDER_LOCK_OFFSET, false), 'the HOLDER lock, exclusively');
      const started = performance.now();
      assert.throws(() => SpscRing.attach(region), { code: ErrorCodes.NOT_A_RING });
      const waited = performance.now() - started;
      assert.ok(waited >= 1_900, `gave up after ${waited.toFixed(0)} ms: it did not wait for the holder`);
    } finally {
      creator.release();
      region.close();
      fs.rmSync(file, { force: true });
    }
  });

  it('Broadcast.subscribe where no ring is published yet waits while a creator holds the place exclusively, and joins the ring it lays out', async function () {
    // The look before the lock gives up only where nobody holds it exclusively: a Broadcast creator
    // lays a ring out under an exclusive lock, and a subscribe that comes meanwhile joins that ring.
    const size = Broadcast.regionSize({ capacity: 1024 });
    const scratch = Region.create({ backing: 'memfd', size });
    const publisher = Broadcast.create(scratch, { capacity: 1024 });
    const laidOut = new Uint8Array(scratch.buffer).slice(); // a Broadcast's header and slots, its publisher not closed
    publisher.close();
    scratch.close();
    const file = path.join(dir, 'laid-out');
    const region = Region.create({ backing: 'file', path: file, size });
    const creator = FileLocks.open(region)!;
    let subscriber: ChildProcess | undefined;
    try {
      assert.ok(creator.lock(L.HOLDER_LOCK_OFFSET, false), 'the HOLDER lock, exclusively');
      subscriber = spawnModule(
        `import { Region } from ${CORE};
         import { Broadcast } from ${RINGBUF};
         const region = Region.open({ backing: 'file', path: ${JSON.stringify(file)} });
         console.log('subscribing');
         try {
           Broadcast.subscribe(region).close();
           console.log('joined');
         } catch (err) {
           console.log(err.code);
         }`,
        ['ignore', 'pipe', 'inherit'],
      );
      let out = '';
      subscriber.stdout!.on('data', (d: Buffer) => (out += d));
      while (!out.includes('subscribing')) await new Promise((resolve) => setTimeout(resolve, 5));
      await new Promise((resolve) => setTimeout(resolve, 200)); // it has looked, found no ring, and waits for the lock
      assert.equal(out, 'subscribing\n', 'the subscribe gave up while the place was held exclusively');
      // Lays the ring out, MAGIC last, and lets go.
      const bytes = new Uint8Array(region.buffer);
      bytes.set(laidOut.subarray(L.VERSION_OFFSET), L.VERSION_OFFSET); // everything after MAGIC
      // Publishes the copied header (MAGIC last, as a creator stores it).
      Atomics.store(new Int32Array(region.buffer, L.MAGIC_OFFSET, 1), 0, new Int32Array(laidOut.buffer, L.MAGIC_OFFSET, 1)[0]!);
      creator.release();
      const [code] = (await once(subscriber, 'exit')) as [number | null];
      assert.equal(code, 0);
      assert.equal(out, 'subscribing\njoined\n');
    } finally {
      subscriber?.kill();
      creator.release();
      region.close();
      fs.rmSync(file, { force: true });
    }
  });

  for (const backing of ['memfd', 'file'] as const) {
    it(`Broadcast.create over an SpscRing (${backing}) an object is attached to: ERR_SHMRING_BUSY that says so, and the ring keeps what it holds`, function () {
      const file = path.join(dir, 'broadcast-over-spsc');
      const size = Math.max(SpscRing.regionSize({ capacity: 4096 }), Broadcast.regionSize({ capacity: 4096 }));
      const region = backing === 'memfd' ? Region.create({ backing: 'memfd', size }) : Region.create({ backing: 'file', path: file, size });
      try {
        const consumer = SpscRing.create(region, { capacity: 4096 });
        const producer = SpscRing.attach(region);
        assert.ok(producer.tryWrite(new Uint8Array([7, 8, 9])));
        // With the producer role held too (its lock is the one a Broadcast's publisher takes): refused for the
        // ring that is there, before the role is taken, not for "a live publisher".
        for (const producerHeld of [true, false]) {
          if (!producerHeld) producer.close(); // only the consumer stays attached
          assert.throws(
            () => Broadcast.create(region, { capacity: 4096 }),
            (err: unknown) =>
              err instanceof ShmringError && err.code === ErrorCodes.BUSY && /holds no Broadcast but another ring/.test(err.message),
          );
        }
        assert.deepEqual([...consumer.tryRead()!], [7, 8, 9], 'the refused create() changed nothing');
        consumer.close();
        Broadcast.create(region, { capacity: 4096 }).close(); // nobody attached: it lays out a Broadcast
      } finally {
        region.close();
        fs.rmSync(file, { force: true });
      }
    });
  }

  it("an attach racing another process's creates never builds its object from the header of the ring it replaced", async function () {
    const name = `shmring-create-race-${process.pid}`;
    const region = Region.create({ backing: 'posix', name, size: SpscRing.regionSize({ capacity: 4096 }) });
    try {
      SpscRing.create(region, { capacity: 4096 }).close();
      // The creator lays out rings of two capacities in turn for 2 s, refused while an attach holds the ring.
      const creator = spawnModule(
        `import { Region } from ${CORE};
           import { SpscRing } from ${RINGBUF};
           const region = Region.open({ backing: 'posix', name: ${JSON.stringify(name)} });
           let made = 0;
           for (const until = performance.now() + 2000, i = { n: 0 }; performance.now() < until; i.n++) {
             try { SpscRing.create(region, { capacity: i.n % 2 ? 1024 : 4096 }).close(); made++; }
             catch (err) { if (err.code !== 'ERR_SHMRING_BUSY') throw err; }
           }
           console.log(made);`,
        ['ignore', 'pipe', 'inherit'],
      );
      let out = '';
      creator.stdout!.on('data', (d: Buffer) => (out += d));
      const exited = once(creator, 'exit');
      let consistent = 0;
      let stale = 0;
      let running = true;
      void exited.then(() => (running = false));
      while (running) {
        let a: SpscRing;
        try {
          a = SpscRing.attach(region);
        } catch (err) {
          // Between its looks (holding nothing) one create published its ring, and the next took the place
          // and unpublished it again: no ring either time. (A create that is laying out is waited for.)
          if ((err as ShmringError).code !== ErrorCodes.NOT_A_RING) throw err;
          await new Promise((resolve) => setImmediate(resolve));
          continue;
        }
        // While `a` holds the ring no create can replace it: this header is the one `a` should have read.
        const b = SpscRing.attach(region);
        if (b.capacity === a.capacity) consistent++;
        else stale++;
        b.close();
        a.close();
        await new Promise((resolve) => setImmediate(resolve));
      }
      const [code] = (await exited) as [number | null];
      assert.equal(code, 0);
      assert.equal(stale, 0, `${stale} objects built from a replaced ring's header (${consistent} consistent)`);
      assert.ok(consistent > 0 && Number(out) > 0, `${consistent} attaches, ${out.trim()} creates: the race was run`);
    } finally {
      region.unlink();
      region.close();
    }
  });
});
