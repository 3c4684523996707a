//! The gate a switch passes: the target slot must have a live generation that answers
//! its health path now. The heartbeat's own checks are [`super::heartbeat`]'s.

use super::{heartbeat, Daemon};
use crate::config::Config;
use crate::slot::Slot;

/// Why the gate keeps a switch out: the target has nothing live, which a forced switch
/// would leave the front without; what it has fails its health check; or the daemon
/// could not even check it.
#[derive(Debug)]
pub enum Shut {
    /// With why, when its supervisor knows one that passes (starting, restarting).
    NotLive(Slot, Option<String>),
    Unhealthy(String),
    /// The daemon had no file for the check's connection: nothing is known of the slot.
    NotChecked(String),
}

impl std::fmt::Display for Shut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shut::NotLive(to, None) => write!(f, "{to} has no live generation to switch to"),
            Shut::NotLive(to, Some(why)) => write!(
                f,
                "{to} has no live generation to switch to yet ({why}); switch once `bluegreen status` shows {to} healthy"
            ),
            Shut::Unhealthy(why) | Shut::NotChecked(why) => f.write_str(why),
        }
    }
}

/// The target must have a live generation that answers its health path now.
pub async fn gate(daemon: &Daemon, config: &Config, to: Slot) -> Result<(), Shut> {
    let path = &config.app.health_path;
    match heartbeat::probe_live(daemon, to, path, config.heartbeat.timeout).await {
        // A daemon just (re)started, or a crash's restart: say it passes.
        None => Err(Shut::NotLive(
            to,
            daemon.slots[to.index()].status().coming(),
        )),
        Some(Ok(status)) if (200..400).contains(&status) => Ok(()),
        Some(Ok(status)) => Err(Shut::Unhealthy(format!(
            "{to} is not healthy: GET {path} answered {status}"
        ))),
        Some(Err(e)) if super::upstream::no_file(&e) => {
            Err(Shut::NotChecked(format!("{to} not checked: {e}")))
        }
        Some(Err(e)) => Err(Shut::Unhealthy(format!(
            "{to} is not healthy: GET {path}: {e}"
        ))),
    }
}
