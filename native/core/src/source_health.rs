//! Continuous health tests on the choices Alice's node reads back from her source's RNG: the
//! repetition count test and the adaptive proportion test of NIST SP 800-90B §4.4.1 / §4.4.2 over
//! the 2-bit (bit, basis) symbol of each choice byte, in pulse order. The reference, with the
//! reasoning behind the symbol and the cutoffs, is src/node/source-health.ts; this is its loop,
//! step for step (same state after every byte, same failure at the same byte), for the ~10^7
//! symbols a block reads back (the TypeScript loop was ~6 ns per symbol on Alice's JS thread).

/// Which test failed, with its count (no record content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthFailure {
    /// `run` identical symbols in a row reached the RCT cutoff.
    Repetition { run: u32 },
    /// `count` of the window's first `seen` symbols equal its reference, reaching the APT cutoff.
    Proportion { count: u32, seen: u32 },
}

/// The tests' state; carries across reads (a window may span two read-backs).
#[derive(Debug, Clone)]
pub struct HealthState {
    pub rct_cutoff: u32,
    pub apt_cutoff: u32,
    pub window: u32,
    /// Last symbol, or -1 before the first.
    pub last: i32,
    pub run: u32,
    pub apt_ref: i32,
    pub apt_seen: u32,
    pub apt_count: u32,
}

impl HealthState {
    pub fn new(rct_cutoff: u32, apt_cutoff: u32, window: u32) -> Self {
        HealthState { rct_cutoff, apt_cutoff, window, last: -1, run: 0, apt_ref: -1, apt_seen: 0, apt_count: 0 }
    }

    /// Runs both tests over `choices`; stops at the first failure (the state is then the one at
    /// the failing symbol, as the reference leaves it).
    pub fn check(&mut self, choices: &[u8]) -> Result<(), HealthFailure> {
        // Locals: the loop keeps its state in registers; written back on every exit.
        let (mut last, mut run, mut apt_ref, mut apt_seen, mut apt_count) = (self.last, self.run, self.apt_ref, self.apt_seen, self.apt_count);
        let mut failure = None;
        for &c in choices {
            let s = (c & 3) as i32;
            if s == last {
                run += 1;
                if run >= self.rct_cutoff {
                    failure = Some(HealthFailure::Repetition { run });
                    break;
                }
            } else {
                last = s;
                run = 1;
            }
            if apt_seen == 0 {
                apt_ref = s;
                apt_count = 1;
            } else if s == apt_ref {
                apt_count += 1;
                if apt_count >= self.apt_cutoff {
                    failure = Some(HealthFailure::Proportion { count: apt_count, seen: apt_seen + 1 });
                    break;
                }
            }
            apt_seen += 1;
            if apt_seen == self.window {
                apt_seen = 0;
            }
        }
        (self.last, self.run, self.apt_ref, self.apt_seen, self.apt_count) = (last, run, apt_ref, apt_seen, apt_count);
        failure.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's loop as written in src/node/source-health.ts (one symbol at a time).
    fn slow(st: &mut HealthState, choices: &[u8]) -> Result<(), HealthFailure> {
        for &c in choices {
            let s = (c & 3) as i32;
            if s == st.last {
                st.run += 1;
                if st.run >= st.rct_cutoff {
                    return Err(HealthFailure::Repetition { run: st.run });
                }
            } else {
                st.last = s;
                st.run = 1;
            }
            if st.apt_seen == 0 {
                st.apt_ref = s;
                st.apt_count = 1;
            } else if s == st.apt_ref {
                st.apt_count += 1;
                if st.apt_count >= st.apt_cutoff {
                    return Err(HealthFailure::Proportion { count: st.apt_count, seen: st.apt_seen + 1 });
                }
            }
            st.apt_seen += 1;
            if st.apt_seen == st.window {
                st.apt_seen = 0;
            }
        }
        Ok(())
    }

    fn same(a: &HealthState, b: &HealthState) -> bool {
        (a.last, a.run, a.apt_ref, a.apt_seen, a.apt_count) == (b.last, b.run, b.apt_ref, b.apt_seen, b.apt_count)
    }

    #[test]
    fn healthy_uniform_symbols_pass_and_keep_the_state_of_the_slow_loop() {
        let mut r = crate::test_rng::xorshift64(7);
        let mut fast = HealthState::new(21, 200, 512);
        let mut slow_st = fast.clone();
        for _ in 0..50 {
            let n = (r() % 3000) as usize;
            let c: Vec<u8> = (0..n).map(|_| r() as u8).collect();
            assert_eq!(fast.check(&c), Ok(()));
            assert_eq!(slow(&mut slow_st, &c), Ok(()));
            assert!(same(&fast, &slow_st));
        }
    }

    #[test]
    fn biased_and_stuck_sources_fail_where_the_slow_loop_fails() {
        // Random reads from sources of every bias, split at random points; low cutoffs so that
        // both tests fire often. Same verdict and same state at every split.
        let mut r = crate::test_rng::xorshift64(99);
        for trial in 0..400 {
            let (rct, apt, w) = (2 + (r() % 12) as u32, 2 + (r() % 40) as u32, 8 + (r() % 60) as u32);
            let mut fast = HealthState::new(rct, apt, w);
            let mut slow_st = fast.clone();
            let bias = r() % 100; // percent of symbols forced to 0
            for _ in 0..6 {
                let n = (r() % 200) as usize;
                let c: Vec<u8> = (0..n).map(|_| if r() % 100 < bias { 0xF0 } else { r() as u8 }).collect();
                let (a, b) = (fast.check(&c), slow(&mut slow_st, &c));
                assert_eq!(a, b, "trial {trial}");
                assert!(same(&fast, &slow_st), "trial {trial}");
                if a.is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn a_stuck_symbol_trips_the_repetition_test_at_its_cutoff() {
        let mut st = HealthState::new(5, 1000, 512);
        assert_eq!(st.check(&[1, 2, 3]), Ok(()));
        // 3 then four more 3s: the run reaches 5 at the fourth.
        assert_eq!(st.check(&[3, 3, 3, 3, 0]), Err(HealthFailure::Repetition { run: 5 }));
    }

    #[test]
    fn a_biased_window_trips_the_proportion_test() {
        // Window 8, cutoff 4: reference 2, then 2 at every other symbol.
        let mut st = HealthState::new(100, 4, 8);
        assert_eq!(st.check(&[2, 0, 2, 1, 2, 3, 2]), Err(HealthFailure::Proportion { count: 4, seen: 7 }));
    }
}
