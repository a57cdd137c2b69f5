'use strict';
// Loads the addon that `npm install` built (scripts/build.cjs).
const path = require('node:path');

// CBUS_NODE_ADDON: another build of it (the test command's sanitized one).
const file = process.env.CBUS_NODE_ADDON ? path.resolve(process.env.CBUS_NODE_ADDON)
  : path.join(__dirname, '..', 'build', 'cbus_node.node');
try {
  module.exports = require(file);
} catch (e) {
  if (e.code !== 'MODULE_NOT_FOUND') throw e;
  const err = new Error(`cbus: the native addon is not built (${file}): run \`npm rebuild cbus\` ` +
    'or `node scripts/build.cjs` in bindings/node');
  err.code = 'CBUS_NOT_BUILT';
  throw err;
}
