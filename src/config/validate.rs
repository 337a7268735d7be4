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
        for (key, v) in [("refresh_ms", s.refresh_ms), ("expire_ms", s.expire_ms)] {
            if v == Some(0) {
                problems.push(format!("source.{key}: must be at least 1"));
            }
        }
        problems
    }
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
        problems
    }
}

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
                    "transfer.tsig: key {:?}: the secret is not base64 (set secret, or secret_file)",
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
