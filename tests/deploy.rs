//! Checks the manifests in `deploy/` without a cluster: every YAML document
//! must parse into the k8s-openapi type of its kind (an unknown kind fails),
//! and survive a round trip through that type unchanged, so a misspelt or
//! misplaced field (which the API server would silently drop) fails here.
//! Then a few properties the deployment relies on: the ClusterRole only
//! lists and watches, the bindings point at accounts that exist, DNS is
//! served on 53/UDP and 53/TCP, probes hit `/ready` and `/health`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Deserialize;
use serde_json::Value;

/// Every document of every manifest, typed.
#[derive(Default)]
struct Manifests {
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    statefulsets: Vec<StatefulSet>,
    /// Documents per file, for messages.
    files: BTreeMap<PathBuf, usize>,
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Paths where `original` has something the typed round trip lost or changed.
fn differences(original: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (original, typed) {
        (Value::Object(o), Value::Object(t)) => {
            for (k, v) in o {
                let p = format!("{path}.{k}");
                match t.get(k) {
                    Some(tv) => differences(v, tv, &p, out),
                    None => out.push(format!("{p}: unknown field (dropped by the typed parse)")),
                }
            }
        }
        (Value::Array(o), Value::Array(t)) if o.len() == t.len() => {
            for (i, (ov, tv)) in o.iter().zip(t).enumerate() {
                differences(ov, tv, &format!("{path}[{i}]"), out);
            }
        }
        (o, t) if o == t => {}
        (o, t) => out.push(format!("{path}: {o} became {t}")),
    }
}

fn typed<T>(doc: &Value, where_: &str, problems: &mut Vec<String>) -> Option<T>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    match serde_json::from_value::<T>(doc.clone()) {
        Ok(t) => {
            let back = serde_json::to_value(&t).expect("k8s-openapi types serialize");
            let mut diffs = Vec::new();
            differences(doc, &back, "", &mut diffs);
            problems.extend(diffs.into_iter().map(|d| format!("{where_}: {d}")));
            Some(t)
        }
        Err(e) => {
            problems.push(format!("{where_}: {e}"));
            None
        }
    }
}

fn load() -> Manifests {
    let mut m = Manifests::default();
    let mut problems = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ exists")
        .map(|e| e.expect("readable deploy/ entry").path())
        .collect();
    paths.sort();
    for path in paths {
        let ext = path.extension().and_then(|e| e.to_str());
        if !matches!(ext, Some("yaml" | "yml")) {
            problems.push(format!(
                "{}: deploy/ holds only YAML manifests",
                path.display()
            ));
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable manifest");
        let mut count = 0;
        for (i, de) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let where_ = format!("{} document {}", path.display(), i + 1);
            let doc = match Value::deserialize(de) {
                Ok(Value::Null) => continue, // an empty document (trailing ---)
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{where_}: {e}"));
                    continue;
                }
            };
            count += 1;
            let kind = doc["kind"].as_str().unwrap_or("<no kind>").to_string();
            let w = format!("{where_} ({kind})");
            match kind.as_str() {
                "ServiceAccount" => m.service_accounts.extend(typed(&doc, &w, &mut problems)),
                "ClusterRole" => m.cluster_roles.extend(typed(&doc, &w, &mut problems)),
                "ClusterRoleBinding" => {
                    m.cluster_role_bindings
                        .extend(typed(&doc, &w, &mut problems))
                }
                "Deployment" => m.deployments.extend(typed(&doc, &w, &mut problems)),
                "Service" => m.services.extend(typed(&doc, &w, &mut problems)),
                "StatefulSet" => m.statefulsets.extend(typed(&doc, &w, &mut problems)),
                other => problems.push(format!("{w}: unexpected kind {other:?}")),
            }
        }
        m.files.insert(path, count);
    }
    assert!(
        problems.is_empty(),
        "deploy/ problems:\n{}",
        problems.join("\n")
    );
    m
}

fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

fn headless_dns_container(spec: &PodSpec) -> &Container {
    containers(spec)
        .find(|c| c.name == "headless-dns")
        .expect("a container named headless-dns")
}

fn probe_path(p: &Option<k8s_openapi::api::core::v1::Probe>) -> Option<&str> {
    p.as_ref()?.http_get.as_ref()?.path.as_deref()
}

#[test]
fn every_manifest_parses_into_its_type_without_losing_fields() {
    let m = load();
    for name in [
        "rbac.yaml",
        "deployment.yaml",
        "service.yaml",
        "sidecar-statefulset.yaml",
    ] {
        let n = m.files.get(&deploy_dir().join(name)).copied().unwrap_or(0);
        assert!(n > 0, "deploy/{name} is missing or empty");
    }
}

#[test]
fn the_cluster_role_only_lists_and_watches_what_the_source_watches() {
    let m = load();
    assert_eq!(m.cluster_roles.len(), 1, "one ClusterRole");
    let role = &m.cluster_roles[0];
    let mut granted: Vec<(String, String)> = Vec::new();
    for rule in role.rules.iter().flatten() {
        let mut verbs = rule.verbs.clone();
        verbs.sort();
        assert_eq!(verbs, ["list", "watch"], "{rule:?}");
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                granted.push((g.clone(), r.clone()));
            }
        }
    }
    granted.sort();
    let want: Vec<(String, String)> = [
        ("", "namespaces"),
        ("", "pods"),
        ("", "services"),
        ("apps", "statefulsets"),
        ("discovery.k8s.io", "endpointslices"),
    ]
    .iter()
    .map(|(g, r)| (g.to_string(), r.to_string()))
    .collect();
    assert_eq!(granted, want);
}

#[test]
fn bindings_grant_the_role_to_accounts_that_exist() {
    let m = load();
    let role = m.cluster_roles[0].metadata.name.as_deref();
    assert!(!m.cluster_role_bindings.is_empty());
    for b in &m.cluster_role_bindings {
        assert_eq!(b.role_ref.kind, "ClusterRole");
        assert_eq!(Some(b.role_ref.name.as_str()), role, "{b:?}");
        for s in b.subjects.iter().flatten() {
            assert_eq!(s.kind, "ServiceAccount");
            let exists = m.service_accounts.iter().any(|sa| {
                sa.metadata.name.as_deref() == Some(s.name.as_str())
                    && sa.metadata.namespace == s.namespace
            });
            assert!(
                exists,
                "binding {:?} names a missing account {s:?}",
                b.metadata.name
            );
        }
    }
    // Every pod that runs headless-dns uses one of those accounts.
    let bound: Vec<(Option<&str>, &str)> = m
        .cluster_role_bindings
        .iter()
        .flat_map(|b| b.subjects.iter().flatten())
        .map(|s| (s.namespace.as_deref(), s.name.as_str()))
        .collect();
    let pods = m
        .deployments
        .iter()
        .map(|d| {
            (
                &d.metadata,
                d.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
            )
        })
        .chain(m.statefulsets.iter().map(|s| {
            (
                &s.metadata,
                s.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
            )
        }));
    for (meta, spec) in pods {
        let spec = spec.expect("a pod template spec");
        let sa = spec
            .service_account_name
            .as_deref()
            .expect("a serviceAccountName");
        assert!(
            bound.contains(&(meta.namespace.as_deref(), sa)),
            "{:?} runs as {sa}, which no binding covers",
            meta.name
        );
    }
}

#[test]
fn the_deployment_is_locked_down_and_probed() {
    let m = load();
    assert_eq!(m.deployments.len(), 1);
    let spec = m.deployments[0].spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let c = headless_dns_container(pod);
    let args = c.args.clone().unwrap_or_default().join(" ");
    assert_eq!(
        args,
        "serve --source kubernetes --listen 0.0.0.0:53 --admin 0.0.0.0:8080"
    );
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(
        caps.add.as_deref(),
        Some(&["NET_BIND_SERVICE".to_string()][..])
    );
    assert_eq!(probe_path(&c.readiness_probe), Some("/ready"));
    assert_eq!(probe_path(&c.liveness_probe), Some("/health"));
    let requests = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("resource requests");
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
}

#[test]
fn the_service_serves_dns_over_udp_and_tcp() {
    let m = load();
    let svc = m
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("headless-dns"))
        .expect("the headless-dns Service");
    let spec = svc.spec.as_ref().expect("spec");
    let mut ports: Vec<(i32, &str)> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| (p.port, p.protocol.as_deref().unwrap_or("TCP")))
        .collect();
    ports.sort();
    assert_eq!(ports, [(53, "TCP"), (53, "UDP")]);
    let selector = spec.selector.as_ref().expect("a selector");
    let labels = m.deployments[0]
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .expect("pod labels");
    assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
}

#[test]
fn the_sidecar_statefulset_resolves_through_its_own_headless_dns() {
    let m = load();
    assert_eq!(m.statefulsets.len(), 1);
    let sts = m.statefulsets[0].spec.as_ref().expect("spec");
    let pod = sts.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.dns_policy.as_deref(), Some("None"));
    let dns = pod.dns_config.as_ref().expect("dnsConfig");
    assert_eq!(
        dns.nameservers
            .as_ref()
            .and_then(|n| n.first())
            .map(String::as_str),
        Some("127.0.0.1")
    );
    assert!(
        dns.searches
            .as_ref()
            .is_some_and(|s| s.contains(&"svc.cluster.local".to_string()))
    );
    let c = headless_dns_container(pod);
    let args = c.args.clone().unwrap_or_default();
    assert!(
        args.windows(2).any(|w| w == ["--listen", "127.0.0.1:53"]),
        "{args:?}"
    );
    assert!(
        args.windows(2).any(|w| w == ["--source", "kubernetes"]),
        "{args:?}"
    );
    assert_eq!(probe_path(&c.readiness_probe), Some("/ready"));
    assert!(
        pod.containers.iter().any(|c| c.name != "headless-dns"),
        "an app container next to the sidecar"
    );
    // The governing service exists and is headless.
    let governing = sts.service_name.as_deref().expect("serviceName");
    let svc = m
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(governing))
        .expect("the governing Service");
    assert_eq!(
        svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None")
    );
}
