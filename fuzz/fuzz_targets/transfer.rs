//! Arbitrary bytes as a zone transfer or TSIG-signed request: the first byte
//! picks the client's address and how the harness signs the rest (validly,
//! with a bad MAC, time or key, cut short, or not at all), which then goes
//! through `Answerer::answer` and the transfer service on two answerers with
//! transfers on; the invariants are in `src/harness.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| headless_dns_fuzz::harness::check_transfer(data));
