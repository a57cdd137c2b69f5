'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { setTimeout: sleep } = require('node:timers/promises');
const { freshBus, uuid, cbus } = require('./helpers.cjs');
const { Producer, Consumer } = cbus;

test('the async iterator yields events emitted later, and ends when the consumer closes', async () => {
  const bus = freshBus();
  const c = new Consumer(bus, { name: 'iter', mode: 'lossless' });
  const p = new Producer(bus);
  const run = uuid();
  const emitter = (async () => {
    await sleep(50); // the iterator is asleep in wait() by now
    p.llmStart(run, null, 'p', { model: 'gpt-4o' });
    for (let i = 0; i < 100; i++) p.llmNewToken(run, `t${i}`);
    p.llmEnd(run, 'done', { outputTokens: 100 });
  })();
  const seen = [];
  for await (const ev of c) {
    seen.push(ev);
    if (ev.kind === 'llm_end') c.close();
  }
  await emitter;
  assert.equal(seen.length, 102);
  assert.deepEqual(seen.filter((e) => e.kind === 'llm_new_token').map((e) => e.tokenIndex),
    Array.from({ length: 100 }, (_, i) => i));
  assert.equal(c.closed(), true);
  p.close();
});

test('an idle iterator costs the main thread no CPU: the wait sleeps on the pool (futex)', async () => {
  const bus = freshBus();
  const c = new Consumer(bus, { name: 'idle' });
  const ac = new AbortController();
  const cpu0 = process.cpuUsage();
  const it = (async () => { for await (const ev of c.events({ sliceMs: 100, signal: ac.signal })) void ev; })();
  await sleep(1000);
  ac.abort();
  await it;
  const used = process.cpuUsage(cpu0);
  // A busy-polling loop would burn about the whole second; sleeping costs a few ms.
  assert.ok(used.user + used.system < 200e3, `CPU ${(used.user + used.system) / 1e3} ms while idle for 1 s`);
  c.close();
});

test('lossless: a committed consumer is what producers may overwrite; stats are exact', async () => {
  const bus = freshBus({ capacity: 1024 });
  const c = new Consumer(bus, { name: 'll', mode: 'lossless', batch: 64 });
  const p = new Producer(bus);
  const run = uuid();
  let got = 0;
  for (let round = 0; round < 10; round++) {
    for (let i = 0; i < 500; i++) assert.equal(p.llmNewToken(run, 'x'), 0);
    for (let b = c.poll(); b.length; b = c.poll()) got += b.length;
    c.commit();
  }
  assert.equal(got, 5000);
  const st = c.stats();
  assert.equal(st.consumed, 5000);
  assert.equal(st.lost, 0);
  assert.equal(st.tethered, true);
  assert.equal(p.stats().dropped, 0);
  p.close();
  c.close();
});

test('poll while a wait is in flight is refused, and close during a wait detaches after it', async () => {
  const bus = freshBus();
  const c = new Consumer(bus, { name: 'busy' });
  const w = c.wait(200);
  assert.throws(() => c.poll(), /waiting/);
  c.close();
  assert.equal(c.closed(), true);
  assert.equal(await w, false);
  assert.equal(cbus.busInfo(bus).consumers.length, 0);
  const again = new Consumer(bus, { name: 'busy' }); // the name is free again
  again.close();
});
