//! A switch's wait for the mirrored writes: from here until the flip, new mirrored
//! writes wait, the ones the active slot is still answering get their copies queued, and
//! the queued copies go out to the target first, all within what is left of
//! [`MIRROR_WAIT`] (see [`super::super::mirror`]).

use std::time::Duration;

use tokio::sync::RwLockWriteGuard;

use super::super::Daemon;
use super::underway::Steps;
use crate::slot::Slot;

/// How long a switch waits for the mirrored copies queued before it to go out.
pub const MIRROR_WAIT: Duration = Duration::from_secs(5);

/// What the switch holds until its flip, and what the waits left behind, told once the
/// flip happens (a switch refused after them drops nothing).
pub struct Held<'a> {
    /// New mirrored writes wait at the mirror's `entry`.
    pub closed: RwLockWriteGuard<'a, ()>,
    /// The writes the active slot was answering are done (none, if the wait ran out).
    pub barrier: Option<RwLockWriteGuard<'a, ()>>,
    /// No copy is out to the target (none, if the wait ran out).
    pub no_copy_out: Option<RwLockWriteGuard<'a, ()>>,
    /// What the waits could not finish, told once the flip happens.
    pub left_behind: Vec<String>,
}

/// Waits up to `left` for the mirrored writes of a switch from `from_name` to `to`;
/// `flushed` says whether the copies queued before it (and before any migration) went.
pub async fn hold<'a>(
    daemon: &'a Daemon,
    (from_name, to): (&str, Slot),
    left: Duration,
    flushed: bool,
    steps: &Steps<'_>,
) -> Held<'a> {
    // The migration's time does not count against the wait.
    let deadline = tokio::time::Instant::now() + left;
    // New mirrored writes wait from here until after the flip, and then go to `to`. Not
    // bounded: a write holds `entry` only while it takes its share of `barrier`, which
    // nothing holds exclusive before this (a deadline spent by the first flush would
    // otherwise give it one poll, and the writes of the flip to the old active).
    let closed = daemon.mirror.entry.write().await;
    let barrier = match daemon.mirror.barrier.try_write() {
        Ok(barrier) => Some(barrier),
        Err(_) => {
            steps.step(format!(
                "waiting for the mirrored writes {from_name} is still answering"
            ));
            tracing::info!(
                "switch to {to}: waiting up to {}s for the mirrored writes {from_name} is still answering; new ones wait for the flip",
                left.as_secs_f64().ceil()
            );
            tokio::time::timeout_at(deadline, daemon.mirror.barrier.write())
                .await
                .ok()
        }
    };
    // What the waits left behind, told once the flip happens (a switch refused after
    // them drops nothing).
    let mut left_behind = Vec::new();
    if barrier.is_none() {
        left_behind.push(format!(
            "switching to {to} while {from_name} is still answering mirrored writes after {}s: their copies are dropped (counted stale)",
            MIRROR_WAIT.as_secs()
        ));
    }
    let flushed = flushed && barrier.is_some() && daemon.mirror.flush(deadline).await;
    if barrier.is_some() && !flushed {
        left_behind.push(format!(
            "switching to {to} with mirrored copies still queued after {}s: they are dropped (counted stale)",
            MIRROR_WAIT.as_secs()
        ));
    }
    let no_copy_out = tokio::time::timeout_at(deadline, daemon.mirror.out.write())
        .await
        .ok();
    if no_copy_out.is_none() {
        left_behind.push(format!(
            "switching to {to} while a mirrored copy to it is still out after {}s: it may land after the switch",
            MIRROR_WAIT.as_secs()
        ));
    }
    Held {
        closed,
        barrier,
        no_copy_out,
        left_behind,
    }
}
