/**
 * sendRegion / receiveRegion: their arguments are checked before they touch
 * the socket (typed errors naming the function and the argument, as
 * docs/ERRORS.md has them), and a receive whose own socket is destroyed
 * while it waits ends with ERR_SHMRING_CLOSED, never a raw EBADF.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { once } from 'node:events';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { ErrorCodes, type ReceiveOptions, receiveRegion, Region, sendRegion } from '../src/index.js';
import { availableBackends } from '../src/native/loader.js';
import { uniqueName } from './helpers.js';

/** A check of an error: its class, ERR_SHMRING_INVALID_ARGUMENT, and a message naming `fn` and `arg`. */
function invalid(kind: typeof TypeError | typeof RangeError, fn: string, arg: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof kind, `${String(err)} is not a ${kind.name}`);
    assert.equal((err as { code?: string }).code, ErrorCodes.INVALID_ARGUMENT);
    // `arg` names an argument (its message reads `fn: arg=…`), or is the start of the message itself.
    assert.ok((err as Error).message.startsWith(arg.includes(' ') ? `${fn}: ${arg}` : `${fn}: ${arg}=`), (err as Error).message);
    return true;
  };
}

/** `promise`, or a rejection saying it was still pending after `ms` (a receive that would wait for ever). */
function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

describe('sendRegion / receiveRegion arguments and socket', function () {
  this.timeout(20_000);
  let sock: string;
  let server: net.Server;
  const peers: net.Socket[] = [];

  beforeEach(async () => {
    sock = path.join(os.tmpdir(), `${uniqueName('xfer')}.sock`);
    server = net.createServer({ pauseOnConnect: true }, (peer) => peers.push(peer));
    await new Promise<void>((resolve) => server.listen(sock, resolve));
  });
  afterEach(() => {
    for (const peer of peers.splice(0)) peer.destroy();
    server.close();
    fs.rmSync(sock, { force: true });
  });

  it('receiveRegion refuses a timeoutMs that is NaN or negative (RangeError) or not a number, a signal that is not an AbortSignal, options that are not an object and an option name it does not take (TypeError)', async () => {
    const client = net.connect(sock);
    try {
      const cases: [unknown, typeof TypeError | typeof RangeError, string][] = [
        [{ timeoutMs: Number.NaN }, RangeError, 'timeoutMs'],
        [{ timeoutMs: -5 }, RangeError, 'timeoutMs'],
        [{ timeoutMs: '5' }, TypeError, 'timeoutMs'],
        [{ timeoutMs: 500, signal: { aborted: false } }, TypeError, 'signal'],
        [{ readOnly: 'yes' }, TypeError, 'readOnly'],
        [null, TypeError, 'options'],
        [{ timeout: 100 }, TypeError, 'unknown option "timeout" (did you mean "timeoutMs"?)'],
      ];
      for (const [options, kind, arg] of cases) {
        await assert.rejects(within(receiveRegion(client, options as ReceiveOptions), 2000), invalid(kind, 'receiveRegion', arg));
      }
    } finally {
      client.destroy();
    }
  });

  it('receiveRegion ends with ERR_SHMRING_CLOSED, not EBADF, when its own socket is destroyed while it waits', async () => {
    const client = net.connect(sock);
    const received = receiveRegion(client, { timeoutMs: 10_000 });
    await new Promise<void>((resolve) => client.once('connect', resolve));
    await new Promise((resolve) => setTimeout(resolve, 50)); // receiveRegion is polling by now
    client.destroy();
    await assert.rejects(within(received, 5000), (err: Error & { code?: string }) => {
      assert.equal(err.code, ErrorCodes.CLOSED, `${err.code}: ${err.message}`);
      assert.match(err.message, /receiveRegion: the socket was destroyed/);
      return true;
    });
  });

  it('receiveRegion ends with ERR_SHMRING_CLOSED when its socket is destroyed while it connects', async () => {
    const client = net.connect(sock);
    const received = receiveRegion(client, { timeoutMs: 10_000 });
    client.destroy();
    await assert.rejects(within(received, 5000), { code: ErrorCodes.CLOSED });
  });

  it('receiveRegion honours its signal and timeoutMs while its socket is still connecting', async () => {
    // A socket that stays in the connecting state (a server that never accepts, a TCP peer that does not
    // answer): one whose `connecting` says so and that never emits 'connect'.
    const stuck = (): net.Socket => {
      let connecting = true; // until destroy() sets it false
      return Object.defineProperty(new net.Socket(), 'connecting', {
        get: () => connecting,
        set: (value: boolean) => {
          connecting = value;
        },
      });
    };
    const cases: [string, (socket: net.Socket) => Promise<Region>, RegExp][] = [
      [ErrorCodes.ABORTED, (socket) => receiveRegion(socket, { signal: AbortSignal.timeout(50) }), /aborted/],
      [ErrorCodes.ABORTED, (socket) => receiveRegion(socket, { signal: AbortSignal.abort() }), /aborted/],
      [
        ErrorCodes.TIMEOUT,
        (socket) => receiveRegion(socket, { timeoutMs: 50 }),
        /receiveRegion: the socket did not connect within timeoutMs=50/,
      ],
    ];
    for (const [code, receive, message] of cases) {
      const socket = stuck();
      try {
        await assert.rejects(within(receive(socket), 3000), (err: Error & { code?: string }) => {
          assert.equal(err.code, code, String(err));
          assert.match(err.message, message);
          return true;
        });
        // Nothing of the wait is left on the socket.
        assert.deepEqual(
          ['connect', 'error', 'close'].map((event) => socket.listenerCount(event)),
          [0, 0, 0],
        );
      } finally {
        socket.destroy();
      }
    }
  });

  it('sendRegion and receiveRegion refuse a TCP socket (TCP drops the fd: a byte went, no region) with a TypeError saying why', async () => {
    const tcp = net.createServer((peer) => peers.push(peer));
    await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
    const client = net.connect((tcp.address() as net.AddressInfo).port, '127.0.0.1');
    try {
      using region = Region.create({ backing: 'memfd', size: 4096 });
      for (const verb of ['sendRegion', 'receiveRegion'] as const) {
        const call = verb === 'sendRegion' ? sendRegion(client, region) : receiveRegion(client, { timeoutMs: 1000 });
        await assert.rejects(call, (err: Error & { code?: string }) => {
          assert.equal(err.name, 'TypeError', String(err));
          assert.equal(err.code, ErrorCodes.INVALID_ARGUMENT);
          assert.match(err.message, new RegExp(`^${verb}: the socket is a TCP socket .*Unix domain socket`));
          return true;
        });
      }
    } finally {
      client.destroy();
      tcp.close();
    }
  });

  it('sendRegion to a peer that closed fails with a ShmringError naming the socket, its errno and what happened', async () => {
    const client = net.connect({ path: sock, allowHalfOpen: true });
    await once(client, 'connect');
    while (peers.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    const ended = once(client, 'end');
    peers[0]!.destroy();
    await ended; // the peer has closed its end: a sendmsg now fails
    try {
      using region = Region.create({ backing: 'memfd', size: 4096 });
      await assert.rejects(sendRegion(client, region), (err: Error & { code?: string; syscall?: string }) => {
        assert.equal(err.name, 'ShmringError', String(err));
        assert.ok(['EPIPE', 'ECONNRESET'].includes(err.code!), String(err));
        assert.match(err.message, /^sendRegion over the socket: sendmsg failed: .*the peer closed the socket: nothing was sent/);
        return true;
      });
    } finally {
      client.destroy();
    }
  });

  it('sendRegion refuses a region that is not a Region, and a socket that is not a net.Socket, with a TypeError naming it', async () => {
    const client = net.connect(sock);
    const region = Region.create({ backing: 'memfd', size: 4096 });
    try {
      for (const bad of [null, undefined, {}, { backing: 'memfd', fd: 0 }]) {
        await assert.rejects(sendRegion(client, bad as unknown as Region), invalid(TypeError, 'sendRegion', 'region'));
      }
      await assert.rejects(sendRegion(null as unknown as net.Socket, region), invalid(TypeError, 'sendRegion', 'socket'));
      await assert.rejects(receiveRegion(null as unknown as net.Socket), invalid(TypeError, 'receiveRegion', 'socket'));
    } finally {
      region.close();
      client.destroy();
    }
  });

  // Each backend that loads here (without cargo, no addon is built: koffi alone).
  for (const kind of availableBackends()) {
    it(`receiveRegion in a process out of fds says so (MSG_CTRUNC), not that the peer sent no fd (${kind})`, function () {
      const index = new URL('../src/index.js', import.meta.url).href;
      const code = `
        import * as fs from 'node:fs';
        import { once } from 'node:events';
import * as net from 'node:net';
        const { Region, sendRegion, receiveRegion } = await import(${JSON.stringify(index)});
        const sock = ${JSON.stringify(path.join(os.tmpdir(), `${uniqueName('ctrunc')}.sock`))};
        const accepted = new Promise((resolve) => net.createServer({ pauseOnConnect: true }, resolve).listen(sock));
        await new Promise((r) => setTimeout(r, 50));
        const client = net.connect(sock);
        const peer = await accepted;
        const region = Region.create({ backing: 'memfd', size: 4096 });
        const held = [];
        try { for (;;) held.push(fs.openSync('/dev/null', 'r')); } catch (err) { if (err.code !== 'EMFILE') throw err; }
        await sendRegion(client, region);
        let said;
        try { (await receiveRegion(peer, { timeoutMs: 5000 })).close(); said = 'received'; } catch (err) { said = err.code + ': ' + err.message; }
        for (const fd of held) fs.closeSync(fd);
        fs.rmSync(sock, { force: true });
        console.log(said);
        process.exit(0);`;
      const child = spawnSync('prlimit', ['--nofile=200:200', process.execPath, '--input-type=module', '-e', code], {
        encoding: 'utf8',
        env: { ...process.env, SHMRING_BACKEND: kind },
        timeout: 30_000,
      });
      if ((child.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
        console.log('      (skipped: no prlimit (util-linux) to start a child with few fds)');
        this.skip();
      }
      assert.equal(child.status, 0, child.stderr);
      assert.match(
        child.stdout.trim(),
        /^ERR_SHMRING_NO_FD: the region arrived, but the kernel could not give its file descriptor .*out of fds/,
      );
    });
  }
});
