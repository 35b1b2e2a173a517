/** Small pieces the ring tests share. */
import { Region, type ShmringError } from '@shmring/core';

/** `length` pseudo-random bytes from `seed` (xorshift32): the same seed gives the same bytes. */
export function randomBytes(seed: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x;
  }
  return bytes;
}

let memfdProblem: string | undefined;
/** Why a memfd region cannot be made here (its error code and message), or undefined if it can. */
export function memfdUnavailable(): string | undefined {
  if (memfdProblem === undefined) {
    try {
      Region.create({ backing: 'memfd', size: 4096 }).close();
      memfdProblem = '';
    } catch (err) {
      memfdProblem = `${(err as ShmringError).code}: ${(err as Error).message}`;
    }
  }
  return memfdProblem === '' ? undefined : memfdProblem;
}
