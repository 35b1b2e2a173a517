/**
 * What the two hosts agree on: the ring each keeps (its capacity, a POSIX
 * name of its own), the orders (a sequence number and some text, the
 * message type seq % 3), and the last message, of type END, that tells host
 * B the run is over and how many orders it sent. Each message carries its
 * run's id: a JetStream stream keeps earlier runs on the subject, and host
 * B, given the run's id, checks that run and passes over the others.
 */
import { randomBytes } from 'node:crypto';
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';

export const CAPACITY = 1 << 20;
export const END = 9;

/**
 * A fresh POSIX-named ring for a bridge to open by name (`shm:<name>`). Its
 * name carries the pid and a random part: a name that a host killed before
 * it removed it left behind never stands in the way of a later host that
 * got the same pid.
 */
export function createRing(role: 'a' | 'b'): { name: string; region: Region; ring: SpscRing } {
  const name = `shmring-two-hosts-${role}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const region = Region.create({ backing: 'posix', name, size: SpscRing.regionSize({ capacity: CAPACITY }) });
  try {
    return { name, region, ring: SpscRing.create(region, { capacity: CAPACITY }) };
  } catch (err) {
    region.unlink();
    region.close();
    throw err;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A run id: 8 hex digits, new for each run of host A unless given. */
export function newRun(): string {
  return randomBytes(4).toString('hex');
}

/** A run id as the hosts take it on their command line. */
export function isRun(text: string): boolean {
  return /^[0-9a-f]{1,16}$/.test(text);
}

export function order(run: string, seq: number): Uint8Array {
  return encoder.encode(`${run}:${seq}:order from host A (pid ${process.pid})`);
}

/**
 * The END message of `run`, which sent `count` orders (`<run>:<count>`): with the count, host B sees orders lost
 * just before END too, not only gaps between orders that came.
 */
export function end(run: string, count: number): Uint8Array {
  return encoder.encode(`${run}:${count}`);
}

/**
 * The run of a message, and its number: an order's sequence number, or in END (its type says which) the count of
 * orders the run sent. NaN where the number is missing or not one.
 */
export function parse(message: Uint8Array): { run: string; n: number } {
  const [run = '', n] = decoder.decode(message).split(':', 2);
  return { run, n: /^\d+$/.test(n ?? '') ? Number(n) : Number.NaN };
}
