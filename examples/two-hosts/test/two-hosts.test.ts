import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { exchange, NATS_MISSING, natsServerBinary, startNatsServer } from '../src/main.js';

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

  it('host B fails with ERR_SHMRING_UNREACHABLE naming the address when no NATS server answers there, and removes its ring', async () => {
    const shmBefore = new Set(fs.readdirSync('/dev/shm'));
    await assert.rejects(
      exchange('nats://127.0.0.1:1/two-hosts.none', 10),
      /host-b\.js exited with 1: host B: .*127\.0\.0\.1:1.*\(ERR_SHMRING_UNREACHABLE\)/,
    );
    const added = fs.readdirSync('/dev/shm').filter((name) => name.startsWith('shmring-two-hosts-') && !shmBefore.has(name));
    assert.deepEqual(added, []);
  });
});
