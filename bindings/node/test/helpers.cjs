'use strict';
// Shared by the tests: a fresh bus per test file, removed at the end.
const fs = require('node:fs');
const { after } = require('node:test');
const cbus = require('..');

let seq = 0;
function freshBus(opts = { capacity: 16384 }) {
  const name = `nodet${process.pid}x${seq++}`;
  cbus.destroyBus(name);
  cbus.createBus(name, opts);
  after(() => cbus.destroyBus(name));
  return name;
}

// Lines of /proc/self/maps that map this bus's segment.
function mappings(bus) {
  return fs.readFileSync('/proc/self/maps', 'utf8').split('\n')
    .filter((l) => l.endsWith(`/dev/shm/cbus.${bus}`) || l.includes(`/dev/shm/cbus.${bus} `)).length;
}

// Everything a consumer has now (it was attached before the events).
function drain(consumer) {
  const out = [];
  for (let b = consumer.poll(); b.length; b = consumer.poll()) out.push(...b);
  return out;
}

// LangChain-style run ids.
const { randomUUID } = require('node:crypto');
const uuid = () => randomUUID();

module.exports = { freshBus, mappings, drain, uuid, cbus };
