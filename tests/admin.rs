//! The admin side door against the real server: health and readiness, every
//! documented metric present and moving, `/records` agreeing with DNS, and the
//! record browser rendered by headless Chromium before and after a pod moves.

mod support;

use std::process::Command;
use std::time::Duration;

use hickory_proto::rr::RecordType::A;
use support::dns::{Proto, ip_strings};
use support::server::TestServer;
use support::{http, within};

const STS: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: nginx, namespace: default}\nspec: {clusterIP: None, ports: [{name: web, port: 80}]}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: web, namespace: default}\nspec: {serviceName: nginx, replicas: 2, selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: x}]}}}\n";

/// A server on [`STS`] with the simulator bringing its pods up.
async fn start_sts() -> TestServer {
    TestServer::with_manifests(STS, |c| {
        c.sim.enabled = true;
        c.sim.ready_delay_ms = 50;
    })
    .await
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn health_ready_metrics_and_records() {
    within(Duration::from_secs(60), async {
        let s = start_sts().await;
        assert_eq!(http::get(s.admin, "/health").await.unwrap().0, 200);
        let (status, body) = http::get(s.admin, "/ready").await.unwrap();
        assert_eq!(
            (status, body.contains("\"ready\":true")),
            (200, true),
            "{body}"
        );
        s.wait_for("nginx.default.svc.cluster.local", A, "both pods", |m| {
            m.answers.len() == 2
        })
        .await;

        let (_, before) = http::get(s.admin, "/metrics").await.unwrap();
        for (name, _, _) in headless_dns::telemetry::METRICS {
            if name.starts_with("headless_dns_forward_")
                || name.starts_with("headless_dns_transfer_")
            {
                continue; // only with forwarding, zone transfers on (tests/transfer.rs)
            }
            assert!(before.contains(name), "metric {name} missing from /metrics");
        }
        // Send N queries of each kind: the counters grow by exactly N.
        const N: usize = 25;
        for _ in 0..N {
            s.query(Proto::Udp, "web-0.nginx.default.svc.cluster.local", A)
                .await;
            s.query(Proto::Tcp, "nope.nginx.default.svc.cluster.local", A)
                .await;
        }
        let (_, after) = http::get(s.admin, "/metrics").await.unwrap();
        let delta = |series: &str| metric(&after, series) - metric(&before, series);
        assert_eq!(
            delta("headless_dns_dns_requests_total{proto=\"udp\",type=\"A\"}"),
            N as f64
        );
        assert_eq!(
            delta("headless_dns_dns_responses_total{proto=\"tcp\",rcode=\"NXDOMAIN\"}"),
            N as f64
        );
        assert_eq!(
            delta("headless_dns_dns_request_duration_seconds_count{proto=\"udp\"}"),
            N as f64
        );
        assert_eq!(metric(&after, "headless_dns_index_services"), 1.0);
        assert_eq!(metric(&after, "headless_dns_index_names"), 2.0);
        assert_eq!(metric(&after, "headless_dns_index_ready"), 1.0);
        assert!(
            metric(
                &after,
                "headless_dns_source_events_total{kind=\"EndpointSlice\",type=\"upsert\"}"
            ) >= 1.0
        );
        assert!(metric(&after, "headless_dns_index_publish_duration_seconds_count") >= 1.0);

        // /records says what DNS answers.
        let (_, body) = http::get(s.admin, "/records?namespace=default&service=nginx")
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let svc = &v["services"][0];
        assert_eq!(svc["type"], "Headless");
        for ep in svc["endpoints"].as_array().unwrap() {
            let dns = ip_strings(&s.query(Proto::Udp, ep["fqdn"].as_str().unwrap(), A).await);
            let json: Vec<String> = ep["addresses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            assert_eq!(dns, json, "{}", ep["fqdn"]);
        }
        s.stop().await;
    })
    .await;
}

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// Renders `url` in headless Chromium (scripts run) and returns the DOM.
fn dump_dom(url: &str, screenshot: Option<&std::path::Path>) -> String {
    let bin = chromium().expect("chromium is installed (.ci/test installs it)");
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin);
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
            .arg("--window-size=1100,900"),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn record_browser_in_chromium() {
    within(Duration::from_secs(90), async {
        let s = start_sts().await;
        let m = s
            .wait_for("web-1.nginx.default.svc.cluster.local", A, "web-1", |m| {
                m.answers.len() == 1
            })
            .await;
        let old = ip_strings(&m)[0].clone();
        let url = format!("http://{}/", s.admin);
        let dom = tokio::task::spawn_blocking({
            let url = url.clone();
            move || dump_dom(&url, None)
        })
        .await
        .unwrap();
        assert!(
            dom.contains("nginx.default.svc.cluster.local"),
            "table for the headless service:\n{dom}"
        );
        let web0 = dom.find("web-0.nginx").expect("web-0 row");
        let web1 = dom.find("web-1.nginx").expect("web-1 row");
        assert!(web0 < web1, "pods in ordinal order");
        assert!(dom.contains(&old), "web-1's IP {old} shown");

        http::post(s.admin, "/sim/pods/default/web-1/delete")
            .await
            .unwrap();
        let m = s
            .wait_for(
                "web-1.nginx.default.svc.cluster.local",
                A,
                "web-1 moved",
                |m| {
                    let ips = ip_strings(m);
                    ips.len() == 1 && ips[0] != old
                },
            )
            .await;
        let new = ip_strings(&m)[0].clone();
        let shot = std::env::temp_dir().join("headless-dns-records.png");
        let dom = tokio::task::spawn_blocking({
            let url = url.clone();
            let shot = shot.clone();
            move || {
                let _ = dump_dom(&url, Some(&shot));
                dump_dom(&url, None)
            }
        })
        .await
        .unwrap();
        assert!(dom.contains(&new), "the new IP {new} appears:\n{dom}");
        assert!(!dom.contains(&old), "the old IP {old} is gone");
        eprintln!("screenshot: {}", shot.display());
        s.stop().await;
    })
    .await;
}
