'use strict';
// The Backstage AI assistant callback provider (cbus/backstage).
//
// The assistant's backend (@sweetoburrito/backstage-plugin-ai-assistant-backend
// 0.19, node package 0.10.0) collects providers registered on
// `callbackProviderExtensionPoint` (id 'ai-assistant.callback'):
//   { id, chainCallback(options), chainMetadataCallback(options), scoreCallback({name, message}) }
// For every agent invocation it calls chainCallback({userId, conversationId,
// modelId}) for a LangChain handler and chainMetadataCallback(the same) for the
// chain's metadata, and invokes the agent with `runId: traceId`; when a user
// rates an answer it calls scoreCallback({name: 'helpfulness', message}) with
// the message's traceId and score.  This provider answers with a
// CbusCallbackHandler per invocation (session = conversation, user, model) and
// turns ratings into cbus score events on the trace's root run.
//
// The issue that asked for this named a `callbackFactoryExtensionPoint` whose
// factory returns {callback, metadata}; no published version has it, but a
// factory of that shape is kept (createCbusCallbackFactory) and used when an
// extension point of that name is what the backend offers.
//
// The Backstage APIs are passed in (createCbusCallbackModule) rather than
// required here, so `require('cbus')` never needs Backstage; lib/backstage.mjs
// wires the real imports for `backend.add(import('cbus/backstage'))`.
const cbus = require('./index.cjs');
const { CbusCallbackHandler } = require('./langchain.cjs');

const DEFAULT_AGENT = 'backstage-ai-assistant';

// Who and what an invocation is about, from either spelling of the options.
function conversation(options = {}) {
  return { sessionId: options.conversationId ?? options.sessionId, userId: options.userId ?? options.userEntityRef,
    modelId: options.modelId };
}

// The chain's metadata: no handler (and so no producer) is opened for it.
function metadataFor(cfg, options) {
  const { sessionId, userId, modelId } = conversation(options);
  return { cbusBus: cfg.bus ?? process.env.CBUS_BUS ?? 'default', cbusSessionId: sessionId, cbusUserId: userId,
    cbusModelId: modelId, cbusAgent: cfg.agent };
}

function handlerFor(cfg, options) {
  const { sessionId, userId, modelId } = conversation(options);
  return new CbusCallbackHandler({ bus: cfg.bus, sessionId, userId, modelId, agent: cfg.agent,
    tenant: cfg.tenant, provider: cfg.provider });
}

function settings({ bus, agent = DEFAULT_AGENT, tenant, provider } = {}) {
  return { bus, agent: agent ?? DEFAULT_AGENT, tenant, provider };
}

/** The provider for callbackProviderExtensionPoint.register() (the published contract). */
function createCbusCallbackProvider(opts = {}) {
  const cfg = settings(opts);
  let scorer = null; // one producer for ratings, opened on the first
  return {
    id: 'cbus',
    chainCallback: (options) => handlerFor(cfg, options),
    chainMetadataCallback: async (options) => metadataFor(cfg, options),
    // A rating of an answer: a numeric score on the trace's root run (the
    // assistant invokes its agent with runId = traceId).  Never throws into
    // the assistant: a message without a trace or a number is skipped.
    scoreCallback: async ({ name, message } = {}) => {
      const run = message?.traceId;
      const value = Number(message?.score);
      if (typeof run !== 'string' || !run || !Number.isFinite(value)) return;
      try {
        scorer ??= new cbus.Producer(cfg.bus ?? process.env.CBUS_BUS ?? 'default');
        scorer.score(run, String(name ?? 'score'), cbus.SCORE.numeric, value, null, null);
      } catch { /* no bus: nothing to rate into */ }
    },
    close: () => { scorer?.close(); scorer = null; },
  };
}

/** A factory of the {callback, metadata} shape (callbackFactoryExtensionPoint, see above). */
function createCbusCallbackFactory(opts = {}) {
  const cfg = settings(opts);
  return async function cbusCallbackFactory(options = {}) {
    return { callback: handlerFor(cfg, options), metadata: metadataFor(cfg, options) };
  };
}

/** init() of the module: config aiAssistant.callbacks.cbus.{bus, agent, tenant, provider}. */
function registerCbusCallbacks({ config, callbackProvider, shape = 'provider' }) {
  const get = (k) => (config && typeof config.getOptionalString === 'function'
    ? config.getOptionalString(`aiAssistant.callbacks.cbus.${k}`) : undefined);
  const opts = { bus: get('bus'), agent: get('agent') ?? undefined, tenant: get('tenant'), provider: get('provider') };
  const made = shape === 'factory' ? createCbusCallbackFactory(opts) : createCbusCallbackProvider(opts);
  callbackProvider.register(made);
  return made;
}

/**
 * The backend module, given Backstage's createBackendModule, coreServices and
 * the assistant's extension point: callbackProviderExtensionPoint (published),
 * or callbackFactoryExtensionPoint (the factory shape).
 */
function createCbusCallbackModule({ createBackendModule, coreServices, callbackProviderExtensionPoint,
  callbackFactoryExtensionPoint }) {
  const point = callbackProviderExtensionPoint ?? callbackFactoryExtensionPoint;
  if (!point) throw new TypeError('cbus/backstage: the assistant offers no callback extension point');
  const shape = callbackProviderExtensionPoint ? 'provider' : 'factory';
  return createBackendModule({
    pluginId: 'ai-assistant',
    moduleId: 'callback-provider-cbus',
    register(reg) {
      reg.registerInit({
        deps: { config: coreServices.rootConfig, callbackProvider: point },
        async init({ config, callbackProvider }) {
          registerCbusCallbacks({ config, callbackProvider, shape });
        },
      });
    },
  });
}

module.exports = { createCbusCallbackProvider, createCbusCallbackFactory, registerCbusCallbacks,
  createCbusCallbackModule };
