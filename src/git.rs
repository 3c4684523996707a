//! The pushed commit: resolving it in a slot's bare repo and checking its tree out.
//!
//! Checkout writes into a fresh absolute folder and never touches the bare repo: no
//! index is written (`update_index(false)`), and the work dir is set in memory only.
//! Executable bits and symlinks are kept; libgit2 refuses tree paths that would leave
//! the target (`..`, `.git`, absolute). `.gitattributes` filters and LFS are not applied.

use std::path::{Path, PathBuf};

use anyhow::Context;
use git2::{Oid, Repository};

/// What a push points at.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub commit: Oid,
    pub tree: Oid,
    /// First 7 hex digits of the commit, as people quote it.
    pub short: String,
    /// The commit message's first line (shown to the pusher, never to a shell).
    pub summary: String,
}

/// The repo of the running hook: git sets `GIT_DIR` for it (the bare repo, where the hook
/// runs). Read with its own config only (see [`own_config_only`]): opened by its path,
/// not "from the environment", where libgit2 reads `GIT_CONFIG_GLOBAL` and
/// `GIT_CONFIG_SYSTEM` as git does.
pub fn open() -> anyhow::Result<Repository> {
    own_config_only()?;
    let dir = std::env::var_os("GIT_DIR").unwrap_or_else(|| ".".into());
    // libgit2's own message, without its class and code numbers.
    Repository::open_ext(
        &dir,
        git2::RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot open the pushed repo: {} (git runs the hook inside the bare repo)",
            e.message()
        )
    })
}

/// Makes libgit2 read no config but a repo's own: like git, it reads the system's and
/// the pushing user's too (`/etc/gitconfig`, `~/.gitconfig`, `$XDG_CONFIG_HOME/git`, and
/// the attributes files they name). `core.autocrlf = true` there wrote CRLF line ends into
/// every release, `core.symlinks = false` wrote its symlinks as plain files, and the
/// build of that tree was then reused whoever pushed it next. Without those files,
/// libgit2's check of the repo's owner (`safe.directory`, which they set) is left to git,
/// which ran the push in this repo already.
fn own_config_only() -> anyhow::Result<()> {
    static DONE: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    DONE.call_once(|| {
        // SAFETY: libgit2's options are the process's; this runs once, before the hook's
        // first use of libgit2, and no other thread uses it meanwhile.
        let set = || -> Result<(), git2::Error> {
            for level in [
                git2::ConfigLevel::ProgramData,
                git2::ConfigLevel::System,
                git2::ConfigLevel::XDG,
                git2::ConfigLevel::Global,
            ] {
                unsafe { git2::opts::set_search_path(level, "")? };
            }
            unsafe { git2::opts::set_verify_owner_validation(false) }
        };
        if let Err(e) = set() {
            result = Err(anyhow::anyhow!(
                "cannot keep the user's git config out of the checkout: {}",
                e.message()
            ));
        }
    });
    result
}

/// libgit2's error as its message alone, without the class and code its `Display`
/// appends (`; class=Os (2)`): what a one-line reason quotes.
pub fn message(e: git2::Error) -> anyhow::Error {
    anyhow::anyhow!("{}", e.message())
}

/// The repo's folder, without git2's trailing `/`, as messages show a path.
pub fn dir(repo: &Repository) -> PathBuf {
    repo.path().components().collect()
}

/// Resolves `sha` to its commit and tree.
pub fn resolve(repo: &Repository, sha: &str) -> anyhow::Result<Pushed> {
    // One line each, without libgit2's text, class and code ("class=Odb (9)").
    let oid = Oid::from_str(sha).map_err(|_| anyhow::anyhow!("`{sha}` is not a commit id"))?;
    let place = dir(repo);
    let commit = repo.find_commit(oid).map_err(|e| match e.code() {
        // Not a commit (libgit2 says so as "not found" too): a tree, a blob, a tag.
        git2::ErrorCode::NotFound => match repo.find_object(oid, None) {
            Ok(object) => anyhow::anyhow!(
                "{sha} is a {} in {}, not a commit",
                object.kind().map_or("object", |kind| kind.str()),
                place.display()
            ),
            Err(_) => anyhow::anyhow!("commit {sha} is not in {}", place.display()),
        },
        _ => anyhow::anyhow!(
            "cannot read commit {sha} in {}: {}",
            place.display(),
            e.message()
        ),
    })?;
    Ok(Pushed {
        commit: oid,
        tree: commit.tree_id(),
        short: short(oid),
        // Shown on terminals: no escape sequences from a commit message. One that is not
        // UTF-8 (git's `i18n.commitEncoding`) is shown lossily, not as nothing.
        summary: crate::logging::printable(&String::from_utf8_lossy(
            commit.summary_bytes().unwrap_or_default(),
        )),
    })
}

/// The commit `branch` is at in the bare repo `dir`, and when the branch moved there
/// (seconds since the epoch): its loose ref's modification time, which git writes at
/// each push, or, for a ref packed since (`git gc`), the commit's time. Read with the
/// repo's own config only; `None` when it cannot be read or has no such branch.
pub fn tip_in(dir: &Path, branch: &str) -> Option<(Oid, i64)> {
    own_config_only().ok()?;
    let repo = Repository::open_ext(
        dir,
        git2::RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
    .ok()?;
    let tip = branch_tip(&repo, branch)?;
    let pushed = std::fs::metadata(dir.join("refs/heads").join(branch))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|since| since.as_secs() as i64);
    let time = match pushed {
        Some(at) => at,
        None => repo.find_commit(tip).ok()?.time().seconds(),
    };
    Some((tip, time))
}

pub fn branch_tip(repo: &Repository, branch: &str) -> Option<Oid> {
    repo.find_reference(&format!("refs/heads/{branch}"))
        .ok()?
        .target()
}

/// Writes `tree` into the empty folder `target` (absolute).
pub fn checkout(repo: &mut Repository, tree: Oid, target: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        target.is_absolute(),
        "checkout target {} is not absolute",
        target.display()
    );
    // libgit2 needs a work dir to check out submodule entries; in memory only (no gitlink).
    repo.set_workdir(target, false)
        .with_context(|| format!("cannot use {} as work dir", target.display()))?;
    let tree = repo.find_tree(tree).context("the pushed tree is missing")?;
    // Each build and release has bluegreen's files there (`.bluegreen-release.json`, the
    // marks `rollback` goes by): a pushed one was written over, or (a folder) failed the
    // deploy at its end with an `Is a directory`.
    let own = tree.iter().find_map(|entry| {
        let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
        name.starts_with(".bluegreen-").then_some(name)
    });
    if let Some(name) = own {
        anyhow::bail!(
            "the pushed tree has `{}` at its top: names starting `.bluegreen-` are bluegreen's own files in each build and release; rename it, commit and push again",
            crate::logging::printable(&name)
        );
    }
    let mut options = git2::build::CheckoutBuilder::new();
    options
        .target_dir(target)
        .force()
        .update_index(false)
        .recreate_missing(true)
        // The tree as committed: no line-end conversion by `.gitattributes`.
        .disable_filters(true);
    // libgit2's message without its class and code numbers ("No space left on device"),
    // and with the pushed file's path in the tree: `target` is a temporary folder, gone
    // by the time anyone reads the message.
    repo.checkout_tree(tree.as_object(), Some(&mut options))
        .map_err(|e| {
            let within = format!("{}/", target.display());
            anyhow::anyhow!(
                "cannot check out the pushed tree {}: {}",
                short(tree.id()),
                e.message().replace(&within, "")
            )
        })
}

pub fn short(oid: Oid) -> String {
    oid.to_string()[..7].to_string()
}
