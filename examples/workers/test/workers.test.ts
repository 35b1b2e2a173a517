import assert from 'node:assert/strict';
import { pipeline } from '../src/main.js';

describe('examples/workers', () => {
  it('carries every value through main → worker A → worker B → main, in order, and ends', async () => {
    const r = await pipeline(100_000);
    assert.deepEqual({ received: r.received, wrong: r.wrong }, { received: 100_000, wrong: 0 });
  });
});
