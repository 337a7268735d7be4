//! Namespaced RBAC, as the apiserver's authorizer applies a Role bound in a
//! namespace: once a test grants a Role, every resource request needs a rule
//! of a Role granted in the request's namespace that names its API group,
//! resource and verb (`*` matching any), and cluster-scope requests are never
//! allowed (a Role cannot grant them). Anything else gets the apiserver's 403
//! `Status`. Discovery (`/api`, `/apis`, `/version`) stays open, as the
//! `system:discovery` ClusterRole keeps it for every authenticated user.

use axum::response::Response;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role};
use serde_json::json;

use super::resources::ResourceType;
use super::routing::json_response;

/// The service account the fake API pretends the client is.
pub const USER: &str = "system:serviceaccount:default:headless-dns";

/// One Role bound in one namespace.
#[derive(Clone, Debug)]
pub struct Grant {
    pub namespace: String,
    pub rules: Vec<PolicyRule>,
}

/// Whether `grants` allow `verb` on `rt` in `namespace` (`None`: cluster scope).
pub fn allows(grants: &[Grant], verb: &str, rt: &ResourceType, namespace: Option<&str>) -> bool {
    let Some(ns) = namespace else {
        return false;
    };
    let has = |list: &Option<Vec<String>>, want: &str| {
        list.iter().flatten().any(|x| x == want || x == "*")
    };
    grants.iter().filter(|g| g.namespace == ns).any(|g| {
        g.rules.iter().any(|r| {
            has(&r.api_groups, rt.group)
                && has(&r.resources, rt.plural)
                && r.verbs.iter().any(|v| v == verb || v == "*")
                && r.resource_names.as_ref().is_none_or(|n| n.is_empty())
        })
    })
}

/// A Role from `(api group, resource, verbs)` rules.
pub fn role(rules: &[(&str, &str, &[&str])]) -> Role {
    let rules = rules
        .iter()
        .map(|(group, resource, verbs)| PolicyRule {
            api_groups: Some(vec![group.to_string()]),
            resources: Some(vec![resource.to_string()]),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        })
        .collect();
    Role {
        rules: Some(rules),
        ..Default::default()
    }
}

/// The apiserver's answer to a request no rule allows.
pub fn forbidden(verb: &str, rt: &ResourceType, namespace: Option<&str>) -> Response {
    let resource = if rt.group.is_empty() {
        rt.plural.to_string()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    };
    let scope = match namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let message = format!(
        "{resource} is forbidden: User \"{USER}\" cannot {verb} resource \"{}\" in API group \"{}\" {scope}",
        rt.plural, rt.group
    );
    json_response(
        403,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "Forbidden",
            "details": { "group": rt.group, "kind": rt.plural },
            "code": 403,
        }),
    )
}
