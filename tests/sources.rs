//! Sources observed through DNS answers: manifest edits applied as diffs, a
//! broken file keeping the last good state, and the StatefulSet simulator
//! driven through the admin API.

mod support;

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType::{A, PTR};
use support::dns::{NegativeTtl, Proto, authority_soa, ip_strings, ips, rcode, reverse_v4};
use support::server::{TestServer, rewrite};
use support::{http, within};

fn manifests(web1_ip: &str, with_web2: bool, with_api: bool) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: nginx, namespace: default}}\nspec: {{clusterIP: None, ports: [{{name: web, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: nginx-1, namespace: default, labels: {{kubernetes.io/service-name: nginx}}}}\naddressType: IPv4\nendpoints:\n  - {{addresses: [10.0.0.1], hostname: web-0}}\n  - {{addresses: [{web1_ip}], hostname: web-1}}\n"
    );
    if with_web2 {
        y.push_str("  - {addresses: [10.0.0.3], hostname: web-2}\n");
    }
    if with_api {
        y.push_str("---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: default}\nspec: {clusterIP: 10.96.0.1}\n");
    }
    y
}

const WEB1: &str = "web-1.nginx.default.svc.cluster.local";

/// `/records` without what changes by itself (ages, the serial, the clock,
/// queries per second).
fn records_state(json: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    for svc in v["services"].as_array_mut().unwrap() {
        for ep in svc["endpoints"].as_array_mut().unwrap() {
            ep.as_object_mut().unwrap().remove("changed_ms_ago");
        }
    }
    let top = v.as_object_mut().unwrap();
    for moving in ["serial", "now_ms", "queries_per_second"] {
        top.remove(moving);
    }
    v
}

/// `headless_dns_source_manifest_reads_total{result="<result>"}`.
async fn manifest_reads(s: &TestServer, result: &str) -> u64 {
    let (_, page) = http::get(s.admin, "/metrics").await.unwrap();
    let series = format!("headless_dns_source_manifest_reads_total{{result=\"{result}\"}}");
    page.lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from /metrics"))
}

/// Waits until the file source has read a changed file `n` more times
/// with `result` than `before`: the sign that it saw the change.
async fn wait_for_reads(s: &TestServer, result: &str, before: u64, n: u64) {
    support::eventually(&format!("{n} more {result} manifest reads"), || async {
        match manifest_reads(s, result).await {
            now if now >= before + n => Ok(()),
            now => Err(format!("{} so far", now - before)),
        }
    })
    .await
}

/// A broken file: bad YAML, then a bad field type. The last good state
/// serves on (web-1 at 10.0.0.22), and the index does not change.
async fn broken_files_change_nothing(s: &TestServer, path: &Path) {
    let (_, before) = http::get(s.admin, "/records").await.unwrap();
    for broken in [
        "apiVersion: v1\nkind: Service\nmetadata: [oops\n",
        &manifests("not-an-ip", false, false),
    ] {
        let (invalid, loaded) = (
            manifest_reads(s, "invalid").await,
            manifest_reads(s, "loaded").await,
        );
        rewrite(path, broken);
        // Once the source has read it (and found it broken), nothing moved.
        wait_for_reads(s, "invalid", invalid, 1).await;
        assert_eq!(manifest_reads(s, "loaded").await, loaded);
        assert_eq!(
            ip_strings(&s.query(Proto::Udp, WEB1, A).await),
            ["10.0.0.22"]
        );
        let (_, after) = http::get(s.admin, "/records").await.unwrap();
        assert_eq!(
            records_state(&before),
            records_state(&after),
            "index unchanged by a broken file"
        );
    }
}

#[tokio::test]
async fn manifest_edits_are_applied_and_broken_files_keep_the_last_good_state() {
    within(Duration::from_secs(60), async {
        let s = TestServer::with_manifests(&manifests("10.0.0.2", true, true), |_| {}).await;
        let path = s.manifest_path();
        assert_eq!(
            ip_strings(&s.query(Proto::Udp, WEB1, A).await),
            ["10.0.0.2"]
        );

        // web-1 gets a new IP: the name follows, the old PTR goes, the new one comes.
        rewrite(&path, &manifests("10.0.0.22", true, true));
        s.wait_for(WEB1, A, "web-1 at its new IP", |m| {
            ip_strings(m) == ["10.0.0.22"]
        })
        .await;
        assert_eq!(
            rcode(&s.query(Proto::Tcp, "2.0.0.10.in-addr.arpa", PTR).await),
            ResponseCode::NXDomain
        );
        let m = s.query(Proto::Tcp, "22.0.0.10.in-addr.arpa", PTR).await;
        assert_eq!(
            m.answers[0].data.to_string(),
            "web-1.nginx.default.svc.cluster.local."
        );

        // web-2 removed: NXDOMAIN, and the set shrinks (in ordinal order).
        rewrite(&path, &manifests("10.0.0.22", false, true));
        let m = s
            .wait_for(
                "web-2.nginx.default.svc.cluster.local",
                A,
                "web-2 gone",
                |m| rcode(m) == ResponseCode::NXDomain,
            )
            .await;
        assert!(m.answers.is_empty());
        assert_eq!(
            ip_strings(
                &s.query(Proto::Udp, "nginx.default.svc.cluster.local", A)
                    .await
            ),
            ["10.0.0.1", "10.0.0.22"]
        );

        // A service removed: NXDOMAIN for it, nothing else changes.
        rewrite(&path, &manifests("10.0.0.22", false, false));
        s.wait_for("api.default.svc.cluster.local", A, "api gone", |m| {
            rcode(m) == ResponseCode::NXDomain
        })
        .await;
        assert_eq!(
            ip_strings(&s.query(Proto::Udp, WEB1, A).await),
            ["10.0.0.22"]
        );

        broken_files_change_nothing(&s, &path).await;
        // Fixed again: applied.
        rewrite(&path, &manifests("10.0.0.23", false, false));
        s.wait_for(WEB1, A, "web-1 after the fix", |m| {
            ip_strings(m) == ["10.0.0.23"]
        })
        .await;
        s.stop().await;
    })
    .await;
}

/// Writes `text` to `path` with the modification time `mtime`: the same
/// size and mtime as the write before, as two writes in one clock tick of
/// the filesystem leave them.
fn write_in_tick(path: &Path, text: &str, mtime: std::time::SystemTime) {
    rewrite(path, text);
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(mtime).unwrap();
}

/// Two edits of the same size within one tick of the file's mtime: the
/// second is applied too (a stamp taken that close to the write is not
/// trusted; the file is read again until its mtime is older).
#[tokio::test]
async fn an_edit_in_the_same_mtime_tick_as_the_last_is_applied() {
    within(Duration::from_secs(60), async {
        let s = TestServer::with_manifests(&manifests("10.0.0.2", false, false), |_| {}).await;
        let path = s.manifest_path();
        for (first, second) in [("10.0.0.5", "10.0.0.6"), ("10.0.0.7", "10.0.0.8")] {
            rewrite(&path, &manifests(first, false, false));
            let tick = std::fs::metadata(&path).unwrap().modified().unwrap();
            s.wait_for(WEB1, A, &format!("web-1 at {first}"), |m| {
                ip_strings(m) == [first]
            })
            .await;
            write_in_tick(&path, &manifests(second, false, false), tick);
            s.wait_for(WEB1, A, &format!("web-1 at {second}"), |m| {
                ip_strings(m) == [second]
            })
            .await;
        }
        s.stop().await;
    })
    .await;
}

/// A Service `nginx` (if `service`) and its EndpointSlice `nginx-1` with
/// web-0 at `ip` (if any).
fn one_pod(service: bool, ip: Option<&str>) -> String {
    let mut y = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n");
    if service {
        y.push_str("---\napiVersion: v1\nkind: Service\nmetadata: {name: nginx, namespace: default}\nspec: {clusterIP: None}\n");
    }
    if let Some(ip) = ip {
        y.push_str(&format!("---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: nginx-1, namespace: default, labels: {{kubernetes.io/service-name: nginx}}}}\naddressType: IPv4\nendpoints:\n  - {{addresses: [{ip}], hostname: web-0}}\n"));
    }
    y
}

/// An object defined in two files: the file listed last wins; edits to the
/// other one wait behind it, and take over when the last file drops it.
#[tokio::test]
async fn an_object_in_two_files_is_served_from_the_last_one() {
    within(Duration::from_secs(60), async {
        const WEB0: &str = "web-0.nginx.default.svc.cluster.local";
        let dir = tempfile::tempdir().unwrap();
        let (first, last) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        std::fs::write(&first, one_pod(true, Some("10.0.1.1"))).unwrap();
        std::fs::write(&last, one_pod(false, Some("10.0.2.1"))).unwrap();
        let s = TestServer::start(support::server::test_config(vec![
            first.clone(),
            last.clone(),
        ]))
        .await;
        assert_eq!(
            ip_strings(&s.query(Proto::Udp, WEB0, A).await),
            ["10.0.2.1"]
        );

        // The first file's copy changes: still shadowed by the last file's
        // once the source has loaded the change.
        let loaded = manifest_reads(&s, "loaded").await;
        rewrite(&first, &one_pod(true, Some("10.0.1.9")));
        wait_for_reads(&s, "loaded", loaded, 1).await;
        assert_eq!(
            ip_strings(&s.query(Proto::Udp, WEB0, A).await),
            ["10.0.2.1"]
        );

        // The last file drops it: the first file's current copy is served.
        rewrite(&last, &one_pod(false, None));
        s.wait_for(WEB0, A, "web-0 from the first file", |m| {
            ip_strings(m) == ["10.0.1.9"]
        })
        .await;
        // And back: the last file wins again.
        rewrite(&last, &one_pod(false, Some("10.0.2.2")));
        s.wait_for(WEB0, A, "web-0 from the last file", |m| {
            ip_strings(m) == ["10.0.2.2"]
        })
        .await;
        // Gone from both: the name goes.
        rewrite(&last, &one_pod(false, None));
        rewrite(&first, &one_pod(true, None));
        s.wait_for(WEB0, A, "web-0 gone", |m| {
            rcode(m) == ResponseCode::NXDomain
        })
        .await;
        s.stop().await;
    })
    .await;
}

fn sim_manifests() -> String {
    let svc = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{clusterIP: None, ports: [{{name: web, port: 80}}]}}\n---\n"
        )
    };
    let sts = |name: &str, svc: &str, n: u32, policy: &str| {
        format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: {name}, namespace: default}}\nspec: {{serviceName: {svc}, replicas: {n}, podManagementPolicy: {policy}, selector: {{matchLabels: {{a: b}}}}, template: {{metadata: {{labels: {{a: b}}}}, spec: {{containers: [{{name: c, image: x}}]}}}}}}\n---\n"
        )
    };
    [
        svc("nginx"),
        sts("web", "nginx", 3, "OrderedReady"),
        svc("mongo"),
        sts("mongo", "mongo", 3, "Parallel"),
    ]
    .concat()
}

fn name(pod: &str, svc: &str) -> String {
    format!("{pod}.{svc}.default.svc.cluster.local")
}

const NGINX_SET: &str = "nginx.default.svc.cluster.local";
const MONGO_SET: &str = "mongo.default.svc.cluster.local";

/// A server on [`sim_manifests`] with the simulator on, each pod ready
/// `ready_delay_ms` after it starts.
async fn simulated(ready_delay_ms: u64) -> TestServer {
    TestServer::with_manifests(&sim_manifests(), |c| {
        c.sim.enabled = true;
        c.sim.ready_delay_ms = ready_delay_ms;
    })
    .await
}

/// Posts to the admin API; returns the status and body.
async fn post(s: &TestServer, path: &str) -> (u16, String) {
    http::post(s.admin, path).await.unwrap()
}

/// Deletes web-1: same name, new IP, never both, old PTR gone.
async fn deleted_pod_comes_back_with_a_new_ip(s: &TestServer) {
    let old: IpAddr = ips(&s.query(Proto::Udp, &name("web-1", "nginx"), A).await)[0];
    let (status, body) = post(s, "/sim/pods/default/web-1/delete").await;
    assert_eq!(status, 200, "{body}");
    let m = s
        .wait_for(
            &name("web-1", "nginx"),
            A,
            "web-1 back with a new IP",
            |m| {
                let got = ips(m);
                assert!(got.len() <= 1, "never two addresses for one pod: {got:?}");
                got.len() == 1 && got[0] != old
            },
        )
        .await;
    let new = ips(&m)[0];
    assert_eq!(
        rcode(&s.query(Proto::Udp, &reverse_v4(old), PTR).await),
        ResponseCode::NXDomain,
        "old PTR gone"
    );
    assert_eq!(
        s.query(Proto::Udp, &reverse_v4(new), PTR)
            .await
            .answers
            .len(),
        1
    );
}

/// Not ready: web-0 leaves the set, its name is NXDOMAIN; ready again: back.
async fn readiness_takes_a_pod_out_and_back(s: &TestServer) {
    let (status, _) = post(s, "/sim/pods/default/web-0/ready?value=false").await;
    assert_eq!(status, 200);
    s.wait_for(NGINX_SET, A, "web-0 out of the set", |m| {
        m.answers.len() == 2
    })
    .await;
    assert_eq!(
        rcode(&s.query(Proto::Udp, &name("web-0", "nginx"), A).await),
        ResponseCode::NXDomain
    );
    post(s, "/sim/pods/default/web-0/ready?value=true").await;
    s.wait_for(NGINX_SET, A, "web-0 back", |m| m.answers.len() == 3)
        .await;
}

/// Scale down 3 -> 1: web-2 goes first, then web-1; back up to 3: the same
/// names return.
async fn scale_down_from_the_top_and_back_up(s: &TestServer) {
    let (status, _) = post(s, "/sim/statefulsets/default/web/scale?replicas=1").await;
    assert_eq!(status, 200);
    s.wait_for(&name("web-2", "nginx"), A, "web-2 gone", |m| {
        rcode(m) == ResponseCode::NXDomain
    })
    .await;
    let web1_still_there = s.query(Proto::Udp, &name("web-1", "nginx"), A).await;
    assert_eq!(
        rcode(&web1_still_there),
        ResponseCode::NoError,
        "web-1 outlives web-2"
    );
    s.wait_for(&name("web-1", "nginx"), A, "web-1 gone", |m| {
        rcode(m) == ResponseCode::NXDomain
    })
    .await;
    assert_eq!(s.query(Proto::Udp, NGINX_SET, A).await.answers.len(), 1);

    post(s, "/sim/statefulsets/default/web/scale?replicas=3").await;
    s.wait_for(&name("web-2", "nginx"), A, "web-2 back", |m| {
        m.answers.len() == 1
    })
    .await;
}

/// Unknown names: 404 with a clear message.
async fn unknown_sim_objects_are_404(s: &TestServer) {
    let (status, body) = post(s, "/sim/pods/default/web-9/delete").await;
    assert_eq!(status, 404);
    assert!(body.contains("no simulated pod default/web-9"), "{body}");
    let (status, body) = post(s, "/sim/statefulsets/default/nope/scale?replicas=1").await;
    assert_eq!(status, 404);
    assert!(
        body.contains("no simulated StatefulSet default/nope"),
        "{body}"
    );
}

#[tokio::test]
async fn simulator_statefulsets_come_to_life() {
    within(Duration::from_secs(60), async {
        let s = simulated(300).await;

        // OrderedReady: the headless set grows one pod at a time, in ordinal
        // order, and a name resolves only once its pod is ready.
        let m = s
            .wait_for(NGINX_SET, A, "all three web pods", |m| m.answers.len() == 3)
            .await;
        let order = ips(&m);
        for (i, ip) in order.iter().enumerate() {
            let m = s
                .query(Proto::Udp, &name(&format!("web-{i}"), "nginx"), A)
                .await;
            assert_eq!(ips(&m), vec![*ip], "set order is ordinal order (web-{i})");
        }

        // Parallel: all mongo pods exist at once (each ready after the delay).
        let m = s
            .wait_for(MONGO_SET, A, "mongo pods", |m| m.answers.len() == 3)
            .await;
        assert_eq!(m.answers.len(), 3);

        deleted_pod_comes_back_with_a_new_ip(&s).await;
        readiness_takes_a_pod_out_and_back(&s).await;
        scale_down_from_the_top_and_back_up(&s).await;
        unknown_sim_objects_are_404(&s).await;
        s.stop().await;
    })
    .await;
}

/// Watches the `nginx` (OrderedReady) and `mongo` (Parallel) sets until
/// both hold 3 pods (at most 20 s); returns, per set, when each size was
/// first seen (since the watch began), in order.
async fn watch_both_sets_grow(s: &TestServer) -> [Vec<(usize, Duration)>; 2] {
    let mut seen: [Vec<(usize, Duration)>; 2] = [Vec::new(), Vec::new()];
    let start = Instant::now();
    while seen.iter().any(|v| v.last().is_none_or(|(n, _)| *n < 3)) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "sets still growing: {seen:?}"
        );
        for (set, sizes) in [NGINX_SET, MONGO_SET].into_iter().zip(&mut seen) {
            let n = s.query(Proto::Udp, set, A).await.answers.len();
            if n > 0 && sizes.last().is_none_or(|(last, _)| *last != n) {
                sizes.push((n, start.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen
}

#[tokio::test]
async fn parallel_pods_come_up_together_ordered_ready_ones_in_turn() {
    within(Duration::from_secs(60), async {
        // Long enough that one pod at a time is far from all at once.
        const READY: Duration = Duration::from_millis(1000);
        let s = simulated(READY.as_millis() as u64).await;
        let [nginx, mongo] = watch_both_sets_grow(&s).await;
        eprintln!("OrderedReady: {nginx:?}\nParallel: {mongo:?}");
        // Parallel: every ordinal starts at once, so all three are ready
        // within one readiness period of the first.
        let spread = mongo.last().unwrap().1 - mongo[0].1;
        assert!(
            spread < READY,
            "Parallel pods came up {spread:?} apart (readiness {READY:?}): {mongo:?}"
        );
        // OrderedReady: one at a time, each starting once the one before it
        // is ready, so a readiness period apart (half of one, for the polling).
        let sizes: Vec<usize> = nginx.iter().map(|(n, _)| *n).collect();
        assert_eq!(sizes, [1, 2, 3], "one pod at a time");
        for w in nginx.windows(2) {
            let gap = w[1].1 - w[0].1;
            assert!(
                gap >= READY / 2,
                "OrderedReady pods {gap:?} apart: {nginx:?}"
            );
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn ordered_ready_names_resolve_only_once_ready() {
    within(Duration::from_secs(60), async {
        let s = simulated(400).await;
        // Observe the set as it grows: it only ever holds a prefix web-0..web-k,
        // and web-(k+1) is NXDOMAIN (with the short pending TTL) meanwhile.
        let mut sizes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let m = s.query(Proto::Udp, NGINX_SET, A).await;
            let n = m.answers.len();
            if sizes.last() != Some(&n) {
                sizes.push(n);
                if n < 3 {
                    let next = s
                        .query(Proto::Udp, &name(&format!("web-{n}"), "nginx"), A)
                        .await;
                    // it may have become ready in between; if not, it is pending
                    if rcode(&next) == ResponseCode::NXDomain {
                        assert_eq!(
                            authority_soa(&next),
                            Some(NegativeTtl::both(1)),
                            "pending pod TTL"
                        );
                    }
                }
            }
            if n == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sizes: Vec<usize> = sizes.into_iter().filter(|n| *n > 0).collect();
        assert_eq!(sizes, [1, 2, 3], "one pod at a time");
        s.stop().await;
    })
    .await;
}
