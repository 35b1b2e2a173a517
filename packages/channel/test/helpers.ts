/**
 * Small pieces the channel tests share: a fresh socket directory per test,
 * the two ends of a channel (over a socket path, or a channelPair opened in
 * this same thread), child processes and worker threads running the
 * fixtures, error-code assertions, and counts of fds and /dev/shm entries.
 */
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import {
  channelPair,
  connect,
  listen,
  openChannel,
  type Channel,
  type ChannelHandle,
  type ChannelServer,
  type CodecOption,
} from '../src/index.js';
import type { PeerConfig } from './fixtures/peer.js';
import { NATS_MISSING, NATS_SERVER, sharedNats, uniqueSubject } from './nats-server.js';
import type { WorkerConfig } from './fixtures/worker.js';

export const PEER_PATH = fileURLToPath(new URL('./fixtures/peer.js', import.meta.url));
export const WORKER_URL = new URL('./fixtures/worker.js', import.meta.url);

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `length` pseudo-random bytes from `seed` (xorshift32): the same seed gives the same bytes. */
export function randomBytes(seed: number, length: number): Buffer {
  const bytes = Buffer.allocUnsafe(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x;
  }
  return bytes;
}

/** The error `promise` rejects with, checked to carry `code` (and, if given, a message matching `message`). */
export async function rejectsWith(promise: Promise<unknown>, code: string, message?: RegExp | string): Promise<Error & { code: string }> {
  let caught: unknown;
  let resolved = false;
  let value: unknown;
  try {
    value = await promise;
    resolved = true;
  } catch (err) {
    caught = err;
  }
  assert.ok(!resolved, `expected a rejection with ${code}, but it resolved with ${String(value)}`);
  const error = caught as Error & { code: string };
  assert.equal(error?.code, code, `expected code ${code}, got ${String(error?.code)}: ${String(error?.stack ?? error)}`);
  if (message !== undefined) {
    if (typeof message === 'string') assert.ok(error.message.includes(message), `message "${error.message}" should include "${message}"`);
    else assert.match(error.message, message);
  }
  return error;
}

/** The error `fn` throws synchronously, checked to carry `code`. */
export function throwsWith(fn: () => unknown, code: string): Error & { code: string } {
  try {
    fn();
  } catch (err) {
    const error = err as Error & { code: string };
    assert.equal(error?.code, code, `expected code ${code}, got ${String(error?.code)}: ${String(error?.stack ?? error)}`);
    return error;
  }
  assert.fail(`expected a throw with ${code}`);
}

/** Resolves once `condition()` holds; fails after `timeoutMs`. */
export async function waitUntil(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(2);
  }
}

/** Settles with the promise's outcome, or with 'pending' if it has not settled within `ms`. */
export async function settledWithin<T>(
  promise: Promise<T>,
  ms: number,
): Promise<{ status: 'fulfilled'; value: T } | { status: 'rejected'; reason: unknown } | { status: 'pending' }> {
  let timer: NodeJS.Timeout | undefined;
  const pending = new Promise<{ status: 'pending' }>((resolve) => {
    timer = setTimeout(() => resolve({ status: 'pending' }), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        (value) => ({ status: 'fulfilled' as const, value }),
        (reason: unknown) => ({ status: 'rejected' as const, reason }),
      ),
      pending,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

// ---- temporary socket directories ----

/** A fresh directory for socket paths; remove() deletes it with whatever is left. */
export class TmpDir {
  readonly dir: string;
  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-channel-test-'));
  }
  path(name = 'sock'): string {
    return path.join(this.dir, name);
  }
  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---- channel ends ----

export interface SocketEnds {
  dir: TmpDir;
  path: string;
  server: ChannelServer;
  /** connect()'s end. */
  client: Channel;
  /** The server's end of the same channel. */
  serverSide: Channel;
  /** Closes both ends and the server, waits for all of it, removes the directory. */
  dispose(): Promise<void>;
}

/** A server on a fresh path with one connected client; `poll` goes to both ends. */
export async function socketEnds(
  options: { capacity?: number; codec?: CodecOption; clientCodec?: CodecOption; poll?: number } = {},
): Promise<SocketEnds> {
  const dir = new TmpDir();
  const p = dir.path();
  let server: ChannelServer | undefined;
  let client: Channel;
  let serverSide: Channel;
  try {
    server = await listen(p, { capacity: options.capacity, codec: options.codec, poll: options.poll });
    const accepted = once(server, 'channel') as Promise<[Channel]>;
    client = await connect(p, { codec: options.clientCodec ?? options.codec, poll: options.poll });
    [serverSide] = await accepted;
  } catch (err) {
    await server?.close();
    dir.remove();
    throw err;
  }
  return {
    dir,
    path: p,
    server,
    client,
    serverSide,
    async dispose() {
      client.close();
      serverSide.close();
      await Promise.all([client.closed, serverSide.closed]);
      await server.close();
      dir.remove();
    },
  };
}

export interface PairEnds {
  /** channelPair's end (the creator). */
  a: Channel;
  /** openChannel's end, opened in this same thread. */
  b: Channel;
  handle: ChannelHandle;
  dispose(): Promise<void>;
}

/** Both ends of a channelPair, in this thread; `poll` goes to both ends. */
export function pairEnds(options: { capacity?: number; codec?: CodecOption; poll?: number } = {}): PairEnds {
  const [a, handle] = channelPair(options);
  const b = openChannel(handle, { codec: options.codec, poll: options.poll });
  return {
    a,
    b,
    handle,
    async dispose() {
      a.close();
      b.close();
      await Promise.all([a.closed, b.closed]);
    },
  };
}

export type Transport = 'socket' | 'pair' | 'nats';

/** The transports a parity suite runs over: NATS too where nats-server is installed (else it says so once). */
export function transports(): Transport[] {
  if (NATS_SERVER !== undefined) return ['socket', 'pair', 'nats'];
  if (!natsNoted) console.log(`  (the nats:// runs of the channel suites are skipped: ${NATS_MISSING})`);
  natsNoted = true;
  return ['socket', 'pair'];
}
let natsNoted = false;

/** How a suite's title names a transport. */
export function transportTitle(transport: Transport): string {
  return transport === 'socket' ? 'connect/listen channel' : transport === 'pair' ? 'channelPair' : 'connect/listen channel over nats://';
}

/** A NATS server (shared by the run) with one channel server and one client on a fresh subject. */
export async function natsEnds(
  options: { codec?: CodecOption; heartbeatMs?: number } = {},
): Promise<{ a: Channel; b: Channel; server: ChannelServer; dispose(): Promise<void> }> {
  const nats = await sharedNats();
  const url = nats.url(uniqueSubject('channel'));
  const server = await listen(url, { codec: options.codec, heartbeatMs: options.heartbeatMs });
  let a: Channel;
  let b: Channel;
  try {
    const accepted = once(server, 'channel') as Promise<[Channel]>;
    b = await connect(url, { codec: options.codec, heartbeatMs: options.heartbeatMs });
    [a] = await accepted;
  } catch (err) {
    await server.close();
    throw err;
  }
  return {
    a,
    b,
    server,
    async dispose() {
      a.close();
      b.close();
      await Promise.all([a.closed, b.closed]);
      await server.close();
    },
  };
}

/** Two ends of a channel over `transport`: [creator end (server / channelPair), opener end (connect / openChannel)]. */
export async function ends(
  transport: Transport,
  options: { capacity?: number; codec?: CodecOption; poll?: number } = {},
): Promise<{ a: Channel; b: Channel; dispose(): Promise<void> }> {
  if (transport === 'pair') return pairEnds(options);
  if (transport === 'nats') return natsEnds({ codec: options.codec });
  const s = await socketEnds(options);
  return { a: s.serverSide, b: s.client, dispose: () => s.dispose() };
}

/**
 * Inside a describe: a fresh pair of ends over `transport` for each of its
 * tests (made in beforeEach, disposed in afterEach), read through the
 * returned object's `a` and `b`.
 */
export function endsPerTest(
  transport: Transport,
  options: { capacity?: number; codec?: CodecOption; poll?: number } = {},
): { a: Channel; b: Channel } {
  const current = {} as { a: Channel; b: Channel };
  let dispose: (() => Promise<void>) | undefined;
  beforeEach(async function () {
    const made = await ends(transport, options);
    current.a = made.a;
    current.b = made.b;
    dispose = made.dispose;
  });
  afterEach(async function () {
    await dispose?.();
    dispose = undefined;
  });
  return current;
}

/** The 'close' event's argument, whenever it comes (recorded from now on). */
export function closeEvent(channel: Channel): Promise<Error | undefined> {
  return new Promise((resolve) => channel.once('close', (error?: Error) => resolve(error)));
}

// ---- child processes (fixtures/peer.ts) ----

export interface PeerEvent {
  event: string;
  [key: string]: unknown;
}

export interface PeerSpawnOptions {
  /**
   * Runs the fixture under this command (e.g. ['unshare', '--pid', '--fork']):
   * the child is `wrapper... node fixtures/peer.js config`, started as the
   * leader of its own process group, and kill() SIGKILLs the whole group.
   */
  wrapper?: readonly string[];
  /** Environment variables added to this process's for the child. */
  env?: Record<string, string>;
}

/** A child process running fixtures/peer.ts: its JSON-line events and its end. */
export class Peer {
  readonly child: ChildProcess;
  readonly events: PeerEvent[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #waiters: Array<{ event: string; resolve: (e: PeerEvent) => void; reject: (err: Error) => void; timer: NodeJS.Timeout }> = [];
  #ended: string | undefined;

  readonly #group: boolean;

  constructor(
    readonly config: PeerConfig,
    options: PeerSpawnOptions = {},
  ) {
    const argv = [process.execPath, PEER_PATH, JSON.stringify(config)];
    const wrapper = options.wrapper ?? [];
    const env = options.env === undefined ? process.env : { ...process.env, ...options.env };
    this.#group = wrapper.length > 0;
    this.child = this.#group
      ? spawn(wrapper[0]!, [...wrapper.slice(1), ...argv], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env })
      : spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env });
    let buffered = '';
    this.child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        let event: PeerEvent;
        try {
          event = JSON.parse(line) as PeerEvent;
        } catch {
          event = { event: 'garbage', line };
        }
        this.#arrive(event);
      }
    });
    this.child.stderr!.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
    this.child.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
      this.#ended = `${code ?? signal}`;
      for (const w of this.#waiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(
          new Error(
            `the ${config.role} child exited (${this.#ended}) before '${w.event}'; events: ${JSON.stringify(this.events)}; stderr:\n${this.stderr}`,
          ),
        );
      }
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  #arrive(event: PeerEvent): void {
    this.events.push(event);
    const i = this.#waiters.findIndex((w) => w.event === event.event || event.event === 'error');
    if (i < 0) return;
    const [w] = this.#waiters.splice(i, 1);
    clearTimeout(w!.timer);
    if (event.event === 'error' && w!.event !== 'error') w!.reject(new Error(`the child reported an error: ${String(event.message)}`));
    else w!.resolve(event);
  }

  /** The first event named `name` (past or future). */
  next(name: string, timeoutMs = 30_000): Promise<PeerEvent> {
    const seen = this.events.find((e) => e.event === name);
    if (seen) return Promise.resolve(seen);
    const failed = this.events.find((e) => e.event === 'error');
    if (failed) return Promise.reject(new Error(`the child reported an error: ${String(failed.message)}`));
    if (this.#ended !== undefined)
      return Promise.reject(new Error(`the child exited (${this.#ended}) without '${name}'; stderr:\n${this.stderr}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.timer !== timer);
        reject(
          new Error(`no '${name}' from the child within ${timeoutMs} ms; events: ${JSON.stringify(this.events)}; stderr:\n${this.stderr}`),
        );
      }, timeoutMs);
      this.#waiters.push({ event: name, resolve, reject, timer });
    });
  }

  /**
   * SIGKILLs the child (under a wrapper: its whole process group, so the
   * wrapper and the fixture it started die together); resolves with the
   * time of the kill (performance.now()) once the child is reaped.
   */
  async kill(): Promise<number> {
    const at = performance.now();
    if (this.#group && this.child.pid !== undefined) {
      try {
        process.kill(-this.child.pid!, 'SIGKILL');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err; // ESRCH: the group is gone already
      }
    } else if (!this.#group && this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
    }
    await this.exited;
    return at;
  }
}

const peers: Peer[] = [];

/** Starts a fixture child; killAllPeers() (in an afterEach) ends whatever a failed test left running. */
export function startPeer(config: PeerConfig, options: PeerSpawnOptions = {}): Peer {
  const peer = new Peer(config, options);
  peers.push(peer);
  return peer;
}

export async function killAllPeers(): Promise<void> {
  await Promise.all(peers.splice(0).map((p) => p.kill()));
}

// ---- worker threads (fixtures/worker.ts) ----

const workers: Worker[] = [];

/** Starts fixtures/worker.ts with `handle` (its port transferred) and `config`. */
export function startWorker(handle: ChannelHandle, config: WorkerConfig): Worker {
  const worker = new Worker(WORKER_URL, { workerData: { handle, config }, transferList: [handle.port] });
  workers.push(worker);
  return worker;
}

/** The next message from `worker` with `event` set, or an error if it exits or errs first. */
export function workerEvent(worker: Worker, event: string, timeoutMs = 30_000): Promise<PeerEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`no '${event}' from the worker within ${timeoutMs} ms`)), timeoutMs);
    const onMessage = (m: PeerEvent): void => {
      if (m?.event === event) done(undefined, m);
      else if (m?.event === 'error') done(new Error(`the worker reported an error: ${String(m.message)}`));
    };
    const onError = (err: Error): void => done(err);
    const onExit = (code: number): void => done(new Error(`the worker exited (${code}) before '${event}'`));
    function done(err: Error | undefined, m?: PeerEvent): void {
      clearTimeout(timer);
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
      if (err) reject(err);
      else resolve(m!);
    }
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
  });
}

export async function terminateAllWorkers(): Promise<void> {
  await Promise.all(workers.splice(0).map((w) => w.terminate()));
}

// ---- process resources ----

/** Open fds of this process. */
export function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** What /proc/self/fd points at, for a failure message. */
export function fdTargets(): string[] {
  const out: string[] = [];
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      out.push(`${fd} -> ${fs.readlinkSync(`/proc/self/fd/${fd}`)}`);
    } catch {
      // Gone already (the directory's own fd).
    }
  }
  return out;
}

/** Names in /dev/shm now. */
export function shmEntries(): Set<string> {
  try {
    return new Set(fs.readdirSync('/dev/shm'));
  } catch {
    return new Set();
  }
}
