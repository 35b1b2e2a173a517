/**
 * The far side of the event-loop benchmarks (eventloop.ts): a child process
 * started with startPeer(role, regions, options, { script }). argv[2] is the
 * role, argv[3] a JSON object of options.
 *
 *   ring-echo    both sides async on the event loop: `for await (const m of ping) await pong.write(m)`,
 *                ping on fd 3, pong on fd 4 (memfd regions). With `poll` (µs), the iterator is
 *                `ping.messages({ poll })` (or a read({ poll }) loop where messages() does not exist
 *                yet) and each write gets `{ poll }` too. Ends when the client closes ping.
 *   socket-echo  connects to `socketPath` and writes each chunk back as it arrives (one write per
 *                'data' event, however many 64-byte messages it holds): the fastest ordinary echo.
 *                Ends when the client ends the connection.
 *
 * (The event-loop delay probe is eventloop-probe.ts.)
 *
 * Every role prints `ready` once it serves and, at the end, one JSON line:
 * { cpu (% of one CPU since ready), backend, asyncWait (what the native layer
 * reports, or null), poll (whether the poll option was recognised), delay
 * (the echoes: percentiles of their own event-loop delay probe, which the
 * first message with byte PROBE_FLAG_AT set starts) }.
 */
import * as net from 'node:net';
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';
import { exitWithParent } from './harness.js';
import {
  cpuPercent,
  mechanism,
  messagesOf,
  pollSupported,
  PROBE_FLAG_AT,
  spawnProbe,
  waitOptions,
  type Probe,
} from './eventloop-common.js';

const role = process.argv[2];
const options = JSON.parse(process.argv[3] ?? '{}') as { socketPath?: string; poll?: number };

function ready(): void {
  process.stdout.write('ready\n');
}

/**
 * The echo's own event-loop delay probe: spawned before the echo is ready,
 * let go by the first message that carries the flag (the client's probed
 * round trips), stopped at the end.
 */
class EchoProbe {
  readonly #probe: Probe;
  #started = false;

  private constructor(probe: Probe) {
    this.#probe = probe;
  }

  static async spawn(): Promise<EchoProbe> {
    return new EchoProbe(await spawnProbe());
  }

  /** Looks at one message (or the first of a chunk). */
  see(m: Uint8Array): void {
    if (!this.#started && m.length > PROBE_FLAG_AT && m[PROBE_FLAG_AT] === 1) {
      this.#started = true;
      this.#probe.start();
    }
  }

  stop(): object | undefined {
    return this.#probe.stop();
  }
}

async function report(cpuFrom: NodeJS.CpuUsage, since: number, poll: boolean | null, probe?: EchoProbe): Promise<void> {
  const cpu = cpuPercent(cpuFrom, since);
  const delay = probe?.stop();
  const m = mechanism();
  process.stdout.write(`${JSON.stringify({ cpu, backend: m.backend, asyncWait: m.asyncWait, poll, delay })}\n`);
}

async function ringEcho(): Promise<void> {
  const ping = SpscRing.attach(Region.fromFd(3));
  const pong = SpscRing.attach(Region.fromFd(4));
  exitWithParent();
  const poll = options.poll !== undefined ? await pollSupported() : null;
  const opts = waitOptions(options.poll);
  const probe = await EchoProbe.spawn();
  const cpu = process.cpuUsage();
  const since = performance.now();
  ready();
  for await (const message of messagesOf(ping, opts)) {
    probe.see(message);
    await pong.write(message, opts);
  }
  await report(cpu, since, poll, probe);
}

async function socketEcho(): Promise<void> {
  const probe = await EchoProbe.spawn();
  const socket = net.connect({ path: options.socketPath! });
  exitWithParent();
  let cpu = process.cpuUsage();
  let since = performance.now();
  socket.on('connect', () => {
    cpu = process.cpuUsage();
    since = performance.now();
  });
  socket.on('data', (chunk: Buffer) => {
    probe.see(chunk);
    socket.write(chunk);
  });
  socket.on('end', () => {
    void report(cpu, since, null, probe).then(() => socket.end());
  });
}

switch (role) {
  case 'ring-echo':
    await ringEcho();
    break;
  case 'socket-echo':
    await socketEcho();
    break;
  default:
    throw new Error(`eventloop-peer: unknown role ${role}`);
}
