//! Dispatch: one function per subcommand, given parsed arguments.
//!
//! Returns `Ok(false)` for "ran, but the outcome is a failure the output already
//! explained" (a release that did not go live, a refused switch): exit code 1, no
//! second message. Standard output that its reader closed (`bluegreen status | head -1`)
//! ends a command quietly: see [`stdout_closed`].

use std::io::Write;
use std::path::PathBuf;

use crate::cli::{Args, Command};
use crate::config::Config;
use crate::layout::Layout;
use crate::slot::Slot;

pub fn run(args: Args) -> anyhow::Result<bool> {
    let root = args.root.clone();
    let layout = || -> anyhow::Result<Layout> {
        Ok(Layout::new(
            &root.clone().unwrap_or(std::env::current_dir()?),
        )?)
    };
    let config = |layout: &Layout| Config::load(&layout.config_file());
    let stdout = &mut Stdout(std::io::stdout());
    match args.command {
        Command::Init { dir } => {
            let dir: PathBuf = match dir.or(args.root) {
                Some(dir) => dir,
                None => std::env::current_dir()?,
            };
            crate::init::run(&Layout::new(&dir)?, stdout)?;
            Ok(true)
        }
        Command::Check => {
            let layout = layout()?;
            let config = config(&layout)?;
            config.router.token()?;
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
            let mut out = crate::hook::PusherOutput(std::io::stderr());
            crate::hook::run(args.root, stdin, &mut out)
        }
        Command::Releases { slot } => {
            let slots = slot.map_or(Slot::ALL.to_vec(), |s| vec![s]);
            // No config needed (it may be broken), but it must be a root.
            let layout = layout()?;
            anyhow::ensure!(
                layout.config_file().is_file(),
                "{} is not a bluegreen root (it has no bluegreen.toml; `bluegreen init` makes one)",
                layout.root().display()
            );
            crate::rollout::list(&layout, &slots, stdout)?;
            Ok(true)
        }
        Command::Rollback { slot, to } => {
            let layout = layout()?;
            crate::rollout::rollback(&layout, &config(&layout)?, slot, to.as_deref(), stdout)
        }
        Command::Promote { from, to } => {
            let layout = layout()?;
            let to = to.unwrap_or(from.other());
            crate::rollout::promote(&layout, &config(&layout)?, from, to, stdout)
        }
        Command::Status { json } => crate::ctl::status(&config(&layout()?)?, json, stdout),
        Command::Switch { slot, force } => {
            crate::ctl::switch(&config(&layout()?)?, slot, force, stdout)
        }
        Command::Mirroring { state } => {
            crate::ctl::mirroring(&config(&layout()?)?, state.as_deref(), stdout)
        }
        Command::Serve => crate::daemon::serve(layout()?),
        Command::Demo(demo) => crate::demo::run(demo),
        Command::SampleApp => crate::sample_app::run(),
    }
}

/// The commands' standard output: a write its reader went away from fails with
/// [`StdoutClosed`] inside, so that `main` can tell it from any other broken pipe (the
/// daemon's connection, say) and exit quietly.
struct Stdout(std::io::Stdout);

#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
struct StdoutClosed;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(closed)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(closed)
    }
}

fn closed(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::io::Error::new(e.kind(), StdoutClosed)
    } else {
        e
    }
}

/// Whether `error` is standard output closed by its reader, which is no failure to report.
pub fn stdout_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(|e| e.get_ref())
            .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}
