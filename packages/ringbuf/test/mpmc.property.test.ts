/**
 * MpmcQueue against a model, on one thread: random command sequences
 * (tryWrite, tryRead, drain, bad input) on a real queue over a
 * SharedArrayBuffer region and on a plain-array FIFO of {bytes, type}.
 * With one thread nothing is in flight, so the queue is full exactly when
 * the model holds `capacity` messages and empty exactly when it holds none.
 *
 * Capacities are 2..64 slots and slot sizes 0..200 bytes; some runs start
 * the positions (and the slot sequences that go with them) just below 2^31
 * or 2^32, so the sequence arithmetic crosses the sign flip and the wrap.
 */
import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import { ErrorCodes, Region } from '@shmring/core';
import { MpmcQueue } from '../src/index.js';
import * as L from '../src/layout.js';
import { randomBytes } from './helpers.js';
import { lengthFraction, messageType } from './arbitraries.js';

const NUM_RUNS = 1000;
const CAPACITIES = [2, 4, 8, 16, 32, 64] as const;
const CANARY_BYTES = 64;
const CANARY = 0x5a;

type Command =
  | { kind: 'write'; fraction: number; type: number; seed: number }
  | { kind: 'read' }
  | { kind: 'drain'; limit: number | undefined; throwAt: number | undefined }
  | { kind: 'oversize'; extra: number };

/** Writes and reads in bursts, so the queue swings between full and empty. */
const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 10,
    arbitrary: fc.record({
      kind: fc.constant('write' as const),
      fraction: lengthFraction,
      type: messageType,
      seed: fc.integer({ min: 1, max: 0x7fffffff }),
    }),
  },
  { weight: 8, arbitrary: fc.constant({ kind: 'read' as const }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('drain' as const),
      limit: fc.option(fc.integer({ min: 0, max: 70 }), { nil: undefined }),
      throwAt: fc.option(fc.integer({ min: 0, max: 5 }), { nil: undefined, freq: 4 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('oversize' as const), extra: fc.nat({ max: 300 }) }) },
);
const burst = fc.tuple(commandArb, fc.integer({ min: 1, max: 12 })).map(([command, times]) => new Array<Command>(times).fill(command));
const commandsArb = fc.array(burst, { minLength: 1, maxLength: 300, size: 'max' }).map((bursts) => bursts.flat());

/** Where the positions start: 0, anywhere, just below the sign flip (2^31) or the wrap (2^32). */
const startPosition = fc.oneof(
  fc.constant(0),
  fc.integer({ min: 0, max: 0xffffffff }),
  fc.integer({ min: 1, max: 300 }).map((k) => 2 ** 31 - k),
  fc.integer({ min: 1, max: 300 }).map((k) => 2 ** 32 - k),
);

const totals = { runs: 0, laps: 0, positionWraps: 0, written: 0, read: 0, fullRefusals: 0, emptyReads: 0, badInputs: 0 };

function isTooLarge(err: unknown): boolean {
  return err instanceof RangeError && (err as RangeError & { code?: string }).code === ErrorCodes.MESSAGE_TOO_LARGE;
}

/** A fresh queue whose positions (and slot sequences) start at `start`, as if `start` messages had passed. */
function queueAt(
  capacity: number,
  slotSize: number,
  start: number,
): { queue: MpmcQueue; region: Region; ctl: Int32Array; ringEnd: number } {
  const ringEnd = MpmcQueue.regionSize({ capacity, slotSize });
  const region = Region.create({ backing: 'sab', size: ringEnd + CANARY_BYTES });
  new Uint8Array(region.buffer).fill(CANARY, ringEnd);
  MpmcQueue.create(region, { capacity, slotSize });
  const ctl = new Int32Array(region.buffer, 0, L.CONTROL_I32_LENGTH);
  const stride32 = L.slotStride(slotSize) / 4;
  const slots = new Int32Array(region.buffer, L.DATA_OFFSET, capacity * stride32);
  // Position p uses slot p mod capacity; an empty queue at `start` has slot sequences start .. start + capacity - 1.
  for (let k = 0; k < capacity; k++) {
    const p = (start + k) >>> 0;
    slots[(p % capacity) * stride32 + L.SLOT_SEQUENCE_OFFSET / 4] = p | 0;
  }
  Atomics.store(ctl, L.PRODUCER_POSITION_I32, start | 0);
  Atomics.store(ctl, L.CONSUMER_POSITION_I32, start | 0);
  return { queue: MpmcQueue.attach(region), region, ctl, ringEnd };
}

function runCommands(capacity: number, slotSize: number, start: number, commands: Command[]): void {
  const { queue, region, ctl, ringEnd } = queueAt(capacity, slotSize, start);
  const model: { bytes: Uint8Array; type: number }[] = [];
  let reads = 0;

  const expectHead = (bytes: Uint8Array, type: number, what: string): void => {
    assert.ok(model.length > 0, `${what}: a message came out of a queue the model says is empty`);
    const head = model.shift()!;
    reads++;
    totals.read++;
    assert.equal(type, head.type, `${what}: type`);
    assert.equal(bytes.length, head.bytes.length, `${what}: length`);
    assert.ok(Buffer.compare(bytes, head.bytes) === 0, `${what}: bytes differ from the ones written`);
  };
  const checkState = (what: string): void => {
    assert.equal(queue.size, model.length, `${what}: size`);
    assert.equal((Atomics.load(ctl, L.CONSUMER_POSITION_I32) - start) >>> 0, reads, `${what}: consumer position`);
    assert.equal((Atomics.load(ctl, L.PRODUCER_POSITION_I32) - start) >>> 0, reads + model.length, `${what}: producer position`);
  };

  for (const [step, command] of commands.entries()) {
    const what = `step ${step} (${command.kind})`;
    switch (command.kind) {
      case 'write': {
        const bytes = randomBytes(command.seed, Math.round(command.fraction * slotSize));
        const ok = queue.tryWrite(bytes, command.type);
        assert.equal(ok, model.length < capacity, `${what}: tryWrite returned ${ok} with ${model.length} of ${capacity} slots used`);
        if (ok) {
          model.push({ bytes, type: command.type });
          totals.written++;
        } else {
          totals.fullRefusals++;
        }
        break;
      }
      case 'read': {
        const message = queue.tryRead();
        assert.equal(
          message === null,
          model.length === 0,
          `${what}: tryRead returned ${message === null ? 'null' : 'a message'} with ${model.length} in the model`,
        );
        if (message !== null) expectHead(message, queue.lastType, what);
        else totals.emptyReads++;
        break;
      }
      case 'drain': {
        const expected = Math.min(command.limit ?? Infinity, model.length);
        let calls = 0;
        const handler = (data: Uint8Array, offset: number, length: number, type: number): void => {
          assert.equal(data, queue.data, `${what}: drain must hand out the queue's own data view`);
          assert.ok(
            length <= slotSize && offset >= 0 && offset + length <= data.length,
            `${what}: record [${offset}, ${offset + length}) outside the data area`,
          );
          expectHead(data.subarray(offset, offset + length), type, `${what}, record ${calls}`);
          if (calls++ === command.throwAt) throw new Error('handler failure');
        };
        if (command.throwAt !== undefined && command.throwAt < expected) {
          // The slot the handler threw on is freed: that message counts as consumed.
          assert.throws(() => queue.drain(handler, command.limit), /handler failure/, `${what}: drain must rethrow the handler's error`);
          assert.equal(calls, command.throwAt + 1, `${what}: records handed out before the throw`);
        } else {
          assert.equal(queue.drain(handler, command.limit), expected, `${what}: drain's count`);
          assert.equal(calls, expected, `${what}: handler calls`);
        }
        break;
      }
      case 'oversize': {
        const length = slotSize + 1 + command.extra;
        const before = Buffer.from(new Uint8Array(region.buffer, L.PRODUCER_POSITION_OFFSET));
        assert.throws(
          () => queue.tryWrite(new Uint8Array(length).fill(0xee), 1),
          isTooLarge,
          `${what}: tryWrite of ${length} bytes (slotSize ${slotSize}) must be a RangeError ${ErrorCodes.MESSAGE_TOO_LARGE}`,
        );
        assert.ok(
          Buffer.compare(before, Buffer.from(new Uint8Array(region.buffer, L.PRODUCER_POSITION_OFFSET))) === 0,
          `${what}: the refused write changed the positions or the slots`,
        );
        totals.badInputs++;
        break;
      }
    }
    checkState(what);
  }
  for (let message = queue.tryRead(); message !== null; message = queue.tryRead()) expectHead(message, queue.lastType, 'final read');
  assert.equal(model.length, 0, 'the queue ran dry before the model');
  checkState('after the final reads');
  assert.ok(
    new Uint8Array(region.buffer).subarray(ringEnd).every((b) => b === CANARY),
    'a byte after the queue was overwritten',
  );

  totals.runs++;
  totals.laps += Math.floor(reads / capacity);
  if ((start >>> 0) + reads >= 2 ** 32) totals.positionWraps++;
}

describe('MpmcQueue (model-based, one thread)', function () {
  after(function () {
    assert.ok(totals.runs >= NUM_RUNS, `runs=${totals.runs}`);
    assert.ok(totals.laps >= 10_000, `only ${totals.laps} laps of the slots over ${totals.runs} runs`);
    assert.ok(totals.positionWraps >= 50, `only ${totals.positionWraps} runs crossed the 2^32 wrap of the positions`);
    assert.ok(
      totals.fullRefusals >= 1000 && totals.emptyReads >= 1000 && totals.badInputs >= 100,
      `too few edge cases: ${JSON.stringify(totals)}`,
    );
    console.log(`      MpmcQueue model: ${JSON.stringify(totals)}`);
  });

  it('is full exactly at capacity, empty exactly when the model is, and hands out messages in FIFO order', function () {
    fc.assert(
      fc.property(
        fc.constantFrom(...CAPACITIES),
        fc.oneof(fc.constant(0), fc.constant(200), fc.integer({ min: 0, max: 200 })),
        startPosition,
        commandsArb,
        (capacity, slotSize, start, commands) => runCommands(capacity, slotSize, start, commands),
      ),
      { numRuns: NUM_RUNS },
    );
  });
});
