import t from 'tap';
import { describeTaint, FLAG, TAINT_FLAGS } from '../../src/stream/frame.ts';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { AlarmEngine, DEFAULT_ALARM_CONFIG, firmwareMatches, loadAlarmConfig, parseAlarmConfig, type AlarmEvent, type AlarmKind } from '../../src/telemetry/alarms.ts';

t.test('QBER alarm: raise above abort threshold, hysteresis band, clear below', async (t) => {
  const events: AlarmEvent[] = [];
  const e = new AlarmEngine({ qber: { abortThreshold: 0.11, clearBelow: 0.08 } }, { onEvent: (x) => events.push(x) });
  t.same(e.evaluate({ qber: 0.03 }, 0), []);
  t.same(e.evaluate({ qber: 0.109 }, 1000), [], 'just below threshold: nothing');
  const [raised] = e.evaluate({ qber: 0.25 }, 2000);
  t.equal(raised.type, 'raised');
  t.equal(raised.alarm.id, 'qber-high');
  t.equal(raised.alarm.severity, 'critical');
  t.match(raised.alarm.message, /25\.00 %.*11\.00 %/);
  t.match(raised.alarm.cause, /eavesdropping/);
  t.equal(raised.alarm.runbook, 'docs/runbook.md#qber-high');
  t.same(e.evaluate({ qber: 0.09 }, 3000), [], 'in the band (0.08..0.11): stays raised');
  t.equal(e.active().length, 1);
  t.same(e.evaluate({ qber: 0.105 }, 4000), [], 'still in the band');
  const [cleared] = e.evaluate({ qber: 0.05 }, 5000);
  t.equal(cleared.type, 'cleared');
  t.equal(cleared.alarm.clearedAtMs, 5000);
  t.equal(cleared.alarm.raisedAtMs, 2000);
  t.same(e.active(), []);
  t.same(e.evaluate({ qber: 0.1 }, 6000), [], 'band value from inactive does not raise');
  t.same(events.map((x) => x.type), ['raised', 'cleared'], 'onEvent saw both');
  t.same(e.recent().map((x) => x.type), ['cleared', 'raised'], 'recent is newest first');
});

t.test('debounce: forSeconds before raising, clearForSeconds before clearing; flapping is absorbed', async (t) => {
  const e = new AlarmEngine({ syncLoss: { forSeconds: 3, clearForSeconds: 2 } });
  t.same(e.evaluate({ syncLocked: false }, 0), []);
  t.same(e.evaluate({ syncLocked: false }, 2000), [], '2 s unlocked < 3 s');
  t.same(e.evaluate({ syncLocked: true }, 2500), [], 'relocked: pending reset');
  t.same(e.evaluate({ syncLocked: false }, 3000), []);
  t.same(e.evaluate({ syncLocked: false }, 5999), [], 'pending restarted at 3000');
  t.equal(e.evaluate({ syncLocked: false }, 6000)[0]?.alarm.id, 'sync-lost');
  t.same(e.evaluate({ syncLocked: true }, 7000), []);
  t.same(e.evaluate({ syncLocked: false }, 8000), [], 'a blip resets clearing');
  t.same(e.evaluate({ syncLocked: true }, 8500), []);
  t.same(e.evaluate({ syncLocked: true }, 10000), [], '1.5 s locked < 2 s');
  t.equal(e.evaluate({ syncLocked: true }, 10500)[0]?.type, 'cleared');
  t.same(e.evaluate({}, 20000), [], 'absent inputs change nothing');
});

t.test('per-subject alarms: detector channels, KMSs, devices', async (t) => {
  const e = new AlarmEngine({ detectorSaturation: { forSeconds: 0, clearForSeconds: 0 }, detectorSilence: { forSeconds: 0, clearForSeconds: 0 }, kmsUnreachable: { forSeconds: 0 } });
  const ev = e.evaluate({
    detectorRatesHz: { 0: 1.2e5, 1: 9e6, 2: 0.2, 3: 3 },
    kmsReachable: { alice: true, bob: false },
    devices: [
      { id: 'tagger-1', model: 'TT-Ultra', firmware: '2.4.1', allowedFirmware: ['2.4.0', '2.4.1'] },
      { id: 'spad-1', model: 'SPAD1', firmware: '2.1.7', allowedFirmware: ['2.1.*'] },
      { id: 'psu-1', firmware: '9', allowedFirmware: ['1.2.*'], allowed: true },
      { id: 'laser-1', model: 'PL-1550', firmware: '1.9', allowedFirmware: ['2.0'] },
    ],
    spoolFillRatio: 0.5,
    calibrationAgeSeconds: 8 * 86400,
    randomness: { healthy: false, reason: 'latest block failed the frequency test' },
  }, 1000);
  const ids = ev.map((x) => x.alarm.id).sort();
  t.same(ids, ['calibration-stale', 'detector-saturation/ch1', 'detector-silent/ch2', 'firmware-mismatch/laser-1', 'kms-unreachable/bob', 'randomness-failed']);
  t.equal(e.active()[0].severity, 'critical', 'most severe first');
  t.match(ev.find((x) => x.alarm.id === 'firmware-mismatch/laser-1')!.alarm.message, /firmware 1\.9.*allows 2\.0/);
  t.same(e.countsBySeverity(), { critical: 1, major: 4, minor: 0, warning: 1 });
  t.ok(firmwareMatches(['1.2.*', '1.3.0'], '1.2.15'));
  t.notOk(firmwareMatches(['1.2.*'], '1.20'), 'the dot is literal');
  t.notOk(firmwareMatches(['1.3.0'], '1.3.01'));
  t.ok(firmwareMatches(['*'], 'anything'));
  // Channel 3 at 3 Hz is between silence raise (1) and clear (5): nothing new; ch2 recovers at 3 Hz: stays.
  t.same(e.evaluate({ detectorRatesHz: { 2: 3 } }, 2000), []);
  t.equal(e.evaluate({ detectorRatesHz: { 2: 50 } }, 3000)[0]?.alarm.id, 'detector-silent/ch2');
  t.equal(e.evaluate({ kmsReachable: { bob: true } }, 3000)[0]?.type, 'cleared');
});

t.test('configuration: defaults, validation errors name the field, file loading', async (t) => {
  const c = parseAlarmConfig({ qber: { abortThreshold: 0.08, clearBelow: 0.06 }, recentLimit: 5 });
  t.equal(c.qber.abortThreshold, 0.08);
  t.equal(c.detectorSilence.raiseBelowHz, DEFAULT_ALARM_CONFIG.detectorSilence.raiseBelowHz);
  t.throws(() => parseAlarmConfig({ qbr: {} }), { code: 'ALARM_CONFIG_INVALID', message: /unknown section 'qbr'/ });
  t.throws(() => parseAlarmConfig({ qber: { abortThreshold: 'x' } }), { message: /qber\.abortThreshold/ });
  t.throws(() => parseAlarmConfig({ qber: { clearBelow: 0.2 } }), { message: /clearBelow.*must not exceed/ });
  t.throws(() => parseAlarmConfig({ syncLoss: { severity: 'panic' } }), { message: /severity/ });
  t.throws(() => parseAlarmConfig({ spoolFilling: { enabled: 'yes' } }), { message: /boolean/ });
  const dir = mkdtempSync(join(tmpdir(), 'qkd-alarms-'));
  const f = join(dir, 'alarms.json');
  writeFileSync(f, JSON.stringify({ calibrationStale: { maxAgeSeconds: 60, severity: 'minor' } }));
  const loaded = loadAlarmConfig(f);
  t.equal(loaded.calibrationStale.severity, 'minor');
  writeFileSync(f, '{ not json');
  t.throws(() => loadAlarmConfig(f), { code: 'ALARM_CONFIG_INVALID', message: new RegExp(f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) });
  t.throws(() => loadAlarmConfig(join(dir, 'missing.json')), { code: 'ALARM_CONFIG_UNREADABLE' });
  t.same(loadAlarmConfig(undefined), DEFAULT_ALARM_CONFIG, 'no file configured: defaults');
  // Disabled rules never raise; recent list is bounded.
  const e = new AlarmEngine({ qber: { enabled: false }, recentLimit: 2, kmsUnreachable: { forSeconds: 0 } });
  t.same(e.evaluate({ qber: 0.5 }, 0), []);
  for (let i = 0; i < 4; i++) e.evaluate({ kmsReachable: { k: i % 2 === 1 } }, i * 1000);
  t.equal(e.recent().length, 2);
});

t.test('no-key alarm: raised by blocks the statistics leave keyless (not by QBER aborts), cleared by a verified block', async (t) => {
  const e = new AlarmEngine();
  t.same(e.evaluate({ lastBlock: { verified: false, abortReason: 'PE_ABORT_QBER: X-basis QBER 25 %' } }, 0), [], 'QBER aborts have their own alarm');
  const raised = e.evaluate({ lastBlock: { verified: false, abortReason: 'PE_ABORT_BOUNDS: decoy bounds leave no single-photon key' } }, 1000);
  t.equal(raised.length, 1);
  t.equal(raised[0].alarm.kind, 'no-key');
  t.match(raised[0].alarm.message, /PE_ABORT_BOUNDS/);
  t.equal(raised[0].alarm.runbook, 'docs/runbook.md#no-key');
  t.same(e.evaluate({ lastBlock: { verified: false, abortReason: 'COMMIT_FAILED: peer gone' } }, 2000), [], 'other aborts leave it as it is');
  const cleared = e.evaluate({ lastBlock: { verified: true } }, 3000);
  t.equal(cleared[0]?.type, 'cleared');
});

t.test('detections-lost alarm: raised by a block refused for a tainted stream, cleared by a verified block', async (t) => {
  const e = new AlarmEngine();
  t.same(e.evaluate({ lastBlock: { verified: false, abortReason: 'PE_ABORT_QBER: X-basis QBER 25 %' } }, 0), [], 'QBER aborts are not lost detections');
  const reason = `STREAM_TAINTED: ${describeTaint({ seq: 41, flags: FLAG.DROPPED_BEFORE | FLAG.GAP, missingBefore: 3, droppedBefore: 3 })}`;
  const raised = e.evaluate({ lastBlock: { verified: false, abortReason: reason } }, 1000);
  t.equal(raised.length, 1);
  t.equal(raised[0].alarm.kind, 'detections-lost');
  t.equal(raised[0].alarm.severity, 'major');
  t.match(raised[0].alarm.message, /batch 41: the producer dropped 3 batch\(es\) because post-processing fell behind \(back-pressure\); 3 batch\(es\) missing/);
  t.equal(raised[0].alarm.runbook, 'docs/runbook.md#detections-lost');
  t.same(e.evaluate({ lastBlock: { verified: false, abortReason: 'COMMIT_FAILED: peer gone' } }, 2000), [], 'other aborts leave it as it is');
  t.equal(e.evaluate({ lastBlock: { verified: true } }, 3000)[0]?.type, 'cleared');
});

t.test('describeTaint names every taint flag, and a clean batch as clean', async (t) => {
  t.equal(describeTaint({ seq: 7, flags: 0 }), 'batch 7: clean');
  t.match(describeTaint({ seq: 7, flags: FLAG.OVERFLOW }), /overflowed/);
  t.match(describeTaint({ seq: 7, flags: FLAG.RESTART | FLAG.REORDERED | FLAG.ORDER_VIOLATION | FLAG.MISSED_EVENTS | FLAG.TAGGER_ERROR }),
    /missed events; .*error record; .*out of order or twice; .*out of time order; the stream restarted/);
  for (const [name, bit] of Object.entries(FLAG)) {
    if (TAINT_FLAGS & bit) t.not(describeTaint({ seq: 1, flags: bit }), 'batch 1: clean', `${name} is described`);
  }
});

t.test('every alarm kind has a runbook section with causes, checks and actions', async (t) => {
  const runbook = readFileSync(new URL('../../docs/runbook.md', import.meta.url), 'utf8');
  const kinds: AlarmKind[] = ['qber-high', 'detector-saturation', 'detector-silent', 'sync-lost', 'kms-unreachable', 'spool-filling',
    'calibration-stale', 'firmware-mismatch', 'randomness-failed', 'classical-rtt-high', 'no-key', 'source-rng-failed', 'detections-lost'];
  for (const k of kinds) {
    // GitHub anchors: "## qber-high: …" → #qber-high-… ; we use explicit <a id> anchors.
    t.ok(runbook.includes(`<a id="${k}"></a>`), `runbook anchor #${k}`);
    const section = runbook.split(`<a id="${k}"></a>`)[1]?.split('<a id=')[0] ?? '';
    t.match(section, /Likely causes/, `${k}: causes`);
    t.match(section, /Checks/, `${k}: checks`);
    t.match(section, /Actions/, `${k}: actions`);
  }
});
