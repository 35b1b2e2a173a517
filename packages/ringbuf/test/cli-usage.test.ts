/**
 * The shmring CLI's usage checks: every subcommand refuses an unknown
 * option, a value given to a flag and an extra argument with its usage on
 * stderr and exit 2, before it looks at or removes anything. The CLI runs
 * under a guard (a preloaded module) that makes every unlink throw, so a
 * regression that acts on bad usage cannot remove anything from /dev/shm.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const REFUSED = 'refused by the test guard';
/** Preloaded into the CLI: fs.unlinkSync (POSIX and file rings) and Region.unlink (System V segments) throw REFUSED. */
const GUARD = `data:text/javascript,${encodeURIComponent(`
  import fs from 'node:fs';
  import { syncBuiltinESMExports } from 'node:module';
  import { Region } from ${JSON.stringify(import.meta.resolve('@shmring/core'))};
  const refuse = () => { throw new Error(${JSON.stringify(REFUSED)}); };
  fs.unlinkSync = refuse;
  syncBuiltinESMExports();
  Region.prototype.unlink = refuse;
`)}`;

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', GUARD, CLI, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('the shmring CLI: usage', function () {
  this.timeout(60_000);

  it('the guard makes an unlink in the CLI fail instead of removing anything', function () {
    const r = spawnSync(
      process.execPath,
      ['--import', GUARD, '--input-type=module', '-e', "import('node:fs').then((fs) => fs.unlinkSync('/nonexistent'))"],
      {
        encoding: 'utf8',
      },
    );
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, new RegExp(REFUSED));
  });

  it('refuses unknown options, values given to flags and extra arguments with its usage on stderr and exit 2, removing nothing', function () {
    const cases: [string[], RegExp][] = [
      [['unlink-stale', '--dryrun'], /--dryrun/],
      [['unlink-stale', '-n'], /-n/],
      [['unlink-stale', '--dry-run=yes'], /--dry-run/],
      [['unlink-stale', 'now', 'please'], /'now' 'please'/],
      [['unlink-stale', '--json', '--all'], /--all/],
      [['inspect', '--all', 'extra'], /--all or a target, not both/],
      [['inspect', 'a', 'b'], /'b'/],
      [['inspect', '--all', '--verbose'], /--verbose/],
      [['inspect', '--all', '--json=no'], /--json/],
    ];
    for (const [args, names] of cases) {
      const r = cli(...args);
      const shown = `shmring ${args.join(' ')}: exit ${r.status}, stderr ${r.stderr}`;
      assert.equal(r.status, 2, shown);
      assert.match(r.stderr, /usage: shmring/, shown);
      assert.match(r.stderr.split('\n')[0]!, names, shown);
      assert.doesNotMatch(r.stderr, new RegExp(REFUSED), shown);
      assert.equal(r.stdout, '', shown);
    }
  });

  it('refuses an empty target with exit 2 and its usage, as other bad usage', function () {
    const r = cli('inspect', '');
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr.split('\n')[0]!, /^shmring inspect: the target is empty: give a POSIX name, a path, sysv:KEY or sysv-id:ID$/);
    assert.match(r.stderr, /usage: shmring/);
    assert.equal(r.stdout, '');
  });

  it('refuses a malformed System V target with exit 2, naming it and the accepted forms, instead of looking for a POSIX name', function () {
    for (const target of ['sysv:12abc', 'sysv:', 'sysv:-1', 'sysv:0', 'sysv:4294967296', 'sysv-id:-5', 'sysv-id:1.5', 'SYSV-ID:x']) {
      const r = cli('inspect', target);
      const shown = `shmring inspect ${target}: exit ${r.status}, stderr ${r.stderr}`;
      assert.equal(r.status, 2, shown);
      const first = r.stderr.split('\n')[0]!;
      assert.ok(first.includes(`'${target}' is not a System V target`), shown);
      assert.match(first, /sysv:<key>.*sysv-id:<id>/, shown);
      assert.doesNotMatch(r.stderr, /shm_open/, shown);
      assert.match(r.stderr, /usage: shmring/, shown);
    }
    // Well formed, naming no segment: a runtime failure (exit 1), as before.
    for (const target of ['sysv:0x7fff0001', 'sysv:2147418113', 'sysv-id:2147483647']) {
      const r = cli('inspect', target);
      assert.equal(r.status, 1, `shmring inspect ${target}: exit ${r.status}, stderr ${r.stderr}`);
      assert.match(r.stderr, /System V shared memory segment/);
    }
  });

  it('still takes the options it documents', function () {
    const dry = cli('unlink-stale', '--dry-run', '--json');
    assert.equal(dry.status, 0, dry.stderr);
    assert.ok(Array.isArray(JSON.parse(dry.stdout)));
    const all = cli('inspect', '--json', '--all');
    assert.equal(all.status, 0, all.stderr);
    assert.ok(Array.isArray(JSON.parse(all.stdout)));
    const help = cli('unlink-stale', '--help');
    assert.equal(help.status, 0);
    assert.match(help.stdout, /usage: shmring/);
  });
});
