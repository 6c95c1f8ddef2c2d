//! qkd-ldpc (see Cargo.toml description).
