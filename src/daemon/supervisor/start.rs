//! A start: one generation launched for a release in a task of its own, and what its
//! result does. Ready: it goes live and the one it replaces drains. Failed: it is
//! stopped, the slot keeps its live generation, or, left with none, brings back the last
//! release that was live (with backoff).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use super::{tell, verdict_failed, Msg, Refused, Start, Supervisor};
use crate::daemon::generation::Generation;
use crate::daemon::metrics::GenerationOutcome;
use crate::release;
use crate::state::Failed;
use crate::verdict::Verdict;

impl Supervisor {
    pub(super) async fn begin(
        &mut self,
        release: String,
        waiters: Vec<oneshot::Sender<Verdict>>,
        restart: bool,
    ) {
        let slot = self.slot;
        // "live in" counts from here: without overlap, the old generation's drain and
        // stop below are time the slot serves nothing.
        let asked = Instant::now();
        // A deploy or restart now replaces any scheduled restart.
        self.restart_token += 1;
        self.restart_release = None;
        let config = self.daemon.config();
        {
            let mut status = self.handle().status();
            status.starting = true;
            status.restart_at = None;
        }
        if !config.app.overlap {
            if let Some(old) = self.live.take() {
                self.backoff.replacing(Instant::now());
                // Until the start is over, the heartbeat does not count the slot as
                // failing: its generation is stopped on purpose.
                self.handle().status().replacing = true;
                self.daemon.events.record(
                    "drain",
                    Some(slot),
                    false,
                    format!("{slot}: stopping generation {} before starting the next (app.overlap = false)", old.id),
                );
                self.handle().stop_routing(format!(
                    "{slot} is replacing its generation (app.overlap = false)"
                ));
                // Waited for below, with the rest.
                self.drain(old);
            }
            // The old generation drains and stops; a crashed generation's group may still
            // be stopping (its leader died, the rest had a SIGTERM): what they hold that
            // the next one needs too (a fixed port, a lock) is free only once they are gone.
            for stopping in self.draining.drain(..) {
                let _ = stopping.await;
            }
        }
        if self.is_stopping() {
            // The daemon began to stop (while the old generation drained, or the start
            // before this one ran): a generation is not started only to be stopped at
            // once (its boot may migrate a database); the next daemon starts `current`.
            {
                let mut status = self.handle().status();
                status.starting = false;
                status.replacing = false;
            }
            tell(waiters, &Verdict::stopping(slot, &release));
            return;
        }
        let id = self.daemon.new_generation();
        self.handle().status().started = Some((id, release.clone(), asked));
        self.daemon.events.record(
            "start",
            Some(slot),
            false,
            format!("{slot}: starting generation {id} for release {release}"),
        );
        let (cancel, mut cancelled) = oneshot::channel();
        self.starting = Some(Start {
            release: release.clone(),
            since: asked,
            waiters,
            restart,
            cancel: Some(cancel),
            superseded: None,
        });
        let (daemon, tx) = (self.daemon.clone(), self.tx.clone());
        // The generation once it runs: if the start task panics (a bug), it is still
        // reported, and stopped, rather than left running untracked with the
        // supervisor waiting for a result forever.
        let spawned: Arc<Mutex<Option<Arc<Generation>>>> = Arc::default();
        let start = tokio::spawn({
            let (release, spawned) = (release.clone(), spawned.clone());
            async move {
                let port = daemon
                    .ports
                    .fresh()
                    .map_err(|e| (None, format!("no free port: {e}")))?;
                // What the app will see as its data moved (another root's, before), or
                // did not: an event, in `status` too, not a log line only.
                let layout = &daemon.layout;
                let linked = &config.app.linked_dirs;
                for told in crate::release::repoint_links(layout, slot, &release, linked) {
                    daemon
                        .events
                        .record("start", Some(slot), true, format!("{slot}: {told}"));
                }
                let generation =
                    Generation::spawn(&daemon.layout, &config, slot, id, &release, port)
                        .map_err(|e| (None, format!("{e:#}")))?;
                *spawned.lock().expect("no panic holds it") = Some(generation.clone());
                let ready = tokio::select! {
                    ready = generation.wait_ready(
                        &daemon.client,
                        &config.app.health_path,
                        config.app.ready_timeout,
                        config.heartbeat.timeout,
                    ) => ready,
                    _ = &mut cancelled => Err("the daemon is stopping".to_string()),
                };
                match ready {
                    Ok(()) => Ok(generation),
                    Err(reason) => Err((Some(generation), reason)),
                }
            }
        });
        tokio::spawn(async move {
            let result = start.await.unwrap_or_else(|e| {
                let generation = spawned.lock().map(|mut g| g.take()).unwrap_or_default();
                Err((
                    generation,
                    format!("the daemon failed while starting it: {e}"),
                ))
            });
            let _ = tx.send(Msg::Started { release, result });
        });
    }

    /// The start in progress is over.
    fn start_over(&self) {
        let mut status = self.handle().status();
        status.starting = false;
        status.started = None;
    }

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
            let generation = match result {
                Ok(generation) => Some(generation),
                Err((generation, _)) => generation,
            };
            if let Some(generation) = generation {
                generation.stop(config.app.stop_timeout).await;
            }
            self.start_over();
            tell(start.waiters, &Verdict::stopping(slot, &release));
            return;
        }
        match (start.superseded.take(), result) {
            (Some(by), result) => {
                // Ready or not, it goes: the slot went back to its live release.
                let generation = match result {
                    Ok(generation) => Some(generation),
                    Err((generation, _)) => generation,
                };
                if let Some(generation) = generation {
                    generation.stop(config.app.stop_timeout).await;
                }
                self.start_over();
                let message = format!(
                    "release {release} did not go live: {slot} went back to {by}, its live release, meanwhile"
                );
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
                    .filter(|_| self.live.is_none() && !start.restart && self.pending.is_none())
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
                    .map(|(waiting, _)| waiting.clone());
                let fallback = match (&self.live, &self.last_good) {
                    (Some(_), _) => None,
                    _ if current_next.is_some() || pending_next.is_some() => None,
                    (None, _) if start.restart => None,
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
                if start.restart {
                    self.schedule_restart(release.clone());
                } else if let Some(good) = fallback {
                    // The last live release (not the one that just failed) comes back at
                    // once; the one that failed, with backoff.
                    match good != release {
                        true => self.restart_at_once(good),
                        false => self.schedule_restart(good),
                    }
                } else if let Some(current) = current_next {
                    self.pending = Some((current, Vec::new()));
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
        if let Some((release, waiters)) = self.pending.take() {
            self.begin(release, waiters, false).await;
        }
    }
}
