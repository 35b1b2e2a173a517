/**
 * `shmring bridge <from> <to>` (and the `shmring-bridge <from> <to>` bin of
 * this package). The shmring CLI lives in @shmring/ringbuf, which must not
 * depend on this package: it imports this module by name when asked for
 * `bridge`, so the subcommand works wherever @shmring/channel is installed,
 * and says what to install where it is not.
 */
import { parseArgs } from 'node:util';
import { bridge } from './bridge.js';

export const USAGE = `usage: shmring bridge <from> <to>
  endpoints: shm:<name>                                 a POSIX-named ring (read side as <from>, write side as <to>)
             nats://host:port/<subject>[?jetstream=<stream>]
  runs until SIGINT or SIGTERM; says on stderr when NATS goes away and comes back`;

/** Runs the bridge until SIGINT/SIGTERM; resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  let positionals: string[];
  try {
    ({ positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} }));
  } catch (err) {
    console.error(`shmring bridge: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (positionals.length !== 2) {
    console.error(USAGE);
    return 2;
  }
  const [from, to] = positionals as [string, string];
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await bridge(from, to, { signal: stop.signal, onReady: () => console.error(`shmring bridge: ${from} → ${to}: running`) });
    return 0;
  } catch (err) {
    const e = err as { code?: string; message: string };
    console.error(`shmring bridge: ${e.message}${e.code ? ` (${e.code})` : ''}`);
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
