/**
 * A channel's link: the kernel object (a Unix socket) or the MessagePort
 * that lives exactly as long as the other end does. Nothing travels over it
 * after setup; its only job is to end when the peer does, by close() or by
 * dying (the kernel closes a dead process's socket; Node closes a
 * terminated worker's port), so that a channel learns of a death at once
 * and without polling. It keeps the event loop alive only while its
 * channel holds it (hold): a channel whose reads stay parked between uses
 * parks them unref'd, and holds its link while someone waits for the other
 * side; otherwise the pending waits on the rings keep the loop alive.
 */
import type { Socket } from 'node:net';
import type { MessagePort } from 'node:worker_threads';

export interface Link {
  /** How the peer's end shows up in an error ("its socket closed"). */
  readonly ending: string;
  /**
   * Why the link ended when that was not the peer's death (a transport that
   * lost records: ERR_SHMRING_MESSAGE_LOST); the channel ends with it in
   * place of ERR_SHMRING_PEER_DEAD. Undefined for a socket or a port.
   */
  readonly error?: Error | undefined;
  /** Calls `onEnd` once, when the other end goes away (or close() is called). */
  watch(onEnd: () => void): void;
  /** Ends this side of the link; the peer's watch fires. */
  close(): void;
  /** Keeps the event loop alive (true) or not (false, as after watch). Cheap: a flag of the handle. */
  hold(on: boolean): void;
}

export function socketLink(socket: Socket): Link {
  return {
    ending: 'its socket closed',
    watch(onEnd) {
      let ended = false;
      const end = (): void => {
        if (ended) return;
        ended = true;
        onEnd();
      };
      socket.on('close', end);
      socket.on('end', end);
      // A reset (the peer died with unread bytes) is the end, like close.
      socket.on('error', end);
      // Nothing is sent after setup; any byte is ignored. Reading is what lets libuv see the EOF.
      socket.on('data', () => {});
      socket.unref();
      socket.resume();
    },
    close() {
      socket.destroy();
    },
    hold(on) {
      if (on) socket.ref();
      else socket.unref();
    },
  };
}

export function portLink(port: MessagePort): Link {
  return {
    ending: 'its thread ended',
    watch(onEnd) {
      let ended = false;
      port.on('close', () => {
        if (ended) return;
        ended = true;
        onEnd();
      });
      port.unref();
    },
    close() {
      port.close();
    },
    hold(on) {
      if (on) port.ref();
      else port.unref();
    },
  };
}
