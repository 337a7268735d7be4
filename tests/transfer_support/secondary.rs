//! Real secondaries for the transfer tests: `knotd` (Debian `knot`) and
//! `named` (Debian `bind9`), each with its own configuration, storage and
//! log in a temporary directory, on a loopback port, killed when dropped.
//! A missing binary fails the test (CI installs both through `.ci/test`).
//!
//! Each runs with its stock pacing or, with [`Pacing::Prompt`], with the one
//! setting that lets it take a change at once after the previous one (see
//! [`Pacing`]).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Which server plays the secondary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Knot,
    Bind,
}

/// How a secondary paces its own refreshes.
///
/// Both servers hold back a refresh that follows the previous one closely,
/// whatever the primary does (`docs/performance.md`, "Zone transfer lag"):
/// - Knot 3.2 schedules a NOTIFY of its own for the next whole second after
///   every transfer that changed the zone, and its event timer is re-armed
///   only when the earliest event's time (in whole seconds) moves
///   (`src/knot/events/events.c`, `_zone_events_schedule_at`): a NOTIFY that
///   arrives in that next second schedules its refresh for the same second
///   and waits for the armed timer, up to 1 s after the previous transfer.
///   `block-notify-after-transfer: on` on the primary's `remote` (a leaf
///   secondary that notifies nobody) schedules no such NOTIFY.
/// - BIND 9.18 sends refresh SOA queries through a rate limiter
///   (`serial-query-rate`, default 20 per second: ticks of 500 ms, ten
///   queries each) that, once a query went out, holds the next one until
///   the next tick, up to 0.5 s. `serial-query-rate 1000` ticks every 10 ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// The server's defaults.
    Stock,
    /// Knot: `block-notify-after-transfer: on`; BIND: `serial-query-rate 1000`.
    Prompt,
}

/// What a secondary's configuration says.
#[derive(Clone, Copy)]
struct Spec<'a> {
    port: u16,
    primary: SocketAddr,
    zone: &'a str,
    key: Key<'a>,
    pacing: Pacing,
}

/// A running secondary of one zone.
pub struct Secondary {
    pub kind: Kind,
    pub pacing: Pacing,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Secondary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(kind: Kind) -> &'static str {
    let path = match kind {
        Kind::Knot => "/usr/sbin/knotd",
        Kind::Bind => "/usr/sbin/named",
    };
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian package {} (.ci/test does)",
        if kind == Kind::Knot { "knot" } else { "bind9" }
    );
    path
}

/// A TSIG key both sides know: (name, base64 secret).
pub type Key<'a> = Option<(&'a str, &'a str)>;

fn knot_config(dir: &Path, spec: &Spec) -> String {
    let Spec {
        port,
        primary,
        zone,
        key,
        pacing,
    } = *spec;
    let d = dir.display();
    let block = match pacing {
        Pacing::Stock => "",
        Pacing::Prompt => "    block-notify-after-transfer: on\n",
    };
    let (key_section, key_ref) = match key {
        Some((name, secret)) => (
            format!("key:\n  - id: {name}\n    algorithm: hmac-sha256\n    secret: {secret}\n"),
            format!("    key: {name}\n"),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "server:\n  rundir: \"{d}\"\n  listen: 127.0.0.1@{port}\n  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\n\
         log:\n  - target: \"{d}/secondary.log\"\n    any: debug\n\
         database:\n  storage: \"{d}/db\"\n\
         {key_section}\
         remote:\n  - id: primary\n    address: {}@{}\n{block}{key_ref}\
         acl:\n  - id: notify_from_primary\n    address: 127.0.0.1\n    action: notify\n{key_ref}\
         template:\n  - id: default\n    storage: \"{d}/zones\"\n    zonefile-sync: -1\n    zonefile-load: none\n    journal-content: none\n\
         zone:\n  - domain: {zone}\n    master: primary\n    acl: notify_from_primary\n",
        primary.ip(),
        primary.port(),
    )
}

fn bind_config(dir: &Path, spec: &Spec) -> String {
    let Spec {
        port,
        primary,
        zone,
        key,
        pacing,
    } = *spec;
    let d = dir.display();
    let rate = match pacing {
        Pacing::Stock => "",
        Pacing::Prompt => "  serial-query-rate 1000;\n",
    };
    let (key_section, key_ref) = match key {
        Some((name, secret)) => (
            format!("key \"{name}\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n"),
            format!(" key \"{name}\""),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "options {{\n  directory \"{d}\";\n  pid-file \"{d}/named.pid\";\n  session-keyfile \"{d}/session.key\";\n\
         managed-keys-directory \"{d}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n\
         recursion no;\n  dnssec-validation no;\n  notify no;\n  allow-query {{ any; }};\n{rate}}};\n\
         controls {{ }};\n\
         {key_section}\
         logging {{\n  channel file {{ file \"{d}/secondary.log\"; severity debug 3; print-time yes; print-category yes; }};\n\
         category default {{ file; }};\n  category xfer-in {{ file; }};\n  category notify {{ file; }};\n}};\n\
         zone \"{zone}\" {{\n  type secondary;\n  primaries port {} {{ {}{key_ref}; }};\n  file \"{d}/{zone}.db\";\n}};\n",
        primary.port(),
        primary.ip(),
    )
}

impl Secondary {
    /// Starts `kind` on 127.0.0.1:`port` as a secondary of `zone` from
    /// `primary`, with its stock pacing. Its files live on tmpfs when there
    /// is one: BIND fsyncs its journal on every transfer, which takes seconds
    /// on a busy disk.
    pub fn start(kind: Kind, port: u16, primary: SocketAddr, zone: &str, key: Key) -> Secondary {
        Secondary::start_paced(kind, port, primary, zone, key, Pacing::Stock)
    }

    /// [`Secondary::start`] with the given pacing.
    pub fn start_paced(
        kind: Kind,
        port: u16,
        primary: SocketAddr,
        zone: &str,
        key: Key,
        pacing: Pacing,
    ) -> Secondary {
        let bin = binary(kind);
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let conf = dir.path().join("secondary.conf");
        let spec = Spec {
            port,
            primary,
            zone,
            key,
            pacing,
        };
        let text = match kind {
            Kind::Knot => knot_config(dir.path(), &spec),
            Kind::Bind => bind_config(dir.path(), &spec),
        };
        std::fs::write(&conf, text).unwrap();
        let mut cmd = Command::new(bin);
        match kind {
            Kind::Knot => cmd.arg("-c").arg(&conf),
            Kind::Bind => cmd.args(["-f", "-n", "1", "-c"]).arg(&conf),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        Secondary {
            kind,
            pacing,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            child,
        }
    }

    /// Its log so far (and its stderr).
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("secondary.log"), read("stderr.log"))
    }

    /// Its process id (for `/proc/<pid>/...`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails the test if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{:?} exited ({status}); log:\n{}", self.kind, self.log());
        }
    }

    /// Completed incoming transfers in its log so far.
    pub fn transfers(&self) -> Transfers {
        let log = self.log();
        let lines = |f: &dyn Fn(&str) -> bool| log.lines().filter(|l| f(l)).count();
        match self.kind {
            // "[zone.] IXFR, incoming, remote 127.0.0.1@5300, finished, ..."; an
            // IXFR answered with the whole zone: "..., receiving AXFR-style IXFR".
            Kind::Knot => Transfers {
                incremental: lines(&|l| l.contains("IXFR, incoming") && l.contains("finished")),
                full: lines(&|l| l.contains("AXFR, incoming") && l.contains("finished")),
                fallbacks: lines(&|l| l.contains("receiving AXFR-style IXFR")),
            },
            // BIND (debug 3): "got incremental response" / "got nonincremental
            // response" before each "Transfer completed".
            Kind::Bind => {
                let full = lines(&|l| l.contains("got nonincremental response"));
                let asked_axfr = lines(&|l| l.contains("requesting AXFR"));
                Transfers {
                    incremental: lines(&|l| l.contains("got incremental response")),
                    full,
                    fallbacks: full.saturating_sub(asked_axfr),
                }
            }
        }
    }
}

/// Transfers a secondary logged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Taken as IXFR differences.
    pub incremental: usize,
    /// Taken as the whole zone (AXFR, or an AXFR-style IXFR answer).
    pub full: usize,
    /// IXFR requests answered with the whole zone.
    pub fallbacks: usize,
}
