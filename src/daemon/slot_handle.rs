//! `SlotHandle`: a slot as the rest of the daemon sees it: the route every proxy thread
//! reads, the way to its supervisor task, and what `/status` shows of it.
//!
//! Lock order: the `status` lock may be held while the route is set or read (see
//! [`SlotStatus::draining`]), never the other way round.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::{generation, route, supervisor};

/// A slot as the rest of the daemon sees it.
pub struct SlotHandle {
    /// The live generation every proxy thread reads per request.
    pub route: route::Route,
    /// To the slot's supervisor task.
    pub(super) tx: mpsc::UnboundedSender<supervisor::Msg>,
    /// What `/status` shows of the slot; held while `route` changes (see [`super::Daemon`]).
    pub(super) status: Mutex<SlotStatus>,
}

#[derive(Default)]
pub struct SlotStatus {
    pub restarts: u64,
    pub last_error: String,
    /// The last heartbeat or gate result, `None` before the first.
    pub health: Option<Result<(), String>>,
    /// A generation is being started.
    pub starting: bool,
    /// Which: its number and release, and since when, once it has a number (for
    /// `/status`: the slot serves its live one meanwhile, or nothing).
    pub started: Option<(u64, String, std::time::Instant)>,
    /// Starts that failed since the daemon began, for [`SlotHandle::comes_live`].
    pub failed_starts: u64,
    /// A deploy stopped the live generation to start the next (`app.overlap = false`):
    /// a slot without a live one is not failing yet, until that start is over.
    pub replacing: bool,
    /// When the next restart is due, while one waits out its backoff.
    pub restart_at: Option<std::time::Instant>,
    /// Generations replaced by a newer one, finishing their in-flight requests (or being
    /// stopped): shown in `/status` and counted in `bluegreen_in_flight` until gone. One
    /// joins as it leaves the route, under this lock ([`SlotHandle::go_live`]): a reader
    /// that reads the route under it too never misses it between the two, nor counts it
    /// twice.
    pub draining: Vec<Arc<generation::Generation>>,
}

impl SlotStatus {
    /// A slot with no live generation but one on its way, as `/status` shows its
    /// health: `starting`, or `down: restarting in 4s` while a crash's backoff runs.
    pub fn coming(&self) -> Option<String> {
        if self.starting {
            return Some("starting".into());
        }
        self.restart_at.map(|at| {
            let secs = at
                .saturating_duration_since(std::time::Instant::now())
                .as_secs_f64()
                .ceil() as u64;
            format!("down: restarting in {secs}s")
        })
    }
}

impl SlotHandle {
    /// Routes to `generation` from now on; the one it replaces, returned, is listed as
    /// draining in the same step (see [`SlotStatus::draining`]).
    pub fn go_live(
        &self,
        generation: Arc<generation::Generation>,
    ) -> Option<Arc<generation::Generation>> {
        let mut status = self.status();
        let old = self.route.set(generation);
        status.draining.extend(old.clone());
        old
    }

    /// Stops routing (requests get a 503 with `reason`); the generation removed,
    /// returned, is listed as draining in the same step.
    pub fn stop_routing(&self, reason: String) -> Option<Arc<generation::Generation>> {
        let mut status = self.status();
        let old = self.route.clear(reason);
        status.draining.extend(old.clone());
        old
    }

    /// The live generation and the slot's status, read together (see
    /// [`SlotStatus::draining`]).
    pub fn live_and_status(
        &self,
    ) -> (
        Option<Arc<generation::Generation>>,
        MutexGuard<'_, SlotStatus>,
    ) {
        let status = self.status();
        (self.route.live(), status)
    }

    pub fn status(&self) -> MutexGuard<'_, SlotStatus> {
        self.status
            .lock()
            .expect("slot status lock: no panic holds it")
    }

    pub fn set_error(&self, error: Option<String>) {
        self.status().last_error = error.unwrap_or_default();
    }

    /// Waits until `deadline` while the slot has no live generation but one on its way
    /// (a start under way or due); whether it got one. Until a start fails while it
    /// waits (the restart after a failed one, for a daemon's startup), not through every
    /// one of the backoff: an app that cannot start (a service it needs is down) would
    /// otherwise hold the clients in the listen backlog, the front's too, for all of
    /// `ready_timeout`, with a live standby the heartbeat could move them to.
    pub async fn comes_live(&self, deadline: tokio::time::Instant) -> bool {
        let failed_before = self.status().failed_starts;
        loop {
            if self.route.live().is_some() {
                return true;
            }
            let (coming, failed) = {
                let status = self.status();
                (
                    status.starting || status.restart_at.is_some(),
                    status.failed_starts,
                )
            };
            // One start failing while this waits: the one after is no likelier to work.
            if !coming || failed > failed_before || tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
