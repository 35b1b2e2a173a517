/**
 * A C program written from docs/LAYOUT.md alone (test/c/ring_peer.c) joins
 * rings that Node created, as producer and as consumer, in another process.
 * Each direction moves 200,000 messages of a fixed pattern through a small
 * ring (thousands of wrap-arounds), with both sides parking and waking each
 * other through the wait blocks.
 *
 * Then the event loop's side of it: Node reads with `await ring.read()` on
 * the main thread (the async futex wait: io_uring by default, see
 * asyncWaitKind()) while the C producer pauses until Node is asleep, so
 * every burst has to wake a parked async reader; and the reverse, a C
 * producer parked on a full ring that Node's async reads wake.
 *
 * And a LatestValue both ways: a C writer's versions read by Node parked in
 * changed(), Node's read by a parked C reader, every value checked against
 * the pattern of its version; a C writer stopped mid-publish (SEQ odd, half
 * a value) holds the writer role until it is killed, and leaves the
 * previous value readable; in a System V segment too, where the role is
 * the writer's pid and start time in WRITER_TOKEN.
 *
 * A MpscRing: three C producers and a Node consumer, two Node producers
 * (this process and a child) and a C consumer, every message exactly once
 * and each producer's in order (the type names the producer); a pausing C
 * producer waking Node parked in await read(); a C consumer that skips the
 * record of a Node producer SIGKILLed between claim and commit (LAYOUT.md,
 * "Unblock"), and only once it is dead, a zombie (killed, not yet reaped)
 * counting as dead; a C consumer that, waiting, gives back the padding at
 * its head (aborted claims) and wakes the Node producer parked for its
 * room, and stores its head after each padding it zeroes. A Broadcast: a
 * Node publisher read by C subscribers and a C publisher read by Node, lossy
 * (received + lost == published, nothing torn) and lossless (everything),
 * each side parking on the other; a pausing C publisher waking Node; a C
 * publisher taking over from a Node publisher that died in the middle of
 * a record (counters torn, garbage at the tail): it repairs the counters
 * and jumps a lap ahead, INTENT's high words torn or not, lossy at once,
 * lossless once the Node subscriber has read every record published before
 * the death; and it completes the jump of a repair killed in it, to the
 * same target. A lossless C publisher's takeover wakes a parked Node
 * subscriber still joining, so its CURSOR follows TAIL; a lossless C
 * subscriber whose join finds no snapshot moves its slot's CURSOR to TAIL
 * (so a Node publisher's repair goes on), and hands out records while
 * INTENT's high words stay torn, until the repair's jump.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { asyncWaitKind, heldByAnyone, lockFileByte, membarrier, NAME_LOCK_BYTE, Region } from '@shmring/core';
import { ErrorCodes } from '@shmring/core';
import {
  Broadcast,
  type BroadcastPublisher,
  type BroadcastSubscriber,
  inspect,
  LatestValue,
  MpmcQueue,
  MpscRing,
  SpscRing,
} from '../src/index.js';
import * as B from '../src/broadcast-layout.js';
import * as M from '../src/mpsc-layout.js';
import { WRITER_PATH } from './fixtures/c-interop-mpsc-writer.js';
import { MOUNTINFO_CASES } from './fixtures/mountinfo.js';
import { deadThreadId, skipPositions } from './helpers.js';
import { Roles } from '../src/roles.js';
import {
  CONSUMER_PID_I32,
  CONSUMER_POSITION_I32,
  CONTROL_I32_LENGTH,
  FLAGS_I32,
  HEAD_EPOCH_I32,
  HOLDER_LOCK_OFFSET,
  PRODUCER_PID_I32,
  PRODUCER_POSITION_I32,
  READ_SIGNAL_I32,
  READ_WAITERS_I32,
  RECORD_TYPE_I32,
  SLOT_TYPE_I32,
  VERSION_I32,
  WRITE_SIGNAL_I32,
  WRITE_WAITERS_I32,
} from '../src/layout.js';

const SOURCE = fileURLToPath(new URL('../../test/c/ring_peer.c', import.meta.url));
const CFLAGS = ['-O2', '-std=c11', '-Wall', '-Wextra', '-Werror'];
/** Messages per run: enough for thousands of laps of the rings below. */
const COUNT = 200_000;
/** Fewer for the runs that must fail (they stop at CORRUPT_AT anyway). */
const SHORT_COUNT = 5_000;
/** A message with a non-empty payload, so a flipped byte is a flipped payload byte. */
const CORRUPT_AT = 1_001;
const WAIT_MS = 20_000;
/** ring_peer's exit status for a message that breaks the pattern. */
const EXIT_MISMATCH = 1;
/** ring_peer's exit status for a ring it refuses to work with (not a ring, another layout version or kind). */
const EXIT_USAGE = 2;
/** ring_peer's exit status for a ring whose memory breaks LAYOUT.md. */
const EXIT_CORRUPT = 4;
/** ring_peer's exit status for a role another live peer holds. */
const EXIT_BUSY = 6;
/** The paused runs: messages, and a pause (until the other side is asleep) after every PAUSE_EVERY of them. */
const PAUSED_COUNT = 20_000;
const PAUSE_EVERY = 100;
const PAUSES = PAUSED_COUNT / PAUSE_EVERY - 1;

// The pattern, as ring_peer.c has it: message i has length (i * 37) % 200,
// byte j = (i + j) & 255, type i % 7.
const MAX_LENGTH = 199;
const patternLength = (i: number): number => (i * 37) % 200;
const patternType = (i: number): number => i % 7;

/** Fills `scratch` with message i and returns the view of its payload. */
function patternMessage(scratch: Uint8Array, i: number): Uint8Array {
  const length = patternLength(i);
  for (let j = 0; j < length; j++) scratch[j] = (i + j) & 255;
  return scratch.subarray(0, length);
}

/** What is wrong with `message` as message i, or null. */
function mismatch(message: Uint8Array, type: number, i: number): string | null {
  if (message.length !== patternLength(i)) return `message ${i}: length ${message.length}, expected ${patternLength(i)}`;
  if (type !== patternType(i)) return `message ${i}: type ${type}, expected ${patternType(i)}`;
  for (let j = 0; j < message.length; j++) {
    if (message[j] !== ((i + j) & 255)) return `message ${i}: byte ${j} is ${message[j]}, expected ${(i + j) & 255}`;
  }
  return null;
}

type Ring = SpscRing | MpmcQueue;
/** What readPattern reads from: message i of the pattern is the i-th it reads. */
type Reader = Ring | MpscRing | BroadcastSubscriber;

interface Kind {
  /** The class name, with its article for the test titles. */
  title: string;
  /** ring_peer's command prefix. */
  command: 'spsc' | 'mpmc';
  regionSize: number;
  create(region: Region): Ring;
  attach(region: Region): Ring;
  /** Int32 index, in the ring's `data`, of the TYPE word of the first message written to a fresh ring. */
  firstTypeI32: number;
}

const KINDS: Kind[] = [
  {
    title: 'an SpscRing',
    command: 'spsc',
    // 4 KiB of data: about 37 messages of the pattern at a time.
    regionSize: SpscRing.regionSize({ capacity: 4096 }),
    create: (region) => SpscRing.create(region, { capacity: 4096 }),
    attach: (region) => SpscRing.attach(region),
    firstTypeI32: RECORD_TYPE_I32,
  },
  {
    title: 'a MpmcQueue',
    command: 'mpmc',
    regionSize: MpmcQueue.regionSize({ capacity: 64, slotSize: 200 }),
    create: (region) => MpmcQueue.create(region, { capacity: 64, slotSize: 200 }),
    attach: (region) => MpmcQueue.attach(region),
    firstTypeI32: SLOT_TYPE_I32,
  },
];

interface PeerRun {
  child: ChildProcess;
  /** Resolves when the process has exited (never rejects on a non-zero status). */
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; stdout: string }>;
  /** Aborted as soon as the peer exits with a failure, so Node stops waiting for it. */
  failed: AbortSignal;
  /** What it printed so far. */
  readonly stdout: string;
}

function runPeer(binary: string, args: string[]): PeerRun {
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const failure = new AbortController();
  let stderr = '';
  let stdout = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  child.stdout!.on('data', (d: Buffer) => (stdout += d));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; stdout: string }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code !== 0) failure.abort(new Error(`ring_peer ${args.join(' ')} exited with ${code ?? signal}: ${stderr.trim()}`));
      resolve({ code, signal, stderr, stdout });
    });
  });
  return {
    child,
    done,
    failed: failure.signal,
    get stdout() {
      return stdout;
    },
  };
}

/** A Node script (a fixture) as a peer process, with runPeer's bookkeeping. */
function runNode(args: string[]): PeerRun {
  return runPeer(process.execPath, args);
}

/** Polls `condition` every 5 ms until it holds; fails after WAIT_MS naming `what`. */
async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + WAIT_MS;
  while (!condition()) {
    if (performance.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await sleep(5);
  }
}

/** Process `pid`'s state (field 3 of /proc/<pid>/stat: 'R', 'S', 'Z', …), or null if it has no entry (reaped). */
function processState(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3); // the name may hold ')'
  } catch {
    return null;
  }
}

/** How often Node found the ring empty (reading) or full (writing) and had to wait for the C peer. */
let nodeWaits = 0;

/**
 * A wait block's SIGNAL word: a peer bumps it only when it found a sleeper
 * announced in WAITERS, so its value counts the wake-ups it delivered.
 */
function signalCount(region: Region, index: number): number {
  return Atomics.load(new Int32Array(region.buffer, 0, index + 1), index);
}

/**
 * Reads `count` messages and returns the first that breaks the pattern (null
 * if none): tryRead first, awaiting read() only on an empty ring (counted in
 * nodeWaits), or, with `asyncOnly`, `await ring.read()` alone, after
 * `beforeRead(i)` if given.
 */
async function readPattern(
  ring: Reader,
  count: number,
  peer: PeerRun,
  options: { asyncOnly?: boolean; beforeRead?: (i: number) => Promise<void> } = {},
): Promise<string | null> {
  for (let i = 0; i < count; i++) {
    await options.beforeRead?.(i);
    let message = options.asyncOnly ? null : ring.tryRead();
    if (message === null) {
      if (!options.asyncOnly) nodeWaits++;
      try {
        message = await ring.read({ timeoutMs: WAIT_MS, signal: peer.failed, spin: 0, poll: 0 }); // park at once: the C side must wake us
      } catch (err) {
        throw peer.failed.aborted ? (peer.failed.reason as Error) : err;
      }
    }
    const wrong = mismatch(message, ring.lastType, i);
    if (wrong !== null) return wrong;
  }
  return null;
}

/** ring_peer --stats: what its waiting did. */
interface PeerStats {
  /** Its unparks that found a sleeper announced (and called FUTEX_WAKE)... */
  wakes: number;
  /** ... and whose FUTEX_WAKE woke someone asleep in the kernel. */
  wokeSleepers: number;
  /** Its own parks: FUTEX_WAIT woken, found the signal already bumped, or napped out (100 ms). */
  parksWoken: number;
  parksChanged: number;
  parksTimedOut: number;
  /** --pause-every: pauses that ended with a reader parked... */
  pauses: number;
  /** mpsc-consume: records skipped because their claimer died between claim and commit ("Unblock"). */
  unblocked: number;
  /** ... after which the first FUTEX_WAKE found the reader asleep in the kernel. */
  pauseWakes: number;
  /** bcast-publish, lossless: slots of dead subscribers it freed while the Broadcast was full. */
  sweptSubscribers: number;
  /** MpscRing consumers: membarrier calls between an announcement and its re-check (FLAG_LIGHT_COMMITS set). */
  heavyFences: number;
}

async function statsOf(peer: PeerRun): Promise<PeerStats> {
  const { code, stderr, stdout } = await peer.done;
  assert.equal(code, 0, stderr);
  return JSON.parse(stdout.trim().split('\n').pop() ?? '') as PeerStats;
}

/** Writes `count` messages of the pattern, message `corruptAt` with one byte flipped. */
async function writePattern(ring: Ring, count: number, peer: PeerRun, corruptAt = -1): Promise<void> {
  const scratch = new Uint8Array(MAX_LENGTH);
  for (let i = 0; i < count; i++) {
    const bytes = patternMessage(scratch, i);
    if (i === corruptAt) {
      const j = bytes.length >> 1;
      bytes[j] = bytes[j]! ^ 0x5a;
    }
    const type = patternType(i);
    if (!ring.tryWrite(bytes, type)) {
      nodeWaits++;
      await ring.write(bytes, { type, timeoutMs: WAIT_MS, signal: peer.failed });
    }
  }
}

describe('C interop: a C11 peer written from docs/LAYOUT.md', function () {
  let workDir: string;
  let binary: string;

  before(function () {
    const probe = spawnSync('cc', ['--version'], { stdio: 'ignore' });
    if (probe.error) {
      console.log(`      (skipped: no C compiler: \`cc --version\` failed with ${(probe.error as NodeJS.ErrnoException).code})`);
      this.skip();
    }
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-c-interop-'));
    binary = path.join(workDir, 'ring_peer');
    const build = spawnSync('cc', [...CFLAGS, '-o', binary, SOURCE], { encoding: 'utf8' });
    assert.equal(build.status, 0, `cc ${CFLAGS.join(' ')} ring_peer.c failed:\n${build.stderr}`);
  });

  after(() => {
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  it("the C peer reads /proc's mount as the TypeScript side does: hidepid, stacked mounts, no proc at /proc", () => {
    // Both take a stuck MpscRing claim back only when /proc shows every process: they must agree on when it does.
    for (const [i, { what, text, hides }] of MOUNTINFO_CASES.entries()) {
      const file = path.join(workDir, `mountinfo-${i}`);
      fs.writeFileSync(file, `${text}\n`);
      const run = spawnSync(binary, ['mountinfo-hides', file], { encoding: 'utf8' });
      assert.equal(run.status, 0, run.stderr);
      assert.equal(run.stdout.trim(), hides ? '1' : '0', what);
    }
  });

  for (const kind of KINDS) {
    describe(kind.title.replace(/^an? /, ''), () => {
      let regionPath: string;
      let region: Region | undefined;
      let ring: Ring;
      let peer: PeerRun | undefined;

      beforeEach(() => {
        nodeWaits = 0;
        const dir = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
        regionPath = path.join(dir, `shmring-c-interop-${kind.command}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
        region = Region.create({ backing: 'file', path: regionPath, size: kind.regionSize });
        ring = kind.create(region);
      });

      afterEach(async () => {
        if (peer && peer.child.exitCode === null && peer.child.signalCode === null) {
          peer.child.kill();
          await peer.done;
        }
        peer = undefined;
        region?.close();
        region = undefined;
        fs.rmSync(regionPath, { force: true });
      });

      it(`a C producer writes ${kind.title} that Node reads`, async () => {
        // --start-parked: the C producer writes nothing until Node is asleep in read().
        peer = runPeer(binary, [`${kind.command}-produce`, regionPath, String(COUNT), '--start-parked']);
        assert.equal(await readPattern(ring, COUNT, peer), null);
        const { code, stderr } = await peer.done;
        assert.equal(code, 0, stderr);
        assert.equal(ring.tryRead(), null, 'the C producer wrote more than it was asked');
        // The C producer waits for Node to park before its first message (without that, a
        // slow start of Node's read could find the message in its re-check, unannounce, and
        // never need a wake), and only its unpark (after each publication) bumps READ_SIGNAL.
        const wakes = signalCount(region!, READ_SIGNAL_I32);
        console.log(`      Node waited ${nodeWaits} times; the C producer signalled parked readers ${wakes} times`);
        assert.ok(nodeWaits > 0 && wakes > 0, `Node waited ${nodeWaits} times, the C producer signalled ${wakes} times`);
      });

      it(`Node writes ${kind.title} that a C consumer reads`, async () => {
        // --start-parked: the C consumer reads nothing until Node is asleep in write() on the full ring.
        peer = runPeer(binary, [`${kind.command}-consume`, regionPath, String(COUNT), '--start-parked']);
        await writePattern(ring, COUNT, peer);
        const { code, stderr } = await peer.done;
        assert.equal(code, 0, stderr);
        assert.equal(ring.size, 0);
        // The C consumer waits for Node to fill the ring and park, and only its unpark (after
        // each release) bumps WRITE_SIGNAL.
        const wakes = signalCount(region!, WRITE_SIGNAL_I32);
        console.log(`      Node waited ${nodeWaits} times; the C consumer signalled parked writers ${wakes} times`);
        assert.ok(nodeWaits > 0 && wakes > 0, `Node waited ${nodeWaits} times, the C consumer signalled ${wakes} times`);
      });

      it(`a C producer that pauses until Node is parked in await read() on ${kind.title} wakes it after every pause, and Node gets every message`, async () => {
        // After every PAUSE_EVERY messages the producer sleeps, waits until Node has announced
        // itself parked in the read wait block, gives it 1 ms to fall asleep in the kernel
        // (the event loop's async futex wait), and writes on: its FUTEX_WAKE must reach it.
        peer = runPeer(binary, [
          `${kind.command}-produce`,
          regionPath,
          String(PAUSED_COUNT),
          '--pause-every',
          String(PAUSE_EVERY),
          '--pause-ms',
          '3',
          '--stats',
        ]);
        const started = performance.now();
        assert.equal(await readPattern(ring, PAUSED_COUNT, peer, { asyncOnly: true }), null);
        const ms = performance.now() - started;
        const stats = await statsOf(peer);
        assert.equal(ring.tryRead(), null, 'the C producer wrote more than it was asked');
        const wakes = signalCount(region!, READ_SIGNAL_I32);
        console.log(
          `      Node's async wait: ${asyncWaitKind()}; ${PAUSED_COUNT} messages in ${ms.toFixed(0)} ms; C paused ${stats.pauses} times ` +
            `until Node was parked, and its next FUTEX_WAKE found Node asleep ${stats.pauseWakes} times ` +
            `(${stats.wokeSleepers} in all; READ_SIGNAL ${wakes})`,
        );
        assert.equal(stats.pauses, PAUSES, 'pauses that ended with Node parked');
        assert.ok(wakes >= PAUSES, `READ_SIGNAL is ${wakes}: the producer signalled a parked reader fewer times than it paused`);
        // Each pause gave Node 1 ms to fall asleep: all but a few (a descheduled Node) must be asleep in the kernel.
        assert.ok(
          stats.pauseWakes >= PAUSES * 0.75,
          `the C FUTEX_WAKE found Node asleep after only ${stats.pauseWakes} of ${PAUSES} pauses`,
        );
      });

      it(`Node's await read() wakes a C producer parked on a full ${kind.title.replace(/^an? /, '')}`, async () => {
        // The producer parks (FUTEX_WAIT) when the ring is full. Every PAUSE_EVERY messages Node
        // stops reading until the producer has announced itself parked, plus 1 ms; then its
        // async reads free space and must wake it.
        peer = runPeer(binary, [`${kind.command}-produce`, regionPath, String(PAUSED_COUNT), '--park', '--stats']);
        const ctl = new Int32Array(region!.buffer, 0, WRITE_SIGNAL_I32 + 1);
        let pauses = 0;
        const waitForParkedWriter = async (i: number): Promise<void> => {
          if (i === 0 || i % PAUSE_EVERY !== 0) return;
          const deadline = Date.now() + WAIT_MS;
          // Observes the producer's announcement in WRITE_WAITERS.
          while (Atomics.load(ctl, WRITE_WAITERS_I32) === 0) {
            if (peer!.failed.aborted) throw peer!.failed.reason as Error;
            if (Date.now() > deadline) assert.fail(`the C producer never parked on the full ring (message ${i})`);
            await sleep(0.2);
          }
          await sleep(1);
          pauses++;
        };
        assert.equal(await readPattern(ring, PAUSED_COUNT, peer, { asyncOnly: true, beforeRead: waitForParkedWriter }), null);
        const stats = await statsOf(peer);
        const wakes = signalCount(region!, WRITE_SIGNAL_I32);
        console.log(
          `      Node paused ${pauses} times until the C producer was parked; C's parks: woken ${stats.parksWoken}, ` +
            `signal already bumped ${stats.parksChanged}, napped out ${stats.parksTimedOut} (WRITE_SIGNAL ${wakes})`,
        );
        assert.equal(pauses, PAUSES);
        assert.ok(wakes >= PAUSES, `WRITE_SIGNAL is ${wakes}: Node signalled a parked writer fewer times than it paused`);
        assert.ok(
          stats.parksWoken >= PAUSES * 0.75,
          `Node's reads woke the parked C producer only ${stats.parksWoken} times in ${PAUSES} pauses`,
        );
        // A wake-up lost on the way shows as a 100 ms nap that ran out.
        assert.ok(stats.parksTimedOut <= PAUSES / 4, `the parked C producer napped out ${stats.parksTimedOut} times: lost wake-ups`);
      });

      it(`a C producer holds ${kind.title} by its lock: alive to a parked Node reader and inspect whatever its pid word says, dead once killed`, async () => {
        peer = runPeer(binary, [`${kind.command}-produce`, regionPath, '3', '--linger', '60']);
        await waitFor(() => peer!.child.exitCode !== null || /done/.test(peer!.stdout), 'the C producer wrote its messages');
        for (let i = 0; i < 3; i++) assert.equal(mismatch(await ring.read({ timeoutMs: WAIT_MS }), ring.lastType, i), null);
        const ctl = new Int32Array(region!.buffer, 0, PRODUCER_PID_I32 + 1);
        assert.equal(Atomics.load(ctl, PRODUCER_PID_I32), peer.child.pid, 'the C producer wrote its pid');
        Atomics.store(ctl, PRODUCER_PID_I32, 0x3ffffff0); // a pid no process has: the lock must answer
        const info = inspect(regionPath)!;
        assert.equal(info.producer?.alive, true);
        let settled = false;
        const reading = ring.read({ peerTimeoutMs: 50, timeoutMs: WAIT_MS }).finally(() => (settled = true));
        reading.catch(() => {});
        await sleep(600);
        assert.equal(settled, false, 'Node took the live C producer for dead');
        const killed = performance.now();
        peer.child.kill('SIGKILL');
        await assert.rejects(reading, { code: ErrorCodes.PEER_DEAD });
        const noticed = performance.now() - killed;
        assert.ok(noticed < 1000, `noticed ${noticed.toFixed(0)} ms after the kill`);
        assert.equal(inspect(regionPath)!.producer?.alive, false);
      });

      it(`a C producer of ${kind.title} that exits cleanly lets go of its role: a parked Node reader waits for the next one (not PEER_DEAD), and inspect shows no producer`, async () => {
        peer = runPeer(binary, [`${kind.command}-produce`, regionPath, '3']);
        const { code, stderr } = await peer.done;
        assert.equal(code, 0, stderr);
        for (let i = 0; i < 3; i++) assert.equal(mismatch(ring.tryRead()!, ring.lastType, i), null);
        const ctl = new Int32Array(region!.buffer, 0, PRODUCER_PID_I32 + 1);
        assert.equal(Atomics.load(ctl, PRODUCER_PID_I32), 0, 'the pid word withdrawn ("Letting go")');
        assert.equal(inspect(regionPath)!.producer, undefined);
        // A peer check every 12.5 ms for 400 ms: a word left behind would read as a dead producer at the first.
        await assert.rejects(ring.read({ peerTimeoutMs: 50, timeoutMs: 400 }), { code: ErrorCodes.TIMEOUT });
        // And the next producer is read as the first was: its three messages, the pattern from the start.
        peer = runPeer(binary, [`${kind.command}-produce`, regionPath, '3']);
        assert.equal((await peer.done).code, 0);
        for (let i = 0; i < 3; i++) {
          const message = await ring.read({ timeoutMs: WAIT_MS });
          assert.equal(mismatch(message, ring.lastType, i), null);
        }
        assert.equal(ring.tryRead(), null, 'more than the next producer wrote');
      });

      it(`a C consumer of ${kind.title} waits while the HOLDER lock is held exclusively (unlink-stale's check and unlink), then attaches and reads`, async () => {
        ring.detach(); // nobody holds the ring: it may be taken exclusively
        const fd = fs.openSync(regionPath, 'r+');
        try {
          assert.equal(lockFileByte(fd, HOLDER_LOCK_OFFSET), true, 'somebody else holds the ring');
          peer = runPeer(binary, [`${kind.command}-consume`, regionPath, String(SHORT_COUNT)]);
          await sleep(300);
          assert.equal(peer.child.exitCode, null, 'the C consumer did not wait for the exclusive HOLDER lock to go');
          // Observes the consumer's registration, which would follow its HOLDER lock: none while it waits for the lock.
          const words = new Int32Array(region!.buffer, 0, CONTROL_I32_LENGTH);
          assert.equal(Atomics.load(words, CONSUMER_PID_I32), 0, 'the C consumer took its role without the HOLDER lock');
        } finally {
          fs.closeSync(fd); // lets go of the lock
        }
        ring = kind.attach(region!);
        await writePattern(ring, SHORT_COUNT, peer);
        const { code, stderr } = await peer.done;
        assert.equal(code, 0, stderr);
      });

      it(`a C consumer of ${kind.title} reads the header only under the HOLDER lock: a ring laid out again while it waited for the lock is the one it judges`, async () => {
        ring.detach(); // nobody holds the ring: a creator may take it exclusively and lay a ring out again
        const fd = fs.openSync(regionPath, 'r+');
        try {
          assert.equal(lockFileByte(fd, HOLDER_LOCK_OFFSET), true, 'somebody else holds the ring');
          peer = runPeer(binary, [`${kind.command}-consume`, regionPath, String(SHORT_COUNT)]);
          await sleep(300); // it found MAGIC and waits for the lock
          // As a creator holding HOLDER exclusively lays a new ring out, here one of layout version 1, which the
          // peer must refuse. MAGIC stays: one store of VERSION under the lock is the whole change it can see.
          const header = new Int32Array(region!.buffer, 0, CONTROL_I32_LENGTH);
          // Publishes the new header word before the lock goes (the unlock below orders it for the peer).
          Atomics.store(header, VERSION_I32, 1);
        } finally {
          fs.closeSync(fd); // lets go of the lock
        }
        const { code, stderr } = await peer.done;
        assert.equal(code, EXIT_USAGE, `the C consumer read the header before the lock (exit ${code}): ${stderr}`);
        assert.match(stderr, /layout version 1/);
      });

      it(`a C consumer of ${kind.title} that opened its name just before unlink-stale removed it opens the name again and reads the ring that has it now`, async () => {
        ring.detach();
        region!.close(); // nobody has the object open by name, nor holds the ring: stale
        region = undefined;
        // As unlink-stale decides and unlinks: the name byte and HOLDER, exclusively, on a description of its own.
        const fd = fs.openSync(regionPath, 'r+');
        let unlinked = false;
        try {
          assert.equal(lockFileByte(fd, NAME_LOCK_BYTE), true, 'somebody has the object open by name');
          assert.equal(lockFileByte(fd, HOLDER_LOCK_OFFSET), true, 'somebody holds the ring');
          peer = runPeer(binary, [`${kind.command}-consume`, regionPath, String(SHORT_COUNT)]);
          await sleep(300); // it has opened the old object by now, and waits for the name byte
          assert.equal(peer.child.exitCode, null, 'the C consumer did not wait for the exclusive name lock to go');
          fs.unlinkSync(regionPath);
          unlinked = true;
          // A new ring under the same name (a new file: its locks are its own), made before the old object's
          // locks go: the C consumer must read this one, not the object that lost the name.
          region = Region.create({ backing: 'file', path: regionPath, size: kind.regionSize });
          ring = kind.create(region);
        } finally {
          fs.closeSync(fd); // lets go of both locks
        }
        assert.ok(unlinked);
        const stalled = new AbortController();
        const timer = setTimeout(() => stalled.abort(), 20_000);
        try {
          await Promise.race([
            writePattern(ring, SHORT_COUNT, peer),
            new Promise((_, reject) =>
              stalled.signal.addEventListener('abort', () =>
                reject(new Error('the C consumer read nothing of the ring that has the name')),
              ),
            ),
          ]);
        } finally {
          clearTimeout(timer);
        }
        const { code, stderr } = await peer.done;
        assert.equal(code, 0, stderr);
      });

      if (kind.command === 'spsc') {
        it('a C consumer of an SpscRing whose consumer role Node holds exits BUSY, and Node is refused while a C consumer holds it', async () => {
          ring.tryWrite(new Uint8Array(0));
          assert.notEqual(ring.tryRead(), null); // Node is the consumer now
          const refused = runPeer(binary, ['spsc-consume', regionPath, '1']);
          const { code, stderr } = await refused.done;
          assert.equal(code, EXIT_BUSY, stderr);
          assert.match(stderr, /consumer role is held by another live peer/);
          ring.detach();
          ring = SpscRing.attach(region!);
          const ctl = new Int32Array(region!.buffer, 0, CONSUMER_PID_I32 + 1);
          Atomics.store(ctl, CONSUMER_PID_I32, 0); // before the C consumer starts: it writes its own pid
          peer = runPeer(binary, ['spsc-consume', regionPath, '1', '--linger', '60']);
          const waiting = SpscRing.attach(region!);
          await waitFor(() => Atomics.load(ctl, CONSUMER_PID_I32) === peer!.child.pid, 'the C consumer registered');
          assert.throws(() => waiting.tryRead(), { code: ErrorCodes.BUSY });
          waiting.detach();
        });
      }

      if (kind.command === 'spsc') {
        it('a C consumer of an SpscRing raises HEAD_EPOCH before the head store that enters another 2^30-byte window, and a Node consumer after it counts past 2^30 (readCount)', async () => {
          const ctl = new Int32Array(region!.buffer, 0, CONTROL_I32_LENGTH);
          // Both positions just below 2^30 while nothing is unread, as traffic that crossed no window leaves them.
          ring.detach();
          skipPositions(ctl, 2 ** 30 - 1024);
          ring = SpscRing.attach(region!);
          peer = runPeer(binary, ['spsc-consume', regionPath, '100']);
          await writePattern(ring, 100, peer);
          const { code, stderr } = await peer.done;
          assert.equal(code, 0, stderr);
          // Observe the exited C consumer's last head store, and its raises before it.
          const head = Atomics.load(ctl, CONSUMER_POSITION_I32);
          assert.ok(head > 2 ** 30, 'the C consumer crossed');
          assert.equal(Atomics.load(ctl, HEAD_EPOCH_I32), 1, 'one window entered, counted once');
          const reader = SpscRing.attach(region!);
          try {
            assert.ok((ring as SpscRing).tryWrite(Uint8Array.of(1, 2, 3)));
            assert.deepEqual(reader.tryRead(), Uint8Array.of(1, 2, 3));
            assert.equal(reader.readCount, head + 16, 'bytes consumed since creation');
          } finally {
            reader.detach();
          }
        });
      }

      it(`Node's check catches a wrong byte in ${kind.title} message from C`, async () => {
        peer = runPeer(binary, [`${kind.command}-produce`, regionPath, String(SHORT_COUNT), '--corrupt-at', String(CORRUPT_AT)]);
        const wrong = await readPattern(ring, SHORT_COUNT, peer);
        assert.match(wrong ?? 'no mismatch found', new RegExp(`^message ${CORRUPT_AT}: byte \\d+ is`));
      });

      it(`the C consumer refuses ${kind.title} message of negative type as corrupt (exit 4), not as a pattern mismatch`, async () => {
        assert.ok(ring.tryWrite(patternMessage(new Uint8Array(MAX_LENGTH), 0), patternType(0)));
        // What no writer stores (tryWrite refuses a negative type): a stray write, or a hostile peer.
        const data32 = new Int32Array(ring.data.buffer, ring.data.byteOffset, ring.data.byteLength / 4);
        data32[kind.firstTypeI32] = -5;
        peer = runPeer(binary, [`${kind.command}-consume`, regionPath, '1']);
        const { code, stderr } = await peer.done;
        assert.equal(code, EXIT_CORRUPT, stderr);
        assert.match(stderr, /type -5/);
      });

      it(`the C consumer exits with a failure on a wrong byte in ${kind.title} message from Node`, async () => {
        peer = runPeer(binary, [`${kind.command}-consume`, regionPath, String(SHORT_COUNT)]);
        try {
          await writePattern(ring, SHORT_COUNT, peer, CORRUPT_AT);
        } catch (err) {
          // The consumer stops at the bad message; Node's write then waits on a full ring until it notices.
          assert.ok(peer.failed.aborted, `the write failed while the consumer was still running: ${String(err)}`);
        }
        const { code, stderr } = await peer.done;
        assert.equal(code, EXIT_MISMATCH, stderr);
        assert.match(stderr, new RegExp(`message ${CORRUPT_AT}: byte \\d+ is`));
      });
    });
  }
  describe('LatestValue', () => {
    /** Room for the whole pattern (199 bytes), so both sides check every byte. */
    const MAX = 256;
    /** Versions of the runs (the C reader checks each value it sees). */
    const VERSIONS = 100_000;
    let regionPath: string;
    let region: Region | undefined;
    let lv: LatestValue;
    let peer: PeerRun | undefined;

    beforeEach(() => {
      const dir = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
      regionPath = path.join(dir, `shmring-c-interop-latest-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
      region = Region.create({ backing: 'file', path: regionPath, size: LatestValue.regionSize({ maxSize: MAX }) });
      lv = LatestValue.create(region, { maxSize: MAX });
    });

    afterEach(async () => {
      if (peer && peer.child.exitCode === null && peer.child.signalCode === null) {
        peer.child.kill('SIGKILL');
        await peer.done;
      }
      peer = undefined;
      lv.close();
      region?.close();
      region = undefined;
      fs.rmSync(regionPath, { force: true });
    });

    /** read() checked against the pattern of its version (version 0: the empty initial value). */
    function checked(r: { version: number; value: Uint8Array; type: number }): string | null {
      return r.version === 0 ? (r.value.length === 0 ? null : 'version 0 is not empty') : mismatch(r.value, r.type, r.version);
    }

    it(`a C writer publishes ${VERSIONS} versions that Node reads whole, in order, parked in changed() between them`, async () => {
      peer = runPeer(binary, ['latest-publish', regionPath, String(VERSIONS), '--pause-every', '1000', '--pause-ms', '1']);
      let last = 0;
      let seen = 0;
      while (last < VERSIONS) {
        let r: Awaited<ReturnType<typeof lv.changed>>;
        try {
          r = await lv.changed(last, { timeoutMs: WAIT_MS, signal: peer.failed });
        } catch (err) {
          throw peer.failed.aborted ? (peer.failed.reason as Error) : err;
        }
        assert.ok(r.version > last, `version went from ${last} to ${r.version}`);
        assert.equal(checked(r), null);
        last = r.version;
        seen++;
      }
      assert.equal((await peer.done).code, 0);
      assert.ok(seen >= VERSIONS / 1000, `Node saw ${seen} versions`);
    });

    it('Node publishes versions that a C reader, parked between them, reads whole and in order', async () => {
      peer = runPeer(binary, ['latest-read', regionPath, String(VERSIONS)]);
      await waitFor(
        () =>
          Atomics.load(new Int32Array(region!.buffer, 0, READ_WAITERS_I32 + 1), READ_WAITERS_I32) !== 0 || peer!.child.exitCode !== null,
        'the C reader parked',
      );
      const scratch = new Uint8Array(MAX_LENGTH);
      for (let v = 1; v <= VERSIONS; v++) {
        lv.publish(patternMessage(scratch, v), patternType(v));
        if (v % 1000 === 0) await sleep(1); // let the reader park now and then
      }
      const { code, stderr, stdout } = await peer.done;
      assert.equal(code, 0, stderr);
      const report = JSON.parse(stdout.trim()) as { last: number; seen: number; parksWoken: number };
      assert.equal(report.last, VERSIONS);
      assert.ok(report.parksWoken >= 1, `the C reader was never woken from a park: ${stdout}`);
    });

    it('a C writer killed mid-publish leaves the previous value readable and the writer role free; a live one keeps Node out', async () => {
      peer = runPeer(binary, ['latest-publish', regionPath, '10', '--hang']);
      await waitFor(() => peer!.stdout.includes('hung'), 'the C writer stopped mid-publish');
      assert.throws(() => lv.publish(new Uint8Array(1)), { code: ErrorCodes.BUSY });
      const r = lv.read();
      assert.deepEqual([r.version, checked(r)], [10, null]);
      peer.child.kill('SIGKILL');
      await peer.done;
      assert.deepEqual([lv.read().version, checked(lv.read())], [10, null]);
      const scratch = new Uint8Array(MAX_LENGTH);
      assert.equal(lv.publish(patternMessage(scratch, 11), patternType(11)), 11, 'Node takes the role over the half-written slot');
      assert.equal(checked(lv.read()), null);
      peer = runPeer(binary, ['latest-publish', regionPath, '1']);
      const { code } = await peer.done;
      assert.equal(code, EXIT_BUSY, 'the C writer is refused while Node holds the role');
    });

    it('in a System V segment (no file to lock), a SIGKILLed C writer frees the role for Node, a live Node writer keeps C out, and C gives it back', async function () {
      let segment: Region;
      try {
        segment = Region.create({ backing: 'sysv', size: LatestValue.regionSize({ maxSize: MAX }) });
      } catch (err) {
        console.log(`      (skipped: no System V shared memory here: ${(err as Error).message})`);
        return this.skip();
      }
      const target = `sysv:${segment.id}`;
      const scratch = new Uint8Array(MAX_LENGTH);
      try {
        const shared = LatestValue.create(segment, { maxSize: MAX });
        peer = runPeer(binary, ['latest-publish', target, '10', '--hang']);
        await waitFor(() => peer!.stdout.includes('hung'), 'the C writer stopped mid-publish');
        assert.throws(() => shared.publish(new Uint8Array(1)), { code: ErrorCodes.BUSY });
        peer.child.kill('SIGKILL');
        await peer.done;
        assert.deepEqual([shared.read().version, checked(shared.read())], [10, null]);
        assert.equal(shared.publish(patternMessage(scratch, 11), patternType(11)), 11, 'Node takes the role of the dead C writer');
        peer = runPeer(binary, ['latest-publish', target, '1']);
        assert.equal((await peer.done).code, EXIT_BUSY, 'the C writer is refused while Node holds the role');
        shared.close();
        peer = runPeer(binary, ['latest-publish', target, '5']);
        const { code, stderr } = await peer.done;
        assert.equal(code, 0, stderr);
        const after = LatestValue.attach(segment);
        assert.deepEqual([after.read().version, checked(after.read())], [16, null]);
        assert.equal(after.publish(patternMessage(scratch, 17), patternType(17)), 17, 'the C writer gave the role back as it exited');
        after.close();
      } finally {
        segment.unlink();
        segment.close(); // ends `shared` too, if a failure left it open
      }
    });
  });

  /** A 'file' region in /dev/shm (or the temp dir) of `size` bytes, and its path. */
  function fileRegion(name: string, size: number): { regionPath: string; region: Region } {
    const dir = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
    const regionPath = path.join(dir, `shmring-c-interop-${name}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
    return { regionPath, region: Region.create({ backing: 'file', path: regionPath, size }) };
  }

  /** The first failure of any of `peers`, as one signal. */
  function anyFailed(peers: PeerRun[]): AbortSignal {
    return AbortSignal.any(peers.map((p) => p.failed));
  }

  /** tryRead, or (counted in nodeWaits) `await read()` parked at once; a peer's failure ends the wait with that failure. */
  async function readOrWait(reader: MpscRing | BroadcastSubscriber, failed: AbortSignal): Promise<Uint8Array> {
    const message = reader.tryRead();
    if (message !== null) return message;
    nodeWaits++;
    try {
      return await reader.read({ timeoutMs: WAIT_MS, signal: failed, spin: 0, poll: 0 });
    } catch (err) {
      throw failed.aborted ? (failed.reason as Error) : err;
    }
  }

  /** tryWrite, or (counted in nodeWaits) `await write()`; a peer's failure ends the wait with that failure. */
  async function writeOrWait(writer: MpscRing | BroadcastPublisher, bytes: Uint8Array, type: number, failed: AbortSignal): Promise<void> {
    if (writer.tryWrite(bytes, type)) return;
    nodeWaits++;
    try {
      await writer.write(bytes, { type, timeoutMs: WAIT_MS, signal: failed });
    } catch (err) {
      throw failed.aborted ? (failed.reason as Error) : err;
    }
  }

  async function killAll(peers: PeerRun[]): Promise<void> {
    for (const p of peers) {
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
      await p.done;
    }
  }

  describe('MpscRing', () => {
    /** Messages per producer, and producers. */
    const PER_PRODUCER = 20_000;
    const PRODUCERS = 3;
    let regionPath: string;
    let region: Region | undefined;
    let ring: MpscRing;
    let peers: PeerRun[] = [];

    beforeEach(() => {
      nodeWaits = 0;
      ({ regionPath, region } = fileRegion('mpsc', MpscRing.regionSize({ capacity: 4096 })));
      ring = MpscRing.create(region, { capacity: 4096 });
    });

    afterEach(async () => {
      await killAll(peers);
      peers = [];
      region?.close();
      region = undefined;
      fs.rmSync(regionPath, { force: true });
    });

    it(`${PRODUCERS} C producers write a MpscRing that Node reads: every message once, each producer's in order`, async () => {
      peers = Array.from({ length: PRODUCERS }, (_, id) =>
        runPeer(binary, ['mpsc-produce', regionPath, String(PER_PRODUCER), '--id', String(id)]),
      );
      const failed = anyFailed(peers);
      const next = new Array<number>(PRODUCERS).fill(0);
      for (let n = 0; n < PRODUCERS * PER_PRODUCER; n++) {
        const message = await readOrWait(ring, failed);
        // The type names the producer: message i of producer id has type i % 7 + 7 * id.
        const id = Math.floor(ring.lastType / 7);
        assert.ok(id < PRODUCERS, `a message of type ${ring.lastType}, from no producer`);
        assert.ok(next[id]! < PER_PRODUCER, `producer ${id}: a message after its last one`);
        const wrong = mismatch(message, ring.lastType - 7 * id, next[id]!);
        assert.equal(wrong, null, `producer ${id}: ${wrong}`);
        next[id]!++;
      }
      for (const p of peers) assert.equal((await p.done).code, 0);
      assert.equal(ring.tryRead(), null, 'the C producers wrote more than they were asked');
      assert.equal(ring.size, 0);
      const wakes = signalCount(region!, READ_SIGNAL_I32);
      console.log(`      Node waited ${nodeWaits} times; the C producers signalled the parked reader ${wakes} times`);
      assert.ok(nodeWaits > 0 && wakes > 0, `Node waited ${nodeWaits} times, the C producers signalled ${wakes} times`);
    });

    it('two Node producers (this process and a child) write a MpscRing that a C consumer reads: every message once, each in order', async () => {
      const consumer = runPeer(binary, ['mpsc-consume', regionPath, String(PER_PRODUCER), '--producers', '2']);
      const writer = runNode([WRITER_PATH, regionPath, '1', String(PER_PRODUCER)]);
      peers = [consumer, writer];
      const failed = anyFailed(peers);
      const scratch = new Uint8Array(MAX_LENGTH);
      for (let i = 0; i < PER_PRODUCER; i++) await writeOrWait(ring, patternMessage(scratch, i), patternType(i), failed); // producer 0
      assert.equal((await writer.done).code, 0, writer.stdout);
      const { code, stderr } = await consumer.done;
      assert.equal(code, 0, stderr);
      assert.equal(ring.size, 0);
      const wakes = signalCount(region!, WRITE_SIGNAL_I32);
      console.log(`      Node (this process) waited ${nodeWaits} times; the C consumer signalled parked writers ${wakes} times`);
      assert.ok(nodeWaits > 0 && wakes > 0, `Node waited ${nodeWaits} times, the C consumer signalled ${wakes} times`);
    });

    /** Both positions moved to `position` while nothing is unread, as traffic that never crossed a 2^30-byte window leaves them. */
    const skipTo = (position: number): void => {
      const ctl = new Int32Array(region!.buffer, 0, CONTROL_I32_LENGTH);
      // Observe the last consumer's release and the last claim (the C producer is paused, the readers detached).
      assert.equal(Atomics.load(ctl, CONSUMER_POSITION_I32), Atomics.load(ctl, PRODUCER_POSITION_I32), 'nothing unread');
      skipPositions(ctl, position);
    };
    // Observes the consumers' raises (each before its head store; read after the consumer finished).
    const headEpoch = (): number => Atomics.load(new Int32Array(region!.buffer, 0, CONTROL_I32_LENGTH), HEAD_EPOCH_I32);

    it('a C consumer whose head enters another 2^30-byte window raises HEAD_EPOCH before it stores that head', async () => {
      skipTo(2 ** 30 - 1024);
      const PER = 100; // 100 records of up to 208 bytes: past the boundary, within the 4096-byte ring's laps
      const consumer = runPeer(binary, ['mpsc-consume', regionPath, String(PER)]);
      peers = [consumer];
      const scratch = new Uint8Array(MAX_LENGTH);
      for (let i = 0; i < PER; i++) await writeOrWait(ring, patternMessage(scratch, i), patternType(i), consumer.failed);
      const { code, stderr } = await consumer.done;
      assert.equal(code, 0, stderr);
      // Observes the exited C consumer's last head store.
      assert.ok(Atomics.load(new Int32Array(region!.buffer, 0, CONTROL_I32_LENGTH), CONSUMER_POSITION_I32) > 2 ** 30, 'the head crossed');
      assert.equal(headEpoch(), 1, 'one window entered');
    });

    it('a C producer idle while 2^32 - CAPACITY bytes went through finds the full ring full (HEAD_EPOCH), and overwrites nothing unread', async () => {
      const CAPACITY = 4096;
      // Message 0, then a pause that ends only once a reader is announced parked (the test forges that below).
      const producer = runPeer(binary, ['mpsc-produce', regionPath, '2', '--pause-every', '1', '--pause-ms', '1']);
      peers = [producer];
      const readFresh = (): Uint8Array | null => {
        const consumer = MpscRing.attach(region!);
        try {
          return consumer.tryRead();
        } finally {
          consumer.detach();
        }
      };
      let first: Uint8Array | null = null;
      for (const t0 = Date.now(); first === null && Date.now() - t0 < WAIT_MS; first = readFresh()) await sleep(1);
      assert.ok(first !== null, 'message 0 of the C producer');
      // The C producer cached the head, 0. Three window crossings, each a record a consumer reads across a boundary.
      const busy = MpscRing.attach(region!);
      try {
        for (let w = 1; w <= 3; w++) {
          skipTo(w * 2 ** 30 - 64);
          assert.ok(busy.tryWrite(new Uint8Array(100).fill(w), 0));
          assert.deepEqual(readFresh(), new Uint8Array(100).fill(w));
        }
        assert.equal(headEpoch(), 3);
        // A full ring from 2^32 - CAPACITY: the tail wraps to 0, the C producer's cached head.
        skipTo(2 ** 32 - CAPACITY);
        let sent = 0;
        while (busy.tryWrite(Uint8Array.of(sent & 255, sent >> 8), 5)) sent++;
        assert.equal(sent, CAPACITY / 16);
        const ctl = new Int32Array(region!.buffer, 0, CONTROL_I32_LENGTH);
        assert.equal(Atomics.load(ctl, PRODUCER_POSITION_I32), 0); // observes this thread's last claim
        // Publishes a reader "parked" to the C producer's pause (it loads READ_WAITERS): it writes message 1 now, into
        // a full ring, and must wait for room. Then withdrawn, before a real reader announces itself.
        Atomics.store(ctl, READ_WAITERS_I32, 1);
        await sleep(100);
        Atomics.store(ctl, READ_WAITERS_I32, 0);
        const consumer = MpscRing.attach(region!);
        try {
          for (let i = 0; i < sent; i++) {
            const m = consumer.tryRead();
            assert.deepEqual(m === null ? null : [...m, consumer.lastType], [i & 255, i >> 8, 5], `record ${i} of the full ring`);
          }
          const last = await readOrWait(consumer, producer.failed);
          assert.equal(mismatch(last, consumer.lastType, 1), null);
        } finally {
          consumer.detach();
        }
      } finally {
        busy.close();
      }
      const { code, stderr } = await producer.done;
      assert.equal(code, 0, stderr);
    });

    it('a C consumer parked beside a Node producer that commits without a fence calls membarrier before each re-check, and is woken by every commit', async function () {
      if (process.arch !== 'x64' || !membarrier.register()) this.skip(); // no light producer here: Node fences its commits
      const PER = 300;
      const consumer = runPeer(binary, ['mpsc-consume', regionPath, String(PER), '--stats']);
      peers = [consumer];
      const scratch = new Uint8Array(MAX_LENGTH);
      for (let i = 0; i < PER; i++) {
        // A pause every 10 messages: the C consumer runs the ring dry and parks.
        if (i % 10 === 0) await sleep(2);
        await writeOrWait(ring, patternMessage(scratch, i), patternType(i), consumer.failed);
      }
      const stats = await statsOf(consumer); // it exits 0 once it read every message, each checked
      const flags = Atomics.load(new Int32Array(region!.buffer, 0, CONTROL_I32_LENGTH), FLAGS_I32); // observes the producer's OR of the flag
      assert.notEqual(flags & M.FLAG_LIGHT_COMMITS, 0, 'this process committed without a fence');
      assert.ok(stats.heavyFences > 0 && stats.parksWoken + stats.parksChanged > 0, `the C consumer parked: ${JSON.stringify(stats)}`);
      // A wake-up lost would show as a nap of NAP_MS (100 ms) that timed out with a message waiting.
      assert.equal(stats.parksTimedOut, 0, `naps that timed out: ${JSON.stringify(stats)}`);
    });

    it('a C consumer skips the record of a Node producer SIGKILLed between claim and commit, after peerTimeoutMs and not while it lives, and gets every committed message in order', async () => {
      const PER = 2_000;
      const PEER_TIMEOUT_MS = 200;
      const consumer = runPeer(binary, [
        'mpsc-consume',
        regionPath,
        String(PER),
        '--producers',
        '2',
        '--peer-timeout-ms',
        String(PEER_TIMEOUT_MS),
        '--stats',
      ]);
      // Producer 0 (a child) writes PER messages, then claims one more and stops before its commit.
      const claimer = runNode([WRITER_PATH, regionPath, '0', String(PER), 'claim']);
      peers = [consumer, claimer];
      await waitFor(() => claimer.stdout.includes('claimed'), 'the Node producer claimed its record');
      const claimIndex = Number(/claimed (\d+)/.exec(claimer.stdout)![1]) - M.MPSC_RECORD_HEADER; // the record's header, before its payload
      // Producer 1 (this process) writes after the claim: everything behind it waits at the open claim.
      const failed = consumer.failed;
      const scratch = new Uint8Array(MAX_LENGTH);
      let i = 0;
      for (; i < 10; i++) await writeOrWait(ring, patternMessage(scratch, i), patternType(i) + 7, failed);
      // While the claimer lives, the C consumer waits at its record, however long past its peer timeout.
      const ctl = new Int32Array(region!.buffer, 0, CONTROL_I32_LENGTH);
      // Both loads observe the C consumer's release of its head (mpsc_release's seq_cst store).
      await waitFor(() => (Atomics.load(ctl, CONSUMER_POSITION_I32) & 4095) === claimIndex, 'the C consumer reached the open claim');
      await sleep(3 * PEER_TIMEOUT_MS);
      assert.equal(Atomics.load(ctl, CONSUMER_POSITION_I32) & 4095, claimIndex, 'the C consumer passed the open claim of a live producer');
      claimer.child.kill('SIGKILL');
      assert.equal((await claimer.done).signal, 'SIGKILL');
      for (; i < PER; i++) await writeOrWait(ring, patternMessage(scratch, i), patternType(i) + 7, failed);
      const { code, stderr } = await consumer.done;
      assert.equal(code, 0, stderr);
      const stats = await statsOf(consumer);
      assert.equal(stats.unblocked, 1, 'records the C consumer skipped');
      assert.equal(ring.size, 0);
    });

    it('a C consumer waiting for a record takes the padding at its head (aborted claims) and wakes the Node producer parked for that room: every message in order', async () => {
      const PER = 2_000;
      const consumer = runPeer(binary, ['mpsc-consume', regionPath, String(PER)]);
      peers = [consumer];
      const ctl = new Int32Array(region!.buffer, 0, CONTROL_I32_LENGTH);
      // Observes the C consumer's announcement (its seq_cst add to READ_WAITERS in park()).
      await waitFor(() => Atomics.load(ctl, READ_WAITERS_I32) !== 0, 'the C consumer parked on the empty ring');
      // Three producers (one open claim each) claim the whole ring: message 0 at [0, 8), then [8, 2056), [2056, 4096).
      const second = MpscRing.attach(region!);
      const third = MpscRing.attach(region!);
      const first = ring.claim(patternLength(0));
      const middle = second.claim(4096 / 2 - 8);
      const last = third.claim(4096 - 2056 - 8);
      assert.ok(first >= 0 && middle >= 0 && last >= 0 && ring.size === 4096, 'three claims fill the ring');
      ring.commit(first, patternType(0));
      // Observes the C consumer's head store after message 0 (mpsc_release's seq_cst store).
      await waitFor(() => Atomics.load(ctl, CONSUMER_POSITION_I32) === 8, 'the C consumer read message 0');
      // Message 1 needs 48 bytes, and 8 are free: Node parks (await write) until the C consumer wakes it.
      const scratch = new Uint8Array(MAX_LENGTH);
      const parked = writeOrWait(ring, patternMessage(scratch, 1), patternType(1), consumer.failed);
      await waitFor(() => Atomics.load(ctl, WRITE_WAITERS_I32) !== 0, 'Node parked its write on the full ring');
      const wakes = signalCount(region!, WRITE_SIGNAL_I32);
      // Padding behind the open claim at the C consumer's head; then that claim becomes padding too, and the
      // C consumer, waiting for message 1, finds only padding up to the tail: it must take (zero, release) it
      // and wake the producers (LAYOUT.md, "Consumer", step 6), as no message would come to wake anyone.
      third.abort(last);
      second.abort(middle);
      await parked;
      assert.ok(signalCount(region!, WRITE_SIGNAL_I32) > wakes, 'the C consumer woke the parked Node producer');
      second.close();
      third.close();
      for (let i = 2; i < PER; i++) await writeOrWait(ring, patternMessage(scratch, i), patternType(i), consumer.failed);
      const { code, stderr } = await consumer.done;
      assert.equal(code, 0, stderr);
      assert.equal(ring.size, 0);
    });

    it('a C consumer stores its head after each padding it zeroes: one that exits at the record behind the padding leaves no zeroed room unreleased, and the next consumer reads that record', async () => {
      // An aborted claim (112 bytes of padding) at the head, then a message longer than any of the pattern's,
      // at which the C consumer exits (EXIT_MISMATCH) without taking it.
      ring.abort(ring.claim(100));
      const long = new Uint8Array(300).fill(0x5a);
      assert.ok(ring.tryWrite(long, 3));
      const consumer = runPeer(binary, ['mpsc-consume', regionPath, '1']);
      peers = [consumer];
      const { code, stderr } = await consumer.done;
      assert.equal(code, EXIT_MISMATCH, stderr);
      assert.match(stderr, /longer than any message of the pattern/);
      const ctl = new Int32Array(region!.buffer, 0, CONTROL_I32_LENGTH);
      // Observes the C consumer's head store after the zeroed padding (mpsc_try_read's, seq_cst).
      assert.equal(Atomics.load(ctl, CONSUMER_POSITION_I32), 112, 'the C consumer released the padding it zeroed');
      // Unreleased zeroed room would read as a claim whose header is not written yet: this process (a live
      // producer) would hold the next consumer there.
      assert.deepEqual(ring.tryRead(), long);
      assert.equal(ring.lastType, 3);
      assert.equal(ring.size, 0);
    });

    it('a C consumer judges a SIGKILLed Node claimer that its parent has not reaped (a zombie) dead, and skips its claim while another producer lives', async () => {
      const PER = 20;
      const PEER_TIMEOUT_MS = 200;
      const consumer = runPeer(binary, ['mpsc-consume', regionPath, String(PER), '--peer-timeout-ms', String(PEER_TIMEOUT_MS), '--stats']);
      // The claimer's parent is a shell that execs sleep, which never waits: killed, the claimer stays a
      // zombie until sleep ends (Node reaps its own children at once; this one is not Node's).
      const parent = runPeer('/bin/sh', [
        '-c',
        '"$0" "$1" "$2" 0 0 claim & echo "pid $!"; exec sleep 60',
        process.execPath,
        WRITER_PATH,
        regionPath,
      ]);
      peers = [consumer, parent];
      await waitFor(() => parent.stdout.includes('claimed'), 'the Node producer claimed its record');
      const claimer = Number(/pid (\d+)/.exec(parent.stdout)![1]);
      // This process is a producer too (it holds the PRODUCER lock from its first write): the claimer's own
      // liveness is all that tells the C consumer whether the claim at its head can still be committed.
      const scratch = new Uint8Array(MAX_LENGTH);
      for (let i = 0; i < PER; i++) await writeOrWait(ring, patternMessage(scratch, i), patternType(i), consumer.failed);
      const ctl = new Int32Array(region!.buffer, 0, CONTROL_I32_LENGTH);
      await sleep(3 * PEER_TIMEOUT_MS);
      // Observes the C consumer's head (mpsc_release's seq_cst store): still at the live claimer's record, at 0.
      assert.equal(Atomics.load(ctl, CONSUMER_POSITION_I32), 0, 'the C consumer passed the open claim of a live producer');
      process.kill(claimer, 'SIGKILL');
      await waitFor(() => processState(claimer) === 'Z', `the killed claimer ${claimer} is a zombie`);
      const deadline = 10 * PEER_TIMEOUT_MS + 2_000;
      const finished = await Promise.race([consumer.done.then(() => true), sleep(deadline).then(() => false)]);
      assert.ok(finished, `the C consumer still waits at the claim of zombie ${claimer} after ${deadline} ms`);
      assert.equal(processState(claimer), 'Z', 'the claimer stayed a zombie while the C consumer judged it');
      const stats = await statsOf(consumer);
      assert.equal(stats.unblocked, 1, 'records the C consumer skipped');
      assert.equal(ring.size, 0);
    });

    it('a C consumer goes by the PRODUCER lock alone once FLAG_PID_NS_MIXED is set: a claim whose mark names no live thread here waits while a producer lives', async () => {
      const PER = 20;
      const PEER_TIMEOUT_MS = 200;
      const consumer = runPeer(binary, ['mpsc-consume', regionPath, String(PER), '--peer-timeout-ms', String(PEER_TIMEOUT_MS), '--stats']);
      const claimer = runNode([WRITER_PATH, regionPath, '0', '0', 'claim']);
      peers = [consumer, claimer];
      await waitFor(() => claimer.stdout.includes('claimed'), 'the Node producer claimed its record');
      const claimIndex = Number(/claimed (\d+)/.exec(claimer.stdout)![1]) - M.MPSC_RECORD_HEADER; // the record's header, before its payload
      // As a side that attached from another PID namespace would; and the claim's mark rewritten to an id that
      // names no thread here, as a thread id from that namespace may.
      const ctl = new Int32Array(region!.buffer, 0, CONTROL_I32_LENGTH);
      Atomics.or(ctl, FLAGS_I32, M.FLAG_PID_NS_MIXED);
      new Int32Array(ring.data.buffer, ring.data.byteOffset, 4096 / 4)[(claimIndex >> 2) + M.MPSC_TYPE_I32] = M.claimMark(deadThreadId());
      // This process is a producer too (it holds the PRODUCER lock from its first write).
      const scratch = new Uint8Array(MAX_LENGTH);
      for (let i = 0; i < PER; i++) await writeOrWait(ring, patternMessage(scratch, i), patternType(i), consumer.failed);
      await sleep(3 * PEER_TIMEOUT_MS);
      // Observes the C consumer's head (mpsc_release's seq_cst store): still at the claim.
      assert.equal(Atomics.load(ctl, CONSUMER_POSITION_I32), claimIndex, 'the C consumer took a live claim back by its id');
      // The last producers leave (the claimer dies, this process lets go of its role): the claim is skipped.
      claimer.child.kill('SIGKILL');
      await claimer.done;
      ring.detach();
      const { code, stderr } = await consumer.done;
      assert.equal(code, 0, stderr);
      const stats = await statsOf(consumer);
      assert.equal(stats.unblocked, 1, 'records the C consumer skipped');
    });

    it('a C producer that pauses until Node is parked in await read() on a MpscRing wakes it after every pause', async () => {
      const peer = runPeer(binary, [
        'mpsc-produce',
        regionPath,
        String(PAUSED_COUNT),
        '--pause-every',
        String(PAUSE_EVERY),
        '--pause-ms',
        '3',
        '--stats',
      ]);
      peers = [peer];
      assert.equal(await readPattern(ring, PAUSED_COUNT, peer, { asyncOnly: true }), null);
      const stats = await statsOf(peer);
      assert.equal(ring.tryRead(), null, 'the C producer wrote more than it was asked');
      console.log(
        `      C paused ${stats.pauses} times until Node was parked; its next FUTEX_WAKE found Node asleep ${stats.pauseWakes} times`,
      );
      assert.equal(stats.pauses, PAUSES, 'pauses that ended with Node parked');
      assert.ok(stats.pauseWakes >= PAUSES * 0.75, `the C FUTEX_WAKE found Node asleep after only ${stats.pauseWakes} of ${PAUSES} pauses`);
    });
  });

  describe('Broadcast', () => {
    /** Records per run; the lossy C subscribers pause long enough to be lapped. */
    const RECORDS = 100_000;
    const SUBSCRIBERS = 2;
    let regionPath: string;
    let region: Region | undefined;
    let peers: PeerRun[] = [];
    let closeables: { close(): void }[] = [];

    function create(lossless: boolean, capacity = 4096): BroadcastPublisher {
      ({ regionPath, region } = fileRegion('bcast', Broadcast.regionSize({ capacity })));
      const publisher = Broadcast.create(region, { capacity, lossless });
      closeables.push(publisher);
      return publisher;
    }

    function subscribe(): BroadcastSubscriber {
      const sub = Broadcast.subscribe(region!);
      closeables.push(sub);
      return sub;
    }

    /**
     * A C publisher that takes over a dead one's Broadcast and publishes `n` records: lossless, parking when full
     * and sweeping dead subscribers' slots every 100 ms meanwhile; lossy, not before Node is parked in read().
     */
    function repairingPublisher(n: number, lossless: boolean): PeerRun {
      const peer = runPeer(binary, [
        'bcast-publish',
        regionPath,
        String(n),
        ...(lossless ? ['--park', '--peer-timeout-ms', '400'] : ['--start-parked']),
      ]);
      peers.push(peer);
      return peer;
    }

    /** What bcast-subscribe printed last. */
    async function reportOf(peer: PeerRun): Promise<{ first: number; received: number; lost: number; parksWoken: number }> {
      const { code, stderr, stdout } = await peer.done;
      assert.equal(code, 0, stderr);
      return JSON.parse(stdout.trim().split('\n').pop() ?? '') as { first: number; received: number; lost: number; parksWoken: number };
    }

    /** C subscribers that have joined (before anything is published: they account for records 0 .. count-1). */
    async function cSubscribers(count: number, extra: string[] = []): Promise<PeerRun[]> {
      const subs = Array.from({ length: SUBSCRIBERS }, () => runPeer(binary, ['bcast-subscribe', regionPath, String(count), ...extra]));
      peers.push(...subs);
      await waitFor(() => subs.every((p) => p.stdout.includes('joined') || p.child.exitCode !== null), 'the C subscribers joined');
      return subs;
    }

    /**
     * Reads until records 0 .. count-1 are accounted for (received or lost),
     * checking each record received against the pattern of its number.
     */
    async function readRecords(sub: BroadcastSubscriber, count: number, failed: AbortSignal): Promise<void> {
      while (sub.received + sub.lost < count) {
        const message = await readOrWait(sub, failed);
        // The subscriber joined before record 0: this one is record received + lost - 1.
        assert.equal(mismatch(message, sub.lastType, sub.received + sub.lost - 1), null);
      }
    }

    beforeEach(() => {
      nodeWaits = 0;
    });

    afterEach(async () => {
      await killAll(peers);
      peers = [];
      for (const c of closeables) c.close();
      closeables = [];
      region?.close();
      region = undefined;
      fs.rmSync(regionPath, { force: true });
    });

    it('a lossy Node publisher laps C subscribers: each accounts for every record (received + lost), none torn, in order', async () => {
      const publisher = create(false);
      const subs = await cSubscribers(RECORDS, ['--pause-every', '2000', '--pause-ms', '20']);
      const scratch = new Uint8Array(MAX_LENGTH);
      for (let i = 0; i < RECORDS; i++) assert.equal(publisher.tryWrite(patternMessage(scratch, i), patternType(i)), true);
      for (const sub of subs) {
        const r = await reportOf(sub);
        console.log(`      a C subscriber received ${r.received}, lost ${r.lost} (laps), woken from a park ${r.parksWoken} times`);
        assert.deepEqual([r.first, r.received + r.lost], [0, RECORDS]);
        assert.ok(r.received > 0 && r.lost > 0, 'the subscriber pauses 20 ms every 2000 records: lapped, it loses some');
      }
    });

    it('a lossless Node publisher waits for C subscribers, which wake it: each reads every record', async () => {
      const publisher = create(true);
      const subs = await cSubscribers(RECORDS);
      const failed = anyFailed(subs);
      const scratch = new Uint8Array(MAX_LENGTH);
      for (let i = 0; i < RECORDS; i++) await writeOrWait(publisher, patternMessage(scratch, i), patternType(i), failed);
      for (const sub of subs) {
        const r = await reportOf(sub);
        assert.deepEqual([r.first, r.received, r.lost], [0, RECORDS, 0]);
      }
      const wakes = signalCount(region!, WRITE_SIGNAL_I32);
      console.log(`      Node waited ${nodeWaits} times; the C subscribers signalled the parked publisher ${wakes} times`);
      assert.ok(nodeWaits > 0 && wakes > 0, `Node waited ${nodeWaits} times, the C subscribers signalled ${wakes} times`);
    });

    it('a lossy C publisher laps a Node subscriber, which accounts for every record (received + lost), none torn, in order', async () => {
      const publisher = create(false);
      const sub = subscribe();
      publisher.detach(); // lets go of the publisher role (the Broadcast stays open) for the C publisher
      const peer = runPeer(binary, ['bcast-publish', regionPath, String(RECORDS)]);
      peers = [peer];
      await readRecords(sub, RECORDS, peer.failed);
      assert.equal((await peer.done).code, 0);
      console.log(`      Node received ${sub.received}, lost ${sub.lost}; it waited ${nodeWaits} times`);
      assert.equal(sub.received + sub.lost, RECORDS);
      assert.ok(sub.received > 0);
      assert.equal(sub.tryRead(), null, 'the C publisher published more than it was asked');
    });

    it('a lossless C publisher waits for a Node subscriber, which wakes it (parked) and reads every record', async () => {
      const publisher = create(true);
      const sub = subscribe();
      publisher.detach();
      const peer = runPeer(binary, ['bcast-publish', regionPath, String(RECORDS), '--park', '--stats']);
      peers = [peer];
      await readRecords(sub, RECORDS, peer.failed);
      const stats = await statsOf(peer);
      console.log(
        `      the C publisher parked on a full Broadcast: woken ${stats.parksWoken}, signal already bumped ${stats.parksChanged}, ` +
          `napped out ${stats.parksTimedOut}; Node waited ${nodeWaits} times`,
      );
      assert.deepEqual([sub.received, sub.lost], [RECORDS, 0]);
      assert.ok(stats.parksWoken + stats.parksChanged > 0, 'the C publisher never parked (or was never woken)');
    });

    it('a lossless C publisher frees the slots of subscribers SIGKILLed under it, within its check period, and goes on: the live Node subscriber reads every record', async () => {
      const publisher = create(true);
      const sub = subscribe();
      // C subscribers that join (each holding its slot's lock byte, OWNER its token) and are killed before they read a record.
      const doomed = await cSubscribers(RECORDS);
      for (const peer of doomed) peer.child.kill('SIGKILL');
      await Promise.all(doomed.map((peer) => peer.done));
      publisher.detach();
      // Hundreds of laps of the 4 KiB ring: the dead subscribers' cursors, still at 0, hold the publisher back at the first.
      const count = 10_000;
      const peer = runPeer(binary, ['bcast-publish', regionPath, String(count), '--park', '--stats', '--peer-timeout-ms', '400']);
      peers.push(peer);
      const started = performance.now();
      // 200 records are some five laps: past the first, only once the dead slots are freed.
      await readRecords(sub, 200, peer.failed);
      const freedAfter = performance.now() - started;
      await readRecords(sub, count, peer.failed);
      const stats = await statsOf(peer);
      console.log(
        `      the C publisher freed ${stats.sweptSubscribers} dead subscribers' slots; the first laps took ${freedAfter.toFixed(0)} ms`,
      );
      assert.deepEqual([sub.received, sub.lost], [count, 0]);
      // Every C subscriber was killed; the slots of all SUBSCRIBERS of them held the publisher back until swept.
      assert.equal(stats.sweptSubscribers, SUBSCRIBERS);
      assert.ok(
        freedAfter < 5_000,
        `the publisher went past its first lap only after ${freedAfter.toFixed(0)} ms (its check period is 100 ms)`,
      );
    });

    it('a C subscriber that comes before its Broadcast waits for it holding nothing, and joins the one laid out', async () => {
      // Held while it waited, the lock kept out the create it waited for: any create but a Broadcast's gave up.
      ({ regionPath, region } = fileRegion('bcast-early', Broadcast.regionSize({ capacity: 4096 })));
      const peer = runPeer(binary, ['bcast-subscribe', regionPath, '10']);
      peers.push(peer);
      const until = performance.now() + 300;
      while (performance.now() < until) {
        assert.equal(heldByAnyone(region, HOLDER_LOCK_OFFSET), false, 'the C subscriber held the place while it waited for a ring');
        await sleep(5);
      }
      assert.equal(peer.child.exitCode, null, `the C subscriber did not wait for its Broadcast: ${peer.stdout}`);
      const publisher = Broadcast.create(region, { capacity: 4096 });
      closeables.push(publisher);
      await waitFor(() => peer.stdout.includes('joined') || peer.child.exitCode !== null, 'the C subscriber joined');
      if (!peer.stdout.includes('joined')) assert.fail(`the C subscriber exited with ${peer.child.exitCode}: ${(await peer.done).stderr}`);
      assert.equal(heldByAnyone(region, HOLDER_LOCK_OFFSET), true, 'the C subscriber holds the Broadcast it joined');
      const scratch = new Uint8Array(MAX_LENGTH);
      for (let i = 0; i < 10; i++) assert.ok(publisher.tryWrite(patternMessage(scratch, i), patternType(i)));
      const report = await reportOf(peer);
      assert.deepEqual([report.received, report.lost], [10, 0]);
    });

    it('a C subscriber holds the HOLDER lock shared before it reads the header: it waits out a creator laying the Broadcast out, and a create that would lay it out anew sees it and wipes nothing', async () => {
      const count = 1_000;
      create(false).detach(); // a Broadcast that nobody holds: a create may lay a new one out over it
      // A creator that found the ring unheld holds HOLDER exclusively while it lays the ring out (Roles.holdFirst).
      const creator = Roles.holdFirst(region!, 0, 'the test as a creator');
      assert.equal(creator?.alone, true, 'somebody else held the ring');
      const peer = runPeer(binary, ['bcast-subscribe', regionPath, String(count)]);
      peers.push(peer);
      try {
        await sleep(300);
        assert.equal(peer.child.exitCode, null, `the C subscriber did not wait for the creator: ${peer.stdout}`);
        assert.equal(peer.stdout.includes('joined'), false, 'the C subscriber joined a Broadcast being laid out');
      } finally {
        creator?.roles.release(); // the creator lets go without laying anything out
      }
      await waitFor(() => peer.stdout.includes('joined') || peer.child.exitCode !== null, 'the C subscriber joined');
      if (!peer.stdout.includes('joined')) assert.fail(`the C subscriber exited with ${peer.child.exitCode}: ${(await peer.done).stderr}`);
      // Other options: a create would lay out a new Broadcast, but the C subscriber holds this one.
      assert.throws(
        () => Broadcast.create(region!, { capacity: 2048 }),
        (err: Error & { code?: string }) => err.code === ErrorCodes.INVALID_ARGUMENT && /which subscribers still hold/.test(err.message),
      );
      // The same options take it over, and the C subscriber reads every record from its join on.
      const publisher = Broadcast.create(region!, { capacity: 4096 });
      closeables.push(publisher);
      const scratch = new Uint8Array(MAX_LENGTH);
      for (let i = 0; i < count; ) {
        if (publisher.tryWrite(patternMessage(scratch, i), patternType(i))) i++;
        else await sleep(1);
      }
      const r = await reportOf(peer);
      assert.deepEqual([r.first, r.received + r.lost], [0, count]);
    });

    it('a C publisher that pauses until Node is parked in await read() wakes it after every pause, and Node gets every record', async () => {
      const publisher = create(true);
      const sub = subscribe();
      publisher.detach();
      const peer = runPeer(binary, [
        'bcast-publish',
        regionPath,
        String(PAUSED_COUNT),
        '--pause-every',
        String(PAUSE_EVERY),
        '--pause-ms',
        '3',
        '--stats',
      ]);
      peers = [peer];
      assert.equal(await readPattern(sub, PAUSED_COUNT, peer, { asyncOnly: true }), null);
      const stats = await statsOf(peer);
      assert.deepEqual([sub.received, sub.lost], [PAUSED_COUNT, 0]);
      console.log(
        `      C paused ${stats.pauses} times until Node was parked; its next FUTEX_WAKE found Node asleep ${stats.pauseWakes} times`,
      );
      assert.equal(stats.pauses, PAUSES, 'pauses that ended with Node parked');
      assert.ok(stats.pauseWakes >= PAUSES * 0.75, `the C FUTEX_WAKE found Node asleep after only ${stats.pauseWakes} of ${PAUSES} pauses`);
    });

    /*
     * "A record left half-written: the repair". A Node publisher publishes
     * records (record k is message k of the pattern) that a Node subscriber
     * reads along, all but the last UNREAD; it lets go of the role, and the
     * test leaves the counters as a publisher killed in the middle of the
     * next record R leaves them (INTENT past TAIL by R's extent, COUNT
     * counting R or not, high words torn where R crosses a multiple of
     * 2^32), with garbage where R's bytes would be. ring_peer bcast-publish
     * takes the role over: it must repair, not refuse (the peer before the
     * repair exited 4, corrupt), and jump to J, the start of the lap after
     * next, INTENT's high words torn or not (R's publisher died inside its
     * INTENT store: the same jump, which stores INTENT whole; the peer that
     * put INTENT back to the tail with no jump is unsafe after a repair
     * killed in its own jump, see below).
     */
    const REPAIR_CAPACITY = 4096;
    /** Records the Node subscriber has not read when the publisher dies. */
    const UNREAD = 6;
    const TWO32 = 2 ** 32;
    const recordSize = (payload: number): number => (payload + 8 + 7) & ~7;
    /** The end of a record of `size` bytes written at position `at` (after the padding, if it wraps). */
    const recordEnd = (at: number, size: number): number => {
      const toEnd = REPAIR_CAPACITY - (at % REPAIR_CAPACITY);
      return at + (size <= toEnd ? size : toEnd + size);
    };
    /** A 64-bit counter (B.INTENT, B.COUNT) whole; fails if its high words are torn. */
    const counter = (ctl: Int32Array, c: B.Counter64): number => {
      const [hi1, lo, hi2] = [Atomics.load(ctl, c.hi1) >>> 0, Atomics.load(ctl, c.lo) >>> 0, Atomics.load(ctl, c.hi2) >>> 0];
      assert.equal(hi1, hi2, 'a torn counter');
      return hi1 * TWO32 + lo;
    };
    const setCounter = (ctl: Int32Array, c: B.Counter64, value: number): void => {
      Atomics.store(ctl, c.hi1, Math.floor(value / TWO32) | 0);
      Atomics.store(ctl, c.lo, (value % TWO32) | 0);
      Atomics.store(ctl, c.hi2, Math.floor(value / TWO32) | 0);
    };

    interface Death {
      title: string;
      /** Records the Node publisher writes before it dies. */
      records: number;
      /**
       * Near 2^35: the Broadcast starts (its counters set before anyone subscribes) where the records end just
       * before 9 * 2^32, R crossing it, and R is record 2^32 - 1 (its count crosses 2^32). Otherwise at 0.
       */
      high?: boolean;
      /** Leaves the counters as the publisher died them, R ending at `intent`: returns c, the count the repair must find. */
      kill(ctl: Int32Array, tail: number, intent: number, count: number, lossless: boolean): number;
    }

    /** Where records base .. base + records - 1 start so that the next, R, crosses 9 * 2^32 (R pads to it or spans it). */
    const highStart = (base: number, records: number): number => {
      for (let start = 9 * TWO32 - 4 * REPAIR_CAPACITY; start < 9 * TWO32; start += 8) {
        let at = start;
        for (let k = base; k < base + records; k++) at = recordEnd(at, recordSize(patternLength(k)));
        if (at < 9 * TWO32 && recordEnd(at, recordSize(patternLength(base + records))) >= 9 * TWO32) return start;
      }
      throw new Error(`no start puts record ${base + records} across 9 * 2^32`);
    };
    const DEATHS: Death[] = [
      {
        title: 'after its INTENT store (COUNT not bumped)',
        records: 60,
        kill(ctl, _tail, intent, count) {
          Atomics.store(ctl, B.INTENT.lo, intent | 0);
          return count;
        },
      },
      {
        title: 'after its INTENT and COUNT stores (R counted, and lost)',
        records: 60,
        kill(ctl, _tail, intent, count) {
          Atomics.store(ctl, B.INTENT.lo, intent | 0);
          Atomics.store(ctl, B.COUNT.lo, (count + 1) | 0);
          return count + 1;
        },
      },
      {
        title: 'while INTENT crossed 9 * 2^32 (HI1 = HI2 + 1)',
        records: 100,
        high: true,
        kill(ctl, tail, intent, count, lossless) {
          assert.equal(Math.floor(intent / TWO32), Math.floor(tail / TWO32) + 1, 'R crosses a high word');
          Atomics.store(ctl, B.INTENT.hi1, Math.floor(intent / TWO32) | 0);
          // Lossless: killed right after the HI1 store (LO still the tail's); lossy: after the LO store too.
          if (!lossless) Atomics.store(ctl, B.INTENT.lo, intent | 0);
          return count;
        },
      },
      {
        title: 'while COUNT crossed 2^32 (HI1 = HI2 + 1; INTENT past 9 * 2^32, whole)',
        records: 100,
        high: true,
        kill(ctl, _tail, intent, count, lossless) {
          assert.equal(count, TWO32 - 1, 'R is record 2^32 - 1');
          setCounter(ctl, B.INTENT, intent);
          Atomics.store(ctl, B.COUNT.hi1, 1);
          // Lossless: killed right after the HI1 store (LO still 2^32 - 1); lossy: after the LO store too.
          if (!lossless) Atomics.store(ctl, B.COUNT.lo, 0);
          return count + 1;
        },
      },
    ];

    for (const lossless of [false, true]) {
      for (const death of DEATHS) {
        const mode = lossless ? 'lossless' : 'lossy';
        const when = `it jumps ${lossless ? 'only once the Node subscriber has read every record published before the death' : 'at once'}`;
        // Once, lossless: a subscriber that died before the death (OWNER left set, its lock gone with it) holds a slot
        // whose CURSOR never reaches T, which the repair's wait must free (LAYOUT.md, the repair, step 5) or wait for ever.
        const deadSubscriber = lossless && death === DEATHS[0];
        const swept = deadSubscriber ? ', and frees the slot of a subscriber that died before the death' : '';
        it(`a ${mode} C publisher repairs a record its dead predecessor left half-written ${death.title}: ${when}${swept}; nothing torn, received + lost exact`, async () => {
          const publisher = create(lossless, REPAIR_CAPACITY);
          const ctl = new Int32Array(region!.buffer, 0, B.broadcastDataOffset(B.DEFAULT_SUBSCRIBERS) / 4);
          const data = new Uint8Array(region!.buffer, B.broadcastDataOffset(B.DEFAULT_SUBSCRIBERS), REPAIR_CAPACITY);
          let pub = publisher;
          let base = 0;
          const records = death.records;
          let position = 0;
          if (death.high) {
            // An empty Broadcast whose counters say that `base` records were published up to `position`: a quiescent
            // snapshot (INTENT == TAIL, LATEST there too: no newest record) that the subscriber joins and a create takes over.
            base = TWO32 - 1 - records; // so that R, record base + records, is record 2^32 - 1
            position = highStart(base, records);
            setCounter(ctl, B.INTENT, position);
            setCounter(ctl, B.COUNT, base);
            Atomics.store(ctl, B.LATEST_I32, position | 0);
            Atomics.store(ctl, B.TAIL_I32, position | 0);
          }
          const sub = subscribe();
          if (death.high) {
            publisher.detach();
            pub = Broadcast.create(region!, { capacity: REPAIR_CAPACITY, lossless }); // takes over: P and K from the snapshot
            closeables.push(pub);
          }
          const failed = new AbortController().signal;
          /** Reads one record, checked against the pattern of its number (the subscriber joined at record `base`). */
          const readOne = async (signal: AbortSignal): Promise<void> => {
            const message = await readOrWait(sub, signal);
            assert.equal(mismatch(message, sub.lastType, base + sub.received + sub.lost - 1), null);
          };
          const scratch = new Uint8Array(MAX_LENGTH);
          for (let i = 0; i < records; i++) {
            const k = base + i;
            assert.equal(pub.tryWrite(patternMessage(scratch, k), patternType(k)), true);
            position = recordEnd(position, recordSize(patternLength(k)));
            while (i + 1 - sub.received > UNREAD) await readOne(failed);
          }
          pub.detach();
          // The tail the records left, and R (record base + records) as its publisher was writing it.
          const tail = position;
          const count = base + records;
          assert.deepEqual(
            [counter(ctl, B.INTENT), Atomics.load(ctl, B.TAIL_I32) >>> 0, counter(ctl, B.COUNT)],
            [tail, tail % TWO32, count],
          );
          const rSize = recordSize(patternLength(count));
          const intent = recordEnd(tail, rSize);
          const c = death.kill(ctl, tail, intent, count, lossless);
          const deadSlot = B.slotOffset(B.DEFAULT_SUBSCRIBERS - 1) / 4;
          if (deadSubscriber) {
            // What a subscriber SIGKILLed after reading the records before the last 8 bytes leaves: its slot's words
            // (a C subscriber's token), and no lock on the slot's byte.
            assert.equal(Atomics.load(ctl, deadSlot + B.SLOT_OWNER_I32), 0, 'the last slot is taken');
            Atomics.store(ctl, deadSlot + B.SLOT_CURSOR_I32, (tail - 8) | 0);
            Atomics.store(ctl, deadSlot + B.SLOT_OWNER_I32, 0x80000000 | 4_000_000 | 0);
          }
          // R's bytes: garbage (headers no publisher writes) from the tail to R's end, wrapping.
          for (let at = tail; at < intent; at++) data[at % REPAIR_CAPACITY] = 0xa7;
          const jump = (Math.floor(tail / REPAIR_CAPACITY) + 2) * REPAIR_CAPACITY;
          const left = [B.INTENT.hi1, B.INTENT.lo, B.INTENT.hi2, B.TAIL_I32, B.COUNT.hi1, B.COUNT.lo, B.COUNT.hi2].map((i) =>
            Atomics.load(ctl, i),
          );
          const before = sub.received;
          assert.equal(before, records - UNREAD);

          const n = lossless ? 2_000 : 20;
          // Lossy: its records wait for Node parked in read(), so the repair's stores can be seen alone.
          const peer = repairingPublisher(n, lossless);
          if (lossless) {
            // The C publisher must wait for the subscriber's unread records: nothing stored, nothing jumped.
            await sleep(300);
            assert.equal(peer.child.exitCode, null, `the lossless C publisher exited before the subscriber read on: ${peer.stdout}`);
            const now = [B.INTENT.hi1, B.INTENT.lo, B.INTENT.hi2, B.TAIL_I32, B.COUNT.hi1, B.COUNT.lo, B.COUNT.hi2].map((i) =>
              Atomics.load(ctl, i),
            );
            assert.deepEqual(now, left, 'the lossless C publisher jumped before the subscriber read every record');
          } else {
            // Lossy: the jump comes at once; the subscriber reads only after it (its records from before are lost).
            await waitFor(() => peer.stdout.includes('repairTail') || peer.child.exitCode !== null, 'the C publisher repaired');
            if (!peer.stdout.includes('repairTail'))
              assert.fail(`the C publisher exited with ${peer.child.exitCode}: ${(await peer.done).stderr}`);
          }
          if (!lossless) {
            // Whole again, at J: the jump's stores, before the subscriber reads on.
            assert.deepEqual(
              [counter(ctl, B.INTENT), Atomics.load(ctl, B.TAIL_I32) >>> 0, counter(ctl, B.COUNT), Atomics.load(ctl, B.LATEST_I32) >>> 0],
              [jump, jump % TWO32, c, jump % TWO32],
              'the counters once the lossy C publisher jumped (LATEST == TAIL: no newest record)',
            );
          }
          const total = c + n - base; // records published since the subscriber joined, R among them if counted
          while (sub.received + sub.lost < total) await readOne(peer.failed);
          const { code, stderr, stdout } = await peer.done;
          assert.equal(code, 0, stderr);
          const repair = JSON.parse(stdout.split('\n').find((line) => line.includes('repairTail')) ?? '{}');
          assert.deepEqual(repair, { repairTail: tail, repairCount: c, jump }, 'what ring_peer found and where it jumped');
          console.log(`      Node received ${sub.received}, lost ${sub.lost}; the C publisher jumped from ${tail} to ${jump}, count ${c}`);
          // Lossless: every record from before the death, then R if it was counted (lost), then all the C publisher's.
          // Lossy: the unread ones are lost with R (if counted); the C publisher's come after the subscriber resettled at J.
          // INTENT torn (a death inside step 1): R not counted, not lost.
          const lost = (lossless ? 0 : UNREAD) + (c - count);
          assert.deepEqual([sub.received, sub.lost], [before + (lossless ? UNREAD : 0) + n, lost]);
          assert.equal(sub.tryRead(), null, 'the C publisher published more than it was asked');
          assert.equal(counter(ctl, B.COUNT), c + n);
          if (deadSubscriber) assert.equal(Atomics.load(ctl, deadSlot + B.SLOT_OWNER_I32), 0, "the dead subscriber's slot was not freed");
        });
      }
    }

    /*
     * "A record left half-written": a repair killed in its own jump is
     * completed. As above, a Node publisher publishes (lossy: UNREAD
     * records left unread; lossless: none, since a lossless repair jumps
     * only once every cursor is at the tail) and dies in the middle of the
     * next record R (INTENT at R's end, COUNT counting R, garbage bytes).
     * Then the counters are left as a repair killed after its INTENT store
     * of J leaves them: J whole (up to 2 * CAPACITY past the tail; here more
     * than the CAPACITY * 3 / 2 a record reaches, so T mod CAPACITY <
     * CAPACITY / 2), or, J landing on 9 * 2^32, killed after INTENT's HI1
     * store (torn; and, once, R's publisher had died inside its COUNT store,
     * crossing 2^32, so COUNT is torn too). ring_peer bcast-publish takes the
     * role over: the same T, c and J, and its records after J. (The peer
     * before this rule refused the whole J, exit 4, and put a torn INTENT
     * back to the tail with no jump.)
     */
    interface KilledJump {
      title: string;
      /** Where the killed repair jumped to: the records end T with J = (floor(T / CAPACITY) + 2) * CAPACITY. */
      jump: number;
      /** Records before the subscriber joined: R is record base + JUMP_RECORDS. */
      base: number;
      /** The killed repair's stores of J. */
      kill(ctl: Int32Array, jump: number): void;
    }
    const JUMP_RECORDS = 20;
    const KILLED_JUMPS: KilledJump[] = [
      {
        title: 'after its INTENT = J store (whole, J - T > CAPACITY * 3 / 2)',
        jump: 9 * TWO32 + 16 * REPAIR_CAPACITY,
        base: 0,
        kill: (ctl, jump) => setCounter(ctl, B.INTENT, jump),
      },
      {
        title: 'after its INTENT HI1 store, J = 9 * 2^32 (INTENT torn)',
        jump: 9 * TWO32,
        base: 0,
        kill: (ctl, jump) => Atomics.store(ctl, B.INTENT.hi1, jump / TWO32),
      },
      {
        title: "after its INTENT HI1 store, J = 9 * 2^32 (INTENT torn, and COUNT: R's publisher was killed crossing 2^32)",
        jump: 9 * TWO32,
        base: TWO32 - 1 - JUMP_RECORDS,
        kill: (ctl, jump) => Atomics.store(ctl, B.INTENT.hi1, jump / TWO32),
      },
    ];
    /** Where records base .. base + JUMP_RECORDS - 1 start so that they end at T, J - 2 * CAPACITY <= T < J - CAPACITY * 3 / 2. */
    const jumpStart = (base: number, jump: number): number => {
      for (let start = jump - 8 * REPAIR_CAPACITY; start < jump; start += 8) {
        let at = start;
        for (let k = base; k < base + JUMP_RECORDS; k++) at = recordEnd(at, recordSize(patternLength(k)));
        if (at >= jump - 2 * REPAIR_CAPACITY && at < jump - (3 * REPAIR_CAPACITY) / 2) return start;
      }
      throw new Error(`no start puts the tail within 2 * CAPACITY of ${jump}`);
    };

    for (const lossless of [false, true]) {
      for (const killed of KILLED_JUMPS) {
        const mode = lossless ? 'lossless' : 'lossy';
        it(`a ${mode} C publisher completes the jump of a repair killed ${killed.title}: the same T, c and J, received + lost exact`, async () => {
          const publisher = create(lossless, REPAIR_CAPACITY);
          const ctl = new Int32Array(region!.buffer, 0, B.broadcastDataOffset(B.DEFAULT_SUBSCRIBERS) / 4);
          const data = new Uint8Array(region!.buffer, B.broadcastDataOffset(B.DEFAULT_SUBSCRIBERS), REPAIR_CAPACITY);
          const { base, jump } = killed;
          // An empty Broadcast whose counters say `base` records were published up to `position` (quiescent, no newest
          // record): the subscriber joins it, and a new Node publisher takes it over.
          let position = jumpStart(base, jump);
          setCounter(ctl, B.INTENT, position);
          setCounter(ctl, B.COUNT, base);
          Atomics.store(ctl, B.LATEST_I32, position | 0);
          Atomics.store(ctl, B.TAIL_I32, position | 0);
          const sub = subscribe();
          publisher.detach();
          const pub = Broadcast.create(region!, { capacity: REPAIR_CAPACITY, lossless });
          closeables.push(pub);
          const failed = new AbortController().signal;
          const readOne = async (signal: AbortSignal): Promise<void> => {
            const message = await readOrWait(sub, signal);
            assert.equal(mismatch(message, sub.lastType, base + sub.received + sub.lost - 1), null);
          };
          const unread = lossless ? 0 : UNREAD;
          const scratch = new Uint8Array(MAX_LENGTH);
          for (let i = 0; i < JUMP_RECORDS; i++) {
            const k = base + i;
            assert.equal(pub.tryWrite(patternMessage(scratch, k), patternType(k)), true);
            position = recordEnd(position, recordSize(patternLength(k)));
            while (i + 1 - sub.received > unread) await readOne(failed);
          }
          pub.detach();
          const tail = position;
          const count = base + JUMP_RECORDS;
          assert.equal((Math.floor(tail / REPAIR_CAPACITY) + 2) * REPAIR_CAPACITY, jump, 'the tail jumps to J');
          // R's publisher died after its INTENT store and in (or after) its COUNT store; garbage from the tail to R's end.
          const intent = recordEnd(tail, recordSize(patternLength(count)));
          assert.equal(Math.floor(intent / TWO32), Math.floor(tail / TWO32), 'R does not cross a high word');
          Atomics.store(ctl, B.INTENT.lo, intent | 0);
          const c = count + 1;
          if (Math.floor(c / TWO32) !== Math.floor(count / TWO32)) Atomics.store(ctl, B.COUNT.hi1, c / TWO32);
          else Atomics.store(ctl, B.COUNT.lo, c | 0);
          for (let at = tail; at < intent; at++) data[at % REPAIR_CAPACITY] = 0xa7;
          // The repair that took over was killed in its jump, after (some of) its INTENT stores.
          killed.kill(ctl, jump);
          assert.equal(sub.received, JUMP_RECORDS - unread);

          const n = lossless ? 2_000 : 20;
          const peer = repairingPublisher(n, lossless);
          if (!lossless) {
            await waitFor(() => peer.stdout.includes('repairTail') || peer.child.exitCode !== null, 'the C publisher repaired');
            if (!peer.stdout.includes('repairTail'))
              assert.fail(`the C publisher exited with ${peer.child.exitCode}: ${(await peer.done).stderr}`);
            assert.deepEqual(
              [counter(ctl, B.INTENT), Atomics.load(ctl, B.TAIL_I32) >>> 0, counter(ctl, B.COUNT)],
              [jump, jump % TWO32, c],
              'the counters once the lossy C publisher completed the jump',
            );
          }
          while (sub.received + sub.lost < c + n - base) await readOne(peer.failed);
          const { code, stderr, stdout } = await peer.done;
          assert.equal(code, 0, stderr);
          const repair = JSON.parse(stdout.split('\n').find((line) => line.includes('repairTail')) ?? '{}');
          assert.deepEqual(repair, { repairTail: tail, repairCount: c, jump }, 'what ring_peer found and where it jumped');
          // The unread records and R (counted) lost; then every record of the C publisher, from J on.
          assert.deepEqual([sub.received, sub.lost], [JUMP_RECORDS - unread + n, unread + 1]);
          assert.equal(sub.tryRead(), null, 'the C publisher published more than it was asked');
          let end = jump;
          for (let k = c; k < c + n; k++) end = recordEnd(end, recordSize(patternLength(k)));
          assert.deepEqual([counter(ctl, B.INTENT), counter(ctl, B.COUNT)], [end, c + n], 'the C records, from J on');
        });
      }
    }

    /** ctl's index of the slot a subscriber took (the only one with OWNER set), once it has taken it. */
    const takenSlot = (ctl: Int32Array): number => {
      const taken = Array.from({ length: B.DEFAULT_SUBSCRIBERS }, (_, i) => B.slotOffset(i) / 4).filter(
        (s) => Atomics.load(ctl, s + B.SLOT_OWNER_I32) !== 0,
      );
      assert.equal(taken.length, 1, 'one subscriber slot taken');
      return taken[0]!;
    };

    /**
     * A lossless Node publisher that published records 0 .. 9 of the pattern, then died after its INTENT store
     * of record 10 (no quiescent snapshot, garbage at the tail): the control words, a scratch buffer, 10, and the tail.
     */
    const losslessPublisherDied = (): { ctl: Int32Array; scratch: Uint8Array; records: number; tail: number } => {
      const publisher = create(true, REPAIR_CAPACITY);
      const ctl = new Int32Array(region!.buffer, 0, B.broadcastDataOffset(B.DEFAULT_SUBSCRIBERS) / 4);
      const data = new Uint8Array(region!.buffer, B.broadcastDataOffset(B.DEFAULT_SUBSCRIBERS), REPAIR_CAPACITY);
      const scratch = new Uint8Array(MAX_LENGTH);
      const records = 10;
      let tail = 0;
      for (let k = 0; k < records; k++) {
        assert.equal(publisher.tryWrite(patternMessage(scratch, k), patternType(k)), true);
        tail = recordEnd(tail, recordSize(patternLength(k)));
      }
      publisher.detach();
      const intent = recordEnd(tail, recordSize(patternLength(records)));
      Atomics.store(ctl, B.INTENT.lo, intent | 0);
      for (let at = tail; at < intent; at++) data[at % REPAIR_CAPACITY] = 0xa7;
      return { ctl, scratch, records, tail };
    };

    it('a lossless C subscriber joining while a dead publisher left no snapshot moves its slot CURSOR to TAIL at each vain try: a Node publisher repairing the record, parked until every CURSOR is at the tail, goes on', async () => {
      const { ctl, scratch, records } = losslessPublisherDied();
      const m = 100; // more than a ring of records: the Node publisher waits for the C subscriber's reads too
      const peer = runPeer(binary, ['bcast-subscribe', regionPath, String(records + m)]);
      peers = [peer];
      await waitFor(() => peer.stdout.includes('joined') || peer.child.exitCode !== null, 'the C subscriber took its slot');
      if (!peer.stdout.includes('joined')) assert.fail(`the C subscriber exited with ${peer.child.exitCode}: ${(await peer.done).stderr}`);
      await waitFor(() => Atomics.load(ctl, READ_WAITERS_I32) !== 0, 'the C subscriber parked, its join pending');
      // As if it had taken its slot before the dead publisher's records: its provisional CURSOR behind the tail.
      const slot = takenSlot(ctl);
      Atomics.store(ctl, slot + B.SLOT_CURSOR_I32, 0);
      // The Node publisher's repair waits until every CURSOR is at the tail, then jumps: only the C subscriber, woken
      // (or napping out) and trying its join again, moves its CURSOR there (the peer before this rule left it behind).
      const pub = Broadcast.create(region!, { capacity: REPAIR_CAPACITY, lossless: true });
      closeables.push(pub);
      for (let k = records; k < records + m; k++) await writeOrWait(pub, patternMessage(scratch, k), patternType(k), peer.failed);
      const r = await reportOf(peer);
      assert.deepEqual([r.first, r.received, r.lost], [records, m, 0], 'the C subscriber joined at the jump and read every record');
      assert.equal(counter(ctl, B.COUNT), records + m);
    });

    it("a lossless C publisher that takes over a dead publisher's record wakes the parked subscribers at once: a Node subscriber still joining (its CURSOR behind the tail) looks again and moves its CURSOR to TAIL, so the repair goes on", async () => {
      const { ctl, records, tail } = losslessPublisherDied();
      const sub = subscribe(); // its join finds no snapshot: pending
      const slot = takenSlot(ctl);
      // Parked at once, and no peer checks: only a wake makes it try its join again.
      const stop = new AbortController();
      const first = sub.read({ timeoutMs: WAIT_MS, peerTimeoutMs: Infinity, spin: 0, poll: 0, signal: stop.signal });
      await waitFor(() => Atomics.load(ctl, READ_WAITERS_I32) !== 0, 'the Node subscriber parked, its join pending');
      // As if it had taken its slot before the dead publisher's records: its provisional CURSOR behind the tail.
      Atomics.store(ctl, slot + B.SLOT_CURSOR_I32, 0);
      const n = 100; // more than a ring of records: the C publisher waits for the subscriber's reads too
      const peer = runPeer(binary, ['bcast-publish', regionPath, String(n), '--park']);
      peers = [peer];
      peer.failed.addEventListener('abort', () => stop.abort(peer.failed.reason));
      // The C publisher's wake at its takeover: the subscriber moves its CURSOR to TAIL (the repair's wait ends), then
      // joins at the jump and gets the C publisher's first record, record `records` (R was not counted).
      const message = await first;
      assert.equal(mismatch(message, sub.lastType, records), null);
      while (sub.received < n) {
        const next = await readOrWait(sub, peer.failed);
        assert.equal(mismatch(next, sub.lastType, records + sub.received - 1), null);
      }
      const { code, stderr, stdout } = await peer.done;
      assert.equal(code, 0, stderr);
      const jump = (Math.floor(tail / REPAIR_CAPACITY) + 2) * REPAIR_CAPACITY;
      const repair = JSON.parse(stdout.split('\n').find((line) => line.includes('repairTail')) ?? '{}');
      assert.deepEqual(repair, { repairTail: tail, repairCount: records, jump }, 'what ring_peer found and where it jumped');
      assert.deepEqual([sub.received, sub.lost], [n, 0]);
    });

    it("a lossless C subscriber hands out the records before the tail while INTENT's high words stay torn (its lap check cannot load INTENT: no lap), and reads on after a Node publisher's repair jumps (lost 0)", async () => {
      const publisher = create(true, REPAIR_CAPACITY);
      const ctl = new Int32Array(region!.buffer, 0, B.broadcastDataOffset(B.DEFAULT_SUBSCRIBERS) / 4);
      const scratch = new Uint8Array(MAX_LENGTH);
      /** Record 0 read before the death, 1 .. records - 1 after it (INTENT torn); then m from a new publisher. */
      const records = 4;
      const m = 3;
      // Counters near 9 * 2^32 (0 records), so that record `records` (R) crosses it: a quiescent snapshot the C
      // subscriber joins, and a new publisher takes over.
      let position = highStart(0, records);
      setCounter(ctl, B.INTENT, position);
      setCounter(ctl, B.COUNT, 0);
      Atomics.store(ctl, B.LATEST_I32, position | 0);
      Atomics.store(ctl, B.TAIL_I32, position | 0);
      // After each record it receives the C subscriber sleeps 200 ms: records 1 .. 3 and the death come in its first sleep.
      const peer = runPeer(binary, ['bcast-subscribe', regionPath, String(records + m), '--pause-every', '1', '--pause-ms', '1000']);
      peers = [peer];
      await waitFor(() => peer.stdout.includes('joined') || peer.child.exitCode !== null, 'the C subscriber joined');
      if (!peer.stdout.includes('joined')) assert.fail(`the C subscriber exited with ${peer.child.exitCode}: ${(await peer.done).stderr}`);
      const slot = takenSlot(ctl);
      assert.equal(Atomics.load(ctl, slot + B.SLOT_CURSOR_I32) >>> 0, position % TWO32, 'the C subscriber joined at the tail');
      publisher.detach();
      const first = Broadcast.create(region!, { capacity: REPAIR_CAPACITY, lossless: true }); // takes over: the C subscriber holds it
      closeables.push(first);
      const cursor = (): number => Atomics.load(ctl, slot + B.SLOT_CURSOR_I32) >>> 0;
      assert.equal(first.tryWrite(patternMessage(scratch, 0), patternType(0)), true);
      position = recordEnd(position, recordSize(patternLength(0)));
      await waitFor(() => cursor() === position % TWO32, 'the C subscriber read record 0');
      for (let k = 1; k < records; k++) {
        assert.equal(first.tryWrite(patternMessage(scratch, k), patternType(k)), true);
        position = recordEnd(position, recordSize(patternLength(k)));
      }
      first.detach();
      // Killed inside its INTENT store of R, after HI1 and LO: the high words torn for good.
      const tail = position;
      const intent = recordEnd(tail, recordSize(patternLength(records)));
      assert.equal(Math.floor(intent / TWO32), Math.floor(tail / TWO32) + 1, 'R crosses a high word');
      Atomics.store(ctl, B.INTENT.hi1, Math.floor(intent / TWO32) | 0);
      Atomics.store(ctl, B.INTENT.lo, intent | 0);
      assert.notEqual(cursor(), tail % TWO32, 'the C subscriber read records 1 .. 3 before the death');
      // Lossless, a lap check whose INTENT load fails is no lap (a lossless publisher overwrites no unread byte).
      await waitFor(() => cursor() === tail % TWO32, 'the C subscriber read every record published before the death');
      assert.notEqual(Atomics.load(ctl, B.INTENT.hi1), Atomics.load(ctl, B.INTENT.hi2), 'INTENT still torn');
      // A new publisher repairs: every cursor is at the tail, so it jumps to J (INTENT whole again), and publishes on;
      // the C subscriber, lapped by the jump, resettles at J (R was not counted: nothing lost).
      const pub = Broadcast.create(region!, { capacity: REPAIR_CAPACITY, lossless: true });
      closeables.push(pub);
      for (let k = records; k < records + m; k++) await writeOrWait(pub, patternMessage(scratch, k), patternType(k), peer.failed);
      const r = await reportOf(peer);
      assert.deepEqual([r.first, r.received, r.lost], [0, records + m, 0], 'the C subscriber read every record');
      let end = (Math.floor(tail / REPAIR_CAPACITY) + 2) * REPAIR_CAPACITY;
      for (let k = records; k < records + m; k++) end = recordEnd(end, recordSize(patternLength(k)));
      assert.deepEqual([counter(ctl, B.INTENT), counter(ctl, B.COUNT)], [end, records + m], "the Node publisher's records, from J on");
    });

    it('a C publisher still refuses counters no dead publisher leaves (exit 4, corrupt), having written nothing', async () => {
      const publisher = create(false, REPAIR_CAPACITY);
      const sub = subscribe();
      const scratch = new Uint8Array(MAX_LENGTH);
      for (let k = 0; k < 10; k++) assert.equal(publisher.tryWrite(patternMessage(scratch, k), patternType(k)), true);
      publisher.detach();
      const ctl = new Int32Array(region!.buffer, 0, B.broadcastDataOffset(B.DEFAULT_SUBSCRIBERS) / 4);
      const words = [B.INTENT.hi1, B.INTENT.lo, B.INTENT.hi2, B.TAIL_I32, B.COUNT.hi1, B.COUNT.lo, B.COUNT.hi2, B.LATEST_I32];
      const quiescent = words.map((i) => Atomics.load(ctl, i));
      const tail = Atomics.load(ctl, B.TAIL_I32) >>> 0;
      const impossible: [string, () => void][] = [
        ['INTENT more than 2 * CAPACITY past TAIL', () => Atomics.store(ctl, B.INTENT.lo, tail + 2 * REPAIR_CAPACITY + 8)],
        [
          'an INTENT smaller than its distance from TAIL (T < 0)',
          () => {
            Atomics.store(ctl, B.INTENT.lo, 16);
            Atomics.store(ctl, B.TAIL_I32, -16);
          },
        ],
        [
          'a tail that is not a multiple of 8',
          () => {
            Atomics.store(ctl, B.TAIL_I32, tail + 4);
            Atomics.store(ctl, B.INTENT.lo, tail + 20);
          },
        ],
        [
          'more records than 8-byte records fit before the tail, and one',
          () => {
            Atomics.store(ctl, B.INTENT.lo, tail + 16);
            Atomics.store(ctl, B.COUNT.lo, tail / 8 + 2);
          },
        ],
        [
          "INTENT's high words two apart",
          () => {
            Atomics.store(ctl, B.INTENT.hi1, 2);
            Atomics.store(ctl, B.INTENT.lo, tail + 16);
          },
        ],
        [
          "COUNT's high words two apart",
          () => {
            Atomics.store(ctl, B.INTENT.lo, tail + 16);
            Atomics.store(ctl, B.COUNT.hi1, 2);
          },
        ],
        [
          // The tail low word this far from 2^32: no INTENT store (a record's, a jump's) crossing 2^32 starts there.
          "INTENT's high words torn, its crossing of 2^32 more than 2 * CAPACITY past TAIL",
          () => {
            Atomics.store(ctl, B.INTENT.hi1, 1);
            Atomics.store(ctl, B.TAIL_I32, -(2 * REPAIR_CAPACITY + 8));
          },
        ],
        [
          "INTENT's high words torn, and more records than 8-byte records fit before the tail, and one",
          () => {
            Atomics.store(ctl, B.INTENT.hi1, 1);
            Atomics.store(ctl, B.TAIL_I32, -REPAIR_CAPACITY);
            Atomics.store(ctl, B.COUNT.lo, (TWO32 - REPAIR_CAPACITY) / 8 + 2);
          },
        ],
        [
          // Both torn is no longer refused as such (a repair killed in its jump leaves it): refused for the count.
          "INTENT's and COUNT's high words both torn, and more records than 8-byte records fit before the tail, and one",
          () => {
            Atomics.store(ctl, B.INTENT.hi1, 1);
            Atomics.store(ctl, B.TAIL_I32, -REPAIR_CAPACITY);
            Atomics.store(ctl, B.COUNT.hi1, 1);
          },
        ],
      ];
      const restore = (): void => {
        for (const [j, i] of words.entries()) Atomics.store(ctl, i, quiescent[j]!);
      };
      for (const [what, kill] of impossible) {
        restore();
        kill();
        const left = words.map((i) => Atomics.load(ctl, i));
        const peer = runPeer(binary, ['bcast-publish', regionPath, '10']);
        peers = [peer];
        const { code, stderr } = await peer.done;
        assert.equal(code, EXIT_CORRUPT, `${what}: ${stderr}`);
        assert.match(stderr, /impossible counters/, what);
        assert.deepEqual(
          words.map((i) => Atomics.load(ctl, i)),
          left,
          `${what}: the C publisher wrote to the counters`,
        );
      }
      // Made quiescent again, the Broadcast is taken over as it was: the subscriber reads on.
      restore();
      const peer = runPeer(binary, ['bcast-publish', regionPath, '10']);
      peers = [peer];
      assert.equal((await peer.done).code, 0);
      while (sub.received + sub.lost < 20) {
        const message = await readOrWait(sub, peer.failed);
        assert.equal(mismatch(message, sub.lastType, sub.received + sub.lost - 1), null);
      }
      assert.deepEqual([sub.received, sub.lost], [20, 0]);
    });
  });
});
