/**
 * `shmring bridge <from> <to>` (and the `shmring-bridge <from> <to>` bin of
 * this package). The shmring CLI lives in @shmring/ringbuf, which must not
 * depend on this package: it imports this module by name when asked for
 * `bridge`, so the subcommand works wherever @shmring/channel is installed,
 * and says what to install where it is not.
 */
import { parseArgs } from 'node:util';
import { ErrorCodes } from '@shmring/core';
import { checkPoll } from '../options.js';
import { redactEndpoint } from '../nats/address.js';
import { bridge, bridgeEnds } from './bridge.js';

export const USAGE = `usage: shmring bridge [--poll <µs>] <from> <to>
  endpoints: shm:<name>                                 a POSIX-named ring (read side as <from>, write side as <to>)
             nats://host:port/<subject>[?jetstream=<stream>[&consumer=<name>]]
               (consumer: the JetStream consumer of a bridge into a ring; default
               shmring-bridge-<host>-<ring>)
  --poll <µs>  look for the ring's next record (or room) this long before parking: lower latency
               for sparse messages, for a CPU kept busy while they come (default: from a ring 0,
               the command parks its thread on the ring; into a ring 50, between event-loop turns)
  -h, --help   this usage, on stdout
  says "running" on stderr once it holds its role in the ring and NATS is connected; runs until
  SIGINT or SIGTERM, or until the other side of the ring closes it (then says so and exits 0,
  what the ring held sent first); says on stderr when NATS goes away and comes back`;

/** Runs the bridge until SIGINT/SIGTERM; resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  let positionals: string[];
  let pollText: string | undefined;
  let help: boolean | undefined;
  try {
    ({
      positionals,
      values: { poll: pollText, help },
    } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { poll: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    }));
  } catch (err) {
    console.error(`shmring bridge: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  // As the shmring CLI's other subcommands: asked for, the usage goes to stdout and is no error.
  if (help === true) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length !== 2) {
    console.error(USAGE);
    return 2;
  }
  // Decimal only (not 0x10, 1e400 or Infinity, which Number() takes), in the range bridge() takes: bad usage,
  // told with the usage, not a failure at run time (exit 1).
  let poll: number | undefined;
  if (pollText !== undefined) {
    if (!/^[0-9]+(?:\.[0-9]+)?$/.test(pollText)) {
      console.error(`shmring bridge: --poll ${pollText}: expected a decimal number of microseconds >= 0\n${USAGE}`);
      return 2;
    }
    try {
      poll = checkPoll(Number(pollText), '--poll');
    } catch (err) {
      console.error(`shmring bridge ${(err as Error).message}\n${USAGE}`);
      return 2;
    }
  }
  const [from, to] = positionals as [string, string];
  // What the "running" line names: the ends without their credentials (nats://user:pass@… is no thing to log).
  let ends = `${redactEndpoint(from)} → ${redactEndpoint(to)}`;
  try {
    const { source, target } = bridgeEnds(from, to);
    ends = `${source.text} → ${target.text}`;
  } catch (err) {
    // A malformed endpoint is bad usage, as a missing one is: the usage shows the forms. What fails once the
    // ends are well formed (a ring missing, NATS unreachable) is not, and exits 1 below.
    const e = err as { code?: string; message: string };
    if (e.code === ErrorCodes.INVALID_ENDPOINT) {
      console.error(`shmring ${e.message} (${e.code})\n${USAGE}`);
      return 2;
    }
  }
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await bridge(from, to, {
      signal: stop.signal,
      poll,
      dedicated: true,
      onReady: () => console.error(`shmring bridge: ${ends}: running`),
    });
    return 0;
  } catch (err) {
    const e = err as { code?: string; message: string };
    // An errno error names its code already ("…: no such file or directory (ENOENT); hint"): said once. The
    // bridge's own errors begin with its verb ("bridge: …", "bridge nats://…: …"): the prefix says it once.
    const said = /^bridge[: ]/.test(e.message) ? `shmring ${e.message}` : `shmring bridge: ${e.message}`;
    console.error(`${said}${e.code && !e.message.includes(e.code) ? ` (${e.code})` : ''}`);
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
