//! headless-dns: authoritative DNS for Kubernetes headless services and StatefulSets.
//!
//! ```text
//! sources::{k8s | file (+ sim)} --SourceEvent--> IndexWriter --publish--> Arc<ServiceView> per service
//!                                   (bounded queue)    (one task)              |  (Index: cheap Clone)
//!                                                                              v
//!        UDP threads / TCP tasks --> dns::Answerer (parse, walk, write the view's records)
//!        admin (axum): / (record browser) /health /ready /records /sim/...
//! ```
//!
//! Layout, in layers: a module imports only from the layers below its own.
//! 1. [`error`], [`fault`], [`clock`], [`histogram`]: leaves. [`config`]: the settings
//!    and their checks (no I/O). [`wire`]: DNS on the wire without policy
//!    (names, query parsing, response writing, record-set encoding).
//! 2. [`index`]: the ordinal-name index; the only writer applies source events
//!    and publishes immutable per-service views laid out so that `wire` writes
//!    their records with a few copies per query (irregular sets pre-encoded).
//! 3. [`dns`]: the query path (`catalog` routes to a zone; `cluster` and
//!    `reverse` answer in it), forwarding, RRL, autopath (a pod's search-path
//!    walk answered server-side), and the listeners (`server`).
//!    [`sources`]: manifest files, the StatefulSet simulator, the Kubernetes
//!    API. Neither imports the other. [`transfer`]: zone transfers to
//!    secondaries (AXFR, IXFR from a journal the index writer keeps, NOTIFY,
//!    TSIG), on top of `dns` (it reaches the listeners through `dns::handoff`),
//!    and the transfer source (`transfer::follow`: a secondary of a primary,
//!    feeding the index through `sources::Differ` as the file source does).
//!    [`history`]: the record browser's memory (names' past addresses and
//!    readiness, a change timeline, queries per second), recorded on the
//!    index writer's side; on top of `index` only.
//! 4. [`telemetry`] (logging, metrics) and [`admin`] (the HTTP side door).
//!    [`cli`]: the command line (flags and environment onto [`config`]);
//!    [`check`]: `headless-dns check`, a start without binding or connecting.
//! 5. [`engine`]: the composition root, wiring sources, index, listeners and
//!    admin for one configuration; [`reload`]: swaps configurations without a
//!    pause in answers, and shuts down. [`handover`]: restarts that lose no
//!    query, the listening sockets passed from the running process to the
//!    new one over a Unix socket (`SCM_RIGHTS`).
//!
//! [`run`] takes already-bound sockets and a shutdown future, so tests bind
//! `127.0.0.1:0` and run the real server in-process.

pub mod admin;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dns;
pub mod engine;
pub mod error;
pub mod fault;
pub mod handover;
pub mod histogram;
pub mod history;
pub mod index;
pub mod reload;
pub mod sources;
pub mod telemetry;
pub mod transfer;
pub mod wire;

pub use config::Config;
pub use engine::{Listeners, export_manifests, index_manifests, run};
pub use error::{Error, Result};
pub use reload::{serve, shutdown_signal};
