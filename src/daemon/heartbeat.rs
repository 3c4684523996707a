//! Heartbeat: the periodic health check of the active slot (and of the standby, so that
//! `/status` tells its health), and the automatic switch away from the active slot when
//! it keeps failing.
//!
//! After `failures` consecutive failures (no connection, a timeout, a 5xx) both slots
//! are checked again, together; traffic moves only if the active still fails and the
//! standby passes. An automatic switch disarms the
//! automatic switching until an operator switches (no flapping): the heartbeat goes on
//! checking and reporting the new active slot, but never moves traffic back on its own.

use std::sync::Arc;
use std::time::Duration;

use super::metrics::SwitchCause;
use super::switch::{self, Query};
use super::{upstream, Daemon};
use crate::slot::Slot;

/// What to do after one check of the active slot.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Nothing,
    /// Enough consecutive failures: check the standby and switch if it passes.
    TrySwitch,
}

/// The heartbeat's memory: consecutive failures and whether it may switch.
#[derive(Debug)]
pub struct Heartbeat {
    /// Consecutive failed checks of the active slot.
    pub failures: u32,
    /// Cleared by an automatic switch, set again by an operator's switch.
    pub armed: bool,
    /// That traffic cannot move (both slots failing, or the switch refused) is reported
    /// once per failing streak: every check after it tries again.
    pub stuck_reported: bool,
}

impl Heartbeat {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Heartbeat {
        Heartbeat {
            failures: 0,
            armed: true,
            stuck_reported: false,
        }
    }

    /// As the daemon left it: still off after an automatic switch, until an operator
    /// switches or asks for the slot it moved traffic to (a restart must not let it flap
    /// back, nor undo the operator's word).
    pub fn restored(state: &crate::state::State) -> Heartbeat {
        Heartbeat {
            armed: state.rearmed
                || state
                    .last_switch
                    .as_ref()
                    .is_none_or(|last| last.cause != SwitchCause::Heartbeat.as_str()),
            ..Heartbeat::new()
        }
    }

    /// One check result; `needed` is `heartbeat.failures`.
    pub fn observe(&mut self, ok: bool, needed: u32) -> Decision {
        if ok {
            self.failures = 0;
            self.stuck_reported = false;
            return Decision::Nothing;
        }
        self.failures += 1;
        if self.failures >= needed && self.armed {
            Decision::TrySwitch
        } else {
            Decision::Nothing
        }
    }

    /// The automatic switch happened.
    pub fn switched(&mut self) {
        self.failures = 0;
        self.armed = false;
        self.stuck_reported = false;
    }
}

/// Checks the active slot (and the standby, for its health) every `heartbeat.interval`
/// until the daemon stops. A reloaded
/// config moves the next check to the last one plus its interval (an old wait of an hour
/// is not sat out, and reloads in quick succession do not put checks off).
pub async fn run(daemon: Arc<Daemon>) {
    let mut watched: Option<Slot> = None;
    let mut last = tokio::time::Instant::now();
    loop {
        // Registered before the config is read, so a reload in between is not missed.
        let changed = daemon.config_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let config = daemon.config();
        tokio::select! {
            _ = tokio::time::sleep_until(last + config.heartbeat.interval) => {}
            _ = changed => continue,
        }
        last = tokio::time::Instant::now();
        let Some(active) = daemon.active() else {
            continue;
        };
        if watched != Some(active) {
            // A new active slot starts with a clean streak.
            let mut heartbeat = daemon
                .heartbeat
                .lock()
                .expect("heartbeat lock: no panic holds it");
            heartbeat.failures = 0;
            heartbeat.stuck_reported = false;
            drop(heartbeat);
            watched = Some(active);
        }
        let standby = active.other();
        if replacing(&daemon, active) {
            let _ = observe_standby(&daemon, standby, Count::Failure).await;
            continue;
        }
        // The standby is checked too, so that its health in `/status` is a fact, not the
        // absence of news; only the active slot's failures count toward a switch.
        let (result, standby_first) = tokio::join!(
            observe_active(&daemon, active, Count::Failure),
            observe_standby(&daemon, standby, Count::Failure)
        );
        let Some(result) = result else {
            continue;
        };
        let observe = |ok: bool| {
            daemon
                .heartbeat
                .lock()
                .expect("heartbeat lock: no panic holds it")
                .observe(ok, config.heartbeat.failures)
        };
        if observe(result.is_ok()) != Decision::TrySwitch {
            continue;
        }
        // Both checked now, together: the active's failing check may be up to
        // `heartbeat.timeout` old, and what failed both slots (a database they share)
        // may come back for both while the standby is checked. Traffic moves only off an
        // active slot that still fails, to a standby that passes at the same time. A
        // failure counted at this interval's check is not counted again.
        let standby_count = match standby_first {
            Err(StandbyDown::Failing(_)) => Count::Not,
            _ => Count::Failure,
        };
        let (again, standby_check) = tokio::join!(
            observe_active(&daemon, active, Count::Not),
            observe_standby(&daemon, standby, standby_count)
        );
        let failing = match again {
            Some(Err(failing)) => failing,
            Some(Ok(())) => {
                observe(true);
                continue;
            }
            None => continue,
        };
        match standby_check {
            Ok(()) => {
                // The streak as it stands: a failover refused before (a failing
                // migration) leaves it running past `heartbeat.failures`.
                let streak = daemon
                    .heartbeat
                    .lock()
                    .expect("heartbeat lock: no panic holds it")
                    .failures;
                // Not forced: the standby must also pass the switch gate (health_path).
                let query = Query {
                    to: Some(standby),
                    force: false,
                };
                match switch::switch(&daemon, query, SwitchCause::Heartbeat).await {
                    // An operator switched in the meantime: theirs stands, nothing to record.
                    Ok(done) if done["changed"] != true => {}
                    // `set_active` turned automatic switching off, inside the switch.
                    Ok(_) => {
                        daemon.events.record(
                            "heartbeat",
                            Some(standby),
                            true,
                            format!("heartbeat: {active} failed {streak} checks in a row, and once more as {standby} passed its own; traffic moved to {standby} (automatic switching is off until an operator switches)"),
                        );
                    }
                    // Not stuck: the active is fine again, and the streak ends at the
                    // next check.
                    Err(switch::SwitchError::Recovered(why)) => {
                        daemon.events.record(
                            "heartbeat",
                            Some(active),
                            false,
                            format!("heartbeat: {why}"),
                        );
                    }
                    Err(e) if first_stuck(&daemon) => daemon.events.record(
                        "heartbeat",
                        Some(active),
                        true,
                        format!("heartbeat: switch to {standby} failed: {e}"),
                    ),
                    Err(_) => {}
                }
            }
            Err(standby_down) => {
                // Refused as surely as by the gate: counted the same, at each check.
                daemon.metrics.switch_refused(SwitchCause::Heartbeat);
                if first_stuck(&daemon) {
                    let said = match standby_down {
                        StandbyDown::Failing(why) => format!("heartbeat: both slots failing ({active}: {failing}; {standby}: {why}); staying on {active}"),
                        StandbyDown::NotLive(why) => format!("heartbeat: {active} failing ({failing}), and {standby} cannot take its traffic ({why}); staying on {active}"),
                    };
                    daemon.events.record("heartbeat", Some(active), true, said);
                }
            }
        }
    }
}

/// Whether this failing streak has not yet said that traffic cannot move (and now has).
fn first_stuck(daemon: &Daemon) -> bool {
    let mut heartbeat = daemon
        .heartbeat
        .lock()
        .expect("heartbeat lock: no panic holds it");
    !std::mem::replace(&mut heartbeat.stuck_reported, true)
}

/// Whether the active slot's generation was stopped on purpose, for the next
/// (`app.overlap = false`): not failing; the start has its own deadline. A crashed one
/// being restarted is failing, and counts.
fn replacing(daemon: &Daemon, slot: Slot) -> bool {
    let handle = &daemon.slots[slot.index()];
    handle.route.live().is_none() && handle.status().replacing
}

/// Whether a failed check counts in `bluegreen_heartbeat_failures_total`: once per slot
/// and interval, as the streak counts them, not again at the re-check before a failover
/// (the active's failed already; the standby's counts there if it passed before).
#[derive(Clone, Copy, PartialEq)]
enum Count {
    Failure,
    Not,
}

/// Checks the active slot, for its health in `/status` and its failures counted; `None`
/// when its generation was stopped for its successor while it was checked, which says
/// nothing of the slot.
async fn observe_active(daemon: &Daemon, active: Slot, count: Count) -> Option<Result<(), String>> {
    let result = check(daemon, active).await;
    if result.is_err() && replacing(daemon, active) {
        return None;
    }
    if own_fault(active, &result) {
        return None;
    }
    if result.is_err() && count == Count::Failure {
        daemon.metrics.heartbeat_failure(active);
    }
    daemon.set_health(active, result.clone());
    Some(result)
}

/// Whether a check failed for want of a file in the daemon (a connection could not even
/// be made): it says nothing of the slot, and is not counted against it (the daemon out
/// of files failed both slots' checks, and a failover would have followed the first
/// that passed). Logged, as the operator's to fix.
fn own_fault(slot: Slot, result: &Result<(), String>) -> bool {
    match result {
        Err(why) if upstream::no_file(why) => {
            tracing::warn!("heartbeat: {slot} not checked: {why}");
            true
        }
        _ => false,
    }
}

/// Why the standby cannot take the active slot's traffic.
enum StandbyDown {
    /// Its live generation failed the check.
    Failing(String),
    /// It has no live generation: the reason its requests get (`green has no release
    /// yet`, a crash's restart). Not a failed check: its status says so already.
    NotLive(String),
}

/// Checks the standby for its health in `/status`, when it has a live generation (one
/// with none, or getting ready, says so there already).
async fn observe_standby(daemon: &Daemon, standby: Slot, count: Count) -> Result<(), StandbyDown> {
    let route = &daemon.slots[standby.index()].route;
    if route.live().is_none() {
        return Err(StandbyDown::NotLive(route.reason()));
    }
    let result = check(daemon, standby).await;
    if own_fault(standby, &result) {
        let why = result.err().unwrap_or_default();
        return Err(StandbyDown::NotLive(format!("not checked: {why}")));
    }
    if result.is_err() && count == Count::Failure {
        daemon.metrics.heartbeat_failure(standby);
    }
    daemon.set_health(standby, result.clone());
    result.map_err(StandbyDown::Failing)
}

/// One check: the slot's live generation answers `heartbeat.path` below 500 in time.
pub async fn check(daemon: &Daemon, slot: Slot) -> Result<(), String> {
    let config = daemon.config();
    let path = &config.heartbeat.path;
    match probe_live(daemon, slot, path, config.heartbeat.timeout).await {
        None => Err("no live generation".into()),
        Some(Ok(status)) if status < 500 => Ok(()),
        Some(Ok(status)) => Err(format!("GET {path} answered {status}")),
        Some(Err(e)) => Err(format!("GET {path}: {e}")),
    }
}

/// How many generations one probe of a slot follows before it takes the answer it has.
const PROBE_TRIES: usize = 3;

/// `GET path` on `slot`'s live generation within `timeout`: its status or why there is
/// none; `None` when the slot has no live generation. A generation that stopped being
/// live while it was probed (a deploy's drain stops it once its requests are done, which a
/// probe is not among) says nothing of the slot: the one live now is probed instead.
pub async fn probe_live(
    daemon: &Daemon,
    slot: Slot,
    path: &str,
    timeout: Duration,
) -> Option<Result<u16, String>> {
    let route = &daemon.slots[slot.index()].route;
    let mut live = route.live()?;
    let mut tries = 1;
    loop {
        let answer = upstream::probe(&daemon.client, live.port, path, timeout).await;
        match route.live() {
            Some(now) if !Arc::ptr_eq(&now, &live) && tries < PROBE_TRIES => {
                live = now;
                tries += 1;
            }
            _ => return Some(answer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_the_daemon_had_no_file_for_is_its_own_fault() {
        let own = Err(format!(
            "GET /: {} (Too many open files): ...",
            upstream::NO_FILE
        ));
        assert!(own_fault(Slot::Blue, &own));
        assert!(!own_fault(Slot::Blue, &Err("GET / answered 500".into())));
        assert!(!own_fault(Slot::Blue, &Ok(())));
    }

    #[test]
    fn switches_after_n_failures_then_disarms() {
        const N: u32 = 2;
        let mut h = Heartbeat::new();
        assert_eq!(h.observe(false, N), Decision::Nothing);
        assert_eq!(
            h.observe(true, N),
            Decision::Nothing,
            "a pass resets the streak"
        );
        assert_eq!(h.observe(false, N), Decision::Nothing);
        assert_eq!(h.observe(false, N), Decision::TrySwitch);
        h.switched();
        for _ in 0..5 {
            assert_eq!(
                h.observe(false, N),
                Decision::Nothing,
                "never flaps back on its own"
            );
        }
        h.armed = true;
        assert_eq!(h.observe(false, N), Decision::TrySwitch);
    }

    #[test]
    fn keeps_trying_while_the_standby_is_down_too() {
        const N: u32 = 1;
        let mut h = Heartbeat::new();
        assert_eq!(h.observe(false, N), Decision::TrySwitch);
        assert_eq!(h.observe(false, N), Decision::TrySwitch);
    }
}
