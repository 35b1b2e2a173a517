import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { bridge } from '@shmring/channel';
import { endingOf, stopWithBridge } from '../src/lifeline.js';
import { exchange, NATS_MISSING, natsServerBinary, startNatsServer } from '../src/main.js';
import { createRing, END, end, newRun, order } from '../src/orders.js';

const script = (name: string): string => fileURLToPath(new URL(`../src/${name}`, import.meta.url));

/** The processes descended from `pid` (from each /proc/<pid>/stat's parent field), with their command lines. */
function descendants(pid: number): { pid: number; cmd: string }[] {
  const parent = new Map<number, number>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      parent.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  const found: { pid: number; cmd: string }[] = [];
  const walk = (of: number): void => {
    for (const [child, ppid] of parent) {
      if (ppid !== of) continue;
      let cmd = '';
      try {
        cmd = fs.readFileSync(`/proc/${child}/cmdline`, 'utf8').replaceAll('\0', ' ');
      } catch {
        continue;
      }
      found.push({ pid: child, cmd });
      walk(child);
    }
  };
  walk(pid);
  return found;
}

const isNatsServer = (cmd: string): boolean => cmd.startsWith('nats-server ') || cmd.includes('/nats-server ');

const alive = (pid: number): boolean => {
  try {
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
};

/** main.js on a run long enough to be interrupted, once host A and host B both run; with everything it started. */
async function busyMain(): Promise<{ main: ReturnType<typeof spawn>; started: { pid: number; cmd: string }[]; stderr: () => string }> {
  const main = spawn(process.execPath, [script('main.js'), '100000000'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  main.stderr!.on('data', (d: Buffer) => (err += d));
  for (let i = 0; i < 1000; i++) {
    const started = descendants(main.pid!);
    if (started.some((p) => p.cmd.includes('host-a.js')) && started.some((p) => p.cmd.includes('host-b.js'))) {
      await sleep(300); // host A writes, the bridges move
      return { main, started: descendants(main.pid!), stderr: () => err };
    }
    await sleep(10);
  }
  main.kill('SIGKILL');
  throw new Error(`main.js did not start both hosts within 10 s: ${err}`);
}

/** Waits up to 5 s for `pids` to end; SIGKILLs and returns those left. */
async function ended(pids: { pid: number; cmd: string }[]): Promise<string[]> {
  for (let i = 0; i < 200 && pids.some((p) => alive(p.pid)); i++) await sleep(25);
  const left = pids.filter((p) => alive(p.pid));
  for (const p of left) process.kill(p.pid, 'SIGKILL');
  return left.map((p) => p.cmd);
}

describe('examples/two-hosts', function () {
  this.timeout(120_000);

  before(function () {
    if (natsServerBinary() !== undefined) return;
    console.log(`      skipped: ${NATS_MISSING}`);
    this.skip();
  });

  it("moves 20 k orders from host A's ring to host B's through NATS, in order, and leaves nothing behind", async () => {
    const shmBefore = new Set(fs.readdirSync('/dev/shm'));
    const server = await startNatsServer();
    // The nats-server itself, not the shell that runs it (TIED_TO_PARENT): the one that must be gone after stop().
    const nats = descendants(server.child.pid!).filter((p) => isNatsServer(p.cmd));
    try {
      assert.equal(nats.length, 1, JSON.stringify(descendants(server.child.pid!)));
      const r = await exchange(server.url('two-hosts.test'), 20_000);
      assert.deepEqual({ sent: r.sent, received: r.received, outOfOrder: r.outOfOrder }, { sent: 20_000, received: 20_000, outOfOrder: 0 });
    } finally {
      await server.stop();
    }
    assert.equal(alive(nats[0]!.pid), false, 'the nats-server ended with stop()');
    const added = fs.readdirSync('/dev/shm').filter((name) => name.startsWith('shmring-two-hosts-') && !shmBefore.has(name));
    assert.deepEqual(added, [], 'each host unlinks its ring once its bridge has it');
  });

  it('run again on one JetStream stream, host B checks the new run, not what the stream kept of the last one', async () => {
    const shmBefore = new Set(fs.readdirSync('/dev/shm'));
    // Host B's bridge keeps its place in a marker beside its ring (<ring>.jsbridge): seen made, it must be gone too.
    const made = new Set<string>();
    const watcher = fs.watch('/dev/shm', (_, name) => {
      if (name?.startsWith('shmring-two-hosts-')) made.add(name);
    });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'two-hosts-js-'));
    const server = await startNatsServer({ jetstreamDir: dir });
    try {
      const url = server.url('two-hosts.again?jetstream=TWO_HOSTS_AGAIN');
      // Different counts: host B reading the first run again would say 5 where 12 were sent.
      for (const count of [5, 12]) {
        const r = await exchange(url, count);
        assert.deepEqual({ sent: r.sent, received: r.received, outOfOrder: r.outOfOrder }, { sent: count, received: count, outOfOrder: 0 });
      }
    } finally {
      watcher.close();
      await server.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
    assert.equal([...made].filter((name) => name.endsWith('.jsbridge')).length, 2, `one marker per run of host B: ${[...made].join(', ')}`);
    const added = fs.readdirSync('/dev/shm').filter((name) => name.startsWith('shmring-two-hosts-') && !shmBefore.has(name));
    assert.deepEqual(added, [], "each host removes its ring, and host B its bridge's marker");
  });

  it('host B whose bridge fails once it is ready (a user not permitted to subscribe) exits 1 at once, saying why, and removes its ring', async () => {
    const shmBefore = new Set(fs.readdirSync('/dev/shm'));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'two-hosts-denied-'));
    const config = path.join(dir, 'nats.conf');
    // Subscribing to the subject is refused after the subscription was sent: the bridge is ready (subscribed), then fails.
    fs.writeFileSync(
      config,
      'authorization { users = [ { user: "reader", password: "secret", permissions: { subscribe: { deny: ["two-hosts.denied"] } } } ] }\n',
    );
    const server = await startNatsServer({ config });
    let b: ReturnType<typeof spawn> | undefined;
    try {
      const url = server.url('two-hosts.denied').replace('nats://', 'nats://reader:secret@');
      const t0 = performance.now();
      // 60 s for each read: a host B that did not watch its bridge would wait that long for a message that cannot come.
      b = spawn(process.execPath, [script('host-b.js'), url, '60'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      b.stdout!.on('data', (d: Buffer) => (out += d));
      b.stderr!.on('data', (d: Buffer) => (err += d));
      const [code] = (await Promise.race([once(b, 'close'), sleep(20_000).then(() => [undefined])])) as [number | null | undefined];
      assert.notEqual(code, undefined, `host B still ran after 20 s: ${out}${err}`);
      assert.equal(code, 1, err);
      assert.ok(performance.now() - t0 < 10_000, `host B took ${performance.now() - t0} ms`);
      assert.match(out, /^ready$/m, 'the bridge failed after it was ready');
      assert.match(err, /^host B: its bridge failed: .*subscribe to 'two-hosts\.denied'.*\(ERR_SHMRING_NOT_PERMITTED\)$/m);
      const added = fs.readdirSync('/dev/shm').filter((name) => name.startsWith('shmring-two-hosts-') && !shmBefore.has(name));
      assert.deepEqual(added, []);
    } finally {
      b?.kill('SIGKILL'); // ended already, unless the test failed first
      await server.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a host's bridge that fails or ends before the host stops it stops the host, which says why; one the host stopped does not", async () => {
    const failed = new AbortController();
    stopWithBridge(Promise.reject(Object.assign(new Error('nats://127.0.0.1:4222/orders: refused'), { code: 'ERR_SHMRING_X' })), failed);
    const ended = new AbortController();
    stopWithBridge(Promise.resolve(), ended);
    const stopped = new AbortController();
    let endBridge!: () => void;
    stopWithBridge(new Promise<void>((resolve) => (endBridge = resolve)), stopped);
    stopped.abort(); // the host stops its bridge itself, which then ends
    endBridge();
    await sleep(0);
    assert.equal(failed.signal.aborted, true);
    assert.equal(endingOf(new Error('aborted'), failed), 'its bridge failed: nats://127.0.0.1:4222/orders: refused (ERR_SHMRING_X)');
    assert.equal(ended.signal.aborted, true);
    assert.equal(endingOf(new Error('aborted'), ended), 'its bridge ended before the host stopped it');
    assert.equal(endingOf(new Error('the flush failed'), stopped), 'the flush failed');
  });

  it('host B exits 1 naming the orders lost just before END, which leave no gap among those that came', async () => {
    const server = await startNatsServer();
    const url = server.url('two-hosts.lost');
    const run = newRun();
    const b = spawn(process.execPath, [script('host-b.js'), url, '60', run], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = once(b, 'close') as Promise<[number | null]>;
    let out = '';
    let err = '';
    b.stderr!.on('data', (d: Buffer) => (err += d));
    const ready = new Promise<void>((resolve, reject) => {
      b.stdout!.on('data', (d: Buffer) => {
        out += d;
        if (/^ready$/m.test(out)) resolve(); // subscribed: what is published from now on reaches it
      });
      void exited.then(() => reject(new Error(`host-b.js exited before it was ready: ${err}`)));
    });
    const stop = new AbortController();
    let created: ReturnType<typeof createRing> | undefined;
    try {
      await ready;
      // Host A's part by hand (host-a.ts): orders 0 to 4, then an END saying 8 were sent, as if 5 to 7 were lost on the way.
      created = createRing('a');
      let onReady!: () => void;
      const bridgeReady = new Promise<void>((resolve) => (onReady = resolve));
      const bridged = bridge(`shm:${created.name}`, url, { signal: stop.signal, onReady });
      await Promise.race([bridgeReady, bridged]);
      for (let seq = 0; seq < 5; seq++) assert.ok(created.ring.tryWrite(order(run, seq), seq % 3));
      assert.ok(created.ring.tryWrite(end(run, 8), END));
      while (created.ring.size > 0) await sleep(5); // the bridge has published them all
      stop.abort();
      await bridged;
      const [code] = await exited;
      assert.equal(code, 1, err);
      const summary = JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
      assert.deepEqual(
        { sent: summary.sent, received: summary.received, missing: summary.missing, outOfOrder: summary.outOfOrder },
        { sent: 8, received: 5, missing: 3, outOfOrder: 0 },
      );
      assert.match(err, new RegExp(`^host B: run ${run}: host A sent 8 orders, 5 came: orders 5 to 7 are missing$`, 'm'));
    } finally {
      stop.abort();
      b.kill('SIGKILL'); // ended already, unless the test failed first
      if (created !== undefined) {
        created.region.unlink();
        created.region.close();
      }
      await server.stop();
    }
  });

  it('host B fails with ERR_SHMRING_UNREACHABLE naming the address when no NATS server answers there, and removes its ring', async () => {
    const shmBefore = new Set(fs.readdirSync('/dev/shm'));
    await assert.rejects(
      exchange('nats://127.0.0.1:1/two-hosts.none', 10),
      /host-b\.js exited with 1: host B: .*127\.0\.0\.1:1.*\(ERR_SHMRING_UNREACHABLE\)/,
    );
    const added = fs.readdirSync('/dev/shm').filter((name) => name.startsWith('shmring-two-hosts-') && !shmBefore.has(name));
    assert.deepEqual(added, []);
  });

  it('main.js moves a handful of orders (or none) with a nats-server of its own', () => {
    for (const n of ['0', '3']) {
      const r = spawnSync(process.execPath, [script('main.js'), n], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.match(
        r.stdout,
        new RegExp(`^nats://127\\.0\\.0\\.1:\\d+/orders: host A sent ${n} orders, host B received ${n}, 0 out of order`),
      );
    }
  });

  it('main.js without nats-server installed says so in one line and exits 1', function () {
    // nats-server hidden in a mount namespace of its own: /dev/null bound over it (root, or a user namespace where allowed).
    const binary = fs.realpathSync(
      spawnSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' }).stdout.trim() || '/usr/sbin/nats-server',
    );
    const unshare = ['-m', ...(process.getuid?.() === 0 ? [] : ['-r'])];
    const probe = spawnSync('unshare', [...unshare, 'mount', '--bind', '/dev/null', binary], { encoding: 'utf8' });
    if (probe.status !== 0) {
      console.log(`      skipped: cannot hide nats-server in a mount namespace (${(probe.error?.message ?? probe.stderr).trim()})`);
      this.skip();
    }
    const r = spawnSync(
      'unshare',
      [...unshare, 'sh', '-c', 'mount --bind /dev/null "$1" && exec "$2" "$3" 3', 'sh', binary, process.execPath, script('main.js')],
      { encoding: 'utf8', timeout: 30_000 },
    );
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stderr, `main.js: ${NATS_MISSING}\n`);
    assert.equal(r.stdout, '');
  });

  it('main.js, host-a.js and host-b.js refuse a count (or timeout) that is not a non-negative integer with usage and exit 2', () => {
    const runs: [string, string[], RegExp][] = [
      ['main.js', [], /^usage: node main\.js \[count\] \[nats:\/\/host:port\/<subject>\]: .*non-negative integer/],
      ['host-a.js', ['nats://127.0.0.1:1/x'], /^usage: node host-a\.js .*\[count\] \[run\]: count is a non-negative integer/],
      ['host-b.js', ['nats://127.0.0.1:1/x'], /^usage: node host-b\.js .*\[timeout s\] \[run\]: the timeout is a positive integer/],
    ];
    for (const [name, args, usage] of runs) {
      for (const bad of ['abc', '-5', ...(name === 'host-b.js' ? ['0'] : [])]) {
        const r = spawnSync(process.execPath, [script(name), ...args, bad], { encoding: 'utf8' });
        assert.equal(r.status, 2, `${name} ${bad}: ${r.stderr}`);
        assert.equal(r.stdout, '', `${name} ${bad}`);
        assert.match(r.stderr, usage, `${name} ${bad}`);
      }
    }
  });

  it('main.js SIGKILLed mid-run: both hosts and the nats-server it started end, and nothing is left in /dev/shm', async () => {
    const shmBefore = new Set(fs.readdirSync('/dev/shm'));
    const { main, started } = await busyMain();
    assert.ok(
      started.some((p) => isNatsServer(p.cmd)),
      JSON.stringify(started),
    );
    main.kill('SIGKILL');
    assert.deepEqual(await ended(started), [], 'outlived main.js by 5 s');
    const added = fs.readdirSync('/dev/shm').filter((name) => name.startsWith('shmring-two-hosts-') && !shmBefore.has(name));
    assert.deepEqual(added, []);
  });

  it('the nats-server main.js started dying ends the run at once, saying so; the hosts end too', async () => {
    const { main, started, stderr } = await busyMain();
    const server = started.find((p) => isNatsServer(p.cmd))!;
    const t0 = performance.now();
    process.kill(server.pid, 'SIGKILL');
    const [code] = (await once(main, 'exit')) as [number | null];
    assert.equal(code, 1);
    assert.ok(performance.now() - t0 < 5000, `main.js took ${performance.now() - t0} ms`);
    assert.match(stderr(), /^main\.js: the nats-server main\.js started was killed by SIGKILL$/m);
    assert.deepEqual(await ended(started), []);
  });

  it('host B interrupted (SIGINT) while its bridge is still connecting says so, exits 130 and removes its ring', async () => {
    const shmBefore = new Set(fs.readdirSync('/dev/shm'));
    // A server that accepts and never answers: the bridge stays connecting.
    const silent = (await import('node:net')).createServer(() => undefined);
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    let host: ReturnType<typeof spawn> | undefined;
    try {
      const port = (silent.address() as { port: number }).port;
      host = spawn(process.execPath, [script('host-b.js'), `nats://127.0.0.1:${port}/orders`], { stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      host.stderr!.on('data', (d: Buffer) => (err += d));
      // Its bridge reached the server: host B is connecting, its SIGINT handler in place (set before the bridge starts).
      await once(silent, 'connection');
      host.kill('SIGINT');
      const [code] = (await once(host, 'exit')) as [number | null];
      assert.equal(code, 130, err);
      assert.match(err, /^host B: interrupted \(SIGINT\); stopped$/m);
      const added = fs.readdirSync('/dev/shm').filter((name) => name.startsWith('shmring-two-hosts-') && !shmBefore.has(name));
      assert.deepEqual(added, []);
    } finally {
      host?.kill('SIGKILL'); // ended already, unless the test failed first
      silent.close();
    }
  });
});
