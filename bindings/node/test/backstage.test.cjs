'use strict';
// The Backstage provider's contract, tested directly: the assistant's node
// package (@sweetoburrito/backstage-plugin-ai-assistant-node 0.10.0) depends on
// `backstage:^` versions, which npm cannot install outside a Backstage
// workspace, so the module's registration is driven here as the backend
// drives it: createBackendModule's options, registerInit's deps and init, the
// extension point's register(), then the factory per conversation.
const test = require('node:test');
const assert = require('node:assert/strict');
const { freshBus, drain, cbus } = require('./helpers.cjs');
const { createCbusCallbackModule } = require('cbus/backstage');
const { CbusCallbackHandler } = require('cbus/langchain');
const { FakeListChatModel } = require('@langchain/core/utils/testing');

test('the backend module registers a factory that gives each conversation its own CbusCallbackHandler', async () => {
  const bus = freshBus();
  const c = new cbus.Consumer(bus, { name: 'bs' });
  let moduleOpts, registration;
  const createBackendModule = (opts) => { moduleOpts = opts; return { $$type: '@backstage/BackendFeature' }; };
  const coreServices = { rootConfig: { id: 'core.rootConfig' } };
  const callbackFactoryExtensionPoint = { id: 'ai-assistant.callback-factory' };
  const feature = createCbusCallbackModule({ createBackendModule, coreServices, callbackFactoryExtensionPoint });
  assert.equal(feature.$$type, '@backstage/BackendFeature');
  assert.equal(moduleOpts.pluginId, 'ai-assistant');
  assert.equal(moduleOpts.moduleId, 'callback-provider-cbus');
  moduleOpts.register({ registerInit: (r) => { registration = r; } });
  assert.equal(registration.deps.config, coreServices.rootConfig);
  assert.equal(registration.deps.callbackProvider, callbackFactoryExtensionPoint);
  const factories = [];
  const config = { getOptionalString: (k) => ({ 'aiAssistant.callbacks.cbus.bus': bus, 'aiAssistant.callbacks.cbus.tenant': 'team-a' })[k] };
  await registration.init({ config, callbackProvider: { register: (f) => factories.push(f) } });
  assert.equal(factories.length, 1);
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
