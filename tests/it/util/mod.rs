//! The test harness: a temp root made by the real `bluegreen init`, a work repo pushed
//! with the real `git`, the real daemon as a child process, and HTTP on 127.0.0.1.
//!
//! Everything waits with deadlines. Dropping a `Root` stops its daemon and kills every
//! process that still belongs to the root (worker or build env marker, or cwd inside the
//! root), so no test leaves a process behind.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod http;
mod process;
mod pushed;
mod watch;

pub use http::*;
pub use process::*;
pub use pushed::*;
pub use watch::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_bluegreen");

/// Waits until `f` returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll_until(limit, f).unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// `f`'s first `Some` within `limit`, or `None`.
pub fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub struct Root {
    _tmp: tempfile::TempDir,
    pub path: PathBuf,
    pub work: PathBuf,
    pub front: u16,
    pub control: u16,
    pub blue: u16,
    pub green: u16,
    serve: Option<Child>,
    /// Lines the daemon wrote to stderr, collected by a thread.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Root {
    /// `bluegreen init`, then a config that runs the built-in sample app with short
    /// timings and free ports, and an empty work repo with `blue` and `green` remotes.
    pub fn new() -> Root {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("root");
        let out = Command::new(BIN).arg("init").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let work = tmp.path().join("work");
        let root = Root {
            path,
            work,
            front: free_port(),
            control: free_port(),
            blue: free_port(),
            green: free_port(),
            _tmp: tmp,
            serve: None,
            log: Default::default(),
        };
        root.set("build.command", "");
        root.set("app.command", format!("{BIN} sample-app"));
        root.set("app.ready_timeout", "10s");
        root.set("app.drain_timeout", "5s");
        root.set("app.stop_timeout", "2s");
        root.set("app.linked_dirs", toml::Value::Array(vec!["data".into()]));
        root.set("router.listen", format!("127.0.0.1:{}", root.front));
        root.set("control.listen", format!("127.0.0.1:{}", root.control));
        root.set("slots.blue.listen", format!("127.0.0.1:{}", root.blue));
        root.set("slots.green.listen", format!("127.0.0.1:{}", root.green));
        root.set("heartbeat.interval", "1h");
        fs::create_dir_all(&root.work).unwrap();
        root.git(&["init", "-q", "-b", "main"]);
        for slot in ["blue", "green"] {
            let url = root.path.join(format!("{slot}.git"));
            root.git(&["remote", "add", slot, url.to_str().unwrap()]);
        }
        root
    }

    /// Sets `section.key` (dotted) in bluegreen.toml.
    pub fn set(&self, key: &str, value: impl Into<toml::Value>) -> &Root {
        let file = self.path.join("bluegreen.toml");
        let mut doc: toml::Table = fs::read_to_string(&file).unwrap().parse().unwrap();
        let mut table = &mut doc;
        let parts: Vec<&str> = key.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            table = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()))
                .as_table_mut()
                .unwrap();
        }
        table.insert(parts[parts.len() - 1].to_string(), value.into());
        fs::write(&file, toml::to_string(&doc).unwrap()).unwrap();
        self
    }

    pub fn git(&self, args: &[&str]) -> Output {
        let out = git_command(&self.work).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `git <args>` in the work repo with `input` on its stdin (`hash-object --stdin`,
    /// `mktree`: objects git's porcelain would not make): its stdout, trimmed.
    pub fn git_fed(&self, args: &[&str], input: &[u8]) -> String {
        use std::io::Write;
        let mut child = git_command(&self.work)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Writes `files` (name -> content) into the work repo and commits them.
    pub fn commit(&self, message: &str, files: &[(&str, &str)]) -> String {
        for (name, content) in files {
            let file = self.work.join(name);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, content).unwrap();
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        String::from_utf8(self.git(&["rev-parse", "HEAD"]).stdout)
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn remove(&self, name: &str) {
        self.git(&["rm", "-q", name]);
    }

    /// Sets `build.command`, which finds in its env `$COUNT`, a file a build may append
    /// a line to (how many ran: [`count_lines`]), and `$GO`, a file a build may wait for
    /// (which the test makes when it lets it go on).
    pub fn set_build(&self, command: &str) -> Builds {
        let dir = self.path.parent().unwrap();
        let builds = Builds {
            count: dir.join("builds-run"),
            go: dir.join("go"),
        };
        self.set("build.command", command);
        self.set(
            "build.env",
            env_map(&[
                ("COUNT", builds.count.to_str().unwrap()),
                ("GO", builds.go.to_str().unwrap()),
            ]),
        );
        builds
    }

    /// `git push <slot> main` (forced); the output is what the pusher sees.
    pub fn push(&self, slot: &str) -> Pushed {
        self.push_ref(slot, "+HEAD:refs/heads/main")
    }

    /// `push`, as the service user pushes (README: `app`, not root): as root, without
    /// CAP_DAC_OVERRIDE and CAP_FOWNER, so that permission bits and other users'
    /// ownership hold for the hook as they would for it.
    pub fn push_unprivileged(&self, slot: &str) -> Pushed {
        let git = git_command(&self.work);
        let mut push = unprivileged("git");
        for (name, value) in git.get_envs() {
            match value {
                Some(value) => push.env(name, value),
                None => push.env_remove(name),
            };
        }
        let out = push
            .current_dir(&self.work)
            .args(["push", slot, "+HEAD:refs/heads/main"])
            .output()
            .unwrap();
        Pushed {
            ok: out.status.success(),
            text: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn push_ref(&self, slot: &str, refspec: &str) -> Pushed {
        let out = git_command(&self.work)
            .args(["push", slot, refspec])
            .output()
            .unwrap();
        Pushed {
            ok: out.status.success(),
            text: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `bluegreen <args> --root <root>`.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--root")
            .arg(&self.path)
            .output()
            .unwrap()
    }

    /// Makes the work tree's `public` a symlink to a folder outside the root, and returns
    /// that folder: with `public/uploads` a linked dir ([`Root::link_uploads`]), a deploy
    /// of the tree fails after its build, at its release's linked dir.
    pub fn public_outside(&self) -> PathBuf {
        let outside = self.path.parent().unwrap().join("outside");
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, self.work.join("public")).unwrap();
        outside
    }

    /// Sets `app.linked_dirs` to `public/uploads`.
    pub fn link_uploads(&self) {
        self.set(
            "app.linked_dirs",
            toml::Value::Array(vec!["public/uploads".into()]),
        );
    }

    /// `run` as on a full disk: no file the command writes may grow (`RLIMIT_FSIZE` 0, and
    /// `SIGXFSZ` ignored, so a write fails with `EFBIG` where a full disk gives `ENOSPC`),
    /// while links, folders and empty files can still be made, as on a disk whose blocks
    /// are used up before its inodes.
    pub fn run_disk_full(&self, args: &[&str]) -> Output {
        let mut command = Command::new(BIN);
        command.args(args).arg("--root").arg(&self.path);
        // SAFETY: setrlimit(2) and sigaction(2) are async-signal-safe, as pre_exec
        // requires; an ignored signal stays ignored across exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                use nix::sys::resource::{setrlimit, Resource};
                use nix::sys::signal::{signal, SigHandler, Signal};
                signal(Signal::SIGXFSZ, SigHandler::SigIgn).map_err(std::io::Error::from)?;
                setrlimit(Resource::RLIMIT_FSIZE, 0, 0).map_err(std::io::Error::from)
            });
        }
        command.output().unwrap()
    }

    /// `run`, which must succeed (else its stderr is shown); its stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "bluegreen {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `run`, which must fail with exit code 1; its stderr, trimmed (the one error line).
    pub fn run_err(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(
            out.status.code(),
            Some(1),
            "bluegreen {}: {stderr}",
            args.join(" ")
        );
        stderr
    }

    /// Starts `bluegreen serve` and waits until its control API answers.
    pub fn serve(&mut self) -> &mut Root {
        self.serve_with(&[])
    }

    pub fn serve_with(&mut self, env: &[(&str, &str)]) -> &mut Root {
        self.serve_limited(env, None)
    }

    /// `serve_with`, with the daemon's file limit (soft and hard) set to `files`.
    pub fn serve_limited(&mut self, env: &[(&str, &str)], files: Option<u64>) -> &mut Root {
        self.spawn_serve(env, files, Reading::Now)
    }

    /// `serve`, with nobody reading the daemon's log (its reader gone, as when journald
    /// restarts): every line it writes fails with EPIPE.
    pub fn serve_unread(&mut self) -> &mut Root {
        self.spawn_serve(&[], None, Reading::Never)
    }

    /// `serve`, with the daemon's log a pipe that nobody reads until `go` is sent (a
    /// `serve 2>&1 | less` left on its first page, a stalled log shipper): once the pipe
    /// is full, a write to it waits.
    pub fn serve_stalled(&mut self) -> std::sync::mpsc::Sender<()> {
        let (go, stalled) = std::sync::mpsc::channel();
        self.spawn_serve(&[], None, Reading::After(stalled));
        go
    }

    /// Listening sockets on the config's four addresses, for `serve_activated`.
    pub fn sockets(&self) -> Vec<std::net::TcpListener> {
        [self.front, self.blue, self.green, self.control]
            .map(|port| std::net::TcpListener::bind(("127.0.0.1", port)).unwrap())
            .into()
    }

    /// `serve` under socket activation, as systemd starts it from a socket unit: `fds`
    /// become the daemon's file descriptors 3, 4, ... with `LISTEN_FDS` and `LISTEN_PID`
    /// set (the pid by a shell that then execs the daemon).
    pub fn serve_activated(&mut self, fds: &[std::os::fd::BorrowedFd]) -> &mut Root {
        self.serve_activated_with(&[], fds)
    }

    /// `serve_activated`, with `env` set too (`LISTEN_FDNAMES`, as systemd sets it).
    pub fn serve_activated_with(
        &mut self,
        env: &[(&str, &str)],
        fds: &[std::os::fd::BorrowedFd],
    ) -> &mut Root {
        self.spawn(env, activated(fds, true), Reading::Now)
    }

    /// `serve` under socket activation with `fds`, for a daemon that exits at once.
    pub fn run_activated(&self, fds: &[std::os::fd::BorrowedFd]) -> Output {
        let mut command = self.serve_command(&[], activated(fds, true));
        command.stderr(Stdio::piped()).output().unwrap()
    }

    /// `run_activated`, as a wrapper script that runs `serve` without `exec` does:
    /// `LISTEN_PID` names the script, not the daemon.
    pub fn run_activated_unexeced(&self, fds: &[std::os::fd::BorrowedFd]) -> Output {
        let mut command = self.serve_command(&[], activated(fds, false));
        command.stderr(Stdio::piped()).output().unwrap()
    }

    fn spawn_serve(
        &mut self,
        env: &[(&str, &str)],
        files: Option<u64>,
        read: Reading,
    ) -> &mut Root {
        let launch = match files {
            Some(files) => Launch::Limited(files),
            None => Launch::Plain,
        };
        self.spawn(env, launch, read)
    }

    /// `bluegreen serve` on this root as `launch` says, with stdin and stdout null.
    fn serve_command(&self, env: &[(&str, &str)], launch: Launch) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = match launch {
            Launch::Activated(_, _, exec) => {
                let mut sh = Command::new("sh");
                let script = match exec {
                    true => "LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"",
                    false => "LISTEN_PID=$$; export LISTEN_PID; \"$0\" \"$@\"",
                };
                sh.args(["-c", script, BIN]);
                sh
            }
            _ => Command::new(BIN),
        };
        match launch {
            Launch::Plain => {}
            // SAFETY: setrlimit(2) is async-signal-safe, as pre_exec requires.
            Launch::Limited(files) => unsafe {
                use nix::sys::resource::{setrlimit, Resource};
                command.pre_exec(move || {
                    setrlimit(Resource::RLIMIT_NOFILE, files, files).map_err(std::io::Error::from)
                });
            },
            // SAFETY: setrlimit(2) and sigaction(2) are async-signal-safe, as pre_exec
            // requires; an ignored signal stays ignored across exec.
            Launch::DiskFull => unsafe {
                use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
                use nix::sys::signal::{signal, SigHandler, Signal};
                command.pre_exec(|| {
                    signal(Signal::SIGXFSZ, SigHandler::SigIgn).map_err(std::io::Error::from)?;
                    setrlimit(Resource::RLIMIT_FSIZE, 0, RLIM_INFINITY)
                        .map_err(std::io::Error::from)
                });
            },
            // SAFETY: fcntl(2) and dup2(2) are async-signal-safe, as pre_exec requires,
            // and nothing here allocates. Each fd is first copied above 3 + count (and
            // close-on-exec), so moving one to its place never overwrites another.
            Launch::Activated(fds, count, _) => unsafe {
                use nix::libc;
                command.pre_exec(move || {
                    let mut high = [-1; 8];
                    for (high, fd) in high.iter_mut().zip(fds).take(count) {
                        *high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3 + count as i32);
                        if *high < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    for (i, fd) in high.iter().enumerate().take(count) {
                        if libc::dup2(*fd, 3 + i as i32) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
                command.env("LISTEN_FDS", count.to_string());
            },
        }
        command
            .args(["serve", "--root"])
            .arg(&self.path)
            // Hermetic when the tests themselves run under systemd (a CI runner's unit):
            // the daemon under test must not talk to that unit's manager or journal.
            .env_remove("INVOCATION_ID")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("JOURNAL_STREAM")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // Unless the test sets it (a stale environment).
        if !matches!(launch, Launch::Activated(..)) && !env.iter().any(|(k, _)| *k == "LISTEN_FDS")
        {
            command.env_remove("LISTEN_FDS");
        }
        command
    }

    /// `serve` as on a full disk (`Launch::DiskFull`); `disk_has_room` ends it.
    pub fn serve_disk_full(&mut self) -> &mut Root {
        self.spawn(&[], Launch::DiskFull, Reading::Now)
    }

    /// The daemon started by `serve_disk_full` may write files again.
    pub fn disk_has_room(&self) {
        let unlimited = nix::libc::rlimit {
            rlim_cur: nix::libc::RLIM_INFINITY,
            rlim_max: nix::libc::RLIM_INFINITY,
        };
        // SAFETY: prlimit(2) with a valid limit to set and none to read back.
        let done = unsafe {
            nix::libc::prlimit(
                self.serve_pid() as i32,
                nix::libc::RLIMIT_FSIZE,
                &unlimited,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(done, 0, "{}", std::io::Error::last_os_error());
    }

    /// `serve`, without waiting for its control API: a daemon still starting.
    pub fn serve_starting(&mut self) -> &mut Root {
        self.start(&[], Launch::Plain, Reading::Now)
    }

    fn spawn(&mut self, env: &[(&str, &str)], launch: Launch, read: Reading) -> &mut Root {
        self.start(env, launch, read);
        let control = self.control;
        let up = poll_until(Duration::from_secs(30), || {
            if let Some(status) = self
                .serve
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the daemon exited ({status}) before its control API answered:\n{}",
                    self.log()
                );
            }
            http("GET", &format!("http://127.0.0.1:{control}/status"), None).ok()
        });
        assert!(up.is_some(), "no control API within 30s:\n{}", self.log());
        self
    }

    /// Starts the daemon as `launch` says, its log read into `log` as `read` says.
    fn start(&mut self, env: &[(&str, &str)], launch: Launch, read: Reading) -> &mut Root {
        assert!(self.serve.is_none(), "already serving");
        let mut child = self
            .serve_command(env, launch)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        let go = match read {
            Reading::Never => None,
            Reading::Now => Some(None),
            Reading::After(go) => Some(Some(go)),
        };
        if let Some(go) = go {
            std::thread::spawn(move || {
                if let Some(go) = go {
                    let _ = go.recv();
                }
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        self.serve = Some(child);
        self
    }

    pub fn serve_pid(&self) -> u32 {
        self.serve.as_ref().expect("serving").id()
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.serve_pid() as i32), signal)
            .unwrap();
    }

    /// SIGHUP to the daemon, and waits for the event of the config it took (one more
    /// `config reloaded from` than before).
    pub fn reload_config(&self) {
        let reloads = || {
            self.control("GET", "/events")
                .body
                .matches("config reloaded from")
                .count()
        };
        let before = reloads();
        self.signal(nix::sys::signal::Signal::SIGHUP);
        wait_for(Duration::from_secs(10), "the reload event", || {
            (reloads() > before).then_some(())
        });
    }

    /// SIGTERM to the daemon: it exits 0 within `limit`, and no process of this root
    /// (worker, or one a worker started) is left.
    pub fn stop_cleanly(&mut self, limit: Duration) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(self.wait_serve(limit), Some(0), "{}", self.log());
        assert_eq!(
            self.processes(),
            Vec::<u32>::new(),
            "no process of the root survives the daemon"
        );
    }

    /// Stops the daemon as systemd does (SIGTERM); it must exit 0 within 15 s.
    pub fn stop_serve(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(self.wait_serve(Duration::from_secs(15)), Some(0));
    }

    /// Waits for the daemon to exit; its exit code.
    pub fn wait_serve(&mut self, limit: Duration) -> Option<i32> {
        let mut child = self.serve.take().expect("serving");
        let status = wait_for(limit, "the daemon to exit", || child.try_wait().unwrap());
        status.code()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The daemon's log as it is collected, for a thread that waits on it while this
    /// `Root` is busy (starting the daemon).
    pub fn log_lines(&self) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
        self.log.clone()
    }

    /// Waits for `text` in the daemon's log, which a reader thread collects from its
    /// stderr and so may trail what the control API already shows.
    pub fn wait_log(&self, text: &str) {
        let limit = Duration::from_secs(10);
        if poll_until(limit, || self.log().contains(text).then_some(())).is_none() {
            panic!("no `{text}` in the log within {limit:?}:\n{}", self.log());
        }
    }

    pub fn url(&self, port: u16, path: &str) -> String {
        format!("http://127.0.0.1:{port}{path}")
    }

    pub fn get(&self, port: u16, path: &str) -> Answer {
        http("GET", &self.url(port, path), None)
            .unwrap_or_else(|e| panic!("GET :{port}{path}: {e}"))
    }

    /// `/status`'s `stale_config` note, empty when it has none.
    pub fn stale_note(&self) -> String {
        self.status()["stale_config"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.get(self.control, "/status").body).unwrap()
    }

    pub fn control(&self, method: &str, path: &str) -> Answer {
        http(method, &self.url(self.control, path), None).unwrap()
    }

    /// Waits until `port` answers `GET /` with 200 and a body containing `text`.
    pub fn wait_body(&self, port: u16, text: &str) {
        let url = self.url(port, "/");
        wait_for(
            Duration::from_secs(20),
            &format!(":{port} to answer {text:?}"),
            || {
                http("GET", &url, None)
                    .ok()
                    .filter(|a| a.status == 200 && a.body.contains(text))
            },
        );
    }

    /// The pid (and process group) of `slot`'s live generation.
    pub fn live_pid(&self, slot: &str) -> i32 {
        let status = self.status();
        let pid = status["slots"][slot]["live"]["pid"].as_u64();
        pid.unwrap_or_else(|| panic!("{slot} has no live generation: {status}")) as i32
    }

    /// The one build log under `builds/` (of the one build a test ran that failed or was
    /// stopped): its path.
    pub fn build_log(&self) -> PathBuf {
        let logs: Vec<PathBuf> = fs::read_dir(self.path.join("builds"))
            .unwrap()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
            .collect();
        assert_eq!(logs.len(), 1, "one build log: {logs:?}");
        logs.into_iter().next().unwrap()
    }

    pub fn current(&self, slot: &str) -> Option<String> {
        let link = fs::read_link(self.path.join(slot).join("current")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    /// The metadata of `slot`'s current release, as bluegreen wrote it.
    pub fn current_meta(&self, slot: &str) -> serde_json::Value {
        let file = self.path.join(slot).join("current/.bluegreen-release.json");
        serde_json::from_str(&fs::read_to_string(file).unwrap()).unwrap()
    }

    /// Points `slot`'s `current` at `target` by hand, atomically, as an operator would
    /// (`ln -s … current.new && mv -T current.new current`).
    pub fn point_current(&self, slot: &str, target: &str) {
        let dir = self.path.join(slot);
        std::os::unix::fs::symlink(target, dir.join("current.hand")).unwrap();
        fs::rename(dir.join("current.hand"), dir.join("current")).unwrap();
    }

    pub fn releases(&self, slot: &str) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(self.path.join(slot).join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        ids.sort();
        ids
    }

    /// Pids of processes that belong to this root: workers (env marker) and anything
    /// running inside it (builds, hooks).
    pub fn processes(&self) -> Vec<u32> {
        root_processes(&self.path)
    }
}

/// When the test reads the daemon's log (its stderr, a pipe).
enum Reading {
    /// From the start, into `Root::log`.
    Now,
    /// Never: the pipe's read end is closed (a reader gone).
    Never,
    /// Once the sender sends (or is dropped): until then the pipe fills and stays full.
    After(std::sync::mpsc::Receiver<()>),
}

/// How `spawn` starts the daemon.
#[derive(Clone, Copy)]
enum Launch {
    Plain,
    /// With its file limit (soft and hard) set to this.
    Limited(u64),
    /// Under socket activation, with these fds (the first `.1` of them), and `.2` false
    /// as a wrapper script without `exec` runs it: `LISTEN_PID` is the script's.
    Activated([i32; 8], usize, bool),
    /// As on a full disk: no file it writes may grow (soft `RLIMIT_FSIZE` 0, `SIGXFSZ`
    /// ignored, so a write fails with `EFBIG`), until the soft limit is raised.
    DiskFull,
}

/// `Launch::Activated` with `fds`, the daemon `exec`ed (as systemd starts it) or not.
fn activated(fds: &[std::os::fd::BorrowedFd], exec: bool) -> Launch {
    use std::os::fd::AsRawFd;
    assert!(fds.len() <= 8, "at most 8 sockets");
    let mut raw = [-1; 8];
    for (to, fd) in raw.iter_mut().zip(fds) {
        *to = fd.as_raw_fd();
    }
    Launch::Activated(raw, fds.len(), exec)
}

/// The hook run as git runs it for a push into `repo` (`GIT_DIR`), with `args` before its
/// subcommand and `input` (`<old> <new> <ref>` lines) on its stdin.
/// `program` run so that permission bits and other users' ownership hold for it: as
/// root, without CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER.
pub fn unprivileged(program: &str) -> Command {
    if !nix::unistd::geteuid().is_root() {
        return Command::new(program);
    }
    let mut setpriv = Command::new("setpriv");
    setpriv.args([
        "--bounding-set",
        "-dac_override,-dac_read_search,-fowner",
        program,
    ]);
    setpriv
}

/// `bluegreen check --root <root>` passes: the root's config is one `serve` would take.
pub fn assert_checks(root: &Path) {
    let check = Command::new(BIN)
        .args(["check", "--root"])
        .arg(root)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
}

pub fn run_hook(repo: &Path, args: &[&std::ffi::OsStr], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["hook", "post-receive"])
        .env("GIT_DIR", repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// `git` with a clean env: no hook variables, a fixed identity, no user config.
pub fn git_command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("BLUEGREEN_ROOT")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com");
    command
}

/// What a build set by [`Root::set_build`] finds in `$COUNT` and `$GO`.
pub struct Builds {
    pub count: PathBuf,
    pub go: PathBuf,
}

/// A served root with v1 live on blue (the first slot live, so the active one).
pub fn blue_live() -> Root {
    blue_live_with(&[])
}

/// A root serving v1 on both slots; blue is active (deployed first).
/// Pushes `versions` (`v2`, `v3`: each the `VERSION` of a commit) to blue, each live in
/// turn; the releases, with blue's current one before them first.
pub fn deploy_versions(root: &Root, versions: &[&str]) -> Vec<String> {
    let mut releases = vec![root.current("blue").unwrap()];
    for version in versions {
        root.commit(version, &[("VERSION", &format!("{version}\n"))]);
        root.push("blue").says("blue: live in ");
        releases.push(root.current("blue").unwrap());
    }
    releases
}

pub fn both_live() -> Root {
    let root = blue_live();
    root.push("green").says("green: live in ");
    root
}

/// A served root with these config keys set (and the heartbeat every 300 ms), blue live
/// and active, and green live but answering 500 to its health checks (it went live
/// first: `FAIL_AFTER` 3 s leaves it time to, even on a loaded machine).
pub fn green_failing_standby(settings: &[(&str, toml::Value)]) -> Root {
    let mut root = Root::new();
    root.set("heartbeat.interval", "300ms");
    for (key, value) in settings {
        root.set(key, value.clone());
    }
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.commit("fails soon", &[("VERSION", "v2\n"), ("FAIL_AFTER", "3")]);
    root.push("green").says("green: live in ");
    wait_for(
        Duration::from_secs(15),
        "green's health to say failing",
        || {
            // Whatever `heartbeat.path` the settings name.
            let health = root.status()["slots"]["green"]["health"].clone();
            let health = health.as_str().unwrap_or_default();
            (health.starts_with("failing: GET /") && health.ends_with(" answered 500"))
                .then_some(())
        },
    );
    root
}

/// `blue_live`, then v2 pushed to blue and live there.
pub fn v2_over_v1_on_blue() -> Root {
    let root = blue_live();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue");
    root.wait_body(root.blue, "v2 from blue");
    root
}

/// `blue_live`, with these config keys set before the daemon starts.
pub fn blue_live_with(settings: &[(&str, toml::Value)]) -> Root {
    let mut root = Root::new();
    for (key, value) in settings {
        root.set(key, value.clone());
    }
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Some(mut child) = self.serve.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Builds' helpers that work outside the root (`cd /`) are found by their marker:
        // a test that fails before the next push stops them would leave them running.
        let left = root_processes(&self.path).into_iter();
        for pid in left.chain(build_helpers(&self.path)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Lines of a file, for build counters.
/// A `switch.migrate` that writes what `noted` prints (a shell command: `echo
/// $FROM_PORT`) into `note`, then waits until `go` exists (the test's word, or the
/// migration's timeout): a migration held under way.
pub fn held_migrate(noted: &str, note: &Path, go: &Path) -> String {
    format!(
        "sh -c '{noted} > {}; until [ -e {} ]; do sleep 0.05; done'",
        note.display(),
        go.display()
    )
}

pub fn count_lines(path: &Path) -> usize {
    fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

pub fn env_map(pairs: &[(&str, &str)]) -> toml::Value {
    let map: BTreeMap<String, toml::Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), toml::Value::from(*v)))
        .collect();
    toml::Value::Table(map.into_iter().collect())
}

/// Every path under `dir`, relative to it, sorted.
pub fn walkdir(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        for entry in fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            found.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                todo.push(path);
            }
        }
    }
    found.sort();
    found
}

/// `root's (uid 0)`, or `uid 1000's` for a user with no account: as bluegreen names a
/// file's owner.
pub fn user_shown(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
    {
        Some(user) => format!("{}'s (uid {uid})", user.name),
        None => format!("uid {uid}'s"),
    }
}

/// The kernel setting `/proc/sys/<name>`, a number (`net/core/somaxconn`).
pub fn sysctl(name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/sys/{name}"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Kills the child it holds when dropped, so a failed assertion leaves no process.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
