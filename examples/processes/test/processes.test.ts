import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { exchange } from '../src/main.js';

describe('examples/processes', () => {
  it('delivers every message in order between processes that meet by a POSIX name', async () => {
    const before = fs.readdirSync('/dev/shm').filter((f) => f.startsWith('shmring-example-')).length;
    const r = await exchange('posix', '50000');
    assert.deepEqual({ received: r.received, outOfOrder: r.outOfOrder }, { received: 50000, outOfOrder: 0 });
    const after = fs.readdirSync('/dev/shm').filter((f) => f.startsWith('shmring-example-')).length;
    assert.equal(after, before, 'the producer unlinks its POSIX name');
  });

  it('delivers every message in order over a memfd handed across a Unix socket', async () => {
    const r = await exchange('memfd', '50000');
    assert.deepEqual({ received: r.received, outOfOrder: r.outOfOrder }, { received: 50000, outOfOrder: 0 });
  });
});
