'use strict';
// require('cbus/langchain'): CbusCallbackHandler over @langchain/core's CommonJS build.
const { BaseCallbackHandler } = require('@langchain/core/callbacks/base');
const { makeHandler } = require('./handler-impl.cjs');

module.exports = { CbusCallbackHandler: makeHandler(BaseCallbackHandler) };
