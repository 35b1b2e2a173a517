'use strict';
/**
 * The package's build: `napi build --platform --release` when cargo is on
 * PATH, then a copy of the addon into its platform package
 * (npm/<target>/), which is what a packed install ships. Without cargo: one
 * line that says so, and success, so that the rest of the workspace builds
 * and @shmring/core falls back to its koffi backend.
 */
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

/** The targets napi builds here, each with its platform package in npm/<target>. */
const TARGETS = ['linux-x64-gnu'];

/**
 * napi warns that the crate does not use `napi-derive` (it declares the
 * Node-API functions itself, so there are no generated bindings to skip):
 * true and expected, but it reads like an error, so it is left out.
 */
const EXPECTED_WARNING = /`napi-derive` crate is not used/;

const cargo = spawnSync('cargo', ['--version'], { stdio: 'ignore' });
if (cargo.error || cargo.status !== 0) {
  console.log('@shmring/shm-sys: cargo not found on PATH; the Rust addon is not built (shmring uses its koffi backend)');
  process.exit(0);
}

// The addon napi writes over, and the copies below, are replaced, not
// written in place: a program that has the old one loaded (a test run, a
// server) keeps its mapping of the old file instead of crashing on a
// rewritten one. The old one waits aside until the build succeeds, and
// comes back if it fails.
const built = (target) => path.join(__dirname, `shm-sys.${target}.node`);
for (const target of TARGETS) {
  if (fs.existsSync(built(target))) fs.renameSync(built(target), `${built(target)}.previous`);
}

const build = spawn('napi', ['build', '--platform', '--release'], {
  cwd: __dirname,
  stdio: ['inherit', 'inherit', 'pipe'],
  shell: true,
});
let pending = '';
build.stderr.setEncoding('utf8');
build.stderr.on('data', (chunk) => {
  const lines = (pending + chunk).split('\n');
  pending = lines.pop();
  for (const line of lines) if (!EXPECTED_WARNING.test(line)) process.stderr.write(`${line}\n`);
});
build.on('close', (status) => {
  if (pending && !EXPECTED_WARNING.test(pending)) process.stderr.write(pending);
  for (const target of TARGETS) {
    const previous = `${built(target)}.previous`;
    if (!fs.existsSync(previous)) continue;
    if (status === 0 && fs.existsSync(built(target))) fs.rmSync(previous);
    else fs.renameSync(previous, built(target));
  }
  if (status !== 0) process.exit(status ?? 1);
  for (const target of TARGETS) {
    if (!fs.existsSync(built(target))) continue;
    const copy = path.join(__dirname, 'npm', target, `shm-sys.${target}.node`);
    fs.copyFileSync(built(target), `${copy}.tmp`);
    fs.renameSync(`${copy}.tmp`, copy);
  }
});
