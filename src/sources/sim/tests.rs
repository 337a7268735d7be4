//! The simulator's unit tests: controller behaviour in simulated time, no sockets.

use super::*;

fn sts(name: &str, replicas: u32, pm: PodManagement) -> ObjectMap {
    let rec = StatefulSetRecord {
        key: ObjectKey::new("default", name),
        service_name: "svc".into(),
        replicas,
        pod_management: pm,
    };
    let mut m = ObjectMap::new();
    m.insert(
        (Kind::StatefulSet, rec.key.clone()),
        Object::StatefulSet(rec),
    );
    m
}

/// A simulator on `cidr` with a `Parallel` StatefulSet `name` of
/// `replicas` pods, ready at once, after its first step.
fn parallel_set(cidr: &str, name: &str, replicas: u32) -> (Sim, Instant) {
    let t0 = Instant::now();
    let mut sim = Sim::new(Duration::ZERO, cidr);
    sim.sync_manifests(&sts(name, replicas, PodManagement::Parallel), t0);
    sim.reconcile(t0);
    (sim, t0)
}

/// Scales StatefulSet `default/name` to `replicas` and steps at `now`.
fn scale(sim: &mut Sim, name: &str, replicas: u32, now: Instant) {
    let key = ObjectKey::new("default", name);
    sim.command(SimCommand::Scale { key, replicas }, now)
        .unwrap();
    sim.reconcile(now);
}

fn ready_names(sim: &Sim) -> Vec<String> {
    let mut v: Vec<String> = pods_of(sim)
        .into_iter()
        .filter(|(_, (_, r))| *r)
        .map(|(k, _)| k.name().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn statefulsets_with_pods_or_slices_of_their_own_are_left_alone() {
    let t0 = Instant::now();
    let mut m = sts("web", 2, PodManagement::Parallel);
    m.extend(
        sts("db", 2, PodManagement::Parallel)
            .into_iter()
            .map(|(k, o)| {
                let Object::StatefulSet(mut s) = o else {
                    unreachable!()
                };
                s.service_name = "db".into();
                (k, Object::StatefulSet(s))
            }),
    );
    m.extend(sts("cache", 2, PodManagement::Parallel));
    // web: a Pod `web-0` in the manifests; db: a slice for service "db";
    // cache (service "svc", like web): nothing of its own.
    let pod = PodRecord {
        key: ObjectKey::new("default", "web-0"),
        ips: vec![IpAddr::from([10, 1, 0, 1])],
        hostname: None,
        subdomain: None,
        ready: true,
        terminating: false,
    };
    m.insert((Kind::Pod, pod.key.clone()), Object::Pod(pod));
    let slice = SliceRecord {
        key: ObjectKey::new("default", "db-abc"),
        service: "db".into(),
        ports: Vec::new(),
        endpoints: Vec::new(),
    };
    m.insert(
        (Kind::EndpointSlice, slice.key.clone()),
        Object::EndpointSlice(slice),
    );
    // A pod of another namespace, or not named `<set>-<n>`, does not count.
    for (ns, name) in [("other", "cache-0"), ("default", "cache-x")] {
        let p = PodRecord {
            key: ObjectKey::new(ns, name),
            ips: Vec::new(),
            hostname: None,
            subdomain: None,
            ready: false,
            terminating: false,
        };
        m.insert((Kind::Pod, p.key.clone()), Object::Pod(p));
    }
    let mut sim = Sim::new(Duration::ZERO, "10.9.0.0/24");
    sim.sync_manifests(&m, t0);
    sim.reconcile(t0);
    assert_eq!(ready_names(&sim), ["cache-0", "cache-1"]);
}

#[test]
fn a_full_pod_cidr_makes_pods_wait_instead_of_hanging() {
    // A /28 (the smallest CIDR allowed) has 14 usable addresses; two
    // StatefulSets want 15 (each within it, so neither is clamped).
    let t0 = Instant::now();
    let mut m = sts("web", 10, PodManagement::Parallel);
    m.extend(sts("db", 5, PodManagement::Parallel));
    let mut sim = Sim::new(Duration::ZERO, "10.9.0.0/28");
    sim.sync_manifests(&m, t0);
    sim.reconcile(t0);
    let ready = ready_names(&sim);
    assert_eq!(ready.len(), 14);
    assert!(!ready.contains(&"web-9".to_string()), "{ready:?}");
    assert_eq!(sim.waiting, 1);
    assert!(sim.next_deadline().is_none());
    // A scale past what the CIDR holds is refused and changes nothing
    // (the manifest's 10 stays, web-9 still waits).
    let key = ObjectKey::new("default", "web");
    assert!(
        sim.command(SimCommand::Scale { key, replicas: 15 }, t0)
            .is_err()
    );
    sim.reconcile(t0);
    assert_eq!(ready_names(&sim).len(), 14);
    assert_eq!(sim.waiting, 1);
    // db scaled to 4 and web's last pod takes the freed address (at the
    // next step: no address is reused within one).
    scale(&mut sim, "db", 4, t0);
    sim.reconcile(t0);
    assert_eq!(ready_names(&sim).len(), 14);
    assert!(ready_names(&sim).contains(&"web-9".to_string()));
    assert_eq!(sim.waiting, 0);
}

/// `replicas: 2147483647` in a manifest is simulated as the pod CIDR's
/// capacity (what `scale` refuses past): one step creates that many pods,
/// not a list of two billion ordinals, and the StatefulSet the index sees
/// says the clamped count.
#[test]
fn absurd_manifest_replicas_are_clamped_to_the_pod_cidr() {
    for pm in [PodManagement::Parallel, PodManagement::OrderedReady] {
        let t0 = Instant::now();
        let mut sim = Sim::new(Duration::ZERO, "10.9.0.0/24");
        sim.sync_manifests(&sts("web", i32::MAX as u32, pm), t0);
        sim.reconcile(t0);
        let created = pods_of(&sim).len();
        let want = if pm == PodManagement::Parallel {
            254
        } else {
            1
        };
        assert_eq!(created, want, "{pm:?}");
        assert_eq!(sim.waiting, 0, "{pm:?}: nothing waits past the clamp");
        let replicas = sim.objects().iter().find_map(|o| match o {
            Object::StatefulSet(s) => Some(s.replicas),
            _ => None,
        });
        assert_eq!(replicas, Some(254), "{pm:?}");
        // The file's own number stays what a later edit is compared with:
        // the same manifest again changes nothing.
        sim.sync_manifests(&sts("web", i32::MAX as u32, pm), t0);
        assert_eq!(
            sim.sets[&ObjectKey::new("default", "web")].record.replicas,
            254
        );
    }
}

/// Parallel: the missing ordinals, lowest first, at most as many as there
/// are free addresses, and how many are due in all.
#[test]
fn missing_ordinals_are_bounded_by_the_free_addresses() {
    let (mut sim, t0) = parallel_set("10.9.0.0/24", "web", 6);
    for pod in ["web-0", "web-2", "web-5"] {
        let key = ObjectKey::new("default", pod);
        sim.command(SimCommand::DeletePod { key }, t0).unwrap();
    }
    let set = &sim.sets[&ObjectKey::new("default", "web")];
    assert_eq!(set.ordinals_to_create(2), (vec![0, 2], 3));
    assert_eq!(set.ordinals_to_create(10), (vec![0, 2, 5], 3));
    assert_eq!(set.ordinals_to_create(0), (vec![], 3));
}

#[test]
fn ordered_ready_starts_one_at_a_time_and_scales_down_from_the_top() {
    let d = Duration::from_secs(1);
    let t0 = Instant::now();
    let mut sim = Sim::new(d, "10.244.0.0/16");
    sim.sync_manifests(&sts("web", 3, PodManagement::OrderedReady), t0);
    assert!(sim.reconcile(t0));
    assert_eq!(pods_of(&sim).len(), 1, "only web-0 exists at first");
    sim.reconcile(t0 + d);
    assert_eq!(ready_names(&sim), ["web-0"]);
    assert_eq!(pods_of(&sim).len(), 2);
    sim.reconcile(t0 + d * 2);
    sim.reconcile(t0 + d * 3);
    assert_eq!(ready_names(&sim), ["web-0", "web-1", "web-2"]);
    scale(&mut sim, "web", 1, t0 + d * 3);
    assert_eq!(ready_names(&sim), ["web-0", "web-1"], "web-2 goes first");
    sim.reconcile(t0 + d * 4);
    assert_eq!(ready_names(&sim), ["web-0"]);
}

#[test]
fn parallel_starts_all_and_deleted_pods_get_new_ips() {
    let (mut sim, t0) = parallel_set("10.9.0.0/24", "mongo", 3);
    assert_eq!(ready_names(&sim), ["mongo-0", "mongo-1", "mongo-2"]);
    let key = ObjectKey::new("default", "mongo-1");
    let before = pods_of(&sim)[&key].0;
    sim.command(SimCommand::DeletePod { key: key.clone() }, t0)
        .unwrap();
    assert!(
        !pods_of(&sim).contains_key(&key),
        "gone before it comes back"
    );
    sim.reconcile(t0);
    let after = pods_of(&sim)[&key].0;
    assert_ne!(before, after);
    assert!(
        sim.command(
            SimCommand::DeletePod {
                key: ObjectKey::new("default", "mongo-7")
            },
            t0
        )
        .is_err()
    );
    assert!(matches!(
        sim.command(
            SimCommand::Scale {
                key: ObjectKey::new("x", "y"),
                replicas: 1
            },
            t0
        ),
        Err(SimError::NotFound(_))
    ));
}

#[test]
fn cidrs() {
    assert_eq!(
        parse_cidr("10.244.0.0/16"),
        Some((u32::from(Ipv4Addr::new(10, 244, 0, 0)), 65536))
    );
    assert_eq!(parse_cidr("10.244.1.7/24").map(|c| c.1), Some(256));
    assert_eq!(parse_cidr("10.244.0.0"), None);
    assert_eq!(parse_cidr("10.244.0.0/31"), None);
}
