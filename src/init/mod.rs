//! `bluegreen init`: make a root, or repair one, without ever removing anything.
//!
//! Creates both bare repos with the hook linked to this binary (by the path it was run
//! by, see [`invoked_binary`]), the slot folders, and a
//! commented `bluegreen.toml`. On an existing root it adds only what is missing; an
//! existing config is validated, never rewritten. A new config gets listen ports no root
//! beside it names and nothing on the host listens on (see [`ports`]).

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::config::Config;
use crate::git;
use crate::layout::Layout;
use crate::slot::Slot;

mod ports;

pub fn run(layout: &Layout, out: &mut dyn Write) -> anyhow::Result<()> {
    refuse_nested(layout.root())?;
    let binary = invoked_binary()?;
    anyhow::ensure!(
        !layout.root().exists() || layout.root().is_dir(),
        "{} exists and is not a folder",
        layout.root().display()
    );
    let config_path = layout.config_file();
    let kept = config_path.exists();
    // A link to a config kept elsewhere (a config-management checkout) that is missing
    // for now: the example config would replace the link.
    if let (false, Some(dangling)) = (kept, crate::fsops::dangling(&config_path)) {
        anyhow::bail!(
            "{dangling}: put that file back (or remove the link for init to write the example config); nothing was changed"
        );
    }
    // A daemon runs what it read of a config since removed: the example config written
    // in its place would be what its next reload takes (other ports, `node main.js`).
    let served = layout.served_by();
    if let (false, Some(pid)) = (kept, served) {
        anyhow::bail!(
            "a daemon serves {}{}, but its bluegreen.toml is gone: put the file back (the daemon runs what it read before; `bluegreen check` validates it), rather than have init write the example config, which its next reload would take",
            layout.root().display(),
            crate::procfs::shown(pid)
        );
    }
    let config = if kept {
        Config::load(&config_path).map_err(|e| {
            anyhow::anyhow!("{e:#} (nothing was changed: fix it, then run init again)")
        })?
    } else {
        Config::default()
    };
    let branch = config.branch.clone();
    // What would stop the steps below half way is refused before the first: a failed
    // init changes nothing.
    preflight(layout, &branch)?;
    fs::create_dir_all(layout.root())
        .with_context(|| format!("cannot create {}", layout.root().display()))?;
    if kept {
        writeln!(out, "kept      {} (valid)", config_path.display())?;
    } else {
        let picked = ports::pick(layout.root());
        crate::fsops::write_atomic_private(&config_path, picked.listens.config_text().as_bytes())?;
        writeln!(out, "created   {}", config_path.display())?;
        if !picked.why.is_empty() {
            writeln!(
                out,
                "ports     {} (the default ports are taken: {})",
                picked.listens.describe(),
                picked.why
            )?;
        }
        if !picked.unread.is_empty() {
            let roots: Vec<String> = picked
                .unread
                .iter()
                .map(|root| root.display().to_string())
                .collect();
            writeln!(
                out,
                "note      this user may not read the config of {}: ports they name and their daemons do not listen on yet were not passed over; compare by hand",
                roots.join(" and ")
            )?;
        }
    }

    for slot in Slot::ALL {
        init_repo(layout, slot, &branch, &binary, out)?;
        for dir in [layout.releases_dir(slot), layout.shared_dir(slot)] {
            make_dir(&dir, out)?;
        }
    }
    for dir in shared_dirs(layout) {
        make_dir(&dir, out)?;
    }
    // A linked dir's shared folder removed by hand: the app's writes there fail.
    for slot in Slot::ALL {
        if let Some(current) = crate::release::current(layout, slot) {
            for gone in
                crate::release::missing_shared(layout, slot, &current, &config.app.linked_dirs)
            {
                make_dir(&gone, out)?;
            }
        }
    }
    // Only a command that is still the example's needs a word.
    let defaults = Config::default();
    let unset: Vec<&str> = [
        (
            "build.command",
            config.build.command == defaults.build.command,
        ),
        ("app.command", config.app.command == defaults.app.command),
    ]
    .into_iter()
    .filter_map(|(key, example)| example.then_some(key))
    .collect();
    let set = match unset.is_empty() {
        true => String::new(),
        false => format!(
            "set {} in {}; ",
            unset.join(" and "),
            crate::pasted::path(&layout.config_file())
        ),
    };
    // A daemon that serves the root already reads an edited config on SIGHUP.
    let serve = match served {
        None => format!(
            "start `{} serve --root {}` (or the systemd unit)",
            shown_binary(),
            crate::pasted::path(layout.root())
        ),
        Some(Some(pid)) => format!("a daemon serves this root already (pid {pid}): `kill -HUP {pid}` has it read the config"),
        Some(None) => "a daemon serves this root already: send it SIGHUP (`systemctl reload` its unit) to have it read the config".to_string(),
    };
    // Pasted into a shell: a root with a space in its path is one word.
    writeln!(
        out,
        "ready. Next: {set}{serve}; \
         from your app: git remote add blue {}; git remote add green {}; git push blue {}",
        crate::pasted::path(&layout.repo(Slot::Blue)),
        crate::pasted::path(&layout.repo(Slot::Green)),
        crate::pasted::refspec(&branch)
    )?;
    Ok(())
}

/// The root's folders that no slot owns.
fn shared_dirs(layout: &Layout) -> [std::path::PathBuf; 4] {
    [
        layout.builds_dir(),
        layout.build_tmp_root(),
        layout.logs_dir(),
        layout.workers_dir(),
    ]
}

/// Refuses a root where a folder init makes is something else, a slot's repo folder
/// holds a `HEAD` but is no bare repo, or a folder init would write in is not writable
/// by this user: init would stop there, after making the rest.
fn preflight(layout: &Layout, branch: &str) -> anyhow::Result<()> {
    // libgit2 reads the user's git config to make a repo: one it may not read (a HOME
    // left from another user: `setpriv`, `su` without `-`) failed init after it wrote
    // the config.
    if let Err(e) = git2::Config::open_default() {
        let home = std::env::var_os("HOME").unwrap_or_default();
        let how = match crate::fsops::user_name(nix::unistd::geteuid().as_raw()) {
            Some(user) => format!(" (`sudo -u {user} -H`, `su - {user}`)"),
            None => String::new(),
        };
        anyhow::bail!(
            "git cannot read this user's git config ({}): is HOME ({}) another user's? run init with your own{how}; nothing was changed",
            e.message(),
            std::path::Path::new(&home).display()
        );
    }
    let mut dirs = Vec::new();
    // What init would make or change, each with the folder it is written in.
    let mut writes = Vec::new();
    if !layout.root().is_dir() {
        writes.push(layout.root().to_path_buf());
    }
    if !layout.config_file().exists() {
        writes.push(layout.config_file());
    }
    for slot in Slot::ALL {
        // Its pushes would deploy elsewhere: refused before anything is made.
        if let Some(why) = crate::slot_repo::linked_elsewhere(layout, slot) {
            anyhow::bail!("{why}; nothing was changed");
        }
        let repo = layout.repo(slot);
        if repo.join("HEAD").exists() {
            let opened = open_bare(&repo)?;
            let head = opened.find_reference("HEAD").ok();
            let target = head.as_ref().and_then(|h| h.symbolic_target());
            if target != Some(format!("refs/heads/{branch}").as_str()) {
                writes.push(repo.join("HEAD"));
            }
        } else {
            writes.push(repo.join("HEAD"));
        }
        let hook = layout.hook(slot);
        if fs::symlink_metadata(&hook).is_err() || !hook.exists() {
            writes.push(hook);
        }
        dirs.extend([
            repo.clone(),
            layout.hooks_dir(slot),
            layout.slot_dir(slot),
            layout.releases_dir(slot),
            layout.shared_dir(slot),
        ]);
    }
    dirs.extend(shared_dirs(layout));
    // With the folders between them and the root (`run` of `run/workers`).
    for dir in dirs.iter().flat_map(|dir| dir.ancestors()) {
        if !dir.starts_with(layout.root()) || dir == layout.root() {
            continue;
        }
        anyhow::ensure!(
            fs::symlink_metadata(dir).is_err() || dir.is_dir(),
            "{} exists and is not a folder",
            dir.display()
        );
    }
    // The folders already there that pushes, rollbacks and the daemon write in (after
    // the ones init writes in, which say what it would have made).
    let mut there: Vec<std::path::PathBuf> =
        dirs.iter().filter(|dir| dir.is_dir()).cloned().collect();
    if layout.root().is_dir() {
        there.push(layout.root().to_path_buf());
    }
    writes.extend(dirs.into_iter().filter(|dir| !dir.is_dir()));
    for path in writes {
        let Some(parent) = path.parent() else {
            continue;
        };
        // The folder it goes in, or the nearest one that is there to make that in.
        let Some(dir) = parent.ancestors().find(|dir| dir.is_dir()) else {
            continue;
        };
        use nix::unistd::{access, AccessFlags};
        if let Err(e) = access(dir, AccessFlags::W_OK | AccessFlags::X_OK) {
            anyhow::bail!(
                "cannot create {}: {} is not writable by this user ({}): nothing was changed; give the root to the user that runs init and the daemon",
                path.display(),
                dir.display(),
                e.desc()
            );
        }
    }
    // A root init would call ready, whose pushes then failed on `Permission denied`.
    for dir in &there {
        use nix::unistd::{access, AccessFlags};
        if let Err(e) = access(dir.as_path(), AccessFlags::W_OK | AccessFlags::X_OK) {
            anyhow::bail!(
                "{} is not writable by this user ({}{}): pushes, rollbacks and the daemon write there; nothing was changed: give the root to the user that runs init and the daemon",
                dir.display(),
                e.desc(),
                crate::fsops::mode_of(dir)
            );
        }
    }
    Ok(())
}

/// A new root inside a git checkout (the app's, most likely by mistake), a bare repo or
/// another root would mix its files into theirs: refused. An existing root is repaired.
fn refuse_nested(root: &Path) -> anyhow::Result<()> {
    if root.join("bluegreen.toml").exists() {
        return Ok(());
    }
    match nesting(root) {
        Some((folder, what)) => anyhow::bail!(
            "{} is {}{what}: give the root a folder of its own (`bluegreen init /srv/app`)",
            root.display(),
            if folder == root {
                String::new()
            } else {
                format!("inside {}, ", folder.display())
            }
        ),
        None => Ok(()),
    }
}

/// The git checkout, git repository or bluegreen root that `folder` (an absolute path,
/// which may not exist yet) is or lies in, as `a git checkout, /src/app`: a root made
/// there would be refused.
pub fn nested_in(folder: &Path) -> Option<String> {
    nesting(folder).map(|(holder, what)| format!("{what}, {}", holder.display()))
}

fn nesting(root: &Path) -> Option<(&Path, &'static str)> {
    root.ancestors().find_map(|folder| {
        let what = if folder.join(".git").exists() {
            "a git checkout"
        } else if folder.join("HEAD").is_file() && folder.join("objects").is_dir() {
            "a git repository"
        } else if folder != root && folder.join("bluegreen.toml").is_file() {
            "a bluegreen root"
        } else {
            return None;
        };
        Some((folder, what))
    })
}

fn init_repo(
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
        let repo = git2::Repository::init_bare(&path)
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
    let repo = open_bare(repo_dir)?;
    let mut config = repo
        .config()
        .and_then(|c| c.open_level(git2::ConfigLevel::Local))
        .map_err(git::message)
        .with_context(|| format!("cannot read {}'s config", repo_dir.display()))?;
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

/// Sets the repo's `receive.shallowUpdate`, so that a push from a shallow clone (CI's
/// `git clone --depth 1`) is taken: git refuses one by default (`shallow update not
/// allowed`) whenever the repo lacks the clone's oldest commit, the first push to a new
/// root too. A deploy needs the pushed commit's tree only. One the repo sets already is
/// the operator's choice: kept.
fn allow_shallow(repo_dir: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let repo = open_bare(repo_dir)?;
    let mut config = repo
        .config()
        .and_then(|c| c.open_level(git2::ConfigLevel::Local))
        .map_err(git::message)
        .with_context(|| format!("cannot read {}'s config", repo_dir.display()))?;
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
fn invoked_binary() -> anyhow::Result<std::path::PathBuf> {
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
fn shown_binary() -> String {
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

fn make_dir(dir: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    anyhow::ensure!(
        !dir.exists() || dir.is_dir(),
        "{} exists and is not a folder",
        dir.display()
    );
    if !dir.is_dir() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        writeln!(out, "created   {}", dir.display())?;
    }
    Ok(())
}

/// Opens a slot's bare repo that init found (it has a `HEAD`). libgit2's words name the
/// path again (`... is not a bare repo: path is not a repository: <the same path>`), and
/// an error reading the user's git config (`failed to stat '/root/.gitconfig'`, a HOME
/// left from another user) is no fault of the repo.
fn open_bare(path: &Path) -> anyhow::Result<git2::Repository> {
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
