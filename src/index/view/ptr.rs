//! The names an address points back at (PTR), and their records.

use std::sync::Arc;

use super::ServiceView;
use crate::wire::RecordWriter;
use crate::wire::rrset::{ptr_len, push_ptr};

/// The endpoint position that stands for the service name itself (a cluster
/// IP points at `<svc>.<ns>.svc.<zone>`, not at an endpoint).
pub const SERVICE_ITSELF: u32 = u32::MAX;

/// One name an address points back at: an endpoint of a view, or the view's
/// service itself ([`SERVICE_ITSELF`]).
#[derive(Clone, Debug)]
pub struct PtrTarget {
    /// The view the name belongs to.
    pub view: Arc<ServiceView>,
    /// The endpoint's position, or [`SERVICE_ITSELF`].
    pub endpoint: u32,
}

impl PtrTarget {
    /// The target name as (first label or empty, service wire name).
    pub fn name(&self) -> (&[u8], &[u8]) {
        let label = if self.endpoint == SERVICE_ITSELF {
            &[][..]
        } else {
            self.view.label_bytes(self.endpoint as usize)
        };
        (label, self.view.fqdn_wire())
    }

    /// The target as text (`web-0.nginx.default.svc.cluster.local`).
    pub fn to_text(&self, zone: &str) -> String {
        let k = &self.view.record.key;
        let (label, _) = self.name();
        let label = std::str::from_utf8(label).unwrap_or_default();
        let sep = if label.is_empty() { "" } else { "." };
        format!("{label}{sep}{}.{}.svc.{zone}", k.name(), k.namespace())
    }
}

/// The PTR set of one address. Almost every address has exactly one name, so
/// that case is stored inline; with a thin pointer for the rare case the
/// whole value is 16 bytes (a map entry per address: 24).
#[derive(Clone, Debug)]
pub enum PtrSet {
    /// One name.
    One([PtrTarget; 1]),
    /// Several names (an address behind several services), sorted.
    Many(Arc<Box<[PtrTarget]>>),
}

impl PtrSet {
    /// The set of `targets` (not empty), several sorted by name.
    pub fn new(mut targets: Vec<PtrTarget>, zone: &str) -> Self {
        if targets.len() == 1
            && let Some(one) = targets.pop()
        {
            return PtrSet::One([one]);
        }
        targets.sort_by_cached_key(|t| t.to_text(zone));
        PtrSet::Many(Arc::new(targets.into_boxed_slice()))
    }

    /// The names, in answer order.
    pub fn targets(&self) -> &[PtrTarget] {
        match self {
            PtrSet::One(t) => t,
            PtrSet::Many(t) => t,
        }
    }
}

/// PTR records owned by the question name, one per target, written per query.
#[derive(Clone, Copy, Debug)]
pub struct PtrRecords<'a> {
    targets: &'a [PtrTarget],
    ttl: u32,
}

impl<'a> PtrRecords<'a> {
    /// The records naming `targets`, with TTL `ttl` (seconds).
    pub fn new(targets: &'a [PtrTarget], ttl: u32) -> Self {
        Self { targets, ttl }
    }

    /// The targets written: at most as many as a header can count.
    fn written(&self) -> &'a [PtrTarget] {
        &self.targets[..self.targets.len().min(u16::MAX as usize)]
    }
}

impl RecordWriter for PtrRecords<'_> {
    fn count(&self) -> u16 {
        self.written().len() as u16
    }

    fn len(&self) -> usize {
        self.targets
            .iter()
            .map(|t| {
                let (label, service) = t.name();
                ptr_len(label, service)
            })
            .sum()
    }

    fn write(&self, out: &mut Vec<u8>) {
        self.write_within(out, usize::MAX);
    }

    fn write_within(&self, out: &mut Vec<u8>, room: usize) -> u16 {
        let mut left = room;
        let mut written = 0;
        for t in self.written() {
            let (label, service) = t.name();
            let Some(rest) = left.checked_sub(ptr_len(label, service)) else {
                break;
            };
            push_ptr(out, self.ttl, label, service);
            (left, written) = (rest, written + 1);
        }
        written
    }
}
