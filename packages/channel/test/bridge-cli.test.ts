/**
 * `shmring bridge` as a command: what it prints never carries the
 * credentials of a nats://user:pass@ endpoint, and a --poll it cannot take
 * is bad usage (exit 2 and the usage), as a malformed endpoint is.
 */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { waitUntil } from './helpers.js';
import { TestRings } from './bridge-rings.js';
import { type NatsServer, sharedNats, skipWithoutNats, uniqueSubject } from './nats-server.js';

const BRIDGE_BIN = fileURLToPath(new URL('../../bin/shmring-bridge.js', import.meta.url));
const rings = new TestRings('bridge-cli', 1 << 16);

describe('shmring bridge, the command', function () {
  this.timeout(60_000);

  afterEach(() => rings.clean());

  describe('--poll', function () {
    for (const poll of ['soon', '0x10', 'Infinity', '1e400', '1e3', '', '2000000', '-1']) {
      it(`--poll=${poll} is bad usage: exit 2, a line naming --poll, then the usage (and no ring is opened)`, function () {
        // The ring does not exist: an accepted --poll would go on to fail at run time with exit 1.
        const r = spawnSync(
          process.execPath,
          [BRIDGE_BIN, `--poll=${poll}`, `shm:shmring-bridge-cli-${process.pid}-none`, 'nats://127.0.0.1:4222/x'],
          {
            encoding: 'utf8',
          },
        );
        const shown = `exit ${r.status}, stderr ${r.stderr}`;
        assert.equal(r.status, 2, shown);
        const [first, usage] = r.stderr.split('\n');
        assert.match(first!, /^shmring bridge:? --poll/, shown);
        assert.match(usage!, /^usage: shmring bridge \[--poll <µs>\] <from> <to>$/, shown);
      });
    }

    it('--poll=0, --poll=50 and --poll=1000000 are taken (the command goes on to open the ring)', function () {
      for (const poll of ['0', '50', '2.5', '1000000']) {
        const r = spawnSync(
          process.execPath,
          [BRIDGE_BIN, `--poll=${poll}`, `shm:shmring-bridge-cli-${process.pid}-none`, 'nats://127.0.0.1:4222/x'],
          {
            encoding: 'utf8',
          },
        );
        assert.equal(r.status, 1, `--poll=${poll}: exit ${r.status}, stderr ${r.stderr}`);
        assert.match(r.stderr, /ENOENT/);
      }
    });
  });

  describe('credentials', function () {
    let nats: NatsServer;

    before(async function () {
      skipWithoutNats(this);
      nats = await sharedNats();
    });

    it('the "running" line names nats://user:pass@… endpoints without their credentials', async function () {
      const a = rings.make();
      const subject = uniqueSubject('cli');
      // A server without authorization takes any credentials.
      const child = spawn(process.execPath, [BRIDGE_BIN, `shm:${a.name}`, `nats://someone:s3cr3t@127.0.0.1:${nats.port}/${subject}`], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      try {
        await waitUntil(() => stderr.includes(': running') || child.exitCode !== null, 'the bridge to start');
        assert.match(
          stderr,
          new RegExp(`shmring bridge: shm:${a.name} → nats://127\\.0\\.0\\.1:${nats.port}/${subject.replaceAll('.', '\\.')}: running`),
        );
        assert.doesNotMatch(stderr, /s3cr3t|someone/);
      } finally {
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        await exited;
      }
    });

    it('a malformed endpoint with credentials is refused without them in the message', function () {
      const r = spawnSync(process.execPath, [BRIDGE_BIN, 'shm:x', 'nats://someone:s3cr3t@127.0.0.1:4222/a..b'], { encoding: 'utf8' });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /'nats:\/\/\*\*\*@127\.0\.0\.1:4222\/a\.\.b' is not a valid endpoint: .*empty token/);
      assert.doesNotMatch(r.stderr, /s3cr3t|someone/);
    });
  });
});
