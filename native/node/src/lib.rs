//! Thin #[napi] adapters over the pure-Rust crates. No algorithm lives here: each module converts
//! JS values (typed arrays, numbers) to Rust types, calls the crate and maps errors to coded
//! napi errors (`code` strings the TypeScript facade in src/core/ knows). No panic may cross.
#![deny(clippy::all)]
use napi_derive::napi;

mod auth; // qkd-auth: Wegman-Carter MAC (classical channel)
mod lab; // qkd-core: the emulated lab (source device and record, physics)
mod ldpc; // qkd-ldpc: reconciliation
mod node_custody; // qkd-store pkcs11: the node's at-rest key sealed in a PKCS#11 token
mod merkle; // qkd-store merkle: key commitments (v2) of the node and the KMS
mod mlkem; // ML-KEM-768 (libcrux) KMS↔KMS exchange and the hybrid key derivation
mod pulse_list; // qkd-core: pulse lists of the sift dialogue and the source read-back (LEB128 deltas)
mod pipeline; // qkd-core: sifting, estimation, verification, privacy amplification, finite key
mod source_health; // qkd-core: SP 800-90B health tests on Alice's source read-back
mod records; // qkd-records: time-tagger recordings (PTU, quTAG, a1), histograms
mod store; // qkd-store: reference KMS key store
mod stream; // detection-batch ingest (zero-copy from ZeroMQ frames)
mod sync; // qkd-core sync_track: per-click clock sync tracking and pulse indexing

/// Version of the native core, to check the addon loaded is the one built.
#[napi]
pub fn core_version() -> String {
    qkd_core::version().to_string()
}
