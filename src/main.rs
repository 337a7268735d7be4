//! The `headless-dns` binary: command line, config loading, logging, runtime.
//!
//! Run with no arguments it serves the embedded demo on 127.0.0.1:5353.
//! `headless-dns sim …` drives a running server's simulator over the admin API;
//! `headless-dns check …` validates a configuration and its manifests. The
//! flags themselves are defined in the library (`headless_dns::cli`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use headless_dns::cli::{Cli, Command, ServeArgs, SimOp, load};
use headless_dns::config::{AdminToken, Config, SourceKind};

/// `serve`'s arguments when no subcommand is given: parsed by clap from no
/// flags, so the `HEADLESS_DNS_*` environment applies as it does to `serve`.
#[derive(Parser)]
#[command(name = "headless-dns")]
struct DefaultServe {
    #[command(flatten)]
    args: ServeArgs,
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = load(&args)?;
    headless_dns::telemetry::init(&config.log);
    let mut runtime = match config.runtime_workers() {
        0 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    runtime.enable_all();
    if config.source.kind == SourceKind::Transfer {
        thread_cache_off();
        runtime.on_thread_start(thread_cache_off);
        headless_dns::dns::server::on_thread_start(thread_cache_off);
    }
    let runtime = runtime.build().context("starting the tokio runtime")?;
    let reload = || load(&args).map_err(|e| headless_dns::Error::Config(format!("{e:#}")));
    // Boxed: the supervisor's future is ~13 kB, and unboxed `block_on`
    // would keep copies of it on the main thread's stack, which stays
    // touched for the life of the process (~40 kB more).
    runtime.block_on(Box::pin(headless_dns::serve(
        reload,
        args.config.clone(),
        headless_dns::shutdown_signal(),
    )))?;
    Ok(())
}

/// Loads the manifests (running the simulator until its StatefulSets are
/// complete) and prints the zone.
fn export_zone(args: ServeArgs) -> anyhow::Result<()> {
    let config = load(&args)?;
    if config.source.kind != SourceKind::File {
        bail!("export-zone reads manifests: use the file source (--manifests)");
    }
    let text = headless_dns::export_manifests(&config)?;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}

/// Prints `check`'s summary (stdout) or its errors (stderr); exits 1 on errors.
fn check(args: &ServeArgs) -> anyhow::Result<()> {
    let report = headless_dns::check::check(args);
    for e in &report.errors {
        eprintln!("{e}");
    }
    if !report.errors.is_empty() {
        std::process::exit(1);
    }
    writeln!(std::io::stdout(), "{}", report.summary)?;
    Ok(())
}

/// A minimal HTTP/1.1 POST (the admin API is on loopback and tiny), with
/// the admin token as a bearer token when there is one.
fn post(addr: SocketAddr, path: &str, token: Option<&AdminToken>) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).with_context(|| {
        format!("cannot reach the admin API at {addr} (is the server running? --admin)")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map_or(String::new(), |t| {
        format!(
            "Authorization: Bearer {}\r\n",
            String::from_utf8_lossy(t.as_bytes())
        )
    });
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP response")?;
    let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or_default();
    Ok((status, body.trim().to_string()))
}

/// `headless-dns sim …`: the admin address and token file from the flags,
/// else from the config file (or the defaults).
fn sim(
    admin: Option<SocketAddr>,
    config: Option<PathBuf>,
    token_file: Option<PathBuf>,
    op: SimOp,
) -> anyhow::Result<()> {
    let mut c = match config {
        Some(p) => Config::from_file(&p)?,
        None => Config::default(),
    };
    if token_file.is_some() {
        c.admin.token_file = token_file;
    }
    c.read_admin_token()?;
    let addr = match admin {
        Some(a) => a,
        None => c
            .admin
            .listen
            .context("no admin address configured; pass --admin")?,
    };
    let path = match &op {
        SimOp::Scale {
            namespace,
            name,
            replicas,
        } => format!("/sim/statefulsets/{namespace}/{name}/scale?replicas={replicas}"),
        SimOp::DeletePod { namespace, name } => format!("/sim/pods/{namespace}/{name}/delete"),
        SimOp::SetReady {
            namespace,
            name,
            value,
        } => format!("/sim/pods/{namespace}/{name}/ready?value={value}"),
    };
    let (status, body) = post(addr, &path, c.admin.token.as_ref())?;
    if status != 200 {
        bail!("{body} (HTTP {status})");
    }
    eprintln!("{body}");
    Ok(())
}

/// jemalloc with one arena that returns freed pages at once (settings in
/// `.cargo/config.toml`): the process is ~20% smaller than with glibc's
/// per-thread arenas, which kept what list pages freed out of the index's
/// reach, and a re-list peaks lower.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Turns jemalloc's thread cache off for the calling thread, handing back
/// to the arena what the cache held. Every thread of a follower (the
/// transfer source) runs it: main, the runtime's workers and blocking
/// threads, the UDP threads. A follower's threads allocate little, and their
/// caches were its largest item after the binary itself (~0.4 MB of ~1.9 MB
/// anonymous for the demo zone: docs/performance.md, "Followers"); every
/// other shape keeps them, since `tcache:false` for the whole process would
/// put each allocation of the Kubernetes source and the query path behind
/// the one arena's lock. Decided once, from the configuration the process
/// starts with, as the runtime's shape is: a reload to another source keeps
/// it. Best effort: an error leaves the cache on.
fn thread_cache_off() {
    use tikv_jemalloc_ctl::{Access, AsName};
    let _ = b"thread.tcache.enabled\0".name().write(false);
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => serve(DefaultServe::parse_from(["headless-dns"]).args),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::ExportZone(args)) => export_zone(args),
        Some(Command::Check(args)) => check(&args),
        Some(Command::Sim {
            admin,
            config,
            token_file,
            op,
        }) => sim(admin, config, token_file, op),
    }
}
