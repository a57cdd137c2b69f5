'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { freshBus, mappings, drain, uuid, cbus } = require('./helpers.cjs');
const { Producer, Consumer } = cbus;

test('a run tree: children inherit keys, trace and tags; ids are the caller\'s', () => {
  const bus = freshBus();
  const c = new Consumer(bus, { name: 'tree' });
  const p = new Producer(bus);
  const chain = uuid(), llm = uuid(), tool = uuid();
  assert.equal(p.chainStart(chain, null, 'agent', '{"q":"weather"}',
    { user: 'alice', session: 's-1', agent: 'planner', tenant: 'team-a', tags: ['prod'], metadata: { ls_run: 'x' } }), 0);
  assert.equal(p.chatModelStart(llm, chain, 'what is the weather?',
    { provider: 'openai', model: 'gpt-4o', promptCount: 2, messages: '[{"role":"user","parts":[]}]' }), 0);
  assert.equal(p.llmNewToken(llm, 'It'), 0);
  assert.equal(p.llmNewToken(llm, ' rains'), 0);
  assert.equal(p.llmEnd(llm, 'It rains', { inputTokens: 1200, cacheReadTokens: 1024, outputTokens: 350, reasoningTokens: 100, finishReason: 'stop' }), 0);
  assert.equal(p.toolStart(tool, chain, 'web_search', '{"q":"Paris"}'), 0);
  assert.equal(p.toolEnd(tool, '{"temp_c":18}'), 0);
  assert.equal(p.agentAction(chain, 'web_search', '{"q":"Paris"}'), 0);
  assert.equal(p.agentFinish(chain, 'It rains in Paris'), 0);
  assert.equal(p.chainEnd(chain, '{"answer":"rain"}'), 0);
  assert.equal(p.runs(), 0, 'ends close their runs');
  const evs = drain(c);
  assert.deepEqual(evs.map((e) => e.kind), ['chain_start', 'chat_model_start', 'llm_new_token', 'llm_new_token',
    'llm_end', 'tool_start', 'tool_end', 'agent_action', 'agent_finish', 'chain_end']);
  const [cs, ms, t0, t1, end, ts] = evs;
  assert.equal(cs.runId, chain);
  assert.equal(cs.parentRunId, undefined);
  assert.equal(cs.name, 'agent');
  assert.deepEqual(cs.body.tags, ['prod']);
  assert.deepEqual(cs.body.metadata, { ls_run: 'x' });
  assert.equal(ms.runId, llm);
  assert.equal(ms.parentRunId, chain);
  assert.equal(ms.traceId, cs.traceId, 'one trace');
  assert.equal(ms.user, 'alice');
  assert.equal(ms.session, 's-1');
  assert.equal(ms.agent, 'planner');
  assert.equal(ms.tenant, 'team-a');
  assert.equal(ms.model, 'gpt-4o');
  assert.equal(ms.llmStart.promptCount, 2);
  assert.equal(ms.body.messages, '[{"role":"user","parts":[]}]');
  assert.deepEqual(ms.body.tags, ['prod'], 'tags inherited');
  assert.deepEqual([t0.tokenIndex, t1.tokenIndex], [0, 1]);
  assert.equal(t1.preview, ' rains');
  assert.deepEqual(end.usage.inputTokens, 1200);
  assert.equal(end.usage.cacheReadTokens, 1024);
  assert.equal(end.usage.outputTokens, 350);
  assert.equal(end.usage.reasoningTokens, 100);
  assert.equal(end.usage.cacheCreationTokens, undefined, 'absent stays absent');
  assert.equal(end.usage.finishReason, 'stop');
  assert.ok(end.usage.durationNs > 0 && end.usage.ttftNs > 0 && end.usage.ttftNs <= end.usage.durationNs);
  assert.equal(ts.parentRunId, chain);
  assert.equal(ts.name, 'web_search');
  assert.equal(evs[6].name, 'web_search', 'the end carries the run\'s name');
  assert.equal(evs[9].name, 'agent');
  p.close();
  c.close();
});

test('UTF-8: "東京" arrives whole; long texts are cut between characters, bodies whole', () => {
  const bus = freshBus();
  const c = new Consumer(bus, { name: 'utf8' });
  const p = new Producer(bus);
  const run = uuid();
  p.llmStart(run, null, 'say 東京', {});
  const long = '東京😀'.repeat(12); // 3-byte and 4-byte (surrogate pair) characters
  for (const tok of ['東京', '😀', long, 'é']) assert.equal(p.llmNewToken(run, tok), 0);
  p.llmEnd(run, long, null);
  const evs = drain(c).filter((e) => e.kind === 'llm_new_token');
  assert.equal(evs[0].preview, '東京');
  assert.equal(evs[1].preview, '😀');
  assert.ok(!evs[2].preview.includes('\uFFFD'), 'no replacement characters');
  assert.ok(long.startsWith(evs[2].preview) && evs[2].preview.length < long.length);
  assert.ok(Buffer.byteLength(evs[2].preview) <= 31);
  assert.equal(evs[2].body.text, long);
  assert.equal(evs[3].preview, 'é');
  p.close();
  c.close();
});

test('every kind goes out: errors with status, retriever, text, custom, retry, scores, 1.x stream and tool events', () => {
  const bus = freshBus();
  const c = new Consumer(bus, { name: 'kinds' });
  const p = new Producer(bus);
  const [a, b, r, t, x] = [uuid(), uuid(), uuid(), uuid(), uuid()];
  p.llmStart(a, null, 'p');
  assert.equal(p.chatModelStream(a, 'chunk'), 0);
  assert.equal(p.retry(a, 2, 500e6, 'rate limited'), 0);
  assert.equal(p.llmError(a, 'RateLimitError', '429 Too Many Requests', 429), 0);
  p.chainStart(b, null, 'seq');
  assert.equal(p.chainError(b, 'Error', 'boom'), 0);
  p.retrieverStart(r, null, 'docs', 'weather?');
  assert.equal(p.retrieverEnd(r, 3), 0);
  p.toolStart(t, null, 'calc', '1+1');
  assert.equal(p.toolEvent(t, 'progress', '50%'), 0);
  assert.equal(p.toolError(t, 'ToolError', 'nope'), 0);
  assert.equal(p.text(x, 'hello'), 0);
  assert.equal(p.custom(x, 'my_event', '{"a":1}'), 0);
  assert.equal(p.score(x, 'helpful', cbus.SCORE.numeric, 0.75, null, 'good'), 0);
  assert.equal(p.score(x, 'correct', cbus.SCORE.boolean, true), 0);
  assert.equal(p.score(x, 'tone', cbus.SCORE.categorical, null, 'polite'), 0);
  assert.equal(p.score(x, 'bad', cbus.SCORE.boolean, 0.5), -22, 'a boolean other than 0/1 is -EINVAL');
  assert.equal(p.runs(), 0);
  const evs = drain(c);
  const by = (k) => evs.filter((e) => e.kind === k);
  assert.equal(by('chat_model_stream')[0].preview, 'chunk');
  assert.deepEqual(by('retry')[0].retry, { attempt: 2, backoffNs: 500e6 });
  assert.equal(by('llm_error')[0].error.httpStatus, 429);
  assert.equal(by('llm_error')[0].name, 'RateLimitError');
  assert.ok(by('llm_error')[0].error.durationNs > 0);
  assert.equal(by('chain_error')[0].preview, 'boom');
  assert.equal(by('retriever_end')[0].retriever.documentCount, 3);
  assert.equal(by('tool_event')[0].name, 'progress');
  assert.equal(by('tool_error')[0].name, 'ToolError');
  assert.equal(by('text')[0].runId, x, 'a point event on a run never started carries its id');
  assert.equal(by('custom')[0].name, 'my_event');
  const scores = by('score');
  assert.deepEqual(scores.map((e) => e.score), [{ type: 'numeric', value: 0.75 }, { type: 'boolean', value: 1 }, { type: 'categorical' }]);
  assert.equal(scores[2].preview, 'polite');
  p.close();
  c.close();
});

test('wrong argument types throw a TypeError naming the argument', () => {
  const bus = freshBus();
  const p = new Producer(bus);
  const run = uuid();
  const cases = [
    [() => new Producer(42), /bus must be a string/],
    [() => new Producer(bus, 'x'), /options must be an object/],
    [() => new Producer(bus, { name: 5 }), /options\.name must be a string/],
    [() => new Producer(bus, { failClosed: 'yes' }), /options\.failClosed must be a boolean/],
    [() => p.llmNewToken(7, 'x'), /runId must be a string/],
    [() => p.llmNewToken(run, { text: 'x' }), /chunk must be a string/],
    [() => p.llmStart(run, 12, 'p'), /parentRunId must be a string/],
    [() => p.llmStart(run, null, 3), /text must be a string/],
    [() => p.chainStart(run, null, ['n']), /name must be a string/],
    [() => p.llmStart(run, null, 'p', 'info'), /info must be an object/],
    [() => p.llmStart(run, null, 'p', { model: 4 }), /info\.model must be a string/],
    [() => p.llmStart(run, null, 'p', { tags: 'a' }), /info\.tags must be an array/],
    [() => p.llmStart(run, null, 'p', { tags: [1] }), /info\.tags\[i\] must be a string/],
    [() => p.llmStart(run, null, 'p', { metadata: { k: 1 } }), /info\.metadata value must be a string/],
    [() => p.llmStart(run, null, 'p', { maxTokens: '9' }), /info\.maxTokens must be a number/],
    [() => p.llmEnd(run, 'o', { inputTokens: '3' }), /usage\.inputTokens must be a number/],
    [() => p.llmEnd(run, 'o', 5), /usage must be an object/],
    [() => p.llmEnd(run, 'o', null, 7), /messages must be a string/],
    [() => p.llmError(run, 'E', 'm', '500'), /httpStatus must be a number/],
    [() => p.retrieverEnd(run, 'three'), /documentCount must be a number/],
    [() => p.score(run, 'n', 1, 'high'), /value must be a number or a boolean/],
    [() => p.start('llm', run), /kind must be a number/],
    [() => new Consumer(bus), /options must be an object/],
    [() => new Consumer(bus, { name: 1 }), /options\.name must be a string/],
    [() => new Consumer(bus, { name: 'k', kinds: 'llm_end' }), /options\.kinds must be an array/],
    [() => cbus.createBus(null), /name must be a string/],
  ];
  for (const [fn, re] of cases) assert.throws(fn, (e) => e instanceof TypeError && re.test(e.message), String(re));
  assert.throws(() => p.llmStart(run, null, 'p', { maxTokens: -1 }), RangeError);
  assert.throws(() => p.llmError(run, 'E', 'm', 1.5), RangeError);
  assert.throws(() => new Producer('../etc'), RangeError);
  assert.throws(() => p.llmNewToken('x'.repeat(200), 't'), RangeError);
  assert.throws(() => new Consumer(bus, { name: 'k', mode: 'sometimes' }), RangeError);
  assert.throws(() => new Consumer(bus, { name: 'k', kinds: ['nope'] }), RangeError);
  assert.equal(p.runs(), 0, 'a start that threw opened no run');
  p.close();
});

test('a missing bus is an Error with code ENOENT; emits on a closed handle return -ESTALE', () => {
  assert.throws(() => new Producer(`nodet${process.pid}none`), (e) => e.code === 'ENOENT' && e.errno === -2);
  const bus = freshBus();
  const p = new Producer(bus);
  const tf = p.tokenFunction();
  assert.equal(tf(uuid(), 'x'), 0);
  assert.throws(() => tf(uuid(), 5), (e) => e instanceof TypeError && /chunk must be a string/.test(e.message));
  assert.throws(() => tf({}, 'x'), (e) => e instanceof TypeError && /runId must be a string/.test(e.message));
  assert.equal(tf(5, 'x'), -3, 'a number that is no run handle is -ESRCH, never another run');
  p.close();
  p.close(); // twice is fine
  assert.equal(p.closed(), true);
  assert.equal(p.llmNewToken(uuid(), 'x'), -116);
  assert.equal(tf(uuid(), 'x'), -116, 'the bound token call of a closed handle');
  assert.equal(tf(0, 'x'), -116, 'and by run handle');
});

test('handles share one producer per process: one table entry, one mapping, closed by the last', () => {
  const bus = freshBus();
  const maps0 = mappings(bus);
  const a = new Producer(bus), b = new Producer(bus);
  assert.equal(cbus.busInfo(bus).producers.length, 1);
  assert.equal(mappings(bus), maps0 + 1);
  assert.deepEqual(cbus.sharedProducers().filter((s) => s.bus === bus).map((s) => s.refs), [2]);
  const named = new Producer(bus, { name: 'api' });
  assert.deepEqual(cbus.busInfo(bus).producers.map((x) => x.name).sort(), ['api', `pid${process.pid}`]);
  a.llmNewToken(uuid(), 'x');
  b.llmNewToken(uuid(), 'y');
  assert.equal(a.stats().emitted, 2, 'one producer counts both handles');
  a.close();
  assert.equal(cbus.busInfo(bus).producers.length, 2);
  b.close();
  named.close();
  assert.equal(cbus.busInfo(bus).producers.length, 0);
  assert.equal(mappings(bus), maps0);
  assert.equal(cbus.sharedProducers().filter((s) => s.bus === bus).length, 0);
});

test('runs are per handle: two handlers seeing the same run ids do not mix', () => {
  const bus = freshBus();
  const c = new Consumer(bus, { name: 'two' });
  const a = new Producer(bus), b = new Producer(bus);
  const run = uuid();
  a.llmStart(run, null, 'p', { user: 'ua' });
  b.llmStart(run, null, 'p', { user: 'ub' });
  a.llmEnd(run, 'o', { outputTokens: 1 });
  assert.equal(a.runs(), 0);
  assert.equal(b.runs(), 1);
  b.llmEnd(run, 'o', { outputTokens: 2 });
  const ends = drain(c).filter((e) => e.kind === 'llm_end');
  assert.deepEqual(ends.map((e) => [e.user, e.usage.outputTokens]), [['ua', 1], ['ub', 2]]);
  a.close(); b.close(); c.close();
});

test('run handles: tokens by handle land on their run; a handle of an ended run is stale, never the next run\'s', () => {
  const bus = freshBus();
  const c = new Consumer(bus, { name: 'handles' });
  const p = new Producer(bus);
  const tf = p.tokenFunction();
  const r1 = uuid(), r2 = uuid();
  assert.equal(p.runHandle(r1), -1, 'no run of that id is open');
  assert.throws(() => p.runHandle(7), (e) => e instanceof TypeError && /runId must be a string/.test(e.message));
  p.llmStart(r1, null, 'p', { user: 'u1' });
  const h1 = p.runHandle(r1);
  assert.ok(Number.isInteger(h1) && h1 >= 0);
  assert.equal(tf(h1, 'a'), 0);
  p.llmEnd(r1, 'o', {});
  assert.equal(tf(h1, 'b'), -3, 'stale once its run ended');
  p.llmStart(r2, null, 'p', { user: 'u2' }); // takes the freed entry
  const h2 = p.runHandle(r2);
  assert.notEqual(h2, h1, 'the entry comes back under a new generation');
  assert.equal(tf(h1, 'c'), -3, 'the old handle does not reach the new run');
  assert.equal(tf(h2, 'd'), 0);
  for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 60]) assert.equal(tf(bad, 'x'), -3, `handle ${bad}`);
  p.llmEnd(r2, 'o', {});
  const toks = drain(c).filter((e) => e.kind === 'llm_new_token');
  assert.deepEqual(toks.map((e) => [e.runId, e.user, e.preview]), [[r1, 'u1', 'a'], [r2, 'u2', 'd']]);
  p.close(); c.close();
});

test('system instructions (info.system) ride on llm and chat starts; the response id (llmEnd\'s 5th argument) on the end', () => {
  const bus = freshBus();
  const c = new Consumer(bus, { name: 'sysrid' });
  const p = new Producer(bus);
  const sys = JSON.stringify([{ type: 'text', content: 'You are a geography tutor. 東京' }]);
  const chat = uuid(), llm = uuid(), plain = uuid();
  const msgs = '[{"role":"system","parts":[{"type":"text","content":"history\'s own"}]}]';
  assert.equal(p.chatModelStart(chat, null, 'Capital of Italy?', { messages: msgs, system: sys, tags: ['geo'] }), 0);
  assert.equal(p.llmEnd(chat, 'Rome.', { outputTokens: 2 }, null, 'chatcmpl-AbC123'), 0);
  assert.equal(p.llmStart(llm, null, 'prompt', { system: 'Be brief.' }), 0);
  assert.equal(p.llmEnd(llm, null, null, '[{"role":"assistant","parts":[]}]', 'msg_01XFDUDYJgAACzvnptvVoYEL'), 0);
  assert.equal(p.chatModelStart(plain, null, 'no instructions', { system: null }), 0);
  assert.equal(p.llmEnd(plain, 'out', null, null, undefined), 0);
  // a response id that is not one: a RangeError naming it, and nothing emitted
  const bad = uuid();
  assert.equal(p.llmStart(bad, null, 'p'), 0);
  for (const id of ['', 'has space', 'x'.repeat(257), 'café', 'tab\tid']) {
    assert.throws(() => p.llmEnd(bad, 'o', null, null, id), (e) => e instanceof RangeError && /responseId/.test(e.message), JSON.stringify(id));
  }
  assert.throws(() => p.llmEnd(bad, 'o', null, null, 7), (e) => e instanceof TypeError && /responseId/.test(e.message));
  assert.throws(() => p.chatModelStart(uuid(), null, 'x', { system: 5 }), (e) => e instanceof TypeError && /info\.system/.test(e.message));
  assert.equal(p.llmEnd(bad, 'o', null, null, 'x'.repeat(256)), 0);
  const evs = drain(c);
  assert.deepEqual(evs.map((e) => e.kind), ['chat_model_start', 'llm_end', 'llm_start', 'llm_end', 'chat_model_start', 'llm_end', 'llm_start', 'llm_end']);
  assert.equal(evs[0].body.system, sys, 'whole, UTF-8 intact');
  assert.equal(evs[0].body.messages, msgs, 'a system message of the history stays in the messages');
  assert.deepEqual(evs[0].body.tags, ['geo']);
  assert.equal(evs[1].body.responseId, 'chatcmpl-AbC123');
  assert.equal(evs[1].preview, 'Rome.');
  assert.equal(evs[2].body.system, 'Be brief.');
  assert.equal(evs[3].body.responseId, 'msg_01XFDUDYJgAACzvnptvVoYEL');
  assert.equal(evs[3].body.messages, '[{"role":"assistant","parts":[]}]');
  assert.equal(evs[4].body, undefined, 'no system: no body (the text fits the preview)');
  assert.equal(evs[5].body, undefined);
  assert.equal(evs[7].body.responseId, 'x'.repeat(256));
  assert.equal(p.runs(), 0);
  p.close(); c.close();
});
