import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { pipeline } from '../src/main.js';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

describe('examples/workers', () => {
  it('carries every value through main → worker A → worker B → main, in order, and ends', async () => {
    const r = await pipeline(100_000);
    assert.deepEqual({ received: r.received, wrong: r.wrong }, { received: 100_000, wrong: 0 });
  });

  for (const step of ['square', 'increment'] as const) {
    it(`rejects with the error of a stage that throws (${step}), never leaving it unhandled`, async () => {
      const unhandled: string[] = [];
      const note = (reason: unknown): void => void unhandled.push((reason as Error).message);
      process.on('unhandledRejection', note);
      let failure: unknown;
      try {
        failure = await pipeline(10_000, { failAt: { step, seq: 5_000 } }).then(
          () => assert.fail('pipeline() resolved'),
          (err: unknown) => err,
        );
        await new Promise((resolve) => setImmediate(resolve)); // a rejection nobody handled is reported by now
      } finally {
        process.off('unhandledRejection', note);
      }
      assert.deepEqual(unhandled, []);
      assert.equal((failure as Error).message, `stage ${step}: failing on seq 5000, as the test asked (failAt)`);
    });
  }

  it('main.js carries a handful of values, and refuses a count that is not a non-negative integer with usage and exit 2', () => {
    const ok = spawnSync(process.execPath, [MAIN, '3'], { encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /^3 values through main → A → B → main, 0 wrong, \d+ ms\n$/);
    for (const bad of ['abc', '-5', '1e3']) {
      const r = spawnSync(process.execPath, [MAIN, bad], { encoding: 'utf8' });
      assert.equal(r.status, 2, `count ${bad}: ${r.stderr}`);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^usage: node main\.js \[count\]: .*non-negative integer/);
      assert.ok(r.stderr.includes(`got '${bad}'`), r.stderr);
    }
  });
});
