//! The time-tagger's 16-byte tag records (src/devices/tags.ts has the layout and the reference
//! decoder and encoder): decoding a bulk transfer into tag columns plus in-band events, and
//! encoding plain time tags, for the USB tagger path of the emulated lab (per-click loops out of
//! JavaScript). Little-endian records on any host.
//!
//! A record is a time tag when its first word (type, reserved, missed) is 0 and its channel is in
//! 0..=255; anything else is an event at its position among the tags: types 1-4 with a zero
//! reserved byte keep their type, every other record (unknown type, reserved byte set, channel
//! outside a byte) is reported as an ERROR event (type 1), as tags.ts `TagRecordDecoder` does.

pub const TAG_RECORD_BYTES: usize = 16;
pub const TAG_TYPE_ERROR: u8 = 1;

#[derive(Default, Debug, Clone, PartialEq)]
pub struct DecodedRecords {
    pub time_ps: Vec<i64>,
    pub channel: Vec<u8>,
    /// Events: type (after the ERROR mapping), index (tags before it), channel as read, time, missed.
    pub ev_type: Vec<u8>,
    pub ev_index: Vec<u32>,
    pub ev_channel: Vec<i32>,
    pub ev_time_ps: Vec<i64>,
    pub ev_missed: Vec<u16>,
}

/// Decodes whole records; `bytes.len()` must be a multiple of 16.
pub fn decode_records(bytes: &[u8]) -> Result<DecodedRecords, String> {
    if bytes.len() % TAG_RECORD_BYTES != 0 {
        return Err(format!("tag data of {} bytes is not a whole number of {TAG_RECORD_BYTES}-byte records", bytes.len()));
    }
    let n = bytes.len() / TAG_RECORD_BYTES;
    let mut out = DecodedRecords { time_ps: Vec::with_capacity(n), channel: Vec::with_capacity(n), ..Default::default() };
    for r in bytes.chunks_exact(TAG_RECORD_BYTES) {
        let head = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
        let ch = i32::from_le_bytes([r[4], r[5], r[6], r[7]]);
        let t = i64::from_le_bytes([r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]]);
        if head == 0 && (0..=255).contains(&ch) {
            out.time_ps.push(t);
            out.channel.push(ch as u8);
        } else {
            let ty = (head & 0xff) as u8;
            let reserved = (head >> 8) & 0xff;
            out.ev_type.push(if (1..=4).contains(&ty) && reserved == 0 { ty } else { TAG_TYPE_ERROR });
            out.ev_index.push(out.time_ps.len() as u32);
            out.ev_channel.push(ch);
            out.ev_time_ps.push(t);
            out.ev_missed.push((head >> 16) as u16);
        }
    }
    Ok(out)
}

/// Plain time-tag records (type 0) for `time_ps[i] + delay_ps` on `channel[i]`.
pub fn encode_time_tags(time_ps: &[i64], channel: &[u8], delay_ps: i64) -> Vec<u8> {
    let mut out = vec![0u8; time_ps.len() * TAG_RECORD_BYTES];
    for ((r, &t), &c) in out.chunks_exact_mut(TAG_RECORD_BYTES).zip(time_ps).zip(channel) {
        r[4..8].copy_from_slice(&(c as i32).to_le_bytes());
        r[8..16].copy_from_slice(&t.wrapping_add(delay_ps).to_le_bytes());
    }
    out
}

/// The tagger's per-channel delays when they differ: tags may swap order, and the output must stay
/// in time order (reference: `DelayMergeTs` in src/devices/emulated/delay-merge.ts, the same
/// algorithm bit for bit). Each channel's tags keep their order (same shift), so a pull's output
/// is a k-way merge of the per-channel sequences and of the tags held from the previous pull; only
/// tags no later pull can precede are released (a later raw tag is >= the last raw time seen, so
/// its output is >= that + the smallest delay), the rest are held.
///
/// Ties: held tags first, then the channels in the order they first appear in the pull (the
/// reference's insertion order), as a stable merge that takes the first source among equals.
#[derive(Default, Debug, Clone)]
pub struct DelayMerger {
    held_t: Vec<i64>,
    held_c: Vec<u8>,
}

impl DelayMerger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tags held back (not yet released).
    pub fn held(&self) -> usize {
        self.held_t.len()
    }

    /// Drops the held tags (the stream stopped).
    pub fn clear(&mut self) {
        self.held_t.clear();
        self.held_c.clear();
    }

    /// Releases every held tag as records (delays became equal, an overflow, a stop).
    pub fn flush(&mut self) -> Vec<u8> {
        let out = encode_time_tags(&self.held_t, &self.held_c, 0);
        self.clear();
        out
    }

    /// One pull: raw tags (time order) and the delay of each channel (a channel past the end of
    /// `delays` has none). Returns the records released, in time order.
    pub fn push(&mut self, time_ps: &[i64], channel: &[u8], delays: &[i64]) -> Vec<u8> {
        let n = time_ps.len().min(channel.len());
        if n == 0 {
            return Vec::new();
        }
        // Times relative to a base (the earliest held tag, else the first new one), as the
        // reference computes them.
        let base = self.held_t.first().copied().unwrap_or(time_ps[0]);
        let mut slot = [usize::MAX; 256];
        let mut chans: Vec<u8> = Vec::new();
        let mut counts: Vec<usize> = Vec::new();
        for &c in &channel[..n] {
            let s = &mut slot[c as usize];
            if *s == usize::MAX {
                *s = chans.len();
                chans.push(c);
                counts.push(0);
            }
            counts[*s] += 1;
        }
        let mut lists: Vec<Vec<i64>> = counts.iter().map(|&k| Vec::with_capacity(k)).collect();
        for i in 0..n {
            let c = channel[i];
            let d = delays.get(c as usize).copied().unwrap_or(0);
            lists[slot[c as usize]].push(time_ps[i].wrapping_sub(base).wrapping_add(d));
        }
        let held: Vec<i64> = self.held_t.iter().map(|&t| t.wrapping_sub(base)).collect();
        let horizon = delays.iter().min().map(|&m| time_ps[n - 1].wrapping_sub(base).wrapping_add(m));
        // k-way merge, k <= channels + 1: source 0 is the held tags.
        let total = n + held.len();
        let mut out_t = Vec::with_capacity(total);
        let mut out_c = Vec::with_capacity(total);
        let k = lists.len() + 1;
        let mut pos = vec![0usize; k];
        let head = |pos: &[usize], s: usize| -> Option<i64> {
            if s == 0 {
                held.get(pos[0]).copied()
            } else {
                lists[s - 1].get(pos[s]).copied()
            }
        };
        for _ in 0..total {
            let mut best = usize::MAX;
            let mut best_t = i64::MAX;
            for s in 0..k {
                if let Some(t) = head(&pos, s) {
                    if best == usize::MAX || t < best_t {
                        best_t = t;
                        best = s;
                    }
                }
            }
            out_c.push(if best == 0 { self.held_c[pos[0]] } else { chans[best - 1] });
            out_t.push(best_t);
            pos[best] += 1;
        }
        let cut = match horizon {
            Some(h) => out_t.iter().take_while(|&&t| t <= h).count(),
            None => total,
        };
        let abs: Vec<i64> = out_t.iter().map(|&r| base.wrapping_add(r)).collect();
        let released = encode_time_tags(&abs[..cut], &out_c[..cut], 0);
        self.held_t = abs[cut..].to_vec();
        self.held_c = out_c[cut..].to_vec();
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ty: u8, reserved: u8, missed: u16, ch: i32, t: i64) -> Vec<u8> {
        let mut r = vec![ty, reserved];
        r.extend_from_slice(&missed.to_le_bytes());
        r.extend_from_slice(&ch.to_le_bytes());
        r.extend_from_slice(&t.to_le_bytes());
        r
    }

    #[test]
    fn tags_and_events_in_place() {
        let mut b = rec(0, 0, 0, 3, 1000);
        b.extend(rec(2, 0, 0, 0, 1100)); // overflow begin
        b.extend(rec(0, 0, 0, 255, -5));
        b.extend(rec(0, 0, 0, 256, 7)); // channel out of range: error
        b.extend(rec(4, 0, 65535, 2, 9)); // missed events
        b.extend(rec(3, 1, 0, 0, 10)); // reserved set: error
        let d = decode_records(&b).unwrap();
        assert_eq!(d.time_ps, vec![1000, -5]);
        assert_eq!(d.channel, vec![3, 255]);
        assert_eq!(d.ev_type, vec![2, 1, 4, 1]);
        assert_eq!(d.ev_index, vec![1, 2, 2, 2]);
        assert_eq!(d.ev_channel, vec![0, 256, 2, 0]);
        assert_eq!(d.ev_missed, vec![0, 0, 65535, 0]);
        assert!(decode_records(&b[..17]).is_err());
    }

    #[test]
    fn encode_round_trips() {
        let t = vec![0i64, 1 << 40, -3];
        let c = vec![0u8, 7, 255];
        let d = decode_records(&encode_time_tags(&t, &c, 5)).unwrap();
        assert_eq!(d.time_ps, vec![5, (1 << 40) + 5, 2]);
        assert_eq!(d.channel, c);
    }

    fn times(records: &[u8]) -> Vec<(i64, u8)> {
        let d = decode_records(records).unwrap();
        d.time_ps.into_iter().zip(d.channel).collect()
    }

    #[test]
    fn delay_merge_orders_and_holds() {
        let mut m = DelayMerger::new();
        // channel 1 is 250 ps late: its tags move behind channel 0's
        let out = m.push(&[1000, 1100, 1200, 1300], &[1, 0, 1, 0], &[0, 250]);
        // horizon = 1300 + 0: released 1100(0), 1250(1), 1300(0); held 1450(1)
        assert_eq!(times(&out), vec![(1100, 0), (1250, 1), (1300, 0)]);
        assert_eq!(m.held(), 1);
        let out = m.push(&[1450, 2000], &[0, 0], &[0, 250]);
        // tie at 1450: the held tag first
        assert_eq!(times(&out), vec![(1450, 1), (1450, 0), (2000, 0)]);
        assert_eq!(m.held(), 0);
        let out = m.push(&[3000], &[1], &[100, 250]);
        assert_eq!(times(&out), vec![]);
        assert_eq!(times(&m.flush()), vec![(3250, 1)]);
        assert_eq!(m.held(), 0);
        // a channel without a delay entry is not shifted
        let out = m.push(&[10, 20], &[9, 0], &[5, 7]);
        assert_eq!(times(&out), vec![(10, 9), (25, 0)]);
        assert_eq!(m.flush(), Vec::<u8>::new());
    }
}
