//! napi adapter for qkd-core's sync tracker (sync_track.rs): the per-click part of Bob's clock
//! synchronisation. The TypeScript orchestrator (src/timing/sync.ts with src/timing/native-sync.ts)
//! runs the acquisition and asks Alice's node for her pattern; this object labels the clicks.
//!
//! Calls run on the JS thread and hold it for one batch at most (~1 ms per 10^5 clicks); the typed
//! arrays passed in are borrowed JS memory, read during the call only. Errors are
//! "SYNC_*: message" strings; no panic crosses (caught and reported).
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qkd_core::sync_track::{self, Model, Tracker, TrackerOptions};
use std::panic::{catch_unwind, AssertUnwindSafe};

fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(Error::new(Status::GenericFailure, "SYNC_INTERNAL: internal error in the native sync tracker")))
}

fn bad(msg: String) -> Error {
    Error::new(Status::InvalidArg, format!("SYNC_BAD_ARGUMENT: {msg}"))
}

#[napi(object)]
pub struct SyncTrackerOptions {
    pub period_ps: f64,
    pub window_ps: f64,
    pub acquire_span_ps: f64,
    pub acquire_min_clicks: f64,
    pub max_acquire_span_ps: f64,
    pub track_window_ps: f64,
    pub track_min_clicks: f64,
    pub gap_ps: f64,
    pub verify_every_ps: f64,
    pub verify_clicks: u32,
    pub verify_delay_ps: f64,
    pub loss_windows: u32,
    pub min_confidence: f64,
    pub max_channel_skew_pulses: u32,
    pub first_pulse: f64,
    pub with_seq: bool,
    pub channels: Option<Vec<u32>>,
    /// 256 entries.
    pub pre_delay_ps: Float64Array,
}

#[napi(object)]
pub struct SyncModelJs {
    pub t_ref_ps: f64,
    pub p_int: f64,
    pub p_frac: f64,
    pub rate_per_ps: f64,
    pub accel_per_ps2: f64,
    /// 256 entries.
    pub delay_ps: Float64Array,
    pub ref_channel: i32,
}

#[napi(object)]
pub struct SyncOutputJs {
    pub pulse_index: Float64Array,
    pub channel: Uint8Array,
    pub residual_ps: Float32Array,
    pub tag_seq: Option<Float64Array>,
}

#[napi(object)]
pub struct SyncStatsJs {
    pub emitted: f64,
    pub outside_window: f64,
    pub ignored_channel: f64,
    pub slips_repaired: f64,
    pub lock_losses: f64,
    pub checks_skipped: f64,
}

#[napi(object)]
pub struct AcquisitionBufferJs {
    pub time_ps: Float64Array,
    pub channel: Uint8Array,
}

fn arr256(a: &[f64], what: &str) -> Result<[f64; 256]> {
    a.try_into().map_err(|_| bad(format!("{what} must have 256 entries, got {}", a.len())))
}

#[napi]
pub struct SyncTracker {
    t: Tracker,
}

#[napi]
impl SyncTracker {
    #[napi(constructor)]
    pub fn new(o: SyncTrackerOptions) -> Result<Self> {
        let channels = match o.channels {
            Some(v) => Some(v.iter().map(|&c| u8::try_from(c).map_err(|_| bad(format!("channel {c} is not in 0..255")))).collect::<Result<Vec<u8>>>()?),
            None => None,
        };
        if !(o.period_ps > 0.0) {
            return Err(bad(format!("periodPs must be > 0, got {}", o.period_ps)));
        }
        Ok(SyncTracker {
            t: Tracker::new(TrackerOptions {
                period_ps: o.period_ps,
                window_ps: o.window_ps,
                acquire_span_ps: o.acquire_span_ps,
                acquire_min_clicks: o.acquire_min_clicks,
                max_acquire_span_ps: o.max_acquire_span_ps,
                track_window_ps: o.track_window_ps,
                track_min_clicks: o.track_min_clicks,
                gap_ps: o.gap_ps,
                verify_every_ps: o.verify_every_ps,
                verify_clicks: o.verify_clicks as usize,
                verify_delay_ps: o.verify_delay_ps,
                loss_windows: o.loss_windows,
                min_confidence: o.min_confidence,
                max_channel_skew_pulses: o.max_channel_skew_pulses.min(1 << 20) as i32,
                first_pulse: o.first_pulse,
                with_seq: o.with_seq,
                channels,
                pre_delay_ps: arr256(&o.pre_delay_ps, "preDelayPs")?,
            }),
        })
    }

    /// Scans clicks `from..` of a batch; returns 0 (end), 1 (acquisition due), 2 (check due).
    #[napi]
    pub fn scan(&mut self, time_ps: BigInt64Array, channel: Uint8Array, from: u32) -> Result<u32> {
        guarded(|| {
            if time_ps.len() != channel.len() {
                return Err(bad(format!("timePs has {} entries but channel has {}", time_ps.len(), channel.len())));
            }
            Ok(self.t.scan(&time_ps, &channel, from as usize) as u32)
        })
    }

    #[napi(getter)]
    pub fn cursor(&self) -> u32 {
        self.t.cursor() as u32
    }

    /// Labels the buffer after a lock; 0 (done) or 2 (check due).
    #[napi]
    pub fn drain(&mut self) -> Result<u32> {
        guarded(|| Ok(self.t.drain() as u32))
    }

    /// Copies of the acquisition buffer (times after known delays, channels); starts an attempt.
    #[napi]
    pub fn acquisition_buffer(&mut self) -> Result<AcquisitionBufferJs> {
        guarded(|| {
            let (t, c) = self.t.acquisition_buffer();
            Ok(AcquisitionBufferJs { time_ps: Float64Array::new(t.to_vec()), channel: Uint8Array::new(c.to_vec()) })
        })
    }

    #[napi]
    pub fn acquire_failed(&mut self) -> Result<()> {
        guarded(|| {
            self.t.acquire_failed();
            Ok(())
        })
    }

    /// Locks with an acquisition's model; `score` (256) and `sigma` from the pattern's score table.
    #[napi]
    pub fn lock(&mut self, model: SyncModelJs, score: Float64Array, sigma: f64, expected_in_frac: f64) -> Result<()> {
        guarded(|| {
            let m = Model {
                t_ref_ps: model.t_ref_ps,
                p_int: model.p_int,
                p_frac: model.p_frac,
                rate_per_ps: model.rate_per_ps,
                accel_per_ps2: model.accel_per_ps2,
                delay_ps: arr256(&model.delay_ps, "model.delayPs")?,
                ref_channel: model.ref_channel,
            };
            let s = arr256(&score, "score")?;
            self.t.lock(m, &s, sigma, expected_in_frac);
            Ok(())
        })
    }

    #[napi]
    pub fn verify_sample(&mut self) -> Result<Float64Array> {
        guarded(|| Ok(Float64Array::new(self.t.verify_sample().to_vec())))
    }

    /// null: check over; else the neighbour pulses whose classes the slip search needs.
    #[napi]
    pub fn verify_first(&mut self, classes: Uint8Array) -> Result<Option<Float64Array>> {
        guarded(|| Ok(self.t.verify_first(&classes).map(Float64Array::new)))
    }

    #[napi]
    pub fn verify_slip(&mut self, classes: Uint8Array) -> Result<()> {
        guarded(|| {
            self.t.verify_slip(&classes);
            Ok(())
        })
    }

    #[napi]
    pub fn take_output(&mut self) -> Result<SyncOutputJs> {
        guarded(|| {
            let with_seq = !self.t.out.seq.is_empty();
            let o = self.t.take_output();
            Ok(SyncOutputJs {
                pulse_index: Float64Array::new(o.pulse),
                channel: Uint8Array::new(o.channel),
                residual_ps: Float32Array::new(o.residual_ps),
                tag_seq: if with_seq { Some(Float64Array::new(o.seq)) } else { None },
            })
        })
    }

    #[napi(getter)]
    pub fn locked(&self) -> bool {
        self.t.locked()
    }

    #[napi(getter)]
    pub fn confidence(&self) -> f64 {
        self.t.confidence()
    }

    #[napi(setter)]
    pub fn set_confidence(&mut self, z: f64) {
        self.t.set_confidence(z)
    }

    /// NaN: never lost.
    #[napi(getter)]
    pub fn last_lock_loss_at(&self) -> f64 {
        self.t.last_lock_loss_at()
    }

    #[napi]
    pub fn model(&self) -> Option<SyncModelJs> {
        self.t.model().map(|m| SyncModelJs {
            t_ref_ps: m.t_ref_ps,
            p_int: m.p_int,
            p_frac: m.p_frac,
            rate_per_ps: m.rate_per_ps,
            accel_per_ps2: m.accel_per_ps2,
            delay_ps: Float64Array::new(m.delay_ps.to_vec()),
            ref_channel: m.ref_channel,
        })
    }

    #[napi]
    pub fn stats(&self) -> SyncStatsJs {
        let s = &self.t.stats;
        SyncStatsJs {
            emitted: s.emitted as f64,
            outside_window: s.outside_window as f64,
            ignored_channel: s.ignored_channel as f64,
            slips_repaired: s.slips_repaired as f64,
            lock_losses: s.lock_losses as f64,
            checks_skipped: s.checks_skipped as f64,
        }
    }

    /// Tags seen per channel since construction (256 entries).
    #[napi]
    pub fn tags_per_channel(&self) -> Float64Array {
        Float64Array::new(self.t.tags_per_channel.iter().map(|&v| v as f64).collect())
    }
}

/// Adds residuals to per-channel histograms (`hist`: 256 x bins, channel-major), see
/// sync_track::residual_histogram.
#[napi]
pub fn sync_residual_histogram(channel: Uint8Array, residual_ps: Float32Array, start_ps: f64, bin_width_ps: f64, bins: u32, mut hist: Uint32Array) -> Result<()> {
    guarded(move || {
        if hist.len() < 256 * bins as usize {
            return Err(bad(format!("hist needs 256 x {bins} entries, has {}", hist.len())));
        }
        if channel.len() != residual_ps.len() {
            return Err(bad(format!("channel has {} entries but residualPs has {}", channel.len(), residual_ps.len())));
        }
        // SAFETY: `hist` is borrowed from JS for this synchronous call on the JS thread; nothing
        // else reads or writes it meanwhile.
        let h = unsafe { hist.as_mut() };
        sync_track::residual_histogram(&channel, &residual_ps, start_ps, bin_width_ps, bins as usize, h);
        Ok(())
    })
}

/// Sorts (pulse, channel) pairs by pulse in place, stably.
#[napi]
pub fn sync_sort_by_pulse(mut pulse: Float64Array, mut channel: Uint8Array) -> Result<()> {
    guarded(move || {
        if pulse.len() != channel.len() {
            return Err(bad(format!("pulse has {} entries but channel has {}", pulse.len(), channel.len())));
        }
        // SAFETY: as above, both arrays are borrowed for this synchronous call only.
        let (p, c) = unsafe { (pulse.as_mut(), channel.as_mut()) };
        sync_track::sort_by_pulse(p, c);
        Ok(())
    })
}
