//! The daemon: generations, zero-downtime reloads, drain, crashes, signals, restarts.
//! (As a service: `service`.) The helpers here are shared by more than one of the files
//! below.

mod deploy;
mod orphans;
mod overlap;
mod readiness;
mod reload;
mod restart;
mod stop;
mod workers;

use std::time::Duration;

use crate::util::*;

/// Waits until blue's live generation has one request in flight.
fn wait_for_one_in_flight(root: &Root) {
    wait_for(
        Duration::from_secs(10),
        "the slow request to be in flight",
        || (root.status()["slots"]["blue"]["live"]["in_flight"].as_u64() == Some(1)).then_some(()),
    );
}

/// Blue live, its worker starting a helper out of its process group (`setsid`).
fn blue_live_with_a_helper() -> Root {
    blue_live_with(&[(
        "app.command",
        format!(
            "sh -c 'setsid sleep 300 </dev/null >/dev/null 2>&1 & exec \"$0\" sample-app' {BIN}"
        )
        .into(),
    )])
}

/// The one process of the root besides blue's live leader: its helper, once it runs.
fn the_helper(root: &Root) -> Option<u32> {
    let leader = root.live_pid("blue") as u32;
    let others: Vec<u32> = (root.processes().into_iter())
        .filter(|&p| p != leader)
        .collect();
    (others.len() == 1).then(|| others[0])
}
