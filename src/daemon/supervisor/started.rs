//! What a start's result does. Ready: it goes live and the one it replaces drains.
//! Failed: it is stopped, the slot keeps its live generation, or, left with none, brings
//! back the last release that was live (with backoff).

use std::sync::Arc;
use std::time::Instant;

use super::{tell, verdict_failed, Cause, Msg, Refused, Supervisor};
use crate::daemon::generation::Generation;
use crate::daemon::metrics::GenerationOutcome;
use crate::release;
use crate::state::Failed;
use crate::verdict::Verdict;

impl Supervisor {
    pub(super) async fn started(
        &mut self,
        release: String,
        result: Result<Arc<Generation>, (Option<Arc<Generation>>, String)>,
    ) {
        let slot = self.slot;
        self.handle().status().replacing = false;
        // `starting` is cleared in each branch once what comes next is set (a restart
        // due, the next start pending, the generation live): a daemon's startup that
        // sees neither a start nor a restart coming stops holding the slot's clients in
        // the backlog, and a failed generation's stop (up to `stop_timeout`), or the
        // moment before the restart is set, must not look like that.
        let first_start = std::mem::take(&mut self.first_start);
        let passed_over = self.passed_over.take();
        let mut start = self
            .starting
            .take()
            .expect("a start result only comes for the start in progress");
        let config = self.daemon.config();
        if self.shutdown.is_some() {
            // Stopping: whatever got started goes, ready or not (pending reloads were
            // answered by `stop_all`).
            stop_started(result, &config).await;
            self.start_over();
            tell(start.waiters, &Verdict::stopping(slot, &release));
            return;
        }
        match (start.superseded.take(), result) {
            (Some(by), result) => {
                // Ready or not, it goes: the slot went back to its live release.
                stop_started(result, &config).await;
                self.start_over();
                let message = super::went_back(slot, &release, &by);
                self.daemon.events.record(
                    "superseded",
                    Some(slot),
                    false,
                    format!("{slot}: {message}"),
                );
                tell(start.waiters, &verdict_failed(slot, &release, message));
            }
            (None, Ok(generation)) => {
                let took = start.since.elapsed();
                // `/status` and state.json say so before the first request reaches it: a
                // client that got its answer never reads the failure it replaced.
                // A fallback to an older release keeps the reason `current` is not live,
                // not a failure of the fallback itself, which is over now.
                let current = release::current(&self.daemon.layout, slot);
                let why = self.current_failed.take().filter(|r| {
                    Some(&r.failed.release) == current.as_ref() && r.failed.release != release
                });
                let error = match &why {
                    Some(refused) => Some(refused.while_serving(slot, &release)),
                    None if current.is_none() => Some(super::missing_current(
                        slot,
                        &release::no_current(&self.daemon.layout, slot),
                        &release,
                    )),
                    None => None,
                };
                self.handle().set_error(error);
                self.current_failed = why;
                // It just answered its health check.
                self.daemon.set_health(slot, Ok(()));
                if current.as_ref() == Some(&release) {
                    self.daemon.set_failed(slot, None);
                }
                let old = self.handle().go_live(generation.clone());
                self.start_over();
                self.live = Some(generation.clone());
                self.live_since = Instant::now();
                self.backoff.live(self.live_since);
                self.last_good = Some(release.clone());
                self.daemon.set_last_live(slot, &release);
                if let Err(e) = release::mark_live(&self.daemon.layout, slot, &release) {
                    tracing::warn!(slot = %slot, "{e:#}");
                }
                // Another release brought back (the last live one, after a failed deploy
                // left nothing live) leaves the failure known: `current` still names the
                // release that failed, and a late look of the file watch at it would start
                // it again (with `app.overlap = false`, stopping this one for it).
                if self
                    .last_failed
                    .as_ref()
                    .is_some_and(|(failed, _)| *failed == release)
                {
                    self.last_failed = None;
                }
                self.daemon
                    .metrics
                    .generation(slot, GenerationOutcome::Started);
                self.daemon.adopt_if_none(slot);
                let tx = self.tx.clone();
                let watched = generation.clone();
                tokio::spawn(async move {
                    watched.exit().await;
                    let _ = tx.send(Msg::Exited {
                        generation: watched.id,
                    });
                });
                self.daemon.events.record(
                    "live",
                    Some(slot),
                    false,
                    format!(
                        "{slot}: generation {} live in {:.1}s (release {release}, commit {}, port {}, pid {})",
                        generation.id,
                        took.as_secs_f64(),
                        generation.commit,
                        generation.port,
                        generation.pid
                    ),
                );
                if let Some(old) = old {
                    self.daemon.events.record(
                        "drain",
                        Some(slot),
                        false,
                        format!(
                            "{slot}: draining generation {} ({} in flight)",
                            old.id,
                            old.in_flight.get()
                        ),
                    );
                    self.drain(old);
                }
                let verdict = Verdict {
                    slot: Some(slot),
                    release,
                    commit: generation.commit.clone(),
                    live: true,
                    generation: generation.id,
                    took_ms: took.as_millis() as u64,
                    ..Verdict::default()
                };
                tell(start.waiters, &verdict);
            }
            (None, Err((generation, reason))) => {
                if let Some(generation) = generation {
                    generation.stop(config.app.stop_timeout).await;
                }
                self.handle().status().failed_starts += 1;
                self.daemon
                    .metrics
                    .generation(slot, GenerationOutcome::Failed);
                // With no live generation left (a crash during the start, app.overlap =
                // false, or a daemon that just started), the last release that was live
                // comes back; if that is the one that failed, or the daemon just started
                // with no other, it is tried again with backoff (its database may not
                // be up yet).
                // The first start ran the last live release in place of a `current`
                // that failed before the daemon restarted: failing too, it leaves
                // `current` its turn (whatever failed it then may be over), unless a
                // reload already waits.
                let current_next = passed_over
                    .filter(|_| {
                        self.live.is_none()
                            && start.cause != Cause::Backoff
                            && self.pending.is_none()
                    })
                    .filter(|skipped| {
                        *skipped != release
                            && release::current(&self.daemon.layout, slot).as_ref() == Some(skipped)
                    });
                // A release waiting its turn (a restarted daemon's `current` behind its
                // last live one) starts next, at once: that is what comes, not a restart.
                let pending_next = self
                    .pending
                    .as_ref()
                    .filter(|_| self.live.is_none())
                    .map(|(waiting, ..)| waiting.clone());
                let fallback = match (&self.live, &self.last_good) {
                    (Some(_), _) => None,
                    _ if current_next.is_some() || pending_next.is_some() => None,
                    (None, _) if start.cause == Cause::Backoff => None,
                    (None, Some(good)) if *good != release => Some(good.clone()),
                    (None, Some(_)) => Some(release.clone()),
                    (None, None) if first_start => Some(release.clone()),
                    (None, None) => None,
                };
                let keeps = match (&self.live, &fallback) {
                    (Some(live), _) => format!(
                        "{slot} keeps serving generation {} (release {})",
                        live.id, live.release
                    ),
                    (None, Some(again)) => {
                        format!("{slot} has no live generation; restarting release {again}")
                    }
                    (None, None) if current_next.is_some() || pending_next.is_some() => format!(
                        "{slot} has no live generation; starting its current release {}",
                        current_next
                            .as_ref()
                            .or(pending_next.as_ref())
                            .map_or("", String::as_str)
                    ),
                    (None, None) => format!("{slot} has no live generation"),
                };
                let message = format!("release {release} failed: {reason}; {keeps}");
                self.handle().set_error(Some(message.clone()));
                if self.live.is_none() {
                    self.handle().route.clear(format!("{slot}: {message}"));
                    self.backoff.down();
                }
                self.daemon
                    .events
                    .record("failed", Some(slot), true, format!("{slot}: {message}"));
                self.last_failed = Some((release.clone(), message.clone()));
                if release::current(&self.daemon.layout, slot).as_deref() == Some(&release) {
                    let failed = Failed {
                        release: release.clone(),
                        reason: reason.clone(),
                    };
                    // A restarted daemon starts the last live release before this one.
                    self.daemon.set_failed(slot, Some(failed.clone()));
                    self.current_failed = Some(Refused {
                        failed,
                        before_restart: false,
                    });
                }
                // Due before the answer: a daemon's startup that hears of the failure
                // sees a restart coming (see `serve`).
                if start.cause == Cause::Backoff {
                    self.schedule_restart(release.clone());
                } else if let Some(good) = fallback {
                    // The last live release (not the one that just failed) comes back at
                    // once; the one that failed, with backoff.
                    match good != release {
                        true => self.restart_at_once(good),
                        false => self.schedule_restart(good),
                    }
                } else if let Some(current) = current_next {
                    self.pending = Some((current, Vec::new(), Cause::CurrentNext));
                }
                // Only now, with a restart due or a start to come (`pending`, begun below)
                // set: seen as coming before the answer, by tasks on other threads too.
                if self.pending.is_some() {
                    self.handle().status().started = None;
                } else {
                    self.start_over();
                }
                tell(start.waiters, &verdict_failed(slot, &release, message));
            }
        }
        if let Some((release, waiters, cause)) = self.pending.take() {
            self.begin(release, waiters, cause).await;
        }
    }
}

/// Stops the generation a start ran, ready or not (none when it never ran).
async fn stop_started(
    result: Result<Arc<Generation>, (Option<Arc<Generation>>, String)>,
    config: &crate::config::Config,
) {
    let generation = match result {
        Ok(generation) => Some(generation),
        Err((generation, _)) => generation,
    };
    if let Some(generation) = generation {
        generation.stop(config.app.stop_timeout).await;
    }
}
