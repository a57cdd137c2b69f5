// import aiAssistantModuleCallbackProviderCbus from 'cbus/backstage' in a
// Backstage backend (packages/backend/src/index.ts):
//   backend.add(import('cbus/backstage'));
// Needs @backstage/backend-plugin-api and
// @sweetoburrito/backstage-plugin-ai-assistant-node, which the Backstage app has.
// The namespace import: a named import of an extension point the installed
// version does not export would fail to link.
import { createRequire } from 'node:module';
import { coreServices, createBackendModule } from '@backstage/backend-plugin-api';
import * as assistant from '@sweetoburrito/backstage-plugin-ai-assistant-node';

const require = createRequire(import.meta.url);
const impl = require('./backstage.cjs');

export const { createCbusCallbackProvider, createCbusCallbackFactory, registerCbusCallbacks,
  createCbusCallbackModule } = impl;
export const aiAssistantModuleCallbackProviderCbus = createCbusCallbackModule({
  createBackendModule, coreServices,
  callbackProviderExtensionPoint: assistant.callbackProviderExtensionPoint,
  callbackFactoryExtensionPoint: assistant.callbackFactoryExtensionPoint,
});
export default aiAssistantModuleCallbackProviderCbus;
