/**
 * Copying a message out of a ring into memory of its own (tryRead,
 * readSync, read). V8 keeps typed arrays of up to 64 bytes on its heap, so
 * `slice` is cheapest there; a larger one gets a backing store of its own
 * (an allocation and bookkeeping costing ~1 µs). Messages up to 4 KiB are
 * therefore carved out of a shared 64 KiB slab, as Node's Buffer pool does:
 * one small view object each. A message kept alive keeps its slab alive.
 * Above 4 KiB the copy dominates and `slice` is used again.
 *
 * A slab is marked untransferable (worker_threads.markAsUntransferable, as
 * Node marks its Buffer pool): a message's buffer put in a transfer list
 * (postMessage, structuredClone) is copied (Node 20) or refused with a
 * DataCloneError (Node 21 and later), never detached. Detached, it
 * emptied every other message carved from it, and every later copyOut
 * threw a TypeError at the detached slab, the same message again at each
 * read, since a read that throws releases nothing.
 */
import { markAsUntransferable } from 'node:worker_threads';

/** Largest message V8 allocates on its own heap. */
const ON_HEAP_MAX = 64;
/** Largest message carved out of a slab. */
const SLAB_MESSAGE_MAX = 4096;
const SLAB_SIZE = 64 * 1024;

let slab = newSlab();
let slabOffset = 0;

function newSlab(): ArrayBuffer {
  const buffer = new ArrayBuffer(SLAB_SIZE);
  markAsUntransferable(buffer);
  return buffer;
}

/** A copy of `data[start .. start + length)` in memory the ring does not own. */
export function copyOut(data: Uint8Array, start: number, length: number): Uint8Array {
  if (length <= ON_HEAP_MAX || length > SLAB_MESSAGE_MAX) return data.slice(start, start + length);
  // A slab detached all the same (by native code) has byteLength 0: a new one, too.
  if (slabOffset + length > slab.byteLength) {
    slab = newSlab();
    slabOffset = 0;
  }
  const copy = new Uint8Array(slab, slabOffset, length);
  copy.set(data.subarray(start, start + length));
  slabOffset += (length + 7) & ~7; // keep every message 8-byte aligned, so Float64Array views of it work
  return copy;
}
