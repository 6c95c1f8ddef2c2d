//! qkd-records: time-tagger recordings from real instruments, decoded into typed arrays.
//!
//! Formats (one module each; sources of the layouts are named in each module and in
//! docs/devices.md, "Recorded data"):
//! - [`ptu`]: PicoQuant unified TTTR files (`.ptu`): tagged header, then 32-bit T2 or T3 records
//!   of the PicoHarp 300, HydraHarp 400 (v1 and v2 records), TimeHarp 260 N/P, MultiHarp /
//!   PicoHarp 330 ("generic"); overflow and marker records.
//! - [`qutag`]: quTAG / quTAU binary time stamps: a 40-byte header, then 10-byte records
//!   (i64 time in base units, u16 channel), not strictly time-ordered across channels; a
//!   bounded re-ordering stage ([`qutag::Reorder`]) restores time order.
//! - [`a1`]: the qcrypto / S-Fifteen `readevents -a1` binary stream (64-bit words: time in
//!   1/256 ns in bits 63..10, detector pattern in bits 3..0), read and written.
//! - [`histogram`]: start-stop and g2 (cross-correlation) histograms over decoded events.
//!
//! Conventions shared by every decoder:
//! - Output goes into caller-owned slices (`time_ps` i64 picoseconds since the start of the
//!   recording, `channel` u8; for T3 also `nsync` u64 and `dtime` u16). A call decodes as many
//!   whole records as fit and reports how many records it consumed and how many events it
//!   wrote, so a file is decoded in chunks of any size with the state carried in the decoder.
//! - Channel numbers follow the instruments' own front-panel labels: 0 is the sync / start input
//!   (PicoQuant "Sync", quTAG start), 1.. are the inputs; qcrypto detector bit b is channel b+1.
//!   External marker bit b (PicoQuant) is channel [`MARKER_CHANNEL`] + b.
//! - Nothing is dropped silently: overflow records are consumed (they advance the clock),
//!   markers become events, and whatever cannot be represented is counted in the decoder's
//!   statistics, which the TypeScript side reports.

pub mod a1;
pub mod histogram;
pub mod ptu;
pub mod qutag;

/// Channel of PicoQuant external marker bit 0 (bits 1..3 follow).
pub const MARKER_CHANNEL: u8 = 128;

/// Errors of the record decoders. `code` is the stable string the TypeScript facade switches
/// on (`RECORDS_BAD_HEADER`, `RECORDS_UNSUPPORTED`, `RECORDS_BAD_ARGUMENT`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordsError {
    pub code: &'static str,
    pub message: String,
}

impl RecordsError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        RecordsError { code, message: message.into() }
    }
}

impl std::fmt::Display for RecordsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for RecordsError {}

pub type Result<T> = std::result::Result<T, RecordsError>;

/// How much one decode call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Whole records (or bytes / record size) consumed from the input.
    pub records: usize,
    /// Events written to the output slices.
    pub events: usize,
}

/// Counters a decoder keeps over the whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Events per output channel (markers included, at their marker channels).
    pub per_channel: [u64; 256],
    /// Overflow (time wrap) records consumed.
    pub overflow_records: u64,
    /// Marker events written (one per marker bit set).
    pub markers: u64,
    /// Records whose channel code the format reserves ("should not occur"); written as-is.
    pub illegal: u64,
    /// qcrypto events with an empty detector pattern (not written; counted here).
    pub empty: u64,
    /// quTAG events that arrived later than the re-ordering window allowed (not written;
    /// counted here and per channel in `late_per_channel`).
    pub late: u64,
    pub late_per_channel: [u64; 256],
}

impl Default for Stats {
    fn default() -> Self {
        Stats { per_channel: [0; 256], overflow_records: 0, markers: 0, illegal: 0, empty: 0, late: 0, late_per_channel: [0; 256] }
    }
}

/// Converts tagger units to picoseconds: exactly by an integer factor when the unit is a whole
/// number of ps (PicoQuant 1, 4, 5, 25 ps; quTAG 1 ps), else in f64 rounded to the nearest ps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    Int(i64),
    Float(f64),
}

impl Scale {
    pub fn from_ps(ps: f64) -> Result<Scale> {
        if !(ps.is_finite() && ps > 0.0) {
            return Err(RecordsError::new("RECORDS_BAD_HEADER", format!("time unit {ps} ps is not a positive number")));
        }
        let r = ps.round();
        // PTU stores resolutions as f64 seconds (4e-12 is not exact): accept 1e-6 relative.
        if r >= 1.0 && (ps - r).abs() <= 1e-6 * ps { Ok(Scale::Int(r as i64)) } else { Ok(Scale::Float(ps)) }
    }
    #[inline(always)]
    pub fn apply(self, units: u64) -> i64 {
        match self {
            Scale::Int(k) => (units as i64).wrapping_mul(k),
            Scale::Float(f) => (units as f64 * f).round() as i64,
        }
    }
    pub fn ps(self) -> f64 {
        match self {
            Scale::Int(k) => k as f64,
            Scale::Float(f) => f,
        }
    }
}
