/**
 * The MpscRing consumer takes a stuck claim back on the strength of
 * threadGone(tid): a live claimer may commit with a plain store, so the
 * verdict "gone" must be certain. It holds only where /proc lists every
 * process of this namespace (procShowsAll: its /proc/self is this process,
 * no hidepid) and /proc/<tid> is missing or a zombie; any other doubt is
 * "alive".
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { ErrorCodes, Region } from '@shmring/core';
import { hidesProcesses, procShowsAll, threadGone } from '../src/liveness.js';
import { MpscRing } from '../src/index.js';
import * as L from '../src/layout.js';
import * as M from '../src/mpsc-layout.js';
import { MOUNTINFO_CASES } from './fixtures/mountinfo.js';
import { deadThreadId, nodeAfterMount } from './helpers.js';

/** Skips a test whose claimer must be judged gone: where /proc may hide processes, no mark ever is. */
function needProcShowingAll(context: Mocha.Context): void {
  if (!procShowsAll()) {
    console.log('      (skipped: /proc here may hide processes: no mark is ever judged gone)');
    context.skip();
  }
}

/**
 * A memfd MpscRing of 1024 bytes whose consumer takes a stuck claim back at once (peerTimeoutMs 0), its producer
 * (committing with a plain store on x86-64, so a take-back it cannot see loses its message), and the Int32 index of
 * the TYPE word of the record whose payload is at `offset`.
 */
/**
 * Moves both positions of a fresh MpscRing of capacity 1024 near the end of
 * its data area (two records of 400 bytes written and read: 816), so that
 * the next claim of more than 200 bytes wraps.
 */
function nearTheEnd(producer: MpscRing, consumer: MpscRing): void {
  for (let i = 0; i < 2; i++) {
    assert.equal(producer.tryWrite(new Uint8Array(400)), true);
    assert.equal(consumer.tryRead()?.length, 400);
  }
}

function plainCommitRing(): {
  region: Region;
  consumer: MpscRing;
  producer: MpscRing;
  data32: Int32Array;
  typeOf: (offset: number) => number;
} {
  const region = Region.create({ backing: 'memfd', size: MpscRing.regionSize({ capacity: 1024 }) });
  const consumer = MpscRing.create(region, { capacity: 1024, peerTimeoutMs: 0 });
  const producer = MpscRing.attach(region);
  const data32 = new Int32Array(consumer.data.buffer, consumer.data.byteOffset, 1024 / 4);
  return { region, consumer, producer, data32, typeOf: (offset) => (offset - M.MPSC_RECORD_HEADER) / 4 + M.MPSC_TYPE_I32 };
}

describe('isAlive: a process /proc may hide is alive', function () {
  it('counts a process missing from a /proc that may hide it as alive (no /proc here: a tmpfs over it), not as dead', function () {
    const code = `
      const { isAlive, procShowsAll } = await import(${JSON.stringify(new URL('../src/liveness.js', import.meta.url).href)});
      console.log(JSON.stringify({ showsAll: procShowsAll(), parent: isAlive(process.ppid, 0) }));`;
    const child = nodeAfterMount('mount -t tmpfs none /proc', code);
    if (child.error !== undefined || child.status !== 0) {
      console.log(`      (skipped: no private mount namespace here: ${child.error?.message ?? child.stderr.trim()})`);
      this.skip();
    }
    // The live parent (this test) is ENOENT there, as another user's process is under hidepid: judged dead,
    // its MpmcQueue slot was taken, its LatestValue writer role too.
    assert.deepEqual(JSON.parse(child.stdout), { showsAll: false, parent: true });
  });
});

describe('threadGone: when a claimer is certainly gone', function () {
  it('hidesProcesses reads the proc mount at /proc: hidepid 1, 2, invisible, noaccess hide; 0, off and none do not; no proc at /proc hides', function () {
    for (const { what, text, hides } of MOUNTINFO_CASES) assert.equal(hidesProcesses(text), hides, what);
  });

  it('this process, a live child and a thread id of ours are alive; an exited and reaped child, a zombie and ids <= 0 are gone', async function () {
    if (!procShowsAll()) {
      console.log('      (skipped: /proc here may hide processes: threadGone answers "alive" for every id)');
      this.skip();
    }
    assert.equal(threadGone(process.pid), false);
    assert.equal(threadGone(0), true);
    assert.equal(threadGone(-5), true);
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    try {
      assert.equal(threadGone(child.pid!), false, 'a live child');
      // A zombie: the child killed, not yet reaped (its 'exit' is what reaps it: look before the event loop runs).
      child.kill('SIGKILL');
      const deadline = Date.now() + 5_000;
      let state = '';
      while (Date.now() < deadline && !['Z', 'X', 'x', 'gone'].includes(state)) {
        state = existsSync(`/proc/${child.pid}/stat`) ? readFileSync(`/proc/${child.pid}/stat`, 'latin1').split(') ')[1]![0]! : 'gone';
      }
      // Not reaped before the event loop runs (libuv reaps on SIGCHLD there): a zombie, which threadGone must judge gone.
      assert.ok(['Z', 'X', 'x'].includes(state), `the killed child is a zombie (state ${state})`);
      assert.equal(threadGone(child.pid!), true, `killed (state ${state})`);
    } finally {
      await new Promise((resolve) =>
        child.exitCode !== null || child.signalCode !== null ? resolve(undefined) : child.once('exit', resolve),
      );
    }
    assert.equal(threadGone(child.pid!), true, 'reaped');
    // A thread id of a live process that is not its pid: one of this process's own threads (libuv's, V8's).
    const thread = readdirSync(`/proc/${process.pid}/task`)
      .map(Number)
      .find((tid) => tid !== process.pid);
    if (thread !== undefined) assert.equal(threadGone(thread), false, `thread ${thread} of this process`);
  });

  it('a claim whose TYPE no longer holds the mark it showed when first seen is a claimer committing: never taken back, its message arrives', function () {
    needProcShowingAll(this);
    const { region, consumer, producer, data32, typeOf } = plainCommitRing();
    try {
      // The consumer looks between the two stores of a commit: TYPE holds the message's type (0, the default), LENGTH the claim.
      let offset = producer.claim(8);
      data32[typeOf(offset)] = 0;
      assert.equal(consumer.tryRead(), null);
      assert.equal(consumer.unblockedRecords, 0, 'a claimer in its commit was judged gone: TYPE 0 read as a thread id');
      producer.commit(offset);
      assert.deepEqual(consumer.tryRead(), new Uint8Array(8));
      // The same with a type that names no live thread, stored after the claim was first seen stuck (its mark: a live thread).
      const type = deadThreadId();
      offset = producer.claim(8);
      assert.equal(consumer.tryRead(), null);
      data32[typeOf(offset)] = type;
      assert.equal(consumer.tryRead(), null);
      assert.equal(consumer.unblockedRecords, 0, 'a claimer in its commit was judged gone: its message type read as a dead thread id');
      producer.commit(offset, type);
      assert.deepEqual(consumer.tryRead(), new Uint8Array(8));
      assert.equal(consumer.lastType, type);
    } finally {
      producer.close();
      consumer.close();
      region.close();
    }
  });

  it('a claim whose TYPE already holds its message type when first seen (a claimer between its TYPE and LENGTH stores) is never taken back, whatever thread id the type equals', function () {
    needProcShowingAll(this);
    const { region, consumer, producer, data32, typeOf } = plainCommitRing();
    try {
      // A message type equal to a thread id no live thread has, and 0: stored over the mark before the consumer's first look.
      for (const type of [deadThreadId(), 0]) {
        const offset = producer.claim(8);
        data32[typeOf(offset)] = type;
        assert.equal(consumer.tryRead(), null, `type ${type}: nothing committed yet`);
        assert.equal(consumer.tryRead(), null, `type ${type}: still nothing`);
        assert.equal(consumer.unblockedRecords, 0, `type ${type}: a claimer in its commit was judged gone`);
        producer.commit(offset, type);
        assert.deepEqual(consumer.tryRead(), new Uint8Array(8), `type ${type}: its message`);
        assert.equal(consumer.lastType, type);
      }
    } finally {
      producer.close();
      consumer.close();
      region.close();
    }
  });

  it('a parked read takes back a dead claim that wrapped (behind the padding it committed at once), without a wake-up', async function () {
    needProcShowingAll(this);
    using region = Region.create({ backing: 'memfd', size: MpscRing.regionSize({ capacity: 1024 }) });
    const consumer = MpscRing.create(region, { capacity: 1024, peerTimeoutMs: 40 });
    const producer = MpscRing.attach(region);
    const other = MpscRing.attach(region);
    try {
      // Head and tail near the end of the data area: the next claim of 300 bytes wraps.
      nearTheEnd(producer, consumer);
      const reading = consumer.read(); // parks: nothing is there
      await new Promise((resolve) => setTimeout(resolve, 5));
      // The producer claims (padding committed at the old index, its claim marked at 0) and dies: its mark
      // names a thread that does not exist.
      assert.equal(producer.claim(300), M.MPSC_RECORD_HEADER);
      const data32 = new Int32Array(consumer.data.buffer, consumer.data.byteOffset, 1024 / 4);
      data32[M.MPSC_TYPE_I32] = M.claimMark(deadThreadId());
      // Several peer checks (every 10 ms), and the claim stuck for longer than 40 ms: taken back while parked.
      for (let i = 0; i < 100 && consumer.unblockedRecords === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(consumer.unblockedRecords, 1, 'the parked read never looked past the padding at its head');
      assert.equal(other.tryWrite(new Uint8Array([9])), true);
      assert.deepEqual(await reading, new Uint8Array([9]));
    } finally {
      other.close();
      producer.close(); // aborts its claim: it writes over space the consumer took back, read by nobody now
      consumer.close();
    }
  });

  it('a polling consumer skips a claim whose claimer died before writing its header, once no producer is left', function () {
    using region = Region.create({ backing: 'memfd', size: MpscRing.regionSize({ capacity: 1024 }) });
    const consumer = MpscRing.create(region, { capacity: 1024, peerTimeoutMs: 0 });
    try {
      const ctl = new Int32Array(region.buffer);
      // A producer claimed 16 bytes (its CAS of the tail) and died before its mark: LENGTH 0 at the head, the tail past it.
      Atomics.add(ctl, L.PRODUCER_POSITION_I32, 16);
      for (let polls = 0; polls < 200 && consumer.unblockedRecords === 0; polls++) assert.equal(consumer.tryRead(), null);
      assert.equal(consumer.unblockedRecords, 1, 'tryRead never skipped the dead claim');
      assert.equal(Atomics.load(ctl, L.CONSUMER_POSITION_I32), 16);
      // And a drain goes on from there.
      const producer = MpscRing.attach(region);
      try {
        assert.equal(producer.tryWrite(new Uint8Array([1, 2])), true);
        const got: number[][] = [];
        assert.equal(
          consumer.drain((data, offset, length) => got.push([...data.subarray(offset, offset + length)])),
          1,
        );
        assert.deepEqual(got, [[1, 2]]);
      } finally {
        producer.close();
      }
    } finally {
      consumer.close();
    }
  });

  for (const died of ['before any header', 'after marking its record at 0'] as const) {
    it(`a dead claim that wrapped (its claimer died ${died}) is skipped whole and counted once`, function () {
      if (died !== 'before any header') needProcShowingAll(this);
      using region = Region.create({ backing: 'memfd', size: MpscRing.regionSize({ capacity: 1024 }) });
      const consumer = MpscRing.create(region, { capacity: 1024, peerTimeoutMs: 0 });
      try {
        // Head and tail near the end of the data area, with no producer left.
        const producer = MpscRing.attach(region);
        nearTheEnd(producer, consumer);
        producer.close();
        const ctl = new Int32Array(region.buffer);
        const data32 = new Int32Array(consumer.data.buffer, consumer.data.byteOffset, 1024 / 4);
        // A claim of 300 bytes from there wraps: the padding to the end and the record at 0, one CAS of the tail.
        // Observes the tail the producer's claims left (no producer is left to move it).
        const tail = Atomics.load(ctl, L.PRODUCER_POSITION_I32);
        const record = M.mpscLength(300);
        const needed = 1024 - (tail & 1023) + M.recordBytes(record);
        // The dead claimer's CAS of the tail, as an add: nobody else claims meanwhile.
        Atomics.add(ctl, L.PRODUCER_POSITION_I32, needed);
        if (died !== 'before any header') {
          // The mark at 0 (a thread that no longer exists) and the claim's negative LENGTH; not the padding's header.
          data32[M.MPSC_TYPE_I32] = M.claimMark(deadThreadId());
          // Publishes "claimed by the mark" (TYPE written before), as the claimer's store does.
          Atomics.store(data32, M.MPSC_LENGTH_I32, -record);
        }
        // Each observes the consumer's release of the head past what it skipped.
        for (let polls = 0; polls < 1000 && Atomics.load(ctl, L.CONSUMER_POSITION_I32) !== tail + needed; polls++) {
          assert.equal(consumer.tryRead(), null);
        }
        assert.equal(Atomics.load(ctl, L.CONSUMER_POSITION_I32), tail + needed, 'the consumer never got past the dead claim');
        assert.equal(consumer.unblockedRecords, 1, 'one claim, one record skipped');
      } finally {
        consumer.close();
      }
    });
  }

  it('a dead headerless claim that ended exactly at the end of the data area, a record committed at 0 behind it: counted, and the record read', function () {
    using region = Region.create({ backing: 'memfd', size: MpscRing.regionSize({ capacity: 1024 }) });
    const consumer = MpscRing.create(region, { capacity: 1024, peerTimeoutMs: 0 });
    try {
      const producer = MpscRing.attach(region);
      nearTheEnd(producer, consumer);
      const ctl = new Int32Array(region.buffer);
      // A claimer took exactly the rest of the data area (one CAS of the tail) and died before its header.
      // Observes the tail the claims left; then the dead claimer's CAS of it, as an add (nobody else claims meanwhile).
      const tail = Atomics.load(ctl, L.PRODUCER_POSITION_I32);
      Atomics.add(ctl, L.PRODUCER_POSITION_I32, 1024 - (tail & 1023));
      // Another producer's record at 0, committed; then no producer is left.
      assert.equal(producer.tryWrite(Uint8Array.of(7, 7)), true);
      producer.close();
      let got: Uint8Array | null = null;
      for (let polls = 0; polls < 1000 && got === null; polls++) got = consumer.tryRead();
      assert.deepEqual(got, Uint8Array.of(7, 7));
      assert.equal(consumer.unblockedRecords, 1, "the dead claim before it, taken for a wrapped claim's padding, went uncounted");
    } finally {
      consumer.close();
    }
  });

  it("a System V MpscRing's producer commits with the CAS (no lock to go by): a claim taken back on a mark that names no live thread reports ERR_SHMRING_TIMEOUT", function () {
    needProcShowingAll(this);
    using region = Region.create({ backing: 'sysv', size: MpscRing.regionSize({ capacity: 1024 }) });
    const consumer = MpscRing.create(region, { capacity: 1024, peerTimeoutMs: 0 });
    const producer = MpscRing.attach(region);
    try {
      const offset = producer.claim(8);
      // The mark names no live thread now (as a corrupt peer, or a misjudged id, would leave it).
      const data32 = new Int32Array(consumer.data.buffer, consumer.data.byteOffset, 1024 / 4);
      data32[(offset - M.MPSC_RECORD_HEADER) / 4 + M.MPSC_TYPE_I32] = M.claimMark(deadThreadId());
      assert.equal(consumer.tryRead(), null);
      assert.equal(consumer.unblockedRecords, 1, 'taken back');
      // A plain store would land in the room given back; the CAS finds the claim gone and says so.
      assert.throws(() => producer.commit(offset), { code: ErrorCodes.TIMEOUT });
    } finally {
      producer.close();
      consumer.close();
      region.unlink(); // a System V segment outlives its processes otherwise (IPC_PRIVATE: nobody else can remove it)
    }
  });
});
