//! One push's way to a release: its turn among the slot's pushes, the branch's commit
//! checked out and built once per key (or the build reused), then, under the slot lock,
//! the release installed and made `current`.

use std::io::Write;
use std::path::Path;
use std::time::{Instant, SystemTime};

use super::RefUpdate;
use crate::build::{self, Outcome};
use crate::config::Config;
use crate::git;
use crate::interrupt::Interrupt;
use crate::layout::Layout;
use crate::procfs;
use crate::release::{self, ReleaseMeta};
use crate::slot::Slot;

/// Where the deploy branch is when a push looks: at the commit it deploys, moved on to a
/// newer one, at the commit `current` already runs, or gone.
enum Tip {
    Same,
    Moved(git::Pushed),
    /// The release `current` names, and the branch's commit.
    Current(String, git2::Oid),
    Gone,
}

/// Where `branch` is now, against `pushed`, the commit this push is to deploy.
fn tip_now(
    layout: &Layout,
    config: &Config,
    slot: Slot,
    repo: &git2::Repository,
    pushed: &git::Pushed,
) -> anyhow::Result<Tip> {
    let Some(tip) = git::branch_tip(repo, &config.branch) else {
        return Ok(Tip::Gone);
    };
    let current = release::current(layout, slot)
        .filter(|id| release::meta(layout, slot, id).is_some_and(|m| m.commit == tip.to_string()));
    Ok(match current {
        Some(id) => Tip::Current(id, tip),
        None if tip == pushed.commit => Tip::Same,
        None => Tip::Moved(git::resolve(repo, &tip.to_string())?),
    })
}

/// When this push began: when the `git receive-pack` that runs this hook started (it
/// took the pack in first, which may take a while), else now. A build of the same tree
/// that failed since is this push's outcome too (see `build::ensure`): counted from the
/// hook's own start, a build that failed while git took in this push's pack (the same
/// commit pushed to both slots at once) ran again for it.
fn push_began() -> SystemTime {
    let now = SystemTime::now();
    let git = Path::new("/proc").join(std::os::unix::process::parent_id().to_string());
    // `git-receive-pack` (ssh, a local path), or `git receive-pack` (http-backend's);
    // anything else (a hook run by hand, a shell that lived for hours) is no push's start.
    let by_git = match procfs::name(&git).as_slice() {
        b"git-receive-pac" => true,
        b"git" => procfs::arguments(&git)
            .get(1)
            .is_some_and(|verb| verb == b"receive-pack"),
        _ => false,
    };
    by_git
        .then(|| procfs::age(&git))
        .flatten()
        .and_then(|age| now.checked_sub(age))
        .unwrap_or(now)
}

/// Checks the branch's commit out, builds it (or reuses its build), then, under the
/// slot's lock, installs it as a release and makes that `current`. The new release's id
/// (or the current one's, when the branch is at what it runs already), or none when the
/// branch is gone. Pushes to a slot take turns, and the one whose turn it is deploys
/// what the branch points at then: a newer push that moved it may have been stopped
/// while it waited, or its build failed, and the branch's commit must not be left
/// undeployed because of it; the newer push, when its turn comes, finds it current.
/// The build is not under the slot lock: a rollback in an incident does not wait for a
/// slow build (up to `build.timeout`).
pub(super) fn release_push(
    layout: &Layout,
    config: &Config,
    slot: Slot,
    repo: &mut git2::Repository,
    (update, deploying): (&RefUpdate, &mut String),
    out: &mut (dyn Write + Send),
    interrupt: &Interrupt,
) -> anyhow::Result<Option<String>> {
    let began = push_began();
    let turn = release::push_turn(layout, slot, out)?;
    let mut pushed = git::resolve(repo, &update.new)?;
    let (lock, in_use, key) = loop {
        match tip_now(layout, config, slot, repo, &pushed)? {
            Tip::Gone => {
                writeln!(
                    out,
                    "{slot}: {} was deleted since this push: not deployed ({slot} keeps its current release)",
                    update.refname
                )?;
                return Ok(None);
            }
            Tip::Current(id, tip) => {
                writeln!(
                    out,
                    "{slot}: {} is at {}, which is {slot}'s current release already ({id}): nothing new to deploy",
                    update.refname,
                    git::short(tip)
                )?;
                return Ok(Some(id));
            }
            Tip::Moved(newer) => {
                writeln!(
                    out,
                    "{slot}: {} moved on to {} since this push: deploying that instead",
                    update.refname, newer.short
                )?;
                deploying.clone_from(&newer.short);
                pushed = newer;
            }
            Tip::Same => {}
        }
        writeln!(out, "{slot}: deploying {} {}", pushed.short, pushed.summary)?;
        let key = build::key(pushed.tree, &config.build);
        // Keeps the clean-up of unused builds away from this one until it is released.
        let in_use = build::use_lock(layout, &key)?;
        let tree = pushed.tree;
        let checkout = |dir: &Path| git::checkout(repo, tree, dir);
        let outcome = build::ensure(
            layout,
            &key,
            &pushed,
            &config.build,
            checkout,
            build::Pusher {
                label: &format!("{slot}: "),
                out,
                interrupt,
                began,
            },
        )?;
        match outcome {
            Outcome::Reused => writeln!(out, "{slot}: build reused ({key})")?,
            Outcome::Built { build } => {
                writeln!(out, "{slot}: build {:.1}s ({key})", build.as_secs_f64())?
            }
        }
        let lock = release::lock_slot(layout, slot, out)?;
        // Moved again during the build (or made current by a promote): looked at anew.
        if matches!(tip_now(layout, config, slot, repo, &pushed)?, Tip::Same) {
            break (lock, in_use, key);
        }
    };

    // A linked dir replaces whatever the tree has at its path: say so, not silently. Not
    // through a symlink of the tree's (`public` -> elsewhere): the release refuses that
    // below, and the tree has nothing of its own there.
    let build = layout.build_dir(&key);
    let real_build = build.canonicalize().ok();
    for dir in &config.app.linked_dirs {
        let path = build.join(dir);
        let parent_in_tree = path.parent().and_then(|p| p.canonicalize().ok())
            == real_build
                .as_ref()
                .map(|b| b.join(Path::new(dir).parent().unwrap_or(Path::new(""))));
        if parent_in_tree && std::fs::symlink_metadata(&path).is_ok() {
            writeln!(
                out,
                "{slot}: note: the pushed tree has `{dir}`, a linked dir (app.linked_dirs): the release has {} there instead",
                layout.shared_dir(slot).join(dir).display()
            )?;
        }
    }
    let started = Instant::now();
    let id = release::new_id(layout, slot, &pushed.short)?;
    let meta = ReleaseMeta {
        id: id.clone(),
        slot,
        commit: pushed.commit.to_string(),
        refname: update.refname.clone(),
        old: update.old.clone(),
        build_key: key,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        summary: pushed.summary.clone(),
        promoted_from: None,
        marks: true,
        linked_dirs: None,
    };
    let installed = release::install(layout, &meta, &config.app.linked_dirs)?;
    drop(in_use);
    for note in &installed.notes {
        writeln!(out, "{slot}: note: {note}")?;
    }
    let tidied = release::tidy(
        layout,
        slot,
        config.keep_releases,
        installed.was_current.as_deref(),
    );
    writeln!(
        out,
        "{slot}: release {id} {:.1}s{}",
        started.elapsed().as_secs_f64(),
        if tidied.is_empty() {
            String::new()
        } else {
            format!(" ({tidied})")
        }
    )?;
    // The turn before the slot lock: a rollback that waited for the lock finds this push
    // over, not one under way that would land after it.
    drop(turn);
    drop(lock);
    Ok(Some(id))
}
