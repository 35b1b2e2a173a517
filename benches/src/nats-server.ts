/**
 * A real nats-server for the bridge section (bridge.ts), as the channel
 * tests start theirs (packages/channel/test/nats-server.ts): on free
 * loopback ports, without JetStream (the section measures core NATS), with
 * its HTTP monitoring port, whose /varz counts the messages the server took
 * in (the one count that treats every publisher alike). Stopped by
 * stop(); a scenario that dies leaves it to the runner, which kills the
 * scenario's process group (the server is in it: never detached).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as http from 'node:http';
import * as net from 'node:net';
import { track } from './harness.js';

function findBinary(): string | undefined {
  for (const candidate of ['nats-server', '/usr/sbin/nats-server', '/usr/bin/nats-server']) {
    const probe = spawnSync(candidate, ['--version'], { stdio: 'ignore' });
    if (probe.error === undefined && probe.status === 0) return candidate;
  }
  return undefined;
}

/** Tries of BenchNats.start before it gives up (a port taken between the probe and the server's bind). */
const STARTS = 3;

export const NATS_MISSING = 'nats-server is not installed (apt-get install -y nats-server)';

/** Two distinct free loopback ports: both probes stay bound until both are known, so they differ. */
function freePorts(): Promise<[number, number]> {
  const bind = (): Promise<net.Server> =>
    new Promise((resolve, reject) => {
      const probe = net.createServer();
      probe.once('error', reject);
      probe.listen(0, '127.0.0.1', () => resolve(probe));
    });
  const close = (probe: net.Server): Promise<void> => new Promise((resolve) => probe.close(() => resolve()));
  return (async () => {
    const first = await bind();
    const second = await bind().catch(async (err) => {
      await close(first);
      throw err;
    });
    const ports: [number, number] = [(first.address() as net.AddressInfo).port, (second.address() as net.AddressInfo).port];
    await Promise.all([close(first), close(second)]);
    return ports;
  })();
}

function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('data', () => {
      socket.destroy();
      resolve(true); // the server's INFO line
    });
    socket.once('error', () => resolve(false));
  });
}

/** What /varz says the server took in so far. */
export interface Inbound {
  msgs: number;
  bytes: number;
}

export class BenchNats {
  private constructor(
    readonly port: number,
    readonly monitorPort: number,
    readonly version: string,
    readonly child: ChildProcess,
  ) {}

  /**
   * Starts nats-server on free loopback ports and waits until it answers.
   * A port found free can be taken by another process before the server
   * binds it; a server that exits at start is tried again on other ports
   * (STARTS times in all), and the last failure says what it printed.
   */
  static async start(): Promise<BenchNats> {
    const binary = findBinary();
    if (binary === undefined) throw new Error(NATS_MISSING);
    const version = spawnSync(binary, ['--version'], { encoding: 'utf8' }).stdout.trim();
    for (let attempt = 1; ; attempt++) {
      const [port, monitorPort] = await freePorts();
      const child = track(
        spawn(binary, ['-a', '127.0.0.1', '-p', String(port), '-m', String(monitorPort)], { stdio: ['ignore', 'ignore', 'pipe'] }),
      );
      let stderr = '';
      child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
        stderr = (stderr + chunk).slice(-2000);
      });
      const server = new BenchNats(port, monitorPort, version, child);
      const deadline = Date.now() + 10_000;
      let exited = false;
      while (!(await answers(port))) {
        if (child.exitCode !== null || child.signalCode !== null) {
          exited = true;
          break;
        }
        if (Date.now() > deadline) {
          await server.stop();
          throw new Error(`nats-server on port ${port} did not answer within 10 s`);
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      if (!exited) {
        child.stderr!.removeAllListeners('data').resume(); // nothing more to keep; never let the pipe fill
        return server;
      }
      if (attempt === STARTS) {
        throw new Error(
          `nats-server on ports ${port}/${monitorPort} exited at start (${STARTS} tries): ${stderr.trim() || 'it printed nothing'}`,
        );
      }
    }
  }

  /** `nats://127.0.0.1:<port>/<subject>`. */
  url(subject: string): string {
    return `nats://127.0.0.1:${this.port}/${subject}`;
  }

  get server(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** The server's inbound counters (GET /varz on the monitoring port). */
  inbound(): Promise<Inbound> {
    return new Promise((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port: this.monitorPort, path: '/varz', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => {
          try {
            const varz = JSON.parse(body) as { in_msgs: number; in_bytes: number };
            resolve({ msgs: varz.in_msgs, bytes: varz.in_bytes });
          } catch (err) {
            reject(new Error(`nats-server /varz: ${(err as Error).message}`));
          }
        });
      });
      req.once('error', reject);
    });
  }

  /** Stops the server (SIGTERM; SIGKILL after 5 s) and waits for its exit. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}
