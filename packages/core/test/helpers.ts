import assert from 'node:assert/strict';
import { spawn, type StdioOptions } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { backend, useBackend, type BackendKind } from '../src/native/loader.js';

export const PEER = fileURLToPath(new URL('./fixtures/peer.js', import.meta.url));
export const LIFETIME = fileURLToPath(new URL('./fixtures/lifetime.js', import.meta.url));

/** Runs `script` with `args` in a new node process (after `nodeArgs`); resolves with its exit code and stdout. */
export function runNode(
  script: string,
  args: string[],
  options: { stdio?: StdioOptions; env?: NodeJS.ProcessEnv; uid?: number; gid?: number; nodeArgs?: string[] } = {},
): { done: Promise<{ code: number | null; stdout: string; stderr: string }> } {
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), script, ...args], {
    stdio: options.stdio ?? ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...options.env },
    ...(options.uid !== undefined ? { uid: options.uid } : {}),
    ...(options.gid !== undefined ? { gid: options.gid } : {}),
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d));
  child.stderr?.on('data', (d: Buffer) => (stderr += d));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  return { done };
}

/** A name no other test run uses. */
export function uniqueName(tag: string): string {
  return `shmring-test-${tag}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
}

/**
 * In the enclosing describe(), switches the process to the `kind` backend
 * and, after it, back to the one it had: every test file after this one
 * shares the process.
 */
export function withBackend(kind: BackendKind): void {
  let previous: BackendKind;
  before(() => {
    previous = backend().kind;
    useBackend(kind);
  });
  after(() => useBackend(previous));
}

/** The file an open fd refers to (device and inode), to tell later whether that fd was closed. */
export function fileOf(fd: number): { dev: number; ino: number } {
  const { dev, ino } = fs.fstatSync(fd);
  return { dev, ino };
}

/**
 * Asserts that `fd`, which referred to `file` (fileOf), was closed: the
 * number refers to nothing (EBADF), or to another file. The kernel may give
 * a closed number to another thread's open at once (a worker's, libuv's
 * thread pool's), so "fstat fails" alone would be a test that can fail for
 * no fault of the code.
 */
export function assertClosed(fd: number, file: { dev: number; ino: number }): void {
  let now: fs.Stats;
  try {
    now = fs.fstatSync(fd);
  } catch (err) {
    assert.equal((err as NodeJS.ErrnoException).code, 'EBADF');
    return;
  }
  assert.ok(now.ino !== file.ino || now.dev !== file.dev, `fd ${fd} is still open on the same file`);
}
