//! `Build`: one checked-out and built tree per key, made at most once and then shared.
//!
//! Key = sha256(tree id, build command, build env). `builds/<key>/` appears only by a
//! rename of a finished temp folder, so if it exists the build succeeded. A file lock on
//! the key makes a concurrent push of the same tree wait, then reuse the result.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::BuildConfig;
use crate::fsops;
use crate::git::Pushed;
use crate::interrupt::Interrupt;
use crate::layout::Layout;
use crate::procfs;

mod cleanup;
mod command;
mod ended;

pub use cleanup::remove_unused;

/// Metadata file inside a finished build; written before the build is renamed into place.
pub const META: &str = ".bluegreen-build.json";

/// What a finished build records about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildMeta {
    pub key: String,
    pub tree: String,
    pub commit: String,
    pub command: String,
    /// The names of `build.env`'s variables: their values (a registry token, say) stay
    /// in the config, out of a file the root's readers may read.
    pub env_names: Vec<String>,
    pub finished: String,
    pub seconds: f64,
}

/// How `ensure` got its build.
#[derive(Debug)]
pub enum Outcome {
    /// A finished build with this key already existed.
    Reused,
    /// Built now: the time the build command took.
    Built { build: Duration },
}

/// The build key for `tree` under `config`: 16 hex digits of a sha256.
pub fn key(tree: git2::Oid, config: &BuildConfig) -> String {
    let mut hash = Sha256::new();
    hash.update(tree.as_bytes());
    hash.update([0]);
    hash.update(config.command.as_bytes());
    for (name, value) in &config.env {
        hash.update([0]);
        hash.update(name.as_bytes());
        hash.update([b'=']);
        hash.update(value.as_bytes());
    }
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `text` is a build key as [`key`] makes one (16 lowercase hex digits): a key
/// read back from a file (a release's metadata) becomes a path under `builds/`, and
/// `/srv/x` or `../x` there would name a folder outside it.
pub fn is_key(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `builds/<key>` is a finished build.
pub fn is_finished(layout: &Layout, key: &str) -> bool {
    layout.build_dir(key).join(META).is_file()
}

/// The push a build is made for: where its lines go, and what may stop it.
pub struct Pusher<'a> {
    /// Starts each step line: the slot (`blue: `).
    pub label: &'a str,
    /// The pusher's output: step lines and the build's own output.
    pub out: &'a mut (dyn Write + Send),
    /// A stopping signal during the checkout or the build fails it.
    pub interrupt: &'a Interrupt,
    /// When the push began, before it waited for anything: a build of its tree that
    /// failed since is its outcome too (see `ensure`).
    pub began: SystemTime,
}

/// How far a file's time may lag the clock it is compared with: the kernel stamps files
/// from a clock that ticks only every few milliseconds.
const STAMP_LAG: Duration = Duration::from_millis(20);

/// Whether a file `written` then was written since `began`, by the clock read `now`: within
/// the stamps' lag, and not ahead of the clock (stamped before the clock was stepped back,
/// as NTP corrects a clock that ran ahead: when, nobody knows, and every retry of a build
/// that failed then was refused until the clock caught up).
fn written_since(written: SystemTime, began: SystemTime, now: SystemTime) -> bool {
    written + STAMP_LAG >= began && written <= now
}

/// Takes the lock that keeps the clean-up of unused builds away from build `key` while
/// a deploy uses it, shared with other deploys. `builds/` removed by hand (to free disk)
/// is made again: it holds nothing but what builds leave.
pub fn use_lock(layout: &Layout, key: &str) -> anyhow::Result<nix::fcntl::Flock<File>> {
    let dir = layout.builds_dir();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fsops::lock_shared(&layout.build_use_lock(key))
}

/// Makes sure `builds/<key>` exists: reuses it, or checks the tree out with `checkout`
/// and runs the build command there, streaming its output to the pusher.
pub fn ensure(
    layout: &Layout,
    key: &str,
    pushed: &Pushed,
    config: &BuildConfig,
    checkout: impl FnOnce(&Path) -> anyhow::Result<()>,
    mut pusher: Pusher,
) -> anyhow::Result<Outcome> {
    // A hook killed outright (SIGKILL, an OOM kill) left its build running: it goes at
    // the next push, whatever that push builds or reuses.
    if let Err(e) = clear_leftovers(layout, None) {
        tracing::debug!("cannot remove what killed hooks' builds left: {e:#}");
    }
    if is_finished(layout, key) {
        return Ok(Outcome::Reused);
    }
    fs::create_dir_all(layout.build_tmp_root())
        .with_context(|| format!("cannot create {}", layout.build_tmp_root().display()))?;
    let mut waited = false;
    let lock = layout.build_lock(key);
    let _lock = fsops::lock(&lock, || {
        waited = true;
        let _ = writeln!(
            pusher.out,
            "{}another push is building this tree{}; waiting for it",
            pusher.label,
            crate::procfs::held_by(&lock)
        );
    })?;
    if is_finished(layout, key) {
        return Ok(Outcome::Reused);
    }
    // The build we waited for failed (or its push was stopped): running it again right
    // away would run the same build twice for one push of one commit to both slots.
    // Its hook killed outright, its build may still run: it goes, as we hold the key.
    // So with one that failed so fast that it was over before this push asked for the
    // lock, but after this push began: its log was written since, and ends with why it
    // failed ([`ended`], written then, whatever the build printed). A log without that
    // line is a build whose hook was killed outright: the push after it (a person's
    // retry, or one that came meanwhile and did not wait) builds what it never finished.
    let log = layout.build_log(key);
    let recent = fs::metadata(&log)
        .and_then(|meta| meta.modified())
        .is_ok_and(|written| written_since(written, pusher.began, SystemTime::now()));
    let ended = (waited || recent).then(|| ended::read(&log)).flatten();
    let failed_since = recent && ended.is_some();
    if waited || failed_since {
        let _ = clear_leftovers(layout, Some(key));
        // Its push's words, which name the log when there is one; a push killed outright
        // wrote none.
        let how = ended.unwrap_or_else(|| match log.is_file() {
            true => format!("it was stopped (log {})", log.display()),
            false => "it was stopped".to_string(),
        });
        anyhow::bail!(
            "the push that was building this tree did not finish it: {how}; to retry, push a new commit (git commit --allow-empty -m retry)"
        );
    }
    clear_leftovers(layout, Some(key))?;
    // A deploy that failed after its build (a full disk at its release's copy) leaves a
    // build no release uses; only a deploy that works removed those, and on the disk
    // they fill none would. A deploy using one holds its use lock: that one stays.
    if let Err(e) = remove_unused(layout) {
        tracing::debug!("cannot remove unused builds: {e:#}");
    }

    let tmp = layout.build_tmp_dir(key);
    fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    // A stopping signal while checking out or building fails the build, so that this
    // failure path removes its folder; one that comes after it is seen here too.
    let interrupt = pusher.interrupt;
    let built = interrupt.during(|| check_out_and_build(&tmp, &log, config, checkout, &mut pusher));
    let built = built.and_then(|took| match interrupt.received() {
        Some(signal) => Err(anyhow::anyhow!("stopped by {signal}")),
        None => Ok(took),
    });
    let build_took = match built {
        Ok(took) => took,
        Err(e) => {
            ended::write(&log, &format!("{e:#}"));
            // What earlier failures left goes now, not only after a deploy that works:
            // a tree that fails push after push must not pile up logs and lock files.
            if let Err(left) = cleanup::remove_leftovers(layout) {
                tracing::debug!("cannot remove what failed builds left: {left:#}");
            }
            // Nothing will use it: the log keeps what the build said.
            return Err(match fsops::remove_any(&tmp) {
                Ok(()) => e,
                Err(left) => e.context(format!("(its folder {} is left: {left:#})", tmp.display())),
            });
        }
    };

    let meta = BuildMeta {
        key: key.to_string(),
        tree: pushed.tree.to_string(),
        commit: pushed.commit.to_string(),
        command: config.command.clone(),
        env_names: config.env.keys().cloned().collect(),
        finished: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        seconds: build_took.as_secs_f64(),
    };
    let finished = (|| -> anyhow::Result<()> {
        // A build that put a symlink in its folder's place would have it published as
        // the build, and its metadata written (and its files copied from) elsewhere.
        let kind = fs::symlink_metadata(&tmp)
            .with_context(|| format!("the build removed its own folder {}", tmp.display()))?;
        anyhow::ensure!(
            kind.is_dir(),
            "the build replaced its own folder {} with something else (a symlink?): a build must work inside its folder",
            tmp.display()
        );
        fsops::owner_writable(&tmp)?;
        fsops::sync_tree(&tmp)?;
        fsops::write_atomic(&tmp.join(META), &serde_json::to_vec_pretty(&meta)?)?;
        fs::rename(&tmp, layout.build_dir(key)).with_context(|| {
            format!(
                "cannot move the finished build into {}",
                layout.build_dir(key).display()
            )
        })
    })();
    if let Err(e) = finished {
        ended::write(&log, &format!("{e:#}"));
        // A full disk gets the build's space back at once, as after a failed build.
        return Err(match fsops::remove_any(&tmp) {
            Ok(()) => e,
            Err(left) => e.context(format!("(its folder {} is left: {left:#})", tmp.display())),
        });
    }
    File::open(layout.builds_dir())?.sync_all()?;
    Ok(Outcome::Built { build: build_took })
}

/// Checks the tree out into `tmp` and runs the build command there, its output in
/// `log_path` too; returns the time the command took.
fn check_out_and_build(
    tmp: &Path,
    log_path: &Path,
    config: &BuildConfig,
    checkout: impl FnOnce(&Path) -> anyhow::Result<()>,
    pusher: &mut Pusher,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    checkout(tmp)?;
    let checkout_took = started.elapsed();
    writeln!(
        pusher.out,
        "{}checkout {:.1}s",
        pusher.label,
        checkout_took.as_secs_f64()
    )?;

    if config.command.trim().is_empty() {
        File::create(log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        return Ok(Duration::ZERO);
    }
    command::run(tmp, config, log_path, pusher.out, pusher.interrupt).context("build failed")
}

/// Removes what killed or failed builds of `key` (whose lock the caller holds) left:
/// temp folders and the processes working for them, and a `builds/<key>` without
/// metadata (never written by us; it would block the rename). Any key's temp folder and
/// processes go too when the hook that made them (the pid in the folder's name) is gone:
/// nobody else would ever remove them. With no `key`, only those.
fn clear_leftovers(layout: &Layout, key: Option<&str>) -> anyhow::Result<()> {
    let prefix = key.map(|key| format!("{key}."));
    let abandoned = |name: &str| {
        prefix
            .as_ref()
            .is_some_and(|prefix| name.starts_with(prefix))
            || name
                .rsplit_once('.')
                .and_then(|(_, pid)| pid.parse::<u32>().ok())
                .is_some_and(|pid| pid != std::process::id() && !procfs::running(pid))
    };
    let root = layout.build_tmp_root();
    let mut left = Vec::new();
    match fs::read_dir(&root) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.with_context(|| format!("cannot read {}", root.display()))?;
                if abandoned(&entry.file_name().to_string_lossy()) {
                    left.push(entry.path());
                }
            }
        }
        // No push has made it yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", root.display())),
    }
    // Processes are looked for (every process's environment read) only when a folder
    // was abandoned, or a build of the key may have been (its hook killed as it began).
    if !left.is_empty() || key.is_some() {
        stop_leftover_builds(&root, &abandoned);
    }
    for folder in left {
        fsops::remove_any(&folder)
            .with_context(|| format!("cannot remove {}", folder.display()))?;
    }
    if let Some(key) = key {
        let stale = layout.build_dir(key);
        fsops::remove_any(&stale).with_context(|| format!("cannot remove {}", stale.display()))?;
    }
    Ok(())
}

/// Kills what the build in the temp folder `dir` left running outside its process group
/// (a helper that ran `setsid`, a build tool's daemon): once its build is over, timed
/// out, failed or stopped, nothing of it runs on past its push.
pub(super) fn stop_helpers(dir: &Path) {
    let (Some(tmp_root), Some(name)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let name = name.to_string_lossy();
    stop_leftover_builds(tmp_root, &|other: &str| other == name);
}

/// Kills the process groups of builds of killed hooks: processes whose environment names
/// an abandoned temp build folder (of the key whose lock we hold, or of a dead hook) as
/// theirs ([`command::MARKER`]). Not by working folder: an operator's shell `cd`'d into
/// one to look is no build.
fn stop_leftover_builds(tmp_root: &Path, abandoned: &dyn Fn(&str) -> bool) {
    // The root may be reached through another path (a symlink) than the dead hook's.
    let resolved = fs::canonicalize(tmp_root);
    let tmp_root = resolved.as_deref().unwrap_or(tmp_root);
    let of_leftover = |dir: &Path, env: &procfs::Environ| {
        let folder = env.path(command::MARKER)?;
        let name = folder.file_name()?.to_string_lossy().into_owned();
        let parent = fs::canonicalize(folder.parent()?).ok()?;
        (parent == tmp_root && abandoned(&name)).then_some(())?;
        procfs::group(dir)
    };
    let own_group = nix::unistd::getpgrp().as_raw() as u32;
    let groups = || -> Vec<u32> {
        procfs::environs()
            .iter()
            .filter_map(|(dir, env)| of_leftover(dir, env))
            // Never the hook's own group (a build may join it: same session).
            .filter(|&g| g > 1 && g != own_group)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = groups();
        if left.is_empty() || Instant::now() > deadline {
            return;
        }
        for group in left {
            let _ = killpg(Pid::from_raw(group as i32), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_depends_on_tree_command_and_env() {
        let tree = git2::Oid::from_str("4b825dc642cb6eb9a060e54bf8d69288fbee4904").unwrap();
        let base = BuildConfig::default();
        let mut other_cmd = base.clone();
        other_cmd.command = "make".into();
        let mut other_env = base.clone();
        other_env.env.insert("NODE_ENV".into(), "production".into());
        let keys = [
            key(tree, &base),
            key(tree, &other_cmd),
            key(tree, &other_env),
        ];
        assert_eq!(keys[0], key(tree, &base));
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[0], keys[2]);
        assert_eq!(keys[0].len(), 16);
        assert!(keys.iter().all(|k| is_key(k)));
        for bad in [
            "/srv/elsewhere",
            "../../x",
            "0123456789ABCDEF",
            "0123456789abcde",
        ] {
            assert!(!is_key(bad), "{bad}");
        }
    }

    #[test]
    fn a_file_is_written_since_a_push_began_within_the_stamps_lag_and_not_ahead_of_the_clock() {
        let began = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let now = began + Duration::from_secs(1);
        let ms = Duration::from_millis;
        assert!(written_since(began + ms(500), began, now));
        assert!(written_since(began - ms(15), began, now));
        assert!(!written_since(began - ms(25), began, now));
        assert!(written_since(now, began, now));
        // Stamped before the clock was stepped back two minutes.
        assert!(!written_since(now + Duration::from_secs(120), began, now));
    }
}
