//! qkd-store (see Cargo.toml description).
