/**
 * The client's work: `requests` orders over one channel, `inFlight` of them
 * outstanding at any time, each timed from request() to its reply.
 */
import type { Channel } from '@shmring/channel';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { isDeepStrictEqual } from 'node:util';
import { price, SKUS, type Order, type Quote } from './pricing.js';

export interface RunResult {
  requests: number;
  priced: number;
  /** Refused orders by error code. */
  refused: Record<string, number>;
  /**
   * Answers that disagree with price() (pricing.ts): a quote with another price, or a refusal of an order it
   * prices (or with another code than the one it throws).
   */
  wrong: number;
  ms: number;
  /** Microseconds per request. */
  latencies: Latencies;
}

/**
 * Latencies in microseconds, in a fixed amount of memory whatever their
 * count (a run of 10^9 requests takes that of a run of 10): perf_hooks'
 * HDR histogram, in whole nanoseconds, with three significant figures, so
 * a percentile is at most 0.1% above the exact sample, never below it
 * (the upper edge of its bucket). max is kept apart, exact (the
 * histogram's is its bucket's edge too).
 */
export class Latencies {
  /** A reported percentile is at most 1/PRECISION above the exact one. */
  static readonly PRECISION = 1000;
  readonly #ns: RecordableHistogram = createHistogram({ figures: 3 });
  #max = 0;

  get count(): number {
    return this.#ns.count;
  }

  /** The largest latency recorded (0 when none was). */
  get max(): number {
    return this.#max;
  }

  record(us: number): void {
    this.#ns.record(Math.max(1, Math.round(us * 1000)));
    if (us > this.#max) this.#max = us;
  }

  /** The latency below which `p` (0-1) of the samples lie; NaN when nothing was recorded. */
  percentile(p: number): number {
    if (this.#ns.count === 0) return Number.NaN;
    return Math.min(this.#ns.percentile(Math.max(p * 100, 1e-9)) / 1000, this.#max);
  }
}

function order(id: number): Order {
  // One order in 100 asks for a SKU the server does not sell.
  const sku = id % 100 === 99 ? 'GIZMO-9' : SKUS[id % SKUS.length]!;
  return { id, sku, quantity: 1 + ((id * 37) % 250), tier: id % 3 === 0 ? 'trade' : 'retail' };
}

/** What the server should answer to `o`: price()'s quote, or the code of the error price() throws (UNKNOWN_SKU). */
function expected(o: Order): Quote | string {
  try {
    return price(o);
  } catch (err) {
    return (err as { code?: string }).code ?? 'unknown';
  }
}

/** Errors that end the run: the channel is gone (no later request can be answered), or the server is not answering. */
const FATAL = new Set(['ERR_SHMRING_PEER_DEAD', 'ERR_SHMRING_CLOSED', 'ERR_SHMRING_TIMEOUT']);

/** The run ended early: `answered` of the requests were answered before `cause`. */
export class RunStopped extends Error {
  constructor(
    readonly answered: number,
    cause: Error & { code?: string },
  ) {
    super(`${cause.message}${cause.code === undefined ? '' : ` (${cause.code})`}`, { cause });
  }
}

export async function run(channel: Channel, requests: number, inFlight: number): Promise<RunResult> {
  const latencies = new Latencies();
  const refused: Record<string, number> = {};
  let priced = 0;
  let wrong = 0;
  let next = 0;
  let failure: (Error & { code?: string }) | undefined;

  // `inFlight` loops, each with one request outstanding: the channel matches replies to requests by id.
  async function loop(): Promise<void> {
    while (next < requests && failure === undefined) {
      const id = next++;
      const o = order(id);
      const started = performance.now();
      try {
        const q = (await channel.request(o, { timeoutMs: 10_000 })) as Quote;
        priced++;
        // Against the catalog, not the quote's own fields: a quote can add up and still carry a wrong unit price or discount.
        if (!isDeepStrictEqual(q, expected(o))) wrong++;
      } catch (err) {
        const code = (err as { code?: string }).code ?? 'unknown';
        if (FATAL.has(code)) {
          failure ??= err as Error; // the others stop at their next request
          return;
        }
        refused[code] = (refused[code] ?? 0) + 1;
        if (code !== expected(o)) wrong++; // a refusal of an order price() prices, or with another code
      }
      latencies.record((performance.now() - started) * 1000);
    }
  }

  const started = performance.now();
  await Promise.all(Array.from({ length: Math.min(inFlight, requests) }, loop));
  const ms = performance.now() - started;
  if (failure !== undefined) {
    throw new RunStopped(priced + Object.values(refused).reduce((a, b) => a + b, 0), failure);
  }
  return { requests, priced, refused, wrong, ms, latencies };
}
