#!/usr/bin/env node
// Builds the addon (build/cbus_node.node) with the project's CMake, from the
// cbus sources two directories up: `npm install ./bindings/node` runs it.
// Nothing is downloaded: the Node-API headers come from the system (Debian's
// nodejs: /usr/include/node), from beside this node binary, or from the
// node-api-headers npm package if it is installed.
//   --force   rebuild even if the addon is newer than every source
//   --debug   RelWithDebInfo instead of Release
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const pkg = path.resolve(__dirname, '..');
const root = path.resolve(pkg, '..', '..');
// CBUS_SANITIZE=address,undefined: a sanitized addon in build/address-undefined/
// (the test command's ASan stage loads it with CBUS_NODE_ADDON), never over the normal one.
const sanitize = process.env.CBUS_SANITIZE || '';
if (!/^[a-z,]*$/.test(sanitize)) {
  console.error(`cbus: CBUS_SANITIZE=${sanitize}: a comma-separated list of sanitizer names`);
  process.exit(1);
}
const variant = sanitize ? sanitize.replace(/,/g, '-') : '';
const out = path.join(pkg, 'build', variant, 'cbus_node.node');
const args = process.argv.slice(2);

function fail(msg) {
  console.error(`cbus: ${msg}`);
  process.exit(1);
}

function headerDir() {
  const tries = [process.env.CBUS_NODE_API_INCLUDE, '/usr/include/node',
    path.resolve(path.dirname(process.execPath), '..', 'include', 'node')];
  try {
    tries.push(path.join(path.dirname(require.resolve('node-api-headers/package.json')), 'include'));
  } catch { /* not installed */ }
  return tries.find((d) => d && fs.existsSync(path.join(d, 'node_api.h')));
}

function newestSource() {
  let t = 0;
  const dirs = [path.join(root, 'bus'), path.join(root, 'producer'), path.join(root, 'include', 'cbus'),
    path.join(pkg, 'src')];
  for (const d of dirs) {
    for (const f of fs.readdirSync(d)) t = Math.max(t, fs.statSync(path.join(d, f)).mtimeMs);
  }
  return Math.max(t, fs.statSync(path.join(pkg, 'CMakeLists.txt')).mtimeMs);
}

function run(cmd, argv) {
  const r = spawnSync(cmd, argv, { stdio: 'inherit' });
  if (r.error) fail(`${cmd}: ${r.error.message}${r.error.code === 'ENOENT' ? ' (apt-get install cmake)' : ''}`);
  if (r.status !== 0) fail(`${cmd} ${argv.join(' ')} failed (exit ${r.status})`);
}

if (!fs.existsSync(path.join(root, 'bus')) || !fs.existsSync(path.join(root, 'include', 'cbus'))) {
  fail(`no cbus sources at ${root}: install from a cbus checkout (npm install ./bindings/node)`);
}
if (!args.includes('--force') && fs.existsSync(out) && fs.statSync(out).mtimeMs >= newestSource()) {
  process.exit(0);
}
const inc = headerDir();
if (!inc) fail('node_api.h not found: install Debian\'s nodejs (it has /usr/include/node) or the node-api-headers package');
const bdir = path.join(pkg, 'build', variant ? `cmake-${variant}` : 'cmake');
const gen = spawnSync('ninja', ['--version']).status === 0 ? ['-G', 'Ninja'] : [];
run('cmake', ['-S', pkg, '-B', bdir, ...gen, `-DCMAKE_BUILD_TYPE=${args.includes('--debug') ? 'RelWithDebInfo' : 'Release'}`,
  `-DNODE_API_INCLUDE_DIR=${inc}`, `-DCBUS_ROOT=${root}`,
  ...(process.env.CBUS_WERROR === '1' ? ['-DCBUS_WERROR=ON'] : []), `-DCBUS_NODE_SANITIZE=${sanitize}`]);
run('cmake', ['--build', bdir, '-j', process.env.CBUS_BUILD_JOBS || '2']);
if (!fs.existsSync(out)) fail(`the build made no ${out}`);
