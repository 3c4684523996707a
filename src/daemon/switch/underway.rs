//! `Underway`: the switch under way, as `/status` shows it, and the `Steps` that keep
//! it up to date.

use std::time::Instant;

use super::super::metrics::SwitchCause;
use super::super::Daemon;
use crate::slot::Slot;

/// The switch under way, as `/status` shows it: a migration may run for minutes, and
/// the wait for the mirrored writes for seconds, while the active slot stays active.
#[derive(Debug)]
pub struct Underway {
    pub to: Slot,
    pub cause: SwitchCause,
    /// What it does now: `running switch.migrate`, ...
    pub step: String,
    pub began: Instant,
}

impl Underway {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "to": self.to,
            "cause": self.cause.as_str(),
            "step": self.step,
            "for_s": self.began.elapsed().as_secs(),
        })
    }
}

/// Keeps `daemon.underway` up to date through one switch's steps; clears it when the
/// switch ends, however it ends.
pub struct Steps<'a> {
    daemon: &'a Daemon,
}

impl<'a> Steps<'a> {
    pub fn begin(daemon: &'a Daemon, to: Slot, cause: SwitchCause) -> Steps<'a> {
        *daemon
            .underway
            .lock()
            .expect("underway lock: no panic holds it") = Some(Underway {
            to,
            cause,
            step: "starting".into(),
            began: Instant::now(),
        });
        Steps { daemon }
    }

    pub fn step(&self, step: String) {
        if let Some(underway) = self
            .daemon
            .underway
            .lock()
            .expect("underway lock: no panic holds it")
            .as_mut()
        {
            underway.step = step;
        }
    }
}

impl Drop for Steps<'_> {
    fn drop(&mut self) {
        *self
            .daemon
            .underway
            .lock()
            .expect("underway lock: no panic holds it") = None;
    }
}
