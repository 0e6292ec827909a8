#![no_main]
// The body lives in the library (src/fuzzing.rs) so that tests/fuzz_corpus.rs
// replays this target's corpus on stable.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tapedeck::fuzzing::redact(data));
