//! Watch churn (issue #27): a seeded mix of the faults that end every open
//! watch at once, as an apiserver restart, a load balancer or etcd
//! compaction does in a real cluster.
//!
//! Deterministic from a seed ([`Rng`], a splitmix64: no crate), so a run
//! that fails replays. The faults, each picked with equal odds:
//! - [`Fault::Eof`]: every watch ends cleanly (terminating chunk), as at
//!   `timeoutSeconds`;
//! - [`Fault::Reset`]: every watch's connection is reset (TCP RST: the
//!   client reads `ECONNRESET`, an error);
//! - [`Fault::Compaction`]: the history is compacted away (one unrelated
//!   write after the version every watch holds) and every watch is cut
//!   mid-stream (no terminating chunk, which kube reads as the stream's end):
//!   each resume gets 410 Gone, in the stream or (half the time) as the HTTP
//!   status of the watch request, and must re-list;
//! - [`Fault::ServerErrors`]: the next two requests, whatever they are, get
//!   HTTP 500, and every watch ends cleanly;
//! - [`Fault::Recreate`]: every watch's connection is reset, and meanwhile
//!   an EndpointSlice is deleted and re-created (the caller's: a StatefulSet
//!   pod's slice with a new address, under a new name).

use serde_json::Value;

use super::FakeApi;

/// splitmix64: a small deterministic generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE5_E9B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is nil for small `n`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> std::time::Duration {
        std::time::Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// One cycle's fault (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every watch ends cleanly.
    Eof,
    /// Every watch's connection reset.
    Reset,
    /// History compacted, every watch cut: 410 Gone on resume.
    Compaction,
    /// Two HTTP 500s on the next requests, and every watch ends cleanly.
    ServerErrors,
    /// Every watch's connection reset while an EndpointSlice is deleted and
    /// re-created.
    Recreate,
}

impl Fault {
    /// Every fault, in the order [`Fault::pick`] numbers them.
    pub const ALL: [Fault; 5] = [
        Fault::Eof,
        Fault::Reset,
        Fault::Compaction,
        Fault::ServerErrors,
        Fault::Recreate,
    ];

    /// One of [`Fault::ALL`], with equal odds.
    pub fn pick(rng: &mut Rng) -> Fault {
        Fault::ALL[rng.below(Fault::ALL.len() as u64) as usize]
    }

    /// Its position in [`Fault::ALL`].
    pub fn index(self) -> usize {
        Fault::ALL
            .iter()
            .position(|f| *f == self)
            .expect("every fault is in ALL")
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Eof => "EOF",
            Fault::Reset => "reset",
            Fault::Compaction => "410",
            Fault::ServerErrors => "2x500+EOF",
            Fault::Recreate => "re-create",
        }
    }
}

impl FakeApi {
    /// Compacts the history past every version a client holds (after one
    /// unrelated write, as a busy cluster always has one) and cuts every
    /// watch: each resume gets 410 Gone, and a re-list's version resumes fine.
    pub fn compact(&self) {
        let mut st = self.inner.lock();
        st.rv += 1;
        st.history.clear();
        st.floor = st.rv;
        st.take_watchers(|| super::watch::Frame::Abort);
    }

    /// Injects `fault`. For [`Fault::Recreate`], `recreate` is (kind,
    /// namespace, name) of the object to delete and the object to create in
    /// its place; `rng` decides how a compaction's 410 is sent.
    pub fn inject(&self, fault: Fault, rng: &mut Rng, recreate: Option<(&str, &str, &str, Value)>) {
        match fault {
            Fault::Eof => {
                self.close_watches();
            }
            Fault::Reset => {
                self.reset_watches();
            }
            Fault::Compaction => {
                self.set_gone_as_http_status(rng.below(2) == 0);
                self.compact();
            }
            Fault::ServerErrors => {
                self.fail_next(2);
                self.close_watches();
            }
            Fault::Recreate => {
                self.reset_watches();
                let (kind, ns, name, new) =
                    recreate.expect("Fault::Recreate needs the object to re-create");
                self.delete(kind, ns, name);
                self.apply(new);
            }
        }
    }
}
