//! The crate's one error type.
//!
//! Only start-up and configuration fail with an [`Error`]: the query path turns
//! every outcome into a DNS response code, and a source that fails logs, backs
//! off and retries instead of returning.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can stop the server from starting or a config from loading.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot bind {proto} {addr}")]
    Bind {
        /// "udp", "tcp" or "admin".
        proto: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid; the message lists every problem found.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A configuration file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A manifest file is not valid; the message names file, document and line.
    #[error("{0}")]
    Manifest(String),
    /// The Kubernetes client could not be configured.
    #[error("kubernetes client")]
    Kube(#[from] kube::Error),
    /// The kubeconfig could not be read or inferred.
    #[error("kubernetes configuration")]
    KubeConfig(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A serving thread or task died (see [`crate::fault`]).
    #[error("{0} died")]
    Died(String),
    /// A hand-over of the listening sockets failed (`crate::handover`); the
    /// message says why and which instance serves on.
    #[error("hand-over: {0}")]
    Handover(String),
    /// Any other I/O failure at start-up.
    #[error("i/o")]
    Io(#[from] std::io::Error),
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
