// Two parked MpmcQueue readers, publications completing out of position order:
// the publication that fills the gap wakes one reader; the other stays parked
// beside a readable message. Producer A is a peer following docs/LAYOUT.md,
// split at the point where it is slow (between its claim and its publication).
// Run after `pnpm build`: node models/repro-mpmc-lost-wake.mjs [sab|memfd]
// Exits 1 while the bug is there (models/README.md, "Known bug").
import { setTimeout as sleep } from 'node:timers/promises';
const { Region } = await import(new URL('../packages/core/dist/src/index.js', import.meta.url).href);
const { wake } = await import(new URL('../packages/futex/dist/src/index.js', import.meta.url).href);
const { MpmcQueue } = await import(new URL('../packages/ringbuf/dist/src/index.js', import.meta.url).href);
const L = await import(new URL('../packages/ringbuf/dist/src/layout.js', import.meta.url).href);

const backing = process.argv[2] ?? 'sab';
const opts = { capacity: 4, slotSize: 16 };
const region = Region.create({ backing, size: MpmcQueue.regionSize(opts) });
const qB = MpmcQueue.create(region, opts);
const r1 = MpmcQueue.attach(region), r2 = MpmcQueue.attach(region);
const buf = region.buffer;
const ctl = new Int32Array(buf, 0, L.CONTROL_I32_LENGTH);
const data32 = new Int32Array(buf, L.DATA_OFFSET, (opts.capacity * L.slotStride(opts.slotSize)) / 4);

// 1. A claims position 0 (its CAS) and is slow to publish.
if (Atomics.compareExchange(ctl, L.PRODUCER_POSITION_I32, 0, 1) !== 0) throw new Error('claim');
// 2. B claims position 1 and publishes it; nobody is parked, so no wake.
qB.tryWrite(new TextEncoder().encode('B'));
// 3. Two readers park: the slot of consumer position 0 is unpublished.
const waitOpts = { poll: 0, spin: 0, peerTimeoutMs: Infinity };
const got = [];
const p1 = r1.read(waitOpts).then((m) => got.push(['r1', new TextDecoder().decode(m)]));
const p2 = r2.read(waitOpts).then((m) => got.push(['r2', new TextDecoder().decode(m)]));
await sleep(100);
console.log('parked: READ_WAITERS =', Atomics.load(ctl, L.READ_WAITERS_I32));
// 4. A publishes position 0 as mpmc.ts tryWrite does: slot, SEQUENCE = 1, unpark(READ, 1).
data32[L.SLOT_LENGTH_I32] = 1; data32[L.SLOT_TYPE_I32] = 0;
new Uint8Array(buf, L.DATA_OFFSET + L.SLOT_HEADER, 1)[0] = 'A'.charCodeAt(0);
Atomics.store(data32, L.SLOT_SEQUENCE_I32, 1);
if (Atomics.load(ctl, L.READ_WAITERS_I32) !== 0) { Atomics.add(ctl, L.READ_SIGNAL_I32, 1); wake(ctl, L.READ_SIGNAL_I32, 1); }
await sleep(1000);
const stride32 = L.slotStride(opts.slotSize) / 4;
console.log('after 1 s: delivered', JSON.stringify(got),
  '| CONSUMER_POSITION =', Atomics.load(ctl, L.CONSUMER_POSITION_I32),
  '| SEQUENCE of position 1 =', Atomics.load(data32, stride32 + L.SLOT_SEQUENCE_I32), '(2 = readable)',
  '| READ_WAITERS =', Atomics.load(ctl, L.READ_WAITERS_I32));
console.log(got.length === 1 ? 'LOST WAKE-UP: a reader is parked beside a readable message' : 'both readers got a message');
process.exit(got.length === 1 ? 1 : 0);
