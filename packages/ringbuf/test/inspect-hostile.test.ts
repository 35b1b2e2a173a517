/**
 * inspect, the listings and the shmring CLI against what others left in
 * shared memory: an MpscRing whose data area is all claims, a System V
 * segment larger than Node maps, an unreadable segment table, a Broadcast
 * slot caught mid-registration, an object whose sizing lock is held, and
 * names that would steer a terminal.
 */
import { strict as assert } from 'node:assert';
import { constants as bufferConstants } from 'node:buffer';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, lockFileByte, Region, ShmringRangeError, SIZING_LOCK_BYTE } from '@shmring/core';
import { Broadcast, describeRing, inspect, listRings, MpscRing, SpscRing } from '../src/index.js';
import * as B from '../src/broadcast-layout.js';
import * as L from '../src/layout.js';
import * as M from '../src/mpsc-layout.js';
import { listSysvRings, MAX_LISTED_CLAIMS, MAX_WALK_STEPS, unlinkStale } from '../src/inspect.js';
import { sysvSegments } from '../src/sysv-segments.js';

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));

function uniqueName(tag: string): string {
  return `shmring-inspect-hostile-${tag}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
}

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000, maxBuffer: 64 << 20 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A pid no process has now: one that ran and exited. */
function exitedPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
  return Number(r.stdout.trim());
}

/** The name a listing shows a System V segment by: its key as ipcs prints it, or its id where it has none. */
function sysvName(key: number, id: number): string {
  return key === 0 ? `sysv-id:${id}` : `sysv:0x${key.toString(16).padStart(8, '0')}`;
}

/** Every object a listing passed over, by name: the code and message it was told. */
function passedOverBy(list: (options: { onPassedOver: (name: string, error: Error & { code: string }) => void }) => unknown) {
  const passed = new Map<string, { code: string; message: string }>();
  list({ onPassedOver: (name, error) => passed.set(name, { code: error.code, message: error.message }) });
  return passed;
}

describe('inspect against hostile shared memory', function () {
  this.timeout(120_000);

  describe('an MpscRing whose data area is full of 8-byte claims', function () {
    const name = uniqueName('mpsc-claims');
    const capacity = 1 << 20; // 131072 records of 8 bytes: more than the walk's budget, and a table Math.max(...rows) cannot take
    let region: Region;
    let deadPid: number;

    before(function () {
      deadPid = exitedPid();
      region = Region.create({ backing: 'posix', name, size: MpscRing.regionSize({ capacity }) });
      MpscRing.create(region, { capacity }).close();
      // Each record a claim of no payload (LENGTH -8: the header alone), marked by a claimer that exited.
      const data32 = new Int32Array(region.buffer, L.DATA_OFFSET, capacity / 4);
      for (let word = 0; word < data32.length; word += M.MPSC_ALIGNMENT / 4) {
        data32[word + M.MPSC_TYPE_I32] = M.claimMark(deadPid);
        data32[word + M.MPSC_LENGTH_I32] = -M.MPSC_RECORD_HEADER;
      }
      // The whole ring claimed: producer position a capacity ahead of the consumer's.
      Atomics.store(new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH), L.PRODUCER_POSITION_I32, capacity);
    });

    after(function () {
      region?.unlink();
      region?.close();
    });

    it('inspect lists the first claims only, counts those after them and says how much of the ring it did not walk', function () {
      const info = inspect(name)!;
      assert.equal(info.damaged, undefined, info.damaged?.message);
      const mpsc = info.mpsc!;
      assert.equal(mpsc.inFlight.length, MAX_LISTED_CLAIMS);
      assert.deepEqual(mpsc.inFlight[0], { position: 0, pid: deadPid, alive: false, length: 0, recordBytes: 8 });
      assert.deepEqual(mpsc.inFlight.at(-1), {
        position: (MAX_LISTED_CLAIMS - 1) * 8,
        pid: deadPid,
        alive: false,
        length: 0,
        recordBytes: 8,
      });
      // The walk loads MAX_WALK_STEPS headers, one claim each, and leaves the rest of the ring unread.
      assert.equal(mpsc.unlisted, MAX_WALK_STEPS - MAX_LISTED_CLAIMS);
      assert.equal(mpsc.unwalkedBytes, capacity - MAX_WALK_STEPS * M.MPSC_ALIGNMENT);
    });

    it('the CLI prints the table, the listed claims and how many more there are (the listing too)', function () {
      const one = cli('inspect', name);
      assert.equal(one.status, 0, one.stderr);
      const [table, section] = one.stdout.trimEnd().split('\n\n');
      assert.match(table!, new RegExp(`^${name} +MpscRing +${capacity} B`, 'm'));
      const lines = section!.split('\n');
      assert.equal(lines[0], `${name}: ${MAX_WALK_STEPS} producers in flight (claimed, not committed; the consumer waits at the first)`);
      assert.deepEqual(lines[2]!.trim().split(/\s{2,}/), ['0', `${deadPid} (dead)`, '0 B', '8 B']);
      assert.equal(lines.length, 2 + MAX_LISTED_CLAIMS + 2, section);
      assert.equal(lines.at(-2), `  … and ${MAX_WALK_STEPS - MAX_LISTED_CLAIMS} more, not listed`);
      assert.equal(
        lines.at(-1),
        `  (the walk stopped ${capacity - MAX_WALK_STEPS * M.MPSC_ALIGNMENT} B before the producer position: claims there are not counted)`,
      );
      const all = cli('inspect', '--all');
      assert.equal(all.status, 0, all.stderr);
      assert.ok(all.stdout.includes(`${name}: ${MAX_WALK_STEPS} producers in flight`), all.stdout.slice(0, 2000));
    });
  });

  describe('a System V segment larger than Node maps', function () {
    let id: number | undefined;
    let key: number;
    const size = bufferConstants.MAX_LENGTH + 4096;

    before(function () {
      // ipcmk (util-linux) makes it without touching its pages; Region.create refuses a size Node cannot map.
      const made = spawnSync('ipcmk', ['-M', `${size}`, '-p', '0600'], { encoding: 'utf8' });
      const match = /(\d+)\s*$/.exec(made.stdout ?? '');
      if (made.status !== 0 || match === null) {
        console.log(`      (skipped: ipcmk could not make a segment of ${size} bytes: ${made.error?.message ?? made.stderr})`);
        this.skip();
      }
      id = Number(match[1]);
      const segment = sysvSegments().find((s) => s.id === id);
      assert.ok(segment, `segment ${id} is not in /proc/sysvipc/shm`);
      assert.equal(segment.size, size);
      key = segment.key;
    });

    after(function () {
      if (id !== undefined) spawnSync('ipcrm', ['-m', `${id}`]);
    });

    it('listRings and unlinkStale pass it over without attaching it, and say why', function () {
      for (const [what, list] of [
        ['listRings', (options: Parameters<typeof listRings>[1]) => listRings(undefined, options)],
        ['listSysvRings', listSysvRings],
        ['unlinkStale', (options: Parameters<typeof listRings>[1]) => unlinkStale({ dryRun: true, ...options })],
      ] as const) {
        const passed = passedOverBy(list).get(sysvName(key, id!));
        assert.ok(passed, `${what} did not say it passed over ${sysvName(key, id!)}`);
        assert.equal(passed.code, ErrorCodes.INVALID_ARGUMENT, what);
        assert.match(passed.message, new RegExp(`${size} bytes, more than this Node maps .*buffer\\.constants\\.MAX_LENGTH`), what);
      }
      assert.equal(sysvSegments().find((s) => s.id === id)?.attached, 0, 'the listing attached it');
    });

    it('the CLI lists the other rings, says on stderr that it passed it over, and unlink-stale leaves it', function () {
      for (const args of [
        ['inspect', '--all'],
        ['unlink-stale', '--dry-run'],
        ['inspect', '--all', '--json'],
      ]) {
        const r = cli(...args);
        assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
        assert.match(
          r.stderr,
          new RegExp(`^shmring: passed over ${sysvName(key, id!)}: .*MAX_LENGTH.*\\(${ErrorCodes.INVALID_ARGUMENT}\\)$`, 'm'),
        );
        assert.ok(!r.stdout.includes(sysvName(key, id!)), r.stdout);
      }
      assert.ok(
        sysvSegments().some((s) => s.id === id),
        'unlink-stale removed it',
      );
    });

    it('inspect of it by key or id is a typed error naming it, its size and the limit', function () {
      for (const target of [sysvName(key, id!), `sysv-id:${id}`]) {
        assert.throws(
          () => inspect(target),
          (err: ShmringRangeError) => {
            assert.ok(err instanceof ShmringRangeError, String(err));
            assert.equal(err.code, ErrorCodes.INVALID_ARGUMENT);
            // inspect's own refusal, from the segment table, before any attach: the target, the size, the limit, what to do.
            const said = `^inspect: the System V segment ${target} \\(id ${id}\\) is ${size} bytes, .*MAX_LENGTH.*ipcrm -m ${id}`;
            assert.match(err.message, new RegExp(said));
            return true;
          },
        );
        const r = cli('inspect', target);
        assert.equal(r.status, 1, r.stdout);
        assert.match(r.stderr, new RegExp(`${ErrorCodes.INVALID_ARGUMENT}`));
      }
    });
  });

  describe('a System V segment table that cannot be read', function () {
    it('sysvSegments throws its errno, typed, naming the table, instead of answering no segments', function () {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-inspect-hostile-'));
      try {
        assert.throws(
          () => sysvSegments(dir), // a directory: EISDIR
          (err: Error & { code: string; path: string; syscall: string }) => {
            assert.equal(err.code, 'EISDIR');
            assert.equal(err.path, dir);
            assert.equal(err.syscall, 'read');
            assert.match(err.message, new RegExp(`${dir} could not be read: .*\\(EISDIR\\), so which segments exist is unknown`));
            return true;
          },
        );
        assert.deepEqual(sysvSegments(path.join(dir, 'none')), [], 'no table at all (no System V IPC) is no segments');
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('listing System V rings out of file descriptors fails with EMFILE, not "no rings"', function () {
      const script = `
        const { listSysvRings } = await import(${JSON.stringify(import.meta.resolve('../src/inspect.js'))});
        const fs = await import('node:fs');
        const held = [];
        try { for (;;) held.push(fs.openSync('/dev/null', 'r')); } catch (err) { if (err.code !== 'EMFILE') throw err; }
        let result;
        try { result = { rings: listSysvRings().length }; } catch (err) { result = { code: err.code, message: err.message }; }
        for (const fd of held) fs.closeSync(fd);
        console.log(JSON.stringify(result));`;
      const r = spawnSync('sh', ['-c', 'ulimit -n 256 && exec "$0" "$@"', process.execPath, '--input-type=module', '-e', script], {
        encoding: 'utf8',
      });
      assert.equal(r.status, 0, r.stderr);
      const result = JSON.parse(r.stdout) as { code?: string; message?: string; rings?: number };
      assert.equal(result.code, 'EMFILE', r.stdout);
      assert.match(result.message!, /\/proc\/sysvipc\/shm could not be read: .*\(EMFILE\).*ulimit -n/);
    });
  });

  describe('a Broadcast subscriber slot', function () {
    it('caught registering without a file (OWNER negative) shows the claimant, not the previous owner', function () {
      const region = Region.create({ backing: 'sysv', size: Broadcast.regionSize({ capacity: 4096, subscribers: 4 }) });
      try {
        Broadcast.create(region, { capacity: 4096, subscribers: 4 }).close();
        const previous = exitedPid();
        const slot = new Int32Array(region.buffer, B.slotOffset(1), B.SLOT_STRIDE / 4);
        // A previous owner's PID and START left in the slot; the claimant, this process, has stored only OWNER = -id.
        slot[B.SLOT_PID_I32] = previous;
        slot[B.SLOT_START_I32] = 12345;
        Atomics.store(slot, B.SLOT_OWNER_I32, -process.pid);
        const info = describeRing(region, 'x')!;
        assert.deepEqual(info.broadcast!.subscribers, [{ slot: 1, pid: process.pid, alive: true, cursor: 0, lag: 0, registering: true }]);
        const text = cli('inspect', `sysv-id:${region.id}`);
        assert.equal(text.status, 0, text.stderr);
        const rows = text.stdout.trimEnd().split('\n\n')[1]!.split('\n');
        assert.deepEqual(rows[2]!.trim().split(/\s{2,}/), ['1', `${process.pid} (registering)`, '0', '0 B']);

        // A claimant that died registering: dead by its own id.
        Atomics.store(slot, B.SLOT_OWNER_I32, -previous);
        slot[B.SLOT_PID_I32] = process.pid;
        assert.deepEqual(
          describeRing(region, 'x')!.broadcast!.subscribers.map((s) => [s.pid, s.alive, s.registering]),
          [[previous, false, true]],
        );
      } finally {
        region.unlink();
        region.close();
      }
    });

    it('with a file, a negative OWNER is a token (a C peer: pid | 0x80000000), not a claimant: the PID word and the lock decide', function () {
      const name = uniqueName('bcast-token');
      const region = Region.create({ backing: 'posix', name, size: Broadcast.regionSize({ capacity: 4096, subscribers: 4 }) });
      try {
        Broadcast.create(region, { capacity: 4096, subscribers: 4 }).close();
        const previous = exitedPid();
        const slot = new Int32Array(region.buffer, B.slotOffset(0), B.SLOT_STRIDE / 4);
        slot[B.SLOT_PID_I32] = previous;
        Atomics.store(slot, B.SLOT_OWNER_I32, previous | 0x80000000);
        assert.deepEqual(describeRing(region, name)!.broadcast!.subscribers, [{ slot: 0, pid: previous, alive: false, cursor: 0, lag: 0 }]);
      } finally {
        region.unlink();
        region.close();
      }
    });
  });

  describe('an object whose sizing lock a process holds', function () {
    const name = uniqueName('sizing');
    let region: Region;
    let fd: number;

    before(function () {
      region = Region.create({ backing: 'posix', name, size: SpscRing.regionSize({ capacity: 1024 }) });
      SpscRing.create(region, { capacity: 1024 }).close();
      // As a creator stopped in the middle of sizing it: the sizing byte (docs/LAYOUT.md: 2^52, before the name byte) held exclusively.
      fd = fs.openSync(`/dev/shm/${name}`, 'r+');
      const taken = lockFileByte(fd, SIZING_LOCK_BYTE);
      if (taken !== true) {
        console.log('      (skipped: no OFD locks on /dev/shm here)');
        this.skip();
      }
    });

    after(function () {
      if (fd !== undefined) fs.closeSync(fd);
      region?.unlink();
      region?.close();
    });

    it('is passed over at once as busy, and said, instead of stalling the listing', function () {
      const started = performance.now();
      const passed = passedOverBy((options) => listRings(undefined, options));
      const took = performance.now() - started;
      assert.ok(took < 5_000, `the listing took ${Math.round(took)} ms`);
      const busy = passed.get(name);
      assert.ok(busy, `${name} was not said to be passed over`);
      assert.equal(busy.code, ErrorCodes.BUSY);
      assert.match(busy.message, /is being sized .*skipped rather than waited for/);

      const r = cli('inspect', '--all');
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, new RegExp(`^shmring: passed over ${name}: inspect: ${name} is being sized .*\\(${ErrorCodes.BUSY}\\)$`, 'm'));
    });

    it('is listed again once the lock is let go', function () {
      fs.closeSync(fd);
      fd = fs.openSync(`/dev/shm/${name}`, 'r');
      assert.ok(listRings().some((r) => r.name === name));
    });
  });

  describe('names that would steer a terminal', function () {
    it('the CLI escapes C1 controls, DEL, bidi and other format characters and line separators in a name', function () {
      const hidden = ['\u0085', '\u009b', '\u007f', '\u202e', '\u2066', '\u200b', '\u2028', '\u{e0041}'];
      const name = `${uniqueName('steer')}-${hidden.join('')}`;
      const region = Region.create({ backing: 'posix', name, size: SpscRing.regionSize({ capacity: 1024 }) });
      try {
        SpscRing.create(region, { capacity: 1024 }).close();
        const r = cli('inspect', name);
        assert.equal(r.status, 0, r.stderr);
        const shown = `"${name.slice(0, -hidden.join('').length)}\\u0085\\u009b\\u007f\\u202e\\u2066\\u200b\\u2028\\udb40\\udc41"`;
        assert.ok(r.stdout.split('\n')[1]!.startsWith(`${shown} `), r.stdout);
        assert.equal(JSON.parse(shown), name, 'still the JSON of the name');
        for (const c of hidden) assert.ok(!r.stdout.includes(c), `U+${c.codePointAt(0)!.toString(16)} printed as it is`);
      } finally {
        region.unlink();
        region.close();
      }
    });
  });
});
