/**
 * Looking at rings from outside: inspect(), listRings() and the shmring CLI
 * (dist/src/cli.js) on an SpscRing and a MpmcQueue with known contents, in
 * POSIX objects and in a file, with live and dead processes registered; an
 * MpscRing's producers in flight (claimed, not committed).
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { lockFileByte, membarrier, NAME_LOCK_BYTE, Region } from '@shmring/core';
import {
  Broadcast,
  describeRing,
  inspect,
  isStale,
  LatestValue,
  listRings,
  MpmcQueue,
  MpscRing,
  SpscRing,
  type ProcessInfo,
  type RingInfo,
} from '../src/index.js';
import * as L from '../src/layout.js';
import * as M from '../src/mpsc-layout.js';
import * as B from '../src/broadcast-layout.js';
import { listStale, removeStale } from '../src/inspect.js';
import { Peer } from './fixtures/fault-peer.js';
import { LinePeer, UNSHARE, unshareRefused } from './helpers.js';

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const ROLE_PEER = fileURLToPath(new URL('./fixtures/role-peer.js', import.meta.url));
const ATTACH_PEER = fileURLToPath(new URL('./fixtures/attach-peer.js', import.meta.url));

function uniqueName(tag: string): string {
  return `shmring-inspect-${tag}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
}

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return cliWith({}, ...args);
}

/** cli() with `env` added to this process's environment. */
function cliWith(env: NodeJS.ProcessEnv, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The cells of the table row that starts with `name`. */
function row(table: string, name: string): string[] {
  const line = table.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `no row for ${name} in:\n${table}`);
  return line.split(/\s{2,}/);
}

/** How the table shows a process. */
function who(p: ProcessInfo | undefined): string {
  return p === undefined ? '-' : `${p.pid}${p.alive === undefined ? ' (unknown)' : p.alive ? '' : ' (dead)'}`;
}

describe('inspect, listRings and the shmring CLI', function () {
  this.timeout(60_000);

  const spscName = uniqueName('spsc');
  const mpmcName = uniqueName('mpmc');
  const emptyName = uniqueName('empty');
  let dir: string;
  let filePath: string;
  let spscRegion: Region;
  let mpmcRegion: Region;
  let fileRegion: Region;
  let emptyRegion: Region;
  let spsc: SpscRing;
  let mpmc: MpmcQueue;
  let fileQueue: MpmcQueue;
  /** A process that registered as the SpscRing's consumer and exited. */
  let deadConsumerPid: number;

  before(async function () {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-inspect-'));
    filePath = path.join(dir, 'queue');

    spscRegion = Region.create({ backing: 'posix', name: spscName, size: SpscRing.regionSize({ capacity: 1024 }) });
    spsc = SpscRing.create(spscRegion, { capacity: 1024 });
    // Records of 24, 32 and 40 bytes; the first is read back.
    for (const length of [10, 20, 30]) assert.ok(spsc.tryWrite(new Uint8Array(length)));
    // A child registers as the consumer (one tryRead, which finds the first record) and exits.
    const child = new Peer({ role: 'spsc-consume-once', region: { kind: 'posix', name: spscName } });
    await child.next('ready');
    await child.exited;
    deadConsumerPid = child.pid;

    mpmcRegion = Region.create({ backing: 'posix', name: mpmcName, size: MpmcQueue.regionSize({ capacity: 16, slotSize: 100 }) });
    mpmc = MpmcQueue.create(mpmcRegion, { capacity: 16, slotSize: 100 });
    for (let i = 0; i < 5; i++) assert.ok(mpmc.tryWrite(new Uint8Array(i + 1)));
    assert.ok(mpmc.tryRead());
    assert.ok(mpmc.tryRead());

    fileRegion = Region.create({ backing: 'file', path: filePath, size: MpmcQueue.regionSize({ capacity: 4, slotSize: 0 }) });
    fileQueue = MpmcQueue.create(fileRegion, { capacity: 4, slotSize: 0 });
    assert.ok(fileQueue.tryWrite(new Uint8Array(0)));

    emptyRegion = Region.create({ backing: 'posix', name: emptyName, size: 4096 });
  });

  after(function () {
    for (const r of [spscRegion, mpmcRegion, emptyRegion]) r?.unlink();
    fileRegion?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('inspect reports kind, capacity, occupancy, positions and attached pids with liveness for an SpscRing', function () {
    const info = inspect(spscName);
    assert.ok(info);
    assert.deepEqual(info, {
      name: spscName,
      kind: 'SpscRing',
      version: L.LAYOUT_VERSION,
      capacity: 1024,
      used: 32 + 40,
      producerPosition: 24 + 32 + 40,
      consumerPosition: 24,
      creationId: info.creationId,
      closed: false,
      held: true,
      openByName: true, // this process has the region open by name (the fixture)
      creator: { pid: process.pid, alive: true },
      producer: { pid: process.pid, alive: true },
      consumer: { pid: deadConsumerPid, alive: false },
      readersWaiting: 0,
      writersWaiting: 0,
      regionSize: spscRegion.size,
    } satisfies RingInfo);
    assert.equal(isStale(info), false);
  });

  it("inspect reports the creator's CREATION_ID: a random number, not 0, another for a ring laid out again in the same memory", function () {
    const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: 64 }) });
    const ids = new Set<number>();
    for (let i = 0; i < 4; i++) {
      SpscRing.create(region, { capacity: 64 }).detach();
      const id = describeRing(region, 'x')!.creationId;
      assert.ok(Number.isInteger(id) && id > 0 && id < 2 ** 32, `creationId ${id}`);
      ids.add(id);
    }
    assert.equal(ids.size, 4, 'each creation drew its own');
  });

  it('inspect sees a parked reader and a new consumer', async function () {
    const ring = SpscRing.attach(Region.open({ backing: 'posix', name: spscName }));
    // Take what is there, then park.
    while (ring.tryRead() !== null);
    const pending = ring.read({ timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 50));
    let info = inspect(spscName)!;
    assert.equal(info.readersWaiting, 1, 'a parked read() announces itself in READ_WAITERS');
    assert.equal(info.used, 0);
    assert.deepEqual(info.consumer, { pid: process.pid, alive: true });
    assert.ok(spsc.tryWrite(new Uint8Array([9])));
    assert.deepEqual([...(await pending)], [9]);
    info = inspect(spscName)!;
    assert.equal(info.readersWaiting, 0);
    assert.equal(info.producerPosition, info.consumerPosition);
    assert.equal(info.closed, false);
  });

  it('inspect reports kind, capacity, slot size, occupancy, positions and attached pids for a MpmcQueue (POSIX name)', function () {
    const info = inspect(mpmcName);
    assert.ok(info);
    const { producer: _p, consumer: _c, ...rest } = info;
    assert.deepEqual(rest, {
      name: mpmcName,
      kind: 'MpmcQueue',
      version: L.LAYOUT_VERSION,
      capacity: 16,
      slotSize: 100,
      used: 3,
      producerPosition: 5,
      consumerPosition: 2,
      creationId: info.creationId,
      closed: false,
      held: true,
      openByName: true,
      creator: { pid: process.pid, alive: true },
      readersWaiting: 0,
      writersWaiting: 0,
      regionSize: mpmcRegion.size,
    } satisfies Omit<RingInfo, 'producer' | 'consumer'>);
  });

  it('inspect reports the last producer and consumer a MpmcQueue registered, and whether anyone holds each role', async function () {
    // LAYOUT.md, "Liveness": in a MpmcQueue the pid words hold the last producer / consumer to register;
    // a role is alive while anyone holds its (shared) lock.
    const name = uniqueName('mpmc-pids');
    const region = Region.create({ backing: 'posix', name, size: MpmcQueue.regionSize({ capacity: 4, slotSize: 300 }) });
    try {
      const q = MpmcQueue.create(region, { capacity: 4, slotSize: 300 });
      assert.ok(q.tryWrite(new Uint8Array(3)));
      assert.ok(q.tryRead());
      let info = inspect(name)!;
      assert.deepEqual(
        [info.producer, info.consumer],
        [
          { pid: process.pid, alive: true },
          { pid: process.pid, alive: true },
        ],
        'this process wrote and read the queue but is not recorded as its producer and consumer',
      );
      // A child writes one message and exits: the last producer is a dead process, but q still produces.
      const child = new Peer({
        role: 'mpmc-producer',
        region: { kind: 'posix', name },
        plan: { seed: 1, producers: 1, perProducer: 1, maxLength: 300 },
        id: 0,
        count: 1,
        timeoutMs: 10_000,
      });
      await child.next('done');
      await child.exited;
      info = inspect(name)!;
      assert.deepEqual(
        [info.producer, info.consumer],
        [
          { pid: child.pid, alive: true },
          { pid: process.pid, alive: true },
        ],
      );
      assert.equal(info.used, 1);
      // Once q lets go, nobody holds either role, nor the queue: the last holder left (it did not die), and
      // withdrew the words, whoever they named.
      q.detach();
      info = inspect(name)!;
      assert.deepEqual([info.producer, info.consumer, info.held], [undefined, undefined, false]);
      // Not stale while this process has the region open by name; stale once it closes it.
      assert.equal(isStale(info), false);
      region.close();
      assert.equal(isStale(inspect(name)!), true);
    } finally {
      region.close();
      fs.rmSync(`/dev/shm/${name}`, { force: true });
    }
  });

  it('inspect reports the closed flag', function () {
    const name = uniqueName('closed');
    const region = Region.create({ backing: 'posix', name, size: SpscRing.regionSize({ capacity: 64 }) });
    try {
      const ring = SpscRing.create(region, { capacity: 64 });
      assert.equal(inspect(name)!.closed, false);
      ring.close();
      assert.equal(inspect(name)!.closed, true);
      assert.equal(row(cli('inspect', name).stdout, name).at(-1), 'closed');
    } finally {
      region.unlink();
    }
  });

  it('inspect reports a MpmcQueue in a file, by path', function () {
    const info = inspect(filePath);
    assert.ok(info);
    assert.equal(info.name, filePath);
    assert.equal(info.kind, 'MpmcQueue');
    assert.equal(info.capacity, 4);
    assert.equal(info.slotSize, 0);
    assert.equal(info.used, 1);
    assert.equal(info.producerPosition, 1);
    assert.equal(info.consumerPosition, 0);
    assert.deepEqual(info.creator, { pid: process.pid, alive: true });
  });

  it('inspect and the CLI describe a memfd ring by its /proc/<pid>/fd/<n> link (no name to guard)', function () {
    using region = Region.create({ backing: 'memfd', size: SpscRing.regionSize({ capacity: 4096 }) });
    const ring = SpscRing.create(region, { capacity: 4096 });
    assert.ok(ring.tryWrite(new Uint8Array(10)));
    const link = `/proc/${process.pid}/fd/${region.fd}`;
    const info = inspect(link);
    assert.equal(info?.kind, 'SpscRing');
    assert.equal(info?.used, 24);
    const r = cli('inspect', link);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /SpscRing/);
    ring.close();
  });

  it('inspect and the CLI call a truncated ring or an impossible header damaged, with what an attach would fail with', function () {
    const own = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-damaged-')); // not `dir`: listRings(dir) lists it
    const truncated = path.join(own, 'truncated');
    const corrupt = path.join(own, 'corrupt');
    const a = Region.create({ backing: 'file', path: truncated, size: SpscRing.regionSize({ capacity: 4096 }) });
    SpscRing.create(a, { capacity: 4096 });
    a.close();
    fs.truncateSync(truncated, 700);
    const b = Region.create({ backing: 'file', path: corrupt, size: Broadcast.regionSize({ capacity: 4096 }) });
    Broadcast.create(b, { capacity: 4096 });
    new Int32Array(b.buffer)[L.CAPACITY_I32] = 0x66666666; // no correct peer writes this capacity
    b.close();
    const t = inspect(truncated);
    assert.equal(t?.damaged?.code, 'ERR_SHMRING_REGION_TOO_SMALL', JSON.stringify(t));
    assert.match(t.damaged.message, /needs \d+ bytes .* the region has 700/);
    const c = inspect(corrupt);
    assert.equal(c?.damaged?.code, 'ERR_SHMRING_CORRUPT', JSON.stringify(c));
    assert.equal(c.broadcast, undefined, "a damaged Broadcast's slots are not read");
    const text = cli('inspect', truncated);
    assert.equal(text.status, 0, text.stderr);
    assert.equal(row(text.stdout, truncated).at(-1), 'damaged');
    assert.ok(text.stdout.includes(`${truncated}: damaged, an attach would fail with ERR_SHMRING_REGION_TOO_SMALL`), text.stdout);
    assert.equal(inspect(filePath)?.damaged, undefined, 'a sound ring is not damaged');
    // Cut inside its header, an unknown KIND, a Broadcast MODE no create writes: damaged too.
    const short = path.join(own, 'short');
    fs.copyFileSync(corrupt, short);
    fs.truncateSync(short, 100);
    assert.equal(inspect(short)?.damaged?.code, 'ERR_SHMRING_REGION_TOO_SMALL');
    // A MpmcQueue and a LatestValue cut inside their header: no slot size, no version to show.
    for (const [kind, made] of [
      ['MpmcQueue', (r: Region) => MpmcQueue.create(r, { capacity: 4, slotSize: 64 })],
      ['LatestValue', (r: Region) => LatestValue.create(r, { maxSize: 64 })],
    ] as const) {
      const cut = path.join(own, `cut-${kind}`);
      const r = Region.create({ backing: 'file', path: cut, size: 1 << 16 });
      made(r);
      r.close();
      fs.truncateSync(cut, 100);
      const shown = cli('inspect', cut);
      assert.equal(row(shown.stdout, cut).at(-1), 'damaged', shown.stdout);
      assert.doesNotMatch(shown.stdout, /undefined/, `${kind}: ${shown.stdout}`);
    }
    for (const [word, value, code] of [
      [L.KIND_I32, 9, 'ERR_SHMRING_CORRUPT'],
      [B.MODE_I32, 7, 'ERR_SHMRING_CORRUPT'],
    ] as const) {
      const bad = path.join(own, `bad-${word}`);
      const r = Region.create({ backing: 'file', path: bad, size: Broadcast.regionSize({ capacity: 4096 }) });
      Broadcast.create(r, { capacity: 4096 });
      new Int32Array(r.buffer)[word] = value;
      r.close();
      assert.equal(inspect(bad)?.damaged?.code, code, `word ${word} = ${value}`);
    }
    fs.rmSync(own, { recursive: true, force: true });
  });

  it('inspect calls a SpscRing or MpscRing whose positions attach refuses damaged, as attach does', function () {
    const own = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-positions-'));
    try {
      for (const [kind, ring] of [
        ['SpscRing', SpscRing],
        ['MpscRing', MpscRing],
      ] as const) {
        const at = path.join(own, kind);
        const r = Region.create({ backing: 'file', path: at, size: ring.regionSize({ capacity: 4096 }) });
        ring.create(r, { capacity: 4096 }).close();
        new Int32Array(r.buffer)[L.PRODUCER_POSITION_I32] = 12345; // not a multiple of 8, and more than a lap ahead
        r.close();
        const attached = Region.open({ backing: 'file', path: at });
        assert.throws(() => ring.attach(attached), { code: 'ERR_SHMRING_CORRUPT' });
        attached.close();
        const info = inspect(at);
        assert.equal(info?.damaged?.code, 'ERR_SHMRING_CORRUPT', `${kind}: ${JSON.stringify(info)}`);
        assert.match(info.damaged.message, /positions producer=12345 consumer=0 are inconsistent/);
        const text = cli('inspect', at);
        assert.equal(row(text.stdout, at).at(-1), 'damaged', text.stdout);
      }
    } finally {
      fs.rmSync(own, { recursive: true, force: true });
    }
  });

  it('inspect returns undefined for a region that holds no ring and throws ENOENT for no region', function () {
    assert.equal(inspect(emptyName), undefined);
    assert.throws(() => inspect(uniqueName('none')), { code: 'ENOENT' });
  });

  // An outside tester: inspect(undefined) threw "Cannot read properties of undefined", with no code.
  it('inspect refuses a target that is not a non-empty string with a coded TypeError', function () {
    for (const target of [undefined, null, 42, {}, '']) {
      assert.throws(
        () => inspect(target as string),
        { name: 'TypeError', code: 'ERR_SHMRING_INVALID_ARGUMENT', message: /^inspect: target=.* must be a POSIX name/ },
        String(target),
      );
    }
  });

  it('listRings() includes the POSIX rings (and no non-ring); listRings(dir) the file one', function () {
    const rings = listRings();
    const names = rings.map((r) => r.name);
    assert.ok(names.includes(spscName) && names.includes(mpmcName), `listRings() gave ${JSON.stringify(names)}`);
    assert.ok(!names.includes(emptyName), 'a region without a ring was listed');
    assert.deepEqual(
      rings.find((r) => r.name === spscName),
      inspect(spscName),
    );
    assert.deepEqual(
      listRings(dir).map((r) => [r.name, r.kind]),
      [[filePath, 'MpmcQueue']],
    );
  });

  it('the CLI prints a table for one ring and for --all', function () {
    const one = cli('inspect', spscName);
    assert.equal(one.status, 0, one.stderr);
    const lines = one.stdout.trimEnd().split('\n');
    assert.deepEqual(lines[0]!.split(/\s+/), ['name', 'kind', 'capacity', 'used', 'producer', 'consumer', 'creator', 'state']);
    const info = inspect(spscName)!;
    assert.deepEqual(row(one.stdout, spscName), [
      spscName,
      'SpscRing',
      '1024 B',
      `${info.used} B`,
      who(info.producer),
      who(info.consumer),
      who(info.creator),
      'open',
    ]);

    const queue = cli('inspect', mpmcName);
    assert.equal(queue.status, 0, queue.stderr);
    assert.deepEqual(row(queue.stdout, mpmcName).slice(1, 4), ['MpmcQueue', '16x100 B', '3 msgs']);

    const all = cli('inspect', '--all');
    assert.equal(all.status, 0, all.stderr);
    row(all.stdout, spscName);
    row(all.stdout, mpmcName);
  });

  it('the CLI marks dead processes and stale rings in its table', async function () {
    const name = uniqueName('stale');
    const child = new Peer({ role: 'create-ring', backing: 'posix', name, unlinkOnExit: false, then: 'block' });
    try {
      await child.next('ready');
      assert.equal(row(cli('inspect', name).stdout, name).at(-1), 'open');
      await child.kill();
      const cells = row(cli('inspect', name).stdout, name);
      assert.deepEqual(cells.slice(4), [`${child.pid} (dead)`, `${child.pid} (dead)`, `${child.pid} (dead)`, 'stale']);
    } finally {
      child.child.kill('SIGKILL');
      fs.rmSync(`/dev/shm/${name}`, { force: true });
    }
  });

  it('the CLI quotes a name with a newline or a space (one row, one line), in its table and in unlink-stale --dry-run', async function () {
    const name = `${uniqueName('odd')}\n${uniqueName('fake')} x`;
    const child = new Peer({ role: 'create-ring', backing: 'posix', name, unlinkOnExit: false, then: 'block' });
    try {
      await child.next('ready');
      const table = cli('inspect', name).stdout.trimEnd().split('\n');
      assert.equal(table.length, 2, table.join('\n'));
      assert.ok(table[1]!.startsWith(`${JSON.stringify(name)} `), table[1]);
      await child.kill();
      const stale = cli('unlink-stale', '--dry-run').stdout.split('\n');
      assert.ok(stale.includes(JSON.stringify(name)), stale.join('\n'));
      assert.ok(!stale.some((line) => line.startsWith(uniqueName('fake').slice(0, 20))), 'no line is half a name');
    } finally {
      child.child.kill('SIGKILL');
      fs.rmSync(`/dev/shm/${name}`, { force: true });
    }
  });

  it('the CLI says why a ring whose pids are all dead is open: another process has it open by name', async function () {
    const name = uniqueName('byname');
    const child = new Peer({ role: 'create-ring', backing: 'posix', name, unlinkOnExit: false, then: 'block' });
    let holder: Region | undefined;
    try {
      await child.next('ready');
      await child.kill();
      holder = Region.open({ backing: 'posix', name }); // open by name, not attached
      assert.equal(row(cli('inspect', name).stdout, name).at(-1), 'open (open by name: a Region.open, not attached)');
    } finally {
      holder?.close();
      child.child.kill('SIGKILL');
      fs.rmSync(`/dev/shm/${name}`, { force: true });
    }
  });

  it('the CLI shows the creator of a live ring created in another PID namespace (unshare) as unknown, not dead, and the ring open', async function () {
    const why = unshareRefused();
    if (why !== undefined) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    const name = uniqueName('ns-creator');
    const creator = new LinePeer(ROLE_PEER, [name, 'creator'], UNSHARE);
    try {
      await creator.line('ready');
      const info = inspect(name)!;
      assert.equal(info.creator.pid, 1, 'the creator wrote its pid in its own namespace');
      assert.equal(info.creator.alive, undefined, `creator ${JSON.stringify(info.creator)}: held, but its pid says nothing here`);
      assert.deepEqual(row(cli('inspect', name).stdout, name).slice(4), ['1', '-', '1 (unknown)', 'open']);
      await creator.kill();
      assert.deepEqual(
        row(cli('inspect', name).stdout, name).slice(4),
        ['1 (dead)', '-', '1 (dead)', 'stale'],
        'once nobody holds the ring, its creator is gone',
      );
    } finally {
      await creator.kill();
      fs.rmSync(`/dev/shm/${name}`, { force: true });
    }
  });

  it('the CLI prints valid --json: one ring as inspect() gives it, --all as an array', function () {
    for (const target of [spscName, mpmcName, filePath]) {
      const r = cli('inspect', target, '--json');
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), JSON.parse(JSON.stringify(inspect(target))), target);
    }
    // --json may come first, too.
    const first = cli('--json', 'inspect', mpmcName);
    assert.equal(first.status, 0, first.stderr);
    assert.equal((JSON.parse(first.stdout) as RingInfo).kind, 'MpmcQueue');

    const all = cli('inspect', '--all', '--json');
    assert.equal(all.status, 0, all.stderr);
    const rings = JSON.parse(all.stdout) as RingInfo[];
    assert.ok(Array.isArray(rings));
    assert.ok(rings.some((r) => r.name === spscName) && rings.some((r) => r.name === mpmcName));

    const stale = cli('unlink-stale', '--dry-run', '--json');
    assert.equal(stale.status, 0, stale.stderr);
    const names = JSON.parse(stale.stdout) as string[];
    assert.ok(Array.isArray(names) && names.every((n) => typeof n === 'string'));
    assert.ok(!names.includes(spscName) && !names.includes(mpmcName), 'a live ring was called stale');
  });

  // An outside tester: with no backend that loads, --all said "no rings" and unlink-stale "no stale rings",
  // both exiting 0, over a /dev/shm that held rings: each object's ERR_SHMRING_NO_BACKEND was passed over.
  it('listing with no backend to map with fails with ERR_SHMRING_NO_BACKEND instead of reporting no rings', function () {
    const name = uniqueName('nobackend');
    const region = Region.create({ backing: 'posix', name, size: SpscRing.regionSize({ capacity: 1024 }) });
    try {
      SpscRing.create(region, { capacity: 1024 }).close(); // a stale ring in /dev/shm: there is something to list
      for (const args of [['inspect', '--all'], ['unlink-stale', '--dry-run'], ['unlink-stale']]) {
        const r = cliWith({ SHMRING_BACKEND: 'no-such-backend' }, ...args);
        assert.equal(r.status, 1, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
        assert.match(r.stderr, /ERR_SHMRING_NO_BACKEND/, args.join(' '));
        assert.doesNotMatch(r.stdout, /no (stale )?rings/, args.join(' '));
      }
      assert.ok(fs.existsSync(`/dev/shm/${name}`), 'nothing was removed');
    } finally {
      region.unlink();
      region.close();
    }
  });

  it('the CLI exits 1 for a name holding no ring (or nothing at all)', function () {
    const empty = cli('inspect', emptyName);
    assert.equal(empty.status, 1);
    assert.match(empty.stderr, /holds no ring .*\(ERR_SHMRING_NOT_A_RING\)\n$/);
    assert.equal(empty.stdout, '');
    const emptyJson = cli('inspect', emptyName, '--json');
    assert.equal(emptyJson.status, 1);
    assert.equal(emptyJson.stdout, '');
    const missing = cli('inspect', uniqueName('none'));
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /ENOENT/);
  });

  it('the CLI says there are no rings, rather than print an empty table, when --all finds none', function () {
    // A private /dev/shm and System V namespace, so that the rings of other tests and programs are not seen.
    const script = `mount -t tmpfs tmpfs /dev/shm && exec "$0" "$@"`;
    const r = spawnSync('unshare', ['--mount', '--ipc', 'sh', '-c', script, process.execPath, CLI, 'inspect', '--all'], {
      encoding: 'utf8',
    });
    if (r.error || (r.status !== 0 && /unshare|mount/.test(r.stderr))) this.skip(); // no namespaces here (not root)
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'no rings (in /dev/shm or in System V segments)\n');
    const json = spawnSync('unshare', ['--mount', '--ipc', 'sh', '-c', script, process.execPath, CLI, 'inspect', '--all', '--json'], {
      encoding: 'utf8',
    });
    assert.deepEqual(JSON.parse(json.stdout), []);
  });

  it('the CLI says an error code once: appended only to a message that does not name it already', function () {
    const missing = cli('inspect', uniqueName('none'));
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /^shmring: .*no such file or directory \(ENOENT\); nothing has that name/);
    assert.equal(missing.stderr.match(/ENOENT/g)?.length, 1, missing.stderr);
    // A typed error whose message does not name its code gets it appended.
    const directory = cli('inspect', dir);
    assert.equal(directory.status, 1, directory.stderr);
    assert.match(directory.stderr, /is a directory, not shared memory: .* \(ERR_SHMRING_INVALID_ARGUMENT\)\n$/);
    assert.equal(directory.stderr.match(/ERR_SHMRING_INVALID_ARGUMENT/g)?.length, 1, directory.stderr);
  });

  it('the CLI exits 2 for bad usage', function () {
    for (const args of [[], ['inspect'], ['inspect', '--json'], ['frobnicate'], ['--json']]) {
      const r = cli(...args);
      assert.equal(r.status, 2, `shmring ${args.join(' ')} exited ${r.status}`);
      assert.match(r.stderr, /usage: shmring/);
      assert.equal(r.stdout, '');
    }
  });

  it('the CLI prints its usage on stdout and exits 0 for --help', function () {
    for (const args of [['--help'], ['-h'], ['help'], ['inspect', '--help']]) {
      const r = cli(...args);
      assert.equal(r.status, 0, `shmring ${args.join(' ')} exited ${r.status}`);
      assert.match(r.stdout, /usage: shmring inspect/);
      assert.equal(r.stderr, '');
    }
  });

  it('the CLI does not change the ring it inspects', function () {
    const before = Buffer.from(new Uint8Array(spscRegion.buffer)).toString('base64');
    assert.equal(cli('inspect', spscName, '--json').status, 0);
    assert.equal(cli('inspect', '--all').status, 0);
    assert.equal(Buffer.from(new Uint8Array(spscRegion.buffer)).toString('base64'), before);
  });

  it("inspect and the CLI list an MpscRing's producers in flight: each claimed, uncommitted record with its claimer's pid, liveness and length", function () {
    const name = uniqueName('mpsc');
    const capacity = 1024;
    const region = Region.create({ backing: 'posix', name, size: MpscRing.regionSize({ capacity }) });
    try {
      MpscRing.create(region, { capacity });
      const [a, b, c] = [MpscRing.attach(region), MpscRing.attach(region), MpscRing.attach(region)];
      const claimA = a.claim(10); // position 0: claimed by this process, not committed (a record of 8 + 10 -> 24 bytes)
      assert.ok(b.tryWrite(new Uint8Array(5))); // position 24: committed (16 bytes)
      c.claim(20); // position 40: claimed, not committed (32 bytes)
      // A claimer that died: its pid (TYPE, while claimed) names a process that has exited.
      const data32 = new Int32Array(region.buffer, L.DATA_OFFSET, capacity / 4);
      data32[(40 + L.RECORD_TYPE_OFFSET) / 4] = M.claimMark(deadConsumerPid);
      // A claimer that died between its claim (the tail's CAS) and its header store: 16 bytes claimed, LENGTH still 0.
      Atomics.add(new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH), L.PRODUCER_POSITION_I32, 16);

      const info = inspect(name)!;
      assert.equal(info.kind, 'MpscRing');
      assert.equal(info.producerPosition, 88);
      assert.deepEqual(info.mpsc, {
        inFlight: [
          { position: 0, pid: process.pid, alive: true, length: 10, recordBytes: 24 },
          { position: 40, pid: deadConsumerPid, alive: false, length: 20, recordBytes: 32 },
          { position: 72, pid: 0, alive: true, length: null, recordBytes: 16 },
        ],
        pidNamespacesMixed: false,
        // Set by the first claim to be committed plainly where membarrier works (x86-64): a's.
        lightCommits: process.arch === 'x64' && membarrier.register(),
      });
      const json = cli('inspect', name, '--json');
      assert.equal(json.status, 0, json.stderr);
      assert.deepEqual((JSON.parse(json.stdout) as RingInfo).mpsc, info.mpsc);

      const text = cli('inspect', name);
      assert.equal(text.status, 0, text.stderr);
      const [table, section] = text.stdout.trimEnd().split('\n\n');
      assert.ok(section, `no producers in flight under the table:\n${text.stdout}`);
      assert.deepEqual(row(table!, name).slice(1, 4), ['MpscRing', '1024 B', '88 B']);
      assert.deepEqual(
        section!.split('\n').map((line) => line.trim().split(/\s{2,}/)),
        [
          [`${name}: 3 producers in flight (claimed, not committed; the consumer waits at the first)`],
          ['position', 'pid', 'length', 'record'],
          ['0', `${process.pid}`, '10 B', '24 B'],
          ['40', `${deadConsumerPid} (dead)`, '20 B', '32 B'],
          ['72', '-', '? (header not written)', '16 B'],
        ],
      );

      // A side that attached from another PID namespace set FLAG_PID_NS_MIXED: the pids are not to be trusted here.
      Atomics.or(new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH), L.FLAGS_I32, M.FLAG_PID_NS_MIXED);
      assert.equal(inspect(name)!.mpsc!.pidNamespacesMixed, true);
      assert.match(
        cli('inspect', name).stdout,
        /in flight \(claimed, not committed; the consumer waits at the first; sides in several PID namespaces \(or one unknown\): the pids may name other processes here\)/,
      );

      // A ring made in another PID namespace than this inspect's: its marks name no thread here (unknown, not dead).
      const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
      const ringNamespace = ctl[M.MPSC_PID_NS_I32]!;
      ctl[M.MPSC_PID_NS_I32] = ringNamespace ^ 1;
      assert.deepEqual(
        inspect(name)!.mpsc!.inFlight.map((claim) => [claim.pid, claim.alive]),
        [
          [process.pid, undefined],
          [deadConsumerPid, undefined],
          [0, true],
        ],
      );
      assert.match(cli('inspect', name).stdout, new RegExp(`${deadConsumerPid} \\(unknown\\)`));
      ctl[M.MPSC_PID_NS_I32] = ringNamespace;

      // Committed, a claim leaves the list; a ring with none in flight prints no section.
      a.commit(claimA);
      assert.deepEqual(
        inspect(name)!.mpsc!.inFlight.map((claim) => claim.position),
        [40, 72],
      );
      const spscText = cli('inspect', spscName);
      assert.equal(spscText.stdout.trimEnd().split('\n\n').length, 1, spscText.stdout);
    } finally {
      region.unlink();
    }
  });

  it("the CLI lists a Broadcast's subscriber slots under its table: each slot's pid, liveness, cursor and lag", function () {
    const name = uniqueName('bcast');
    const region = Region.create({ backing: 'posix', name, size: Broadcast.regionSize({ capacity: 4096, subscribers: 4 }) });
    try {
      const pub = Broadcast.create(region, { capacity: 4096, lossless: true, subscribers: 4 });
      const none = cli('inspect', name);
      assert.equal(none.status, 0, none.stderr);
      assert.equal(row(none.stdout, name)[5], '0 subscribers');
      assert.equal(none.stdout.trimEnd().split('\n\n')[1], `${name}: 0 subscribers in 4 slots (lossless)`);

      const reader = Broadcast.subscribe(region);
      // A subscriber in a process that exited without closing it: its slot stays taken, its lock is gone.
      const child = spawnSync(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `const { Region } = await import(${JSON.stringify(import.meta.resolve('@shmring/core'))});
           const { Broadcast } = await import(${JSON.stringify(import.meta.resolve('../src/index.js'))});
           Broadcast.subscribe(Region.open({ backing: 'posix', name: ${JSON.stringify(name)} }));
           console.log(process.pid);
           process.exit(0);`,
        ],
        { encoding: 'utf8' },
      );
      assert.equal(child.status, 0, child.stderr);
      const deadPid = Number(child.stdout.trim());
      assert.ok(pub.tryWrite(new Uint8Array(10))); // a record of 24 bytes
      assert.ok(pub.tryWrite(new Uint8Array(20))); // and one of 32
      assert.ok(reader.tryRead()); // this process's subscriber is past the first

      const text = cli('inspect', name);
      assert.equal(text.status, 0, text.stderr);
      const [table, section] = text.stdout.trimEnd().split('\n\n');
      assert.deepEqual(row(table!, name).slice(1, 6), ['Broadcast', '4096 B', '56 B', `${process.pid}`, '2 subscribers']);
      assert.ok(section, `no subscribers under the table:\n${text.stdout}`);
      assert.deepEqual(
        section.split('\n').map((line) => line.trim().split(/\s{2,}/)),
        [
          [`${name}: 2 subscribers in 4 slots (lossless)`],
          ['slot', 'pid', 'cursor', 'lag'],
          ['0', `${process.pid}`, '24', '32 B'],
          ['1', `${deadPid} (dead)`, '0', '56 B'],
        ],
      );
      // The same as --json says.
      const json = JSON.parse(cli('inspect', name, '--json').stdout) as RingInfo;
      assert.deepEqual(
        json.broadcast!.subscribers.map((sub) => [sub.slot, sub.pid, sub.alive, sub.cursor, sub.lag]),
        [
          [0, process.pid, true, 24, 32],
          [1, deadPid, false, 0, 56],
        ],
      );
      reader.close();
      pub.close();
    } finally {
      region.unlink();
    }
  });

  it('a Broadcast subscriber past the TAIL inspect read first (it keeps up) shows lag 0, not a lap of 2^32 bytes', function () {
    const name = uniqueName('bcast-ahead');
    const region = Region.create({
      backing: 'posix',
      name,
      size: Broadcast.regionSize({ capacity: 1024, subscribers: 2 }),
    });
    try {
      const pub = Broadcast.create(region, { capacity: 1024, subscribers: 2, lossless: true });
      const reader = Broadcast.subscribe(region);
      for (let i = 0; i < 4; i++) assert.ok(pub.tryWrite(new Uint8Array(24)));
      // What a racing inspect sees: TAIL loaded first (128), the cursor after the subscriber read on past it.
      const words = new Int32Array(region.buffer, 0, B.broadcastDataOffset(2) / 4);
      Atomics.store(words, B.slotOffset(0) / 4 + B.SLOT_CURSOR_I32, 128 + 32);
      const info = inspect(name)!;
      assert.deepEqual(
        info.broadcast!.subscribers.map((sub) => [sub.cursor, sub.lag]),
        [[160, 0]],
      );
      assert.equal(info.used, 0);
      assert.doesNotMatch(cli('inspect', name).stdout, /lapped/);
      reader.close();
      pub.close();
    } finally {
      region.unlink();
    }
  });

  it('the CLI marks a lossy Broadcast subscriber the publisher lapped (its lag is more than the ring)', function () {
    const name = uniqueName('bcast-lapped');
    const region = Region.create({ backing: 'posix', name, size: Broadcast.regionSize({ capacity: 1024, subscribers: 2 }) });
    try {
      const pub = Broadcast.create(region, { capacity: 1024, subscribers: 2 });
      const reader = Broadcast.subscribe(region);
      for (let i = 0; i < 100; i++) assert.ok(pub.tryWrite(new Uint8Array(24))); // 100 records of 32 bytes: 3 laps
      const text = cli('inspect', name);
      assert.equal(text.status, 0, text.stderr);
      const section = text.stdout.trimEnd().split('\n\n')[1]!;
      assert.deepEqual(
        section
          .split('\n')[2]!
          .trim()
          .split(/\s{2,}/),
        ['0', `${process.pid}`, '0', '3200 B (lapped)'],
      );
      reader.close();
      pub.close();
    } finally {
      region.unlink();
    }
  });

  it('the CLI says a Broadcast record its dead publisher left half-written, until the next publisher repairs it', function () {
    const name = uniqueName('bcast-half');
    const region = Region.create({ backing: 'posix', name, size: Broadcast.regionSize({ capacity: 1024, subscribers: 2 }) });
    try {
      const pub = Broadcast.create(region, { capacity: 1024, subscribers: 2 });
      const reader = Broadcast.subscribe(region);
      assert.ok(pub.tryWrite(new Uint8Array(24))); // a record of 32 bytes: TAIL 32
      const live = new Int32Array(region.buffer, 0, B.broadcastDataOffset(2) / 4);
      // A live publisher between its INTENT and TAIL stores is writing a record, not leaving one half-written.
      Atomics.store(live, B.INTENT.lo, 64);
      assert.equal(inspect(name)!.broadcast!.halfWritten, undefined, 'a live publisher may be in the middle of a record');
      Atomics.store(live, B.INTENT.lo, 32);
      pub.detach(); // as a publisher killed mid-record leaves it: its role let go, INTENT past TAIL
      assert.equal(inspect(name)!.broadcast!.halfWritten, undefined, 'quiescent: INTENT is TAIL');
      Atomics.store(live, B.INTENT.lo, 64);

      const text = cli('inspect', name);
      assert.equal(text.status, 0, text.stderr);
      const section = text.stdout.trimEnd().split('\n\n')[1]!.split('\n');
      assert.equal(
        section[1],
        `${name}: a record its dead publisher left half-written (INTENT 64, TAIL 32): subscribers read up to TAIL, a lapped one nothing until then; the next Broadcast.create repairs it`,
      );
      assert.deepEqual((JSON.parse(cli('inspect', name, '--json').stdout) as RingInfo).broadcast!.halfWritten, { intent: 64 });

      const next = Broadcast.create(region, { capacity: 1024, subscribers: 2 }); // the repair: a jump, quiescent again
      assert.equal(inspect(name)!.broadcast!.halfWritten, undefined, 'repaired');
      assert.ok(next.tryWrite(new Uint8Array(8)));
      assert.equal(reader.tryRead()?.length, 8, 'the subscriber reads on past the jump');
      assert.deepEqual([reader.received, reader.lost], [1, 1], 'the record published before the death, unread, counted lost (lossy)');
      next.close();
      reader.close();
    } finally {
      region.unlink();
    }
  });

  it('an attach that opened a name just before unlink-stale removed it ends on the ring that has the name now', async function () {
    const name = uniqueName('overtaken');
    const file = `/dev/shm/${name}`;
    const size = SpscRing.regionSize({ capacity: 64 });
    const objectOf = (fd: number): string => {
      const { dev, ino } = fs.fstatSync(fd, { bigint: true });
      return `${dev}:${ino}`;
    };
    const stale = Region.create({ backing: 'posix', name, size });
    SpscRing.create(stale, { capacity: 64 }).close();
    const staleObject = objectOf(stale.fd);
    stale.close();
    // What unlinkStale holds across its last check and the unlink: the name and HOLDER locks, exclusively.
    const fd = fs.openSync(file, fs.constants.O_RDWR);
    let peer: LinePeer | undefined;
    let fresh: { region: Region; ring: SpscRing } | undefined;
    try {
      assert.equal(lockFileByte(fd, NAME_LOCK_BYTE), true, 'a stale ring had its name lock held');
      assert.equal(lockFileByte(fd, L.HOLDER_LOCK_OFFSET), true, 'a stale ring was held');
      peer = new LinePeer(ATTACH_PEER, [name]);
      await peer.line('opening');
      // Its shm_open comes right after: it has an fd of the stale object, and waits for the locks.
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.ok(!peer.lines.some((l) => l.startsWith('attached')), `attached while unlink-stale held the locks: ${peer.lines}`);
      fs.unlinkSync(file);
      const region = Region.create({ backing: 'posix', name, size });
      fresh = { region, ring: SpscRing.create(region, { capacity: 64 }) };
      fs.closeSync(fd); // unlink-stale is done: the waiting attach goes on
      const line = await peer.line('attached ').catch(() => peer!.lines.join(' '));
      assert.notEqual(line, `attached ${staleObject}`, 'the attach ended on the unlinked object, which its peers can no longer open');
      assert.equal(line, `attached ${objectOf(region.fd)}`);
    } finally {
      await peer?.kill();
      try {
        fs.closeSync(fd);
      } catch {
        // closed above
      }
      fresh?.ring.close();
      fresh?.region.close();
      fs.rmSync(file, { force: true });
    }
  });

  it('unlink-stale run by another user leaves the stale rings it may not remove, says so on stderr, exits 1, and removes its own', function () {
    if (process.getuid?.() !== 0) this.skip(); // it runs the CLI as another user (nobody)
    const NOBODY = 65534;
    const size = SpscRing.regionSize({ capacity: 64 });
    const theirs = uniqueName('root-owned');
    const mine = uniqueName('nobody-owned');
    try {
      for (const name of [theirs, mine]) {
        const region = Region.create({ backing: 'posix', name, size, mode: 0o644 });
        SpscRing.create(region, { capacity: 64 }).close();
        region.close(); // stale: nobody holds it, nobody has it open
      }
      fs.chownSync(`/dev/shm/${mine}`, NOBODY, NOBODY);
      const r = spawnSync(process.execPath, [CLI, 'unlink-stale', '--json'], {
        encoding: 'utf8',
        timeout: 20_000,
        uid: NOBODY,
        gid: NOBODY,
      });
      assert.equal(r.status, 1, `stdout ${r.stdout}\nstderr ${r.stderr}`);
      const removed = JSON.parse(r.stdout) as string[];
      assert.ok(removed.includes(mine), `its own stale ring was not removed: ${r.stdout}`);
      assert.ok(!removed.includes(theirs), 'a ring it may not remove was reported removed');
      assert.ok(fs.existsSync(`/dev/shm/${theirs}`));
      assert.ok(!fs.existsSync(`/dev/shm/${mine}`));
      assert.match(r.stderr, new RegExp(`${theirs} could not be removed \\(EPERM`));
      assert.ok(!r.stderr.includes('    at '), `a stack trace on stderr: ${r.stderr}`);
    } finally {
      for (const name of [theirs, mine]) fs.rmSync(`/dev/shm/${name}`, { force: true });
    }
  });

  it('a ring nobody is attached to is not stale while a process has its region open by name (it may attach any moment)', function () {
    const name = uniqueName('opened');
    const size = SpscRing.regionSize({ capacity: 64 });
    const region = Region.create({ backing: 'posix', name, size });
    try {
      SpscRing.create(region, { capacity: 64 }).close(); // nobody holds the ring; the region stays open
      const listed = (): ReturnType<typeof listStale>[number] | undefined => listStale('/dev/shm').find((f) => f.info.name === name);
      // The listing (what --dry-run prints) and the removal agree: neither takes it.
      assert.equal(listed(), undefined, `${name} was listed as stale while its region is open by name`);
      const info = listRings('/dev/shm').find((r) => r.name === name);
      assert.equal(info?.openByName, true);
      assert.equal(info?.held, false);
      const dry = cli('unlink-stale', '--dry-run', '--json');
      assert.equal(dry.status, 0, dry.stderr);
      assert.ok(!(JSON.parse(dry.stdout) as string[]).includes(name), '--dry-run listed a ring whose region is open by name');
      // Listed before the region was opened, the ring is still kept: the removal checks again, under its locks.
      region.close();
      const found = listed();
      assert.ok(found, `${name} was not listed as stale once nobody had it open`);
      const again = Region.open({ backing: 'posix', name });
      try {
        assert.equal(removeStale(found), false, 'the name of a region open again since the listing was removed');
        assert.ok(fs.existsSync(`/dev/shm/${name}`));
      } finally {
        again.close();
      }
      assert.equal(removeStale(found), true, 'a stale ring nobody has open was kept');
    } finally {
      region.close();
      fs.rmSync(`/dev/shm/${name}`, { force: true });
    }
  });

  for (const backing of ['file', 'posix'] as const) {
    it(`unlink-stale keeps a live ring that took a stale one's name, or attached it, after the listing (${backing})`, function () {
      // A file ring lives in this test's own directory; a POSIX one in /dev/shm under a name of
      // its own, and only that name is ever removed (the listing of /dev/shm is read-only).
      const name = uniqueName('race');
      const listed = backing === 'file' ? dir : '/dev/shm';
      const where = backing === 'file' ? { backing, path: path.join(dir, name) } : { backing, name };
      const file = backing === 'file' ? path.join(dir, name) : `/dev/shm/${name}`;
      const size = SpscRing.regionSize({ capacity: 64 });
      const makeStale = (): void => {
        const region = Region.create({ ...where, size });
        SpscRing.create(region, { capacity: 64 }).close();
        region.close(); // nobody holds it now: stale, its name left
      };
      const found = (): ReturnType<typeof listStale>[number] => {
        const ring = listStale(listed).find((f) => f.info.name === (backing === 'file' ? file : name));
        assert.ok(ring, `${name} was not listed as stale`);
        return ring;
      };
      const live: { region: Region; ring: SpscRing }[] = [];
      try {
        // The name is given to a new, live ring between the listing and the unlink.
        makeStale();
        const replaced = found();
        fs.unlinkSync(file);
        const region = Region.create({ ...where, size });
        live.push({ region, ring: SpscRing.create(region, { capacity: 64 }) });
        assert.equal(removeStale(replaced, listed), false, 'the live ring that took the name was removed');
        assert.equal(fs.statSync(file).ino, fs.fstatSync(region.fd).ino, 'the name no longer leads to the live ring');
        live.pop()!.ring.close();
        region.close();

        // The same stale object, attached again by a process between the listing and the unlink.
        const attached = found();
        const again = Region.open(where);
        live.push({ region: again, ring: SpscRing.attach(again) });
        assert.equal(removeStale(attached, listed), false, 'a ring attached again was removed');
        assert.ok(fs.existsSync(file));
        live.pop()!.ring.close();
        again.close();

        // Still what was found: removed.
        assert.equal(removeStale(found(), listed), true);
        assert.ok(!fs.existsSync(file), 'a stale ring still as found was not removed');
      } finally {
        for (const { region, ring } of live) {
          ring.close();
          region.close();
        }
        fs.rmSync(file, { force: true });
      }
    });
  }
});
