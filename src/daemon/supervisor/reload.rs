//! A reload: the slot asked to run its `current` release (by the hook, the API, the
//! file watch, `bluegreen restart`), started, refused with the reason, or queued behind
//! the start under way (the newest wins).

use tokio::sync::oneshot;

use super::{
    answer, missing_current, no_release, refuse, verdict_failed, went_back, Cause, Reload,
    Supervisor,
};
use crate::release;
use crate::verdict::Verdict;

impl Supervisor {
    /// Answers `reply` with the live generation's verdict: its release is live.
    fn answer_live(&self, reply: Option<oneshot::Sender<Verdict>>) {
        let (Some(live), Some(reply)) = (&self.live, reply) else {
            return;
        };
        let _ = reply.send(Verdict {
            slot: Some(self.slot),
            release: live.release.clone(),
            commit: live.commit.clone(),
            live: true,
            generation: live.id,
            took_ms: self
                .live_since
                .saturating_duration_since(live.started)
                .as_millis() as u64,
            ..Verdict::default()
        });
    }

    pub(super) async fn reload(&mut self, reply: Option<oneshot::Sender<Verdict>>, mode: Reload) {
        let slot = self.slot;
        if self.is_stopping() {
            return answer(reply, Verdict::stopping(slot, ""));
        }
        let cause = match &mode {
            Reload::Always(cause) => *cause,
            Reload::IfChanged => Cause::Watch,
            Reload::Deployed(_, by) => Cause::Deployed(*by),
        };
        // The root moved (or was renamed, or restored) under the daemon: its paths name
        // nothing now, and "current is missing (removed by hand?)" would mislead.
        if self.daemon.root_gone() {
            let why = format!(
                "the root {} is gone from there since the daemon started (moved, renamed or restored?): nothing new starts; stop this daemon and start `bluegreen serve` on the root where it is now",
                self.daemon.layout.root().display()
            );
            tracing::warn!("{slot}: {why}");
            return refuse(reply, slot, why);
        }
        let Some(current) = release::current(&self.daemon.layout, slot) else {
            // `current` removed, or pointed at what is not a release, while no daemon
            // ran: the last live release serves, and `/status` says why `current` does
            // not name it (see `started`).
            let elsewhere = release::elsewhere(&self.daemon.layout, slot);
            let why = release::no_current(&self.daemon.layout, slot);
            let first = self.first_start && self.live.is_none() && self.starting.is_none();
            if let Some(good) = self.last_good.clone().filter(|_| first) {
                self.daemon.events.record(
                    "start",
                    Some(slot),
                    false,
                    format!("{slot}: {}", missing_current(slot, &why, &good)),
                );
                return self
                    .begin(good, reply.into_iter().collect(), Cause::LastLive)
                    .await;
            }
            // Meanwhile (a hand edit): nothing starts, what serves goes on serving, and
            // `/status` (and the slot's 503, with nothing live) says why. A slot with
            // nothing live and no `current` at all is as one never deployed.
            let error = match &self.live {
                Some(live) => missing_current(slot, &why, &live.release),
                None if elsewhere.is_some() => self.say_nothing_starts(&why),
                None => {
                    if self
                        .handle()
                        .status()
                        .last_error
                        .starts_with(&format!("{slot}/current "))
                    {
                        self.handle().set_error(None);
                        let branch = self.daemon.config().branch.clone();
                        self.handle().route.clear(no_release(slot, &branch));
                    }
                    // Never deployed: no `current` was ever removed. (Nor was it when
                    // the slot's whole folder is gone: that is what to say then.)
                    let layout = &self.daemon.layout;
                    let why = match release::slot_folder(layout, slot) {
                        Err(gone) => format!("{gone:#}"),
                        Ok(()) if release::list(layout, slot).is_ok_and(|r| r.is_empty()) => {
                            no_release(slot, &self.daemon.config().branch)
                        }
                        Ok(()) => why,
                    };
                    return refuse(reply, slot, why);
                }
            };
            self.daemon
                .events
                .record("start", Some(slot), false, format!("{slot}: {error}"));
            self.handle().set_error(Some(error));
            return refuse(reply, slot, why);
        };
        // `current` moved away from the release that failed (a push, a rollback): a
        // restarted daemon has nothing to pass over, and coming back to it is a new try.
        if self
            .daemon
            .failed(slot)
            .is_some_and(|failed| failed.release != current)
        {
            self.daemon.set_failed(slot, None);
        }
        let mut release = current;
        // The daemon's first start: a `current` that failed before it restarted is not
        // tried before the last live release, which serves at once (a refused push must
        // not hold a reboot's clients for its whole `ready_timeout`).
        if self.first_start && self.live.is_none() && self.starting.is_none() {
            if let (Some((failed, _)), Some(good)) = (&self.last_failed, &self.last_good) {
                if *failed == release && *good != release {
                    self.daemon.events.record(
                        "start",
                        Some(slot),
                        false,
                        format!("{slot}: release {release} failed before the daemon restarted: starting the last live release {good} instead"),
                    );
                    self.passed_over = Some(release);
                    release = good.clone();
                }
            }
            // A `current` that never went live (the daemon stopped during its start, or
            // it came while the daemon was down) is no more proven than one that failed:
            // the last live release serves at once, and `current` starts next, as a
            // deploy (a bad one must not hold the slot's clients for its whole
            // `ready_timeout`); the caller's verdict is the last live release's (the
            // daemon's startup opens the slot on it). Without overlap the old release
            // would only be stopped again for it: `current` starts straight away. A
            // deploy's own reload wants its release's verdict: it starts it.
            let unproven = self.last_failed.is_none()
                && self.daemon.config().app.overlap
                && !matches!(mode, Reload::Deployed(..))
                && !release::went_live(&self.daemon.layout, slot, &release);
            if let Some(good) = self
                .last_good
                .clone()
                .filter(|good| unproven && *good != release)
            {
                self.daemon.events.record(
                    "start",
                    Some(slot),
                    false,
                    format!("{slot}: release {release} has not gone live yet: starting the last live release {good} first, then it"),
                );
                self.pending = Some((release, Vec::new(), Cause::CurrentNext));
                return self
                    .begin(good, reply.into_iter().collect(), Cause::LastLive)
                    .await;
            }
        }
        // `current` has moved away from the release that failed: coming back to it (a
        // rollback) is a new attempt.
        if self
            .last_failed
            .as_ref()
            .is_some_and(|(failed, _)| *failed != release)
        {
            self.last_failed = None;
        }
        if let Reload::Deployed(id, _) = &mode {
            // Ids sort by age: one older than `current` that is gone was pruned by the
            // later deploy that superseded it, before this deploy's hook asked.
            let pruned = release::is_name(id) && *id < release;
            if !release::exists(&self.daemon.layout, slot, id) && !pruned {
                return refuse(reply, slot, format!("{slot} has no release {id}"));
            }
            if *id != release {
                // `current` moved on (a later push, a rollback, a hand flip) before this
                // deploy's hook asked, and the file watch had begun its release already:
                // the pusher is told what becomes of it, as if it had asked in time.
                if let Some(start) = self.starting.as_mut().filter(|s| s.release == *id) {
                    start.waiters.extend(reply);
                    return;
                }
                if self.live.as_ref().is_some_and(|live| live.release == *id) {
                    return self.answer_live(reply);
                }
                // Its start ended as `current` went back to the live release; or `current`
                // went back (to an older release: ids sort by age) before it began, and it
                // never went live (one that served was superseded by the rollback).
                let by = match &self.went_back {
                    Some((gone, by)) if gone == id => Some(by.clone()),
                    _ => Some(release.clone()).filter(|back| {
                        release::is_name(id)
                            && back < id
                            && !release::went_live(&self.daemon.layout, slot, id)
                            && self.live.as_ref().is_some_and(|live| live.release == *back)
                    }),
                };
                return refuse(
                    reply,
                    slot,
                    match by {
                        Some(by) => went_back(slot, id, &by),
                        None => format!("{id} was superseded by {release} (a later push or rollback), whose own verdict tells"),
                    },
                );
            }
            if self
                .live
                .as_ref()
                .is_some_and(|live| live.release == release)
            {
                self.back_to_live(&release);
                return self.answer_live(reply);
            }
            // The file watch saw the flip first, and its start of this release failed
            // while the deploy was still pruning: that is the deploy's verdict, not a
            // reason to start the release a second time.
            let queued = self.starting.as_ref().is_some_and(|s| s.release == release)
                || self.pending.as_ref().is_some_and(|(p, ..)| *p == release);
            if let Some((_, why)) = self.last_failed.as_ref().filter(|_| !queued) {
                return answer(reply, verdict_failed(slot, &release, why.clone()));
            }
        }
        if mode == Reload::IfChanged {
            // `current` came back to the live release (a hand flip, or a rollback the
            // daemon heard of only through the watch): as for a deploy's, a start of
            // another release under way or waiting its turn goes no further.
            if self.live.as_ref().is_some_and(|g| g.release == release) {
                return self.back_to_live(&release);
            }
            let known = [
                self.live.as_ref().map(|g| &g.release),
                self.starting.as_ref().map(|s| &s.release),
                self.pending.as_ref().map(|p| &p.0),
                self.last_failed.as_ref().map(|(failed, _)| failed),
                // A crashed generation's restart waits out its backoff: the file watch
                // (the flip of the deploy just before) must not start it at once.
                self.restart_release.as_ref(),
            ];
            if known.contains(&Some(&release)) {
                return;
            }
        }
        if let Some(start) = &mut self.starting {
            if start.release == release {
                start.waiters.extend(reply);
                // `current` came back to the release starting: one waiting its turn
                // behind it is no longer wanted.
                self.supersede_pending(&release);
                return;
            }
            if let Some((waiting, old, _)) = &mut self.pending {
                if *waiting == release {
                    old.extend(reply);
                    return;
                }
            }
            // The newer release supersedes the one that was waiting its turn.
            self.supersede_pending(&release);
            self.pending = Some((release, reply.into_iter().collect(), cause));
            return;
        }
        self.begin(release, reply.into_iter().collect(), cause)
            .await;
    }
}
