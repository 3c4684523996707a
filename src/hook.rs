//! The post-receive hook: a push to a slot's bare repo becomes its current release.
//!
//! Steps, each reported to the pusher as one `<slot>: <step> <time>` line: check the
//! commit out, build it once per key (or reuse), materialise a release, flip `current`,
//! prune, then ask the daemon to run it and print its verdict last. Pushes to one slot
//! take turns (`release::push_turn`), and the one whose turn it is deploys what the
//! branch points at then (a newer push may have moved it), unless the slot runs that
//! already. Only the release step holds the slot lock: a rollback need not wait for a
//! build.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::build::{self, Outcome};
use crate::client::Client;
use crate::config::Config;
use crate::git;
use crate::interrupt::Interrupt;
use crate::layout::Layout;
use crate::release::{self, ReleaseMeta};
use crate::slot::Slot;
use crate::verdict;

/// One line of post-receive input.
#[derive(Debug, PartialEq)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub refname: String,
}

impl RefUpdate {
    /// Whether the push deleted the ref (git's new id is all zeros).
    fn deleted(&self) -> bool {
        self.new.bytes().all(|b| b == b'0')
    }

    /// The pushed commit's id in 7 characters, as a push names it.
    fn short(&self) -> &str {
        self.new.get(..7).unwrap_or(&self.new)
    }
}

/// Runs the hook for the repo git points at (`GIT_DIR`), reading `<old> <new> <ref>` lines
/// from `input` and reporting to `out` (stderr: git shows it as `remote:`). A stopping
/// signal (`interrupt`) during a build stops the build and fails that deploy.
/// Returns false when something was pushed to the branch but did not go live.
pub fn run(
    root: Option<PathBuf>,
    input: impl BufRead,
    out: &mut (dyn Write + Send),
    interrupt: &Interrupt,
) -> anyhow::Result<bool> {
    let mut updates = parse(input)?;
    let mut repo = git::open()?;
    let repo_dir = git::dir(&repo);
    let slot = slot_of(&repo_dir)?;
    let home = repo_dir
        .parent()
        .context("the bare repo has no parent folder")?
        .to_path_buf();
    let layout = Layout::new(root.as_ref().unwrap_or(&home))?;
    // `root` is a `--root` given on the hook's command line (`BLUEGREEN_ROOT`, the CLI's,
    // is not passed here): one that does not hold this repo must not get its push.
    if !crate::fsops::same_file(&layout.repo(slot), &repo_dir) {
        anyhow::bail!(
            "this push came into {}, but the root is {} (--root): not deployed; drop --root or point it at {}",
            repo_dir.display(),
            layout.root().display(),
            home.display()
        );
    }
    // A push as root into another user's root (root's own git, or an ssh key in root's
    // account): the locks, build and release it made would be root's, and every later
    // push by the root's user failed on them until someone ran chown.
    // The same for a push by a member of the root's group (a shared repo): its files
    // were its own, mode 0644, and the root's user could not push to that slot after it.
    if let Some(owner) = crate::owner::other(&layout) {
        let user = owner.user();
        let (me, mine) = crate::owner::me();
        anyhow::bail!(
            "{slot}: not deployed: {} is {}, and this push runs as {me}: what it made there would be {mine}, and {user}'s pushes could not deploy after it; push as {user} (`git remote set-url {slot} {user}@<host>:{}`)",
            layout.root().display(),
            owner.shown(),
            layout.repo(slot).display()
        );
    }
    // Said as a deploy's failure: a bare config error reads as if the push went through,
    // and git sends nothing for the same commit again.
    let config = match Config::load(&layout.config_file()) {
        Ok(config) => config,
        Err(e) => {
            let why = anyhow::anyhow!(
                "{e:#}; fix it (`bluegreen check` says where), then push a new commit"
            );
            // The daemon, which runs the config it read before, is told as of a failed
            // build, where the file still says where it listens and what deploys.
            if let Ok((config, _)) = Config::load_for_control(&layout.config_file()) {
                let deploy_ref = format!("refs/heads/{}", config.branch);
                let pushed = updates
                    .iter()
                    .find(|update| update.refname == deploy_ref && !update.deleted());
                if let Some(update) = pushed {
                    tell_daemon(&layout, &config, slot, update.short(), &why);
                }
            }
            return Err(why.context(format!("{slot}: not deployed")));
        }
    };
    let deploy_ref = format!("refs/heads/{}", config.branch);

    // A ref that deploys nothing is bad input (DESIGN: a one-line reason and a non-zero
    // exit). git ignores a post-receive hook's exit status, so the push itself stands.
    let mut all_live = true;
    let mut failed = None;
    // The deploy branch last: its verdict is the push's last line, which a script (CI)
    // reads, with the notes of other refs pushed with it (`--follow-tags`) before it.
    updates.sort_by_key(|update| update.refname == deploy_ref);
    for update in updates {
        let deleted = update.deleted();
        if update.refname != deploy_ref {
            // Most often git's default branch (`master`) pushed to a root that deploys
            // `main`, or the reverse: say how to deploy it.
            let hint = match update.refname.strip_prefix("refs/heads/") {
                // Not for a name that was not UTF-8: the hint could not be typed. Nor for
                // one git would read as an option (`--receive-pack=<command>`).
                Some(branch)
                    if !deleted
                        && !branch.contains('\u{FFFD}')
                        && !branch.starts_with('-')
                        && !branch.chars().any(crate::logging::is_control) =>
                {
                    let refspec = crate::pasted::quoted(&format!("{branch}:{}", config.branch));
                    format!(" (`git push {slot} {refspec}` deploys it)")
                }
                _ => String::new(),
            };
            writeln!(
                out,
                "{} is not the deploy branch ({}): not deployed{hint}",
                // Whatever the pusher named it: an escape sequence or a right-to-left
                // mark in it would act on the terminal that shows this line.
                crate::logging::printable(&update.refname),
                config.branch
            )?;
            all_live = false;
        } else if deleted {
            writeln!(
                out,
                "{} was deleted: not deployed ({slot} keeps its current release)",
                update.refname
            )?;
            all_live = false;
        } else {
            match deploy(&layout, &config, slot, &mut repo, &update, out, interrupt) {
                Ok(live) => all_live &= live,
                // The push's other refs are still noted; the error is the hook's last line.
                Err(e) => failed = Some(e),
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(all_live),
    }
}

/// Tells the daemon, if one answers within 2 s, of a push that failed (`why`) before
/// its release was current, for its log, `/events` and `/metrics`
/// (`POST /slots/<slot>/not-deployed`). The pusher reads the error as the hook's last
/// line, after this: a daemon that does not answer delays that line by 2 s at most, and
/// an error here is not the pusher's.
fn tell_daemon(layout: &Layout, config: &Config, slot: Slot, short: &str, why: &anyhow::Error) {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("commit", short)
        .append_pair(
            "reason",
            &crate::logging::quoted(&format!("{why:#}"), 1_000),
        )
        .finish();
    let _ = Client::new(config, layout).post(
        &format!("/slots/{slot}/not-deployed?{query}"),
        Duration::from_secs(2),
    );
}

/// Deploys the pushed commit to `slot`: makes its release current ([`release_push`]),
/// then asks the daemon to run it. `Ok(false)` when it did not go live; `Err` when it
/// failed before its release was current, which the daemon is told too.
fn deploy(
    layout: &Layout,
    config: &Config,
    slot: Slot,
    repo: &mut git2::Repository,
    update: &RefUpdate,
    out: &mut (dyn Write + Send),
    interrupt: &Interrupt,
) -> anyhow::Result<bool> {
    // The commit being deployed: the pushed one, or the one the branch moved on to.
    let mut deploying = update.short().to_string();
    match release_push(
        layout,
        config,
        slot,
        repo,
        (update, &mut deploying),
        out,
        interrupt,
    ) {
        Ok(Some(id)) => verdict::reload(config, layout, (slot, &id, verdict::Ask::Deployed), out),
        // The branch was deleted since: nothing to deploy.
        Ok(None) => Ok(true),
        Err(e) => {
            tell_daemon(layout, config, slot, &deploying, &e);
            Err(e.context(format!("{slot}: {deploying} not deployed")))
        }
    }
}

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

/// Checks the branch's commit out, builds it (or reuses its build), then, under the
/// slot's lock, installs it as a release and makes that `current`. The new release's id
/// (or the current one's, when the branch is at what it runs already), or none when the
/// branch is gone. Pushes to a slot take turns, and the one whose turn it is deploys
/// what the branch points at then: a newer push that moved it may have been stopped
/// while it waited, or its build failed, and the branch's commit must not be left
/// undeployed because of it; the newer push, when its turn comes, finds it current.
/// The build is not under the slot lock: a rollback in an incident does not wait for a
/// slow build (up to `build.timeout`).
fn release_push(
    layout: &Layout,
    config: &Config,
    slot: Slot,
    repo: &mut git2::Repository,
    (update, deploying): (&RefUpdate, &mut String),
    out: &mut (dyn Write + Send),
    interrupt: &Interrupt,
) -> anyhow::Result<Option<String>> {
    let began = std::time::SystemTime::now();
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

/// The slot a bare repo serves: its folder name without `.git`.
fn slot_of(repo_dir: &Path) -> anyhow::Result<Slot> {
    let name = repo_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.strip_suffix(".git").unwrap_or(&name);
    name.parse()
        .with_context(|| format!("{} is not a slot's repo", repo_dir.display()))
}

/// Parses post-receive input: one `<old> <new> <ref>` per line.
pub fn parse(input: impl BufRead) -> anyhow::Result<Vec<RefUpdate>> {
    let mut updates = Vec::new();
    // A ref name is bytes (git takes a Latin-1 `café`): read as such, shown lossily, so
    // one odd name in a push does not stop the deploy branch pushed with it.
    for (n, line) in input.split(b'\n').enumerate() {
        let line = line.context("cannot read the hook's input")?;
        let line = String::from_utf8_lossy(&line);
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_sha =
            |s: &str| (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
        match fields[..] {
            [old, new, refname] if is_sha(old) && is_sha(new) && refname.starts_with("refs/") => {
                updates.push(RefUpdate {
                    old: old.into(),
                    new: new.into(),
                    refname: refname.into(),
                })
            }
            _ => anyhow::bail!(
                "malformed post-receive input on line {}: expected `<old-sha> <new-sha> <ref>`",
                n + 1
            ),
        }
    }
    Ok(updates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_refuses_garbage() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let input = format!("{a} {b} refs/heads/main\n\n{b} {a} refs/heads/x\n");
        let updates = parse(input.as_bytes()).unwrap();
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[1].refname, "refs/heads/x");
        let err = parse("hello world\n".as_bytes()).unwrap_err().to_string();
        assert_eq!(
            err,
            "malformed post-receive input on line 1: expected `<old-sha> <new-sha> <ref>`"
        );
    }

    #[test]
    fn slot_from_repo_folder() {
        assert_eq!(
            slot_of(Path::new("/srv/app/blue.git/")).unwrap(),
            Slot::Blue
        );
        assert!(slot_of(Path::new("/srv/app/red.git")).is_err());
    }
}
