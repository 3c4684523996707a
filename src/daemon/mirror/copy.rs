//! A mirrored write's copy: the [`Job`] the sender sends to the standby, and the
//! [`PendingCopy`] that holds it until the active slot has answered (the body still
//! gathering in [`super::tee`]); dropped unanswered, it is counted and logged as not
//! mirrored.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method};

use super::tee::Copied;
use crate::daemon::metrics::MirrorOutcome;
use crate::daemon::Daemon;
use crate::slot::Slot;

/// One copy to send.
pub struct Job {
    pub(super) slot: Slot,
    /// [`Daemon::switches`] when its write was routed.
    pub(super) switches: u64,
    /// [`super::Mirror::tick`]s when its write was routed, and when the active answered it.
    pub(super) routed: u64,
    pub(super) answered: u64,
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// A copy of a write, waiting for the active slot's answer. Dropped without one (the
/// client left, or the daemon stopped, while the active was answering), it is counted
/// and logged as not mirrored.
pub struct PendingCopy {
    /// The copy, its body still empty: it is in `copied` until the client's ends.
    pub(super) job: Option<Job>,
    pub(super) copied: Arc<Mutex<Copied>>,
    /// The request's Content-Length.
    pub(super) declared: Option<u64>,
    /// `mirror.queue`, for the message when it is full.
    pub(super) queue: usize,
    pub(super) daemon: Arc<Daemon>,
}

impl Job {
    /// What the copy holds in memory, against `MIRROR_MEMORY`: its body, path and headers.
    pub(super) fn bytes(&self) -> u64 {
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
pub(super) type Unsendable = (Job, MirrorOutcome, String);

impl PendingCopy {
    /// The copy with its body, or why it has none; `None` once taken. `when`: what came
    /// before a body that had not ended.
    pub(super) fn take(&mut self, when: &str) -> Option<Result<Job, Unsendable>> {
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
