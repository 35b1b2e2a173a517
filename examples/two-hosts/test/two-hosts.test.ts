import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { exchange, NATS_MISSING, natsServerBinary, startNatsServer } from '../src/main.js';

const script = (name: string): string => fileURLToPath(new URL(`../src/${name}`, import.meta.url));

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
    try {
      const r = await exchange(server.url('two-hosts.test'), 20_000);
      assert.deepEqual({ sent: r.sent, received: r.received, outOfOrder: r.outOfOrder }, { sent: 20_000, received: 20_000, outOfOrder: 0 });
    } finally {
      await server.stop();
    }
    assert.notEqual(server.child.exitCode ?? server.child.signalCode, null, 'the nats-server is stopped');
    const added = fs.readdirSync('/dev/shm').filter((name) => name.startsWith('shmring-two-hosts-') && !shmBefore.has(name));
    assert.deepEqual(added, [], 'each host unlinks its ring once its bridge has it');
  });

  it('run again on one JetStream stream, host B checks the new run, not what the stream kept of the last one', async () => {
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
      await server.stop();
      fs.rmSync(dir, { recursive: true, force: true });
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

  it('main.js, host-a.js and host-b.js refuse a count (or timeout) that is not a non-negative integer with usage and exit 2', () => {
    const runs: [string, string[], RegExp][] = [
      ['main.js', [], /^usage: node main\.js \[count\] \[nats:\/\/host:port\/<subject>\]: .*non-negative integer/],
      ['host-a.js', ['nats://127.0.0.1:1/x'], /^usage: node host-a\.js .*\[count\] \[run\]: count is a non-negative integer/],
      ['host-b.js', ['nats://127.0.0.1:1/x'], /^usage: node host-b\.js .*\[timeout s\] \[run\]: the timeout is a non-negative integer/],
    ];
    for (const [name, args, usage] of runs) {
      for (const bad of ['abc', '-5']) {
        const r = spawnSync(process.execPath, [script(name), ...args, bad], { encoding: 'utf8' });
        assert.equal(r.status, 2, `${name} ${bad}: ${r.stderr}`);
        assert.equal(r.stdout, '', `${name} ${bad}`);
        assert.match(r.stderr, usage, `${name} ${bad}`);
      }
    }
  });
});
