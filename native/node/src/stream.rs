//! napi adapters for this area (see lib.rs).
