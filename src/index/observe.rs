//! A hook on the writer's publications, for whoever keeps history of them.
//!
//! Zone transfers (`crate::transfer`) record each publication's changes in a
//! journal for IXFR; the record browser's history (`crate::history`) keeps
//! each name's past addresses and a change timeline. Both do it here, on the
//! writer's side, when the writer swaps a service's view: the query path
//! never pays for it, and the index knows nothing about either.

use std::sync::Arc;

use super::ServiceView;

/// Told, in order, about every [`super::IndexWriter::publish`]:
/// [`begin`](PublishObserver::begin), one
/// [`service`](PublishObserver::service) per service whose view was replaced,
/// one [`namespace`](PublishObserver::namespace) per namespace that came or
/// went, then [`end`](PublishObserver::end) once the new serial is stored.
pub trait PublishObserver: Send {
    /// A publication starts; nothing of it is visible to readers yet. Its
    /// first event reached the writer at `arrived_us` (Unix microseconds).
    fn begin(&mut self, arrived_us: u64);
    /// A service's view went from `old` to `new` (`None`: it did not exist).
    fn service(&mut self, old: Option<&Arc<ServiceView>>, new: Option<&Arc<ServiceView>>);
    /// Namespace `name` (lower-case) began (`exists`) or ceased to exist for
    /// the query path (a Namespace object, or a service in it); told after
    /// the publication's services.
    fn namespace(&mut self, _name: &str, _exists: bool) {}
    /// The publication is complete and readers see `serial`.
    fn end(&mut self, serial: u32);
    /// The lowest serial the index may use (a floor kept across restarts);
    /// asked once, when the observer is installed.
    fn serial_floor(&self) -> u32 {
        0
    }
}
