//! Shared helpers for the black-box tests in `tests/`.
//!
//! Each test crate does `mod support;` and uses what it needs, so items
//! unused by one crate are not dead code in general.
#![allow(dead_code)]

pub mod fake_api;
pub mod probe;
