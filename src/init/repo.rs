//! A slot's bare repo as `init` makes or repairs it: its `HEAD` on the deploy branch,
//! the settings pushes depend on (`core.hooksPath`, `receive.shallowUpdate`), and its
//! hook linked to this binary by the name it was run by ([`invoked_binary`]), so that an
//! upgrade that moves the name reaches every push.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::git;
use crate::layout::Layout;
use crate::slot::Slot;

pub(super) fn init_repo(
    layout: &Layout,
    slot: Slot,
    branch: &str,
    binary: &Path,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let path = layout.repo(slot);
    let head = format!("refs/heads/{branch}");
    if path.join("HEAD").exists() {
        let repo = open_bare(&path)?;
        // HEAD names the deploy branch, so git refuses to delete it
        // (`receive.denyDeleteCurrent`), also after `branch` changed.
        let now = repo
            .find_reference("HEAD")
            .map_err(git::message)
            .with_context(|| format!("cannot read {}'s HEAD", path.display()))?;
        if now.symbolic_target() != Some(head.as_str()) {
            repo.set_head(&head)
                .map_err(git::message)
                .with_context(|| format!("cannot point {}'s HEAD at {head}", path.display()))?;
            writeln!(out, "pointed   {} HEAD at {head}", path.display())?;
        }
    } else {
        // Without the user's git templates (`init.templateDir`): a `post-receive` one
        // brought was kept as if it were ours, and pushes ran it, deploying nothing.
        let mut options = git2::RepositoryInitOptions::new();
        options.bare(true).external_template(false);
        let repo = git2::Repository::init_opts(&path, &options)
            .map_err(git::message)
            .with_context(|| format!("cannot create the bare repo {}", path.display()))?;
        repo.set_head(&head)
            .map_err(git::message)
            .with_context(|| format!("cannot point {}'s HEAD at {head}", path.display()))?;
        writeln!(out, "created   {}", path.display())?;
    }
    pin_hooks(&path, out)?;
    allow_shallow(&path, out)?;
    let hook = layout.hook(slot);
    let hooks = layout.hooks_dir(slot);
    fs::create_dir_all(&hooks).with_context(|| format!("cannot create {}", hooks.display()))?;
    let dangling = fs::symlink_metadata(&hook).is_ok() && !hook.exists();
    if dangling || fs::symlink_metadata(&hook).is_err() {
        crate::fsops::remove_any(&hook)
            .with_context(|| format!("cannot remove {}", hook.display()))?;
        std::os::unix::fs::symlink(binary, &hook)
            .with_context(|| format!("cannot link {} to {}", hook.display(), binary.display()))?;
        writeln!(out, "linked    {} -> {}", hook.display(), binary.display())?;
    } else {
        writeln!(
            out,
            "kept      {}{}",
            hook.display(),
            other_binary(&hook, binary)
        )?;
    }
    Ok(())
}

/// Sets the repo's own `core.hooksPath` to its `hooks` folder (relative: the repo's
/// folder, where git runs hooks of a bare repo, so a moved root keeps it): a
/// `core.hooksPath` in the pusher's or the system's git config (a team's shared hooks)
/// would otherwise send every push to a folder without our hook, and the push would
/// deploy nothing, silently. One the repo already sets is the operator's choice: kept.
fn pin_hooks(repo_dir: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut config = local_config(repo_dir)?;
    if let Ok(set) = config.get_string(HOOKS_PATH) {
        if set != "hooks" {
            writeln!(
                out,
                "kept      {HOOKS_PATH} = {set} in {}: pushes run the hooks there, not {}/hooks/post-receive (`git -C {} config core.hooksPath hooks` if that is not meant)",
                repo_dir.display(),
                repo_dir.display(),
                crate::pasted::path(repo_dir)
            )?;
        }
        return Ok(());
    }
    config
        .set_str(HOOKS_PATH, "hooks")
        .map_err(git::message)
        .with_context(|| format!("cannot set {HOOKS_PATH} in {}", repo_dir.display()))?;
    writeln!(
        out,
        "set       {HOOKS_PATH} = hooks in {}",
        repo_dir.display()
    )?;
    Ok(())
}

const HOOKS_PATH: &str = "core.hooksPath";

/// The repo's own config file (`<repo>/config`), not the user's or the system's.
fn local_config(repo_dir: &Path) -> anyhow::Result<git2::Config> {
    open_bare(repo_dir)?
        .config()
        .and_then(|c| c.open_level(git2::ConfigLevel::Local))
        .map_err(git::message)
        .with_context(|| format!("cannot read {}'s config", repo_dir.display()))
}

/// Sets the repo's `receive.shallowUpdate`, so that a push from a shallow clone (CI's
/// `git clone --depth 1`) is taken: git refuses one by default (`shallow update not
/// allowed`) whenever the repo lacks the clone's oldest commit, the first push to a new
/// root too. A deploy needs the pushed commit's tree only. One the repo sets already is
/// the operator's choice: kept.
fn allow_shallow(repo_dir: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut config = local_config(repo_dir)?;
    if config.get_bool(SHALLOW_UPDATE).is_ok() {
        return Ok(());
    }
    config
        .set_bool(SHALLOW_UPDATE, true)
        .map_err(git::message)
        .with_context(|| format!("cannot set {SHALLOW_UPDATE} in {}", repo_dir.display()))?;
    writeln!(
        out,
        "set       {SHALLOW_UPDATE} = true in {}: pushes from shallow clones (CI's --depth 1) are taken",
        repo_dir.display()
    )?;
    Ok(())
}

const SHALLOW_UPDATE: &str = "receive.shallowUpdate";

/// The path this binary was run by, for the hooks to link to: the name on the PATH
/// (`/usr/local/bin/bluegreen`) or the path typed, not what it resolves to. An upgrade
/// that moves that name to a new version (`ln -sfn /opt/bluegreen-2/bluegreen
/// /usr/local/bin/bluegreen`, stow, alternatives) then reaches every push; a hook linked
/// to the resolved `/opt/bluegreen-1/bluegreen` would dangle once it is removed, and git
/// runs no hook it cannot find, saying nothing: the push deploys nothing. The resolved
/// path when the name leads elsewhere (a shell's `exec -a`).
pub(super) fn invoked_binary() -> anyhow::Result<std::path::PathBuf> {
    let running = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("cannot find this binary's path for the hooks")?;
    let Some(name) = std::env::args_os().next().map(std::path::PathBuf::from) else {
        return Ok(running);
    };
    // A relative path (`../../target/release/bluegreen`, `./bluegreen`) says where the
    // binary was from one folder only: the resolved path is linked instead.
    let invoked = if name.is_absolute() {
        Some(name)
    } else if name.components().count() > 1 {
        None
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .filter(|dir| dir.is_absolute())
                .map(|dir| dir.join(&name))
                .find(|candidate| candidate.is_file())
        })
    };
    Ok(invoked
        .filter(|path| path.canonicalize().is_ok_and(|p| p == running))
        .unwrap_or(running))
}

/// How the next steps name this binary: as it was run, by its name on the PATH
/// (`bluegreen`, or `bluegreen-2` for one installed so), else by its path
/// (`./target/release/bluegreen init /tmp/try`, a binary not on the PATH, where
/// `bluegreen serve` is not found).
pub(super) fn shown_binary() -> String {
    let name = std::env::args_os().next().unwrap_or_default();
    match std::path::Path::new(&name).components().count() == 1 {
        true => crate::pasted::quoted(&name.to_string_lossy()),
        false => invoked_binary().map_or_else(|_| "bluegreen".into(), |p| crate::pasted::path(&p)),
    }
}

/// `, which runs <other>, not this binary ...` when `hook` is a symlink to a binary other
/// than `binary` (an upgrade installed at another path than the one `init` linked): pushes
/// keep running that one, and `init` never rewrites a hook, so it says how to. Empty
/// for a link to `binary` and for a shim (a file of its own).
fn other_binary(hook: &Path, binary: &Path) -> String {
    let linked = fs::symlink_metadata(hook).is_ok_and(|m| m.file_type().is_symlink());
    let running = fs::canonicalize(binary);
    match fs::canonicalize(hook) {
        // The same binary, linked by the path it resolves to where this run has a name
        // for it (a root made before hooks were linked by name): an upgrade that removes
        // that version would leave the hook dangling.
        Ok(target)
            if linked
                && running.as_ref().is_ok_and(|r| *r == target)
                && fs::read_link(hook).is_ok_and(|to| to != binary && target != binary) =>
        {
            format!(
                ", which links to {} by the path it resolves to: an upgrade that removes it leaves pushes deploying nothing (`ln -sfn {} {}` links it by the name {} instead)",
                target.display(),
                binary.display(),
                hook.display(),
                binary.display()
            )
        }
        Ok(target) if linked && running.as_ref().is_ok_and(|r| *r != target) => format!(
            ", which runs {}, not this binary {}: pushes run that one (`ln -sfn {} {}` makes them run this one)",
            target.display(),
            binary.display(),
            binary.display(),
            hook.display()
        ),
        _ => String::new(),
    }
}

/// Opens a slot's bare repo that init found (it has a `HEAD`). libgit2's words name the
/// path again (`... is not a bare repo: path is not a repository: <the same path>`), and
/// an error reading the user's git config (`failed to stat '/root/.gitconfig'`, a HOME
/// left from another user) is no fault of the repo.
pub(super) fn open_bare(path: &Path) -> anyhow::Result<git2::Repository> {
    git2::Repository::open_bare(path).map_err(|e| match e.code() {
        git2::ErrorCode::NotFound => anyhow::anyhow!(
            "{} is not a git repository: it has a HEAD, but no objects or refs",
            path.display()
        ),
        _ => anyhow::anyhow!(
            "cannot open the bare repo {}: {}",
            path.display(),
            e.message()
        ),
    })
}
