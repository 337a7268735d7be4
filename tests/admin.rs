//! The admin side door against the real server: health and readiness, every
//! documented metric present and moving, `/records` agreeing with DNS, and a
//! refused scale. The record browser page is tested in Chromium in
//! `tests/record_browser.rs`.

mod support;

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

const MONGO: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: mongo, namespace: default}\nspec: {clusterIP: None}\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: mongo, namespace: default}\nspec: {serviceName: mongo, replicas: 2, podManagementPolicy: Parallel, selector: {matchLabels: {a: m}}, template: {metadata: {labels: {a: m}}, spec: {containers: [{name: c, image: x}]}}}\n";

/// A scale past what the pod CIDR holds is refused with 400 and a message,
/// and changes nothing; one within it still works.
#[tokio::test]
async fn scale_beyond_the_pod_cidr_is_refused() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let s = TestServer::with_manifests(MONGO, |c| {
            c.sim.enabled = true;
            c.sim.ready_delay_ms = 50;
            c.sim.pod_cidr = "10.9.0.0/24".into(); // 254 pod addresses
        })
        .await;
        let name = "mongo.default.svc.cluster.local";
        s.wait_for(name, A, "both pods", |m| m.answers.len() == 2)
            .await;
        for n in ["4294967295", "255"] {
            let path = format!("/sim/statefulsets/default/mongo/scale?replicas={n}");
            let (status, body) = http::request(s.admin, "POST", &path).await.unwrap();
            assert_eq!(status, 400, "{body}");
            assert!(body.contains("254"), "the message names the bound: {body}");
        }
        // Nothing changed: still two pods, and the simulator still answers.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(s.query(Proto::Udp, name, A).await.answers.len(), 2);
        let path = "/sim/statefulsets/default/mongo/scale?replicas=254";
        let (status, body) = http::request(s.admin, "POST", path).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("from 2 to 254"), "{body}");
        s.stop().await;
    })
    .await
    .expect("test timed out");
}
