//! The daemon (`bluegreen serve`): supervisor, slot listeners, front router, control API.
//!
//! `serve` binds every listener first (a taken port is a one-line error before anything
//! starts), stops workers a killed predecessor left, then runs a [`supervisor::Supervisor`]
//! task per slot, the [`heartbeat`], the [`mirror`] sender and the file [`watch`] on one
//! tokio runtime, and the data path ([`accept`], [`proxy`], [`pool`]) on one
//! single-threaded runtime per core. The [`control`] API runs on the first runtime.
//! SIGTERM/SIGINT drain and stop everything; SIGHUP re-reads the config.

mod accept;
mod answered_early;
mod config_reload;
mod control;
mod control_conns;
mod events;
mod front_switch;
mod gate;
mod generation;
mod head_timer;
mod headers;
mod heartbeat;
mod hints;
mod holder;
mod idle;
mod local;
mod memory;
mod metrics;
mod migrate;
mod mirror;
mod not_deployed;
mod output;
mod params;
mod passed;
mod pool;
mod proxy;
mod proxy_thread;
mod route;
mod serve;
mod slot_handle;
mod slot_log;
pub(crate) mod sockets;
mod status;
mod stop;
mod supervisor;
mod switch;
mod systemd;
mod target;
mod tracked;
mod upgrade;
mod upstream;
mod watch;
mod workers;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::oneshot;

use crate::config::Config;
use crate::layout::Layout;
use crate::slot::Slot;
use crate::state::{Failed, LastSwitch, State};
use crate::verdict::Verdict;

pub use serve::serve;
pub use slot_handle::{SlotHandle, SlotStatus};
pub use workers::reap_orphans;

/// What every part of the running daemon shares.
///
/// Lock order: a slot's `status` lock may be held while its `route` is set or read
/// ([`SlotHandle::go_live`], [`SlotHandle::live_and_status`]), so a generation is never
/// missed or counted twice between the route and `draining`; no other two of these
/// locks are held together (each is released before the next is taken).
pub struct Daemon {
    pub layout: Layout,
    /// Replaced as a whole on SIGHUP; readers clone the `Arc` and keep a consistent view.
    config: RwLock<Arc<Config>>,
    /// Moves on every replacement of `config`, for the proxy threads' copies.
    config_version: AtomicU64,
    /// Woken on every replacement of `config`, for loops that wait by its values.
    pub config_changed: tokio::sync::Notify,
    /// The bearer token from `router.token_file`, if one is set.
    token: RwLock<Option<String>>,
    pub slots: [SlotHandle; 2],
    /// The front's slot in the low two bits (0 none, 1 blue, 2 green), above them the
    /// number of switches since the daemon started: read on every front request, so one
    /// atomic, and a request sees the slot and the switch it belongs to together (see
    /// [`Daemon::routing`]). Written after `state.json` has the new slot, or, for the
    /// heartbeat's switch and the first slot's adoption, after that write failed (see
    /// [`Daemon::set_active`]).
    active: AtomicU64,
    /// `state.mirroring` for the front's every write, read without the state lock.
    mirroring: AtomicBool,
    /// The persisted state; held while it is written so writes never interleave.
    state: Mutex<State>,
    pub events: events::Events,
    pub metrics: metrics::Metrics,
    pub client: upstream::Client,
    pub ports: upstream::Ports,
    pub mirror: mirror::Mirror,
    /// Serialises switches (API, front, heartbeat).
    pub switching: switch::turns::Turns,
    /// The switch under way and its step, for `/status`: a migration or a wait for the
    /// mirrored writes may take a while, and a failing active stays active meanwhile.
    pub underway: Mutex<Option<switch::Underway>>,
    /// The listen addresses whose sockets systemd passed (socket activation): moving
    /// one takes the socket unit's word too.
    pub from_systemd: Vec<std::net::SocketAddr>,
    /// The last generation number handed out: both slots number from it, and
    /// `state.json` carries it on, so a number is never reused after a restart.
    next_generation: AtomicU64,
    /// Whether the heartbeat may switch, and its failures in a row: written by the
    /// heartbeat and by switches, read by `/status`.
    pub heartbeat: Mutex<heartbeat::Heartbeat>,
    /// Why the last SIGHUP's config was refused (the running one is older than the
    /// file), or `None` when it was taken.
    pub config_refused: Mutex<Option<String>>,
    /// The root folder's device and inode as the daemon started: another folder there
    /// since, or none, is the root moved, renamed or restored under the daemon.
    pub root_folder: Option<(u64, u64)>,
}

/// A proxy thread's copy of the config: reading it writes nothing shared.
pub struct ConfigCopy {
    version: u64,
    pub config: Arc<Config>,
}

/// A folder's device and inode, if it is there.
fn root_folder(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Daemon {
    /// Whether the root this daemon serves is gone from its path since it started
    /// (moved, renamed, removed or restored from a backup): its workers run on, but
    /// nothing the commands and pushes do there reaches it.
    pub fn root_gone(&self) -> bool {
        self.root_folder.is_some() && root_folder(self.layout.root()) != self.root_folder
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .expect("config lock: no panic holds it")
            .clone()
    }

    pub fn config_copy(&self) -> ConfigCopy {
        let config = self.config.read().expect("config lock: no panic holds it");
        ConfigCopy {
            version: self.config_version.load(Ordering::Acquire),
            config: config.clone(),
        }
    }

    /// Brings `copy` up to date after a SIGHUP; a look at one counter otherwise.
    pub fn refresh_config<'a>(&self, copy: &'a mut ConfigCopy) -> &'a Config {
        if copy.version != self.config_version.load(Ordering::Acquire) {
            *copy = self.config_copy();
        }
        &copy.config
    }

    pub fn set_config(&self, config: Config) {
        let mut current = self.config.write().expect("config lock: no panic holds it");
        *current = Arc::new(config);
        self.config_version.fetch_add(1, Ordering::AcqRel);
        self.config_changed.notify_waiters();
    }

    pub fn token(&self) -> Option<String> {
        self.token
            .read()
            .expect("token lock: no panic holds it")
            .clone()
    }

    pub fn active(&self) -> Option<Slot> {
        self.routing().0
    }

    /// The active slot, and how many switches there have been (a mirrored copy made
    /// before the last one is stale: see [`mirror`]).
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
    fn adopt_if_none(&self, slot: Slot) {
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

    /// Why the last SIGHUP's config was refused (see `config_refused`).
    pub fn refusal(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.config_refused
            .lock()
            .expect("refusal lock: no panic holds it")
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

    /// Asks `slot`'s supervisor to run its current release; the verdict comes on the receiver.
    pub fn reload(&self, slot: Slot, mode: supervisor::Reload) -> oneshot::Receiver<Verdict> {
        let (tx, rx) = oneshot::channel();
        let _ = self.slots[slot.index()].tx.send(supervisor::Msg::Reload {
            reply: Some(tx),
            mode,
        });
        rx
    }

    /// Records a health check result; a change is an event.
    pub fn set_health(&self, slot: Slot, result: Result<(), String>) {
        let mut status = self.slots[slot.index()].status();
        let was_ok = status.health.as_ref().map(Result::is_ok);
        let now_ok = result.is_ok();
        status.health = Some(result.clone());
        drop(status);
        if was_ok != Some(now_ok) {
            match result {
                Ok(()) => {
                    self.events
                        .record("health", Some(slot), false, format!("{slot} healthy"))
                }
                Err(why) => {
                    self.events
                        .record("health", Some(slot), true, format!("{slot} failing: {why}"))
                }
            }
        }
    }

    pub fn metrics_text(&self) -> String {
        let (mut healthy, mut in_flight) = ([false; 2], [0; 2]);
        let live = Slot::ALL.map(|slot| {
            let (live, status) = self.slots[slot.index()].live_and_status();
            healthy[slot.index()] = live.is_some() && matches!(status.health, Some(Ok(())));
            in_flight[slot.index()] = live.as_ref().map_or(0, |g| g.in_flight.get())
                + status
                    .draining
                    .iter()
                    .map(|g| g.in_flight.get())
                    .sum::<u64>();
            live
        });
        let last_switch = self.last_switch().and_then(|last| {
            let at = humantime::parse_rfc3339(&last.at).ok()?;
            Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64())
        });
        self.metrics.render(&metrics::Gauges {
            in_flight,
            live_generation: live.each_ref().map(|g| g.as_ref().map_or(0, |g| g.id)),
            healthy,
            active: self.active(),
            last_switch,
            mirror_queued: self.mirror.queued() as u64,
            config_reload_ok: self.refusal().is_none(),
        })
    }
}
