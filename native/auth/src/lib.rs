//! qkd-auth (see Cargo.toml description).
