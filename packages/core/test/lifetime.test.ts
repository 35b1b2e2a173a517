/**
 * What a region holds and when it gives it back: fds and mappings of
 * regions dropped without close(), regions closed in a worker (no Node
 * warning), the main thread's fd mapped by workers, regions left open by a
 * worker that ends. Each runs in a child
 * process (test/fixtures/lifetime.ts) so that its fd counts are its own.
 */
import assert from 'node:assert/strict';
import { availableBackends } from '../src/native/loader.js';
import { LIFETIME, runNode } from './helpers.js';

interface Counts {
  /** Every fd of the process. */
  fds: number;
  /** fds of the test's memfds. */
  ours: number;
  /** Mappings of the test's memfds. */
  mappings: number;
}

for (const kind of availableBackends()) {
  describe(`Region lifetime with the ${kind} backend`, () => {
    const env = { SHMRING_BACKEND: kind };

    it('gives back the fds and mappings of 2004 memfd regions dropped without close() once GC collects them', async () => {
      const { code, stdout, stderr } = await runNode(LIFETIME, ['drop'], { env, nodeArgs: ['--expose-gc'] }).done;
      assert.equal(code, 0, stderr);
      const { start, dropped, collected } = JSON.parse(stdout) as Record<'start' | 'dropped' | 'collected', Counts>;
      // Held while alive (2000 small regions and 4 of 256 MiB)...
      assert.equal(dropped.ours, 2004);
      assert.equal(dropped.mappings, 2004);
      // ...and all given back after GC: the process's fd count is back where it started.
      assert.equal(collected.ours, 0);
      assert.equal(collected.mappings, 0);
      assert.ok(collected.fds <= start.fds + 2, `fds: ${start.fds} at start, ${collected.fds} after GC`);
    });

    it('creates, opens and closes regions in a worker without a Node warning', async () => {
      const { code, stdout, stderr } = await runNode(LIFETIME, ['worker'], { env }).done;
      assert.equal(code, 0, stderr);
      assert.deepEqual(JSON.parse(stdout), { warnings: [] });
      assert.doesNotMatch(stderr, /Warning/);
    });

    it("lets workers map the main thread's fd with fromFd without closing it, whether they close their region or not", async () => {
      const { code, stdout, stderr } = await runNode(LIFETIME, ['borrow'], { env }).done;
      assert.equal(code, 0, stderr);
      assert.deepEqual(JSON.parse(stdout), { fdOpen: true, seen: 2, closed: true });
    });

    it('gives back the fds of regions a worker leaves open when it ends', async () => {
      const { code, stdout, stderr } = await runNode(LIFETIME, ['abandon'], { env }).done;
      assert.equal(code, 0, stderr);
      assert.deepEqual(JSON.parse(stdout), { opened: 10, left: 0 });
    });

    for (const how of ['terminate', 'exit', 'return'] as const) {
      const ending = { terminate: 'is terminated', exit: 'calls process.exit()', return: 'returns' }[how];
      it(`gives back every fd, mapping and role lock of a worker that ${ending} without close(), 8 times over`, async function () {
        // koffi has no hook that runs at terminate(): a terminated worker's fds stay (core's README).
        if (kind === 'koffi' && how === 'terminate') this.skip();
        const { code, stdout, stderr } = await runNode(LIFETIME, ['teardown', how], { env }).done;
        assert.equal(code, 0, stderr);
        const { start, end, left, mappings, lockHeld } = JSON.parse(stdout) as Record<string, unknown>;
        // Each worker held 3 region fds and 3 lock fds, and 2 mappings of its memfd and posix object.
        assert.deepEqual({ left, mappings, lockHeld }, { left: 0, mappings: 0, lockHeld: false });
        assert.ok((end as number) <= (start as number), `fds: ${String(start)} before 8 workers, ${String(end)} after`);
      });
    }
  });
}
