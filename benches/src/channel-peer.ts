/**
 * The far side of the channel section (channel.ts): a child process, the
 * server each row's client connects to. argv[2] is the role, argv[3] a JSON
 * object of options. Every role prints `ready` once it listens, and ends
 * when its client goes away.
 *
 *   channel-echo   listen(socketPath, { poll }); every channel: ch.handle(async (v) => v)
 *   json-echo      a net server at socketPath speaking newline-delimited JSON:
 *                  {"id":n,"params":v} → {"id":n,"result":v} from the same async
 *                  handler, one socket.write per reply (options.corked: the replies
 *                  of one event-loop turn corked into one)
 *   ipc-echo       (child_process.fork, serialization 'advanced') {id, params}
 *                  → process.send({id, result}) from the same async handler
 *   channel-sink   listen(socketPath); every channel: for await over its values,
 *                  counting the Buffers; the value 'end' is answered with
 *                  ch.send({ count, bytes, bad }) and the counts start again
 *   socket-sink    a net server at socketPath reading 4-byte-length-prefixed
 *                  frames; a frame of length 0 is the end, answered with the line
 *                  {"count":…,"bytes":…,"bad":…}
 */
import * as net from 'node:net';
import { listen, type Channel } from '@shmring/channel';
import { BULK_PROBE_AT, BULK_SIZE, echoHandler, lines } from './channel-common.js';
import { exitWithParent, framer } from './harness.js';

const role = process.argv[2];
/** `poll` (µs): the poll option of the channel roles' listen(); absent, the channel's default. */
const options = JSON.parse(process.argv[3] ?? '{}') as { socketPath?: string; probe?: number; poll?: number; corked?: boolean };

function ready(): void {
  process.stdout.write('ready\n');
}

/** A channel server whose every channel gets `serve`; the process ends with its first channel. */
async function channelServer(serve: (ch: Channel) => void): Promise<void> {
  const server = await listen(options.socketPath!, options.poll === undefined ? {} : { poll: options.poll });
  server.on('channel', (ch: Channel) => {
    serve(ch);
    ch.once('close', () => void server.close().then(() => process.exit(0)));
  });
  ready();
}

/** A net server at socketPath whose every connection gets `serve`; the process ends with its first connection. */
async function netServer(serve: (socket: net.Socket) => void): Promise<void> {
  const server = net.createServer((socket) => {
    serve(socket);
    socket.on('close', () => server.close(() => process.exit(0)));
    socket.on('error', () => undefined); // the client died: 'close' follows
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.socketPath!, resolve);
  });
  ready();
}

function jsonEcho(socket: net.Socket): void {
  socket.setEncoding('utf8');
  // corked: the replies of one turn go out in one write (socket.cork at the first, uncork on nextTick).
  let holding = false;
  const send = (text: string): void => {
    if (options.corked === true && !holding) {
      holding = true;
      socket.cork();
      process.nextTick(() => {
        holding = false;
        socket.uncork();
      });
    }
    socket.write(text);
  };
  socket.on(
    'data',
    lines((line) => {
      const { id, params } = JSON.parse(line) as { id: number; params: unknown };
      echoHandler(params).then(
        (result) => send(`${JSON.stringify({ id, result })}\n`),
        (err: Error) => send(`${JSON.stringify({ id, error: { message: err.message } })}\n`),
      );
    }),
  );
}

function ipcEcho(): void {
  process.on('message', (m: { id: number; params: unknown }) => {
    echoHandler(m.params).then(
      (result) => process.send!({ id: m.id, result }),
      (err: Error) => process.send!({ id: m.id, error: { message: err.message } }),
    );
  });
  process.on('disconnect', () => process.exit(0));
  ready();
}

/** Minor page faults of this process since the previous call: what the sink's fresh buffers cost the kernel. */
let faultsBefore = process.resourceUsage().minorPageFault;
function faultsSince(): number {
  const now = process.resourceUsage().minorPageFault;
  const faults = now - faultsBefore;
  faultsBefore = now;
  return faults;
}

async function channelSink(ch: Channel): Promise<void> {
  const probe = options.probe ?? 0;
  let count = 0;
  let bytes = 0;
  let bad = 0;
  faultsSince();
  for await (const value of ch) {
    if (Buffer.isBuffer(value)) {
      count++;
      bytes += value.length;
      if (value.length !== BULK_SIZE || value[BULK_PROBE_AT] !== probe) bad++;
    } else if (value === 'end') {
      await ch.send({ count, bytes, bad, faults: faultsSince() });
      count = bytes = bad = 0;
    } else {
      bad++;
    }
  }
}

function socketSink(socket: net.Socket): void {
  const probe = options.probe ?? 0;
  let count = 0;
  let bytes = 0;
  let bad = 0;
  faultsSince();
  socket.on(
    'data',
    framer((frame) => {
      if (frame.length === 0) {
        socket.write(`${JSON.stringify({ count, bytes, bad, faults: faultsSince() })}\n`);
        count = bytes = bad = 0;
        return;
      }
      count++;
      bytes += frame.length;
      if (frame.length !== BULK_SIZE || frame[BULK_PROBE_AT] !== probe) bad++;
    }),
  );
}

exitWithParent();
switch (role) {
  case 'channel-echo':
    await channelServer((ch) => ch.handle(echoHandler));
    break;
  case 'json-echo':
    await netServer(jsonEcho);
    break;
  case 'ipc-echo':
    ipcEcho();
    break;
  case 'channel-sink':
    await channelServer(
      (ch) =>
        void channelSink(ch).catch((err: Error) => {
          process.stderr.write(`channel-sink: ${err.stack ?? err.message}\n`);
          process.exit(1);
        }),
    );
    break;
  case 'socket-sink':
    await netServer(socketSink);
    break;
  default:
    throw new Error(`channel-peer: unknown role ${role}`);
}
