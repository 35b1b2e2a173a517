/** fast-check generators the ring property tests share. */
import fc from 'fast-check';
import * as L from '../src/layout.js';

/** A payload length, as a fraction of the largest message (0 and 1 are frequent: the edges). */
export const lengthFraction = fc.oneof(
  { weight: 1, arbitrary: fc.constant(0) },
  { weight: 1, arbitrary: fc.constant(1) },
  { weight: 6, arbitrary: fc.double({ min: 0, max: 1, noNaN: true }) },
);
/** A message type: the edges 0 and MAX_TYPE, or anything between. */
export const messageType = fc.oneof(fc.constant(0), fc.constant(L.MAX_TYPE), fc.integer({ min: 0, max: L.MAX_TYPE }));
/** A seed for randomBytes. */
export const bytesSeed = fc.integer({ min: 1, max: 0x7fffffff });
