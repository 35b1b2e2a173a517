/**
 * The child processes of the bridge section (bridge.ts). argv[2] is the
 * role, argv[3] a JSON object of options; each prints `ready` once it can
 * be measured.
 *
 *   bridge    bridge(from, to) from @shmring/channel, as `shmring bridge` runs it;
 *             SIGTERM aborts it and the process ends normally (so that
 *             SHMRING_BRIDGE_NODE_ARGS='--cpu-prof …' writes its profile).
 *   publish   (child_process.fork) the baseline: the nats client alone publishing
 *             one message of `size` bytes from memory, again and again, with the
 *             bridge's header (`Shmring-Type`, one headers object reused), in
 *             batches of `batch` publishes followed by one flush, as the bridge
 *             does. 'run' starts the loop, 'stop' stops it and is answered with
 *             { published }; 'exit' closes the connection and ends the process.
 */
import { randomFillSync } from 'node:crypto';
import { bridge } from '@shmring/channel';
import { connect, headers } from 'nats';
import { exitWithParent } from './harness.js';

const role = process.argv[2];
const options = JSON.parse(process.argv[3] ?? '{}') as { from?: string; to?: string; server?: string; subject?: string; size?: number; batch?: number };

function ready(): void {
  process.stdout.write('ready\n');
}

async function runBridge(): Promise<void> {
  const stop = new AbortController();
  process.once('SIGTERM', () => stop.abort());
  await bridge(options.from!, options.to!, { signal: stop.signal, onReady: ready });
}

async function publisher(): Promise<void> {
  const nc = await connect({ servers: options.server!, name: 'shmring bench baseline publisher' });
  const payload = randomFillSync(new Uint8Array(options.size!));
  const h = headers();
  h.set('Shmring-Type', '1');
  const batch = options.batch!;
  let running = false;
  let published = 0;
  let loop: Promise<void> = Promise.resolve();
  const run = async (): Promise<void> => {
    while (running) {
      for (let i = 0; i < batch; i++) nc.publish(options.subject!, payload, { headers: h });
      published += batch;
      await nc.flush();
    }
  };
  process.on('message', (m: string) => {
    if (m === 'run' && !running) {
      running = true;
      loop = run();
    } else if (m === 'stop') {
      running = false;
      void loop.then(() => process.send!({ published }));
    } else if (m === 'exit') {
      running = false;
      void loop.then(() => nc.close()).then(() => process.exit(0));
    }
  });
  ready();
}

exitWithParent();
switch (role) {
  case 'bridge': await runBridge(); break;
  case 'publish': await publisher(); break;
  default: throw new Error(`bridge-peer: unknown role ${role}`);
}
