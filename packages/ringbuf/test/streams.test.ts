/**
 * readable() and writable() of every ring kind, stopped early: a stream
 * that is destroyed (destroy(), a `break` out of `for await`, a pipeline
 * that failed or was aborted) takes no message it will not deliver, writes
 * none it was not asked to, and leaves nothing pending that would keep the
 * process alive. Also what finishing a writable() does per kind.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, Region } from '@shmring/core';
import { Broadcast, MpmcQueue, MpscRing, SpscRing } from '../src/index.js';

type Queue = SpscRing | MpscRing | MpmcQueue | ReturnType<typeof Broadcast.create> | ReturnType<typeof Broadcast.subscribe>;

const CAPACITY = 1024;

interface Pair {
  writer: Queue;
  reader: Queue;
  region: Region;
}

/** A ring of each kind in a memfd region: its writing and its reading object. */
const KINDS: Array<{ name: string; make: () => Pair }> = [
  {
    name: 'SpscRing',
    make: () => {
      const region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity: CAPACITY }) });
      return { region, writer: SpscRing.create(region, { capacity: CAPACITY }), reader: SpscRing.attach(region) };
    },
  },
  {
    name: 'MpscRing',
    make: () => {
      const region = Region.create({ backing: 'memfd', size: MpscRing.regionSize({ capacity: CAPACITY }) });
      return { region, writer: MpscRing.create(region, { capacity: CAPACITY }), reader: MpscRing.attach(region) };
    },
  },
  {
    name: 'MpmcQueue',
    make: () => {
      const options = { capacity: 16, slotSize: 64 };
      const region = Region.create({ backing: 'memfd', size: MpmcQueue.regionSize(options) });
      return { region, writer: MpmcQueue.create(region, options), reader: MpmcQueue.attach(region) };
    },
  },
  {
    name: 'Broadcast (lossless)',
    make: () => {
      const options = { capacity: CAPACITY, subscribers: 1 };
      const region = Region.create({ backing: 'memfd', size: Broadcast.regionSize(options) });
      const writer = Broadcast.create(region, { ...options, lossless: true });
      return { region, writer, reader: Broadcast.subscribe(region) };
    },
  },
];

function text(message: Uint8Array | null): string | null {
  return message === null ? null : Buffer.from(message).toString();
}

/** Lets the event loop turn a few times (a pending read, if any, would take what is there). */
async function turns(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setTimeout(resolve, 20));
}

describe('streams stopped early', function () {
  this.timeout(30_000);

  for (const { name, make } of KINDS) {
    describe(name, function () {
      let pair: Pair;
      beforeEach(function () {
        pair = make();
      });
      afterEach(function () {
        pair.writer.close();
        pair.reader.close();
        pair.region.close();
      });

      it('a readable() left by break takes no message written after it: the next read gets it', async function () {
        const { writer, reader } = pair;
        assert.ok(writer.tryWrite(Buffer.from('first')));
        for await (const m of reader.readable({ highWaterMark: 1 })) {
          assert.equal(Buffer.from(m as Uint8Array).toString(), 'first');
          break;
        }
        await turns();
        assert.ok(writer.tryWrite(Buffer.from('next')));
        await turns();
        assert.equal(text(reader.tryRead()), 'next', 'the destroyed stream took the message');
      });

      it("a readable() destroyed by its 'data' listener takes no message after the one it handed out", async function () {
        const { writer, reader } = pair;
        const stream = reader.readable();
        const got: string[] = [];
        stream.on('data', (m: Buffer) => {
          got.push(m.toString());
          stream.destroy();
        });
        await turns(); // the stream waits on the empty ring
        assert.ok(writer.tryWrite(Buffer.from('one')));
        assert.ok(writer.tryWrite(Buffer.from('two')));
        await turns();
        assert.deepEqual(got, ['one']);
        assert.equal(text(reader.tryRead()), 'two', 'the destroyed stream took the message behind the one it handed out');
      });

      it('a readable() whose pipeline failed, or was aborted, takes no message written after it', async function () {
        const { writer, reader } = pair;
        const failing = new Writable({ objectMode: true, write: (_chunk, _enc, callback) => callback(new Error('cannot handle it')) });
        assert.ok(writer.tryWrite(Buffer.from('bad')));
        await assert.rejects(pipeline(reader.readable({ highWaterMark: 1 }), failing), /cannot handle it/);
        const controller = new AbortController();
        const aborted = pipeline(reader.readable({ highWaterMark: 1 }), new Writable({ objectMode: true, write: (_c, _e, cb) => cb() }), {
          signal: controller.signal,
        });
        await turns();
        controller.abort();
        await assert.rejects(aborted, { name: 'AbortError' });
        assert.ok(writer.tryWrite(Buffer.from('next')));
        await turns();
        assert.equal(text(reader.tryRead()), 'next');
      });

      it('a writable() destroyed while its write waits for room writes nothing afterwards', async function () {
        const { writer, reader } = pair;
        let filled = 0;
        while (writer.tryWrite(Buffer.from('full'))) filled++; // as long as the chunk below: no room is left for it
        const stream = writer.writable({ closeOnFinish: false });
        stream.on('error', () => {});
        stream.write(Buffer.from('late'));
        await turns();
        stream.destroy();
        await turns();
        let drained = 0;
        while (reader.tryRead() !== null) drained++;
        assert.equal(drained, filled);
        await turns();
        assert.equal(reader.tryRead(), null, "the destroyed stream's write went in after the room came back");
      });
    });
  }

  it('a process whose for await over readable() was left by break exits (nothing pending keeps it alive)', function () {
    const index = fileURLToPath(new URL('../src/index.js', import.meta.url));
    const core = fileURLToPath(new URL('../../../core/dist/src/index.js', import.meta.url));
    const script = `
      const { Region } = await import(${JSON.stringify(core)});
      const { SpscRing } = await import(${JSON.stringify(index)});
      const region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity: 1024 }) });
      const w = SpscRing.create(region, { capacity: 1024 });
      const r = SpscRing.attach(region);
      w.tryWrite(Buffer.from('quit'));
      for await (const m of r.readable()) break;
      const left = performance.now();
      process.on('exit', () => process.stdout.write(String(performance.now() - left)));
    `;
    const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(result.signal, null, `the process did not exit by itself (${result.stderr})`);
    // Nothing pending: it exits at once (with the read that was left pending, it took 8.5 s here).
    assert.ok(Number(result.stdout) < 1000, `exited ${result.stdout} ms after the loop was left (${result.stderr})`);
  });

  describe('finishing a writable()', function () {
    for (const closeOnFinish of [undefined, false]) {
      it(`an MpmcQueue's, with closeOnFinish ${String(closeOnFinish)}, ${closeOnFinish === false ? 'leaves the queue to its other producers' : 'ends the queue for its other producers too'}`, async function () {
        const options = { capacity: 16, slotSize: 64 };
        const region = Region.create({ backing: 'memfd', size: MpmcQueue.regionSize(options) });
        const reader = MpmcQueue.create(region, options);
        const q = MpmcQueue.attach(region);
        const other = MpmcQueue.attach(region);
        try {
          await pipeline(Readable.from([Buffer.from('a')]), q.writable(closeOnFinish === undefined ? {} : { closeOnFinish }));
          if (closeOnFinish === undefined) {
            await assert.rejects(other.write(Buffer.from('b')), { code: ErrorCodes.CLOSED });
          } else {
            await other.write(Buffer.from('b'));
            assert.deepEqual([text(reader.tryRead()), text(reader.tryRead())], ['a', 'b']);
          }
        } finally {
          for (const end of [q, other, reader]) end.close();
          region.close();
        }
      });
    }
  });
});
