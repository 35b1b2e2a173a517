/**
 * Each misuse error names the verb called, as `Kind.verb: …` (the claims,
 * a message too large for a MpmcQueue or a Broadcast, a closed
 * LatestValue); select refuses a key its entries do not have;
 * Broadcast.regionSize takes only what decides the size; a POSIX object
 * whose name reads as a System V target is reached by its path.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, Region } from '@shmring/core';
import { Broadcast, inspect, LatestValue, listRings, MpmcQueue, MpscRing, SpscRing, select, selectSync } from '../src/index.js';

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));

function sab(size: number): Region {
  return Region.create({ backing: 'sab', size });
}

/** An error with `code`, of class `name`, whose message matches `message`. */
function says(code: string, name: string, message: RegExp): (err: unknown) => boolean {
  return (err) => {
    const e = err as Error & { code?: string };
    assert.equal(e.code, code, e.message);
    assert.equal(e.name, name, e.message);
    assert.match(e.message, message);
    return true;
  };
}

/** A SpscRing and an MpscRing of 256 data bytes, each over its own SharedArrayBuffer. */
function byteRings(): [string, SpscRing | MpscRing][] {
  return [
    ['SpscRing', SpscRing.create(sab(SpscRing.regionSize({ capacity: 256 })), { capacity: 256 })],
    ['MpscRing', MpscRing.create(sab(MpscRing.regionSize({ capacity: 256 })), { capacity: 256 })],
  ];
}

describe('error messages name the verb called', function () {
  describe('claims (claim.ts)', function () {
    it('names claim, not the ring alone, for a claim while a claim is open and for a claim too large', function () {
      for (const [kind, ring] of byteRings()) {
        const offset = ring.claim(8);
        assert.ok(offset >= 0);
        assert.throws(
          () => ring.claim(8),
          says(
            ErrorCodes.INVALID_ARGUMENT,
            'ShmringError',
            new RegExp(`^${kind}\\.claim: a claim is open \\(offset ${offset}\\); commit\\(\\) or abort\\(\\)`),
          ),
        );
        ring.abort(offset);
        assert.throws(
          () => ring.claim(ring.maxMessageLength + 1),
          says(
            ErrorCodes.MESSAGE_TOO_LARGE,
            'RangeError',
            new RegExp(
              `^${kind}\\.claim: length=${ring.maxMessageLength + 1} is larger than .*\\(maxMessageLength=${ring.maxMessageLength}\\)`,
            ),
          ),
        );
        assert.throws(
          () => ring.claim(-1),
          says(ErrorCodes.INVALID_ARGUMENT, 'RangeError', new RegExp(`^${kind}\\.claim: length=-1 must be >= 0`)),
        );
      }
    });

    it('names tryWrite for a tryWrite while a claim is open and for one too large, even after a claim of the same ring', function () {
      for (const [kind, ring] of byteRings()) {
        const offset = ring.claim(8);
        assert.throws(
          () => ring.tryWrite(new Uint8Array(1)),
          says(ErrorCodes.INVALID_ARGUMENT, 'ShmringError', new RegExp(`^${kind}\\.tryWrite: a claim is open \\(offset ${offset}\\)`)),
        );
        ring.commit(offset);
        assert.throws(
          () => ring.tryWrite(new Uint8Array(ring.maxMessageLength + 1)),
          says(
            ErrorCodes.MESSAGE_TOO_LARGE,
            'RangeError',
            new RegExp(`^${kind}\\.tryWrite: length=${ring.maxMessageLength + 1} is larger than`),
          ),
        );
        // A claim that failed its own check leaves nothing behind for the next tryWrite's error.
        assert.throws(() => ring.claim(1.5), { code: ErrorCodes.INVALID_ARGUMENT, name: 'TypeError' });
        assert.throws(() => ring.tryWrite(new Uint8Array(ring.maxMessageLength + 1)), new RegExp(`^RangeError: ${kind}\\.tryWrite:`));
        assert.equal(ring.tryRead()?.length, 8, 'the committed message is still there');
      }
    });

    it('names writeSync and write for a message too large for a SpscRing or an MpscRing', async function () {
      for (const [kind, ring] of byteRings()) {
        const big = new Uint8Array(ring.maxMessageLength + 1);
        assert.throws(
          () => ring.writeSync(big),
          says(ErrorCodes.MESSAGE_TOO_LARGE, 'RangeError', new RegExp(`^${kind}\\.writeSync: length=`)),
        );
        await assert.rejects(ring.write(big), says(ErrorCodes.MESSAGE_TOO_LARGE, 'RangeError', new RegExp(`^${kind}\\.write: length=`)));
        assert.equal(ring.size, 0, 'nothing written');
      }
    });
  });

  describe('a message too large for a MpmcQueue or a Broadcast', function () {
    it('names tryWrite, writeSync or write, and the MpmcQueue slotSize', async function () {
      const queue = MpmcQueue.create(sab(MpmcQueue.regionSize({ capacity: 4, slotSize: 8 })), { capacity: 4, slotSize: 8 });
      const big = new Uint8Array(9);
      const rule = (verb: string): RegExp =>
        new RegExp(`^MpmcQueue\\.${verb}: length=9 is larger than slotSize=8, the largest message this queue takes; `);
      assert.throws(() => queue.tryWrite(big), says(ErrorCodes.MESSAGE_TOO_LARGE, 'RangeError', rule('tryWrite')));
      assert.throws(() => queue.writeSync(big), says(ErrorCodes.MESSAGE_TOO_LARGE, 'RangeError', rule('writeSync')));
      await assert.rejects(queue.write(big), says(ErrorCodes.MESSAGE_TOO_LARGE, 'RangeError', rule('write')));
      assert.equal(queue.size, 0, 'nothing written');
    });

    it("names tryWrite, writeSync or write, and the Broadcast's maxMessageLength", async function () {
      const pub = Broadcast.create(sab(Broadcast.regionSize({ capacity: 256, subscribers: 1 })), {
        capacity: 256,
        lossless: true,
        subscribers: 1,
      });
      const length = pub.maxMessageLength + 1;
      const big = new Uint8Array(length);
      const rule = (verb: string): RegExp =>
        new RegExp(
          `^Broadcast\\.${verb}: length=${length} is larger than the largest message this ring takes \\(maxMessageLength=${pub.maxMessageLength}\\); `,
        );
      assert.throws(() => pub.tryWrite(big), says(ErrorCodes.MESSAGE_TOO_LARGE, 'RangeError', rule('tryWrite')));
      assert.throws(() => pub.writeSync(big), says(ErrorCodes.MESSAGE_TOO_LARGE, 'RangeError', rule('writeSync')));
      await assert.rejects(pub.write(big), says(ErrorCodes.MESSAGE_TOO_LARGE, 'RangeError', rule('write')));
      assert.equal(pub.published, 0, 'nothing published');
    });
  });

  describe('a closed LatestValue', function () {
    it('names the verb called and the region in ERR_SHMRING_CLOSED', async function () {
      const lv = LatestValue.create(sab(LatestValue.regionSize({ maxSize: 16 })), { maxSize: 16 });
      lv.publish(new Uint8Array([1]));
      lv.close();
      const closed = (verb: string): ((err: unknown) => boolean) =>
        says(
          ErrorCodes.CLOSED,
          'ShmringError',
          new RegExp(`^LatestValue\\.${verb}: this object of the sab region is closed \\(or its region is\\); attach a new one`),
        );
      assert.throws(() => lv.publish(new Uint8Array([2])), closed('publish'));
      assert.throws(() => lv.read(), closed('read'));
      assert.throws(() => lv.changedSync(0), closed('changedSync'));
      await assert.rejects(lv.changed(0), closed('changed'));
      await assert.rejects(lv.updates().next(), closed('updates'));
    });

    it("names changed or updates when close() ends that object's pending wait", async function () {
      const lv = LatestValue.create(sab(LatestValue.regionSize({ maxSize: 16 })), { maxSize: 16 });
      lv.publish(new Uint8Array([1]));
      const changed = lv.changed(lv.read().version);
      const updates = lv.updates();
      assert.equal((await updates.next()).value?.version, 1);
      const next = updates.next(); // parks: nothing newer than version 1
      await new Promise((resolve) => setTimeout(resolve, 20));
      lv.close();
      await assert.rejects(changed, { code: ErrorCodes.CLOSED, message: /^LatestValue\.changed: / });
      await assert.rejects(next, { code: ErrorCodes.CLOSED, message: /^LatestValue\.updates: / });
    });
  });
});

describe('select and selectSync refuse an unknown key in a { queue, write } entry', function () {
  it('names the key, the one it is nearest to, the entry and the keys an entry has, before anything waits', async function () {
    const ring = SpscRing.create(sab(SpscRing.regionSize({ capacity: 256 })), { capacity: 256 });
    const refused = (call: string, index: number, key: string, near: string): ((err: unknown) => boolean) =>
      says(
        ErrorCodes.INVALID_ARGUMENT,
        'TypeError',
        new RegExp(
          `^${call}: entries\\[${index}\\]: unknown option "${key}"${near === '' ? '' : ` \\(did you mean "${near}"\\?\\)`}; its options are queue, write$`,
        ),
      );
    // A misspelt write: before, the entry was refused for write=undefined, never naming the key given.
    const misspelt = { queue: ring, wirte: 4 } as unknown as { queue: SpscRing; write: number };
    assert.throws(() => selectSync([ring, misspelt], { timeoutMs: 0 }), refused('selectSync', 1, 'wirte', 'write'));
    await assert.rejects(select([ring, misspelt], { timeoutMs: 0 }), refused('select', 1, 'wirte', 'write'));
    // A key of the options put in an entry: before, it was ignored without a word (the room was there: 0 came back).
    const stray = { queue: ring, write: 4, timeoutMs: 5 } as { queue: SpscRing; write: number };
    assert.throws(() => selectSync([stray]), refused('selectSync', 0, 'timeoutMs', ''));
    await assert.rejects(select([stray]), refused('select', 0, 'timeoutMs', ''));
    // An entry of that queue checked before does not let another object through.
    assert.equal(selectSync([{ queue: ring, write: 4 }]), 0);
    assert.throws(() => selectSync([stray]), refused('selectSync', 0, 'timeoutMs', ''));
    // A key set to undefined sets nothing, as for options.
    assert.equal(selectSync([{ queue: ring, write: 4, signal: undefined } as { queue: SpscRing; write: number }]), 0);
  });
});

describe('Broadcast.regionSize takes only the options that decide the size', function () {
  it('MpscRing.regionSize refuses peerTimeoutMs (it changes nothing about the size) as an unknown option', function () {
    assert.throws(
      () => MpscRing.regionSize({ capacity: 1024, peerTimeoutMs: 5 } as never),
      says(ErrorCodes.INVALID_ARGUMENT, 'TypeError', /^MpscRing\.regionSize: unknown option "peerTimeoutMs"; its options are capacity$/),
    );
  });

  it('refuses lossless and peerTimeoutMs as the other regionSize functions refuse an unknown option; a lossless Broadcast fits the size', function () {
    for (const [name, options] of [
      ['lossless', { capacity: 1024, lossless: true }],
      ['peerTimeoutMs', { capacity: 1024, peerTimeoutMs: 5 }],
    ] as const) {
      assert.throws(
        () => Broadcast.regionSize(options as never),
        says(
          ErrorCodes.INVALID_ARGUMENT,
          'TypeError',
          new RegExp(`^Broadcast\\.regionSize: unknown option "${name}"; its options are capacity, subscribers$`),
        ),
      );
    }
    // lossless is a header byte: both modes take the same bytes, the subscriber table included.
    const size = Broadcast.regionSize({ capacity: 1024, subscribers: 2 });
    for (const lossless of [false, true]) {
      const region = Region.create({ backing: 'sab', size });
      const pub = Broadcast.create(region, { capacity: 1024, subscribers: 2, lossless });
      const sub = Broadcast.subscribe(region);
      assert.ok(pub.tryWrite(new Uint8Array([7])));
      assert.deepEqual([...sub.tryRead()!], [7]);
      pub.close();
    }
  });
});

describe('a POSIX object whose name reads as a System V target', function () {
  this.timeout(60_000);
  const name = `sysv:shmring-msgs-${process.pid}`;
  const file = `/dev/shm/${name}`;
  let region: Region | undefined;

  before(function () {
    region = Region.create({ backing: 'posix', name, size: SpscRing.regionSize({ capacity: 256 }) });
    SpscRing.create(region, { capacity: 256 }).tryWrite(new Uint8Array(3));
  });

  after(function () {
    region?.unlink();
    region?.close();
  });

  it('is inspected by its /dev/shm path, and listRings() lists it by that path', function () {
    assert.throws(() => inspect(name), { code: ErrorCodes.INVALID_ARGUMENT, message: new RegExp(`give its path \\(${file}\\)`) });
    assert.equal(inspect(file)?.kind, 'SpscRing');
    const listed = listRings().filter((r) => r.name.includes(`shmring-msgs-${process.pid}`));
    assert.deepEqual(
      listed.map((r) => [r.name, r.kind]),
      [[file, 'SpscRing']],
    );
  });

  it('the CLI help says how to name it, and `shmring inspect /dev/shm/sysv:…` shows it', function () {
    const help = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /a POSIX object named sysv:… or sysv-id:…: give its path, \/dev\/shm\/<name>/);
    const r = spawnSync(process.execPath, [CLI, 'inspect', '--json', file], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    const info = JSON.parse(r.stdout) as { name: string; kind: string };
    assert.deepEqual([info.name, info.kind], [file, 'SpscRing']);
  });
});
