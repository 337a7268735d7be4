//! Shared helpers for the black-box tests: start the real server in-process
//! on ephemeral loopback ports, speak DNS over real UDP/TCP sockets, talk to
//! the admin HTTP API, and fake a Kubernetes API server.
//!
//! Each test crate does `mod support;` and uses what it needs, so items
//! unused by one crate are not dead code in general.
#![allow(dead_code)]

pub mod dns;
pub mod fake_api;
pub mod probe;
