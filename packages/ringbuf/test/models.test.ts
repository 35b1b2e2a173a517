/**
 * The Promela models of models/ (SpscRing publication, the waiting
 * protocol, MpmcQueue, LatestValue, Broadcast and the repair of a record its
 * dead publisher left half-written, Broadcast slots, MpscRing), checked by
 * spin through models/check.sh: each model
 * must verify with no error and each of its mutants (one ordering swapped)
 * must be rejected, so the check is known to be able to fail. Skipped, with
 * the reason printed, where spin or a C compiler is missing (CI installs
 * spin: .ci/run).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const CHECK = fileURLToPath(new URL('../../../../models/check.sh', import.meta.url));
/** A model's search with its mutants; generous, for a loaded two-core machine. */
const MODEL_TIMEOUT_MS = 300_000;

/** Runs check.sh for one model; resolves with its exit status and output. */
function check(model: string): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [CHECK, model], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, output }));
  });
}

function missing(command: string, args: string[]): string | undefined {
  const probe = spawnSync(command, args, { stdio: 'ignore' });
  if (probe.error) return `\`${command} ${args.join(' ')}\` failed with ${(probe.error as NodeJS.ErrnoException).code}`;
  return undefined;
}

describe('models: the ring protocols model-checked with spin', function () {
  this.timeout(MODEL_TIMEOUT_MS);

  before(function () {
    const reason = missing('spin', ['-V']) ?? missing('cc', ['--version']);
    if (reason !== undefined) {
      console.log(`      (skipped: spin and a C compiler are needed: ${reason}; apt-get install spin)`);
      this.skip();
    }
  });

  async function verifies(model: string): Promise<void> {
    const { status, output } = await check(model);
    assert.equal(status, 0, `models/check.sh ${model}:\n${output}`);
    assert.match(output, /^ok /m, `models/check.sh ${model} ran no check:\n${output}`);
  }

  it('SpscRing delivers every message once and in order, never a torn record, never overwriting an unread one (and spin rejects each swapped ordering)', async () => {
    await verifies('spsc');
  });

  it('a reader or writer parked on the wait protocol is always woken by the publication it waits for, also across close (and spin rejects each swapped ordering)', async () => {
    await verifies('waiting');
  });

  it('MpmcQueue with three producers and two consumers delivers every message exactly once, in order per producer (and spin rejects each swapped ordering)', async () => {
    await verifies('mpmc');
  });

  it('LatestValue never shows a torn value or an older version, survives a writer dying mid-publish, and wakes every parked reader (and spin rejects each mutant)', async () => {
    await verifies('latest');
  });

  it('Broadcast never hands out a torn record, counts received + lost exactly, and never laps a lossless subscriber (and spin rejects each swapped ordering)', async () => {
    await verifies('broadcast');
  });

  it('Broadcast survives its publisher dying after any store of a record, and a second death inside the repair: nothing torn, received + lost exact, no deadlock (and spin rejects each mutant)', async () => {
    await verifies('broadcast-repair');
  });

  it('a Broadcast sweep without a file never frees the slot of a live subscriber caught between its claim and its pid words (and spin rejects the claim as it was)', async () => {
    await verifies('broadcast-slots');
  });

  it('MpscRing with three producers delivers every message exactly once, complete and in order per producer (and spin rejects each swapped ordering)', async () => {
    await verifies('mpsc');
  });

  it('a parked MpscRing consumer is woken by every commit of producers that leave their fence to its membarrier (and spin rejects each mutant)', async () => {
    await verifies('light-commit');
  });
});
