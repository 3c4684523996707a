//! The command line: every subcommand and flag, parsed by clap.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::slot::Slot;

/// Blue/green, zero-downtime deploys to one Linux host, driven by `git push`.
#[derive(Debug, Parser)]
#[command(name = "bluegreen", version, about)]
pub struct Args {
    /// The root folder (default: $BLUEGREEN_ROOT, the hook's repo folder, or the current
    /// folder; not for `demo`, which makes its own).
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,

    /// Whether `root` came from `BLUEGREEN_ROOT` rather than `--root`: the hook goes by
    /// the repo a push came into, whatever root the pusher's environment names for the
    /// CLI (one user with two roots sets it for one of them).
    #[arg(skip)]
    pub root_from_env: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a root (or repair one): both bare repos with the hook, slot folders, a commented config.
    Init {
        /// Where to create it (default: --root or the current folder).
        dir: Option<PathBuf>,
    },
    /// Validate bluegreen.toml and print the effective config.
    Check,
    /// Run the daemon: supervisor, slot listeners, front router and control API. SIGHUP
    /// re-reads bluegreen.toml; SIGTERM or SIGINT drains and stops every worker.
    Serve,
    /// Show slots, live generations, the active slot, health and mirroring.
    Status {
        /// Print the daemon's JSON as is.
        #[arg(long)]
        json: bool,
    },
    /// Flip traffic to SLOT (default: the standby).
    Switch {
        /// blue or green (default: the standby).
        slot: Option<Slot>,
        /// Skip the health gate.
        #[arg(long)]
        force: bool,
    },
    /// Point SLOT at its previous release (or --to RELEASE); the daemon reloads it.
    Rollback {
        /// blue or green.
        #[arg(value_name = "blue|green")]
        slot: Slot,
        /// A release id, as `bluegreen releases SLOT` lists them.
        #[arg(long, value_name = "RELEASE")]
        to: Option<String>,
    },
    /// Start SLOT's current release again and wait for its verdict (after fixing what
    /// made it fail: app.command and a SIGHUP, a service it needs).
    Restart {
        /// blue or green.
        #[arg(value_name = "blue|green")]
        slot: Slot,
    },
    /// Run FROM's current build on TO (default: the other slot) without a push.
    Promote {
        /// The slot whose current build runs: blue or green.
        from: Slot,
        /// The slot that gets it (default: the other one).
        to: Option<Slot>,
    },
    /// List releases with commit, build key and time; `*` marks the current one.
    Releases {
        /// blue or green (default: both).
        slot: Option<Slot>,
    },
    /// Show or set the mirroring of writes to the standby.
    Mirroring {
        /// on or off (default: show the setting).
        #[arg(value_parser = ["on", "off"])]
        state: Option<String>,
    },
    /// One command to see it all: a root with the built-in sample app, pushed and served.
    Demo(DemoArgs),
    /// Git hooks (`post-receive`), for hosts where the hook is a shim rather than a symlink.
    Hook {
        #[arg(value_parser = ["post-receive"])]
        name: String,
    },
    /// The built-in sample app that tests and the demo deploy: set `app.command =
    /// "/usr/local/bin/bluegreen sample-app"`, the binary's full path (and `build.command =
    /// ""`). It serves 127.0.0.1:$PORT
    /// (bluegreen sets PORT; `PORT=8000 bluegreen sample-app` by hand) and answers
    /// `GET /` with its slot, release and the pushed `VERSION` file; the README's
    /// "The built-in sample app" lists its files and routes. --root is not used.
    #[command(hide = true)]
    SampleApp,
}

impl Command {
    /// `serve` and `demo`: they run the daemon, which logs at info and for a while.
    pub fn is_daemon(&self) -> bool {
        matches!(self, Command::Serve | Command::Demo(_))
    }
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// A new or empty folder for the demo's root and app repo (default: a fresh temp
    /// folder; either is kept afterwards). --root is refused.
    pub dir: Option<PathBuf>,
    /// Front router address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub front: SocketAddr,
    /// Blue's listener address.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub blue: SocketAddr,
    /// Green's listener address.
    #[arg(long, default_value = "127.0.0.1:5060")]
    pub green: SocketAddr,
    /// Control API address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub control: SocketAddr,
}

/// Parses the command line. A usage error is reported on one line (clap's own report
/// spreads it over several, with a usage block) and exits with clap's code, 2; help and
/// version print as clap prints them.
pub fn parse() -> Args {
    from_matches(Args::command().try_get_matches()).unwrap_or_else(|e| {
        use clap::error::ErrorKind;
        if matches!(
            e.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        ) {
            e.exit()
        }
        let line = match e.kind() {
            // clap's list of subcommands would name the hidden ones (`sample-app`).
            ErrorKind::MissingSubcommand => missing_subcommand(),
            _ => one_line(&e.to_string()),
        };
        crate::stderr::line(&line);
        std::process::exit(e.exit_code())
    })
}

/// The environment variable that names the root when `--root` does not.
pub const ROOT_ENV: &str = "BLUEGREEN_ROOT";

/// The arguments of the hook, as git runs it through the symlink (`post-receive`).
pub fn hook_args() -> Args {
    from_matches(Args::command().try_get_matches_from(["bluegreen", "hook", "post-receive"]))
        .unwrap_or_else(|e| e.exit())
}

fn from_matches(matches: Result<clap::ArgMatches, clap::Error>) -> Result<Args, clap::Error> {
    let matches = matches?;
    let mut args = Args::from_arg_matches(&matches)?;
    // Its root is its own: a `--root` given would be ignored, and the demo run on another
    // root than the one named. (`BLUEGREEN_ROOT` left set is not a request.)
    if matches!(args.command, Command::Demo(_)) && args.root.is_some() {
        return Err(Args::command().error(
            clap::error::ErrorKind::ArgumentConflict,
            "demo makes its own root (DIR/root) and takes no --root: `bluegreen demo DIR` names the folder it makes it in",
        ));
    }
    // A usage error as any other (exit 2), not a failed promote (exit 1).
    if let Command::Promote { from, to: Some(to) } = &args.command {
        if from == to {
            return Err(Args::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("cannot promote {from} to itself: name the other slot, or leave TO out"),
            ));
        }
    }
    // Read here, not by clap: an empty `BLUEGREEN_ROOT=` (an unset shell variable passed
    // on) is no root named, where clap took it for `--root` given no value, and refused
    // every command, the hook's too, naming a flag the user never typed.
    if args.root.is_none() {
        if let Some(root) = std::env::var_os(ROOT_ENV).filter(|root| !root.is_empty()) {
            args.root = Some(root.into());
            args.root_from_env = true;
        }
    }
    Ok(args)
}

/// What `bluegreen` with no subcommand says: the subcommands a user may run.
fn missing_subcommand() -> String {
    let command = Args::command();
    let names: Vec<&str> = command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .map(|sub| sub.get_name())
        .collect();
    format!(
        "error: bluegreen needs a subcommand: {} (`bluegreen help` says what each does)",
        names.join(", ")
    )
}

/// clap's report up to its usage block, on one line: `error: ...: <FROM>` for a list
/// after a colon, `; tip: ...` for a hint.
fn one_line(report: &str) -> String {
    let mut line = String::new();
    for part in report.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if part.starts_with("Usage:") || part.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            line.push_str(if line.ends_with(':') { " " } else { "; " });
        }
        line.push_str(part);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_error(args: &[&str]) -> String {
        let e = Args::try_parse_from(args).unwrap_err();
        one_line(&e.to_string())
    }

    #[test]
    fn a_missing_subcommand_names_only_the_visible_ones() {
        assert_eq!(
            missing_subcommand(),
            "error: bluegreen needs a subcommand: init, check, serve, status, switch, rollback, \
             restart, promote, releases, mirroring, demo, hook (`bluegreen help` says what each does)"
        );
    }

    #[test]
    fn usage_errors_are_one_line() {
        assert_eq!(
            usage_error(&["bluegreen", "promote"]),
            "error: the following required arguments were not provided: <FROM>"
        );
        assert!(usage_error(&["bluegreen", "switch", "purple"])
            .starts_with("error: invalid value 'purple' for '[SLOT]': "),);
        assert_eq!(
            usage_error(&["bluegreen", "stauts"]),
            "error: unrecognized subcommand 'stauts'; tip: some similar subcommands exist: 'restart', 'status'"
        );
        for args in [
            &["bluegreen", "promote"][..],
            &["bluegreen", "switch", "purple"],
            &["bluegreen", "status", "--jsn"],
            &["bluegreen", "mirroring", "on", "off"],
        ] {
            let line = usage_error(args);
            assert!(
                !line.contains('\n') && line.starts_with("error: "),
                "{line:?}"
            );
        }
    }
}
