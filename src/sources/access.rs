//! The API permissions the Kubernetes source is refused right now (HTTP 403),
//! so `/ready` can answer 503 naming them until they work.
//!
//! Under a namespaced Role a missing rule is the likeliest fault, and the
//! watcher only says "403" once per back-off step: this keeps the latest
//! refusal per kind and namespace. A refusal is cleared when its watch
//! delivers anything, and otherwise counts only while it is fresh: a watch
//! request that stops failing yields nothing until something changes, but a
//! permission still missing is refused again within one back-off step, which
//! keeps it fresh.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::index::Kind;

/// A refusal counts this long after it was last seen: the longest wait
/// between two attempts (at the back-off cap, `api_health` puts a retry on
/// the next slot of its grid at least half a cap away: up to 1.5 caps) plus
/// room for the request itself.
const FRESH: Duration = super::k8s::MAX_BACKOFF
    .saturating_mul(2)
    .saturating_add(Duration::from_secs(2));

/// One refused request: the verb and when it was last refused.
#[derive(Debug)]
struct Refusal {
    verb: &'static str,
    last: Instant,
}

/// The latest refusal per kind and namespace (`None`: cluster scope).
type Refusals = BTreeMap<(Kind, Option<Arc<str>>), Refusal>;

/// Shared between the source's watchers (writers) and the admin API
/// (reader); a cheap `Clone`. The lock is held for a map operation only, and
/// nothing on the DNS query path takes it.
#[derive(Clone, Debug, Default)]
pub struct Access {
    refused: Arc<Mutex<Refusals>>,
}

impl Access {
    fn lock(&self) -> std::sync::MutexGuard<'_, Refusals> {
        // A panic while holding it left a consistent map: keep going.
        self.refused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `verb` on `kind` in `namespace` (all when `None`) was refused.
    pub fn refused(&self, kind: Kind, namespace: Option<&Arc<str>>, verb: &'static str) {
        let refusal = Refusal {
            verb,
            last: Instant::now(),
        };
        self.lock().insert((kind, namespace.cloned()), refusal);
    }

    /// Records that the watch of `kind` in `namespace` works again.
    pub fn granted(&self, kind: Kind, namespace: Option<&Arc<str>>) {
        self.lock().remove(&(kind, namespace.cloned()));
    }

    /// What is refused now, one sentence per permission; `None` when nothing is.
    pub fn problem(&self) -> Option<String> {
        let now = Instant::now();
        let reasons: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, r)| now.duration_since(r.last) < FRESH)
            .map(|((kind, ns), r)| describe(*kind, ns.as_deref(), r.verb))
            .collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
}

/// The resource and API group a kind is requested as (RBAC's names for it).
pub fn resource(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Service => ("services", ""),
        Kind::EndpointSlice => ("endpointslices", "discovery.k8s.io"),
        Kind::Namespace => ("namespaces", ""),
        Kind::StatefulSet => ("statefulsets", "apps"),
        Kind::Pod => ("pods", ""),
    }
}

/// "forbidden (403): cannot watch endpointslices (API group
/// "discovery.k8s.io") in namespace "shop"".
pub fn describe(kind: Kind, namespace: Option<&str>, verb: &str) -> String {
    let (plural, group) = resource(kind);
    let scope = match namespace {
        Some(ns) => format!("in namespace {ns:?}"),
        None => "at cluster scope".to_string(),
    };
    format!("forbidden (403): cannot {verb} {plural} (API group {group:?}) {scope}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_reported_until_granted() {
        let access = Access::default();
        assert_eq!(access.problem(), None);
        let shop: Arc<str> = "shop".into();
        access.refused(Kind::EndpointSlice, Some(&shop), "watch");
        access.refused(Kind::Service, None, "list");
        let p = access.problem().expect("two refusals");
        assert!(
            p.contains(
                r#"cannot watch endpointslices (API group "discovery.k8s.io") in namespace "shop""#
            ),
            "{p}"
        );
        assert!(
            p.contains("cannot list services (API group \"\") at cluster scope"),
            "{p}"
        );
        access.granted(Kind::EndpointSlice, Some(&shop));
        access.granted(Kind::Service, None);
        assert_eq!(access.problem(), None);
    }

    #[test]
    fn a_refusal_not_repeated_goes_stale() {
        let access = Access::default();
        access.refused(Kind::Pod, None, "list");
        access
            .lock()
            .values_mut()
            .for_each(|r| r.last = r.last.checked_sub(FRESH).expect("uptime > FRESH"));
        assert_eq!(
            access.problem(),
            None,
            "not refused for a whole back-off step"
        );
    }
}
