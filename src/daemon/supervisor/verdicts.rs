//! What the supervisor tells: a start of `current` that failed ([`Refused`]), the lines
//! `/status` shows for a slot that runs something else or nothing, and the verdicts sent
//! to whoever waits for a reload.

use tokio::sync::oneshot;

use crate::slot::Slot;
use crate::state::Failed;
use crate::verdict::Verdict;

/// A start of the slot's `current` release that failed: why `/status` says it is not live.
pub(super) struct Refused {
    /// The release and why, as `state.json` keeps them.
    pub(super) failed: Failed,
    /// Recorded in `state.json` by the daemon before this one.
    pub(super) before_restart: bool,
}

impl Refused {
    /// `release <id> failed[ before the daemon restarted]`: how every message about it starts.
    pub(super) fn told(&self) -> String {
        let when = match self.before_restart {
            true => " before the daemon restarted",
            false => "",
        };
        format!("release {} failed{when}", self.failed.release)
    }

    /// What `/status` says while `serving`, the last live release, runs instead: the
    /// failure's own message named what served then (a generation since replaced, or
    /// none while the slot was down).
    pub(super) fn while_serving(&self, slot: Slot, serving: &str) -> String {
        format!(
            "{}: {}; {slot} runs its last live release {serving} instead (`bluegreen restart {slot}` tries it again, as a push of a new commit does)",
            self.told(),
            self.failed.reason
        )
    }
}

/// What `/status` says while `serving`, the last live release, runs for a `current` that
/// names no release: `why` is [`crate::release::no_current`]'s.
pub(super) fn missing_current(slot: Slot, why: &str, serving: &str) -> String {
    format!("{why}: {}", serving_instead(slot, serving))
}

/// Why `release` did not go live: `current` went back to `by`, the live release, while it
/// started or before it did.
pub(super) fn went_back(slot: Slot, release: &str, by: &str) -> String {
    format!(
        "release {release} did not go live: {slot} went back to {by}, its live release, meanwhile"
    )
}

/// Why a slot that never had a release answers 503, and how to give it one.
pub(in crate::daemon) fn no_release(slot: Slot, branch: &str) -> String {
    format!(
        "{slot} has no release yet: git push {slot} {}",
        crate::pasted::refspec(branch)
    )
}

/// What `/status` says for a `current` that names no release, while nothing serves.
pub(super) fn nothing_starts(slot: Slot, why: &str) -> String {
    format!("{why}: nothing starts until `bluegreen rollback {slot} --to <release>`, or a push, sets it")
}

/// The end of [`missing_current`]'s line, which does not change with `why`.
pub(super) fn serving_instead(slot: Slot, serving: &str) -> String {
    format!("{slot} runs its last live release {serving}; `bluegreen rollback {slot} --to {serving}`, or a push, sets it again")
}

pub(super) fn verdict_failed(slot: Slot, release: &str, reason: String) -> Verdict {
    Verdict {
        slot: Some(slot),
        release: release.to_string(),
        reason,
        ..Verdict::default()
    }
}

pub(super) fn refuse(reply: Option<oneshot::Sender<Verdict>>, slot: Slot, reason: String) {
    answer(reply, verdict_failed(slot, "", reason));
}

/// Sends `verdict` to everyone who waits for it (one may have stopped waiting).
pub(super) fn tell(waiters: Vec<oneshot::Sender<Verdict>>, verdict: &Verdict) {
    for w in waiters {
        let _ = w.send(verdict.clone());
    }
}

pub(super) fn answer(reply: Option<oneshot::Sender<Verdict>>, verdict: Verdict) {
    if let Some(reply) = reply {
        let _ = reply.send(verdict);
    }
}
