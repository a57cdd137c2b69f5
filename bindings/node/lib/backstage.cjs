'use strict';
// The Backstage AI assistant callback provider (cbus/backstage).  The
// assistant's backend (@sweetoburrito/backstage-plugin-ai-assistant) asks a
// factory registered on callbackFactoryExtensionPoint for {callback,
// metadata} per conversation; this factory answers with a
// CbusCallbackHandler that has the conversation's session, user and model.
// The Backstage APIs are passed in (createCbusCallbackModule) rather than
// required here: the assistant's node package depends on `backstage:^`
// versions that npm cannot install outside a Backstage workspace, so this
// package cannot depend on it (lib/backstage.mjs wires the real imports).
const { CbusCallbackHandler } = require('./langchain.cjs');

/** A factory for callbackFactoryExtensionPoint.register(). */
function createCbusCallbackFactory({ bus, agent = 'backstage-ai-assistant', tenant, provider } = {}) {
  return async function cbusCallbackFactory(options = {}) {
    const sessionId = options.sessionId ?? options.conversationId;
    const userId = options.userId ?? options.userEntityRef;
    const modelId = options.modelId;
    const callback = new CbusCallbackHandler({ bus, sessionId, userId, modelId, agent, tenant, provider });
    const metadata = { cbusBus: callback.bus, cbusSessionId: sessionId, cbusUserId: userId, cbusModelId: modelId, cbusAgent: agent };
    return { callback, metadata };
  };
}

/** init() of the module: config aiAssistant.callbacks.cbus.{bus, agent, tenant, provider}. */
function registerCbusCallbacks({ config, callbackProvider }) {
  const get = (k) => (config && typeof config.getOptionalString === 'function'
    ? config.getOptionalString(`aiAssistant.callbacks.cbus.${k}`) : undefined);
  const factory = createCbusCallbackFactory({ bus: get('bus'), agent: get('agent') ?? undefined,
    tenant: get('tenant'), provider: get('provider') });
  callbackProvider.register(factory);
  return factory;
}

/** The backend module, given Backstage's createBackendModule, coreServices and the extension point. */
function createCbusCallbackModule({ createBackendModule, coreServices, callbackFactoryExtensionPoint }) {
  return createBackendModule({
    pluginId: 'ai-assistant',
    moduleId: 'callback-provider-cbus',
    register(reg) {
      reg.registerInit({
        deps: { config: coreServices.rootConfig, callbackProvider: callbackFactoryExtensionPoint },
        async init({ config, callbackProvider }) {
          registerCbusCallbacks({ config, callbackProvider });
        },
      });
    },
  });
}

module.exports = { createCbusCallbackFactory, registerCbusCallbacks, createCbusCallbackModule };
