//! `Generation`: one running worker process group for one release of a slot.
//!
//! Started on a fresh loopback port in its own process group, with its output copied
//! line by line to the daemon's log ([`super::output`]). It is ready when its health path
//! answers 2xx/3xx from a socket of its own (`ready.rs`, [`super::holder`]).
//! Stopping always goes to the whole group: SIGTERM, then SIGKILL after the grace time
//! (`stop.rs`).

mod ready;
mod stop;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::io::AsyncRead;
use tokio::sync::watch;

use super::output::{self, Tail};
use super::slot_log::{self, SlotLog};
use super::workers;
use crate::argv;
use crate::config::Config;
use crate::layout::Layout;
use crate::slot::Slot;

/// How long a crash or failed start waits for the last output of its process: what the
/// pipes held when it exited is read within it; a helper holding the pipes open does not
/// hold the crash report (and the restart) up.
const FLUSH_WAIT: Duration = Duration::from_millis(250);

pub struct Generation {
    pub id: u64,
    pub slot: Slot,
    pub release: String,
    pub commit: String,
    pub dir: PathBuf,
    pub port: u16,
    /// The slot's `env` it was started with (a reload since may have changed the
    /// config's): what `switch.migrate` is told of this slot.
    pub env: BTreeMap<String, String>,
    /// The `app.command` it was started with.
    pub command: String,
    /// `127.0.0.1:<port>`, the `Host` a request without one is given.
    pub host: http::HeaderValue,
    /// Leader pid, which is also the process group id.
    pub pid: u32,
    pub started: Instant,
    pub started_at: SystemTime,
    /// Requests routed here and not yet answered in full; drain waits for zero.
    pub in_flight: super::route::Count,
    /// Tunnels open to it (WebSocket and other upgrades), which a drain does not wait for.
    pub tunnels: super::route::Tunnels,
    /// Set before we stop it, so its exit is not taken for a crash.
    pub stopping: AtomicBool,
    /// The drain it had, once that ended with requests still in flight: those its stop
    /// cuts off get a 502 that says why.
    pub cut_after: std::sync::OnceLock<Duration>,
    /// `Some(status)` once the leader has exited.
    exited: watch::Receiver<Option<ExitStatus>>,
    /// The last lines it wrote, to say why it failed.
    tail: Arc<Tail>,
    /// The tasks copying its stdout and stderr; awaited before quoting `tail` after an exit.
    copiers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Groups outside its own that held its port when it went live and were taken for its
    /// own ([`super::holder::check`]), with their leader's identity: nothing else finds them when
    /// it stops. Written once by the start, read by the stop.
    adopted: Mutex<Vec<(u32, String)>>,
    layout: Layout,
}

impl Generation {
    /// Starts `config.app.command` for `release` of `slot` on `port`.
    pub fn spawn(
        layout: &Layout,
        config: &Config,
        slot: Slot,
        id: u64,
        release: &str,
        port: u16,
    ) -> anyhow::Result<Arc<Generation>> {
        let dir = layout.release_dir(slot, release);
        if !dir.is_dir() {
            // `rollback` with no `--to` wants one before this: there may be none.
            let mend = match crate::release::list(layout, slot).is_ok_and(|all| !all.is_empty()) {
                true => format!("`bluegreen rollback {slot} --to <release>` puts back one that `bluegreen releases {slot}` lists, or a push deploys anew"),
                false => "a push deploys anew".to_string(),
            };
            anyhow::bail!("release {release} of {slot} does not exist (removed by hand?): {mend}");
        }
        anyhow::ensure!(
            crate::release::exists(layout, slot, release),
            "{} is not a release bluegreen made (it has no {})",
            dir.display(),
            crate::release::META
        );
        let commit = match crate::release::meta(layout, slot, release) {
            Some(meta) => meta.commit_short().to_string(),
            None => {
                tracing::warn!(
                    "{slot}: release {release}'s {} cannot be read (emptied or edited by hand?): it runs all the same, its commit unknown",
                    crate::release::META
                );
                "unknown".into()
            }
        };
        // A linked dir's shared folder removed by hand: made again, or the app's writes
        // there fail on every start.
        for gone in crate::release::missing_shared(layout, slot, release, &config.app.linked_dirs) {
            match std::fs::create_dir_all(&gone) {
                Ok(()) => tracing::warn!(
                    "{slot}: linked dir {} was gone (removed by hand?): made it again, empty, for release {release}",
                    gone.display()
                ),
                Err(e) => tracing::warn!(
                    "{slot}: linked dir {} is gone (removed by hand?) and cannot be made again: {e}; the app's writes there fail",
                    gone.display()
                ),
            }
        }
        let slot_env = config.slots.get(slot).env.clone();
        let mut env = slot_env.clone();
        env.insert("PORT".into(), port.to_string());
        env.insert("SLOT".into(), slot.to_string());
        env.insert("RELEASE".into(), release.to_string());
        env.insert("RELEASE_DIR".into(), dir.display().to_string());
        let words = argv::expand(&config.app.command, &env)?;

        let mut command = tokio::process::Command::new(&words[0]);
        command
            .args(&words[1..])
            .current_dir(&dir)
            .envs(&env)
            .env(workers::MARKER, layout.root())
            .env(workers::GENERATION, format!("{slot}/{id}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        super::systemd::keep_from(&mut command);
        let mut child = command.spawn().map_err(|e| {
            let why = argv::not_started(&words[0], &dir, env.get("PATH"), &e);
            anyhow::anyhow!("cannot start `{}` in {}: {why}", words[0], dir.display())
        })?;
        let pid = child
            .id()
            .context("the worker exited before it could be watched")?;
        workers::record(
            layout,
            pid,
            &crate::release::in_use_entry(slot, id, release),
        );

        let label = format!("{slot}/{id}");
        let mut copiers = Vec::new();
        // Under systemd, journald keeps worker output with the daemon's log; elsewhere it
        // also goes to logs/<slot>.log.
        // A logs/ folder someone removed comes back; a file that cannot be opened is
        // said once per generation, and its output still reaches the daemon's log.
        let slot_log = match std::env::var_os("INVOCATION_ID") {
            Some(_) => None,
            None => match SlotLog::open(layout.slot_log(slot), slot_log::MAX_BYTES) {
                Ok(log) => Some(Arc::new(log)),
                Err(e) => {
                    tracing::warn!(slot = %slot, "cannot write worker output to {}: {e}", layout.slot_log(slot).display());
                    None
                }
            },
        };
        let tail = Tail::new(slot_log.as_ref().map(|log| log.path().to_owned()));
        for (stream, name) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
                "stdout",
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
                "stderr",
            ),
        ] {
            if let Some(stream) = stream {
                copiers.push(tokio::spawn(output::copy_lines(
                    stream,
                    label.clone(),
                    name,
                    tail.clone(),
                    slot_log.clone(),
                )));
            }
        }
        let (tx, exited) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await.ok();
            let _ = tx.send(status);
        });
        Ok(Arc::new(Generation {
            id,
            slot,
            release: release.to_string(),
            commit,
            dir,
            port,
            env: slot_env,
            command: config.app.command.clone(),
            host: http::HeaderValue::from_str(&format!("127.0.0.1:{port}"))
                .expect("an IP and a port make a valid header value"),
            pid,
            started: Instant::now(),
            started_at: SystemTime::now(),
            in_flight: super::route::Count::new(),
            tunnels: super::route::Tunnels::default(),
            stopping: AtomicBool::new(false),
            cut_after: std::sync::OnceLock::new(),
            exited,
            tail,
            copiers: Mutex::new(copiers),
            adopted: Mutex::default(),
            layout: layout.clone(),
        }))
    }

    /// What it was started with that a reload of the daemon's config has changed since
    /// (`app.command`, the slot's env), which only its slot's next generation gets.
    pub fn started_before(&self, config: &Config) -> Option<String> {
        let slot = self.slot;
        let changed: Vec<String> = [
            (self.command != config.app.command).then(|| "app.command".to_string()),
            (self.env != config.slots.get(slot).env).then(|| format!("slots.{slot}.env")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if changed.is_empty() {
            return None;
        }
        Some(format!(
            "{slot} generation {} was started before the reload that changed {}, and runs with the old until {slot} starts a new generation (`bluegreen restart {slot}` starts one, or its next deploy)",
            self.id,
            changed.join(" and "),
        ))
    }

    /// Resolves when the leader exits, with its status.
    pub async fn exit(&self) -> Option<ExitStatus> {
        let mut exited = self.exited.clone();
        let result = exited.wait_for(|s| s.is_some()).await;
        result.ok().and_then(|s| *s)
    }

    /// Waits (briefly, [`FLUSH_WAIT`] for both) until the output of an exited process has
    /// been read in full. A copier ends only when every process holding the pipe has
    /// closed it, which a helper the worker started may never do: the wait is for what
    /// the pipe already holds, which the copiers read at once.
    pub async fn flush_output(&self) {
        let copiers = std::mem::take(
            &mut *self
                .copiers
                .lock()
                .expect("copiers lock: no panic holds it"),
        );
        let deadline = tokio::time::Instant::now() + FLUSH_WAIT;
        for copier in copiers {
            let _ = tokio::time::timeout_at(deadline, copier).await;
        }
    }

    /// `; last output: a | b | c (all of it in ...)`, or nothing.
    pub fn tail_text(&self) -> String {
        self.tail.quote()
    }
}
