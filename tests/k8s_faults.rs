//! The Kubernetes source under API faults, against the fake API server:
//! dropped and closed watches resume without a re-list, 410 Gone (in the
//! stream or as an HTTP status) forces one, and a soak of random faults
//! never makes a name blink and ends equal to the API server's state.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;
use support::dns::Answer;
use support::fake_api::FakeApi;
use support::k8s::{
    Checker, NS, TEST_TIMEOUT, WATCHED, WATCHED_KINDS, endpoint_slice, fqdn, headless_service, ip,
    nginx, ready, start_synced, start_with_doomed, web_answers, web_cluster, web_cluster_and,
    web_ips,
};
use support::server::TestServer;
use support::{eventually, http, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_api_connections_never_blink_a_name() {
    within(Duration::from_secs(240), async {
        let (api, server) = start_synced(web_cluster_and(("churn", "c-0", ip("10.245.0.0")))).await;
        let mut expected = web_answers();
        expected.push((fqdn("nope.nginx.default.svc"), Answer::NxDomain));
        let checker = Checker::spawn(server.dns, expected);
        let (mut aborted, mut closed, mut failed) = (0, 0, 0);
        let mut last = ip("10.245.0.0");
        for round in 0..50u8 {
            // The source re-opened its watches after the last round.
            api.wait_for_watches(WATCHED_KINDS).await;
            checker.progress(5).await;
            // Mostly broken connections (no terminating chunk), every fifth a
            // clean end as at timeoutSeconds, and every tenth the reconnect
            // fails once with HTTP 500 (the source backs off and retries).
            if round % 10 == 9 {
                api.fail_next(WATCHED_KINDS as u32);
                failed += 1;
            }
            if round % 5 == 4 {
                closed += api.close_watches();
            } else {
                aborted += api.drop_watches();
            }
            // A change while disconnected must arrive through the resumed watch.
            last = ip(&format!("10.245.1.{round}"));
            api.apply(endpoint_slice(NS, "churn", &[ready("c-0", last)]));
        }
        server
            .wait_for_a(&fqdn("c-0.churn.default.svc"), Answer::ips(&[last]))
            .await;
        checker.progress(5).await;
        let (right, wrong, samples) = checker.finish().await;
        let relists = api
            .requests()
            .iter()
            .filter(|r| !r.watch && r.plural.is_some())
            .count();
        eprintln!(
            "dropped watches: {aborted} aborted + {closed} closed cleanly over 50 rounds \
             ({failed} rounds with failing reconnects); queries: {right} right, {wrong} wrong; \
             list requests: {relists}"
        );
        assert_eq!(
            wrong, 0,
            "wrong answers while the API connection dropped: {samples:?}"
        );
        assert!(right >= 250, "the checker ran too few queries: {right}");
        assert_eq!(
            relists, WATCHED_KINDS,
            "a dropped watch resumes; it never re-lists"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_forces_a_relist_that_removes_a_service_deleted_meanwhile() {
    within(TEST_TIMEOUT, async {
        let (api, server, doomed) = start_with_doomed().await;
        let mark = api.requests().len();

        let checker = Checker::spawn(server.dns, web_answers());
        checker.progress(5).await;

        // While no watch is connected: the service and its slice go away and
        // the history that would have told the client is forgotten.
        api.pause_watches();
        assert_eq!(api.drop_watches(), WATCHED_KINDS);
        assert!(api.delete("Service", NS, "doomed"));
        assert!(api.delete("EndpointSlice", NS, "doomed-abcde"));
        api.expire_history();
        api.resume_watches();

        server.wait_for_a(&doomed, Answer::NxDomain).await;
        server
            .assert_a(&fqdn("doomed.default.svc"), &Answer::NxDomain)
            .await;
        // Every kind got 410 and re-lists (each after its backoff).
        eventually("every kind to re-list after 410", || async {
            let requests = api.requests();
            let new = &requests[mark..];
            let missing: Vec<&str> = WATCHED
                .into_iter()
                .filter(|p| {
                    !new.iter()
                        .any(|r| r.plural == Some(*p) && r.watch && r.status == 410)
                        || !new.iter().any(|r| r.plural == Some(*p) && !r.watch)
                })
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("no 410 + re-list yet for {missing:?}"))
            }
        })
        .await;
        server.wait_ready().await;
        checker.progress(20).await;
        let (right, wrong, samples) = checker.finish().await;
        eprintln!("410 and re-list of every kind; queries: {right} right, {wrong} wrong");
        assert_eq!(wrong, 0, "names blinked during the re-list: {samples:?}");
        assert!(right > 0);
        // The rest of the cluster is intact.
        server.assert_a(&nginx(), &Answer::ips(&web_ips(3))).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_as_an_http_status_also_forces_a_relist() {
    within(TEST_TIMEOUT, async {
        let (api, server, doomed) = start_with_doomed().await;

        api.set_gone_as_http_status(true);
        api.pause_watches();
        api.drop_watches();
        assert!(api.delete("Service", NS, "doomed"));
        api.expire_history();
        api.resume_watches();

        server.wait_for_a(&doomed, Answer::NxDomain).await;
        server.assert_a(&nginx(), &Answer::ips(&web_ips(3))).await;
        server.stop().await;
    })
    .await;
}

/// A small deterministic generator (xorshift), so a failing soak replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The soak's faults, by the number [`inject_fault`] takes.
const FAULTS: [&str; 6] = [
    "dropped",
    "closed",
    "410 Gone",
    "HTTP 500s",
    "stalled",
    "delete+re-add",
];

/// Injects fault `fault` (see [`FAULTS`]) in cycle `cycle`; returns the
/// address `m-0.moving` has afterwards.
async fn inject_fault(
    api: &FakeApi,
    rng: &mut Rng,
    fault: usize,
    cycle: usize,
    moving_ip: IpAddr,
) -> IpAddr {
    let (hi, lo) = ((cycle / 250) % 250, cycle % 250 + 1);
    match fault {
        0 => {
            api.drop_watches();
        }
        1 => {
            api.close_watches();
        }
        2 => {
            // A change while disconnected, then the history that holds
            // it forgotten: resuming gets 410 Gone and must re-list.
            api.set_gone_as_http_status(rng.next().is_multiple_of(2));
            api.drop_watches();
            let moved = ip(&format!("10.247.{hi}.{lo}"));
            api.apply(endpoint_slice(NS, "moving", &[ready("m-0", moved)]));
            api.expire_history();
            return moved;
        }
        3 => {
            api.fail_next(1 + (rng.next() % 3) as u32);
            api.drop_watches();
        }
        4 => {
            api.pause_watches();
            tokio::time::sleep(Duration::from_millis(20)).await;
            api.resume_watches();
        }
        _ => {
            // Deleted and re-added under the same name with a new IP
            // while the watches are down.
            api.drop_watches();
            api.delete("EndpointSlice", NS, "moving-abcde");
            let moved = ip(&format!("10.246.{hi}.{lo}"));
            api.apply(endpoint_slice(NS, "moving", &[ready("m-0", moved)]));
            return moved;
        }
    }
    moving_ip
}

/// Strings of a JSON array of strings.
fn strings(v: &Value) -> Vec<String> {
    let items = v.as_array().expect("an array");
    items
        .iter()
        .map(|a| a.as_str().expect("a string").to_string())
        .collect()
}

/// Every endpoint `/records` lists: (fqdn, addresses), sorted.
async fn served_endpoints(server: &TestServer) -> Vec<(String, Vec<String>)> {
    let (_, records) = http::get(server.admin, "/records")
        .await
        .expect("/records answers");
    let v: Value = serde_json::from_str(&records).expect("/records is JSON");
    let mut served = Vec::new();
    for svc in v["services"].as_array().expect("services") {
        for ep in svc["endpoints"].as_array().expect("endpoints") {
            let fqdn = ep["fqdn"].as_str().expect("fqdn").to_string();
            served.push((fqdn, strings(&ep["addresses"])));
        }
    }
    served.sort();
    served
}

/// Every endpoint of the `nginx` and `moving` slices on the fake server:
/// (fqdn, addresses), sorted.
fn api_endpoints(api: &FakeApi) -> Vec<(String, Vec<String>)> {
    let mut truth = Vec::new();
    for (svc, slice) in [("nginx", "nginx-abcde"), ("moving", "moving-abcde")] {
        let s = api
            .get("EndpointSlice", NS, slice)
            .expect("slice exists on the fake server");
        for ep in s["endpoints"].as_array().expect("endpoints") {
            let host = ep["hostname"].as_str().expect("hostname");
            let fqdn = format!("{host}.{svc}.default.svc.cluster.local");
            truth.push((fqdn, strings(&ep["addresses"])));
        }
    }
    truth.sort();
    truth
}

/// Random API faults while a client queries continuously (issue 7's soak):
/// dropped watches, clean closes, 410 Gone re-lists (in-stream and as HTTP
/// 410), HTTP 500s on reconnect, stalled watch streams, and a pod deleted
/// and re-added with a new IP while disconnected. Afterwards `/records`
/// equals the fake server's state, and no name that existed throughout was
/// ever NXDOMAIN/NODATA. CI runs 100 cycles; `SOAK_CYCLES=1000` for the
/// full soak (the note on issue 7 gives its counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_random_api_faults_lose_nothing() {
    let cycles: usize = std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    within(Duration::from_secs(60 + cycles as u64), async {
        let (api, server) = start_synced(web_cluster_and(("moving", "m-0", ip("10.246.0.1")))).await;
        // Names that exist the whole time, with fixed answers.
        let checker = Checker::spawn(server.dns, web_answers());
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        let mut faults = [0usize; FAULTS.len()];
        let mut moving_ip = ip("10.246.0.1");
        for cycle in 0..cycles {
            // Wait for the watches to be back (bounded), then inject a fault.
            api.wait_for_watches(WATCHED_KINDS).await;
            let fault = (rng.next() % FAULTS.len() as u64) as usize;
            faults[fault] += 1;
            moving_ip = inject_fault(&api, &mut rng, fault, cycle, moving_ip).await;
            if cycle % 10 == 0 {
                checker.progress(1).await;
            }
        }
        // Everything settles to the fake server's state.
        api.set_gone_as_http_status(false);
        api.wait_for_watches(WATCHED_KINDS).await;
        let moving = fqdn("m-0.moving.default.svc");
        server.wait_for_a(&moving, Answer::ips(&[moving_ip])).await;
        assert_eq!(
            served_endpoints(&server).await,
            api_endpoints(&api),
            "the index equals the API server's state"
        );
        let (right, wrong, samples) = checker.finish().await;
        let lists = api.requests().iter().filter(|r| !r.watch && r.plural.is_some()).count();
        let per: Vec<String> = FAULTS.iter().zip(faults).map(|(n, c)| format!("{n}: {c}")).collect();
        eprintln!(
            "soak: {cycles} fault cycles ({}); queries: {right} right, {wrong} wrong; list requests: {lists}",
            per.join(", ")
        );
        assert_eq!(wrong, 0, "wrong answers during the soak: {samples:?}");
        assert!(right >= cycles, "the checker ran too few queries: {right}");
        server.stop().await;
    })
    .await;
}

/// `source_relists_total` counts the lists after each kind's first: none
/// after the first sync, then one per list request a 410 Gone forces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relists_total_counts_lists_after_the_first() {
    within(TEST_TIMEOUT, async {
        let (api, server) = start_synced(web_cluster(3, 3)).await;
        let list_requests = || {
            api.requests()
                .iter()
                .filter(|r| !r.watch && r.plural.is_some())
                .count() as f64
        };
        let relists = || async {
            let (_, text) = http::get(server.admin, "/metrics").await.unwrap();
            text.lines()
                .filter(|l| l.starts_with("headless_dns_source_relists_total{"))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum::<f64>()
        };
        assert_eq!(list_requests(), WATCHED_KINDS as f64);
        assert_eq!(relists().await, 0.0, "the first lists are not re-lists");
        api.pause_watches();
        assert_eq!(api.drop_watches(), WATCHED_KINDS);
        // A change the resumed watches would have to replay, then forgotten.
        api.apply(headless_service(NS, "d", false));
        api.expire_history();
        api.resume_watches();
        eventually("every kind to re-list after 410", || async {
            let (lists, re) = (list_requests(), relists().await);
            if lists >= 2.0 * WATCHED_KINDS as f64 && re == lists - WATCHED_KINDS as f64 {
                Ok(())
            } else {
                Err(format!("{lists} list requests, relists_total {re}"))
            }
        })
        .await;
        server.stop().await;
    })
    .await;
}

/// After an outage long enough for every kind's backoff to reach its 5 s
/// cap, the final state (a Service created and a pod moved meanwhile: two
/// kinds must reconnect) is served within 2 s of the API server answering
/// again (#16 item 9; it took ~7 s when each kind waited out its own backoff).
/// The fix must not ask a failing server more often: each kind's tries stay
/// at most one per step of its backoff (0.05 s doubling to 2.5 s at the
/// least, with jitter), counted over the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_the_final_state_is_served_within_two_seconds() {
    within(TEST_TIMEOUT, async {
        let outage = Duration::from_secs(10);
        let (api, server, tries, moved) = through_a_fault(
            |api| api.set_down(true),
            outage,
            |api| {
                api.apply(headless_service(NS, "late", false));
                api.apply(endpoint_slice(
                    NS,
                    "late",
                    &[ready("l-0", ip("10.245.2.1"))],
                ));
            },
        )
        .await;
        api.set_down(false);
        let healed = std::time::Instant::now();
        server
            .wait_for_a(&fqdn("c-0.churn.default.svc"), Answer::ips(&[moved]))
            .await;
        server
            .wait_for_a(
                &fqdn("l-0.late.default.svc"),
                Answer::ips(&[ip("10.245.2.1")]),
            )
            .await;
        let took = healed.elapsed();
        let per_kind = backoff_tries(outage);
        eprintln!(
            "outage {outage:?}: {tries} requests ({WATCHED_KINDS} kinds, at most {per_kind} \
             each); final state served {took:?} after the API came back"
        );
        assert!(
            tries <= per_kind * WATCHED_KINDS,
            "{tries} requests during the outage: retried faster than the backoff"
        );
        assert!(
            took <= Duration::from_secs(2),
            "the final state took {took:?} after the API came back"
        );
        server.stop().await;
    })
    .await;
}

/// Tries one kind may make in `span` of failures at the fastest: the first
/// at once, then one per backoff step at half its nominal delay (0.05 s
/// doubling to 2.5 s).
fn backoff_tries(span: Duration) -> usize {
    let (mut at, mut step, mut tries) = (0.0f64, 0.05f64, 1);
    while at + step <= span.as_secs_f64() {
        at += step;
        step = (step * 2.0).min(2.5);
        tries += 1;
    }
    tries
}

/// A server that answers every watch and resets its connection at once is
/// failing, however many watches it answers: each kind backs off as from a
/// 5xx, while a watch that got through and was reset later starts the
/// backoff over (issue #27). Unguarded, that reset would have each kind
/// re-watch every 50-100 ms: 200-400 requests in these 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_reset_as_soon_as_answered_back_off() {
    within(TEST_TIMEOUT, async {
        let (api, server) = start_synced(web_cluster(3, 3)).await;
        api.wait_for_watches(WATCHED_KINDS).await;
        let before = api.requests().len();
        api.set_reset_on_watch(true);
        api.reset_watches();
        let span = Duration::from_secs(5);
        tokio::time::sleep(span).await;
        let tries = api.requests().len() - before;
        let per_kind = backoff_tries(span);
        eprintln!(
            "every watch reset once answered, {span:?}: {tries} requests ({WATCHED_KINDS} \
             kinds, at most {per_kind} each by the backoff)"
        );
        // Twice the backoff's count, for a reset a loaded machine delivers
        // more than 20 ms after its answer (then taken as a real watch).
        assert!(
            tries <= 2 * per_kind * WATCHED_KINDS,
            "{tries} requests in {span:?}: re-watched faster than the backoff"
        );
        api.set_reset_on_watch(false);
        api.wait_for_watches(WATCHED_KINDS).await;
        server.assert_a(&nginx(), &Answer::ips(&web_ips(3))).await;
        server.stop().await;
    })
    .await;
}

/// API Priority and Fairness sheds load with 429 and a `Retry-After`: every
/// watcher waits it out however short its backoff, and once requests go
/// through again the final state is served.
#[tokio::test]
async fn load_shedding_429s_are_retried_after_their_retry_after() {
    within(TEST_TIMEOUT, async {
        let shed = Duration::from_secs(5);
        let (api, server, tries, moved) =
            through_a_fault(|api| api.set_throttled(Some(2)), shed, |_| {}).await;
        api.set_throttled(None);
        let back = std::time::Instant::now();
        server
            .wait_for_a(&fqdn("c-0.churn.default.svc"), Answer::ips(&[moved]))
            .await;
        let took = back.elapsed();
        // Each kind: one try when its watch breaks, then one per 2 s. The
        // backoff alone (0.1 s doubling) would have tried six times.
        let per_kind = 1 + (shed.as_secs() / 2) as usize;
        eprintln!(
            "429 with Retry-After 2 for {shed:?}: {tries} requests ({WATCHED_KINDS} kinds, at \
             most {per_kind} each); the change served {took:?} after"
        );
        assert!(
            (WATCHED_KINDS..=per_kind * WATCHED_KINDS).contains(&tries),
            "{tries} requests while shedding: Retry-After not honoured (or no retry at all)"
        );
        server.stop().await;
    })
    .await;
}

/// Starts a synced server on the web cluster plus `churn` (c-0), breaks the
/// API with `fault`, moves c-0 (and applies `also`) while it is broken, and
/// waits `span`. Returns the API (still broken), the server, the requests
/// the server made meanwhile and c-0's new address.
async fn through_a_fault(
    fault: impl FnOnce(&FakeApi),
    span: Duration,
    also: impl FnOnce(&FakeApi),
) -> (FakeApi, TestServer, usize, IpAddr) {
    let (api, server) = start_synced(web_cluster_and(("churn", "c-0", ip("10.245.0.0")))).await;
    let before = api.requests().len();
    fault(&api);
    let moved = ip("10.245.0.9");
    api.apply(endpoint_slice(NS, "churn", &[ready("c-0", moved)]));
    also(&api);
    tokio::time::sleep(span).await;
    let tries = api.requests().len() - before;
    (api, server, tries, moved)
}
