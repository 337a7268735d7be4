//! Checks `deploy/` without a cluster. The overlays (`deploy/cluster`,
//! `deploy/sidecar`, `deploy/node-local`) are rendered with `kubectl kustomize`; every rendered
//! object must parse into the k8s-openapi type of its kind (an unknown kind
//! fails) and survive a round trip through that type unchanged, so a
//! misspelt or misplaced field (which the API server would silently drop)
//! fails here. Then what the shapes rely on: the headless-dns container's
//! args are parsed by the binary's own CLI (`headless_dns::cli`) with the
//! config file the rendered ConfigMap mounts, the role grants exactly list +
//! watch on the kinds that configuration watches, bindings point at
//! accounts that exist, DNS is served on 53/UDP and 53/TCP, probes hit
//! `/ready` and `/health` on the admin port, the records and `/sim` are
//! not open beyond loopback (the cluster shape's token comes from a Secret
//! volume; its NetworkPolicy lets DNS in from anywhere and the admin port
//! from one selected namespace only). And the sidecar's Role, granted
//! to the fake API server (which then refuses anything else), suffices for
//! the server started with the sidecar's args, and grants exactly what that
//! server requests. The node-local DaemonSet holds no credentials (no
//! token, no RBAC object), listens on 169.254.20.10, follows the cluster
//! overlay's transfer Service with the key both mount from one Secret, and
//! is probed on its admin port with a memory limit.
//!
//! kubectl comes from Debian's `kubernetes-client` (`.ci/test` installs it;
//! its kustomize is 2.0.3, which the overlays are written for); without it
//! these tests fail, they do not skip.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use headless_dns::cli::{self, Cli, Command};
use headless_dns::config::{Config, RequireToken, SourceKind};
use headless_dns::index::Kind;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Service, ServiceAccount, Volume};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use serde::Deserialize;
use serde_json::Value;
use support::fake_api::FakeApi;
use support::server::TestServer;

/// Every object of one rendered overlay, typed.
#[derive(Default)]
struct Rendered {
    service_accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    config_maps: Vec<ConfigMap>,
    deployments: Vec<Deployment>,
    daemonsets: Vec<DaemonSet>,
    services: Vec<Service>,
    statefulsets: Vec<StatefulSet>,
    network_policies: Vec<NetworkPolicy>,
    /// Namespaces of the namespaced objects.
    namespaces: BTreeSet<String>,
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

/// `kubectl kustomize deploy/<overlay>`, parsed and typed.
fn render(overlay: &str) -> Rendered {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy_dir().join(overlay))
        .output()
        .expect("kubectl is installed (Debian package kubernetes-client; .ci/test installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/{overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let mut r = Rendered::default();
    let mut problems = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let doc = match Value::deserialize(de) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => panic!("deploy/{overlay} renders invalid YAML: {e}"),
        };
        let kind = doc["kind"].as_str().unwrap_or("<no kind>").to_string();
        let w = format!("deploy/{overlay} object {} ({kind})", i + 1);
        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
            r.namespaces.insert(ns.to_string());
        }
        let p = &mut problems;
        match kind.as_str() {
            "ServiceAccount" => r.service_accounts.extend(typed(&doc, &w, p)),
            "Role" => r.roles.extend(typed(&doc, &w, p)),
            "RoleBinding" => r.role_bindings.extend(typed(&doc, &w, p)),
            "ClusterRole" => r.cluster_roles.extend(typed(&doc, &w, p)),
            "ClusterRoleBinding" => r.cluster_role_bindings.extend(typed(&doc, &w, p)),
            "ConfigMap" => r.config_maps.extend(typed(&doc, &w, p)),
            "Deployment" => r.deployments.extend(typed(&doc, &w, p)),
            "DaemonSet" => r.daemonsets.extend(typed(&doc, &w, p)),
            "Service" => r.services.extend(typed(&doc, &w, p)),
            "StatefulSet" => r.statefulsets.extend(typed(&doc, &w, p)),
            "NetworkPolicy" => r.network_policies.extend(typed(&doc, &w, p)),
            other => p.push(format!("{w}: unexpected kind {other:?}")),
        }
    }
    assert!(problems.is_empty(), "problems:\n{}", problems.join("\n"));
    r
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

fn probe(p: &Option<k8s_openapi::api::core::v1::Probe>) -> Option<(&str, String)> {
    let h = p.as_ref()?.http_get.as_ref()?;
    let port = match &h.port {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => i.to_string(),
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(),
    };
    Some((h.path.as_deref()?, port))
}

/// The container's args as the kubelet passes them: `$(VAR)` replaced by the
/// container's env (a literal value, or the pod's namespace by fieldRef).
fn expanded_args(c: &Container, namespace: &str) -> Vec<String> {
    let mut vars = BTreeMap::new();
    for e in c.env.iter().flatten() {
        assert!(
            !e.name.starts_with("HEADLESS_DNS_") && e.name != "KUBECONFIG_PATH",
            "{}: set settings in args or the config file, where this test reads them",
            e.name
        );
        let field = e
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        let value = match (&e.value, field) {
            (Some(v), _) => v.clone(),
            (None, Some("metadata.namespace")) => namespace.to_string(),
            (None, other) => panic!("{}: unsupported env source {other:?}", e.name),
        };
        vars.insert(format!("$({})", e.name), value);
    }
    let mut args = c.args.clone().unwrap_or_default();
    for a in &mut args {
        for (k, v) in &vars {
            *a = a.replace(k, v);
        }
    }
    args
}

/// The volume `c` mounts where `path` is, and `path` inside it.
fn mounted<'a>(pod: &'a PodSpec, c: &Container, path: &'a str) -> (&'a Volume, &'a str) {
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| path.starts_with(&format!("{}/", m.mount_path)))
        .unwrap_or_else(|| panic!("nothing is mounted where {path} is"));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .expect("the mounted volume");
    (volume, &path[mount.mount_path.len() + 1..])
}

/// Parses the headless-dns container's args with the real CLI and loads the
/// configuration they describe; `--config` is read from the ConfigMap the
/// pod mounts at that path, `--admin-token-file` must be a key of a Secret
/// the pod mounts there (each written to a temp dir, the arg pointed there;
/// a made-up token stands in for the Secret's).
fn server_config(r: &Rendered, pod: &PodSpec, namespace: &str) -> Config {
    let c = headless_dns_container(pod);
    let mut args = expanded_args(c, namespace);
    assert_eq!(c.command, None, "the image's entrypoint runs");
    let dir = tempfile::tempdir().unwrap();
    let at = args.iter().position(|a| a == "--config").expect("--config");
    let (volume, key) = mounted(pod, c, &args[at + 1]);
    let cm_name = volume
        .config_map
        .as_ref()
        .map(|c| c.name.as_str())
        .expect("a ConfigMap volume");
    let cm = r
        .config_maps
        .iter()
        .find(|m| m.metadata.name.as_deref() == Some(cm_name))
        .unwrap_or_else(|| panic!("the ConfigMap {cm_name} is rendered"));
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("{cm_name} has {key}"));
    let text = stand_in_key_files(pod, c, text, dir.path(), namespace);
    let file = dir.path().join(key);
    std::fs::write(&file, text).unwrap();
    let mut replaced = vec![(at + 1, file)];
    if let Some(at) = args.iter().position(|a| a == "--admin-token-file") {
        let (volume, key) = mounted(pod, c, &args[at + 1]);
        let secret = volume.secret.as_ref().expect("a Secret volume");
        assert_eq!(secret.optional, None, "no token, no start");
        let items = secret.items.as_deref().unwrap_or_default();
        assert!(
            items.iter().any(|i| i.path == key),
            "{key} is an item of the Secret"
        );
        let file = dir.path().join("admin-token");
        std::fs::write(&file, "a-token-standing-in-for-the-secret\n").unwrap();
        replaced.push((at + 1, file));
    }
    for (i, file) in replaced {
        args[i] = file.display().to_string();
    }
    let argv = std::iter::once("headless-dns".to_string()).chain(args.iter().cloned());
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let Some(Command::Serve(serve)) = cli.command else {
        panic!("{args:?} does not run `serve`");
    };
    cli::load(&serve).unwrap_or_else(|e| panic!("{args:?}: {e:#}"))
}

/// `text` (a config file) with each TSIG key file it names (`key_file`,
/// `primary_key_file`) pointed at a stand-in written to `dir`: each must be
/// a key of a Secret the pod mounts there. The stand-in key is named after
/// the file (`default.key`: `default`), a tenant's own (`tsig.key`) after
/// the pod's namespace, as the overlays say to make them; all share one
/// secret.
fn stand_in_key_files(
    pod: &PodSpec,
    c: &Container,
    text: &str,
    dir: &Path,
    namespace: &str,
) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        let path = (t.starts_with("key_file") || t.starts_with("primary_key_file"))
            .then(|| t.split('"').nth(1))
            .flatten();
        let Some(path) = path else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let (volume, key) = mounted(pod, c, path);
        let secret = volume
            .secret
            .as_ref()
            .unwrap_or_else(|| panic!("{path}: a key comes from a Secret volume"));
        assert_eq!(secret.optional, None, "no key, no start");
        if let Some(items) = secret.items.as_deref() {
            assert!(items.iter().any(|i| i.path == key), "{key} is an item");
        }
        let stem = key.trim_end_matches(".key");
        let name = if stem == "tsig" { namespace } else { stem };
        let file = dir.join(format!("{name}.stand-in.key"));
        std::fs::write(
            &file,
            format!("key \"{name}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n}};\n"),
        )
        .unwrap();
        out.push_str(&line.replace(path, &file.display().to_string()));
        out.push('\n');
    }
    out
}

/// (API group, resource) of each kind the Kubernetes source watches.
fn resource(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Service => ("", "services"),
        Kind::EndpointSlice => ("discovery.k8s.io", "endpointslices"),
        Kind::Namespace => ("", "namespaces"),
        Kind::StatefulSet => ("apps", "statefulsets"),
        Kind::Pod => ("", "pods"),
    }
}

/// What `rules` grant, asserting they only list and watch whole kinds.
fn granted(rules: &[PolicyRule]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        let mut verbs = rule.verbs.clone();
        verbs.sort();
        assert_eq!(verbs, ["list", "watch"], "{rule:?}");
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                out.insert((g.clone(), r.clone()));
            }
        }
    }
    out
}

fn wanted(kinds: impl IntoIterator<Item = Kind>) -> BTreeSet<(String, String)> {
    kinds
        .into_iter()
        .map(resource)
        .map(|(g, r)| (g.to_string(), r.to_string()))
        .collect()
}

fn has_account(r: &Rendered, namespace: Option<&str>, name: &str) -> bool {
    r.service_accounts.iter().any(|sa| {
        sa.metadata.name.as_deref() == Some(name) && sa.metadata.namespace.as_deref() == namespace
    })
}

/// A (Cluster)RoleBinding's `(roleRef, subjects)`: it names the `kind` role
/// called `role`, and binds exactly the pod's ServiceAccount in `ns`, which
/// the rendering creates there.
fn assert_binds(
    r: &Rendered,
    (role_ref, subjects): (&RoleRef, Option<&[Subject]>),
    kind: &str,
    role: Option<&str>,
    pod: &PodSpec,
    ns: &str,
) {
    assert_eq!(role_ref.kind, kind);
    assert_eq!(Some(role_ref.name.as_str()), role);
    let sa = pod
        .service_account_name
        .as_deref()
        .expect("serviceAccountName");
    let subjects = subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(
        (subjects[0].namespace.as_deref(), subjects[0].name.as_str()),
        (Some(ns), sa)
    );
    assert!(has_account(r, Some(ns), sa), "{sa} exists in {ns}");
}

fn admin_port(config: &Config) -> String {
    config
        .admin
        .listen
        .map(|a: SocketAddr| a.port().to_string())
        .expect("the admin API is on (probes need it)")
}

#[test]
fn every_file_in_deploy_is_rendered_by_an_overlay() {
    let mut dirs: Vec<String> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        [
            "base",
            "cluster",
            "monitoring",
            "node-local",
            "sidecar",
            "sidecar-secondary"
        ]
    );
    for dir in [
        "base",
        "cluster",
        "node-local",
        "sidecar",
        "sidecar-secondary",
    ] {
        let path = deploy_dir().join(dir);
        let k: serde_yaml_ng::Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(path.join("kustomization.yaml")).unwrap(),
        )
        .unwrap();
        let mut listed: BTreeSet<String> = BTreeSet::new();
        for field in ["resources", "patchesStrategicMerge"] {
            for f in k[field].as_sequence().into_iter().flatten() {
                listed.insert(f.as_str().unwrap().to_string());
            }
        }
        for g in k["configMapGenerator"].as_sequence().into_iter().flatten() {
            for f in g["files"].as_sequence().into_iter().flatten() {
                listed.insert(f.as_str().unwrap().to_string());
            }
        }
        for e in std::fs::read_dir(&path).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                name == "kustomization.yaml" || listed.contains(&name),
                "deploy/{dir}/{name} is not used by its kustomization.yaml"
            );
        }
    }
}

#[test]
fn the_cluster_overlay_renders_typed_objects_in_one_namespace() {
    let r = render("cluster");
    assert_eq!(r.namespaces, BTreeSet::from(["kube-system".to_string()]));
    assert_eq!(r.service_accounts.len(), 1);
    assert_eq!(r.cluster_roles.len(), 1);
    assert_eq!(r.cluster_role_bindings.len(), 1);
    assert_eq!(r.config_maps.len(), 1);
    assert_eq!(r.deployments.len(), 1);
    assert_eq!(
        r.services.len(),
        2,
        "DNS, and transfers to the followers (sidecars, node-local caches)"
    );
    assert_eq!(r.network_policies.len(), 1);
    assert!(r.roles.is_empty() && r.role_bindings.is_empty() && r.statefulsets.is_empty());
}

#[test]
fn the_sidecar_overlay_renders_typed_objects_and_no_cluster_scope() {
    let r = render("sidecar");
    assert_eq!(r.namespaces, BTreeSet::from(["default".to_string()]));
    assert!(
        r.cluster_roles.is_empty() && r.cluster_role_bindings.is_empty(),
        "a tenant of one namespace cannot create cluster-scoped RBAC"
    );
    assert_eq!(r.service_accounts.len(), 1);
    assert_eq!(r.roles.len(), 1);
    assert_eq!(r.role_bindings.len(), 1);
    assert_eq!(r.config_maps.len(), 1);
    assert_eq!(r.statefulsets.len(), 1);
    assert!(r.deployments.is_empty() && r.network_policies.is_empty());
}

#[test]
fn the_cluster_role_grants_exactly_what_the_deployment_watches() {
    let r = render("cluster");
    let d = &r.deployments[0];
    let ns = d.metadata.namespace.as_deref().unwrap();
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let config = server_config(&r, pod, ns);
    assert_eq!(config.source.kind, SourceKind::Kubernetes);
    assert!(config.source.namespaces.is_empty(), "cluster-wide");
    let role = &r.cluster_roles[0];
    assert_eq!(
        granted(role.rules.as_deref().unwrap_or_default()),
        wanted(headless_dns::sources::k8s::kinds(&config))
    );
    let b = &r.cluster_role_bindings[0];
    assert_binds(
        &r,
        (&b.role_ref, b.subjects.as_deref()),
        "ClusterRole",
        role.metadata.name.as_deref(),
        pod,
        ns,
    );
}

#[test]
fn the_sidecar_role_grants_exactly_what_it_watches_in_its_namespace() {
    let r = render("sidecar");
    let sts = &r.statefulsets[0];
    let ns = sts.metadata.namespace.as_deref().unwrap();
    let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let config = server_config(&r, pod, ns);
    assert_eq!(config.source.kind, SourceKind::Kubernetes);
    assert_eq!(
        config.source.namespaces,
        [ns],
        "--namespaces is the pod's own"
    );
    // A Role grants namespaced kinds only; Namespaces are cluster-scoped (in
    // namespaced mode the server takes its namespaces as existing).
    let kinds = headless_dns::sources::k8s::kinds(&config)
        .into_iter()
        .filter(|k| *k != Kind::Namespace);
    let role = &r.roles[0];
    assert_eq!(role.metadata.namespace.as_deref(), Some(ns));
    assert_eq!(
        granted(role.rules.as_deref().unwrap_or_default()),
        wanted(kinds)
    );
    let b = &r.role_bindings[0];
    assert_eq!(b.metadata.namespace.as_deref(), Some(ns));
    assert_binds(
        &r,
        (&b.role_ref, b.subjects.as_deref()),
        "Role",
        role.metadata.name.as_deref(),
        pod,
        ns,
    );
}

#[test]
fn the_deployment_serves_port_53_locked_down_and_probed() {
    let r = render("cluster");
    let d = &r.deployments[0];
    let spec = d.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().expect("pod spec");
    let config = server_config(&r, pod, "kube-system");
    assert_eq!(
        config.dns.listen,
        ["0.0.0.0:53".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(config.dns.zone, "cluster.local");
    let admin = admin_port(&config);
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let c = headless_dns_container(pod);
    let mut ports: Vec<(i32, &str)> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.container_port, p.protocol.as_deref().unwrap_or("TCP")))
        .collect();
    ports.sort();
    assert_eq!(
        ports,
        [(53, "TCP"), (53, "UDP"), (admin.parse().unwrap(), "TCP")]
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
    assert_eq!(probe(&c.readiness_probe), Some(("/ready", admin.clone())));
    assert_eq!(probe(&c.liveness_probe), Some(("/health", admin)));
    let requests = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("resource requests");
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
}

/// The cluster shape binds admin beyond loopback, for the kubelet and
/// Prometheus; the records and `/sim` then ask for the token of a Secret
/// (the server reads it at start: `cli::load` above read the stand-in).
/// Its NetworkPolicy selects the Deployment's pods and lets in DNS from
/// anywhere and the admin port from one selected namespace, nothing else.
#[test]
fn the_deployment_keeps_the_records_behind_a_token_and_a_network_policy() {
    let r = render("cluster");
    let d = &r.deployments[0];
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let config = server_config(&r, pod, "kube-system");
    let listen = config.admin.listen.expect("admin on");
    assert!(listen.ip().is_unspecified(), "probes reach {listen}");
    assert_eq!(config.admin.require_token, RequireToken::BeyondLoopback);
    assert!(config.admin.token.is_some(), "the token file was read");
    let admin = i32::from(listen.port());

    let np = &r.network_policies[0];
    let spec = np.spec.as_ref().expect("spec");
    let labels = d
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref();
    let selects = spec
        .pod_selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref());
    assert!(
        selects.is_some_and(|s| !s.is_empty()
            && s.iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))),
        "the policy selects the Deployment's pods"
    );
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_string()][..])
    );
    let mut rules: Vec<(bool, Vec<(i32, String)>)> = Vec::new();
    for rule in spec.ingress.iter().flatten() {
        let from_anywhere = rule.from.as_ref().is_none_or(Vec::is_empty);
        if !from_anywhere {
            for peer in rule.from.iter().flatten() {
                assert!(peer.ip_block.is_none(), "peers by selector, not address");
                assert!(peer.namespace_selector.is_some() || peer.pod_selector.is_some());
            }
        }
        let mut ports: Vec<(i32, String)> = rule
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let port = match p.port.as_ref().expect("a port") {
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => *i,
                    other => panic!("a numbered port, not {other:?}"),
                };
                (port, p.protocol.clone().unwrap_or_else(|| "TCP".into()))
            })
            .collect();
        ports.sort();
        rules.push((from_anywhere, ports));
    }
    rules.sort();
    assert_eq!(
        rules,
        [
            (false, vec![(admin, "TCP".to_string())]),
            (true, vec![(53, "TCP".to_string()), (53, "UDP".to_string())]),
        ]
    );
}

#[test]
fn the_service_sends_dns_over_udp_and_tcp_to_the_deployment() {
    let r = render("cluster");
    for service in &r.services {
        assert_sends_dns_to_the_deployment(&r, service);
    }
}

fn assert_sends_dns_to_the_deployment(r: &Rendered, service: &Service) {
    let spec = service.spec.as_ref().expect("spec");
    let mut ports: Vec<(i32, &str)> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| (p.port, p.protocol.as_deref().unwrap_or("TCP")))
        .collect();
    ports.sort();
    assert_eq!(ports, [(53, "TCP"), (53, "UDP")]);
    let selector = spec.selector.as_ref().expect("a selector");
    let labels = r.deployments[0]
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .expect("pod labels");
    assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
}

#[test]
fn the_sidecar_starts_first_and_its_pod_resolves_through_it() {
    let r = render("sidecar");
    let sts = &r.statefulsets[0];
    let ns = sts.metadata.namespace.as_deref().unwrap();
    let spec = sts.spec.as_ref().expect("spec");
    let pod = spec.template.spec.as_ref().expect("pod spec");
    let config = server_config(&r, pod, ns);
    assert_eq!(
        config.dns.listen,
        ["127.0.0.1:53".parse::<SocketAddr>().unwrap()]
    );
    let admin = admin_port(&config);
    // Bound on the pod IP for the probes; no token: the records and /sim
    // answer the pod's loopback only.
    assert_eq!(config.admin.require_token, RequireToken::BeyondLoopback);
    assert_eq!(config.admin.token_file, None);
    // A native sidecar: an init container that keeps running, and the app
    // starts only once it is ready.
    let c = headless_dns_container(pod);
    assert!(
        pod.init_containers
            .iter()
            .flatten()
            .any(|i| i.name == c.name)
    );
    assert_eq!(c.restart_policy.as_deref(), Some("Always"));
    assert_eq!(probe(&c.startup_probe), Some(("/ready", admin.clone())));
    assert_eq!(probe(&c.readiness_probe), Some(("/ready", admin.clone())));
    assert_eq!(probe(&c.liveness_probe), Some(("/health", admin)));
    assert!(
        pod.containers.iter().any(|c| c.name != "headless-dns"),
        "an app container next to the sidecar"
    );
    assert_eq!(pod.dns_policy.as_deref(), Some("None"));
    let dns = pod.dns_config.as_ref().expect("dnsConfig");
    assert_eq!(
        dns.nameservers
            .as_ref()
            .and_then(|n| n.first())
            .map(String::as_str),
        Some("127.0.0.1")
    );
    let search = format!("{ns}.svc.{}", config.dns.zone);
    assert_eq!(
        dns.searches.as_ref().and_then(|s| s.first()),
        Some(&search),
        "short names resolve in the pod's own namespace"
    );
    // The governing service exists, is headless, and is in the namespace served.
    let governing = spec.service_name.as_deref().expect("serviceName");
    let svc = r
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(governing))
        .expect("the governing Service");
    assert_eq!(svc.metadata.namespace.as_deref(), Some(ns));
    assert_eq!(
        svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None")
    );
}

/// The sidecar overlay's Role, rendered and typed, granted to the fake API
/// server in the pod's namespace: the server started with the configuration
/// the container's args describe syncs under it with no request refused,
/// makes no request outside the namespace, and the (API group, resource,
/// verb) triples it used are exactly those the Role grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_role_grants_exactly_the_requests_the_server_makes() {
    support::within(support::k8s::TEST_TIMEOUT, async {
        let r = render("sidecar");
        let sts = &r.statefulsets[0];
        let ns = sts.metadata.namespace.clone().expect("namespaced");
        let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let mut config = server_config(&r, pod, &ns);
        let role = &r.roles[0];
        let mut objects = support::k8s::web_cluster(3, 3);
        for o in &mut objects {
            if o["metadata"].get("namespace").is_some() {
                o["metadata"]["namespace"] = Value::from(ns.as_str());
            }
        }
        objects.push(support::k8s::headless_service("elsewhere", "secret", false));
        let api = FakeApi::with_objects(objects).await;
        api.grant(&ns, role);
        let test = support::k8s::k8s_config(&api);
        config.source.kubeconfig = test.source.kubeconfig;
        config.dns.listen = test.dns.listen;
        config.admin.listen = test.admin.listen;
        let server = TestServer::start(config).await;
        let name = format!("web-0.nginx.{ns}.svc.cluster.local");
        let want = support::dns::Answer::ips(&[support::k8s::web_ip(0)]);
        server.wait_for_a(&name, want).await;
        api.wait_for_watches(3).await;
        let mut used = BTreeSet::new();
        for q in api.requests().iter().filter(|q| q.plural.is_some()) {
            assert_eq!(q.namespace.as_deref(), Some(ns.as_str()), "{q}");
            assert_ne!(q.status, 403, "{q}");
            let (group, plural) = (q.group.unwrap_or(""), q.plural.unwrap_or(""));
            used.insert((group.to_string(), plural.to_string(), q.verb.to_string()));
        }
        let mut granted = BTreeSet::new();
        for rule in role.rules.iter().flatten() {
            for g in rule.api_groups.iter().flatten() {
                for res in rule.resources.iter().flatten() {
                    for v in &rule.verbs {
                        granted.insert((g.clone(), res.clone(), v.clone()));
                    }
                }
            }
        }
        assert_eq!(used, granted, "requests made vs the Role's grants");
        eprintln!("requests by (group, resource, verb): {used:?}");
        server.stop().await;
    })
    .await;
}

fn service<'a>(r: &'a Rendered, name: &str) -> &'a Service {
    r.services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("the Service {name}"))
}

/// The cluster shape is the primary of the zero-credential sidecars:
/// transfers from the pod network, signed, each key confined to its
/// namespace and read from a Secret; the followers' Service keeps each on
/// one replica.
#[test]
fn the_cluster_primary_transfers_namespace_zones_to_signed_followers() {
    let r = render("cluster");
    let d = &r.deployments[0];
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let config = server_config(&r, pod, "kube-system");
    let t = &config.transfer;
    assert!(!t.allow.is_empty(), "transfers on");
    assert!(t.require_tsig, "every transfer signed");
    assert!(t.notify_followers_max > 0, "followers are NOTIFYed");
    assert!(!t.tsig.is_empty());
    for k in &t.tsig {
        // Every key a tenant's, but the node-local caches' (the whole zone).
        assert!(
            !k.namespaces.is_empty() || k.name == "node-local",
            "{}: a tenant's key",
            k.name
        );
        assert!(k.key_file.is_some(), "{}: from the Secret", k.name);
    }
    let transfer = service(&r, "headless-dns-transfer");
    assert_eq!(
        transfer
            .spec
            .as_ref()
            .and_then(|s| s.session_affinity.as_deref()),
        Some("ClientIP")
    );
    assert_sends_dns_to_the_deployment(&r, transfer);
}

/// The zero-credential sidecar: no ServiceAccount token, no RBAC at all, a
/// follower of its own namespace's zone with that namespace's key (which
/// the primary confines to that namespace), on 127.0.0.1:53, probed, the
/// app started after it.
#[test]
fn the_sidecar_secondary_follows_its_namespace_with_no_credentials() {
    let r = render("sidecar-secondary");
    assert_eq!(r.namespaces, BTreeSet::from(["default".to_string()]));
    assert!(
        r.roles.is_empty()
            && r.role_bindings.is_empty()
            && r.cluster_roles.is_empty()
            && r.cluster_role_bindings.is_empty()
            && r.service_accounts.is_empty(),
        "no RBAC, no ServiceAccount"
    );
    assert_eq!(r.statefulsets.len(), 1);
    assert_eq!(r.config_maps.len(), 1);
    let sts = &r.statefulsets[0];
    let ns = sts.metadata.namespace.as_deref().unwrap();
    let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.service_account_name, None, "the namespace's default");
    for v in pod.volumes.iter().flatten() {
        let projected = v.projected.iter().flat_map(|p| p.sources.iter().flatten());
        for source in projected {
            assert!(
                source.service_account_token.is_none(),
                "{}: a token",
                v.name
            );
        }
    }
    let config = server_config(&r, pod, ns);
    assert_eq!(config.source.kind, SourceKind::Transfer);
    let zone = config
        .source
        .primary_zone
        .as_deref()
        .expect("--primary-zone");
    assert_eq!(zone, format!("{ns}.svc.{}", config.dns.zone));
    assert_eq!(config.namespace_of_zone(zone).as_deref(), Some(ns));
    assert!(config.source.primary.is_some());
    let key = config.source.primary_key.as_deref().expect("a key");
    assert!(config.transfer.tsig.iter().any(|k| k.name == key));
    assert!(config.transfer.allow.is_empty(), "it serves no transfers");
    assert_eq!(
        config.dns.listen,
        ["127.0.0.1:53".parse::<SocketAddr>().unwrap()]
    );
    let admin = admin_port(&config);
    let c = headless_dns_container(pod);
    assert_eq!(c.restart_policy.as_deref(), Some("Always"));
    assert_eq!(probe(&c.startup_probe), Some(("/ready", admin.clone())));
    assert_eq!(probe(&c.liveness_probe), Some(("/health", admin)));
    let dns = pod.dns_config.as_ref().expect("dnsConfig");
    assert_eq!(
        dns.nameservers
            .as_ref()
            .and_then(|n| n.first())
            .map(String::as_str),
        Some("127.0.0.1")
    );
    // The namespace's key on the primary is confined to this namespace.
    let primary = render("cluster");
    let d = &primary.deployments[0];
    let ppod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let pconfig = server_config(&primary, ppod, "kube-system");
    assert!(
        pconfig.transfer.tsig.iter().any(|k| k.namespaces == [ns]
            && k.key_file
                .as_ref()
                .is_some_and(|f| f.ends_with(format!("{ns}.stand-in.key")))),
        "the primary has {ns}'s key, for {ns} only"
    );
}

/// The two shapes together, each started with the configuration its
/// rendered args and files describe (the key files stood in for by one key,
/// as the overlays say to make it): the cluster shape reads a fake API
/// server; the zero-credential sidecar follows it for its namespace only,
/// signed with its namespace's key, and answers that namespace's names as
/// the primary does and no other namespace's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_secondary_follows_the_cluster_shape_for_its_namespace() {
    support::within(support::k8s::TEST_TIMEOUT, async {
        let follower_r = render("sidecar-secondary");
        let sts = &follower_r.statefulsets[0];
        let ns = sts.metadata.namespace.clone().expect("namespaced");
        let mut objects = support::k8s::web_cluster(3, 3);
        for o in &mut objects {
            if o["metadata"].get("namespace").is_some() {
                o["metadata"]["namespace"] = Value::from(ns.as_str());
            }
        }
        objects.push(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "secret", "namespace": "elsewhere", "resourceVersion": "1"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.7.7", "clusterIPs": ["10.96.7.7"]},
        }));
        let api = FakeApi::with_objects(objects).await;
        let primary_r = render("cluster");
        let d = &primary_r.deployments[0];
        let ppod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let mut pconfig = server_config(&primary_r, ppod, "kube-system");
        let test = support::k8s::k8s_config(&api);
        pconfig.source.kubeconfig = test.source.kubeconfig;
        (pconfig.dns.listen, pconfig.admin.listen) = (test.dns.listen, test.admin.listen);
        pconfig.admin.token_file = None;
        pconfig.admin.token = None;
        // The pod network stands for loopback here.
        pconfig.transfer.allow = vec!["127.0.0.1/32".parse().unwrap()];
        let primary = TestServer::start(pconfig).await;

        let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let mut config = server_config(&follower_r, pod, &ns);
        config.source.primary = Some(primary.dns);
        let test = support::server::test_config(Vec::new());
        (config.dns.listen, config.admin.listen) = (test.dns.listen, test.admin.listen);
        let follower = TestServer::start(config).await;
        let name = format!("web-0.nginx.{ns}.svc.cluster.local");
        let want = support::dns::Answer::ips(&[support::k8s::web_ip(0)]);
        follower.assert_a(&name, &want).await;
        primary.assert_a(&name, &want).await;
        let elsewhere = "secret.elsewhere.svc.cluster.local";
        let secret = support::dns::Answer::ips(&["10.96.7.7".parse().unwrap()]);
        assert_eq!(primary.a(elsewhere).await, secret);
        assert_eq!(follower.a(elsewhere).await, support::dns::Answer::NxDomain);
        follower.stop().await;
        primary.stop().await;
    })
    .await;
}

/// The node-local DaemonSet's pod spec.
fn node_local_pod(r: &Rendered) -> &PodSpec {
    assert_eq!(r.daemonsets.len(), 1);
    let ds = &r.daemonsets[0];
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

#[test]
fn the_node_local_overlay_renders_a_daemonset_without_credentials() {
    let r = render("node-local");
    assert_eq!(r.namespaces, BTreeSet::from(["kube-system".to_string()]));
    // No identity and no grant of any kind: it never talks to the API.
    assert!(r.service_accounts.is_empty());
    assert!(r.roles.is_empty() && r.role_bindings.is_empty());
    assert!(r.cluster_roles.is_empty() && r.cluster_role_bindings.is_empty());
    assert!(r.deployments.is_empty() && r.statefulsets.is_empty() && r.services.is_empty());
    assert_eq!(r.config_maps.len(), 1);
    let pod = node_local_pod(&r);
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.service_account_name, None);
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.dns_policy.as_deref(),
        Some("Default"),
        "the node's resolvers"
    );
    let config = server_config(&r, pod, "kube-system");
    assert_eq!(config.source.kind, SourceKind::Transfer);
    assert_eq!(
        config.dns.listen,
        ["169.254.20.10:53".parse::<SocketAddr>().unwrap()]
    );
    // The init container puts that address on the node, with NET_ADMIN only.
    let init = &pod.init_containers.as_deref().unwrap_or_default()[0];
    let script = init.command.as_deref().unwrap_or_default().join(" ");
    assert!(script.contains("ip addr add 169.254.20.10/32"), "{script}");
    let caps = init
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone());
    assert_eq!(caps, Some(vec!["NET_ADMIN".to_string()]));
    // Other names go to the node's resolvers.
    assert_eq!(
        config.forward.upstreams.len(),
        1,
        "{:?}",
        config.forward.upstreams
    );
    // Probed on the admin port; memory bounded.
    let c = headless_dns_container(pod);
    let admin = admin_port(&config);
    assert_eq!(probe(&c.readiness_probe), Some(("/ready", admin.clone())));
    assert_eq!(probe(&c.liveness_probe), Some(("/health", admin)));
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    assert!(
        limits.is_some_and(|l| l.contains_key("memory")),
        "{limits:?}"
    );
    let sc = c.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
}

#[test]
fn the_node_local_cache_follows_the_cluster_primary_with_its_key() {
    let cluster = render("cluster");
    let node = render("node-local");
    let local = server_config(&node, node_local_pod(&node), "kube-system");
    let d = &cluster.deployments[0];
    let pod = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .unwrap();
    let primary = server_config(&cluster, pod, "kube-system");
    // The primary's address is the transfer Service's, on its DNS port.
    let svc = cluster
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("headless-dns-transfer"))
        .and_then(|s| s.spec.as_ref())
        .expect("the headless-dns-transfer Service");
    assert_eq!(svc.session_affinity.as_deref(), Some("ClientIP"));
    let ip = svc.cluster_ip.as_deref().expect("a fixed clusterIP");
    let want: SocketAddr = format!("{ip}:53").parse().unwrap();
    assert_eq!(local.source.primary, Some(want));
    // The primary allows transfers, signed only, with the key node-local signs with.
    assert!(!primary.transfer.allow.is_empty());
    assert!(primary.transfer.require_tsig);
    let key = local.source.primary_key.as_deref().expect("primary_key");
    assert!(primary.transfer.tsig.iter().any(|k| k.name == key));
    assert!(local.transfer.tsig.iter().any(|k| k.name == key));
    // Both read it from the same Secret.
    let secret_of = |pod: &PodSpec| -> BTreeSet<String> {
        pod.volumes
            .iter()
            .flatten()
            .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
            .filter(|n| n.contains("tsig"))
            .collect()
    };
    let shared = secret_of(pod);
    assert_eq!(shared.len(), 1);
    assert_eq!(secret_of(node_local_pod(&node)), shared);
    // Its key takes the whole cluster zone; the tenants' keys are not mounted.
    let on_primary = primary.transfer.tsig.iter().find(|k| k.name == key);
    assert!(on_primary.is_some_and(|k| k.namespaces.is_empty()));
    let mounted_keys: Vec<_> = node_local_pod(&node)
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.secret.as_ref()?.items.clone())
        .flatten()
        .map(|i| i.path)
        .collect();
    assert_eq!(mounted_keys, [format!("{key}.key")]);
    // And the follower serves nothing it was not asked to: no transfers of its own.
    assert!(local.transfer.allow.is_empty());
    // The primary learns the nodes from their serial checks and NOTIFYs them
    // (signed: from a pod's address, not the Service's), so the refresh only
    // catches up a NOTIFY missed: seconds, not every second per node, and
    // bounded (a primary replica that restarted learns a node at its next check).
    assert!(
        primary.transfer.notify_followers_max > 0,
        "nodes are NOTIFYed"
    );
    let refresh = local
        .source
        .refresh_ms
        .expect("refresh_ms: bounds the lag without NOTIFY");
    assert!(
        (5_000..=60_000).contains(&refresh),
        "refresh_ms = {refresh}"
    );
}

/// Node-local restarts lose no query: the new pod starts beside the old one
/// (maxSurge 1, maxUnavailable 0; no hostPorts to keep it Pending) and takes
/// its sockets through a hand-over socket on a hostPath both pods mount;
/// the old pod is given time to finish a hand-over. Forwarded names are
/// served stale when the node's resolvers fail.
#[test]
fn the_node_local_cache_restarts_by_socket_hand_over() {
    let r = render("node-local");
    let ds = &r.daemonsets[0];
    let spec = ds.spec.as_ref().unwrap();
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .expect("a rolling update");
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    let pod = node_local_pod(&r);
    let c = headless_dns_container(pod);
    assert!(
        c.ports.as_deref().unwrap_or_default().is_empty(),
        "no hostPorts"
    );
    let config = server_config(&r, pod, "kube-system");
    let socket = config
        .dns
        .handover_socket
        .as_ref()
        .expect("--handover-socket");
    let dir = socket.parent().unwrap().to_str().unwrap();
    let (volume, _) = mounted(pod, c, socket.to_str().unwrap());
    let host = volume.host_path.as_ref().expect("a hostPath");
    assert_eq!(host.path, dir, "the node's directory, shared by both pods");
    let grace = pod.termination_grace_period_seconds.unwrap_or(30) as u64;
    assert!(
        grace * 1000 > config.source.reload_sync_timeout_ms,
        "the old pod outlives a hand-over's sync"
    );
    assert!(config.forward.stale_max_s > 0, "serve-stale on");
}
