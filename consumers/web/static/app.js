/* cbus-web's dashboard: plain DOM and SVG, no library, no build step.
 * Reads /v1/state every second and follows /v1/events and
 * /v1/runs/TRACE/progress as Server-Sent Events through fetch(), so a
 * bearer token can go in a header (EventSource cannot send one).  The
 * token comes from the URL fragment (#token=..., never sent to a server)
 * or the form that appears on a 401, and is kept in sessionStorage.
 * Every string shown came from a producer: it is set as textContent,
 * never as HTML. */
'use strict';

const HISTORY = 120;           /* samples kept for the charts (one a second) */
const TAIL_ROWS = 200;
const COLORS = ['--c0', '--c1', '--c2', '--c3', '--c4', '--c5'];

const $ = (id) => document.getElementById(id);
const css = getComputedStyle(document.documentElement);
const color = (i) => css.getPropertyValue(COLORS[i % COLORS.length]).trim();

let token = sessionStorage.getItem('cbus-token') || '';
const frag = new URLSearchParams(location.hash.slice(1));
if (frag.get('token')) {
  token = frag.get('token');
  sessionStorage.setItem('cbus-token', token);
  history.replaceState(null, '', location.pathname + location.search);
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h.Authorization = 'Bearer ' + token;
  return h;
}

function setStatus(text, cls) {
  const s = $('status');
  s.textContent = text;
  s.className = 'status ' + (cls || '');
}

function askToken() {
  $('token-form').hidden = false;
  setStatus('a token is required', 'bad');
}

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token-input').value.trim();
  sessionStorage.setItem('cbus-token', token);
  $('token-form').hidden = true;
  poll();
  tail.start();
});

/* ---- formatting ---------------------------------------------------------- */

const fmtInt = (v) => (v === null || v === undefined ? '-' : Number(v).toLocaleString('en-US'));
const fmtRate = (v) => (v === null || v === undefined ? '-' : v >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(1));
function fmtUsd(s) {
  if (s === null || s === undefined) return '-';
  const v = Number(s);
  return '$' + (v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(2) : v.toFixed(4));
}
function fmtMs(v) {
  if (v === null || v === undefined) return '-';
  if (v >= 1000) return (v / 1000).toFixed(2) + ' s';
  return (v >= 10 ? Math.round(v) : v >= 1 ? v.toFixed(1) : v.toFixed(3)) + ' ms';
}
function fmtAge(ns) {
  const ms = ns / 1e6;
  return ms < 1000 ? Math.round(ms) + ' ms' : (ms / 1000).toFixed(1) + ' s';
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = el('td', c.t, c.c);
    if (c.k) td.dataset.k = c.k;
    tr.appendChild(td);
  }
  return tr;
}

/* ---- SVG line charts --------------------------------------------------------- */

const SVGNS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

/* series: [{name, values: [number|null], color}] over the last HISTORY samples */
function drawChart(node, legend, series, fmt) {
  /* The drawing's units are the element's pixels: text is never stretched. */
  const W = Math.max(100, node.clientWidth || 600), H = Math.max(40, node.clientHeight || 140);
  node.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  while (node.firstChild) node.removeChild(node.firstChild);
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  if (max <= 0) max = 1;
  for (let g = 1; g <= 3; g++) {
    const y = H - (H - 14) * g / 3;
    node.appendChild(svg('line', { x1: 0, x2: W, y1: y, y2: y, class: 'grid' }));
    const t = svg('text', { x: 4, y: y - 2, class: 'axis' });
    t.textContent = fmt(max * g / 3);
    node.appendChild(t);
  }
  for (const s of series) {
    const pts = [];
    const n = s.values.length;
    s.values.forEach((v, i) => {
      if (v === null) return;
      const x = W - (n - 1 - i) * (W / (HISTORY - 1));
      const y = H - 2 - (H - 16) * (v / max);
      pts.push(x.toFixed(1) + ',' + y.toFixed(1));
    });
    if (pts.length) node.appendChild(svg('polyline', { points: pts.join(' '), stroke: s.color }));
  }
  if (legend) {
    legend.textContent = '';
    for (const s of series) {
      const span = el('span');
      const i = el('i');
      i.style.background = s.color;
      span.appendChild(i);
      span.appendChild(document.createTextNode(s.name));
      legend.appendChild(span);
    }
  }
}

/* ---- state ----------------------------------------------------------------------- */

const samples = { rate: [], spend: [], dropped: [], lost: [], lag: new Map() };

function push(arr, v) {
  arr.push(v);
  if (arr.length > HISTORY) arr.shift();
}

function render(st) {
  const bus = st.bus;
  $('bus-name').textContent = bus.bus + '  ' + bus.bus_id;
  $('bus-rate').textContent = fmtRate(bus.tail_rate);
  $('bus-tail').textContent = fmtInt(bus.tail);
  $('bus-tail').dataset.value = bus.tail;
  $('bus-dropped').textContent = fmtInt(bus.dropped);
  $('bus-dropped').dataset.value = bus.dropped;
  $('bus-untethered').textContent = fmtInt(bus.untethered);
  $('web-clients').textContent = fmtInt(st.daemon.clients);

  const tbody = $('consumers').querySelector('tbody');
  tbody.textContent = '';
  let lostSum = 0;
  const seen = new Set();
  for (const c of bus.consumers) {
    const tr = row([
      { t: c.name, k: 'name' }, { t: c.mode + (c.state !== 'active' ? ' (' + c.state + ')' : ''), k: 'mode' },
      { t: fmtRate(c.rate), c: 'r', k: 'rate' }, { t: fmtInt(c.lag), c: 'r', k: 'lag' },
      { t: fmtInt(c.consumed), c: 'r', k: 'consumed' }, { t: fmtInt(c.lost), c: 'r', k: 'lost' },
      { t: fmtInt(c.abandoned), c: 'r', k: 'abandoned' },
      { t: c.state === 'active' ? fmtAge(c.heartbeat_age_ns) : '-', c: 'r', k: 'heartbeat' },
    ]);
    tr.dataset.consumer = c.name;
    tr.dataset.consumed = c.consumed;
    tr.dataset.lost = c.lost;
    tbody.appendChild(tr);
    lostSum += c.lost;
    if (c.state !== 'active') continue;
    seen.add(c.name);
    if (!samples.lag.has(c.name)) samples.lag.set(c.name, new Array(samples.rate.length).fill(null));
    push(samples.lag.get(c.name), c.lag);
  }
  for (const [name, arr] of samples.lag) if (!seen.has(name)) push(arr, null);
  push(samples.rate, bus.tail_rate);
  push(samples.dropped, bus.dropped);
  push(samples.lost, lostSum);
  const series = [{ name: 'events/s', values: samples.rate, color: color(0) }];
  let i = 1;
  for (const [name, arr] of samples.lag) series.push({ name: 'lag ' + name, values: arr, color: color(i++) });
  drawChart($('chart-rate'), $('legend-rate'), series, fmtRate);
  drawChart($('chart-drops'), $('legend-drops'), [
    { name: 'dropped by producers', values: samples.dropped, color: color(4) },
    { name: 'lost by consumers', values: samples.lost, color: color(2) },
  ], fmtInt);

  renderCost(st);
  renderThrottles(st);
  renderErrors(st.errors || []);
}

function renderCost(st) {
  const cost = st.cost;
  const models = $('spend-models');
  const lat = $('latency').querySelector('tbody');
  models.textContent = '';
  lat.textContent = '';
  if (!cost || !cost.total) {
    $('spend-total').textContent = '-';
    $('cost-note').textContent = 'no cost snapshot: ' + (st.cost_error || 'cbus-cost not running');
    push(samples.spend, null);
    drawChart($('chart-spend'), null, [{ name: 'USD', values: samples.spend, color: color(1) }], fmtUsd);
    return;
  }
  $('cost-note').textContent = 'from cbus-cost, ' + fmtInt(cost.total.requests) + ' requests';
  $('spend-total').textContent = fmtUsd(cost.total.cost_usd);
  $('spend-total').dataset.value = cost.total.cost_usd;
  push(samples.spend, Number(cost.total.cost_usd));
  drawChart($('chart-spend'), null, [{ name: 'USD', values: samples.spend, color: color(1) }], fmtUsd);
  const list = (cost.models || []).slice().sort((a, b) => Number(b.cost_usd) - Number(a.cost_usd));
  const top = list.length ? Number(list[0].cost_usd) || 1 : 1;
  for (const m of list.slice(0, 8)) {
    const bar = el('div', null, 'bar');
    bar.appendChild(el('span', m.model));
    const s = svg('svg', { viewBox: '0 0 100 10', preserveAspectRatio: 'none' });
    s.appendChild(svg('rect', { x: 0, y: 1, height: 8, width: Math.max(0.5, 100 * Number(m.cost_usd) / top) }));
    bar.appendChild(s);
    bar.appendChild(el('span', fmtUsd(m.cost_usd), 'r'));
    models.appendChild(bar);
  }
  const byRequests = list.slice().sort((a, b) => b.requests - a.requests).slice(0, 10);
  const rows = [Object.assign({ model: 'all models' }, cost.total)].concat(byRequests);
  for (const m of rows) {
    const d = m.duration_ms || {}, t = m.ttft_ms || {};
    lat.appendChild(row([
      { t: m.model }, { t: fmtInt(m.requests), c: 'r' },
      { t: fmtMs(d.p50), c: 'r' }, { t: fmtMs(d.p95), c: 'r' }, { t: fmtMs(d.p99), c: 'r' },
      { t: fmtMs(t.p50), c: 'r' }, { t: fmtMs(t.p95), c: 'r' }, { t: fmtMs(t.p99), c: 'r' },
    ]));
  }
}

function renderThrottles(st) {
  const tb = $('throttles').querySelector('tbody');
  tb.textContent = '';
  for (const k of st.throttled || []) {
    tb.appendChild(row([{ t: k.key }, { t: fmtMs(k.retry_after_ms), c: 'r' },
      { t: fmtInt(k.requests), c: 'r' }, { t: fmtInt(k.tokens), c: 'r' }]));
  }
  const rl = st.ratelimit;
  $('rl-note').textContent = rl
    ? fmtInt(rl.limiter && rl.limiter.throttles) + ' throttles, ' + fmtInt(rl.limiter && rl.limiter.over_limit) + ' over limit (cbus-ratelimit)'
    : 'no rate limiter status: ' + (st.ratelimit_error || 'not running');
}

function renderErrors(errors) {
  const ul = $('errors');
  ul.textContent = '';
  for (const e of errors.slice(0, 12)) {
    const when = new Date(e.ts_realtime_ns / 1e6).toLocaleTimeString();
    ul.appendChild(el('li', when + '  ' + e.kind + '  ' + (e.name || '') + (e.http_status ? ' ' + e.http_status : '') +
      (e.model ? '  ' + e.model : '') + (e.user ? '  user ' + e.user : ''), 'k-error'));
  }
  if (!errors.length) ul.appendChild(el('li', 'none', 'dim'));
}

let polling = false;
async function poll() {
  if (polling) return;
  polling = true;
  try {
    const r = await fetch('/v1/state', { headers: headers(), cache: 'no-store' });
    if (r.status === 401) { askToken(); return; }
    if (!r.ok) { setStatus('state: HTTP ' + r.status, 'bad'); return; }
    render(await r.json());
    setStatus('live', 'live');
    document.body.dataset.ready = '1';
  } catch (e) {
    setStatus('daemon unreachable', 'bad');
  } finally {
    polling = false;
  }
}

/* ---- Server-Sent Events over fetch ----------------------------------------------- */

/* Follows url; onEvent({id, event, data}) for each frame.  Reconnects with
 * Last-Event-ID after a drop (the daemon resumes from its history). */
function follow(url, onEvent, onError) {
  const ctl = { stopped: false, abort: null, lastId: null };
  async function run() {
    while (!ctl.stopped) {
      const ac = new AbortController();
      ctl.abort = ac;
      let r;
      try {
        const h = { Accept: 'text/event-stream' };
        if (ctl.lastId) h['Last-Event-ID'] = ctl.lastId;
        r = await fetch(url, { headers: headers(h), signal: ac.signal, cache: 'no-store' });
      } catch (e) {
        if (ctl.stopped) return;
        await new Promise((res) => setTimeout(res, 2000));
        continue;
      }
      if (r.status === 401) { askToken(); return; }
      if (!r.ok) {
        let msg = 'HTTP ' + r.status;
        try { msg = (await r.json()).error; } catch (e) { /* not JSON */ }
        if (onError) onError(msg);
        return;
      }
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          /* One pass over the chunk, one slice at the end: a busy bus
           * delivers megabytes a second. */
          let pos = 0, at;
          while ((at = buf.indexOf('\n\n', pos)) >= 0) {
            const block = buf.slice(pos, at);
            pos = at + 2;
            const f = { id: null, event: 'message', data: '' };
            for (const line of block.split('\n')) {
              if (line.startsWith('id: ')) f.id = line.slice(4);
              else if (line.startsWith('event: ')) f.event = line.slice(7);
              else if (line.startsWith('data: ')) f.data += line.slice(6);
            }
            if (f.id) ctl.lastId = f.id;
            if (f.data) onEvent(f);
            if (f.event === 'done') { ctl.stopped = true; return; }
          }
          buf = buf.slice(pos);
        }
      } catch (e) {
        if (ctl.stopped) return;
      }
      await new Promise((res) => setTimeout(res, 1000));
    }
  }
  run();
  return { stop() { ctl.stopped = true; if (ctl.abort) ctl.abort.abort(); } };
}

/* ---- live tail ---------------------------------------------------------------------- */

/* Frames are counted as they come and drawn four times a second: only
 * the newest TAIL_ROWS are parsed and put in the table. */
const tail = {
  sub: null, paused: false, count: 0, pending: [], timer: null,
  start() {
    if (this.sub) this.sub.stop();
    const q = new URLSearchParams();
    for (const inp of $('tail-form').querySelectorAll('input')) if (inp.value.trim()) q.set(inp.name, inp.value.trim());
    $('tail-error').hidden = true;
    $('tail').querySelector('tbody').textContent = '';
    this.count = 0;
    this.pending = [];
    $('tail-count').textContent = '0 events';
    if (!this.timer) this.timer = setInterval(() => this.flush(), 250);
    this.sub = follow('/v1/events' + (q.toString() ? '?' + q : ''), (f) => this.add(f), (msg) => {
      $('tail-error').textContent = msg;
      $('tail-error').hidden = false;
    });
  },
  add(f) {
    if (f.event !== 'message') return; /* lost, reset, cut: noted by the next frames */
    this.count++;
    if (this.paused) return;
    this.pending.push(f.data);
    if (this.pending.length > 2 * TAIL_ROWS) this.pending.splice(0, this.pending.length - TAIL_ROWS);
  },
  flush() {
    $('tail-count').textContent = fmtInt(this.count) + ' events';
    const batch = this.pending.slice(-TAIL_ROWS);
    this.pending = [];
    for (const data of batch) this.draw(JSON.parse(data));
  },
  draw(e) {
    const tb = $('tail').querySelector('tbody');
    const cls = e.kind.endsWith('_error') ? 'k-error' : e.kind.endsWith('_end') ? 'k-end' : e.kind.includes('token') || e.kind.includes('stream') ? 'k-token' : '';
    const tr = row([
      { t: new Date(e.ts_realtime_ns / 1e6).toLocaleTimeString() }, { t: e.kind, c: cls, k: 'kind' },
      { t: e.user || '' }, { t: e.model || e.name || '' }, { t: e.preview || '' },
      { t: e.trace_id || '', c: 'trace', k: 'trace' },
    ]);
    tr.dataset.kind = e.kind;
    tb.insertBefore(tr, tb.firstChild);
    while (tb.rows.length > TAIL_ROWS) tb.deleteRow(-1);
  },
};

$('tail-form').addEventListener('submit', (e) => { e.preventDefault(); tail.start(); });
$('tail-pause').addEventListener('click', () => {
  tail.paused = !tail.paused;
  $('tail-pause').textContent = tail.paused ? 'resume' : 'pause';
});
$('tail').addEventListener('click', (e) => {
  const td = e.target.closest('td.trace');
  if (td && td.textContent) { $('run-trace').value = td.textContent; run.start(td.textContent); }
});

/* ---- run view --------------------------------------------------------------------- */

/* A trace's tree: each step indented under its parent run (the frames
 * carry parent_run_id), its tokens appended as they stream. */
const run = {
  sub: null, steps: new Map(), depth: new Map(),
  start(trace) {
    if (this.sub) this.sub.stop();
    this.steps.clear();
    this.depth.clear();
    $('run-steps').querySelector('tbody').textContent = '';
    $('run-summary').textContent = 'following ' + trace;
    this.sub = follow('/v1/runs/' + encodeURIComponent(trace) + '/progress', (f) => this.add(f),
      (msg) => { $('run-summary').textContent = msg; });
  },
  add(f) {
    if (f.event !== 'progress') return;
    const p = JSON.parse(f.data);
    let s = this.steps.get(p.step);
    if (!s) {
      const tr = row([{ t: p.step, c: 'r', k: 'step' }, { t: '', k: 'action' }, { t: '', k: 'status' },
        { t: '0', c: 'r', k: 'streamed' }, { t: '', c: 'chunks', k: 'chunks' }]);
      tr.dataset.step = p.step;
      const d = p.parent_run_id && this.depth.has(p.parent_run_id) ? this.depth.get(p.parent_run_id) + 1 : 0;
      this.depth.set(p.run_id, d);
      tr.dataset.depth = d;
      tr.querySelector('[data-k="action"]').style.paddingLeft = (6 + 18 * Math.min(d, 12)) + 'px';
      const tb = $('run-steps').querySelector('tbody');
      const after = [...tb.rows].find((r) => Number(r.dataset.step) > p.step);
      tb.insertBefore(tr, after || null);
      s = { tr, text: '' };
      this.steps.set(p.step, s);
    }
    const cell = (k) => s.tr.querySelector('[data-k="' + k + '"]');
    cell('action').textContent = (Number(s.tr.dataset.depth) > 0 ? '\u2514 ' : '') + p.action;
    cell('status').textContent = p.status + (p.error ? ' (' + p.error + ')' : '');
    cell('status').className = 's-' + p.status;
    s.tr.dataset.status = p.status;
    cell('streamed').textContent = p.tokens.step_streamed;
    if (p.chunk !== undefined) { s.text += p.chunk; cell('chunks').textContent = s.text; }
    $('run-summary').textContent = p.steps + ' steps, ' + fmtInt(p.tokens.input) + ' in / ' + fmtInt(p.tokens.output) +
      ' out tokens, ' + fmtInt(p.tokens.streamed) + ' streamed, cost ' + (p.cost_usd === null ? '-' : fmtUsd(p.cost_usd)) +
      (p.done ? ', done' : '');
    $('run-summary').dataset.done = p.done ? '1' : '0';
  },
};

$('run-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const t = $('run-trace').value.trim();
  if (t) run.start(t);
});

const initialTrace = new URLSearchParams(location.search).get('trace');
if (initialTrace) { $('run-trace').value = initialTrace; run.start(initialTrace); }
poll();
setInterval(poll, 1000);
tail.start();
