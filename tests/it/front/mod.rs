//! The front: switch, who may switch, heartbeat, promote, restart. (Mirroring and the
//! migration step: `mirror`.)
//!
//! The helpers here are shared by more than one of the files below.

mod failover;
mod heartbeat;
mod promote;
mod switch;

use std::time::Duration;

use crate::util::*;

/// A root whose heartbeat checks every 300 ms (each check waiting up to 1 s) and moves
/// traffic after 2 failures: a failover within seconds.
fn quick_heartbeat() -> Root {
    let root = Root::new();
    root.set("heartbeat.interval", "300ms");
    root.set("heartbeat.timeout", "1s");
    root.set("heartbeat.failures", 2);
    root
}

/// [`blue_failing_soon_green_healthy`], its heartbeat held until [`start_heartbeat`].
fn blue_failing_soon_green_healthy_held() -> Root {
    let mut root = held_heartbeat();
    root.serve();
    root.commit("fails soon", &[("VERSION", "v1\n"), ("FAIL_AFTER", "2")]);
    root.push("blue").says("blue: live in ");
    root.remove("FAIL_AFTER");
    root.commit("healthy", &[("VERSION", "v2\n")]);
    root.push("green").says("green: live in ");
    root
}

/// `quick_heartbeat`, but checking once an hour until [`start_heartbeat`]: a test sets
/// its slots up first, whatever the time its pushes take on a loaded machine.
fn held_heartbeat() -> Root {
    let root = quick_heartbeat();
    root.set("heartbeat.interval", "1h");
    root
}

/// The heartbeat of a [`held_heartbeat`] root checks every 300 ms from now on.
fn start_heartbeat(root: &Root) {
    root.set("heartbeat.interval", "300ms");
    root.reload_config();
}

/// Waits up to `limit` for the heartbeat to make `slot` the active one.
fn wait_for_failover(root: &Root, slot: &str, limit: Duration) {
    wait_for(limit, &format!("the heartbeat to switch to {slot}"), || {
        (root.status()["active"] == slot).then_some(())
    });
}

/// `bluegreen_heartbeat_failures_total` of `slot` in `/metrics`.
fn heartbeat_failures(root: &Root, slot: &str) -> Option<u64> {
    let prefix = format!("bluegreen_heartbeat_failures_total{{slot=\"{slot}\"}} ");
    root.control("GET", "/metrics")
        .body
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.parse().ok())
}
