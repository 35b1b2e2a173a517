'use strict';
/**
 * The package's build: `napi build --platform --release` when cargo is on
 * PATH; otherwise one line that says so, and success, so that the rest of the
 * workspace builds and @shmring/core falls back to its koffi backend.
 */
const { spawnSync } = require('node:child_process');

const cargo = spawnSync('cargo', ['--version'], { stdio: 'ignore' });
if (cargo.error || cargo.status !== 0) {
  console.log('@shmring/shm-sys: cargo not found on PATH; the Rust addon is not built (shmring uses its koffi backend)');
  process.exit(0);
}
const build = spawnSync('napi', ['build', '--platform', '--release'], { stdio: 'inherit', shell: true });
process.exit(build.status ?? 1);
