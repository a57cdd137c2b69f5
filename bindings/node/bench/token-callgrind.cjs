#!/usr/bin/env node
// Instructions (and simulated cache misses) per handleLLMNewToken, counted by
// callgrind: repeatable where bench/token.cjs's nanoseconds are not (a shared
// machine).  Each handler and route runs in its own process under valgrind
// with V8 made deterministic (--single-threaded --predictable, a fixed 1 MiB
// semi-space, so scavenges follow allocation), once with W + N1 and once with
// W + N2 tokens; the difference over N2 - N1 is the cost of one token with
// start-up, compilation and warm-up cancelled out.
//   node bench/token-callgrind.cjs [--n1 20000] [--n2 60000] [--warm 20000] [--cache]
// --cache adds callgrind's cache simulation (L1 instruction and data misses:
// the host's cache sizes as valgrind reads them).  Needs valgrind (apt).
'use strict';
const { spawnSync } = require('node:child_process');

const argv = process.argv;
const arg = (k, d) => { const i = argv.indexOf(k); return i > 0 ? argv[i + 1] : d; };

if (argv[2] === '--child') {
  // node token-callgrind.cjs --child noop|cbus direct|manager W N
  const [, , , mode, route, W, N] = argv;
  const cbus = require('..');
  const { CbusCallbackHandler } = require('../lib/langchain.cjs');
  const { BaseCallbackHandler } = require('@langchain/core/callbacks/base');
  const { CallbackManager } = require('@langchain/core/callbacks/manager');
  const bus = `nodecg${process.pid}`;
  cbus.destroyBus(bus);
  cbus.createBus(bus, { capacity: 65536 });
  process.on('exit', () => cbus.destroyBus(bus));
  class Noop extends BaseCallbackHandler {
    name = 'noop';
    constructor() { super({ _awaitHandler: true }); this.awaitHandlers = true; }
    handleLLMNewToken() {}
  }
  const h = mode === 'noop' ? new Noop() : new CbusCallbackHandler({ bus });
  const runId = require('node:crypto').randomUUID();
  const total = Number(W) + Number(N);
  (async () => {
    if (route === 'manager') {
      const mgr = new CallbackManager(undefined, { handlers: [h] });
      const [rm] = await mgr.handleLLMStart({ lc: 1, type: 'not_implemented', id: ['bench'] }, ['p'], runId);
      for (let i = 0; i < total; i++) await rm.handleLLMNewToken('tok');
    } else {
      h.handleLLMStart?.({}, ['p'], runId, undefined, {}, [], {});
      const idx = { prompt: 0, completion: 0 };
      for (let i = 0; i < total; i++) h.handleLLMNewToken('tok', idx, runId);
    }
    if (h.close) h.close();
  })();
} else {
  const N1 = Number(arg('--n1', 20000));
  const N2 = Number(arg('--n2', 60000));
  const W = Number(arg('--warm', 20000));
  const cache = argv.includes('--cache');
  const events = cache ? ['Ir', 'I1mr', 'D1mr', 'D1mw'] : ['Ir'];
  const vg = spawnSync('valgrind', ['--version'], { encoding: 'utf8' });
  if (vg.error) {
    console.error('token-callgrind: valgrind not found (apt-get install valgrind)');
    process.exit(77);
  }
  const count = (mode, route, n) => {
    const r = spawnSync('valgrind', ['--tool=callgrind', '--callgrind-out-file=/dev/null',
      ...(cache ? ['--cache-sim=yes'] : []), process.execPath, '--single-threaded', '--predictable',
      '--min-semi-space-size=1', '--max-semi-space-size=1', __filename, '--child', mode, route, String(W), String(n)],
    { encoding: 'utf8' });
    const m = /Collected : ([\d ]+)/.exec(r.stderr);
    if (r.status !== 0 || !m) throw new Error(`valgrind ${mode} ${route}: exit ${r.status}\n${r.stderr.slice(-2000)}`);
    return m[1].trim().split(/\s+/).map(Number); // Ir Dr Dw I1mr D1mr D1mw ... with --cache-sim
  };
  const pick = (v) => (cache ? [v[0], v[3], v[4], v[5]] : [v[0]]);
  const per = {};
  for (const route of ['direct', 'manager']) {
    for (const mode of ['noop', 'cbus']) {
      const a = pick(count(mode, route, N1));
      const b = pick(count(mode, route, N2));
      per[`${mode} ${route}`] = b.map((x, i) => (x - a[i]) / (N2 - N1));
    }
  }
  const f = (x) => (Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(1));
  console.log(`per handleLLMNewToken (callgrind, ${N2 - N1} tokens after ${W + N1}; node ${process.version}): ${events.join(', ')}`);
  for (const [k, v] of Object.entries(per)) console.log(`  ${k.padEnd(14)} ${v.map(f).join('  ')}`);
  for (const route of ['direct', 'manager']) {
    const d = per[`cbus ${route}`].map((x, i) => x - per[`noop ${route}`][i]);
    console.log(`  cbus - no-op, ${route}: ${d.map(f).join('  ')}`);
  }
  console.log(JSON.stringify(per));
}
