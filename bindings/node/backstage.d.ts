// Types of cbus/backstage: the Backstage AI assistant callback provider.
import type { CbusCallbackHandler } from './langchain';

export interface CbusBackstageOptions {
  /** bus name; default CBUS_BUS or "default" */
  bus?: string;
  /** default "backstage-ai-assistant" */
  agent?: string;
  tenant?: string;
  provider?: string;
}

/** What the assistant backend passes per agent invocation. */
export interface ChainCallbackOptions {
  userId?: string;
  conversationId?: string;
  modelId?: string;
  [key: string]: unknown;
}

/** The provider registered on callbackProviderExtensionPoint (assistant node package 0.10.0). */
export interface CbusCallbackProvider {
  id: string;
  chainCallback(options: ChainCallbackOptions): CbusCallbackHandler;
  chainMetadataCallback(options: ChainCallbackOptions): Promise<Record<string, string | undefined>>;
  /** a rating: a numeric cbus score on message.traceId (skipped without a trace or a number) */
  scoreCallback(options: { name: string; message: { traceId?: string; score: number; [key: string]: unknown } }): Promise<void>;
  /** closes the producer ratings were sent with */
  close(): void;
}

export function createCbusCallbackProvider(options?: CbusBackstageOptions): CbusCallbackProvider;
/** The {callback, metadata} factory shape (a callbackFactoryExtensionPoint). */
export function createCbusCallbackFactory(options?: CbusBackstageOptions):
  (options: ChainCallbackOptions & { sessionId?: string; userEntityRef?: string }) =>
    Promise<{ callback: CbusCallbackHandler; metadata: Record<string, string | undefined> }>;
export function registerCbusCallbacks(args: { config: unknown; callbackProvider: { register(x: unknown): void };
  shape?: 'provider' | 'factory' }): unknown;
export function createCbusCallbackModule(apis: { createBackendModule: Function; coreServices: { rootConfig: unknown };
  callbackProviderExtensionPoint?: unknown; callbackFactoryExtensionPoint?: unknown }): unknown;
/** The backend module: backend.add(import('cbus/backstage')) */
declare const aiAssistantModuleCallbackProviderCbus: unknown;
export default aiAssistantModuleCallbackProviderCbus;
