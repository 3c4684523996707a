//! Mirror: copy writes that reach the front to the standby's live generation.
//!
//! The body of a mirrored request streams to the active slot and is copied as it passes,
//! up to `mirror.max_body` ([`tee`]); the client never waits for the copy.
//! The copy is queued once the active slot has answered: a write the active did not take
//! (no answer, a 4xx or a 5xx) is not applied to the standby either, so the two do not
//! drift apart (counted `active_failed`). Copies ([`copy`]) go through a bounded queue
//! ([`queue`]) to one sender task,
//! which lets them overlap on the standby only as their writes overlapped on the active
//! ([`order`]). Every copy that cannot be made (standby down, queue full,
//! body too large, an error or non-2xx answer) is counted by reason and logged with
//! method and path.
//!
//! A switch first lets the queue flush ([`Mirror::flush`]), so that the slot it makes
//! active has every write the old active took. Then it takes [`Mirror::barrier`]: a
//! mirrored write holds it (shared) from its routing until its copy is queued, so the
//! switch waits for the writes the old active is still answering, and new ones wait for
//! the flip (at [`Mirror::entry`], which the switch holds past the flip even when it
//! gives up waiting for `barrier`). It flushes the queue again, and flips while holding
//! [`Mirror::out`], which each copy out holds shared. Each copy carries the switch count
//! its write was routed under; one that a switch has passed by the time it would go out is
//! dropped (counted `stale`): sent, it could overwrite a newer write made since.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::upstream::{Body, BoxError};
use super::Daemon;
use crate::config::Config;
use crate::daemon::metrics::MirrorOutcome;
use crate::logging::Sparse;
use crate::slot::Slot;

mod copy;
mod order;
mod queue;
mod sender;
mod tee;

pub use copy::{Job, PendingCopy};
pub use sender::run;
use tee::Tee;

/// The longest a copy may take before it counts as failed.
const MIRROR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct Mirror {
    /// Bounded by `mirror.queue`: a full queue drops the copy (counted), never blocks
    /// the client.
    tx: mpsc::Sender<Job>,
    /// Copies waiting to go out (in the channel, or held by the sender until [`order`]
    /// lets it out), bounded by `mirror.queue`.
    waiting: AtomicUsize,
    /// Set when the queue was full: no copy is taken until it has emptied.
    refilling: AtomicBool,
    /// Bytes of the copies queued or out ([`Job::bytes`]), bounded by `MIRROR_MEMORY`.
    queued_bytes: AtomicU64,
    /// Body bytes of the copies being gathered, bounded by `tee::GATHERED_BYTES`.
    gathered_bytes: Arc<AtomicU64>,
    /// Keeps "not mirrored" lines to one a second.
    quiet: Sparse,
    /// Held shared by each copy while it is out, exclusive by a switch while it flips
    /// (fair: copies wait behind a switch waiting).
    pub out: tokio::sync::RwLock<()>,
    /// The clock of [`order`]: ticks when a mirrored write is routed and answered.
    clock: AtomicU64,
    /// Shared by each mirrored write from its routing until its copy is queued;
    /// exclusive for a switch's flip (fair: new writes wait behind a switch waiting).
    pub barrier: tokio::sync::RwLock<()>,
    /// Shared by a mirrored write only while it takes its share of `barrier`; exclusive
    /// by a switch from before it waits for `barrier` until after the flip. New writes
    /// wait here, not at `barrier`: when a switch gives up waiting for a write the active
    /// is still answering, its exclusive claim on `barrier` is dropped before the flip,
    /// and writes waiting at `barrier` would take it then and go to the old active.
    pub entry: tokio::sync::RwLock<()>,
    /// Copies queued, and copies the sender is done with (sent or dropped), ever: a
    /// flush waits until `done` reaches what `queued` was when it began.
    queued_total: AtomicU64,
    done_total: AtomicU64,
    /// Woken whenever `done_total` or `queued_total` moves.
    progress: tokio::sync::Notify,
}

impl Mirror {
    /// A mirrored write's share of the barrier, taken once no switch is flipping.
    pub async fn admit(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        let entry = self.entry.read().await;
        let share = self.barrier.read().await;
        drop(entry);
        share
    }

    /// The mirror and the receiving end its sender task drains.
    pub fn new(queue: usize) -> (Mirror, mpsc::Receiver<Job>) {
        let (tx, rx) = mpsc::channel(queue);
        (
            Mirror {
                tx,
                waiting: AtomicUsize::new(0),
                refilling: AtomicBool::new(false),
                queued_bytes: AtomicU64::new(0),
                gathered_bytes: Arc::default(),
                quiet: Sparse::default(),
                out: tokio::sync::RwLock::new(()),
                clock: AtomicU64::new(0),
                barrier: tokio::sync::RwLock::new(()),
                entry: tokio::sync::RwLock::new(()),
                queued_total: AtomicU64::new(0),
                done_total: AtomicU64::new(0),
                progress: tokio::sync::Notify::new(),
            },
            rx,
        )
    }

    /// Copies waiting to go out.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// A waiting copy goes out.
    fn went_out(&self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }

    /// Waits until the sender is done with every copy queued when it began, up to
    /// `deadline`; copies queued meanwhile are the next flush's (a switch flushes again
    /// once new writes wait). Waiting for the queue to be empty for a moment never ended
    /// under writes faster than the sender, and took the switch's whole wait. Returns
    /// whether it got there.
    pub async fn flush(&self, deadline: tokio::time::Instant) -> bool {
        let began = self.queued_total.load(Ordering::Acquire);
        loop {
            let moved = self.progress.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            // A copy counted but not queued after all (a full queue) is taken back out.
            let target = began.min(self.queued_total.load(Ordering::Acquire));
            if self.done_total.load(Ordering::Acquire) >= target {
                return true;
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return false;
            }
        }
    }

    /// Tells the "not mirrored" lines the once-a-second limit held back, as a count.
    pub fn tell_held(&self) {
        let held = self.quiet.flush();
        if held > 0 {
            tracing::warn!(
                "{held} more copies not mirrored in the last second (see bluegreen_mirror_total)"
            );
        }
    }

    /// Counts `n` more (or, `up` false, fewer) on `counter`, and wakes `flush`.
    fn moved(&self, counter: &AtomicU64, up: bool, n: u64) {
        if up {
            counter.fetch_add(n, Ordering::AcqRel);
        } else {
            counter.fetch_sub(n, Ordering::AcqRel);
        }
        self.progress.notify_waiters();
    }

    /// The next tick of [`order`]'s clock.
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::AcqRel)
    }

    /// Whether requests with `method` are mirrored (when mirroring is on).
    pub fn mirrors(config: &Config, method: &Method) -> bool {
        config.mirror.methods.iter().any(|m| m == method.as_str())
    }

    /// Copies `body` as it streams to the active slot (up to `mirror.max_body`, see
    /// [`tee`]); returns the body to send to the active slot and the copy for `standby`,
    /// to hand to [`Mirror::answered`] once the active has answered. `switches` is
    /// [`Daemon::switches`] when the write was routed.
    pub fn tee(
        &self,
        daemon: &Arc<Daemon>,
        config: &Config,
        parts: &Parts,
        body: Incoming,
        (standby, switches): (Slot, u64),
    ) -> (Body, Option<PendingCopy>) {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let limit = config.mirror.max_body;
        if declared.is_some_and(|n| n > limit) {
            self.lost(
                daemon,
                MirrorOutcome::TooLarge,
                &parts.method,
                &path,
                tee::too_large(limit),
            );
            return (body.map_err(BoxError::from).boxed(), None);
        }
        let (body, copied) = Tee::new(body, limit, self.gathered_bytes.clone());
        let copy = PendingCopy {
            job: Some(Job {
                slot: standby,
                switches,
                routed: self.tick(),
                answered: 0,
                method: parts.method.clone(),
                path,
                headers: parts.headers.clone(),
                body: Bytes::new(),
            }),
            copied,
            declared,
            queue: config.mirror.queue,
            daemon: daemon.clone(),
        };
        (body.boxed(), Some(copy))
    }

    /// A write the front answered itself with `status` (the active slot has no live
    /// generation, or the request cannot be passed on): the active did not take it, so
    /// no copy goes (counted `active_failed`, as every write the front takes is counted).
    pub fn unanswered(
        &self,
        daemon: &Daemon,
        request: (&Method, &http::Uri),
        status: StatusCode,
        because: &str,
    ) {
        let path = request.1.path_and_query().map_or("/", |p| p.as_str());
        let why = format!("the front answered {status} itself ({because})");
        self.lost(daemon, MirrorOutcome::ActiveFailed, request.0, path, why);
    }

    fn lost(
        &self,
        daemon: &Daemon,
        reason: MirrorOutcome,
        method: &Method,
        path: &str,
        why: String,
    ) {
        daemon.metrics.mirror(reason);
        let reason = reason.as_str();
        // A full queue drops a copy per request: a line a second says so, with a count.
        match self.quiet.admit() {
            Some(0) => tracing::warn!(reason, "not mirrored: {method} {path}: {why}"),
            Some(held) => tracing::warn!(
                reason,
                "not mirrored: {method} {path}: {why} (and {held} more since the last such line; see bluegreen_mirror_total)"
            ),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_flush_waits_for_the_copies_queued_before_it_not_after() {
        let (mirror, _rx) = Mirror::new(4);
        let mirror = Arc::new(mirror);
        mirror.moved(&mirror.queued_total, true, 1);
        mirror.moved(&mirror.queued_total, true, 1);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let flush = tokio::spawn({
            let mirror = mirror.clone();
            async move { mirror.flush(deadline).await }
        });
        // Writes faster than the sender: each copy done, a new one is queued, so the
        // queue is never empty.
        for _ in 0..4 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            mirror.moved(&mirror.queued_total, true, 1);
            mirror.moved(&mirror.done_total, true, 1);
        }
        assert!(flush.await.unwrap(), "the two queued first went out");
        assert!(tokio::time::Instant::now() < deadline);
    }
}
