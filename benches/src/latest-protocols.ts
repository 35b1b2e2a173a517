/**
 * The two protocols the seeds describe for one value many readers read,
 * written the same way so a benchmark compares only the protocols (bench
 * only; LatestValue in @shmring/ringbuf is the double buffer for real).
 * Both over a SharedArrayBuffer laid out as LatestValue is: PUBLISHED alone
 * in the first 128-byte block, then each slot: SEQ, LENGTH, VERSION in its
 * first cache line, the value from byte 64, the slot rounded up to 128.
 *
 *  - Seqlock: one slot. Writer: SEQ odd, write, SEQ even. Reader: SEQ even
 *    before and unchanged after its copy, else retry (spinning while odd).
 *  - Double buffer: two slots, each seqlocked, and PUBLISHED (the newest
 *    version; slot = version & 1). The writer writes the slot PUBLISHED
 *    does not name, then stores PUBLISHED. A reader retries only when the
 *    writer laps it (two publications during one copy).
 */
export type Protocol = 'seqlock' | 'double-buffer';

const PUBLISHED = 0;
const BLOCK = 128;
const VALUE = 64;

function stride(size: number): number {
  return Math.ceil((VALUE + size) / BLOCK) * BLOCK;
}

export function protocolBytes(size: number): number {
  return BLOCK + 2 * stride(size);
}

export class Slots {
  readonly words: Int32Array;
  readonly bytes: Uint8Array;
  /** Byte offset of each slot. */
  readonly #slot0: number;
  readonly #slot1: number;
  retries = 0;
  #version = 0;

  constructor(
    readonly sab: SharedArrayBuffer,
    readonly protocol: Protocol,
    readonly size: number,
  ) {
    this.words = new Int32Array(sab);
    this.bytes = new Uint8Array(sab);
    this.#slot0 = BLOCK;
    this.#slot1 = BLOCK + stride(size);
  }

  publish(value: Uint8Array): void {
    const w = this.words;
    const version = ++this.#version;
    const slot = this.protocol === 'seqlock' ? 0 : version & 1;
    const at = slot === 0 ? this.#slot0 : this.#slot1;
    const h = at / 4;
    const seq = w[h]!;
    Atomics.store(w, h, seq + 1); // odd: writing
    this.bytes.set(value, at + VALUE);
    w[h + 1] = value.length;
    w[h + 2] = version;
    Atomics.store(w, h, seq + 2); // even: whole
    if (this.protocol === 'double-buffer') Atomics.store(w, PUBLISHED, version);
  }

  read(): { version: number; value: Uint8Array } {
    const w = this.words;
    let published = this.protocol === 'seqlock' ? 0 : Atomics.load(w, PUBLISHED);
    for (;;) {
      const slot = this.protocol === 'seqlock' ? 0 : published & 1;
      const base = slot === 0 ? this.#slot0 : this.#slot1;
      const h = base / 4;
      const seq = Atomics.load(w, h);
      if ((seq & 1) === 0) {
        const length = w[h + 1]!;
        const version = w[h + 2]!;
        const at = base + VALUE;
        const value = this.bytes.slice(at, at + Math.min(length, this.size));
        if (Atomics.load(w, h) === seq && (this.protocol === 'seqlock' || version === published)) return { version, value };
      }
      this.retries++;
      if (this.protocol === 'double-buffer') published = Atomics.load(w, PUBLISHED);
    }
  }
}
