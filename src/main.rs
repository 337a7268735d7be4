//! The `headless-dns` binary: command line, config loading, logging, runtime.
//!
//! Run with no arguments it serves the embedded demo on 127.0.0.1:5353.
//! `headless-dns sim …` drives a running server's simulator over the admin API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use headless_dns::config::{Config, LogFormat, SourceKind};

#[derive(Parser)]
#[command(
    name = "headless-dns",
    version,
    about = "DNS for Kubernetes headless services and StatefulSets"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS (the default).
    Serve(ServeArgs),
    /// Print the served cluster zone as an RFC 1035 zone file (file source).
    ExportZone(ServeArgs),
    /// Drive the StatefulSet simulator of a running server.
    Sim {
        /// Admin address of the server (default: the configured one).
        #[arg(long, env = "HEADLESS_DNS_ADMIN", global = true)]
        admin: Option<SocketAddr>,
        /// Config file to take the admin address from.
        #[arg(long, env = "HEADLESS_DNS_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        op: SimOp,
    },
}

#[derive(Subcommand)]
enum SimOp {
    /// Set a StatefulSet's replicas: sim scale NAMESPACE NAME REPLICAS
    Scale {
        namespace: String,
        name: String,
        replicas: u32,
    },
    /// Delete a pod; it comes back with the same name and a new IP.
    DeletePod { namespace: String, name: String },
    /// Set a pod's readiness: sim set-ready NAMESPACE NAME true|false
    SetReady {
        namespace: String,
        name: String,
        #[arg(action = clap::ArgAction::Set)]
        value: bool,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file (see config/headless-dns.toml).
    #[arg(long, env = "HEADLESS_DNS_CONFIG")]
    config: Option<PathBuf>,
    /// DNS listen address, UDP and TCP (repeatable).
    #[arg(long, env = "HEADLESS_DNS_LISTEN", value_delimiter = ',')]
    listen: Vec<SocketAddr>,
    /// Admin HTTP listen address ("none" to disable).
    #[arg(long, env = "HEADLESS_DNS_ADMIN")]
    admin: Option<String>,
    /// Cluster domain.
    #[arg(long, env = "HEADLESS_DNS_ZONE")]
    zone: Option<String>,
    /// Manifest file (repeatable); selects the file source with exactly these files.
    #[arg(long, env = "HEADLESS_DNS_MANIFESTS", value_delimiter = ',')]
    manifests: Vec<PathBuf>,
    /// file or kubernetes.
    #[arg(long, env = "HEADLESS_DNS_SOURCE")]
    source: Option<SourceKind>,
    /// Kubeconfig for the kubernetes source.
    #[arg(long, env = "KUBECONFIG_PATH")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    #[arg(long)]
    context: Option<String>,
    /// UDP sockets (threads) per listen address; 0 = one per CPU.
    #[arg(long, env = "HEADLESS_DNS_THREADS")]
    threads: Option<usize>,
    /// text or json.
    #[arg(long, env = "HEADLESS_DNS_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

/// `serve`'s arguments when no subcommand is given: parsed by clap from no
/// flags, so the `HEADLESS_DNS_*` environment applies as it does to `serve`.
#[derive(Parser)]
#[command(name = "headless-dns")]
struct DefaultServe {
    #[command(flatten)]
    args: ServeArgs,
}

fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut c = match &args.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        c.dns.listen = args.listen.clone();
    }
    if let Some(a) = &args.admin {
        c.admin.listen = match a.as_str() {
            "" | "none" => None,
            a => Some(
                a.parse()
                    .with_context(|| format!("--admin: {a:?} is not an address:port"))?,
            ),
        };
    }
    if let Some(z) = &args.zone {
        c.dns.zone = z.clone();
    }
    if !args.manifests.is_empty() {
        c.source.kind = SourceKind::File;
        c.source.manifests = args.manifests.clone();
    }
    if let Some(s) = args.source {
        c.source.kind = s;
    }
    if args.kubeconfig.is_some() {
        c.source.kubeconfig = args.kubeconfig.clone();
    }
    if args.context.is_some() {
        c.source.context = args.context.clone();
    }
    if let Some(t) = args.threads {
        c.dns.threads = t;
    }
    if let Some(f) = args.log_format {
        c.log.format = f;
    }
    c.validate()?;
    Ok(c)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = load(&args)?;
    headless_dns::telemetry::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.udp_threads().clamp(1, 4))
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let reload = || load(&args).map_err(|e| headless_dns::Error::Config(format!("{e:#}")));
    runtime.block_on(headless_dns::serve(
        reload,
        args.config.clone(),
        headless_dns::shutdown_signal(),
    ))?;
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

/// A minimal HTTP/1.1 POST (the admin API is on loopback and tiny).
fn post(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).with_context(|| {
        format!("cannot reach the admin API at {addr} (is the server running? --admin)")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
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

fn sim(admin: Option<SocketAddr>, config: Option<PathBuf>, op: SimOp) -> anyhow::Result<()> {
    let addr = match admin {
        Some(a) => a,
        None => {
            let c = match config {
                Some(p) => Config::from_file(&p)?,
                None => Config::default(),
            };
            c.admin
                .listen
                .context("no admin address configured; pass --admin")?
        }
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
    let (status, body) = post(addr, &path)?;
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => serve(DefaultServe::parse_from(["headless-dns"]).args),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::ExportZone(args)) => export_zone(args),
        Some(Command::Sim { admin, config, op }) => sim(admin, config, op),
    }
}
