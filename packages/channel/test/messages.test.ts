/**
 * A messages() iterator given up while a next() of it is pending (return(),
 * which a for await's break calls, or throw()): that next() resolves with
 * done, it takes no value (the next one goes to whoever still waits, in
 * order), and the channel no longer keeps the process alive for it.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { endsPerTest, settledWithin, transports, transportTitle } from './helpers.js';

const DONE = { value: undefined, done: true };

describe('messages() iterators given up with a next() pending', function () {
  this.timeout(30_000);

  for (const transport of transports()) {
    describe(`over a ${transportTitle(transport)}`, function () {
      const ends = endsPerTest(transport, { capacity: 4096 });

      // Regression: return() left that next() waiting, and it took the next value, which receive() then missed.
      it('return() resolves the pending next() with done; the next value goes to receive(), not to the abandoned iterator', async function () {
        const it = ends.b.messages();
        const pending = it.next();
        assert.deepEqual(await it.return!(), DONE);
        await ends.a.send('A');
        assert.deepEqual(
          await settledWithin(ends.b.receive(), 1000),
          { status: 'fulfilled', value: 'A' },
          'receive() did not get the value',
        );
        assert.deepEqual(await pending, DONE);
        assert.deepEqual(await it.next(), DONE);
      });

      it('throw() resolves every pending next() with done and rejects with what was thrown in; the next value goes to receive()', async function () {
        const it = ends.b.messages();
        const pending = [it.next(), it.next()];
        const thrown = new Error('stop');
        await assert.rejects(it.throw!(thrown), (err) => err === thrown);
        await ends.a.send('B');
        assert.deepEqual(
          await settledWithin(ends.b.receive(), 1000),
          { status: 'fulfilled', value: 'B' },
          'receive() did not get the value',
        );
        assert.deepEqual(await Promise.all(pending), [DONE, DONE]);
        assert.deepEqual(await it.next(), DONE);
      });

      it('the other waiters keep their order when an iterator between them is returned', async function () {
        const first = ends.b.messages();
        const second = ends.b.messages();
        const firstNext = first.next();
        const secondNext = second.next();
        const received = ends.b.receive();
        await first.return!();
        await ends.a.send('X');
        await ends.a.send('Y');
        assert.deepEqual(await secondNext, { value: 'X', done: false });
        assert.equal(await received, 'Y');
        assert.deepEqual(await firstNext, DONE);
        await second.return!();
      });
    });
  }

  // Regression: the abandoned next() still held the channel's link, so the process never exited.
  it('a process whose only waiter was the next() of an iterator it has returned since exits by itself', function () {
    const index = new URL('../src/index.js', import.meta.url).href;
    const script =
      `const { channelPair, openChannel } = await import(${JSON.stringify(index)});\n` +
      'const [a, handle] = channelPair({ capacity: 4096 });\n' +
      'const b = openChannel(handle);\n' +
      'const it = b.messages();\n' +
      'const pending = it.next();\n' +
      'await it.return();\n' +
      'console.log(JSON.stringify(await pending));\n';
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 5000 });
    assert.equal(child.error, undefined, `the child did not exit by itself within 5 s (${String(child.error)}); stdout: ${child.stdout}`);
    assert.equal(child.status, 0, `the child exited with ${child.status ?? child.signal}; stderr:\n${child.stderr}`);
    assert.deepEqual(JSON.parse(child.stdout.trim()), { done: true });
  });
});
