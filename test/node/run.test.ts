// End to end, as a user runs it: `qkd run --emulated` as a separate process (which starts Alice's
// and Bob's node processes and the two reference KMSs), an SAE pair fetching matching keys from the
// two KMSs over ETSI 014 with mutual TLS, then SIGINT and the JSON summary checked against the
// decoy-state model of the preset. A second run with an intercept-resend eavesdropper on every
// pulse must show a QBER near 25 % and deliver nothing.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { JsonClient } from '../../src/delivery/http.ts';
import { checkCommitment, verifyingKey } from '../../src/delivery/commitment.ts';
import { loadLinkPreset } from '../../src/lab/presets.ts';
import { decoyModel } from '../../src/lab/theory.ts';
import { chromiumAvailable, launchChromium } from '../../src/dashboard/screenshot.ts';
import { until } from '../../src/testkit/run.ts';

// A whole emulated link in several processes: give the file more than tap's default budget.
t.setTimeout(900_000);

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const qkd = join(root, 'bin', 'qkd.js');

interface Running {
  dir: string;
  stderr: string[];
  done: Promise<{ code: number | null; stdout: string }>;
  kill(sig: NodeJS.Signals): void;
}

function startRun(args: string[]): Running {
  const dir = mkdtempSync(join(tmpdir(), 'qkd-run-test-'));
  const p = spawn(process.execPath, [qkd, 'run', '--emulated', '--json', '--state-dir', join(dir, 'state'),
    '--manifest', join(dir, 'manifest.json'), '--dashboard-port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const stderr: string[] = [];
  let stdout = '';
  p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  p.stderr.setEncoding('utf8').on('data', (d: string) => stderr.push(...d.split('\n').filter(Boolean)));
  const done = new Promise<{ code: number | null; stdout: string }>((resolve) => p.on('exit', (code) => resolve({ code, stdout })));
  return { dir, stderr, done, kill: (sig) => p.kill(sig) };
}

// 25 km keeps a block of ~4e6 detections short enough for CI while the finite-key length stays positive.
const DISTANCE = 25;

t.test('qkd run --emulated: verified keys, matching keys for an SAE pair over ETSI 014, figures agree with theory', async (t) => {
  const run = startRun(['--distance-km', String(DISTANCE), '--seed', '12345', '--speed', '1000', '--block-detections', '10000000', '--duration', '900']);
  t.teardown(() => {
    if (!t.passing()) t.comment(`qkd run said:\n${run.stderr.slice(-15).join('\n')}`);
    run.kill('SIGKILL');
    rmSync(run.dir, { recursive: true, force: true });
  });
  const manifestPath = join(run.dir, 'manifest.json');
  const manifest = await until('the manifest', () => (existsSync(manifestPath) ? JSON.parse(readFileSync(manifestPath, 'utf8')) : undefined), 120_000);
  t.match(manifest, { nodes: { alice: { id: 'nodeA' }, bob: { id: 'nodeB' } }, sae: { alice: { id: 'saeA' }, bob: { id: 'saeB' } } }, 'manifest names nodes and SAEs');
  t.match(manifest.dashboard, /^http:\/\/127\.0\.0\.1:\d+\//, 'dashboard URL');

  const ca = readFileSync(manifest.sae.ca, 'utf8');
  const tlsOf = (s: { cert: string; key: string }) => ({ ca, cert: readFileSync(s.cert, 'utf8'), key: readFileSync(s.key, 'utf8') });
  const saeA = new JsonClient({ url: new URL(manifest.kms.alice.etsi014).origin, id: 'kmsA' }, { tls: tlsOf(manifest.sae.alice) });
  const saeB = new JsonClient({ url: new URL(manifest.kms.bob.etsi014).origin, id: 'kmsB' }, { tls: tlsOf(manifest.sae.bob) });
  t.teardown(() => {
    saeA.close();
    saeB.close();
  });
  // Wait until keys are stored at Alice's KMS and confirmed with Bob's (503 until both hold them).
  await until('keys at the KMS', async () => {
    const st = await saeA.request('GET', '/api/v1/keys/saeB/status').catch(() => undefined);
    return st && st.status === 200 && st.body.stored_key_count >= 2 ? st.body : undefined;
  }, 420_000);
  const enc = await until('confirmed keys for the SAE pair', async () => {
    const r = await saeA.request('POST', '/api/v1/keys/saeB/enc_keys', { number: 2 });
    return r.status === 200 ? r : undefined;
  }, 60_000);
  t.equal(enc.body.keys.length, 2, 'enc_keys from Alice\'s KMS');
  const dec = await saeB.request('POST', '/api/v1/keys/saeA/dec_keys', { key_IDs: enc.body.keys.map((k: { key_ID: string }) => ({ key_ID: k.key_ID })) });
  t.equal(dec.status, 200, 'dec_keys from Bob\'s KMS');
  t.same(dec.body.keys.map((k: { key: string }) => k.key), enc.body.keys.map((k: { key: string }) => k.key), 'the SAE pair holds the same keys');
  const delivered = enc.body.keys.map((k: { key: string }) => Buffer.from(k.key, 'base64'));

  // The operator's view of this live run, in a real headless browser.
  if (!chromiumAvailable()) t.comment('SKIP dashboard in Chromium: /usr/bin/chromium is not installed (apt-get install chromium)');
  else {
    const browser = await launchChromium();
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
      await page.goto(manifest.dashboard);
      await page.waitForSelector('body[data-rendered]', { timeout: 20_000 });
      await until('a QBER on the dashboard', async () => {
        const q = (await page.locator('[data-testid="qber-current"]').first().textContent())?.trim();
        return q && /^\d+\.\d+ %$/.test(q) ? q : undefined;
      }, 30_000);
      const q = Number((await page.locator('[data-testid="qber-current"]').first().textContent())!.replace('%', ''));
      t.ok(q > 2 && q < 5, `dashboard shows the live QBER (${q} %)`);
      t.equal((await page.locator('[data-testid="sync-state"]').textContent())?.trim(), 'locked', 'dashboard shows the sync locked');
      // The live run fills what the synthetic demo fills: the acceptance window, RTT, delivery, calibration age.
      const hist = (await page.locator('[data-testid^="timing-"]').first().textContent()) ?? '';
      t.match(hist, /\d+\.\d % in window/, `a timing histogram with its window (${hist.trim()})`);
      for (const id of ['rtt', 'delivery', 'calibration']) {
        const v = (await page.locator(`[data-testid="sli-${id}"]`).textContent())?.trim() ?? '';
        t.ok(v !== '' && !/^–/.test(v), `SLI ${id} shown in a live run: ${v}`);
      }
      const shot = join(run.dir, 'dashboard.png');
      await page.screenshot({ path: shot, fullPage: true });
      t.ok(readFileSync(shot).length > 10_000, 'screenshot of the live dashboard saved');
    } finally {
      await browser.close();
    }
  }
  const metrics = await fetch(manifest.metrics).then((r) => r.text());
  t.match(metrics, /qkd_qber_ratio\{basis="Z"\} 0\.0[23]/, 'Prometheus exposes the QBER');
  t.match(metrics, /qkd_secret_bits_total [1-9]/, 'Prometheus counts secret bits');
  t.match(metrics, /qkd_pulses_total [1-9]/, 'Prometheus counts emitted pulses in a live run');
  t.match(metrics, /qkd_real_time_factor 0?\.?\d/, 'Prometheus exposes the real-time factor');
  t.match(metrics, /qkd_stage_occupancy_ratio\{stage="acquire"\} /, 'Prometheus exposes the stages\' occupancy');

  run.kill('SIGINT');
  const { code, stdout } = await run.done;
  t.equal(code, 0, 'clean exit on SIGINT');
  // Key material never reaches logs, the summary or the manifest: look for the delivered keys
  // (raw, hex, base64) and for any 8-byte window of them in every log file the run wrote.
  const texts = [stdout, run.stderr.join('\n'), readFileSync(manifestPath, 'utf8'),
    ...readdirSync(manifest.logs).map((f: string) => readFileSync(join(manifest.logs, f), 'latin1'))];
  const leaks = delivered.flatMap((k: Buffer) => [k.toString('hex'), k.toString('base64'), k.subarray(0, 8).toString('hex'),
    k.subarray(0, 8).toString('latin1')]).filter((needle: string) => texts.some((x) => x.includes(needle)));
  t.same(leaks, [], 'no delivered key (or 8 bytes of one) appears in any log, the summary or the manifest');
  const s = JSON.parse(stdout);
  t.ok(s.blocks.verified >= 1, `${s.blocks.verified} verified blocks`);
  t.ok(s.secretBits > 0, `${s.secretBits} secret bits`);
  t.ok(s.keysDelivered.alice >= 2 && s.keysDelivered.alice === s.keysDelivered.bob, `keys delivered ${JSON.stringify(s.keysDelivered)}`);
  t.ok(s.sync.locked, 'clock sync locked');
  // Key commitments are on in a run: every stored key carries its node's valid Ed25519 commitment.
  for (const side of ['A', 'B'] as const) {
    const rows = spawnSync('python3', ['-c', `import sqlite3, json, sys
c = sqlite3.connect(sys.argv[1])
print(json.dumps([[r[0], r[1], r[2].hex(), r[3]] for r in c.execute('SELECT stream_id, idx, digest, meta FROM keys LIMIT 50')]))`,
    join(run.dir, 'state', `kms${side}.db`)], { encoding: 'utf8' });
    const keys = JSON.parse(rows.stdout || '[]') as [string, number, string, string][];
    const pub = verifyingKey(readFileSync(join(run.dir, 'state', 'secrets', `node${side}.commit.pub`)), `node${side}`);
    const bad = keys.filter(([, , digest, meta]) => !checkCommitment(pub, `node${side}`, Buffer.from(digest, 'hex'), JSON.parse(meta).commitment));
    t.ok(keys.length > 0 && bad.length === 0, `KMS ${side}: ${keys.length} stored keys carry node${side}'s valid commitment (${bad.length} do not)`);
  }
  t.ok(s.realTimeFactor > 0 && Math.abs(s.realTimeFactor - s.emulatedSeconds / s.wallSeconds) < 1e-9, `real-time factor ${s.realTimeFactor} = emulated / wall seconds`);
  for (const stage of ['acquire', 'postProcess', 'delivery']) t.ok(s.stages?.[stage]?.detectionsPerSecond > 0 && s.stages[stage].occupancy > 0, `stage ${stage}: ${JSON.stringify(s.stages?.[stage])}`);

  // Figures against the decoy-state model (Ma et al. 2005) of the preset at this distance.
  const m = decoyModel(loadLinkPreset('reference-decoy'), DISTANCE);
  const within = (x: number, th: number, rel: number) => Math.abs(x - th) <= rel * th;
  t.ok(within(s.gain.signal, m.gain.signal, 0.05), `signal gain ${s.gain.signal} vs ${m.gain.signal}`);
  t.ok(within(s.gain.decoy, m.gain.decoy, 0.1), `decoy gain ${s.gain.decoy} vs ${m.gain.decoy}`);
  t.ok(within(s.errorRate.signal, m.errorRate.signal, 0.15), `signal error rate ${s.errorRate.signal} vs ${m.errorRate.signal}`);
  t.ok(within(s.qber, m.errorRate.signal, 0.15), `QBER ${s.qber} vs ${m.errorRate.signal}`);
  t.ok(s.reconciliationEfficiency > 1 && s.reconciliationEfficiency < 1.5, `f = ${s.reconciliationEfficiency}`);
  t.ok(s.secretKeyRate.perPulse > 0 && s.secretKeyRate.perPulse < m.asymptoticKeyRatePerPulse,
    `finite-key rate ${s.secretKeyRate.perPulse} per pulse below the asymptotic ${m.asymptoticKeyRatePerPulse}`);
});

t.test('qkd run --emulated --eve 1: QBER near 25 %, every block aborted, no key at either KMS', async (t) => {
  const run = startRun(['--distance-km', String(DISTANCE), '--seed', '777', '--speed', '1000', '--eve', '1', '--block-detections', '1000000', '--duration', '45']);
  t.teardown(() => {
    run.kill('SIGKILL');
    rmSync(run.dir, { recursive: true, force: true });
  });
  const { code, stdout } = await run.done;
  t.equal(code, 0, 'clean exit');
  const s = JSON.parse(stdout);
  t.ok(s.blocks.aborted >= 1, `${s.blocks.aborted} blocks aborted`);
  t.equal(s.blocks.verified, 0, 'no block verified');
  t.ok(s.qberByBasis.X > 0.2 && s.qberByBasis.X < 0.3, `X QBER ${s.qberByBasis.X} near 25 %`);
  t.same(s.keysDelivered, { alice: 0, bob: 0 }, 'no key reached either KMS');
  t.equal(s.secretBits, 0);
});
