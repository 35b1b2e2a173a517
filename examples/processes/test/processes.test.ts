import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { exchange } from '../src/main.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

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
});
