/**
 * What the event-loop benchmark (eventloop.ts) and its peers
 * (eventloop-peer.ts) share: which wait mechanism this process uses, whether
 * the rings take the cooperative `poll` option, and the async iteration
 * with options.
 *
 * Both `poll` and `messages()` are detected at run time, so the benchmark
 * runs against a build that lacks them (the rows then say so) and uses them
 * as soon as they exist.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type * as net from 'node:net';
import * as core from '@shmring/core';
import { ErrorCodes, Region } from '@shmring/core';
import { SpscRing, type WaitOptions } from '@shmring/ringbuf';
import { percentiles, Samples, track, type Percentiles } from './harness.js';

/** The peer program of the section, and its event-loop delay probe. */
export const PEER = new URL('./eventloop-peer.js', import.meta.url).pathname;
const PROBE = new URL('./eventloop-probe.js', import.meta.url).pathname;

/**
 * Byte of a message that asks the echo to run its own event-loop delay probe
 * (1) from that message on: the client sets it in the round trips it probes.
 * Bytes 0-3 carry the sequence number.
 */
export const PROBE_FLAG_AT = 4;

/** WaitOptions with the cooperative polling budget (µs) a ring may or may not know yet. */
export type LoopWaitOptions = WaitOptions & { poll?: number };

export interface Mechanism {
  /** backendKind(): 'addon' or 'koffi'. */
  backend: string;
  /** What @shmring/core reports about its async wait (asyncWaitKind() or the like), or null where it reports nothing. */
  asyncWait: string | null;
}

/**
 * The wait mechanism of this process, as @shmring/core reports it: the
 * backend, and the async wait where core exports a function for it
 * (`asyncWaitKind`, or any exported function named like async…wait…kind /
 * mechanism).
 */
export function mechanism(): Mechanism {
  let backend = 'unknown';
  try {
    backend = core.backendKind();
  } catch (err) {
    backend = `unavailable (${(err as Error).message})`;
  }
  const exports = core as unknown as Record<string, unknown>;
  const names = [
    'asyncWaitKind',
    ...Object.keys(exports).filter((k) => /^async.*wait.*(kind|mechanism)$|^wait.*(kind|mechanism)$/i.test(k)),
  ];
  for (const name of names) {
    const fn = exports[name];
    if (typeof fn !== 'function') continue;
    try {
      const value = (fn as () => unknown)();
      if (value !== undefined && value !== null) return { backend, asyncWait: String(value) };
    } catch {
      // a reporter that cannot answer reports nothing
    }
  }
  return { backend, asyncWait: null };
}

/** `addon`, or `addon: <async wait>` where core reports it. */
export function mechanismLabel(m: Mechanism): string {
  return m.asyncWait === null ? m.backend : `${m.backend}: ${m.asyncWait}`;
}

/** CPU time (user + system, all threads) since `from`, in % of one CPU over the wall time since `sinceMs` (performance.now()). */
export function cpuPercent(from: NodeJS.CpuUsage, sinceMs: number): number {
  const used = process.cpuUsage(from);
  const wallMs = performance.now() - sinceMs;
  return wallMs > 0 ? ((used.user + used.system) / 1000 / wallMs) * 100 : 0;
}

let pollKnown: Promise<boolean> | undefined;

/**
 * Whether the rings recognise the `poll` option: a read on an empty ring
 * given an invalid poll (-1, then NaN) is refused with an error that names
 * `poll`, where the option exists and is checked. Without it, the read just
 * times out (timeoutMs: 0). An option that exists but is not checked is not
 * detected: the rows then still pass `{ poll }` and say "not detected".
 */
export function pollSupported(): Promise<boolean> {
  pollKnown ??= (async () => {
    const region = Region.create({ backing: 'sab', size: SpscRing.regionSize({ capacity: 1024 }) });
    const ring = SpscRing.create(region, { capacity: 1024 });
    try {
      for (const poll of [-1, Number.NaN]) {
        try {
          await ring.read({ poll, timeoutMs: 0 } as LoopWaitOptions);
        } catch (err) {
          const e = err as { code?: string; message?: string };
          if (e.code !== ErrorCodes.TIMEOUT && /\bpoll\b/.test(e.message ?? '')) return true;
        }
      }
      return false;
    } finally {
      ring.close();
      region.close();
    }
  })();
  return pollKnown;
}

/** The options every wait of a row passes: none, or `{ poll }`. */
export function waitOptions(poll: number | undefined): LoopWaitOptions | undefined {
  return poll === undefined ? undefined : { poll };
}

interface WithMessages {
  messages?: (options: LoopWaitOptions) => AsyncIterable<Uint8Array>;
}

/**
 * What the echo iterates: the ring itself (`for await (const m of ring)`)
 * without options; with them, `ring.messages(options)`, or, where
 * messages() does not exist yet, a loop of read(options) that ends as the
 * iterator does (the ring closed and drained).
 */
export function messagesOf(ring: SpscRing, options: LoopWaitOptions | undefined): AsyncIterable<Uint8Array> {
  if (options === undefined) return ring;
  const messages = (ring as unknown as WithMessages).messages;
  if (typeof messages === 'function') return messages.call(ring, options);
  return (async function* readLoop(): AsyncGenerator<Uint8Array> {
    for (;;) {
      let message: Uint8Array;
      try {
        message = await ring.read(options);
      } catch (err) {
        if ((err as { code?: string }).code === ErrorCodes.CLOSED) return;
        throw err;
      }
      yield message;
    }
  })();
}

// ---- the event-loop delay probe ----

export interface Probe {
  /** Lets the waiting probe go: it stamps from now on. */
  start(): void;
  /**
   * Stops the probe: the lateness (ns) of every stamp received since
   * start(), or undefined if none came; `voided`: the samples dropped
   * because the probe itself was held up while it sent them.
   */
  stop(): (Percentiles & { voided: number }) | undefined;
}

/**
 * Spawns the probe process (eventloop-probe.ts) on a socketpair and
 * resolves once it waits for its go: a byte on the same socketpair, which
 * start() writes. So the probed window holds no process start-up.
 */
export async function spawnProbe(): Promise<Probe> {
  const limitMs = 120_000; // it stops itself if we fail to
  const child: ChildProcess = track(
    spawn(process.execPath, [PROBE, JSON.stringify({ durationMs: limitMs })], {
      stdio: ['ignore', 'pipe', 'inherit', 'pipe'], // fd 3: Node's 'pipe' is a socketpair
    }),
  );
  const channel = child.stdio[3] as net.Socket;
  const samples = new Samples(Math.ceil(limitMs / 0.5));
  let started = false;
  let rest: Buffer | null = null;
  let last = -1; // the latest sample (ms), kept until the next record says whether it is void
  let voided = 0;
  channel.on('data', (data: Buffer) => {
    const now = Number(process.hrtime.bigint());
    const chunk = rest ? Buffer.concat([rest, data]) : data;
    let at = 0;
    for (; chunk.length - at >= 8; at += 8) {
      const sent = chunk.readDoubleLE(at);
      if (sent < 0) {
        if (last >= 0) voided++;
        last = -1;
        continue;
      }
      if (last >= 0) samples.addMs(last);
      last = started ? (now - sent) / 1e6 : -1;
    }
    rest = at < chunk.length ? chunk.subarray(at) : null;
  });
  channel.on('error', () => undefined); // it is killed at the end
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d;
      if (/^ready$/m.test(out)) resolve();
    });
    child.once('exit', (code, signal) => reject(new Error(`the probe exited (${signal ?? code}) before it was ready`)));
  });
  return {
    start: () => {
      started = true;
      channel.write(Buffer.of(1));
    },
    stop: () => {
      child.kill('SIGKILL');
      channel.destroy();
      if (last >= 0) samples.addMs(last);
      return samples.count === 0 ? undefined : { ...percentiles(samples), voided };
    },
  };
}
