/**
 * What the two hosts agree on: the ring each keeps (its capacity, a POSIX
 * name of its own), the orders (a sequence number and some text, the
 * message type seq % 3), and the last message, of type END, that tells host
 * B the stream is over.
 */
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';

export const CAPACITY = 1 << 20;
export const END = 9;

/** A fresh POSIX-named ring for a bridge to open by name (`shm:<name>`). */
export function createRing(role: 'a' | 'b'): { name: string; region: Region; ring: SpscRing } {
  const name = `shmring-two-hosts-${role}-${process.pid}`;
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

export function order(seq: number): Uint8Array {
  return encoder.encode(`${seq}:order from host A (pid ${process.pid})`);
}

export function seqOf(message: Uint8Array): number {
  return Number(decoder.decode(message).split(':', 1)[0]);
}
