//! `Interrupt`: SIGINT, SIGTERM or SIGHUP to the hook while it builds.
//!
//! The build runs in its own process group, so a Ctrl-C at the pusher's terminal (a push
//! to a local path) or a `kill` of the hook reaches the hook only. Dying of it would leave
//! the build running on, past `build.timeout`, which the hook was there to enforce. Inside
//! `during`, such a signal is only noted: the build's wait sees it, kills the build's
//! group and fails the build. Outside, the signal has its default action as before, and a
//! signal the hook was started with ignored (`nohup`, a background job's SIGINT) stays
//! ignored.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use nix::sys::signal::Signal;

/// The signals a pusher or an operator stops a hook with.
const STOPPING: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Whether a stopping signal came during `during`. Cheap to clone; `never()` for callers
/// that install no handler.
#[derive(Clone, Default)]
pub struct Interrupt {
    /// The signal's number, 0 for none.
    received: Arc<AtomicUsize>,
    /// Set outside `during`: a signal then has its default action (the process ends).
    default_action: Arc<AtomicBool>,
}

impl Interrupt {
    /// Installs the handlers for the stopping signals this process does not ignore.
    pub fn install() -> anyhow::Result<Interrupt> {
        let interrupt = Interrupt {
            received: Arc::default(),
            default_action: Arc::new(AtomicBool::new(true)),
        };
        let ignored = ignored_signals();
        for signal in STOPPING {
            if ignored & (1 << (signal as u64 - 1)) != 0 {
                continue;
            }
            let number = signal as i32;
            signal_hook::flag::register_usize(
                number,
                Arc::clone(&interrupt.received),
                number as usize,
            )
            .and_then(|_| {
                signal_hook::flag::register_conditional_default(
                    number,
                    Arc::clone(&interrupt.default_action),
                )
            })
            .with_context(|| format!("cannot handle {signal}"))?;
        }
        Ok(interrupt)
    }

    /// One that is never interrupted.
    pub fn never() -> Interrupt {
        Interrupt::default()
    }

    /// Runs `work` with the stopping signals noted rather than ending the process.
    pub fn during<T>(&self, work: impl FnOnce() -> T) -> T {
        self.default_action.store(false, Ordering::SeqCst);
        let done = work();
        self.default_action.store(true, Ordering::SeqCst);
        done
    }

    /// The stopping signal received, if one was.
    pub fn received(&self) -> Option<Signal> {
        match self.received.load(Ordering::SeqCst) {
            0 => None,
            number => Signal::try_from(number as i32).ok(),
        }
    }
}

/// The mask of signals this process ignores (`SigIgn` in /proc/self/status: bit n-1 for
/// signal n); none when it cannot be read.
fn ignored_signals() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
            u64::from_str_radix(line.trim(), 16).ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ignored_mask_is_read() {
        // Rust's runtime ignores SIGPIPE in every program it starts.
        assert_ne!(ignored_signals() & (1 << (Signal::SIGPIPE as u64 - 1)), 0);
    }
}
