//! Shared helpers for the black-box tests: start the real server in-process
//! on ephemeral loopback ports, speak DNS over real UDP/TCP sockets, and talk
//! to the admin HTTP API.
#![allow(dead_code)]

pub mod dns;
