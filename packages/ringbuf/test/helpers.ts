/** Small pieces the ring tests share. */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { Region, type ShmringError } from '@shmring/core';
import { Broadcast, type BroadcastPublisher, type BroadcastSubscriber } from '../src/index.js';
import * as L from '../src/layout.js';
import type { SubscriberReport } from './fixtures/broadcast-peer.js';

/** `length` pseudo-random bytes from `seed` (xorshift32): the same seed gives the same bytes. */
export function randomBytes(seed: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x;
  }
  return bytes;
}

let memfdProblem: string | undefined;
/** Why a memfd region cannot be made here (its error code and message), or undefined if it can. */
export function memfdUnavailable(): string | undefined {
  if (memfdProblem === undefined) {
    try {
      Region.create({ backing: 'memfd', size: 4096 }).close();
      memfdProblem = '';
    } catch (err) {
      memfdProblem = `${(err as ShmringError).code}: ${(err as Error).message}`;
    }
  }
  return memfdProblem === '' ? undefined : memfdProblem;
}

/** The command prefix that runs a child in a PID namespace of its own, as a container would. */
export const UNSHARE = ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child'];

/** A number no thread has in this PID namespace (a thread id from another namespace may be such a number here). */
/**
 * Moves both positions of the ring whose control words are `ctl` to
 * `position` while nothing is unread, as traffic that crossed no 2^30-byte
 * window boundary would leave them (the HEAD_EPOCH tests skip gigabytes so).
 * Only while no side runs: the sides that use the ring after are attached
 * (or take their roles) after it.
 */
export function skipPositions(ctl: Int32Array, position: number): void {
  // Publishes the forged positions to the sides that take their roles after (they load both then).
  Atomics.store(ctl, L.PRODUCER_POSITION_I32, position | 0);
  Atomics.store(ctl, L.CONSUMER_POSITION_I32, position | 0);
}

export function deadThreadId(): number {
  const max = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  for (let id = max - 1; id > 1; id--) if (!existsSync(`/proc/${id}`)) return id;
  throw new Error('every thread id is taken');
}

/**
 * Runs the shell `script` (with `args` as $0, $1, …) in a mount namespace
 * of its own, private (unshare -m; -r too unless this process is root), so
 * what it mounts or unmounts (a tmpfs over /proc, /proc gone) is its alone.
 */
export function inMountNamespace(script: string, args: string[] = [], timeoutMs = 30_000): SpawnSyncReturns<string> {
  const asRoot = process.geteuid?.() === 0;
  return spawnSync('unshare', [...(asRoot ? [] : ['-r']), '-m', '--propagation', 'private', 'sh', '-c', script, ...args], {
    encoding: 'utf8',
    timeout: timeoutMs,
  });
}

/** Runs the ES module `code` in Node after the shell command `mount`, in a mount namespace of its own (inMountNamespace). */
export function nodeAfterMount(mount: string, code: string): SpawnSyncReturns<string> {
  return inMountNamespace(`${mount} && exec "$0" --input-type=module -e "$1"`, [process.execPath, code]);
}

/** Why `unshare --pid --fork --mount-proc` cannot run here, or undefined if it can. */
export function unshareRefused(): string | undefined {
  const run = spawnSync(UNSHARE[0]!, [...UNSHARE.slice(1), 'true'], { encoding: 'utf8' });
  if (run.error) return `unshare: ${run.error.message}`;
  return run.status === 0 ? undefined : `unshare exited ${run.status}: ${run.stderr.trim()}`;
}

/**
 * A child `node <fixture> …args` (optionally under `prefix`, e.g. unshare)
 * whose stdout lines the test waits for; kill() SIGKILLs it and waits
 * until it is reaped. `inherit`: an fd of ours the child gets as its fd 3.
 */
export class LinePeer {
  readonly child: ChildProcess;
  readonly lines: string[] = [];
  stderr = '';
  readonly exited: Promise<void>;

  constructor(fixture: string, args: string[], prefix: string[] = [], inherit?: number) {
    const [command, ...rest] = [...prefix, process.execPath, fixture, ...args];
    this.child = spawn(command!, rest, { stdio: ['ignore', 'pipe', 'pipe', ...(inherit === undefined ? [] : [inherit])] });
    let buffered = '';
    this.child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const parts = buffered.split('\n');
      buffered = parts.pop()!;
      this.lines.push(...parts);
    });
    this.child.stderr!.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.exited = new Promise((resolve) => this.child.on('close', () => resolve()));
  }

  /** The first line starting with `prefix`, waiting up to `timeoutMs` for it. */
  async line(prefix: string, timeoutMs = 120_000): Promise<string> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = this.lines.find((l) => l.startsWith(prefix));
      if (found !== undefined) return found;
      if (performance.now() > deadline || this.child.exitCode !== null) {
        throw new Error(
          `no '${prefix}' line from the child (lines ${JSON.stringify(this.lines)}, exit ${this.child.exitCode}); stderr:\n${this.stderr}`,
        );
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }
}

/**
 * What a Broadcast test that works on one POSIX-named region needs from
 * test to test: before each, a fresh region of `capacity` bytes of data
 * named `<prefix>-<pid>-<random>`; after each, the peers it started
 * killed, the rings it opened closed, the region closed and unlinked.
 */
export class BroadcastPerTest {
  #name = '';
  #region: Region | undefined;
  readonly #peers: LinePeer[] = [];
  readonly #closeables: { close(): void }[] = [];

  constructor(
    prefix: string,
    readonly capacity: number,
  ) {
    beforeEach(() => {
      this.#name = `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
      this.#region = Region.create({ backing: 'posix', name: this.#name, size: Broadcast.regionSize({ capacity }) });
    });
    afterEach(async () => {
      await Promise.all(this.#peers.splice(0).map((p) => p.kill()));
      for (const c of this.#closeables.splice(0)) c.close();
      this.#region?.close();
      this.#region?.unlink();
      this.#region = undefined;
    });
  }

  /** This test's region's POSIX name. */
  get name(): string {
    return this.#name;
  }

  get region(): Region {
    assert.ok(this.#region, 'BroadcastPerTest: no region outside a test');
    return this.#region;
  }

  /** `c`, closed after the test; `first`: before what was tracked earlier. */
  track<T extends { close(): void }>(c: T, first = false): T {
    if (first) this.#closeables.unshift(c);
    else this.#closeables.push(c);
    return c;
  }

  /** `p`, SIGKILLed (and reaped) after the test. */
  peer(p: LinePeer): LinePeer {
    this.#peers.push(p);
    return p;
  }

  /** The publisher of this test's region (`Broadcast.create`), closed after the test. */
  create(lossless: boolean): BroadcastPublisher {
    return this.track(Broadcast.create(this.region, { capacity: this.capacity, lossless }));
  }

  /** A subscriber of this test's region, closed after the test. */
  subscribe(): BroadcastSubscriber {
    return this.track(Broadcast.subscribe(this.region));
  }
}

/** A subscriber's tally when messages may be lost: none torn, none out of order, and `received + lost` what was published. */
export function assertCounted(r: SubscriberReport, published: number, what: string): void {
  assert.equal(r.torn, 0, `${what}: torn messages`);
  assert.equal(r.disorder, 0, `${what}: a gap that \`lost\` did not count, or a message out of order`);
  assert.equal(r.received + r.lost, published, `${what}: received + lost = published`);
}
