//! The manifest-file source: standard Kubernetes YAML on disk, watched.
//!
//! Files hold any number of documents (`---`), each an object or a `kind: List`.
//! Objects are read into `k8s_openapi` types (the same types the API source
//! gets) and reduced to index records. Files are polled for changes (size,
//! mtime, then content) and re-read on SIGHUP; a change is applied as a diff.
//! A broken file is reported with file, document and line, and its last good
//! content keeps serving. Unknown kinds are skipped.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::sim::{SharedSim, Sim, SimCommands};
use super::{Differ, ObjectMap, SourceEvent};
use crate::config::SourceConfig;
use crate::index::record::RecordError;
use crate::index::{
    NamespaceRecord, Object, PodRecord, ServiceRecord, SliceRecord, StatefulSetRecord,
};

/// The embedded demo cluster, served when no manifest is configured.
pub const DEMO: &str = include_str!("../../config/demo-cluster.yaml");
/// The name the embedded demo is reported under.
pub const DEMO_NAME: &str = "<embedded config/demo-cluster.yaml>";

/// A parse failure: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The file.
    pub path: String,
    /// 1-based document number within the file.
    pub document: usize,
    /// 1-based line in the file.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: document {}: {}",
            self.path, self.line, self.document, self.message
        )
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

#[derive(Deserialize)]
struct List {
    #[serde(default)]
    items: Vec<serde_yaml_ng::Value>,
}

/// Splits a YAML stream at `---` lines and hands each document with content
/// to `doc`, with its first line number, one at a time: a big file is never
/// held whole (it was, as read and again split into documents). Every byte
/// read goes through `digest`, to the end of the input even after `doc`
/// failed, so that an unchanged broken file can be told from a new one.
fn for_each_document<E>(
    mut input: impl BufRead,
    digest: &mut impl Hasher,
    mut doc: impl FnMut(usize, &str) -> Result<(), E>,
) -> std::io::Result<Result<(), E>> {
    let (mut raw, mut cur) = (String::new(), String::new());
    // `start`: the current document's first line; `i`: the line just read.
    let (mut start, mut i) = (1, 0);
    let mut failed = None;
    let mut emit = |start: usize, cur: &mut String, failed: &mut Option<E>| {
        let has_content = cur
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if failed.is_none()
            && has_content
            && let Err(e) = doc(start, cur)
        {
            *failed = Some(e);
        }
        cur.clear();
    };
    loop {
        raw.clear();
        if input.read_line(&mut raw)? == 0 {
            break;
        }
        digest.write(raw.as_bytes());
        i += 1;
        if failed.is_some() {
            continue;
        }
        let line = raw.strip_suffix('\n').unwrap_or(&raw);
        let line = line.strip_suffix('\r').unwrap_or(line);
        let is_marker =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_marker {
            emit(start, &mut cur, &mut failed);
            start = i + 1;
            // `--- {a: 1}` keeps content on the marker line.
            let rest = line[3..].trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                cur.push_str(rest);
                cur.push('\n');
                start = i;
            }
        } else if line.trim() != "..." {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    emit(start, &mut cur, &mut failed);
    Ok(failed.map_or(Ok(()), Err))
}

/// Parses one file's text into objects, in order.
pub fn parse(path: &str, text: &str) -> Result<Vec<Object>, ManifestError> {
    parse_from(path, text.as_bytes(), &mut std::hash::DefaultHasher::new())
        .expect("reading from memory cannot fail")
}

/// Parses every document of one file's text, collecting each broken
/// document's error instead of stopping at the first (`headless-dns check`).
pub fn parse_all(path: &str, text: &str) -> (Vec<Object>, Vec<ManifestError>) {
    let (mut out, mut errors, mut n) = (Vec::new(), Vec::new(), 0);
    let mut digest = std::hash::DefaultHasher::new();
    let read = for_each_document(text.as_bytes(), &mut digest, |first_line, doc| {
        n += 1;
        if let Err(e) = parse_document(path, n, first_line, doc, &mut out) {
            errors.push(e);
        }
        Ok::<(), ManifestError>(())
    });
    debug_assert!(read.is_ok(), "reading from memory cannot fail");
    (out, errors)
}

/// Parses a manifest read from `input` a document at a time, hashing what
/// it reads into `digest`. The outer error is the input's (unreadable, not
/// UTF-8), the inner one the manifest's.
fn parse_from(
    path: &str,
    input: impl BufRead,
    digest: &mut impl Hasher,
) -> std::io::Result<Result<Vec<Object>, ManifestError>> {
    let mut out = Vec::new();
    let mut n = 0;
    let parsed = for_each_document(input, digest, |first_line, doc| {
        n += 1;
        parse_document(path, n, first_line, doc, &mut out)
    })?;
    Ok(parsed.map(|()| out))
}

/// Parses document `n` (1-based) of `path`, which starts at `first_line`,
/// into `out`.
fn parse_document(
    path: &str,
    n: usize,
    first_line: usize,
    doc: &str,
    out: &mut Vec<Object>,
) -> Result<(), ManifestError> {
    let err = |line: usize, message: String| ManifestError {
        path: path.to_string(),
        document: n,
        line: first_line + line.saturating_sub(1),
        message,
    };
    let yaml_err = |e: serde_yaml_ng::Error| {
        let line = e.location().map_or(1, |l| l.line());
        err(line, e.to_string())
    };
    let meta: TypeMeta = serde_yaml_ng::from_str(doc).map_err(yaml_err)?;
    if meta.kind == "List" || meta.kind.ends_with("List") && meta.api_version == "v1" {
        let list: List = serde_yaml_ng::from_str(doc).map_err(yaml_err)?;
        for (i, item) in list.items.into_iter().enumerate() {
            let m: TypeMeta = serde_yaml_ng::from_value(item.clone()).map_err(yaml_err)?;
            if let Some(obj) = object_from(&m, ObjectYaml::ListItem(&item))
                .map_err(|e| err(1, format!("items[{i}]: {e}")))?
            {
                out.push(obj);
            }
        }
        return Ok(());
    }
    match object_from(&meta, ObjectYaml::Document(doc)) {
        Ok(Some(obj)) => out.push(obj),
        Ok(None) => debug!(path, document = n, kind = %meta.kind, "skipping unknown kind"),
        Err(DocError::Yaml(e)) => return Err(yaml_err(e)),
        Err(e) => return Err(err(1, e.to_string())),
    }
    Ok(())
}

#[derive(Debug)]
enum DocError {
    Yaml(serde_yaml_ng::Error),
    Record(&'static str, RecordError),
    Missing,
}

impl std::fmt::Display for DocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocError::Yaml(e) => write!(f, "{e}"),
            DocError::Record(kind, e) => write!(f, "{kind}: {e}"),
            DocError::Missing => write!(f, "apiVersion and kind are required"),
        }
    }
}

/// The YAML an object is read from: a whole document's text (errors keep
/// their line) or an item of a `kind: List`.
enum ObjectYaml<'a> {
    Document(&'a str),
    ListItem(&'a serde_yaml_ng::Value),
}

fn typed<T: DeserializeOwned>(src: &ObjectYaml<'_>) -> Result<T, DocError> {
    match src {
        ObjectYaml::Document(t) => serde_yaml_ng::from_str(t),
        ObjectYaml::ListItem(v) => serde_yaml_ng::from_value((*v).clone()),
    }
    .map_err(DocError::Yaml)
}

fn object_from(meta: &TypeMeta, src: ObjectYaml<'_>) -> Result<Option<Object>, DocError> {
    if meta.kind.is_empty() || meta.api_version.is_empty() {
        return Err(DocError::Missing);
    }
    let group = meta.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let rec = |k: &'static str| move |e| DocError::Record(k, e);
    Ok(Some(match (group, meta.kind.as_str()) {
        ("", "Service") => Object::Service(
            ServiceRecord::try_from(&typed::<Service>(&src)?).map_err(rec("Service"))?,
        ),
        ("discovery.k8s.io", "EndpointSlice") => Object::EndpointSlice(
            SliceRecord::try_from(&typed::<EndpointSlice>(&src)?).map_err(rec("EndpointSlice"))?,
        ),
        ("", "Namespace") => Object::Namespace(
            NamespaceRecord::try_from(&typed::<Namespace>(&src)?).map_err(rec("Namespace"))?,
        ),
        ("apps", "StatefulSet") => Object::StatefulSet(
            StatefulSetRecord::try_from(&typed::<StatefulSet>(&src)?)
                .map_err(rec("StatefulSet"))?,
        ),
        ("", "Pod") => Object::Pod(PodRecord::try_from(&typed::<Pod>(&src)?).map_err(rec("Pod"))?),
        _ => return Ok(None),
    }))
}

/// Fills in `metadata.namespace: default` where a manifest leaves it out, as
/// `kubectl apply` would; Namespaces themselves are cluster-scoped.
pub fn default_namespace(objs: &mut [Object]) {
    for o in objs {
        let key = match o {
            Object::Service(r) => &mut r.key,
            Object::EndpointSlice(r) => &mut r.key,
            Object::StatefulSet(r) => &mut r.key,
            Object::Pod(r) => &mut r.key,
            Object::Namespace(_) => continue,
        };
        if key.namespace().is_empty() {
            *key = crate::index::ObjectKey::new("default", key.name());
        }
    }
}

/// Where the manifests come from.
#[derive(Clone, Debug)]
pub enum Manifests {
    /// The embedded demo.
    Demo,
    /// These files.
    Files(Vec<PathBuf>),
}

impl Manifests {
    /// The configured manifest files, or the embedded demo when none are.
    pub fn of(source: &SourceConfig) -> Self {
        if source.manifests.is_empty() {
            Manifests::Demo
        } else {
            Manifests::Files(source.manifests.clone())
        }
    }
}

/// What tells a file changed without reading it.
#[derive(Clone, PartialEq, Eq)]
struct SizeAndMtime {
    len: u64,
    modified: Option<SystemTime>,
}

struct Loaded {
    stamp: Option<SizeAndMtime>,
    /// A hash of the content last read (the text itself is not kept: a big
    /// manifest file would be held twice, as text and as objects).
    digest: Option<u64>,
    objects: Vec<Object>,
}

/// Reads and watches manifest files, keeping each file's last good objects.
pub struct ManifestReader {
    manifests: Manifests,
    files: HashMap<PathBuf, Loaded>,
    hasher: std::hash::RandomState,
}

impl ManifestReader {
    /// A reader for `manifests`; nothing is read yet.
    pub fn new(manifests: Manifests) -> Self {
        Self {
            manifests,
            files: HashMap::new(),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Reads every file whose size or mtime changed (all of them if `force`).
    /// Returns whether any file's objects changed ([`Self::merged`] has
    /// them), and logs each broken file (its previous content keeps
    /// serving).
    pub fn reload(&mut self, force: bool) -> bool {
        let paths = match &self.manifests {
            Manifests::Demo => {
                if !self.files.is_empty() {
                    return false;
                }
                let mut objects = match parse(DEMO_NAME, DEMO) {
                    Ok(o) => o,
                    Err(e) => {
                        warn!(error = %e, "embedded demo does not parse");
                        Vec::new()
                    }
                };
                default_namespace(&mut objects);
                self.files.insert(
                    PathBuf::from(DEMO_NAME),
                    Loaded {
                        stamp: None,
                        digest: None,
                        objects,
                    },
                );
                return true;
            }
            Manifests::Files(p) => p.clone(),
        };
        let mut changed = false;
        for path in &paths {
            changed |= self.reload_file(path, force);
        }
        changed
    }

    fn reload_file(&mut self, path: &Path, force: bool) -> bool {
        let stamp = std::fs::metadata(path).ok().map(|m| SizeAndMtime {
            len: m.len(),
            modified: m.modified().ok(),
        });
        let prev = self.files.get(path);
        if !force && prev.is_some_and(|p| p.stamp == stamp) {
            return false;
        }
        // Parsed while read, a document at a time; if the content turns out
        // unchanged (same digest), the parse is thrown away.
        let mut digest = self.hasher.build_hasher();
        let read = std::fs::File::open(path).and_then(|f| {
            let input = std::io::BufReader::with_capacity(64 << 10, f);
            parse_from(&path.display().to_string(), input, &mut digest)
        });
        let parsed = match read {
            Ok(parsed) => parsed,
            Err(e) => {
                if prev.is_none_or(|p| p.stamp.is_some()) {
                    warn!(path = %path.display(), error = %e, "cannot read manifest file; keeping its last good content");
                }
                let entry = self.files.entry(path.to_path_buf()).or_insert(Loaded {
                    stamp: None,
                    digest: None,
                    objects: Vec::new(),
                });
                entry.stamp = None;
                return false;
            }
        };
        let digest = Some(digest.finish());
        if prev.is_some_and(|p| p.digest == digest) {
            if let Some(p) = self.files.get_mut(path) {
                p.stamp = stamp;
            }
            return false;
        }
        match parsed {
            Ok(mut objects) => {
                default_namespace(&mut objects);
                info!(path = %path.display(), objects = objects.len(), "manifest file loaded");
                self.files.insert(
                    path.to_path_buf(),
                    Loaded {
                        stamp,
                        digest,
                        objects,
                    },
                );
                true
            }
            Err(e) => {
                warn!(error = %e, "manifest file is invalid; keeping its last good content");
                let entry = self.files.entry(path.to_path_buf()).or_insert(Loaded {
                    stamp: None,
                    digest: None,
                    objects: Vec::new(),
                });
                entry.stamp = stamp;
                entry.digest = digest;
                false
            }
        }
    }

    /// All files' objects; a key defined twice keeps the last file's object.
    /// A copy, built on demand: the reader's per-file objects are the only
    /// ones kept between reloads.
    pub fn merged(&self) -> ObjectMap {
        let order: Vec<PathBuf> = match &self.manifests {
            Manifests::Demo => vec![PathBuf::from(DEMO_NAME)],
            Manifests::Files(p) => p.clone(),
        };
        let mut map = ObjectMap::new();
        for path in order {
            for o in self
                .files
                .get(&path)
                .map(|l| l.objects.as_slice())
                .unwrap_or_default()
            {
                map.insert((o.kind(), o.key().clone()), o.clone());
            }
        }
        map
    }
}

/// Runs the file source (with the simulator on top, if given) until `stop`:
/// initial full list, then diffs on every file change, SIGHUP, simulator step
/// or simulator command.
pub async fn run(
    mut reader: ManifestReader,
    poll: Duration,
    mut sim: Option<(SharedSim, SimCommands)>,
    tx: mpsc::Sender<SourceEvent>,
    stop: CancellationToken,
) {
    let mut differ = Differ::default();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let watch_files = matches!(reader.manifests, Manifests::Files(_));
    // `changed`: the first pass, or a simulator command changed state.
    let (mut force, mut changed) = (true, true);
    loop {
        let now = Instant::now();
        let mut dirty = std::mem::take(&mut changed);
        // The merged manifests are built only when needed and dropped after
        // the diff: the reader's per-file objects are the one kept copy.
        let mut manifests = None;
        if reader.reload(std::mem::take(&mut force)) {
            if let Some((s, _)) = &sim {
                lock(s).sync_manifests(manifests.insert(reader.merged()), now);
            }
            dirty = true;
        }
        if let Some((s, _)) = &sim {
            dirty |= lock(s).reconcile(now);
        }
        if dirty {
            let manifests = manifests.unwrap_or_else(|| reader.merged());
            let desired = match &sim {
                Some((s, _)) => lock(s).overlay(manifests),
                None => manifests,
            };
            for event in differ.diff(desired) {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
        let deadline = sim.as_ref().and_then(|(s, _)| lock(s).next_deadline());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll), if watch_files => {}
            _ = async { tokio::time::sleep_until(deadline.unwrap_or(now)).await }, if deadline.is_some() => {}
            Some(()) = async { hangup.as_mut()?.recv().await }, if hangup.is_some() => {
                info!("SIGHUP: re-reading manifests");
                force = true;
            }
            Some((cmd, reply)) = async { sim.as_mut()?.1.recv().await }, if sim.is_some() => {
                if let Some((s, _)) = &sim {
                    let _ = reply.send(lock(s).command(cmd, Instant::now()));
                    changed = true;
                }
            }
        }
    }
}

/// The simulator, even if a panic poisoned its lock: it is a demo aid, and a
/// step left half-done beats a source that stops.
fn lock(sim: &SharedSim) -> std::sync::MutexGuard<'_, Sim> {
    sim.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Kind;

    #[test]
    fn documents_keep_their_line_numbers() {
        let text = "# header\n---\na: 1\n---\n\nb: 2\n--- \nc: 3\n";
        assert_documents(text, &[(3, "a: 1\n"), (5, "\nb: 2\n"), (8, "c: 3\n")]);
    }

    /// Asserts the documents of `text`, as the streaming splitter hands them
    /// out: (first line, content).
    fn assert_documents(text: &str, want: &[(usize, &str)]) {
        let mut docs = Vec::new();
        let mut digest = std::hash::DefaultHasher::new();
        for_each_document(text.as_bytes(), &mut digest, |line, doc| {
            docs.push((line, doc.to_string()));
            Ok::<(), ()>(())
        })
        .unwrap()
        .unwrap();
        let want: Vec<(usize, String)> = want.iter().map(|(l, d)| (*l, d.to_string())).collect();
        assert_eq!(docs, want);
    }

    #[test]
    fn documents_with_content_on_the_marker_line_end_markers_and_crlf() {
        let text = "--- {a: 1}\nb: 2\n---\nc: 3\n...\n---\r\nd: 4\r\n";
        assert_documents(text, &[(1, "{a: 1}\nb: 2\n"), (4, "c: 3\n"), (7, "d: 4\n")]);
        let objs = parse(
            "m.yaml",
            "apiVersion: v1\r\nkind: Namespace\r\nmetadata: {name: a}\r\n...\r\n",
        )
        .unwrap();
        assert_eq!(objs.len(), 1);
    }

    #[test]
    fn the_digest_covers_the_whole_input_even_past_an_error() {
        let digest = |text: &str| {
            let mut h = std::hash::DefaultHasher::new();
            let parsed = parse_from("m.yaml", text.as_bytes(), &mut h).unwrap();
            (parsed.map_err(|e| e.line), h.finish())
        };
        let broken = "a: [1,\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
        let (r1, d1) = digest(broken);
        let (r2, d2) = digest(&broken.replace("name: a", "name: b"));
        assert_eq!((r1, r2), (Err(2), Err(2)));
        assert_ne!(d1, d2, "a change after the error is a change");
        assert_eq!(digest(broken).1, d1);
    }

    #[test]
    fn errors_name_file_document_and_line() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  namespace: a\nspec:\n  ports: [{port: notanumber}]\n";
        let e = parse("m.yaml", text).unwrap_err();
        assert_eq!(e.path, "m.yaml");
        assert_eq!(e.document, 2);
        assert_eq!(e.line, 11, "{e}");
        let e = parse(
            "m.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {namespace: a}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("metadata.name is missing"), "{e}");
        let e = parse("m.yaml", "a: [1,\n").unwrap_err();
        assert_eq!(e.document, 1);
    }

    #[test]
    fn lists_and_unknown_kinds() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
        let objs = parse("m.yaml", text).unwrap();
        assert_eq!(objs.len(), 1);
        assert_eq!(objs[0].kind(), Kind::Namespace);
    }

    #[test]
    fn the_embedded_demo_parses() {
        let objs = parse(DEMO_NAME, DEMO).unwrap();
        assert!(objs.iter().any(|o| o.kind() == Kind::StatefulSet));
        assert!(objs.iter().any(|o| o.kind() == Kind::Service));
    }
}
