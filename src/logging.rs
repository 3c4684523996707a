//! Diagnostics: `tracing` to stderr (journald keeps it under systemd), `RUST_LOG` to tune.
//!
//! The daemon logs at info by default; the commands a person runs log warnings only,
//! so what they print stays theirs (the hook's `remote:` lines, tables, verdicts).

use tracing_subscriber::EnvFilter;

use crate::cli::Command;

pub fn init(command: &Command) {
    let default = match command {
        Command::Serve | Command::Demo(_) => "info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
