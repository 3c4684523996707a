//! The bounded queue of copies to the standby: a copy goes in once the active slot took
//! its write (2xx or 3xx), if it fits in `mirror.queue` and `MIRROR_MEMORY`; else it is
//! counted and logged as not mirrored. Once full, the queue takes nothing until it has
//! emptied (see [`Mirror::answered`]).

use std::sync::atomic::Ordering;

use http::StatusCode;
use tokio::sync::mpsc;

use super::{Mirror, PendingCopy};
use crate::config::MIRROR_MEMORY;
use crate::daemon::metrics::MirrorOutcome;
use crate::daemon::Daemon;

impl Mirror {
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

    pub(super) fn release(&self, size: u64) {
        self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
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
}
