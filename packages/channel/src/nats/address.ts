/**
 * Endpoints: `nats://[user:pass@]host[:port]/<subject>[?jetstream=<stream>[&consumer=<name>]]`
 * (a channel's address, or a bridge end) and `shm:<name>` (a POSIX-named
 * ring, for the bridge). Parsing never touches the network; every mistake
 * is ERR_SHMRING_INVALID_ENDPOINT with the endpoint in the message.
 */
import { ErrorCodes, ShmringTypeError } from '@shmring/core';

export interface NatsAddress {
  /** `host:port`, as the nats client takes it. */
  readonly server: string;
  readonly subject: string;
  /** The JetStream stream (`?jetstream=`), if any. */
  readonly jetstream: string | undefined;
  /** The durable consumer's name (`&consumer=`, with jetstream= only), if given. */
  readonly consumer: string | undefined;
  readonly user: string | undefined;
  readonly pass: string | undefined;
  /** The endpoint without credentials, for messages. */
  readonly text: string;
}

export const DEFAULT_NATS_PORT = 4222;

/**
 * The endpoint as a message may quote it: its userinfo (`user:pass@`, or a
 * token as `token@`) blanked, so that an error never carries credentials
 * into a log. Everything up to the last '@' of the authority goes.
 */
export function redactEndpoint(endpoint: string): string {
  const authority = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)/i.exec(endpoint);
  if (authority === null) return endpoint;
  const at = authority[2]!.lastIndexOf('@');
  if (at < 0) return endpoint;
  return `${authority[1]}***@${endpoint.slice(authority[1]!.length + at + 1)}`;
}

function invalid(verb: string, endpoint: string, why: string): ShmringTypeError {
  return new ShmringTypeError(ErrorCodes.INVALID_ENDPOINT, `${verb}: '${redactEndpoint(endpoint)}' is not a valid endpoint: ${why}`);
}

/** What is wrong with a subject as a literal (no wildcard) NATS subject, or undefined if nothing. */
function subjectFault(subject: string): string | undefined {
  if (subject.length === 0) return 'the subject is missing (nats://host:port/<subject>)';
  // The protocol ends a subject at a NUL in some servers and clients, and the server refuses it in others.
  if (subject.includes('\0')) return 'the subject holds a NUL character (%00), which no NATS subject can';
  for (const token of subject.split('.')) {
    if (token.length === 0) return `the subject '${subject}' has an empty token (two dots, or a dot at an end)`;
    if (token === '*' || token === '>' || /[\s*>]/.test(token)) {
      return `the subject '${subject}' has a wildcard or a space; use a plain subject`;
    }
  }
  return undefined;
}

/** A NATS subject or stream name without wildcards: dot-separated tokens of visible characters. */
function checkSubject(subject: string, verb: string, endpoint: string): void {
  const fault = subjectFault(subject);
  if (fault !== undefined) throw invalid(verb, endpoint, fault);
}

/** The prefix of the inboxes nats.js makes (createInbox(), with no inboxPrefix: this package never sets one). */
export const INBOX_PREFIX = '_INBOX.';
/** The longest inbox a peer may name (nats.js's are 29 characters; a server's control line has its limits). */
const MAX_INBOX_LENGTH = 256;

/**
 * Whether a peer's inbox (its HELLO's or WELCOME's, from the network) is
 * one this end may publish to: a literal subject under INBOX_PREFIX, of
 * visible ASCII characters only. Anything else is published to as it is
 * (nats.js writes the subject into the protocol line unchecked): a space
 * or CR LF would inject protocol (or have the server close the
 * connection), a wildcard would reach other subscribers, '' makes every
 * publish throw.
 */
export function isInboxSubject(inbox: unknown): inbox is string {
  return (
    typeof inbox === 'string' &&
    inbox.length > INBOX_PREFIX.length &&
    inbox.length <= MAX_INBOX_LENGTH &&
    inbox.startsWith(INBOX_PREFIX) &&
    /^[\x21-\x7e]+$/.test(inbox) &&
    subjectFault(inbox) === undefined
  );
}

/** A `nats:` endpoint, the scheme in any case (URL schemes are case-insensitive: 'NATS://…' is NATS, not a socket path). */
export function isNatsEndpoint(endpoint: unknown): endpoint is string {
  return typeof endpoint === 'string' && /^nats:/i.test(endpoint);
}

/** Parses a nats:// endpoint; `allowJetstream` is for the bridge (a channel has no stream). */
/**
 * The port as written (`host:<port>`), checked before the URL parser sees
 * it: that one refuses a port out of range as it refuses anything else,
 * and the message would not say what is wrong.
 */
function checkPort(endpoint: string, verb: string): void {
  const authority = /^nats:\/\/([^/?#]*)/i.exec(endpoint)?.[1];
  if (authority === undefined) return;
  const hostPort = authority.slice(authority.lastIndexOf('@') + 1);
  const port = /^(?:\[[^\]]*\]|[^:]*):(.*)$/.exec(hostPort)?.[1];
  if (port === undefined || port === '') return;
  if (!/^[0-9]+$/.test(port) || Number(port) > 65535) {
    throw invalid(verb, endpoint, `the port '${port}' is not a port number (1 to 65535; default 4222)`);
  }
}

/** decodeURIComponent, its URIError (a '%' not followed by the UTF-8 of a character) told as an invalid endpoint. */
function decode(text: string, what: string, verb: string, endpoint: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw invalid(
      verb,
      endpoint,
      `the ${what} has a malformed percent-encoding ('%' must be followed by the hex UTF-8 bytes of a character)`,
    );
  }
}

export function parseNatsAddress(endpoint: string, verb: string, allowJetstream: boolean): NatsAddress {
  checkPort(endpoint, verb);
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw invalid(verb, endpoint, 'expected nats://host:port/<subject>');
  }
  if (url.protocol !== 'nats:' || url.hostname === '') throw invalid(verb, endpoint, 'expected nats://host:port/<subject>');
  const port = url.port === '' ? DEFAULT_NATS_PORT : Number(url.port);
  // Port 0 means "any free port" to a listener; nothing can connect to it.
  if (port === 0) throw invalid(verb, endpoint, 'port 0 is no server port (nats://host:port/<subject>, default port 4222)');
  const subject = decode(url.pathname.replace(/^\//, ''), 'subject', verb, endpoint);
  checkSubject(subject, verb, endpoint);
  const given: { jetstream?: string; consumer?: string } = {};
  for (const [key, value] of url.searchParams) {
    if ((key !== 'jetstream' && key !== 'consumer') || !allowJetstream) {
      throw invalid(
        verb,
        endpoint,
        `unknown option '${key}'${allowJetstream ? ' (only ?jetstream=<stream> and &consumer=<name>)' : ' (a channel takes none)'}`,
      );
    }
    // Which one would win is a guess: say so rather than take the first or the last.
    if (given[key] !== undefined)
      throw invalid(verb, endpoint, `${key}= is given twice; name one ${key === 'jetstream' ? 'stream' : 'consumer'}`);
    // JetStream's names: no '.', wildcard, space or path separator; the stricter set is portable to every server.
    if (!/^[A-Za-z0-9_-]+$/.test(value)) {
      throw invalid(
        verb,
        endpoint,
        `the ${key === 'jetstream' ? 'stream' : 'consumer'} name '${value}' must be letters, digits, '_' or '-'`,
      );
    }
    given[key] = value;
  }
  const { jetstream, consumer } = given;
  if (consumer !== undefined && jetstream === undefined) {
    throw invalid(
      verb,
      endpoint,
      'consumer= names a JetStream consumer: it needs jetstream=<stream> (?jetstream=<stream>&consumer=<name>)',
    );
  }
  if (url.hash !== '') throw invalid(verb, endpoint, 'a fragment (#...) means nothing here');
  const server = `${url.hostname}:${port}`;
  return {
    server,
    subject,
    jetstream,
    consumer,
    user: url.username === '' ? undefined : decode(url.username, 'user name', verb, endpoint),
    pass: url.password === '' ? undefined : decode(url.password, 'password', verb, endpoint),
    text: `nats://${server}/${subject}${jetstream === undefined ? '' : `?jetstream=${jetstream}`}${consumer === undefined ? '' : `&consumer=${consumer}`}`,
  };
}
