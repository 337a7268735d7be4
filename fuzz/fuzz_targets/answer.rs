//! Arbitrary bytes as a DNS query, over UDP and TCP, through `Answerer::answer`;
//! the invariants are in `src/harness.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| headless_dns_fuzz::harness::check_answer(data));
