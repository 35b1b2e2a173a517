/**
 * Rings that survive restarts: an SpscRing in a 'file' region keeps its
 * positions and records in the file, so when both of its processes are
 * SIGKILLed mid-stream and started again, the new consumer takes every
 * committed message the old one had not given back, and the new producer
 * goes on after the last committed record (a record it died in the middle
 * of was never published, and is overwritten). Each message is released
 * (consumed for good) exactly once over all the runs. A producer killed
 * between claim and commit, at a chosen record, leaves the ring to resume
 * after its last committed record.
 */
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, Region } from '@shmring/core';
import { inspect, SpscRing } from '../src/index.js';

const PEER = fileURLToPath(new URL('./fixtures/file-ring-peer.js', import.meta.url));
const ROUNDS = 4;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `done` every 10 ms; fails with `what()` after 30 s. */
async function until(done: () => boolean, what: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!done()) {
    if (Date.now() > deadline) assert.fail(what());
    await sleep(10);
  }
}

/** A child side of the ring, with the lines it printed (file-ring-peer.ts says which roles print what). */
class Side {
  readonly child: ChildProcess;
  /** The consumer's lines so far: [seq, readPosition] each. */
  readonly #lines: [number, number][] = [];
  #bad = '';
  /** The lines that are not a consumer's "<seq> <position>": "claimed …", "stopped". */
  readonly said: string[] = [];
  readonly exited: Promise<void>;
  constructor(file: string, role: 'producer' | 'claimer' | 'consumer', first = 0, last?: number) {
    const args = [PEER, file, role, String(first), ...(last === undefined ? [] : [String(last)])];
    this.child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let partial = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      const parts = (partial + d.toString()).split('\n');
      partial = parts.pop()!;
      for (const line of parts) {
        if (line.startsWith('bad ')) this.#bad = line;
        else if (/^\d/.test(line)) this.#lines.push(line.split(' ').map(Number) as [number, number]);
        else this.said.push(line);
      }
    });
    this.exited = new Promise((resolve) => this.child.on('close', () => resolve()));
  }

  get count(): number {
    return this.#lines.length;
  }

  /** For a failure's message: how it ended, what it reported last. */
  get state(): string {
    return `exit ${this.child.exitCode ?? this.child.signalCode ?? 'none'}, ${this.#lines.length} lines, last ${JSON.stringify(this.#lines.at(-1))}${this.#bad ? `, ${this.#bad}` : ''}`;
  }

  async kill(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited;
  }

  /**
   * Waits for the line of the record that ends at `position` (a consumer
   * prints it before it gives the record back, so once the ring's consumer
   * position is there, the line is on its way through the pipe).
   */
  async printed(position: number): Promise<void> {
    await until(
      () => this.#lines.some(([, end]) => end >>> 0 === position >>> 0),
      () => `no line for the record ending at ${position}: ${this.state}`,
    );
  }

  /** The consumer's lines: [seq, readPosition] each. */
  lines(): [number, number][] {
    assert.equal(this.#bad, '', 'a consumer found a broken message');
    return this.#lines;
  }
}

describe('an SpscRing in a file region survives the death of both sides', function () {
  this.timeout(120_000);
  let dir: string;
  let file: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-persist-'));
    file = path.join(dir, 'ring');
    const region = Region.create({ backing: 'file', path: file, size: SpscRing.regionSize({ capacity: 4096 }) });
    SpscRing.create(region, { capacity: 4096 }).detach();
    region.close();
  });

  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** The sides a test started, to be killed at its end whatever happens. */
  const sides: Side[] = [];
  function side(...args: ConstructorParameters<typeof Side>): Side {
    const started = new Side(...args);
    sides.push(started);
    return started;
  }
  async function killSides(): Promise<void> {
    for (const started of sides.splice(0)) await started.kill();
  }

  /** A killed consumer's lines that it gave back: those whose end is not past the ring's consumer position. */
  function given(consumer: Side): [number, number][] {
    const consumed = inspect(file)!.consumerPosition;
    return consumer.lines().filter(([, end]) => (consumed - end) >>> 0 < 2 ** 31);
  }

  /** Asserts that `released` is 0, 1, 2, …: each message exactly once, in order. */
  function assertEachOnce(released: number[]): void {
    const wrong = released.findIndex((seq, i) => seq !== i);
    assert.equal(
      wrong,
      -1,
      `message ${wrong} is seq ${released[wrong]}: ${JSON.stringify(released.slice(Math.max(0, wrong - 3), wrong + 3))}`,
    );
  }

  it(`releases every committed message exactly once, in order, over ${ROUNDS} rounds of SIGKILLing both processes mid-stream`, async () => {
    const released: number[] = [];
    const take = (consumer: Side): void => {
      for (const [seq] of given(consumer)) released.push(seq);
    };
    try {
      let consumer = side(file, 'consumer');
      let producer = side(file, 'producer', 0);
      for (let round = 1; ; round++) {
        // Once the stream flows (both started and running), let it run a random while.
        const flowing = consumer.count + 500;
        const deadline = Date.now() + 30_000;
        while (consumer.count < flowing) {
          assert.ok(
            Date.now() < deadline,
            `no stream in round ${round}: consumer ${consumer.state}; producer ${producer.state}; ring ${JSON.stringify(inspect(file))}`,
          );
          await sleep(10);
        }
        await sleep(Math.random() * 200);
        // Kill both, in either order, wherever they are (mid-record, mid-release, parked).
        const order = Math.random() < 0.5 ? [producer, consumer] : [consumer, producer];
        for (const dying of order) await dying.kill();
        take(consumer);
        // Nobody runs now: where the dead consumer left the ring.
        const left = inspect(file)!.consumerPosition;
        // A new consumer alone: it takes what the old one left (nothing lost, nothing taken twice) until the ring is empty.
        consumer = side(file, 'consumer');
        const drained = Date.now() + 30_000;
        while (inspect(file)!.used !== 0) {
          assert.ok(Date.now() < drained, 'the restarted consumer did not drain the ring');
          await sleep(10);
        }
        // Its last line is out before its release: wait for it (unless it had nothing to take).
        const end = inspect(file)!.consumerPosition;
        if (end !== left) await consumer.printed(end);
        if (round === ROUNDS) {
          await consumer.kill();
          take(consumer);
          break;
        }
        // The producer goes on after the last committed message.
        const next = Math.max(released.at(-1) ?? -1, consumer.lines().at(-1)?.[0] ?? -1) + 1;
        producer = side(file, 'producer', next);
      }
    } finally {
      await killSides(); // a failure must not leave children running (or blocked for HANG_MS)
    }
    assert.ok(released.length > 1000, `only ${released.length} messages went through`);
    assertEachOnce(released);
  });

  it('resumes after the last committed record when its producer is SIGKILLed between claim and commit, each committed message released once', async () => {
    // The first life: a consumer that gives back messages 0 .. STOP and then takes nothing more, and a
    // producer that commits 0 .. CLAIMED - 1 (many laps of the 4 KiB ring), claims CLAIMED, writes half of it and
    // is killed there. The 30 messages after STOP (at most 72 bytes each) and the claim fit in the ring.
    const CLAIMED = 1000;
    const STOP = 969;
    try {
      const consumer = side(file, 'consumer', 0, STOP);
      const dying = side(file, 'claimer', 0, CLAIMED);
      await until(
        () => dying.said.length > 0,
        () => `the producer never claimed: ${dying.state}; ring ${JSON.stringify(inspect(file))}`,
      );
      const [word, seq, committedEnd] = dying.said[0]!.split(' ');
      assert.deepEqual([word, Number(seq)], ['claimed', CLAIMED]);
      await dying.kill();
      await until(
        () => consumer.said.includes('stopped'),
        () => `the consumer did not stop after ${STOP}: ${consumer.state}`,
      );
      await consumer.kill();
      const first = given(consumer).map(([s]) => s);
      assert.deepEqual(
        first,
        Array.from({ length: STOP + 1 }, (_, i) => i),
        'the first consumer gave back 0 .. STOP',
      );
      const dead = inspect(file)!;
      assert.equal(dead.producerPosition, Number(committedEnd), 'the claim moved the producer position');

      // The second life: a new consumer, and a new producer that goes on with message CLAIMED.
      const next = side(file, 'consumer');
      const producer = side(file, 'producer', CLAIMED);
      await until(
        () => next.count >= CLAIMED - STOP + 300,
        () => `no stream after the restart: consumer ${next.state}; producer ${producer.state}`,
      );
      await producer.kill();
      await until(
        () => inspect(file)!.used === 0,
        () => `the new consumer did not drain the ring: ${next.state}`,
      );
      // Its last line is out before its release: wait for it.
      await next.printed(inspect(file)!.consumerPosition);
      await consumer.kill();
      await next.kill();
      const second = given(next);
      // The committed messages the first consumer never gave back came first, the last of them ending where
      // the dead producer's committed records ended; the new producer's first message right after it.
      const lastCommitted = second.findIndex(([s]) => s === CLAIMED - 1);
      assert.ok(lastCommitted >= 0, `message ${CLAIMED - 1} never arrived: ${next.state}`);
      assert.equal(second[lastCommitted]![1], Number(committedEnd), 'the last committed record did not end where the dead producer said');
      assert.equal(second[lastCommitted + 1]?.[0], CLAIMED, 'the new producer did not go on after the last committed record');
      const released = [...first, ...second.map(([s]) => s)];
      assert.ok(released.length >= CLAIMED + 300, `only ${released.length} messages went through`);
      assertEachOnce(released);
    } finally {
      await killSides(); // a failure must not leave children running (or blocked for HANG_MS)
    }
  });

  it('region.sync() resolves once a file region is on the device; { async: true } and memory regions at once; ERR_SHMRING_CLOSED once closed', async () => {
    const region = Region.open({ backing: 'file', path: file });
    const bytes = new Uint8Array(region.buffer);
    bytes[region.size - 1] = 0x5a;
    await region.sync();
    await region.sync({ async: true });
    assert.equal(fs.readFileSync(file)[region.size - 1], 0x5a);
    region.close();
    await assert.rejects(region.sync(), { code: ErrorCodes.CLOSED });
    const memory = Region.create({ backing: 'memfd', size: 4096 });
    await memory.sync();
    memory.close();
  });

  it("region.sync() then close() at once: the sync completes on the region's file (its own fd), not EBADF or another file", async () => {
    for (let i = 0; i < 50; i++) {
      const region = Region.open({ backing: 'file', path: file });
      new Uint8Array(region.buffer)[region.size - 1] = i;
      const syncing = region.sync();
      region.close(); // the region's fd goes now, before the thread pool gets to the sync
      await syncing;
      assert.equal(fs.readFileSync(file)[fs.statSync(file).size - 1], i);
    }
  });
});
