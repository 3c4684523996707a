//! `Client`: the control API as seen from the command line and the hook.
//!
//! The daemon listens on `control.listen` (loopback). A refused connection is its own
//! error, `NotRunning`, because the hook and `rollback` carry on without a daemon.
//! Every call names its root (`Bluegreen-Root`); a daemon serving another root (two
//! roots given one `control.listen`) answers 421 and the call fails with its reason.

use std::time::Duration;

use crate::config::Config;
use crate::layout::Layout;

/// The most of an answer's body an error quotes: a server other than bluegreen's on
/// `control.listen` may answer with a whole page.
const REASON_CHARS: usize = 1024;

/// The header that names the caller's root (see `Layout::identity`).
pub const ROOT_HEADER: &str = "Bluegreen-Root";

/// How a daemon answers (421) a call that names another root: `{OTHER_ROOT}{root}{OTHER_ROOT_END}`.
pub const OTHER_ROOT: &str = "this daemon serves ";
const OTHER_ROOT_END: &str = ", another root: give each root its own control.listen";
/// The daemon's answer to a call that names another root than its own `root`, as
/// [`Client::other_root`] reads it back.
pub fn serves_another_root(root: &str) -> String {
    format!("{OTHER_ROOT}{root}{OTHER_ROOT_END}")
}
/// What follows `{OTHER_ROOT}{root}` instead when that daemon's root is gone from its
/// path since it started: most likely the caller's root is that one, moved.
pub const ROOT_GONE: &str =
    ", which is gone from there since it started (the root moved, renamed or restored?)";

/// A blocking client of one daemon's control API.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    root: String,
    /// The root's folder, for messages.
    path: String,
    /// Held by a running `bluegreen serve` (a `serve` starting meanwhile waits for
    /// the look at it: see `serve`).
    serve_lock: std::path::PathBuf,
    stopping_mark: std::path::PathBuf,
    /// The root's config file, looked at again only when nothing answers (see
    /// [`Client::listen_unset`]).
    config_file: std::path::PathBuf,
    /// `control.listen`, whose listening socket's owner is looked at first (see
    /// [`Client::listened_by_another_user`]).
    control: std::net::SocketAddr,
    /// The users whose socket may be this root's daemon's: root (a socket unit's), this
    /// user, and the root's (the owner of its blue folder).
    daemon_users: Vec<u32>,
}

/// Root, this user, and the owner of the root's blue folder (the daemon's user, when
/// this runs as another: root, by `sudo`).
fn daemon_users(layout: &Layout) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let mut users = vec![0, nix::unistd::geteuid().as_raw()];
    if let Ok(blue) = std::fs::metadata(layout.slot_dir(crate::slot::Slot::Blue)) {
        users.push(blue.uid());
    }
    users
}

/// An answer of the control API: status code and body (JSON, or a one-line reason).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on `control.listen`. `held`: yet a daemon holds the root's serve
    /// lock (starting, stopping, or started before `control.listen` changed).
    #[error("{}", not_running(addr, root, (*held, *stopping), *unset))]
    NotRunning {
        addr: String,
        root: String,
        held: bool,
        /// That daemon is stopping (see `Layout::stopping_mark`): it closed its listener.
        stopping: bool,
        /// The config file sets no `control.listen` (cut short, or emptied).
        unset: bool,
    },
    #[error("control API at {addr}: {reason}")]
    Failed { addr: String, reason: String },
    /// Connected and asked, but no answer came within the call's wait: what was asked
    /// may still be under way.
    #[error("control API at {addr}: no answer within {}{}", humantime::format_duration(*.waited), if *.stopping { STOPPING } else { "" })]
    NoAnswer {
        addr: String,
        waited: Duration,
        /// The root's daemon is stopping (see `Layout::stopping_mark`).
        stopping: bool,
    },
    /// The daemon there serves another root.
    #[error("control API at {addr}: {reason}")]
    OtherRoot {
        addr: String,
        reason: String,
        /// That daemon's own root is gone from its path (see [`ROOT_GONE`]): most likely
        /// this root, moved under it.
        gone: bool,
    },
    /// What answers there is no bluegreen daemon (a web server's page): its page is not
    /// quoted as if the daemon had said it.
    #[error("control API at {addr}: what answers there is not a bluegreen daemon ({what}): give this root its own control.listen in bluegreen.toml (`ss -ltnp 'sport = :{}'` says what listens there)", addr.rsplit(':').next().unwrap_or_default())]
    Stranger { addr: String, what: String },
}

/// Why a daemon that is stopping does not answer: it no longer accepts, and under a
/// socket unit the call waits in the socket's queue for the next daemon.
const STOPPING: &str = " (the daemon is stopping: it drains requests in flight, up to app.drain_timeout, then stops its workers; under bluegreen.socket the next daemon answers once started)";

/// Why a daemon that is stopping refuses connections: its listener is closed.
const STOPPING_NOW: &str = " (it drains requests in flight, up to app.drain_timeout, then stops its workers): once it has stopped, start it again if that was not meant (`bluegreen serve`, or `systemctl start` its unit)";

/// Why nothing answers: no daemon (start one), or one that does not listen there (yet).
fn not_running(addr: &str, root: &str, (held, stopping): (bool, bool), unset: bool) -> String {
    if held && stopping {
        return format!("daemon not answering on {addr}: it is stopping{STOPPING_NOW}");
    }
    if held && unset {
        // Not a restart: the file is what is wrong, and a restart would take it.
        return format!("daemon not answering on {addr}, the default control.listen: bluegreen.toml sets none now (cut short, or emptied?), yet a `bluegreen serve` holds this root: put the file's [control] back");
    }
    match held {
        false => format!("daemon not running: nothing answers on {addr}, the control.listen in bluegreen.toml (start it: `bluegreen serve --root {}`, or `systemctl start` its unit)", crate::pasted::quoted(root)),
        true => format!("daemon not answering: nothing answers on {addr}, the control.listen in bluegreen.toml, yet a `bluegreen serve` holds this root: it is starting or stopping, or was started before control.listen changed (restart it, `systemctl restart` its unit, to listen there; under bluegreen.socket, change its ListenStream= to match first, or the restarted daemon refuses to start)"),
    }
}

impl Client {
    pub fn new(config: &Config, layout: &Layout) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(2))
            // Each call closes its connection (see `call`): none is kept, or a long-lived
            // client (the demo) would hold one the daemon closed, in CLOSE_WAIT.
            .max_idle_connections(0)
            .build();
        Client {
            base: format!("http://{}", config.control.listen),
            agent,
            root: layout.identity(),
            path: layout.root().display().to_string(),
            serve_lock: layout.serve_lock(),
            stopping_mark: layout.stopping_mark(),
            config_file: layout.config_file(),
            control: config.control.listen,
            daemon_users: daemon_users(layout),
        }
    }

    /// What another user's socket on `control.listen` is, if one listens there: not
    /// this root's daemon, whatever it answers (one listening while the daemon is down
    /// could tell a push it went live). Nothing when the tables cannot be read.
    fn listened_by_another_user(&self) -> Option<String> {
        let stranger = crate::peer::listening_at(self.control)
            .into_iter()
            .find(|uid| !self.daemon_users.contains(uid))?;
        Some(format!(
            "its listening socket is a process's of {}, not of root or of this root's user",
            crate::peer::shown(stranger)
        ))
    }

    /// Whether the config file sets no `control.listen` (cut short, or emptied), so that
    /// the address asked is the default's.
    fn listen_unset(&self) -> bool {
        std::fs::read_to_string(&self.config_file)
            .ok()
            .and_then(|text| toml::from_str::<toml::Table>(&text).ok())
            .is_some_and(|file| file.get("control").and_then(|c| c.get("listen")).is_none())
    }

    pub fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.call("GET", path, Duration::from_secs(10))
    }

    /// A GET that gives up after `wait` (a look on the side, which must not hold up
    /// what the caller came for).
    pub fn get_within(&self, path: &str, wait: Duration) -> Result<Reply, ClientError> {
        self.call("GET", path, wait)
    }

    /// A POST that may wait for the daemon up to `wait` (a reload waits for readiness).
    pub fn post(&self, path: &str, wait: Duration) -> Result<Reply, ClientError> {
        self.call("POST", path, wait)
    }

    /// The root the daemon on `control.listen` serves when it is another root's; none
    /// when nothing (or this root's daemon, or something else) answers within 2 s.
    pub fn other_root(&self) -> Option<String> {
        match self.call("GET", "/status", Duration::from_secs(2)) {
            Err(ClientError::OtherRoot { reason, .. }) => reason
                .strip_prefix(OTHER_ROOT)?
                .strip_suffix(OTHER_ROOT_END)
                .map(str::to_string),
            _ => None,
        }
    }

    fn call(&self, method: &str, path: &str, wait: Duration) -> Result<Reply, ClientError> {
        let addr = self.base.trim_start_matches("http://").to_string();
        if let Some(what) = self.listened_by_another_user() {
            return Err(ClientError::Stranger { addr, what });
        }
        let result = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            // One call per connection: none is left open on either side.
            .set("Connection", "close")
            .set(ROOT_HEADER, &self.root)
            .timeout(wait)
            .call();
        let response = match result {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(t)) if t.kind() == ureq::ErrorKind::ConnectionFailed => {
                let held = crate::fsops::held(&self.serve_lock);
                return Err(ClientError::NotRunning {
                    addr,
                    root: self.path.clone(),
                    held,
                    stopping: held && self.stopping_mark.exists(),
                    unset: self.listen_unset(),
                });
            }
            Err(ureq::Error::Transport(t)) if timed_out(&t) => {
                return Err(ClientError::NoAnswer {
                    addr,
                    waited: wait,
                    stopping: self.stopping_mark.exists() && crate::fsops::held(&self.serve_lock),
                })
            }
            Err(e) => {
                return Err(ClientError::Failed {
                    addr,
                    reason: e.to_string(),
                })
            }
        };
        let status = response.status();
        // The daemon answers every call in plain text or JSON, and serves every path and
        // method this client asks for: a 404 or a 405 is another program's (an app, as
        // another root's front or slot port proxies to one), whatever its type.
        let kind = response.header("Content-Type").unwrap_or("none");
        let bare = kind.split(';').next().unwrap_or_default().trim();
        let ours = ["text/plain", "application/json"]
            .iter()
            .any(|ours| bare.eq_ignore_ascii_case(ours));
        if !ours || matches!(status, 404 | 405) {
            return Err(ClientError::Stranger {
                addr,
                what: format!(
                    "it answered {method} {} with {status}, Content-Type {}",
                    path.split('?').next().unwrap_or_default(),
                    crate::logging::quoted(kind, 64)
                ),
            });
        }
        let body = response.into_string().map_err(|e| ClientError::Failed {
            addr: addr.clone(),
            reason: format!("unreadable answer: {e}"),
        })?;
        let reply = Reply { status, body };
        if status == 421 {
            // Another root's daemon: nothing it says is about this root.
            let reason = reply.reason();
            return Err(ClientError::OtherRoot {
                addr,
                gone: reason.contains(ROOT_GONE),
                reason,
            });
        }
        Ok(reply)
    }
}

/// Whether `t` is the call's own timeout running out.
fn timed_out(t: &ureq::Transport) -> bool {
    std::error::Error::source(t)
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .is_some_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            )
        })
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body).map_err(|e| {
            anyhow::anyhow!(
                "the daemon answered {} with non-JSON ({e}): {}",
                self.status,
                self.reason()
            )
        })
    }

    /// The body as one line for an error: the daemon's reasons are one line already, but
    /// what else may listen on `control.listen` (a web server's error page) is not; its
    /// line breaks become spaces, and at most `REASON_CHARS` characters are kept.
    pub fn reason(&self) -> String {
        crate::logging::quoted(self.body.trim(), REASON_CHARS)
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file cut before `[control]` gives the default address: a daemon holding the
    /// root listens elsewhere, and restarting it (the advice otherwise) would take the
    /// cut file.
    #[test]
    fn a_file_that_sets_no_control_listen_is_named_not_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path()).unwrap();
        std::fs::write(layout.config_file(), "[app]\ncommand = \"x\"\n").unwrap();
        let config = Config::default();
        assert!(Client::new(&config, &layout).listen_unset());
        std::fs::write(
            layout.config_file(),
            "[control]\nlisten = \"127.0.0.1:7001\"\n",
        )
        .unwrap();
        assert!(!Client::new(&config, &layout).listen_unset());
        let said = not_running("127.0.0.1:8081", "/srv/app", (true, false), true);
        assert_eq!(
            said,
            "daemon not answering on 127.0.0.1:8081, the default control.listen: bluegreen.toml sets none now (cut short, or emptied?), yet a `bluegreen serve` holds this root: put the file's [control] back"
        );
        assert!(
            not_running("127.0.0.1:8081", "/srv/app", (true, false), false).contains("restart it")
        );
    }

    #[test]
    fn a_daemon_that_never_answers_is_told_as_no_answer() {
        // Takes the connection and the request, and says nothing.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let holder = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
        let client = Client {
            base: format!("http://{addr}"),
            agent: ureq::AgentBuilder::new().build(),
            root: "test".into(),
            path: "/test".into(),
            serve_lock: "/nonexistent/serve.lock".into(),
            stopping_mark: "/nonexistent/stopping".into(),
            config_file: "/nonexistent/bluegreen.toml".into(),
            control: addr,
            daemon_users: vec![nix::unistd::geteuid().as_raw()],
        };
        let error = client
            .post("/switch", Duration::from_millis(300))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("control API at {addr}: no answer within 300ms")
        );
        drop(holder.join());
    }

    #[test]
    fn a_reason_is_one_line_of_at_most_reason_chars() {
        let reply = |body: &str| Reply {
            status: 502,
            body: body.into(),
        };
        assert_eq!(reply("  bad\r\n\tgateway \n").reason(), "bad   gateway");
        // A one-line reason of the daemon's own is kept as it is.
        assert_eq!(reply("50%  cut\n").reason(), "50%  cut");
        let long = reply(&"é".repeat(REASON_CHARS + 1)).reason();
        assert_eq!(long, format!("{}...", "é".repeat(REASON_CHARS)));
        assert_eq!(
            reply(&"é".repeat(REASON_CHARS)).reason().chars().count(),
            REASON_CHARS
        );
    }
}
