import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
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

  for (const step of ['square', 'increment'] as const) {
    it(`a stage that fails to start (${step}) ends the run: pipeline() rejects with its error, and the stages that did start end`, () => {
      // In a process of its own: a worker left running keeps its process alive, which is what the test looks for.
      // (A file, not --eval: a worker inherits its process's flags, and --input-type is refused in a worker.)
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-workers-test-'));
      const program = path.join(dir, 'fail-to-start.mjs');
      fs.writeFileSync(
        program,
        `import { pipeline } from ${JSON.stringify(pathToFileURL(MAIN).href)};\n` +
          `await pipeline(10, { failAt: { step: '${step}', seq: 'start' } }).then(() => console.log('resolved'), (err) => console.log(err.message));\n`,
      );
      let r: SpawnSyncReturns<string>;
      try {
        r = spawnSync(process.execPath, [program], { encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL' });
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
      assert.equal(r.signal, null, `the process did not end within 20 s: ${r.stdout}${r.stderr}`);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, `stage ${step}: failing before it starts, as the test asked (failAt)\n`);
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
