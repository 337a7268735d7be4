//! Cluster changes as a DNS client sees them, through the Kubernetes source
//! and the fake API server: StatefulSet pods coming up in ordinal order, a
//! pod recreated with a new address, scale down and up, readiness, and the
//! short negative TTL of a pod about to exist.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use support::dns::{self, Answer, BOTH, NegativeTtl, Proto, reverse_v4};
use support::k8s::{
    Endpoint, NS, TEST_TIMEOUT, apply_web_slice, endpoint_slice, fqdn, headless_service, ip, nginx,
    pod_name, ready, start_synced, statefulset, web_cluster, web_ip,
};
use support::{eventually, http, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pods_resolve_in_ordinal_order() {
    within(TEST_TIMEOUT, async {
        let (api, server) = start_synced(web_cluster(3, 0)).await;
        // A headless service with no ready endpoint does not exist.
        server.assert_a(&nginx(), &Answer::NxDomain).await;
        server.assert_a(&pod_name(0), &Answer::NxDomain).await;
        for n in 1..=3usize {
            let newest = n - 1;
            let names: Vec<String> = (0..n).map(|i| format!("web-{i}")).collect();
            // Slices keep no order: list the endpoints newest first, so only
            // the server's ordinal sort can put web-0 first in the answer.
            let mut eps: Vec<Endpoint<'_>> = names
                .iter()
                .enumerate()
                .rev()
                .map(|(i, name)| ready(name, web_ip(i)))
                .collect();
            // The controller starts web-<newest> once the ones before are
            // ready; it comes up not ready.
            eps[0].ready = false;
            api.apply(endpoint_slice(NS, "nginx", &eps));
            eps[0].ready = true;
            // Not ready yet: it does not resolve.
            let before: Vec<IpAddr> = (0..newest).map(web_ip).collect();
            eventually("the not-ready endpoint to be published", || async {
                // Published = the view changed; nothing visible in A answers,
                // so check the admin API's record list.
                let (_, body) = http::get(server.admin, "/records?service=nginx")
                    .await
                    .map_err(|e| e.to_string())?;
                if body.contains(&web_ip(newest).to_string()) {
                    Ok(())
                } else {
                    Err(body)
                }
            })
            .await;
            server.assert_a(&pod_name(newest), &Answer::NxDomain).await;
            if before.is_empty() {
                server.assert_a(&nginx(), &Answer::NxDomain).await;
            } else {
                server.assert_a(&nginx(), &Answer::ips(&before)).await;
            }
            api.apply(endpoint_slice(NS, "nginx", &eps));
            server
                .wait_for_a(&pod_name(newest), Answer::ips(&[web_ip(newest)]))
                .await;
            let all: Vec<IpAddr> = (0..n).map(web_ip).collect();
            server.assert_a(&nginx(), &Answer::ips(&all)).await;
            for i in 0..n {
                server
                    .assert_a(&pod_name(i), &Answer::ips(&[web_ip(i)]))
                    .await;
            }
            if n < 3 {
                server.assert_a(&pod_name(n), &Answer::NxDomain).await;
            }
        }
        server.stop().await;
    })
    .await;
}

/// The slices of web-1's replacement: terminating, gone from the slice,
/// recreated with the same name and a new address not ready, then ready.
fn recreate_steps(old: IpAddr, new: IpAddr) -> [Vec<Endpoint<'static>>; 4] {
    let web1 = |ip, ready, terminating| Endpoint {
        host: "web-1",
        ip,
        ready,
        terminating,
    };
    let (web0, web2) = (ready("web-0", web_ip(0)), ready("web-2", web_ip(2)));
    [
        vec![web0, web1(old, false, true), web2],
        vec![web0, web2],
        vec![web0, web1(new, false, false), web2],
        vec![web0, web1(new, true, false), web2],
    ]
}

/// Queries web-1 and the set over UDP until `stop` (at most 100,000
/// rounds); returns every (web-1, set) answer pair in order.
fn observe_web1(
    dns: SocketAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(Answer, Answer)>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..100_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let one = dns::try_query(Proto::Udp, dns, &pod_name(1), RecordType::A).await;
            let set = dns::try_query(Proto::Udp, dns, &nginx(), RecordType::A).await;
            seen.push((
                one.map(|m| Answer::of(&m)).expect("web-1 answers"),
                set.map(|m| Answer::of(&m)).expect("the set answers"),
            ));
        }
        seen
    })
}

/// web-1 answered the old address, then nothing, then the new one (never
/// the old after the new), and the set never held both.
fn assert_never_both(seen: &[(Answer, Answer)], old: IpAddr, new: IpAddr) {
    assert!(!seen.is_empty());
    let mut saw_new = false;
    for (one, set) in seen {
        match one {
            Answer::Addrs(a) if a == &[old] => {
                assert!(
                    !saw_new,
                    "the old address came back after the new one: {seen:?}"
                )
            }
            Answer::Addrs(a) if a == &[new] => saw_new = true,
            Answer::NxDomain => {}
            other => panic!("web-1 answered {other:?}; want the old or the new address alone"),
        }
        if let Answer::Addrs(a) = set {
            assert!(
                !(a.contains(&old) && a.contains(&new)),
                "the set holds both addresses of web-1: {a:?}"
            );
        }
    }
    eprintln!("recreate: {} observations of web-1 and the set", seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreated_pod_answers_its_new_ip_and_never_both() {
    within(TEST_TIMEOUT, async {
        let (api, server) = start_synced(web_cluster(3, 3)).await;
        let old = web_ip(1);
        let new = ip("10.244.7.77");
        let ptr = |m: &Message| (dns::rcode(m), dns::ptr_targets(m));
        let m = server
            .query(Proto::Udp, &reverse_v4(old), RecordType::PTR)
            .await;
        assert_eq!(ptr(&m), (ResponseCode::NoError, vec![pod_name(1)]));

        // Observe web-1 and the set continuously while the pod is replaced.
        let stop = Arc::new(AtomicBool::new(false));
        let observer = observe_web1(server.dns, Arc::clone(&stop));
        let steps = recreate_steps(old, new);
        let others = Answer::ips(&[web_ip(0), web_ip(2)]);
        for eps in &steps[..3] {
            api.apply(endpoint_slice(NS, "nginx", eps));
            // Each of these states serves web-0 and web-2 only.
            server.wait_for_a(&nginx(), others.clone()).await;
            server.wait_for_a(&pod_name(1), Answer::NxDomain).await;
        }
        api.apply(endpoint_slice(NS, "nginx", &steps[3]));
        server.wait_for_a(&pod_name(1), Answer::ips(&[new])).await;
        stop.store(true, Ordering::Relaxed);
        let seen = observer.await.expect("observer did not panic");
        assert_never_both(&seen, old, new);
        server
            .assert_a(&nginx(), &Answer::ips(&[web_ip(0), new, web_ip(2)]))
            .await;
        let m = server
            .query(Proto::Udp, &reverse_v4(old), RecordType::PTR)
            .await;
        assert_eq!(
            dns::rcode(&m),
            ResponseCode::NXDomain,
            "the old address's PTR"
        );
        let m = server
            .query(Proto::Tcp, &reverse_v4(new), RecordType::PTR)
            .await;
        assert_eq!(ptr(&m), (ResponseCode::NoError, vec![pod_name(1)]));
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_removes_highest_ordinals_first_and_scale_up_restores_them() {
    within(TEST_TIMEOUT, async {
        let (api, server) = start_synced(web_cluster(3, 3)).await;
        api.apply(statefulset(NS, "web", "nginx", 1));
        // The controller terminates web-2 first, and web-1 only once web-2 is gone.
        for gone in [2usize, 1] {
            let keep: Vec<usize> = (0..gone).collect();
            let names: Vec<String> = (0..=gone).map(|i| format!("web-{i}")).collect();
            let mut eps: Vec<Endpoint<'_>> =
                keep.iter().map(|i| ready(&names[*i], web_ip(*i))).collect();
            eps.push(Endpoint {
                host: &names[gone],
                ip: web_ip(gone),
                ready: false,
                terminating: true,
            });
            api.apply(endpoint_slice(NS, "nginx", &eps));
            server.wait_for_a(&pod_name(gone), Answer::NxDomain).await;
            // The lower ordinals still answer while the higher one is gone.
            for i in &keep {
                server
                    .assert_a(&pod_name(*i), &Answer::ips(&[web_ip(*i)]))
                    .await;
            }
            let set: Vec<IpAddr> = keep.iter().map(|i| web_ip(*i)).collect();
            server.assert_a(&nginx(), &Answer::ips(&set)).await;
            apply_web_slice(&api, &keep);
            server.assert_a(&pod_name(gone), &Answer::NxDomain).await;
        }
        // replicas = 1: web-1 is no longer a pending pod, so the normal
        // negative TTL applies (once the StatefulSet's own watch has
        // delivered the change: it is a separate stream from the slices').
        server
            .wait_for(
                &pod_name(1),
                RecordType::A,
                "web-1's normal negative TTL",
                |m| dns::authority_soa(m) == Some(NegativeTtl::both(5)),
            )
            .await;

        api.apply(statefulset(NS, "web", "nginx", 3));
        for up in [1usize, 2] {
            let pods: Vec<usize> = (0..=up).collect();
            apply_web_slice(&api, &pods);
            server
                .wait_for_a(&pod_name(up), Answer::ips(&[web_ip(up)]))
                .await;
            let set: Vec<IpAddr> = pods.iter().map(|i| web_ip(*i)).collect();
            server.assert_a(&nginx(), &Answer::ips(&set)).await;
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_endpoint_leaves_the_set_unless_published() {
    within(TEST_TIMEOUT, async {
        let (api, server) = start_synced(web_cluster(3, 3)).await;
        let all = [web_ip(0), web_ip(1), web_ip(2)];
        server.assert_a(&nginx(), &Answer::ips(&all)).await;
        let not_ready = [
            ready("web-0", web_ip(0)),
            Endpoint {
                host: "web-1",
                ip: web_ip(1),
                ready: false,
                terminating: false,
            },
            ready("web-2", web_ip(2)),
        ];
        api.apply(endpoint_slice(NS, "nginx", &not_ready));
        server
            .wait_for_a(&nginx(), Answer::ips(&[web_ip(0), web_ip(2)]))
            .await;
        server.assert_a(&pod_name(1), &Answer::NxDomain).await;

        api.apply(headless_service(NS, "nginx", true));
        server.wait_for_a(&nginx(), Answer::ips(&all)).await;
        server
            .assert_a(&pod_name(1), &Answer::ips(&[web_ip(1)]))
            .await;

        // A terminating endpoint is not served even when not-ready ones are.
        let mut terminating = not_ready;
        terminating[1].terminating = true;
        api.apply(endpoint_slice(NS, "nginx", &terminating));
        server
            .wait_for_a(&nginx(), Answer::ips(&[web_ip(0), web_ip(2)]))
            .await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_statefulset_pod_gets_the_short_negative_ttl() {
    within(TEST_TIMEOUT, async {
        let (_api, server) = start_synced(web_cluster(3, 1)).await;
        let cases = [
            // web-1 and web-2 are about to exist (replicas = 3).
            (pod_name(1), 1),
            (pod_name(2), 1),
            // Beyond replicas, or not a pod of the set: the normal negative TTL.
            (pod_name(3), 5),
            (fqdn("nope.nginx.default.svc"), 5),
            (fqdn("db-1.nginx.default.svc"), 5),
        ];
        for (name, ttl) in cases {
            for proto in BOTH {
                let m = server.query(proto, &name, RecordType::A).await;
                assert_eq!(
                    dns::rcode(&m),
                    ResponseCode::NXDomain,
                    "{name} over {proto:?}"
                );
                assert_eq!(
                    dns::authority_soa(&m),
                    Some(NegativeTtl::both(ttl)),
                    "{name} over {proto:?}: SOA (TTL, MINIMUM)"
                );
            }
        }
        server
            .assert_a(&pod_name(0), &Answer::ips(&[web_ip(0)]))
            .await;
        server.stop().await;
    })
    .await;
}
