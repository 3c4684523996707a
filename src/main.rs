//! The `bluegreen` binary: parse the command line, set up logging, run one role, and
//! turn an error into one line and an exit code.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    // A panic is a bug; it is reported on one line like every other error.
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("panic");
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        // Written as the log is (see `bluegreen::stderr`): a report that cannot be written is
        // lost, rather than a second panic aborting the process.
        // Each in one write: the pusher's pipe takes a line whole or not at all.
        let mut stderr = bluegreen::stderr::Lossy;
        let said = format!(
            "error: bluegreen bug: {}{place} (please report it; RUST_BACKTRACE=1 shows where)\n",
            what.replace('\n', " ")
        );
        let _ = stderr.write_all(said.as_bytes());
        let trace = std::backtrace::Backtrace::capture();
        if trace.status() == std::backtrace::BacktraceStatus::Captured {
            let _ = stderr.write_all(format!("{trace}\n").as_bytes());
        }
    }));
    // Through the hook symlink git runs us as `post-receive`.
    let invoked_as = std::env::args_os().next().unwrap_or_default();
    let as_hook = std::path::Path::new(&invoked_as)
        .file_name()
        .is_some_and(|name| name == "post-receive");
    let args = if as_hook {
        bluegreen::cli::hook_args()
    } else {
        bluegreen::cli::parse()
    };
    let log = bluegreen::logging::init(args.command.is_daemon());
    let result = bluegreen::run::run(args);
    // The daemon's last lines out, before its error line.
    drop(log);
    let code = match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            let line = bluegreen::logging::one_line(&format!("{e:#}"));
            // One write: the pusher's pipe takes a line whole or not at all.
            let _ = bluegreen::stderr::Lossy.write_all(format!("error: {line}\n").as_bytes());
            ExitCode::FAILURE
        }
    };
    // A push client that did not read all of it is told so, and its last line again.
    bluegreen::stderr::finish();
    code
}
