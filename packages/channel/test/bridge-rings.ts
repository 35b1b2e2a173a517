/**
 * The rings of the bridge tests: POSIX-named SpscRings (or MpscRings) the
 * bridge opens by name, each removed after its test with the bridge's
 * `.jsbridge` progress object.
 */
import { Region } from '@shmring/core';
import { MpscRing, SpscRing } from '@shmring/ringbuf';

export class TestRings {
  /** Counts the rings made, and serves the tests as a source of names unique in this run (stream names). */
  counter = 0;
  readonly #regions: Region[] = [];
  readonly #names: string[] = [];

  constructor(
    readonly prefix: string,
    readonly capacity: number,
  ) {}

  /** A new ring (an SpscRing, or an MpscRing for 'mpsc') under a fresh POSIX name, created here. */
  make<K extends 'spsc' | 'mpsc' = 'spsc'>(kind?: K): { name: string; ring: K extends 'mpsc' ? MpscRing : SpscRing } {
    const name = `shmring-${this.prefix}-${process.pid}-${++this.counter}`;
    const Kind = kind === 'mpsc' ? MpscRing : SpscRing;
    const region = Region.create({ backing: 'posix', name, size: Kind.regionSize({ capacity: this.capacity }) });
    this.#regions.push(region);
    this.#names.push(name, `${name}.jsbridge`);
    return { name, ring: Kind.create(region, { capacity: this.capacity }) as K extends 'mpsc' ? MpscRing : SpscRing };
  }

  /** Unmaps every ring made and removes its names (and the bridge's progress objects). */
  clean(): void {
    for (const region of this.#regions.splice(0)) region.close();
    for (const name of this.#names.splice(0)) {
      try {
        Region.open({ backing: 'posix', name }).unlink();
      } catch {
        // never made
      }
    }
  }
}
