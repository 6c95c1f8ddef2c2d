/**
 * The emulated link's per-click physics in Rust (native/core/src/lab_link.rs, adapter
 * native/node/src/lab.rs), behind a small typed facade for EmulatedLink (src/lab/link.ts), which
 * keeps computing the derived parameters and remains the reference implementation.
 *
 * Every call runs on the JS thread and returns when the batch is done; arrays returned are fresh
 * and owned by the caller. Errors come back as coded QkdErrors (`LAB_*`).
 */
import { native } from '../core/native.ts';
import { callNative } from '../core/native-call.ts';

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
}

export function nativeLinkPhysics(params: NativeLinkParams, rngState: Uint32Array, rngSkipState: Uint32Array, withSource: boolean): NativeLinkPhysics {
  const e: Engine = callNative(() => new (native().LabLinkPhysics)(params, rngState, rngSkipState, withSource));
  return {
    setParams: (p) => callNative(() => e.setParams(p)),
    setClock: (drift, phase, sigma) => callNative(() => e.setClock(drift, phase, sigma)),
    candidates: (end) => callNative(() => e.candidates(end)),
    nextPulses: (end, choices) => callNative(() => e.nextPulses(end, choices)),
    drain: () => callNative(() => e.drain()),
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
