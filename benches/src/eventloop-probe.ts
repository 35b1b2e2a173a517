/**
 * The event-loop delay probe of the event-loop benchmarks (eventloop.ts,
 * spawnProbe in eventloop-common.ts): a child process that imports nothing
 * but Node's own modules, so it starts fast.
 *
 * Prints `ready`, then waits for its go: one byte on fd 3, a socketpair the
 * measured process reads on its event loop. From then on it writes its clock
 * (CLOCK_MONOTONIC ns, which process.hrtime reads in every process, as a
 * float64: 8 bytes) there at random gaps of `minGapMs`…`maxGapMs`, sleeping
 * in Atomics.wait between, until `durationMs` pass, the measured process
 * closes its end, or the parent dies. The measured process's data callback
 * takes the difference: how late a callback that became ready runs.
 *
 * A sample must not blame the measured process for the probe's own delays:
 * when the probe finds that reading its clock and writing took longer than
 * VOID_NS (0.3 ms: it was preempted meanwhile, say; waking a halted vCPU
 * takes tens of µs, which stays in), it writes a void record (-1),
 * and the measured process drops the sample before it.
 *
 *   node eventloop-probe.js '{"durationMs": 120000, "minGapMs": 0.5, "maxGapMs": 2.5}'
 */
import * as fs from 'node:fs';

const options = JSON.parse(process.argv[2] ?? '{}') as { durationMs?: number; minGapMs?: number; maxGapMs?: number };

/** Longer than this between reading the clock and the end of the write: the probe was held up, the sample is void. */
const VOID_NS = 300_000;

function ready(): void {
  process.stdout.write('ready\n');
}

function probe(): void {
  const parent = process.ppid;
  const minGap = options.minGapMs ?? 0.5;
  const maxGap = options.maxGapMs ?? 2.5;
  const end = performance.now() + (options.durationMs ?? 10_000);
  const nap = new Int32Array(new SharedArrayBuffer(4));
  const stamp = Buffer.alloc(8);
  const voided = Buffer.alloc(8);
  voided.writeDoubleLE(-1);
  ready();
  // Waits for the go: one byte from the measured process on the same socketpair.
  const go = Buffer.alloc(1);
  for (;;) {
    try {
      if (fs.readSync(3, go) === 1) break;
      process.exit(0); // end of file: the measured process went away
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      Atomics.wait(nap, 0, 0, 1);
      if (process.ppid !== parent || performance.now() > end) process.exit(70);
    }
  }
  const cpu = process.cpuUsage();
  const since = performance.now();
  while (performance.now() < end) {
    Atomics.wait(nap, 0, 0, minGap + Math.random() * (maxGap - minGap));
    if (process.ppid !== parent) process.exit(70);
    const sent = Number(process.hrtime.bigint());
    stamp.writeDoubleLE(sent);
    try {
      fs.writeSync(3, stamp);
      if (Number(process.hrtime.bigint()) - sent > VOID_NS) fs.writeSync(3, voided);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') continue;
      if (code === 'EPIPE' || code === 'ECONNRESET') break; // the client stopped listening
      throw err;
    }
  }
  const used = process.cpuUsage(cpu);
  process.stdout.write(`${JSON.stringify({ cpu: ((used.user + used.system) / 1000 / (performance.now() - since)) * 100 })}\n`);
}

probe();
