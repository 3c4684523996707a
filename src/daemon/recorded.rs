//! What the daemon keeps in `state.json` and reads back without a file: the active slot
//! and its switches, the generation numbers, each slot's last live and failed release,
//! and mirroring. Each change is written to disk first (write-temp-then-rename, under the
//! state lock), then taken; see [`Daemon::set_active`] for the two that go ahead when
//! the write fails.

use std::sync::atomic::Ordering;

use super::{metrics, Daemon};
use crate::slot::Slot;
use crate::state::{Failed, LastSwitch, State};

impl Daemon {
    pub fn active(&self) -> Option<Slot> {
        self.routing().0
    }

    /// The active slot, and how many switches there have been (a mirrored copy made
    /// before the last one is stale: see [`super::mirror`]).
    pub fn routing(&self) -> (Option<Slot>, u64) {
        let word = self.active.load(Ordering::Acquire);
        let slot = match word & 0b11 {
            1 => Some(Slot::Blue),
            2 => Some(Slot::Green),
            _ => None,
        };
        (slot, word >> 2)
    }

    /// How many switches there have been since the daemon started.
    pub fn switches(&self) -> u64 {
        self.routing().1
    }

    /// Records `slot` as active in `state.json`, then routes the front to it. With
    /// `only_if_none`, does nothing when a slot is already active (checked under the
    /// lock). Returns whether it changed anything. An operator's switch that cannot be
    /// recorded (a full disk) is refused; the heartbeat's, and the first slot's adoption,
    /// route the front all the same and log the failure: traffic must leave a failing
    /// slot even when the disk is full, and the next state write records it.
    pub fn set_active(
        &self,
        slot: Slot,
        switch: Option<LastSwitch>,
        only_if_none: bool,
    ) -> anyhow::Result<bool> {
        // Whose switch it is: the heartbeat's (true) or an operator's (false), if one.
        let by_heartbeat = switch
            .as_ref()
            .map(|s| s.cause == metrics::SwitchCause::Heartbeat.as_str());
        {
            let mut state = self.state.lock().expect("state lock: no panic holds it");
            if only_if_none && state.active.is_some() {
                return Ok(false);
            }
            let mut next = state.clone();
            self.carry_generation(&mut next);
            next.active = Some(slot);
            if switch.is_some() {
                next.last_switch = switch;
                next.rearmed = false;
            }
            match next.save(&self.layout.state_file()) {
                Ok(()) => {}
                Err(e) if by_heartbeat != Some(false) => {
                    tracing::error!(
                        "{slot} is active, but {e:#}: a daemon restarted before the next state write starts on the slot it names"
                    );
                    // Not on disk: still to be carried by the next write that works.
                    next.generation = state.generation;
                }
                Err(e) => return Err(e),
            }
            *state = next;
            // Written under the state lock, as every change of it: the count can't skip.
            let switches = self.switches() + 1;
            self.active
                .store(switches << 2 | (slot.index() as u64 + 1), Ordering::Release);
        }
        // The state lock is released before the heartbeat's is taken (see the lock
        // order on [`Daemon`]). Both inside the switch: an operator's switch queued behind the heartbeat's comes after its
        // turning automatic switching off, never before (which would undo theirs).
        match by_heartbeat {
            Some(false) => {
                self.rearm(true);
            }
            Some(true) => self
                .heartbeat
                .lock()
                .expect("heartbeat lock: no panic holds it")
                .switched(),
            None => {}
        }
        Ok(true)
    }

    /// An operator switched (`moved`) or asked for the slot already active: the heartbeat
    /// may switch on its own again. The failing streak starts anew when traffic moved or
    /// automatic switching was off; otherwise it stands, so that a script asking again
    /// and again for the active slot does not hold a failover off. Returns whether it was
    /// off.
    pub fn rearm(&self, moved: bool) -> bool {
        let mut heartbeat = self
            .heartbeat
            .lock()
            .expect("heartbeat lock: no panic holds it");
        let was_off = !heartbeat.armed;
        heartbeat.armed = true;
        if moved || was_off {
            heartbeat.failures = 0;
        }
        was_off
    }

    /// An operator asked for the slot the heartbeat moved traffic to: as `rearm`, and
    /// kept in `state.json`, so that a restarted daemon switches on its own too. Returns
    /// whether it was off.
    pub fn rearm_kept(&self) -> bool {
        if !self.rearm(false) {
            return false;
        }
        let mut state = self.state.lock().expect("state lock: no panic holds it");
        if let Err(e) = self.save_state(&mut state, |next| next.rearmed = true) {
            tracing::error!(
                "automatic switching is on again, but {e:#}: a daemon restarted before the next state write has it off"
            );
        }
        true
    }

    /// A fresh root starts on the first slot that has a live generation.
    pub(super) fn adopt_if_none(&self, slot: Slot) {
        match self.set_active(slot, None, true) {
            Ok(true) => self.events.record(
                "switch",
                Some(slot),
                false,
                format!("{slot} is active (first slot with a live generation)"),
            ),
            Ok(false) => {}
            Err(e) => tracing::error!("cannot record the active slot: {e:#}"),
        }
    }

    /// The release of `slot`'s last generation that went live, as `state.json` has it.
    pub fn last_live(&self, slot: Slot) -> Option<String> {
        self.state
            .lock()
            .expect("state lock: no panic holds it")
            .live
            .get(&slot)
            .cloned()
    }

    /// The next generation number, recorded in `state.json` so that a restarted daemon
    /// counts on from it.
    pub fn new_generation(&self) -> u64 {
        let id = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut state = self.state.lock().expect("state lock: no panic holds it");
        if state.generation < id {
            if let Err(e) = self.save_state(&mut state, |next| next.generation = id) {
                tracing::error!("cannot record generation {id}: {e:#}");
            }
        }
        id
    }

    /// Every state write carries the last generation number handed out: one whose own
    /// write failed (a full disk) is recorded by the next that works.
    fn carry_generation(&self, next: &mut State) {
        next.generation = next
            .generation
            .max(self.next_generation.load(Ordering::Relaxed));
    }

    /// Records the last generation number handed out, if `state.json` is behind it (its
    /// write failed at the time, on a full disk).
    pub fn record_generation(&self) {
        let mut state = self.state.lock().expect("state lock: no panic holds it");
        let counted = self.next_generation.load(Ordering::Relaxed);
        if state.generation < counted {
            if let Err(e) = self.save_state(&mut state, |_| {}) {
                tracing::error!("cannot record generation {counted}: {e:#}");
            }
        }
    }

    /// Records `release` as `slot`'s last live one in `state.json`, for a restarted
    /// daemon to fall back to.
    pub fn set_last_live(&self, slot: Slot, release: &str) {
        let mut state = self.state.lock().expect("state lock: no panic holds it");
        if state.live.get(&slot).map(String::as_str) == Some(release) {
            return;
        }
        let recorded = self.save_state(&mut state, |next| {
            next.live.insert(slot, release.to_string());
        });
        if let Err(e) = recorded {
            tracing::error!("cannot record {slot}'s live release: {e:#}");
        }
    }

    /// The slot's `current` release whose last start failed (before a restart too), and why.
    pub fn failed(&self, slot: Slot) -> Option<Failed> {
        self.state
            .lock()
            .expect("state lock: no panic holds it")
            .failed
            .get(&slot)
            .cloned()
    }

    /// Records (or, with `None`, forgets) the slot's `current` release that failed to start.
    pub fn set_failed(&self, slot: Slot, failed: Option<Failed>) {
        let mut state = self.state.lock().expect("state lock: no panic holds it");
        if state.failed.get(&slot) == failed.as_ref() {
            return;
        }
        let recorded = self.save_state(&mut state, |next| {
            match failed {
                Some(failed) => next.failed.insert(slot, failed),
                None => next.failed.remove(&slot),
            };
        });
        if let Err(e) = recorded {
            tracing::error!("cannot record {slot}'s failed release: {e:#}");
        }
    }

    /// Writes `state.json` as `state` with `change` made, and takes that for `state` once
    /// it is on disk: a write that fails leaves both as they were. The caller holds the
    /// state lock throughout.
    fn save_state(&self, state: &mut State, change: impl FnOnce(&mut State)) -> anyhow::Result<()> {
        let mut next = state.clone();
        change(&mut next);
        self.carry_generation(&mut next);
        next.save(&self.layout.state_file())?;
        *state = next;
        Ok(())
    }

    pub fn last_switch(&self) -> Option<LastSwitch> {
        self.state
            .lock()
            .expect("state lock: no panic holds it")
            .last_switch
            .clone()
    }

    pub fn mirroring(&self) -> bool {
        self.mirroring.load(Ordering::Acquire)
    }

    pub fn set_mirroring(&self, on: bool) -> anyhow::Result<()> {
        {
            let mut state = self.state.lock().expect("state lock: no panic holds it");
            self.save_state(&mut state, |next| next.mirroring = on)?;
            self.mirroring.store(on, Ordering::Release);
        }
        self.events.record(
            "mirroring",
            None,
            false,
            format!("mirroring {}", if on { "on" } else { "off" }),
        );
        Ok(())
    }
}
