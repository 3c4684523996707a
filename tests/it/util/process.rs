//! The processes a test started: found by the worker env marker or a working folder
//! inside the root (and the build marker, for builds' helpers that left it), so that
//! dropping a `Root` can kill whatever is left.

use std::fs;
use std::path::Path;

pub fn root_processes(root: &Path) -> Vec<u32> {
    let marker = format!("BLUEGREEN_WORKER_OF={}\0", root.display()).into_bytes();
    let me = std::process::id();
    living(|pid, dir| {
        let inside = || fs::read_link(dir.join("cwd")).is_ok_and(|cwd| cwd.starts_with(root));
        pid != me && (carries(dir, &marker) || inside())
    })
}

/// Processes a build of `root` started that work elsewhere and lead a group of their own
/// (`setsid sh -c "cd /; ..."`, as a build tool's daemon does): found by the variable the
/// hook sets on every build, which names the build's folder inside the root.
pub fn build_helpers(root: &Path) -> Vec<u32> {
    let marker = format!("BLUEGREEN_BUILD={}/", root.display()).into_bytes();
    living(|_, dir| carries(dir, &marker))
}

/// The processes, not zombies, that `keep` (given the pid and the `/proc` folder) keeps.
fn living(keep: impl Fn(u32, &Path) -> bool) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        if keep(pid, &dir) && !zombie(&dir) {
            pids.push(pid);
        }
    }
    pids
}

/// Whether the environment of the process whose `/proc` folder is `dir` holds `needle`.
fn carries(dir: &Path, needle: &[u8]) -> bool {
    fs::read(dir.join("environ")).is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle))
}

/// Whether the process whose `/proc` folder is `dir` is a zombie (dead, not reaped yet).
fn zombie(dir: &Path) -> bool {
    fs::read_to_string(dir.join("stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// Whether process `pid` exists and has not exited (a zombie has).
pub fn running(pid: u32) -> bool {
    let dir = Path::new("/proc").join(pid.to_string());
    dir.exists() && !zombie(&dir)
}

/// The command line of process `pid`, its words each ended by a NUL; empty once gone.
pub fn cmdline(pid: u32) -> Vec<u8> {
    fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
}

/// Whether no process of group `pgid` is left.
pub fn group_gone(pgid: i32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_err()
}

/// A process's resident memory, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The most resident memory a process has had, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
