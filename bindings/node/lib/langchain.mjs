// import { CbusCallbackHandler } from 'cbus/langchain': over @langchain/core's ESM build.
import { createRequire } from 'node:module';
import { BaseCallbackHandler } from '@langchain/core/callbacks/base';

const require = createRequire(import.meta.url);
const { makeHandler } = require('./handler-impl.cjs');

export const CbusCallbackHandler = makeHandler(BaseCallbackHandler);
