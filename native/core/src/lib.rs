//! qkd-core: the post-processing pipeline of the QKD node, pure Rust.
//! The napi adapter crate (`../node`) exposes it to TypeScript.

pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
