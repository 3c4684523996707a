//! A start: one generation launched for a release in a task of its own; its result
//! comes back as [`Msg::Started`] (see [`super::started`]).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use super::{tell, Cause, Msg, Start, Supervisor};
use crate::daemon::generation::Generation;
use crate::verdict::Verdict;

impl Supervisor {
    pub(super) async fn begin(
        &mut self,
        release: String,
        waiters: Vec<oneshot::Sender<Verdict>>,
        cause: Cause,
    ) {
        let slot = self.slot;
        // "live in" counts from here: without overlap, the old generation's drain and
        // stop below are time the slot serves nothing.
        let asked = Instant::now();
        // A deploy or restart now replaces any scheduled restart.
        self.restart_token += 1;
        self.restart_release = None;
        // Started again (a rollback to it): its earlier start's end is no verdict now.
        self.went_back.take_if(|(gone, _)| *gone == release);
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
            format!("{slot}: starting generation {id} for release {release} ({cause})"),
        );
        let (cancel, mut cancelled) = oneshot::channel();
        self.starting = Some(Start {
            release: release.clone(),
            since: asked,
            waiters,
            cause,
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
    pub(super) fn start_over(&self) {
        let mut status = self.handle().status();
        status.starting = false;
        status.started = None;
    }
}
