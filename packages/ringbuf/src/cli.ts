#!/usr/bin/env node
/**
 * shmring — look at rings from the shell.
 *
 *   shmring inspect <name|path|sysv:KEY|sysv-id:ID> [--json]   one ring (a POSIX name,
 *                                          a file path, a System V segment by key or id);
 *                                          under the table, each MpscRing's producers in flight
 *                                          and each Broadcast's subscriber slots (cursor, lag, liveness);
 *                                          a POSIX object named sysv:… or sysv-id:… by its path,
 *                                          /dev/shm/<name>
 *   shmring inspect --all [--json]         every ring in /dev/shm and in System V segments; an object
 *                                          it cannot look at (being sized, too large to map) is said on
 *                                          stderr, "passed over", and the listing goes on
 *   shmring unlink-stale [--dry-run] [--json]   remove rings nobody holds, in any PID namespace: no ring
 *                                          object holds a POSIX or file ring's lock and no process has
 *                                          its object open by name, no process has a System V ring's
 *                                          segment attached; a stale ring this user may
 *                                          not remove is left and said on stderr (exit 1, the rest removed)
 *   shmring bridge [--poll <µs>] <from> <to>   a ring to NATS or NATS to a ring (from @shmring/channel)
 *   shmring --help                         the usage, on stdout, exit 0 (bad usage: stderr, exit 2)
 */
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import {
  inspect,
  isStale,
  listRings,
  type PassedOverListener,
  sysvTargetOf,
  unlinkStale,
  type ProcessInfo,
  type RingInfo,
} from './inspect.js';

const USAGE = `usage: shmring inspect <name|path|sysv:KEY|sysv-id:ID|--all> [--json]
         (a POSIX object named sysv:… or sysv-id:…: give its path, /dev/shm/<name>)
       shmring unlink-stale [--dry-run] [--json]   (removes rings nobody holds, in any PID namespace)
       shmring bridge [--poll <µs>] <from> <to>   (needs @shmring/channel)
       shmring --help`;

/** A pid and its liveness: `(dead)`, `(unknown)` where inspect cannot tell (see ProcessInfo.alive), nothing when alive. */
function who(p: ProcessInfo | undefined): string {
  if (p === undefined) return '-';
  return `${p.pid}${p.alive === undefined ? ' (unknown)' : p.alive ? '' : ' (dead)'}`;
}

function table(rings: RingInfo[]): string {
  const rows = [['name', 'kind', 'capacity', 'used', 'producer', 'consumer', 'creator', 'state']];
  for (const r of rings) {
    // A ring cut short has neither its slot size nor its version (truncatedHeader): '?' for them.
    const capacity = r.kind === 'MpmcQueue' ? `${r.capacity}x${r.slotSize ?? '?'} B` : `${r.capacity} B`;
    const used = r.kind === 'MpmcQueue' ? `${r.used} msgs` : r.kind === 'LatestValue' ? `v${r.latestVersion ?? '?'}` : `${r.used} B`;
    const state = r.damaged !== undefined ? 'damaged' : r.closed ? 'closed' : isStale(r) ? 'stale' : `open${openBecause(r)}`;
    // A Broadcast has no consumer: its subscribers, each in a slot, are listed under the table.
    const consumer = r.broadcast === undefined ? who(r.consumer) : plural(r.broadcast.subscribers.length, 'subscriber');
    rows.push([shownName(r.name), r.kind, capacity, used, who(r.producer), consumer, who(r.creator), state]);
  }
  const sections = rings.map((r) => `${damage(r)}${inFlight(r)}${subscribers(r)}`).filter((text) => text !== '');
  return [columns(rows), ...sections].join('\n\n');
}

/**
 * A ring's name as a line of plain output shows it: as it is when it is
 * printable, has no space and does not start with a quote, else quoted with
 * its escapes (JSON), so a name with a newline or a space never reads as two
 * rings or two columns, nor a quoted name as another. What JSON leaves as
 * it is and a terminal would act on or hide (DEL, the C1 controls
 * U+0080–U+009F, bidi and other format characters, the line and paragraph
 * separators) is escaped too (\uXXXX: still valid JSON), so a name cannot
 * reorder or overwrite what is printed around it.
 */
function shownName(name: string): string {
  if (/^[\x21\x23-\x7e][\x21-\x7e]*$/.test(name)) return name;
  return JSON.stringify(name).replace(UNSEEN, escaped);
}

/** `c` as JSON escapes, one \uXXXX per UTF-16 unit (a character past U+FFFF takes two). */
function escaped(c: string): string {
  let text = '';
  for (let i = 0; i < c.length; i++) text += `\\u${c.charCodeAt(i).toString(16).padStart(4, '0')}`;
  return text;
}

/** Characters JSON.stringify leaves unescaped that a terminal acts on or does not show: controls (Cc), format characters (Cf: bidi, zero-width), separators (Zl, Zp). */
const UNSEEN = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;

/**
 * Why an open ring whose pids the table shows dead (or none) is open all
 * the same: another process has it open by name (a Region.open, not
 * attached), or attached (an object of a process the pid words do not name).
 */
function openBecause(r: RingInfo): string {
  const anyAlive = [r.creator, r.producer, r.consumer].some((p) => p !== undefined && p.alive !== false);
  if (anyAlive || r.broadcast !== undefined) return '';
  if (r.held === true) return ' (attached by a process the table does not name)';
  if (r.openByName === true) return ' (open by name: a Region.open, not attached)';
  return '';
}

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

/** Why a damaged ring's attach would fail, under the table; '' for a sound one. */
function damage(r: RingInfo): string {
  return r.damaged === undefined ? '' : `${shownName(r.name)}: damaged, an attach would fail with ${r.damaged.code}: ${r.damaged.message}`;
}

/** A Broadcast's subscriber slots (cursor, lag, liveness), under the table; '' for other kinds. */
function subscribers(r: RingInfo): string {
  const b = r.broadcast;
  if (b === undefined) return '';
  const mode = b.lossless ? 'lossless' : 'lossy';
  const taken = `${shownName(r.name)}: ${plural(b.subscribers.length, 'subscriber')} in ${plural(b.slots, 'slot')} (${mode}`;
  const unlisted = b.lossless ? ')' : ': a subscriber that found no free slot is not listed)';
  const half =
    b.halfWritten === undefined
      ? ''
      : `\n${shownName(r.name)}: a record its dead publisher left half-written (INTENT ${b.halfWritten.intent}, TAIL ${r.producerPosition}): ` +
        'subscribers read up to TAIL, a lapped one nothing until then; the next Broadcast.create repairs it';
  if (b.subscribers.length === 0) return `${taken}${unlisted}${half}`;
  const rows = [['  slot', 'pid', 'cursor', 'lag']];
  for (const s of b.subscribers) {
    // More than the ring behind (lossy): its next read jumps forward and counts what it missed.
    const lapped = s.lag > r.capacity ? ' (lapped)' : '';
    // A claimant registering (no file): its pid is from OWNER; its cursor not yet its own.
    const registering = s.registering === true ? ' (registering)' : '';
    rows.push([`  ${s.slot}`, `${s.pid}${s.alive ? '' : ' (dead)'}${registering}`, `${s.cursor}`, `${s.lag} B${lapped}`]);
  }
  return `${taken}${unlisted}${half}\n${columns(rows)}`;
}

/** Rows as columns two spaces apart. */
function columns(rows: string[][]): string {
  // A loop, not Math.max(...column): spread arguments overflow the stack for a long enough table.
  const widths = rows[0]!.map(() => 0);
  for (const row of rows) {
    for (let c = 0; c < widths.length; c++) widths[c] = Math.max(widths[c]!, row[c]!.length);
  }
  return rows
    .map((row) =>
      row
        .map((cell, c) => cell.padEnd(widths[c]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** An MpscRing's producers in flight (claimed, not committed), under the table; '' when there are none. */
function inFlight(r: RingInfo): string {
  const claims = r.mpsc?.inFlight ?? [];
  if (claims.length === 0) return '';
  const rows = [['  position', 'pid', 'length', 'record']];
  for (const c of claims) {
    rows.push([
      `  ${c.position}`,
      c.pid === 0 ? '-' : who(c),
      c.length === null ? '? (header not written)' : `${c.length} B`,
      `${c.recordBytes} B`,
    ]);
  }
  const unlisted = r.mpsc?.unlisted ?? 0;
  const n = claims.length + unlisted;
  const mixed =
    r.mpsc?.pidNamespacesMixed === true ? '; sides in several PID namespaces (or one unknown): the pids may name other processes here' : '';
  const more = unlisted === 0 ? '' : `\n  … and ${unlisted} more, not listed`;
  const unwalked = r.mpsc?.unwalkedBytes;
  const cut =
    unwalked === undefined ? '' : `\n  (the walk stopped ${unwalked} B before the producer position: claims there are not counted)`;
  return `${shownName(r.name)}: ${n} producer${n === 1 ? '' : 's'} in flight (claimed, not committed; the consumer waits at the first${mixed})\n${columns(rows)}${more}${cut}`;
}

/**
 * An object a listing passed over, said on stderr (the listing goes on, and
 * its exit status is what it would be): one being sized, one too large to
 * map, one no ring can be read from. Not said: one removed meanwhile (ENOENT;
 * EINVAL, EIDRM for a System V id), nor one this user may not read
 * (EACCES, EPERM: another user's, many of them no rings at all).
 */
const sayPassedOver: PassedOverListener = (name, error) => {
  if (UNSAID.has(error.code)) return;
  const code = error.message.includes(error.code) ? '' : ` (${error.code})`;
  // The message may carry the name as it is: what a terminal would act on is escaped there too.
  console.error(`shmring: passed over ${shownName(name)}: ${error.message.replace(UNSEEN, escaped)}${code}`);
};

const UNSAID = new Set(['ENOENT', 'EINVAL', 'EIDRM', 'EACCES', 'EPERM']);

/** Bad usage: what was wrong and the usage on stderr, exit 2. Thrown before anything is looked at or removed. */
class UsageError extends Error {}

/**
 * The options and positionals of a subcommand, strictly: an unknown option
 * (a typo of --dry-run included), a value given to a flag, or a positional
 * beyond `positionals` is bad usage, before the subcommand does anything.
 */
function parse<const O extends Record<string, { type: 'boolean'; short?: string }>>(
  command: string,
  args: string[],
  options: O,
  positionals: number,
): { values: { [K in keyof O]?: boolean }; positionals: string[] } {
  let parsed: { values: { [K in keyof O]?: boolean }; positionals: string[] };
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true }) as typeof parsed;
  } catch (err) {
    throw new UsageError(`shmring ${command}: ${(err as Error).message}`);
  }
  if (parsed.positionals.length > positionals) {
    const extra = parsed.positionals.slice(positionals).map((a) => `'${a}'`);
    throw new UsageError(`shmring ${command}: unexpected argument${extra.length === 1 ? '' : 's'} ${extra.join(' ')}`);
  }
  return parsed;
}

const HELP = { type: 'boolean', short: 'h' } as const;

/** An empty target, or a malformed System V one (`sysv:12abc`), is bad usage, not a POSIX name to look for. */
function checkTarget(target: string): void {
  if (target === '') throw new UsageError('shmring inspect: the target is empty: give a POSIX name, a path, sysv:KEY or sysv-id:ID');
  try {
    sysvTargetOf(target);
  } catch (err) {
    throw new UsageError(`shmring ${(err as Error).message}`);
  }
}

function main(argv: string[]): number {
  // --json may come before the command too (shmring --json inspect NAME): it goes to the command's options.
  const leading = argv.findIndex((a) => a !== '--json');
  const [command, ...rest] = leading < 0 ? [] : [...argv.slice(leading), ...argv.slice(0, leading)];
  if (command === undefined) throw new UsageError('shmring: no command given');
  if (command === '--help' || command === '-h' || command === 'help') {
    console.log(USAGE);
    return 0;
  }
  if (command === 'inspect') {
    const { values, positionals } = parse(command, rest, { all: { type: 'boolean' }, json: { type: 'boolean' }, help: HELP }, 1);
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    const target = positionals[0];
    if ((values.all === true) === (target !== undefined)) {
      throw new UsageError(`shmring inspect: give ${values.all ? 'either --all or a target, not both' : 'a target, or --all'}`);
    }
    if (target !== undefined) checkTarget(target);
    const rings = values.all
      ? listRings(undefined, { onPassedOver: sayPassedOver })
      : [inspect(target!)].filter((r): r is RingInfo => r !== undefined);
    if (!values.all && rings.length === 0) {
      console.error(`shmring: ${target} holds no ring (no ring header: not a ring, or one not created yet) (ERR_SHMRING_NOT_A_RING)`);
      return 1;
    }
    if (!values.json && rings.length === 0) {
      // A header over nothing reads like a failed listing: say what was looked through.
      console.log('no rings (in /dev/shm or in System V segments)');
      return 0;
    }
    console.log(values.json ? JSON.stringify(values.all ? rings : rings[0], null, 2) : table(rings));
    return 0;
  }
  if (command === 'unlink-stale') {
    const { values } = parse(command, rest, { 'dry-run': { type: 'boolean' }, json: { type: 'boolean' }, help: HELP }, 0);
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    let skipped = 0;
    const removed = unlinkStale({
      dryRun: values['dry-run'] === true,
      onPassedOver: sayPassedOver,
      onSkipped: (_name, error) => {
        skipped++;
        console.error(`shmring: ${error.message}`); // the message names the code
      },
    });
    console.log(values.json ? JSON.stringify(removed) : removed.length ? removed.map(shownName).join('\n') : 'no stale rings');
    return skipped > 0 ? 1 : 0; // the others were removed; those left are said on stderr
  }
  throw new UsageError(`shmring: unknown command '${command}'`);
}

/**
 * The bridge lives in @shmring/channel, which depends on this package, not
 * the other way round: it is looked up by name when asked for, from this
 * package and then from the current directory (an app that has both).
 */
async function bridgeCommand(argv: string[]): Promise<number> {
  const SPECIFIER = '@shmring/channel/bridge-cli';
  let cli: { main(argv: string[]): Promise<number> } | undefined;
  for (const base of [import.meta.url, pathToFileURL(`${process.cwd()}/`).href]) {
    let resolved: string;
    try {
      resolved = createRequire(base).resolve(SPECIFIER);
    } catch {
      continue;
    }
    cli = (await import(pathToFileURL(resolved).href)) as typeof cli;
    break;
  }
  if (cli === undefined) {
    console.error('shmring bridge: needs @shmring/channel (install it beside @shmring/ringbuf, or run its shmring-bridge command)');
    return 1;
  }
  return cli.main(argv);
}

try {
  const argv = process.argv.slice(2);
  process.exitCode = argv[0] === 'bridge' ? await bridgeCommand(argv.slice(1)) : main(argv);
} catch (err) {
  if (err instanceof UsageError) {
    console.error(`${err.message}\n${USAGE}`);
    process.exitCode = 2;
  } else {
    const e = err as { code?: string; message: string };
    // An errno error names its code already ("…: no such file or directory (ENOENT); hint"): said once.
    console.error(`shmring: ${e.message}${e.code && !e.message.includes(e.code) ? ` (${e.code})` : ''}`);
    process.exitCode = 1;
  }
}
