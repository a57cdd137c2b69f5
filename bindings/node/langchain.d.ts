import { BaseCallbackHandler } from '@langchain/core/callbacks/base';
import type { Producer, ProducerOptions } from './index';

export interface CbusCallbackHandlerOptions {
  /** bus name; default CBUS_BUS or "default" */
  bus?: string;
  userId?: string;
  sessionId?: string;
  modelId?: string;
  agent?: string;
  tenant?: string;
  provider?: string;
  /** use this producer handle instead of opening one (it is not closed by close()) */
  producer?: Producer;
  producerOptions?: ProducerOptions;
}

/** Emits every LangChain callback into a cbus bus; awaited inline; never throws; a missing bus warns once and does nothing. */
export class CbusCallbackHandler extends BaseCallbackHandler {
  name: string;
  bus: string;
  producer: Producer | null;
  constructor(options?: CbusCallbackHandlerOptions);
  close(): void;
}
