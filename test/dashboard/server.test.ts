import t from 'tap';
import { request } from 'node:http';
import { startDashboard } from '../../src/dashboard/server.ts';
import { createSyntheticSource } from '../../src/dashboard/synthetic.ts';
import { renderMarkdown } from '../../src/dashboard/markdown.ts';
import type { DashboardState } from '../../src/dashboard/types.ts';
import { parsePrometheus } from '../../src/testkit/telemetry.ts';

const src = createSyntheticSource({ seed: 3, eve: { fromSec: 20, toSec: 40 } });
src.advanceTo(src.nowMs() + 60_000);

t.test('routes, content types, security headers', async (t) => {
  const dash = await startDashboard({ port: 0, getState: () => src.state(), metrics: src.metrics.registry, pushIntervalMs: 100 });
  t.teardown(() => dash.close());
  t.match(dash.url, /^http:\/\/127\.0\.0\.1:\d+\/$/, 'binds to loopback by default');
  const page = await fetch(dash.url);
  t.equal(page.status, 200);
  t.match(page.headers.get('content-type'), /text\/html/);
  t.match(page.headers.get('content-security-policy'), /default-src 'none'; script-src 'self'/);
  const html = await page.text();
  t.match(html, /<script src="\/app.js"/);
  t.notMatch(html, /https?:\/\/(?!127\.0\.0\.1)/, 'no external URLs (works offline, no CDN)');
  const js = await (await fetch(new URL('app.js', dash.url))).text();
  t.notMatch(js.replace("'http://www.w3.org/2000/svg'", ''), /https?:\/\//, 'script fetches nothing external (the SVG namespace is a name, not a fetch)');
  t.equal((await fetch(new URL('style.css', dash.url))).headers.get('content-type'), 'text/css; charset=utf-8');

  const stRes = await fetch(new URL('api/state', dash.url));
  t.equal(stRes.headers.get('cache-control'), 'no-store');
  const st = (await stRes.json()) as DashboardState;
  t.equal(st.schema, 1);
  t.equal(st.series.qber.length, 60);
  t.equal(st.detectors.length, 4);
  t.same(st.alarms.recent.map((e) => `${e.type} ${e.alarm.id}`), ['cleared qber-high', 'raised qber-high']);

  const m = await fetch(new URL('metrics', dash.url));
  t.equal(m.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  const fams = parsePrometheus(await m.text());
  t.equal(fams.get('qkd_blocks_total')!.samples.find((s) => s.labels.result === 'aborted')!.value, 2, 'two blocks aborted during Eve');
  t.ok(fams.get('qkd_qber_ratio')!.samples.length === 2);

  t.equal((await fetch(new URL('healthz', dash.url))).status, 200);
  const nf = await fetch(new URL('nope', dash.url));
  t.equal(nf.status, 404);
  const post = await fetch(new URL('api/state', dash.url), { method: 'POST', body: '{}' });
  t.equal(post.status, 405, 'read-only');
  t.equal(post.headers.get('allow'), 'GET, HEAD');

  const rb = await fetch(new URL('runbook', dash.url));
  const rbHtml = await rb.text();
  t.match(rbHtml, /<a id="qber-high"><\/a>\s*<h2>qber-high/);
  t.notMatch(rbHtml, /<script/i);
});

t.test('SSE pushes state events', async (t) => {
  const dash = await startDashboard({ port: 0, getState: () => src.state(), pushIntervalMs: 50 });
  t.teardown(() => dash.close());
  const events = await new Promise<string[]>((resolve, reject) => {
    const req = request(new URL('api/events', dash.url), (res) => {
      t.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8');
      let buf = '';
      const got: string[] = [];
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (ev.startsWith('event: state')) got.push(ev);
          if (got.length === 2) {
            req.destroy();
            resolve(got);
          }
        }
      });
    });
    req.on('error', (e) => (e.message.includes('aborted') || (e as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(e)));
    req.end();
  });
  t.equal(events.length, 2, 'initial push and a periodic one');
  const data = JSON.parse(events[0].split('\ndata: ')[1]);
  t.equal(data.node.id, 'alice-bob-demo');
  t.equal(data.metrics, undefined);
});

t.test('no metrics attached, failing state, port in use, idempotent close', async (t) => {
  let fail = false;
  const dash = await startDashboard({ port: 0, getState: () => { if (fail) throw new Error('boom'); return src.state(); } });
  t.equal((await fetch(new URL('metrics', dash.url))).status, 404);
  fail = true;
  const r = await fetch(new URL('api/state', dash.url));
  t.equal(r.status, 500);
  t.same(await r.json(), { error: 'dashboard state unavailable; see the node log' }, 'internal error text not exposed');
  await t.rejects(startDashboard({ port: dash.port, getState: () => src.state() }), { code: 'DASHBOARD_LISTEN' });
  await dash.close();
  await dash.close();
  t.pass('closed twice');
});

t.test('markdown renderer escapes raw HTML, keeps anchors', async (t) => {
  const html = renderMarkdown('<a id="x-y"></a>\n## Title `code`\n\n<script>alert(1)</script> and **bold** [l](javascript:alert(1)) [ok](#x-y)\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\n1. one\n   more\n2. two\n');
  t.match(html, /<a id="x-y"><\/a>/);
  t.match(html, /<h2>Title <code>code<\/code><\/h2>/);
  t.match(html, /&lt;script&gt;alert\(1\)&lt;\/script&gt;/);
  t.match(html, /<a href="#">l<\/a>/, 'javascript: URLs neutralised');
  t.match(html, /<a href="#x-y">ok<\/a>/);
  t.match(html, /<td>1<\/td><td>2<\/td>/);
  t.match(html, /<ol><li>one more<\/li><li>two<\/li><\/ol>/);
});
