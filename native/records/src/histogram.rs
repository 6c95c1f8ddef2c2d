//! Timing histograms over time-ordered events, fed in chunks (state carries across).
//!
//! - Start-stop (a TCSPC / lifetime histogram): for each stop event, Δ = t_stop − t_last_start + D
//!   (the most recent start at or before it; none yet: not counted); bin k = ⌊Δ / B⌋ for
//!   0 ≤ Δ < N·B. With start = stop channel this is the inter-arrival histogram. For T3 data the
//!   start can be the sync itself: Δ = dtime × resolution + D ([`Histogram::push_dtime`]).
//! - g2 (cross-correlation, both signs): every start/stop pair with Δ = t_stop − t_start + D in
//!   range, bins centred on multiples of B: bin k covers [(k − h − ½)B, (k − h + ½)B), h = ⌊N/2⌋,
//!   so bin h is centred on zero. Each pair is counted once, by whichever of the two events comes
//!   later in the stream (it looks back at the other kind within the range); with start = stop
//!   channel every ordered pair of distinct events is counted (an autocorrelation).
//!
//! Events must be in time order; `push` counts events that go backwards (`order_violations`)
//! and bins them as they come.
use std::collections::VecDeque;

use crate::{RecordsError, Result, Scale};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    StartStop,
    G2,
}

#[derive(Debug, Clone)]
pub struct Histogram {
    pub mode: Mode,
    pub start: u8,
    pub stop: u8,
    pub bin_ps: i64,
    pub delay_ps: i64,
    pub counts: Vec<u64>,
    /// Stop events seen (start-stop) / pairs considered (g2), in range or not.
    pub considered: u64,
    pub order_violations: u64,
    last_start: Option<i64>,
    last_t: i64,
    starts: VecDeque<i64>,
    stops: VecDeque<i64>,
}

impl Histogram {
    pub fn new(mode: Mode, start: u8, stop: u8, bin_ps: i64, bins: usize, delay_ps: i64) -> Result<Self> {
        if bin_ps <= 0 || bins == 0 || bins > 1 << 24 {
            return Err(RecordsError::new("RECORDS_BAD_ARGUMENT", format!("histogram needs bin > 0 ps and 1..2^24 bins, got bin {bin_ps} ps, {bins} bins")));
        }
        Ok(Histogram {
            mode,
            start,
            stop,
            bin_ps,
            delay_ps,
            counts: vec![0; bins],
            considered: 0,
            order_violations: 0,
            last_start: None,
            last_t: i64::MIN,
            starts: VecDeque::new(),
            stops: VecDeque::new(),
        })
    }

    /// Lower edge of bin 0 in ps (start-stop: 0; g2: −(⌊N/2⌋ + ½)·B).
    pub fn first_bin_ps(&self) -> f64 {
        match self.mode {
            Mode::StartStop => 0.0,
            Mode::G2 => -((self.counts.len() / 2) as f64 + 0.5) * self.bin_ps as f64,
        }
    }

    #[inline(always)]
    fn bin_g2(&mut self, delta: i64) {
        let b = self.bin_ps as i128;
        let h = (self.counts.len() / 2) as i128;
        // k = floor((Δ + (h + 1/2) B) / B) in integers: floor((2Δ + (2h + 1) B) / 2B).
        let num = 2 * delta as i128 + (2 * h + 1) * b;
        if num < 0 {
            return;
        }
        let k = (num / (2 * b)) as usize;
        if k < self.counts.len() {
            self.counts[k] += 1;
        }
    }

    pub fn push(&mut self, time_ps: &[i64], channel: &[u8]) {
        let n = time_ps.len().min(channel.len());
        match self.mode {
            Mode::StartStop => {
                let (b, nb) = (self.bin_ps, self.counts.len() as i64);
                for i in 0..n {
                    let (t, c) = (time_ps[i], channel[i]);
                    self.order_violations += (t < self.last_t) as u64;
                    self.last_t = t;
                    if c == self.stop {
                        if let Some(s) = self.last_start {
                            self.considered += 1;
                            let d = t - s + self.delay_ps;
                            if d >= 0 && d / b < nb {
                                self.counts[(d / b) as usize] += 1;
                            }
                        }
                    }
                    if c == self.start {
                        self.last_start = Some(t);
                    }
                }
            }
            Mode::G2 => {
                // Raw separations r = t_stop − t_start that can land in range: [lo, hi).
                let lo_edge = self.first_bin_ps().floor() as i64;
                let hi_edge = lo_edge + self.bin_ps * (self.counts.len() as i64 + 1);
                let (lo, hi) = (lo_edge - self.delay_ps, hi_edge - self.delay_ps);
                for i in 0..n {
                    let (t, c) = (time_ps[i], channel[i]);
                    self.order_violations += (t < self.last_t) as u64;
                    self.last_t = t;
                    if c == self.stop {
                        // Earlier starts s: r = t − s >= 0 must be < hi.
                        while let Some(&s) = self.starts.front() {
                            if t - s >= hi { self.starts.pop_front(); } else { break; }
                        }
                        for k in 0..self.starts.len() {
                            let s = self.starts[k];
                            self.considered += 1;
                            self.bin_g2(t - s + self.delay_ps);
                        }
                    }
                    if c == self.start {
                        // Earlier stops x: r = x − t <= 0 must be >= lo.
                        while let Some(&x) = self.stops.front() {
                            if x - t < lo { self.stops.pop_front(); } else { break; }
                        }
                        for k in 0..self.stops.len() {
                            let x = self.stops[k];
                            self.considered += 1;
                            self.bin_g2(x - t + self.delay_ps);
                        }
                    }
                    if c == self.stop && lo <= 0 {
                        self.stops.push_back(t);
                    }
                    if c == self.start && hi > 0 {
                        self.starts.push_back(t);
                    }
                }
            }
        }
    }

    /// T3 start-stop with the sync as start: Δ = dtime × `resolution` + D for each stop event.
    pub fn push_dtime(&mut self, dtime: &[u16], channel: &[u8], resolution: Scale) {
        let (b, nb) = (self.bin_ps, self.counts.len() as i64);
        for (&dt, &c) in dtime.iter().zip(channel) {
            if c == self.stop {
                self.considered += 1;
                let d = resolution.apply(dt as u64) + self.delay_ps;
                if d >= 0 && d / b < nb {
                    self.counts[(d / b) as usize] += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Obvious O(n²) g2 reference.
    fn g2_ref(t: &[i64], c: &[u8], start: u8, stop: u8, bin: i64, bins: usize, delay: i64) -> Vec<u64> {
        let mut h = vec![0u64; bins];
        let first = -((bins / 2) as f64 + 0.5) * bin as f64;
        for i in 0..t.len() {
            for j in 0..t.len() {
                if i != j && c[i] == start && c[j] == stop {
                    let d = (t[j] - t[i] + delay) as f64;
                    let k = ((d - first) / bin as f64).floor();
                    if k >= 0.0 && (k as usize) < bins {
                        h[k as usize] += 1;
                    }
                }
            }
        }
        h
    }

    #[test]
    fn start_stop_known_answer() {
        let t = [0, 10, 25, 30, 100, 117];
        let c = [0, 1, 1, 0, 1, 1];
        let mut h = Histogram::new(Mode::StartStop, 0, 1, 5, 4, 0).unwrap();
        h.push(&t[..3], &c[..3]);
        h.push(&t[3..], &c[3..]);
        // stops: 10 (Δ10 -> bin 2), 25 (Δ25 out), 100 (Δ70 out), 117 (Δ87 out)
        assert_eq!(h.counts, vec![0, 0, 1, 0]);
        let mut h = Histogram::new(Mode::StartStop, 0, 1, 5, 4, -8).unwrap();
        h.push(&t, &c);
        assert_eq!(h.counts, vec![1, 0, 0, 1], "Δ10 − 8 = 2 -> bin 0; Δ25 − 8 = 17 -> bin 3; Δ70 − 8 out");
    }

    #[test]
    fn g2_matches_quadratic_reference_in_chunks() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut t = Vec::new();
        let mut c = Vec::new();
        let mut now = 0i64;
        for _ in 0..3000 {
            now += rng.gen_range(0..200);
            t.push(now);
            c.push(rng.gen_range(0..3u8));
        }
        for (start, stop, bin, bins, delay) in [(0u8, 1u8, 7i64, 41usize, 0i64), (1, 0, 10, 20, 35), (2, 2, 3, 31, 0), (0, 1, 50, 9, -400)] {
            let mut h = Histogram::new(Mode::G2, start, stop, bin, bins, delay).unwrap();
            for (a, b) in t.chunks(97).zip(c.chunks(97)) {
                h.push(a, b);
            }
            assert_eq!(h.counts, g2_ref(&t, &c, start, stop, bin, bins, delay), "{start} {stop} {bin} {bins} {delay}");
        }
    }

    #[test]
    fn dtime_lifetime() {
        let mut h = Histogram::new(Mode::StartStop, 0, 2, 16, 8, 0).unwrap();
        h.push_dtime(&[0, 1, 2, 3, 17, 100], &[2, 2, 1, 2, 2, 2], Scale::Int(4));
        assert_eq!(h.counts, vec![3, 0, 0, 0, 1, 0, 0, 0]);
    }
}
