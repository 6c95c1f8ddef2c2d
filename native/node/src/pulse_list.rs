//! napi adapter for qkd-core's pulse lists (pulse_list.rs; reference src/protocol/pulse-list.ts).
//! Runs on the JS thread (≈ 4 ns per pulse each way); errors are "PULSES_*: message" strings.
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qkd_core::pulse_list;

#[napi(js_name = "pulseListEncode")]
pub fn pulse_list_encode(pulses: Float64Array) -> Result<Buffer> {
    pulse_list::encode(&pulses).map(Buffer::from).map_err(|i| {
        Error::new(Status::InvalidArg, format!("PULSES_NOT_INCREASING: pulse list must be strictly increasing integers (index {i})"))
    })
}

/// Decodes into `out` (at least `buf.length` long); returns the count (the caller checks it).
#[napi(js_name = "pulseListDecodeInto")]
pub fn pulse_list_decode_into(buf: Uint8Array, mut out: Float64Array) -> Result<u32> {
    if out.len() < buf.len() {
        return Err(Error::new(Status::InvalidArg, format!("PULSES_BAD_ARGUMENT: the output holds {} pulses, the input may hold {}", out.len(), buf.len())));
    }
    // SAFETY: `out` is a Float64Array the caller made for this call and does not touch until it
    // returns; nothing else aliases its memory while the JS thread is here.
    let dst = unsafe { out.as_mut() };
    let n = pulse_list::decode_into(&buf, dst).map_err(|e| Error::new(Status::InvalidArg, format!("{}: {}", e.code, e.message)))?;
    Ok(n as u32)
}

/// Bob's sift part: the distinct pulses of sorted `pulses` encoded, and each detection's position
/// in that list written to `rank` (as long as `pulses`). Errors: DETECTIONS_UNSORTED, PULSES_NOT_INCREASING.
#[napi(js_name = "pulseListEncodeDistinct")]
pub fn pulse_list_encode_distinct(pulses: Float64Array, mut rank: Float64Array) -> Result<Buffer> {
    if rank.len() < pulses.len() {
        return Err(Error::new(Status::InvalidArg, format!("PULSES_BAD_ARGUMENT: rank holds {} entries for {} pulses", rank.len(), pulses.len())));
    }
    // SAFETY: `rank` is a Float64Array the caller made for this call and does not touch until it
    // returns; nothing else aliases its memory while the JS thread is here.
    let dst = unsafe { rank.as_mut() };
    match pulse_list::encode_distinct(&pulses, dst) {
        Ok((bytes, _)) => Ok(Buffer::from(bytes)),
        Err(pulse_list::DistinctError::Unsorted(i)) => Err(Error::new(Status::InvalidArg, format!("DETECTIONS_UNSORTED: detections must be sorted by pulse index (index {i})"))),
        Err(pulse_list::DistinctError::NotAnIndex(i)) => Err(Error::new(Status::InvalidArg, format!("PULSES_NOT_INCREASING: pulse list must be strictly increasing integers (index {i})"))),
    }
}

/// How many pulses a list holds, without decoding it (errors as the decoder's for a truncated or
/// malformed list): for a list passed on unchanged.
#[napi(js_name = "pulseListCount")]
pub fn pulse_list_count(buf: Uint8Array) -> Result<u32> {
    pulse_list::count(&buf).map(|n| n as u32).map_err(|e| Error::new(Status::InvalidArg, format!("{}: {}", e.code, e.message)))
}
