/**
 * Installs shmring as a user does: packs every package of the workspace
 * (`pnpm pack`, which turns `workspace:*` into versions), installs the
 * tarballs with plain `npm install` into an empty folder outside the
 * workspace, and there runs programs that import the packages by name only,
 * a producer and a consumer in two processes, the README's examples, and
 * `npx shmring`. Needs `pnpm build` first (the test script builds) and the
 * npm registry (npx fetches pnpm; with no addon built, npm fetches koffi).
 *
 * With the addon built (cargo was on PATH), the platform package
 * @shmring/shm-sys-linux-x64-gnu is installed and koffi must not be; without
 * it, the platform package is left out, koffi is installed as the user is
 * told to, and the same programs run on the koffi backend.
 */
import { strict as assert } from 'node:assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONSUMER, FORCE_KOFFI, IMPORTS, PRODUCER } from './fixtures.js';
import { EXPECTED, examples, READMES, type Example } from './readmes.js';

/** The workspace root (this file runs from test/dist/). */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const PLATFORM_PACKAGE = '@shmring/shm-sys-linux-x64-gnu';
const ADDON_BUILT = fs.existsSync(path.join(ROOT, 'crates/shm-sys/npm/linux-x64-gnu/shm-sys.linux-x64-gnu.node'));
/** Every package a user installs; the platform package only when there is an addon to ship. */
const PACKAGES = ['@shmring/shm-sys', '@shmring/core', '@shmring/futex', '@shmring/ringbuf', '@shmring/channel'].concat(
  ADDON_BUILT ? [PLATFORM_PACKAGE] : [],
);
const TAG = `install-${process.pid}`;

/**
 * The environment of a user's shell: this process's, without what pnpm and
 * npm scripts add. pnpm's bin shims (mocha's, when the suite runs as
 * `pnpm test`) set NODE_PATH to the workspace's hoisted node_modules, where
 * `require('koffi')` would then succeed from the installed folder; npm's
 * npm_package_* and npm_config_local_prefix name the workspace.
 */
const USER_ENV = Object.fromEntries(
  Object.entries(process.env).filter(
    ([key]) => key !== 'NODE_PATH' && (!/^npm_/i.test(key) || /^npm_config_(registry|cache|userconfig|cafile|.*proxy)$/i.test(key)),
  ),
);

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end; fails the test with its output unless it exits 0 (or `expectStatus`). */
function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}, expectStatus = 0): Result {
  const r = spawnSync(command, args, { cwd, encoding: 'utf8', timeout: 120_000, env: { ...USER_ENV, ...env } });
  const result = { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  assert.equal(
    result.status,
    expectStatus,
    `${command} ${args.join(' ')} in ${cwd} exited ${result.status} (${r.error?.message ?? r.signal ?? ''}):\n${result.stdout}\n${result.stderr}`,
  );
  return result;
}

/** A child process whose output is collected; `line(text)` resolves when it prints that line. */
class Child {
  readonly process: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<number | null>;

  constructor(file: string, args: string[], cwd: string) {
    this.process = spawn(process.execPath, [file, ...args], { cwd, env: USER_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    this.process.stdout!.setEncoding('utf8').on('data', (s: string) => (this.stdout += s));
    this.process.stderr!.setEncoding('utf8').on('data', (s: string) => (this.stderr += s));
    this.exited = new Promise((resolve) => this.process.on('close', (code) => resolve(code)));
  }

  async line(text: string, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.stdout.split('\n').includes(text)) {
      if (this.process.exitCode !== null || Date.now() > deadline) {
        assert.fail(`no line '${text}' (exit ${this.process.exitCode}):\n${this.stdout}\n${this.stderr}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Waits for the exit; fails with the output unless it is 0. */
  async success(): Promise<string> {
    const code = await this.exited;
    assert.equal(code, 0, `exited ${code}:\n${this.stdout}\n${this.stderr}`);
    return this.stdout;
  }
}

/** Waits until one of `files` exists (a socket or /dev/shm name another process makes). */
async function exists(files: string[], timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!files.some((file) => fs.existsSync(file))) {
    assert.ok(Date.now() < deadline, `none of ${files.join(', ')} appeared`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Files of a tarball, without the leading `package/`. */
function tarballFiles(tarball: string): string[] {
  return run('tar', ['-tzf', tarball], path.dirname(tarball))
    .stdout.split('\n')
    .filter(Boolean)
    .map((f) => f.replace(/^package\//, ''));
}

/**
 * Runs one README example in a folder of `app`: its files written there (a socket path
 * under /tmp moved into `dir`, a POSIX name made unique), the first process
 * started, the others once it made what they connect to; a first process
 * that still runs when the others are done gets Ctrl-C (SIGINT), as its
 * README says. Every process must exit 0 and print what EXPECTED says, and
 * nothing the example made may be left.
 */
async function runExample(example: Example, dir: string, app: string): Promise<void> {
  const cwd = fs.mkdtempSync(path.join(app, 'example-')); // under app: its node_modules are found
  const made: string[] = [];
  const rename = (source: string): string =>
    source
      .replace(/\/tmp\/([\w-]+\.sock)/g, (_, file: string) => path.join(dir, file))
      .replace(/name: '([\w-]+)'/g, (_, name: string) => `name: '${name}-${TAG}'`);
  for (const file of example.files) {
    const source = rename(file.source);
    for (const m of source.matchAll(new RegExp(`(${dir}/[\\w-]+\\.sock)|name: '([\\w-]+-${TAG})'`, 'g'))) {
      made.push(m[1] ?? `/dev/shm/${m[2]}`);
    }
    fs.writeFileSync(path.join(cwd, file.name), source);
  }
  const [first, ...others] = example.files.filter((f) => f.process);
  const children = [new Child(first!.name, [], cwd)];
  try {
    if (others.length > 0) await exists(made);
    for (const file of others) children.push(new Child(file.name, [], cwd));
    await Promise.all(children.slice(1).map((c) => c.success()));
    const deadline = Date.now() + 5_000;
    while (children[0]!.process.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (children[0]!.process.exitCode === null) children[0]!.process.kill('SIGINT');
    const outputs = await Promise.all(children.map((c) => c.success()));
    assert.deepEqual(outputs, EXPECTED[example.id], `${example.id}: what its processes printed`);
  } finally {
    for (const child of children) child.process.kill('SIGKILL');
  }
  for (const file of new Set(made)) assert.ok(!fs.existsSync(file), `${example.id} left ${file}`);
}

describe('the packed packages, installed with npm into an empty folder', function () {
  this.timeout(60_000);
  let dir = '';
  let app = '';
  const tarballs = new Map<string, string>(); // package name -> tarball path

  before(function () {
    this.timeout(240_000);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-install-'));
    assert.ok(!dir.startsWith(ROOT + path.sep), `${dir} is inside the workspace`);
    const packs = path.join(dir, 'packs');
    run('npx', ['-y', 'pnpm@10', '-r', '--filter', './packages/*', '--filter', './crates/**', 'pack', '--pack-destination', packs], ROOT);
    for (const file of fs.readdirSync(packs)) {
      const name = JSON.parse(run('tar', ['-xzOf', file, 'package/package.json'], packs).stdout).name as string;
      tarballs.set(name, path.join(packs, file));
    }
    app = path.join(dir, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    const install = PACKAGES.map((name) => tarballs.get(name) ?? assert.fail(`${name} was not packed`));
    if (!ADDON_BUILT) {
      const core = JSON.parse(fs.readFileSync(path.join(ROOT, 'packages/core/package.json'), 'utf8'));
      install.push(`koffi@${core.peerDependencies.koffi}`); // what the loader's error asks for
    }
    run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...install], app);
    for (const [name, source] of [
      ['producer.mjs', PRODUCER],
      ['consumer.mjs', CONSUMER],
      ['imports.mjs', IMPORTS],
      ['force-koffi.mjs', FORCE_KOFFI],
    ]) {
      fs.writeFileSync(path.join(app, name!), source!);
    }
  });

  after(function () {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    for (const entry of fs.readdirSync('/dev/shm')) if (entry.includes(TAG)) fs.rmSync(`/dev/shm/${entry}`, { force: true });
  });

  it('packs every package of the workspace that is not private', function () {
    assert.deepEqual([...tarballs.keys()].sort(), [...new Set([...PACKAGES, PLATFORM_PACKAGE])].sort());
  });

  it('ships no tests, Rust sources, cargo output or build info, and the addon only in its platform package', function () {
    for (const [name, tarball] of tarballs) {
      for (const file of tarballFiles(tarball)) {
        assert.doesNotMatch(file, /(^|\/)(test|target|fixtures|node_modules)\//, `${name}: ${file}`);
        assert.doesNotMatch(file, /\.(rs|tsbuildinfo|tgz)$|(^|\/)Cargo\.(toml|lock)$/, `${name}: ${file}`);
        if (file.endsWith('.node')) assert.equal(name, PLATFORM_PACKAGE, `${name}: ${file}`);
      }
    }
    const platform = tarballFiles(tarballs.get(PLATFORM_PACKAGE)!);
    if (ADDON_BUILT) assert.ok(platform.includes('shm-sys.linux-x64-gnu.node'), platform.join(', '));
  });

  it('ships no source map that points at a file the package does not contain', function () {
    let maps = 0;
    for (const name of PACKAGES) {
      const root = path.join(app, 'node_modules', name);
      for (const file of fs.readdirSync(root, { recursive: true }) as string[]) {
        if (!file.endsWith('.map')) continue;
        maps++;
        const map = JSON.parse(fs.readFileSync(path.join(root, file), 'utf8')) as { sources: string[]; sourceRoot?: string };
        for (const source of map.sources) {
          const target = path.resolve(root, path.dirname(file), map.sourceRoot ?? '', source);
          assert.ok(target.startsWith(root + path.sep), `${name}/${file} points outside its package: ${source}`);
          assert.ok(fs.existsSync(target), `${name}/${file} points at ${source}, which ${name} does not contain`);
        }
      }
    }
    assert.ok(maps > 0, 'no source maps were checked');
  });

  it('gives each package.json what a published package needs, and nothing of the workspace', function () {
    for (const name of PACKAGES) {
      const text = fs.readFileSync(path.join(app, 'node_modules', name, 'package.json'), 'utf8');
      const pkg = JSON.parse(text);
      for (const field of ['description', 'license', 'repository', 'engines', 'files', 'exports']) {
        assert.ok(pkg[field], `${name} has no ${field}`);
      }
      assert.ok(pkg.engines.node, `${name}: engines.node`);
      assert.ok(!pkg.private, `${name} is private`);
      assert.doesNotMatch(text, /workspace:/, `${name} still names a workspace version`);
      assert.ok(fs.existsSync(path.join(app, 'node_modules', name, 'LICENSE')), `${name} ships no LICENSE`);
      if (name !== PLATFORM_PACKAGE) assert.ok(pkg.exports['.'].types, `${name}: exports['.'] has no types`);
    }
    const platform = JSON.parse(fs.readFileSync(path.join(ROOT, 'crates/shm-sys/npm/linux-x64-gnu/package.json'), 'utf8'));
    assert.deepEqual([platform.os, platform.cpu, platform.libc], [['linux'], ['x64'], ['glibc']]);
  });

  it(ADDON_BUILT ? 'loads the prebuilt addon and installs no koffi' : 'falls back to koffi, installed as the loader asks', function () {
    const { exports, backend, addon } = JSON.parse(run('node', ['imports.mjs'], app).stdout);
    for (const name of ['@shmring/core', '@shmring/futex', '@shmring/ringbuf', '@shmring/channel']) {
      assert.ok(exports[name].length > 0, `${name} exports nothing`);
    }
    assert.ok(exports['@shmring/ringbuf'].includes('SpscRing') && exports['@shmring/channel'].includes('connect'));
    if (ADDON_BUILT) {
      assert.equal(backend, 'addon');
      assert.equal(addon, 'addon');
      assert.ok(!fs.existsSync(path.join(app, 'node_modules/koffi')), 'npm installed koffi');
      // Where koffi is wanted but missing, the error says how to get it.
      const forced = JSON.parse(run('node', ['force-koffi.mjs'], app, { SHMRING_BACKEND: 'koffi' }).stdout);
      assert.equal(forced.code, 'ERR_SHMRING_NO_BACKEND', JSON.stringify(forced));
      assert.match(forced.message, /npm install koffi/);
    } else {
      assert.equal(backend, 'koffi');
      assert.match(addon, /^none: .*shm-sys-linux-x64-gnu/);
    }
  });

  it('runs a producer and a consumer in two processes, and npx shmring inspect --all sees their ring', async function () {
    const name = `ring-${TAG}`;
    const producer = new Child('producer.mjs', [name, '5000'], app);
    try {
      await producer.line('ready');
      const rings = JSON.parse(run('npx', ['--no-install', 'shmring', 'inspect', '--all', '--json'], app).stdout) as Array<{
        name: string;
        kind: string;
        producer?: { pid: number; alive: boolean };
      }>;
      const ring = rings.find((r) => r.name === name);
      assert.ok(ring, `inspect --all does not list ${name}: ${JSON.stringify(rings.map((r) => r.name))}`);
      assert.equal(ring.kind, 'SpscRing');
      assert.deepEqual(ring.producer, { pid: producer.process.pid, alive: true });
      const table = run('npx', ['--no-install', 'shmring', 'inspect', '--all'], app).stdout;
      assert.match(table, new RegExp(`^${name} +SpscRing`, 'm'));

      const consumer = new Child('consumer.mjs', [name], app);
      const [sent, received] = await Promise.all([producer.success(), consumer.success()]);
      assert.deepEqual(JSON.parse(received), JSON.parse(sent.split('\n')[1]!));
      assert.equal(JSON.parse(received).count, 5000);
      assert.ok(!fs.existsSync(`/dev/shm/${name}`), 'the consumer did not unlink the ring');
    } finally {
      producer.process.kill('SIGKILL');
    }
  });

  // An outside tester: require() failed with ERR_PACKAGE_PATH_NOT_EXPORTED ("No exports main defined"), which
  // reads like a broken package, on every Node, even where require() of an ES module works.
  it('require() of each package: an ES module, so loaded where Node requires ES modules, else ERR_REQUIRE_ESM', function () {
    const probe = (flags: string[], name: string): string =>
      run(
        'node',
        [
          ...flags,
          '-e',
          `try { console.log(Object.keys(require(${JSON.stringify(name)})).length > 0 ? 'loaded' : 'empty'); } catch (e) { console.log(e.code); }`,
        ],
        app,
      ).stdout.trim();
    const [major, minor] = process.versions.node.split('.').map(Number) as [number, number];
    for (const name of ['@shmring/core', '@shmring/futex', '@shmring/ringbuf', '@shmring/channel']) {
      assert.ok(['loaded', 'ERR_REQUIRE_ESM'].includes(probe([], name)), `${name}: ${probe([], name)}`);
      // Node 20.17 and later load an ES module with require() behind this flag (22.12 and later without it).
      if (major > 20 || (major === 20 && minor >= 17))
        assert.equal(probe(['--experimental-require-module', '--no-warnings'], name), 'loaded', name);
    }
  });

  it('runs npx shmring --help, which exits 0', function () {
    const help = run('npx', ['--no-install', 'shmring', '--help'], app);
    assert.match(help.stdout, /^usage: shmring inspect/);
  });

  it('runs every example of the READMEs that does not say why it cannot run, each process as a process', async function () {
    this.timeout(120_000);
    const all = READMES.flatMap((readme) => examples(ROOT, readme));
    assert.deepEqual(all.map((e) => e.id).sort(), Object.keys(EXPECTED).sort(), 'the examples run are the ones expected');
    for (const example of all) await runExample(example, dir, app);
  });
});
