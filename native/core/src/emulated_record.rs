//! The emulated photon source's record of what it applied: the choice byte its modulators set on
//! each pulse the lab's optics looked at (the photon candidates of src/lab/link.ts), kept so that
//! the read-back of detected pulses ("what did you apply to pulse k?") is a lookup, as on a real
//! source that stores its modulator settings, instead of a second ChaCha20 evaluation.
//!
//! The record is a cache of the keystream, never a second source of truth: a pulse it does not
//! hold (a dark count's pulse, one older than the capacity) is answered from the ChaCha20
//! keystream of [`crate::emulated_choice`], which gave the recorded value in the first place.
//! So the answers are the same with or without the record; only the cost differs.
//!
//! Layout: chunks of at most `CHUNK` entries, each entry one `u32`:
//!
//! ```text
//!   word = delta << 4 | choice      delta = pulse − previous pulse of the chunk (0 for its first,
//!                                   whose pulse is the chunk's `first`); delta < 2^28
//! ```
//!
//! 4 bytes per candidate (≈ 10 MB per emulated second at 1 GHz, 25 km). Lookups of a strictly
//! increasing pulse list (what the read-back protocol carries) walk the record once (a merge):
//! O(1) per pulse instead of a ChaCha20 block (≈ 110 ns) per sparse pulse. The oldest chunks are
//! dropped beyond `capacity` entries. Entries are secret (Alice's bits): chunks are zeroised when
//! dropped.
//!
//! Concurrency: not synchronised; the napi adapter keeps it behind a mutex shared by the lab's
//! thread (append) and the device's thread (lookup).

use std::collections::VecDeque;
use zeroize::Zeroize;

const CHUNK: usize = 4096;
const MAX_DELTA: u64 = (1 << 28) - 1;

struct Chunk {
    first: u64,
    last: u64,
    words: Vec<u32>,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.words.zeroize();
    }
}

/// Append-only record of (pulse, choice), pulses strictly increasing.
pub struct ChoiceRecord {
    chunks: VecDeque<Chunk>,
    len: usize,
    capacity: usize,
}

/// Result counters of one lookup.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LookupStats {
    pub hits: usize,
    pub misses: usize,
    /// Record entries stepped over by the merge walk (the lookup's cost beyond the queries).
    pub walked: usize,
}

impl ChoiceRecord {
    /// A record holding at most about `capacity` entries (rounded up to whole chunks).
    pub fn new(capacity: usize) -> Self {
        ChoiceRecord { chunks: VecDeque::new(), len: 0, capacity }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Last recorded pulse.
    pub fn last(&self) -> Option<u64> {
        self.chunks.back().map(|c| c.last)
    }

    /// Records `choices[i]` at `pulses[i]`. Pulses at or below the last recorded one are not
    /// recorded (the record stays sorted; the keystream still answers for them).
    pub fn append(&mut self, pulses: &[u64], choices: &[u8]) {
        self.append_iter(pulses.iter().copied(), choices);
    }

    /// `append` of pulse indices held as f64 (integers in [0, 2^53), checked by the caller).
    pub fn append_indices(&mut self, pulses: &[f64], choices: &[u8]) {
        self.append_iter(pulses.iter().map(|&p| p as u64), choices);
    }

    #[inline]
    fn append_iter(&mut self, pulses: impl Iterator<Item = u64>, choices: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        for (p, &c) in pulses.zip(choices) {
            let word = match self.chunks.back() {
                Some(ch) if p <= ch.last => continue,
                Some(ch) if ch.words.len() < CHUNK && p - ch.last <= MAX_DELTA => Some(((p - ch.last) as u32) << 4 | u32::from(c & 15)),
                _ => None,
            };
            match word {
                Some(w) => {
                    let ch = self.chunks.back_mut().expect("checked above");
                    ch.words.push(w);
                    ch.last = p;
                }
                None => {
                    let mut words = Vec::with_capacity(CHUNK);
                    words.push(u32::from(c & 15));
                    self.chunks.push_back(Chunk { first: p, last: p, words });
                }
            }
            self.len += 1;
        }
        while self.len > self.capacity + CHUNK {
            let c = self.chunks.pop_front().expect("len > 0");
            self.len -= c.words.len();
        }
    }

    /// Looks up the listed pulses (any order; fastest strictly increasing): `out[i]` gets the
    /// recorded choice of `pulses[i]` and `found[i]` says whether there was one (`out[i]` is left
    /// as it was where there was none).
    pub fn lookup(&self, pulses: &[u64], out: &mut [u8], found: &mut [bool]) -> LookupStats {
        self.lookup_with(pulses, |p| p, out, found)
    }

    /// `lookup` of pulse indices held as f64 (integers in [0, 2^53), checked by the caller).
    pub fn lookup_indices(&self, pulses: &[f64], out: &mut [u8], found: &mut [bool]) -> LookupStats {
        self.lookup_with(pulses, |p| p as i64 as u64, out, found)
    }

    #[inline]
    fn lookup_with<T: Copy>(&self, pulses: &[T], index: impl Fn(T) -> u64, out: &mut [u8], found: &mut [bool]) -> LookupStats {
        let mut st = LookupStats::default();
        // cursor: chunk index, entry index within it, pulse of that entry
        let mut ci = usize::MAX;
        let mut ei = 0usize;
        let mut cp = 0u64;
        // The cursor rests on the last entry at or before the previous query, never past it: a
        // query that falls between two recorded pulses (a miss) leaves it there, so the next,
        // larger query walks on from it. (It used to stop on the first entry past a miss, and
        // the next query below that entry re-walked its chunk from the start: up to 4096 steps
        // per miss, 0.4 us on average at fibre densities; the read-back of 2^22 pulses mostly
        // missing the record took 1.7 s instead of 0.6.)
        for (i, &p) in pulses.iter().enumerate() {
            let q = index(p);
            found[i] = false;
            if ci == usize::MAX || q < cp || q > self.chunks[ci].last {
                // (re)position: the chunk whose range may hold q
                let k = self.chunks.partition_point(|c| c.last < q);
                if k == self.chunks.len() || self.chunks[k].first > q {
                    st.misses += 1;
                    ci = usize::MAX;
                    continue;
                }
                ci = k;
                ei = 0;
                cp = self.chunks[k].first;
            }
            let ch = &self.chunks[ci];
            // cp <= q <= ch.last: while cp < q the chunk has an entry after ei. (Tried: a
            // branch-free merge of queries and entries, and counting up to eight decoded entries
            // at or before q per step: 19 and 15 ns per query against this loop's 11.5.)
            while cp < q {
                let next = cp + u64::from(ch.words[ei + 1] >> 4);
                if next > q {
                    break;
                }
                ei += 1;
                cp = next;
                st.walked += 1;
            }
            if cp == q {
                out[i] = (ch.words[ei] & 15) as u8;
                found[i] = true;
                st.hits += 1;
            } else {
                st.misses += 1;
            }
        }
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    // The slow obvious reference: a map.
    fn check(rec: &ChoiceRecord, map: &std::collections::BTreeMap<u64, u8>, queries: &[u64]) {
        let mut out = vec![0u8; queries.len()];
        let mut found = vec![false; queries.len()];
        let st = rec.lookup(queries, &mut out, &mut found);
        let mut hits = 0;
        for (i, q) in queries.iter().enumerate() {
            match map.get(q) {
                Some(&c) => {
                    assert!(found[i], "pulse {q} should be found");
                    assert_eq!(out[i], c, "pulse {q}");
                    hits += 1;
                }
                None => assert!(!found[i], "pulse {q} should be missing"),
            }
        }
        assert_eq!(st.hits, hits);
        assert_eq!(st.misses, queries.len() - hits);
    }

    #[test]
    fn lookup_matches_a_map_on_random_records() {
        for seed in 0..20u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let cap = if seed % 3 == 0 { 10_000 } else { 1 << 20 };
            let mut rec = ChoiceRecord::new(cap);
            let mut all = Vec::new();
            let mut p: u64 = rng.gen_range(0..1 << 40);
            for _ in 0..rng.gen_range(1..6) {
                let n = rng.gen_range(0..30_000);
                let mut ps = Vec::new();
                let mut cs = Vec::new();
                for _ in 0..n {
                    // mostly small gaps, some beyond the 28-bit delta
                    p += if rng.gen_bool(0.001) { rng.gen_range(1 << 27..1 << 30) } else { rng.gen_range(1..2000) };
                    ps.push(p);
                    cs.push(rng.gen_range(0..12u8));
                }
                rec.append(&ps, &cs);
                // a replayed (older) pulse is not recorded
                rec.append(&[ps.first().copied().unwrap_or(0)], &[15]);
                all.extend(ps.into_iter().zip(cs));
            }
            // what the capacity keeps: the newest entries, whole chunks
            let kept = rec.len();
            assert!(kept <= cap + CHUNK && (kept >= cap.min(all.len())));
            let map: std::collections::BTreeMap<u64, u8> = all[all.len() - kept..].iter().copied().collect();
            // sorted queries: recorded pulses, neighbours and random ones
            let mut qs: Vec<u64> = all.iter().map(|&(p, _)| p).filter(|_| rng.gen_bool(0.5)).collect();
            qs.extend(all.iter().map(|&(p, _)| p + 1));
            qs.extend((0..1000).map(|_| rng.gen_range(0..p + 10)));
            qs.sort_unstable();
            qs.dedup();
            check(&rec, &map, &qs);
            // unsorted queries
            let mut un = qs.clone();
            for i in (1..un.len()).rev() {
                un.swap(i, rng.gen_range(0..=i));
            }
            check(&rec, &map, &un[..un.len().min(5000)]);
        }
    }

    #[test]
    fn sorted_lookups_walk_the_record_once_even_when_they_miss() {
        // Candidates every 150 pulses, queries every 60 (most between two entries, often two in
        // one gap): a merge walk steps over each entry at most once, whatever the hit ratio.
        let mut rec = ChoiceRecord::new(1 << 20);
        let ps: Vec<u64> = (0..200_000u64).map(|i| i * 150).collect();
        let cs: Vec<u8> = ps.iter().map(|&p| (p % 13) as u8 & 15).collect();
        rec.append(&ps, &cs);
        let qs: Vec<u64> = (0..400_000u64).map(|i| i * 60).collect();
        let mut out = vec![0u8; qs.len()];
        let mut found = vec![false; qs.len()];
        let st = rec.lookup(&qs, &mut out, &mut found);
        assert_eq!(st.hits + st.misses, qs.len());
        assert!(st.hits > 50_000 && st.misses > 200_000, "{st:?}");
        assert!(st.walked <= rec.len(), "walked {} entries of {}", st.walked, rec.len());
        for (i, &q) in qs.iter().enumerate() {
            assert_eq!(found[i], q % 150 == 0, "pulse {q}");
            if found[i] {
                assert_eq!(out[i], (q % 13) as u8 & 15, "pulse {q}");
            }
        }
    }

    #[test]
    fn lookup_of_f64_indices_equals_lookup_and_leaves_misses_alone() {
        // sorted with repeats, then shuffled runs; out prefilled: a miss must not touch it
        let mut rng = rand::rngs::StdRng::seed_from_u64(77);
        let mut rec = ChoiceRecord::new(1 << 18);
        let mut p = 1u64 << 40;
        let mut all = std::collections::BTreeMap::new();
        for _ in 0..3 {
            let (mut ps, mut cs) = (Vec::new(), Vec::new());
            for _ in 0..100_000 {
                p += if rng.gen_bool(0.0005) { 1 << 29 } else { rng.gen_range(1..400) };
                ps.push(p);
                cs.push(rng.gen_range(0..12u8));
            }
            rec.append(&ps, &cs);
            all.extend(ps.into_iter().zip(cs));
        }
        let keys: Vec<u64> = all.keys().copied().collect();
        let mut qs: Vec<u64> = Vec::new();
        for _ in 0..200_000 {
            let k = keys[rng.gen_range(0..keys.len())];
            qs.push(if rng.gen_bool(0.3) { k + rng.gen_range(1..3) } else { k });
        }
        qs.sort_unstable();
        let mut shuffled = qs.clone();
        for i in (1..shuffled.len()).rev() {
            if rng.gen_bool(0.01) {
                shuffled.swap(i, rng.gen_range(0..=i));
            }
        }
        for q in [qs, shuffled] {
            let qf: Vec<f64> = q.iter().map(|&x| x as f64).collect();
            let (mut o1, mut f1) = (vec![0xaau8; q.len()], vec![true; q.len()]);
            let (mut o2, mut f2) = (vec![0xaau8; q.len()], vec![true; q.len()]);
            let s1 = rec.lookup(&q, &mut o1, &mut f1);
            let s2 = rec.lookup_indices(&qf, &mut o2, &mut f2);
            assert_eq!((o1.clone(), f1.clone(), s1), (o2, f2, s2));
            for (i, x) in q.iter().enumerate() {
                match all.get(x) {
                    Some(&c) if rec.len() >= all.len() || *x >= rec.chunks[0].first => assert!(f1[i] && o1[i] == c, "pulse {x}"),
                    _ => assert!(!f1[i] && o1[i] == 0xaa, "pulse {x}: a miss keeps out"),
                }
            }
        }
    }

    #[test]
    fn empty_and_zero_capacity() {
        let mut rec = ChoiceRecord::new(0);
        rec.append(&[1, 2, 3], &[1, 2, 3]);
        assert!(rec.is_empty());
        let mut out = [0u8; 2];
        let mut found = [true; 2];
        assert_eq!(rec.lookup(&[1, 2], &mut out, &mut found), LookupStats { hits: 0, misses: 2, walked: 0 });
        assert_eq!(found, [false, false]);
    }
}

/// The emulated source's RNG together with its record: what the lab's optics and the read-back
/// call. Thread-safe (the record behind a mutex; the key is read-only).
pub struct SourceDevice {
    key: crate::emulated_choice::ChoiceKey,
    th: crate::emulated_choice::ChoiceThresholds,
    record: std::sync::Mutex<ChoiceRecord>,
    stats: std::sync::Mutex<LookupStats>,
}

/// Every pulse an index (integer in [0, 2^53)); the error names the first that is not.
fn check_indices(pulses: &[f64]) -> crate::Result<()> {
    if pulses.iter().all(|&p| crate::lab_rng::is_pulse_index(p)) {
        return Ok(());
    }
    let p = pulses.iter().copied().find(|&p| !crate::lab_rng::is_pulse_index(p)).unwrap_or(f64::NAN);
    Err(crate::CoreError::new("SIFT_PULSE_RANGE", format!("pulse index {p} is not an integer in [0, 2^53)")))
}

impl SourceDevice {
    pub fn new(key: crate::emulated_choice::ChoiceKey, th: crate::emulated_choice::ChoiceThresholds, capacity: usize) -> Self {
        SourceDevice { key, th, record: std::sync::Mutex::new(ChoiceRecord::new(capacity)), stats: Default::default() }
    }

    fn record(&self) -> std::sync::MutexGuard<'_, ChoiceRecord> {
        // a panic while holding the lock cannot leave the record inconsistent in a way that
        // matters (it is a cache of the keystream): go on with it
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The modulators apply their choices to these pulses (the lab's photon candidates, strictly
    /// increasing): the choices from the keystream, recorded.
    pub fn apply_at(&self, pulses: &[f64]) -> crate::Result<Vec<u8>> {
        // alice_choices_at refuses any pulse that is not an index, so the record's casts are exact
        let c = crate::emulated_choice::alice_choices_at(&self.key, self.th, pulses)?;
        self.record().append_indices(pulses, &c);
        Ok(c)
    }

    /// The read-back: the recorded choices at the listed pulses, from the keystream where the
    /// record holds none.
    pub fn record_at(&self, pulses: &[f64]) -> crate::Result<Vec<u8>> {
        check_indices(pulses)?;
        let mut out = vec![0u8; pulses.len()];
        let mut found = vec![false; pulses.len()];
        let st = self.record().lookup_indices(pulses, &mut out, &mut found);
        if st.misses > 0 {
            let missing: Vec<f64> = pulses.iter().zip(&found).filter(|(_, &f)| !f).map(|(&p, _)| p).collect();
            let mut c = crate::emulated_choice::alice_choices_at(&self.key, self.th, &missing)?;
            let mut j = 0;
            for (o, &f) in out.iter_mut().zip(&found) {
                if !f {
                    *o = c[j];
                    j += 1;
                }
            }
            c.zeroize();
        }
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.hits += st.hits;
        s.misses += st.misses;
        Ok(out)
    }

    /// Read-back pulses answered from the record and from the keystream so far.
    pub fn lookup_stats(&self) -> LookupStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries in the record.
    pub fn record_len(&self) -> usize {
        self.record().len()
    }
}

#[cfg(test)]
mod device_tests {
    use super::*;
    use crate::emulated_choice::{alice_choices_at, ChoiceKey, ChoiceThresholds};

    #[test]
    fn read_back_equals_the_keystream_with_and_without_the_record() {
        let th = ChoiceThresholds { basis_z: 1 << 31, signal: 3_006_477_107, decoy: 3_865_470_566 };
        let dev = SourceDevice::new(ChoiceKey::new(&[9u8; 32]).unwrap(), th, 1 << 16);
        let key = ChoiceKey::new(&[9u8; 32]).unwrap();
        let cand: Vec<f64> = (0..50_000u64).map(|i| (i * 37 + (i % 5)) as f64).collect();
        assert_eq!(dev.apply_at(&cand).unwrap(), alice_choices_at(&key, th, &cand).unwrap());
        // detections: most at candidates, some elsewhere (dark counts), beyond the capacity too
        let mut q: Vec<u64> = (0..40_000u64).map(|i| if i % 7 == 0 { i * 47 + 1 } else { cand[(i * 5 / 4) as usize] as u64 }).collect();
        q.sort_unstable();
        q.dedup();
        let q: Vec<f64> = q.into_iter().map(|x| x as f64).collect();
        assert_eq!(dev.record_at(&q).unwrap(), alice_choices_at(&key, th, &q).unwrap());
        let st = dev.lookup_stats();
        assert!(st.hits > 0 && st.misses > 0, "{st:?}");
        assert!(dev.record_at(&[1.5]).is_err());
    }
}
