import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

function runMain(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

describe('examples/rpc', () => {
  it('prices every order across two processes, reports throughput and latency, and leaves nothing behind', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmring-rpc-test-'));
    const socketPath = path.join(dir, 'pricing.sock');
    const shmBefore = new Set(fs.readdirSync('/dev/shm'));
    try {
      const { code, out } = await runMain(['2000', socketPath]);
      assert.equal(code, 0, out);
      assert.match(out, /^pricing server: pid \d+, .*pricing\.sock$/m);
      // Orders 99, 199, ... ask for an unknown SKU: 20 of 2000.
      assert.match(out, /^client: 2,000 requests, 64 in flight: 1,980 priced, refused: 20 UNKNOWN_SKU, 0 wrong$/m);
      assert.match(out, /^throughput: [\d,]+ requests\/s \([\d,]+ ms\)$/m);
      assert.match(out, /^latency µs: p50 [\d,]+ {2}p90 [\d,]+ {2}p99 [\d,]+ {2}max [\d,]+$/m);
      assert.match(out, /^server: 1 client, 1980 orders priced, 20 refused$/m);
      assert.equal(fs.existsSync(socketPath), false, 'server.close() removes the socket path');
      const added = fs.readdirSync('/dev/shm').filter((name) => !shmBefore.has(name));
      assert.deepEqual(added, [], 'channels live in memfds: nothing new in /dev/shm');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
