//! Logging set-up and the Prometheus metrics: every metric name lives here.
//!
//! Logging: [`init`] runs once, in `main`; library code never installs a
//! subscriber (tests use `try_init` with the test writer).
//!
//! Metrics: the query path counts into lock-free shards (`dns::stats`), the
//! index into atomics (`IndexStats`). On scrape, [`Metrics::render`] publishes
//! those totals through the `metrics` facade into this server's own
//! `metrics-exporter-prometheus` recorder (a local recorder, so several
//! servers in one test process do not mix) and appends the two histograms,
//! which are bucketed where they are measured. Names follow CoreDNS's
//! (`coredns_dns_requests_total` -> `headless_dns_dns_requests_total`) so
//! dashboards translate directly. No label ever holds a query name.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::dns::Answerer;
use crate::dns::forward::ForwardStats;
use crate::dns::handoff::{FOLLOW_TRANSFER_KINDS, REFUSAL_REASONS, TRANSFER_KINDS, TransferTotals};
use crate::dns::stats::{PROTOS, QTYPES, RCODES, RRL_ACTIONS, Totals};
use crate::histogram::BUCKETS_US;
use crate::history::HistoryStats;
use crate::index::{EVENT_TYPES, Index, IndexStats, Kind, MANIFEST_READ_RESULTS};

/// Installs the global subscriber: `RUST_LOG` if set, else the configured level.
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Every metric: (name, type, help). The README's metrics table is this list.
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        "headless_dns_dns_requests_total",
        "counter",
        "DNS requests by proto and query type",
    ),
    (
        "headless_dns_dns_responses_total",
        "counter",
        "DNS responses by proto and rcode",
    ),
    (
        "headless_dns_dns_responses_truncated_total",
        "counter",
        "UDP responses sent with TC set, by proto",
    ),
    (
        "headless_dns_dns_dropped_total",
        "counter",
        "Packets dropped unanswered (shorter than a header, or responses)",
    ),
    (
        "headless_dns_dns_rate_limited_total",
        "counter",
        "UDP responses over the rate limit (RRL), by action: drop, or slip (sent truncated)",
    ),
    (
        "headless_dns_dns_request_duration_seconds",
        "histogram",
        "Time to answer a request (parse to encoded reply), by proto",
    ),
    (
        "headless_dns_index_services",
        "gauge",
        "Services in the index",
    ),
    (
        "headless_dns_index_endpoints",
        "gauge",
        "Endpoints in the index (served or not)",
    ),
    (
        "headless_dns_index_names",
        "gauge",
        "Endpoint names DNS serves",
    ),
    (
        "headless_dns_index_serial",
        "gauge",
        "SOA serial (Unix time of the last change, strictly increasing)",
    ),
    (
        "headless_dns_index_ready",
        "gauge",
        "1 once every source has completed its first sync",
    ),
    (
        "headless_dns_source_events_total",
        "counter",
        "Source events applied, by kind and type (reset = a (re-)list started)",
    ),
    (
        "headless_dns_source_relists_total",
        "counter",
        "Re-lists started per kind after its first list: retries of a failed list, re-lists after 410 Gone",
    ),
    (
        "headless_dns_source_last_sync_age_seconds",
        "gauge",
        "Seconds since each kind last completed a (re-)list (-1: never)",
    ),
    (
        "headless_dns_source_manifest_reads_total",
        "counter",
        "Manifest files read after a change (file source), by result: loaded, invalid (its last good content keeps serving), unreadable",
    ),
    (
        "headless_dns_source_errors_total",
        "counter",
        "Failed list or watch requests to the API server, by kind (the last state keeps serving)",
    ),
    (
        "headless_dns_index_publish_duration_seconds",
        "histogram",
        "Time to apply a batch of source events and publish the new answers",
    ),
    (
        "headless_dns_source_event_to_answer_seconds",
        "histogram",
        "Time from a batch of source events entering the index writer's queue to its answers being served",
    ),
    (
        "headless_dns_forward_requests_total",
        "counter",
        "Queries forwarded upstream",
    ),
    (
        "headless_dns_forward_errors_total",
        "counter",
        "Forwarded queries that failed upstream (timeouts, SERVFAIL)",
    ),
    (
        "headless_dns_forward_stale_total",
        "counter",
        "Forwarded queries answered from an expired answer (serve-stale, RFC 8767) as every upstream failed",
    ),
    (
        "headless_dns_autopath_total",
        "counter",
        "Autopath walks of a pod's search list, by result: hit (answered from a later step, behind a CNAME), miss (the asked name's own answer)",
    ),
    (
        "headless_dns_transfer_requests_total",
        "counter",
        "Zone transfers and signed queries served, by kind (axfr, ixfr, ixfr_full, ixfr_current, signed_query)",
    ),
    (
        "headless_dns_transfer_refused_total",
        "counter",
        "Transfer requests refused, by reason (acl, unsigned, tsig, busy, bad_request, key_scope)",
    ),
    (
        "headless_dns_transfer_notify_total",
        "counter",
        "NOTIFY messages to secondaries, by result (sent, acknowledged, failed)",
    ),
    (
        "headless_dns_transfer_bytes_total",
        "counter",
        "Bytes of zone transfer answers sent (AXFR, IXFR, signed queries and refusals; DNS messages without TCP framing)",
    ),
    (
        "headless_dns_transfer_journal_changes",
        "gauge",
        "Changes held by the IXFR journal",
    ),
    (
        "headless_dns_transfer_journal_bytes",
        "gauge",
        "Bytes held by the IXFR journal (records and per-change overhead)",
    ),
    (
        "headless_dns_reload_total",
        "counter",
        "Configuration reloads (SIGHUP or a changed config file) by result: applied, unchanged, failed (the running configuration stayed)",
    ),
    (
        "headless_dns_reload_last_successful",
        "gauge",
        "0 while the last reload failed (the configuration served is not the file's), else 1",
    ),
    (
        "headless_dns_follow_serial",
        "gauge",
        "Transfer source: the primary's serial served (0 before the first transfer)",
    ),
    (
        "headless_dns_follow_primary_serial",
        "gauge",
        "Transfer source: the serial the primary last reported (above headless_dns_follow_serial while transfers fail)",
    ),
    (
        "headless_dns_follow_lag_seconds",
        "gauge",
        "Transfer source: seconds since the zone served was last confirmed to be the primary's (its last successful check); grows while the primary is out of reach",
    ),
    (
        "headless_dns_follow_transfers_total",
        "counter",
        "Transfer source: zone transfers taken from the primary, by kind (axfr: the whole zone, ixfr: differences)",
    ),
    (
        "headless_dns_follow_failures_total",
        "counter",
        "Transfer source: checks and transfers that failed (each logged with its reason)",
    ),
    (
        "headless_dns_follow_notify_total",
        "counter",
        "Transfer source: NOTIFYs accepted from the primary",
    ),
    (
        "headless_dns_follow_expired",
        "gauge",
        "Transfer source: 1 while the zone is past its expire (names get SERVFAIL)",
    ),
    (
        "headless_dns_history_names",
        "gauge",
        "Names the record browser keeps a history of",
    ),
    (
        "headless_dns_history_entries",
        "gauge",
        "Record browser history entries, by kind (name: address sets and readiness states; change: timeline entries), bounded by [admin] history_addresses, history_names and history_changes",
    ),
];

/// The `result` label of `headless_dns_transfer_notify_total`.
const NOTIFY_RESULTS: [&str; 3] = ["sent", "acknowledged", "failed"];

/// Zone transfer metrics, when transfers are on.
fn transfer_metrics(t: &TransferTotals) {
    for (kind, v) in TRANSFER_KINDS.iter().zip(t.served) {
        counter!("headless_dns_transfer_requests_total", "kind" => *kind).absolute(v);
    }
    for (reason, v) in REFUSAL_REASONS.iter().zip(t.refused) {
        counter!("headless_dns_transfer_refused_total", "reason" => *reason).absolute(v);
    }
    for (result, v) in NOTIFY_RESULTS.iter().zip(t.notify) {
        counter!("headless_dns_transfer_notify_total", "result" => *result).absolute(v);
    }
    counter!("headless_dns_transfer_bytes_total").absolute(t.bytes);
    gauge!("headless_dns_transfer_journal_changes").set(t.journal_changes as f64);
    gauge!("headless_dns_transfer_journal_bytes").set(t.journal_bytes as f64);
    if let Some(f) = &t.follow {
        gauge!("headless_dns_follow_serial").set(f64::from(f.serial));
        gauge!("headless_dns_follow_primary_serial").set(f64::from(f.primary_serial));
        let lag_ms = f.lag_ms(crate::clock::unix_ms());
        gauge!("headless_dns_follow_lag_seconds").set(lag_ms as f64 / 1000.0);
        for (kind, v) in FOLLOW_TRANSFER_KINDS.iter().zip(f.transfers) {
            counter!("headless_dns_follow_transfers_total", "kind" => *kind).absolute(v);
        }
        counter!("headless_dns_follow_failures_total").absolute(f.failures);
        counter!("headless_dns_follow_notify_total").absolute(f.notifies);
        gauge!("headless_dns_follow_expired").set(f64::from(u8::from(f.expired)));
    }
}

/// The `result` label of `headless_dns_reload_total`.
pub const RELOAD_RESULTS: [&str; 3] = ["applied", "unchanged", "failed"];

/// How a reload ended: an index into [`RELOAD_RESULTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    /// A new engine took over.
    Applied,
    /// The configuration loaded was the running one.
    Unchanged,
    /// It did not load, bind or sync: the running configuration stays.
    Failed,
}

/// Reloads by result. The reload supervisor keeps one for the life of the
/// process and hands it to every engine, whose metrics page shows it (an
/// engine's own counters start afresh with it).
#[derive(Debug, Default)]
pub struct ReloadStats {
    results: [AtomicU64; RELOAD_RESULTS.len()],
    last_failed: AtomicBool,
}

impl ReloadStats {
    /// Counts one reload that ended so.
    pub fn count(&self, result: ReloadResult) {
        self.results[result as usize].fetch_add(1, Ordering::Relaxed);
        self.last_failed
            .store(result == ReloadResult::Failed, Ordering::Relaxed);
    }

    /// Reloads so far that ended with `result`.
    pub fn total(&self, result: ReloadResult) -> u64 {
        self.results[result as usize].load(Ordering::Relaxed)
    }

    fn record(&self) {
        for (result, v) in RELOAD_RESULTS.iter().zip(&self.results) {
            counter!("headless_dns_reload_total", "result" => *result)
                .absolute(v.load(Ordering::Relaxed));
        }
        let ok = !self.last_failed.load(Ordering::Relaxed);
        gauge!("headless_dns_reload_last_successful").set(if ok { 1.0 } else { 0.0 });
    }
}

/// One server's metrics registry.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    reloads: Arc<ReloadStats>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

impl Metrics {
    /// A registry whose page includes the process's `reloads`.
    pub fn new(reloads: Arc<ReloadStats>) -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for (name, kind, help) in METRICS {
                match *kind {
                    "counter" => describe_counter!(*name, *help),
                    "gauge" => describe_gauge!(*name, *help),
                    _ => {}
                }
            }
        });
        Self {
            recorder,
            handle,
            reloads,
        }
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    label: Option<(&str, &str)>,
    buckets: &[u64],
    sum_ns: u64,
) {
    let lab = |extra: &str| match (label, extra.is_empty()) {
        (Some((k, v)), true) => format!("{{{k}=\"{v}\"}}"),
        (Some((k, v)), false) => format!("{{{k}=\"{v}\",{extra}}}"),
        (None, true) => String::new(),
        (None, false) => format!("{{{extra}}}"),
    };
    if !out.contains(&format!("# TYPE {name} ")) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    }
    let mut cumulative = 0;
    for (i, c) in buckets.iter().enumerate() {
        cumulative += c;
        let le = BUCKETS_US
            .get(i)
            .map_or("+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
        let _ = writeln!(
            out,
            "{name}_bucket{} {cumulative}",
            lab(&format!("le=\"{le}\""))
        );
    }
    let _ = writeln!(out, "{name}_sum{} {}", lab(""), sum_ns as f64 / 1e9);
    let _ = writeln!(out, "{name}_count{} {cumulative}", lab(""));
}

impl Metrics {
    /// Sets the record browser's history sizes, for the next render.
    pub fn record_history(&self, h: &HistoryStats) {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
        metrics::with_local_recorder(&self.recorder, || {
            gauge!("headless_dns_history_names").set(get(&h.names));
            gauge!("headless_dns_history_entries", "kind" => "name").set(get(&h.name_entries));
            gauge!("headless_dns_history_entries", "kind" => "change").set(get(&h.changes));
        });
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self, dns: &Answerer, index: &Index, forward: Option<&ForwardStats>) -> String {
        let t = dns.stats().totals();
        let s = index.stats();
        let now = crate::clock::unix_ms();
        metrics::with_local_recorder(&self.recorder, || {
            record_queries(&t);
            record_index(index, s);
            record_sources(s, now);
            self.reloads.record();
            if let Some(t) = dns.transfers() {
                transfer_metrics(&t.totals());
            }
            // Zeros with autopath off, so the series exist for dashboards.
            let (hits, misses) = dns.autopath_stats().map_or((0, 0), |a| {
                let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
                (load(&a.hits), load(&a.misses))
            });
            for (result, n) in [("hit", hits), ("miss", misses)] {
                counter!("headless_dns_autopath_total", "result" => result).absolute(n);
            }
            if let Some(f) = forward {
                counter!("headless_dns_forward_requests_total")
                    .absolute(f.requests.load(Ordering::Relaxed));
                counter!("headless_dns_forward_errors_total")
                    .absolute(f.errors.load(Ordering::Relaxed));
                counter!("headless_dns_forward_stale_total")
                    .absolute(f.stale.load(Ordering::Relaxed));
            }
        });
        let mut out = self.handle.render();
        append_histograms(&mut out, &t, s);
        out
    }
}

/// The query path's counters, by protocol.
fn record_queries(t: &Totals) {
    for (p, proto) in PROTOS.iter().enumerate() {
        for (i, qt) in QTYPES.iter().enumerate() {
            counter!("headless_dns_dns_requests_total", "proto" => *proto, "type" => *qt)
                .absolute(t.requests[p][i]);
        }
        for (i, rc) in RCODES.iter().enumerate() {
            counter!("headless_dns_dns_responses_total", "proto" => *proto, "rcode" => *rc)
                .absolute(t.responses[p][i]);
        }
        counter!("headless_dns_dns_responses_truncated_total", "proto" => *proto)
            .absolute(t.truncated[p]);
    }
    counter!("headless_dns_dns_dropped_total").absolute(t.dropped);
    for (i, action) in RRL_ACTIONS.iter().enumerate() {
        counter!("headless_dns_dns_rate_limited_total", "action" => *action)
            .absolute(t.rate_limited[i]);
    }
}

/// The index's size, serial and readiness.
fn record_index(index: &Index, s: &IndexStats) {
    gauge!("headless_dns_index_services").set(s.services.load(Ordering::Relaxed) as f64);
    gauge!("headless_dns_index_endpoints").set(s.endpoints.load(Ordering::Relaxed) as f64);
    gauge!("headless_dns_index_names").set(s.names.load(Ordering::Relaxed) as f64);
    gauge!("headless_dns_index_serial").set(index.serial() as f64);
    gauge!("headless_dns_index_ready").set(if index.is_synced() { 1.0 } else { 0.0 });
}

/// Source events, (re-)lists and sync ages per kind; `now` in Unix ms.
fn record_sources(s: &IndexStats, now: u64) {
    for kind in Kind::ALL {
        let k = kind.as_str();
        for (ti, ty) in EVENT_TYPES.iter().enumerate() {
            let v = s.events_by[kind.index()][ti].load(Ordering::Relaxed);
            counter!("headless_dns_source_events_total", "kind" => k, "type" => *ty).absolute(v);
        }
        counter!("headless_dns_source_relists_total", "kind" => k)
            .absolute(s.relists[kind.index()].load(Ordering::Relaxed));
        counter!("headless_dns_source_errors_total", "kind" => k)
            .absolute(s.source_errors[kind.index()].load(Ordering::Relaxed));
        let last = s.last_sync_ms[kind.index()].load(Ordering::Relaxed);
        let age = if last == 0 {
            -1.0
        } else {
            now.saturating_sub(last) as f64 / 1000.0
        };
        gauge!("headless_dns_source_last_sync_age_seconds", "kind" => k).set(age);
    }
    for (result, v) in MANIFEST_READ_RESULTS.iter().zip(&s.manifest_reads) {
        counter!("headless_dns_source_manifest_reads_total", "result" => *result)
            .absolute(v.load(Ordering::Relaxed));
    }
}

/// The histograms bucketed where they are measured: query duration per
/// protocol, index publish duration and event to answer.
fn append_histograms(out: &mut String, t: &Totals, s: &IndexStats) {
    let help = |n: &str| METRICS.iter().find(|m| m.0 == n).map_or("", |m| m.2);
    let name = "headless_dns_dns_request_duration_seconds";
    for (p, proto) in PROTOS.iter().enumerate() {
        histogram(
            out,
            name,
            help(name),
            Some(("proto", proto)),
            &t.duration[p],
            t.duration_ns[p],
        );
    }
    for (name, buckets, sum_ns) in [
        (
            "headless_dns_index_publish_duration_seconds",
            &s.publish_buckets,
            &s.publish_ns,
        ),
        (
            "headless_dns_source_event_to_answer_seconds",
            &s.answer_buckets,
            &s.answer_ns,
        ),
    ] {
        let buckets: Vec<u64> = buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        histogram(
            out,
            name,
            help(name),
            None,
            &buckets,
            sum_ns.load(Ordering::Relaxed),
        );
    }
}
