//! Arbitrary text as a manifest file through `sources::file::parse`, and what
//! parses on into an index; the checks are in `src/harness.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| headless_dns_fuzz::harness::check_manifest(data));
