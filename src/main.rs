//! The `bluegreen` binary: parse the command line, set up logging, run one role, and
//! turn an error into one line and an exit code.

use std::process::ExitCode;

use clap::Parser;

use bluegreen::cli::Args;

fn main() -> ExitCode {
    // Through the hook symlink git runs us as `post-receive`.
    let invoked_as = std::env::args_os().next().unwrap_or_default();
    let as_hook = std::path::Path::new(&invoked_as)
        .file_name()
        .is_some_and(|name| name == "post-receive");
    let args = if as_hook {
        Args::parse_from(["bluegreen", "hook", "post-receive"])
    } else {
        bluegreen::cli::parse()
    };
    bluegreen::logging::init(&args.command);
    match bluegreen::run::run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // `bluegreen status | head -1`: the reader has what it wanted.
        Err(e) if bluegreen::run::stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
