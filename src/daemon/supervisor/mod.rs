//! `Supervisor`: the task that owns one slot's generations.
//!
//! It alone starts, routes, drains, restarts and stops the slot's generations, reacting
//! to one message at a time: reloads ([`reload`]: from the hook, the API, the file watch), results
//! of starts, exits, restart timers, shutdown. A start ([`start`]) runs in its own task and reports
//! back ([`started`]), so the supervisor keeps answering while a generation gets ready. A reload that
//! arrives during a start waits for it, then starts its release (the newest wins); a
//! deploy's reload that takes the slot back to its live release ends the start. A
//! crashed live generation is restarted with backoff ([`restart`]); a failed start that leaves the
//! slot with no live generation brings the last release that was live back (remembered
//! in `state.json`, so also after a restart of the daemon), and keeps retrying it with
//! backoff. The first start after the daemon starts is retried the same way: after a
//! reboot the app may fail until its database is up. A `current` that failed before the
//! daemon restarted is not the first start: the last live release is; nor is one that
//! never went live (the daemon stopped during its start): the last live release goes
//! first, and it follows. What it tells of a failed start, and to whom, is [`verdicts`].

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::generation::Generation;
use super::Daemon;
use crate::release;
use crate::slot::Slot;
use crate::verdict::{By, Verdict};
use backoff::Backoff;
pub(in crate::daemon) use verdicts::no_release;
use verdicts::{
    answer, missing_current, nothing_starts, refuse, serving_instead, tell, verdict_failed,
    went_back, Refused,
};

mod backoff;
mod reload;
mod restart;
mod start;
mod started;
mod verdicts;

/// How a reload treats a slot that already runs its current release.
#[derive(Clone, Debug, PartialEq)]
pub enum Reload {
    /// Start it again all the same: an operator's `POST /slots/<slot>/reload`
    /// ([`Cause::Restart`]), the daemon's start ([`Cause::Startup`]).
    Always(Cause),
    /// Do nothing, nor when it just failed to start it: the file watch's reloads. One
    /// back to the live release ends a start of another (see `back_to_live`).
    IfChanged,
    /// The caller flipped `current` to this release: a generation of it that is live or
    /// starting already is the answer (the file watch may have started it first, while
    /// the hook was still pruning); otherwise start it. When `current` has moved on
    /// since (a later push or rollback), nothing starts: that one's caller reports it.
    /// With what made it current, when the caller said (`&by=`).
    Deployed(String, Option<By>),
}

/// Why a generation starts, as its `start` event in `/events` says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cause {
    Startup,
    /// `current` flipped by a push, rollback or promote (`None`: a caller that did not
    /// say which, such as an older hook).
    Deployed(Option<By>),
    /// `bluegreen restart` (`POST /slots/<slot>/reload`).
    Restart,
    /// The file watch saw `current` move (a hand flip, a command whose own reload did
    /// not reach the daemon).
    Watch,
    /// A crashed or failed generation's release again, after its backoff or at once.
    Backoff,
    /// The last live release, served first or brought back in place of `current`.
    LastLive,
    /// `current`, after the last live release served in its place.
    CurrentNext,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cause::Startup => "as the daemon starts",
            Cause::Deployed(Some(By::Push)) => "made current by a push",
            Cause::Deployed(Some(By::Rollback)) => "made current by a rollback",
            Cause::Deployed(Some(By::Promote)) => "made current by a promote",
            Cause::Deployed(None) => "made current by a push, rollback or promote",
            Cause::Restart => "a restart asked through the control API",
            Cause::Watch => "the file watch saw current move to it",
            Cause::Backoff => "a restart by the daemon",
            Cause::LastLive => "the last live release, in place of current",
            Cause::CurrentNext => "current, after the last live release",
        })
    }
}

pub enum Msg {
    /// Run the slot's current release.
    Reload {
        reply: Option<oneshot::Sender<Verdict>>,
        mode: Reload,
    },
    /// Drain and stop everything, then answer.
    Shutdown(oneshot::Sender<()>),
    Started {
        release: String,
        result: Result<Arc<Generation>, (Option<Arc<Generation>>, String)>,
    },
    Exited {
        generation: u64,
    },
    RestartDue {
        token: u64,
    },
}

/// The start in progress.
struct Start {
    release: String,
    since: Instant,
    waiters: Vec<oneshot::Sender<Verdict>>,
    /// What asked for it: a restart by the daemon ([`Cause::Backoff`]) that fails is
    /// retried with backoff, not replaced by the last live release.
    cause: Cause,
    /// Ends the wait for readiness when the daemon stops, or `current` went back.
    cancel: Option<oneshot::Sender<()>>,
    /// The live release `current` went back to meanwhile: this one does not go live,
    /// whatever its result.
    superseded: Option<String>,
}

pub struct Supervisor {
    slot: Slot,
    daemon: Arc<Daemon>,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// Our own sender, for start tasks, exit watchers and timers to report back.
    tx: mpsc::UnboundedSender<Msg>,
    live: Option<Arc<Generation>>,
    starting: Option<Start>,
    /// A release asked for while another was starting, with who waits for it and why.
    pending: Option<(String, Vec<oneshot::Sender<Verdict>>, Cause)>,
    /// The release whose start ended as `current` went back to the live release, and
    /// that release: the deploy's own reload, asked after that (a hook slower than the
    /// file watch), is told the same, not that a later push or rollback superseded it.
    /// Until that release starts again.
    went_back: Option<(String, String)>,
    /// The release whose last start failed, and why, while it is `current`: a file
    /// watch's reload does not start it again, and a deploy's is told the failure.
    last_failed: Option<(String, String)>,
    /// The last failure of a release while it was `current`: what `/status` says as the
    /// slot's last error once an older release is live again (a restart of that one,
    /// failing meanwhile, must not leave its own reason there).
    current_failed: Option<Refused>,
    /// The pause before a crashed generation's restart.
    backoff: Backoff,
    /// Identifies the restart timer that is still wanted; older timers are ignored.
    restart_token: u64,
    restart_release: Option<String>,
    /// The release of the last generation that went live: what comes back when a slot is
    /// left with none.
    last_good: Option<String>,
    /// When the live generation went live.
    live_since: Instant,
    /// The slot had a current release when the daemon started (or, with `current`
    /// removed, a last live release), and that start has not finished yet.
    first_start: bool,
    /// The `current` that the daemon's first start passed over for the last live
    /// release (it failed before the restart): started next if that one fails too, so a
    /// slot whose older release no longer works is not left retrying it forever.
    passed_over: Option<String>,
    draining: Vec<JoinHandle<()>>,
    /// True once the daemon begins to stop, before its `Shutdown` comes (the slots keep
    /// routing a moment longer): no generation is started from then on.
    stopping: watch::Receiver<bool>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Supervisor {
    pub fn new(
        slot: Slot,
        daemon: Arc<Daemon>,
        tx: mpsc::UnboundedSender<Msg>,
        rx: mpsc::UnboundedReceiver<Msg>,
        stopping: watch::Receiver<bool>,
    ) -> Supervisor {
        // A release of the slot, never a path out of it: `state.json` lies in the root,
        // which the app's processes can write.
        let current = release::current(&daemon.layout, slot);
        // What rollback went to, if it was tried and failed: the daemon then kept `live`.
        let kept = current.is_some() && daemon.failed(slot).map(|failed| failed.release) == current;
        // A rollback went back from it while no daemon ran: what it went to, not what
        // the operator took away (see `release::comes_back`).
        let last_good = release::comes_back(
            &daemon.layout,
            slot,
            daemon.last_live(slot),
            current.as_deref(),
            kept,
        );
        // `current` failed to start before the daemon restarted, and another release went
        // live before it: that one starts first (see `reload`), and the failure stays
        // what `/status` says until `current` is tried again.
        let failed = daemon
            .failed(slot)
            .filter(|f| Some(&f.release) == current.as_ref())
            .and_then(|failed| {
                let good = last_good.as_ref().filter(|good| **good != failed.release)?;
                let refused = Refused {
                    failed,
                    before_restart: true,
                };
                let message = refused.while_serving(slot, good);
                daemon.slots[slot.index()].set_error(Some(message.clone()));
                Some((refused, message))
            });
        let first_start = current.is_some() || last_good.is_some();
        let supervisor = Supervisor {
            slot,
            rx,
            tx,
            live: None,
            starting: None,
            pending: None,
            went_back: None,
            last_failed: failed
                .as_ref()
                .map(|(refused, message)| (refused.failed.release.clone(), message.clone())),
            current_failed: failed.map(|(refused, _)| refused),
            backoff: Backoff::default(),
            restart_token: 0,
            restart_release: None,
            last_good,
            live_since: Instant::now(),
            first_start,
            passed_over: None,
            daemon,
            draining: Vec::new(),
            stopping,
            shutdown: None,
        };
        if first_start {
            supervisor
                .handle()
                .route
                .clear(format!("{slot} is starting"));
        } else if let Some(why) = release::elsewhere(&supervisor.daemon.layout, slot) {
            // A hand edit pointed `current` at what is not a release, and nothing went
            // live before: nothing starts, and the slot's 503 and `/status` say why.
            supervisor.say_nothing_starts(&why);
        }
        supervisor
    }

    /// Whether the daemon's start asks it for a first generation: the slot has a
    /// `current`, or (removed by hand) a last live release to serve instead.
    pub fn starts_first(&self) -> bool {
        self.first_start
    }

    /// `current` names no release (`why`) and nothing serves: the slot's 503 and
    /// `/status` say so. The line said.
    fn say_nothing_starts(&self, why: &str) -> String {
        let error = nothing_starts(self.slot, why);
        self.handle().route.clear(error.clone());
        self.handle().set_error(Some(error.clone()));
        error
    }

    pub async fn run(mut self) {
        while let Some(msg) = self.rx.recv().await {
            match msg {
                Msg::Reload { reply, mode } => self.reload(reply, mode).await,
                Msg::Started { release, result } => self.started(release, result).await,
                Msg::Exited { generation } => self.exited(generation).await,
                Msg::RestartDue { token } => self.restart_due(token).await,
                Msg::Shutdown(done) => {
                    self.shutdown = Some(done);
                    self.stop_all().await;
                }
            }
            if self.shutdown.is_some() && self.starting.is_none() {
                for handle in self.draining.drain(..) {
                    let _ = handle.await;
                }
                if let Some(done) = self.shutdown.take() {
                    let _ = done.send(());
                }
                return;
            }
        }
    }

    /// The daemon is stopping: its `Shutdown` came, or is on its way.
    fn is_stopping(&self) -> bool {
        self.shutdown.is_some() || *self.stopping.borrow()
    }

    fn handle(&self) -> &super::SlotHandle {
        &self.daemon.slots[self.slot.index()]
    }

    /// `current` came back to `release`, the live one (a rollback while a push started):
    /// another release starting or waiting its turn goes no further. It went live for a
    /// moment before, and this one came back as a second generation.
    fn back_to_live(&mut self, release: &str) {
        // Why `current` was not live is over: it is live.
        if let Some(refused) = self.current_failed.take_if(|r| r.failed.release != release) {
            let mut status = self.handle().status();
            if status.last_error.starts_with(&refused.told()) {
                status.last_error.clear();
            }
        }
        {
            let mut status = self.handle().status();
            if status
                .last_error
                .ends_with(&serving_instead(self.slot, release))
            {
                status.last_error.clear();
            }
        }
        if self.pending.as_ref().is_some_and(|(p, ..)| p != release) {
            self.supersede_pending(release);
        }
        if let Some(start) = self.starting.as_mut().filter(|s| s.release != release) {
            start.superseded = Some(release.to_string());
            self.went_back = Some((start.release.clone(), release.to_string()));
            if let Some(cancel) = start.cancel.take() {
                let _ = cancel.send(());
            }
        }
    }

    /// Tells whoever waits for the release queued behind the start that `by` replaced it.
    fn supersede_pending(&mut self, by: &str) {
        if let Some((waiting, waiters, _)) = self.pending.take() {
            tell(
                waiters,
                &verdict_failed(self.slot, &waiting, format!("superseded by {by}")),
            );
        }
    }

    async fn stop_all(&mut self) {
        self.restart_token += 1;
        // A generation still getting ready is not waited for: it is stopped.
        if let Some(cancel) = self.starting.as_mut().and_then(|s| s.cancel.take()) {
            let _ = cancel.send(());
        }
        if let Some((release, waiters, _)) = self.pending.take() {
            tell(waiters, &Verdict::stopping(self.slot, &release));
        }
        if let Some(live) = self.live.take() {
            self.handle().stop_routing("the daemon is stopping".into());
            self.drain(live);
        }
    }

    /// Drains `old` (no longer routed to) in a task of its own, then stops it; the slot's
    /// status lists it until it is gone (from when it left the route: `go_live`,
    /// `stop_routing`).
    fn drain(&mut self, old: Arc<Generation>) {
        let config = self.daemon.config();
        let (drain, stop) = (config.app.drain_timeout, config.app.stop_timeout);
        {
            let mut status = self.handle().status();
            if !status.draining.iter().any(|g| Arc::ptr_eq(g, &old)) {
                status.draining.push(old.clone());
            }
        }
        let (daemon, slot) = (self.daemon.clone(), self.slot);
        self.draining.retain(|h| !h.is_finished());
        self.draining.push(tokio::spawn(async move {
            let left = old.drain(drain).await;
            if left > 0 {
                let requests = if left == 1 { "request" } else { "requests" };
                daemon.events.record(
                    "drain",
                    Some(slot),
                    true,
                    format!(
                        "{slot}: generation {}'s drain ended at app.drain_timeout ({}) with {left} {requests} in flight, left to its stop (SIGTERM now, SIGKILL after app.stop_timeout {})",
                        old.id,
                        humantime::format_duration(drain),
                        humantime::format_duration(stop)
                    ),
                );
            }
            old.stop(stop).await;
            daemon.slots[slot.index()]
                .status()
                .draining
                .retain(|g| !Arc::ptr_eq(g, &old));
        }));
    }
}
