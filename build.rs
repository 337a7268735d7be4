//! Build metadata for `headless-dns --version` (`src/cli.rs`): the git commit
//! and the cargo profile.
//!
//! - `HEADLESS_DNS_COMMIT`: `git rev-parse --short HEAD`; the environment
//!   variable of the same name wins (the Docker build has no `.git`: it passes
//!   the commit as a build argument); "unknown" outside git.
//! - `HEADLESS_DNS_PROFILE`: the profile's output directory name (`dist`,
//!   `release`, `debug`), read from `OUT_DIR`
//!   (`target/[<triple>/]<profile>/build/<pkg>/out`): cargo's own `PROFILE`
//!   says "release" for every profile that inherits from release.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=HEADLESS_DNS_COMMIT");
    let commit = std::env::var("HEADLESS_DNS_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch
            // it points at (a commit). In a worktree these live in different
            // git directories, which `--git-path` resolves.
            for f in ["HEAD", "packed-refs"] {
                rerun_if_exists(git(&["rev-parse", "--git-path", f]));
            }
            // A packed branch has no file of its own until the next commit
            // writes one: then watch its folder.
            if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"])
                && let Some(p) = git(&["rev-parse", "--git-path", &r])
            {
                let parent = Path::new(&p).parent().map(|d| d.display().to_string());
                rerun_if_exists(Some(p).filter(|p| Path::new(p).exists()).or(parent));
            }
            git(&["rev-parse", "--short", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HEADLESS_DNS_COMMIT={commit}");

    let out_dir = std::env::var("OUT_DIR").unwrap_or_default();
    let profile = Path::new(&out_dir)
        .ancestors()
        .nth(3)
        .and_then(|p| p.file_name())
        .and_then(|p| p.to_str())
        .unwrap_or("unknown");
    println!("cargo:rustc-env=HEADLESS_DNS_PROFILE={profile}");
}

fn rerun_if_exists(path: Option<String>) {
    if let Some(p) = path.filter(|p| Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={p}");
    }
}
