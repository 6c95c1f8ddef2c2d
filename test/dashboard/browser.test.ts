/**
 * The dashboard in a real headless browser (Debian's Chromium via playwright-core): the page loads
 * with nothing but its own origin, every panel renders the values of a synthetic state source,
 * live updates arrive over SSE, alarm runbook links land on their section, and a screenshot is
 * saved (QKD_DASHBOARD_SCREENSHOT=<path> to choose where; default a temp dir).
 */
import t from 'tap';
import { mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { startDashboard } from '../../src/dashboard/server.ts';
import { createSyntheticSource } from '../../src/dashboard/synthetic.ts';
import { DashboardStateBuilder } from '../../src/dashboard/state.ts';
import { chromiumAvailable, CHROMIUM_PATH, launchChromium } from '../../src/dashboard/screenshot.ts';

const skip = chromiumAvailable() ? false : `no Chromium at ${CHROMIUM_PATH}: apt-get install -y chromium (or set QKD_CHROMIUM)`;
{
  t.test('dashboard renders the state in Chromium', { skip }, async (t) => {
    const src = createSyntheticSource({ seed: 11, eve: { fromSec: 40, toSec: 80 }, silentChannel: { channel: 3, fromSec: 150 }, kmsOutage: { kms: 'bob', fromSec: 170, toSec: 1000 } });
    src.advanceTo(src.nowMs() + 200_000);
    let live = false;
    const dash = await startDashboard({
      port: 0,
      pushIntervalMs: 200,
      metrics: src.metrics.registry,
      getState: () => {
        if (live) src.advanceTo(src.nowMs() + 1000);
        return src.state();
      },
    });
    t.teardown(() => dash.close());
    const browser = await launchChromium();
    t.teardown(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    const requests: string[] = [];
    const errors: string[] = [];
    page.on('request', (r) => requests.push(r.url()));
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`${m.text()} ${m.location().url}`); });

    await page.goto(dash.url);
    await page.waitForSelector('body[data-rendered]', { timeout: 20_000 });
    const st = src.state();
    const text = async (id: string) => (await page.locator(`[data-testid="${id}"]`).first().textContent())?.trim();
    const pct = (x: number) => `${(x * 100).toFixed(2)} %`;

    t.equal(await text('node-id'), st.node.id);
    t.equal(await text('qber-current'), pct(st.series.qber.at(-1)![1]), 'current QBER');
    t.match(await text('qber-bases'), `Z basis ${pct(st.series.qberZ!.at(-1)![1])}`);
    t.match(await text('qber-bases'), 'abort above 11.0 %');
    // The QBER chart draws every point of both series, and the abort threshold line.
    const dZ = await page.locator('#chart-qber path.line[data-series="Z"]').getAttribute('d');
    t.equal((dZ ?? '').split(/[ML]/).filter(Boolean).length, st.series.qberZ!.length, 'one vertex per QBER point');
    t.equal(await page.locator('#chart-qber line.threshold').count(), 1);
    const skr = st.series.secretKeyRateBitsPerSecond.at(-1)![1];
    t.equal(await text('skr-current'), `${(skr / 1e3).toFixed(2)} kbit/s`);

    for (const d of st.detectors) {
      const want = d.countRateHz >= 1e3 ? `${(d.countRateHz / 1e3).toFixed(2)} kHz` : `${d.countRateHz.toFixed(2)} Hz`;
      t.equal(await text(`detector-rate-${d.channel}`), want, `detector ${d.label} rate`);
    }
    t.equal(await page.locator('[data-testid^="timing-"] path.bars').count(), 4, 'four timing histograms');
    t.equal(await page.locator('[data-testid="timing-0"] rect.window').count(), 1, 'window shaded');
    t.equal(await text('sync-state'), 'locked');
    t.equal(await text('sync-drift'), '+0.120 ppm');
    t.match(await text('sync-offset'), /^\+3\.\d{3} ns$/);

    for (const k of st.kms) t.equal(await text(`kms-${k.name}-level`), `${k.keysStored.toLocaleString('en-US')} keys`, `${k.name} store level`);
    t.equal(await text('kms-bob-reachable'), 'unreachable');
    t.equal(await page.locator('[data-testid="kms-alice-history"] path.line').count(), 1, 'KMS level history drawn');
    t.equal(await text('kms-alice-reachable'), 'reachable');

    // Active alarms: channel 3 silent and Bob's KMS down; recent shows the QBER episode.
    t.same(st.alarms.active.map((a) => a.id).sort(), ['detector-silent/ch3', 'kms-unreachable/bob']);
    const silent = page.locator('[data-testid="alarm-detector-silent/ch3"]');
    t.match(await silent.textContent(), /detector channel 3 counts .* Hz, below 1\.0 Hz/);
    t.equal(await silent.locator('a').getAttribute('href'), '/runbook#detector-silent');
    const recent = await text('alarms-recent');
    t.match(recent, /raised\s*critical\s*qber-high/);
    t.match(recent, /cleared\s*critical\s*qber-high/);
    t.match(await text('alarm-pill'), '2 alarms');

    t.equal(await text('sli-availability'), pct(st.slis!.linkAvailabilityRatio!));
    t.equal(await text('sli-delivery'), pct(st.slis!.keyDeliverySuccessRatio!));
    t.equal(await text('sli-calibration'), '1.6 h');
    for (const r of st.slis!.randomness!.latest) {
      t.match(await text(`rand-${r.test}`), r.pass ? /pass$/ : /fail$/, `randomness ${r.test}`);
    }
    t.equal(await text('summary-verified'), String(st.summary!.blocks!.verified));
    t.match(await text('summary-aborted'), `${st.summary!.blocks!.aborted} (qber ${st.summary!.blocks!.aborted})`);
    t.equal(await text('summary-rtf'), '1.40 emulated s / s', 'real-time factor shown');
    t.equal(await text('summary-stage-postProcess'), '9.00 Mdet/s · busy 62 %', 'post-processing stage rate and occupancy shown');

    // Screenshot.
    const dir = mkdtempSync(join(tmpdir(), 'qkd-dash-'));
    const shot = process.env.QKD_DASHBOARD_SCREENSHOT ?? join(dir, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    const png = readFileSync(shot);
    t.same([...png.subarray(1, 4)], [0x50, 0x4e, 0x47], 'PNG written');
    t.ok(png.length > 50_000, `screenshot has content (${png.length} bytes) at ${shot}`);

    // Live update over SSE: the page follows the source.
    const before = await page.locator('body').getAttribute('data-rendered');
    live = true;
    // (waitForFunction would need eval, which the page's CSP rightly forbids: poll the attribute.)
    const deadline = Date.now() + 10_000;
    while ((await page.locator('body').getAttribute('data-rendered')) === before && Date.now() < deadline) await page.waitForTimeout(100);
    t.ok(Number(await page.locator('body').getAttribute('data-rendered')) > Number(before), 'newer state rendered');

    // The runbook link lands on its section.
    await page.goto(new URL('runbook#detector-silent', dash.url).toString());
    t.match(await page.locator('#detector-silent + h2').textContent(), /detector-silent/);

    t.same(requests.filter((u) => !u.startsWith(dash.url)), [], 'no request leaves the dashboard origin');
    t.same(errors, [], 'no script errors');
  });
}

t.test('a node that is just starting (no data yet) renders without errors', { skip }, async (t) => {
  const b = new DashboardStateBuilder({ node: { id: 'bob-7', role: 'bob', mode: 'hardware', startedAtMs: Date.now() } });
  const dash = await startDashboard({ port: 0, getState: () => b.build(), pushIntervalMs: 500 });
  t.teardown(() => dash.close());
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(dash.url);
  await page.waitForSelector('body[data-rendered]', { timeout: 20_000 });
  t.equal(await page.locator('[data-testid="node-id"]').textContent(), 'bob-7');
  t.equal(await page.locator('[data-testid="status"]').textContent(), 'starting');
  t.equal(await page.locator('[data-testid="qber-current"]').textContent(), '–');
  t.match(await page.locator('#chart-qber').textContent(), 'no data yet');
  t.equal(await page.locator('[data-testid="sync-state"]').textContent(), 'lost');
  t.match(await page.locator('[data-testid="alarms-active"]').textContent(), 'No active alarms');
  t.match(await page.locator('[data-testid="kms"]').textContent(), 'no KMS attached');
  t.same(errors, [], 'no script errors on an empty state');
});
