// dist/grafana/cbus-overview.json: valid JSON of a Grafana dashboard, and
// every metric name its queries use is in what the daemons really export
// (cbus-cost's Prometheus textfile and cbus-web's /metrics) once real load
// has gone through a real bus.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../..');
const build = path.resolve(root, process.env.CBUS_BUILD_DIR || 'build/release');
const bin = (p) => path.join(build, p);
const prices = path.join(root, 'consumers/cost/model_prices_and_context_window.json');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const get = (url) => new Promise((resolve, reject) => {
  http.get(url, (res) => {
    let body = '';
    res.on('data', (d) => { body += d; });
    res.on('end', () => resolve({ status: res.statusCode, body }));
  }).on('error', reject);
});

// Metric names of every sample line (histograms give _bucket/_sum/_count).
function exposed(text) {
  const names = new Set();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
    if (m) names.add(m[1]);
  }
  return names;
}

function panelsOf(d) {
  const out = [];
  for (const p of d.panels || []) {
    out.push(p);
    if (p.type === 'row') out.push(...(p.panels || []));
  }
  return out;
}

test('the Grafana dashboard uses only metrics the daemons export', { timeout: 60000 }, async (t) => {
  const file = path.join(root, 'dist/grafana/cbus-overview.json');
  const dash = JSON.parse(fs.readFileSync(file, 'utf8'));
  assert.equal(typeof dash.title, 'string');
  assert.ok(dash.uid && dash.schemaVersion >= 30);
  const ids = new Set();
  const used = new Set();
  for (const p of panelsOf(dash)) {
    assert.ok(Number.isInteger(p.id) && !ids.has(p.id), `panel ids unique: ${p.id}`);
    ids.add(p.id);
    const g = p.gridPos;
    assert.ok(g && g.w > 0 && g.h > 0 && g.x + g.w <= 24, `panel ${p.title}: gridPos inside 24 columns`);
    if (p.type === 'row') continue;
    assert.ok(['timeseries', 'stat'].includes(p.type), `panel type ${p.type}`);
    assert.equal(p.datasource.uid, '${DS_PROMETHEUS}', `${p.title}: the datasource input`);
    assert.ok(p.targets.length > 0, `${p.title} has queries`);
    for (const tg of p.targets) {
      for (const m of tg.expr.matchAll(/\b(cbus_[a-z0-9_]+)\b/g)) used.add(m[1]);
    }
  }
  assert.ok(used.size >= 15, `metrics used: ${[...used].join(' ')}`);

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cbus-grafana-'));
  const bus = `graf${process.pid}`;
  const procs = [];
  t.after(() => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    try { execFileSync(bin('tools/cbusctl/cbusctl'), ['destroy', bus], { stdio: 'ignore' }); } catch (e) { /* gone */ }
    fs.rmSync(work, { recursive: true, force: true });
  });
  execFileSync(bin('tools/cbusctl/cbusctl'), ['create', bus, '--capacity', '65536'], { stdio: 'ignore' });
  const ini = fs.readFileSync(path.join(build, 'consumers/cost/cost.ini'), 'utf8')
    .replaceAll('%S/cost/%b', path.join(work, 'cost')).replace(/^file = .*$/m, `file = ${prices}`);
  fs.writeFileSync(path.join(work, 'cost.ini'), ini);
  const spawnLog = (name, file, args, stdout = 'ignore') => {
    const p = spawn(file, args, { stdio: ['ignore', stdout, fs.openSync(path.join(work, name + '.log'), 'w')] });
    procs.push(p);
    return p;
  };
  spawnLog('cost', bin('consumers/cost/cbus-cost'), ['--bus', bus, '--config', path.join(work, 'cost.ini')]);
  spawnLog('ratelimit', bin('consumers/ratelimit/cbus-ratelimit'), ['--bus', bus, '--config',
    path.join(build, 'consumers/ratelimit/ratelimit.ini'), '--status-file', path.join(work, 'rl.json')]);
  const web = spawnLog('web', bin('consumers/web/cbus-web'), ['--bus', bus, '--listen', '127.0.0.1:0',
    '--cost-snapshot', path.join(work, 'cost/snapshot.json'), '--ratelimit-status', path.join(work, 'rl.json'),
    '--status-file', path.join(work, 'web.status.json')], 'pipe');
  const port = await new Promise((resolve, reject) => {
    let out = '';
    web.stdout.on('data', (d) => { out += d; const m = /listening \S+ (\d+)/.exec(out); if (m) resolve(Number(m[1])); });
    web.on('exit', (c) => reject(new Error(`cbus-web exited ${c}`)));
  });
  await sleep(500); // all three attached before the load starts
  execFileSync(bin('tools/loadgen/cbus-loadgen'), ['--bus', bus, '--rate', '400', '--duration', '2s', '--users', '10',
    '--prices', prices, '--admit', '--quiet', '--seed', '3'], { stdio: 'ignore' });
  const names = new Set();
  const end = Date.now() + 15000;
  let missing = [...used];
  while (Date.now() < end && missing.length) {
    await sleep(500);
    names.clear();
    const textfile = path.join(work, 'cost/cbus_cost.prom');
    if (fs.existsSync(textfile)) for (const n of exposed(fs.readFileSync(textfile, 'utf8'))) names.add(n);
    const r = await get(`http://127.0.0.1:${port}/metrics`);
    assert.equal(r.status, 200);
    for (const n of exposed(r.body)) names.add(n);
    missing = [...used].filter((n) => !names.has(n));
  }
  assert.deepEqual(missing, [], `metrics the dashboard uses that no daemon exports (exported: ${[...names].sort().join(' ')})`);
});
