//! headless-dns: authoritative DNS for Kubernetes headless services and StatefulSets.
//!
//! ```text
//! sources::{k8s | file (+ sim)} --SourceEvent--> IndexWriter --publish--> Arc<ServiceView> per service
//!                                   (bounded queue)    (one task)              |  (Index: cheap Clone)
//!                                                                              v
//!        UDP threads / TCP tasks --> dns::Answerer (parse, walk, copy pre-encoded sections)
//!        admin (axum): /health /ready /records /sim/...
//! ```
//!
//! Layout:
//! - [`index`]: the ordinal-name index; the only writer applies source events
//!   and publishes immutable per-service views with pre-encoded answers.
//! - [`dns`]: the query path (`wire`, `cluster`, `reverse`, `records`) and the
//!   listeners (`server`). The only module that knows DNS.
//! - [`sources`]: manifest files, the StatefulSet simulator, the Kubernetes API.
//! - [`admin`]: the HTTP side door. [`config`], [`telemetry`], [`error`]: the edges.
//! - [`engine`]: the composition root, wiring source, index, listeners and
//!   admin for one configuration; [`reload`]: swaps configurations without a
//!   pause in answers.
//!
//! [`run`] takes already-bound sockets and a shutdown future, so tests bind
//! `127.0.0.1:0` and run the real server in-process.

pub mod admin;
pub mod config;
pub mod dns;
pub mod engine;
pub mod error;
pub mod index;
pub mod reload;
pub mod sources;
pub mod telemetry;

pub use config::Config;
pub use engine::{Listeners, export_manifests, run};
pub use error::{Error, Result};
pub use reload::{serve, shutdown_signal};
