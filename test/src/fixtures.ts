/**
 * The programs the install test writes into the folder it installs the
 * tarballs in. They import the packages by name only, as a user's program
 * does; plain .mjs, run by plain `node`.
 */

/**
 * A producer: creates a ring under a POSIX name, says `ready`, then writes
 * `count` messages of seeded lengths and bytes (it waits while the ring is
 * full: the consumer starts after `ready`) and closes the ring. Prints the
 * sum of every byte it sent.
 */
export const PRODUCER = `
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';

const [name, count] = [process.argv[2], Number(process.argv[3])];
const capacity = 1 << 16;
const region = Region.create({ backing: 'posix', name, size: SpscRing.regionSize({ capacity }) });
const ring = SpscRing.create(region, { capacity });
console.log('ready');
let seed = 1;
let sum = 0;
for (let i = 0; i < count; i++) {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  const message = new Uint8Array(1 + (seed % 300));
  for (let j = 0; j < message.length; j++) message[j] = (seed >>> 8) + i + j;
  for (const byte of message) sum += byte;
  await ring.write(message);
}
ring.close();
region.close();
console.log(JSON.stringify({ count, sum }));
`;

/** The consumer: opens the ring by name, unlinks the name, reads to the end, prints what it got. */
export const CONSUMER = `
import { Region } from '@shmring/core';
import { SpscRing } from '@shmring/ringbuf';

const region = Region.open({ backing: 'posix', name: process.argv[2] });
region.unlink();
let count = 0;
let sum = 0;
for await (const message of SpscRing.attach(region)) {
  count++;
  for (const byte of message) sum += byte;
}
region.close();
console.log(JSON.stringify({ count, sum }));
`;

/**
 * Imports every package by name and prints what it exports and which
 * backend @shmring/core chose (a system call makes it choose).
 */
export const IMPORTS = `
import { createRequire } from 'node:module';
const names = ['@shmring/core', '@shmring/futex', '@shmring/ringbuf', '@shmring/channel'];
const exports = {};
for (const name of names) exports[name] = Object.keys(await import(name)).sort();
const core = await import('@shmring/core');
core.Region.create({ backing: 'memfd', size: 4096 }).close();
let addon;
try {
  addon = createRequire(import.meta.url)('@shmring/shm-sys').kind;
} catch (error) {
  addon = 'none: ' + error.message;
}
console.log(JSON.stringify({ exports, backend: core.backendKind(), addon }));
`;

/** Forces the koffi backend and prints the error (code and message) that says how to get it. */
export const FORCE_KOFFI = `
import { Region, backendKind } from '@shmring/core';
try {
  Region.create({ backing: 'memfd', size: 4096 }).close();
  console.log(JSON.stringify({ code: 'none', backend: backendKind() }));
} catch (error) {
  console.log(JSON.stringify({ code: error.code, message: error.message }));
}
`;
