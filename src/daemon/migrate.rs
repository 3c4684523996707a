//! `switch.migrate`: the command a switch runs before it flips, and why it failed.
//!
//! It runs in the target's live release folder, with each slot's port, release folder
//! and env as its live generation has them (for a slot with no live generation: no port,
//! the folder of the release it last ran, and the config's env), in
//! a process group of its own, bounded by `switch.migrate_timeout`; whatever it leaves in
//! its group, or started outside it (a helper that ran `setsid`), is stopped when it is
//! done, or when the switch is dropped (the daemon stopping): SIGTERM, so that it can
//! roll back what it began, then SIGKILL after `app.stop_timeout`. No part of a
//! migration given up runs on beside the next, which waits for that, nor past the
//! daemon's stop. Of its stderr only the last lines are kept, each cut
//! short for a one-line reason: a migration that prints a lot (a progress bar, a dump)
//! costs the daemon no more memory than one long line.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{workers, Daemon};
use crate::argv;
use crate::config::Config;
use crate::layout::Layout;
use crate::lines::{Lines, Tail};
use crate::slot::Slot;

/// Lines of stderr quoted in the reason.
const QUOTED: usize = 3;

/// Numbers each migration's [`workers::GENERATION`], `switch.migrate/<n>`: what one left
/// is reaped after it, maybe once the next has begun, which must be spared.
static MIGRATIONS: AtomicU64 = AtomicU64::new(0);

/// Runs `switch.migrate` in `dir`, `to`'s live release folder (the switch refuses a
/// target with no live generation), with the FROM_/TO_ env.
pub async fn run(
    daemon: &Daemon,
    config: &Config,
    (from, to): (Slot, Slot),
    dir: &Path,
) -> Result<(), String> {
    let mut env = BTreeMap::new();
    for (prefix, slot) in [("FROM", from), ("TO", to)] {
        let live = daemon.slots[slot.index()].route.live();
        // The env the slot's workers run with: a reload since changed only the config's,
        // which its next generation gets. First, so that bluegreen's own (a slot env
        // `DIR` would be `FROM_DIR`) win.
        let slot_env = live
            .as_ref()
            .map_or(&config.slots.get(slot).env, |g| &g.env);
        for (name, value) in slot_env {
            env.insert(format!("{prefix}_{name}"), value.clone());
        }
        env.insert(format!("{prefix}_SLOT"), slot.to_string());
        env.insert(
            format!("{prefix}_PORT"),
            live.as_ref()
                .map(|g| g.port.to_string())
                .unwrap_or_default(),
        );
        // A slot with no live generation (a failover from a crashed one) still has its
        // data in the release folder it last ran (an empty FROM_DIR would make
        // `$FROM_DIR/data` the host's `/data`), not in a `current` pushed since that
        // never went live; with none ever live, `current`.
        let dir = live.as_ref().map(|g| g.dir.clone()).or_else(|| {
            let layout = &daemon.layout;
            // A release of the slot, never a path out of it: `state.json` lies in the
            // root, which the app's processes can write.
            daemon
                .last_live(slot)
                .filter(|id| crate::release::exists(layout, slot, id))
                .map(|id| layout.release_dir(slot, &id))
                .or_else(|| {
                    crate::release::current(layout, slot).map(|id| layout.release_dir(slot, &id))
                })
        });
        env.insert(
            format!("{prefix}_DIR"),
            dir.map(|d| d.display().to_string()).unwrap_or_default(),
        );
    }
    let tag = format!(
        "{}{}",
        workers::MIGRATION,
        MIGRATIONS.fetch_add(1, Ordering::Relaxed) + 1
    );
    let words = argv::expand(&config.switch.migrate, &env).map_err(|e| format!("{e:#}"))?;
    let mut command = tokio::process::Command::new(&words[0]);
    command.args(&words[1..]).current_dir(dir).envs(&env);
    super::systemd::keep_from(&mut command);
    let mut child = command
        .env(workers::MARKER, daemon.layout.root())
        .env(workers::GENERATION, &tag)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        // Its group is stopped by `GroupStopper`, SIGTERM first: dropping the child must
        // not SIGKILL its leader before that.
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| {
            let why = argv::not_started(&words[0], dir, env.get("PATH"), &e);
            format!("cannot start `{}` in {}: {why}", words[0], dir.display())
        })?;
    // Whatever the migration leaves in its group goes when it is done, and with it if
    // this switch is dropped (the daemon stopping): no orphan.
    let mut group = GroupStopper {
        group: child.id(),
        layout: daemon.layout.clone(),
        tag,
        grace: config.app.stop_timeout,
        ended: false,
    };
    let stderr = child.stderr.take().expect("stderr was piped");
    // Outside the run: a migration cut off by its timeout is quoted too (what it waits for).
    let mut tail = Tail::new(QUOTED);
    let run = async {
        let read = last_lines(stderr, &mut tail);
        tokio::pin!(read);
        let mut read_all = false;
        let status = tokio::select! {
            status = child.wait() => status,
            _ = &mut read => {
                read_all = true;
                child.wait().await
            }
        };
        if !read_all {
            // A background process it left may hold stderr open: take what is
            // there, do not wait for it.
            let _ = tokio::time::timeout(Duration::from_millis(500), &mut read).await;
        }
        status
    };
    let timeout = config.switch.migrate_timeout;
    let outcome = tokio::time::timeout(timeout, run).await;
    group.ended = true;
    let tail = tail.joined();
    let quoted = if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    };
    let Ok(status) = outcome else {
        return Err(format!(
            "still running after {} (switch.migrate_timeout){quoted}",
            humantime::format_duration(timeout)
        ));
    };
    let status = status.map_err(|e| format!("cannot wait for it: {e}"))?;
    if status.success() {
        return Ok(());
    }
    // One line, as every reason: a script written as a multi-line TOML string too.
    Err(format!(
        "`{}` {}{quoted}",
        crate::logging::one_line(&config.switch.migrate),
        crate::exit::ended(status)
    ))
}

/// Reads `stream` to its end, keeping in `tail` its last lines that are not blank.
async fn last_lines(mut stream: impl AsyncRead + Unpin, tail: &mut Tail) {
    let mut lines = Lines::default();
    let mut chunk = vec![0; 8192];
    while let Ok(n @ 1..) = stream.read(&mut chunk).await {
        lines.feed(&chunk[..n], |line| tail.push(line));
    }
    lines.finish(|line| tail.push(line));
}

/// Stops a migration's process group when dropped, and what it started outside it:
/// SIGTERM, then SIGKILL after `grace` (`app.stop_timeout`), so that one cut off (the
/// daemon stopping, its timeout) can still roll back what it began.
struct GroupStopper {
    group: Option<u32>,
    layout: Layout,
    tag: String,
    grace: Duration,
    /// It ended, or ran out of time: dropped before, the switch was given up under it.
    ended: bool,
}

/// The threads stopping what migrations left, which the daemon's stop waits for: one
/// that ended with it would leave the migration running on.
static STOPPING: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

impl Drop for GroupStopper {
    fn drop(&mut self) {
        let Some(group) = self.group else { return };
        if !self.ended {
            tracing::warn!(
                "{} cut off before it ended (its switch was given up: the daemon is stopping): SIGTERM to its process group, SIGKILL after {}",
                self.tag,
                humantime::format_duration(self.grace)
            );
        }
        let (layout, tag, grace) = (
            self.layout.clone(),
            std::mem::take(&mut self.tag),
            self.grace,
        );
        // It waits, and reads /proc: not on the runtime's threads.
        let stopping = std::thread::spawn(move || {
            workers::stop_group(group, grace);
            workers::reap_strays(&layout, &tag, group, grace);
        });
        let mut threads = STOPPING.lock().expect("no panic holds it");
        threads.retain(|thread| !thread.is_finished());
        threads.push(stopping);
    }
}

/// Waits until what migrations left is stopped (each within its `grace`, twice: its
/// group, then what it started outside it). Called before a migration begins and at the
/// daemon's stop; the threads stay listed until they are done, so that each caller
/// waits for them all.
pub fn wait_stopped() {
    while stopping() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a migration given up before (its timeout, a stop) is still being stopped:
/// its SIGTERM's grace, then what it left outside its group, up to `app.stop_timeout`
/// each. A switch waits for it (see [`wait_stopped`]) before its own migration begins.
pub fn stopping() -> bool {
    let threads = STOPPING.lock().expect("no panic holds it");
    threads.iter().any(|thread| !thread.is_finished())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_lines_are_kept_short_whatever_was_printed() {
        let mut input = vec![b'x'; 3 * crate::lines::MAX_LINE];
        input.extend_from_slice(b"\n\n  \nfirst\n50%\r\x1b[31mcannot reach the database\x1b[0m");
        let mut tail = Tail::new(QUOTED);
        last_lines(&input[..], &mut tail).await;
        assert_eq!(
            tail.joined(),
            format!(
                "{}... | first | 50%  [31mcannot reach the database [0m",
                "x".repeat(200)
            )
        );
    }
}
