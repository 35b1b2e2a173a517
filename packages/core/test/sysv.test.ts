/**
 * System V shared memory regions ('sysv'): created and opened by key or by
 * id across processes, unlink() as IPC_RMID (the key goes at once, the
 * segment with its last detach, even a process that dies without close()),
 * the errors (EEXIST, ENOENT naming the key, bad arguments) and that no
 * segment outlives its region. Against each backend; what the kernel holds
 * is read from /proc/sysvipc/shm.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as net from 'node:net';
import { Region, sendRegion } from '@shmring/core';
import { availableBackends, backend, useBackend } from '../src/native/loader.js';
import { runNode } from './helpers.js';
import { SHM_DEST, SYSV_PEER, assertEchoes, ownSegments, segments, uniqueKey } from './segments.js';

/** Starts a peer that attaches segment `id` and holds it until released (its stdin closes); a disposable that kills it. */
async function holder(id: number, env: NodeJS.ProcessEnv): Promise<{ release: () => Promise<void> } & Disposable> {
  const child = spawn(process.execPath, [SYSV_PEER, 'hold', String(id)], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
  const exited = once(child, 'exit');
  const [line] = (await once(child.stdout!, 'data')) as [Buffer];
  assert.ok(JSON.parse(String(line)).attached > 0);
  return {
    release: async () => {
      child.stdin!.end();
      await exited;
    },
    [Symbol.dispose]: () => child.kill('SIGKILL'),
  };
}

for (const kind of availableBackends()) {
  describe(`System V regions with the ${kind} backend`, () => {
    const env = { SHMRING_BACKEND: kind };
    let previous: ReturnType<typeof backend>['kind'];
    let before: Set<number>;
    beforeEach(() => {
      previous = backend().kind;
      useBackend(kind);
      before = new Set(ownSegments());
    });
    afterEach(() => {
      useBackend(previous);
      // No test leaves a segment of this process behind.
      const left = ownSegments().filter((id) => !before.has(id));
      for (const id of left) backend().shmRemove(id);
      assert.deepEqual(left, [], 'segments left behind');
    });

    it('lets a child open a keyed segment by its key, and leaves none once unlinked and closed', async () => {
      const key = uniqueKey();
      const region = Region.create({ backing: 'sysv', size: 10_000, key });
      assert.equal(region.backing, 'sysv');
      assert.equal(region.key, key);
      assert.equal(region.size, 10_000);
      assert.equal(region.fd, -1);
      const segment = segments().get(region.id!);
      assert.deepEqual([segment?.key, segment?.size, segment && segment.perms & 0o777], [key, 10_000, 0o600]);
      await assertEchoes(region, SYSV_PEER, ['echo-key', String(key)], { env });
      region.unlink();
      region.close();
      assert.equal(segments().has(region.id!), false);
    });

    it('creates a private segment without a key, which a child opens by its id', async () => {
      const region = Region.create({ backing: 'sysv', size: 4096 });
      try {
        assert.equal(region.key, undefined);
        assert.equal(segments().get(region.id!)?.key, 0, 'IPC_PRIVATE');
        await assertEchoes(region, SYSV_PEER, ['echo-id', String(region.id)], { env });
      } finally {
        region.unlink();
        region.close();
      }
    });

    it("unlink frees the key at once and the segment goes with the last detach, another process's", async () => {
      const key = uniqueKey();
      const region = Region.create({ backing: 'sysv', size: 4096, key });
      const id = region.id!;
      using other = await holder(id, env);
      region.unlink();
      const marked = segments().get(id);
      assert.equal(marked?.key, 0, 'the key is gone');
      assert.ok((marked!.perms & SHM_DEST) !== 0, 'marked for removal');
      assert.throws(() => Region.open({ backing: 'sysv', key }), { code: 'ENOENT' });
      using again = Region.create({ backing: 'sysv', size: 4096, key }); // the key is free for a new segment
      again.unlink();
      region.close();
      assert.equal(segments().get(id)?.nattch, 1, 'still attached by the other process');
      await other.release();
      assert.equal(segments().has(id), false, 'gone with the last detach');
    });

    for (const how of ['exit', 'kill']) {
      it(`removes a marked segment whose only process ${how === 'kill' ? 'is SIGKILLed' : 'exits'} without close()`, async () => {
        const { code, stdout, stderr } = await runNode(SYSV_PEER, ['die-attached', how], { env }).done;
        assert.equal(code, how === 'kill' ? null : 0, stderr);
        const { id } = JSON.parse(stdout) as { id: number };
        assert.equal(segments().has(id), false);
      });
    }

    it('detaches a region dropped without close() when GC collects it', async () => {
      const { code, stdout, stderr } = await runNode(SYSV_PEER, ['drop'], { env, nodeArgs: ['--expose-gc'] }).done;
      assert.equal(code, 0, stderr);
      assert.deepEqual(JSON.parse(stdout), { before: true, after: false });
    });

    it('reuses an existing key with exclusive: false, and maps it read-only when asked', () => {
      const key = uniqueKey();
      using region = Region.create({ backing: 'sysv', size: 8192, key, mode: 0o640 });
      try {
        assert.equal(segments().get(region.id!)!.perms & 0o777, 0o640);
        new Uint8Array(region.buffer)[100] = 9;
        using same = Region.create({ backing: 'sysv', size: 4096, key, exclusive: false });
        assert.equal(same.id, region.id);
        assert.equal(same.size, 8192, 'the size of the segment that exists');
        using ro = Region.open({ backing: 'sysv', id: region.id!, readOnly: true });
        assert.equal(ro.readOnly, true);
        assert.equal(new Uint8Array(ro.buffer)[100], 9);
      } finally {
        region.unlink();
      }
    });

    it('removes the segment it made with exclusive: false (nobody had the key) when it cannot attach it', function () {
      // A user namespace: its root has no CAP_IPC_OWNER over this IPC namespace, so a segment of mode 0444 cannot
      // be attached for writing (EACCES), as for any user who is not root.
      const key = uniqueKey();
      const code = `
        const { Region } = await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});
        try {
          Region.create({ backing: 'sysv', size: 4096, key: ${key}, exclusive: false, mode: 0o444 });
          console.log('created');
        } catch (err) {
          console.log(err.code);
        }`;
      const child = spawnSync('unshare', ['-r', process.execPath, '--input-type=module', '-e', code], {
        env: { ...process.env, ...env },
        encoding: 'utf8',
        timeout: 30_000,
      });
      if (child.error !== undefined || (child.status !== 0 && child.stdout === '')) {
        console.log(`      (skipped: no user namespace here: ${child.error?.message ?? child.stderr.trim()})`);
        this.skip();
      }
      const left = [...segments().values()].filter((segment) => segment.key === key);
      for (const segment of left) backend().shmRemove(segment.id);
      assert.equal(child.stdout.trim(), 'EACCES', child.stderr);
      assert.deepEqual(left, [], 'the segment it made stayed');
    });

    it("leaves a closed region's old views empty and closes idempotently", () => {
      const region = Region.create({ backing: 'sysv', size: 4096 });
      region.unlink();
      const view = new Uint8Array(region.buffer);
      region.close();
      assert.equal(view.length, 0);
      assert.throws(() => region.buffer, { code: 'ERR_SHMRING_CLOSED' });
      region.close();
    });

    describe('errors', () => {
      it('fails with EEXIST naming the key and saying how to inspect it', () => {
        const key = uniqueKey();
        using region = Region.create({ backing: 'sysv', size: 4096, key });
        try {
          assert.throws(
            () => Region.create({ backing: 'sysv', size: 4096, key }),
            (err: Error & Record<string, unknown>) => {
              assert.equal(err.code, 'EEXIST');
              assert.equal(err.syscall, 'shmget');
              assert.ok(err.message.includes(`key 0x${key.toString(16).padStart(8, '0')}`), err.message);
              assert.ok(err.message.includes('shmring inspect --all'), err.message);
              assert.ok(err.message.includes('exclusive: false'), err.message);
              return true;
            },
          );
        } finally {
          region.unlink();
        }
      });

      it('fails with ENOENT naming the key when no segment has it', () => {
        const key = uniqueKey();
        assert.throws(
          () => Region.open({ backing: 'sysv', key }),
          (err: Error & Record<string, unknown>) => {
            assert.equal(err.code, 'ENOENT');
            assert.equal(err.syscall, 'shmget');
            assert.ok(err.message.includes(`0x${key.toString(16).padStart(8, '0')}`), err.message);
            assert.ok(err.message.includes('create it first'), err.message);
            return true;
          },
        );
      });

      it('fails with EINVAL naming the id when no segment has it, and on a second unlink after the last detach', () => {
        const region = Region.create({ backing: 'sysv', size: 4096 });
        const id = region.id!;
        region.unlink();
        region.close();
        for (const attempt of [() => Region.open({ backing: 'sysv', id }), () => region.unlink()]) {
          assert.throws(attempt, (err: Error & Record<string, unknown>) => {
            assert.ok(err.code === 'EINVAL' || err.code === 'EIDRM', String(err.code));
            assert.ok(err.message.includes(`id ${id}`), err.message);
            return true;
          });
        }
      });

      it('rejects keys, ids and modes that are not what System V takes, with typed errors', () => {
        for (const key of ['0x10', 1.5, null, 10n]) {
          assert.throws(
            () => Region.create({ backing: 'sysv', size: 4096, key: key as number }),
            { name: 'TypeError', code: 'ERR_SHMRING_INVALID_ARGUMENT' },
            String(key),
          );
        }
        for (const key of [0, 2 ** 32, -(2 ** 31) - 1]) {
          assert.throws(
            () => Region.create({ backing: 'sysv', size: 4096, key }),
            { name: 'RangeError', code: 'ERR_SHMRING_INVALID_ARGUMENT' },
            String(key),
          );
          assert.throws(
            () => Region.open({ backing: 'sysv', key }),
            { name: 'RangeError', code: 'ERR_SHMRING_INVALID_ARGUMENT' },
            String(key),
          );
        }
        assert.throws(() => Region.create({ backing: 'sysv', size: 4096, mode: 0o1600 }), {
          name: 'RangeError',
          code: 'ERR_SHMRING_INVALID_ARGUMENT',
        });
        assert.throws(() => Region.open({ backing: 'sysv' }), { name: 'TypeError', code: 'ERR_SHMRING_INVALID_ARGUMENT' });
        assert.throws(() => Region.open({ backing: 'sysv', key: 5, id: 5 }), { name: 'TypeError', code: 'ERR_SHMRING_INVALID_ARGUMENT' });
        assert.throws(() => Region.open({ backing: 'sysv', id: -1 }), { name: 'RangeError', code: 'ERR_SHMRING_INVALID_ARGUMENT' });
        assert.throws(() => Region.open({ backing: 'sysv', id: '7' as unknown as number }), {
          name: 'TypeError',
          code: 'ERR_SHMRING_INVALID_ARGUMENT',
        });
      });

      it('takes a key printed as a negative int32 as the same key', () => {
        const key = uniqueKey() | 0x8000_0000;
        using region = Region.create({ backing: 'sysv', size: 4096, key: key | 0 });
        try {
          assert.equal(region.key, key >>> 0);
          using same = Region.open({ backing: 'sysv', key: key >>> 0 });
          assert.equal(same.id, region.id);
        } finally {
          region.unlink();
        }
      });

      it('refuses to send a sysv region over a socket, saying to send its id', async () => {
        using region = Region.create({ backing: 'sysv', size: 4096 });
        region.unlink();
        await assert.rejects(sendRegion(new net.Socket(), region), (err: Error & Record<string, unknown>) => {
          assert.equal(err.code, 'ERR_SHMRING_INVALID_BACKING');
          assert.ok(err.message.includes('region.id'), err.message);
          return true;
        });
      });
    });
  });
}
