//! Reading and watching the manifest files, and turning their changes into
//! source events, without keeping their objects.
//!
//! A changed file is read twice, a document at a time: a *validate* pass
//! (does the whole file parse? a broken file changes nothing, its last good
//! content keeps serving) and an *apply* pass that sends each object whose
//! digest differs from what the index holds, then removes what the file no
//! longer defines. Between reads only a digest per object is kept
//! ([`Layers`], which also has the rule for an object defined in two files).
//! The simulator, when on, is the top layer over the files.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::layers::{Fallout, Key, Layers};
use super::{DEMO, DEMO_NAME, Documents, Manifests, default_namespace, parse_document};
use crate::index::{Index, Kind, Object, SourceEvent};
use crate::sources::ObjectMap;
use crate::sources::sim::{SharedSim, Sim, SimCommands};

/// What tells a file changed without reading it.
#[derive(Clone, PartialEq, Eq)]
struct SizeAndMtime {
    len: u64,
    modified: Option<SystemTime>,
}

/// How long after its last write a file's size and mtime are not trusted.
///
/// A file's mtime moves in the kernel's clock ticks (a few ms on Linux,
/// coarser on some filesystems: 2 s on FAT), so a second write of the same
/// size within the tick of the write that was read leaves size and mtime
/// as they were ("racy git"). A stamp taken that soon after the write is
/// not kept: the file is read again (and its digest compared) at each poll
/// until its mtime is this old, after which any later write moves it.
const RACY: Duration = Duration::from_secs(2);

impl SizeAndMtime {
    /// Whether a later write of the same size would move the mtime (see
    /// [`RACY`]). No mtime, or one in the future, is taken as it is.
    fn settled(&self) -> bool {
        self.modified
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_none_or(|age| age >= RACY)
    }
}

/// What is remembered of one file (its objects' digests are in [`Layers`]).
#[derive(Default)]
struct FileState {
    /// Whether it was looked at yet.
    seen: bool,
    stamp: Option<SizeAndMtime>,
    /// A hash of the content last read, good or broken.
    digest: Option<u64>,
    /// It could not be read last time (logged once).
    unreadable: bool,
}

/// The event queue went away: the source stops.
pub(crate) struct Closed;

/// Reads and watches manifest files (or the embedded demo).
pub struct ManifestReader {
    manifests: Manifests,
    files: Vec<FileState>,
    layers: Layers,
    hasher: std::hash::RandomState,
    /// Where reads are counted (`IndexStats::manifest_reads`), if anywhere.
    counted: Option<Index>,
}

/// What one read of a changed file came to: an index into
/// [`crate::index::MANIFEST_READ_RESULTS`].
#[derive(Clone, Copy)]
enum ReadResult {
    Loaded,
    Invalid,
    Unreadable,
}

impl ManifestReader {
    /// A reader for `manifests`; nothing is read yet.
    pub fn new(manifests: Manifests) -> Self {
        let count = match &manifests {
            Manifests::Demo => 1,
            Manifests::Files(p) => p.len(),
        };
        Self {
            manifests,
            files: (0..count).map(|_| FileState::default()).collect(),
            // One layer per file and the simulator's on top.
            layers: Layers::new(count + 1),
            hasher: std::hash::RandomState::new(),
            counted: None,
        }
    }

    /// Counts every read of a changed file in `index`'s stats, by result.
    pub fn counting(mut self, index: Index) -> Self {
        self.counted = Some(index);
        self
    }

    fn count(&self, result: ReadResult) {
        if let Some(index) = &self.counted {
            index.stats().manifest_reads[result as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn name(&self, i: usize) -> String {
        match &self.manifests {
            Manifests::Demo => DEMO_NAME.to_string(),
            Manifests::Files(p) => p[i].display().to_string(),
        }
    }

    fn open(&self, i: usize) -> std::io::Result<Box<dyn BufRead + Send>> {
        match &self.manifests {
            Manifests::Demo => Ok(Box::new(DEMO.as_bytes())),
            Manifests::Files(p) => {
                let f = std::fs::File::open(&p[i])?;
                Ok(Box::new(std::io::BufReader::with_capacity(64 << 10, f)))
            }
        }
    }

    fn stamp(&self, i: usize) -> Option<SizeAndMtime> {
        match &self.manifests {
            Manifests::Demo => Some(SizeAndMtime {
                len: DEMO.len() as u64,
                modified: None,
            }),
            Manifests::Files(p) => stamp_of(&p[i]),
        }
    }

    /// Every object of file `i` in order, defaults filled in, to `each`;
    /// with the digest of the content read. `Ok(Err)`: the file is broken.
    fn read(
        &self,
        i: usize,
        mut each: impl FnMut(Object),
    ) -> std::io::Result<(u64, Result<(), super::ManifestError>)> {
        let name = self.name(i);
        let mut digest = self.hasher.build_hasher();
        let mut objs = Vec::new();
        let mut n = 0;
        let parsed = super::for_each_document(self.open(i)?, &mut digest, |line, doc| {
            n += 1;
            parse_document(&name, n, line, doc, &mut objs)?;
            for mut o in objs.drain(..) {
                default_namespace(std::slice::from_mut(&mut o));
                each(o);
            }
            Ok(())
        })?;
        Ok((digest.finish(), parsed))
    }

    /// The validate pass: whether file `i` must be applied (it changed and
    /// parses whole). A broken or unreadable file is logged and left as it was.
    fn validate(&mut self, i: usize, force: bool) -> bool {
        let now = self.stamp(i);
        let known = &self.files[i];
        if !force && known.seen && known.stamp == now {
            return false;
        }
        // What is kept to skip the next read: only a settled stamp.
        let stamp = now.filter(SizeAndMtime::settled);
        let mut count = 0usize;
        let read = self.read(i, |_| count += 1);
        let name = self.name(i);
        let file = &mut self.files[i];
        file.seen = true;
        let unreadable = std::mem::replace(&mut file.unreadable, read.is_err());
        let (apply, result) = match read {
            Err(e) => {
                file.stamp = None;
                if unreadable {
                    return false;
                }
                warn!(path = %name, error = %e, "cannot read manifest file; keeping its last good content");
                (false, ReadResult::Unreadable)
            }
            Ok((digest, _)) if file.digest == Some(digest) => {
                file.stamp = stamp;
                return false;
            }
            Ok((digest, Err(e))) => {
                warn!(error = %e, "manifest file is invalid; keeping its last good content");
                (file.stamp, file.digest) = (stamp, Some(digest));
                (false, ReadResult::Invalid)
            }
            Ok((digest, Ok(()))) => {
                (file.stamp, file.digest) = (stamp, Some(digest));
                info!(path = %name, objects = count, "manifest file loaded");
                (true, ReadResult::Loaded)
            }
        };
        self.count(result);
        apply
    }

    /// The apply pass of file `i`: sends what changed, then what it no
    /// longer defines. If the file changed since its validate pass and
    /// no longer parses, what was read stays and the file is read again at
    /// the next poll.
    async fn apply(&mut self, i: usize, tx: &mpsc::Sender<SourceEvent>) -> Result<(), Closed> {
        let mut change = self.layers.begin(i);
        let name = self.name(i);
        let mut docs = match self.open(i) {
            Ok(input) => Documents::new(input),
            Err(_) => {
                self.files[i].stamp = None;
                return Ok(());
            }
        };
        let mut digest = self.hasher.build_hasher();
        let (mut n, mut objs, mut whole) = (0, Vec::new(), true);
        loop {
            match docs.next(&mut digest) {
                Ok(Some((line, doc))) => {
                    n += 1;
                    if parse_document(&name, n, line, doc, &mut objs).is_err() {
                        whole = false;
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    whole = false;
                    break;
                }
            }
            for mut o in objs.drain(..) {
                default_namespace(std::slice::from_mut(&mut o));
                let d = self.hasher.hash_one(&o);
                if let Some(o) = self.layers.offer(&mut change, o, d) {
                    send(tx, SourceEvent::Upsert(o)).await?;
                }
            }
        }
        if !whole || self.files[i].digest != Some(digest.finish()) {
            // Changed between the passes: look again at the next poll.
            self.files[i].stamp = None;
        }
        if !whole {
            self.layers.commit_partial(change);
            return Ok(());
        }
        let fallout = self.layers.commit(change);
        self.settle(fallout, tx).await
    }

    /// Sends the removals of `fallout` and refills its keys from the layers
    /// below, file by file, until nothing is left to do.
    async fn settle(
        &mut self,
        fallout: Fallout,
        tx: &mpsc::Sender<SourceEvent>,
    ) -> Result<(), Closed> {
        let mut pending = fallout;
        while !(pending.removes.is_empty() && pending.refills.is_empty()) {
            for e in pending.removes.drain(..) {
                send(tx, e).await?;
            }
            let mut wanted: BTreeMap<usize, HashSet<Key>> = BTreeMap::new();
            for (layer, key) in pending.refills.drain(..) {
                wanted.entry(layer).or_default().insert(key);
            }
            for (layer, keys) in wanted {
                self.refill(layer, keys, &mut pending, tx).await?;
            }
        }
        Ok(())
    }

    /// Sends file `layer`'s objects for `keys` (it became their winner).
    /// Keys it no longer has (it changed since it was read) are handed on.
    async fn refill(
        &mut self,
        layer: usize,
        mut keys: HashSet<Key>,
        pending: &mut Fallout,
        tx: &mpsc::Sender<SourceEvent>,
    ) -> Result<(), Closed> {
        let mut found = Vec::new();
        let read = self.read(layer, |o| {
            if keys.remove(&(o.kind(), o.key().clone())) {
                found.push(o);
            }
        });
        if !matches!(&read, Ok((d, Ok(()))) if self.files[layer].digest == Some(*d)) {
            self.files[layer].stamp = None;
        }
        for o in found {
            let key = (o.kind(), o.key().clone());
            if !self.layers.shadowed(layer, &key) {
                // Its current version, even if the file changed since it was read.
                self.layers.set(layer, key, self.hasher.hash_one(&o));
                send(tx, SourceEvent::Upsert(o)).await?;
            }
        }
        for key in keys {
            let more = self.layers.lost(layer, key);
            pending.removes.extend(more.removes);
            pending.refills.extend(more.refills);
        }
        Ok(())
    }

    /// Validates and applies every changed file (all of them if `force`);
    /// true if any was applied.
    pub(crate) async fn refresh(
        &mut self,
        force: bool,
        tx: &mpsc::Sender<SourceEvent>,
    ) -> Result<bool, Closed> {
        let mut applied = false;
        for i in 0..self.files.len() {
            if self.validate(i, force) {
                self.apply(i, tx).await?;
                applied = true;
            }
        }
        Ok(applied)
    }

    /// Makes the simulator's objects the top layer.
    pub(crate) async fn apply_sim(
        &mut self,
        objects: Vec<Object>,
        tx: &mpsc::Sender<SourceEvent>,
    ) -> Result<(), Closed> {
        let mut change = self.layers.begin(self.layers.top());
        for o in objects {
            let d = self.hasher.hash_one(&o);
            if let Some(o) = self.layers.offer(&mut change, o, d) {
                send(tx, SourceEvent::Upsert(o)).await?;
            }
        }
        let fallout = self.layers.commit(change);
        self.settle(fallout, tx).await
    }

    /// Whether any file defines a StatefulSet (else the simulator has
    /// nothing to do and needs no manifests).
    pub(crate) fn has_statefulsets(&self) -> bool {
        self.layers.any_of(Kind::StatefulSet)
    }

    /// All files' objects, read now; a key defined twice keeps the last
    /// file's object, a broken file is left out. Built on demand (export,
    /// the simulator's view of the manifests); the reader keeps no objects.
    pub fn merged(&self) -> ObjectMap {
        let mut map = ObjectMap::new();
        for i in 0..self.files.len() {
            let mut objs = Vec::new();
            match self.read(i, |o| objs.push(o)) {
                Ok((_, Ok(()))) => {
                    map.extend(objs.into_iter().map(|o| ((o.kind(), o.key().clone()), o)));
                }
                Ok((_, Err(e))) => warn!(error = %e, "manifest file is invalid; left out"),
                Err(e) => warn!(path = %self.name(i), error = %e, "cannot read manifest file"),
            }
        }
        map
    }
}

fn stamp_of(path: &Path) -> Option<SizeAndMtime> {
    std::fs::metadata(path).ok().map(|m| SizeAndMtime {
        len: m.len(),
        modified: m.modified().ok(),
    })
}

async fn send(tx: &mpsc::Sender<SourceEvent>, event: SourceEvent) -> Result<(), Closed> {
    tx.send(event).await.map_err(|_| Closed)
}

/// Sends `event` for every kind.
async fn send_all(
    tx: &mpsc::Sender<SourceEvent>,
    event: fn(Kind) -> SourceEvent,
) -> Result<(), Closed> {
    for k in Kind::ALL {
        send(tx, event(k)).await?;
    }
    Ok(())
}

/// Runs the file source (with the simulator on top, if given) until `stop`:
/// a first full list, then what changed on every file change, SIGHUP,
/// simulator step or simulator command.
pub async fn run(
    mut reader: ManifestReader,
    poll: Duration,
    mut sim: Option<(SharedSim, SimCommands)>,
    tx: mpsc::Sender<SourceEvent>,
    stop: CancellationToken,
) {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let watch_files = matches!(reader.manifests, Manifests::Files(_));
    // The first pass is a complete list of every kind (the index is ready
    // after it); `changed`: a simulator command changed state.
    let (mut first, mut force, mut changed) = (true, true, true);
    loop {
        let now = Instant::now();
        if step(
            &mut reader,
            sim.as_ref().map(|s| &s.0),
            &tx,
            (first, force, changed),
            now,
        )
        .await
        .is_err()
        {
            return;
        }
        (first, force, changed) = (false, false, false);
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

/// One turn of [`run`]: the files, then the simulator over them.
async fn step(
    reader: &mut ManifestReader,
    sim: Option<&SharedSim>,
    tx: &mpsc::Sender<SourceEvent>,
    (first, force, changed): (bool, bool, bool),
    now: Instant,
) -> Result<(), Closed> {
    if first {
        send_all(tx, SourceEvent::Reset).await?;
    }
    let files_changed = reader.refresh(force, tx).await?;
    if let Some(s) = sim {
        let mut dirty = changed;
        if files_changed {
            // The simulator reads the manifests only when a StatefulSet is
            // there to simulate: then they are read once more, whole.
            let manifests = if reader.has_statefulsets() {
                reader.merged()
            } else {
                ObjectMap::new()
            };
            lock(s).sync_manifests(&manifests, now);
            dirty = true;
        }
        dirty |= lock(s).reconcile(now);
        if dirty {
            let objects = lock(s).objects();
            reader.apply_sim(objects, tx).await?;
        }
    }
    if first {
        send_all(tx, SourceEvent::Synced).await?;
    }
    Ok(())
}

/// The simulator, even if a panic poisoned its lock: it is a demo aid, and a
/// step left half-done beats a source that stops.
fn lock(sim: &SharedSim) -> std::sync::MutexGuard<'_, Sim> {
    sim.lock().unwrap_or_else(|p| p.into_inner())
}
