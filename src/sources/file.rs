//! The manifest-file source: standard Kubernetes YAML on disk, watched.
//!
//! Files hold any number of documents (`---`), each an object or a `kind: List`.
//! Objects are read into `k8s_openapi` types (the same types the API source
//! gets) and reduced to index records. Files are polled for changes (size,
//! mtime, then content) and re-read on SIGHUP; a change is applied as a diff
//! (`reader`), with a digest per object kept between reads, not the objects
//! (`layers`, which also says which file wins an object defined in two).
//! A broken file is reported with file, document and line, and its last good
//! content keeps serving. Unknown kinds are skipped.

use std::hash::Hasher;
use std::io::BufRead;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::debug;

use crate::config::SourceConfig;
use crate::index::record::RecordError;
use crate::index::{
    NamespaceRecord, Object, PodRecord, ServiceRecord, SliceRecord, StatefulSetRecord,
};

/// The embedded demo cluster, served when no manifest is configured.
pub const DEMO: &str = include_str!("../../config/demo-cluster.yaml");
/// The name the embedded demo is reported under.
pub const DEMO_NAME: &str = "<embedded config/demo-cluster.yaml>";

mod layers;
mod reader;
pub use reader::{ManifestReader, run};

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

/// Splits a YAML stream at `---` lines and hands out each document with
/// content, with its first line number, one at a time: a big file is never
/// held whole. Every byte read goes through the caller's digest.
struct Documents<R> {
    input: R,
    /// The line just read.
    raw: String,
    /// The document being gathered, from line `start`.
    cur: String,
    start: usize,
    /// The document handed out last.
    out: String,
    /// Lines read.
    line: usize,
}

impl<R: BufRead> Documents<R> {
    fn new(input: R) -> Self {
        Self {
            input,
            raw: String::new(),
            cur: String::new(),
            start: 1,
            out: String::new(),
            line: 0,
        }
    }

    /// The next document with content and its first line; `None` at the end.
    fn next(&mut self, digest: &mut impl Hasher) -> std::io::Result<Option<(usize, &str)>> {
        loop {
            self.raw.clear();
            if self.input.read_line(&mut self.raw)? == 0 {
                let start = self.start;
                return Ok(self.hand_out().then_some((start, self.out.as_str())));
            }
            digest.write(self.raw.as_bytes());
            self.line += 1;
            let line = self.raw.strip_suffix('\n').unwrap_or(&self.raw);
            let line = line.strip_suffix('\r').unwrap_or(line);
            let is_marker =
                line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
            if !is_marker {
                if line.trim() != "..." {
                    self.cur.push_str(line);
                    self.cur.push('\n');
                }
                continue;
            }
            let start = self.start;
            // `--- {a: 1}` keeps content on the marker line.
            let rest = line[3..].trim();
            let rest_has_content = !rest.is_empty() && !rest.starts_with('#');
            let had = self.hand_out();
            self.start = self.line + usize::from(!rest_has_content);
            if rest_has_content {
                let rest = self.raw.trim_end()[3..].trim();
                self.cur.push_str(rest);
                self.cur.push('\n');
            }
            if had {
                return Ok(Some((start, self.out.as_str())));
            }
        }
    }

    /// Moves the gathered document to `out` if it has content (not only
    /// blank lines and comments); true if it had.
    fn hand_out(&mut self) -> bool {
        let has_content = self
            .cur
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        std::mem::swap(&mut self.cur, &mut self.out);
        self.cur.clear();
        has_content
    }

    /// Reads the rest of the input into `digest` (after a broken document,
    /// so that an unchanged broken file can be told from a new one).
    fn drain(&mut self, digest: &mut impl Hasher) -> std::io::Result<()> {
        loop {
            self.raw.clear();
            if self.input.read_line(&mut self.raw)? == 0 {
                return Ok(());
            }
            digest.write(self.raw.as_bytes());
        }
    }
}

/// Hands each document of `input` to `doc` (see [`Documents`]); after `doc`
/// fails, the rest of the input still goes through `digest`.
fn for_each_document<E>(
    input: impl BufRead,
    digest: &mut impl Hasher,
    mut doc: impl FnMut(usize, &str) -> Result<(), E>,
) -> std::io::Result<Result<(), E>> {
    let mut docs = Documents::new(input);
    while let Some((line, text)) = docs.next(digest)? {
        if let Err(e) = doc(line, text) {
            docs.drain(digest)?;
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
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
