//! Sources observed through DNS answers: manifest edits applied as diffs, a
//! broken file keeping the last good state, and the StatefulSet simulator
//! driven through the admin API.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType::{A, PTR};
use support::dns::{Proto, TestServer, http, ip_strings, ips, rcode, rewrite};

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

#[tokio::test]
async fn manifest_edits_are_applied_and_broken_files_keep_the_last_good_state() {
    tokio::time::timeout(Duration::from_secs(60), async {
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

        // A broken file: bad YAML, then a bad field type. The last good state serves on.
        let (_, before) = http(s.admin, "GET", "/records").await.unwrap();
        for broken in [
            "apiVersion: v1\nkind: Service\nmetadata: [oops\n",
            &manifests("not-an-ip", false, false),
        ] {
            rewrite(&path, broken);
            // Give the poller (50 ms) several rounds, then check nothing moved.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(
                ip_strings(&s.query(Proto::Udp, WEB1, A).await),
                ["10.0.0.22"]
            );
            let (_, after) = http(s.admin, "GET", "/records").await.unwrap();
            let strip = |j: &str| -> serde_json::Value {
                let mut v: serde_json::Value = serde_json::from_str(j).unwrap();
                for svc in v["services"].as_array_mut().unwrap() {
                    for ep in svc["endpoints"].as_array_mut().unwrap() {
                        ep.as_object_mut().unwrap().remove("changed_ms_ago");
                    }
                }
                v.as_object_mut().unwrap().remove("serial");
                v
            };
            assert_eq!(
                strip(&before),
                strip(&after),
                "index unchanged by a broken file"
            );
        }
        // Fixed again: applied.
        rewrite(&path, &manifests("10.0.0.23", false, false));
        s.wait_for(WEB1, A, "web-1 after the fix", |m| {
            ip_strings(m) == ["10.0.0.23"]
        })
        .await;
        s.stop().await;
    })
    .await
    .expect("test timed out");
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

#[tokio::test]
async fn simulator_statefulsets_come_to_life() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let s = TestServer::with_manifests(&sim_manifests(), |c| {
            c.sim.enabled = true;
            c.sim.ready_delay_ms = 300;
        })
        .await;
        let set = "nginx.default.svc.cluster.local";

        // OrderedReady: the headless set grows one pod at a time, in ordinal
        // order, and a name resolves only once its pod is ready.
        let m = s
            .wait_for(set, A, "all three web pods", |m| m.answers.len() == 3)
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
            .wait_for("mongo.default.svc.cluster.local", A, "mongo pods", |m| {
                m.answers.len() == 3
            })
            .await;
        assert_eq!(m.answers.len(), 3);

        // Delete web-1: same name, new IP, never both, old PTR gone.
        let old: IpAddr = ips(&s.query(Proto::Udp, &name("web-1", "nginx"), A).await)[0];
        let (status, body) = http(s.admin, "POST", "/sim/pods/default/web-1/delete")
            .await
            .unwrap();
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
        let rev = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
            }
            IpAddr::V6(_) => unreachable!(),
        };
        assert_eq!(
            rcode(&s.query(Proto::Udp, &rev(old), PTR).await),
            ResponseCode::NXDomain,
            "old PTR gone"
        );
        assert_eq!(s.query(Proto::Udp, &rev(new), PTR).await.answers.len(), 1);

        // Not ready: web-0 leaves the set, its name is NXDOMAIN; ready again: back.
        let (status, _) = http(s.admin, "POST", "/sim/pods/default/web-0/ready?value=false")
            .await
            .unwrap();
        assert_eq!(status, 200);
        s.wait_for(set, A, "web-0 out of the set", |m| m.answers.len() == 2)
            .await;
        assert_eq!(
            rcode(&s.query(Proto::Udp, &name("web-0", "nginx"), A).await),
            ResponseCode::NXDomain
        );
        http(s.admin, "POST", "/sim/pods/default/web-0/ready?value=true")
            .await
            .unwrap();
        s.wait_for(set, A, "web-0 back", |m| m.answers.len() == 3)
            .await;

        // Scale down 3 -> 1: web-2 goes first, then web-1.
        let (status, _) = http(
            s.admin,
            "POST",
            "/sim/statefulsets/default/web/scale?replicas=1",
        )
        .await
        .unwrap();
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
        assert_eq!(s.query(Proto::Udp, set, A).await.answers.len(), 1);

        // Scale back up: the same names return.
        http(
            s.admin,
            "POST",
            "/sim/statefulsets/default/web/scale?replicas=3",
        )
        .await
        .unwrap();
        s.wait_for(&name("web-2", "nginx"), A, "web-2 back", |m| {
            m.answers.len() == 1
        })
        .await;

        // Unknown names: 404 with a clear message.
        let (status, body) = http(s.admin, "POST", "/sim/pods/default/web-9/delete")
            .await
            .unwrap();
        assert_eq!(status, 404);
        assert!(body.contains("no simulated pod default/web-9"), "{body}");
        let (status, body) = http(
            s.admin,
            "POST",
            "/sim/statefulsets/default/nope/scale?replicas=1",
        )
        .await
        .unwrap();
        assert_eq!(status, 404);
        assert!(
            body.contains("no simulated StatefulSet default/nope"),
            "{body}"
        );
        s.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn ordered_ready_names_resolve_only_once_ready() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let s = TestServer::with_manifests(&sim_manifests(), |c| {
            c.sim.enabled = true;
            c.sim.ready_delay_ms = 400;
        })
        .await;
        // Observe the set as it grows: it only ever holds a prefix web-0..web-k,
        // and web-(k+1) is NXDOMAIN (with the short pending TTL) meanwhile.
        let set = "nginx.default.svc.cluster.local";
        let mut sizes = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            let m = s.query(Proto::Udp, set, A).await;
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
                            support::dns::soa_negative_ttl(&next),
                            Some((1, 1)),
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
    .await
    .expect("test timed out");
}
