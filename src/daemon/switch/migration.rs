//! A switch's migration step: `switch.migrate`, run in the target's live release
//! ([`super::super::migrate`]), and the checks after it that the switch is still the
//! one it ran for.

use std::sync::Arc;
use std::time::Instant;

use super::super::gate::gate;
use super::super::metrics::SwitchCause;
use super::super::{migrate, Daemon};
use super::underway::Steps;
use super::{Query, SwitchError};
use crate::config::Config;
use crate::slot::Slot;

/// A migration that ran and passed its checks.
pub struct Migrated {
    pub ms: u64,
    /// The target's release it ran in.
    pub release: String,
    /// When the target last passed the gate, if the migration asked it again.
    pub gated: Option<Instant>,
}

/// Runs `switch.migrate` for a switch from `from` to `to`.
pub async fn run(
    daemon: &Arc<Daemon>,
    config: &Config,
    query: &Query,
    cause: SwitchCause,
    (from, to): (Option<Slot>, Slot),
    steps: &Steps<'_>,
) -> Result<Migrated, SwitchError> {
    // It runs in the target's live release, and may ask its port: forced or not,
    // not a failed migration, which would send the operator to the script.
    let Some((dir, release)) = daemon.slots[to.index()]
        .route
        .live()
        .map(|g| (g.dir.clone(), g.release.clone()))
    else {
        return Err(SwitchError::Refused(format!(
            "{to} has no live generation for switch.migrate to run in{}",
            if query.force {
                ": wait until it is live (`bluegreen status`); --force skips the health gate, not the migration"
            } else {
                " (it went while the switch waited)"
            }
        )));
    };
    // A migration given up before may still have its SIGTERM's grace: it is over
    // before this one begins, and its wait is not this migration's time.
    if migrate::stopping() {
        steps.step(format!(
            "waiting for the last switch.migrate, given up, to be stopped (up to {} twice, app.stop_timeout)",
            humantime::format_duration(config.app.stop_timeout)
        ));
        let _ = tokio::task::spawn_blocking(migrate::wait_stopped).await;
    }
    let started = Instant::now();
    let said = format!(
        "switch to {to} ({cause}): running switch.migrate (up to {})",
        humantime::format_duration(config.switch.migrate_timeout)
    );
    // The heartbeat tries again at each check of a failing streak: told once.
    let again = cause == SwitchCause::Heartbeat
        && daemon
            .heartbeat
            .lock()
            .expect("heartbeat lock: no panic holds it")
            .stuck_reported;
    if !again {
        daemon.events.record("switch", Some(to), false, said);
    }
    steps.step("running switch.migrate".into());
    let source = from.unwrap_or(to.other());
    // The generation its `FROM_PORT` names.
    let read_from = daemon.slots[source.index()].route.live();
    migrate::run(daemon, config, (source, to), &dir)
        .await
        .map_err(|e| SwitchError::Refused(format!("the migration for {to} failed: {e}")))?;
    let ms = started.elapsed().as_millis() as u64;
    // A deploy to the active slot went live meanwhile: the generation the migration
    // read from (FROM_PORT) was drained and stopped under it, and what it carried
    // over may be cut short. (Not a crash restart on the same release, which is no
    // one's choice and may come again at every try; nor the heartbeat's failover off
    // a failing slot: it reads what it can.)
    let now = daemon.slots[source.index()].route.live();
    if let (false, Some(ran), Some(now)) = (cause == SwitchCause::Heartbeat, &read_from, &now) {
        if ran.release != now.release {
            return Err(SwitchError::Refused(format!(
                "{source} went live with release {} while switch.migrate ran, reading from release {}'s generation on port {} (FROM_PORT), which was stopped: nothing switched; switch again",
                now.release, ran.release, ran.port
            )));
        }
    }
    // The heartbeat moves traffic only off an active slot that still fails: one that
    // recovered while the migration ran keeps it (and automatic switching stays on).
    if cause == SwitchCause::Heartbeat {
        steps.step(format!("checking {source}'s health after the migration"));
        if gate(daemon, config, source).await.is_ok() {
            return Err(SwitchError::Recovered(format!(
                "{source} passes its health check again after switch.migrate ran ({:.1}s): traffic stays on {source}",
                started.elapsed().as_secs_f64()
            )));
        }
    }
    let mut gated = None;
    // The migration may have taken a while: the target must still be healthy.
    if !query.force {
        steps.step(format!("checking {to}'s health after the migration"));
        gate(daemon, config, to)
            .await
            .map_err(|e| SwitchError::Refused(format!("after the migration, {e}")))?;
        gated = Some(Instant::now());
    }
    Ok(Migrated { ms, release, gated })
}
