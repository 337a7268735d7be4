//! Checking a parsed [`Config`]: every section says what is wrong with it,
//! one line per problem, without touching the disk or the network (a
//! resolv.conf named in the config is read when the forwarder is built).

use super::{
    AdminConfig, Config, DnsConfig, ForwardConfig, MAX_HISTORY_ADDRESSES, MAX_HISTORY_CHANGES,
    MAX_HISTORY_NAMES, RequireToken, SimConfig, SourceConfig, TSIG_ALGORITHMS, TransferConfig,
    Upstream, parse_cidr, selector,
};
use crate::error::{Error, Result};

impl Config {
    /// Checks every value; the error lists all problems, one per line.
    pub fn validate(&self) -> Result<()> {
        let problems: Vec<String> = [
            self.dns.problems(),
            self.forward.problems(),
            self.source.problems(),
            self.follower_problems(),
            self.sim.problems(),
            self.admin.problems(),
            self.transfer.problems(),
        ]
        .concat();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(problems.join("\n  ")))
        }
    }
}

impl Config {
    /// What is wrong with the transfer source's settings.
    fn follower_problems(&self) -> Vec<String> {
        let s = &self.source;
        let mut problems = Vec::new();
        if s.kind == super::SourceKind::Transfer && s.primary.is_none() {
            problems.push(
                "source.primary: the transfer source needs the primary's address:port \
                 (also --primary, HEADLESS_DNS_PRIMARY)"
                    .into(),
            );
        }
        let known = |n: &str| self.transfer.tsig.iter().any(|k| k.name == n);
        if let Some(n) = s.primary_key.as_deref().filter(|n| !known(n)) {
            problems.push(format!(
                "source.primary_key: no [[transfer.tsig]] named {n:?}"
            ));
        }
        if let Some(z) = s.primary_zone.as_deref()
            && self.namespace_of_zone(z).is_none()
            && !same_zone(z, &self.dns.zone)
        {
            problems.push(format!(
                "source.primary_zone: {z:?} is neither dns.zone ({:?}) nor a namespace's \
                 zone <namespace>.svc.{} (also --primary-zone, HEADLESS_DNS_PRIMARY_ZONE)",
                self.dns.zone,
                self.dns.zone.trim_end_matches('.')
            ));
        }
        for (key, v) in [("refresh_ms", s.refresh_ms), ("expire_ms", s.expire_ms)] {
            if v == Some(0) {
                problems.push(format!("source.{key}: must be at least 1"));
            }
        }
        problems
    }
}

impl Config {
    /// The namespace whose transfer zone `zone` (`<ns>.svc.<dns.zone>`,
    /// any case, trailing dot or not) is; `None` for any other name.
    pub fn namespace_of_zone(&self, zone: &str) -> Option<String> {
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        let cluster = self.dns.zone.trim_end_matches('.').to_ascii_lowercase();
        let ns = zone.strip_suffix(&format!(".svc.{cluster}"))?;
        is_namespace(ns).then(|| ns.to_string())
    }
}

/// Whether two zone names are the same (case and trailing dot aside).
fn same_zone(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// A Kubernetes namespace name: a DNS-1123 label (lower-case letters,
/// digits and '-', 1-63 long, starting and ending with a letter or digit).
pub(crate) fn is_namespace(n: &str) -> bool {
    let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = n.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|&c| ok(c) || c == b'-')
        && ok(b[0])
        && ok(b[b.len() - 1])
}

impl DnsConfig {
    /// What is wrong with `[dns]`.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.listen.is_empty() {
            problems.push("dns.listen: at least one address is needed".to_string());
        }
        for (key, z) in std::iter::once(("dns.zone", &self.zone))
            .chain(self.reverse_zones.iter().map(|z| ("dns.reverse_zones", z)))
        {
            if let Err(e) = check_zone(z) {
                problems.push(format!("{key}: {z:?} {e}"));
            }
        }
        for z in &self.reverse_zones {
            let z = z.trim_end_matches('.').to_ascii_lowercase();
            if !(z.ends_with("in-addr.arpa") || z.ends_with("ip6.arpa")) {
                problems.push(format!(
                    "dns.reverse_zones: {z:?} is not under in-addr.arpa or ip6.arpa"
                ));
            }
        }
        for (key, value) in [("ttl", self.ttl), ("negative_ttl", self.negative_ttl)] {
            if value > 3600 {
                problems.push(format!("dns.{key}: {value} is above 3600"));
            }
        }
        if self.pending_negative_ttl > self.negative_ttl {
            problems.push(format!(
                "dns.pending_negative_ttl: {} is above dns.negative_ttl ({})",
                self.pending_negative_ttl, self.negative_ttl
            ));
        }
        if self.max_udp_payload < 512 {
            problems.push(format!(
                "dns.max_udp_payload: {} is below 512",
                self.max_udp_payload
            ));
        }
        if self.tcp_max_connections == 0 {
            problems.push("dns.tcp_max_connections: must be at least 1".into());
        }
        if self.tcp_idle_timeout_ms == 0 {
            problems.push("dns.tcp_idle_timeout_ms: must be at least 1".into());
        }
        if let Some(p) = &self.handover_socket {
            // A Unix socket path is at most 107 bytes (sun_path), and the new
            // instance binds `<path>.<pid>` beside it first. Checked for
            // shape only: the directory is looked at when the socket is bound.
            let len = p.as_os_str().len();
            if len == 0 || len > 90 || p.as_os_str().as_encoded_bytes().ends_with(b"/") {
                problems.push(format!(
                    "dns.handover_socket: \"{}\" is not a socket path (empty, a directory, \
                     or longer than 90 bytes)",
                    p.display()
                ));
            }
        }
        problems.extend(self.autopath_problems());
        problems
    }

    /// What is wrong with `dns.autopath_search` (checked with autopath off
    /// too, so turning it on cannot meet a broken list).
    fn autopath_problems(&self) -> Vec<String> {
        const KEY: &str = "dns.autopath_search";
        let list = &self.autopath_search;
        let mut problems = Vec::new();
        if list.is_empty() || list.len() > MAX_AUTOPATH_SEARCH {
            problems.push(format!(
                "{KEY}: {} entries; 1 to {MAX_AUTOPATH_SEARCH} are needed \
                 (default: {{ns}}.svc.{{zone}}, svc.{{zone}}, {{zone}})",
                list.len()
            ));
            return problems;
        }
        if check_zone(&self.zone).is_err() {
            return problems; // dns.zone's own problem says it; {zone} means nothing yet
        }
        let zone = self.zone.trim_end_matches('.').to_ascii_lowercase();
        for (i, entry) in list.iter().enumerate() {
            let e = entry.trim_end_matches('.').to_ascii_lowercase();
            let rest = match e.strip_prefix("{ns}.") {
                Some(rest) if i == 0 => rest.to_string(),
                _ if i == 0 => {
                    problems.push(format!(
                        "{KEY}: the first entry {entry:?} must start with \"{{ns}}.\" \
                         (the pod's own namespace, as in {{ns}}.svc.{{zone}})"
                    ));
                    continue;
                }
                _ => e.clone(),
            };
            let name = rest.replace("{zone}", &zone);
            if name.contains("{ns}") {
                problems.push(format!(
                    "{KEY}: {entry:?}: {{ns}} may only begin the first entry"
                ));
            } else if let Err(why) = check_zone(&name) {
                problems.push(format!("{KEY}: {entry:?} {why}"));
            } else if i == 0 && !(name == zone || name.ends_with(&format!(".{zone}"))) {
                problems.push(format!(
                    "{KEY}: the first entry {entry:?} must lie in dns.zone ({zone:?})"
                ));
            }
        }
        problems
    }
}

/// The longest `forward.stale_max_s`: RFC 8767 §5 caps stale answers at 7 days.
const MAX_STALE_S: u64 = 7 * 24 * 3600;

/// Search domains `dns.autopath_search` holds at most (glibc before 2.26
/// read 6; 16 leaves room).
const MAX_AUTOPATH_SEARCH: usize = 16;

impl ForwardConfig {
    /// What is wrong with `[forward]`.
    fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .upstreams
            .iter()
            .filter_map(|u| Upstream::parse(u).err())
            .map(|e| e.to_string())
            .collect();
        if self.timeout_ms == 0 || self.max_inflight == 0 {
            problems.push("forward.timeout_ms and forward.max_inflight must be at least 1".into());
        }
        if self.stale_max_s > MAX_STALE_S {
            problems.push(format!(
                "forward.stale_max_s: {} is more than 7 days ({MAX_STALE_S} s), \
                 the most RFC 8767 allows",
                self.stale_max_s
            ));
        }
        if self.stale_ttl_s == 0 || self.stale_ttl_s > 3600 {
            problems.push(format!(
                "forward.stale_ttl_s: {} is not within 1..=3600 seconds",
                self.stale_ttl_s
            ));
        }
        problems
    }
}

impl SourceConfig {
    /// What is wrong with `[source]`.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, sel) in [
            ("source.selector", &self.selector),
            ("source.service_selector", &self.service_selector),
        ] {
            if let Some(p) = sel.as_deref().and_then(selector::problem) {
                problems.push(format!("{key}: not a label selector: {p}"));
            }
        }
        if self.poll_interval_ms == 0 {
            problems.push("source.poll_interval_ms: must be at least 1".into());
        }
        if self.reload_sync_timeout_ms == 0 {
            problems.push("source.reload_sync_timeout_ms: must be at least 1".into());
        }
        problems
    }
}

impl SimConfig {
    /// What is wrong with `[sim]`.
    fn problems(&self) -> Vec<String> {
        match parse_cidr(&self.pod_cidr) {
            Some(_) => Vec::new(),
            None => vec![format!(
                "sim.pod_cidr: {:?} is not an IPv4 CIDR with room for pods",
                self.pod_cidr
            )],
        }
    }
}

impl AdminConfig {
    /// What is wrong with the history bounds and the token settings.
    fn problems(&self) -> Vec<String> {
        let token = match (self.require_token, &self.token_file) {
            (RequireToken::Always, None) => Some(
                "admin.require_token: \"always\" needs admin.token_file (the token to ask for)",
            ),
            (RequireToken::Never, Some(_)) => {
                Some("admin.token_file: set, but admin.require_token = \"never\" never asks for it")
            }
            _ => None,
        };
        let history = [
            (
                "history_addresses",
                self.history_addresses,
                MAX_HISTORY_ADDRESSES,
            ),
            ("history_names", self.history_names, MAX_HISTORY_NAMES),
            ("history_changes", self.history_changes, MAX_HISTORY_CHANGES),
        ]
        .into_iter()
        .filter(|(_, value, max)| value > max)
        .map(|(name, value, max)| format!("admin.{name}: {value} is above {max}"));
        history.chain(token.map(String::from)).collect()
    }
}

impl TransferConfig {
    /// What is wrong with `[transfer]`, one line per problem.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = std::collections::HashSet::new();
        for k in &self.tsig {
            if let Some(bad) = k.namespaces.iter().find(|n| !is_namespace(n)) {
                problems.push(format!(
                    "transfer.tsig: key {:?}: namespaces: {bad:?} is not a namespace name \
                     (a DNS-1123 label)",
                    k.name
                ));
            }
            if k.key_file.is_some() && k.secret.is_empty() {
                // Not read yet (`Config::read_key_files`): checked once it is.
                continue;
            }
            if !names.insert(k.name.trim_end_matches('.').to_ascii_lowercase()) {
                problems.push(format!("transfer.tsig: key {:?} is defined twice", k.name));
            }
            if check_zone(&k.name).is_err() {
                problems.push(format!("transfer.tsig: {:?} is not a key name", k.name));
            }
            if !TSIG_ALGORITHMS.contains(&k.algorithm.as_str()) {
                problems.push(format!(
                    "transfer.tsig: key {:?}: algorithm {:?} is not one of {TSIG_ALGORITHMS:?}",
                    k.name, k.algorithm
                ));
            }
            match data_encoding::BASE64.decode(k.secret.trim().as_bytes()) {
                Ok(s) if !s.is_empty() => {}
                _ => problems.push(format!(
                    "transfer.tsig: key {:?}: the secret is not base64 (set secret, or key_file)",
                    k.name
                )),
            }
        }
        let known = |n: &str| self.tsig.iter().any(|k| k.name == n);
        if let Some(n) = self.notify_key.as_deref().filter(|n| !known(n)) {
            problems.push(format!(
                "transfer.notify_key: no [[transfer.tsig]] named {n:?}"
            ));
        }
        if self.require_tsig && self.tsig.is_empty() {
            problems.push("transfer.require_tsig: no [[transfer.tsig]] key is defined".into());
        }
        if self.journal_max_changes == 0 || self.max_concurrent == 0 {
            problems.push(
                "transfer.journal_max_changes and transfer.max_concurrent must be at least 1"
                    .into(),
            );
        }
        problems
    }
}

fn check_zone(z: &str) -> std::result::Result<(), &'static str> {
    let z = z.trim_end_matches('.');
    if z.is_empty() {
        return Err("is empty");
    }
    if z.len() > 200 {
        return Err("is too long");
    }
    for label in z.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("has an empty or over-long label");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("has characters outside letters, digits, '-' and '_'");
        }
    }
    Ok(())
}
