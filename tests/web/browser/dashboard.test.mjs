// cbus-web's dashboard in a real browser: Debian's /usr/bin/chromium,
// headless, driven by playwright-core (which downloads nothing).  A real
// bus, the real cbus-cost, cbus-ratelimit and cbus-web daemons of the build
// under test, real load from cbus-loadgen.  Checks: the page loads with no
// console error, its numbers are the bus's (cbusctl stat --json) and the
// cost snapshot's, the live tail updates, the run view shows each step of
// a trace as it runs.  Screenshots go to $CBUS_BUILD_DIR/web-artifacts/.
//
//   CBUS_BUILD_DIR=build/release npm test     (from this directory)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../..');
const build = path.resolve(root, process.env.CBUS_BUILD_DIR || 'build/release');
const bin = {
  cbusctl: path.join(build, 'tools/cbusctl/cbusctl'),
  cost: path.join(build, 'consumers/cost/cbus-cost'),
  ratelimit: path.join(build, 'consumers/ratelimit/cbus-ratelimit'),
  web: path.join(build, 'consumers/web/cbus-web'),
  loadgen: path.join(build, 'tools/loadgen/cbus-loadgen'),
};
const CHROMIUM = process.env.CBUS_CHROMIUM || '/usr/bin/chromium';
const prices = path.join(root, 'consumers/cost/model_prices_and_context_window.json');
const artifacts = path.join(build, 'web-artifacts');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, fn, ms = 15000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
}

function stat(bus) {
  return JSON.parse(execFileSync(bin.cbusctl, ['stat', bus, '--json'], { encoding: 'utf8' }));
}

function emit(bus, args) {
  execFileSync(bin.cbusctl, ['emit', bus, ...args], { stdio: 'pipe' });
}

test('the dashboard in headless Chromium', { timeout: 120000 }, async (t) => {
  for (const [name, p] of Object.entries(bin)) assert.ok(fs.existsSync(p), `${name}: ${p} is not built`);
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} missing: apt-get install chromium (scripts/deps.sh)`);
  fs.mkdirSync(artifacts, { recursive: true });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'cbus-web-browser-'));
  const bus = `webui${process.pid}`;
  const procs = [];
  let browser;
  const start = (name, file, args) => {
    const log = fs.openSync(path.join(work, `${name}.log`), 'w');
    const p = spawn(file, args, { stdio: ['ignore', name === 'web' ? 'pipe' : log, log] });
    p.name = name;
    procs.push(p);
    return p;
  };
  t.after(async () => {
    if (browser) await browser.close();
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    try { execFileSync(bin.cbusctl, ['destroy', bus], { stdio: 'ignore' }); } catch (e) { /* gone */ }
    fs.rmSync(work, { recursive: true, force: true });
  });

  execFileSync(bin.cbusctl, ['create', bus, '--capacity', '65536'], { stdio: 'ignore' });
  const costIni = fs.readFileSync(path.join(build, 'consumers/cost/cost.ini'), 'utf8')
    .replaceAll('%S/cost/%b', path.join(work, 'cost')).replace(/^file = .*$/m, `file = ${prices}`);
  fs.writeFileSync(path.join(work, 'cost.ini'), costIni);
  start('cost', bin.cost, ['--bus', bus, '--config', path.join(work, 'cost.ini')]);
  start('ratelimit', bin.ratelimit, ['--bus', bus, '--config', path.join(build, 'consumers/ratelimit/ratelimit.ini'),
    '--status-file', path.join(work, 'rl.json')]);
  const web = start('web', bin.web, ['--bus', bus, '--listen', '127.0.0.1:0', '--prices', prices,
    '--cost-snapshot', path.join(work, 'cost/snapshot.json'), '--ratelimit-status', path.join(work, 'rl.json'),
    '--status-file', path.join(work, 'web.status.json')]);
  const port = await new Promise((resolve, reject) => {
    let out = '';
    web.stdout.on('data', (d) => {
      out += d;
      const m = /listening \S+ (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    web.on('exit', (code) => reject(new Error(`cbus-web exited ${code}: ${fs.readFileSync(path.join(work, 'web.log'), 'utf8')}`)));
  });
  await until('three consumers attached', () => stat(bus).consumers.filter((c) => c.alive).length === 3);
  const url = `http://127.0.0.1:${port}/`;

  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    // A stream the page aborts on purpose (a new filter, the run view) is not a failure.
    if (!/\/v1\/(events|runs)/.test(r.url())) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });

  await t.test('loads with no console errors', async () => {
    const resp = await page.goto(url);
    assert.equal(resp.status(), 200);
    await page.waitForSelector('body[data-ready="1"]', { timeout: 10000 });
    assert.deepEqual(problems, []);
  });

  const loadgen = spawn(bin.loadgen, ['--bus', bus, '--rate', '300', '--duration', '4s', '--users', '30',
    '--prices', prices, '--admit', '--quiet', '--seed', '7'], { stdio: 'ignore' });
  procs.push(loadgen);

  await t.test('the live tail updates', async () => {
    const rows = () => page.locator('#tail tbody tr').count();
    await until('tail rows', async () => (await rows()) >= 20);
    const first = await page.locator('#tail tbody tr').first().getAttribute('data-kind');
    const count1 = Number((await page.textContent('#tail-count')).replace(/\D/g, ''));
    await sleep(700);
    const count2 = Number((await page.textContent('#tail-count')).replace(/\D/g, ''));
    assert.ok(count2 > count1, `the tail moved: ${count1} then ${count2}`);
    assert.ok(first, 'a row has its kind');
    // A filter: only llm_end rows.
    await page.fill('#tail-form input[name=kind]', 'llm_end');
    await page.click('#tail-form button[type=submit]');
    // The load may be over by now, and the new stream starts at the newest
    // event: llm_end and llm_start of our own until three llm_end show.
    await until('llm_end rows', async () => {
      if ((await page.locator('#tail tbody tr[data-kind="llm_end"]').count()) >= 3) return true;
      emit(bus, ['--kind', 'llm_start', '--user', 'tail-check', '--model', 'gpt-4o']);
      emit(bus, ['--kind', 'llm_end', '--user', 'tail-check', '--model', 'gpt-4o', '--input-tokens', '1', '--output-tokens', '1']);
      return false;
    });
    const kinds = await page.$$eval('#tail tbody tr', (trs) => trs.map((tr) => tr.dataset.kind));
    assert.deepEqual([...new Set(kinds)], ['llm_end']);
    // An unknown kind is the daemon's 400, shown to the user.
    await page.fill('#tail-form input[name=kind]', 'llm_finish');
    await page.click('#tail-form button[type=submit]');
    await page.waitForSelector('#tail-error:not([hidden])');
    assert.match(await page.textContent('#tail-error'), /unknown kind 'llm_finish'/);
    // Chromium logs every 4xx response on the console: this one we asked for.
    const at = problems.findIndex((m) => /status of 400 \(Bad Request\)/.test(m));
    assert.ok(at >= 0, 'the 400 reached the browser');
    problems.splice(at, 1);
    await page.fill('#tail-form input[name=kind]', '');
    await page.click('#tail-form button[type=submit]');
  });

  await new Promise((r) => (loadgen.exitCode !== null ? r() : loadgen.on('exit', r)));
  assert.equal(loadgen.exitCode, 0, 'cbus-loadgen');

  await t.test('numbers match cbusctl stat --json and the cost snapshot', async () => {
    // The bus is quiet now: the page must settle on exactly the bus's numbers.
    const result = await until('the page to show the bus numbers', async () => {
      const s = stat(bus);
      const shown = await page.evaluate(() => ({
        tail: Number(document.getElementById('bus-tail').dataset.value),
        dropped: Number(document.getElementById('bus-dropped').dataset.value),
        consumers: [...document.querySelectorAll('#consumers tbody tr')].map((tr) => ({
          name: tr.dataset.consumer, consumed: Number(tr.dataset.consumed), lost: Number(tr.dataset.lost),
        })).sort((a, b) => a.name.localeCompare(b.name)),
      }));
      const want = {
        tail: s.tail, dropped: s.dropped,
        consumers: s.consumers.map((c) => ({ name: c.name, consumed: c.consumed, lost: c.lost }))
          .sort((a, b) => a.name.localeCompare(b.name)),
      };
      return JSON.stringify(shown) === JSON.stringify(want) ? { shown, want } : false;
    });
    assert.ok(result.shown.tail > 1000, `load reached the bus (tail ${result.shown.tail})`);
    assert.deepEqual(result.shown.consumers.map((c) => c.name), ['cost', 'ratelimit', 'web']);
    // Spend: what cbus-cost wrote, to the pico-dollar.
    await until('spend to match the snapshot', async () => {
      const snap = JSON.parse(fs.readFileSync(path.join(work, 'cost/snapshot.json'), 'utf8'));
      const shown = await page.getAttribute('#spend-total', 'data-value');
      return snap.total.requests > 0 && shown === snap.total.cost_usd;
    });
    const bars = await page.locator('#spend-models .bar').count();
    assert.ok(bars >= 3, `spend by model: ${bars} models`);
    const lat = await page.locator('#latency tbody tr').count();
    assert.ok(lat >= 2, `latency rows: ${lat}`);
  });

  await t.test('the run view shows each step as it runs', async () => {
    const trace = '5ca1ab1e00000000000000000000beef';
    const r0 = '00000000-0000-4000-8000-000000000001';
    const r1 = '00000000-0000-4000-8000-000000000002';
    const r2 = '00000000-0000-4000-8000-000000000003';
    await page.fill('#run-trace', trace);
    await page.click('#run-form button[type=submit]');
    const ctx = (run, parent) => ['--trace-id', trace, '--run-id', run, ...(parent ? ['--parent-run-id', parent] : []),
      '--user', 'ann', '--provider', 'openai', '--model', 'gpt-4o'];
    emit(bus, ['--kind', 'chain_start', '--name', 'AgentExecutor', ...ctx(r0)]);
    await page.waitForSelector('#run-steps tr[data-step="1"][data-status="in_progress"]');
    emit(bus, ['--kind', 'llm_start', ...ctx(r1, r0)]);
    for (const [i, w] of ['Hello', ' from', ' cbus'].entries())
      emit(bus, ['--kind', 'llm_new_token', '--index', String(i), '--preview', w, ...ctx(r1, r0)]);
    await until('streamed tokens', async () =>
      (await page.textContent('#run-steps tr[data-step="2"] [data-k="chunks"]')) === 'Hello from cbus');
    assert.equal(await page.getAttribute('#run-steps tr[data-step="2"]', 'data-status'), 'in_progress');
    emit(bus, ['--kind', 'llm_end', '--input-tokens', '1000', '--output-tokens', '100', ...ctx(r1, r0)]);
    await page.waitForSelector('#run-steps tr[data-step="2"][data-status="complete"]');
    emit(bus, ['--kind', 'tool_start', '--name', 'search', ...ctx(r2, r0)]);
    emit(bus, ['--kind', 'tool_error', '--name', 'TimeoutError', ...ctx(r2, r0)]);
    await page.waitForSelector('#run-steps tr[data-step="3"][data-status="error"]');
    emit(bus, ['--kind', 'chain_end', ...ctx(r0)]);
    await page.waitForSelector('#run-summary[data-done="1"]');
    const steps = await page.$$eval('#run-steps tbody tr', (trs) => trs.map((tr) => [
      tr.dataset.step, tr.dataset.depth, tr.querySelector('[data-k="action"]').textContent, tr.dataset.status]));
    // The tree: the LLM call and the tool under the agent's chain.
    assert.deepEqual(steps, [['1', '0', 'chain AgentExecutor', 'complete'], ['2', '1', '\u2514 llm gpt-4o', 'complete'],
      ['3', '1', '\u2514 tool search', 'error']]);
    // gpt-4o: 1000 * 2.5e-6 + 100 * 1e-5 USD
    assert.match(await page.textContent('#run-summary'), /1,000 in \/ 100 out tokens, 3 streamed, cost \$0\.0035, done/);
  });

  await t.test('screenshot kept as an artefact', async () => {
    // One more burst so the charts and the tail have something to show.
    const lg = spawn(bin.loadgen, ['--bus', bus, '--rate', '400', '--duration', '3s', '--users', '30',
      '--prices', prices, '--admit', '--quiet', '--seed', '8'], { stdio: 'ignore' });
    procs.push(lg);
    await sleep(2500);
    const file = path.join(artifacts, 'dashboard.png');
    await page.screenshot({ path: file, fullPage: true });
    assert.ok(fs.statSync(file).size > 20000, 'a real picture');
    if (process.env.CBUS_WEB_DOCS_SCREENSHOT) fs.copyFileSync(file, process.env.CBUS_WEB_DOCS_SCREENSHOT);
    await new Promise((r) => (lg.exitCode !== null ? r() : lg.on('exit', r)));
    assert.deepEqual(problems, [], 'no console errors during the whole run');
  });

  await t.test('daemons stop cleanly', async () => {
    await browser.close();
    browser = null;
    for (const p of procs.filter((x) => x.name)) {
      const done = new Promise((r) => (p.exitCode !== null ? r() : p.on('exit', r)));
      p.kill('SIGTERM');
      await done;
      assert.equal(p.exitCode, 0, `${p.name} exit status (log ${fs.readFileSync(path.join(work, p.name + '.log'), 'utf8').slice(-400)})`);
    }
  });
});
