//! What the writer publishes and readers read: the maps behind [`super::Index`].
//!
//! Services are keyed by their wire labels; addresses map back to names
//! through compact references into the published views (see [`PtrRef`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32};

use dashmap::DashMap;

use super::view::{PtrSet, PtrTarget, ServiceView};
use super::{IndexStats, ZoneSettings};

/// A published map. foldhash rather than the standard SipHash: every query
/// hashes its service key (and reverse queries an address), and SipHash's
/// ~100 instructions for a 20-byte key were a visible share of the query
/// path; foldhash's per-process random seed still keeps an outsider from
/// predicting buckets (the keys come from the cluster, not from queries).
pub(super) type Map<K, V> = DashMap<K, V, foldhash::fast::RandomState>;

/// The published state; one per index, shared by the writer and every reader.
pub(super) struct Shared {
    pub(super) settings: ZoneSettings,
    /// Views by service key (see [`super::service_key`]).
    pub(super) services: Map<Box<[u8]>, Arc<ServiceView>>,
    /// Namespaces that exist, by wire label.
    pub(super) namespaces: Map<Box<[u8]>, ()>,
    /// Every published view by [`ServiceView::id`]: what the reverse maps
    /// point at.
    pub(super) views: Map<u32, Arc<ServiceView>>,
    /// The name of each address, one map per family: a 4-byte key and an
    /// 8-byte [`PtrRef`] keep an IPv4 entry at 12 bytes, where an `Arc` to
    /// the view would double it.
    pub(super) reverse_v4: Map<u32, PtrRef>,
    pub(super) reverse_v6: Map<u128, PtrRef>,
    /// The names of the rare addresses that have several.
    pub(super) reverse_many: Map<IpAddr, Arc<Box<[PtrTarget]>>>,
    /// How many named addresses lie below each partial reverse name (see
    /// [`reverse_prefixes`]): those names are empty non-terminals, NODATA
    /// rather than NXDOMAIN (RFC 8020). IPv4 prefixes by [`v4_prefix_key`]
    /// (8-byte entries; a `(u8, u128)` key makes them 48).
    pub(super) prefixes_v4: Map<u32, u32>,
    pub(super) prefixes_v6: Map<(u8, u128), u32>,
    /// The namespaces (wire labels) of the running pods with each address.
    pub(super) pod_ips: Map<IpAddr, Box<[Box<[u8]>]>>,
    pub(super) serial: AtomicU32,
    pub(super) synced: AtomicBool,
    pub(super) generation: tokio::sync::watch::Sender<u64>,
    pub(super) stats: IndexStats,
}

/// Where the names of an address are: endpoint `endpoint` (or the service
/// itself, [`super::SERVICE_ITSELF`]) of the view numbered `view`, or, for an address
/// with several names ([`PtrRef::SEVERAL`]), its entry in `reverse_many`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PtrRef {
    view: u32,
    endpoint: u32,
}

impl PtrRef {
    /// The address has several names: look in `reverse_many`. (No view is
    /// numbered `u32::MAX`.)
    const SEVERAL: PtrRef = PtrRef {
        view: u32::MAX,
        endpoint: 0,
    };

    fn is_several(self) -> bool {
        self.view == Self::SEVERAL.view
    }
}

impl Shared {
    /// The PTR set of `ip`, resolved. The writer replaces a view before it
    /// repoints the addresses, so an entry read just before may name an
    /// endpoint position of the previous view: it is checked against the
    /// address and looked up again if it moved.
    pub(super) fn ptr_set(&self, ip: IpAddr) -> Option<PtrSet> {
        let r = match ip {
            IpAddr::V4(a) => *self.reverse_v4.get(&u32::from(a))?,
            IpAddr::V6(a) => *self.reverse_v6.get(&u128::from(a))?,
        };
        if r.is_several() {
            return self
                .reverse_many
                .get(&ip)
                .map(|t| PtrSet::Many(Arc::clone(&t)));
        }
        let view = Arc::clone(&*self.views.get(&r.view)?);
        let endpoint = if view.has_address(r.endpoint, ip) {
            r.endpoint
        } else {
            (0..view.endpoint_count() as u32).find(|i| view.has_address(*i, ip))?
        };
        Some(PtrSet::One([PtrTarget { view, endpoint }]))
    }

    /// Replaces the PTR targets of `ip` with `f(current)` (none: no entry).
    /// Only the writer calls this, so read-then-write is not a race.
    pub(super) fn update_ptr(
        &self,
        ip: IpAddr,
        zone: &str,
        f: impl FnOnce(Vec<PtrTarget>) -> Vec<PtrTarget>,
    ) {
        let current = self
            .ptr_set(ip)
            .map_or_else(Vec::new, |s| s.targets().to_vec());
        let had = !current.is_empty();
        let next = f(current);
        let has = !next.is_empty();
        if had != has {
            self.count_prefixes(ip, has);
        }
        let entry = if next.is_empty() {
            None
        } else {
            match PtrSet::new(next, zone) {
                PtrSet::One([t]) => Some(PtrRef {
                    view: t.view.id,
                    endpoint: t.endpoint,
                }),
                PtrSet::Many(set) => {
                    self.reverse_many.insert(ip, set);
                    Some(PtrRef::SEVERAL)
                }
            }
        };
        match (ip, entry) {
            (IpAddr::V4(a), Some(r)) => {
                self.reverse_v4.insert(u32::from(a), r);
            }
            (IpAddr::V6(a), Some(r)) => {
                self.reverse_v6.insert(u128::from(a), r);
            }
            (IpAddr::V4(a), None) => {
                self.reverse_v4.remove(&u32::from(a));
            }
            (IpAddr::V6(a), None) => {
                self.reverse_v6.remove(&u128::from(a));
            }
        }
        if entry.is_none_or(|r| !r.is_several()) {
            self.reverse_many.remove(&ip);
        }
    }
}

impl Shared {
    /// Counts `ip` in (`add`) or out of every partial reverse name above it.
    fn count_prefixes(&self, ip: IpAddr, add: bool) {
        for key in reverse_prefixes(ip) {
            match v4_prefix_key(key) {
                Some(k) => count(&self.prefixes_v4, k, add),
                None => count(&self.prefixes_v6, key, add),
            }
        }
    }

    /// Whether a named address lies below the partial reverse name `prefix`.
    pub(super) fn has_reverse_below(&self, prefix: (u8, u128)) -> bool {
        match v4_prefix_key(prefix) {
            Some(k) => self.prefixes_v4.contains_key(&k),
            None => self.prefixes_v6.contains_key(&prefix),
        }
    }
}

/// Counts one in or out of `map[key]`, removing the entry at zero.
fn count<K: Eq + std::hash::Hash>(map: &Map<K, u32>, key: K, add: bool) {
    if add {
        *map.entry(key).or_insert(0) += 1;
    } else {
        map.remove_if_mut(&key, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// An IPv4 partial reverse name (1..=3 octets, at most 24 bits) as one
/// word: the octet count above the octets; `None` for IPv6.
fn v4_prefix_key((digits, prefix): (u8, u128)) -> Option<u32> {
    (digits <= 3).then(|| (u32::from(digits) << 24) | prefix as u32)
}

/// The partial reverse names above an address, as (digits, masked address):
/// IPv4 by 1..=3 octets (digits 1..=3), IPv6 by 1..=31 nibbles (digits
/// 101..=131), the address kept to those leading digits.
pub(crate) fn reverse_prefixes(ip: IpAddr) -> impl Iterator<Item = (u8, u128)> {
    let (v, bits, step, tag, n) = match ip {
        IpAddr::V4(a) => (u32::from(a) as u128, 32u32, 8u32, 0u8, 3u8),
        IpAddr::V6(a) => (u128::from(a), 128, 4, 100, 31),
    };
    (1..=n).map(move |k| {
        let keep = k as u32 * step;
        (tag + k, v >> (bits - keep))
    })
}
