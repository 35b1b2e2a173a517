/**
 * MpscRing commits without a fence (FLAG_LIGHT_COMMITS): a producer whose
 * process registered for membarrier's expedited global fence commits with
 * a plain store and nothing after it, and a consumer about to park makes
 * it fence (membarrier) between its announcement and its re-check. Checked
 * here from outside: the flag is set only by such a producer; a consumer
 * parked on a light producer's ring is woken by every commit, however it
 * waits (a wake-up lost would leave it asleep until its timeout); a
 * consumer that cannot call membarrier (SHMRING_MEMBARRIER=off) sleeps at
 * most LIGHT_NAP_MS at a time while the flag is set, and sleeps as long as
 * it likes while it is not. models/light-commit.pml checks the protocol.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { membarrier, Region } from '@shmring/core';
import { MpscRing, select, selectSync } from '../src/index.js';
import { FIXTURE_PATH } from './fixtures/mpsc-peer.js';
import { memfdUnavailable } from './helpers.js';
import * as L from '../src/layout.js';
import * as M from '../src/mpsc-layout.js';

const RINGBUF = JSON.stringify(new URL('../src/index.js', import.meta.url).href);
const WAITING = JSON.stringify(new URL('../src/waiting.js', import.meta.url).href);
const CORE = JSON.stringify(import.meta.resolve('@shmring/core'));
const CAPACITY = 4096;

function flags(region: Region): number {
  return Atomics.load(new Int32Array(region.buffer as ArrayBuffer, 0, L.HEADER_END / 4), L.FLAGS_I32);
}

/** Runs the mpsc-peer fixture as a child process on `region` (fd 3), with `env` added; resolves with its stdout once it exits 0. */
async function runPeer(region: Region, config: object, env: Record<string, string> = {}): Promise<string> {
  const child = spawn(process.execPath, [FIXTURE_PATH, JSON.stringify(config)], {
    stdio: ['ignore', 'pipe', 'inherit', region.fd!],
    env: { ...process.env, ...env },
  });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(code, 0, `the peer failed: ${out}`);
  return out;
}

describe('MpscRing: commits without a fence (FLAG_LIGHT_COMMITS, membarrier)', function () {
  this.timeout(60_000);
  let region: Region;
  let ring: MpscRing;

  before(function () {
    if (memfdUnavailable() !== undefined) this.skip();
    if (process.arch !== 'x64') this.skip(); // plain commits are x86-64's (TSO) only
  });

  beforeEach(function () {
    region = Region.create({ backing: 'memfd', size: MpscRing.regionSize({ capacity: CAPACITY }) });
    ring = MpscRing.create(region, { capacity: CAPACITY });
  });

  afterEach(function () {
    ring.close();
    region.close();
  });

  it('a producer process where membarrier works sets FLAG_LIGHT_COMMITS before its first commit', async function () {
    if (!membarrier.register()) this.skip(); // this kernel or its seccomp profile refuses membarrier: nothing is light here
    assert.equal(flags(region) & M.FLAG_LIGHT_COMMITS, 0, 'a new ring has no light producer');
    await runPeer(region, { role: 'producer', id: 1, count: 1 });
    assert.notEqual(flags(region) & M.FLAG_LIGHT_COMMITS, 0);
    assert.equal(ring.tryRead()?.length, 8);
  });

  it('a producer process with SHMRING_MEMBARRIER=off fences its commits itself and leaves the flag clear', async function () {
    await runPeer(region, { role: 'producer', id: 1, count: 3 }, { SHMRING_MEMBARRIER: 'off' });
    assert.equal(flags(region) & M.FLAG_LIGHT_COMMITS, 0);
    for (let i = 0; i < 3; i++) assert.equal(ring.tryRead()?.length, 8);
  });

  /** How the consumer waits for each message: every way a reader parks. */
  const WAIT = { timeoutMs: 10_000, peerTimeoutMs: Infinity, spin: 0 } as const;
  const waits: Array<[string, (ring: MpscRing) => Promise<Uint8Array> | Uint8Array]> = [
    ['read()', (r) => r.read({ ...WAIT, poll: 0 })],
    ['readSync()', (r) => r.readSync(WAIT)],
    [
      'select()',
      async (r) => {
        await select([r], WAIT);
        return r.tryRead()!;
      },
    ],
    [
      'selectSync()',
      (r) => {
        selectSync([r], WAIT);
        return r.tryRead()!;
      },
    ],
  ];

  for (const [how, wait] of waits) {
    it(`a consumer that waits with ${how} is woken by every commit of a light producer process, one message at a time`, async function () {
      if (!membarrier.register()) this.skip(); // this kernel or its seccomp profile refuses membarrier: nothing is light here
      const COUNT = 3_000;
      const peer = runPeer(region, { role: 'pacer', id: 7, count: COUNT, gapMicros: 10 });
      for (let seq = 0; seq < COUNT; seq++) {
        const m = await wait(ring); // a wake-up lost: ERR_SHMRING_TIMEOUT after 10 s (no peer checks wake it)
        const view = new DataView(m.buffer, m.byteOffset, m.byteLength);
        assert.equal(view.getUint32(4, true), seq, 'every message once, in order');
      }
      await peer;
      assert.notEqual(flags(region) & M.FLAG_LIGHT_COMMITS, 0, 'the producer was a light one');
    });
  }

  /**
   * Runs a consumer child process with SHMRING_MEMBARRIER=off that takes
   * what the ring holds, waits 500 ms on the empty ring (readSync, then
   * read()) and reports how many times it slept (syncNaps, asyncWaits).
   */
  async function naps(): Promise<{ sync: number; async: number }> {
    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { Region } from ${CORE};
         import { MpscRing } from ${RINGBUF};
         import { waitCounters } from ${WAITING};
         const ring = MpscRing.attach(Region.fromFd(3));
         while (ring.tryRead() !== null); // what the producer left: the waits below find the ring empty
         const timedOut = (err) => { if (err.code !== 'ERR_SHMRING_TIMEOUT') throw err; };
         try { ring.readSync({ timeoutMs: 500, spin: 0, peerTimeoutMs: Infinity }); } catch (err) { timedOut(err); }
         const sync = waitCounters.syncNaps;
         await ring.read({ timeoutMs: 500, spin: 0, poll: 0, peerTimeoutMs: Infinity }).catch(timedOut);
         console.log(JSON.stringify({ sync, async: waitCounters.asyncWaits }));
         ring.detach();`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit', region.fd!], env: { ...process.env, SHMRING_MEMBARRIER: 'off' } },
    );
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0, `the consumer failed: ${out}`);
    return JSON.parse(out) as { sync: number; async: number };
  }

  it('a consumer that cannot call membarrier sleeps at most LIGHT_NAP_MS at a time while a light producer is registered, and as long as it likes before', async function () {
    if (!membarrier.register()) this.skip(); // no light producer can exist here
    const before = await naps();
    assert.ok(before.sync <= 2 && before.async <= 2, `no light producer: one sleep per wait, got ${JSON.stringify(before)}`);
    await runPeer(region, { role: 'producer', id: 1, count: 1 }); // a light producer: sets the flag
    assert.notEqual(flags(region) & M.FLAG_LIGHT_COMMITS, 0);
    const after = await naps();
    const least = 500 / M.LIGHT_NAP_MS / 10; // 500 ms of sleeps of 1 ms each, with room for a slow machine
    assert.ok(after.sync >= least && after.async >= least, `sleeps cut to ${M.LIGHT_NAP_MS} ms: got ${JSON.stringify(after)}`);
  });
});
