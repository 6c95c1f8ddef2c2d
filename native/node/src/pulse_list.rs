//! napi adapter for qkd-core's pulse lists (pulse_list.rs; reference src/protocol/pulse-list.ts).
//! Runs on the JS thread (≈ 2-4 ns per pulse); errors are "PULSES_*: message" strings.
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qkd_core::pulse_list;

#[napi(js_name = "pulseListEncode")]
pub fn pulse_list_encode(pulses: Float64Array) -> Result<Buffer> {
    pulse_list::encode(&pulses).map(Buffer::from).map_err(|i| {
        Error::new(Status::InvalidArg, format!("PULSES_NOT_INCREASING: pulse list must be strictly increasing integers (index {i})"))
    })
}

#[napi(js_name = "pulseListDecode")]
pub fn pulse_list_decode(buf: Uint8Array, expected: Option<f64>) -> Result<Float64Array> {
    let n = expected.map(|e| if e >= 0.0 && e <= 9_007_199_254_740_991.0 && e == e.floor() { e as usize } else { usize::MAX });
    pulse_list::decode(&buf, n).map(Float64Array::new).map_err(|e| Error::new(Status::InvalidArg, format!("{}: {}", e.code, e.message)))
}
