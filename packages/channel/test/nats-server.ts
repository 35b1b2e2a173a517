/**
 * A real nats-server for the tests: started on a free loopback port with
 * JetStream in a temporary directory, stopped (and its directory removed)
 * after the run. Tests that need it skip, saying why, only when nats-server
 * is not installed (`apt-get install nats-server`; .ci/run installs it).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

function findBinary(): string | undefined {
  for (const candidate of ['nats-server', '/usr/sbin/nats-server', '/usr/bin/nats-server']) {
    const probe = spawnSync(candidate, ['--version'], { stdio: 'ignore' });
    if (probe.error === undefined && probe.status === 0) return candidate;
  }
  return undefined;
}

/** The nats-server binary, or undefined when it is not installed. */
export const NATS_SERVER = findBinary();
export const NATS_MISSING = 'nats-server is not installed (apt-get install -y nats-server)';

/** Skips the calling suite (with the reason printed) when nats-server is missing. */
export function skipWithoutNats(context: Mocha.Context): void {
  if (NATS_SERVER !== undefined) return;
  console.log(`      skipped: ${NATS_MISSING}`);
  context.skip();
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
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

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export class NatsServer {
  readonly port: number;
  readonly storeDir: string;
  #child: ChildProcess | undefined;

  private constructor(port: number, storeDir: string) {
    this.port = port;
    this.storeDir = storeDir;
  }

  static async start(): Promise<NatsServer> {
    if (NATS_SERVER === undefined) throw new Error(NATS_MISSING);
    const server = new NatsServer(await freePort(), fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-nats-')));
    await server.restart();
    return server;
  }

  /** `nats://127.0.0.1:<port>/<subject>`. */
  url(subject: string, query = ''): string {
    return `nats://127.0.0.1:${this.port}/${subject}${query}`;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  /** Starts the server (again: same port, same JetStream directory) and waits until it answers. */
  async restart(): Promise<void> {
    if (this.#child !== undefined) return;
    const child = spawn(NATS_SERVER!, ['-a', '127.0.0.1', '-p', String(this.port), '-js', '-sd', this.storeDir], { stdio: 'ignore' });
    running.add(child);
    child.once('exit', () => {
      running.delete(child);
      if (this.#child === child) this.#child = undefined;
    });
    this.#child = child;
    const deadline = Date.now() + 10_000;
    while (!(await answers(this.port))) {
      if (this.#child !== child) throw new Error(`nats-server on port ${this.port} exited at start`);
      if (Date.now() > deadline) throw new Error(`nats-server on port ${this.port} did not answer within 10 s`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Freezes the server (SIGSTOP): its connections stay open, and it reads nothing from them. */
  pause(): void {
    this.#child?.kill('SIGSTOP');
  }

  /** Lets a paused server go on (SIGCONT). */
  resume(): void {
    this.#child?.kill('SIGCONT');
  }

  /** Stops the server (SIGTERM; SIGKILL after 5 s) and waits for its exit. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    this.#child = undefined;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
  }

  /** Stops the server and removes its JetStream directory. */
  async dispose(): Promise<void> {
    await this.stop();
    fs.rmSync(this.storeDir, { recursive: true, force: true });
  }

  /** Runs `test` against a server of its own (one it may stop and restart), disposed of afterwards whatever happens. */
  static async using<T>(test: (server: NatsServer) => Promise<T>): Promise<T> {
    const server = await NatsServer.start();
    try {
      return await test(server);
    } finally {
      await server.dispose();
    }
  }
}

let shared: Promise<NatsServer> | undefined;

/** One server for the whole run, started on first use and stopped after the last test. */
export function sharedNats(): Promise<NatsServer> {
  shared ??= NatsServer.start();
  return shared;
}

after(async function () {
  if (shared !== undefined) await (await shared).dispose();
});

let counter = 0;
/** A subject no other test uses. */
export function uniqueSubject(prefix = 'test'): string {
  return `${prefix}.${process.pid}.${++counter}`;
}
