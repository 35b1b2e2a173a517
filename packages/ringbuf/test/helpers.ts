/** Small pieces the ring tests share. */

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
