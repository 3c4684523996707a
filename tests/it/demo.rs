//! `bluegreen demo`: the newcomer's first run, its printed guide, and Ctrl-C.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::*;

/// A running `bluegreen demo` that a failed assertion does not leave serving: dropped
/// while it runs, it gets the Ctrl-C it waits for (then SIGKILL), and what still runs of
/// its root goes too (its daemon, which works in the test's folder, named by its command
/// line; workers and builds).
struct Demo {
    child: Child,
    root: PathBuf,
}

impl Demo {
    /// `bluegreen demo <dir>` on `ports` (front, blue, green, control), its stdout piped,
    /// in a process group of its own, as a shell runs a job.
    fn start(dir: &std::path::Path, ports: [u16; 4], stderr: Stdio) -> Demo {
        Demo::start_with_git_config(dir, ports, stderr, std::path::Path::new("/dev/null"))
    }

    /// `start`, with `git_config` as the user's global git config.
    fn start_with_git_config(
        dir: &std::path::Path,
        ports: [u16; 4],
        stderr: Stdio,
        git_config: &std::path::Path,
    ) -> Demo {
        use std::os::unix::process::CommandExt;
        let addr = |p: u16| format!("127.0.0.1:{p}");
        let child = Command::new(BIN)
            .arg("demo")
            .arg(dir)
            .args(["--front", &addr(ports[0]), "--blue", &addr(ports[1])])
            .args(["--green", &addr(ports[2]), "--control", &addr(ports[3])])
            .env("GIT_CONFIG_GLOBAL", git_config)
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Demo {
            child,
            root: dir.join("root"),
        }
    }

    /// Reads the demo's stdout until the end of its guide, printed once both pushes went
    /// live (a signal before would stop the push under way); the rest is left unread.
    fn wait_for_guide(&mut self) {
        let stdout = self.child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let end = lines
                .by_ref()
                .map_while(Result::ok)
                .any(|line| line.contains("status --root"));
            let _ = tx.send(end);
            // Kept open: the demo's later lines must not meet a closed pipe.
            lines.for_each(drop);
        });
        let printed = rx.recv_timeout(Duration::from_secs(60));
        assert_eq!(printed, Ok(true), "the demo's guide");
    }

    /// Sends the demo the Ctrl-C it waits for; asserts it exits 0 within 20 s.
    fn ctrl_c(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let status = wait_for(Duration::from_secs(20), "the demo to exit", || {
            self.child.try_wait().unwrap()
        });
        assert!(status.success(), "{status}");
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let child = &mut self.child;
            poll_until(Duration::from_secs(40), || child.try_wait().ok().flatten());
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let root = self.root.to_string_lossy().into_owned();
        let mut left = root_processes(&self.root);
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if String::from_utf8_lossy(&cmdline(pid)).contains(&root) {
                left.push(pid);
            }
        }
        for pid in left {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[test]
fn the_demo_serves_its_guide_works_and_ctrl_c_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    // A space in the path: the guide's commands still paste as they are.
    let dir = tmp.path().join("my demo");
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let mut demo = Demo::start(&dir, ports, Stdio::piped());
    let stderr = demo.child.stderr.take().unwrap();
    let transcript = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut guide = Vec::new();
    let mut lines = BufReader::new(demo.child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let end = line.contains("status --root");
        guide.push(line);
        if end {
            break;
        }
    }
    let commands: Vec<String> = guide
        .iter()
        .filter_map(|l| l.trim().strip_prefix("$ ").map(String::from))
        .collect();
    assert!(commands.len() >= 5, "{guide:#?}");

    let front = format!("http://127.0.0.1:{}/", ports[0]);
    let answer = http("GET", &front, None).unwrap();
    assert!(answer.body.starts_with("v1 from blue"), "{}", answer.body);

    let run = |needle: &str| {
        let command = commands
            .iter()
            .find(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in {commands:#?}"));
        let out = Command::new("sh")
            .args(["-c", command])
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let pushed = run("echo v2 > VERSION");
    assert!(pushed.contains("green: live in "), "{pushed}");
    let green = format!("http://127.0.0.1:{}/", ports[2]);
    assert!(http("GET", &green, None)
        .unwrap()
        .body
        .starts_with("v2 from green"));
    assert!(
        http("GET", &front, None)
            .unwrap()
            .body
            .starts_with("v1 from blue"),
        "the front stays on blue"
    );
    let switched = run(" switch green --root ");
    assert!(switched.contains("switched blue -> green"), "{switched}");
    assert!(http("GET", &front, None)
        .unwrap()
        .body
        .starts_with("v2 from green"));

    demo.ctrl_c();
    let transcript = transcript.join().unwrap().join("\n");
    assert!(
        transcript.contains("remote: green: build reused"),
        "{transcript}"
    );
    assert!(
        transcript.contains("remote: blue: live in "),
        "{transcript}"
    );
    assert_eq!(
        root_processes(&dir.join("root")),
        Vec::<u32>::new(),
        "Ctrl-C leaves no process behind"
    );
}

/// A demo whose reader has gone (`bluegreen demo | head -3`, then the pager quit) still
/// serves, and its Ctrl-C still stops the daemon and every worker: printing the guide to
/// the closed pipe used to panic, and the daemon and its workers ran on unowned.
#[test]
fn a_demo_whose_reader_has_gone_still_stops_its_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let mut demo = Demo::start(&dir, ports, Stdio::null());
    // The reader goes at once.
    drop(demo.child.stdout.take());
    let green = format!("http://127.0.0.1:{}/", ports[2]);
    wait_for(Duration::from_secs(60), "green to answer", || {
        http("GET", &green, None)
            .ok()
            .filter(|a| a.body.starts_with("v1 from green"))
    });
    // The guide is written (to no one) right after the second push.
    let status_url = format!("http://127.0.0.1:{}/status", ports[3]);
    assert!(http("GET", &status_url, None).is_ok(), "the daemon serves");
    demo.ctrl_c();
    assert_eq!(
        root_processes(&dir.join("root")),
        Vec::<u32>::new(),
        "Ctrl-C leaves no process behind"
    );
}

#[test]
fn the_demo_names_a_taken_port_and_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my demo");
    let out = Command::new(BIN)
        .arg("demo")
        .arg(&dir)
        .args(["--front", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "error: 127.0.0.1:{port} is taken; pick free ports with --front"
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    assert!(!dir.exists(), "a refused demo makes nothing");
    // The same command, its folder kept, with ports that are free.
    let (_, command) = err.split_once("(these are free now: `").expect(&err);
    let command = command.trim_end().strip_suffix("`)").expect(&err);
    let words = shell_words(command);
    // The binary named by its path, as the demo's guide names it: `bluegreen` may not
    // be on the PATH.
    let exe = std::fs::canonicalize(BIN).unwrap();
    assert_eq!(
        words[..3],
        [exe.to_str().unwrap(), "demo", dir.to_str().unwrap()],
        "{command}"
    );
    for flag in ["--front", "--blue", "--green", "--control"] {
        let at = words.iter().position(|w| w == flag).expect(command);
        let addr: std::net::SocketAddr = words[at + 1].parse().unwrap();
        assert_ne!(addr.port(), port, "{command}");
        assert!(
            std::net::TcpListener::bind(addr).is_ok(),
            "{addr} is free: {command}"
        );
    }
}

/// A DIR the demo would refuse is refused first, when a port is taken too: the ports'
/// advice gave a command to paste that was then refused for its folder.
#[test]
fn the_demo_refuses_its_folder_before_a_taken_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a file");
    std::fs::write(&file, "").unwrap();
    let out = Command::new(BIN)
        .arg("demo")
        .arg(&file)
        .args(["--front", &taken.local_addr().unwrap().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "error: {} is not a folder: give the demo a new folder",
            file.display()
        )
    );
}

/// `text` split into words as `sh` would (through `sh` itself).
fn shell_words(text: &str) -> Vec<String> {
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("for w in {text}; do printf '%s\\n' \"$w\"; done"),
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `--root` was taken and ignored: the demo ran on its own root, not the one named.
#[test]
fn the_demo_refuses_a_root_named_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(BIN);
    demo.arg("demo")
        .arg(dir.path().join("d"))
        .arg("--root")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut demo, 0);
    let mut demo = demo.spawn().unwrap();
    // A demo that took it and ran is stopped (Ctrl-C), not waited for.
    let ended = poll_until(Duration::from_secs(20), || demo.try_wait().unwrap());
    if ended.is_none() {
        let group = nix::unistd::Pid::from_raw(demo.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT);
    }
    let out = demo.wait_with_output().unwrap();
    assert!(ended.is_some(), "the demo ran with --root");
    // A usage error, as any flag a command does not take.
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: demo makes its own root (DIR/root) and takes no --root: `bluegreen demo DIR` names the folder it makes it in"
    );
    assert!(!dir.path().join("d").exists(), "it made nothing");
}

#[test]
fn the_demo_refuses_a_file_or_a_full_folder_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "mine\n").unwrap();
    let ports: Vec<String> = (0..4)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let demo = |target: &std::path::Path| {
        let out = Command::new(BIN)
            .arg("demo")
            .arg(target)
            .args(["--front", &ports[0], "--blue", &ports[1]])
            .args(["--green", &ports[2], "--control", &ports[3]])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    };
    // This said `error: File exists (os error 17)`, naming nothing.
    assert_eq!(
        demo(&file),
        format!(
            "error: {} is not a folder: give the demo a new folder",
            file.display()
        )
    );
    assert_eq!(
        demo(dir.path()),
        format!(
            "error: {} is not empty: give the demo a new folder",
            dir.path().display()
        )
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine\n");
}

#[test]
fn the_hook_transcript_has_one_line_per_step_and_ends_with_the_verdict() {
    let mut root = Root::new();
    root.set("build.command", "sh -c 'echo compiling'");
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    let lines: Vec<String> = root
        .push("blue")
        .remote_lines()
        .into_iter()
        .filter(|l| l.starts_with("blue:"))
        .collect();
    // `starting` comes only when the verdict is two seconds away (a loaded machine).
    let steps: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .filter(|step| *step != "starting")
        .collect();
    assert_eq!(
        steps,
        ["deploying", "checkout", "build", "release", "live"],
        "{lines:#?}"
    );
    assert!(
        lines[1].ends_with('s') && lines[3].contains("s"),
        "times on each step: {lines:#?}"
    );
    assert!(
        lines[4].starts_with("blue: live in ") && lines[4].contains("(generation 1)"),
        "{lines:#?}"
    );
}

/// A newcomer without `git` (or with it off the PATH) is told the demo needs it, before
/// anything is made: the demo said `error: No such file or directory (os error 2)` and
/// left the folder half made (a root, an app folder without a repo).
#[test]
fn the_demo_without_git_says_so_and_makes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("bin");
    std::fs::create_dir(&empty).unwrap();
    let target = dir.path().join("demo");
    let ports: Vec<String> = (0..4)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let out = Command::new(BIN)
        .arg("demo")
        .arg(&target)
        .args(["--front", &ports[0], "--blue", &ports[1]])
        .args(["--green", &ports[2], "--control", &ports[3]])
        .env("PATH", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: the demo needs git, and there is none on the PATH"),
        "{err}"
    );
    assert!(!target.exists(), "{err}");
}

/// The demo's terminal closes (SIGHUP to its process group: the demo and its daemon, which
/// takes SIGHUP for a reload): the demo stops, and its daemon and workers with it. The
/// daemon reloaded and served on, orphaned. The user's git config, here signing every
/// commit and sending hooks to a shared folder, has no say in the demo's own repo: not in
/// the demo's pushes, nor in the guide's commit and push, pasted (those ran the user's
/// hooks, which refused them).
#[test]
fn a_demo_whose_terminal_closes_stops_its_daemon_and_workers() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let hooks = tmp.path().join("team-hooks");
    std::fs::create_dir(&hooks).unwrap();
    for hook in ["pre-commit", "pre-push", "commit-msg"] {
        let file = hooks.join(hook);
        std::fs::write(&file, "#!/bin/sh\necho the team hook ran >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let git_config = tmp.path().join("user.gitconfig");
    std::fs::write(
        &git_config,
        format!(
            "[commit]\n\tgpgsign = true\n[core]\n\thooksPath = {}\n",
            tmp.path().join("team-hooks").display()
        ),
    )
    .unwrap();
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let mut demo = Demo::start_with_git_config(&dir, ports, Stdio::null(), &git_config);
    demo.wait_for_guide();
    let green = format!("http://127.0.0.1:{}/", ports[2]);
    assert!(http("GET", &green, None)
        .unwrap()
        .body
        .starts_with("v1 from green"));
    // The guide's first step, as a user with that config runs it.
    let app = dir.join("app");
    std::fs::write(app.join("VERSION"), "v2\n").unwrap();
    for step in [
        &["commit", "-qam", "v2"][..],
        &["push", "-q", "green", "main"],
    ] {
        let out = git_command(&app)
            .env("GIT_CONFIG_GLOBAL", &git_config)
            .args(step)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {step:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(http("GET", &green, None)
        .unwrap()
        .body
        .starts_with("v2 from green"));
    let group = nix::unistd::Pid::from_raw(demo.child.id() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGHUP).unwrap();
    let status = wait_for(Duration::from_secs(30), "the demo to exit", || {
        demo.child.try_wait().unwrap()
    });
    assert!(status.success(), "{status}");
    assert_eq!(
        root_processes(&dir.join("root")),
        Vec::<u32>::new(),
        "the terminal's close leaves no process behind"
    );
}

/// The demo's daemon dies (SIGKILL, out of memory): the demo says so and exits, and the
/// workers the daemon left go too; they ran on, holding the demo's ports.
#[test]
fn a_demo_whose_daemon_dies_stops_the_workers_it_left() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let mut demo = Demo::start(&dir, ports, Stdio::null());
    demo.wait_for_guide();
    let root = dir.join("root");
    let daemon = child_of(demo.child.id()).expect("the demo's daemon");
    let workers: Vec<u32> = root_processes(&root)
        .into_iter()
        .filter(|&pid| pid != daemon)
        .collect();
    assert!(!workers.is_empty());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = wait_for(Duration::from_secs(30), "the demo to exit", || {
        demo.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(1));
    let left: Vec<u32> = workers.into_iter().filter(|&pid| running(pid)).collect();
    assert_eq!(left, Vec::<u32>::new(), "the dead daemon's workers go too");
}

/// `bluegreen demo x` run inside a git checkout (bluegreen's own clone, `cargo run --
/// demo x`) is refused before anything is made, with a folder to use instead: it made
/// `x`, then failed with `init`'s advice, leaving `x` behind.
#[test]
fn the_demo_inside_a_checkout_is_refused_before_anything_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    let checkout = tmp.path().join("src");
    assert!(git_command(tmp.path())
        .args(["init", "-q", "src"])
        .status()
        .unwrap()
        .success());
    let ports: Vec<String> = (0..4)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let out = Command::new(BIN)
        .args(["demo", "x"])
        .args(["--front", &ports[0], "--blue", &ports[1]])
        .args(["--green", &ports[2], "--control", &ports[3]])
        .current_dir(&checkout)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        format!(
            "error: x is inside a git checkout, {}: give the demo a folder outside it (e.g. `bluegreen demo /tmp/bluegreen-demo`)",
            checkout.display()
        )
    );
    assert!(!checkout.join("x").exists());
    // Beside the checkout (`../x` from inside it) is no nesting: the demo runs there.
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let mut beside = Command::new(BIN)
        .args(["demo", "../x"])
        .args(["--front", &addr(ports[0]), "--blue", &addr(ports[1])])
        .args(["--green", &addr(ports[2]), "--control", &addr(ports[3])])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .current_dir(&checkout)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = poll_until(Duration::from_secs(60), || {
        if beside.try_wait().unwrap().is_some() {
            return Some(false);
        }
        http("GET", &format!("http://{}/status", addr(ports[3])), None)
            .ok()
            .map(|_| true)
    });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(beside.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = beside.wait();
    assert_eq!(
        started,
        Some(true),
        "the demo beside the checkout did not start"
    );
    assert_eq!(
        root_processes(&tmp.path().join("x/root")),
        Vec::<u32>::new()
    );
}

/// The first child process of `parent` found in /proc.
fn child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`: comm may hold spaces, never `) `.
            let ppid: u32 = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
}
