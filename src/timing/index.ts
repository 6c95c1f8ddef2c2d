/** Public API of the timing layer (clock sync, pulse indexing, histograms, calibration records). */
export { ClockSync, modelOffsetPs, type ClockSyncOptions, type IndexedDetections, type SyncState } from './sync.ts';
export { acquireFrequency, acquireOffset, modelFromFrequency, expectedDPrime, type ClockModel, type AcquireOptions } from './acquire.ts';
export { type AlicePattern, patternAt, scoreTable } from './pattern.ts';
export { deviceRig, type DeviceRigOptions } from './device-rig.ts';
export { histogram, peakStats, channelTimings, chooseWindow, type Histogram, type PeakStats, type ChannelTiming, type WindowChoice } from './histogram.ts';
export { CALIBRATION_STEPS, runStep, afterpulseFromIntervals, type CalibrationStep, type CalibrationRig, type StepResult, type DeviceInfo, type TagSource } from './calibrate.ts';
// The emulated lab's rig and pattern (emulatedRig, alicePatternFromSeed) are in src/lab/calibration-rig.ts and src/lab/pattern.ts.
export { loadCalibration, requireCalibration, writeRecord, makeRecord, type CalibrationRecord, type CalibrationProblem, type LoadedCalibration } from './records.ts';
export { svgPlot, terminalPlot, type PlotSpec } from './plot.ts';
export { tagTimesToNumbers, numbersToTagTimes } from './times.ts';
