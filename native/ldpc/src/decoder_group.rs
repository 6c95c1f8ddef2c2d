//! Grouped engine (AVX-512BW): S = 64 / W checks are updated at once, each in W frame lanes, so
//! every 8-bit step fills a whole 512-bit register even when few frames share the engine (16
//! lanes × 4 checks at 2^16, 8 lanes × 8 checks would suit 2^18). The serial engine leaves 3/4
//! of the register idle at W = 16 and its box-plus chains are latency-bound.
//!
//! Why the result is bit-identical to the serial engine (checks in index order): a check update
//! reads and writes only the posteriors of its own variables and its own edge messages, so two
//! checks that share no variable commute exactly. The schedule (`Schedule::build`) puts only
//! pairwise variable-disjoint checks in a group, and moves a check ahead of an earlier one only
//! if the two share no variable; every pair of checks sharing a variable is therefore updated in
//! index order, and the posteriors and messages after each iteration are those of the serial
//! sweep. Within a slot the box-plus sequence (prefix chain, suffix chain, f_{j−1} ⊞ b_{j+1})
//! is the serial one; slots of smaller degree are padded and their chains restarted by masks.
//!
//! Register layout ("P order"): the i16 posteriors of the group's S rows (S·W lanes, slot
//! major) are two zmm, t0 (lanes 0..32) and t1 (32..64); `packs(t0, t1)` gives the 8-bit
//! magnitudes with 128-bit lanes interleaved, and `unpacklo/hi(x, x) >> 8` sign-extends 8-bit
//! values back to the t0/t1 order, so no cross-lane shuffle is needed. Edge messages are stored
//! in that byte order, one 64-byte line per group edge.

use crate::code::Code;
use crate::decoder::{drive, swept_rows, Engine, FrameSource, Frames, Lanes, Rows, Rows64, LMAX, MAXV};

/// Checks in a group: at most 8 (W = 8).
const MAX_SLOTS: usize = 8;

/// One group of pairwise variable-disjoint checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Group {
    /// First group edge (index into `Schedule::idx` / S and into the message lines).
    pub e0: u32,
    /// Swept degree of each slot (0 for an empty slot).
    pub deg: [u16; MAX_SLOTS],
    pub dmax: u16,
    pub dmin: u16,
    /// Check of each slot (u32::MAX for an empty slot).
    pub check: [u32; MAX_SLOTS],
}

/// The order in which the grouped engine updates the checks.
pub(crate) struct Schedule {
    pub slots: usize,
    pub groups: Vec<Group>,
    /// Variable of slot s at group edge e: `idx[e * slots + s]`; n for padding edges (row n of
    /// the posteriors is scratch: padding edges read and write it, no real edge does).
    pub idx: Vec<u32>,
    pub max_deg: usize,
}

impl Schedule {
    /// List scheduling on the order the serial sweep imposes: check c is *ready* once every
    /// earlier check sharing a variable with it is scheduled (it is then the first unscheduled
    /// check on each of its variables). Ready checks are pairwise variable-disjoint (a variable
    /// has one first unscheduled check), so any S of them form a group. Among the ready checks a
    /// group takes those of the most common degree first, so that little padding is needed.
    /// Checks with no swept edge do nothing in the serial sweep and are left out.
    pub fn build(rows: &Rows<'_>, m: usize, n: usize, slots: usize) -> Schedule {
        assert!((1..=MAX_SLOTS).contains(&slots));
        // Checks of each variable in index order, and how many of its variables each check
        // waits on (variables where an earlier check is still unscheduled).
        let mut col_ptr = vec![0u32; n + 1];
        for &v in rows.idx {
            col_ptr[v as usize + 1] += 1;
        }
        for v in 0..n {
            col_ptr[v + 1] += col_ptr[v];
        }
        let mut fill = col_ptr.clone();
        let mut col = vec![0u32; rows.idx.len()];
        let mut waiting = vec![0u32; m];
        for (c, wait) in waiting.iter_mut().enumerate() {
            for &v in rows.row(c) {
                let at = &mut fill[v as usize];
                if *at > col_ptr[v as usize] {
                    *wait += 1;
                }
                col[*at as usize] = c as u32;
                *at += 1;
            }
        }
        let mut head = col_ptr.clone();
        let max_deg = (0..m).map(|c| rows.row(c).len()).max().unwrap_or(0);
        let mut ready: Vec<Vec<u32>> = vec![Vec::new(); max_deg + 1];
        for c in (0..m).rev() {
            let d = rows.row(c).len();
            if d > 0 && waiting[c] == 0 {
                ready[d].push(c as u32);
            }
        }
        let mut left = (0..m).filter(|&c| !rows.row(c).is_empty()).count();
        let mut groups = Vec::new();
        let mut idx = Vec::new();
        let mut e0 = 0u32;
        let mut by_count: Vec<usize> = Vec::with_capacity(max_deg + 1);
        while left > 0 {
            by_count.clear();
            by_count.extend((1..=max_deg).filter(|&d| !ready[d].is_empty()));
            by_count.sort_by_key(|&d| std::cmp::Reverse(ready[d].len()));
            let mut g = Group { e0, deg: [0; MAX_SLOTS], dmax: 0, dmin: u16::MAX, check: [u32::MAX; MAX_SLOTS] };
            let mut s = 0;
            for &d in &by_count {
                while s < slots {
                    let Some(c) = ready[d].pop() else { break };
                    g.check[s] = c;
                    g.deg[s] = d as u16;
                    s += 1;
                }
            }
            assert!(s > 0, "a check order with a cycle cannot come from index order");
            left -= s;
            for s in 0..slots {
                g.dmax = g.dmax.max(g.deg[s]);
                g.dmin = g.dmin.min(g.deg[s]);
            }
            for j in 0..g.dmax as usize {
                for s in 0..slots {
                    let row = if g.check[s] == u32::MAX { &[][..] } else { rows.row(g.check[s] as usize) };
                    idx.push(row.get(j).copied().unwrap_or(n as u32));
                }
            }
            // Release the checks that waited on the scheduled ones.
            for s in 0..slots {
                if g.check[s] == u32::MAX {
                    continue;
                }
                for &v in rows.row(g.check[s] as usize) {
                    let h = &mut head[v as usize];
                    *h += 1;
                    if *h < col_ptr[v as usize + 1] {
                        let c2 = col[*h as usize] as usize;
                        waiting[c2] -= 1;
                        if waiting[c2] == 0 {
                            ready[rows.row(c2).len()].push(c2 as u32);
                        }
                    }
                }
            }
            e0 += u32::from(g.dmax);
            groups.push(g);
        }
        Schedule { slots, groups, idx, max_deg }
    }

    pub fn group_edges(&self) -> usize {
        self.idx.len() / self.slots
    }

    /// The schedule of `rows` taken from `self`, a schedule of the same code with fewer frozen
    /// positions (the rows of `rows` are subsets of the rows `self` was built on): each slot keeps
    /// its check with the check's new row, slots whose row became empty are emptied, groups left
    /// with no check are dropped. Valid by the argument of `build`: the checks of a group stay
    /// pairwise variable-disjoint, and two checks that share a variable now shared one before,
    /// so they still run in index order. O(edges) instead of a list scheduling: a blind plan's
    /// retry round freezes a few hundred more positions than the round before (its revealed
    /// bits), so its schedule is the previous round's with a few edges removed (as well packed).
    pub fn derive(&self, rows: &Rows<'_>, n: usize) -> Schedule {
        let slots = self.slots;
        let mut groups = Vec::with_capacity(self.groups.len());
        let mut idx = Vec::with_capacity(self.idx.len());
        let mut e0 = 0u32;
        let mut max_deg = 0;
        for old in &self.groups {
            let mut g = Group { e0, deg: [0; MAX_SLOTS], dmax: 0, dmin: u16::MAX, check: [u32::MAX; MAX_SLOTS] };
            for s in 0..slots {
                let c = old.check[s];
                if c != u32::MAX && !rows.row(c as usize).is_empty() {
                    g.check[s] = c;
                    g.deg[s] = rows.row(c as usize).len() as u16;
                }
                g.dmax = g.dmax.max(g.deg[s]);
                g.dmin = g.dmin.min(g.deg[s]);
            }
            if g.dmax == 0 {
                continue;
            }
            max_deg = max_deg.max(g.dmax as usize);
            for j in 0..g.dmax as usize {
                for s in 0..slots {
                    let row = if g.check[s] == u32::MAX { &[][..] } else { rows.row(g.check[s] as usize) };
                    idx.push(row.get(j).copied().unwrap_or(n as u32));
                }
            }
            e0 += u32::from(g.dmax);
            groups.push(g);
        }
        Schedule { slots, groups, idx, max_deg }
    }
}

/// Byte position in a zmm of lane u (slot-major: u = s·W + k) in P order.
#[inline(always)]
pub(crate) const fn p_pos(u: usize) -> usize {
    if u < 32 {
        16 * (u / 8) + u % 8
    } else {
        16 * ((u - 32) / 8) + 8 + (u - 32) % 8
    }
}

/// Mask (P order) of the W lanes of slot s.
pub(crate) fn slot_mask(w: usize, s: usize) -> u64 {
    (0..w).fold(0u64, |a, k| a | 1u64 << p_pos(s * w + k))
}

/// Runs the grouped engine on the calling thread.
///
/// Swept rows and their schedule for one (code, frozen set, slot count).
pub(crate) struct Built {
    row_ptr: Vec<u32>,
    row_idx: Vec<u32>,
    sch: std::sync::Arc<Schedule>,
    /// The frozen positions it was built for (ascending): a later frozen set that contains
    /// them derives its schedule from this one (`Schedule::derive`).
    frozen: Vec<u32>,
    /// Frozen positions of the list-scheduled schedule this one derives from (itself if built).
    root_frozen: usize,
    /// Warm start, built on first use and shared by every engine and call on this key: the
    /// swept → canonical edge map (`decoder::canonical_map`) and the canonical edge of each
    /// (group edge, slot) (u32::MAX for padding). Each took ≈ one pass of memory traffic per
    /// engine per call (≈ 3 % of a node block's CPU together).
    canon: std::sync::OnceLock<std::sync::Arc<Vec<u32>>>,
    gmap: std::sync::OnceLock<std::sync::Arc<Vec<u32>>>,
}

/// Most positions frozen since the last list scheduling for a derived schedule: derived ones
/// pack a little worse than a fresh build as edges go (2^18, rate 0.85, 8 slots: group edges
/// +0.4 % at 0.8 % of n frozen on top, +1.3 % at 3.2 %, +3.5 % at 12.8 %), so a chain of
/// derivations is rebuilt after n/64 (12 retry rounds of a 2^18 plan at QBER 2 %).
const DERIVE_MAX_FROZEN: usize = 64; // n / DERIVE_MAX_FROZEN

impl Built {
    fn bytes(&self) -> usize {
        let warm = self.canon.get().map_or(0, |c| c.len()) + self.gmap.get().map_or(0, |g| g.len());
        4 * (self.row_ptr.len() + self.row_idx.len() + self.sch.idx.len() + self.frozen.len() + warm) + self.sch.groups.len() * std::mem::size_of::<Group>()
    }

    /// The warm-start edge maps (see the fields), built once per key.
    fn canon(&self, code: &Code, frozen: &[bool]) -> std::sync::Arc<Vec<u32>> {
        self.canon.get_or_init(|| std::sync::Arc::new(crate::decoder::canonical_map(code, frozen))).clone()
    }

    fn gmap(&self, canon: &[u32]) -> std::sync::Arc<Vec<u32>> {
        self.gmap
            .get_or_init(|| {
                let rows = Rows { ptr: &self.row_ptr, idx: &self.row_idx };
                let slots = self.sch.slots;
                let mut gmap = vec![u32::MAX; self.sch.group_edges() * slots];
                for g in &self.sch.groups {
                    for s in 0..slots {
                        if g.check[s] == u32::MAX {
                            continue;
                        }
                        let base = rows.ptr[g.check[s] as usize] as usize;
                        for j in 0..g.deg[s] as usize {
                            gmap[(g.e0 as usize + j) * slots + s] = canon[base + j];
                        }
                    }
                }
                std::sync::Arc::new(gmap)
            })
            .clone()
    }
}

/// Research hook: schedules built by list scheduling (`Schedule::build`) and derived from a
/// cached one (`Schedule::derive`) since start (tests, `examples/overhead.rs`).
#[doc(hidden)]
pub static SCHEDULES_BUILT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
#[doc(hidden)]
pub static SCHEDULES_DERIVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The swept rows and schedule of (code, frozen set, slots), built once and shared: both engines
/// of a `decode_batch` need the same one, and the blind plan asks for the same (parameters,
/// revealed count) in every block. Building them took ≈ 50–60 ms of CPU per engine per call at
/// 2^18 (`examples/overhead.rs`; `Schedule::build` ≈ half of a one-frame call, 5 % of a blind
/// plan's CPU), paid again by every retry round. The frozen set is public (shortened and revealed
/// positions), so the cache holds no secret. At most `CACHE_BYTES` are kept (least recently used
/// out first); a key is (hash of the code's rows, slots, FNV-1a of the frozen positions).
/// A frozen set not in the cache whose positions contain those of a cached entry (same code and
/// slots) takes that entry's schedule with the newly frozen edges removed (`Schedule::derive`,
/// ≈ 10× cheaper than a build, same decoded bits): a retry round's frozen set is the previous
/// round's plus its revealed bits, and in the node the parameters (so the frozen sets) change
/// from block to block with the QBER estimate, so exact hits are rare there.
pub(crate) fn cached_schedule(code: &Code, frozen: &[bool], slots: usize) -> std::sync::Arc<Built> {
    use std::sync::{Arc, Mutex, OnceLock};
    const CACHE_BYTES: usize = 160 << 20;
    type Slot = Arc<OnceLock<Arc<Built>>>;
    static CACHE: Mutex<Vec<((u64, usize, u64), Slot)>> = Mutex::new(Vec::new());
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for (v, &f) in frozen.iter().enumerate() {
        if f {
            h = (h ^ v as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    // The code's identity: a multiply–xor hash of its rows (≈ 1 ms at 2^18; `Code::checksum`,
    // a byte-wise FNV over both views, costs more than the schedule it would save).
    let mut hc = (code.n as u64) << 32 ^ code.m as u64 ^ code.spec.seed;
    for w in code.row_idx.chunks(4) {
        for &x in w {
            hc = (hc ^ x as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
        }
    }
    let key = (hc, slots, h ^ frozen.len() as u64);
    let (slot, base) = {
        let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match c.iter().position(|(k, _)| *k == key) {
            Some(i) => c.remove(i).1,
            None => Arc::new(OnceLock::new()),
        };
        // The closest cached schedule to derive from: same code and slots, the most frozen
        // positions, all of them frozen here too.
        let nfrozen = frozen.iter().filter(|&&f| f).count();
        let base = if slot.get().is_some() {
            None
        } else {
            c.iter()
                .filter(|((kc, ks, _), _)| *kc == hc && *ks == slots)
                .filter_map(|(_, s)| s.get())
                .filter(|b| nfrozen <= b.root_frozen + code.n / DERIVE_MAX_FROZEN)
                .filter(|b| b.frozen.len() <= nfrozen && b.frozen.iter().all(|&v| frozen[v as usize]))
                .max_by_key(|b| b.frozen.len())
                .cloned()
        };
        c.push((key, slot.clone())); // most recently used last
        (slot, base)
    };
    let built = slot
        .get_or_init(|| {
            let (row_ptr, row_idx) = swept_rows(code, frozen);
            let rows = Rows { ptr: &row_ptr, idx: &row_idx };
            let frozen: Vec<u32> = (0..code.n as u32).filter(|&v| frozen[v as usize]).collect();
            let (sch, root_frozen) = match base {
                Some(b) => {
                    SCHEDULES_DERIVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    (b.sch.derive(&rows, code.n), b.root_frozen)
                }
                None => {
                    SCHEDULES_BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    (Schedule::build(&rows, code.m, code.n, slots), frozen.len())
                }
            };
            Arc::new(Built { row_ptr, row_idx, sch: Arc::new(sch), frozen, root_frozen, canon: OnceLock::new(), gmap: OnceLock::new() })
        })
        .clone();
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let mut total: usize = c.iter().filter_map(|(_, s)| s.get().map(|b| b.bytes())).sum();
    while total > CACHE_BYTES && c.len() > 1 {
        let (_, old) = c.remove(0);
        total -= old.get().map(|b| b.bytes()).unwrap_or(0);
    }
    built
}

/// # Safety
/// The CPU must support AVX-512F, AVX-512BW and BMI2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
pub(crate) unsafe fn run_avx512<const W: usize>(
    code: &Code,
    frozen: &[bool],
    src: &dyn FrameSource,
    frames: Frames<'_>,
    lim: crate::decoder::Limits,
) {
    assert!(matches!(W, 8 | 16 | 32 | 64), "the grouped engine needs W in 8, 16, 32, 64");
    let slots = 64 / W;
    let built = cached_schedule(code, frozen, slots);
    let rows = Rows { ptr: &built.row_ptr, idx: &built.row_idx };
    let sch = built.sch.clone();
    let masks: Vec<u64> = (0..slots).map(|s| slot_mask(W, s)).collect();
    let d = sch.max_deg.max(1);
    let mut eng = avx512::Grouped::<W> {
        built: built.clone(),
        gsynd: vec![0u64; sch.groups.len()],
        r: Rows64::new(sch.group_edges() * 64),
        scratch: Rows64::new(d * 64 * 5),
        nbuf: zeroize::Zeroizing::new(vec![0u64; d]),
        fresh: 0,
        refilled: false,
        gmap: std::sync::Arc::new(Vec::new()),
        slot_masks: masks,
        vbmi: std::is_x86_feature_detected!("avx512vbmi") && !crate::decoder::NO_VBMI.load(std::sync::atomic::Ordering::Relaxed),
        slot_runs: (0..slots)
            .map(|s| {
                let (mut lo, mut hi, mut nlo) = (0u64, 0u64, 0u32);
                for k in 0..W {
                    let u = s * W + k;
                    if u < 32 {
                        lo |= 1 << p_pos(u);
                        nlo += 1;
                    } else {
                        hi |= 1 << p_pos(u);
                    }
                }
                (lo, hi, nlo)
            })
            .collect(),
        sch,
    };
    drive::<W, _>(code, frozen, &rows, src, frames, lim, &mut eng);
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    pub(crate) struct Grouped<const W: usize> {
        pub sch: std::sync::Arc<Schedule>,
        /// The cached rows and schedule this engine runs (holds the warm-start edge maps).
        pub built: std::sync::Arc<Built>,
        /// Syndrome parity per group in P order (bit set: the check's syndrome bit is 1).
        pub gsynd: Vec<u64>,
        /// Edge messages, one 64-byte line per group edge, P order.
        pub r: Rows64,
        /// Per group edge: t0, t1 (2 lines), magnitudes, prefix and suffix box-sums.
        pub scratch: Rows64,
        /// Per group edge: sign mask of t.
        pub nbuf: zeroize::Zeroizing<Vec<u64>>,
        /// Lanes (P order) refilled since the last pass: their stored messages count as zero.
        pub fresh: u64,
        /// A lane was refilled since the last pass (its syndrome bits must be regrouped).
        pub refilled: bool,
        /// Warm start: canonical edge of each (group edge, slot), u32::MAX for padding; taken
        /// from `built` on first use.
        pub gmap: std::sync::Arc<Vec<u32>>,
        pub slot_masks: Vec<u64>,
        /// Per slot: P positions of its lanes among slot-major lanes 0..32, among 32..64, and
        /// how many lanes fall in the first run.
        pub slot_runs: Vec<(u64, u64, u32)>,
        /// The CPU has AVX-512 VBMI (table-driven box-plus).
        pub vbmi: bool,
    }

    impl<const W: usize> Grouped<W> {
        fn build_gmap(&mut self, _rows: &Rows<'_>, canon: &[u32]) {
            if self.gmap.is_empty() {
                self.gmap = self.built.gmap(canon);
            }
        }
    }

    impl<const W: usize> Engine<W> for Grouped<W> {
        fn canonical(&self, code: &Code, frozen: &[bool]) -> std::sync::Arc<Vec<u32>> {
            self.built.canon(code, frozen)
        }

        #[inline(always)]
        fn reset_lane(&mut self, k: usize, _synd: &[[i8; W]]) {
            let slots = self.sch.slots;
            // The lane's old messages are not cleared here (that would touch every message
            // line per new frame): the next pass reads them as zero instead. Its syndrome bits
            // are regrouped once before that pass, for every refilled lane at once.
            for s in 0..slots {
                self.fresh |= 1u64 << p_pos(s * W + k);
            }
            self.refilled = true;
        }

        fn load_lane(&mut self, k: usize, rows: &Rows<'_>, canon: &[u32], msgs: &[i8]) {
            self.build_gmap(rows, canon);
            let slots = self.sch.slots;
            let r = self.r.as_mut_ptr();
            for (ge, m) in self.gmap.chunks(slots).enumerate() {
                for (s, &c) in m.iter().enumerate() {
                    let x = if c == u32::MAX { 0 } else { msgs[c as usize] };
                    // SAFETY: ge < group_edges, one 64-byte line each; p_pos < 64.
                    unsafe { *r.add(ge * 64 + p_pos(s * W + k)) = x as u8 };
                }
            }
            for s in 0..slots {
                self.fresh &= !(1u64 << p_pos(s * W + k));
            }
        }

        fn save_lane(&mut self, k: usize, rows: &Rows<'_>, canon: &[u32], msgs: &mut [i8]) {
            self.build_gmap(rows, canon);
            let slots = self.sch.slots;
            // A lane refilled and not yet passed holds messages that count as zero.
            let fresh = self.fresh & (1u64 << p_pos(k)) != 0;
            let r = self.r.as_mut_ptr();
            for (ge, m) in self.gmap.chunks(slots).enumerate() {
                for (s, &c) in m.iter().enumerate() {
                    if c != u32::MAX {
                        // SAFETY: as in `load_lane`.
                        msgs[c as usize] = if fresh { 0 } else { unsafe { *r.add(ge * 64 + p_pos(s * W + k)) as i8 } };
                    }
                }
            }
        }

        #[inline(always)]
        fn check(&mut self, rows: &Rows<'_>, lanes: &mut Lanes<W>, active: u64, start: &mut usize) -> u64 {
            let n = lanes.n;
            // SAFETY (all): AVX-512F/BW and BMI2 checked by `run_avx512`'s caller; the posterior buffer
            // holds n + 1 rows of 2W bytes and the word buffer n + 8 words of 8 bytes (so n + 2
            // words of the gathered size, the last two zero: padding edges read word n).
            unsafe { pack_signs::<W>(lanes.llr.as_mut_ptr(), lanes.hard.as_mut_ptr(), n) };
            if W <= 16 {
                unsafe { check_groups::<2>(&self.sch, lanes.hard.as_mut_ptr(), &lanes.synd_bits, 0xffff, active, start) }
            } else if W == 32 {
                unsafe { check_groups::<4>(&self.sch, lanes.hard.as_mut_ptr(), &lanes.synd_bits, u32::MAX, active, start) }
            } else {
                crate::decoder::syndrome_ok_packed::<u64>(rows, &lanes.synd_bits, lanes.hard.words_mut::<u64>(n), active, start)
            }
        }

        #[inline(always)]
        fn pass(&mut self, lanes: &mut Lanes<W>) {
            if self.refilled {
                // SAFETY: `decode_from` checked BMI2 before building this engine.
                unsafe { regroup_syndrome(self, &lanes.synd_bits) };
                self.refilled = false;
            }
            // SAFETY: this engine is only built inside `run_avx512`, whose caller checked that
            // the CPU has AVX-512F/BW; all indices are bounded as commented in `pass_groups`.
            unsafe {
                if self.vbmi {
                    pass_groups_vbmi::<W>(self, lanes.llr.as_mut_ptr())
                } else {
                    pass_groups::<W>(self, lanes.llr.as_mut_ptr())
                }
            };
            self.fresh = 0;
        }
    }

    /// Packs the posteriors' signs like `decoder::pack_hard` (bit k of word v = lane k's hard
    /// decision at position v; words of 2, 4, 8 bytes for W ≤ 16, 32, 64), one sign-mask
    /// instruction per 64 bytes of posteriors. Writes words 0..n only (word n, read by padding
    /// edges, stays zero).
    #[target_feature(enable = "avx512f,avx512bw,bmi2")]
    #[inline]
    unsafe fn pack_signs<const W: usize>(llr: *const u8, hard: *mut u8, n: usize) {
        let row = |v: usize| _mm512_movepi16_mask(_mm512_loadu_si512(llr.add(v * 2 * W) as *const _));
        match W {
            8 => {
                // Four rows per register; each row's 8 bits widen to a u16 word.
                let mut v = 0;
                while v + 4 <= n {
                    let m = row(v) as u64;
                    (hard.add(2 * v) as *mut u64).write_unaligned(_pdep_u64(m, 0x00ff_00ff_00ff_00ff));
                    v += 4;
                }
                for v in v..n {
                    let mut x = 0u16;
                    for k in 0..8 {
                        x |= u16::from(*(llr.add(v * 16 + 2 * k + 1) as *const i8) < 0) << k;
                    }
                    (hard.add(2 * v) as *mut u16).write_unaligned(x);
                }
            }
            16 => {
                let mut v = 0;
                while v + 2 <= n {
                    (hard.add(2 * v) as *mut u32).write_unaligned(row(v));
                    v += 2;
                }
                if v < n {
                    (hard.add(2 * v) as *mut u16).write_unaligned(row(v) as u16);
                }
            }
            32 => {
                for v in 0..n {
                    (hard.add(4 * v) as *mut u32).write_unaligned(row(v));
                }
            }
            _ => {
                for v in 0..n {
                    let lo = _mm512_movepi16_mask(_mm512_loadu_si512(llr.add(v * 128) as *const _)) as u64;
                    let hi = _mm512_movepi16_mask(_mm512_loadu_si512(llr.add(v * 128 + 64) as *const _)) as u64;
                    (hard.add(8 * v) as *mut u64).write_unaligned(lo | hi << 32);
                }
            }
        }
    }

    /// Syndrome parity per group in P order from the per-check lane bits (bit k = lane k): slot
    /// s's lanes are deposited at their P positions, in two monotonic runs (lanes in the first
    /// and the second 32 of the slot-major order).
    #[target_feature(enable = "avx512f,avx512bw,bmi2")]
    #[inline]
    unsafe fn regroup_syndrome<const W: usize>(eng: &mut Grouped<W>, synd_bits: &[u64]) {
        for (g, gs) in eng.sch.groups.iter().zip(eng.gsynd.iter_mut()) {
            let mut x = 0u64;
            for (s, &(lo, hi, nlo)) in eng.slot_runs.iter().enumerate() {
                let c = g.check[s];
                if c != u32::MAX {
                    let b = synd_bits[c as usize];
                    x |= _pdep_u64(b, lo) | _pdep_u64(b.checked_shr(nlo).unwrap_or(0), hi);
                }
            }
            *gs = x;
        }
    }

    /// Box-plus of magnitudes, 64 lanes: the same integer formula as `decoder::boxplus`
    /// (|a − b| as max − min, which equals the saturating-difference form).
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn boxplus(a: __m512i, b: __m512i) -> __m512i {
        let c32 = _mm512_set1_epi8(32);
        let m63 = _mm512_set1_epi8(63);
        let mn = _mm512_min_epu8(a, b);
        let mx = _mm512_max_epu8(a, b);
        let cp = _mm512_and_si512(_mm512_srli_epi16::<2>(_mm512_subs_epu8(c32, _mm512_adds_epu8(a, b))), m63);
        let cm = _mm512_and_si512(_mm512_srli_epi16::<2>(_mm512_subs_epu8(c32, _mm512_sub_epi8(mx, mn))), m63);
        _mm512_subs_epu8(_mm512_add_epi8(mn, cp), cm)
    }

    /// The correction term of `boxplus` as a table: T[x] = max(0, 32 − x) >> 2, x = 0..127.
    static CORR: [u8; 128] = {
        let mut t = [0u8; 128];
        let mut x = 0;
        while x < 32 {
            t[x] = ((32 - x) >> 2) as u8;
            x += 1;
        }
        t
    };

    /// `boxplus` with both correction terms looked up in `CORR` by a 128-entry byte permute
    /// (AVX-512 VBMI): 8 operations instead of 12, the same bits. Magnitudes are ≤ 127, so
    /// |a − b| = max − min indexes the table directly, and the signed saturating a + b
    /// (= min(a + b, 127)) stands for the unsigned saturating sum (T is 0 from 32 on).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    #[inline]
    unsafe fn boxplus_vbmi(a: __m512i, b: __m512i) -> __m512i {
        let tlo = _mm512_loadu_si512(CORR.as_ptr() as *const _);
        let thi = _mm512_loadu_si512(CORR.as_ptr().add(64) as *const _);
        let mn = _mm512_min_epu8(a, b);
        let mx = _mm512_max_epu8(a, b);
        let cp = _mm512_permutex2var_epi8(tlo, _mm512_adds_epi8(a, b), thi);
        let cm = _mm512_permutex2var_epi8(tlo, _mm512_sub_epi8(mx, mn), thi);
        _mm512_subs_epu8(_mm512_add_epi8(mn, cp), cm)
    }

    /// 8-bit lanes (P order) to the two i16 halves (t0, t1 order).
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn widen(x: __m512i) -> (__m512i, __m512i) {
        (_mm512_srai_epi16::<8>(_mm512_unpacklo_epi8(x, x)), _mm512_srai_epi16::<8>(_mm512_unpackhi_epi8(x, x)))
    }

    /// Loads the S posterior rows of one group edge as (t0, t1).
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn gather<const W: usize>(llr: *const u8, idx: *const u32) -> (__m512i, __m512i) {
        macro_rules! row {
            ($s:expr) => {
                llr.add(*idx.add($s) as usize * 2 * W)
            };
        }
        macro_rules! l128 {
            ($s:expr) => {
                _mm_loadu_si128(row!($s) as *const __m128i)
            };
        }
        macro_rules! l256 {
            ($s:expr) => {
                _mm256_loadu_si256(row!($s) as *const __m256i)
            };
        }
        match W {
            8 => {
                let a = _mm512_inserti32x4::<1>(_mm512_castsi128_si512(l128!(0)), l128!(1));
                let a = _mm512_inserti32x4::<3>(_mm512_inserti32x4::<2>(a, l128!(2)), l128!(3));
                let b = _mm512_inserti32x4::<1>(_mm512_castsi128_si512(l128!(4)), l128!(5));
                let b = _mm512_inserti32x4::<3>(_mm512_inserti32x4::<2>(b, l128!(6)), l128!(7));
                (a, b)
            }
            16 => (
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(l256!(0)), l256!(1)),
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(l256!(2)), l256!(3)),
            ),
            32 => (_mm512_loadu_si512(row!(0) as *const _), _mm512_loadu_si512(row!(1) as *const _)),
            _ => (_mm512_loadu_si512(row!(0) as *const _), _mm512_loadu_si512(row!(0).add(64) as *const _)),
        }
    }

    /// Stores (t0, t1) back to the S rows (padding edges write the scratch row n).
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn scatter<const W: usize>(llr: *mut u8, idx: *const u32, a: __m512i, b: __m512i) {
        macro_rules! row {
            ($s:expr) => {{
                llr.add(*idx.add($s) as usize * 2 * W)
            }};
        }
        macro_rules! s128 {
            ($s:expr, $x:expr) => {
                _mm_storeu_si128(row!($s) as *mut __m128i, $x)
            };
        }
        macro_rules! s256 {
            ($s:expr, $x:expr) => {
                _mm256_storeu_si256(row!($s) as *mut __m256i, $x)
            };
        }
        match W {
            8 => {
                s128!(0, _mm512_castsi512_si128(a));
                s128!(1, _mm512_extracti32x4_epi32::<1>(a));
                s128!(2, _mm512_extracti32x4_epi32::<2>(a));
                s128!(3, _mm512_extracti32x4_epi32::<3>(a));
                s128!(4, _mm512_castsi512_si128(b));
                s128!(5, _mm512_extracti32x4_epi32::<1>(b));
                s128!(6, _mm512_extracti32x4_epi32::<2>(b));
                s128!(7, _mm512_extracti32x4_epi32::<3>(b));
            }
            16 => {
                s256!(0, _mm512_castsi512_si256(a));
                s256!(1, _mm512_extracti64x4_epi64::<1>(a));
                s256!(2, _mm512_castsi512_si256(b));
                s256!(3, _mm512_extracti64x4_epi64::<1>(b));
            }
            32 => {
                _mm512_storeu_si512(row!(0) as *mut _, a);
                _mm512_storeu_si512(row!(1) as *mut _, b);
            }
            _ => {
                let p = row!(0);
                _mm512_storeu_si512(p as *mut _, a);
                _mm512_storeu_si512(p.add(64) as *mut _, b);
            }
        }
    }

    /// The syndrome check in schedule order, 16 edges per gather: bit k of the result is set
    /// when lane k (of `active`) satisfies every check. Same early exit as
    /// `decoder::syndrome_ok` (stop once every active lane failed a check; start at the group
    /// where the last sweep stopped). `hard` holds one word of `SCALE` bytes per position
    /// (lane bits in `word_mask`), zero at the padding row n; a 32-bit gather at a u16 word
    /// also reads the next word, which `word_mask` drops.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    pub(super) unsafe fn check_groups<const SCALE: i32>(sch: &Schedule, hard: *const u8, synd_bits: &[u64], word_mask: u32, active: u64, start: &mut usize) -> u64 {
        let slots = sch.slots;
        let ng = sch.groups.len();
        let idx = sch.idx.as_ptr();
        let mut bad = !active;
        let from = if *start < ng { *start } else { 0 };
        let mut words = [0u32; 16];
        for gi in (from..ng).chain(0..from) {
            let g = &sch.groups[gi];
            let (base, cnt) = (g.e0 as usize * slots, g.dmax as usize * slots);
            let mut acc = _mm512_setzero_si512();
            let mut i = 0;
            while i < cnt {
                let k: __mmask16 = if cnt - i >= 16 { 0xffff } else { (1u16 << (cnt - i)) - 1 };
                // SAFETY: entries base + i .. base + cnt belong to this group (masked beyond).
                let vi = _mm512_maskz_loadu_epi32(k, idx.add(base + i) as *const i32);
                acc = _mm512_xor_si512(acc, _mm512_mask_i32gather_epi32::<SCALE>(_mm512_setzero_si512(), k, vi, hard as *const i32));
                i += 16;
            }
            _mm512_storeu_si512(words.as_mut_ptr() as *mut _, acc);
            // Entry e of a 16-edge chunk belongs to slot e mod S (16 is a multiple of S).
            let mut per_slot = [0u32; MAX_SLOTS];
            for (e, &w) in words.iter().enumerate() {
                per_slot[e % slots] ^= w;
            }
            for s in 0..slots {
                if g.check[s] != u32::MAX {
                    bad |= u64::from((per_slot[s] ^ synd_bits[g.check[s] as usize] as u32) & word_mask);
                }
            }
            if bad == u64::MAX {
                *start = gi;
                return 0;
            }
        }
        !bad & active
    }

    /// One layered iteration over all groups (`$name`, built for `$feat`, with box-plus `$bp`).
    macro_rules! def_pass {
        ($name:ident, $feat:literal, $bp:ident) => {
    #[target_feature(enable = $feat)]
    #[inline]
    unsafe fn $name<const W: usize>(eng: &mut Grouped<W>, llr: *mut u8) {
        let slots = 64 / W; // = eng.sch.slots, as a constant (loops over slots unroll)
        debug_assert_eq!(slots, eng.sch.slots);
        let r = eng.r.as_mut_ptr() as *mut __m512i;
        let sc = eng.scratch.as_mut_ptr() as *mut __m512i;
        let d = eng.sch.max_deg.max(1);
        // Scratch lines: t0/t1 at 2j, 2j+1; magnitudes at 2d + j; prefix 3d + j; suffix 4d + j.
        let (tb, mb, fb, bb) = (sc, sc.add(2 * d), sc.add(3 * d), sc.add(4 * d));
        let nb = eng.nbuf.as_mut_ptr();
        let idx = eng.sch.idx.as_ptr();
        let lmax = _mm512_set1_epi16(LMAX);
        let lmin = _mm512_set1_epi16(-LMAX);
        let sat = _mm512_set1_epi8(MAXV);
        let mut masks = [0u64; MAX_SLOTS];
        masks[..slots].copy_from_slice(&eng.slot_masks);
        let keep = !eng.fresh;

        for (g, &gs) in eng.sch.groups.iter().zip(eng.gsynd.iter()) {
            let dm = g.dmax as usize;
            let e0 = g.e0 as usize;
            // Slots whose row is longer than j (valid), and whose last edge is j.
            let valid = |j: usize| (0..slots).fold(0u64, |a, s| if g.deg[s] as usize > j { a | masks[s] } else { a });
            let last = |j: usize| (0..slots).fold(0u64, |a, s| if g.deg[s] as usize == j + 1 { a | masks[s] } else { a });
            let mut par = gs;
            // SAFETY (whole loop): e0 + j < group_edges for j < dmax (the schedule lays out
            // dmax edges per group); idx entries are < n or the scratch row n, and the posterior
            // buffer holds n + 1 rows of 2W bytes; scratch holds 5·max_deg lines and j < dmax
            // ≤ max_deg.
            for j in 0..dm {
                let e = e0 + j;
                let (l0, l1) = gather::<W>(llr, idx.add(e * slots));
                // The message lines stream from L3 (6 MB at 2^16, 16 lanes): fetching 32 lines
                // ahead saves ≈ 10 % (prefetching posterior rows did not help).
                _mm_prefetch::<_MM_HINT_T0>(r.wrapping_add(e + 32) as *const i8);

                let (r0, r1) = widen(_mm512_maskz_mov_epi8(keep, _mm512_load_si512(r.add(e) as *const _)));
                let t0 = _mm512_sub_epi16(l0, r0);
                let t1 = _mm512_sub_epi16(l1, r1);
                // |t| saturated to 127 (abs is ≥ 0, so the signed pack saturates at 127).
                let mag = _mm512_packs_epi16(_mm512_abs_epi16(t0), _mm512_abs_epi16(t1));
                let neg = _mm512_movepi8_mask(_mm512_packs_epi16(t0, t1));
                // Padding edges read the scratch row: their signs must not enter the parity.
                par ^= if j + 1 >= g.dmin as usize { neg & valid(j) } else { neg };
                _mm512_store_si512(tb.add(2 * j) as *mut _, t0);
                _mm512_store_si512(tb.add(2 * j + 1) as *mut _, t1);
                _mm512_store_si512(mb.add(j) as *mut _, mag);
                *nb.add(j) = neg;
            }
            if dm > 1 {
                let mut fa = _mm512_load_si512(mb as *const _);
                let mut ba = _mm512_load_si512(mb.add(dm - 1) as *const _);
                _mm512_store_si512(fb as *mut _, fa);
                _mm512_store_si512(bb.add(dm - 1) as *mut _, ba);
                for j in 1..dm - 1 {
                    fa = $bp(fa, _mm512_load_si512(mb.add(j) as *const _));
                    _mm512_store_si512(fb.add(j) as *mut _, fa);
                    let jb = dm - 1 - j;
                    let mj = _mm512_load_si512(mb.add(jb) as *const _);
                    ba = $bp(mj, ba);
                    if jb + 1 >= g.dmin as usize {
                        // Slots whose row ends at jb start their suffix chain here.
                        ba = _mm512_mask_mov_epi8(ba, last(jb), mj);
                    }
                    _mm512_store_si512(bb.add(jb) as *mut _, ba);
                }
            }
            let zero = _mm512_setzero_si512();
            for j in 0..dm {
                let e = e0 + j;
                let mut ext = if dm == 1 {
                    sat
                } else if j == 0 {
                    _mm512_load_si512(bb.add(1) as *const _)
                } else if j == dm - 1 {
                    _mm512_load_si512(fb.add(dm - 2) as *const _)
                } else {
                    $bp(_mm512_load_si512(fb.add(j - 1) as *const _), _mm512_load_si512(bb.add(j + 1) as *const _))
                };
                let tail = j + 1 >= g.dmin as usize;
                if tail && dm > 1 && j < dm - 1 {
                    // Slots whose row ends here: the last edge takes the prefix alone (or, for
                    // a single-edge check, the certain value).
                    let lm = last(j);
                    ext = if j == 0 { _mm512_mask_mov_epi8(ext, lm, sat) } else { _mm512_mask_mov_epi8(ext, lm, _mm512_load_si512(fb.add(j - 1) as *const _)) };
                }
                let kneg = par ^ *nb.add(j);
                let rn = _mm512_mask_sub_epi8(ext, kneg, zero, ext);
                // Padding lanes store garbage that only padding lanes read back.
                _mm512_store_si512(r.add(e) as *mut _, rn);
                let (w0, w1) = widen(rn);
                let n0 = _mm512_min_epi16(_mm512_max_epi16(_mm512_add_epi16(_mm512_load_si512(tb.add(2 * j) as *const _), w0), lmin), lmax);
                let n1 = _mm512_min_epi16(_mm512_max_epi16(_mm512_add_epi16(_mm512_load_si512(tb.add(2 * j + 1) as *const _), w1), lmin), lmax);
                scatter::<W>(llr, idx.add(e * slots), n0, n1);
            }
        }
    }
        };
    }
    def_pass!(pass_groups, "avx512f,avx512bw", boxplus);
    def_pass!(pass_groups_vbmi, "avx512f,avx512bw,avx512vbmi", boxplus_vbmi);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Every check with edges exactly once; members of a group pairwise disjoint; two checks
    /// sharing a variable in index order; the edge layout is each row followed by padding.
    fn check_schedule(rows: &Rows<'_>, m: usize, n: usize, sch: &Schedule) {
        let mut group_of = vec![usize::MAX; m];
        for (gi, g) in sch.groups.iter().enumerate() {
            let mut seen = std::collections::HashSet::new();
            for s in 0..sch.slots {
                if g.check[s] == u32::MAX {
                    assert_eq!(g.deg[s], 0);
                    continue;
                }
                let c = g.check[s] as usize;
                assert_eq!(group_of[c], usize::MAX, "check {c} scheduled twice");
                group_of[c] = gi;
                let row = rows.row(c);
                assert_eq!(g.deg[s] as usize, row.len());
                for &v in row {
                    assert!(seen.insert(v), "group {gi} has two checks on variable {v}");
                }
                for j in 0..g.dmax as usize {
                    let want = row.get(j).copied().unwrap_or(n as u32);
                    assert_eq!(sch.idx[(g.e0 as usize + j) * sch.slots + s], want);
                }
            }
        }
        let mut last_check_of_var = vec![usize::MAX; n];
        for c in 0..m {
            if rows.row(c).is_empty() {
                assert_eq!(group_of[c], usize::MAX);
                continue;
            }
            assert_ne!(group_of[c], usize::MAX, "check {c} never scheduled");
            for &v in rows.row(c) {
                let a = last_check_of_var[v as usize];
                if a != usize::MAX {
                    assert!(group_of[a] < group_of[c], "checks {a} and {c} share {v} but run out of order");
                }
                last_check_of_var[v as usize] = c;
            }
        }
    }

    /// Dense random rows (many conflicts), some empty and single-edge rows: (n, m, row_ptr,
    /// row_idx) for three sizes.
    fn random_rows(seed: u64) -> Vec<(usize, usize, Vec<u32>, Vec<u32>)> {
        let mut rng = SplitMix64::new(seed);
        let mut out = Vec::new();
        for (n, m, dmax) in [(60usize, 300usize, 9u64), (500, 400, 30), (4096, 1000, 40)] {
            let mut ptr = vec![0u32];
            let mut idx = Vec::new();
            for _ in 0..m {
                let d = rng.next_u64() % dmax;
                let mut row: Vec<u32> = (0..d).map(|_| (rng.next_u64() % n as u64) as u32).collect();
                row.sort_unstable();
                row.dedup();
                idx.extend(row);
                ptr.push(idx.len() as u32);
            }
            out.push((n, m, ptr, idx));
        }
        out
    }

    #[test]
    fn schedule_keeps_the_order_of_checks_that_share_variables() {
        for (n, m, ptr, idx) in random_rows(99) {
            let rows = Rows { ptr: &ptr, idx: &idx };
            for slots in [1usize, 2, 4, 8] {
                check_schedule(&rows, m, n, &Schedule::build(&rows, m, n, slots));
            }
        }
    }

    #[test]
    #[ignore = "prints the share of full groups for the shipped codes (cargo test -- --ignored --nocapture)"]
    fn schedule_fill_of_shipped_codes() {
        for (log2n, rate) in [(14u32, 800u32), (14, 865), (16, 700), (16, 850), (16, 895), (18, 700), (18, 850), (18, 895)] {
            let code = crate::family::code(crate::family::CodeId { log2n, rate_permille: rate });
            let frozen: Vec<bool> = (0..code.n).map(|v| v % 10 == 0).collect();
            let (ptr, idx) = swept_rows(&code, &frozen);
            let rows = Rows { ptr: &ptr, idx: &idx };
            for slots in [2usize, 4, 8] {
                let sch = Schedule::build(&rows, code.m, code.n, slots);
                check_schedule(&rows, code.m, code.n, &sch);
                let full = sch.groups.iter().filter(|g| g.check[..slots].iter().all(|&c| c != u32::MAX)).count();
                let lanes_used: usize = idx.len();
                let lanes_swept = sch.group_edges() * slots;
                eprintln!("2^{log2n} {rate}: {slots} slots: {full}/{} groups full, edge slots used {:.3}", sch.groups.len(), lanes_used as f64 / lanes_swept as f64);
            }
        }
    }

    #[test]
    fn derived_schedules_are_valid() {
        // Random rows, then a third of the variables frozen on top: rows shrink, some become
        // empty (their slots empty, some groups vanish).
        for (n, m, ptr, idx) in random_rows(7) {
            let keep = |v: u32| v % 3 != 0 || v % 7 == 0;
            let mut ptr2 = vec![0u32];
            let mut idx2 = Vec::new();
            for c in 0..m {
                idx2.extend(idx[ptr[c] as usize..ptr[c + 1] as usize].iter().copied().filter(|&v| keep(v)));
                ptr2.push(idx2.len() as u32);
            }
            let (rows, rows2) = (Rows { ptr: &ptr, idx: &idx }, Rows { ptr: &ptr2, idx: &idx2 });
            assert!((0..m).any(|c| rows2.row(c).is_empty() && !rows.row(c).is_empty()), "no row emptied: the test misses a case");
            for slots in [1usize, 2, 4, 8] {
                let d = Schedule::build(&rows, m, n, slots).derive(&rows2, n);
                check_schedule(&rows2, m, n, &d);
                assert_eq!(d.max_deg, (0..m).map(|c| rows2.row(c).len()).max().unwrap());
            }
        }
    }

    #[test]
    fn the_cache_derives_a_retry_rounds_schedule_from_the_previous_round() {
        // 2^14, rate 0.8: shortened positions, then two "retry rounds" freezing 100 more each,
        // then a set that does not contain the first (a new block's parameters): built.
        use std::sync::atomic::Ordering::Relaxed;
        let code = crate::family::code(crate::family::CodeId { log2n: 14, rate_permille: 800 });
        let round = |r: usize| -> Vec<bool> { (0..code.n).map(|v| v % 13 == 5 || (v % 17 == 3 && v / 17 < 100 * r)).collect() };
        let other: Vec<bool> = (0..code.n).map(|v| v % 13 == 6).collect();
        let (b0, d0) = (SCHEDULES_BUILT.load(Relaxed), SCHEDULES_DERIVED.load(Relaxed));
        for (r, frozen) in [round(0), round(1), round(2), other].iter().enumerate() {
            let b = cached_schedule(&code, frozen, 4);
            let rows = Rows { ptr: &b.row_ptr, idx: &b.row_idx };
            check_schedule(&rows, code.m, code.n, &b.sch);
            assert_eq!(b.frozen.len(), frozen.iter().filter(|&&f| f).count(), "round {r}");
        }
        // Other tests may use the cache meanwhile: at least these derivations and builds.
        assert!(SCHEDULES_DERIVED.load(Relaxed) >= d0 + 2, "rounds 1 and 2 were not derived");
        assert!(SCHEDULES_BUILT.load(Relaxed) >= b0 + 2, "round 0 and the other set must be built");
    }

    #[test]
    #[ignore = "prints how well derived schedules pack (cargo test -- --ignored --nocapture)"]
    fn derived_schedule_packing() {
        let code = crate::family::code(crate::family::CodeId { log2n: 18, rate_permille: 850 });
        let f1: Vec<bool> = (0..code.n).map(|v| v % 10 == 0).collect();
        for extra in [1usize, 8, 32, 128] {
            // `extra`/1000 of the positions frozen on top (revealed bits of retry rounds).
            let f2: Vec<bool> = (0..code.n).map(|v| f1[v] || (v * 7919) % 1000 < extra).collect();
            let (p1, i1) = swept_rows(&code, &f1);
            let (p2, i2) = swept_rows(&code, &f2);
            let (r1, r2) = (Rows { ptr: &p1, idx: &i1 }, Rows { ptr: &p2, idx: &i2 });
            let base = Schedule::build(&r1, code.m, code.n, 8);
            let d = base.derive(&r2, code.n);
            let b = Schedule::build(&r2, code.m, code.n, 8);
            eprintln!("+{extra}‰ frozen: derived {} group edges, built {} ({:.4})", d.group_edges(), b.group_edges(), d.group_edges() as f64 / b.group_edges() as f64);
        }
    }

    #[test]
    fn schedule_of_a_shipped_code_is_valid_and_dense() {
        // 2^14 at rate 0.8 with 32 lanes (2 checks per register), as decode_batch runs it.
        let code = crate::family::code(crate::family::CodeId { log2n: 14, rate_permille: 800 });
        let frozen: Vec<bool> = (0..code.n).map(|v| v % 11 == 0).collect();
        let (ptr, idx) = swept_rows(&code, &frozen);
        let rows = Rows { ptr: &ptr, idx: &idx };
        for slots in [1usize, 2, 4, 8] {
            let sch = Schedule::build(&rows, code.m, code.n, slots);
            check_schedule(&rows, code.m, code.n, &sch);
            if slots <= 2 {
                let used = idx.len() as f64 / (sch.group_edges() * slots) as f64;
                assert!(used > 0.95, "only {used:.3} of the edge slots used at {slots} slots");
            }
        }
    }

    #[test]
    fn p_order_is_a_permutation_matching_pack_and_unpack() {
        let mut seen = [false; 64];
        for u in 0..64 {
            assert!(!std::mem::replace(&mut seen[p_pos(u)], true));
        }
        // packs(t0, t1): per 128-bit lane l, t0 words 8l..8l+7 then t1 words 8l..8l+7.
        assert_eq!((p_pos(0), p_pos(7), p_pos(8), p_pos(32), p_pos(40), p_pos(63)), (0, 7, 16, 8, 24, 63));
        for w in [8, 16, 32, 64] {
            let all = (0..64 / w).fold(0u64, |a, s| {
                assert_eq!(a & slot_mask(w, s), 0);
                a | slot_mask(w, s)
            });
            assert_eq!(all, u64::MAX);
        }
    }
}
