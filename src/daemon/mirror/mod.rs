//! Mirror: copy writes that reach the front to the standby's live generation.
//!
//! The body of a mirrored request streams to the active slot and is copied as it passes,
//! up to `mirror.max_body` ([`tee`]); the client never waits for the copy.
//! The copy is queued once the active slot has answered: a write the active did not take
//! (no answer, a 4xx or a 5xx) is not applied to the standby either, so the two do not
//! drift apart (counted `active_failed`). Copies go through a bounded queue to one sender task,
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
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::upstream::{Body, BoxError};
use super::Daemon;
use crate::config::{Config, MIRROR_MEMORY};
use crate::daemon::metrics::MirrorOutcome;
use crate::logging::Sparse;
use crate::slot::Slot;

mod order;
mod sender;
mod tee;

pub use sender::run;
use tee::{Copied, Tee};

/// The longest a copy may take before it counts as failed.
const MIRROR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One copy to send.
pub struct Job {
    slot: Slot,
    /// [`Daemon::switches`] when its write was routed.
    switches: u64,
    /// [`Mirror::tick`]s when its write was routed, and when the active answered it.
    routed: u64,
    answered: u64,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A copy of a write, waiting for the active slot's answer. Dropped without one (the
/// client left, or the daemon stopped, while the active was answering), it is counted
/// and logged as not mirrored.
pub struct PendingCopy {
    /// The copy, its body still empty: it is in `copied` until the client's ends.
    job: Option<Job>,
    copied: Arc<Mutex<Copied>>,
    /// The request's Content-Length.
    declared: Option<u64>,
    /// `mirror.queue`, for the message when it is full.
    queue: usize,
    daemon: Arc<Daemon>,
}

impl Job {
    /// What the copy holds in memory, against `MIRROR_MEMORY`: its body, path and headers.
    fn bytes(&self) -> u64 {
        let head: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        (self.body.len() + self.path.len() + head) as u64
    }
}

/// A copy that cannot be sent: the job (for its method and path), the reason (a metrics
/// label) and why.
type Unsendable = (Job, MirrorOutcome, String);

impl PendingCopy {
    /// The copy with its body, or why it has none; `None` once taken. `when`: what came
    /// before a body that had not ended.
    fn take(&mut self, when: &str) -> Option<Result<Job, Unsendable>> {
        let mut job = self.job.take()?;
        let body = self
            .copied
            .lock()
            .expect("copy lock: no panic holds it")
            .take(self.declared, when);
        Some(match body {
            Ok(body) => {
                job.body = body;
                Ok(job)
            }
            Err((reason, why)) => Err((job, reason, why)),
        })
    }
}

impl Drop for PendingCopy {
    fn drop(&mut self) {
        // Not answered: the request was cut off (the client went away, a drain's end).
        let (job, reason, why) = match self
            .take("when the request was cut off (the client went away, or a drain's end)")
        {
            None => return,
            Some(Ok(job)) => (
                job,
                MirrorOutcome::Error,
                "the request ended before the active slot answered (it may have applied it)"
                    .to_string(),
            ),
            Some(Err(lost)) => lost,
        };
        self.daemon
            .mirror
            .lost(&self.daemon, reason, &job.method, &job.path, why);
    }
}

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

    /// The active slot answered `copy`'s request with `status` (`None`: no answer). A
    /// write it took goes to the standby's queue; one it did not is not applied there.
    pub fn answered(&self, daemon: &Daemon, mut copy: PendingCopy, status: Option<StatusCode>) {
        let queue = copy.queue;
        let (mut job, cut) = match copy.take("when the active slot answered") {
            None => return,
            Some(Ok(job)) => (job, None),
            Some(Err((job, reason, why))) => (job, Some((reason, why))),
        };
        // Each way this write's copy is not queued, until the copy is made ready below.
        let lost = |reason, why| self.lost(daemon, reason, &job.method, &job.path, why);
        // The active's verdict first: one that gave no answer is why, not the body it
        // had not all read yet.
        match status {
            // 2xx or 3xx: taken. A 4xx is a write refused (a delete of what the active
            // lacks), which applied to the standby could change what it holds.
            Some(status) if status.is_success() || status.is_redirection() => {}
            _ => {
                let why = status.map_or_else(
                    || "the active slot gave no answer".to_string(),
                    |status| format!("the active slot answered {status}"),
                );
                return lost(MirrorOutcome::ActiveFailed, why);
            }
        }
        if let Some((reason, why)) = cut {
            return lost(reason, why);
        }
        let size = job.bytes();
        if !self.reserve(size) {
            let why = format!(
                "the mirrored copies queued and out already hold {} MiB",
                MIRROR_MEMORY >> 20
            );
            return lost(MirrorOutcome::QueueFull, why);
        }
        // The sender holds the next copy out of the channel until it may go out: the
        // count of copies waiting, not the channel, is what `mirror.queue` bounds. Once
        // full, it takes no copy until it has emptied: letting one in as each goes out
        // would fill it with writes far apart on the active, which [`order`] must send
        // one at a time, and the mirror would never catch up while the writes go on.
        let refilling = self.refilling.load(Ordering::Acquire);
        let room = (!refilling || self.waiting.load(Ordering::Acquire) == 0)
            && self
                .waiting
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < queue).then_some(n + 1)
                })
                .is_ok();
        if !room {
            self.refilling.store(true, Ordering::Release);
            self.release(size);
            let why = if refilling {
                format!(
                    "mirror.queue was full ({queue}): it takes copies again once it has emptied"
                )
            } else {
                format!("mirror.queue is full ({queue})")
            };
            return lost(MirrorOutcome::QueueFull, why);
        }
        if refilling {
            self.refilling.store(false, Ordering::Release);
        }
        let (method, path) = (job.method.clone(), job.path.clone());
        // Before the client can see the answer, so before any write it sends next.
        job.answered = self.tick();
        // Counted before it is queued, so the sender can never be done with more copies
        // than were queued; taken back out below if it was not.
        self.moved(&self.queued_total, true, 1);
        let (reason, why) = match self.tx.try_send(job) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => (
                MirrorOutcome::QueueFull,
                format!("mirror.queue is full ({queue})"),
            ),
            Err(mpsc::error::TrySendError::Closed(_)) => (
                MirrorOutcome::Error,
                "the mirror sender has stopped".to_string(),
            ),
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        self.moved(&self.queued_total, false, 1);
        self.release(size);
        self.lost(daemon, reason, &method, &path, why);
    }
    /// Counts `size` bytes in the queue, if they fit in `MIRROR_MEMORY`.
    fn reserve(&self, size: u64) -> bool {
        self.queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + size <= MIRROR_MEMORY).then_some(held + size)
            })
            .is_ok()
    }

    fn release(&self, size: u64) {
        self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
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

    #[test]
    fn queued_copies_hold_a_bounded_number_of_bytes() {
        let (mirror, _rx) = Mirror::new(4);
        assert!(mirror.reserve(MIRROR_MEMORY - 10));
        assert!(!mirror.reserve(11), "over the byte budget");
        assert!(mirror.reserve(10));
        mirror.release(MIRROR_MEMORY);
        assert!(
            mirror.reserve(MIRROR_MEMORY),
            "sent copies free their bytes"
        );
    }

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
