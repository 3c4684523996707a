//! `bluegreen init`: make a root, or repair one, without ever removing anything.
//!
//! Creates both bare repos with the hook linked to this binary (by the path it was run
//! by, see [`repo`]), the slot folders, and a
//! commented `bluegreen.toml`. On an existing root it adds only what is missing; an
//! existing config is validated, never rewritten. A new config gets listen ports no root
//! beside it names and nothing on the host listens on (see [`ports`]).

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use nix::fcntl::Flock;

use crate::config::Config;
use crate::layout::Layout;
use crate::slot::Slot;

mod ports;
mod repo;

use repo::{init_repo, invoked_binary, open_bare, shown_binary};

pub fn run(layout: &Layout, out: &mut dyn Write) -> anyhow::Result<()> {
    refuse_nested(layout.root())?;
    let binary = invoked_binary()?;
    // A link to a folder not made yet: no folder can be made where the link is.
    if let Some(dangling) = crate::fsops::dangling(layout.root()) {
        anyhow::bail!(
            "{dangling}: make the folder it links to first, or remove the link; nothing was changed"
        );
    }
    anyhow::ensure!(
        !layout.root().exists() || layout.root().is_dir(),
        "{} exists and is not a folder",
        layout.root().display()
    );
    // One init at a time per root: a second one run meanwhile (a provisioning tool run
    // twice) failed on a lock file of git's, half way. It waits, then finds what the
    // first made, as it would have after it.
    let made = !layout.root().exists();
    if made {
        may_create(layout.root())?;
    }
    fs::create_dir_all(layout.root())
        .with_context(|| format!("cannot create {}", layout.root().display()))?;
    let _turn = init_turn(layout.root(), out)?;
    let done = make(layout, &binary, out);
    // The root it made is empty after a refusal: gone again, nothing was changed.
    if done.is_err() && made {
        let _ = fs::remove_dir(layout.root());
    }
    done
}

/// Refuses `path` when the folder it goes in (or the nearest one there to make that in)
/// is not writable by this user.
fn may_create(path: &Path) -> anyhow::Result<()> {
    use nix::unistd::{access, AccessFlags};
    let Some(dir) = path
        .parent()
        .and_then(|parent| parent.ancestors().find(|dir| dir.is_dir()))
    else {
        return Ok(());
    };
    access(dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| {
        anyhow::anyhow!(
            "cannot create {}: {} is not writable by this user ({}): nothing was changed; give the root to the user that runs init and the daemon",
            path.display(),
            dir.display(),
            e.desc()
        )
    })
}

/// Holds the lock on the root's folder that `init` runs under, waiting (and saying so)
/// while another init holds it.
fn init_turn(root: &Path, out: &mut dyn Write) -> anyhow::Result<Flock<fs::File>> {
    use nix::fcntl::FlockArg;
    let folder = fs::File::open(root).with_context(|| format!("cannot open {}", root.display()))?;
    let locked = match Flock::lock(folder, FlockArg::LockExclusiveNonblock) {
        Err((folder, nix::errno::Errno::EWOULDBLOCK)) => {
            writeln!(
                out,
                "waiting   for another bluegreen init of {}",
                root.display()
            )?;
            Flock::lock(folder, FlockArg::LockExclusive)
        }
        other => other,
    };
    locked
        .map_err(|(_, e)| e)
        .with_context(|| format!("cannot lock {}", root.display()))
}

/// Makes what is missing of the root, under its init turn.
fn make(layout: &Layout, binary: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
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
        init_repo(layout, slot, &branch, binary, out)?;
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
    // The root itself is there: `run` made it, to take its turn on it.
    there.push(layout.root().to_path_buf());
    writes.extend(dirs.into_iter().filter(|dir| !dir.is_dir()));
    for path in writes {
        may_create(&path)?;
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
