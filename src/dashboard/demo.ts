/**
 * Demo: serves the dashboard fed by the synthetic source in real time (one virtual second per
 * second), with an intercept-resend episode and a KMS outage so the alarms show.
 *   node --import tsx src/dashboard/demo.ts [port]
 * Not used by the node itself; the orchestrator calls startDashboard with its own getState.
 */
import { startDashboard } from './server.ts';
import { createSyntheticSource } from './synthetic.ts';
import { createLogger } from '../telemetry/logger.ts';

const port = Number(process.argv[2] ?? 8080);
const t0 = Date.now();
const src = createSyntheticSource({
  startMs: t0 - 240_000,
  eve: { fromSec: 300, toSec: 360 },
  kmsOutage: { kms: 'bob', fromSec: 420, toSec: 450 },
});
const log = createLogger({ component: 'dashboard.demo' });
const dash = await startDashboard({
  port,
  getState: () => {
    src.advanceTo(Date.now());
    return src.state();
  },
  metrics: () => {
    src.advanceTo(Date.now());
    return src.metrics.registry.render();
  },
  logger: log,
});
process.stdout.write(`dashboard: ${dash.url}  (metrics: ${dash.url}metrics)\n`);
const stop = () => void dash.close().then(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
