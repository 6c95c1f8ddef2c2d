/**
 * Headless-browser helpers for the dashboard: launch Debian's Chromium through playwright-core,
 * load a page, wait for the first render, save a PNG. Used by test/dashboard/browser.test.ts and to
 * refresh docs/dashboard.png:
 *   node --import tsx src/dashboard/screenshot.ts docs/dashboard.png
 * (serves the synthetic source on a free port, captures, exits).
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { startDashboard } from './server.ts';
import { createSyntheticSource, type SyntheticOptions } from './synthetic.ts';

export const CHROMIUM_PATH = process.env.QKD_CHROMIUM ?? '/usr/bin/chromium';

export function chromiumAvailable(): boolean {
  return existsSync(CHROMIUM_PATH);
}

/** Launches headless Chromium with flags that keep it off the network and quiet. */
export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
}

/** The scenario of the published screenshot: a link after an intercept-resend episode and with a KMS outage in progress. */
export const SCREENSHOT_SCENARIO: SyntheticOptions = {
  seed: 7,
  eve: { fromSec: 90, toSec: 150 },
  kmsOutage: { kms: 'bob', fromSec: 260, toSec: 400 },
};

export async function captureSynthetic(path: string, opts: { seconds?: number; width?: number; height?: number } = {}): Promise<void> {
  const src = createSyntheticSource(SCREENSHOT_SCENARIO);
  src.advanceTo(src.nowMs() + (opts.seconds ?? 300) * 1000);
  const dash = await startDashboard({ port: 0, getState: () => src.state(), metrics: src.metrics.registry });
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: opts.width ?? 1440, height: opts.height ?? 1000 } });
    await page.goto(dash.url);
    await page.waitForSelector('body[data-rendered]');
    await page.screenshot({ path, fullPage: true });
  } finally {
    await browser.close();
    await dash.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const out = process.argv[2] ?? 'docs/dashboard.png';
  await captureSynthetic(out);
  process.stdout.write(`wrote ${out}\n`);
}
