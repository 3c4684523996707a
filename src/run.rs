//! Dispatch: each subcommand's arm finds the root and config it needs and calls its role.
//!
//! Returns `Ok(false)` for "ran, but the outcome is a failure the output already
//! explained" (a release that did not go live, a refused switch): exit code 1, no
//! second message. Output its reader no longer wants (`bluegreen status | head -1`) is
//! dropped quietly: see `Stdout`.

use std::io::Write;

use anyhow::Context;

use crate::cli::{Args, Command};
use crate::config::Config;
use crate::layout::Layout;
use crate::slot::Slot;

pub fn run(args: Args) -> anyhow::Result<bool> {
    let root = args.root.clone();
    let named_by = match (&root, args.root_from_env) {
        (None, _) => Named::CurrentFolder,
        (Some(_), false) => Named::Flag,
        (Some(_), true) => Named::Env,
    };
    // Every command that asks for it works on a root that exists. A command run outside
    // the root is a newcomer's usual slip: say where the folder came from and how to name
    // the root. Only a definite no: a root the user may not read says so when it is read.
    let layout = || -> anyhow::Result<Layout> {
        let layout = Layout::new(&root.clone().unwrap_or(std::env::current_dir()?))?;
        if layout.root().is_file() || matches!(layout.config_file().try_exists(), Ok(false)) {
            // The file removed under a running daemon, which is no sign of a wrong root.
            if let Some(pid) = layout.served_by() {
                anyhow::bail!(
                    "{} is gone, yet a daemon serves {}{}: put the file back (the daemon runs what it read before)",
                    layout.config_file().display(),
                    layout.root().display(),
                    crate::procfs::shown(pid)
                );
            }
            anyhow::bail!("{}", not_a_root(layout.root(), named_by));
        }
        // `BLUEGREEN_ROOT` left set from another root, in this one's folder: the command
        // acts on the variable's, as documented, and says so, since the folder says
        // otherwise.
        if matches!(named_by, Named::Env) {
            let here = std::env::current_dir().ok().and_then(|dir| {
                dir.ancestors()
                    .find(|above| above.join(crate::layout::CONFIG).is_file())
                    .map(std::path::Path::to_path_buf)
            });
            if let Some(here) = here.filter(|here| !crate::fsops::same_file(here, layout.root())) {
                crate::stderr::line(&format!(
                    "note: acting on {} ({}), not on {}, the root this folder is in (`--root` names the one meant)",
                    layout.root().display(),
                    crate::cli::ROOT_ENV,
                    here.display()
                ));
            }
        }
        Ok(layout)
    };
    let config = |layout: &Layout| {
        Config::load(&layout.config_file()).map_err(|e| unreadable(e, layout, named_by))
    };
    // What `status`, `switch` and `mirroring` need of a file being edited: the daemon
    // runs what it read before, and is reached all the same.
    let control_config = |layout: &Layout| {
        let (config, broken) = Config::load_for_control(&layout.config_file())
            .map_err(|e| unreadable(e, layout, named_by))?;
        if let Some(why) = broken {
            crate::stderr::line(&format!(
                "note: {why} (the daemon runs the config it read before; its next reload or restart refuses this file: fix it)"
            ));
        }
        anyhow::Ok(config)
    };
    let stdout = &mut Stdout {
        out: std::io::stdout(),
        closed: false,
    };
    match args.command {
        Command::Init { dir } => {
            // Both on the command line and not the same: one was a slip, and which one
            // is not for init to guess (`BLUEGREEN_ROOT` gives way to the folder named).
            if let (Some(dir), Some(root)) = (&dir, &args.root) {
                let same = std::path::absolute(dir).ok() == std::path::absolute(root).ok();
                anyhow::ensure!(
                    args.root_from_env || same,
                    "`bluegreen init {}` and `--root {}` name two roots: give one",
                    dir.display(),
                    root.display()
                );
            }
            let from_env = dir.is_none() && args.root.is_some() && args.root_from_env;
            let named = dir.or(args.root);
            let layout = Layout::new(&named.clone().unwrap_or(std::env::current_dir()?))?;
            if named.is_none() {
                refuse_busy(&layout)?;
            }
            let named_by = match named {
                None => Named::CurrentFolder,
                Some(_) if from_env => Named::Env,
                Some(_) => Named::Flag,
            };
            refuse_other_user(&layout, named_by)?;
            crate::init::run(&layout, stdout)?;
            Ok(true)
        }
        Command::Check => {
            let layout = layout()?;
            let config = config(&layout)?;
            let token = config.router.token()?;
            // What `serve` would warn about, on stderr: stdout is the config, for scripts.
            for warning in config.router.token_warnings(token.as_deref()) {
                eprintln!("warning: {warning}");
            }
            writeln!(
                stdout,
                "# {}: valid\n{}",
                layout.config_file().display(),
                config.to_toml()
            )?;
            Ok(true)
        }
        Command::Hook { .. } => {
            let stdin = std::io::stdin().lock();
            // The pusher's end (`remote:`), which a pusher gone must not block.
            crate::stderr::nonblocking();
            // A line at a time: a pipe that takes part of a write keeps whole lines.
            let mut out = std::io::LineWriter::new(crate::stderr::Lossy);
            let interrupt = crate::interrupt::Interrupt::install()?;
            // The repo the push came into names its root; `BLUEGREEN_ROOT` is the CLI's.
            let root = args.root.filter(|_| !args.root_from_env);
            crate::hook::run(root, stdin, &mut out, &interrupt)
        }
        Command::Releases { slot } => {
            let slots = slot.map_or(Slot::ALL.to_vec(), |s| vec![s]);
            // No config needed (it may be broken), but it must be a root.
            let layout = layout()?;
            crate::rollout::list(&layout, &slots, stdout)?;
            Ok(true)
        }
        Command::Rollback { slot, to } => {
            let layout = layout()?;
            refuse_other_user(&layout, named_by)?;
            crate::rollout::rollback(&layout, &config(&layout)?, slot, to.as_deref(), stdout)
        }
        Command::Restart { slot } => {
            let layout = layout()?;
            refuse_other_user(&layout, named_by)?;
            crate::rollout::restart(&layout, &config(&layout)?, slot, stdout)
        }
        Command::Promote { from, to } => {
            let layout = layout()?;
            refuse_other_user(&layout, named_by)?;
            let to = to.unwrap_or(from.other());
            crate::rollout::promote(&layout, &config(&layout)?, from, to, stdout)
        }
        Command::Status { json } => {
            let layout = layout()?;
            crate::ctl::status(&control_config(&layout)?, &layout, json, stdout)
        }
        Command::Switch { slot, force } => {
            let layout = layout()?;
            crate::ctl::switch(&control_config(&layout)?, &layout, slot, force, stdout)
        }
        Command::Mirroring { state } => {
            let layout = layout()?;
            crate::ctl::mirroring(&control_config(&layout)?, &layout, state.as_deref(), stdout)
        }
        Command::Serve => {
            let layout = layout()?;
            refuse_other_user(&layout, named_by)?;
            crate::daemon::serve(layout)
        }
        Command::Demo(demo) => crate::demo::run(demo),
        Command::SampleApp => crate::sample_app::run(),
    }
}

/// The commands' standard output. Once its reader has gone (`bluegreen status | head -1`)
/// further output is dropped: a command that changes something (`rollback`, `promote`)
/// still finishes, tells the daemon, and exits with its real status.
struct Stdout {
    out: std::io::Stdout,
    closed: bool,
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.closed {
            match self.out.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => self.closed = true,
                Err(e) => return Err(unwritable(e)),
                other => return other,
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.out.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other.map_err(unwritable),
        }
    }
}

/// A write error that says where it was writing (`cannot write to standard output: No
/// space left on device`), not only the OS's words.
fn unwritable(e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("cannot write to standard output: {e}"))
}

/// Where the folder a command works on came from.
#[derive(Clone, Copy)]
enum Named {
    Flag,
    Env,
    CurrentFolder,
}

/// Why `folder` (named with --root or BLUEGREEN_ROOT, or the current folder) is no root,
/// and which folder may be the one meant: the usual slips are a path to the config file,
/// a folder inside the root (a slot's), a root not made yet, and a `BLUEGREEN_ROOT` left
/// set from another root (so it is named).
fn not_a_root(folder: &std::path::Path, named: Named) -> String {
    let shown = match named {
        Named::Env => format!("{} (from {})", folder.display(), crate::cli::ROOT_ENV),
        _ => folder.display().to_string(),
    };
    let what = match named {
        Named::CurrentFolder => "the current folder ",
        _ => "",
    };
    let fix = "name one with --root ROOT or BLUEGREEN_ROOT, or make one with `bluegreen init`";
    if !folder.exists() {
        return format!("{what}{shown} does not exist: {fix}");
    }
    let config = folder.join(crate::layout::CONFIG);
    if let Some(dangling) = crate::fsops::dangling(&config) {
        return format!(
            "{dangling}: put that file back (or name another root with --root ROOT or BLUEGREEN_ROOT)"
        );
    }
    let root_above = folder
        .ancestors()
        .skip(1)
        .find(|above| Layout::new(above).is_ok_and(|root| root.config_file().is_file()));
    if folder.is_file() {
        // Its folder is named only when that, or one above it, is a root.
        let fix = match root_above {
            Some(above) => format!("--root {}", crate::pasted::path(above)),
            None => fix.to_string(),
        };
        return format!(
            "{what}{shown} is a file: a root is the folder holding bluegreen.toml ({fix})"
        );
    }
    match root_above {
        Some(above) => format!(
            "{what}{shown} is not a bluegreen root (it has no bluegreen.toml), but is inside the root {}: --root {}",
            above.display(),
            crate::pasted::path(above)
        ),
        None => format!("{what}{shown} is not a bluegreen root (it has no bluegreen.toml): {fix}"),
    }
}

/// The commands that write into the root (releases, `current`, marks, `state.json`,
/// logs) are not run as another user than the root's: what root made there (by `sudo`),
/// or a member of the root's group (a group-writable root), the root's user, which the
/// daemon and the hooks run as, could not mark live, replace or prune, and the slot's
/// pruning would stop for good. Whose the root is, the folders `init` made say (never
/// replaced; the root folder itself may be root's, made for the app with `install -d`).
fn refuse_other_user(layout: &Layout, named: Named) -> anyhow::Result<()> {
    let Some(owner) = crate::owner::other(layout) else {
        return Ok(());
    };
    let user = owner.user();
    let (me, mine) = crate::owner::me();
    anyhow::bail!(
        "{} is {}, and this runs as {me}: what it made there would be {mine}, which {user} (the daemon's and the hooks' user) could not change or remove; run it as {user}: {}",
        layout.root().display(),
        owner.shown(),
        as_user(&user, layout, named)
    )
}

/// This command again, as `user`: `sudo -u app bluegreen ... --root /srv/app`.
fn as_user(user: &str, layout: &Layout, named: Named) -> String {
    // Paths as absolute ones: sudo may not keep the current folder for the other user.
    let root = std::path::absolute(layout.root()).unwrap_or_else(|_| layout.root().into());
    let args: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let mut again: Vec<String> =
        args.iter()
            .enumerate()
            .map(|(at, arg)| match at {
                0 if arg.contains('/') => std::path::absolute(arg)
                    .map_or_else(|_| arg.clone(), |p| p.display().to_string()),
                _ if at > 0 && args[at - 1] == "--root" => root.display().to_string(),
                _ if arg.starts_with("--root=") => format!("--root={}", root.display()),
                _ => arg.clone(),
            })
            .map(|arg| crate::pasted::quoted(&arg))
            .collect();
    // sudo does not pass BLUEGREEN_ROOT on, nor always the current folder.
    if !matches!(named, Named::Flag) {
        again.extend(["--root".to_string(), crate::pasted::path(&root)]);
    }
    format!(
        "sudo -u {} {}",
        crate::pasted::quoted(user),
        again.join(" ")
    )
}

/// A config this user may not read (mode 0640, the service user's) says whose it is and
/// how to run the command as that user. Any other error is as it was.
fn unreadable(e: anyhow::Error, layout: &Layout, named: Named) -> anyhow::Error {
    use std::os::unix::fs::MetadataExt;
    let denied = e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    });
    if !denied {
        return e;
    }
    let Some(owner) = std::fs::metadata(layout.config_file())
        .ok()
        .map(|m| m.uid())
    else {
        return e;
    };
    let user = crate::owner::Owner::of(owner).user();
    anyhow::anyhow!(
        "{e:#}: it is {user}'s, the root's user; run this as {user}: {}",
        as_user(&user, layout, named)
    )
}

/// `init` with no folder named makes the root in the current one: refused when that
/// holds files of its own (someone's working folder, by a slip), unless it is a root
/// already (`init` repairs it). Hidden files are no sign: a new user's home has its
/// `/etc/skel` ones.
fn refuse_busy(layout: &Layout) -> anyhow::Result<()> {
    if layout.config_file().exists() {
        return Ok(());
    }
    let here = layout.root();
    let mut theirs: Vec<String> = std::fs::read_dir(here)
        .with_context(|| format!("cannot list {}", here.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    if theirs.is_empty() {
        return Ok(());
    }
    theirs.sort();
    let more = match theirs.len() {
        0..=3 => String::new(),
        n => format!(" and {} more", n - 3),
    };
    theirs.truncate(3);
    anyhow::bail!(
        "the current folder {} holds other files ({}{more}), and `bluegreen init` with no folder makes the root here: name one (`bluegreen init /srv/app`), or run it in an empty folder",
        here.display(),
        theirs.join(", ")
    )
}
