/**
 * Rings that survive restarts: an SpscRing in a 'file' region keeps its
 * positions and records in the file, so when both of its processes are
 * SIGKILLed mid-stream and started again, the new consumer takes every
 * committed message the old one had not given back, and the new producer
 * goes on after the last committed record (a record it died in the middle
 * of was never published, and is overwritten). Each message is released
 * (consumed for good) exactly once over all the runs.
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

/** A child side of the ring, with the lines it printed. */
class Side {
  readonly child: ChildProcess;
  /** The consumer's lines so far: [seq, readPosition] each. */
  readonly #lines: [number, number][] = [];
  #bad = '';
  readonly exited: Promise<void>;
  constructor(file: string, role: 'producer' | 'consumer', first = 0) {
    this.child = spawn(process.execPath, [PEER, file, role, String(first)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let partial = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      const parts = (partial + d.toString()).split('\n');
      partial = parts.pop()!;
      for (const line of parts) {
        if (line.startsWith('bad ')) this.#bad = line;
        else this.#lines.push(line.split(' ').map(Number) as [number, number]);
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

  it(`releases every committed message exactly once, in order, over ${ROUNDS} rounds of SIGKILLing both processes mid-stream`, async () => {
    const released: number[] = [];
    /** Takes a killed consumer's lines that it gave back: those whose end is not past the ring's consumer position. */
    const take = (consumer: Side): void => {
      const consumed = inspect(file)!.consumerPosition;
      const lines = consumer.lines();
      for (const [seq, end] of lines) if (((consumed - end) >>> 0) < 2 ** 31) released.push(seq);
    };
    let consumer = new Side(file, 'consumer');
    let producer = new Side(file, 'producer', 0);
    for (let round = 1; ; round++) {
      // Once the stream flows (both started and running), let it run a random while.
      const flowing = consumer.count + 500;
      const deadline = Date.now() + 30_000;
      while (consumer.count < flowing) {
        assert.ok(Date.now() < deadline, `no stream in round ${round}: consumer ${consumer.state}; producer ${producer.state}; ring ${JSON.stringify(inspect(file))}`);
        await sleep(10);
      }
      await sleep(Math.random() * 200);
      // Kill both, in either order, wherever they are (mid-record, mid-release, parked).
      const order = Math.random() < 0.5 ? [producer, consumer] : [consumer, producer];
      for (const side of order) await side.kill();
      take(consumer);
      // A new consumer alone: it takes what the old one left (nothing lost, nothing taken twice) until the ring is empty.
      consumer = new Side(file, 'consumer');
      const drained = Date.now() + 30_000;
      while (inspect(file)!.used !== 0) {
        assert.ok(Date.now() < drained, 'the restarted consumer did not drain the ring');
        await sleep(10);
      }
      await sleep(50); // its last line is out before its release; give the pipe a moment
      if (round === ROUNDS) {
        await consumer.kill();
        take(consumer);
        break;
      }
      // The producer goes on after the last committed message.
      const next = Math.max(released.at(-1) ?? -1, consumer.lines().at(-1)?.[0] ?? -1) + 1;
      producer = new Side(file, 'producer', next);
    }
    assert.ok(released.length > 1000, `only ${released.length} messages went through`);
    const wrong = released.findIndex((seq, i) => seq !== i);
    assert.equal(wrong, -1, `message ${wrong} is seq ${released[wrong]}: ${JSON.stringify(released.slice(Math.max(0, wrong - 3), wrong + 3))}`);
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
});
