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
mod own;
mod params;
mod passed;
mod pool;
mod proxy;
mod proxy_thread;
mod recorded;
mod route;
mod serve;
mod slot_handle;
mod slot_log;
pub(crate) mod sockets;
mod startup;
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
use crate::state::State;
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

    /// Why the last SIGHUP's config was refused (see `config_refused`).
    pub fn refusal(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.config_refused
            .lock()
            .expect("refusal lock: no panic holds it")
    }

    pub fn token(&self) -> Option<String> {
        self.token
            .read()
            .expect("token lock: no panic holds it")
            .clone()
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
        let (mut healthy, mut in_flight, mut tunnels) = ([false; 2], [0; 2], [0; 2]);
        let live = Slot::ALL.map(|slot| {
            let (live, status) = self.slots[slot.index()].live_and_status();
            healthy[slot.index()] = live.is_some() && matches!(status.health, Some(Ok(())));
            let every = || live.iter().chain(&status.draining);
            in_flight[slot.index()] = every().map(|g| g.in_flight.get()).sum();
            tunnels[slot.index()] = every().map(|g| g.tunnels.get()).sum();
            live
        });
        let last_switch = self.last_switch().and_then(|last| {
            let at = humantime::parse_rfc3339(&last.at).ok()?;
            Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs_f64())
        });
        self.metrics.render(&metrics::Gauges {
            in_flight,
            tunnels,
            live_generation: live.each_ref().map(|g| g.as_ref().map_or(0, |g| g.id)),
            healthy,
            active: self.active(),
            last_switch,
            mirror_queued: self.mirror.queued() as u64,
            config_reload_ok: self.refusal().is_none(),
        })
    }
}
