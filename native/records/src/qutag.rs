//! quTAG / quTAU binary time-stamp files ("binary, 10 bytes per event").
//!
//! Layout from the qutools quTAU/quPSI manual (V4.0, "Time Stamping": binary file, 10 bytes per
//! event) and the quTAG software documentation (a 40-byte binary header precedes the events):
//!
//! ```text
//!  0                40        50        60
//!  ┌────────────────┬─────────┬─────────┬────
//!  │ header 40 B     │ event   │ event   │ …
//!  └────────────────┴─────────┴─────────┴────
//!  event: ┌──────────────────────────────┬──────────────┐
//!         │ time, i64 LE, in base units   │ channel, u16 │
//!         │ (quTAG 1 ps; quTAU ~81 ps)    │ LE           │
//!         └──────────────────────────────┴──────────────┘
//! ```
//! The header's contents are not interpreted (the format documentation does not define them);
//! a file whose length is not 40 + a whole number of events is truncated. Events come in the
//! order the device's channels delivered them, which is not strictly time order across channels.
//! [`Reorder`] holds events back for a window and releases them in time order; an event more than
//! the window older than the latest event before it in the file is counted as late (per channel)
//! and not written, so a window that is too short shows in the statistics instead of breaking
//! the stream's time order (and the outcome does not depend on how the file is chunked).
use crate::{Progress, RecordsError, Result, Scale, Stats};

pub const HEADER_BYTES: usize = 40;
pub const RECORD_BYTES: usize = 10;

/// Decodes quTAG events (after the 40-byte header) in chunks, re-ordered in time.
#[derive(Debug)]
pub struct QutagDecoder {
    unit: Scale,
    reorder: Reorder,
    pub stats: Stats,
}

impl QutagDecoder {
    /// `unit_ps`: the device's time base (1 for the quTAG); `window_ps`: how far an event may
    /// arrive behind a later one (the re-ordering hold-back).
    pub fn new(unit_ps: f64, window_ps: i64) -> Result<Self> {
        if window_ps < 0 {
            return Err(RecordsError::new("RECORDS_BAD_ARGUMENT", "re-ordering window must be >= 0 ps"));
        }
        Ok(QutagDecoder { unit: Scale::from_ps(unit_ps)?, reorder: Reorder::new(window_ps), stats: Stats::default() })
    }

    /// Consumes whole records from `input` (at most as many as there is output room) and writes
    /// the events that are due, in time order. With `last` (no more input), everything held back
    /// is released. Call again with an empty input and `last` until it writes nothing.
    pub fn decode(&mut self, input: &[u8], time_ps: &mut [i64], channel: &mut [u8], last: bool) -> Result<Progress> {
        let cap = time_ps.len().min(channel.len());
        let mut w = self.reorder.release(time_ps, channel, 0, false);
        let mut r = 0usize;
        if w < cap {
            let room = cap - w;
            for rec in input.chunks_exact(RECORD_BYTES).take(room) {
                let units = i64::from_le_bytes(rec[0..8].try_into().unwrap());
                let ch = u16::from_le_bytes([rec[8], rec[9]]);
                r += 1;
                if ch > 255 || units < 0 {
                    self.stats.illegal += 1;
                    continue;
                }
                self.reorder.push(self.unit.apply(units as u64), ch as u8, &mut self.stats);
            }
            let all_in = last && r * RECORD_BYTES >= input.len() - input.len() % RECORD_BYTES;
            w = self.reorder.release(time_ps, channel, w, all_in);
        }
        for &c in &channel[..w] {
            self.stats.per_channel[c as usize] += 1;
        }
        Ok(Progress { records: r, events: w })
    }

    /// Events held back (not yet written).
    pub fn pending(&self) -> usize {
        self.reorder.pending.len()
    }
}

/// Restores time order of a stream whose events may arrive up to `window_ps` late.
#[derive(Debug)]
pub struct Reorder {
    window_ps: i64,
    pending: Vec<(i64, u8)>,
    sorted: bool,
    max_seen: i64,
    /// Time of the last released event: nothing earlier may be released any more.
    released: i64,
}

impl Reorder {
    pub fn new(window_ps: i64) -> Self {
        Reorder { window_ps, pending: Vec::new(), sorted: true, max_seen: i64::MIN, released: i64::MIN }
    }

    /// An event is late when it is more than the window older than the latest event before it
    /// (a property of the file, whatever the chunk sizes); late events are counted, not kept.
    pub fn push(&mut self, t: i64, ch: u8, stats: &mut Stats) {
        if t < self.released || t < self.max_seen.saturating_sub(self.window_ps) {
            stats.late += 1;
            stats.late_per_channel[ch as usize] += 1;
            return;
        }
        if let Some(&(last, _)) = self.pending.last() {
            if t < last {
                self.sorted = false;
            }
        }
        self.max_seen = self.max_seen.max(t);
        self.pending.push((t, ch));
    }

    /// Writes due events into `time_ps[from..]`/`channel[from..]`; returns the new fill level.
    pub fn release(&mut self, time_ps: &mut [i64], channel: &mut [u8], from: usize, all: bool) -> usize {
        if !self.sorted {
            // Stable: equal times keep their file order. Nearly sorted input: the merge sort is ~linear.
            self.pending.sort_by_key(|e| e.0);
            self.sorted = true;
        }
        let cap = time_ps.len().min(channel.len());
        let due = if all { i64::MAX } else { self.max_seen.saturating_sub(self.window_ps) };
        let mut k = 0;
        let mut w = from;
        while k < self.pending.len() && w < cap && self.pending[k].0 <= due {
            time_ps[w] = self.pending[k].0;
            channel[w] = self.pending[k].1;
            self.released = self.pending[k].0;
            k += 1;
            w += 1;
        }
        self.pending.drain(..k);
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(events: &[(i64, u16)]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_BYTES];
        for &(t, c) in events {
            b.extend_from_slice(&t.to_le_bytes());
            b.extend_from_slice(&c.to_le_bytes());
        }
        b
    }

    fn decode_all(bytes: &[u8], window: i64, room: usize) -> (Vec<(i64, u8)>, Stats) {
        let mut d = QutagDecoder::new(1.0, window).unwrap();
        let data = &bytes[HEADER_BYTES..];
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            let (mut t, mut c) = (vec![0i64; room], vec![0u8; room]);
            let p = d.decode(&data[at..], &mut t, &mut c, true).unwrap();
            at += p.records * RECORD_BYTES;
            out.extend((0..p.events).map(|i| (t[i], c[i])));
            if p.events == 0 && p.records == 0 && at >= data.len() {
                break;
            }
        }
        (out, d.stats)
    }

    #[test]
    fn reorders_within_window_and_counts_late_and_illegal() {
        // Channel 2's events arrive up to 30 ps behind channel 1's; channel 300 is not representable.
        let ev = [(100, 1), (150, 1), (120, 2), (200, 1), (180, 2), (190, 300), (400, 1), (50, 3)];
        let (out, st) = decode_all(&file(&ev), 100, 3);
        assert_eq!(out, vec![(100, 1), (120, 2), (150, 1), (180, 2), (200, 1), (400, 1)]);
        assert_eq!(st.illegal, 1);
        assert_eq!((st.late, st.late_per_channel[3]), (1, 1), "(50, 3) arrives after 100..200 were released");
        assert_eq!(st.per_channel[1], 4);
    }

    #[test]
    fn random_bounded_disorder_is_restored_exactly() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut ev: Vec<(i64, u16)> = (0..20000).map(|i| (i * 1000 + rng.gen_range(0..5000), rng.gen_range(0..4))).collect();
        let mut expect: Vec<(i64, u8)> = ev.iter().map(|&(t, c)| (t, c as u8)).collect();
        expect.sort_by_key(|e| e.0);
        ev.sort_by_key(|e| e.0 + ((e.1 as i64) * 3000)); // per-channel delivery lag up to 9 ns
        for room in [4, 37, 1000] {
            let (out, st) = decode_all(&file(&ev), 20_000, room);
            assert_eq!(st.late, 0);
            let mut a = out.clone();
            a.sort();
            let mut b = expect.clone();
            b.sort();
            assert_eq!(a, b, "same events");
            assert!(out.windows(2).all(|w| w[0].0 <= w[1].0), "time order");
        }
    }
}
