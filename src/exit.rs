//! How a child process's end is told in a reason: `exited with status 3`, `was killed by
//! signal 9 (SIGKILL)`, rather than the standard library's `exited with exit status: 3`
//! and `signal: 9 (SIGKILL)`.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// `status` as the end of a sentence whose subject is the process.
pub fn ended(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    let Some(signal) = status.signal() else {
        return format!("ended ({status})");
    };
    let name = nix::sys::signal::Signal::try_from(signal)
        .map(|s| format!(" ({})", s.as_str()))
        .unwrap_or_default();
    let core = if status.core_dumped() {
        ", core dumped"
    } else {
        ""
    };
    format!("was killed by signal {signal}{name}{core}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_and_signals_read_as_sentences() {
        assert_eq!(ended(ExitStatus::from_raw(3 << 8)), "exited with status 3");
        assert_eq!(ended(ExitStatus::from_raw(0)), "exited with status 0");
        assert_eq!(
            ended(ExitStatus::from_raw(9)),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            ended(ExitStatus::from_raw(11 | 0x80)),
            "was killed by signal 11 (SIGSEGV), core dumped"
        );
    }
}
