/**
 * Sealed snapshots: Region.snapshot() makes a memfd the kernel keeps
 * immutable (F_SEAL_WRITE | SHRINK | GROW | SEAL), so a peer may map it and
 * use it without a copy; requireSealed (fromFd, receiveRegion) accepts only
 * such a region, read-only, and refuses everything a peer could still
 * change with ERR_SHMRING_NOT_SEALED.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { ErrorCodes, receiveRegion, Region, sendRegion, ShmringError, ShmringTypeError } from '../src/index.js';
import { backend } from '../src/native/loader.js';
import { runNode, uniqueName } from './helpers.js';

const PEER = fileURLToPath(new URL('./fixtures/snapshot-peer.js', import.meta.url));
const isNotSealed = (err: unknown): boolean => err instanceof ShmringError && err.code === ErrorCodes.NOT_SEALED;

describe('sealed snapshots (Region.snapshot, requireSealed)', function () {
  this.timeout(30_000);

  it('holds the bytes it was given, mapped read-only, and sealed against write, shrink, grow and unsealing', function () {
    const region = Region.snapshot(new TextEncoder().encode('price=42'));
    try {
      assert.equal(region.backing, 'memfd');
      assert.equal(region.readOnly, true);
      assert.equal(region.size, 8);
      assert.equal(Buffer.from(region.buffer).toString(), 'price=42');
      assert.throws(() => fs.writeSync(region.fd, Buffer.from('x'), 0, 1, 0), { code: 'EPERM' });
      assert.throws(() => fs.ftruncateSync(region.fd, 1), { code: 'EPERM' });
      // Even this process cannot map it writable again; the error says why, and what to do.
      assert.throws(() => Region.fromFd(region.fd), {
        code: 'EPERM',
        message: new RegExp(`^Region.fromFd of fd ${region.fd}: .*sealed against writing .* map it with \\{ readOnly: true \\}$`),
      });
      const readOnly = Region.fromFd(region.fd, { readOnly: true });
      assert.equal(Buffer.from(readOnly.buffer).toString(), 'price=42');
      readOnly.close();
    } finally {
      region.close();
    }
  });

  it('fills size bytes through a view with a fill function; the view is gone once the snapshot is sealed', function () {
    let kept: Uint8Array | undefined;
    const region = Region.snapshot(
      (view) => {
        for (let i = 0; i < view.length; i++) view[i] = i & 0xff;
        kept = view;
      },
      { size: 3 * 4096 + 5 },
    );
    try {
      const bytes = new Uint8Array(region.buffer);
      assert.equal(bytes.length, 3 * 4096 + 5);
      assert.ok(bytes.every((b, i) => b === (i & 0xff)));
      assert.equal(kept!.length, 0, 'the filling view still reaches the memory after the seal');
    } finally {
      region.close();
    }
  });

  it("a peer's every attempt to change it fails (EPERM) and the reader's view stays as it was", async function () {
    const region = Region.snapshot(new TextEncoder().encode('sealed!!'));
    try {
      const { code, stdout, stderr } = await runNode(PEER, [], { stdio: ['ignore', 'pipe', 'pipe', region.fd] }).done;
      assert.equal(code, 0, stderr);
      const report = JSON.parse(stdout) as Record<string, unknown>;
      assert.deepEqual(report, {
        write: 'EPERM',
        writableMapping: 'EPERM',
        shrink: 'EPERM',
        grow: 'EPERM',
        sealed: { bytes: [...new TextEncoder().encode('sealed!!')], readOnly: true },
      });
      assert.equal(Buffer.from(region.buffer).toString(), 'sealed!!');
    } finally {
      region.close();
    }
  });

  it('requireFixedSize takes a memfd (sealing it against shrinking) and refuses a file its peer could shrink, with ERR_SHMRING_NOT_SEALED', function () {
    const memfd = Region.create({ backing: 'memfd', size: 4096 });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-fixed-'));
    const file = Region.create({ backing: 'file', path: path.join(dir, 'f'), size: 4096 });
    try {
      const taken = Region.fromFd(memfd.fd, { requireFixedSize: true });
      assert.equal(taken.size, 4096);
      taken.close();
      assert.throws(
        () => Region.fromFd(file.fd, { requireFixedSize: true }),
        (err: Error) => isNotSealed(err) && /can shrink it, and this process would fault/.test(err.message),
      );
      assert.throws(() => Region.fromFd(memfd.fd, { requireFixedSize: 1 as unknown as boolean }), { code: ErrorCodes.INVALID_ARGUMENT });
    } finally {
      memfd.close();
      file.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('requireSealed refuses a memfd sealed with F_SEAL_FUTURE_WRITE alone: its sender can still write through a mapping it kept', function () {
    const native = backend();
    const fd = native.memfdCreate('shmring-future-write');
    fs.ftruncateSync(fd, 4096);
    const kept = native.mmap(fd, 4096, true, false); // the sender's writable mapping, made before the seal
    try {
      native.addSeals(fd, 0x10 | 0x2 | 0x4); // F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK | F_SEAL_GROW
      new Uint8Array(kept)[0] = 1;
      assert.equal(new Uint8Array(kept)[0], 1, 'the sender writes after the seal');
      assert.throws(
        () => Region.fromFd(fd, { requireSealed: true }),
        (err: Error) => isNotSealed(err) && /F_SEAL_FUTURE_WRITE leaves/.test(err.message),
      );
    } finally {
      native.munmap(kept);
      native.close(fd);
    }
  });

  it('requireSealed refuses a memfd that is not sealed against writing, and any file, with ERR_SHMRING_NOT_SEALED naming the fd', function () {
    const memfd = Region.create({ backing: 'memfd', size: 4096 }); // sealed against resizing only
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-snapshot-'));
    const file = Region.create({ backing: 'file', path: path.join(dir, 'f'), size: 4096 });
    try {
      assert.throws(
        () => Region.fromFd(memfd.fd, { requireSealed: true }),
        (err: Error) => isNotSealed(err) && /fd \d+: the memfd's seals \(0x7\)/.test(err.message),
      );
      assert.throws(
        () => Region.fromFd(file.fd, { requireSealed: true }),
        (err: Error) => isNotSealed(err) && /is not a memfd/.test(err.message),
      );
      // Without requireSealed both still map.
      Region.fromFd(memfd.fd).close();
    } finally {
      memfd.close();
      file.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('receiveRegion with requireSealed takes a snapshot read-only and refuses (and closes) an unsealed region', async function () {
    const sock = path.join(os.tmpdir(), `${uniqueName('snap')}.sock`);
    const snapshot = Region.snapshot(new Uint8Array([1, 2, 3]));
    const plain = Region.create({ backing: 'memfd', size: 4096 });
    const server = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    try {
      const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
      const client = net.connect(sock);
      const received = receiveRegion(client, { requireSealed: true, timeoutMs: 5000 });
      const peer = await accepted;
      await sendRegion(peer, snapshot);
      const region = await received;
      assert.deepEqual([...new Uint8Array(region.buffer)], [1, 2, 3]);
      assert.equal(region.readOnly, true);
      region.close();
      client.destroy();
      peer.destroy();

      const accepted2 = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
      const client2 = net.connect(sock);
      const refused = receiveRegion(client2, { requireSealed: true, timeoutMs: 5000 });
      const peer2 = await accepted2;
      const fdsBefore = fs.readdirSync('/proc/self/fd').length;
      await sendRegion(peer2, plain);
      await assert.rejects(refused, (err: Error) => isNotSealed(err) && /the region received \(fd \d+\)/.test(err.message));
      assert.ok(fs.readdirSync('/proc/self/fd').length <= fdsBefore, 'the refused fd was left open');
      client2.destroy();
      peer2.destroy();
    } finally {
      server.close();
      snapshot.close();
      plain.close();
      fs.rmSync(sock, { force: true });
    }
  });

  it('reaches a worker by its fd (fds are process-wide): the worker maps it with requireSealed and reads it in place', async function () {
    const region = Region.snapshot(new TextEncoder().encode('for the worker'));
    try {
      const index = new URL('../src/index.js', import.meta.url).href;
      const worker = new Worker(
        `
        const { parentPort, workerData } = require('node:worker_threads');
        import(${JSON.stringify(index)}).then(({ Region }) => {
          const mapped = Region.fromFd(workerData.fd, { requireSealed: true });
          parentPort.postMessage({ text: Buffer.from(mapped.buffer).toString(), readOnly: mapped.readOnly });
          mapped.close();
        }, (err) => parentPort.postMessage({ error: String(err) }));
      `,
        { eval: true, workerData: { fd: region.fd } },
      );
      const exited = once(worker, 'exit'); // at once: the worker posts and exits in one go
      const [reply] = (await once(worker, 'message')) as [Record<string, unknown>];
      await exited;
      assert.deepEqual(reply, { text: 'for the worker', readOnly: true });
    } finally {
      region.close();
    }
  });

  it('bad input: typed errors before any memfd is made', function () {
    assert.throws(() => Region.snapshot('text' as unknown as Uint8Array), ShmringTypeError);
    assert.throws(
      () => Region.snapshot(() => {}),
      (err: Error) => err instanceof ShmringTypeError && /needs options.size/.test(err.message),
    );
    assert.throws(() => Region.snapshot(new Uint8Array(0)), { code: ErrorCodes.INVALID_ARGUMENT });
    assert.throws(() => Region.snapshot(new Uint8Array(10), { size: 4 }), { code: ErrorCodes.INVALID_ARGUMENT });
  });
});
