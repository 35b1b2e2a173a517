#!/usr/bin/env node
// The shmring command: the compiled CLI (built by `pnpm build`).
import '../dist/src/cli.js';
