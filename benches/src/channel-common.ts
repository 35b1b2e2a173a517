/**
 * What the channel section (channel.ts), its peer processes
 * (channel-peer.ts) and its workers (channel-worker.ts) share: the value
 * they pass, the handler every server runs, and the line splitter of the
 * JSON baselines.
 */

/** The small object of the section: a fresh one per request or message, `id` numbering them. */
export interface Order {
  id: number;
  name: string;
  values: number[];
}

export function order(id: number): Order {
  return { id, name: 'order', values: [1, 2, 3] };
}

/** The handler every server of the request rows runs (the channel's handle(), the JSON server, the IPC child): an async echo. */
export const echoHandler = async (value: unknown): Promise<unknown> => value;

/** Checks that `reply` is the Order numbered `id` (the echo of the request). */
export function checkOrder(reply: unknown, id: number, what: string): void {
  const o = reply as Partial<Order> | null;
  if (o === null || typeof o !== 'object' || o.id !== id || o.name !== 'order' || o.values?.length !== 3) {
    throw new Error(`${what}: expected order ${id}, got ${JSON.stringify(reply)?.slice(0, 200)}`);
  }
}

/**
 * The poll option (µs) of both ends of the idle row's `channel-poll`
 * contender (listen() in the peer, connect() in the client): longer than
 * the row's 1 ms gaps, so neither end parks between requests.
 */
export const IDLE_POLL_US = 2000;

/** Bytes of the values of the bulk row. */
export const BULK_SIZE = 1 << 20;
/** A byte of every bulk value the consumer checks (the value is random, the same buffer each time). */
export const BULK_PROBE_AT = 123_457;

/**
 * Splits newline-delimited text (a socket with setEncoding('utf8')) into
 * lines and hands each to `onLine`: one indexOf per line, the rest of the
 * chunk kept for the next.
 */
export function lines(onLine: (line: string) => void): (chunk: string) => void {
  let rest = '';
  return (chunk) => {
    const text = rest.length === 0 ? chunk : rest + chunk;
    let at = 0;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', at)) {
      onLine(text.slice(at, nl));
      at = nl + 1;
    }
    rest = at === text.length ? '' : text.slice(at);
  };
}
