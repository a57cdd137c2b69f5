'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { once } = require('node:events');
const { Worker } = require('node:worker_threads');
const { freshBus, mappings, drain, cbus } = require('./helpers.cjs');
const { Producer, Consumer } = cbus;

const script = path.join(__dirname, 'fixtures', 'emit-worker.cjs');

async function runWorker(bus, id, events, close = false) {
  const w = new Worker(script, { workerData: { bus, id, events, close } });
  const [msg] = await once(w, 'message');
  await w.terminate();
  return msg;
}

test('4 worker threads at once share the process\'s producer and lose nothing', async () => {
  const bus = freshBus({ capacity: 16384, lanes: 4 });
  const c = new Consumer(bus, { name: 'w4', mode: 'lossless' });
  const main = new Producer(bus);
  const workers = [0, 1, 2, 3].map((id) => new Worker(script, { workerData: { bus, id, events: 2000 } }));
  const seenInfo = [];
  const got = [];
  await Promise.all(workers.map(async (w) => {
    await once(w, 'message');
    seenInfo.push(cbus.busInfo(bus).producers.length);
  }));
  for (let b = drain(c); b.length; b = drain(c)) got.push(...b);
  await Promise.all(workers.map((w) => w.terminate()));
  assert.deepEqual(seenInfo, [1, 1, 1, 1], 'one producer table entry for the process');
  assert.equal(got.length, 8000);
  const per = {};
  for (const e of got) per[e.user] = (per[e.user] ?? 0) + 1;
  assert.deepEqual(per, { w0: 2000, w1: 2000, w2: 2000, w3: 2000 });
  assert.equal(new Set(got.map((e) => e.tid)).size, 4, 'four threads');
  assert.equal(main.stats().emitted, 8000, 'every worker\'s counts flushed at its exit');
  assert.equal(main.stats().dropped, 0);
  main.close();
  c.close();
});

test('100 workers started and terminated leave the producer table and mappings where they were', async () => {
  const bus = freshBus();
  const c = new Consumer(bus, { name: 'w100' }); // maps the segment once, for itself
  const before = { producers: cbus.busInfo(bus).producers.length, maps: mappings(bus) };
  assert.deepEqual(before, { producers: 0, maps: 1 });
  let emitted = 0;
  for (let batch = 0; batch < 10; batch++) {
    const msgs = await Promise.all(Array.from({ length: 10 }, (_, i) => runWorker(bus, batch * 10 + i, 100)));
    for (const m of msgs) emitted += m.emitted;
    drain(c);
  }
  assert.equal(emitted, 10000);
  assert.equal(cbus.busInfo(bus).producers.length, before.producers, 'no producer entry left behind');
  assert.equal(mappings(bus), before.maps, 'no mapping left behind');
  assert.equal(cbus.sharedProducers().filter((s) => s.bus === bus).length, 0);
  assert.equal(c.stats().consumed, 10000);
  assert.equal(c.stats().lost, 0);
  c.close();
});

test('counts below the flush threshold reach a producer the main thread keeps, from 100 terminated workers', async () => {
  const bus = freshBus();
  const main = new Producer(bus);
  for (let batch = 0; batch < 10; batch++) {
    await Promise.all(Array.from({ length: 10 }, (_, i) => runWorker(bus, batch * 10 + i, 100, i % 2 === 0)));
  }
  const st = main.stats();
  assert.equal(st.emitted, 10000, '100 events each, under the 256 a thread keeps before it flushes');
  assert.equal(cbus.busInfo(bus).producers.length, 1);
  assert.equal(cbus.busInfo(bus).producers[0].emitted, 10000);
  assert.deepEqual(cbus.sharedProducers().filter((s) => s.bus === bus).map((s) => s.refs), [1]);
  main.close();
  assert.equal(cbus.busInfo(bus).producers.length, 0);
  assert.equal(mappings(bus), 0);
});
