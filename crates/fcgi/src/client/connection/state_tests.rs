//! Tests of `state.rs` (added in the next commit).
