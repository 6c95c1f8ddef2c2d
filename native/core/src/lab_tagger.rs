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
}
