//! `serve`: bind every listener, start every part of the daemon, run until SIGTERM/SIGINT.
//!
//! Listeners are bound (or taken from systemd, see [`sockets`]) before anything else, so a
//! taken port is a one-line error before any worker starts; orphans of a killed daemon are
//! stopped before ours start. Each listener accepts once its slot's first generation has
//! settled: live, or failed with nothing coming back ([`super::startup`]). SIGHUP re-reads the config and
//! refuses a bad one ([`super::config_reload`]). SIGTERM and SIGINT end in
//! [`super::stop`].

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use tokio::sync::{mpsc, watch as tokio_watch};

use super::{
    accept, control, events, heartbeat, metrics, mirror, route, sockets, startup, supervisor,
    systemd, upstream, watch, workers, Daemon, SlotHandle,
};
use crate::config::Config;
use crate::fsops;
use crate::layout::Layout;
use crate::release;
use crate::slot::Slot;
use crate::state::State;

/// How long `serve` waits for the root's lock before it says another daemon holds it.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// Runs the daemon for `layout` until SIGTERM or SIGINT.
pub fn serve(layout: Layout) -> anyhow::Result<bool> {
    super::memory::configure();
    // From the start: a SIGTERM while a killed daemon's orphans are being stopped (up to
    // stop_timeout) ended this one with them half stopped, and a SIGHUP (a reload) ended
    // it too. Kept until `run` reads them: a stop then stops, a reload reloads. SIGUSR1
    // and SIGUSR2 mean nothing here: by default either ended the daemon at once and left
    // its workers running (a `kill -USR1` meant for another program, a log rotator's
    // habit); they are logged and ignored.
    let signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2])
        .context("cannot handle signals")?;
    let config = Config::load(&layout.config_file())?;
    let token = super::config_reload::read_token(&config)?;
    super::config_reload::warn_about_token(&config, token.as_deref());
    // A second daemon would take the first one's workers for orphans and stop them.
    let lock = layout.serve_lock();
    if let Some(parent) = lock.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // A daemon killed a moment ago holds the lock until the kernel has finished its exit
    // (a few ms): `kill -9` then `serve` must not be taken for a second daemon.
    let deadline = Instant::now() + LOCK_WAIT;
    let mut said = false;
    let _serving = loop {
        if let Some(lock) = fsops::try_lock(&lock)? {
            break lock;
        }
        // At debug: a second daemon's refusal below stays the one line it prints.
        if !std::mem::replace(&mut said, true) {
            tracing::debug!(
                "{} is held ({}a daemon still exiting?): waiting up to {} for it",
                lock.display(),
                crate::procfs::flock_holder(&lock)
                    .map_or_else(String::new, |pid| format!("pid {pid}; ")),
                humantime::format_duration(LOCK_WAIT)
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "another bluegreen serve is running on {} ({}it holds {})",
            layout.root().display(),
            crate::procfs::flock_holder(&lock)
                .map_or_else(String::new, |pid| format!("pid {pid}; ")),
            lock.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // A daemon killed mid-write left its temp file; only the lock holder writes here.
    fsops::remove_stale_siblings(&layout.state_file());
    // The last daemon's stop is over: this one answers.
    let _ = fsops::remove_any(&layout.stopping_mark());
    // Read under the lock: a daemon still stopping may write it until it lets go.
    let mut state = State::load(&layout.state_file())?;
    if !layout.state_file().exists() {
        warn_state_gone(&layout);
    }
    // Before anything is bound or started: a file limit too low to serve is refused.
    let connections = accept::connection_limit()?;
    let bound = sockets::bind(&config, &layout)?;
    if !bound.passed.is_empty() {
        tracing::info!(
            "took {} listening socket(s) from systemd, bound {}",
            bound.passed.len(),
            4 - bound.passed.len()
        );
    }
    // Workers a killed daemon left get up to stop_timeout each to go.
    systemd::extend_timeout(config.app.stop_timeout + systemd::MARGIN);
    let orphans = workers::reap_orphans(&layout, config.app.stop_timeout);
    if orphans.groups > 0 {
        tracing::warn!(
            "stopped {} worker group(s) left by a previous daemon",
            orphans.groups
        );
    }
    // A killed daemon's workers carried their generation numbers: one it could not write
    // to state.json (a full disk) is not handed out again.
    state.generation = state.generation.max(orphans.highest_generation);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bluegreen")
        .build()
        .context("cannot start the async runtime")?;
    let stop_timeout = config.app.stop_timeout;
    let result = runtime.block_on(run(
        layout.clone(),
        config,
        token,
        state,
        (bound, connections),
        signals,
    ));
    runtime.shutdown_timeout(Duration::from_secs(1));
    // Every generation's group is gone; a process one of them moved out of its group
    // (setsid) still carries the worker marker, and goes now.
    let leftovers = workers::reap_leftovers(&layout, stop_timeout);
    if leftovers > 0 {
        tracing::warn!(
            "stopped {leftovers} process group(s) that workers had left outside their own"
        );
    }
    result
}

async fn run(
    layout: Layout,
    config: Config,
    token: Option<String>,
    state: State,
    (bound, connections): (sockets::Bound, usize),
    mut signal_iter: Signals,
) -> anyhow::Result<bool> {
    let (mirror, mirror_rx) = mirror::Mirror::new(config.mirror.queue);
    let generations = state.generation;
    let mut receivers = Vec::new();
    let slots = Slot::ALL.map(|slot| {
        let (tx, rx) = mpsc::unbounded_channel();
        receivers.push((slot, tx.clone(), rx));
        SlotHandle {
            // Until its supervisor says what it starts, if anything (below).
            route: route::Route::new(supervisor::no_release(slot, &config.branch)),
            tx,
            status: Mutex::default(),
        }
    });
    // The data path's threads: one per core.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let daemon = Arc::new(Daemon {
        layout: layout.clone(),
        heartbeat: Mutex::new(heartbeat::Heartbeat::restored(&state)),
        config: RwLock::new(Arc::new(config.clone())),
        config_version: AtomicU64::new(0),
        config_changed: tokio::sync::Notify::new(),
        token: RwLock::new(token),
        slots,
        active: AtomicU64::new(state.active.map_or(0, |s| s.index() as u64 + 1)),
        mirroring: AtomicBool::new(state.mirroring),
        state: Mutex::new(state),
        events: events::Events::default(),
        metrics: metrics::Metrics::new(threads),
        client: upstream::client(),
        ports: upstream::Ports::default(),
        mirror,
        switching: Default::default(),
        from_systemd: bound.passed.clone(),
        underway: Mutex::new(None),
        next_generation: AtomicU64::new(generations),
        config_refused: Mutex::new(None),
        root_folder: super::root_folder(layout.root()),
    });

    // Signals that came before now (while a killed daemon's workers were stopped, or
    // the sockets bound): a stop among them starts no generation, which would run the
    // app's start (its migrations, its jobs) after the stop was asked for.
    let early: Vec<i32> = signal_iter.pending().collect();
    let stop_asked = early
        .iter()
        .any(|&signal| matches!(signal, SIGTERM | SIGINT));
    let (stop_tx, stop_rx) = tokio_watch::channel(false);
    let mut supervisors = Vec::new();
    let mut starts = [false; 2];
    for (slot, tx, rx) in receivers {
        let supervisor = supervisor::Supervisor::new(slot, daemon.clone(), tx, rx, stop_rx.clone());
        // A slot with a `current`, or with none (removed by hand) but a last live
        // release, as its supervisor found them (its 503 says "is starting" meanwhile).
        starts[slot.index()] = !stop_asked && supervisor.starts_first();
        supervisors.push(tokio::spawn(supervisor.run()));
    }
    // Each slot's first start is asked for before anything else can ask (the control
    // API's deploys, the file watch): it is the one that decides what serves first (the
    // last live release before a `current` that never went live, see `Supervisor`).
    let [first_blue, first_green] = Slot::ALL.map(|slot| {
        starts[slot.index()]
            .then(|| daemon.reload(slot, supervisor::Reload::Always(supervisor::Cause::Startup)))
    });
    let [blue, green] = bound.slots;
    // Each listener accepts once what it routes to has settled (see `startup` below);
    // until then the kernel holds new connections in the listen backlog.
    let [front_open, blue_open, green_open] = [(); 3].map(|()| tokio_watch::channel(false));
    let listeners = accept::start(
        vec![
            (bound.front, accept::Listener::Front, front_open.1),
            (blue, accept::Listener::Slot(Slot::Blue), blue_open.1),
            (green, accept::Listener::Slot(Slot::Green), green_open.1),
        ],
        threads,
        connections,
        &daemon,
        &stop_rx,
    )
    .context("cannot start the proxy threads")?;
    let control =
        tokio::net::TcpListener::from_std(bound.control).context("cannot serve the control API")?;
    let control = tokio::spawn(control::serve(control, daemon.clone(), stop_rx.clone()));
    tokio::spawn(mirror::run(daemon.clone(), mirror_rx));
    let _watcher = watch::start(daemon.clone()).context("cannot watch the slot folders")?;
    tokio::spawn(crate::logging::tell_dropped());
    // On this runtime, not a proxy thread's: a trim takes a few milliseconds at most.
    tokio::spawn(super::memory::keep_trimmed());
    if let Some(every) = systemd::watchdog_interval() {
        tokio::spawn(async move {
            loop {
                systemd::watchdog();
                tokio::time::sleep(every).await;
            }
        });
    }
    let (signal_tx, mut signals) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for signal in early.into_iter().chain(signal_iter.forever()) {
            if let Some(name) = ignored(signal) {
                tracing::warn!(
                    "{name} ignored: bluegreen serve reloads its config on SIGHUP and stops on SIGTERM or SIGINT"
                );
                continue;
            }
            if signal_tx.send(signal).is_err() {
                break;
            }
        }
    });

    tracing::info!(
        front = %config.router.listen,
        blue = %config.slots.blue.listen,
        green = %config.slots.green.listen,
        control = %config.control.listen,
        active = daemon.active().map_or("none", Slot::name),
        mirroring = daemon.mirroring(),
        heartbeat = %format_args!(
            "every {} ({} failures switch)",
            humantime::format_duration(config.heartbeat.interval),
            config.heartbeat.failures
        ),
        "bluegreen {} serving {}",
        env!("CARGO_PKG_VERSION"),
        layout.root().display()
    );
    for slot in Slot::ALL {
        if let Some(problem) = crate::slot_repo::problem(&layout, slot) {
            daemon.events.record("hook", Some(slot), true, problem);
        }
    }
    let opens = startup::Opens {
        front: front_open.0,
        slots: [blue_open.0, green_open.0],
    };
    let firsts = [first_blue, first_green];
    let stopped_early = startup::open_when_settled(&daemon, opens, firsts, &mut signals).await;
    if !stopped_early {
        // Only now: a restored active slot still starting is not a failing one.
        let heartbeat = tokio::spawn(heartbeat::run(daemon.clone()));
        systemd::ready();
        while let Some(signal) = next_signal(&mut signals).await {
            if signal == SIGHUP {
                systemd::reloading();
                // `systemctl status` shows it: a refused reload ends as READY=1 too.
                systemd::reloaded(&super::config_reload::reload_config(&daemon).await);
                continue;
            }
            break;
        }
        heartbeat.abort();
    }
    super::stop::stop(
        &daemon,
        super::stop::Running {
            stop_tx,
            signals,
            listeners,
            supervisors,
            control,
        },
    )
    .await
}

/// The name of a signal the daemon takes and ignores (see `serve`).
fn ignored(signal: i32) -> Option<&'static str> {
    match signal {
        SIGUSR1 => Some("SIGUSR1"),
        SIGUSR2 => Some("SIGUSR2"),
        _ => None,
    }
}

/// The next signal to act on: a stop (SIGTERM, SIGINT) ahead of the reloads queued
/// before it, and the SIGHUPs queued together as one reload. A burst of `kill -HUP`
/// (each reload takes 100 ms at least) held a SIGTERM behind it for as long, past
/// systemd's stop timeout. `None` once no signal can come.
pub(super) async fn next_signal(signals: &mut mpsc::UnboundedReceiver<i32>) -> Option<i32> {
    let mut signal = signals.recv().await?;
    while signal == SIGHUP {
        match signals.try_recv() {
            Ok(next) => signal = next,
            Err(_) => break,
        }
    }
    Some(signal)
}

/// `state.json` is missing, though releases went live here: it was removed (by hand, or
/// with a backup restored without it), and the daemon starts as on a new root. Said,
/// since the active slot and the mirroring flag it kept may differ.
fn warn_state_gone(layout: &Layout) {
    let ran: Vec<Slot> = Slot::ALL
        .into_iter()
        .filter(|&slot| {
            release::list(layout, slot).is_ok_and(|releases| releases.iter().any(|r| r.went_live))
        })
        .collect();
    if ran.is_empty() {
        return;
    }
    let ran: Vec<&str> = ran.iter().map(|slot| slot.name()).collect();
    tracing::warn!(
        "{} is missing, though {} ran releases: starting as on a new root (active: the first slot to go live; mirroring: on); `bluegreen switch <slot>` and `bluegreen mirroring off` set them again",
        layout.state_file().display(),
        ran.join(" and ")
    );
}
