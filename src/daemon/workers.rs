//! The register of running worker process groups under `run/workers/`.
//!
//! Every generation's process group is written down when it starts and crossed out once
//! the group is gone. A daemon killed with SIGKILL leaves its entries behind; the next
//! `serve` stops those groups before starting its own, so no orphan outlives a restart.
//! A group is only stopped when one of its processes carries this root's `MARKER` in
//! its environment, or its leader is still the recorded process (same boot, same start
//! time: a worker that cleared its environment) and carries no `MARKER` of another root
//! that is there, so a recycled process group id never hits a stranger, an entry copied
//! with a live root's folder never hits that root's worker, a root moved with `mv` still
//! stops its own, and a worker that was never recorded is found all the same.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::layout::Layout;
use crate::procfs;

/// Environment variable set on every worker; its value is the root.
pub use crate::config::WORKER_MARKER as MARKER;

/// Environment variable set on every worker: `<slot>/<generation>` (`switch.migrate/<n>` on
/// a switch's migration), to find what one left outside its process group.
pub use crate::config::GENERATION_MARKER as GENERATION;
/// How a migration's [`GENERATION`] begins: `switch.migrate/<n>`.
pub const MIGRATION: &str = "switch.migrate/";

/// Notes that process group `pgid` (its leader's pid) runs `what`, with the leader's
/// [`identity`] on a first line.
pub fn record(layout: &Layout, pgid: u32, what: &str) {
    let _ = fs::create_dir_all(layout.workers_dir());
    let text = match identity(pgid) {
        Some(identity) => format!("{identity}\n{what}"),
        None => what.to_string(),
    };
    if let Err(e) = crate::fsops::write_atomic(&layout.worker_file(pgid), text.as_bytes()) {
        tracing::warn!("cannot record worker {pgid}: {e:#}");
    }
}

/// What tells process `pid` from one that gets its pid later: the boot, and its start
/// time in clock ticks since boot (`/proc/<pid>/stat`, field 22).
fn identity(pid: u32) -> Option<String> {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let start = procfs::stat_field(&Path::new("/proc").join(pid.to_string()), 22)?;
    Some(format!("leader {} {start}", boot.trim()))
}

/// Group `pgid` with its leader's [`identity`] now, for [`stop_adopted`].
pub fn adopt(pgid: u32) -> Option<(u32, String)> {
    Some((pgid, identity(pgid)?))
}

/// Stops the groups [`adopt`] noted whose leader is still the process noted: one whose
/// id was freed since may lead a stranger's group now.
pub fn stop_adopted(groups: &[(u32, String)], grace: Duration) {
    let same = (groups.iter())
        .filter(|(pgid, leader)| identity(*pgid).as_ref() == Some(leader))
        .map(|&(pgid, _)| pgid)
        .collect();
    stop(&same, grace);
}

/// A recorded group's leader identity (none in an entry written before there was one)
/// and what it ran.
fn read_entry(layout: &Layout, pgid: u32) -> (Option<String>, String) {
    let text = fs::read_to_string(layout.worker_file(pgid)).unwrap_or_else(|_| "unrecorded".into());
    let (identity, what): (Vec<&str>, Vec<&str>) =
        text.lines().partition(|line| line.starts_with("leader "));
    (identity.first().map(|s| s.to_string()), what.join(" "))
}

/// Recorded groups whose leader is still the process that was recorded: a worker that
/// cleared its environment (`env -i`, `sudo` in a start script) carries no marker.
fn recorded_groups(layout: &Layout) -> BTreeSet<u32> {
    let Ok(entries) = fs::read_dir(layout.workers_dir()) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pgid| pgid > 1)
        .filter(|&pgid| {
            let (recorded, _) = read_entry(layout, pgid);
            recorded.is_some() && recorded == identity(pgid) && !another_roots(layout, pgid)
        })
        .collect()
}

/// Whether the leader of group `pgid` carries the `MARKER` of another root that is
/// there: its entry came with a copy of that root's folder (`cp -a` of a live root to make
/// a second one), and the worker is the other daemon's to stop, not this one's. A marked
/// path that is gone is this root's own before a `mv`: no other daemon will stop it.
fn another_roots(layout: &Layout, pgid: u32) -> bool {
    let Some(env) = procfs::Environ::read(&Path::new("/proc").join(pgid.to_string())) else {
        return false;
    };
    env.path(MARKER).is_some_and(|marked| {
        fs::canonicalize(marked).is_ok_and(|other| other != canonical_root(layout))
    })
}

/// This root's path, resolved (a worker may have been started through a symlink).
pub fn canonical_root(layout: &Layout) -> PathBuf {
    fs::canonicalize(layout.root()).unwrap_or_else(|_| layout.root().to_owned())
}

/// Whether `marked` (a `MARKER` value) names this root, `root` being it resolved.
fn is_root(layout: &Layout, root: &Path, marked: &Path) -> bool {
    marked == layout.root() || fs::canonicalize(marked).is_ok_and(|m| m == root)
}

/// Whether `env` carries this root's `MARKER` (`root` being this root resolved, see
/// [`canonical_root`]) and, when given, `GENERATION=<generation>`.
pub fn carries(
    layout: &Layout,
    root: &Path,
    env: &procfs::Environ,
    generation: Option<&str>,
) -> bool {
    if generation.is_some_and(|g| env.get(GENERATION) != Some(g.as_bytes())) {
        return false;
    }
    env.path(MARKER)
        .is_some_and(|marked| is_root(layout, root, &marked))
}

/// Crosses out `pgid` once its group is gone.
pub fn forget(layout: &Layout, pgid: u32) {
    let _ = fs::remove_file(layout.worker_file(pgid));
}

/// Whether any process of group `pgid` is still alive (a zombie counts).
pub fn group_alive(pgid: u32) -> bool {
    killpg(Pid::from_raw(pgid as i32), None).is_ok()
}

/// Whether any process of group `pgid` still runs: [`group_alive`], but a zombie (dead,
/// not yet reaped by its parent, which for an orphan is pid 1, in its own time) does not
/// count. A group left with zombies only is gone, so `stop` never signals it again, also
/// not after its last member is reaped and the id is a stranger's. It reads /proc: for
/// blocking code only.
fn group_running(pgid: u32) -> bool {
    group_alive(pgid) && runs_a_member(pgid)
}

/// Whether a process that is not a zombie is in group `pgid`; true when /proc cannot
/// be read (the group then counts as alive, as kill(2) says).
fn runs_a_member(pgid: u32) -> bool {
    let Ok(procs) = fs::read_dir("/proc") else {
        return true;
    };
    let pgid = pgid.to_string();
    procs.flatten().any(|p| {
        // State, parent, process group: fields 3 to 5.
        procfs::stat_fields(&p.path()).is_some_and(|fields| match fields.as_slice() {
            [state, _, group, ..] => state != "Z" && state != "X" && *group == pgid,
            _ => false,
        })
    })
}

/// Stops the groups a previous daemon left: every process group with a member carrying
/// this root's `MARKER`, recorded or not (a daemon killed between starting a worker and
/// recording it leaves an unrecorded one), and every recorded group whose leader is
/// still the recorded process. SIGTERM, then SIGKILL after `grace`. Called
/// before this daemon starts any worker.
pub fn reap_orphans(layout: &Layout, grace: Duration) -> Reaped {
    stop_groups(layout, grace, Left::ByPreviousDaemon)
}

/// What a reap stopped.
pub struct Reaped {
    /// How many groups were running.
    pub groups: usize,
    /// The highest generation number their processes carried (`<slot>/<n>` in their
    /// [`GENERATION`]), 0 with none: a killed daemon may not have written it down.
    pub highest_generation: u64,
}

/// Stops what is left once this daemon has stopped its generations: processes a worker
/// started outside its process group (a helper that daemonised itself with `setsid`)
/// still carry the marker, and must not outlive the daemon. Returns how many groups.
pub fn reap_leftovers(layout: &Layout, grace: Duration) -> usize {
    stop_groups(layout, grace, Left::OutsideGroup).groups
}

/// Stops what generation `generation` (`<slot>/<id>`) left outside its process group
/// `group`: processes that carry this root's `MARKER` and the generation's `GENERATION`
/// (a helper that daemonised itself with `setsid`), so that they do not pile up deploy
/// after deploy. SIGTERM, then SIGKILL after `grace`. Returns how many groups there were.
pub fn reap_strays(layout: &Layout, generation: &str, group: u32, grace: Duration) -> usize {
    let mut groups = marked_groups(layout, Some(generation));
    groups.remove(&group);
    for &pgid in &groups {
        tracing::warn!(
            pgid,
            "stopping a process that {generation} left outside its process group"
        );
    }
    stop(&groups, grace);
    groups.len()
}

/// Who left the groups `stop_groups` stops.
#[derive(Clone, Copy, PartialEq)]
enum Left {
    /// A daemon that stopped without stopping them (killed): a migration among them was
    /// cut off in its switch.
    ByPreviousDaemon,
    /// This daemon's workers and migrations, outside their process groups.
    OutsideGroup,
}

fn stop_groups(layout: &Layout, grace: Duration, left: Left) -> Reaped {
    let what_it_is = match left {
        Left::ByPreviousDaemon => "a worker left by a previous daemon",
        Left::OutsideGroup => "a process a worker left outside its process group",
    };
    let mut groups = BTreeSet::new();
    // Groups running a `switch.migrate`: told as such.
    let mut migrations = BTreeSet::new();
    let mut highest_generation = 0;
    for (dir, env) in marked(layout, None) {
        let group = procfs::group(&dir).filter(|&pgid| pgid > 1);
        groups.extend(group);
        if env
            .get(GENERATION)
            .is_some_and(|g| g.starts_with(MIGRATION.as_bytes()))
        {
            migrations.extend(group);
        }
        highest_generation =
            highest_generation.max(env.get(GENERATION).and_then(generation_number).unwrap_or(0));
    }
    let recorded = recorded_groups(layout);
    groups.extend(&recorded);
    for &pgid in &groups {
        let (_, what) = read_entry(layout, pgid);
        if left == Left::OutsideGroup && recorded.contains(&pgid) {
            // A generation's own group still recorded: the daemon ended (a failed start)
            // before it stopped its generations.
            tracing::warn!(
                pgid,
                "stopping a worker this daemon started and ended without stopping: {what}"
            );
        } else if left == Left::ByPreviousDaemon && migrations.contains(&pgid) {
            tracing::warn!(pgid, "stopping a switch.migrate left running by a previous daemon, which stopped during its switch: that switch did not happen (the active slot is as state.json says); see what the migration did before switching again");
        } else {
            tracing::warn!(pgid, "stopping {what_it_is}: {what}");
        }
    }
    stop(&groups, grace);
    // Every entry is stale now: its group is gone or was just stopped.
    if let Ok(entries) = fs::read_dir(layout.workers_dir()) {
        for entry in entries.flatten() {
            let _ = fs::remove_file(entry.path());
        }
    }
    Reaped {
        groups: groups.len(),
        highest_generation,
    }
}

/// Stops process group `pgid`: SIGTERM, then SIGKILL to what still runs after `grace`
/// (see `stop`). It waits: for blocking code only.
pub fn stop_group(pgid: u32, grace: Duration) {
    stop(&BTreeSet::from([pgid]), grace);
}

/// SIGTERM to each group, SIGKILL after `grace` to those still running. A group seen
/// gone is never signalled again: its id is free for the next process that leads a
/// group, a stranger's (pids wrap, at 32,768 on many hosts).
fn stop(groups: &BTreeSet<u32>, grace: Duration) {
    for &pgid in groups {
        let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    let mut running = groups.clone();
    loop {
        running.retain(|&g| group_running(g));
        if running.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pgid in &running {
        let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
    }
}

/// The generation number a worker's [`GENERATION`] names (`<slot>/<n>`; not a
/// migration's, `switch.migrate/<n>`).
fn generation_number(value: &[u8]) -> Option<u64> {
    let (slot, n) = std::str::from_utf8(value).ok()?.split_once('/')?;
    slot.parse::<crate::slot::Slot>().ok()?;
    // A worker sets its own environment: a number beyond counting is not taken up.
    n.parse()
        .ok()
        .filter(|&n| n <= crate::state::MAX_GENERATION)
}

/// Process groups with a member whose environment has `MARKER=<this root>` (and
/// `GENERATION=<generation>`, when given).
fn marked_groups(layout: &Layout, generation: Option<&str>) -> BTreeSet<u32> {
    marked(layout, generation)
        .filter_map(|(dir, _)| procfs::group(&dir))
        .filter(|&pgid| pgid > 1)
        .collect()
}

/// The processes (their `/proc` folder and environment) whose environment has
/// `MARKER=<this root>` (and `GENERATION=<generation>`, when given). The root may have
/// been reached by another path (a symlink) when the worker was started: paths are
/// compared resolved.
fn marked<'a>(
    layout: &'a Layout,
    generation: Option<&'a str>,
) -> impl Iterator<Item = (PathBuf, procfs::Environ)> + 'a {
    let root = canonical_root(layout);
    procfs::environs()
        .into_iter()
        .filter(move |(_, env)| carries(layout, &root, env, generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_number_is_a_slots_and_within_counting() {
        assert_eq!(generation_number(b"blue/7"), Some(7));
        assert_eq!(generation_number(b"switch.migrate/3"), None);
        assert_eq!(generation_number(b"blue/x"), None);
        // A worker sets its own environment: near u64::MAX, the next number overflowed.
        assert_eq!(
            generation_number(format!("green/{}", u64::MAX).as_bytes()),
            None
        );
        assert_eq!(
            generation_number(format!("green/{}", 1u64 << 53).as_bytes()),
            Some(1 << 53)
        );
    }
}
