//! `Verdict`: the daemon's answer to "run the slot's current release", told to a person.
//!
//! The hook, `rollback` and `promote` flip `current` and then ask the daemon to reload
//! the slot, and `restart` asks it to start the current release again; this module asks
//! and turns the answer into the final line (`remote:` for a push).

use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{Client, ClientError, Reply};
use crate::config::{AppConfig, Config};
use crate::layout::Layout;
use crate::slot::Slot;

/// The control API's answer to `POST /slots/<slot>/reload`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Verdict {
    pub slot: Option<Slot>,
    pub release: String,
    pub commit: String,
    pub live: bool,
    pub generation: u64,
    pub took_ms: u64,
    pub reason: String,
    /// Not started because the daemon is stopping: the release is current, and the next
    /// daemon starts it, as when none runs.
    #[serde(default)]
    pub stopping: bool,
    /// What of `bluegreen.toml` changed since the daemon read it (see
    /// `daemon::serve::stale_config`), empty when nothing did: told before the verdict.
    #[serde(default)]
    pub stale_config: String,
}

/// How the daemon is asked to run a slot's current release.
#[derive(Clone, Copy, PartialEq)]
pub enum Ask {
    /// Just flipped to (by a push, a rollback or a promote): one of its generations live
    /// or starting already is the answer, and a failure of it already seen is the verdict.
    Deployed(By),
    /// Start it again all the same (`bluegreen restart`: after what made it fail was
    /// fixed, such as `app.command` and a SIGHUP).
    Again,
}

/// What made a release current, told to the daemon with its reload (`&by=`) for the
/// start's event in `/events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    Push,
    Rollback,
    Promote,
}

impl By {
    /// As `&by=` carries it.
    pub fn name(self) -> &'static str {
        match self {
            By::Push => "push",
            By::Rollback => "rollback",
            By::Promote => "promote",
        }
    }

    pub fn parse(name: &str) -> Option<By> {
        [By::Push, By::Rollback, By::Promote]
            .into_iter()
            .find(|by| by.name() == name)
    }
}

/// Asks the daemon to run `slot`'s current release, `release`, and prints the verdict as
/// the last line. `Ok(false)` when the release did not go live; an error when a restart
/// (`Ask::Again`) asked no daemon, so nothing was done.
pub fn reload(
    config: &Config,
    layout: &Layout,
    (slot, release, how): (Slot, &str, Ask),
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let client = Client::new(config, layout);
    // `[app]` as the daemon runs it, which a file changed without a SIGHUP is not.
    let status = client.get("/status");
    // Connected, but not even `/status` answered: a daemon stopped (SIGSTOP, a debugger)
    // or stuck would not answer the reload either, and the push waited that out too
    // (over a minute), saying meanwhile what the daemon was waiting for.
    if let Err(e @ ClientError::NoAnswer { .. }) = &status {
        if let Ask::Again = how {
            anyhow::bail!(
                "{slot}: not restarted: no answer from the daemon ({e} to GET /status: is it stopped or stuck?)"
            );
        }
        writeln!(
            out,
            "{slot}: no verdict from the daemon ({e} to GET /status: is it stopped or stuck?); the release is current: a running daemon picks it up by its file watch, a restarted one when it starts (`bluegreen status` tells)"
        )?;
        return Ok(false);
    }
    let app = status
        .ok()
        .and_then(|reply| reply.json().ok())
        .and_then(|status| serde_json::from_value::<AppConfig>(status["app"].clone()).ok())
        .unwrap_or_else(|| config.app.clone());
    // Longer than the daemon's own wait, so its answer (even "no verdict") arrives.
    let wait = app.reload_wait() + Duration::from_secs(5);
    let answer = std::thread::scope(|scope| {
        let (sent, answered) = mpsc::channel();
        let client = &client;
        scope.spawn(move || {
            sent.send(match how {
                Ask::Deployed(by) => ask(client, slot, (release, by), wait),
                Ask::Again => client.post(&format!("/slots/{slot}/reload"), wait),
            })
        });
        match answered.recv_timeout(STILL_WAITING) {
            Ok(answer) => Ok(answer),
            Err(_) => {
                writeln!(out, "{}", waiting(&app, slot, release))?;
                answered.recv().map_err(|_| {
                    anyhow::anyhow!("{slot}: the reload's thread ended without an answer")
                })
            }
        }
    })?;
    // A restart moves no `current`: no file watch sees it, and no daemon start is
    // owed one. What no daemon heard was not done.
    if let (Ask::Again, Err(e)) = (&how, &answer) {
        let why = match e {
            ClientError::NotRunning {
                held: true,
                stopping: true,
                ..
            } => format!("the daemon is stopping: the next daemon starts {slot}'s current release"),
            ClientError::NotRunning {
                addr, held: true, ..
            } => format!(
                "nothing answers on {addr}, the control.listen in bluegreen.toml, yet a daemon serves this root (started before control.listen changed, which a SIGHUP does not move; or starting): a restart of the daemon starts {slot}'s current release, or run this again once it answers there"
            ),
            ClientError::NotRunning { addr, .. } => format!(
                "the daemon is not running (nothing answers on {addr}): `bluegreen serve` starts {slot}'s current release"
            ),
            ClientError::OtherRoot { .. } | ClientError::Stranger { .. } => format!("{e}"),
            // Asked, and no answer came back: the daemon may be restarting it.
            e => {
                writeln!(
                    out,
                    "{slot}: no verdict from the daemon ({e}): the restart may be under way; `bluegreen status` tells"
                )?;
                return Ok(false);
            }
        };
        // Nothing was done: an error, as any command's that could not do its work.
        anyhow::bail!("{slot}: not restarted: {why}");
    }
    match answer {
        // A daemon that is stopping has closed its listener: the same verdict as a
        // reload it was asked before it closed (the next daemon starts the release).
        Err(ClientError::NotRunning {
            held: true,
            stopping: true,
            ..
        }) => {
            writeln!(out, "{}", Verdict::stopping(slot, release).line(slot))?;
            Ok(true)
        }
        // A daemon started before `control.listen` changed in the file (a SIGHUP keeps
        // the address it listens on) still serves this root: it is not told, but its
        // file watch starts the release now, not "on the next serve".
        Err(ClientError::NotRunning {
            addr, held: true, ..
        }) => {
            writeln!(
                out,
                "{slot}: no verdict: nothing answers on {addr}, the control.listen in bluegreen.toml, yet a daemon serves this root (started before control.listen changed, or starting); the release is current: its file watch starts it, or the next `bluegreen serve` does (`bluegreen status` tells once it answers)"
            )?;
            // No failed deploy, as when no daemon runs.
            Ok(true)
        }
        Err(ClientError::NotRunning { addr, .. }) => {
            writeln!(
                out,
                "{slot}: daemon not running (nothing answers on {addr}): the release starts on the next `bluegreen serve`"
            )?;
            Ok(true)
        }
        // Another root's daemon, or a program that is none, answers on the file's
        // control.listen, while this root's daemon runs on the one it started with (a
        // SIGHUP does not move it): its file watch starts the release now.
        // (Not a daemon whose root is gone from its path: this root, moved under it,
        // whose serve lock moved with it; nothing watches this path.)
        Err(e @ (ClientError::OtherRoot { gone: false, .. } | ClientError::Stranger { .. }))
            if crate::fsops::held(&layout.serve_lock()) =>
        {
            writeln!(
                out,
                "{slot}: no verdict: {e}; yet a daemon serves this root (started before control.listen changed, which a SIGHUP does not move); the release is current: its file watch starts it"
            )?;
            Ok(true)
        }
        Err(e @ (ClientError::OtherRoot { .. } | ClientError::Stranger { .. })) => {
            writeln!(
                out,
                "{slot}: no daemon told ({e}); the release is current and starts when this root's daemon does"
            )?;
            Ok(false)
        }
        Err(e) => {
            writeln!(
                out,
                "{slot}: no verdict from the daemon ({e}); the release is current: a running daemon picks it up by its file watch, a restarted one when it starts (`bluegreen status` tells)"
            )?;
            Ok(false)
        }
        Ok(reply) => {
            let verdict: Verdict = serde_json::from_str(&reply.body).unwrap_or_else(|_| Verdict {
                reason: format!("{} {}", reply.status, reply.reason()),
                ..Verdict::default()
            });
            if !verdict.stale_config.is_empty() {
                writeln!(out, "{slot}: note: {}", verdict.stale_config)?;
            }
            writeln!(out, "{}", verdict.line(slot))?;
            Ok(verdict.live || verdict.stopping)
        }
    }
}

/// How long a push waits for the verdict before it says what the daemon waits for: a
/// slow app's start (up to `app.ready_timeout`) would otherwise be a silent push.
const STILL_WAITING: Duration = Duration::from_secs(2);

/// `POST /slots/<slot>/reload?release=<release>&by=<by>`: a generation of `release` that
/// the file watch started already is the answer; `by` names the start's cause in
/// `/events`.
fn ask(
    client: &Client,
    slot: Slot,
    (release, by): (&str, By),
    wait: Duration,
) -> Result<Reply, ClientError> {
    // A daemon still running an older binary (upgraded on disk, not restarted yet)
    // refuses what it does not know: `&by=` (asked again with `?release=` alone), or
    // any parameter (asked again with none).
    let older = |answer: &Result<Reply, ClientError>, says: &str| {
        answer
            .as_ref()
            .is_ok_and(|reply| reply.status == 400 && reply.body.contains(says))
    };
    let path = format!("/slots/{slot}/reload");
    let answer = client.post(&format!("{path}?release={release}&by={}", by.name()), wait);
    let answer = match older(&answer, "takes only ?release=<id>") {
        true => client.post(&format!("{path}?release={release}"), wait),
        false => answer,
    };
    match older(&answer, "takes no parameters") {
        true => client.post(&path, wait),
        false => answer,
    }
}

/// `blue: starting 20261122T...: waiting for GET / to answer 2xx/3xx (app.ready_timeout 30s)`.
fn waiting(app: &AppConfig, slot: Slot, release: &str) -> String {
    let order = if app.overlap {
        ""
    } else {
        " once the old generation has stopped (app.overlap = false)"
    };
    format!(
        "{slot}: starting {release}: waiting for GET {} to answer 2xx/3xx{order} (app.ready_timeout {})",
        app.health_path,
        humantime::format_duration(app.ready_timeout)
    )
}

impl Verdict {
    /// The answer to a reload that came while the daemon stops.
    pub fn stopping(slot: Slot, release: &str) -> Verdict {
        Verdict {
            slot: Some(slot),
            release: release.to_string(),
            reason: "the daemon is stopping".into(),
            stopping: true,
            ..Verdict::default()
        }
    }

    /// `blue: live in 0.8s at 4f2a9c1 (generation 7)` or `blue: not live: <reason>`
    /// (or that the daemon is stopping).
    pub fn line(&self, slot: Slot) -> String {
        if self.live {
            format!(
                "{slot}: live in {:.1}s at {} (generation {})",
                self.took_ms as f64 / 1000.0,
                self.commit,
                self.generation
            )
        } else if self.stopping {
            format!("{slot}: not started: the daemon is stopping; the release is current and starts when it runs again")
        } else {
            format!("{slot}: not live: {}", self.reason)
        }
    }
}
