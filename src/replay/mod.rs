//! Replay: re-issue captured sessions against a target at scaled load.
pub mod plan;
