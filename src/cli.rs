//! The command line: clap's definitions and how flags and the environment
//! land on the configuration (defaults < file < environment < flags).
//!
//! It lives in the library, not in `main.rs`, so that tests parse the
//! container args of the manifests in `deploy/` with the very parser the
//! binary uses, and `headless-dns check` loads a configuration exactly as a
//! start would.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat, RequireToken, SourceKind};

/// What `--version` prints: the crate version, the git commit it was built
/// from and the cargo profile (dist, release or debug); see `build.rs`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HEADLESS_DNS_COMMIT"),
    ", profile ",
    env!("HEADLESS_DNS_PROFILE"),
    ")"
);

/// The whole command line.
#[derive(Parser)]
#[command(
    name = "headless-dns",
    version = VERSION,
    about = "DNS for Kubernetes headless services and StatefulSets"
)]
pub struct Cli {
    /// The subcommand; none serves the embedded demo.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Serve DNS (the default).
    Serve(ServeArgs),
    /// Print the served cluster zone as an RFC 1035 zone file (file source).
    ExportZone(ServeArgs),
    /// Check the configuration and manifests as a start would, without
    /// binding a port or contacting an API server; exits 0 or 1.
    Check(ServeArgs),
    /// Drive the StatefulSet simulator of a running server.
    Sim {
        /// Admin address of the server (default: the configured one).
        #[arg(long, env = "HEADLESS_DNS_ADMIN", global = true)]
        admin: Option<SocketAddr>,
        /// Config file to take the admin address (and token file) from.
        #[arg(long, env = "HEADLESS_DNS_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// File with the admin bearer token, sent when given (default: the
        /// config's `[admin] token_file`).
        #[arg(long, env = "HEADLESS_DNS_ADMIN_TOKEN_FILE", global = true)]
        token_file: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        op: SimOp,
    },
}

/// `sim` operations.
#[derive(Subcommand)]
pub enum SimOp {
    /// Set a StatefulSet's replicas: sim scale NAMESPACE NAME REPLICAS
    Scale {
        /// The StatefulSet's namespace.
        namespace: String,
        /// The StatefulSet.
        name: String,
        /// The new replica count.
        replicas: u32,
    },
    /// Delete a pod; it comes back with the same name and a new IP.
    DeletePod {
        /// The pod's namespace.
        namespace: String,
        /// The pod.
        name: String,
    },
    /// Set a pod's readiness: sim set-ready NAMESPACE NAME true|false
    SetReady {
        /// The pod's namespace.
        namespace: String,
        /// The pod.
        name: String,
        /// Ready or not.
        #[arg(action = clap::ArgAction::Set)]
        value: bool,
    },
}

/// Flags of `serve`, `export-zone` and `check`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// TOML config file (see config/headless-dns.toml).
    #[arg(long, env = "HEADLESS_DNS_CONFIG")]
    pub config: Option<PathBuf>,
    /// DNS listen address, UDP and TCP (repeatable).
    #[arg(long, env = "HEADLESS_DNS_LISTEN", value_delimiter = ',')]
    listen: Vec<SocketAddr>,
    /// Admin HTTP listen address ("none" to disable).
    #[arg(long, env = "HEADLESS_DNS_ADMIN")]
    admin: Option<String>,
    /// File with the bearer token /records, the page and /sim ask for.
    #[arg(long, env = "HEADLESS_DNS_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Who must show the token: beyond-loopback, always or never.
    #[arg(long, env = "HEADLESS_DNS_ADMIN_REQUIRE_TOKEN")]
    admin_require_token: Option<RequireToken>,
    /// Cluster domain.
    #[arg(long, env = "HEADLESS_DNS_ZONE")]
    zone: Option<String>,
    /// Manifest file (repeatable); selects the file source with exactly these files.
    #[arg(long, env = "HEADLESS_DNS_MANIFESTS", value_delimiter = ',')]
    manifests: Vec<PathBuf>,
    /// file, kubernetes or transfer.
    #[arg(long, env = "HEADLESS_DNS_SOURCE")]
    source: Option<SourceKind>,
    /// The primary (address:port) the transfer source follows.
    #[arg(long, env = "HEADLESS_DNS_PRIMARY")]
    primary: Option<std::net::SocketAddr>,
    /// The zone the transfer source follows: the cluster zone (default) or
    /// one namespace's `<ns>.svc.<zone>`.
    #[arg(long, env = "HEADLESS_DNS_PRIMARY_ZONE")]
    primary_zone: Option<String>,
    /// Namespaces to serve (comma-separated, repeatable); none = all.
    #[arg(long, env = "HEADLESS_DNS_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Label selector (Kubernetes syntax) for every list and watch: Services,
    /// their EndpointSlices, StatefulSets and Pods; "" = none.
    #[arg(long, env = "HEADLESS_DNS_SELECTOR")]
    selector: Option<String>,
    /// Kubeconfig for the kubernetes source.
    #[arg(long, env = "KUBECONFIG_PATH")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    #[arg(long)]
    context: Option<String>,
    /// UDP sockets (threads) per listen address; 0 = one per CPU (one on
    /// the transfer source).
    #[arg(long, env = "HEADLESS_DNS_THREADS")]
    threads: Option<usize>,
    /// On a reload, how long the new configuration may take to sync before
    /// the reload fails and the running one stays (milliseconds).
    #[arg(long, env = "HEADLESS_DNS_RELOAD_SYNC_TIMEOUT_MS")]
    reload_sync_timeout_ms: Option<u64>,
    /// Unix socket for restarts that hand the listening sockets over from
    /// the running instance ("" = off).
    #[arg(long, env = "HEADLESS_DNS_HANDOVER_SOCKET")]
    handover_socket: Option<String>,
    /// Serve-stale: answer from a forwarded answer expired at most this many
    /// seconds ago when every upstream fails (0 = off).
    #[arg(long, env = "HEADLESS_DNS_FORWARD_STALE_MAX_S")]
    forward_stale_max_s: Option<u64>,
    /// TTL of a stale answer, seconds.
    #[arg(long, env = "HEADLESS_DNS_FORWARD_STALE_TTL_S")]
    forward_stale_ttl_s: Option<u32>,
    /// Autopath: answer a pod's search-path walk in one round trip
    /// (`--autopath`, `--autopath=false`; env true/false).
    #[arg(
        long,
        env = "HEADLESS_DNS_AUTOPATH",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    autopath: Option<bool>,
    /// The pods' search list autopath walks (comma-separated, repeatable):
    /// `{ns}.svc.{zone}`, `svc.{zone}`, `{zone}`, then extra domains.
    #[arg(long, env = "HEADLESS_DNS_AUTOPATH_SEARCH", value_delimiter = ',')]
    autopath_search: Vec<String>,
    /// text or json.
    #[arg(long, env = "HEADLESS_DNS_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

/// The configuration `args` describe, validated, with the admin token read
/// from its file.
pub fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut c = merge(args)?;
    c.read_key_files()?;
    c.validate()?;
    c.read_admin_token()?;
    Ok(c)
}

/// The config file (or the defaults) with the environment and flags applied
/// on top, not yet validated.
pub fn merge(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut c = match &args.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    merge_dns(args, &mut c);
    merge_admin(args, &mut c)?;
    merge_source(args, &mut c)?;
    if let Some(s) = args.forward_stale_max_s {
        c.forward.stale_max_s = s;
    }
    if let Some(s) = args.forward_stale_ttl_s {
        c.forward.stale_ttl_s = s;
    }
    if let Some(f) = args.log_format {
        c.log.format = f;
    }
    Ok(c)
}

/// `[dns]` flags.
fn merge_dns(args: &ServeArgs, c: &mut Config) {
    if !args.listen.is_empty() {
        c.dns.listen = args.listen.clone();
    }
    if let Some(z) = &args.zone {
        c.dns.zone = z.clone();
    }
    if let Some(t) = args.threads {
        c.dns.threads = t;
    }
    if let Some(p) = &args.handover_socket {
        // "" (an empty environment variable) turns it off.
        c.dns.handover_socket = Some(PathBuf::from(p)).filter(|p| !p.as_os_str().is_empty());
    }
    if let Some(on) = args.autopath {
        c.dns.autopath = on;
    }
    let search: Vec<String> = args
        .autopath_search
        .iter()
        .filter(|d| !d.trim().is_empty())
        .cloned()
        .collect();
    if !search.is_empty() {
        c.dns.autopath_search = search;
    }
}

/// `[source]` flags; an invalid namespace name is an error.
fn merge_source(args: &ServeArgs, c: &mut Config) -> anyhow::Result<()> {
    if !args.manifests.is_empty() {
        c.source.kind = SourceKind::File;
        c.source.manifests = args.manifests.clone();
    }
    if let Some(s) = args.source {
        c.source.kind = s;
    }
    if args.primary.is_some() {
        c.source.primary = args.primary;
    }
    if let Some(z) = &args.primary_zone {
        // "" (an empty environment variable) unsets it: the cluster zone.
        c.source.primary_zone = Some(z.clone()).filter(|z| !z.is_empty());
    }
    let namespaces: Vec<String> = args
        .namespaces
        .iter()
        .filter(|n| !n.is_empty())
        .cloned()
        .collect();
    if !namespaces.is_empty() {
        c.source.namespaces = namespaces;
    }
    if let Some(bad) = c
        .source
        .namespaces
        .iter()
        .find(|n| !crate::config::is_namespace(n))
    {
        bail!(
            "source.namespaces: {bad:?} is not a namespace name (a DNS-1123 label; \
             also --namespaces, HEADLESS_DNS_NAMESPACES)"
        );
    }
    if let Some(sel) = &args.selector {
        c.source.selector = Some(sel.clone()).filter(|s| !s.trim().is_empty());
    }
    if args.kubeconfig.is_some() {
        c.source.kubeconfig = args.kubeconfig.clone();
    }
    if args.context.is_some() {
        c.source.context = args.context.clone();
    }
    if let Some(ms) = args.reload_sync_timeout_ms {
        c.source.reload_sync_timeout_ms = ms;
    }
    Ok(())
}

/// `[admin]` flags; an unparsable `--admin` is an error.
fn merge_admin(args: &ServeArgs, c: &mut Config) -> anyhow::Result<()> {
    if let Some(a) = &args.admin {
        c.admin.listen = match a.as_str() {
            "" | "none" => None,
            a => Some(
                a.parse()
                    .with_context(|| format!("--admin: {a:?} is not an address:port"))?,
            ),
        };
    }
    if let Some(f) = &args.admin_token_file {
        // "" (an empty environment variable) unsets it.
        c.admin.token_file = Some(f.clone()).filter(|f| !f.as_os_str().is_empty());
    }
    if let Some(r) = args.admin_require_token {
        c.admin.require_token = r;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::is_namespace;

    fn serve_args(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(std::iter::once("headless-dns").chain(args.iter().copied()))
            .expect("parses");
        match cli.command {
            Some(Command::Serve(a)) => a,
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn namespaces_flag_lands_in_the_config() {
        let c = load(&serve_args(&[
            "serve",
            "--namespaces",
            "shop,db",
            "--namespaces",
            "ops",
        ]))
        .unwrap();
        assert_eq!(c.source.namespaces, ["shop", "db", "ops"]);
        let e = load(&serve_args(&["serve", "--namespaces", "$(POD_NAMESPACE)"])).unwrap_err();
        assert!(format!("{e:#}").contains("$(POD_NAMESPACE)"), "{e:#}");
        for bad in ["Shop", "-a", "a-", &"a".repeat(64)] {
            assert!(!is_namespace(bad), "{bad}");
        }
        assert!(is_namespace("kube-system") && is_namespace("a") && is_namespace("0a"));
    }

    #[test]
    fn primary_zone_flag_lands_in_the_config_and_is_checked() {
        let c = load(&serve_args(&[
            "serve",
            "--source",
            "transfer",
            "--primary",
            "127.0.0.1:53",
            "--primary-zone",
            "team-a.svc.cluster.local",
        ]))
        .unwrap();
        assert_eq!(
            c.source.primary_zone.as_deref(),
            Some("team-a.svc.cluster.local")
        );
        assert_eq!(
            c.namespace_of_zone("Team-A.svc.cluster.local.").as_deref(),
            Some("team-a")
        );
        let e = load(&serve_args(&["serve", "--primary-zone", "example.org"])).unwrap_err();
        assert!(format!("{e:#}").contains("source.primary_zone"), "{e:#}");
    }

    #[test]
    fn reload_sync_timeout_flag_lands_in_the_config_and_is_checked() {
        assert_eq!(
            load(&serve_args(&["serve"]))
                .unwrap()
                .source
                .reload_sync_timeout_ms,
            30_000
        );
        let c = load(&serve_args(&["serve", "--reload-sync-timeout-ms", "1500"])).unwrap();
        assert_eq!(
            c.reload_sync_timeout(),
            std::time::Duration::from_millis(1500)
        );
        let e = load(&serve_args(&["serve", "--reload-sync-timeout-ms", "0"])).unwrap_err();
        assert!(
            format!("{e:#}").contains("source.reload_sync_timeout_ms"),
            "{e:#}"
        );
    }

    #[test]
    fn handover_and_stale_flags_land_in_the_config_and_are_checked() {
        let c = load(&serve_args(&[
            "serve",
            "--handover-socket",
            "/run/headless-dns/handover.sock",
            "--forward-stale-max-s",
            "86400",
            "--forward-stale-ttl-s",
            "10",
        ]))
        .unwrap();
        assert_eq!(
            c.dns.handover_socket.as_deref(),
            Some(std::path::Path::new("/run/headless-dns/handover.sock"))
        );
        assert_eq!((c.forward.stale_max_s, c.forward.stale_ttl_s), (86400, 10));
        let c = load(&serve_args(&["serve", "--handover-socket", ""])).unwrap();
        assert_eq!(c.dns.handover_socket, None, "empty: off");
        let e = load(&serve_args(&["serve", "--handover-socket", "/run/"])).unwrap_err();
        assert!(format!("{e:#}").contains("dns.handover_socket"), "{e:#}");
        let e = load(&serve_args(&[
            "serve",
            "--forward-stale-max-s",
            "999999999",
        ]))
        .unwrap_err();
        assert!(format!("{e:#}").contains("forward.stale_max_s"), "{e:#}");
        let e = load(&serve_args(&["serve", "--forward-stale-ttl-s", "0"])).unwrap_err();
        assert!(format!("{e:#}").contains("forward.stale_ttl_s"), "{e:#}");
    }

    #[test]
    fn autopath_flags_land_in_the_config_and_are_checked() {
        let c = load(&serve_args(&["serve"])).unwrap();
        assert!(!c.dns.autopath, "off by default");
        assert_eq!(
            c.dns.autopath_search,
            crate::config::default_autopath_search()
        );
        let c = load(&serve_args(&["serve", "--autopath"])).unwrap();
        assert!(c.dns.autopath);
        let c = load(&serve_args(&["serve", "--autopath=false"])).unwrap();
        assert!(!c.dns.autopath);
        let c = load(&serve_args(&[
            "serve",
            "--autopath-search",
            "{ns}.svc.{zone},svc.{zone}",
            "--autopath-search",
            "{zone},corp.example.com",
        ]))
        .unwrap();
        assert_eq!(
            c.dns.autopath_search,
            [
                "{ns}.svc.{zone}",
                "svc.{zone}",
                "{zone}",
                "corp.example.com"
            ]
        );
        for (bad, says) in [
            ("svc.{zone}", "must start with"),
            ("{ns}.example.com", "must lie in dns.zone"),
            ("{ns}.svc.{zone},{ns}.x", "may only begin"),
            ("{ns}.svc.{zone},a..b", "empty or over-long label"),
        ] {
            let e = load(&serve_args(&["serve", "--autopath-search", bad])).unwrap_err();
            let e = format!("{e:#}");
            assert!(
                e.contains("dns.autopath_search") && e.contains(says),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn selector_flag_lands_in_the_config_and_is_checked() {
        let c = load(&serve_args(&[
            "serve",
            "--selector",
            "app in (db,cache),!canary",
        ]))
        .unwrap();
        assert_eq!(
            c.source.selector.as_deref(),
            Some("app in (db,cache),!canary")
        );
        let c = load(&serve_args(&["serve", "--selector", ""])).unwrap();
        assert_eq!(c.source.selector, None, "empty: no selector");
        let e = load(&serve_args(&["serve", "--selector", "app=web,"])).unwrap_err();
        assert!(format!("{e:#}").contains("source.selector"), "{e:#}");
    }
}
