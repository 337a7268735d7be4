//! The record browser (`/`) rendered by a real headless Chromium against the
//! real server and its simulator: a recreated pod shows its new address and
//! its previous one, a scale-up shows the new ordinal pending and then ready
//! with the ready/desired count, the filter (from `?filter=`) hides other
//! services, the timeline lists the change with its latency, and a
//! StatefulSet of two billion replicas shows what exists, 16 pending
//! ordinals and a count of the rest. Then
//! `/records`' history for the file source without the simulator and for
//! the Kubernetes source (the fake API server).

mod support;

use std::process::Command;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType::A;
use serde_json::Value;
use support::dns::{self, NegativeTtl, Proto, ip_strings};
use support::server::TestServer;
use support::{eventually, http, within};

const STS: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: nginx, namespace: default}\nspec: {clusterIP: None, ports: [{name: web, port: 80}]}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: web, namespace: default}\nspec: {serviceName: nginx, replicas: 2, selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: x}]}}}\n";

const MONGO: &str = "---\napiVersion: v1\nkind: Service\nmetadata: {name: mongo, namespace: default}\nspec: {clusterIP: None}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: mongo, namespace: default}\nspec: {serviceName: mongo, replicas: 2, podManagementPolicy: Parallel, selector: {matchLabels: {a: m}}, template: {metadata: {labels: {a: m}}, spec: {containers: [{name: c, image: x}]}}}\n";

const WEB1: &str = "web-1.nginx.default.svc.cluster.local";
const WEB2: &str = "web-2.nginx.default.svc.cluster.local";

/// A server on `manifests` with the simulator bringing pods up after
/// `ready_delay_ms`.
async fn start_sim(manifests: &str, ready_delay_ms: u64) -> TestServer {
    TestServer::with_manifests(manifests, |c| {
        c.sim.enabled = true;
        c.sim.ready_delay_ms = ready_delay_ms;
    })
    .await
}

fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is installed (.ci/test installs it)")
}

/// Renders `url` in headless Chromium (scripts run, a few virtual seconds)
/// with a fresh profile; returns the DOM, or with `screenshot` writes a PNG.
fn chromium_run(url: &str, screenshot: Option<&std::path::Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=3000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(p) => cmd
            .arg(format!("--screenshot={}", p.display()))
            .arg("--window-size=1280,1300"),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM of the admin page at `path` (`/`, `/?filter=web`).
async fn dom(s: &TestServer, path: &str) -> String {
    let url = format!("http://{}{path}", s.admin);
    tokio::task::spawn_blocking(move || chromium_run(&url, None))
        .await
        .unwrap()
}

/// The element `<tag ...>` whose opening tag holds `attr`, up to its close.
fn element<'a>(dom: &'a str, tag: &str, attr: &str) -> &'a str {
    let at = dom
        .find(attr)
        .unwrap_or_else(|| panic!("no {attr} in the page:\n{dom}"));
    let open = dom[..at]
        .rfind(&format!("<{tag}"))
        .expect("its opening tag");
    let close = dom[at..]
        .find(&format!("</{tag}>"))
        .expect("its closing tag");
    &dom[open..at + close]
}

async fn records(s: &TestServer, query: &str) -> Value {
    let (status, body) = http::get(s.admin, &format!("/records{query}"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn a_recreated_pod_its_previous_address_the_timeline_and_the_filter() {
    within(Duration::from_secs(120), async {
        let s = start_sim(&format!("{STS}{MONGO}"), 50).await;
        let m = s.wait_for(WEB1, A, "web-1", |m| m.answers.len() == 1).await;
        let old = ip_strings(&m)[0].clone();
        s.wait_for(
            "mongo-1.mongo.default.svc.cluster.local",
            A,
            "mongo-1",
            |m| m.answers.len() == 1,
        )
        .await;

        http::post(s.admin, "/sim/pods/default/web-1/delete")
            .await
            .unwrap();
        let m = s
            .wait_for(WEB1, A, "web-1 moved", |m| {
                let ips = ip_strings(m);
                ips.len() == 1 && ips[0] != old
            })
            .await;
        let new = ip_strings(&m)[0].clone();

        let page = dom(&s, "/").await;
        let row = element(&page, "tr", "data-endpoint=\"web-1\"");
        assert!(row.contains(&new), "web-1's new address {new}:\n{row}");
        assert!(
            row.contains(&format!("was {old}")),
            "and its previous one {old}:\n{row}"
        );
        let web0 = page.find("data-endpoint=\"web-0\"").expect("web-0 row");
        assert!(
            web0 < page.find("data-endpoint=\"web-1\"").unwrap(),
            "ordinal order"
        );
        assert!(
            page.contains("mongo.default.svc.cluster.local"),
            "unfiltered: mongo shown"
        );

        // The timeline: the move, with a latency; /records agrees.
        let timeline = element(&page, "ol", "id=\"timeline\"");
        let moved = format!("web-1 {old} → {new}");
        let li_at = timeline
            .find(&moved)
            .unwrap_or_else(|| panic!("{moved} in the timeline:\n{timeline}"));
        let li_end = li_at + timeline[li_at..].find("</li>").unwrap();
        let li = &timeline[li_at..li_end];
        assert!(li.contains("latency ") && li.contains(" ms"), "{li}");
        let v = records(&s, "?namespace=default&service=nginx").await;
        let change = v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["items"].as_array().unwrap().iter().any(|i| {
                    i["name"] == "web-1" && i["kind"] == "moved" && i["to"][0] == new.as_str()
                })
            })
            .unwrap_or_else(|| panic!("the move in /records' changes: {v}"));
        let (arrived, served) = (
            change["arrived_us"].as_u64().unwrap(),
            change["served_us"].as_u64().unwrap(),
        );
        assert!(served >= arrived && arrived > 0, "{change}");
        assert_eq!(change["latency_us"].as_u64().unwrap(), served - arrived);

        // The filter from the URL: web's service stays, mongo goes.
        let filtered = dom(&s, "/?filter=web").await;
        assert!(filtered.contains("1 of 2 services match"), "{filtered}");
        assert!(filtered.contains("data-endpoint=\"web-1\""), "{filtered}");
        assert!(
            !filtered.contains("mongo"),
            "mongo hidden by the filter:\n{filtered}"
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_scale_up_shows_the_new_pod_pending_then_ready() {
    within(Duration::from_secs(120), async {
        let s = start_sim(STS, 300).await;
        s.wait_for(WEB1, A, "web-1", |m| m.answers.len() == 1).await;
        let (status, body) = http::post(s.admin, "/sim/statefulsets/default/web/scale?replicas=3")
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        // Hold web-2 not ready (the simulator makes it ready after 300 ms) so
        // the page is rendered while it is pending.
        eventually("web-2 to exist and be held not ready", || async {
            match http::post(s.admin, "/sim/pods/default/web-2/ready?value=false").await {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let ttl = headless_dns::Config::default().dns.pending_negative_ttl;
        let v = records(&s, "?service=nginx&name=web-2").await;
        let ord = &v["services"][0]["statefulsets"][0]["ordinals"][0];
        assert_eq!(
            (ord["name"].as_str(), ord["state"].as_str()),
            (Some("web-2"), Some("not_ready")),
            "{v}"
        );
        assert_eq!(ord["negative_ttl"], ttl);
        // What the page will say is what DNS does: NXDOMAIN, with that TTL.
        let m = s.query(Proto::Udp, WEB2, A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m:?}");
        assert_eq!(
            dns::authority_soa(&m),
            Some(NegativeTtl::both(ttl)),
            "{m:?}"
        );

        let page = dom(&s, "/").await;
        let sts = element(&page, "div", "data-statefulset=\"web\"");
        assert!(
            sts.contains(">2/3<") && sts.contains("OrderedReady"),
            "{sts}"
        );
        let row = element(&page, "tr", "data-endpoint=\"web-2\"");
        assert!(row.contains("data-state=\"not_ready\""), "{row}");
        assert!(
            row.contains(&format!(
                "pending: not ready (NXDOMAIN, negative TTL {ttl} s)"
            )),
            "{row}"
        );

        http::post(s.admin, "/sim/pods/default/web-2/ready?value=true")
            .await
            .unwrap();
        s.wait_for(WEB2, A, "web-2 ready", |m| m.answers.len() == 1)
            .await;
        let page = dom(&s, "/").await;
        let sts = element(&page, "div", "data-statefulset=\"web\"");
        assert!(sts.contains(">3/3<"), "{sts}");
        let row = element(&page, "tr", "data-endpoint=\"web-2\"");
        assert!(row.contains("data-state=\"ready\""), "{row}");
        assert!(
            row.contains("not ready "),
            "its readiness history shows it was not ready:\n{row}"
        );
        let timeline = element(&page, "ol", "id=\"timeline\"");
        assert!(
            timeline.contains("statefulset web scaled 2 → 3"),
            "{timeline}"
        );
        assert!(timeline.contains("web-2 not ready → ready"), "{timeline}");
        s.stop().await;
    })
    .await;
}

/// The history of `label` in service `service` of `/records`.
fn history<'a>(v: &'a Value, service: &str, label: &str) -> &'a Value {
    let svc = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service)
        .unwrap_or_else(|| panic!("service {service} in {v}"));
    let ep = svc["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == label)
        .unwrap_or_else(|| panic!("{label} in {svc}"));
    &ep["history"]
}

/// The addresses of each spell of a history, newest first.
fn spells(h: &Value) -> Vec<String> {
    h["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["addresses"][0].as_str().unwrap().to_string())
        .collect()
}

fn file_manifests(web1: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: nginx, namespace: default}}\nspec: {{clusterIP: None}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: nginx-1, namespace: default, labels: {{kubernetes.io/service-name: nginx}}}}\naddressType: IPv4\nendpoints:\n  - {{addresses: [10.0.0.1], hostname: web-0}}\n  - {{addresses: [{web1}], hostname: web-1}}\n"
    )
}

#[tokio::test]
async fn file_source_edits_leave_an_address_history() {
    within(Duration::from_secs(60), async {
        let s = TestServer::with_manifests(&file_manifests("10.0.0.2"), |_| {}).await;
        let path = s.manifest_path();
        // Each edit changes the file's size: the file source notices a change
        // by size and mtime, and an mtime can repeat within a clock tick.
        for ip in ["10.0.0.33", "10.0.0.144"] {
            support::server::rewrite(&path, &file_manifests(ip));
            s.wait_for(WEB1, A, ip, |m| ip_strings(m) == [ip]).await;
        }
        let v = records(&s, "").await;
        let h = history(&v, "nginx", "web-1");
        assert_eq!(spells(h), ["10.0.0.144", "10.0.0.33", "10.0.0.2"], "{h}");
        assert!(h["addresses"][0]["until_ms"].is_null(), "{h}");
        assert!(h["addresses"][1]["until_ms"].as_u64() >= h["addresses"][1]["from_ms"].as_u64());
        assert_eq!(spells(history(&v, "nginx", "web-0")), ["10.0.0.1"]);
        let moves = v["changes"].as_array().unwrap();
        assert_eq!(moves.len(), 2, "two edits after the first sync: {v}");
        assert_eq!(moves[0]["items"][0]["to"][0], "10.0.0.144", "newest first");
        // The metrics follow the history's size: only web-1 has a past (3
        // address sets, 1 state); web-0's history above is its view's.
        let (_, metrics) = http::get(s.admin, "/metrics").await.unwrap();
        assert!(
            metrics.contains("headless_dns_history_entries{kind=\"change\"} 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains("headless_dns_history_names 1")
                && metrics.contains("headless_dns_history_entries{kind=\"name\"} 4"),
            "{metrics}"
        );

        // Queries per second: every query shows up in the samples.
        const N: u32 = 50;
        for _ in 0..N {
            s.query(Proto::Udp, WEB1, A).await;
        }
        let counted = eventually("the queries to be sampled", || async {
            let v = records(&s, "?service=none").await;
            let rates = v["queries_per_second"].as_array().unwrap().clone();
            // Each sample: [end ms, rate, interval ms].
            let total: f64 = rates
                .iter()
                .map(|r| r[1].as_f64().unwrap() * r[2].as_f64().unwrap() / 1000.0)
                .sum();
            if total >= N as f64 {
                Ok(total)
            } else {
                Err(format!("{total} of {N}: {rates:?}"))
            }
        })
        .await;
        assert!(counted >= N as f64);
        s.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_source_changes_leave_an_address_history() {
    use support::k8s::{NS, endpoint_slice, ready, start_synced, web_cluster, web_ip};
    within(support::k8s::TEST_TIMEOUT, async {
        let (api, server) = start_synced(web_cluster(2, 2)).await;
        let moved: std::net::IpAddr = "10.244.9.9".parse().unwrap();
        api.apply(endpoint_slice(
            NS,
            "nginx",
            &[ready("web-0", web_ip(0)), ready("web-1", moved)],
        ));
        server
            .wait_for(WEB1, A, "web-1 moved", |m| {
                ip_strings(m) == [moved.to_string()]
            })
            .await;
        let v = records(&server, "?service=nginx").await;
        let h = history(&v, "nginx", "web-1");
        assert_eq!(spells(h), [moved.to_string(), web_ip(1).to_string()], "{h}");
        let sts = &v["services"][0]["statefulsets"][0];
        assert_eq!(
            (sts["ready"].as_u64(), sts["desired"].as_u64()),
            (Some(2), Some(2)),
            "{sts}"
        );
        let change = &v["changes"][0];
        assert_eq!(change["items"][0]["kind"], "moved", "{change}");
        assert!(change["served_us"].as_u64() >= change["arrived_us"].as_u64());
        server.stop().await;
    })
    .await;
}

/// A StatefulSet of `replicas: 2147483647` with two pods in the manifest
/// (a slice of its own: the simulator leaves it alone).
const HUGE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\nspec: {clusterIP: None}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: big, namespace: default}\nspec: {serviceName: big, replicas: 2147483647, selector: {matchLabels: {a: g}}, template: {metadata: {labels: {a: g}}, spec: {containers: [{name: c, image: x}]}}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: big-1, namespace: default, labels: {kubernetes.io/service-name: big}}\naddressType: IPv4\nendpoints:\n- {addresses: [10.1.0.1], hostname: big-0, conditions: {ready: true}}\n- {addresses: [10.1.0.2], hostname: big-1, conditions: {ready: true}}\n";

/// The page shows such a StatefulSet as 2/2147483647 ready with a strip of
/// its two pods and the lowest 16 pending ordinals, then the count of the
/// others, and one row per listed ordinal: what `/records` bounds it to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_of_two_billion_replicas_shows_a_bounded_strip() {
    within(Duration::from_secs(60), async {
        let s = TestServer::with_manifests(HUGE, |_| {}).await;
        let page = dom(&s, "/").await;
        let sts = element(&page, "div", "data-statefulset=\"big\"");
        assert!(sts.contains("2/2147483647"), "{sts}");
        assert_eq!(sts.matches("class=\"ord ready\"").count(), 2, "{sts}");
        assert_eq!(
            sts.matches("class=\"ord not_created\"").count(),
            16,
            "{sts}"
        );
        assert!(
            sts.contains(">17</span>") && !sts.contains(">18</span>"),
            "{sts}"
        );
        assert!(sts.contains("+2147483629 more pending"), "{sts}");
        let section = element(&page, "section", "data-service=\"default/big\"");
        assert_eq!(
            section.matches(" data-endpoint=\"").count(),
            18,
            "{section}"
        );
        s.stop().await;
    })
    .await;
}

/// A follower (transfer source) of a primary that then goes away: the page
/// says whom it follows, the serial it serves, when the zone was last
/// confirmed and the lag since, and that it has not expired; `/records`
/// has the same, and for a server not on the transfer source, nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_shows_its_primary_serial_and_lag() {
    within(Duration::from_secs(60), async {
        let primary = TestServer::with_manifests(STS, |c| {
            c.transfer.allow = vec!["127.0.0.1/32".parse().unwrap()];
        })
        .await;
        let mut c = support::server::test_config(Vec::new());
        c.source.kind = headless_dns::config::SourceKind::Transfer;
        c.source.primary = Some(primary.dns);
        c.source.refresh_ms = Some(100);
        let follower = TestServer::start(c).await;
        assert!(records(&primary, "").await["follow"].is_null());
        let before = records(&follower, "").await;
        let serial = before["follow"]["serial"].as_u64().unwrap();
        assert!(serial > 0, "{}", before["follow"]);
        primary.stop().await;
        // Past a failed refresh (a check times out after 5 s: its UDP socket
        // is unconnected, so a closed port is silence) the lag has grown;
        // the zone still serves.
        let v = eventually("a failed check and the lag past 1.5 s", || async {
            let v = records(&follower, "").await;
            let f = &v["follow"];
            match (f["lag_ms"].as_u64(), f["failures"].as_u64()) {
                (Some(lag), Some(failures)) if lag >= 1500 && failures >= 1 => Ok(v),
                _ => Err(f.to_string()),
            }
        })
        .await;
        let f = &v["follow"];
        assert_eq!(f["expired"], false);
        assert_eq!(follower.ready_status().await, 200);
        let page = dom(&follower, "/").await;
        let line = element(&page, "p", "id=\"follow\"");
        assert!(!line.contains("hidden"), "{line}");
        assert!(line.contains(&primary_text(&v)), "{line}");
        assert!(line.contains(&format!(">{serial}<")), "{line}");
        let lag = element(line, "span", "id=\"follow-lag\"");
        assert!(lag.ends_with(" s"), "a lag in seconds: {lag}");
        let expired = element(line, "span", "id=\"follow-expired\"");
        assert!(expired.ends_with(">not expired"), "{expired}");
        follower.stop().await;
    })
    .await;
}

fn primary_text(v: &Value) -> String {
    v["follow"]["primary"].as_str().unwrap().to_string()
}
