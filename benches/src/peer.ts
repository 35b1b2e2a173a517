/**
 * The far side of the cross-process measurements: a child process started by
 * the demo and the benchmarks. argv[2] is the role; rings come from fds 3 and
 * 4 (inherited memfd regions), sockets from a Unix socket path in argv[3].
 *
 *   ring-sink     drain ring 3, check sequence numbers, report count + checksum on stdout
 *   ring-echo     ping-pong: read from ring 3, write the same bytes to ring 4 (spinning)
 *   ring-echo-sync   the same, parking in readSync
 *   ring-echo-async  the same, with for await on the event loop
 *   socket-sink   read length-framed messages from the socket, report count + checksum
 *   socket-echo   ping-pong over the socket
 */
import * as net from 'node:net';
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';

const [role, socketPath] = process.argv.slice(2);

function report(result: object): void {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

function ringSink(): void {
  const ring = SpscRing.attach(Region.fromFd(3));
  let count = 0;
  let sum = 0;
  let bad = 0;
  const onRecord = (data: Uint8Array, offset: number, length: number): void => {
    // The first four bytes carry the sequence number (little-endian).
    const seq = length >= 4 ? (data[offset]! | (data[offset + 1]! << 8) | (data[offset + 2]! << 16) | (data[offset + 3]! << 24)) >>> 0 : count;
    if (seq !== (count >>> 0)) bad++;
    sum = (sum + length) | 0;
    count++;
  };
  for (;;) {
    if (ring.drain(onRecord) === 0) {
      if (ring.closed && ring.drain(onRecord) === 0) break;
    }
  }
  report({ count, sum, bad });
}

function ringEcho(mode: 'spin' | 'sync'): void {
  const inbound = SpscRing.attach(Region.fromFd(3));
  const outbound = SpscRing.attach(Region.fromFd(4));
  for (;;) {
    let message: Uint8Array | null;
    if (mode === 'spin') {
      while ((message = inbound.tryRead()) === null) {
        if (inbound.closed) return;
      }
    } else {
      try {
        message = inbound.readSync();
      } catch {
        return; // closed
      }
    }
    outbound.writeSync(message);
  }
}

async function ringEchoAsync(): Promise<void> {
  const inbound = SpscRing.attach(Region.fromFd(3));
  const outbound = SpscRing.attach(Region.fromFd(4));
  for await (const message of inbound) await outbound.write(message);
}

/** Splits a byte stream into 4-byte-length-prefixed frames. */
function framer(onFrame: (frame: Buffer) => void): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  return (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    let at = 0;
    while (pending.length - at >= 4) {
      const length = pending.readUInt32LE(at);
      if (pending.length - at - 4 < length) break;
      onFrame(pending.subarray(at + 4, at + 4 + length));
      at += 4 + length;
    }
    pending = pending.subarray(at);
  };
}

function socketSink(): void {
  const socket = net.connect({ path: socketPath! });
  let count = 0;
  let sum = 0;
  let bad = 0;
  socket.on('data', framer((frame) => {
    const seq = frame.length >= 4 ? frame.readUInt32LE(0) : count;
    if (seq !== count >>> 0) bad++;
    sum = (sum + frame.length) | 0;
    count++;
  }));
  socket.on('end', () => {
    report({ count, sum, bad });
    socket.end();
  });
}

function socketEcho(): void {
  const socket = net.connect({ path: socketPath! });
  socket.setNoDelay?.(true);
  socket.on('data', framer((frame) => {
    const header = Buffer.allocUnsafe(4);
    header.writeUInt32LE(frame.length);
    socket.write(Buffer.concat([header, frame]));
  }));
  socket.on('end', () => socket.end());
}

switch (role) {
  case 'ring-sink': ringSink(); break;
  case 'ring-echo': ringEcho('spin'); break;
  case 'ring-echo-sync': ringEcho('sync'); break;
  case 'ring-echo-async': await ringEchoAsync(); break;
  case 'socket-sink': socketSink(); break;
  case 'socket-echo': socketEcho(); break;
  default: throw new Error(`peer: unknown role ${role}`);
}
