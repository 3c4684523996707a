//! `POST /slots/<slot>/not-deployed?commit=<sha>&reason=<text>`: the hook tells the daemon
//! of a push that failed before it made a release (a build that failed, a checkout, a
//! full disk), so that the daemon's log, `/events` and `/metrics` have it too, beside
//! the deploys that reached the daemon. The daemon changes nothing for it.

use super::params::params;
use super::Daemon;
use crate::slot::Slot;

/// The longest reason taken, in characters (the hook sends at most 1,000).
const LIMIT: usize = 4_000;

#[derive(Debug, PartialEq)]
pub struct NotDeployed {
    /// The pushed commit, abbreviated or whole.
    commit: String,
    reason: String,
}

impl NotDeployed {
    pub fn parse(query: &str) -> Result<NotDeployed, String> {
        let usage = "takes ?commit=<sha>&reason=<why>";
        let pairs = params(query, &["commit", "reason"])?;
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
                .ok_or_else(|| {
                    format!("`{name}` is missing: POST /slots/<slot>/not-deployed {usage}")
                })
        };
        let (commit, reason) = (get("commit")?, get("reason")?);
        if !(4..=40).contains(&commit.len()) || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "commit=`{}` is not a commit id (4 to 40 hex digits)",
                crate::logging::quotable(&commit)
            ));
        }
        if reason.trim().is_empty() || reason.chars().count() > LIMIT {
            return Err(format!("reason must be 1 to {LIMIT} characters"));
        }
        Ok(NotDeployed { commit, reason })
    }

    /// Logged, kept in `/events` and counted: nothing else changes.
    pub fn record(self, daemon: &Daemon, slot: Slot) {
        daemon.metrics.not_deployed(slot);
        daemon.events.record(
            "not-deployed",
            Some(slot),
            true,
            format!(
                "{slot}: push of {} not deployed: {}",
                self.commit,
                crate::logging::quoted(&self.reason, LIMIT)
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_a_commit_and_a_reason_and_refuses_the_rest() {
        let good = NotDeployed::parse("commit=4f2a9c1&reason=build+failed%3A+exit+3").unwrap();
        assert_eq!(
            good,
            NotDeployed {
                commit: "4f2a9c1".into(),
                reason: "build failed: exit 3".into()
            }
        );
        for (query, says) in [
            ("reason=x", "`commit` is missing"),
            ("commit=4f2a9c1", "`reason` is missing"),
            ("commit=4f2a9c1&reason=", "reason must be 1 to"),
            ("commit=nothex&reason=x", "is not a commit id"),
            ("commit=4f2a9c1&reason=a%0Ab", "control character"),
            (
                "commit=4f2a9c1&reason=x&slot=blue",
                "unknown parameter `slot`",
            ),
        ] {
            let refused = NotDeployed::parse(query).unwrap_err();
            assert!(refused.contains(says), "{query}: {refused}");
        }
        let long = format!("commit=4f2a9c1&reason={}", "x".repeat(LIMIT + 1));
        assert!(NotDeployed::parse(&long).is_err());
    }
}
