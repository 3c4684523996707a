//! The processes a test started: found by the worker env marker or a working folder
//! inside the root, so that dropping a `Root` can kill whatever is left.

use std::fs;
use std::path::Path;

pub fn root_processes(root: &Path) -> Vec<u32> {
    let marker = format!("BLUEGREEN_WORKER_OF={}\0", root.display()).into_bytes();
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = entry.path();
        let marked = fs::read(dir.join("environ"))
            .is_ok_and(|env| env.windows(marker.len()).any(|w| w == marker.as_slice()));
        let inside = fs::read_link(dir.join("cwd")).is_ok_and(|cwd| cwd.starts_with(root));
        let zombie = fs::read_to_string(dir.join("stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        });
        if (marked || inside) && !zombie {
            pids.push(pid);
        }
    }
    pids
}

/// Whether no process of group `pgid` is left.
pub fn group_gone(pgid: i32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_err()
}

/// A process's resident memory, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
