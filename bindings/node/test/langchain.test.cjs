'use strict';
// CbusCallbackHandler against the real @langchain/core (devDependency, pinned).
const test = require('node:test');
const assert = require('node:assert/strict');
const { freshBus, drain, cbus } = require('./helpers.cjs');
const { CbusCallbackHandler } = require('cbus/langchain');
const { BaseChatModel } = require('@langchain/core/language_models/chat_models');
const { AIMessage, AIMessageChunk, HumanMessage, SystemMessage } = require('@langchain/core/messages');
const { ChatGenerationChunk } = require('@langchain/core/outputs');
const { RunnableSequence, RunnableLambda } = require('@langchain/core/runnables');
const { tool } = require('@langchain/core/tools');
const { FakeRetriever } = require('@langchain/core/utils/testing');
const { Document } = require('@langchain/core/documents');
const { z } = require('zod');

// A streaming chat model: the answer's words as chunks, usage on the last
// one (as OpenAI's stream_options.include_usage gives it).
class FakeStreamingUsageModel extends BaseChatModel {
  constructor(answer, usage) {
    super({});
    this.answer = answer;
    this.usage = usage ?? { input_tokens: 1200, output_tokens: 350, total_tokens: 1550,
      input_token_details: { cache_read: 1024 }, output_token_details: { reasoning: 100 } };
  }
  _llmType() { return 'fake-usage'; }
  invocationParams() { return { model: 'gpt-4o' }; }
  async *_streamResponseChunks(messages, options, runManager) {
    const words = this.answer.split(/(?= )/);
    for (let i = 0; i < words.length; i++) {
      const last = i === words.length - 1;
      const chunk = new ChatGenerationChunk({
        text: words[i],
        message: new AIMessageChunk({
          content: words[i],
          ...(last ? { usage_metadata: this.usage,
          response_metadata: { finish_reason: 'stop' } } : {}),
        }),
      });
      yield chunk;
      await runManager?.handleLLMNewToken(words[i], undefined, undefined, undefined, undefined, { chunk });
    }
  }
  async _generate(messages, options, runManager) {
    let final;
    for await (const c of this._streamResponseChunks(messages, options, runManager)) final = final ? final.concat(c) : c;
    return { generations: [final] };
  }
}

test('a streamed chat: tokens with their index, usage_metadata with cache reads and reasoning, run tree', async () => {
  const bus = freshBus();
  const c = new cbus.Consumer(bus, { name: 'lc1' });
  const h = new CbusCallbackHandler({ bus, userId: 'user:default/alice', sessionId: 'conv-1', modelId: 'gpt-4o', provider: 'openai' });
  const model = new FakeStreamingUsageModel('Tokyo is 東京 in Japanese');
  const chain = RunnableSequence.from([RunnableLambda.from((q) => [new HumanMessage(q)]), model]);
  const chunks = [];
  for await (const ch of await chain.stream('Say Tokyo', { callbacks: [h], tags: ['t1'], metadata: { app: 'demo' } })) chunks.push(ch.content);
  const evs = drain(c);
  const kinds = evs.map((e) => e.kind);
  assert.ok(kinds.includes('chain_start') && kinds.includes('chat_model_start') && kinds.includes('llm_end') && kinds.includes('chain_end'), kinds.join());
  const start = evs.find((e) => e.kind === 'chat_model_start');
  const seq = evs.find((e) => e.kind === 'chain_start' && !e.parentRunId);
  assert.equal(start.traceId, seq.traceId, 'one trace from the sequence down');
  assert.ok(start.parentRunId, 'the model run has a parent');
  assert.equal(start.user, 'user:default/alice');
  assert.equal(start.session, 'conv-1');
  assert.equal(start.model, 'gpt-4o');
  assert.equal(start.provider, 'openai');
  assert.equal(start.preview, 'Say Tokyo');
  assert.deepEqual(JSON.parse(start.body.messages), [{ role: 'user', parts: [{ type: 'text', content: 'Say Tokyo' }] }]);
  assert.deepEqual(seq.body.tags, ['t1']);
  assert.equal(seq.body.metadata.app, 'demo');
  const toks = evs.filter((e) => e.kind === 'llm_new_token');
  assert.deepEqual(toks.map((e) => e.preview), ['Tokyo', ' is', ' 東京', ' in', ' Japanese']);
  assert.deepEqual(toks.map((e) => e.tokenIndex), [0, 1, 2, 3, 4]);
  const end = evs.find((e) => e.kind === 'llm_end');
  assert.equal(end.runId, start.runId);
  assert.deepEqual({ i: end.usage.inputTokens, o: end.usage.outputTokens, cr: end.usage.cacheReadTokens, r: end.usage.reasoningTokens },
    { i: 1200, o: 350, cr: 1024, r: 100 });
  assert.equal(end.usage.finishReason, 'stop');
  assert.equal(h.producer.runs(), 0, 'every run LangChain opened was closed');
  // awaited inline: each event is stamped before the next callback ran
  for (let i = 1; i < evs.length; i++) assert.ok(evs[i].tsMonoNs >= evs[i - 1].tsMonoNs);
  h.close(); c.close();
});

// A chat model that takes system instructions apart from the history (an
// invocation parameter, as Anthropic's `system` or Gemini's
// `systemInstruction`), and answers with a provider's response id where
// LangChain's providers put it.
class FakeInstructedModel extends BaseChatModel {
  constructor(answers) {
    super({});
    this.answers = answers;
    this.i = 0;
  }
  _llmType() { return 'fake-instructed'; }
  invocationParams(options) {
    const o = { model: 'claude-x' };
    for (const k of ['system', 'systemInstruction']) if (options?.[k] !== undefined) o[k] = options[k];
    return o;
  }
  async _generate() {
    const a = this.answers[this.i++];
    return { generations: [{ text: a.text, message: new AIMessage({ content: a.text, ...a.message }), generationInfo: a.generationInfo }],
      llmOutput: a.llmOutput };
  }
}

test('system instructions and the provider\'s response id reach the bus, as the Python handler sends them', async (t) => {
  const bus = freshBus();
  const c = new cbus.Consumer(bus, { name: 'lcsys' });
  const h = new CbusCallbackHandler({ bus });
  const model = new FakeInstructedModel([
    { text: 'Rome.', message: { response_metadata: { id: 'chatcmpl-AbC123' } } },
    { text: 'Oslo.', message: { id: 'msg_01XFDUDYJgAACzvnptvVoYEL' } },
    { text: 'Bern.', message: { response_metadata: { id: 'not an id' } } },
    { text: 'Wien.', llmOutput: { id: 'resp_llm_output_1' } },
  ]);
  await model.invoke([new SystemMessage("history's own"), new HumanMessage('Capital of Italy?')],
    { callbacks: [h], system: 'You are a geography tutor.' });
  await model.invoke('Capital of Norway?', { callbacks: [h], systemInstruction: { parts: [{ text: 'Be brief.' }, { text: 'Answer in English.' }] } });
  await model.invoke('Capital of Switzerland?', { callbacks: [h] });
  await model.invoke('Capital of Austria?', { callbacks: [h], system: [{ type: 'text', text: 'One word.' }] });
  const evs = drain(c);
  const starts = evs.filter((e) => e.kind === 'chat_model_start');
  const ends = evs.filter((e) => e.kind === 'llm_end');
  assert.equal(starts.length, 4);
  assert.equal(ends.length, 4);
  assert.deepEqual(JSON.parse(starts[0].body.system), [{ type: 'text', content: 'You are a geography tutor.' }]);
  assert.deepEqual(JSON.parse(starts[0].body.messages).map((m) => m.role), ['system', 'user'], 'the history keeps its system message');
  assert.deepEqual(JSON.parse(starts[1].body.system), [{ type: 'text', content: 'Be brief.' }, { type: 'text', content: 'Answer in English.' }]);
  assert.equal(starts[2].body?.system, undefined);
  assert.deepEqual(JSON.parse(starts[3].body.system), [{ type: 'text', content: 'One word.' }]);
  assert.equal(ends[0].body.responseId, 'chatcmpl-AbC123');
  assert.equal(ends[0].preview, 'Rome.');
  assert.equal(ends[1].body.responseId, 'msg_01XFDUDYJgAACzvnptvVoYEL');
  assert.equal(ends[2].body?.responseId, undefined, 'not an id: the end still arrives, without one');
  assert.equal(ends[2].preview, 'Bern.');
  assert.equal(ends[3].body.responseId, 'resp_llm_output_1');
  // LangChain's own message ids (run-<uuid>) are not the provider's
  const lcIds = new FakeInstructedModel([{ text: 'x' }]);
  await lcIds.invoke('q', { callbacks: [h] });
  const last = drain(c).find((e) => e.kind === 'llm_end');
  assert.equal(last.body?.responseId, undefined);
  assert.equal(h.producer.runs(), 0);

  const ctl = cbusctlPath();
  if (ctl) { // what cbusctl tail --json --body (the C renderer) shows of them
    const { execFileSync } = require('node:child_process');
    const lines = execFileSync(ctl, ['tail', bus, '--json', '--body', '--oldest', '--count', String(evs.length)], { encoding: 'utf8', timeout: 20000 })
      .trim().split('\n').map((l) => JSON.parse(l));
    const cs = lines.filter((l) => l.kind === 'chat_model_start');
    assert.equal(cs[0].body.system, starts[0].body.system);
    assert.equal(lines.filter((l) => l.kind === 'llm_end')[0].body.response_id, 'chatcmpl-AbC123');
  } else if (process.env.CBUS_TEST_STRICT === '1') {
    assert.fail('cbusctl not built (set CBUS_BUILD_DIR)');
  } else {
    t.diagnostic('cbusctl not built: the C renderer not checked');
  }
  h.close(); c.close();
});

test('handleChainStart: the parent run id LangChain passes in 4th place is the parent (declared order differs)', async () => {
  const bus = freshBus();
  const c = new cbus.Consumer(bus, { name: 'lc2' });
  const h = new CbusCallbackHandler({ bus });
  const inner = RunnableLambda.from((x) => x + 1).withConfig({ runName: 'inner' });
  const outer = RunnableSequence.from([RunnableLambda.from((x) => x * 2).withConfig({ runName: 'double' }), inner]).withConfig({ runName: 'outer' });
  assert.equal(await outer.invoke(3, { callbacks: [h] }), 7);
  const starts = drain(c).filter((e) => e.kind === 'chain_start');
  const byName = Object.fromEntries(starts.map((e) => [e.name, e]));
  assert.deepEqual(Object.keys(byName).sort(), ['double', 'inner', 'outer']);
  assert.equal(byName.outer.parentRunId, undefined);
  assert.equal(byName.double.parentRunId, byName.outer.runId);
  assert.equal(byName.inner.parentRunId, byName.outer.runId);
  h.close(); c.close();
});

test('tool(), a retriever, errors with status; the handler never throws into the chain', async () => {
  const bus = freshBus();
  const c = new cbus.Consumer(bus, { name: 'lc3' });
  const h = new CbusCallbackHandler({ bus });
  const weather = tool(async ({ city }) => `18C in ${city}`, { name: 'weather', description: 'weather', schema: z.object({ city: z.string() }) });
  assert.equal(await weather.invoke({ city: 'Paris' }, { callbacks: [h] }), '18C in Paris');
  const retriever = new FakeRetriever({ output: [new Document({ pageContent: 'a', id: 'd1', metadata: { src: 'kb' } }),
    new Document({ pageContent: 'b' })] });
  assert.equal((await retriever.invoke('weather?', { callbacks: [h] })).length, 2);
  const failing = RunnableLambda.from(() => { const e = new Error('429 Too Many Requests'); e.status = 429; throw e; }).withConfig({ runName: 'fails' });
  await assert.rejects(failing.invoke(1, { callbacks: [h] }), /429/);
  const evs = drain(c);
  const by = (k) => evs.filter((e) => e.kind === k);
  assert.equal(by('tool_start')[0].name, 'weather');
  assert.equal(by('tool_start')[0].body?.text ?? by('tool_start')[0].preview, '{"city":"Paris"}');
  assert.equal(by('tool_end')[0].preview, '18C in Paris');
  assert.equal(by('retriever_start')[0].preview, 'weather?');
  assert.equal(by('retriever_end')[0].retriever.documentCount, 2);
  const re = by('retriever_end')[0];
  assert.deepEqual(JSON.parse(re.body?.text ?? re.preview),
    [{ id: 'd1', content: 'a', metadata: { src: 'kb' } }, { content: 'b' }], 'the documents, in the GenAI retrieval shape');
  assert.equal(by('chain_error')[0].preview, '429 Too Many Requests');
  assert.equal(h.producer.runs(), 0);
  // bad input from a chain never throws out of the handler
  h.handleLLMNewToken({ not: 'a string' }, {}, 42);
  h.handleLLMEnd(null, null);
  h.close(); c.close();
});

test('a missing bus: one warning, then a no-op handler', async () => {
  const warnings = [];
  const onWarn = (w) => { if (w.code === 'CBUS_NO_BUS') warnings.push(w); };
  process.on('warning', onWarn);
  const bus = `nodet${process.pid}missing`;
  const h1 = new CbusCallbackHandler({ bus });
  const h2 = new CbusCallbackHandler({ bus });
  const r = await RunnableLambda.from((x) => x + 1).invoke(1, { callbacks: [h1, h2] });
  await new Promise((res) => setImmediate(res));
  process.off('warning', onWarn);
  assert.equal(r, 2);
  assert.equal(h1.producer, null);
  assert.equal(warnings.length, 1);
});

// cbusctl from the project's build (scripts/test.sh passes CBUS_BUILD_DIR).
function cbusctlPath() {
  const fs = require('node:fs');
  const path = require('node:path');
  const root = path.resolve(__dirname, '..', '..', '..');
  const dirs = [process.env.CBUS_BUILD_DIR, path.join(root, 'build', 'release'), path.join(root, 'build', 'dev')];
  return dirs.filter(Boolean).map((d) => path.join(d, 'tools', 'cbusctl', 'cbusctl')).find((f) => fs.existsSync(f));
}

test('two conversations streamed at once stay apart; cbusctl tail --json sees the same events', async (t) => {
  const ctl = cbusctlPath();
  if (!ctl) {
    if (process.env.CBUS_TEST_STRICT === '1') assert.fail('cbusctl not built (set CBUS_BUILD_DIR)');
    t.skip('cbusctl not built');
    return;
  }
  const bus = freshBus();
  const c = new cbus.Consumer(bus, { name: 'lc4' });
  const conv = (session) => new CbusCallbackHandler({ bus, userId: `u-${session}`, sessionId: session, modelId: 'gpt-4o' });
  const ha = conv('conv-a'), hb = conv('conv-b');
  const model = new FakeStreamingUsageModel('one two three four five six');
  const run = async (h) => { for await (const ch of await model.stream('go', { callbacks: [h] })) void ch; };
  await Promise.all([run(ha), run(hb), run(ha)]);
  const evs = drain(c);
  const { execFileSync } = require('node:child_process');
  const lines = execFileSync(ctl, ['tail', bus, '--json', '--oldest', '--count', String(evs.length)], { encoding: 'utf8', timeout: 20000 })
    .trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, evs.length);
  assert.deepEqual(lines.map((l) => [l.kind, l.run_id, l.session]), evs.map((e) => [e.kind, e.runId, e.session]));
  const ends = evs.filter((e) => e.kind === 'llm_end');
  assert.deepEqual(ends.map((e) => e.session).sort(), ['conv-a', 'conv-a', 'conv-b']);
  for (const e of ends) assert.equal(e.usage.inputTokens, 1200);
  const runsBySession = {};
  for (const e of evs) (runsBySession[e.session] ??= new Set()).add(e.runId);
  assert.equal(runsBySession['conv-a'].size, 2);
  assert.equal(runsBySession['conv-b'].size, 1);
  for (const e of evs.filter((x) => x.kind === 'llm_new_token')) {
    const start = evs.find((x) => x.kind === 'chat_model_start' && x.runId === e.runId);
    assert.equal(start.session, e.session, 'each token carries its own conversation');
  }
  ha.close(); hb.close(); c.close();
});

test('cbus-cost totals equal the tokens LangChain reported, to the pico-dollar', async (t) => {
  const fs = require('node:fs');
  const os = require('node:os');
  const path = require('node:path');
  const { spawn } = require('node:child_process');
  const root = path.resolve(__dirname, '..', '..', '..');
  const bin = [process.env.CBUS_COST_BIN, process.env.CBUS_BUILD_DIR && path.join(process.env.CBUS_BUILD_DIR, 'consumers', 'cost', 'cbus-cost'),
    path.join(root, 'build', 'release', 'consumers', 'cost', 'cbus-cost'), path.join(root, 'build', 'dev', 'consumers', 'cost', 'cbus-cost')]
    .find((f) => f && fs.existsSync(f));
  if (!bin) {
    if (process.env.CBUS_TEST_STRICT === '1') assert.fail('cbus-cost not built (set CBUS_COST_BIN or CBUS_BUILD_DIR)');
    t.skip('cbus-cost not built');
    return;
  }
  const bus = freshBus();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cbus-node-cost-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const prices = path.join(root, 'consumers', 'cost', 'model_prices_and_context_window.json');
  fs.writeFileSync(path.join(dir, 'c.ini'), `[prices]\nfile = ${prices}\n[state]\nsnapshot_interval = 20ms\nfsync = false\n`);
  const state = path.join(dir, 'state');
  const log = fs.openSync(path.join(dir, 'log'), 'w');
  const daemon = spawn(bin, ['--bus', bus, '--config', path.join(dir, 'c.ini'), '--state-dir', state], { stdio: ['ignore', log, log] });
  let exited = false;
  daemon.on('exit', () => { exited = true; });
  try {
    // the daemon attaches losslessly at its start: wait for its consumer entry
    for (let i = 0; i < 400 && !cbus.busInfo(bus).consumers.length; i++) await new Promise((r) => setTimeout(r, 25));
    const h = new CbusCallbackHandler({ bus, provider: 'openai', userId: 'u-cost' });
    const n = 40;
    let inp = 0, out = 0, cache = 0;
    for (let i = 0; i < n; i++) {
      const u = { input_tokens: 100 + 7 * i, output_tokens: 20 + i, total_tokens: 120 + 8 * i, input_token_details: { cache_read: i % 5 } };
      inp += u.input_tokens; out += u.output_tokens; cache += u.input_token_details.cache_read;
      await new FakeStreamingUsageModel(`answer ${i}`, u).invoke('q', { callbacks: [h] });
    }
    h.close();
    let total = null;
    for (let i = 0; i < 600; i++) {
      try {
        total = JSON.parse(fs.readFileSync(path.join(state, 'snapshot.json'), 'utf8')).total;
        if (total.requests >= n) break;
      } catch { /* not written yet */ }
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(exited, false, fs.readFileSync(path.join(dir, 'log'), 'utf8'));
    assert.equal(total?.requests, n);
    assert.equal(total.tokens.input, inp);
    assert.equal(total.tokens.output, out);
    assert.equal(total.tokens.cache_read, cache);
    assert.equal(total.tokens.reasoning, null, 'never reported: absent, not 0');
    // gpt-4o in the LiteLLM table: 2,500,000 / 1,250,000 / 10,000,000 pico-dollars per
    // input / cache-read / output token (input counts include the cache reads)
    const pico = (inp - cache) * 2500000 + cache * 1250000 + out * 10000000;
    assert.equal(Math.round(Number(total.cost_usd) * 1e12), pico);
  } finally {
    daemon.kill('SIGTERM');
    if (!exited) await new Promise((r) => daemon.once('exit', r));
    fs.closeSync(log);
  }
});

test('an agent loop through the real callback manager: actions, tool runs and model runs under one agent run', async () => {
  const { CallbackManager } = require('@langchain/core/callbacks/manager');
  const bus = freshBus();
  const c = new cbus.Consumer(bus, { name: 'lc6' });
  const h = new CbusCallbackHandler({ bus, userId: 'u-agent', agent: 'weather-agent' });
  const weather = tool(async ({ city }) => `18C in ${city}`, { name: 'weather', description: 'weather', schema: z.object({ city: z.string() }) });
  const model = new FakeStreamingUsageModel('thinking');
  // What AgentExecutor does: one chain run for the agent, each step a model
  // call and a tool call as its children, agent action and finish on the run.
  const mgr = CallbackManager.configure([h]);
  const agentRun = await mgr.handleChainStart({ lc: 1, type: 'not_implemented', id: ['AgentExecutor'] }, { input: 'weather?' },
    undefined, undefined, undefined, undefined, 'AgentExecutor');
  for (const city of ['Paris', 'Tokyo']) {
    await model.invoke(`plan ${city}`, { callbacks: agentRun.getChild() });
    await agentRun.handleAgentAction({ tool: 'weather', toolInput: { city }, log: '' });
    await weather.invoke({ city }, { callbacks: agentRun.getChild() });
  }
  await agentRun.handleAgentEnd({ returnValues: { output: 'Paris 18C, Tokyo 18C' }, log: '' });
  await agentRun.handleChainEnd({ output: 'Paris 18C, Tokyo 18C' });
  const evs = drain(c);
  const agent = evs.find((e) => e.kind === 'chain_start');
  assert.equal(agent.name, 'AgentExecutor');
  const inAgent = evs.filter((e) => e.kind !== 'chain_start' && e.kind !== 'chain_end' && e.kind !== 'agent_action' && e.kind !== 'agent_finish' && e.parentRunId === agent.runId);
  assert.deepEqual(inAgent.filter((e) => e.kind.endsWith('_start')).map((e) => e.kind),
    ['chat_model_start', 'tool_start', 'chat_model_start', 'tool_start']);
  const actions = evs.filter((e) => e.kind === 'agent_action');
  assert.deepEqual(actions.map((e) => [e.runId, e.name, e.preview]), [[agent.runId, 'weather', '{"city":"Paris"}'], [agent.runId, 'weather', '{"city":"Tokyo"}']]);
  const fin = evs.find((e) => e.kind === 'agent_finish');
  assert.equal(fin.runId, agent.runId);
  assert.equal(fin.preview, 'Paris 18C, Tokyo 18C');
  for (const e of evs) {
    assert.equal(e.traceId, agent.traceId, `${e.kind} in the agent's trace`);
    assert.equal(e.agent, 'weather-agent');
  }
  assert.equal(h.producer.runs(), 0);
  h.close(); c.close();
});

test('the token fast path: a run id started again, a token before its start, runs interleaved', () => {
  const bus = freshBus();
  const c = new cbus.Consumer(bus, { name: 'fast' });
  const h = new CbusCallbackHandler({ bus });
  const a = 'aaaaaaaa-0000-4000-8000-000000000001', b = 'bbbbbbbb-0000-4000-8000-000000000002';
  h.handleLLMNewToken('early', undefined, a); // no run yet: goes by run id
  h.handleLLMStart({}, ['p'], a, undefined, undefined, undefined, { userId: 'first' });
  h.handleLLMNewToken('t1', undefined, a);
  h.handleLLMStart({}, ['p'], b, undefined, undefined, undefined, { userId: 'other' });
  h.handleLLMNewToken('u1', undefined, b);
  h.handleLLMNewToken('t2', undefined, a);
  h.handleLLMEnd({ generations: [] }, a);
  h.handleLLMStart({}, ['p'], a, undefined, undefined, undefined, { userId: 'second' }); // same id again
  h.handleLLMNewToken('t3', undefined, a);
  h.handleLLMNewToken('u2', undefined, b);
  const evs = drain(c).filter((e) => e.kind === 'llm_new_token');
  assert.deepEqual(evs.map((e) => [e.preview, e.runId, e.user ?? null]),
    [['early', a, null], ['t1', a, 'first'], ['u1', b, 'other'], ['t2', a, 'first'], ['t3', a, 'second'], ['u2', b, 'other']]);
  h.producer.close(); c.close();
});
