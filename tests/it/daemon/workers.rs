//! A worker's life once live: crashes and restarts with backoff, its output in the log,
//! and what it leaves outside its process group.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::*;
use crate::util::*;

#[test]
fn a_killed_worker_is_restarted_and_counted() {
    let root = blue_live();
    let kill_live = || {
        let pid = root.live_pid("blue");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        pid
    };
    // Killed twice within the minute: restarted after 1 s, then after 2 s.
    for restarts in 1..=2 {
        let pid = kill_live();
        wait_for(Duration::from_secs(20), "a restarted generation", || {
            let status = root.status();
            let live = &status["slots"]["blue"]["live"];
            (live["pid"].as_u64().is_some_and(|p| p as i32 != pid)).then_some(())
        });
        assert_eq!(root.status()["slots"]["blue"]["restarts"], restarts);
        root.wait_body(root.blue, "v1 from blue");
    }

    // Killed a third time: its restart waits 4 s, and a push in the meantime replaces
    // it. What did not happen is not counted. (Committed first: only the push must fit
    // in the 4 s.)
    root.commit("v2", &[("VERSION", "v2\n")]);
    kill_live();
    wait_for(Duration::from_secs(10), "the restart's backoff", || {
        let status = root.status();
        let health = status["slots"]["blue"]["health"].as_str().unwrap_or("");
        health.starts_with("down: restarting in").then_some(())
    });
    root.wait_log("blue: restarting in 4s");
    root.push("blue").says("blue: live in ");
    assert_eq!(root.status()["slots"]["blue"]["restarts"], 2);
}

#[test]
fn a_worker_ignoring_sigterm_is_killed_with_its_children() {
    let mut root = Root::new();
    root.set("app.stop_timeout", "1s");
    // A child in the group that notes its SIGTERM and goes on: only a SIGTERM to the
    // group leaves the note, only a SIGKILL to the group ends it. (It carries the
    // generation's marker, but the search for strays spares the generation's own group:
    // nothing else stops it.)
    let noted = root.path.parent().unwrap().join("child-got-sigterm");
    root.set(
        "app.command",
        format!(
            "sh -c '(trap \"echo TERM >> \\\"$1\\\"\" TERM; while :; do sleep 1; done) & exec \"$0\" sample-app' {BIN} {}",
            noted.display()
        ),
    );
    root.serve();
    root.commit("stubborn", &[("VERSION", "v1\n"), ("IGNORE_TERM", "")]);
    root.push("blue").says("blue: live in ");
    let pgid = root.live_pid("blue");
    root.remove("IGNORE_TERM");
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    wait_for(
        Duration::from_secs(15),
        "the stubborn group to be killed",
        || group_gone(pgid).then_some(()),
    );
    root.wait_log("SIGKILL to its group");
    assert_eq!(
        std::fs::read_to_string(&noted).unwrap_or_default(),
        "TERM\n",
        "the SIGTERM went to the whole group, once"
    );
}

#[test]
fn the_first_start_after_a_daemon_restart_is_retried_until_it_works() {
    let mut root = blue_live();
    let v1 = root.current("blue").unwrap();
    let crash = root.path.join("blue/releases").join(&v1).join("CRASH");
    let state = root.path.join("state.json");
    for with_live_in_state in [true, false] {
        root.stop_cleanly(Duration::from_secs(10));
        if !with_live_in_state {
            // As a state.json written before it remembered the live releases.
            let mut json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
            json.as_object_mut().unwrap().remove("live");
            std::fs::write(&state, json.to_string()).unwrap();
        }
        // After a reboot the app fails until something it needs is up.
        std::fs::write(&crash, "").unwrap();
        root.serve();
        wait_for(Duration::from_secs(10), "a failed first start", || {
            root.control("GET", "/events")
                .body
                .contains(&format!("restarting release {v1}"))
                .then_some(())
        });
        // While it waits out its backoff, status says so (not a bare `down`).
        wait_for(
            Duration::from_secs(10),
            "status to tell the restart",
            || {
                let health = root.status()["slots"]["blue"]["health"].clone();
                health
                    .as_str()
                    .is_some_and(|h| h.starts_with("down: restarting in "))
                    .then_some(())
            },
        );
        std::fs::remove_file(&crash).unwrap();
        root.wait_body(root.blue, "v1 from blue");
    }
}

#[test]
fn a_crash_loop_counts_the_same_restarts_in_metrics_as_in_status() {
    let root = blue_live();
    let v1 = root.current("blue").unwrap();
    let crash = root.path.join("blue/releases").join(&v1).join("CRASH");
    std::fs::write(&crash, "").unwrap();
    let pid = root.live_pid("blue");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    // The crash, then two restarts that fail (1 s, then 2 s of backoff).
    wait_for(Duration::from_secs(20), "two failed restarts", || {
        let status = root.status();
        let blue = &status["slots"]["blue"];
        (blue["restarts"] == 2 && blue["health"].as_str()?.starts_with("down: restarting in"))
            .then_some(())
    });
    std::fs::remove_file(&crash).unwrap();
    root.wait_body(root.blue, "v1 from blue");
    let restarts = root.status()["slots"]["blue"]["restarts"].as_u64().unwrap();
    assert_eq!(restarts, 3);
    let metrics = root.control("GET", "/metrics").body;
    for (outcome, n) in [
        ("started", 2),
        ("crashed", 1),
        ("failed", 2),
        ("restarted", restarts),
    ] {
        let line =
            format!("bluegreen_generations_total{{slot=\"blue\",outcome=\"{outcome}\"}} {n}\n");
        assert!(metrics.contains(&line), "{line}{metrics}");
    }
}

#[test]
fn after_a_crash_loop_of_the_older_release_status_says_again_why_current_is_not_live() {
    let root = blue_live_with(&[("app.ready_timeout", "2s".into())]);
    let v1 = root.current("blue").unwrap();
    root.commit("never ready", &[("VERSION", "v2\n"), ("FAIL_AFTER", "0")]);
    root.push("blue").says("blue keeps serving generation 1");
    let why = root.status()["slots"]["blue"]["last_error"].clone();
    assert!(
        why.as_str().unwrap().contains("not ready after 2s"),
        "{why}"
    );
    // v1, still live, crashes and fails its first restart.
    let crash = root.path.join("blue/releases").join(&v1).join("CRASH");
    std::fs::write(&crash, "").unwrap();
    let pid = root.live_pid("blue");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    wait_for(Duration::from_secs(20), "a failed restart", || {
        let error = root.status()["slots"]["blue"]["last_error"].clone();
        error.as_str()?.contains("CRASH file present").then_some(())
    });
    std::fs::remove_file(&crash).unwrap();
    root.wait_body(root.blue, "v1 from blue");
    // Live again: the restart's failure is over; v2's is what still holds, with what
    // serves now (its message named generation 1, since replaced by a restart).
    let v2 = root.current("blue").unwrap();
    assert_eq!(
        root.status()["slots"]["blue"]["last_error"],
        format!("release {v2} failed: not ready after 2s (app.ready_timeout); last health check: GET / answered 500; blue runs its last live release {v1} instead (`bluegreen restart blue` tries it again, as a push of a new commit does)")
    );
}

/// A worker's terminal escapes and carriage returns reach `logs/<slot>.log` escaped
/// (`\u{1b}`): `tail -f` on the file ran the worker's escape sequences (a window title, a
/// colour left on), and a `\r` hid the start of its line. Tabs stay.
#[test]
fn a_workers_control_characters_are_escaped_in_its_log_file() {
    let mut root = Root::new();
    root.set(
        "app.command",
        format!(
            "sh -c 'printf \"\\033[31mred\\033]0;title\\007 hidden\\rshown\\tafter a tab\\n\"; exec {BIN} sample-app'"
        ),
    );
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    let log = std::fs::read_to_string(root.path.join("logs/blue.log")).unwrap();
    assert!(
        log.contains("stdout] \\u{1b}[31mred\\u{1b}]0;title\\u{7} hidden\\rshown\tafter a tab\n"),
        "{log}"
    );
    assert!(!log.contains('\u{1b}') && !log.contains('\r'), "{log}");
}

/// The sample app listens with the longest backlog the system allows: a new generation
/// takes its slot's whole load at once, and the burst of connections the proxy opened
/// to it overflowed std's 128, which the kernel reset (502s on writes at each deploy
/// under load). With the app stopped, 300 connections all complete their handshake.
#[test]
fn the_sample_app_holds_a_burst_of_connections_in_its_backlog() {
    let root = blue_live();
    let somaxconn = sysctl("net/core/somaxconn");
    if somaxconn < 300 {
        eprintln!("skipped: net.core.somaxconn is {somaxconn}");
        return;
    }
    let port = root.status()["slots"]["blue"]["live"]["port"]
        .as_u64()
        .unwrap() as u16;
    let worker = nix::unistd::Pid::from_raw(root.live_pid("blue"));
    nix::sys::signal::kill(worker, Signal::SIGSTOP).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut held = Vec::new();
    for _ in 0..300 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => held.push(stream),
            Err(_) => break,
        }
    }
    nix::sys::signal::kill(worker, Signal::SIGCONT).unwrap();
    assert_eq!(held.len(), 300, "connections the backlog held");
}

#[test]
fn a_removed_logs_folder_comes_back_for_worker_output() {
    let root = blue_live();
    std::fs::remove_dir_all(root.path.join("logs")).unwrap();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    assert!(root.path.join("logs/blue.log").is_file());
}

#[test]
fn a_worker_writing_a_huge_line_does_not_grow_the_daemon() {
    // 200 MB on stdout without a newline (a binary dumped by mistake, a progress bar
    // redrawn with `\r`), written once the worker starts; the app itself runs on.
    let root = blue_live_with(&[(
        "app.command",
        format!(
            "sh -c '(head -c 200000000 /dev/zero | tr \"\\0\" x) & exec \"$0\" sample-app' {BIN}"
        )
        .into(),
    )]);
    // The writers end once the daemon has read all of it (a pipe holds 64 KiB).
    wait_for(Duration::from_secs(60), "the writers to finish", || {
        (root.processes().len() == 1).then_some(())
    });
    let rss = rss_kib(root.serve_pid());
    assert!(
        rss < 100 * 1024,
        "the daemon holds {} MiB after a worker wrote a 200 MB line",
        rss / 1024
    );
    root.wait_body(root.blue, "v1 from blue");
}

#[test]
fn a_daemonised_child_of_a_worker_does_not_survive_the_daemon() {
    // The worker starts a helper that leaves its process group (setsid), as a tool that
    // daemonises itself does; it still carries the worker's environment.
    let mut root = blue_live_with(&[(
        "app.command",
        format!(
            "sh -c 'setsid sleep 300 </dev/null >/dev/null 2>&1 & exec \"$0\" sample-app' {BIN}"
        )
        .into(),
    )]);
    wait_for(Duration::from_secs(10), "the helper to start", || {
        (root.processes().len() == 2).then_some(())
    });
    root.stop_cleanly(Duration::from_secs(10));
}

#[test]
fn what_a_generation_left_outside_its_group_is_stopped_with_it() {
    let mut root = blue_live_with_a_helper();
    let first_helper = wait_for(Duration::from_secs(10), "the helper to start", || {
        the_helper(&root)
    });
    // A deploy replaces the generation: its helper goes with it, not at the daemon's stop,
    // so that helpers do not pile up deploy after deploy.
    root.commit("v2", &[("VERSION", "v2\n")]);
    assert!(root.push("blue").ok);
    root.wait_body(root.blue, "v2 from blue");
    wait_for(
        Duration::from_secs(10),
        "the first helper to be stopped",
        || (!std::path::Path::new(&format!("/proc/{first_helper}")).exists()).then_some(()),
    );
    // The new generation's helper runs on.
    wait_for(Duration::from_secs(10), "the second helper", || {
        the_helper(&root).filter(|&helper| helper != first_helper)
    });
    root.stop_cleanly(Duration::from_secs(10));
}

/// A stop takes one `app.stop_timeout`, not one for the group and then one for what it
/// left outside it: the strays get their SIGTERM with the group's.
#[test]
fn a_generations_strays_get_their_sigterm_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let told = dir.path().join("stray-got-sigterm");
    // The group ignores SIGTERM (its stop waits out app.stop_timeout); the helper outside
    // it notes its SIGTERM and goes.
    let command = format!(
        r#"sh -c 'setsid sh -c "trap \"touch {told}; exit\" TERM; while :; do sleep 1; done" </dev/null >/dev/null 2>&1 & trap "" TERM; "$0" sample-app & while :; do sleep 1; done' {BIN}"#,
        told = told.display()
    );
    let mut root = blue_live_with(&[
        ("app.stop_timeout", "8s".into()),
        ("app.command", command.into()),
    ]);
    let old_leader = root.live_pid("blue") as u32;
    wait_for(Duration::from_secs(10), "the helper to start", || {
        let pids = root.processes();
        pids.iter()
            .any(|&p| cmdline(p).starts_with(b"sh\x00-c\x00trap"))
            .then_some(())
    });
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    wait_for(Duration::from_secs(5), "the helper's SIGTERM", || {
        told.exists().then_some(())
    });
    // The old group is still in its 8 s of grace.
    assert!(
        running(old_leader),
        "generation 1's leader ran until its SIGKILL"
    );
    root.stop_cleanly(Duration::from_secs(30));
}

/// A stray that went at the SIGTERM leaves its process group id free for the next process
/// that leads a group (pids wrap at 32,768 on many hosts, soon on one that builds). The
/// SIGKILL sent `app.stop_timeout` later to the strays that ignored the SIGTERM must not
/// reach the stranger that got that id meanwhile. The stranger gets it by the kernel's
/// `ns_last_pid`, which only root may set: elsewhere the test says so and passes.
#[test]
fn the_sigkill_for_strays_spares_a_stranger_given_a_gone_strays_group_id() {
    let last_pid = std::path::Path::new("/proc/sys/kernel/ns_last_pid");
    if std::fs::OpenOptions::new()
        .write(true)
        .open(last_pid)
        .is_err()
    {
        eprintln!("skipped: {} is not writable here", last_pid.display());
        return;
    }
    // Two helpers out of the group: `sleep` goes at the SIGTERM, the loop ignores it.
    let root = blue_live_with(&[
        ("app.stop_timeout", "8s".into()),
        (
            "app.command",
            format!(
                "sh -c 'setsid sleep 300 </dev/null >/dev/null 2>&1 & setsid sh -c \"trap : TERM; while :; do sleep 1; done\" </dev/null >/dev/null 2>&1 & exec \"$0\" sample-app' {BIN}"
            )
            .into(),
        ),
    ]);
    let (gone, stubborn) = wait_for(Duration::from_secs(10), "both helpers", || {
        let pids = root.processes();
        let gone = pids.iter().find(|&&p| cmdline(p) == b"sleep\x00300\x00")?;
        let stubborn = pids
            .iter()
            .find(|&&p| cmdline(p).starts_with(b"sh\x00-c\x00trap"))?;
        Some((*gone, *stubborn))
    });
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    // The first helper went (and was reaped); the second waits out app.stop_timeout.
    wait_for(Duration::from_secs(10), "the first helper to go", || {
        (!std::path::Path::new(&format!("/proc/{gone}")).exists()).then_some(())
    });
    assert!(
        root.processes().contains(&stubborn),
        "the second helper runs"
    );
    let mut stranger = wait_for(
        Duration::from_secs(5),
        &format!("a stranger leading group {gone}"),
        || {
            std::fs::write(last_pid, (gone - 1).to_string()).ok()?;
            let mut child = std::process::Command::new("sleep")
                .arg("60")
                .process_group(0)
                .spawn()
                .unwrap();
            if child.id() == gone {
                return Some(Killed(child));
            }
            let _ = child.kill();
            let _ = child.wait();
            None
        },
    );
    // Once generation 1 is stopped, so is what it left: the SIGKILLs have gone out.
    let stopped = poll_until(Duration::from_secs(15), || {
        root.log()
            .contains("stopped slot=blue generation=1 ")
            .then_some(())
    });
    let survived = stranger.0.try_wait().unwrap();
    drop(stranger);
    assert!(stopped.is_some(), "generation 1 stopped:\n{}", root.log());
    assert!(
        !root.processes().contains(&stubborn),
        "the second helper was killed"
    );
    assert_eq!(survived, None, "the stranger in group {gone} was signalled");
}

#[test]
fn a_worker_that_cleans_its_environment_is_reaped_after_a_kill_9() {
    // As `sudo -u app ...` (env_reset) or `env -i` in a start script: the worker's own
    // environment no longer carries the marker the daemon set.
    let mut root = blue_live_with(&[(
        "app.command",
        format!("sh -c 'exec env -i PORT=\"$PORT\" SLOT=\"$SLOT\" \"$0\" sample-app' {BIN}").into(),
    )]);
    let orphan = root.live_pid("blue");
    root.signal(Signal::SIGKILL);
    root.wait_serve(Duration::from_secs(5));
    root.serve();
    root.wait_body(root.blue, "v1 from blue");
    wait_for(Duration::from_secs(10), "the orphan to be stopped", || {
        group_gone(orphan).then_some(())
    });
}

#[test]
fn a_crash_of_a_live_generation_tells_its_exit_status() {
    let root = blue_live_with(&[("app.stop_timeout", "1s".into())]);
    let pid = root.live_pid("blue");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let error = wait_for(Duration::from_secs(10), "the crash in /status", || {
        let error = root.status()["slots"]["blue"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        error.contains(" while live").then_some(error)
    });
    // As a start that fails says `exited with status 3`: here, the OOM killer's
    // signal is the only clue there is.
    assert!(
        error.contains("was killed by signal 9 (SIGKILL)"),
        "{error}"
    );
}
