//! Configuration: built-in defaults < TOML file < `HEADLESS_DNS_*` env < flags.
//!
//! The file is `config/headless-dns.toml`-shaped (every key there, with its
//! default); unknown keys are errors so a typo cannot silently do nothing.
//! [`Config::validate`] reports every problem at once, naming the key, and
//! reads no file: what a value names (a resolv.conf) is read where it is used.
//!
//! A leaf: the setting types live here (the modes of `[dns]` too), so no part
//! of the server is needed to load or check a configuration.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

mod selector;
mod validate;
pub(crate) use validate::is_namespace;

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// DNS serving.
    pub dns: DnsConfig,
    /// Where objects come from.
    pub source: SourceConfig,
    /// The admin HTTP listener.
    pub admin: AdminConfig,
    /// The StatefulSet simulator (file source only).
    pub sim: SimConfig,
    /// Logging.
    pub log: LogConfig,
    /// Forwarding of names outside our zones.
    pub forward: ForwardConfig,
    /// Zone transfers to secondaries (AXFR, IXFR, NOTIFY, TSIG).
    pub transfer: TransferConfig,
}

/// `[transfer]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TransferConfig {
    /// Client networks that may transfer our zones; empty = transfers off (REFUSED).
    pub allow: Vec<Cidr>,
    /// Secondaries sent a NOTIFY (RFC 1996) when a zone changes.
    pub notify: Vec<SocketAddr>,
    /// The `[[transfer.tsig]]` key NOTIFYs are signed with; unset = unsigned.
    pub notify_key: Option<String>,
    /// Transfers must be signed with one of the `tsig` keys.
    pub require_tsig: bool,
    /// TSIG keys (RFC 8945) transfers and signed queries may use.
    pub tsig: Vec<TsigKeyConfig>,
    /// Changes the IXFR journal keeps at most.
    pub journal_max_changes: usize,
    /// Bytes of records the IXFR journal keeps at most, KiB.
    pub journal_max_kb: usize,
    /// Transfers served at once; more are REFUSED.
    pub max_concurrent: usize,
    /// A file keeping the SOA serial increasing across restarts; unset = the clock only.
    pub serial_file: Option<PathBuf>,
    /// Followers NOTIFYed without being listed in `notify`: clients that
    /// checked a zone's serial by IXFR over UDP within the zone's expire,
    /// remembered by (address, port, zone, key), the oldest forgotten past
    /// this many; 0 = none (only `notify` is told).
    pub notify_followers_max: usize,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            notify: Vec::new(),
            notify_key: None,
            require_tsig: false,
            tsig: Vec::new(),
            journal_max_changes: 1000,
            journal_max_kb: 16 * 1024,
            max_concurrent: 16,
            serial_file: None,
            notify_followers_max: 1024,
        }
    }
}

/// `[[transfer.tsig]]`: one shared secret.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TsigKeyConfig {
    /// The key's name, as both sides spell it (`xfr-key`); from `key_file`
    /// when that is set.
    #[serde(default)]
    pub name: String,
    /// `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    #[serde(default = "default_tsig_algorithm")]
    pub algorithm: String,
    /// The secret, base64; from `key_file` when that is set.
    #[serde(default)]
    pub secret: String,
    /// A key file as `tsig-keygen` writes it (`key "name" { algorithm ..;
    /// secret ".."; };`), e.g. a mounted Secret: name, algorithm and secret
    /// come from it, read at start and on every reload.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Namespaces whose zones (`<ns>.svc.<zone>`) alone this key may
    /// transfer, so that a tenant's follower reads its namespace only; empty
    /// = every zone (the cluster zone, the reverse zones, every namespace).
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// (name, algorithm, secret) of the key file at `path`; errors start with `key`.
fn read_key_file(path: &Path, key: &str) -> Result<(String, String, String)> {
    let named = |e: String| Error::Config(format!("{key}: {}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| named(e.to_string()))?;
    parse_key_file(&text).map_err(named)
}

/// A key as `tsig-keygen` (BIND) writes it:
/// `key "name" { algorithm hmac-sha256; secret "base64"; };` (comments with
/// `#` or `//` allowed) as (name, algorithm, secret).
fn parse_key_file(text: &str) -> std::result::Result<(String, String, String), String> {
    let text: String = text
        .lines()
        .map(|l| l.split(['#']).next().unwrap_or(""))
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut tokens = text
        .split(|c: char| c.is_whitespace() || matches!(c, ';' | '{' | '}'))
        .filter(|t| !t.is_empty())
        .map(|t| t.trim_matches('"'));
    let shape = "not a key file (key \"name\" { algorithm ..; secret \"..\"; };)";
    if tokens.next() != Some("key") {
        return Err(shape.into());
    }
    let name = tokens
        .next()
        .ok_or(shape)?
        .trim_end_matches('.')
        .to_string();
    let (mut algorithm, mut secret) = (None, None);
    while let Some(t) = tokens.next() {
        match t {
            "algorithm" => algorithm = tokens.next(),
            "secret" => secret = tokens.next(),
            _ => return Err(format!("{shape}: unexpected {t:?}")),
        }
    }
    match (algorithm, secret) {
        (Some(a), Some(s)) => Ok((name, a.to_ascii_lowercase(), s.to_string())),
        _ => Err(format!("{shape}: no algorithm or secret")),
    }
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".into()
}

/// TSIG algorithms we sign and verify with.
pub const TSIG_ALGORITHMS: [&str; 3] = ["hmac-sha256", "hmac-sha384", "hmac-sha512"];

/// A client network: `10.0.0.0/8`, `::1/128`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(pub ipnet::IpNet);

impl Cidr {
    /// True when `ip` is inside (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map(|n| Cidr(n.trunc()))
            .map_err(|_| format!("{s:?} is not an address or CIDR"))
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `[forward]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// Upstream resolvers: `IP`, `IP:port`, or `/etc/resolv.conf`; empty = forwarding off (REFUSED).
    pub upstreams: Vec<String>,
    /// Upstream timeout, milliseconds.
    pub timeout_ms: u64,
    /// Forwarded answers cached at most.
    pub cache_size: u64,
    /// Forwarded queries in flight at most; UDP queries beyond the queue get SERVFAIL.
    pub max_inflight: usize,
    /// Serve-stale (RFC 8767): when every upstream fails, answer from the
    /// last good answer if it expired at most this many seconds ago; 0 = off.
    /// A node-local cache is its pods' only resolver: an upstream outage
    /// should not become theirs for names they already resolved.
    pub stale_max_s: u64,
    /// TTL of a stale answer, seconds (RFC 8767 suggests 30): short, so
    /// clients come back soon and get the fresh answer once upstream is back.
    pub stale_ttl_s: u32,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            timeout_ms: 1500,
            cache_size: 10_000,
            max_inflight: 1024,
            stale_max_s: 0,
            stale_ttl_s: 30,
        }
    }
}

/// `[dns]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// UDP and TCP listen addresses.
    pub listen: Vec<SocketAddr>,
    /// The cluster domain.
    pub zone: String,
    /// Reverse zones served (PTR).
    pub reverse_zones: Vec<String>,
    /// TTL of positive answers, seconds (0..=3600).
    pub ttl: u32,
    /// Negative TTL (SOA minimum), seconds.
    pub negative_ttl: u32,
    /// Negative TTL for a StatefulSet pod that is about to exist, seconds.
    pub pending_negative_ttl: u32,
    /// `pods` records: disabled, insecure, verified.
    pub pods: PodsMode,
    /// Name endpoints without hostname by pod name instead of dashed IP.
    pub endpoint_pod_names: bool,
    /// ANY queries: hinfo (RFC 8482) or refuse.
    pub any: AnyMode,
    /// Largest UDP response (and the size advertised in EDNS).
    pub max_udp_payload: u16,
    /// UDP sockets (threads) per listen address; 0 = one per CPU (one on
    /// the transfer source: `Config::udp_threads`).
    pub threads: usize,
    /// Receive buffer asked for each UDP socket, KiB; 0 = the OS default.
    /// Small on purpose: under overload a long queue only answers queries
    /// whose clients have given up, a short one sheds the excess at once.
    pub udp_receive_buffer_kb: usize,
    /// Addresses of `ns.dns.<zone>`; empty = the specific listen addresses.
    pub nameserver_ips: Vec<IpAddr>,
    /// TCP connections open at most; at the bound a new client takes the
    /// place of the least recently active connection.
    pub tcp_max_connections: usize,
    /// TCP idle timeout, milliseconds.
    pub tcp_idle_timeout_ms: u64,
    /// A Unix socket through which a restart hands the listening sockets
    /// from the running instance to the new one (`crate::handover`), so no
    /// query is lost; unset = off (a restart binds anew).
    pub handover_socket: Option<PathBuf>,
    /// UDP response-rate limit per client network (IPv4 /24, IPv6 /56),
    /// responses per second with a one-second burst; 0 = off (the default).
    pub rrl_responses_per_second: u32,
    /// With the rate limit on, every `rrl_slip`-th response over it is sent
    /// truncated (TC) instead of dropped, so that a real client retries over
    /// TCP; 0 = drop them all, 1 = truncate them all.
    pub rrl_slip: u32,
    /// Autopath: when the first search expansion of a pod's lookup
    /// (`X.<ns>.svc.<zone>`) does not exist and comes from a client of
    /// namespace `<ns>`, walk the rest of `autopath_search` (then `X`
    /// itself) here and answer the first name that exists, behind a CNAME,
    /// so the pod's stub stops after one round trip instead of walking the
    /// list. Off by default: it needs the client's namespace (a sidecar's
    /// own, or the index's endpoint or pod with the client's address).
    pub autopath: bool,
    /// The pods' search list autopath walks, in the pods' order. `{ns}`
    /// stands for the client's namespace (only as the first label of the
    /// first entry, which must lie in `zone`), `{zone}` for `zone`. Default:
    /// what Kubernetes writes, `{ns}.svc.{zone}`, `svc.{zone}`, `{zone}`;
    /// add the node's extra search domains after them.
    pub autopath_search: Vec<String>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5353))],
            zone: "cluster.local".into(),
            reverse_zones: vec!["in-addr.arpa".into(), "ip6.arpa".into()],
            ttl: 5,
            negative_ttl: 5,
            pending_negative_ttl: 1,
            pods: PodsMode::Disabled,
            endpoint_pod_names: false,
            any: AnyMode::Hinfo,
            max_udp_payload: 1232,
            threads: 0,
            udp_receive_buffer_kb: 256,
            nameserver_ips: Vec::new(),
            tcp_max_connections: 1024,
            tcp_idle_timeout_ms: 10_000,
            handover_socket: None,
            rrl_responses_per_second: 0,
            rrl_slip: 2,
            autopath: false,
            autopath_search: default_autopath_search(),
        }
    }
}

/// The search list Kubernetes writes into a pod's resolv.conf, as
/// `autopath_search` spells it.
pub fn default_autopath_search() -> Vec<String> {
    ["{ns}.svc.{zone}", "svc.{zone}", "{zone}"]
        .map(String::from)
        .to_vec()
}

/// How `pods` records (`1-2-3-4.<ns>.pod.<zone>`) are answered, as in CoreDNS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PodsMode {
    /// Never: NXDOMAIN.
    Disabled,
    /// Echo the address in the name without checking.
    Insecure,
    /// Only if a pod with that address exists in that namespace.
    Verified,
}

/// How ANY queries are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnyMode {
    /// RFC 8482 §4.2: one synthesized HINFO record.
    Hinfo,
    /// REFUSED.
    Refuse,
}

/// What the answerer needs: the `[dns]` section with its zone normalized
/// (lower case, no trailing dot) and `nameserver_ips` filled in, and whether
/// names outside our zones are forwarded.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    /// The `[dns]` section, normalized.
    pub dns: DnsConfig,
    /// Names outside our zones are forwarded (else REFUSED).
    pub forward: bool,
    /// The namespace of the server's own clients, if the configuration
    /// says it (see [`Config::own_namespace`]): autopath takes it as the
    /// namespace of loopback clients.
    pub own_namespace: Option<String>,
}

/// One `forward.upstreams` entry, checked for syntax only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// `IP` (port 53) or `IP:port`.
    Address(SocketAddr),
    /// A resolv.conf whose `nameserver` lines are the upstreams, read when the
    /// forwarder is built.
    ResolvConf(PathBuf),
}

impl Upstream {
    /// Parses one entry: an absolute path is a resolv.conf.
    pub fn parse(entry: &str) -> Result<Self> {
        if entry.starts_with('/') {
            Ok(Self::ResolvConf(entry.into()))
        } else if let Ok(sa) = entry.parse::<SocketAddr>() {
            Ok(Self::Address(sa))
        } else if let Ok(ip) = entry.parse::<IpAddr>() {
            Ok(Self::Address(SocketAddr::new(ip, 53)))
        } else {
            Err(Error::Config(format!(
                "forward.upstreams: {entry:?} is not an address or a resolv.conf path"
            )))
        }
    }
}

/// Parses `a.b.c.d/len` (len 8..=28) into (first address, number of addresses).
pub fn parse_cidr(s: &str) -> Option<(u32, u32)> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    if !(8..=28).contains(&len) {
        return None;
    }
    let size = 1u32 << (32 - len);
    let base = u32::from(ip) & !(size - 1);
    Some((base, size))
}

/// Which source feeds the index.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Manifest files (or the embedded demo).
    #[default]
    File,
    /// A Kubernetes API server.
    Kubernetes,
    /// Zone transfers from another DNS server (`primary`): a secondary.
    Transfer,
}

impl std::str::FromStr for SourceKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "file" => Ok(Self::File),
            "kubernetes" => Ok(Self::Kubernetes),
            "transfer" => Ok(Self::Transfer),
            _ => Err(format!(
                "{s:?} is not a source (file, kubernetes, transfer)"
            )),
        }
    }
}

/// `[source]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// file, kubernetes or transfer.
    pub kind: SourceKind,
    /// Manifest files (file source); empty = the embedded demo.
    pub manifests: Vec<PathBuf>,
    /// How often manifest files are checked for changes, milliseconds.
    pub poll_interval_ms: u64,
    /// On a reload, how long the new configuration's sources may take to
    /// complete their first sync, milliseconds; past it the reload fails
    /// and the running configuration keeps serving.
    pub reload_sync_timeout_ms: u64,
    /// Kubeconfig file (kubernetes source); unset = in-cluster or `KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    pub context: Option<String>,
    /// Namespaces to watch; empty = all. When set, every API request is
    /// made inside them (a namespaced Role suffices) and they are taken as
    /// existing (no Namespace watch).
    pub namespaces: Vec<String>,
    /// Label selector (Kubernetes syntax) for Services only; see `selector`.
    pub service_selector: Option<String>,
    /// Label selector (Kubernetes syntax) sent with every list and watch:
    /// Services and their EndpointSlices (which carry their Service's
    /// labels), StatefulSets and Pods on their own labels.
    pub selector: Option<String>,
    /// Transfer source: the primary (address:port) whose cluster zone we follow.
    pub primary: Option<SocketAddr>,
    /// Transfer source: the zone followed: the cluster zone (unset), or one
    /// namespace's transfer zone `<ns>.svc.<zone>` (its names only).
    pub primary_zone: Option<String>,
    /// Transfer source: the `[[transfer.tsig]]` key requests to the primary
    /// (and its NOTIFYs) are signed with; unset = unsigned.
    pub primary_key: Option<String>,
    /// Transfer source: a key file as `tsig-keygen` writes it (a mounted
    /// Secret): requests are signed with that key (and NOTIFYs must be),
    /// instead of naming a `[[transfer.tsig]]` key in `primary_key`.
    pub primary_key_file: Option<PathBuf>,
    /// Transfer source: check the primary's serial this often, milliseconds,
    /// instead of the SOA's refresh (and retry) timers; unset = the SOA's.
    pub refresh_ms: Option<u64>,
    /// Transfer source: with the primary unreachable this long, milliseconds,
    /// names get SERVFAIL; unset = the SOA's expire.
    pub expire_ms: Option<u64>,
    /// Transfer source: keep answering from the last good zone past the
    /// expire (instead of SERVFAIL).
    pub serve_expired: bool,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            kind: SourceKind::File,
            manifests: Vec::new(),
            poll_interval_ms: 250,
            reload_sync_timeout_ms: 30_000,
            kubeconfig: None,
            context: None,
            namespaces: Vec::new(),
            service_selector: None,
            selector: None,
            primary: None,
            primary_zone: None,
            primary_key: None,
            primary_key_file: None,
            refresh_ms: None,
            expire_ms: None,
            serve_expired: false,
        }
    }
}

/// `[admin]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The admin HTTP address; unset (`""` in env) = no admin listener.
    pub listen: Option<SocketAddr>,
    /// On SIGTERM, how long `/ready` answers 503 before the server stops, milliseconds.
    pub lameduck_ms: u64,
    /// Record browser: previous addresses (and readiness states) kept per name.
    pub history_addresses: usize,
    /// Record browser: names with a past kept, across all services (those
    /// changed longest ago are forgotten first).
    pub history_names: usize,
    /// Record browser: index changes kept in the timeline.
    pub history_changes: usize,
    /// A file holding the bearer token that `/records`, the page and
    /// `/sim` ask for (see `require_token`); unset = no token.
    pub token_file: Option<PathBuf>,
    /// Which clients `/records`, the page and `/sim` ask for the token.
    pub require_token: RequireToken,
    /// The token `token_file` held when the configuration was loaded
    /// ([`Config::read_admin_token`]): part of the configuration, so that
    /// a reload notices a rotated token. Never in the file itself.
    #[serde(skip)]
    pub token: Option<AdminToken>,
}

/// Which clients of the admin listener must show `[admin] token_file`'s
/// token for what DNS would not tell them (`/records`, the page, `/sim`).
/// `/health`, `/ready` and `/metrics` never ask: the kubelet and Prometheus
/// reach them. Clients are told apart by the connection's peer address.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RequireToken {
    /// Loopback clients need none; every other one needs the token (and is
    /// refused outright when there is no `token_file`).
    #[default]
    BeyondLoopback,
    /// Every client needs it, loopback ones too (another container of the
    /// pod, or a process on a host-network node, shares loopback).
    Always,
    /// No client needs it: whoever reaches the listener reads every name and
    /// address and drives the simulator. The explicit opt-in to an open door.
    Never,
}

/// The admin bearer token, read from `[admin] token_file`: what a request's
/// `Authorization: Bearer` is compared with, in constant time. Its `Debug`
/// does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Box<[u8]>);

/// Shorter tokens are refused: a guessable token is no door at all.
pub const MIN_TOKEN_LEN: usize = 16;

impl AdminToken {
    /// The token in `text` (surrounding whitespace, such as the newline a
    /// file ends with, is not part of it).
    pub fn parse(text: &[u8]) -> std::result::Result<Self, String> {
        let token = text.trim_ascii();
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the token is {} bytes; at least {MIN_TOKEN_LEN} are needed",
                token.len()
            ));
        }
        if !token.iter().all(|b| b.is_ascii_graphic()) {
            return Err("the token has characters other than printable ASCII".into());
        }
        Ok(Self(token.into()))
    }

    /// The token's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Upper bounds of the `[admin] history_*` settings: what keeps a typo from
/// holding gigabytes of history.
pub const MAX_HISTORY_ADDRESSES: usize = 100;
/// See [`MAX_HISTORY_ADDRESSES`].
pub const MAX_HISTORY_CHANGES: usize = 100_000;
/// See [`MAX_HISTORY_ADDRESSES`].
pub const MAX_HISTORY_NAMES: usize = 1_000_000;

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            lameduck_ms: 0,
            history_addresses: 5,
            history_names: 2_000,
            history_changes: 200,
            token_file: None,
            require_token: RequireToken::BeyondLoopback,
            token: None,
        }
    }
}

/// `[sim]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Simulate StatefulSets that have no pods of their own in the manifests.
    pub enabled: bool,
    /// How long a new pod takes to become ready, milliseconds.
    pub ready_delay_ms: u64,
    /// The CIDR pod IPs are drawn from.
    pub pod_cidr: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ready_delay_ms: 2000,
            pod_cidr: "10.244.0.0/16".into(),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// text or json.
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter; `RUST_LOG` itself wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Config {
    /// Reads a TOML file; errors name the file, line and key.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> std::result::Result<Self, String> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(l) => format!("line {l}: {}", e.message()),
                None => e.message().to_string(),
            }
        })
    }

    /// Reads `[admin] token_file` into `admin.token` (clears it without
    /// one): at start and at every reload, so a rotated token is noticed.
    pub fn read_admin_token(&mut self) -> Result<()> {
        self.admin.token = match &self.admin.token_file {
            None => None,
            Some(path) => {
                let named =
                    |e: String| Error::Config(format!("admin.token_file: {}: {e}", path.display()));
                let text = std::fs::read(path).map_err(|e| named(e.to_string()))?;
                Some(AdminToken::parse(&text).map_err(named)?)
            }
        };
        Ok(())
    }

    /// Reads the TSIG key files (`[[transfer.tsig]] key_file`,
    /// `source.primary_key_file`) into the keys they define; the latter's
    /// key is added to `transfer.tsig` (once) and named by `primary_key`.
    pub fn read_key_files(&mut self) -> Result<()> {
        for k in &mut self.transfer.tsig {
            if let Some(path) = &k.key_file {
                let (name, algorithm, secret) = read_key_file(path, "transfer.tsig: key_file")?;
                if !k.name.is_empty() && k.name.trim_end_matches('.') != name {
                    return Err(Error::Config(format!(
                        "transfer.tsig: key {:?}: {} defines key {name:?}",
                        k.name,
                        path.display()
                    )));
                }
                (k.name, k.algorithm, k.secret) = (name, algorithm, secret);
            }
        }
        if let Some(path) = &self.source.primary_key_file {
            let (name, algorithm, secret) = read_key_file(path, "source.primary_key_file")?;
            match self.transfer.tsig.iter_mut().find(|k| k.name == name) {
                Some(k) => (k.algorithm, k.secret) = (algorithm, secret),
                None => self.transfer.tsig.push(TsigKeyConfig {
                    name: name.clone(),
                    algorithm,
                    secret,
                    key_file: None,
                    namespaces: Vec::new(),
                }),
            }
            self.source.primary_key = Some(name);
        }
        Ok(())
    }

    /// Whether a key file has not been read into its key yet.
    pub(crate) fn key_files_unread(&self) -> bool {
        let key = self
            .transfer
            .tsig
            .iter()
            .any(|k| k.key_file.is_some() && k.secret.is_empty());
        key || (self.source.primary_key_file.is_some() && self.source.primary_key.is_none())
    }

    /// The answerer's settings.
    pub fn dns_settings(&self) -> DnsSettings {
        let d = &self.dns;
        let nameserver_ips = if d.nameserver_ips.is_empty() {
            let mut ips: Vec<IpAddr> = d
                .listen
                .iter()
                .map(SocketAddr::ip)
                .filter(|ip| !ip.is_unspecified())
                .collect();
            ips.dedup();
            ips
        } else {
            d.nameserver_ips.clone()
        };
        DnsSettings {
            dns: DnsConfig {
                zone: d.zone.trim_end_matches('.').to_ascii_lowercase(),
                nameserver_ips,
                ..d.clone()
            },
            forward: !self.forward.upstreams.is_empty(),
            own_namespace: self.own_namespace(),
        }
    }

    /// The namespace the server's own clients are in, when the configuration
    /// says so: a sidecar's one `[source] namespaces` entry (its pod's
    /// namespace, `--namespaces $(POD_NAMESPACE)`). Autopath takes it for
    /// clients on loopback only, the pod's own containers: a server scoped to
    /// one namespace but reached from other pods cannot tell them apart by it.
    /// A follower of one namespace's zone (`[source] primary_zone =
    /// "<ns>.svc.<zone>"`, the zero-credential sidecar) is in that namespace.
    pub fn own_namespace(&self) -> Option<String> {
        if self.source.kind == SourceKind::Transfer
            && let Some(ns) = self
                .source
                .primary_zone
                .as_deref()
                .and_then(|z| self.namespace_of_zone(z))
        {
            return Some(ns);
        }
        match self.source.namespaces.as_slice() {
            [one] if !one.trim().is_empty() => Some(one.trim().to_ascii_lowercase()),
            _ => None,
        }
    }

    /// UDP sockets per listen address: `dns.threads`, where 0 means one
    /// per CPU, but one on the transfer source. A follower is a sidecar's
    /// server (one pod's lookups, ~20 µs of CPU each), and each UDP thread
    /// costs a stack, buffers and a share of the heap: ~60 kB of a
    /// follower's ~1.4 MB (docs/performance.md, "Lean followers").
    /// `threads = N` still gives N.
    pub fn udp_threads(&self) -> usize {
        match (self.dns.threads, self.source.kind) {
            (0, SourceKind::Transfer) => 1,
            (0, _) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            (n, _) => n,
        }
    }

    /// Tokio worker threads: as many as UDP threads (at most 4), but none
    /// on the transfer source, whose runtime is the main thread alone (a
    /// current-thread runtime). A follower's async work is light (its one
    /// transfer task, the admin API, TCP queries; UDP has its own threads),
    /// and a worker costs a thread stack beside the main thread's: with the
    /// main thread alone a follower of the demo zone holds ~25 kB less
    /// anonymous memory than with one worker, and one worker held ~0.2 MB
    /// less than two (`benches/followers.rs`).
    pub fn runtime_workers(&self) -> usize {
        match self.source.kind {
            SourceKind::Transfer => 0,
            _ => self.udp_threads().clamp(1, 4),
        }
    }

    /// The TCP idle timeout.
    pub fn tcp_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.dns.tcp_idle_timeout_ms)
    }

    /// How long a reload to this configuration waits for its first sync.
    pub fn reload_sync_timeout(&self) -> Duration {
        Duration::from_millis(self.source.reload_sync_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/headless-dns.toml");
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c, Config::default());
        c.validate().unwrap();
    }

    #[test]
    fn a_follower_runs_one_udp_thread_and_no_worker_unless_told() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut c = Config::default();
        assert_eq!(c.udp_threads(), cpus);
        assert_eq!(c.runtime_workers(), cpus.clamp(1, 4));
        c.source.kind = SourceKind::Transfer;
        assert_eq!((c.udp_threads(), c.runtime_workers()), (1, 0));
        c.dns.threads = 3;
        assert_eq!((c.udp_threads(), c.runtime_workers()), (3, 0));
        c.source.kind = SourceKind::Kubernetes;
        assert_eq!((c.udp_threads(), c.runtime_workers()), (3, 3));
    }

    #[test]
    fn the_admin_token_settings_are_checked_and_the_token_read() {
        let c = Config::from_toml("[admin]\nrequire_token = \"always\"\n").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("admin.require_token") && e.contains("token_file"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let text = format!("[admin]\nrequire_token = \"never\"\ntoken_file = {file:?}\n");
        let e = Config::from_toml(&text).unwrap().validate().unwrap_err();
        assert!(e.to_string().contains("never asks for it"), "{e}");
        assert!(Config::from_toml("[admin]\nrequire_token = \"loopback\"\n").is_err());

        let mut c = Config::from_toml(&format!("[admin]\ntoken_file = {file:?}\n")).unwrap();
        c.validate().unwrap();
        let e = c.read_admin_token().unwrap_err().to_string();
        assert!(
            e.contains("admin.token_file") && e.contains("token"),
            "missing: {e}"
        );
        std::fs::write(&file, "short\n").unwrap();
        let e = c.read_admin_token().unwrap_err().to_string();
        assert!(e.contains("at least 16"), "{e}");
        std::fs::write(&file, "0123456789abcdef\n").unwrap();
        c.read_admin_token().unwrap();
        let first = c.clone();
        assert_eq!(
            c.admin.token.as_ref().unwrap().as_bytes(),
            b"0123456789abcdef"
        );
        // A rotated token makes a different configuration: a reload starts
        // an engine with it.
        std::fs::write(&file, "fedcba9876543210").unwrap();
        c.read_admin_token().unwrap();
        assert_ne!(c, first);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::from_toml("[dns]\nttl = 5\nzoen = \"x\"\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("zoen"), "{e}");
        let e = Config::from_toml("[dns]\nttl = \"five\"\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let mut c = Config::default();
        c.dns.ttl = 7200;
        c.dns.zone = "bad zone".into();
        c.dns.reverse_zones = vec!["example.com".into()];
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("dns.ttl") && e.contains("dns.zone") && e.contains("dns.reverse_zones"),
            "{e}"
        );
    }

    #[test]
    fn tsig_key_files_as_tsig_keygen_writes_them_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let a = write(
            "a.key",
            "# made by tsig-keygen\nkey \"team-a\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n",
        );
        let mut c = Config::default();
        c.transfer.tsig = vec![TsigKeyConfig {
            name: String::new(),
            algorithm: default_tsig_algorithm(),
            secret: String::new(),
            key_file: Some(a.clone()),
            namespaces: vec!["team-a".into()],
        }];
        c.source.primary_key_file = Some(a.clone());
        // Unread, the key is not judged yet (`check` reads the file alone first).
        c.validate().unwrap();
        assert!(c.key_files_unread());
        c.read_key_files().unwrap();
        assert!(!c.key_files_unread());
        c.read_key_files().unwrap();
        c.validate().unwrap();
        assert_eq!(c.transfer.tsig.len(), 1, "the same key once");
        let k = &c.transfer.tsig[0];
        assert_eq!((k.name.as_str(), k.secret.as_str()), ("team-a", "c2VjcmV0"));
        assert_eq!(c.source.primary_key.as_deref(), Some("team-a"));
        let bad = write("bad.key", "secret \"x\";");
        c.source.primary_key_file = Some(bad);
        let e = c.read_key_files().unwrap_err().to_string();
        assert!(
            e.contains("source.primary_key_file") && e.contains("bad.key"),
            "{e}"
        );
        c.source.primary_key_file = Some(dir.path().join("missing"));
        assert!(c.read_key_files().is_err());
    }

    #[test]
    fn namespace_keys_and_the_followed_zone_are_checked() {
        let text = "[source]\nprimary_zone = \"team-a.svc.cluster.local.\"\n\
                    [[transfer.tsig]]\nname = \"a\"\nsecret = \"c2VjcmV0\"\n\
                    namespaces = [\"team-a\"]\n";
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.transfer.tsig[0].namespaces, ["team-a"]);
        c.validate().unwrap();
        assert_eq!(
            c.namespace_of_zone(c.source.primary_zone.as_deref().unwrap())
                .as_deref(),
            Some("team-a")
        );
        assert_eq!(c.own_namespace(), None, "not a follower: no namespace");
        let mut follower = c.clone();
        follower.source.kind = SourceKind::Transfer;
        assert_eq!(follower.own_namespace().as_deref(), Some("team-a"));
        let mut bad = c.clone();
        bad.transfer.tsig[0].namespaces = vec!["Team_A".into()];
        bad.source.primary_zone = Some("team-a.svc.example.org".into());
        let e = bad.validate().unwrap_err().to_string();
        assert!(
            e.contains("key \"a\": namespaces: \"Team_A\"") && e.contains("source.primary_zone"),
            "{e}"
        );
        // The cluster zone itself is fine; a name below a namespace is not a zone.
        bad.transfer.tsig[0].namespaces.clear();
        bad.source.primary_zone = Some("Cluster.Local".into());
        bad.validate().unwrap();
        bad.source.primary_zone = Some("x.team-a.svc.cluster.local".into());
        assert!(bad.validate().is_err());
    }
}
