// QKD node dashboard: renders a DashboardState (src/dashboard/types.ts) into the page.
// Plain browser JavaScript, no dependencies, no build step. Updates arrive over Server-Sent Events
// (/api/events); if the stream fails it falls back to polling /api/state every 2 s.
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ formatting

function fmtPct(x, digits = 2) {
  return x == null || !isFinite(x) ? '–' : `${(x * 100).toFixed(digits)} %`;
}
function fmtSi(x, unit, digits = 2) {
  if (x == null || !isFinite(x)) return '–';
  const a = Math.abs(x);
  const [d, p] = a >= 1e9 ? [1e9, 'G'] : a >= 1e6 ? [1e6, 'M'] : a >= 1e3 ? [1e3, 'k'] : [1, ''];
  return `${(x / d).toFixed(d === 1 && Number.isInteger(x) ? 0 : digits)} ${p}${unit}`;
}
const fmtHz = (x) => fmtSi(x, 'Hz');
const fmtBps = (x) => fmtSi(x, 'bit/s');
function fmtCount(x) {
  if (x == null || !isFinite(x)) return '–';
  return Math.round(x).toLocaleString('en-US');
}
function fmtSeconds(s) {
  if (s == null || !isFinite(s)) return '–';
  const a = Math.abs(s);
  const sign = s < 0 ? '−' : s > 0 ? '+' : '';
  if (a === 0) return '0 s';
  if (a < 1e-9) return `${sign}${(a * 1e12).toFixed(1)} ps`;
  if (a < 1e-6) return `${sign}${(a * 1e9).toFixed(3)} ns`;
  if (a < 1e-3) return `${sign}${(a * 1e6).toFixed(3)} µs`;
  if (a < 1) return `${sign}${(a * 1e3).toFixed(2)} ms`;
  return `${sign}${a.toFixed(2)} s`;
}
function fmtDuration(s) {
  if (s == null || !isFinite(s)) return '–';
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${(s / 60).toFixed(1)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}
function fmtMs(s) {
  return s == null || !isFinite(s) ? '–' : `${(s * 1e3).toFixed(1)} ms`;
}
function fmtTime(ms) {
  return new Date(ms).toISOString().slice(11, 19);
}
function fmtP(p) {
  if (p == null || !isFinite(p)) return '–';
  return p < 1e-4 ? p.toExponential(1) : p.toFixed(4);
}

// ------------------------------------------------------------------ tiny DOM/SVG helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}
function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}
function svgText(x, y, text, attrs = {}) {
  const t = svg('text', { x, y, ...attrs });
  t.textContent = text;
  return t;
}
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}
function setBadge(node, text, cls) {
  node.textContent = text;
  node.className = `${node.classList.contains('pill') ? 'pill' : 'badge'} ${cls || ''}`.trim();
}

// ------------------------------------------------------------------ charts

/**
 * Line chart of one or more series [{points: [[tMs, v]...], color, label}] into an <svg> with a
 * viewBox; optional dashed threshold line.
 */
function lineChart(node, seriesList, opts) {
  const vb = node.viewBox.baseVal;
  const W = vb.width;
  const H = vb.height;
  const pad = { l: opts.padLeft ?? 52, r: 10, t: 10, b: opts.noXAxis ? 6 : 20 };
  node.replaceChildren();
  const all = seriesList.flatMap((s) => s.points);
  if (!all.length) {
    node.append(svgText(W / 2, H / 2, 'no data yet', { 'text-anchor': 'middle' }));
    return;
  }
  let t0 = Math.min(...all.map((p) => p[0]));
  let t1 = Math.max(...all.map((p) => p[0]));
  if (t1 === t0) t1 = t0 + 1000;
  let yMin = opts.yMin ?? 0;
  let yMax = Math.max(...all.map((p) => p[1]));
  if (opts.symmetric) {
    const a = niceMax(Math.max(Math.abs(yMax), Math.abs(Math.min(...all.map((p) => p[1]))), 1e-15));
    yMin = -a;
    yMax = a;
  } else {
    if (opts.threshold != null && !opts.thresholdOffscale) yMax = Math.max(yMax, opts.threshold * 1.15);
    yMax = niceMax(yMax * 1.05);
  }
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (W - pad.l - pad.r);
  const y = (v) => H - pad.b - ((v - yMin) / (yMax - yMin)) * (H - pad.t - pad.b);
  const ticks = opts.ticks ?? 4;
  for (let i = 0; i <= ticks; i++) {
    const v = yMin + ((yMax - yMin) * i) / ticks;
    node.append(svg('line', { class: 'grid', x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v) }));
    node.append(svgText(pad.l - 6, y(v) + 3, opts.yFormat(v), { 'text-anchor': 'end' }));
  }
  if (!opts.noXAxis) {
    for (let i = 0; i <= 4; i++) {
      const t = t0 + ((t1 - t0) * i) / 4;
      node.append(svgText(x(t), H - 5, fmtTime(t), { 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle' }));
    }
  }
  if (opts.threshold != null && opts.threshold <= yMax) {
    node.append(svg('line', { class: 'threshold', x1: pad.l, x2: W - pad.r, y1: y(opts.threshold), y2: y(opts.threshold) }));
    node.append(svgText(W - pad.r - 2, y(opts.threshold) - 4, opts.thresholdLabel ?? '', { 'text-anchor': 'end', class: 'threshold-label' }));
  }
  for (const s of seriesList) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(Math.min(Math.max(p[1], yMin), yMax)).toFixed(1)}`).join('');
    if (s.area) {
      const last = s.points[s.points.length - 1];
      node.append(svg('path', { class: 'area', fill: s.color, d: `${d}L${x(last[0]).toFixed(1)},${y(yMin)}L${x(s.points[0][0]).toFixed(1)},${y(yMin)}Z` }));
    }
    node.append(svg('path', { class: 'line', stroke: s.color, d, 'data-series': s.label || '' }));
    const last = s.points[s.points.length - 1];
    node.append(svg('circle', { cx: x(last[0]), cy: y(Math.min(Math.max(last[1], yMin), yMax)), r: 3, fill: s.color }));
  }
  if (seriesList.length > 1) {
    let lx = pad.l + 8;
    for (const s of seriesList) {
      if (!s.label) continue;
      node.append(svg('rect', { x: lx, y: pad.t + 10, width: 10, height: 3, fill: s.color }));
      node.append(svgText(lx + 14, pad.t + 15, s.label));
      lx += 14 + 8 * s.label.length + 14;
    }
  }
}

function histogramSvg(h) {
  const W = 260;
  const H = 90;
  const pad = { l: 4, r: 4, t: 4, b: 14 };
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': `timing histogram channel ${h.channel}` });
  const n = h.counts.length;
  if (!n) return s;
  const max = Math.max(1, ...h.counts);
  const x0 = h.startPs;
  const x1 = h.startPs + n * h.binWidthPs;
  const x = (ps) => pad.l + ((ps - x0) / (x1 - x0)) * (W - pad.l - pad.r);
  const y = (c) => H - pad.b - (c / max) * (H - pad.t - pad.b);
  if (h.windowStartPs != null && h.windowEndPs != null) {
    const a = x(Math.max(x0, h.windowStartPs));
    const b = x(Math.min(x1, h.windowEndPs));
    s.append(svg('rect', { class: 'window', x: a, y: pad.t, width: Math.max(0, b - a), height: H - pad.t - pad.b }));
  }
  let d = `M${x(x0)},${y(0)}`;
  for (let i = 0; i < n; i++) {
    const xa = x(x0 + i * h.binWidthPs);
    const xb = x(x0 + (i + 1) * h.binWidthPs);
    d += `L${xa.toFixed(1)},${y(h.counts[i]).toFixed(1)}L${xb.toFixed(1)},${y(h.counts[i]).toFixed(1)}`;
  }
  d += `L${x(x1)},${y(0)}Z`;
  s.append(svg('path', { class: 'bars', d }));
  const lbl = (ps) => (Math.abs(x1 - x0) >= 4000 ? `${(ps / 1000).toFixed(1)} ns` : `${Math.round(ps)} ps`);
  s.append(svgText(pad.l, H - 2, lbl(x0)));
  s.append(svgText(W / 2, H - 2, lbl((x0 + x1) / 2), { 'text-anchor': 'middle' }));
  s.append(svgText(W - pad.r, H - 2, lbl(x1), { 'text-anchor': 'end' }));
  return s;
}

// ------------------------------------------------------------------ panels

function renderHeader(st) {
  $('node-id').textContent = st.node.id;
  const meta = [st.node.role, st.node.mode, st.node.link, st.node.version && `v${st.node.version}`].filter(Boolean).join(' · ');
  $('node-meta').textContent = `${meta} · up ${fmtDuration((st.generatedAtMs - st.node.startedAtMs) / 1000)}`;
  const statusCls = { running: 'ok', starting: 'warn', degraded: 'warn', stopped: 'bad' }[st.status] || '';
  setBadge($('status'), st.status, statusCls);
  setBadge($('sync-pill'), st.sync.locked ? 'sync locked' : 'sync lost', st.sync.locked ? 'ok' : 'bad');
  const act = st.alarms.active;
  const crit = act.some((a) => a.severity === 'critical');
  setBadge($('alarm-pill'), act.length ? `${act.length} alarm${act.length > 1 ? 's' : ''}` : 'no alarms', act.length ? (crit ? 'bad' : 'warn') : 'ok');
  $('updated').textContent = `updated ${fmtTime(st.generatedAtMs)} UTC`;
}

function renderQber(st) {
  const q = st.series.qber;
  const last = q.length ? q[q.length - 1][1] : st.summary?.qber;
  const cur = $('qber-current');
  cur.textContent = fmtPct(last);
  cur.style.color = last != null && st.qberAbortThreshold != null && last > st.qberAbortThreshold ? 'var(--bad)' : '';
  const lastOf = (s) => (s && s.length ? s[s.length - 1][1] : null);
  const z = lastOf(st.series.qberZ) ?? st.summary?.qberByBasis?.Z;
  const xq = lastOf(st.series.qberX) ?? st.summary?.qberByBasis?.X;
  $('qber-bases').textContent = `Z basis ${fmtPct(z)} · X basis ${fmtPct(xq)}` + (st.qberAbortThreshold != null ? ` · abort above ${fmtPct(st.qberAbortThreshold, 1)}` : '');
  const series = [];
  if (st.series.qberZ?.length || st.series.qberX?.length) {
    series.push({ points: st.series.qberZ || [], color: 'var(--series-1)', label: 'Z' });
    series.push({ points: st.series.qberX || [], color: 'var(--series-2)', label: 'X' });
  } else {
    series.push({ points: q, color: 'var(--series-1)', label: 'QBER' });
  }
  lineChart($('chart-qber'), series, {
    yFormat: (v) => `${(v * 100).toFixed(1)} %`,
    threshold: st.qberAbortThreshold,
    thresholdLabel: st.qberAbortThreshold != null ? `abort ${fmtPct(st.qberAbortThreshold, 1)}` : '',
  });
}

function renderSkr(st) {
  const s = st.series.secretKeyRateBitsPerSecond;
  const last = s.length ? s[s.length - 1][1] : null;
  $('skr-current').textContent = fmtBps(last);
  const perPulse = st.summary?.secretKeyRate?.perPulse;
  const secret = st.summary?.secretBits;
  $('skr-sub').textContent = [
    perPulse != null ? `${perPulse.toExponential(2)} bit/pulse` : null,
    secret != null ? `${fmtCount(secret)} secret bits so far` : null,
    st.slis?.secretKeyRateBitsPerSecond != null ? `window mean ${fmtBps(st.slis.secretKeyRateBitsPerSecond)}` : null,
  ].filter(Boolean).join(' · ');
  lineChart($('chart-skr'), [{ points: s, color: 'var(--series-3)', label: 'SKR', area: true }], { yFormat: (v) => fmtSi(v, 'b/s', 1) });
}

function renderDetectors(st) {
  const box = $('detectors');
  box.replaceChildren();
  if (!st.detectors.length) {
    box.append(el('div', { class: 'sub', text: 'no detector data' }));
    return;
  }
  box.append(el('div', { class: 'sub', text: 'log scale from 1 Hz; red mark: saturation limit' }));
  // Log scale from 1 Hz: count rates span dark counts (Hz) to saturation (MHz).
  const top = Math.log10(Math.max(10, ...st.detectors.map((d) => Math.max(d.countRateHz, d.saturationHz ?? 0) * 1.5)));
  const pos = (hz) => Math.min(1, Math.max(0, Math.log10(Math.max(1, hz)) / top));
  for (const d of st.detectors) {
    const sat = d.saturationHz != null && d.countRateHz > d.saturationHz;
    const silent = d.countRateHz < 1;
    const fill = el('div', { class: `fill ${sat ? 'bad' : silent ? 'warn' : ''}` });
    fill.style.width = `${(pos(d.countRateHz) * 100).toFixed(1)}%`;
    const bar = el('div', { class: 'bar', title: 'log scale, 1 Hz to the right edge' }, fill);
    if (d.saturationHz != null) {
      const mark = el('div', { class: 'mark', title: `saturation ${fmtHz(d.saturationHz)}` });
      mark.style.left = `${(pos(d.saturationHz) * 100).toFixed(1)}%`;
      bar.append(mark);
    }
    box.append(el('div', { class: 'bar-row' },
      el('span', { class: 'label', text: d.label || `ch${d.channel}` }),
      bar,
      el('span', { class: 'value', 'data-testid': `detector-rate-${d.channel}`, text: fmtHz(d.countRateHz) })));
  }
}

function renderSync(st) {
  const s = st.sync;
  setBadge($('sync-state'), s.locked ? 'locked' : 'lost', s.locked ? 'ok' : 'bad');
  $('sync-offset').textContent = fmtSeconds(s.offsetSeconds);
  $('sync-drift').textContent = s.driftPpm == null ? '–' : `${s.driftPpm >= 0 ? '+' : '−'}${Math.abs(s.driftPpm).toFixed(3)} ppm`;
  $('sync-pon').textContent = s.peakOverNoise == null ? '–' : s.peakOverNoise.toFixed(1);
  const pts = s.offsetSeries || [];
  const mean = pts.length ? pts.reduce((a, p) => a + p[1], 0) / pts.length : 0;
  lineChart($('chart-offset'), [{ points: pts.map((p) => [p[0], p[1] - mean]), color: 'var(--series-2)' }], {
    yFormat: (v) => fmtSeconds(v), symmetric: true, ticks: 2, noXAxis: true, padLeft: 62,
  });
}

function renderKms(st) {
  const box = $('kms');
  box.replaceChildren();
  for (const k of st.kms) {
    const cap = k.capacity;
    const frac = cap ? Math.min(1, k.keysStored / cap) : null;
    const fill = el('div', { class: `fill ${frac != null && frac > 0.9 ? 'warn' : ''}` });
    fill.style.width = frac == null ? '100%' : `${(frac * 100).toFixed(1)}%`;
    if (frac == null) fill.style.opacity = '0.35';
    const bits = k.keySizeBits ? ` · ${fmtSi(k.keysStored * k.keySizeBits, 'bit', 1)}` : '';
    box.append(el('div', { class: 'kms-card', 'data-testid': `kms-${k.name}` },
      el('div', { class: 'head' },
        el('span', { class: 'name', text: k.name }),
        el('span', { class: `badge ${k.reachable ? 'ok' : 'bad'}`, 'data-testid': `kms-${k.name}-reachable`, text: k.reachable ? 'reachable' : 'unreachable' })),
      el('div', { class: 'bar' }, fill),
      el('div', { class: 'sub' },
        el('span', { class: 'level', 'data-testid': `kms-${k.name}-level`, text: `${fmtCount(k.keysStored)} keys` }),
        document.createTextNode(`${cap ? ` of ${fmtCount(cap)}` : ''}${bits}`))));
    if (k.series && k.series.length > 1) {
      const spark = svg('svg', { viewBox: '0 0 320 50', class: 'chart small', role: 'img', 'aria-label': `${k.name} key store level over time`, 'data-testid': `kms-${k.name}-history` });
      box.lastChild.append(spark);
      lineChart(spark, [{ points: k.series, color: 'var(--series-1)', area: true }], { yFormat: (v) => fmtSi(v, '', 0), ticks: 1, noXAxis: true, padLeft: 40 });
    }
  }
  if (!st.kms.length) box.append(el('div', { class: 'sub', text: 'no KMS attached' }));
}

function renderTiming(st) {
  const box = $('timing');
  box.replaceChildren();
  for (const h of st.timing) {
    const total = h.counts.reduce((a, b) => a + b, 0);
    let inWin = 0;
    if (h.windowStartPs != null) {
      h.counts.forEach((c, i) => {
        const mid = h.startPs + (i + 0.5) * h.binWidthPs;
        if (mid >= h.windowStartPs && mid <= h.windowEndPs) inWin += c;
      });
    }
    let peak = 0;
    h.counts.forEach((c, i) => { if (c > h.counts[peak]) peak = i; });
    const peakPs = h.startPs + (peak + 0.5) * h.binWidthPs;
    box.append(el('div', { class: 'hist', 'data-testid': `timing-${h.channel}` },
      el('div', { class: 'head' },
        el('b', { text: h.label || `ch${h.channel}` }),
        el('span', { text: `peak ${Math.round(peakPs)} ps · ${total ? ((inWin / total) * 100).toFixed(1) : '–'} % in window` })),
      histogramSvg(h)));
  }
  if (!st.timing.length) box.append(el('div', { class: 'sub', text: 'no timing data' }));
}

function renderAlarms(st) {
  const box = $('alarms-active');
  box.replaceChildren();
  if (!st.alarms.active.length) box.append(el('div', { class: 'none', text: 'No active alarms' }));
  for (const a of st.alarms.active) {
    const anchor = a.runbook.includes('#') ? a.runbook.slice(a.runbook.indexOf('#')) : '';
    box.append(el('div', { class: `alarm ${a.severity}`, 'data-testid': `alarm-${a.id}` },
      el('div', { class: 'top' },
        el('span', { class: 'sev', text: a.severity }),
        el('span', { class: 'id', text: a.id }),
        el('span', { text: a.message }),
        el('span', { class: 'since', text: `since ${fmtTime(a.raisedAtMs)}` })),
      el('div', { class: 'cause' },
        document.createTextNode(`Likely cause: ${a.cause}. `),
        el('a', { href: `/runbook${anchor}`, target: '_blank', rel: 'noopener', text: `Runbook ${anchor}` }))));
  }
  const tbody = $('alarms-recent').tBodies[0];
  tbody.replaceChildren();
  for (const e of st.alarms.recent.slice(0, 8)) {
    tbody.append(el('tr', {},
      el('td', { text: fmtTime(e.atMs) }),
      el('td', { class: e.type, text: e.type }),
      el('td', { text: e.alarm.severity }),
      el('td', { text: e.alarm.id })));
  }
  if (!st.alarms.recent.length) tbody.append(el('tr', {}, el('td', { class: 'sub', text: 'none yet' })));
}

function renderSlis(st) {
  const dl = $('slis');
  dl.replaceChildren();
  const s = st.slis;
  if (!s) {
    dl.append(el('dt', { text: 'no SLI data' }));
    return;
  }
  $('sli-window').textContent = `over the last ${fmtDuration(Math.min(s.windowSeconds, s.coveredSeconds))}`;
  const rates = Object.values(s.detectorCountRatesHz);
  const rows = [
    ['availability', 'Link availability', fmtPct(s.linkAvailabilityRatio)],
    ['skr', 'Key generation rate', fmtBps(s.secretKeyRateBitsPerSecond)],
    ['qber', 'QBER', fmtPct(s.qber)],
    ['rates', 'Detector rates', rates.length ? `${fmtSi(Math.min(...rates), 'Hz', 1)} – ${fmtSi(Math.max(...rates), 'Hz', 1)}` : '–'],
    ['rtt', 'Classical RTT p50 / p99', `${fmtMs(s.classicalRttSeconds.p50)} / ${fmtMs(s.classicalRttSeconds.p99)}`],
    ['delivery', 'Key delivery success', fmtPct(s.keyDeliverySuccessRatio)],
    ['calibration', 'Calibration age', fmtDuration(s.calibrationAgeSeconds)],
  ];
  for (const [id, label, value] of rows) {
    dl.append(el('dt', { text: label }), el('dd', { 'data-testid': `sli-${id}`, text: value }));
  }
}

function renderRandomness(st) {
  const r = st.slis?.randomness;
  const tbody = $('randomness').tBodies[0];
  tbody.replaceChildren();
  if (!r || !r.latest.length) {
    setBadge($('rand-state'), 'no sample yet', '');
    tbody.append(el('tr', {}, el('td', { class: 'sub', text: 'no block sampled yet' })));
    $('rand-sub').textContent = '';
    return;
  }
  setBadge($('rand-state'), r.healthy ? 'healthy' : 'FAILING', r.healthy ? 'ok' : 'bad');
  for (const t of r.latest) {
    tbody.append(el('tr', { 'data-testid': `rand-${t.test}` },
      el('td', { text: t.test.replace('_', ' ') }),
      el('td', { class: 'num', text: `P = ${fmtP(t.pValue)}` }),
      el('td', { class: t.pass ? 'pass' : 'fail', text: t.pass ? 'pass' : 'fail' })));
  }
  $('rand-sub').textContent = `${fmtCount(r.sampledBlocks)} blocks sampled (${fmtCount(r.latestBits)} bits each) · pass proportion ${fmtPct(r.passProportion, 1)}` +
    (r.reason ? ` · ${r.reason}` : '');
}

function renderSummary(st) {
  const dl = $('summary');
  dl.replaceChildren();
  const s = st.summary || {};
  const triple = (o, f) => (o ? `${f(o.signal)} / ${f(o.decoy)} / ${f(o.vacuum)}` : '–');
  const sci = (x) => (x == null || !isFinite(x) ? '–' : x.toExponential(2));
  const reasons = s.blocks?.reasons && Object.keys(s.blocks.reasons).length
    ? ` (${Object.entries(s.blocks.reasons).map(([k, v]) => `${k} ${v}`).join(', ')})` : '';
  const rows = [
    ['pulses', 'Pulses', fmtCount(s.pulses)],
    ['detections', 'Detections', fmtCount(s.detections)],
    ['sifted', 'Sifted bits', fmtCount(s.siftedBits)],
    ['secret', 'Secret bits', fmtCount(s.secretBits)],
    ['verified', 'Blocks verified', fmtCount(s.blocks?.verified)],
    ['aborted', 'Blocks aborted', fmtCount(s.blocks?.aborted) + reasons],
    ['efficiency', 'Reconciliation f', s.reconciliationEfficiency == null ? '–' : s.reconciliationEfficiency.toFixed(3)],
    ['frames', 'Frames failed / total', s.frames ? `${fmtCount(s.frames.failed)} / ${fmtCount(s.frames.total)}` : fmtCount(s.frameErrors)],
    ['gain', 'Gain μ / ν / ω', triple(s.gain, sci)],
    ['errorrate', 'Error rate μ / ν / ω', triple(s.errorRate, (x) => fmtPct(x, 1))],
    ['decoy', 'Y₁ ≥ / e₁ ≤', s.decoy ? `${sci(s.decoy.singlePhotonYieldLower)} / ${fmtPct(s.decoy.singlePhotonErrorUpper, 1)}` : '–'],
    ['delivered', 'Keys delivered A / B', `${fmtCount(s.keysDelivered?.alice)} / ${fmtCount(s.keysDelivered?.bob)}`],
    ['rtf', 'Real-time factor', s.realTimeFactor == null ? '–' : `${s.realTimeFactor.toFixed(2)} emulated s / s`],
  ];
  // Bob's pipeline stages (issue 15): detections per busy second and occupancy.
  const stageNames = { acquire: 'Stage: acquire', postProcess: 'Stage: post-process', delivery: 'Stage: delivery' };
  for (const [k, label] of Object.entries(stageNames)) {
    const f = s.stages?.[k];
    rows.push([`stage-${k}`, label, f ? `${fmtSi(f.detectionsPerSecond, 'det/s', 2)} · busy ${fmtPct(f.occupancy, 0)}` : '–']);
  }
  for (const [id, label, value] of rows) {
    if (value === '–' && ['frames', 'gain', 'errorrate', 'decoy', 'rtf', 'stage-acquire', 'stage-postProcess', 'stage-delivery'].includes(id)) continue; // not reported by this node
    dl.append(el('dt', { text: label }), el('dd', { 'data-testid': `summary-${id}`, text: value }));
  }
}

function render(st) {
  const panels = [renderHeader, renderQber, renderSkr, renderDetectors, renderSync, renderKms, renderTiming, renderAlarms, renderSlis, renderRandomness, renderSummary];
  for (const p of panels) {
    try {
      p(st);
    } catch (err) {
      console.error(`dashboard: ${p.name} failed`, err);
    }
  }
  document.body.dataset.rendered = String(st.generatedAtMs);
}

// ------------------------------------------------------------------ updates

let lastUpdate = 0;
let pollTimer = null;

function accept(st) {
  lastUpdate = Date.now();
  render(st);
}

async function poll() {
  try {
    const res = await fetch('/api/state', { cache: 'no-store' });
    if (res.ok) accept(await res.json());
  } catch {
    /* shown as disconnected by the watchdog */
  }
}

function startPolling() {
  if (pollTimer) return;
  void poll();
  pollTimer = setInterval(poll, 2000);
}

function connect() {
  if (!('EventSource' in window)) {
    startPolling();
    return;
  }
  const es = new EventSource('/api/events');
  es.addEventListener('state', (ev) => {
    try {
      accept(JSON.parse(ev.data));
    } catch (err) {
      console.error('dashboard: bad state message', err);
    }
  });
  es.onerror = () => {
    // EventSource reconnects by itself; poll meanwhile so the view does not freeze.
    startPolling();
  };
  es.onopen = () => {
    if (pollTimer) {
      clearInterval(pollTimer);
      pollTimer = null;
    }
  };
}

setInterval(() => {
  if (lastUpdate && Date.now() - lastUpdate > 5000) setBadge($('status'), 'disconnected', 'bad');
}, 1000);

connect();
