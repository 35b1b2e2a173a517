/**
 * LatestValue across processes: a writer publishing two million versions
 * while readers in other processes check every value they see (a checksum,
 * 0 torn reads) and count their wake-ups against the writer's wakes; updates() accounting for every
 * version exactly; one writer at a time (ERR_SHMRING_BUSY), the role freed
 * when its holder is SIGKILLed, also in the middle of a publish, which
 * leaves the previous value readable.
 */
import { strict as assert } from 'node:assert';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import { LatestValue } from '../src/index.js';
import * as V from '../src/latest-layout.js';
import { checkLatest, latestPayload } from './fixtures/latest-values.js';
import { LinePeer } from './helpers.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/latest-peer.js', import.meta.url));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const VERSIONS = 2_000_000;

/** What a parking reader reports of its futex waits (latest-peer.ts). */
interface Wakeups {
  woken: number;
}

describe('LatestValue across processes', function () {
  this.timeout(180_000);
  let name: string;
  let region: Region;
  let lv: LatestValue;
  const peers: LinePeer[] = [];

  function open(maxSize: number): void {
    name = `shmring-latest-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
    region = Region.create({ backing: 'posix', name, size: LatestValue.regionSize({ maxSize }) });
    lv = LatestValue.create(region, { maxSize });
  }

  function peer(...args: string[]): LinePeer {
    const p = new LinePeer(FIXTURE, [name, ...args]);
    peers.push(p);
    return p;
  }

  afterEach(async function () {
    await Promise.all(peers.splice(0).map((p) => p.kill()));
    lv.close();
    region.close();
    region.unlink();
  });

  it(`never shows a torn value to readers in other processes while a writer publishes ${VERSIONS} versions`, async function () {
    open(256);
    const poll = peer('poll', String(VERSIONS));
    const updates = peer('updates', String(VERSIONS));
    const sync = peer('sync', String(VERSIONS));
    await Promise.all([poll, updates, sync].map((p) => p.line('ready')));
    const writer = peer('writer', String(VERSIONS));
    const written = JSON.parse(await writer.line('{')) as { published: number; wakes: number };
    assert.equal(written.published, VERSIONS);
    const polled = JSON.parse(await poll.line('{')) as { reads: number; distinct: number; torn: number; backwards: number };
    const updated = JSON.parse(await updates.line('{')) as Wakeups & {
      items: number;
      skipped: number;
      parks: number;
      torn: number;
      gaps: number;
      last: number;
    };
    const synced = JSON.parse(await sync.line('{')) as Wakeups & { calls: number; naps: number; torn: number; backwards: number };
    console.log(
      `      writer: ${written.wakes} publishes woke parked readers; read(): ${polled.reads} reads, ${polled.distinct} versions seen; ` +
        `updates(): ${updated.items} items, ${updated.skipped} skipped, ${updated.parks} parks, ${updated.woken} wake-ups; ` +
        `changedSync(): ${synced.calls} returns, ${synced.naps} naps, ${synced.woken} wake-ups`,
    );
    // Wake-ups: one futex wake per publish at most, and only when a reader announced itself;
    // each wake reaches a sleeper at most once, so no reader is woken more often than the writer woke.
    assert.ok(written.wakes >= 1 && written.wakes <= VERSIONS, `the writer woke ${written.wakes} times in ${VERSIONS} publishes`);
    for (const [who, r, parked] of [
      ['updates()', updated, updated.parks],
      ['changedSync()', synced, synced.naps],
    ] as const) {
      assert.ok(r.woken >= 1, `${who}'s reader was never woken by a publish (it parked ${parked} times)`);
      assert.ok(r.woken <= written.wakes, `${who}'s reader was woken ${r.woken} times, the writer woke only ${written.wakes} times`);
    }
    assert.equal(polled.torn, 0, 'torn reads by read()');
    assert.equal(polled.backwards, 0, 'read() went back a version');
    assert.equal(updated.torn, 0, 'torn values from updates()');
    assert.equal(updated.gaps, 0, 'an item whose skipped disagrees with its version');
    assert.equal(updated.items + updated.skipped, VERSIONS, 'updates() accounts for every version');
    assert.equal(updated.last, VERSIONS);
    assert.equal(synced.torn + synced.backwards, 0, 'changedSync() returned a torn or older value');
    assert.ok(checkLatest(lv.read(), 256) && lv.read().version === VERSIONS);
  });

  it('updates() in another process yields every version of a writer that waits until it is parked again (skipped 0)', async function () {
    open(64);
    const updates = peer('updates', '200', 'echo');
    await updates.line('ready');
    const words = new Int32Array(region.buffer);
    for (let v = 1; v <= 200; v++) {
      // The reader took version v - 1 (it said so) and parked for the next one: it can see every version.
      const deadline = performance.now() + 20_000;
      while ((v > 1 && !updates.lines.includes(`v ${v - 1}`)) || Atomics.load(words, V.WAITERS_I32) === 0) {
        if (performance.now() > deadline) assert.fail(`the reader did not take version ${v - 1} and park; stderr: ${updates.stderr}`);
        await sleep(0.2);
      }
      lv.publish(latestPayload(v, 64), v & 0xff);
    }
    const report = JSON.parse(await updates.line('{')) as { items: number; skipped: number; torn: number; gaps: number };
    assert.deepEqual(report, { ...report, items: 200, skipped: 0, torn: 0, gaps: 0 });
  });

  it('gives a second live writer in another process ERR_SHMRING_BUSY, and frees the role when the holder is SIGKILLed', async function () {
    open(64);
    const holder = peer('hold');
    await holder.line('ready');
    assert.throws(
      () => lv.publish(latestPayload(2, 64)),
      (err: ShmringError) => err.code === ErrorCodes.BUSY,
    );
    const second = peer('try');
    assert.equal(await second.line('busy'), `busy ${ErrorCodes.BUSY}`);
    await holder.kill();
    assert.equal(lv.read().version, 1);
    assert.equal(lv.publish(latestPayload(2, 64)), 2, 'the role is free once its holder died');
    const third = peer('try');
    assert.equal(await third.line('busy'), `busy ${ErrorCodes.BUSY}`, 'and now this object holds it');
  });

  it('leaves the previous value readable, and the role free, when the writer is SIGKILLed mid-publish', async function () {
    const SIZE = 8 << 20;
    open(SIZE);
    const words = new Int32Array(region.buffer);
    let midPublish = 0;
    for (let attempt = 0; attempt < 12 && midPublish < 2; attempt++) {
      const writer = peer('big', String(SIZE));
      await writer.line('ready');
      await sleep(30 + (attempt % 6) * 17);
      await writer.kill();
      const published = Atomics.load(words, V.PUBLISHED_I32);
      const other = V.slotOffset(SIZE, (published + 1) & 1);
      if ((Atomics.load(words, (other + V.SEQ_OFFSET) / 4) & 1) === 1) midPublish++;
      const r = lv.read();
      assert.equal(r.version, published >>> 0);
      assert.ok(checkLatest(r, Infinity), `version ${r.version} is torn after the writer died`);
      // The role went with the process: a new writer continues, over the half-written slot.
      const next = lv.publish(latestPayload(r.version + 1, 100));
      assert.equal(next, r.version + 1);
      const after = LatestValue.attach(region);
      assert.ok(checkLatest(after.read(), Infinity) && after.read().version === next);
      after.close();
      lv.close();
      lv = LatestValue.attach(region);
    }
    assert.ok(midPublish >= 1, 'no kill landed in the middle of a publish');
  });
});
