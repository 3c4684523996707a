//! `State`: what the daemon must remember across restarts (`state.json`).
//!
//! The active slot, the mirroring flag, the last switch (and whether an operator has
//! since turned automatic switching on again), each slot's last live release
//! (what a restarted daemon falls back to when the slot's `current` release does not
//! start), the release whose start failed while it was `current` (which a restarted
//! daemon does not try before that one), and the last generation number. Written to a temp file, fsynced and renamed, so a crash leaves the
//! old state or the new one.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::fsops;
use crate::slot::Slot;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The slot the front sends to; `None` until a slot first has a release.
    pub active: Option<Slot>,
    /// Copy writes to the standby (on for a new root).
    #[serde(default = "yes")]
    pub mirroring: bool,
    #[serde(default)]
    pub last_switch: Option<LastSwitch>,
    /// After the heartbeat's own switch, an operator asked for the slot it moved traffic
    /// to, which turns automatic switching on again; the next switch clears it (its cause
    /// tells then).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rearmed: bool,
    /// The release of each slot's last generation that went live.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub live: BTreeMap<Slot, String>,
    /// Each slot's `current` release whose last start failed, and why; gone once it goes
    /// live. A restarted daemon starts the slot's last live release instead.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<Slot, Failed>,
    /// The last generation number handed out: a restarted daemon counts on from it, so a
    /// number names one worker in the whole log history.
    #[serde(default, deserialize_with = "counted")]
    pub generation: u64,
}

/// The highest generation number taken from the file: far beyond what any daemon hands
/// out, and exact in every JSON reader. A hand edit near `u64::MAX` had the next number
/// overflow, and the daemon started no generation at all.
pub const MAX_GENERATION: u64 = 1 << 53;

/// A generation number no higher than [`MAX_GENERATION`].
fn counted<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = u64::deserialize(d)?;
    if n > MAX_GENERATION {
        return Err(serde::de::Error::custom(format!(
            "generation {n} is beyond {MAX_GENERATION}"
        )));
    }
    Ok(n)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastSwitch {
    pub from: Slot,
    pub to: Slot,
    /// RFC 3339 UTC.
    pub at: String,
    /// "api", "front", "heartbeat", ...
    pub cause: String,
}

/// A release that failed to start while it was its slot's `current`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    pub release: String,
    /// Why, in one line (`not ready after 30s ...`).
    pub reason: String,
}

fn yes() -> bool {
    true
}

impl Default for State {
    fn default() -> State {
        State {
            active: None,
            mirroring: true,
            last_switch: None,
            rearmed: false,
            live: BTreeMap::new(),
            failed: BTreeMap::new(),
            generation: 0,
        }
    }
}

/// The largest `state.json` read: a few hundred bytes as a rule.
const MAX_BYTES: u64 = 1 << 20;

impl State {
    /// Reads `path`; a missing file is a new root's state.
    pub fn load(path: &Path) -> anyhow::Result<State> {
        match crate::fsops::read_regular(path, MAX_BYTES) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| {
                    format!(
                        "{} is not valid state (bluegreen never leaves it half-written: was it edited? move it aside to start with none: the active slot is then the first to go live, and mirroring is on)",
                        path.display()
                    )
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).context("cannot serialise state")?;
        bytes.push(b'\n');
        fsops::write_atomic(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_number_beyond_counting_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, format!("{{\"generation\": {}}}", u64::MAX)).unwrap();
        let e = format!("{:#}", State::load(&path).unwrap_err());
        assert!(e.contains("is not valid state"), "{e}");
        assert!(
            e.contains("generation 18446744073709551615 is beyond 9007199254740992"),
            "{e}"
        );
        std::fs::write(&path, "{\"generation\": 9007199254740992}").unwrap();
        assert_eq!(State::load(&path).unwrap().generation, 1 << 53);
    }

    #[test]
    fn round_trips_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(State::load(&path).unwrap(), State::default());
        let state = State {
            active: Some(Slot::Green),
            mirroring: false,
            last_switch: None,
            rearmed: true,
            live: [(Slot::Blue, "20260101T000000.000Z-abc1234".to_string())].into(),
            failed: [(
                Slot::Blue,
                Failed {
                    release: "20260102T000000.000Z-def5678".to_string(),
                    reason: "not ready after 30s (app.ready_timeout)".to_string(),
                },
            )]
            .into(),
            generation: 7,
        };
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), state);
        // A state.json written before `live` existed still loads.
        std::fs::write(&path, r#"{"active":"blue","mirroring":true}"#).unwrap();
        assert!(State::load(&path).unwrap().live.is_empty());
        assert!(State::load(&path).unwrap().failed.is_empty());
        assert_eq!(State::load(&path).unwrap().generation, 0);
    }
}
