/**
 * A Broadcast publisher that died in the middle of a record (between its
 * INTENT store and its TAIL store) leaves no quiescent snapshot. The next
 * publisher repairs it (docs/LAYOUT.md, "A record left half-written: the
 * repair") instead of refusing: it jumps past every subscriber's cursor,
 * lossy at once, lossless once every live subscriber has read all that was
 * published. Subscribers read on, nothing torn, none of the dead record's
 * bytes handed out, `received + lost` equal to what `published` says.
 *
 * Deterministic: the counters and bytes a publisher killed after each step
 * of a record leaves, written here, and the words torn while a 64-bit
 * counter crosses 2^32. Then real publisher processes SIGKILLed at random
 * moments while they publish as fast as they can, each replaced by the next.
 */
import { strict as assert } from 'node:assert';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, Region, type ShmringError } from '@shmring/core';
import * as L from '../src/layout.js';
import * as B from '../src/broadcast-layout.js';
import { Broadcast, type BroadcastPublisher, type BroadcastSubscriber } from '../src/index.js';
import { broadcastPayload, Tally, type SubscriberReport } from './fixtures/broadcast-peer.js';
import { assertCounted, BroadcastPerTest, LinePeer } from './helpers.js';

const SUBSCRIBER = fileURLToPath(new URL('./fixtures/broadcast-peer.js', import.meta.url));
const RACER = fileURLToPath(new URL('./fixtures/broadcast-racer.js', import.meta.url));
const CAPACITY = 4096;
const TWO32 = 2 ** 32;

/** The step of a record after which the publisher is killed (docs/LAYOUT.md, "Publisher, step by step"). */
const STEPS = ['INTENT stored', 'COUNT stored', 'bytes written', 'LATEST stored'] as const;

/** The control words of the Broadcast at the start of `region` (16 slots). */
function controlOf(region: Region): Int32Array {
  return new Int32Array(region.buffer, 0, B.broadcastDataOffset(B.DEFAULT_SUBSCRIBERS) / 4);
}

function load64(ctl: Int32Array, c: B.Counter64): number {
  return (Atomics.load(ctl, c.hi1) >>> 0) * TWO32 + (Atomics.load(ctl, c.lo) >>> 0);
}

function set64(ctl: Int32Array, c: B.Counter64, value: number): void {
  Atomics.store(ctl, c.hi1, Math.floor(value / TWO32));
  Atomics.store(ctl, c.lo, value | 0);
  Atomics.store(ctl, c.hi2, Math.floor(value / TWO32));
}

/**
 * Leaves the counters and bytes as a publisher killed after `steps` steps
 * (1 to 4) of a 120-byte record at the tail leaves them (with a padding
 * record first where it wraps). The payload bytes, written at step 3, are
 * 0xab: read as a header, a record of an impossible length.
 */
function dieInRecord(region: Region, steps: number): void {
  const ctl = controlOf(region);
  const tail = load64(ctl, B.INTENT); // quiescent: INTENT is the exact tail
  const index = tail % CAPACITY;
  const size = L.recordSize(112);
  const end = tail + (size <= CAPACITY - index ? size : CAPACITY - index + size);
  set64(ctl, B.INTENT, end);
  if (steps >= 2) set64(ctl, B.COUNT, load64(ctl, B.COUNT) + 1);
  if (steps >= 3) {
    const data = new Uint8Array(region.buffer, B.broadcastDataOffset(B.DEFAULT_SUBSCRIBERS), CAPACITY);
    data.fill(0xab, index, Math.min(CAPACITY, index + size));
    if (size > CAPACITY - index) data.fill(0xab, 0, size);
  }
  if (steps >= 4) Atomics.store(ctl, B.LATEST_I32, tail | 0);
}

/** Whether the counters are quiescent (INTENT whole and equal to TAIL: no record in flight). */
function quiescent(region: Region): boolean {
  const ctl = controlOf(region);
  const whole = Atomics.load(ctl, B.INTENT.hi1) === Atomics.load(ctl, B.INTENT.hi2);
  return whole && load64(ctl, B.INTENT) % TWO32 === Atomics.load(ctl, B.TAIL_I32) >>> 0;
}

/** Reads everything published to `sub` now, checking each message with `tally`. */
function readNow(sub: BroadcastSubscriber, tally: Tally): number {
  let n = 0;
  for (let m = sub.tryRead(); m !== null; m = sub.tryRead()) {
    tally.see(m, sub.lastType);
    n++;
  }
  return n;
}

function publish(pub: BroadcastPublisher, count: number): void {
  for (let k = 0; k < count; k++) {
    const i = pub.published;
    assert.ok(pub.tryWrite(broadcastPayload(i), i & 0xffff), `record ${i} fits`);
  }
}

/** Publishes `count` records, each read by every subscriber before the next (so a lossy one is never lapped, a lossless ring never full). */
function pump(pub: BroadcastPublisher, count: number, ...readers: [BroadcastSubscriber, Tally][]): void {
  for (let k = 0; k < count; k++) {
    publish(pub, 1);
    for (const [sub, tally] of readers) readNow(sub, tally);
  }
}

/** Where the next record starts in the data area. */
function tailIndex(region: Region): number {
  return load64(controlOf(region), B.INTENT) % CAPACITY;
}

describe('Broadcast: a new publisher repairs a record its dead predecessor left half-written', function () {
  this.timeout(120_000);
  const t = new BroadcastPerTest('shmring-bcast-repair', CAPACITY);
  const create = (lossless: boolean): BroadcastPublisher => t.create(lossless);

  function subscribe(): [BroadcastSubscriber, Tally] {
    const sub = t.subscribe();
    return [sub, new Tally(sub)];
  }

  STEPS.forEach((step, s) => {
    for (const wrap of [false, true]) {
      it(`lossy, killed with ${step}${wrap ? ', the record wrapping' : ''}: subscribers skip to the new tail, nothing torn, the dead record counted lost iff COUNT counted it`, function () {
        const first = create(false);
        const [behind, behindTally] = subscribe();
        const [current, currentTally] = subscribe();
        // Until the dead 120-byte record (written next) would fit before the end of the data area, or wrap;
        // `behind` keeps 5 records unread, `current` none.
        while (first.published < 14 || tailIndex(t.region) + 120 > CAPACITY !== wrap) {
          pump(first, 1, [current, currentTally]);
          if (behindTally.received < first.published - 5) behindTally.see(behind.tryRead()!, behind.lastType);
        }
        first.detach();
        dieInRecord(t.region, s + 1);
        const counted = first.published + (s >= 1 ? 1 : 0);

        const second = create(false);
        assert.equal(second.published, counted, 'COUNT as the dead publisher left it');
        assert.ok(quiescent(t.region), 'repaired at once: a quiescent snapshot again');
        assert.equal(readNow(behind, behindTally), 0, 'the unread records are skipped (lossy), counted');
        assert.equal(readNow(current, currentTally), 0);
        pump(second, 300, [behind, behindTally], [current, currentTally]); // laps of the ring past the dead record's bytes
        assertCounted(behindTally.report(), second.published, 'behind');
        assertCounted(currentTally.report(), second.published, 'caught up');
        assert.equal(current.lost, s >= 1 ? 1 : 0, 'a caught-up subscriber loses only the dead record, if it was counted');
        const [late, lateTally] = subscribe();
        publish(second, 3);
        assert.equal(readNow(late, lateTally), 3, 'a subscriber that joins after the repair gets what follows');
      });
    }
  });

  for (const verb of ['drain', 'readSync', 'read'] as const) {
    it(`lossy, a subscriber reading with ${verb}() across the repair: lapped by the jump, it resumes at the newest record, whole, and reads on in order`, async function () {
      const first = create(false);
      const [sub, tally] = subscribe();
      publish(first, 10); // unread at the death
      first.detach();
      dieInRecord(t.region, 3);
      const second = create(false);
      publish(second, 5);
      const take = async (): Promise<void> => {
        if (verb === 'drain') {
          sub.drain((data, offset, length, type) => tally.see(data.subarray(offset, offset + length), type));
        } else {
          // The newest record: the subscriber resumes there, lapped by the jump and the five records after it.
          const m = verb === 'read' ? await sub.read({ timeoutMs: 5_000 }) : sub.readSync({ timeoutMs: 5_000 });
          tally.see(m, sub.lastType);
        }
      };
      await take();
      assertCounted(tally.report(), second.published, verb);
      assert.deepEqual(
        [tally.report().received, tally.report().last],
        [1, second.published - 1],
        'the newest record, as any lapped subscriber',
      );
      pump(second, 3, [sub, tally]);
      assertCounted(tally.report(), second.published, verb);
    });
  }

  it('a subscriber refuses counters no publisher leaves (INTENT past 2^53) with ERR_SHMRING_CORRUPT, rather than read on from them', function () {
    const region = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity: CAPACITY }) });
    const pub = Broadcast.create(region, { capacity: CAPACITY });
    const sub = Broadcast.subscribe(region);
    try {
      for (let i = 0; i < 3; i++) assert.ok(pub.tryWrite(new Uint8Array([i])));
      for (let i = 0; i < 3; i++) assert.deepEqual([...sub.tryRead()!], [i]);
      const ctl = controlOf(region);
      // The same low word (TAIL still matches), a high word that puts INTENT past 2^53: written by something else.
      const tail = load64(ctl, B.INTENT);
      set64(ctl, B.INTENT, (2 ** 21 + 1) * TWO32 + tail);
      assert.ok(pub.tryWrite(new Uint8Array([3]))); // the publisher stores the low word alone (its high one unchanged)
      assert.throws(
        () => sub.tryRead(),
        (err: ShmringError) => err.code === ErrorCodes.CORRUPT && /not a position and count a publisher leaves/.test(err.message),
      );
    } finally {
      sub.close();
      pub.close();
    }
  });

  it('lossy: COUNT torn while it crossed 2^32 (HI1 = HI2 + 1), INTENT past 9 x 2^32: repaired, the dead record counted', function () {
    const first = create(false);
    subscribe(); // holds the Broadcast (so create takes it over) and never reads
    // A consistent state of a long-lived Broadcast, 16 bytes before a position of 9 x 2^32, 2^32 - 1 records in.
    const tail = 9 * TWO32 - 16;
    const ctl = controlOf(t.region);
    set64(ctl, B.INTENT, tail);
    set64(ctl, B.COUNT, TWO32 - 1);
    Atomics.store(ctl, B.LATEST_I32, (tail - 64) | 0);
    Atomics.store(ctl, B.TAIL_I32, tail | 0);
    first.detach();
    const second = create(false); // resumes there
    assert.equal(second.published, TWO32 - 1);
    const [sub, tally] = subscribe();
    second.detach();
    // Killed inside its COUNT store, crossing 2^32: INTENT whole past 9 x 2^32 (the 120-byte record wraps
    // there), COUNT's HI1 and LO stored, not its HI2.
    set64(ctl, B.INTENT, tail + 16 + 120);
    Atomics.store(ctl, B.COUNT.hi1, 1);
    Atomics.store(ctl, B.COUNT.lo, 0);
    const third = create(false);
    assert.equal(third.published, TWO32, 'the crossing count: the dead record counted');
    assert.ok(quiescent(t.region));
    assert.deepEqual([Atomics.load(ctl, B.INTENT.hi1), Atomics.load(ctl, B.INTENT.hi2)], [9, 9], 'both high words rewritten');
    assert.equal(readNow(sub, tally), 0, 'resettled at the jump');
    publish(third, 5);
    assert.equal(readNow(sub, tally), 5);
    assertCounted(tally.report(), 6, 'across 2^32');
    assert.equal(sub.lost, 1, 'the dead record, counted lost');
  });

  STEPS.forEach((step, s) => {
    it(`lossless, killed with ${step}: the new publisher waits until every subscriber has read all that was published, then jumps`, function () {
      const first = create(true);
      const [sub, tally] = subscribe();
      publish(first, 20);
      for (let k = 0; k < 5; k++) tally.see(sub.tryRead()!, sub.lastType);
      first.detach();
      dieInRecord(t.region, s + 1);
      const counted = first.published + (s >= 1 ? 1 : 0);

      const second = create(true);
      assert.equal(second.published, counted);
      assert.equal(sub.lost, 0);
      assert.ok(!quiescent(t.region), 'no jump while a subscriber has records to read');
      assert.equal(second.tryWrite(broadcastPayload(counted), counted & 0xffff), false, 'full until then');
      assert.equal(readNow(sub, tally), 15, 'every record published before the death is read');
      assert.equal(second.tryWrite(broadcastPayload(counted), counted & 0xffff), false, 'the jump; the subscriber resettles first');
      assert.ok(quiescent(t.region), 'jumped');
      assert.equal(readNow(sub, tally), 0);
      pump(second, 300, [sub, tally]);
      assertCounted(tally.report(), second.published, 'lossless');
      assert.equal(sub.lost, s >= 1 ? 1 : 0, 'nothing lost but the dead record, if COUNT counted it');
    });
  });

  /**
   * A publisher of a long-lived Broadcast: its counters at `position` with `count` records before it,
   * resumed by create, and a subscriber that joined there (it holds the Broadcast).
   */
  function startAt(lossless: boolean, position: number, count: number): [BroadcastPublisher, BroadcastSubscriber, Tally] {
    const first = create(lossless);
    const ctl = controlOf(t.region);
    set64(ctl, B.INTENT, position);
    set64(ctl, B.COUNT, count);
    Atomics.store(ctl, B.LATEST_I32, (position - 64) | 0);
    Atomics.store(ctl, B.TAIL_I32, position | 0);
    const [sub, tally] = subscribe();
    first.detach();
    return [create(lossless), sub, tally];
  }

  it('lossless, killed inside its INTENT store crossing 2^32 (HI1 = HI2 + 1): the subscriber reads every record (a torn INTENT is no lap), then the jump', function () {
    const [pub, sub, tally] = startAt(true, 9 * TWO32 - 80, 1000);
    publish(pub, 1); // unread when the publisher dies
    const before = pub.published;
    pub.detach();
    const ctl = controlOf(t.region);
    const tail = load64(ctl, B.INTENT);
    assert.ok(tail < 9 * TWO32 && tail + 120 > 9 * TWO32, 'the next record crosses 9 x 2^32');
    Atomics.store(ctl, B.INTENT.hi1, 9); // killed after its HI1 store, before LO and HI2
    const second = create(true);
    assert.equal(second.published, before, 'COUNT untouched: the dead record was not counted');
    assert.ok(!quiescent(t.region), 'no jump while the subscriber has a record to read');
    assert.equal(readNow(sub, tally), 1, 'the record published before the death is read, INTENT torn as it is');
    assert.equal(second.tryWrite(new Uint8Array(8)), false, 'the jump; the subscriber resettles first');
    assert.deepEqual([Atomics.load(ctl, B.INTENT.hi1), Atomics.load(ctl, B.INTENT.hi2)], [9, 9], 'INTENT whole again');
    assert.equal(readNow(sub, tally), 0);
    pump(second, 5, [sub, tally]);
    assertCounted(tally.report(), second.published - 1000, 'across the crossing');
    assert.equal(sub.lost, 0, 'nothing lost: the dead record was not counted');
  });

  for (const crossing of [false, true]) {
    it(`lossy, a repairing publisher killed in its own jump (INTENT ${crossing ? 'torn on its way across 9 x 2^32' : 'at the target'}, TAIL not yet): the next one completes the same jump`, function () {
      // The tail 512 bytes before the end of the ring's last lap below 9 x 2^32 - CAPACITY: the jump lands on 9 x 2^32.
      const start = crossing ? 9 * TWO32 - CAPACITY - 512 : 5 * CAPACITY + 1024;
      const [pub, sub, tally] = startAt(false, start, 1000);
      publish(pub, 1);
      readNow(sub, tally);
      pub.detach();
      const ctl = controlOf(t.region);
      const tail = load64(ctl, B.INTENT);
      const jump = (Math.floor(tail / CAPACITY) + 2) * CAPACITY;
      assert.equal(crossing, jump === 9 * TWO32);
      dieInRecord(t.region, 3); // the dead record
      if (crossing)
        Atomics.store(ctl, B.INTENT.hi1, 9); // the repair killed after its first store (HI1) of INTENT = J
      else set64(ctl, B.INTENT, jump); // ... after its whole INTENT store
      const next = create(false);
      assert.ok(quiescent(t.region), 'repaired');
      assert.equal(load64(ctl, B.INTENT), jump, 'the same jump');
      assert.equal(readNow(sub, tally), 0);
      pump(next, 20, [sub, tally]);
      assertCounted(tally.report(), next.published - 1000, 'across two repairs');
      assert.equal(sub.lost, 1, 'the dead record (its COUNT store made), counted lost');
    });
  }

  it('lossy, capacity 2^30: two repairs with no record between them leave no stale LATEST (a subscriber resumes at the tail, not at a made-up record)', function () {
    const C = 2 ** 30;
    const sab = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity: C }) });
    const ctl = controlOf(sab);
    const first = Broadcast.create(sab, { capacity: C });
    set64(ctl, B.INTENT, 3 * C - 64);
    set64(ctl, B.COUNT, 1000);
    Atomics.store(ctl, B.LATEST_I32, (3 * C - 192) | 0);
    Atomics.store(ctl, B.TAIL_I32, (3 * C - 64) | 0);
    const sub = Broadcast.subscribe(sab); // joins at 3C - 64
    first.detach();
    const second = Broadcast.create(sab, { capacity: C });
    assert.ok(second.tryWrite(new Uint8Array(120), 1)); // wraps: padding at C - 64, the record at 0; LATEST = 3C - 64
    assert.equal(sub.tryRead()?.length, 120);
    second.detach();
    // Killed in a record (counted) at 3C + 128, repaired by a jump to 5C; killed again in the next publisher's
    // first record (counted), repaired by a jump to 7C. LATEST, had it stayed at 3C - 64, would be 4C + 64
    // behind the tail: more than 2^32, so a lapped subscriber's 32-bit distance to it would look like a ring's.
    set64(ctl, B.INTENT, 3 * C + 256);
    set64(ctl, B.COUNT, 1002);
    Broadcast.create(sab, { capacity: C }).detach();
    set64(ctl, B.INTENT, 5 * C + 128);
    set64(ctl, B.COUNT, 1003);
    const third = Broadcast.create(sab, { capacity: C });
    assert.equal(load64(ctl, B.INTENT), 7 * C);
    assert.equal(sub.tryRead(), null, 'nothing after the jumps');
    assert.deepEqual([sub.position, sub.lost], [7 * C, 2], 'resumed at the tail; both dead records counted lost');
    assert.ok(third.tryWrite(new Uint8Array(8), 2));
    assert.equal(sub.tryRead()?.length, 8);
    third.close();
    sub.close();
    sab.close();
  });

  it('lossless: a repair killed between its TAIL store and its wake: the next publisher wakes the parked subscribers, so they resettle and it publishes', async function () {
    const first = create(true);
    const [sub, tally] = subscribe();
    pump(first, 3, [sub, tally]);
    first.detach();
    const parked = sub.read({ peerTimeoutMs: Infinity }); // nothing to read: it parks
    await new Promise((r) => setTimeout(r, 50));
    // A repair's jump, all its stores made, killed before its wake.
    const ctl = controlOf(t.region);
    const jump = (Math.floor(load64(ctl, B.INTENT) / CAPACITY) + 2) * CAPACITY;
    set64(ctl, B.INTENT, jump);
    Atomics.store(ctl, B.LATEST_I32, jump);
    Atomics.store(ctl, B.TAIL_I32, jump);
    const second = create(true);
    const written = second.write(broadcastPayload(3), { type: 3 });
    const outcome = await Promise.race([
      Promise.all([written, parked]).then(([, m]) => m),
      new Promise<undefined>((r) => setTimeout(r, 3_000, undefined)),
    ]);
    assert.ok(outcome !== undefined, 'the subscriber resettled and the write went through');
    tally.see(outcome, sub.lastType);
    assertCounted(tally.report(), second.published, 'across the unfinished repair');
    assert.equal(sub.lost, 0);
  });

  it('lossless: a subscriber still joining (its provisional CURSOR behind the tail) moves it to the tail at its next look, so the repair goes on', function () {
    const first = create(true);
    const [sub, tally] = subscribe();
    pump(first, 10, [sub, tally]);
    first.detach();
    dieInRecord(t.region, 2);
    const [joiner, joinerTally] = subscribe(); // no quiescent snapshot: it cannot settle yet
    const ctl = controlOf(t.region);
    // As a subscriber that joined during an earlier record and has not looked since: its CURSOR behind the tail.
    let slot = 0;
    while (Atomics.load(ctl, B.slotOffset(slot) / 4 + B.SLOT_CURSOR_I32) !== Atomics.load(ctl, B.TAIL_I32) || slot === 0) slot++;
    Atomics.store(ctl, B.slotOffset(slot) / 4 + B.SLOT_CURSOR_I32, Atomics.load(ctl, B.TAIL_I32) - 64);
    const second = create(true);
    const next = (): boolean => second.tryWrite(broadcastPayload(second.published), second.published & 0xffff);
    assert.equal(next(), false, 'the joiner is waited for');
    assert.equal(readNow(joiner, joinerTally), 0, 'its look: nothing to read, CURSOR moved to the tail');
    assert.equal(next(), false, 'the jump; both resettle first');
    assert.ok(quiescent(t.region));
    readNow(sub, tally);
    readNow(joiner, joinerTally);
    assert.equal(next(), true);
    assert.equal(readNow(joiner, joinerTally), 1);
    assert.equal(readNow(sub, tally), 1);
    assertCounted(tally.report(), second.published, 'the settled subscriber');
    assert.deepEqual([joiner.received, joiner.lost], [1, 0], 'the joiner starts after the jump');
  });

  it('lossless: a read while the publisher is held up inside a crossing of 2^32 (INTENT torn) hands the record out', function () {
    const pub = create(true);
    const [sub, tally] = subscribe();
    publish(pub, 3);
    const ctl = controlOf(t.region);
    const hi = Atomics.load(ctl, B.INTENT.hi1);
    Atomics.store(ctl, B.INTENT.hi1, hi + 1); // as the live publisher's HI1 store, its LO and HI2 stores to come
    assert.equal(readNow(sub, tally), 3, 'the lossless publisher never overwrites unread records: no lap to fear');
    Atomics.store(ctl, B.INTENT.hi1, hi);
    assertCounted(tally.report(), 3, 'lossless');
  });

  it('lossless, without subscribers (a SharedArrayBuffer, where create takes over whatever it can): the first write jumps and publishes', function () {
    const sab = Region.create({ backing: 'sab', size: Broadcast.regionSize({ capacity: CAPACITY }) });
    const first = Broadcast.create(sab, { capacity: CAPACITY, lossless: true });
    publish(first, 3);
    first.detach();
    dieInRecord(sab, 3);
    const second = Broadcast.create(sab, { capacity: CAPACITY, lossless: true });
    assert.equal(second.published, 4);
    assert.ok(!quiescent(sab));
    assert.ok(second.tryWrite(new Uint8Array(8)));
    assert.ok(quiescent(sab));
    assert.equal(second.published, 5);
    second.close();
    sab.close();
  });

  it('lossless: a SIGKILLed subscriber holding unread records is dropped after peerTimeoutMs, then the waiting write jumps', async function () {
    const first = create(true);
    publish(first, 3);
    const holder = new LinePeer(SUBSCRIBER, [t.name, 'hold']);
    t.peer(holder);
    await holder.line('ready');
    publish(first, 4); // unread by the holder
    first.detach();
    dieInRecord(t.region, 2);
    const second = create(true);
    const written = second.write(new Uint8Array(8), { peerTimeoutMs: 200 });
    let settled = false;
    void written.then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(settled, false, 'a live subscriber with unread records is waited for');
    await holder.kill();
    const t0 = performance.now();
    await written;
    assert.ok(performance.now() - t0 < 5_000, 'the write went on once the holder was dead');
    assert.equal(second.published, 9);
  });

  it('counters no publisher leaves (INTENT far past TAIL) are ERR_SHMRING_CORRUPT while subscribers hold the Broadcast, touching nothing', function () {
    const first = create(false);
    const [sub] = subscribe();
    assert.ok(first.tryWrite(new Uint8Array([1])));
    first.detach();
    const ctl = controlOf(t.region);
    const intent = load64(ctl, B.INTENT);
    set64(ctl, B.INTENT, intent + 4 * CAPACITY);
    const words = (): number[] => [...ctl.subarray(B.TAIL_I32, B.TAIL_I32 + 1), ...ctl.subarray(B.INTENT.lo, B.LATEST_I32 + 1)];
    const before = words();
    assert.throws(
      () => Broadcast.create(t.region, { capacity: CAPACITY }),
      (err: ShmringError) => err.code === ErrorCodes.CORRUPT && /counters of .* are impossible/.test(err.message),
    );
    assert.deepEqual(words(), before, 'the refusal touched nothing');
    set64(ctl, B.INTENT, intent);
    assert.deepEqual([...sub.tryRead()!], [1]);
    sub.close();
    assert.equal(create(false).published, 0, 'nobody holds it: a new Broadcast');
  });

  for (const lossless of [false, true]) {
    const mode = lossless ? 'lossless' : 'lossy';
    it(`${mode}: publisher processes SIGKILLed at random moments, each replaced: subscribers here and in a child lose nothing uncounted`, async function () {
      // A lossless racer publishes 16 MiB (about a thousand long records, milliseconds) before it waits for
      // the subscribers; a lossy one never waits.
      const capacity = lossless ? 1 << 24 : 1 << 20;
      const killWithinUs = lossless ? 2000 : 800; // after the first record: a lossy racer publishes 2,000 for 2-4 ms
      const big = Region.create({ backing: 'posix', name: `${t.name}-big`, size: Broadcast.regionSize({ capacity }) });
      t.track({
        close: () => {
          big.close();
          big.unlink();
        },
      });
      Broadcast.create(big, { capacity, lossless }).detach();
      const here = Broadcast.subscribe(big);
      t.track(here, true);
      const tally = new Tally(here);
      const reading = (async () => {
        // A gap between publishers longer than a check period ends a wait with ERR_SHMRING_PEER_DEAD: read on.
        for (;;) {
          try {
            for await (const m of here.messages({ peerTimeoutMs: 600_000 })) tally.see(m, here.lastType);
            return;
          } catch (err) {
            if ((err as ShmringError).code !== ErrorCodes.PEER_DEAD) throw err;
            await new Promise((r) => setTimeout(r, 5));
          }
        }
      })();
      const child = new LinePeer(SUBSCRIBER, [`${t.name}-big`, 'survivor']);
      t.peer(child);
      await child.line('ready');
      let midRecord = 0;
      let rounds = 0;
      // Until five kills landed in the middle of a record (most do), at most 60 rounds; each racer kills itself
      // up to 0.8 ms (lossy) or 2 ms (lossless, which fills its 16 MiB ring in about 4 ms) after its first record.
      const counters = (): string =>
        controlOf(big)
          .subarray(B.INTENT.lo, B.LATEST_I32 + 1)
          .join();
      for (; rounds < 60 && midRecord < 5; rounds++) {
        const before = counters();
        const racer = new LinePeer(RACER, [
          `${t.name}-big`,
          String(capacity),
          String(lossless),
          '2000',
          String(Math.random() * killWithinUs),
        ]);
        t.peer(racer);
        await racer.exited;
        assert.equal(racer.child.signalCode, 'SIGKILL', `the racer killed itself (stderr: ${racer.stderr})`);
        // Counted only if this racer left it so (a lossless racer killed while it still waited to complete the
        // previous one's repair leaves the counters as it found them).
        if (!quiescent(big) && counters() !== before) midRecord++;
      }
      assert.ok(midRecord >= 5, `${midRecord} of ${rounds} kills landed in the middle of a record`);
      console.log(`      (${mode}: ${midRecord} of ${rounds} kills landed in the middle of a record)`);
      const last = Broadcast.create(big, { capacity, lossless });
      for (let k = 0; k < 100; k++) {
        const i = last.published;
        if (!last.tryWrite(broadcastPayload(i), i & 0xffff)) await last.write(broadcastPayload(i), { type: i & 0xffff });
      }
      last.close();
      await reading;
      assertCounted(tally.report(), last.published, 'this thread');
      assertCounted(JSON.parse(await child.line('{')) as SubscriberReport, last.published, 'the child');
      if (lossless) assert.ok(tally.report().lost <= midRecord, 'lossless: nothing lost but the dead records');
    });
  }
});
