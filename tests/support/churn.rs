//! The watch-churn scenario of issue #27, shared by `tests/k8s_churn.rs` and
//! `benches/churn.rs`: cycles of the fake API's fault mix
//! ([`super::fake_api::churn`]), 50-300 ms apart, against a synced server;
//! then how long until the final state is served, measured with real DNS
//! queries, and what the source asked the API meanwhile.
//!
//! The cluster is the `web` StatefulSet (three pods whose names and
//! addresses never change: they must answer throughout) plus [`SETS`]
//! one-pod StatefulSets `db<i>` whose EndpointSlice a [`Fault::Recreate`]
//! deletes and re-creates under a new name with a new address. When the last
//! fault has been injected, every `db<i>-0` moves once more (an update of its
//! slice): the final state, which can only be served once every watch is
//! back.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

use super::dns::{self, Answer, Proto};
use super::fake_api::churn::{Fault, Rng};
use super::fake_api::{ApiRequest, FakeApi};
use super::k8s::{NS, endpoint_slice, fqdn, headless_service, ip, ready, statefulset, web_cluster};

/// The StatefulSets whose slices the churn re-creates.
pub const SETS: usize = 3;

/// Gap between two faults, drawn uniformly.
pub const GAP_MS: (u64, u64) = (50, 300);

/// How long [`run`] waits for the final state before giving up.
pub const GIVE_UP: Duration = Duration::from_secs(30);

/// `db<set>`.
fn set_name(set: usize) -> String {
    format!("db{set}")
}

/// `db<set>-0.db<set>.default.svc.cluster.local`.
pub fn pod_fqdn(set: usize) -> String {
    let s = set_name(set);
    fqdn(&format!("{s}-0.{s}.{NS}.svc"))
}

/// The slice of `db<set>` in its `generation`-th life (`db<set>-g<n>`), with
/// its pod at `addr`.
fn set_slice(set: usize, generation: usize, addr: IpAddr) -> (String, Value) {
    let s = set_name(set);
    let pod = format!("{s}-0");
    let mut slice = endpoint_slice(NS, &s, &[ready(&pod, addr)]);
    let name = format!("{s}-g{generation}");
    slice["metadata"]["name"] = json!(name);
    (name, slice)
}

/// The address of `db<set>-0` in its `n`-th life.
fn set_addr(set: usize, n: usize) -> IpAddr {
    ip(&format!("10.250.{}.{}", set * 40 + n / 250, n % 250 + 1))
}

/// The `web` cluster (3 pods) plus the [`SETS`] one-pod sets, each slice in
/// its first life.
pub fn cluster() -> Vec<Value> {
    let mut objects = web_cluster(3, 3);
    for set in 0..SETS {
        let s = set_name(set);
        objects.push(headless_service(NS, &s, false));
        objects.push(statefulset(NS, &s, &s, 1));
        objects.push(set_slice(set, 0, set_addr(set, 0)).1);
    }
    objects
}

/// What one churn run saw.
#[derive(Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// From the last fault to the final state served (every `db<i>-0` at its
    /// final address, and only there).
    pub recovery: Duration,
    /// Faults injected, by [`Fault::index`].
    pub faults: [usize; 5],
    /// From the first fault to the last.
    pub churn: Duration,
    /// Resource requests (list, watch) that arrived during the churn.
    pub requests: usize,
    /// Of those, the ones answered 5xx.
    pub failed: usize,
    /// Of those, lists.
    pub lists: usize,
    /// Retries sooner after a failed request than the backoff allows (see
    /// [`early_retries`]), from the first fault to the final state.
    pub early: Vec<String>,
    /// When each fault was injected, and which.
    pub log: Vec<(Instant, Fault)>,
    /// When the final state was served.
    pub served: Instant,
}

impl Outcome {
    /// Resource requests per second during the churn.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.churn.as_secs_f64()
    }

    /// Requests answered 5xx per second during the churn.
    pub fn failed_rate(&self) -> f64 {
        self.failed as f64 / self.churn.as_secs_f64()
    }

    /// "EOF 12, reset 9, …".
    pub fn fault_counts(&self) -> String {
        let counts: Vec<String> = Fault::ALL
            .iter()
            .zip(self.faults)
            .map(|(f, n)| format!("{} {n}", f.name()))
            .collect();
        counts.join(", ")
    }

    /// The faults and the API requests from `from` before the last fault to
    /// the final state, one line each, in milliseconds from the last fault
    /// (what it took to find where the time goes).
    pub fn timeline(&self, api: &FakeApi, from: Duration) -> String {
        let last = self.log.last().map_or(self.served, |l| l.0);
        let start = last.checked_sub(from).unwrap_or(last);
        let ms = |t: Instant| {
            if t >= last {
                (t - last).as_secs_f64() * 1e3
            } else {
                -((last - t).as_secs_f64() * 1e3)
            }
        };
        let mut lines: Vec<(Instant, String)> = self
            .log
            .iter()
            .filter(|(t, _)| *t >= start)
            .map(|(t, f)| (*t, format!("FAULT {}", f.name())))
            .collect();
        for r in api.requests() {
            if r.at >= start && r.at <= self.served && r.plural.is_some() {
                let rv = r.param("resourceVersion").unwrap_or("");
                lines.push((
                    r.at,
                    format!(
                        "  {} {} rv={rv} -> {}",
                        r.verb,
                        r.plural.unwrap_or(""),
                        r.status
                    ),
                ));
            }
        }
        lines.push((self.served, "final state served".to_string()));
        lines.sort_by_key(|l| l.0);
        let mut out = String::new();
        for (t, l) in lines {
            let _ = writeln!(out, "{:>9.1} ms  {l}", ms(t));
        }
        out
    }
}

/// What `name A` answers now over UDP.
async fn answer(dns: SocketAddr, name: &str) -> Answer {
    Answer::of_result(&dns::try_query(Proto::Udp, dns, name, RecordType::A).await)
}

/// Runs `cycles` faults of the mix from `seed` against `api` (the server
/// at `dns` synced to [`cluster`], every watch open), moves every set's pod
/// once more right after the last, and polls DNS every 5 ms until the final
/// state is served (panics after [`GIVE_UP`]).
pub async fn run(api: &FakeApi, dns: SocketAddr, seed: u64, cycles: usize) -> Outcome {
    assert!(cycles > 0, "a churn has at least one fault");
    let mut rng = Rng::new(seed);
    // Each set's slice name and lives so far.
    let mut slices: Vec<(String, usize)> = (0..SETS).map(|s| (format!("db{s}-g0"), 0)).collect();
    let mut faults = [0usize; 5];
    let mut log = Vec::with_capacity(cycles);
    let first_request = api.requests().len();
    for cycle in 0..cycles {
        if cycle > 0 {
            tokio::time::sleep(rng.millis(GAP_MS.0, GAP_MS.1)).await;
        }
        let fault = Fault::pick(&mut rng);
        faults[fault.index()] += 1;
        let recreate = (fault == Fault::Recreate).then(|| {
            let set = rng.below(SETS as u64) as usize;
            let (old, lives) = &mut slices[set];
            *lives += 1;
            let (name, new) = set_slice(set, *lives, set_addr(set, *lives));
            let old = std::mem::replace(old, name);
            (old, new)
        });
        let recreate = recreate
            .as_ref()
            .map(|(old, new)| ("EndpointSlice", NS, old.as_str(), new.clone()));
        api.inject(fault, &mut rng, recreate);
        log.push((Instant::now(), fault));
    }
    // The final state: every set's pod moved once more, in place.
    let mut want = Vec::with_capacity(SETS);
    for (set, (name, lives)) in slices.iter_mut().enumerate() {
        *lives += 1;
        let addr = set_addr(set, *lives);
        let (_, mut slice) = set_slice(set, 0, addr);
        slice["metadata"]["name"] = json!(name);
        api.apply(slice);
        want.push((pod_fqdn(set), Answer::ips(&[addr])));
    }
    let last = log.last().expect("at least one fault").0;
    let churn = last - log[0].0;
    let deadline = last + GIVE_UP;
    loop {
        let mut pending = None;
        for (name, addr) in &want {
            let got = answer(dns, name).await;
            if &got != addr {
                pending = Some(format!("{name}: {got:?}, want {addr:?}"));
                break;
            }
        }
        let Some(pending) = pending else { break };
        assert!(
            Instant::now() < deadline,
            "seed {seed:#x}: final state not served {GIVE_UP:?} after the last fault; {pending}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let served = Instant::now();
    let requests = api.requests();
    let during: Vec<_> = requests[first_request..]
        .iter()
        .filter(|r| r.plural.is_some() && r.at >= log[0].0 && r.at <= last)
        .collect();
    let mut since_first: Vec<ApiRequest> = requests[first_request..]
        .iter()
        .filter(|r| r.at >= log[0].0)
        .cloned()
        .collect();
    since_first.sort_by_key(|r| r.at);
    Outcome {
        seed,
        early: early_retries(&since_first),
        recovery: served - last,
        faults,
        churn,
        requests: during.len(),
        failed: during.iter().filter(|r| r.status >= 500).count(),
        lists: during.iter().filter(|r| !r.watch).count(),
        log,
        served,
    }
}

/// The least wait of the source before its `n`-th retry in a row after
/// failed requests of one kind: its backoff (0.1 s doubling, from 0.5 of
/// that with jitter), and at the 5 s cap a slot at least 2.5 s away
/// (`sources::api_health`); 10% off for the log's timing.
fn least_wait(n: u32) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1 << (n - 1).min(6));
    base.min(Duration::from_secs(5)).mul_f64(0.5 * 0.9)
}

/// The requests in `log` (sorted by arrival) that came sooner after a
/// failed request of their kind than the source's backoff allows: after `n`
/// failures in a row (5xx, 429 or 410, with no watch of the kind answered
/// 2xx in between, each within 10 s of the last), at least [`least_wait`]
/// of `n`. Exempt: a retry after a 5xx or 429 when the server answered some
/// other request meanwhile (from 50 ms before the failure on, for the
/// log's ordering), as every wait begun while the server was down ends once
/// it is seen up. The count of failures is a lower bound of the source's (it
/// also counts broken streams, which the log does not see), so what this
/// finds is a retry that came too soon, never one the backoff would allow.
pub fn early_retries(log: &[ApiRequest]) -> Vec<String> {
    use std::collections::HashMap;
    struct Run {
        failures: u32,
        last: Instant,
        down: bool,
    }
    let mut runs: HashMap<&str, Run> = HashMap::new();
    // The arrival of every request answered other than 5xx or 429.
    let up: Vec<Instant> = log
        .iter()
        .filter(|r| r.status < 500 && r.status != 429)
        .map(|r| r.at)
        .collect();
    let seen_up = |from: Instant, to: Instant| {
        let from = from.checked_sub(Duration::from_millis(50)).unwrap_or(from);
        up.iter().any(|t| *t >= from && *t < to)
    };
    let mut early = Vec::new();
    for r in log {
        let Some(kind) = r.plural else { continue };
        let failed = r.status >= 500 || r.status == 429 || r.status == 410;
        if let Some(run) = runs.get(kind).filter(|run| run.failures > 0) {
            let gap = r.at - run.last;
            let least = least_wait(run.failures);
            if gap < least && !(run.down && seen_up(run.last, r.at)) {
                early.push(format!(
                    "{} {kind} {:.0} ms after failure {} in a row (at least {:.0} ms)",
                    r.verb,
                    gap.as_secs_f64() * 1e3,
                    run.failures,
                    least.as_secs_f64() * 1e3
                ));
            }
        }
        let run = runs.entry(kind).or_insert(Run {
            failures: 0,
            last: r.at,
            down: false,
        });
        if failed {
            if r.at - run.last > Duration::from_secs(10) {
                run.failures = 0;
            }
            run.failures += 1;
            run.last = r.at;
            run.down = r.status != 410;
        } else if r.watch && (200..300).contains(&r.status) {
            run.failures = 0;
        }
    }
    early
}

/// min / p50 / p90 / max of `samples`, in milliseconds.
pub fn distribution(samples: &[Duration]) -> String {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        return "no samples".to_string();
    }
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    format!(
        "min {:.0} / p50 {:.0} / p90 {:.0} / max {:.0} ms",
        ms[0],
        at(0.5),
        at(0.9),
        ms[ms.len() - 1]
    )
}
