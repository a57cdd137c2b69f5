'use strict';
// The Backstage provider against the published packages: the real
// @backstage/backend-plugin-api (createBackendModule, coreServices), the real
// @sweetoburrito/backstage-plugin-ai-assistant-node 0.10.0 (its
// callbackProviderExtensionPoint; installed through package.json `overrides`,
// since its `backstage:^` dependency specs only resolve inside a Backstage
// workspace) and @backstage/config's ConfigReader.  The module's registration
// is driven as the backend drives it: the feature's registrations, the init's
// deps, the extension point's register(), then, per agent invocation, what
// the assistant backend's callback service calls (chainCallback,
// chainMetadataCallback with {userId, conversationId, modelId}, the agent run
// with runId = traceId, scoreCallback({name, message}) on a rating).
const test = require('node:test');
const assert = require('node:assert/strict');
const { randomUUID } = require('node:crypto');
const { freshBus, drain, cbus } = require('./helpers.cjs');
const { createCbusCallbackModule } = require('cbus/backstage');
const { CbusCallbackHandler } = require('cbus/langchain');
const { FakeListChatModel } = require('@langchain/core/utils/testing');
const { createBackendModule, coreServices } = require('@backstage/backend-plugin-api');
const { ConfigReader } = require('@backstage/config');
const assistant = require('@sweetoburrito/backstage-plugin-ai-assistant-node');

// The init of a real BackendFeature, as the backend reads it.
function moduleInit(feature) {
  assert.equal(feature.$$type, '@backstage/BackendFeature');
  const [reg] = feature.getRegistrations();
  assert.equal(reg.pluginId, 'ai-assistant');
  assert.equal(reg.moduleId, 'callback-provider-cbus');
  return reg.init;
}

test('the backend module registers a provider on the published extension point; each invocation gets its own handler, ratings become scores', async () => {
  const bus = freshBus();
  const c = new cbus.Consumer(bus, { name: 'bs' });
  const feature = createCbusCallbackModule({ createBackendModule, coreServices,
    callbackProviderExtensionPoint: assistant.callbackProviderExtensionPoint });
  const init = moduleInit(feature);
  assert.equal(init.deps.config, coreServices.rootConfig);
  assert.equal(init.deps.callbackProvider, assistant.callbackProviderExtensionPoint);
  assert.equal(init.deps.callbackProvider.id, 'ai-assistant.callback');
  const providers = [];
  const config = new ConfigReader({ aiAssistant: { callbacks: { cbus: { bus, tenant: 'team-a' } } } });
  await init.func({ config, callbackProvider: { register: (p) => providers.push(p) } });
  assert.equal(providers.length, 1);
  const provider = providers[0];
  assert.equal(typeof provider.id, 'string');
  // the assistant backend's agent service, per invocation
  const invoke = async (opts, question) => {
    const callbacks = [await provider.chainCallback(opts)];
    const metadata = await provider.chainMetadataCallback(opts);
    const traceId = randomUUID();
    const model = new FakeListChatModel({ responses: ['hello'] });
    await model.invoke(question, { callbacks, metadata, runId: traceId });
    return { handler: callbacks[0], metadata, traceId };
  };
  const a = await invoke({ userId: 'user:default/bob', conversationId: 'conv-9', modelId: 'gpt-4o' }, 'hi');
  const b = await invoke({ userId: 'user:default/eve', conversationId: 'conv-10', modelId: 'gpt-4o-mini' }, 'yo');
  assert.ok(a.handler instanceof CbusCallbackHandler);
  // the metadata call opens no handler: no producer reference is taken for it
  const refs = () => cbus.sharedProducers().filter((x) => x.bus === bus).reduce((n, x) => n + x.refs, 0);
  const before = refs();
  await provider.chainMetadataCallback({ userId: 'u', conversationId: 'c', modelId: 'm' });
  assert.equal(refs(), before);
  assert.notEqual(a.handler, b.handler, 'a handler per invocation');
  assert.deepEqual(a.metadata, { cbusBus: bus, cbusSessionId: 'conv-9', cbusUserId: 'user:default/bob',
    cbusModelId: 'gpt-4o', cbusAgent: 'backstage-ai-assistant' });
  // a thumbs-up on the first answer, as conversation.scoreMessage() passes it
  await provider.scoreCallback({ name: 'helpfulness',
    message: { id: 'm1', role: 'ai', content: 'hello', metadata: {}, score: 1, traceId: a.traceId } });
  await provider.scoreCallback({ name: 'helpfulness', message: { role: 'ai', content: 'x', metadata: {}, score: 1 } });
  const evs = drain(c);
  const starts = evs.filter((e) => e.kind === 'chat_model_start');
  assert.deepEqual(starts.map((e) => [e.runId, e.session, e.user, e.model, e.agent, e.tenant]), [
    [a.traceId, 'conv-9', 'user:default/bob', 'gpt-4o', 'backstage-ai-assistant', 'team-a'],
    [b.traceId, 'conv-10', 'user:default/eve', 'gpt-4o-mini', 'backstage-ai-assistant', 'team-a']]);
  const scores = evs.filter((e) => e.kind === 'score');
  assert.equal(scores.length, 1, 'a rating without a trace is skipped');
  assert.equal(scores[0].runId, a.traceId, 'the score lands on the rated answer\'s trace');
  assert.equal(scores[0].name, 'helpfulness');
  a.handler.close(); b.handler.close(); provider.close(); c.close();
});

test('the ESM entry is a real BackendFeature on the published extension point', async () => {
  const mod = await import('cbus/backstage');
  const init = moduleInit(mod.default);
  assert.equal(init.deps.callbackProvider, assistant.callbackProviderExtensionPoint);
  assert.equal(mod.createCbusCallbackModule, createCbusCallbackModule);
});

test('the factory shape ({callback, metadata}) for a callbackFactoryExtensionPoint, from the issue', async () => {
  const bus = freshBus();
  const c = new cbus.Consumer(bus, { name: 'bs' });
  // no published version has this point: made here with the real createExtensionPoint
  const { createExtensionPoint } = require('@backstage/backend-plugin-api');
  const callbackFactoryExtensionPoint = createExtensionPoint({ id: 'ai-assistant.callback-factory' });
  const init = moduleInit(createCbusCallbackModule({ createBackendModule, coreServices, callbackFactoryExtensionPoint }));
  assert.equal(init.deps.callbackProvider, callbackFactoryExtensionPoint);
  const factories = [];
  const config = new ConfigReader({ aiAssistant: { callbacks: { cbus: { bus, tenant: 'team-a' } } } });
  await init.func({ config, callbackProvider: { register: (f) => factories.push(f) } });
  assert.equal(factories.length, 1);
  assert.equal(typeof factories[0], 'function');
  const { callback, metadata } = await factories[0]({ sessionId: 'conv-9', userId: 'user:default/bob', modelId: 'gpt-4o' });
  assert.ok(callback instanceof CbusCallbackHandler);
  assert.deepEqual(metadata, { cbusBus: bus, cbusSessionId: 'conv-9', cbusUserId: 'user:default/bob', cbusModelId: 'gpt-4o', cbusAgent: 'backstage-ai-assistant' });
  // the names the Langfuse example reads (conversationId, userEntityRef) work too
  const other = await factories[0]({ conversationId: 'conv-10', userEntityRef: 'user:default/eve', modelId: 'gpt-4o-mini' });
  const model = new FakeListChatModel({ responses: ['hello'] });
  await model.invoke('hi', { callbacks: [callback], metadata });
  await model.invoke('hi', { callbacks: [other.callback] });
  const starts = drain(c).filter((e) => e.kind === 'chat_model_start');
  assert.deepEqual(starts.map((e) => [e.session, e.user, e.model, e.agent, e.tenant]), [
    ['conv-9', 'user:default/bob', 'gpt-4o', 'backstage-ai-assistant', 'team-a'],
    ['conv-10', 'user:default/eve', 'gpt-4o-mini', 'backstage-ai-assistant', 'team-a']]);
  callback.close(); other.callback.close(); c.close();
});
