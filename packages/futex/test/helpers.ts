/**
 * Helpers of the @shmring/futex tests.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';

/**
 * Runs `body` as an ES module in a new node process, with `Region` of
 * @shmring/core and `names` of this package imported; its result once it
 * exits (10 s at most: a process a pending wait keeps alive is killed,
 * `signal` then says so). `env` is added to this process's environment.
 */
export function runModule(names: readonly string[], body: string, env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  const futex = JSON.stringify(new URL('../src/index.js', import.meta.url).href);
  const core = JSON.stringify(import.meta.resolve('@shmring/core'));
  const source = `import { Region } from ${core};\nimport { ${names.join(', ')} } from ${futex};\n${body}`;
  return spawnSync(process.execPath, ['--input-type=module', '-e', source], {
    encoding: 'utf8',
    timeout: 10_000,
    env: { ...process.env, ...env },
  });
}
