//! The daemon's stop (SIGTERM, SIGINT): drain, stop every generation, exit 0; what is
//! under way then (a push, a switch) is told how it ended.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::*;

#[test]
fn sigterm_drains_stops_everything_and_exits_zero() {
    let mut root = blue_live();
    root.push("green").says("green: live in ");
    assert_eq!(root.processes().len(), 2, "two workers");
    // drain_timeout 5s + stop_timeout 2s, and some slack.
    root.stop_cleanly(Duration::from_secs(10));
}

/// A keep-alive client that sends nothing more does not hold the daemon's stop for
/// `drain_timeout`: its connection is closed, and the daemon exits 0.
#[test]
fn an_idle_keep_alive_connection_is_closed_when_the_daemon_stops() {
    use std::io::Read;
    let mut root = blue_live_with(&[("app.drain_timeout", "60s".into())]);
    let mut idle = sent(root.front, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("v1 from blue") {
        let n = idle.read(&mut chunk).unwrap();
        assert_ne!(n, 0, "closed before the answer");
        answer.extend_from_slice(&chunk[..n]);
    }
    root.signal(Signal::SIGTERM);
    // Closed at the stop, well before drain_timeout (60 s) would have ended it.
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(
        idle.read(&mut chunk).map_err(|e| e.kind()),
        Ok(0),
        "the idle connection was not closed at the stop"
    );
    assert_eq!(root.wait_serve(Duration::from_secs(20)), Some(0));
}

/// A request on a connection the daemon accepted just before a stop, sent once the stop
/// has begun, is answered (then the connection closes), not cut off: under a socket unit
/// its client would otherwise lose a request that the next daemon would have answered.
#[test]
fn a_request_sent_as_the_daemon_stops_on_a_new_connection_is_answered() {
    use std::io::{Read, Write};
    let mut root = blue_live();
    let mut fresh = std::net::TcpStream::connect(("127.0.0.1", root.front)).unwrap();
    fresh
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    root.signal(Signal::SIGTERM);
    root.wait_log("stopping: draining every generation");
    fresh
        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = fresh.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(answer.contains("\r\n\r\nv1 from blue "), "{answer:?}");
    assert_eq!(root.wait_serve(Duration::from_secs(10)), Some(0));
}

/// A stray SIGUSR1 or SIGUSR2 (a `kill -USR1` meant for another program) is logged and
/// ignored: by default either ended the daemon at once, its workers left running.
#[test]
fn a_stray_sigusr1_or_sigusr2_is_ignored_with_a_line() {
    let mut root = blue_live();
    for (signal, name) in [(Signal::SIGUSR1, "SIGUSR1"), (Signal::SIGUSR2, "SIGUSR2")] {
        root.signal(signal);
        root.wait_log(&format!(
            "{name} ignored: bluegreen serve reloads its config on SIGHUP and stops on SIGTERM or SIGINT"
        ));
    }
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
    root.stop_cleanly(Duration::from_secs(10));
}

/// A push to a daemon that is stopped (SIGSTOP) says so after the status call's wait,
/// and does not wait for a reload's answer too: it said what the daemon was waiting for
/// (which it was not) and waited over a minute.
#[test]
fn a_push_to_a_stopped_daemon_says_it_does_not_answer() {
    let mut root = blue_live();
    let daemon = nix::unistd::Pid::from_raw(root.serve_pid() as i32);
    nix::sys::signal::kill(daemon, Signal::SIGSTOP).unwrap();
    root.commit("v2", &[("VERSION", "v2\n")]);
    let pushed = root.push("blue");
    nix::sys::signal::kill(daemon, Signal::SIGCONT).unwrap();
    pushed.says("blue: no verdict from the daemon (control API at 127.0.0.1:").says(
        ": no answer within 10s to GET /status: is it stopped or stuck?); the release is current",
    );
    assert!(!pushed.text.contains("waiting for GET"), "{}", pushed.text);
    // Going again, it starts the release by its file watch.
    root.wait_body(root.blue, "v2 from blue");
    root.stop_cleanly(Duration::from_secs(10));
}

/// Mirroring set on a stopped daemon: the request was sent, and whether it is taken
/// is not known until the daemon answers again. Said so (it was the bare `no answer
/// within 10s`, which reads as not done).
#[test]
fn mirroring_set_on_a_stopped_daemon_says_it_may_yet_be_taken() {
    let mut root = blue_live();
    let daemon = nix::unistd::Pid::from_raw(root.serve_pid() as i32);
    nix::sys::signal::kill(daemon, Signal::SIGSTOP).unwrap();
    let refused = root.run_err(&["mirroring", "on"]);
    nix::sys::signal::kill(daemon, Signal::SIGCONT).unwrap();
    assert!(
        refused.starts_with("error: control API at 127.0.0.1:"),
        "{refused}"
    );
    assert!(
        refused.ends_with(": no answer within 10s: mirroring on may or may not be taken (`bluegreen mirroring` tells once the daemon answers)"),
        "{refused}"
    );
    root.run_ok(&["mirroring"]);
    root.stop_cleanly(Duration::from_secs(10));
}

#[test]
fn sigterm_while_the_first_generation_gets_ready_stops_at_once() {
    let mut root = Root::new();
    root.set("app.ready_timeout", "30s");
    root.commit("never ready", &[("VERSION", "v1\n"), ("FAIL_AFTER", "0")]);
    root.push("blue");
    assert!(root.current("blue").is_some());
    root.serve();
    wait_for(Duration::from_secs(10), "the worker to start", || {
        (root.processes().len() == 1).then_some(())
    });
    // Not `down`: its first generation is getting ready.
    assert_eq!(root.status()["slots"]["blue"]["health"], "starting");
    assert_eq!(root.status()["slots"]["green"]["health"], "down");
    // Well inside the 30 s ready timeout it would otherwise wait out.
    root.stop_cleanly(Duration::from_secs(10));
}

/// A push that lands while the daemon stops is no failed deploy: the release is current
/// and the next daemon starts it, as when none runs.
#[test]
fn a_push_that_lands_while_the_daemon_stops_goes_live_with_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    std::fs::write(&gate, "").unwrap();
    // Generation 2 is slow to start while the gate is there.
    let command = format!(
        r#"sh -c 'if [ -e VERSION2 ] && [ -e {gate} ]; then sleep 30; fi; exec "$0" sample-app' {BIN}"#,
        gate = gate.display()
    );
    let mut root = blue_live_with(&[("app.command", command.into())]);
    root.commit("v2", &[("VERSION", "v2\n"), ("VERSION2", "")]);
    let pushed = std::thread::scope(|scope| {
        let push = scope.spawn(|| root.push("blue"));
        // Started, and the hook waiting for its verdict: the file watch may start it
        // before the hook asks, and a stop before the hook's request leaves it nothing
        // to ask.
        wait_for(Duration::from_secs(20), "generation 2 to start", || {
            (root.processes().iter())
                .any(|&p| cmdline(p) == b"sleep\x0030\x00")
                .then_some(())
        });
        wait_for(Duration::from_secs(20), "the hook's request", || {
            (connections_to(root.control) > 0).then_some(())
        });
        root.signal(nix::sys::signal::Signal::SIGTERM);
        push.join().unwrap()
    });
    assert_eq!(
        root.wait_serve(Duration::from_secs(30)),
        Some(0),
        "{}",
        root.log()
    );
    assert!(pushed.ok, "{}", pushed.text);
    pushed.says("blue: not started: the daemon is stopping; the release is current and starts when it runs again");
    std::fs::remove_file(&gate).unwrap();
    root.serve();
    root.wait_body(root.blue, "v2 from blue");
    root.stop_cleanly(Duration::from_secs(10));
}

/// Blue live and active, green live, and `ask` switching to green: once the switch's
/// `switch.migrate` runs, the daemon gets `signal`. The root, and what `ask` returned.
/// The migration notes a SIGTERM in the root's `termed` and exits.
fn a_switch_cut_by(signal: Signal, ask: impl FnOnce(&Root) -> String + Send) -> (Root, String) {
    let started = tempfile::tempdir().unwrap();
    let flag = started.path().join("migrating");
    let root = blue_live_with(&[(
        "switch.migrate",
        format!(
            "sh -c 'trap \"touch ../../../termed; exit 0\" TERM; touch {}; sleep 30 & wait'",
            flag.display()
        )
        .into(),
    )]);
    root.push("green").says("green: live in ");
    let read = std::thread::scope(|s| {
        let switched = s.spawn(|| ask(&root));
        wait_for(Duration::from_secs(10), "the migration to run", || {
            flag.exists().then_some(())
        });
        root.signal(signal);
        switched.join().unwrap()
    });
    (root, read)
}

/// A switch whose `switch.migrate` still runs when the daemon is told to stop goes no
/// further, and its caller reads why: it read the connection's EOF ('Network Error:
/// Unexpected EOF'), and could not tell whether the switch happened. The migration goes
/// with the daemon, and the next one keeps blue active. `ask` switches to green and
/// returns what its caller read.
fn a_switch_cut_by_the_stop(ask: impl FnOnce(&Root) -> String + Send) -> String {
    let (mut root, read) = a_switch_cut_by(Signal::SIGTERM, ask);
    assert_eq!(root.wait_serve(Duration::from_secs(15)), Some(0));
    assert_eq!(root.processes(), Vec::<u32>::new(), "the migration is gone");
    // It was told to stop (SIGKILLed outright, it could not roll back what it began),
    // and the log says so, and that the switch did not happen.
    assert!(
        root.path.join("termed").exists(),
        "the migration got no SIGTERM"
    );
    let log = root.log();
    assert!(
        log.contains("switch.migrate/1 cut off before it ended (its switch was given up: the daemon is stopping): SIGTERM to its process group, SIGKILL after 2s"),
        "{log}"
    );
    assert!(
        log.contains(": the daemon is stopping; blue stays active"),
        "{log}"
    );
    root.serve();
    assert_eq!(root.status()["active"], "blue");
    read
}

#[test]
fn a_switch_migrating_when_the_daemon_stops_is_told_it_did_not_switch() {
    let read = a_switch_cut_by_the_stop(|root| {
        let out = root.run(&["switch", "green"]);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        stderr
    });
    assert_eq!(
        read,
        "not switched: the daemon is stopping; the active slot stays as it was"
    );
}

#[test]
fn a_front_switch_migrating_when_the_daemon_stops_is_told_it_did_not_switch() {
    let read = a_switch_cut_by_the_stop(|root| {
        let url = format!("http://127.0.0.1:{}/switch?to=green", root.front);
        let answer = http("POST", &url, None).expect("an answer, not a cut connection");
        assert_eq!(answer.status, 503, "{}", answer.body);
        answer.body.trim().to_string()
    });
    assert_eq!(
        read,
        "the daemon is stopping; the active slot stays as it was"
    );
}

#[test]
fn a_switch_whose_daemon_is_killed_says_it_may_or_may_not_have_happened() {
    // A SIGKILL leaves no time to tell: the caller reads the cut connection, and is told
    // where to look rather than `Network Error: Unexpected EOF` alone.
    let (mut root, stderr) = a_switch_cut_by(Signal::SIGKILL, |root| {
        let out = root.run(&["switch", "green"]);
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    });
    assert!(stderr.starts_with("error: control API at "), "{stderr}");
    assert!(
        stderr.ends_with(
            ": the switch may or may not have happened; `bluegreen status` shows the active slot"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    root.wait_serve(Duration::from_secs(5));
    // The next daemon stops the killed one's migration, and blue stayed active.
    root.serve();
    assert_eq!(root.status()["active"], "blue");
}
