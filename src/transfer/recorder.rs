//! The writer-side half of zone transfers: a [`PublishObserver`] that turns
//! each publication into a journal change, marks a consistent-snapshot
//! counter for AXFR, wakes the NOTIFY task, and keeps the serial floor file.
//!
//! It runs on the index writer's task, after the writer has built the new
//! views and before it moves on: the query path never waits for it. Until
//! the index has synced it records nothing (no secondary can hold a serial
//! from before), so the initial load costs no diffs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::warn;

use super::Shared;
use super::journal::Pending;
use crate::index::ServiceView;
use crate::index::observe::PublishObserver;

/// How far ahead of the served serial the floor file is kept: it is
/// rewritten once the serial has used half of it.
const SERIAL_MARGIN: u32 = 600;

/// The index writer's observer.
pub(crate) struct Recorder {
    shared: Arc<Shared>,
    pending: Pending,
    old: Vec<(u8, Vec<u8>)>,
    new: Vec<(u8, Vec<u8>)>,
    /// Zones with a record changed by the publication in progress.
    changed: Vec<bool>,
    /// The same for one service; and the namespaces with a cluster-zone
    /// record changed by the publication in progress.
    changed_here: Vec<bool>,
    touched: BTreeSet<Arc<str>>,
    /// The serial readers saw before the publication in progress.
    serial: u32,
    /// True once the index has synced: changes are journaled from then on.
    recording: bool,
    floor: Option<SerialFloor>,
}

impl Recorder {
    pub(crate) fn new(shared: Arc<Shared>, serial_file: Option<PathBuf>) -> Self {
        let zones = shared.zones.len();
        Self {
            shared,
            pending: Pending::default(),
            old: Vec::new(),
            new: Vec::new(),
            changed: vec![false; zones],
            changed_here: vec![false; zones],
            touched: BTreeSet::new(),
            serial: 0,
            recording: false,
            floor: serial_file.map(SerialFloor::load),
        }
    }

    fn records(&self, v: Option<&Arc<ServiceView>>, out: &mut Vec<(u8, Vec<u8>)>) {
        out.clear();
        if let Some(v) = v {
            self.shared
                .zones
                .view_records(v, &self.shared.settings, None, out);
        }
    }
}

impl PublishObserver for Recorder {
    fn begin(&mut self, _arrived_us: u64) {
        // Odd while views change: AXFR snapshots taken now are retried.
        self.shared.publishing.fetch_add(1, Ordering::SeqCst);
        self.pending.clear();
        self.changed.fill(false);
        self.touched.clear();
    }

    fn service(&mut self, old: Option<&Arc<ServiceView>>, new: Option<&Arc<ServiceView>>) {
        if !self.recording {
            return;
        }
        let (mut o, mut n) = (std::mem::take(&mut self.old), std::mem::take(&mut self.new));
        self.records(old, &mut o);
        self.records(new, &mut n);
        self.changed_here.fill(false);
        self.pending.diff(&o, &n, &mut self.changed_here);
        for (all, here) in self.changed.iter_mut().zip(&self.changed_here) {
            *all |= *here;
        }
        if self.changed_here.first() == Some(&true)
            && let Some(v) = old.or(new)
        {
            let ns = v.record.key.namespace();
            if !self.touched.contains(ns) {
                self.touched.insert(Arc::from(ns));
            }
        }
        (self.old, self.new) = (o, n);
    }

    fn namespace(&mut self, name: &str, exists: bool) {
        if !self.recording {
            return;
        }
        // The cluster zone's marker (see `zones`); a namespace's own zone
        // leaves it out, so its serial stays.
        let Some(marker) = self
            .shared
            .zones
            .namespace_marker(&self.shared.settings, name)
        else {
            return;
        };
        let marker = [(0, marker)];
        let (old, new): (&[_], &[_]) = if exists {
            (&[], &marker)
        } else {
            (&marker, &[])
        };
        self.pending.diff(old, new, &mut self.changed);
    }

    fn end(&mut self, serial: u32) {
        if serial != self.serial {
            let s = &self.shared;
            if self.recording {
                let mut journal = s.journal.lock().unwrap_or_else(|p| p.into_inner());
                journal.push(self.serial, serial, &mut self.pending);
                for ns in &self.touched {
                    journal.touch(ns, serial);
                }
                drop(journal);
                s.notify.mark(&self.changed, &self.touched, false);
            } else if s.index.is_synced() {
                // The first synced serial: history starts here, and every
                // secondary hears of it (after a restart theirs is older).
                s.journal
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .start(serial);
                self.recording = true;
                s.notify
                    .mark(&vec![true; self.changed.len()], &BTreeSet::new(), true);
            }
            self.serial = serial;
            if let Some(f) = self.floor.as_mut() {
                f.keep(serial);
            }
        }
        self.shared.publishing.fetch_add(1, Ordering::SeqCst);
    }

    fn serial_floor(&self) -> u32 {
        self.floor
            .as_ref()
            .map_or(0, |f| f.reserved.wrapping_add(1))
    }
}

/// `[transfer] serial_file`: a serial no published serial has reached yet,
/// so that a restarted server starts above everything it served before
/// (secondaries ignore a serial that is not newer than theirs).
struct SerialFloor {
    path: PathBuf,
    reserved: u32,
}

impl SerialFloor {
    fn load(path: PathBuf) -> Self {
        let reserved = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Self { path, reserved }
    }

    /// Moves the reservation ahead when `serial` has used half of it. The
    /// file is written before any serial beyond the old reservation can be
    /// served: the serial grows by one per publication unless the clock
    /// jumps it, and the clock alone keeps a restart above those.
    fn keep(&mut self, serial: u32) {
        if serial < self.reserved.saturating_sub(SERIAL_MARGIN / 2) {
            return;
        }
        let reserved = serial.saturating_add(SERIAL_MARGIN);
        match replace_durably(&self.path, &format!("{reserved}\n")) {
            Ok(()) => self.reserved = reserved,
            Err(e) => {
                warn!(error = %e, path = %self.path.display(), "cannot write the serial file")
            }
        }
    }
}

/// Replaces `path` with `text` so that a crash at any point leaves the old
/// content or the new, never an empty or partial file: written to a
/// temporary file beside it and synced, renamed over it, then the directory
/// synced so the rename itself survives a power loss.
fn replace_durably(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serial_floor_is_replaced_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial");
        let mut floor = SerialFloor::load(path.clone());
        assert_eq!(floor.reserved, 0, "no file yet");
        floor.keep(1_000);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1600\n");
        // Within the first half of the reservation: not rewritten.
        floor.keep(1_200);
        assert_eq!(SerialFloor::load(path.clone()).reserved, 1_600);
        floor.keep(1_300);
        assert_eq!(SerialFloor::load(path.clone()).reserved, 1_900);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
    }
}
