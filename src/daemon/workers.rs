//! The register of running worker process groups under `run/workers/`.
//!
//! Every generation's process group is written down when it starts and crossed out once
//! the group is gone. A daemon killed with SIGKILL leaves its entries behind; the next
//! `serve` stops those groups before starting its own, so no orphan outlives a restart.
//! A group is only stopped when one of its processes carries this root's `MARKER` in
//! its environment, so a recycled process group id never hits a stranger.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::layout::Layout;

/// Environment variable set on every worker; its value is the root.
pub const MARKER: &str = "BLUEGREEN_WORKER_OF";

fn entry(layout: &Layout, pgid: u32) -> PathBuf {
    layout.workers_dir().join(pgid.to_string())
}

/// Notes that process group `pgid` (its leader's pid) runs `what`.
pub fn record(layout: &Layout, pgid: u32, what: &str) {
    let _ = fs::create_dir_all(layout.workers_dir());
    if let Err(e) = crate::fsops::write_atomic(&entry(layout, pgid), what.as_bytes()) {
        tracing::warn!("cannot record worker {pgid}: {e:#}");
    }
}

/// Crosses out `pgid` once its group is gone.
pub fn forget(layout: &Layout, pgid: u32) {
    let _ = fs::remove_file(entry(layout, pgid));
}

/// Whether any process of group `pgid` is still alive.
pub fn group_alive(pgid: u32) -> bool {
    killpg(Pid::from_raw(pgid as i32), None).is_ok()
}

/// Stops the groups a previous daemon left: SIGTERM, then SIGKILL after `grace`.
/// Returns how many groups were still running.
pub fn reap_orphans(layout: &Layout, grace: Duration) -> usize {
    let Ok(entries) = fs::read_dir(layout.workers_dir()) else {
        return 0;
    };
    let mut groups = Vec::new();
    for entry in entries.flatten() {
        let Some(pgid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if group_alive(pgid) && carries_marker(pgid, layout) {
            let what = fs::read_to_string(entry.path()).unwrap_or_default();
            tracing::warn!(pgid, "stopping a worker left by a previous daemon: {what}");
            let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGTERM);
            groups.push(pgid);
        } else {
            let _ = fs::remove_file(entry.path());
        }
    }
    let deadline = Instant::now() + grace;
    while groups.iter().any(|&g| group_alive(g)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pgid in &groups {
        let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
        forget(layout, pgid);
    }
    groups.len()
}

/// Whether some process in group `pgid` has `MARKER=<this root>` in its environment.
fn carries_marker(pgid: u32, layout: &Layout) -> bool {
    let needle = format!("{MARKER}={}\0", layout.root().display()).into_bytes();
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        let dir = p.path();
        let in_group = fs::read_to_string(dir.join("stat")).ok().and_then(|stat| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().nth(2)?.parse::<u32>().ok()
        }) == Some(pgid);
        in_group
            && fs::read(dir.join("environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle.as_slice()))
    })
}
