//! `headless-dns check`: loads and validates everything a start would (the
//! config file with the environment and flags on top, zone names, CIDRs,
//! upstreams, every manifest document) without binding a port or contacting
//! an API server, so a CI pipeline learns that a file is broken before it
//! is rolled out (nginx has `-t`).
//!
//! Every problem is reported, each with its file and line where it has one;
//! with none, a one-line summary says what the server would serve.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::cli::{ServeArgs, merge};
use crate::config::{Config, SourceKind};
use crate::error::Error;
use crate::index::{Kind, ObjectKey};
use crate::sources::file::{DEMO, DEMO_NAME, default_namespace, parse_all};

/// What `check` found.
#[derive(Debug, Default)]
pub struct Report {
    /// One line describing what would be served (empty when there are errors).
    pub summary: String,
    /// Every problem, `file:line: message` where the file has a line for it.
    pub errors: Vec<String>,
}

/// Checks what `args` (flags, environment, config file) describe.
pub fn check(args: &ServeArgs) -> Report {
    let mut errors = Vec::new();
    let Some(config) = config(args, &mut errors) else {
        return Report {
            summary: String::new(),
            errors,
        };
    };
    let summary = match config.source.kind {
        SourceKind::File => manifests(&config, &mut errors),
        SourceKind::Kubernetes => kubernetes(&config, &mut errors),
        SourceKind::Transfer => format!(
            "transfer source: following {} (not contacted by check)",
            config
                .source
                .primary
                .map_or_else(|| "?".to_string(), |p| p.to_string())
        ),
    };
    if !errors.is_empty() {
        return Report {
            summary: String::new(),
            errors,
        };
    }
    Report { summary, errors }
}

/// The merged, validated configuration, or `None` with the problems in `errors`.
fn config(args: &ServeArgs, errors: &mut Vec<String>) -> Option<Config> {
    let file = match &args.config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some((path.display().to_string(), text)),
            Err(e) => {
                errors.push(format!("{}: cannot read: {e}", path.display()));
                return None;
            }
        },
        None => None,
    };
    // The file alone first: its syntax, and which problems are its own.
    let mut own = Vec::new();
    if let Some((path, text)) = &file {
        match Config::from_toml(text) {
            Ok(c) => own = problems(c.validate()),
            Err(e) => {
                // `from_toml` says "line N: message".
                errors.push(match e.strip_prefix("line ") {
                    Some(rest) => format!("{path}:{rest}"),
                    None => format!("{path}: {e}"),
                });
                return None;
            }
        }
    }
    let found = match merge(args) {
        // Valid, and the token file (if any) holds a token, as at a start.
        Ok(mut c) => match c
            .read_key_files()
            .and_then(|()| c.validate())
            .and_then(|()| c.read_admin_token())
        {
            Ok(()) => return Some(c),
            e => problems(e),
        },
        Err(e) => vec![format!("{e:#}")],
    };
    for p in found {
        let line = file
            .as_ref()
            .filter(|_| own.contains(&p))
            .and_then(|(path, text)| Some((path, key_line(text, &p)?)));
        errors.push(match line {
            Some((path, line)) => format!("{path}:{line}: {p}"),
            None if file.is_some() => format!("{p} (from a flag or the environment)"),
            None => p,
        });
    }
    None
}

/// The problems `Config::validate` listed, one each.
fn problems(validated: crate::error::Result<()>) -> Vec<String> {
    let prefix = "invalid configuration: ";
    match validated {
        Ok(()) => Vec::new(),
        Err(Error::Config(list)) => list
            .split("\n  ")
            .map(|p| p.strip_prefix(prefix).unwrap_or(p).to_string())
            .collect(),
        Err(e) => vec![error_chain(&e)],
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(&format!(": {c}"));
        source = c.source();
    }
    s
}

/// The line of `text` (TOML) that sets the key a problem starts with
/// (`dns.zone: ...` -> the `zone = ` line under `[dns]`).
fn key_line(text: &str, problem: &str) -> Option<usize> {
    let key = problem.split([':', ' ']).next()?;
    let (section, name) = key.split_once('.')?;
    let mut current = "";
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = h.trim();
            continue;
        }
        let Some((k, _)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if (current == section && k == name) || (current.is_empty() && k == key) {
            return Some(i + 1);
        }
    }
    None
}

/// Parses every manifest document (all errors, with their lines) and, if all
/// parse, builds the index the server would start with.
fn manifests(config: &Config, errors: &mut Vec<String>) -> String {
    let mut statefulsets: HashSet<ObjectKey> = HashSet::new();
    let files = &config.source.manifests;
    let mut texts = Vec::new();
    if files.is_empty() {
        texts.push((DEMO_NAME.to_string(), DEMO.to_string()));
    }
    for path in files {
        match std::fs::read_to_string(path) {
            Ok(t) => texts.push((path.display().to_string(), t)),
            Err(e) => errors.push(format!("{}: cannot read: {e}", path.display())),
        }
    }
    for (name, text) in &texts {
        let (mut objects, errs) = parse_all(name, text);
        errors.extend(errs.iter().map(ToString::to_string));
        default_namespace(&mut objects);
        statefulsets.extend(
            objects
                .iter()
                .filter(|o| o.kind() == Kind::StatefulSet)
                .map(|o| o.key().clone()),
        );
    }
    if !errors.is_empty() {
        return String::new();
    }
    let index = match crate::index_manifests(config) {
        Ok(i) => i,
        Err(e) => {
            errors.push(error_chain(&e));
            return String::new();
        }
    };
    let s = index.stats();
    let from = match files.len() {
        0 => "the embedded demo".to_string(),
        1 => files[0].display().to_string(),
        n => format!("{n} manifest files"),
    };
    let sim = if config.sim.enabled && !statefulsets.is_empty() {
        ", pods simulated"
    } else {
        ""
    };
    format!(
        "ok: {}, {}, {} in zone {} from {from}{sim}",
        count(s.services.load(Ordering::Relaxed), "service"),
        count(s.endpoints.load(Ordering::Relaxed), "endpoint"),
        count(statefulsets.len() as u64, "StatefulSet"),
        config.dns.zone,
    )
}

/// "1 service", "2 services".
fn count(n: u64, what: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{n} {what}{s}")
}

/// Reads the kubeconfig (if one is named) and checks its context, without
/// contacting the cluster.
fn kubernetes(config: &Config, errors: &mut Vec<String>) -> String {
    let s = &config.source;
    let credentials = match (&s.kubeconfig, &s.context) {
        (None, None) => "in-cluster or default kubeconfig".to_string(),
        (path, context) => {
            let read = match path {
                Some(p) => kube::config::Kubeconfig::read_from(p),
                None => kube::config::Kubeconfig::read(),
            };
            let name = path
                .as_deref()
                .unwrap_or(Path::new("the default kubeconfig"))
                .display()
                .to_string();
            match read {
                Err(e) => errors.push(format!("{name}: {}", error_chain(&e))),
                Ok(kc) => {
                    if let Some(c) = context
                        && !kc.contexts.iter().any(|n| &n.name == c)
                    {
                        errors.push(format!("source.context: {c:?} is not a context of {name}"));
                    }
                }
            }
            match context {
                Some(c) => format!("{name}, context {c}"),
                None => name,
            }
        }
    };
    let kinds: Vec<&str> = crate::sources::k8s::kinds(config)
        .iter()
        .map(|k| k.as_str())
        .collect();
    let scope = if s.namespaces.is_empty() {
        "all namespaces".to_string()
    } else {
        format!("namespaces {}", s.namespaces.join(","))
    };
    format!(
        "ok: kubernetes source ({credentials}; not contacted) for zone {}: would watch {} in {scope}",
        config.dns.zone,
        kinds.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::key_line;

    #[test]
    fn problems_are_found_on_their_line() {
        let text = "# c\n[dns]\nttl = 5\nzone = \"x\"\n[forward]\ntimeout_ms = 0\n";
        assert_eq!(key_line(text, "dns.zone: \"x\" is bad"), Some(4));
        assert_eq!(key_line(text, "forward.timeout_ms and x"), Some(6));
        assert_eq!(key_line(text, "dns.listen: none"), None);
        assert_eq!(key_line("dns.ttl = 9\n", "dns.ttl: 9"), Some(1));
    }
}
