#!/usr/bin/env node
// ns per handleLLMNewToken (issue 17 item 4): the cbus handler against a no-op
// handler, called directly and through LangChain's callback manager; and the
// alternatives: JSON lines to an fs.WriteStream, and cbus through koffi
// against libcbus.so (six FFI calls per child run, as the earlier attempt did;
// one per token here).  Medians of --rounds rounds of --n calls.
//   node bench/token.cjs [--n 200000] [--rounds 7] [--capacity 65536] [--lib path/to/libcbus.so]
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { randomUUID } = require('node:crypto');
const cbus = require('..');
const { CbusCallbackHandler } = require('../lib/langchain.cjs');
const { BaseCallbackHandler } = require('@langchain/core/callbacks/base');
const { CallbackManager } = require('@langchain/core/callbacks/manager');

const arg = (k, d) => { const i = process.argv.indexOf(k); return i > 0 ? process.argv[i + 1] : d; };
const N = Number(arg('--n', 200000));
const ROUNDS = Number(arg('--rounds', 7));
const CAPACITY = Number(arg('--capacity', 65536)); // slots of 512 bytes: 65536 is a 32 MiB ring, the size of this VM's L3
const lib = arg('--lib', path.resolve(__dirname, '..', '..', '..', 'build', 'dev', 'libcbus.so'));

const bus = `nodebench${process.pid}`;
cbus.destroyBus(bus);
cbus.createBus(bus, { capacity: CAPACITY });
process.on('exit', () => cbus.destroyBus(bus));

class Noop extends BaseCallbackHandler {
  name = 'noop';
  constructor() { super({ _awaitHandler: true }); this.awaitHandlers = true; }
  handleLLMNewToken() {}
}

class JsonLines extends BaseCallbackHandler {
  name = 'jsonl';
  constructor(file) { super({ _awaitHandler: true }); this.awaitHandlers = true; this.out = fs.createWriteStream(file); }
  handleLLMNewToken(token, idx, runId) {
    this.out.write(JSON.stringify({ kind: 'llm_new_token', ts: Date.now(), runId, index: idx?.completion ?? 0, token }) + '\n');
  }
}

const median = (xs) => xs.slice().sort((a, b) => a - b)[xs.length >> 1];

function timeDirect(h, runId) {
  const idx = { prompt: 0, completion: 0 };
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) h.handleLLMNewToken('tok', idx, runId);
  return Number(process.hrtime.bigint() - t0) / N;
}

async function timeManager(h, runId) {
  const mgr = new CallbackManager(undefined, { handlers: [h] });
  const [rm] = await mgr.handleLLMStart({ lc: 1, type: 'not_implemented', id: ['bench'] }, ['p'], runId);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) await rm.handleLLMNewToken('tok');
  const ns = Number(process.hrtime.bigint() - t0) / N;
  await rm.handleLLMEnd({ generations: [] });
  return ns;
}

function koffiRoute() {
  if (!fs.existsSync(lib)) return null;
  const koffi = require('koffi');
  const so = koffi.load(lib);
  const open = so.func('int cbus_producer_open(_Out_ void **out, const char *name, void *opts)');
  const ctxNew = so.func('void *cbus_ctx_new()');
  const token = so.func('int cbus_llm_new_token(void *p, void *ctx, const char *chunk, size_t len)');
  const out = [null];
  if (open(out, bus, null)) return null;
  const p = out[0];
  // The koffi route as a handler: run contexts in a JS Map, byte lengths from
  // Buffer.byteLength (a UTF-16 .length would cut multi-byte characters).
  class KoffiHandler extends BaseCallbackHandler {
    name = 'koffi';
    constructor() { super({ _awaitHandler: true }); this.awaitHandlers = true; this.runs = new Map(); }
    handleLLMStart(llm, prompts, runId) { this.runs.set(runId, ctxNew()); }
    handleLLMNewToken(t, idx, runId) {
      const ctx = this.runs.get(runId);
      if (ctx) token(p, ctx, t, Buffer.byteLength(t));
    }
  }
  return new KoffiHandler();
}

(async () => {
  const noop = new Noop();
  const handler = new CbusCallbackHandler({ bus });
  const jsonl = new JsonLines(path.join(os.tmpdir(), `cbus-bench-${process.pid}.jsonl`));
  const runId = randomUUID();
  handler.handleLLMStart({}, ['p'], runId, undefined, {}, [], {});
  const k = koffiRoute();
  if (k) k.handleLLMStart({}, ['p'], runId);
  const rows = { noopDirect: [], cbusDirect: [], jsonlDirect: [], koffiDirect: [], noopMgr: [], cbusMgr: [], jsonlMgr: [], koffiMgr: [] };
  for (let r = 0; r < ROUNDS; r++) {
    rows.noopDirect.push(timeDirect(noop, runId));
    rows.cbusDirect.push(timeDirect(handler, runId));
    rows.jsonlDirect.push(timeDirect(jsonl, runId));
    if (k) rows.koffiDirect.push(timeDirect(k, runId));
    if (k) rows.koffiMgr.push(await timeManager(k, randomUUID()));
    rows.noopMgr.push(await timeManager(noop, randomUUID()));
    rows.cbusMgr.push(await timeManager(handler, randomUUID()));
    rows.jsonlMgr.push(await timeManager(jsonl, randomUUID()));
    await new Promise((res) => jsonl.out.once('drain', res).write(''));
  }
  const m = Object.fromEntries(Object.entries(rows).filter(([, v]) => v.length).map(([kk, v]) => [kk, median(v)]));
  const f = (x) => x.toFixed(1);
  console.log(`ns per handleLLMNewToken, median of ${ROUNDS} rounds x ${N} calls (node ${process.version})`);
  console.log(`direct:  no-op ${f(m.noopDirect)}  cbus ${f(m.cbusDirect)} (+${f(m.cbusDirect - m.noopDirect)})  ` +
    `fs.WriteStream JSON lines ${f(m.jsonlDirect)} (+${f(m.jsonlDirect - m.noopDirect)})` +
    (m.koffiDirect ? `  koffi handler ${f(m.koffiDirect)} (+${f(m.koffiDirect - m.noopDirect)})` : '  koffi: no libcbus.so'));
  console.log(`manager: no-op ${f(m.noopMgr)}  cbus ${f(m.cbusMgr)} (+${f(m.cbusMgr - m.noopMgr)})  ` +
    `fs.WriteStream JSON lines ${f(m.jsonlMgr)} (+${f(m.jsonlMgr - m.noopMgr)})` +
    (m.koffiMgr ? `  koffi handler ${f(m.koffiMgr)} (+${f(m.koffiMgr - m.noopMgr)})` : ''));
  console.log(JSON.stringify(m));
  handler.close();
  jsonl.out.end();
  fs.rmSync(jsonl.out.path, { force: true });
})();
