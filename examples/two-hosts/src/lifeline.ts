/**
 * How a host process stops early. Started by main.js, a host has an IPC
 * channel to it, which closes when main.js ends, however it ends (Ctrl-C,
 * SIGTERM, SIGKILL); that, or SIGINT / SIGTERM sent to the host itself,
 * aborts `stop`: the host's bridge ends, its waits end with an AbortError,
 * and its `finally` removes the ring's POSIX name and the bridge's marker.
 * Run on its own (no IPC channel), a host only listens for the signals.
 */
export function stopOnEnd(stop: AbortController): void {
  const end = (why: string, code: number): void => {
    process.exitCode = code;
    stop.abort(new Error(why));
  };
  process.channel?.unref(); // the channel alone keeps nothing alive
  process.once('disconnect', () => end('main.js is gone', 1));
  // Gone already, while this process was loading its modules: the event came before the listener.
  if (process.send !== undefined && !process.connected) end('main.js is gone', 1);
  process.once('SIGINT', () => end('interrupted (SIGINT)', 130));
  process.once('SIGTERM', () => end('terminated (SIGTERM)', 143));
}

/** What a host says when it ends on `err`: why it was stopped, or the error's message (and code, if the message lacks it). */
export function endingOf(err: unknown, stop: AbortController): string {
  if (stop.signal.aborted && stop.signal.reason instanceof Error) return `${stop.signal.reason.message}; stopped`;
  const e = err as { code?: string; message: string };
  return `${e.message}${e.code && !e.message.includes(e.code) ? ` (${e.code})` : ''}`;
}
