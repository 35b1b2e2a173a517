/**
 * How a child process of main.js ends with it. main.js starts the producer
 * and the consumer with an IPC channel; when main.js ends, however it ends
 * (Ctrl-C, SIGTERM, SIGKILL), the channel closes and the child gets
 * 'disconnect': it then cleans up (`cleanup`: the POSIX name, the socket
 * file) and exits instead of waiting for ever for a peer that will not
 * come. SIGINT and SIGTERM sent to the child itself do the same. Run on its
 * own (no IPC channel), a child only listens for the signals.
 */
export function endWithParent(who: string, cleanup: () => void): void {
  cleanupOnExit = cleanup;
  const end = (why: string | undefined, code: number): void => {
    try {
      cleanup();
    } finally {
      if (why !== undefined) console.error(`${who}: ${why}; stopped`);
      process.exit(code);
    }
  };
  // The channel must not keep the process alive once its work is done.
  process.channel?.unref();
  process.once('disconnect', () => end('main.js is gone', 1));
  // Gone already, while this process was loading its modules: the event came before the listener.
  if (process.send !== undefined && !process.connected) end('main.js is gone', 1);
  // Ctrl-C: the whole group gets it, and main.js says so (its SIGINT handler, main.ts): one line, not three.
  process.once('SIGINT', () => end(undefined, 130));
  process.once('SIGTERM', () => end('terminated (SIGTERM)', 143));
}

/** The cleanup endWithParent was given: an exit on an error (failWith) runs it too. */
let cleanupOnExit: (() => void) | undefined;

/**
 * Ends the process on `err` with 1, saying it in one line (its message and
 * code), after the cleanup endWithParent was given: an error leaves no POSIX
 * name or socket file behind, as a stop does not. A cleanup that fails is
 * said too.
 */
export function failWith(who: string, err: unknown): never {
  const line = (e: { message?: string; code?: string } | undefined, what: unknown): string =>
    `${e?.message ?? String(what)}${e?.code === undefined ? '' : ` (${e.code})`}`;
  try {
    cleanupOnExit?.();
  } catch (cleanupErr) {
    console.error(`${who}: cleanup failed: ${line(cleanupErr as { message?: string; code?: string }, cleanupErr)}`);
  } finally {
    console.error(`${who}: ${line(err as { message?: string; code?: string }, err)}`);
    process.exit(1);
  }
}
