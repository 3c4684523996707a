//! `bluegreen demo`: a newcomer's first run, with nothing installed but this binary and git.
//!
//! Makes a root and a small git repo of the built-in sample app, starts the daemon, pushes
//! the repo to blue and to green with the real `git` (so the real `remote:` transcript
//! shows, "build reused" included), then prints a guide of copy-paste commands and
//! serves until Ctrl-C, which stops the daemon and every worker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::DemoArgs;
use crate::client::Client;
use crate::config::Config;
use crate::layout::Layout;
use crate::slot::Slot;

mod ports;

pub fn run(args: DemoArgs) -> anyhow::Result<bool> {
    // The flags are checked before anything is made: a refused run leaves nothing behind.
    let exe = std::env::current_exe()?.canonicalize()?;
    let config = demo_config(&args, &exe)?;
    // The folder first: the ports' advice gives the command again with it.
    if let Some(dir) = &args.dir {
        check_dir(dir)?;
    }
    ports::check(&args, &exe)?;
    check_git()?;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot make {}", dir.display()))?;
            dir.canonicalize()?
        }
        None => tempfile::Builder::new()
            .prefix("bluegreen-demo-")
            .tempdir()?
            .keep(),
    };
    let layout = Layout::new(&dir.join("root"))?;
    let app = dir.join("app");

    crate::init::run(&layout, &mut std::io::sink())?;
    crate::fsops::write_atomic_private(&layout.config_file(), config.to_toml().as_bytes())?;
    make_app_repo(&app, &layout)?;

    // Ctrl-C, a `kill`, and the terminal closing (SIGHUP, which the daemon, in the same
    // process group, takes for a reload) all stop the demo, its daemon and its workers.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let log = std::fs::File::create(layout.serve_log())?;
    let mut command = Command::new(&exe);
    command
        .args(["serve", "--root"])
        .arg(layout.root())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let demo = nix::unistd::getpid();
    // SAFETY: prctl(2) and getppid(2) are async-signal-safe, as pre_exec requires.
    unsafe {
        use std::os::unix::process::CommandExt;
        // A demo killed outright (SIGKILL) takes its daemon with it, which stops its
        // workers as on any SIGTERM; one killed before this ran is not there to see.
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != demo {
                // No allocation here: an errno, not a message.
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
    let serve = command.spawn().context("cannot start the daemon")?;
    let mut serve = Daemon {
        child: serve,
        layout: layout.clone(),
        grace: config.app.stop_timeout,
    };
    guide(&args, &exe, &layout, &app, &config, &mut serve.child, &stop)
}

/// The demo's daemon, stopped (drained, its workers with it) however the demo ends: a
/// failed push, an error, or a panic.
struct Daemon {
    child: Child,
    layout: Layout,
    /// The config's `app.stop_timeout`.
    grace: Duration,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A daemon that died (killed, out of memory) left its workers running: they go
        // as the next `serve` would stop them.
        crate::daemon::reap_orphans(&self.layout, self.grace);
    }
}

/// Prints `text` to stdout (`err`: stderr) if it can: a reader that has gone (`demo |
/// head`) must not end the demo before its daemon is stopped.
fn say(err: bool, text: std::fmt::Arguments) {
    use std::io::Write;
    let _ = if err {
        writeln!(std::io::stderr(), "{text}")
    } else {
        writeln!(std::io::stdout(), "{text}")
    };
}

fn guide(
    args: &DemoArgs,
    exe: &Path,
    layout: &Layout,
    app: &Path,
    config: &Config,
    serve: &mut Child,
    stop: &AtomicBool,
) -> anyhow::Result<bool> {
    let client = Client::new(config, layout);
    let serve_log = layout.serve_log();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get("/status").is_err() {
        anyhow::ensure!(
            serve.try_wait()?.is_none(),
            "the daemon exited; see {}",
            serve_log.display()
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "the daemon did not answer within 30s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for slot in [Slot::Blue, Slot::Green] {
        say(true, format_args!("$ git push {slot} main"));
        let status = git(app)
            .args(["push", "--no-verify", slot.name(), "main"])
            .status()?;
        anyhow::ensure!(status.success(), "git push {slot} main failed");
        // git says nothing of a hook it did not run.
        anyhow::ensure!(
            crate::release::current(layout, slot).is_some(),
            "git push {slot} main deployed nothing: git did not run {}",
            layout.hook(slot).display()
        );
    }
    // Pasted into a shell: a path with a space is one word.
    let exe = crate::pasted::path(exe);
    let root = crate::pasted::path(layout.root());
    let log = crate::pasted::path(&serve_log);
    let app = crate::pasted::path(app);
    let (front, blue, green, control) = (args.front, args.blue, args.green, args.control);
    say(
        false,
        format_args!(
            "
bluegreen demo is running. Ctrl-C stops it (the daemon and every worker).

  front    http://{front}/     the active slot (blue to begin with)
  blue     http://{blue}/     blue directly
  green    http://{green}/     green directly
  status   http://{control}/status
  root {root}   app repo {app}   daemon log {log}

Try, in another terminal:

  # ship v2 to green (the standby); the front keeps serving blue
  $ cd {app} && echo v2 > VERSION && git commit -qam v2 && git push green main
  $ curl http://{green}/

  # move the front to green (curl, or the CLI)
  $ curl -X POST http://{control}/switch
  $ {exe} switch green --root {root}

  # green starts failing 10s after its next start; the heartbeat moves traffic back to blue
  $ cd {app} && echo 10 > FAIL_AFTER && git add FAIL_AFTER && git commit -qm 'fail after 10s' && git push green main
  $ {exe} status --root {root}
"
        ),
    );
    while !stop.load(Ordering::Acquire) {
        if let Some(status) = serve.try_wait()? {
            anyhow::bail!("the daemon exited ({status}); see {log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    say(
        true,
        format_args!(
            "stopping: draining and stopping every generation; the demo's files stay in {} (remove it when done)",
            layout.root().parent().unwrap_or(layout.root()).display()
        ),
    );
    Ok(true)
}

/// `dir` (which may not exist yet) as the path the kernel will give it: its nearest
/// existing folder resolved (`..` and links), the rest as written. `../x` from inside a
/// checkout is beside it, not in it.
fn resolved(dir: &Path) -> anyhow::Result<PathBuf> {
    let absolute = std::path::absolute(dir)?;
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut path = existing.canonicalize()?;
    path.extend(rest.iter().rev());
    Ok(path)
}

/// Refuses to start without `git`, which the demo pushes with: a missing one was only
/// `No such file or directory`, after the folder was half made.
fn check_git() -> anyhow::Result<()> {
    let ran = Command::new("git")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match ran {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => anyhow::bail!("the demo needs git, and `git --version` failed ({status})"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "the demo needs git, and there is none on the PATH: install it (e.g. `apt-get install git`), then run the demo again"
        ),
        Err(e) => anyhow::bail!("the demo needs git, and it cannot run: {e}"),
    }
}

/// Refuses a DIR the demo cannot make its root and repo in: not a folder, inside a git
/// checkout (`init` would refuse it), or not empty. Nothing is made yet.
fn check_dir(dir: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !dir.exists() || dir.is_dir(),
        "{} is not a folder: give the demo a new folder",
        dir.display()
    );
    // `init` would refuse the root inside a checkout (`cargo run -- demo x` in
    // bluegreen's own clone): refused before the folder is made.
    if let Some(within) = crate::init::nested_in(&resolved(dir)?) {
        anyhow::bail!(
            "{} is inside {within}: give the demo a folder outside it (e.g. `bluegreen demo /tmp/bluegreen-demo`)",
            dir.display()
        );
    }
    let empty = dir
        .read_dir()
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    anyhow::ensure!(
        empty,
        "{} is not empty: give the demo a new folder",
        dir.display()
    );
    Ok(())
}

fn demo_config(args: &DemoArgs, exe: &Path) -> anyhow::Result<Config> {
    let mut config = Config::default();
    config.build.command =
        "sh -c 'echo \"built $(cat VERSION) at $(date -u +%H:%M:%S)\" | tee BUILD_INFO'".into();
    config.app.command = format!(
        "{} sample-app",
        shell_words::quote(&exe.display().to_string())
    );
    config.app.ready_timeout = Duration::from_secs(10);
    config.app.drain_timeout = Duration::from_secs(5);
    config.app.stop_timeout = Duration::from_secs(3);
    config.app.linked_dirs = vec!["data".into()];
    config.router.listen = args.front;
    config.control.listen = args.control;
    config.slots.blue.listen = args.blue;
    config.slots.green.listen = args.green;
    config.slots.blue.env.clear();
    config.slots.green.env.clear();
    config.heartbeat.interval = Duration::from_secs(2);
    // Round-trip through the parser: the demo's config obeys the same rules as a user's,
    // told in the flags' names (the user wrote no file).
    Config::parse(&config.to_toml()).map_err(|e| {
        let mut told = e
            .split_once(": ")
            .map_or(e.as_str(), |(_, rest)| rest)
            .to_string();
        for (key, flag) in [
            ("router.listen", "--front"),
            ("control.listen", "--control"),
            ("slots.blue.listen", "--blue"),
            ("slots.green.listen", "--green"),
        ] {
            told = told.replace(key, flag);
        }
        anyhow::anyhow!("{told}")
    })
}

fn make_app_repo(app: &Path, layout: &Layout) -> anyhow::Result<()> {
    std::fs::create_dir_all(app)?;
    std::fs::write(app.join("VERSION"), "v1\n")?;
    std::fs::write(
        app.join("README.txt"),
        "The built-in sample app. It answers GET / with the text of VERSION.\nA FAIL_AFTER file with N makes it answer 500 after N seconds.\n",
    )?;
    let steps: [Vec<String>; 8] = [
        vec!["init".into(), "-q".into(), "-b".into(), "main".into()],
        vec!["config".into(), "user.name".into(), "bluegreen demo".into()],
        vec![
            "config".into(),
            "user.email".into(),
            "demo@localhost".into(),
        ],
        // A throwaway repo: the user's signing setup (a key, an agent) has no say, nor
        // their hooks (a team's `core.hooksPath`), in the guide's commit and push either.
        vec!["config".into(), "commit.gpgsign".into(), "false".into()],
        vec!["config".into(), "core.hooksPath".into(), "/dev/null".into()],
        vec!["add".into(), "-A".into()],
        vec![
            "commit".into(),
            "-q".into(),
            "--no-verify".into(),
            "-m".into(),
            "v1".into(),
        ],
        vec![
            "remote".into(),
            "add".into(),
            "blue".into(),
            path(&layout.repo(crate::slot::Slot::Blue)),
        ],
    ];
    for step in steps {
        let status = git(app).args(&step).status()?;
        anyhow::ensure!(status.success(), "git {} failed", step.join(" "));
    }
    let green = path(&layout.repo(crate::slot::Slot::Green));
    anyhow::ensure!(
        git(app)
            .args(["remote", "add", "green", &green])
            .status()?
            .success(),
        "git remote add green failed"
    );
    Ok(())
}

fn git(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command.current_dir(dir);
    command
}

fn path(p: &Path) -> String {
    PathBuf::from(p).display().to_string()
}
