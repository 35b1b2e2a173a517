#!/usr/bin/env node
// shmring-bridge <from> <to>: the compiled bridge CLI (built by `pnpm build`).
import { main } from '../dist/src/bridge/cli.js';

process.exitCode = await main(process.argv.slice(2));
