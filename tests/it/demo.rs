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
    /// `bluegreen demo <dir>` on `ports` (front, blue, green, control), its stdout piped.
    fn start(dir: &std::path::Path, ports: [u16; 4], stderr: Stdio) -> Demo {
        let addr = |p: u16| format!("127.0.0.1:{p}");
        let child = Command::new(BIN)
            .arg("demo")
            .arg(dir)
            .args(["--front", &addr(ports[0]), "--blue", &addr(ports[1])])
            .args(["--green", &addr(ports[2]), "--control", &addr(ports[3])])
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Demo {
            child,
            root: dir.join("root"),
        }
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
    let dir = tmp.path().join("demo");
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
    let out = Command::new(BIN)
        .args(["demo", "--front", &format!("127.0.0.1:{port}")])
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
