//! Reading the server process's `/proc` files: resident memory (now, its
//! high-water mark, sampled peaks, where it lies) and CPU time.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common;

/// How often [`Sampler`] reads `VmRSS`.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

pub fn proc_kb(pid: u32, file: &str, field: &str) -> u64 {
    common::proc_kb(&pid.to_string(), file, field)
}

pub fn rss_kb(pid: u32) -> u64 {
    proc_kb(pid, "status", "VmRSS")
}

/// CPU seconds the process has used, user and system (`/proc/<pid>/stat`,
/// in clock ticks). The fake API runs in this process on
/// the same cores, so a wall-clock sync time is partly its serializing; the
/// server's own CPU says what the sync costs the server.
pub fn cpu_secs(pid: u32) -> (f64, f64) {
    let (user, system) = common::stat_ticks(std::path::Path::new(&format!("/proc/{pid}/stat")))
        .expect("read utime and stime from /proc/<pid>/stat");
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    (user as f64 / hz, system as f64 / hz)
}

/// Resets the child's `VmHWM` to its current RSS (`clear_refs` value 5, see
/// proc(5)); false if the kernel refused.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Reads a process's `VmRSS` every [`SAMPLE_EVERY`] on its own thread and
/// keeps the largest.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<u32>,
}

impl Sampler {
    /// Starts sampling `pid`; stops by itself after `limit`.
    pub fn start(pid: u32, limit: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let max_samples = (limit.as_millis() / SAMPLE_EVERY.as_millis()) as u32;
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while n < max_samples && !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kb(pid), Ordering::Relaxed);
                n += 1;
                std::thread::sleep(SAMPLE_EVERY);
            }
            n
        });
        Sampler { stop, peak, thread }
    }

    /// Stops sampling; the largest `VmRSS` seen (kB) and the sample count.
    pub fn finish(self) -> (u64, u32) {
        self.stop.store(true, Ordering::Relaxed);
        let n = self
            .thread
            .join()
            .expect("the sampler thread does not panic");
        (self.peak.load(Ordering::Relaxed), n)
    }
}

/// Where the child's resident memory is, from `/proc/<pid>/smaps`: the main
/// heap (`[heap]`, grown by `brk`), other anonymous mappings (the allocator's
/// per-thread arenas and large `mmap` blocks, thread stacks), the binary's
/// own pages and shared libraries; plus the thread count.
pub fn breakdown(pid: u32) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let (mut heap, mut anon, mut binary, mut libs) = (0u64, 0u64, 0u64, 0u64);
    let mut current = &mut anon;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // A mapping header: address perms offset dev inode [path].
            let path = fields.nth(4).unwrap_or("");
            current = match path {
                "[heap]" => &mut heap,
                "" | "[stack]" => &mut anon,
                p if Path::new(p) == exe => &mut binary,
                p if p.starts_with('/') => &mut libs,
                _ => &mut anon, // [vdso], [vvar], ...
            };
        } else if first == "Rss:" {
            *current += fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    format!(
        "[heap] {heap} kB, other anonymous {anon} kB, binary {binary} kB, libraries {libs} kB; {threads} threads"
    )
}
