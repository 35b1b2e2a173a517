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

/** An error as one line: its message and code, for a process that ends on it. */
export function failWith(who: string, err: unknown): never {
  const e = err as { message?: string; code?: string };
  console.error(`${who}: ${e.message ?? String(err)}${e.code === undefined ? '' : ` (${e.code})`}`);
  process.exit(1);
}
