import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Channel } from '@shmring/channel';
import { Latencies, RunStopped, run } from '../src/client.js';
import { price, type Order, type Quote } from '../src/pricing.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

function runMain(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

/** Starts main.js on a run long enough to be interrupted; resolves once it printed the server's pid and its client connected. */
function busyMain(socketPath: string): Promise<{ main: ReturnType<typeof spawn>; serverPid: number; stderr: () => string }> {
  const main = spawn(process.execPath, [MAIN, '100000000', socketPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  main.stderr!.on('data', (d: Buffer) => (err += d));
  return new Promise((resolve, reject) => {
    let out = '';
    main.stdout!.on('data', (d: Buffer) => {
      out += d;
      const m = /^pricing server: pid (\d+)/m.exec(out);
      // Once the client is connected: killed before, the server would fail the connect, not the run.
      if (m && /^client: connected/m.test(out)) resolve({ main, serverPid: Number(m[1]), stderr: () => err });
    });
    main.once('exit', () => reject(new Error(`main.js ended early: ${err}`)));
  });
}

const alive = (pid: number): boolean => {
  try {
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false; // reaped meanwhile
  }
};

describe('examples/rpc', () => {
  it('prices every order across two processes, reports throughput and latency, and leaves nothing behind', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-rpc-test-'));
    const socketPath = path.join(dir, 'pricing.sock');
    const shmBefore = new Set(fs.readdirSync('/dev/shm'));
    try {
      const { code, out } = await runMain(['2000', socketPath]);
      assert.equal(code, 0, out);
      assert.match(out, /^pricing server: pid \d+, .*pricing\.sock$/m);
      // Orders 99, 199, ... ask for an unknown SKU: 20 of 2000.
      assert.match(out, /^client: 2,000 requests, 64 in flight: 1,980 priced, refused: 20 UNKNOWN_SKU, 0 wrong$/m);
      assert.match(out, /^throughput: [\d,]+ requests\/s \([\d,]+ ms\)$/m);
      assert.match(out, /^latency µs: p50 [\d,]+ {2}p90 [\d,]+ {2}p99 [\d,]+ {2}max [\d,]+$/m);
      assert.match(out, /^server: 1 client, 1980 orders priced, 20 refused$/m);
      assert.equal(fs.existsSync(socketPath), false, 'server.close() removes the socket path');
      const added = fs.readdirSync('/dev/shm').filter((name) => !shmBefore.has(name));
      assert.deepEqual(added, [], 'channels live in memfds: nothing new in /dev/shm');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs with a handful of requests or none (no NaN latencies), and refuses a count that is not a non-negative integer', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-rpc-test-'));
    try {
      const three = await runMain(['3', path.join(dir, 'three.sock')]);
      assert.equal(three.code, 0, three.out);
      assert.match(three.out, /^client: 3 requests, 3 in flight: 3 priced, refused: none, 0 wrong$/m);
      const none = await runMain(['0', path.join(dir, 'none.sock')]);
      assert.equal(none.code, 0, none.out);
      assert.match(none.out, /^client: 0 requests, 0 in flight: 0 priced, refused: none, 0 wrong$/m);
      assert.match(none.out, /^latency µs: none \(no requests\)$/m);
      assert.doesNotMatch(none.out, /NaN/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    for (const bad of ['abc', '-5', '2.5']) {
      const r = spawnSync(process.execPath, [MAIN, bad], { encoding: 'utf8' });
      assert.equal(r.status, 2, `requests ${bad}: ${r.stderr}`);
      assert.equal(r.stdout, '', 'no server is started');
      assert.match(r.stderr, /^usage: node main\.js \[requests\] \[socket path\]: .*non-negative integer/);
      assert.ok(r.stderr.includes(`got '${bad}'`), r.stderr);
    }
  });

  it('counts as wrong a quote that adds up but disagrees with the catalog, and a refusal of an order the catalog prices', async () => {
    // A server stand-in with bugs: order 1 gets a unit price a cent too high, order 2 a cent more discount (each quote
    // adds up: total = unit × quantity − discount), order 4 is refused as UNKNOWN_SKU though its SKU is sold.
    const buggy = {
      request: async (o: Order): Promise<Quote> => {
        const q = price(o); // throws UNKNOWN_SKU for the SKU nobody sells, as the server does
        if (o.id === 1) return { ...q, unitCents: q.unitCents + 1, totalCents: q.totalCents + o.quantity };
        if (o.id === 2) return { ...q, discountCents: q.discountCents + 1, totalCents: q.totalCents - 1 };
        if (o.id === 4) throw Object.assign(new Error(`no such SKU: ${o.sku}`), { code: 'UNKNOWN_SKU' });
        return q;
      },
    } as unknown as Channel;
    const r = await run(buggy, 200, 8);
    assert.deepEqual({ priced: r.priced, refused: r.refused, wrong: r.wrong }, { priced: 197, refused: { UNKNOWN_SKU: 3 }, wrong: 3 });
  });

  it('takes the same memory for latencies whatever the number of requests: a run of 2^53 - 1 starts, and stops on a closed channel', async () => {
    // A channel that answers 1000 requests, then is closed: the run stops with RunStopped (kept latencies one per
    // request, it could not have started).
    let calls = 0;
    const closing = {
      request: async (o: Order): Promise<Quote> => {
        if (++calls > 1000) throw Object.assign(new Error('the channel is closed'), { code: 'ERR_SHMRING_CLOSED' });
        return price(o);
      },
    } as unknown as Channel;
    const stopped = await run(closing, Number.MAX_SAFE_INTEGER, 8).then(
      () => assert.fail('run() resolved'),
      (err: unknown) => err,
    );
    assert.ok(stopped instanceof RunStopped, String(stopped));
    assert.equal(stopped.answered, 1000);
  });

  it('reports each latency percentile (nearest rank) at most 1/PRECISION above the exact one, never below it, and the exact max', () => {
    // Seeded samples from 0.1 µs to 10 s, spread evenly on a log scale, with runs of equal values.
    let seed = 42;
    const random = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const samples: number[] = [];
    for (let i = 0; i < 20_000; i++) samples.push(i % 10 === 0 ? 35 : 10 ** (random() * 8 - 1));
    const latencies = new Latencies();
    for (const us of samples) latencies.record(us);
    const sorted = Float64Array.from(samples).sort();
    /** Recorded in whole nanoseconds: a sample may move by half of one. */
    const ns = 0.0005;
    assert.equal(latencies.count, samples.length);
    assert.equal(latencies.max, sorted[sorted.length - 1]);
    for (const p of [0, 0.001, 0.1, 0.25, 0.5, 0.9, 0.99, 0.999, 1]) {
      const exact = sorted[Math.max(0, Math.ceil(sorted.length * p) - 1)]!;
      const reported = latencies.percentile(p);
      const bound = exact * (1 + 1 / Latencies.PRECISION) + ns;
      assert.ok(reported >= exact - ns && reported <= bound, `p${p * 100}: ${reported} for ${exact}`);
    }
    assert.ok(Number.isNaN(new Latencies().percentile(0.5)), 'no samples: NaN');
  });

  describe('when a process of the example dies', function () {
    this.timeout(30_000);

    it('a server SIGKILLed mid-run stops the client at once: main.js exits 1 saying how many requests were answered and how the server ended, and removes the socket path it left', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-rpc-test-'));
      const socketPath = path.join(dir, 'killed.sock');
      try {
        const { main, serverPid, stderr } = await busyMain(socketPath);
        await sleep(300);
        const t0 = performance.now();
        process.kill(serverPid, 'SIGKILL');
        const [code] = (await once(main, 'exit')) as [number | null];
        assert.equal(code, 1);
        assert.ok(performance.now() - t0 < 5000, `main.js took ${performance.now() - t0} ms to stop`);
        assert.match(
          stderr(),
          /^main\.js: stopped after [\d,]+ of 100,000,000 requests were answered: .*\(ERR_SHMRING_PEER_DEAD\); the server was killed by SIGKILL$/m,
        );
        assert.equal(fs.existsSync(socketPath), false, 'main.js removes the socket path the killed server could not');
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
      it(`main.js ${signal === 'SIGKILL' ? 'SIGKILLed' : 'sent SIGTERM'} mid-run: the server stops and removes its socket path`, async () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-rpc-test-'));
        const socketPath = path.join(dir, 'orphan.sock');
        try {
          const { main, serverPid } = await busyMain(socketPath);
          await sleep(200);
          main.kill(signal);
          for (let i = 0; i < 120 && alive(serverPid); i++) await sleep(25);
          const left = alive(serverPid);
          if (left) process.kill(serverPid, 'SIGKILL');
          assert.equal(left, false, 'the server outlived main.js by 3 s');
          assert.equal(fs.existsSync(socketPath), false, 'the server removed its socket path');
        } finally {
          fs.rmSync(dir, { recursive: true, force: true });
        }
      });
    }
  });
});
