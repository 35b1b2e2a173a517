/** Small pieces the ring tests share. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Region, type ShmringError } from '@shmring/core';

/** `length` pseudo-random bytes from `seed` (xorshift32): the same seed gives the same bytes. */
export function randomBytes(seed: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x;
  }
  return bytes;
}

let memfdProblem: string | undefined;
/** Why a memfd region cannot be made here (its error code and message), or undefined if it can. */
export function memfdUnavailable(): string | undefined {
  if (memfdProblem === undefined) {
    try {
      Region.create({ backing: 'memfd', size: 4096 }).close();
      memfdProblem = '';
    } catch (err) {
      memfdProblem = `${(err as ShmringError).code}: ${(err as Error).message}`;
    }
  }
  return memfdProblem === '' ? undefined : memfdProblem;
}

/** The command prefix that runs a child in a PID namespace of its own, as a container would. */
export const UNSHARE = ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child'];

/** Why `unshare --pid --fork --mount-proc` cannot run here, or undefined if it can. */
export function unshareRefused(): string | undefined {
  const run = spawnSync(UNSHARE[0]!, [...UNSHARE.slice(1), 'true'], { encoding: 'utf8' });
  if (run.error) return `unshare: ${run.error.message}`;
  return run.status === 0 ? undefined : `unshare exited ${run.status}: ${run.stderr.trim()}`;
}

/**
 * A child `node <fixture> …args` (optionally under `prefix`, e.g. unshare)
 * whose stdout lines the test waits for; kill() SIGKILLs it and waits
 * until it is reaped. `inherit`: an fd of ours the child gets as its fd 3.
 */
export class LinePeer {
  readonly child: ChildProcess;
  readonly lines: string[] = [];
  stderr = '';
  readonly exited: Promise<void>;

  constructor(fixture: string, args: string[], prefix: string[] = [], inherit?: number) {
    const [command, ...rest] = [...prefix, process.execPath, fixture, ...args];
    this.child = spawn(command!, rest, { stdio: ['ignore', 'pipe', 'pipe', ...(inherit === undefined ? [] : [inherit])] });
    let buffered = '';
    this.child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const parts = buffered.split('\n');
      buffered = parts.pop()!;
      this.lines.push(...parts);
    });
    this.child.stderr!.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.exited = new Promise((resolve) => this.child.on('close', () => resolve()));
  }

  /** The first line starting with `prefix`, waiting up to `timeoutMs` for it. */
  async line(prefix: string, timeoutMs = 120_000): Promise<string> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = this.lines.find((l) => l.startsWith(prefix));
      if (found !== undefined) return found;
      if (performance.now() > deadline || this.child.exitCode !== null) {
        throw new Error(
          `no '${prefix}' line from the child (lines ${JSON.stringify(this.lines)}, exit ${this.child.exitCode}); stderr:\n${this.stderr}`,
        );
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }
}
