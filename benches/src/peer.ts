/**
 * The far side of the cross-process measurements: a child process started by
 * the demo and the benchmarks (harness.ts, startPeer). argv[2] is the role,
 * argv[3] a JSON object of options. Rings come from the inherited fds 3 and 4
 * (memfd regions); sockets from `socketPath`; pipes from fds 3 and 4.
 *
 * Every role that serves a parent prints `ready` once it has attached, and its
 * report (one JSON line) last. Spinning roles run under a Watchdog (they end
 * themselves when the parent dies or the time limit passes).
 *
 *   ring-sink        drain ring 3, check sequence numbers, report count + checksum (demo)
 *   ring-count       throughput consumer of ring 3: { mode: 'copy' (tryRead) | 'zero-copy' (drain) }
 *   mpmc-count       throughput consumer of MpmcQueue 3 (drain)
 *   ring-echo        ping-pong: read ring 3, write the same bytes to ring 4, spinning (tryRead / tryWrite)
 *   ring-echo-zc     the same with drain and claim/commit, spinning: each message copied whole from ring 3 into the claim in ring 4
 *   ring-echo-sync   the same, parking in readSync / writeSync (futex)
 *   ring-echo-async  the same with for await and write() on the event loop
 *   ring-echo-async-read  the same with read() and write() on the event loop
 *   word-echo        Node's floor: answer each odd value of word 0 of region 3 with the next even one (Atomics), until -1
 *   words-echo       the two-word floor: answer each new odd value of word 0 of region 3 with the next even one in word 0 of region 4 (Atomics), until -1
 *   socket-sink      read length-framed messages from the socket, report count + checksum (demo)
 *   socket-count     throughput consumer of the socket
 *   socket-echo      ping-pong over the socket
 *   pipe-echo        ping-pong over two pipes: read fd 3, write fd 4
 *   ipc-echo         ping-pong over the IPC channel (process.send)
 */
import * as net from 'node:net';
import { Region } from '@shmring/core';
import { MpmcQueue, SpscRing } from '@shmring/ringbuf';
import { countRing, echoRing, exitWithParent, framer, Meter, stampAt, Watchdog } from './harness.js';

const role = process.argv[2];
const options = JSON.parse(process.argv[3] ?? '{}') as {
  socketPath?: string;
  mode?: 'copy' | 'zero-copy';
  warmupMs?: number;
  limitMs?: number;
  size?: number;
};
const LIMIT_MS = options.limitMs ?? 120_000;

function report(result: object): void {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

function ready(): void {
  process.stdout.write('ready\n');
}

// ---- ring consumers ----

function ringSink(): void {
  const ring = SpscRing.attach(Region.fromFd(3));
  const watchdog = new Watchdog('ring-sink', 600_000);
  let count = 0;
  let sum = 0;
  let bad = 0;
  const onRecord = (data: Uint8Array, offset: number, length: number): void => {
    const seq = length >= 4 ? stampAt(data, offset) : count;
    if (seq !== count >>> 0) bad++;
    sum = (sum + length) | 0;
    count++;
  };
  ready();
  for (;;) {
    if (ring.drain(onRecord) === 0) {
      if (ring.closed && ring.drain(onRecord) === 0) break;
      watchdog.tick();
    }
  }
  report({ count, sum, bad });
}

function ringCount(): void {
  report(countRing(SpscRing.attach(Region.fromFd(3)), options, 'ring-count', LIMIT_MS, ready));
}

function mpmcCount(): void {
  report(countRing(MpmcQueue.attach(Region.fromFd(3)), { ...options, mode: 'zero-copy' }, 'mpmc-count', LIMIT_MS, ready));
}

// ---- ring echoes ----

function ringEcho(mode: 'spin' | 'sync'): void {
  echoRing(SpscRing.attach(Region.fromFd(3)), SpscRing.attach(Region.fromFd(4)), mode, 'ring-echo', LIMIT_MS, ready);
}

/** Zero-copy echo: each record read in place (drain) is answered with a record claimed in place (claim/commit). */
function ringEchoZeroCopy(): void {
  const inbound = SpscRing.attach(Region.fromFd(3));
  const outbound = SpscRing.attach(Region.fromFd(4));
  const watchdog = new Watchdog('ring-echo-zc', LIMIT_MS);
  let idle = 0; // empty polls: the closed flag (an Atomics.load) is read every 1024th
  const out = outbound.data;
  const onRecord = (data: Uint8Array, offset: number, length: number): void => {
    let at: number;
    while ((at = outbound.claim(length)) < 0) watchdog.tick();
    // The reply is the whole message, copied from where it lies in the inbound ring into the claimed room.
    out.set(data.subarray(offset, offset + length), at);
    outbound.commit(at);
  };
  ready();
  for (;;) {
    if (inbound.drain(onRecord) === 0) {
      if ((++idle & 1023) === 0 && inbound.closed) return;
      watchdog.tick();
    }
  }
}

/**
 * Node's floors: each new odd value of word 0 of region 3 (or -1, the end)
 * answered with the next even one, in the same word (one word, no ring at
 * all) or, with `twoWords`, in word 0 of region 4 (one word each way, as
 * two one-way queues).
 */
function wordEcho(twoWords: boolean): void {
  const word = new Int32Array(Region.fromFd(3).buffer, 0, 1);
  const reply = twoWords ? new Int32Array(Region.fromFd(4).buffer, 0, 1) : word;
  const watchdog = new Watchdog(twoWords ? 'words-echo' : 'word-echo', LIMIT_MS);
  ready();
  let last = 0;
  for (;;) {
    let v: number;
    // Observes the parent's store of its next odd value (or -1, the end): not our own even answer in the
    // one word, not the request already answered in the two.
    while (((v = Atomics.load(word, 0)) & 1) === 0 || v === last) watchdog.tick();
    if (v === -1) return;
    last = v;
    // Answers it: the parent spins on the reply word for this value.
    Atomics.store(reply, 0, v + 1);
  }
}

async function ringEchoAsync(): Promise<void> {
  const inbound = SpscRing.attach(Region.fromFd(3));
  const outbound = SpscRing.attach(Region.fromFd(4));
  exitWithParent();
  ready();
  for await (const message of inbound) await outbound.write(message);
}

async function ringEchoAsyncRead(): Promise<void> {
  const inbound = SpscRing.attach(Region.fromFd(3));
  const outbound = SpscRing.attach(Region.fromFd(4));
  exitWithParent();
  ready();
  for (;;) {
    let message: Uint8Array;
    try {
      message = await inbound.read();
    } catch {
      return; // closed
    }
    await outbound.write(message);
  }
}

// ---- sockets, pipes, IPC ----

function socketSink(): void {
  const socket = net.connect({ path: options.socketPath! });
  exitWithParent();
  let count = 0;
  let sum = 0;
  let bad = 0;
  socket.on(
    'data',
    framer((frame) => {
      const seq = frame.length >= 4 ? frame.readUInt32LE(0) : count;
      if (seq !== count >>> 0) bad++;
      sum = (sum + frame.length) | 0;
      count++;
    }),
  );
  socket.on('end', () => {
    report({ count, sum, bad });
    socket.end();
  });
}

function socketCount(): void {
  const socket = net.connect({ path: options.socketPath! });
  exitWithParent();
  const meter = new Meter(options.warmupMs ?? 0, options.size);
  let count = 0;
  let bad = 0;
  socket.on(
    'data',
    framer((frame) => {
      if (frame.length >= 4 && frame.readUInt32LE(0) !== count >>> 0) bad++;
      count++;
      meter.check(count);
    }),
  );
  socket.on('end', () => {
    report({ count, bad, ...meter.finish(count) });
    socket.end();
  });
}

/** Answers each frame with the same frame (header and payload in one write). */
function echoFrames(input: net.Socket, output: net.Socket): void {
  input.on(
    'data',
    framer((frame) => {
      const reply = Buffer.allocUnsafe(4 + frame.length);
      reply.writeUInt32LE(frame.length, 0);
      frame.copy(reply, 4);
      output.write(reply);
    }),
  );
}

function socketEcho(): void {
  const socket = net.connect({ path: options.socketPath! });
  exitWithParent();
  socket.setNoDelay?.(true);
  echoFrames(socket, socket);
  socket.on('end', () => socket.end());
}

function pipeEcho(): void {
  exitWithParent();
  const input = new net.Socket({ fd: 3, readable: true, writable: false });
  const output = new net.Socket({ fd: 4, readable: false, writable: true });
  echoFrames(input, output);
  input.on('end', () => process.exit(0));
  ready();
}

function ipcEcho(): void {
  process.on('message', (message) => process.send!(message));
  process.on('disconnect', () => process.exit(0));
  ready();
}

switch (role) {
  case 'ring-sink':
    ringSink();
    break;
  case 'ring-count':
    ringCount();
    break;
  case 'mpmc-count':
    mpmcCount();
    break;
  case 'ring-echo':
    ringEcho('spin');
    break;
  case 'ring-echo-zc':
    ringEchoZeroCopy();
    break;
  case 'ring-echo-sync':
    ringEcho('sync');
    break;
  case 'ring-echo-async':
    await ringEchoAsync();
    break;
  case 'ring-echo-async-read':
    await ringEchoAsyncRead();
    break;
  case 'word-echo':
    wordEcho(false);
    break;
  case 'words-echo':
    wordEcho(true);
    break;
  case 'socket-sink':
    socketSink();
    break;
  case 'socket-count':
    socketCount();
    break;
  case 'socket-echo':
    socketEcho();
    break;
  case 'pipe-echo':
    pipeEcho();
    break;
  case 'ipc-echo':
    ipcEcho();
    break;
  default:
    throw new Error(`peer: unknown role ${role}`);
}
