/**
 * How a host process stops early. Started by main.js, a host has an IPC
 * channel to it, which closes when main.js ends, however it ends (Ctrl-C,
 * SIGTERM, SIGKILL); that, or SIGINT / SIGTERM sent to the host itself,
 * aborts `stop`: the host's bridge ends, its waits end with an AbortError,
 * and its `finally` removes the ring's POSIX name and the bridge's marker.
 * Run on its own (no IPC channel), a host only listens for the signals.
 * So does its bridge ending before the host stopped it (stopWithBridge).
 */

/** Why a host was stopped from outside (main.js gone, a signal): said with "; stopped". */
class Stopped extends Error {}

/** Why a host stopped when its bridge ended before the host stopped it: said as it is. */
class BridgeEnded extends Error {}

export function stopOnEnd(stop: AbortController): void {
  const end = (why: string, code: number): void => {
    process.exitCode = code;
    stop.abort(new Stopped(why));
  };
  process.channel?.unref(); // the channel alone keeps nothing alive
  process.once('disconnect', () => end('main.js is gone', 1));
  // Gone already, while this process was loading its modules: the event came before the listener.
  if (process.send !== undefined && !process.connected) end('main.js is gone', 1);
  process.once('SIGINT', () => end('interrupted (SIGINT)', 130));
  process.once('SIGTERM', () => end('terminated (SIGTERM)', 143));
}

/**
 * Watches the host's bridge (`bridged`, what bridge() returned): one that
 * ends before the host stops it, failed or not, leaves the ring without its
 * other side, and the host would wait for ever (host A for room, host B for
 * the next message). It aborts `stop` with what ended it; the host's waits
 * end, and it exits 1 saying so (endingOf). Once the host has aborted `stop`
 * itself, the bridge's end changes nothing here.
 */
export function stopWithBridge(bridged: Promise<void>, stop: AbortController): void {
  bridged.then(
    () => stop.abort(new BridgeEnded('its bridge ended before the host stopped it')),
    (err: unknown) => stop.abort(new BridgeEnded(`its bridge failed: ${describe(err)}`, { cause: err })),
  );
}

/** What a host says when it ends on `err`: why it was stopped, its bridge's end, or the error's message (and code). */
export function endingOf(err: unknown, stop: AbortController): string {
  const reason: unknown = stop.signal.aborted ? stop.signal.reason : undefined;
  if (reason instanceof Stopped) return `${reason.message}; stopped`;
  if (reason instanceof BridgeEnded) return reason.message;
  return describe(err);
}

/** An error's message, and its code if the message lacks it. */
function describe(err: unknown): string {
  const e = err as { code?: string; message?: string } | undefined;
  const message = e?.message ?? String(err);
  return `${message}${e?.code && !message.includes(e.code) ? ` (${e.code})` : ''}`;
}
