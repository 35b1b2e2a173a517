/**
 * A producer's open zero-copy claim (SpscRing, MpscRing): one at a time per
 * object, and the argument checks of claim / commit / abort, the same for
 * both rings. Every error names the verb it was called as
 * (`SpscRing.claim: …`, `MpscRing.tryWrite: …`).
 */
import { ErrorCodes, ShmringError, ShmringRangeError, ShmringTypeError } from '@shmring/core';
import { shown, tooLargeError } from './queue.js';

const NONE = -1;

export class OpenClaim {
  /** Offset in `data` of the open claim's payload, or -1 if none is open. */
  offset = NONE;

  constructor(private readonly kind: string) {}

  /**
   * Before a write or claim of `length` bytes: none open, and a length in
   * [0, max]. `verb` is the caller's name in the errors: 'claim' or
   * 'tryWrite' (writeSync and write, which write through tryWrite, check
   * the length themselves first: queue.ts).
   */
  checkWrite(length: number, max: number, verb: 'claim' | 'tryWrite'): void {
    if (this.offset !== NONE) throw this.#open(verb);
    if (length > max || length < 0) {
      if (length < 0) throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${this.kind}.${verb}: length=${length} must be >= 0`);
      throw tooLargeError(`${this.kind}.${verb}`, length, max);
    }
  }

  /**
   * claim()'s own check: the length is an integer. The rest (an open claim,
   * the range) is checkWrite's, after the ring's own checks (closed, role).
   */
  checkLength(length: number): void {
    if (!Number.isInteger(length)) {
      throw new ShmringTypeError(ErrorCodes.INVALID_ARGUMENT, `${this.kind}.claim: length=${shown(length)} must be an integer`);
    }
  }

  /** A write or a claim while a claim is open: a call in the wrong state (a plain Error), naming the verb and the open claim. */
  #open(verb: string): ShmringError {
    return new ShmringError(
      ErrorCodes.INVALID_ARGUMENT,
      `${this.kind}.${verb}: a claim is open (offset ${this.offset}); commit() or abort() it before writing or claiming again`,
    );
  }

  /** Checks that `offset` is the open claim (a TypeError if it is no integer, a RangeError if it is another), and closes the claim. */
  close(offset: number, verb: string): void {
    if (this.offset === NONE || offset !== this.offset) {
      const open = this.offset === NONE ? 'none is open' : `open: ${this.offset}`;
      if (!Number.isInteger(offset)) {
        throw new ShmringTypeError(
          ErrorCodes.INVALID_ARGUMENT,
          `${this.kind}.${verb}: offset=${shown(offset)} must be the integer claim() returned (${open})`,
        );
      }
      throw new ShmringRangeError(ErrorCodes.INVALID_ARGUMENT, `${this.kind}.${verb}: offset=${offset} is not the open claim (${open})`);
    }
    this.offset = NONE;
  }
}
