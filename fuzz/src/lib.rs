//! The fuzz targets' bodies, as a library so that they can be replayed
//! without libFuzzer: `tests/hostile_packets.rs` includes `harness.rs` by
//! path and feeds the committed seeds, crash reproducers and minimized
//! corpora through the very same checks, which is what CI runs (no nightly
//! needed there).

pub mod harness;
