/**
 * The emulated link's per-click physics in Rust (native/core/src/lab_link.rs, adapter
 * native/node/src/lab.rs), behind a small typed facade for EmulatedLink (src/lab/link.ts), which
 * keeps computing the derived parameters and remains the reference implementation.
 *
 * Every call but `nextPulsesSourcedAsync` runs on the JS thread and returns when the batch is done;
 * arrays returned are fresh and owned by the caller. Errors come back as coded QkdErrors (`LAB_*`).
 */
import { native } from '../core/native.ts';
import { callNative, callNativeAsync } from '../core/native-call.ts';
import { bobThreshold, DOMAIN_BOB, seedKeys } from './alice.ts';
import type { LinkPreset } from './presets.ts';

type Addon = ReturnType<typeof native>;
type Engine = InstanceType<Addon['LabLinkPhysics']>;
export type NativeLinkParams = Parameters<Engine['setParams']>[0];
export type NativeLinkBatch = ReturnType<Engine['drain']>;

export interface NativeLinkPhysics {
  setParams(p: NativeLinkParams): void;
  setClock(drift: number, clockPhase: number, jitterSigma: number): void;
  /** Photon candidates of the pulses up to `endPulse` (a link with a source device). */
  candidates(endPulse: number): Float64Array;
  nextPulses(endPulse: number, choices: Uint8Array | undefined): NativeLinkBatch;
  drain(): NativeLinkBatch;
  /** Alice's source device (its native object) for `nextPulsesSourced`. */
  attachSource(device: NativeSourceDevice): void;
  /** `candidates`, the attached device's `applyAt` of them and `nextPulses`, in one call. */
  nextPulsesSourced(endPulse: number): NativeLinkBatch;
  /** The same on libuv's pool (the JS thread is free meanwhile); one at a time. */
  nextPulsesSourcedAsync(endPulse: number): Promise<NativeLinkBatch>;
}

export type NativeSourceDevice = InstanceType<Addon['EmulatedSourceDevice']>;

/** `truth` (default true): batches carry the truth columns; without, they are empty (the same tags). */
export function nativeLinkPhysics(params: NativeLinkParams, rngState: Uint32Array, rngSkipState: Uint32Array, withSource: boolean, truth = true): NativeLinkPhysics {
  const e: Engine = callNative(() => new (native().LabLinkPhysics)(params, rngState, rngSkipState, withSource, truth));
  return {
    setParams: (p) => callNative(() => e.setParams(p)),
    setClock: (drift, phase, sigma) => callNative(() => e.setClock(drift, phase, sigma)),
    candidates: (end) => callNative(() => e.candidates(end)),
    nextPulses: (end, choices) => callNative(() => e.nextPulses(end, choices)),
    drain: () => callNative(() => e.drain()),
    attachSource: (device) => callNative(() => e.attachSource(device)),
    nextPulsesSourced: (end) => callNative(() => e.nextPulsesSourced(end)),
    // (the addon's typings say Promise<unknown> for an AsyncTask's value: it is a LabLinkBatch)
    nextPulsesSourcedAsync: (end) => callNativeAsync(() => callNative(() => e.nextPulsesSourcedAsync(end)) as Promise<NativeLinkBatch>),
  };
}

/** Counts per channel value (256 entries) of a batch's channels, natively. */
export function countChannels(channel: Uint8Array): Float64Array {
  return callNative(() => native().labCountChannels(channel));
}

/** `Math.log` as the Rust physics computes it (fdlibm, as V8): for the property test. */
export function nativeJsLog(x: Float64Array): Float64Array {
  return callNative(() => native().labJsLog(x));
}

/**
 * An active Bob's modulator basis (0 Z, 1 X) at the listed pulses (integers in [0, 2^53)),
 * natively; the same bytes as bobBasisChoicesAt in ./alice.ts (the reference). A pulse that is not
 * an index fails with LAB_BAD_PULSE.
 */
export function nativeBobBasesAt(preset: LinkPreset, bobSeed: bigint, pulses: Float64Array): Uint8Array {
  const k = seedKeys(bobSeed, DOMAIN_BOB);
  const th = bobThreshold(preset);
  return callNative(() => native().labBobBasesAt(k.k0, k.k1, th, pulses));
}
