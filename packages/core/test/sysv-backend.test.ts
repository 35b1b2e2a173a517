/**
 * The backend calls under the sysv and huge page regions, against each
 * backend with the same expectations (the NativeBackend contract in
 * crates/shm-sys/index.d.ts): shmGet / shmAttach / shmRemove, munmap of an
 * attach, populate, and their argument errors, thrown before any system call.
 */
import assert from 'node:assert/strict';
import { availableBackends, loadBackend } from '../src/native/loader.js';
import { segments } from './segments.js';

const IPC_CREAT = 0o1000;
const IPC_EXCL = 0o2000;
const SHM_NORESERVE = 0o10000;

for (const kind of availableBackends()) {
  describe(`System V calls of the ${kind} backend`, () => {
    const b = loadBackend(kind);

    it('creates, attaches, detaches and removes a segment, which is gone at the end', () => {
      const id = b.shmGet(0, 5000, IPC_CREAT | IPC_EXCL | 0o600);
      try {
        const buffer = b.shmAttach(id, true);
        assert.equal(buffer.byteLength, 5000, 'sized by IPC_STAT');
        const readOnly = b.shmAttach(id, false);
        new Uint8Array(buffer)[4999] = 7;
        assert.equal(new Uint8Array(readOnly)[4999], 7);
        assert.equal(segments().get(id)?.nattch, 2);
        const view = new Uint8Array(buffer);
        b.munmap(buffer);
        assert.equal(view.length, 0, 'detached before shmdt');
        b.munmap(buffer); // a second call is a no-op
        assert.equal(segments().get(id)?.nattch, 1);
        b.munmap(readOnly);
      } finally {
        b.shmRemove(id);
      }
      assert.equal(segments().has(id), false);
    });

    it('populates a writable mapping and refuses a buffer that is not one, or is detached, with TypeError', () => {
      const id = b.shmGet(0, 8192, IPC_CREAT | 0o600);
      const buffer = b.shmAttach(id, true);
      b.shmRemove(id); // goes with the detach below
      b.populate(buffer);
      b.munmap(buffer);
      assert.throws(() => b.populate(buffer), TypeError);
      assert.throws(() => b.populate(new ArrayBuffer(8)), TypeError);
      assert.equal(segments().has(id), false);
    });

    it('reports the failures of shmget, shmat and shmctl with errno and syscall', () => {
      assert.throws(() => b.shmGet(0x5dead001, 0, 0), { code: 'ENOENT', syscall: 'shmget' });
      assert.throws(
        () => b.shmAttach(0x7fff_fff0, true),
        (err: Error & Record<string, unknown>) =>
          (err.code === 'EINVAL' || err.code === 'EIDRM') && err.syscall === 'shmat' && typeof err.errno === 'number',
      );
      assert.throws(() => b.shmRemove(0x7fff_fff0), { syscall: 'shmctl' });
    });

    it('rejects bad arguments before any system call', () => {
      assert.throws(() => b.shmGet(2 ** 32, 10, IPC_CREAT), RangeError);
      assert.throws(() => b.shmGet(1.5, 10, IPC_CREAT), RangeError);
      assert.throws(() => b.shmGet('1' as unknown as number, 10, IPC_CREAT), TypeError);
      assert.throws(() => b.shmGet(0, -1, IPC_CREAT), RangeError);
      assert.throws(() => b.shmGet(0, 10, IPC_CREAT | SHM_NORESERVE), RangeError, 'a flag it does not pass through');
      assert.throws(() => b.shmAttach(-1, true), RangeError);
      assert.throws(() => b.shmAttach(1, 'yes' as unknown as boolean), TypeError);
      assert.throws(() => b.shmRemove(-1), RangeError);
      assert.throws(() => b.memfdCreate('x', 1 as unknown as boolean), TypeError);
    });
  });
}
