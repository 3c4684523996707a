//! Switch: flip active and standby, after the gate and the optional migration.
//!
//! Switches are serialised, a few waiting at most ([`turns`]); a bare one
//! goes to the standby as it was when asked. The gate ([`super::gate`]) asks the
//! target's live generation for its health path now; `force` skips it. `switch.migrate`
//! runs next ([`migration`]), in the target's release folder, bounded by its timeout,
//! and the gate is asked again after it; a target that went live with another release
//! meanwhile (a deploy to it) is not switched to: the migration was for the release it
//! ran in. With mirroring on, the writes the active is still answering are waited for,
//! new ones wait for the flip, and the copies of all of them go out to the target first
//! ([`mirrored`]). Then `state.json` is written, and only then does the front's active
//! slot change: one atomic store, so requests in flight finish where they started and
//! new ones go to the target. `/status` shows the steps ([`underway`]).

mod migration;
mod mirrored;
pub mod turns;
mod underway;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::sync::watch;

use super::gate::{gate, Shut};
use super::metrics::SwitchCause;
use super::params::{alone, flag, params};
use super::Daemon;
use crate::slot::Slot;
use crate::state::LastSwitch;
use mirrored::MIRROR_WAIT;
use underway::Steps;
pub use underway::Underway;

/// How old the gate's answer may be at the flip: one asked before a longer wait (for the
/// mirrored writes, up to `MIRROR_WAIT`) is asked again, as the target may have begun
/// failing meanwhile.
const GATE_FRESH: Duration = Duration::from_millis(250);

/// What a switch request asks.
#[derive(Debug, Default)]
pub struct Query {
    pub to: Option<Slot>,
    pub force: bool,
}

impl Query {
    /// Parses `to=blue&force=1`.
    pub fn parse(query: &str) -> Result<Query, String> {
        let mut parsed = Query::default();
        for (key, value) in params(query, &["to", "force"])? {
            match key.as_str() {
                "to" => parsed.to = Some(value.parse().map_err(|e| format!("{e:#}"))?),
                // `?force` alone forces; `?force=` is refused as any value but a yes or
                // a no (a gate skipped for an unset variable would fail open).
                _ => {
                    parsed.force =
                        (value.is_empty() && alone(query, "force")) || flag(&key, &value)?
                }
            }
        }
        Ok(parsed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The gate or the migration said no: 409, nothing changed.
    #[error("{0}")]
    Refused(String),
    /// We could not record the switch: 500, nothing changed.
    #[error("{0}")]
    Failed(String),
    /// The daemon began to stop before the switch was done: 503, nothing changed.
    #[error("the daemon is stopping; the active slot stays as it was")]
    Stopping,
    /// The heartbeat's failover found the active slot passing again after the
    /// migration: it keeps its traffic (409, nothing changed; no failure either).
    #[error("{0}")]
    Recovered(String),
}

impl SwitchError {
    pub fn status(&self) -> StatusCode {
        match self {
            SwitchError::Refused(_) | SwitchError::Recovered(_) => StatusCode::CONFLICT,
            SwitchError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            SwitchError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// [`switch`] in a task of its own, so that a caller who hangs up cannot cancel it
/// halfway; but once the daemon begins to stop (`stop` turns true), one not done yet
/// goes no further (its migration is stopped with its group) and the caller is told so
/// before the stop ends the connection. One done meanwhile is reported as done.
pub async fn in_task(
    daemon: &Arc<Daemon>,
    query: Query,
    cause: SwitchCause,
    mut stop: watch::Receiver<bool>,
) -> Result<serde_json::Value, SwitchError> {
    let mut switching = {
        let daemon = daemon.clone();
        tokio::spawn(async move { switch(&daemon, query, cause).await })
    };
    let result = tokio::select! {
        biased;
        result = &mut switching => result,
        // The guard `wait_for` returns is not Send: dropped at once.
        _ = async { drop(stop.wait_for(|stop| *stop).await) } => {
            switching.abort();
            switching.await
        }
    };
    match result {
        Ok(result) => result,
        Err(e) if e.is_cancelled() => {
            let active = daemon.active().map_or("none", Slot::name);
            daemon.events.record(
                "switch",
                None,
                true,
                format!("not switched ({cause}): the daemon is stopping; {active} stays active"),
            );
            Err(SwitchError::Stopping)
        }
        Err(e) => Err(SwitchError::Failed(format!("the switch failed: {e}"))),
    }
}

/// Switches the front to `query.to` (default: the standby when asked). The answer is JSON with
/// `from`, `to`, `changed` and `migrate_ms`. A refusal is also an event (the heartbeat
/// records its own), as a switch is: the caller of the front's `/switch` may never
/// read its answer.
pub async fn switch(
    daemon: &Arc<Daemon>,
    query: Query,
    cause: SwitchCause,
) -> Result<serde_json::Value, SwitchError> {
    // A bare switch means the standby as it was when asked: one queued behind another
    // switch (a migration takes a while) must not flip back what that one did, as two
    // operators who both ran `bluegreen switch` to leave blue would otherwise.
    let query = Query {
        to: query.to.or_else(|| daemon.active().map(Slot::other)),
        ..query
    };
    let to = query.to;
    let result = attempt(daemon, query, cause).await;
    if let Err(e) = &result {
        // A failover that finds the active passing again was not refused: it is not
        // needed.
        if !matches!(e, SwitchError::Stopping | SwitchError::Recovered(_)) {
            daemon.metrics.switch_refused(cause);
        }
        if cause != SwitchCause::Heartbeat {
            daemon
                .events
                .record("switch", to, true, format!("not switched ({cause}): {e}"));
        }
    }
    result
}

async fn attempt(
    daemon: &Arc<Daemon>,
    query: Query,
    cause: SwitchCause,
) -> Result<serde_json::Value, SwitchError> {
    let _one_at_a_time = daemon
        .switching
        .take(cause != SwitchCause::Heartbeat)
        .await
        .ok_or_else(|| {
            SwitchError::Refused(format!(
                "{} switches already wait for the one under way (`bluegreen status` shows it): nothing changed; switch again once they are done",
                turns::MAX_WAITING
            ))
        })?;
    let from = daemon.active();
    let to = match (query.to, from) {
        (Some(to), _) => to,
        (None, Some(from)) => from.other(),
        (None, None) => {
            // Named after one that can take traffic: a slot with no release would refuse.
            let deployed = Slot::ALL.into_iter().find(|&slot| {
                daemon.slots[slot.index()].route.live().is_some()
                    || crate::release::current(&daemon.layout, slot).is_some()
            });
            return Err(SwitchError::Refused(match deployed {
                Some(slot) => format!("no active slot yet: say which slot to switch to (`bluegreen switch {slot}`, or `?to={slot}`)"),
                None => format!(
                    "no active slot yet, and no slot has a release: push one first (`git push blue {}`)",
                    crate::pasted::refspec(&daemon.config().branch)
                ),
            }));
        }
    };
    if from == Some(to) {
        // An operator asking for the slot the heartbeat moved traffic to agrees with it:
        // the heartbeat may switch again.
        let rearmed = cause != SwitchCause::Heartbeat && daemon.rearm_kept();
        if rearmed {
            daemon.events.record(
                "switch",
                Some(to),
                false,
                format!("{to} stays active ({cause}); automatic switching is on again"),
            );
        }
        return Ok(
            serde_json::json!({ "from": from, "to": to, "changed": false, "migrate_ms": 0, "rearmed": rearmed }),
        );
    }
    let steps = Steps::begin(daemon, to, cause);
    let config = daemon.config();
    // Not even forced: nothing at all would answer on the front. (A slot whose `current`
    // was removed by hand may still serve its last live release: that one answers.)
    let live = daemon.slots[to.index()].route.live().is_some();
    if crate::release::current(&daemon.layout, to).is_none() && !live {
        return Err(SwitchError::Refused(format!(
            "{to} has no release: push one first (`git push {to} {}`)",
            crate::pasted::refspec(&config.branch)
        )));
    }
    let mut gated = Instant::now();
    if !query.force {
        steps.step(format!("checking {to}'s health"));
        gate(daemon, &config, to).await.map_err(|e| {
            SwitchError::Refused(match e {
                Shut::Unhealthy(_) => format!(
                    "{e} (to switch all the same: `bluegreen switch {to} --force`, or `force=1`)"
                ),
                Shut::NotLive(..) | Shut::NotChecked(_) => e.to_string(),
            })
        })?;
        gated = Instant::now();
    }
    // The target gets every write the active took before the flip: queued copies go out
    // first, before the migration (which then sees them) and again before the flip, once
    // the writes the active is still answering have their copies queued (new ones wait
    // meanwhile), all within `MIRROR_WAIT` (a stuck standby must not hold a failover
    // up); none is out while the flip happens, and one left after it is dropped as
    // `stale`.
    let waited = Instant::now();
    steps.step(format!("sending the mirrored copies queued for {to}"));
    let flushed = daemon
        .mirror
        .flush(tokio::time::Instant::now() + MIRROR_WAIT)
        .await;
    let left = MIRROR_WAIT.saturating_sub(waited.elapsed());
    // The target's release the migration ran in, if one ran.
    let migrated = match config.switch.migrate.trim().is_empty() {
        true => None,
        false => Some(migration::run(daemon, &config, &query, cause, (from, to), &steps).await?),
    };
    if let Some(at) = migrated.as_ref().and_then(|ran| ran.gated) {
        gated = at;
    }
    let from_name = from.map_or("none", Slot::name);
    let mirrored::Held {
        closed,
        barrier,
        // Named, not `_`: no copy goes out until the switch is over.
        no_copy_out: _no_copy_out,
        left_behind,
    } = mirrored::hold(daemon, (from_name, to), left, flushed, &steps).await;
    // The heartbeat's failover too: a standby that passed before the waits must still
    // pass at the flip.
    if !query.force && gated.elapsed() > GATE_FRESH {
        steps.step(format!("checking {to}'s health again before the flip"));
        gate(daemon, &config, to).await.map_err(|e| {
            SwitchError::Refused(format!(
                "{e}, at the flip ({}s after it passed the gate, the switch waiting for the mirrored writes)",
                gated.elapsed().as_secs_f64().round()
            ))
        })?;
    }
    let live = daemon.slots[to.index()].route.live();
    // A push with `app.overlap = false` may have taken its generation down meanwhile.
    if !query.force && live.is_none() {
        return Err(SwitchError::Refused(format!(
            "{to} has no live generation any more (it went while the switch waited)"
        )));
    }
    // A deploy to the target went live meanwhile (a push, rollback or promote): the
    // migration was for the release it replaced, not for the one the front would send
    // traffic to now.
    if let (Some(ran), Some(now)) = (
        migrated.as_ref().map(|ran| &ran.release),
        live.as_ref().map(|g| &g.release),
    ) {
        if ran != now {
            return Err(SwitchError::Refused(format!(
                "{to} went live with release {now} while switch.migrate ran for release {ran}: switch again to migrate for {now}"
            )));
        }
    }
    daemon
        .set_active(
            to,
            Some(LastSwitch {
                from: from.unwrap_or(to.other()),
                to,
                at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                cause: cause.as_str().to_string(),
            }),
            false,
        )
        .map_err(|e| SwitchError::Failed(format!("cannot record the switch: {e:#}")))?;
    // Held writes go, to the new active.
    drop(barrier);
    drop(closed);
    for said in left_behind {
        tracing::warn!("{said}");
    }
    daemon.metrics.switch(cause);
    daemon.events.record(
        "switch",
        Some(to),
        false,
        format!(
            "switched {from_name} -> {to} ({cause}{})",
            if query.force { ", forced" } else { "" }
        ),
    );
    let migrate_ms = migrated.map_or(0, |ran| ran.ms);
    Ok(serde_json::json!({ "from": from, "to": to, "changed": true, "migrate_ms": migrate_ms }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query() {
        let q = Query::parse("to=green&force=1").unwrap();
        assert_eq!(q.to, Some(Slot::Green));
        assert!(q.force);
        assert!(Query::parse("").unwrap().to.is_none());
        assert_eq!(
            Query::parse("to=red").unwrap_err(),
            "unknown slot `red` (expected blue or green)"
        );
        assert!(Query::parse("bogus=1").is_err());
        assert!(!Query::parse("force=no").unwrap().force);
        assert!(Query::parse("to=blue&force").unwrap().force);
        assert_eq!(
            Query::parse("to=blue&force=").unwrap_err(),
            "force=``: use force=1 (or true, yes) or force=0 (false, no)"
        );
        assert_eq!(
            Query::parse("to=blue&force=maybe").unwrap_err(),
            "force=`maybe`: use force=1 (or true, yes) or force=0 (false, no)"
        );
        assert_eq!(
            Query::parse("to=blue&to=green").unwrap_err(),
            "`to` is given twice"
        );
    }
}
