//! `Events`: the recent history a person asks for: deploys, reloads, crashes,
//! heartbeat changes, switches.
//!
//! Each event is also logged once, with its slot as a field, when it is recorded.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use crate::slot::Slot;

/// How many events `/events` and `/status` can show.
const KEEP: usize = 200;
/// The kind that goes first when the ring is full: a slot's health flapping records
/// one every few seconds, and would push deploys and switches out within minutes.
const FIRST_TO_GO: &str = "health";

#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub seq: u64,
    /// RFC 3339 UTC.
    pub at: String,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<Slot>,
    pub message: String,
}

#[derive(Default)]
pub struct Events {
    /// Newest last; bounded to `KEEP`.
    ring: Mutex<VecDeque<Event>>,
}

impl Events {
    /// Records and logs an event. `warn` marks the ones a person should look at.
    pub fn record(&self, kind: &'static str, slot: Option<Slot>, warn: bool, message: String) {
        let slot_name = slot.map_or("-", Slot::name);
        if warn {
            tracing::warn!(slot = slot_name, kind, "{message}");
        } else {
            tracing::info!(slot = slot_name, kind, "{message}");
        }
        let mut ring = self.ring.lock().expect("events lock: no panic holds it");
        let seq = ring.back().map_or(1, |e| e.seq + 1);
        ring.push_back(Event {
            seq,
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            kind,
            slot,
            message,
        });
        if ring.len() > KEEP {
            match ring.iter().position(|e| e.kind == FIRST_TO_GO) {
                Some(oldest) => ring.remove(oldest),
                None => ring.pop_front(),
            };
        }
    }

    /// The newest `n` events, oldest first.
    pub fn recent(&self, n: usize) -> Vec<Event> {
        let ring = self.ring.lock().expect("events lock: no panic holds it");
        ring.iter()
            .skip(ring.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_only_the_newest_events() {
        let events = Events::default();
        for n in 1..=KEEP + 50 {
            events.record("deploy", None, false, format!("event {n}"));
        }
        let kept = events.recent(usize::MAX);
        assert_eq!(kept.len(), KEEP);
        assert_eq!(kept[0].message, "event 51");
        assert_eq!(kept[0].seq, 51);
        assert_eq!(kept[KEEP - 1].message, format!("event {}", KEEP + 50));
        let newest = events.recent(2);
        assert_eq!(newest.len(), 2);
        assert_eq!(newest[1].seq, (KEEP + 50) as u64);
    }

    #[test]
    fn a_flapping_slot_pushes_out_health_events_before_deploys() {
        let events = Events::default();
        events.record("deploy", Some(Slot::Blue), false, "deployed".into());
        events.record("switch", None, false, "switched".into());
        for n in 1..=KEEP * 3 {
            events.record("health", Some(Slot::Green), true, format!("flap {n}"));
        }
        let kept = events.recent(usize::MAX);
        assert_eq!(kept.len(), KEEP);
        assert_eq!(kept[0].message, "deployed");
        assert_eq!(kept[1].message, "switched");
        assert_eq!(kept[2].message, format!("flap {}", KEEP * 2 + 3));
        assert_eq!(kept[KEEP - 1].message, format!("flap {}", KEEP * 3));
        // With no health event left, the oldest goes.
        for n in 1..=KEEP {
            events.record("deploy", Some(Slot::Blue), false, format!("deploy {n}"));
        }
        let kept = events.recent(usize::MAX);
        assert_eq!(kept[0].message, "deploy 1");
    }
}
