//! A crashed live generation: its restart on the same release with backoff (1 s
//! doubling to 60 s, reset once the slot has served a minute: see [`super::backoff`]),
//! and the timer that brings it back; and the last live release brought back at once
//! after a failed deploy left the slot with nothing live.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Cause, Msg, Supervisor};
use crate::daemon::metrics::GenerationOutcome;

impl Supervisor {
    pub(super) async fn exited(&mut self, generation: u64) {
        let slot = self.slot;
        let Some(live) = self.live.clone().filter(|g| g.id == generation) else {
            return;
        };
        if live.stopping.load(Ordering::Acquire) {
            return;
        }
        self.live = None;
        self.backoff.crashed(Instant::now());
        // The restart's time is known before the route goes: a request or a mirrored
        // copy that finds no live generation must see one on its way, not a slot down
        // for good (copies were counted `standby_down` while the exit was read below).
        let restart = self.starting.is_none().then(|| {
            let delay = self.backoff.next();
            let at = Instant::now() + delay;
            self.handle().status().restart_at = Some(at);
            (delay, at)
        });
        self.handle().route.clear(format!(
            "{slot}'s generation {generation} crashed; restarting"
        ));
        live.flush_output().await;
        // It has exited: this is at once. The status (a signal: the OOM killer's) is
        // often the only clue there is.
        let status = live
            .exit()
            .await
            .map_or_else(|| "exited".to_string(), crate::daemon::hints::exited);
        let message = format!(
            "{slot}: generation {generation} (pid {}) {status} while live{}",
            live.pid,
            live.tail_text()
        );
        self.handle().set_error(Some(message.clone()));
        self.daemon
            .metrics
            .generation(slot, GenerationOutcome::Crashed);
        self.daemon
            .events
            .record("crash", Some(slot), true, message);
        // Whatever it left in its group goes with it.
        let stop = self.daemon.config().app.stop_timeout;
        let dead = live.clone();
        self.draining.retain(|h| !h.is_finished());
        self.draining
            .push(tokio::spawn(async move { dead.stop(stop).await }));
        if let Some((delay, at)) = restart {
            self.restart_after(live.release.clone(), delay, at);
        }
    }

    /// Restarts `release` after the backoff's next pause.
    pub(super) fn schedule_restart(&mut self, release: String) {
        let delay = self.backoff.next();
        self.restart_after(release, delay, Instant::now() + delay);
    }

    /// Restarts `release` at `at`, `delay` (the backoff's pause) after it was decided,
    /// the event saying so.
    fn restart_after(&mut self, release: String, delay: Duration, at: Instant) {
        let said = format!("{}: restarting in {}s", self.slot, delay.as_secs());
        self.restart_in(release, at, said);
    }

    /// Brings back `release`, the last live one, at once: a deploy that replaced it
    /// failed with no live generation left (`app.overlap = false`, or a crash during the
    /// start). No crash loop to slow down (the slot waited the backoff's second for
    /// nothing): a failure of this start is restarted with backoff, as a crash is.
    pub(super) fn restart_at_once(&mut self, release: String) {
        let said = format!("{}: restarting release {release} at once", self.slot);
        self.restart_in(release, Instant::now(), said);
    }

    /// Starts `release` again at `at` (unless a deploy comes first), the event saying so.
    fn restart_in(&mut self, release: String, at: Instant, said: String) {
        self.restart_token += 1;
        self.restart_release = Some(release);
        self.handle().status().restart_at = Some(at);
        self.daemon
            .events
            .record("restart", Some(self.slot), true, said);
        let (tx, token) = (self.tx.clone(), self.restart_token);
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let _ = tx.send(Msg::RestartDue { token });
        });
    }

    pub(super) async fn restart_due(&mut self, token: u64) {
        if token != self.restart_token
            || self.starting.is_some()
            || self.live.is_some()
            || self.is_stopping()
        {
            return;
        }
        if let Some(release) = self.restart_release.take() {
            // Counted when it happens: a deploy during the backoff replaces it.
            self.handle().status().restarts += 1;
            self.daemon
                .metrics
                .generation(self.slot, GenerationOutcome::Restarted);
            self.begin(release, Vec::new(), Cause::Backoff).await;
        }
    }
}
