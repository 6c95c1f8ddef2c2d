/** The operator's live web view: server, state type and builder, synthetic source for demos/tests. */
export { startDashboard, type Dashboard, type DashboardOptions } from './server.ts';
export { DashboardStateBuilder, type StateBuilderOptions } from './state.ts';
export { createSyntheticSource, type SyntheticOptions, type SyntheticSource } from './synthetic.ts';
export type {
  DashboardState, TimePoint, DetectorPanel, TimingHistogram, SyncPanel, KmsPanel, SummaryPanel, IntensityPanel,
} from './types.ts';
