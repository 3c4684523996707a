//! SIGHUP: the config read again, taken or refused whole; and what of the file differs
//! from what the daemon runs (`stale_config`, for `/status` and the pusher's note).
//!
//! A file is read twice [`SETTLE`] apart, so one rewritten in place is not read half
//! written; a table the running config had and the file lost is refused, as is a token
//! file gone. Listen addresses and `mirror.queue` are kept as bound (a restart takes
//! them, and the event says so).

use std::time::Duration;

use super::{supervisor, Daemon};
use crate::config::Config;
use crate::slot::Slot;

/// The token of `router.token_file`, if one is set.
pub(super) fn read_token(config: &Config) -> anyhow::Result<Option<String>> {
    config.router.token()
}

/// Logs what is unsafe about the token (see [`crate::config::RouterConfig::token_warnings`]):
/// at the start and at each SIGHUP that takes a config, not at each look at the file
/// (`/status` compares it too).
pub(super) fn warn_about_token(config: &Config, token: Option<&str>) {
    for warning in config.router.token_warnings(token) {
        tracing::warn!("{warning}");
    }
}

/// SIGHUP: take a valid new config, refuse a bad one and keep the running one. Returns
/// what happened, as the event says it.
pub(super) async fn reload_config(daemon: &Daemon) -> String {
    let path = daemon.layout.config_file();
    let loaded = settled(&path)
        .await
        .and_then(|text| takeable(&path, &text, &daemon.config()));
    let (refused, message) = match loaded {
        Err(e) => {
            *daemon.refusal() = Some(format!("{e:#}"));
            (
                true,
                format!("config reload refused, keeping the running config: {e:#}"),
            )
        }
        Ok((token, config)) => {
            *daemon.refusal() = None;
            warn_about_token(&config, token.as_deref());
            let old = daemon.config();
            let moved = restart_only(&old, &config);
            let taken = held_elsewhere(&old, &config, &moved);
            let mut config = config;
            keep_bound(&mut config, &old);
            *daemon.token.write().expect("token lock: no panic holds it") = token;
            if old.branch != config.branch {
                for slot in Slot::ALL {
                    daemon.slots[slot.index()].route.replace_reason(
                        &supervisor::no_release(slot, &old.branch),
                        supervisor::no_release(slot, &config.branch),
                    );
                }
            }
            daemon.set_config(config);
            let note = if moved.is_empty() {
                String::new()
            } else {
                let verb = if moved.len() == 1 { "takes" } else { "take" };
                format!(
                    " ({} {verb} effect on restart{}{taken})",
                    moved.join(", "),
                    socket_unit_first(daemon, &old, &moved)
                )
            };
            (
                false,
                format!("config reloaded from {}{note}", path.display()),
            )
        }
    };
    daemon
        .events
        .record("config", None, refused, message.clone());
    message
}

/// The config a SIGHUP takes from `text` (with its token), or why it refuses it: the
/// file's own checks, then [`reload_checks`].
fn takeable(
    path: &std::path::Path,
    text: &str,
    running: &Config,
) -> anyhow::Result<(Option<String>, Config)> {
    let config = Config::from_text(path, text)?;
    Ok((reload_checks(path, text, &config, running)?, config))
}

/// What a SIGHUP checks of `config`, read from `text`, beyond its loading: no table
/// lost since `running` was read, and its token file read (its token, if it sets one).
fn reload_checks(
    path: &std::path::Path,
    text: &str,
    config: &Config,
    running: &Config,
) -> anyhow::Result<Option<String>> {
    no_table_dropped(path, text, running)?;
    read_token(config)
}

/// The config file's text, read twice `SETTLE` apart: a file rewritten in place (an
/// editor that truncates, then writes) as the SIGHUP comes would be read half written,
/// and a half that parses (cut before `[switch]`) would run with the rest defaulted.
async fn settled(path: &std::path::Path) -> anyhow::Result<String> {
    // The root is this daemon's: `bluegreen init`, which `read` suggests, refuses a root
    // whose file was removed under its daemon.
    anyhow::ensure!(
        std::fs::symlink_metadata(path).is_ok(),
        "{} is gone (removed or renamed?): put it back, then send SIGHUP again",
        path.display()
    );
    let first = Config::read(path)?;
    tokio::time::sleep(SETTLE).await;
    let again = Config::read(path)?;
    anyhow::ensure!(
        first == again,
        "{} changed while it was read (still being written?): send SIGHUP again once it is saved",
        path.display()
    );
    Ok(again)
}

/// Refuses a file that has lost a table (or top key) the running config sets apart from
/// its defaults: a file written in pieces further apart than `SETTLE` (a slow copy, an
/// editor's save over a network mount) parsed, cut before `[app]`, with every key after
/// the cut defaulted: `app.command` became the example's, and the next restart of a
/// worker failed; cut before `[switch]`, `switch.migrate` went without a word. A table
/// meant to take its defaults again keeps its header, with no keys.
fn no_table_dropped(path: &std::path::Path, text: &str, running: &Config) -> anyhow::Result<()> {
    let Ok(file) = toml::from_str::<toml::Table>(text) else {
        return Ok(());
    };
    let defaults = Config::default();
    // `[slots.green]`: `slots`, then `green` in it.
    let present = |key: &str| {
        let mut names = key.trim_matches(['[', ']']).split('.');
        let mut at = names.next().and_then(|name| file.get(name));
        for name in names {
            at = at.and_then(|table| table.get(name));
        }
        at.is_some()
    };
    let dropped: Vec<&str> = [
        ("branch", running.branch != defaults.branch),
        (
            "keep_releases",
            running.keep_releases != defaults.keep_releases,
        ),
        ("[build]", running.build != defaults.build),
        ("[app]", running.app != defaults.app),
        // Where the file sets `token_file` is no setting of its own.
        (
            "[router]",
            running.router
                != crate::config::RouterConfig {
                    token_file_at: running.router.token_file_at.clone(),
                    ..defaults.router.clone()
                },
        ),
        ("[control]", running.control != defaults.control),
        ("[slots]", running.slots != defaults.slots),
        // A cut between the two slots' tables (`[slots.green]` lost, its env with it).
        ("[slots.blue]", running.slots.blue != defaults.slots.blue),
        ("[slots.green]", running.slots.green != defaults.slots.green),
        ("[heartbeat]", running.heartbeat != defaults.heartbeat),
        ("[mirror]", running.mirror != defaults.mirror),
        ("[switch]", running.switch != defaults.switch),
    ]
    .into_iter()
    // A slot's table is told only when `[slots]` is there: gone, it says all.
    .filter(|(key, set)| {
        *set && !present(key) && (!key.starts_with("[slots.") || present("[slots]"))
    })
    .map(|(key, _)| key)
    .collect();
    anyhow::ensure!(
        dropped.is_empty(),
        "{} has no {} now, which the running config sets apart from the defaults (cut short, or still being written?): not taken; a table meant to take its defaults again keeps its header with no keys (`{}`)",
        path.display(),
        dropped.join(", "),
        dropped.iter().find(|key| key.starts_with('[')).unwrap_or(&dropped[0])
    );
    Ok(())
}

/// How long a config file must stay as it is to be taken on a SIGHUP.
const SETTLE: Duration = Duration::from_millis(100);

/// The keys that a SIGHUP does not apply, changed from `old` to `new`: what is bound (and
/// sized) stays until a restart.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    [
        (old.router.listen != new.router.listen, "router.listen"),
        (old.control.listen != new.control.listen, "control.listen"),
        (
            old.slots.blue.listen != new.slots.blue.listen,
            "slots.blue.listen",
        ),
        (
            old.slots.green.listen != new.slots.green.listen,
            "slots.green.listen",
        ),
        (old.mirror.queue != new.mirror.queue, "mirror.queue"),
    ]
    .into_iter()
    .filter_map(|(changed, key)| changed.then_some(key))
    .collect()
}

/// For the listen addresses among `moved` (keys [`restart_only`] names) that systemd
/// passed: that the socket unit must change first. A restarted daemon takes its sockets
/// from the unit, and refuses one on an address its config no longer names: it would not
/// come back, and under `Restart=` would fail in a loop with the front dark.
fn socket_unit_first(daemon: &Daemon, running: &Config, moved: &[&str]) -> String {
    let held = moved_listens(running, moved, |addr| daemon.from_systemd.contains(addr));
    if held.is_empty() {
        return String::new();
    }
    format!(
        "; systemd passes the listening socket on {}: change the socket unit's ListenStream= to match first (`systemctl edit bluegreen.socket`, then `systemctl restart bluegreen.socket bluegreen`), or the restarted daemon refuses to start",
        held.join(", ")
    )
}

/// For the new listen addresses among `moved` (keys [`restart_only`] names) that another
/// process listens on now (another program, another root's daemon): the restart that
/// takes them would stop there, every port of this root dark. A port the daemon itself
/// listens on (addresses swapped between keys) is not tried.
fn held_elsewhere(running: &Config, new: &Config, moved: &[&str]) -> String {
    let ours = running.listens().map(|addr| addr.port());
    let taken = moved_listens(new, moved, |addr| {
        !ours.contains(&addr.port())
            && std::net::TcpListener::bind(addr)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
    });
    if taken.is_empty() {
        return String::new();
    }
    format!(
        "; another process listens on {} now, where a restarted daemon would stop (`ss -ltnp` says which): give this root a free address there",
        taken.join(", ")
    )
}

/// `<addr> (<key>)` for each listen address of `config` whose key is among `moved` and
/// that `pick` takes.
fn moved_listens(
    config: &Config,
    moved: &[&str],
    pick: impl Fn(&std::net::SocketAddr) -> bool,
) -> Vec<String> {
    crate::config::LISTEN_KEYS
        .iter()
        .zip(config.listens())
        .filter(|(key, addr)| moved.contains(key) && pick(addr))
        .map(|(key, addr)| format!("{addr} ({key})"))
        .collect()
}

/// Puts `running`'s values of the [`restart_only`] keys into `config`, so that /status
/// shows the addresses actually served.
fn keep_bound(config: &mut Config, running: &Config) {
    config.router.listen = running.router.listen;
    config.control.listen = running.control.listen;
    config.slots.blue.listen = running.slots.blue.listen;
    config.slots.green.listen = running.slots.green.listen;
    config.mirror.queue = running.mirror.queue;
}

/// What of `bluegreen.toml` that the daemon uses differs from the config it runs, told
/// to the pusher: an `app.command` edited and pushed without a SIGHUP otherwise goes live
/// with the old command while the pusher believes the new one runs. (A file that does not
/// load is the hook's to refuse.)
pub fn stale_config(daemon: &Daemon) -> Option<String> {
    let path = daemon.layout.config_file();
    let text = Config::read(&path).ok()?;
    let mut file = Config::from_text(&path, &text).ok()?;
    let running = daemon.config();
    // What a SIGHUP would do now: refuse the file (for a reason its loading here does
    // not see: a token file gone), or take it, with the token its file holds now.
    let checked = reload_checks(&path, &text, &file, &running);
    let pid = std::process::id();
    let restart = restart_only(&running, &file);
    keep_bound(&mut file, &running);
    // Not the daemon's to apply: where in the file `token_file` is written (for its
    // messages: a line added above it moves it), and `app.linked_dirs`, the hook's.
    file.router
        .token_file_at
        .clone_from(&running.router.token_file_at);
    file.app.linked_dirs.clone_from(&running.app.linked_dirs);
    let reload: Vec<&str> = [
        ("[app]", file.app != running.app),
        ("[router]", file.router != running.router),
        ("[control]", file.control != running.control),
        ("[slots]", file.slots != running.slots),
        ("[heartbeat]", file.heartbeat != running.heartbeat),
        ("[mirror]", file.mirror != running.mirror),
        ("[switch]", file.switch != running.switch),
    ]
    .into_iter()
    .filter_map(|(table, differs)| differs.then_some(table))
    .collect();
    // A token file rewritten in place (a rotated secret) is read at a SIGHUP only.
    let token_changed =
        !reload.contains(&"[router]") && matches!(&checked, Ok(token) if *token != daemon.token());
    // Nothing the daemon does not run: no note, whatever its last SIGHUP met (a file
    // put back as it was, a refusal of a file caught half written).
    if reload.is_empty() && restart.is_empty() && !token_changed && checked.is_ok() {
        return None;
    }
    let mut notes = Vec::new();
    // A SIGHUP would be refused (again), for a reason the file's loading here does not
    // see (a token file gone, a table lost): that is what to fix first, with the reason
    // it has now. Once fixed, a SIGHUP is what applies the file.
    let refused = checked.as_ref().err().map(|why| format!("{why:#}"));
    if let Some(why) = &refused {
        notes.push(match daemon.refusal().is_some() {
            true => format!(
                "the daemon refused its last reload of bluegreen.toml and runs with what it read before ({why}): fix that, then `kill -HUP {pid}`"
            ),
            false => format!(
                "a reload would refuse bluegreen.toml as it is now ({why}): fix that, then `kill -HUP {pid}`"
            ),
        });
    }
    let mut changed = Vec::new();
    if !reload.is_empty() {
        changed.push(format!("bluegreen.toml's {}", reload.join(", ")));
    }
    if token_changed {
        changed.push(format!(
            "the token in {}",
            running.router.token_file.display()
        ));
    }
    if !changed.is_empty() {
        let apply = match refused {
            Some(_) => String::new(),
            None => {
                format!(": `kill -HUP {pid}` (what `systemctl reload` of its unit does) applies it")
            }
        };
        notes.push(format!(
            "{} changed since the daemon read it, and it runs with what it read{apply}",
            changed.join(" and ")
        ));
    }
    if !restart.is_empty() {
        notes.push(format!(
            "bluegreen.toml's {} changed, which only a restart of the daemon applies{}",
            restart.join(", "),
            socket_unit_first(daemon, &running, &restart)
        ));
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}
