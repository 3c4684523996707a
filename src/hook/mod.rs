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
use std::time::Duration;

use anyhow::Context;

use crate::client::Client;
use crate::config::Config;
use crate::git;
use crate::interrupt::Interrupt;
use crate::layout::Layout;
use crate::slot::Slot;
use crate::verdict;

mod input;
mod release_push;

pub use input::{parse, RefUpdate};
use release_push::release_push;

/// Whether the hook's folder holds more of a root than its repo: a slot folder, or the
/// builds.
fn is_root(layout: &Layout) -> bool {
    Slot::ALL.iter().any(|&slot| layout.slot_dir(slot).is_dir()) || layout.builds_dir().is_dir()
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
            // A file that is not there has no place for `check` to point at, and this
            // is a root (its repo is); a link to one that is not says to put it back.
            let file = layout.config_file();
            let why = if file.exists() {
                anyhow::anyhow!(
                    "{e:#}; fix it (`bluegreen check` says where), then push a new commit"
                )
            } else if crate::fsops::dangling(&file).is_some() {
                anyhow::anyhow!("{e:#}, then push a new commit")
            } else if !is_root(&layout) {
                // Nothing of a root beside the repo: a root's `<slot>.git` that links
                // here (a repo kept elsewhere), where `init` would make a second root.
                anyhow::anyhow!(
                    "{} is in no bluegreen root ({} has no {} nor slot folders): the hook finds its root by the repo's real folder, so a root's {slot}.git that links here deploys nothing; a root's repos are folders of its own (remove the link, then `bluegreen init <root>`)",
                    repo_dir.display(),
                    layout.root().display(),
                    crate::layout::CONFIG
                )
            } else {
                anyhow::anyhow!(
                    "{} is missing: put it back (or `bluegreen init {}` writes the commented default), then push a new commit",
                    file.display(),
                    layout.root().display()
                )
            };
            // The daemon, which runs the config it read before, is told as of a failed
            // build, where the file still says where it listens and what deploys.
            if let Ok((config, _)) = Config::load_for_control(&file) {
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
            // A tag (`--follow-tags`, `--tags`) is no branch at all.
            let what = match update.refname.starts_with("refs/tags/") {
                true => "a tag, not the deploy branch",
                false => "not the deploy branch",
            };
            writeln!(
                out,
                "{} is {what} ({}): not deployed{hint}",
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

/// Deploys the pushed commit to `slot`: makes its release current ([`release_push()`]),
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
        Ok(Some(id)) => verdict::reload(
            config,
            layout,
            (slot, &id, verdict::Ask::Deployed(verdict::By::Push)),
            out,
        ),
        // The branch was deleted since: nothing to deploy.
        Ok(None) => Ok(true),
        Err(e) => {
            tell_daemon(layout, config, slot, &deploying, &e);
            Err(e.context(format!("{slot}: {deploying} not deployed")))
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_from_repo_folder() {
        assert_eq!(
            slot_of(Path::new("/srv/app/blue.git/")).unwrap(),
            Slot::Blue
        );
        assert!(slot_of(Path::new("/srv/app/red.git")).is_err());
    }
}
