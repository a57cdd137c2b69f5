// The ESM entry gives the same objects as the CommonJS one.
import test from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { randomUUID } from 'node:crypto';
import cbusDefault, { Producer, Consumer, createBus, destroyBus, version } from 'cbus';

const require = createRequire(import.meta.url);

test('ESM and CommonJS entries are one module; a round trip works from ESM', () => {
  assert.equal(require('cbus').Producer, Producer);
  assert.equal(cbusDefault.Consumer, Consumer);
  assert.match(version(), /^\d+\.\d+\.\d+$/);
  const bus = `nodet${process.pid}esm`;
  destroyBus(bus);
  createBus(bus);
  try {
    const c = new Consumer(bus, { name: 'esm' });
    const p = new Producer(bus);
    const run = randomUUID();
    p.llmStart(run, null, '東京', {});
    const [ev] = c.poll();
    assert.equal(ev.runId, run);
    assert.equal(ev.preview, '東京');
    p.close();
    c.close();
  } finally {
    destroyBus(bus);
  }
});
