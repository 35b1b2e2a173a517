import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { exchange } from '../src/main.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));
const PRODUCER = fileURLToPath(new URL('../src/producer.js', import.meta.url));

/** The pids of the children of main.js `pid` (their arguments carry its pid), with their scripts. */
function childrenOf(pid: number): { pid: number; script: string }[] {
  const found: { pid: number; script: string }[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // gone meanwhile
    }
    const script = argv.find((a) => a.endsWith('producer.js') || a.endsWith('consumer.js'));
    if (script !== undefined && argv.some((a) => a.includes(`shmring-example-${pid}-`))) found.push({ pid: Number(entry), script });
  }
  return found;
}

/** Names in /dev/shm and socket files in the temporary directory that main.js `pid` made. */
function leftovers(pid: number): string[] {
  const mine = (f: string): boolean => f.startsWith(`shmring-example-${pid}-`);
  return [...fs.readdirSync('/dev/shm').filter(mine), ...fs.readdirSync(os.tmpdir()).filter(mine)];
}

/**
 * Starts main.js and waits until both children of its `phase` run: for the posix run (the first), a count
 * that keeps it busy for minutes; for the memfd run, one whose posix run is over within seconds.
 */
async function busyMain(phase: 'posix' | 'memfd'): Promise<{ main: ReturnType<typeof spawn>; stderr: () => string }> {
  const main = spawn(process.execPath, [MAIN, phase === 'posix' ? '100000000' : '1000000'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  main.stderr!.on('data', (d: Buffer) => (err += d));
  const inPhase = (k: { pid: number }): boolean => {
    try {
      return fs.readFileSync(`/proc/${k.pid}/cmdline`, 'utf8').includes(`\0${phase}\0`);
    } catch {
      return false; // gone meanwhile
    }
  };
  for (let i = 0; i < 2000; i++) {
    const kids = childrenOf(main.pid!);
    if (kids.length === 2 && kids.every(inPhase)) return { main, stderr: () => err };
    await sleep(10);
  }
  main.kill('SIGKILL');
  throw new Error(`main.js did not reach its ${phase} run within 20 s: ${err}`);
}

/** Waits up to `ms` for every child of main.js `pid` to be gone; returns those left. */
async function childrenGone(pid: number, ms: number): Promise<{ pid: number; script: string }[]> {
  const until = Date.now() + ms;
  let left = childrenOf(pid);
  while (left.length > 0 && Date.now() < until) {
    await sleep(25);
    left = childrenOf(pid);
  }
  for (const k of left) process.kill(k.pid, 'SIGKILL');
  return left;
}

describe('examples/processes', () => {
  it('delivers every message in order between processes that meet by a POSIX name', async () => {
    const before = fs.readdirSync('/dev/shm').filter((f) => f.startsWith('shmring-example-')).length;
    const r = await exchange('posix', '50000');
    assert.deepEqual({ received: r.received, outOfOrder: r.outOfOrder }, { received: 50000, outOfOrder: 0 });
    const after = fs.readdirSync('/dev/shm').filter((f) => f.startsWith('shmring-example-')).length;
    assert.equal(after, before, 'the consumer unlinks the POSIX name once it has the ring mapped');
  });

  it('delivers a handful of messages (or none) by a POSIX name even when the producer is done before the consumer opens it', async () => {
    const before = fs.readdirSync('/dev/shm').filter((f) => f.startsWith('shmring-example-')).length;
    for (const n of [0, 1, 10, 100]) {
      const r = await exchange('posix', String(n));
      assert.deepEqual({ received: r.received, outOfOrder: r.outOfOrder }, { received: n, outOfOrder: 0 }, `count ${n}`);
    }
    const after = fs.readdirSync('/dev/shm').filter((f) => f.startsWith('shmring-example-')).length;
    assert.equal(after, before, 'nothing is left in /dev/shm');
  });

  it('delivers every message in order over a memfd handed across a Unix socket', async () => {
    const r = await exchange('memfd', '50000');
    assert.deepEqual({ received: r.received, outOfOrder: r.outOfOrder }, { received: 50000, outOfOrder: 0 });
  });

  it('main.js runs with a small count, and refuses a count that is not a non-negative integer with usage and exit 2', () => {
    const ok = spawnSync(process.execPath, [MAIN, '3'], { encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /^posix: 3 messages, 0 out of order, \d+ ms\nmemfd: 3 messages, 0 out of order, \d+ ms\n$/);
    for (const bad of ['abc', '-5', '1.5']) {
      const r = spawnSync(process.execPath, [MAIN, bad], { encoding: 'utf8' });
      assert.equal(r.status, 2, `count ${bad}: ${r.stderr}`);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^usage: node main\.js \[count\]: .*non-negative integer/);
      assert.ok(r.stderr.includes(`got '${bad}'`), r.stderr);
    }
  });

  describe('when a process of the example dies', function () {
    this.timeout(30_000);

    it('a consumer SIGKILLed early stops the producer: main.js exits 1 naming the signal, and no process, name or socket file is left', async () => {
      const { main, stderr } = await busyMain('posix');
      const consumer = childrenOf(main.pid!).find((k) => k.script.endsWith('consumer.js'))!;
      process.kill(consumer.pid, 'SIGKILL');
      const [code] = await once(main, 'exit');
      assert.equal(code, 1);
      assert.match(stderr(), /main\.js: consumer\.js was killed by SIGKILL/);
      assert.deepEqual(await childrenGone(main.pid!, 3000), []);
      assert.deepEqual(leftovers(main.pid!), []);
    });

    it('a producer that ends on an error (its consumer closed the ring) exits 1 saying why, and removes the POSIX name it made', async () => {
      const name = `shmring-example-${process.pid}-${Date.now()}-closed`;
      const producer = spawn(process.execPath, [PRODUCER, 'posix', name, '100000000'], { stdio: ['ignore', 'ignore', 'pipe'] });
      const exited = once(producer, 'exit') as Promise<[number | null]>;
      let err = '';
      producer.stderr!.on('data', (d: Buffer) => (err += d));
      let region: Region | undefined;
      try {
        // consumer.js's part by hand, but the name stays (consumer.js removes it once it has the ring mapped).
        let ring: SpscRing | undefined;
        for (let tries = 0; ring === undefined; tries++) {
          try {
            region ??= Region.open({ backing: 'posix', name });
            ring = SpscRing.attach(region);
          } catch (e) {
            if (tries > 500) throw e; // not there, or not set up yet: as consumer.js, about 5 s
            await sleep(10);
          }
        }
        for (let i = 0; i < 10; i++) await ring.read({ timeoutMs: 5000 });
        ring.close(); // the producer's next write fails
        const [code] = await exited;
        assert.equal(code, 1, err);
        assert.match(err, /^producer: .+\(ERR_SHMRING_\w+\)$/m);
        assert.equal(fs.existsSync(`/dev/shm/${name}`), false, 'the name is removed');
      } finally {
        producer.kill('SIGKILL'); // ended already, unless the test failed first
        region?.close();
        if (fs.existsSync(`/dev/shm/${name}`)) fs.rmSync(`/dev/shm/${name}`);
      }
    });

    for (const phase of ['posix', 'memfd'] as const) {
      // How main.js ends on each: SIGKILL leaves it no word; on the others it says why it stopped, in one line.
      for (const [signal, exitCode, line] of [
        ['SIGKILL', null, undefined],
        ['SIGTERM', 143, /^main\.js: terminated \(SIGTERM\); stopped$/m],
        ['SIGINT', 130, /^main\.js: interrupted \(SIGINT\); stopped$/m],
      ] as const) {
        it(`main.js ${signal === 'SIGKILL' ? 'SIGKILLed' : `sent ${signal} (says so)`} in its ${phase} run: both children stop and leave no name or socket file`, async () => {
          const { main, stderr } = await busyMain(phase);
          assert.equal(childrenOf(main.pid!).length, 2, 'both children run');
          main.kill(signal);
          const [code] = (await once(main, 'exit')) as [number | null];
          assert.equal(code, exitCode);
          if (line !== undefined) assert.match(stderr(), line);
          assert.deepEqual(await childrenGone(main.pid!, 3000), []);
          assert.deepEqual(leftovers(main.pid!), []);
        });
      }
    }
  });
});
