//! `/status`: everything a person or a script asks about a running daemon, as JSON.

use serde_json::{json, Value};

use super::Daemon;
use crate::release;
use crate::slot::Slot;

pub fn json(daemon: &Daemon) -> Value {
    let config = daemon.config();
    let mut slots = serde_json::Map::new();
    for slot in Slot::ALL {
        let handle = &daemon.slots[slot.index()];
        let (live, status) = handle.live_and_status();
        let live = live.map(|g| {
            json!({
                "generation": g.id,
                "release": g.release,
                "commit": g.commit,
                "port": g.port,
                "pid": g.pid,
                "in_flight": g.in_flight.get(),
                "tunnels": g.tunnels.get(),
                "uptime_s": g.started.elapsed().as_secs(),
                "started": humantime::format_rfc3339_seconds(g.started_at).to_string(),
                // What a reload changed since it started, which it does not run with.
                "started_before": g.started_before(&config),
            })
        });
        let draining: Vec<Value> = status
            .draining
            .iter()
            .map(|g| {
                json!({
                    "generation": g.id,
                    "release": g.release,
                    "pid": g.pid,
                    "in_flight": g.in_flight.get(),
                    "tunnels": g.tunnels.get(),
                })
            })
            .collect();
        let health = match (&live, &status.health) {
            (None, _) => status.coming().unwrap_or_else(|| "down".to_string()),
            (Some(_), Some(Err(why))) => format!("failing: {why}"),
            (Some(_), _) => "healthy".to_string(),
        };
        // The generation on its way, not live yet (a deploy's, a restart's).
        let starting = status.started.as_ref().map(|(id, release, since)| {
            json!({
                "generation": id,
                "release": release,
                "for_s": since.elapsed().as_secs(),
            })
        });
        slots.insert(
            slot.to_string(),
            json!({
                "listen": config.slots.get(slot).listen.to_string(),
                "current": release::current(&daemon.layout, slot),
                "live": live,
                "starting": starting,
                "draining": draining,
                "health": health,
                "restarts": status.restarts,
                "last_error": status.last_error,
            }),
        );
    }
    let counters: serde_json::Map<String, Value> = daemon
        .metrics
        .mirror_counts()
        .into_iter()
        .map(|(name, n)| (name.to_string(), json!(n)))
        .collect();
    // Copied out, so the heartbeat's lock is not held with another (see [`Daemon`]).
    let (armed, failures) = {
        let heartbeat = daemon
            .heartbeat
            .lock()
            .expect("heartbeat lock: no panic holds it");
        (heartbeat.armed, heartbeat.failures)
    };
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started": humantime::format_rfc3339_seconds(daemon.metrics.started()).to_string(),
        "active": daemon.active(),
        "front": config.router.listen.to_string(),
        // `[app]` as the daemon runs it (the file may have changed since): a push waits
        // for its verdict, and says what it waits for, by these.
        "app": config.app,
        // What of bluegreen.toml differs from what the daemon runs (edited without a
        // SIGHUP, or refused), as a push's note says it; null when nothing does, and
        // when the file does not load (the hook and `check` say why).
        "stale_config": super::config_reload::stale_config(daemon),
        "slots": slots,
        "mirroring": {
            "enabled": daemon.mirroring(),
            "queued": daemon.mirror.queued(),
            "counters": counters,
        },
        "heartbeat": { "armed": armed, "consecutive_failures": failures },
        "last_switch": daemon.last_switch(),
        // A switch under way (its migration, its wait for the mirrored writes), or null.
        "switching": daemon
            .underway
            .lock()
            .expect("underway lock: no panic holds it")
            .as_ref()
            .map(super::switch::Underway::json),
        "events": daemon.events.recent(20),
    })
}
