//! Readiness: a generation goes live only once it answers its health path on its own
//! port; one that never does (or exits, or listens elsewhere) is told why, and the slot
//! keeps what it had.

use std::fs;
use std::time::Duration;

use crate::util::*;

#[test]
fn a_release_that_never_gets_healthy_or_exits_keeps_the_old_one() {
    let root = blue_live_with(&[("app.ready_timeout", "2s".into())]);

    root.commit("unhealthy", &[("VERSION", "v2\n"), ("FAIL_AFTER", "0")]);
    let pushed = root.push("blue");
    pushed
        .says("blue: not live: release ")
        .says("not ready after 2s (app.ready_timeout); last health check: GET / answered 500");
    pushed.says("blue keeps serving generation 1");
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
    let error = root.status()["slots"]["blue"]["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("not ready after 2s"), "{error}");

    root.remove("FAIL_AFTER");
    root.commit("crashing", &[("VERSION", "v3\n"), ("CRASH", "")]);
    root.push("blue")
        .says(
            "exited with status 3 before it was ready; last output: sample app: CRASH file present",
        )
        .says(&format!(
            "(all of it in {}/logs/blue.log)",
            root.path.display()
        ))
        .says("blue keeps serving generation 1");
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
    let events = root.control("GET", "/events").body;
    assert!(events.contains("exited with status 3"), "{events}");
    // Worker output reaches the daemon's log line by line, prefixed with slot/generation.
    root.wait_log("[blue/3 stderr] sample app: CRASH file present");
}

#[test]
fn an_app_that_does_not_listen_on_its_port_is_told_so() {
    let root = blue_live_with(&[("app.ready_timeout", "1s".into())]);
    // As an app with a port of its own would: it runs, but nothing answers on {port}.
    root.set("app.command", "sleep 30");
    root.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(Duration::from_secs(5), "the config reload", || {
        root.control("GET", "/events")
            .body
            .contains("config reloaded")
            .then_some(())
    });
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue")
        .says("last health check: GET /: ")
        .says("(does the app listen on {port} or $PORT, within app.ready_timeout?)")
        .says("blue keeps serving generation 1");
}

/// Another program that takes a generation's port between the daemon's pick and the
/// app's listen (another root's daemon picking at the same moment, or anything else that
/// asks for a free port) answers the health check: it is not taken for the app, which
/// would have sent the slot's traffic to it.
#[test]
fn a_stranger_on_the_generations_port_does_not_go_live_in_its_place() {
    let root = blue_live_with(&[("app.ready_timeout", "10s".into())]);
    let told = root.path.join("port-given");
    // An app slow to listen: it says its port and waits, and the stranger listens first.
    root.set(
        "app.command",
        format!(
            "sh -c 'echo {{port}} > {told}.new && mv {told}.new {told} && exec sleep 60'",
            told = told.display()
        ),
    );
    root.reload_config();
    root.commit("v2", &[("VERSION", "v2\n")]);
    let stranger_dir = tempfile::tempdir().unwrap();
    fs::write(stranger_dir.path().join("VERSION"), "stranger\n").unwrap();
    // Its name is what the verdict quotes, on one line whatever it holds.
    let name = stranger_dir.path().join("evil\nblue: live");
    std::os::unix::fs::symlink(BIN, &name).unwrap();
    let (pushed, stranger) = std::thread::scope(|scope| {
        let push = scope.spawn(|| root.push("blue"));
        let port = wait_for(Duration::from_secs(20), "generation 2's port", || {
            fs::read_to_string(&told).ok()?.trim().parse::<u16>().ok()
        });
        let stranger = Killed(
            std::process::Command::new(&name)
                .arg("sample-app")
                .env("PORT", port.to_string())
                .current_dir(stranger_dir.path())
                .spawn()
                .unwrap(),
        );
        (push.join().unwrap(), stranger)
    });
    let pid = stranger.0.id();
    pushed
        .says("blue: not live: release ")
        .says(&format!("is not the app's: its health check was answered by pid {pid} (`evil blue: live`), which listens on it outside the generation's process group"))
        .says("blue keeps serving generation 1");
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
    let error = root.status()["slots"]["blue"]["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains(&format!("answered by pid {pid}")), "{error}");
}

/// A server that leaves the generation's process group and writes its title over its
/// environment shows neither the group nor the marker: one a Procfile runner (honcho,
/// foreman) starts in a session of its own, gunicorn with `setproctitle` installed. The
/// process of the generation that started it makes it the app's, and it goes live.
#[test]
fn a_server_that_titles_itself_outside_the_group_goes_live_when_the_app_started_it() {
    let root = blue_live();
    root.set(
        "app.command",
        format!("sh -c 'setsid \"$0\" sample-app & wait' {BIN}"),
    );
    root.reload_config();
    root.commit(
        "v2",
        &[("VERSION", "v2\n"), ("TITLE", "sample-app: worker\n")],
    );
    root.push("blue").says("blue: live in ");
    assert!(root.get(root.blue, "/").body.starts_with("v2 from blue"));
    // The mechanism is the one above: the server shows its title, and no marker.
    let server = (root.processes().into_iter())
        .find(|&p| cmdline(p).starts_with(b"sample-app: worker\0"))
        .expect("the titled server runs");
    let env = fs::read(format!("/proc/{server}/environ")).unwrap();
    assert!(
        !env.windows(b"BLUEGREEN".len()).any(|w| w == b"BLUEGREEN"),
        "{env:?}"
    );
    // Taken for the generation's, it is stopped with it, though neither its group nor a
    // marker finds it, and the shell that started it does not pass the SIGTERM on.
    root.commit("v3", &[("VERSION", "v3\n")]);
    root.push("blue").says("blue: live in ");
    wait_for(Duration::from_secs(20), "the titled server to stop", || {
        (!cmdline(server).starts_with(b"sample-app: worker\0")).then_some(())
    });
}

/// One started with an environment without the marker (`env -i`) outside the group is
/// no process of the generation's, whoever started it: not stopped with it either.
#[test]
fn a_server_started_outside_the_group_without_the_marker_does_not_go_live() {
    let root = blue_live();
    root.set(
        "app.command",
        format!("sh -c 'setsid env -i PORT=\"$PORT\" \"$0\" sample-app & wait' {BIN}"),
    );
    root.reload_config();
    root.commit("v2", &[("VERSION", "v2\n")]);
    let pushed = root.push("blue");
    pushed
        .says("blue: not live: release ")
        .says("which listens on it outside the generation's process group (the app started it without the generation's environment, so it would outlive the generation")
        .says("blue keeps serving generation 1");
    // No other program took the port: the app's own start put the server out of reach.
    pushed.never_says("another program took the port");
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
}

/// A start script that puts the server in the background and exits 0 (a daemonising
/// habit) is told to stay in the foreground, and what it left goes with it; so is one
/// that exits 0 once its server is live.
#[test]
fn an_app_that_goes_to_the_background_is_told_to_stay_in_the_foreground() {
    let root = blue_live_with(&[("app.ready_timeout", "3s".into())]);
    let v1 = root.live_pid("blue") as u32;
    // The server starts a moment after the script has exited, as a slow one would (one
    // that answers first goes live, and its script's exit is then a crash: below).
    root.set(
        "app.command",
        format!("sh -c '(sleep 1; exec {BIN} sample-app) & exit 0'"),
    );
    root.reload_config();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue")
        .says("exited with status 0 (app.command must keep running in the foreground: a server it starts in the background and leaves is stopped with it) before it was ready")
        .says("blue keeps serving generation 1");
    wait_for(
        Duration::from_secs(10),
        "the backgrounded server to be stopped",
        || (root.processes() == vec![v1]).then_some(()),
    );

    // The script exits while the server answers the health check (each answer takes a
    // second): a passing check does not make live a generation that has ended.
    root.set(
        "app.command",
        format!("sh -c '{BIN} sample-app & sleep 0.3; exit 0'"),
    );
    root.reload_config();
    root.commit("v2 slow", &[("VERSION", "v2\n"), ("SLOW_MS", "1000")]);
    root.push("blue")
        .says("exited with status 0 (app.command must keep running in the foreground")
        .says("blue keeps serving generation 1");
    wait_for(
        Duration::from_secs(10),
        "the backgrounded server to be stopped",
        || (root.processes() == vec![v1]).then_some(()),
    );
    root.remove("SLOW_MS");

    root.set(
        "app.command",
        format!("sh -c '{BIN} sample-app & sleep 1; exit 0'"),
    );
    root.reload_config();
    root.commit("v3", &[("VERSION", "v3\n")]);
    root.push("blue").says("blue: live in ");
    wait_for(Duration::from_secs(10), "the exit while live", || {
        let events = root.control("GET", "/events").body;
        events
            .contains("exited with status 0 (app.command must keep running in the foreground")
            .then_some(())
    });
}

/// A server bound to `localhost` that resolved to `::1` (Node 17+ on a host that lists
/// `::1 localhost`) answers on its port, only not on 127.0.0.1: the pusher is told where
/// it does listen, not asked whether it listens on its port.
#[test]
fn an_app_on_the_ipv6_loopback_only_is_told_where_it_listens() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        return; // no IPv6 loopback on this host
    }
    let root = blue_live_with(&[("app.ready_timeout", "1s".into())]);
    root.commit("on ::1", &[("VERSION", "v2\n"), ("BIND", "::1")]);
    let pushed = root.push("blue");
    pushed
        .says("Connection refused")
        .says("accepts: the app listens on the IPv6 loopback only (a host of `localhost` can resolve to ::1); bluegreen connects to 127.0.0.1: listen on 127.0.0.1 or on all addresses (0.0.0.0 or ::)")
        .says("blue keeps serving generation 1");
    pushed.never_says("does the app listen on {port}");
}

#[test]
fn a_health_check_may_take_as_long_as_heartbeat_timeout() {
    let root = blue_live_with(&[
        ("app.ready_timeout", "20s".into()),
        ("heartbeat.timeout", "5s".into()),
    ]);
    // Every answer, the health check's too, takes 2.5 s: longer than the 2 s default.
    root.commit("slow", &[("VERSION", "v2\n"), ("SLOW_MS", "2500")]);
    root.push("blue").says("blue: live in ");
    assert!(root.get(root.blue, "/").body.starts_with("v2 from blue"));
}

/// A health page whose head comes at once and whose body never ends (a stream, a worker
/// stuck after its head) answers by its status: the generation goes live, and the switch
/// gate lets the slot take the front. Its body's wait made it "no answer within 2s".
#[test]
fn a_health_answer_whose_body_never_ends_counts_by_its_status() {
    let root = blue_live_with(&[
        ("app.health_path", "/stalled".into()),
        ("heartbeat.path", "/stalled".into()),
        ("app.ready_timeout", "5s".into()),
    ]);
    root.wait_body(root.blue, "v1 from blue");
    root.push("green").says("green: live in ");
    let switched = root.run_ok(&["switch", "green"]);
    assert!(switched.contains("switched blue -> green"), "{switched}");
    root.wait_body(root.front, "v1 from green");
}

/// A release that takes seconds to get ready is not a silent push: once the verdict has
/// not come for a moment, the pusher is told what the daemon waits for.
#[test]
fn a_slow_start_is_told_while_the_push_waits() {
    let root = blue_live_with(&[
        ("app.ready_timeout", "20s".into()),
        ("heartbeat.timeout", "6s".into()),
    ]);
    root.commit("slow", &[("VERSION", "v2\n"), ("SLOW_MS", "4000")]);
    let pushed = root.push("blue");
    let lines = pushed.remote_lines();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("push output lacks {needle:?}:\n{}", pushed.text))
    };
    let waiting = at("blue: starting ");
    assert!(
        lines[waiting].ends_with(": waiting for GET / to answer 2xx/3xx (app.ready_timeout 20s)"),
        "{}",
        lines[waiting]
    );
    assert!(waiting < at("blue: live in "), "{}", pushed.text);

    // A quick start says nothing of the kind.
    root.remove("SLOW_MS");
    root.commit("quick", &[("VERSION", "v3\n")]);
    let pushed = root.push("blue");
    pushed.says("blue: live in ");
    pushed.never_says("waiting for GET");

    // What it waits for is the daemon's, not the file's changed without a SIGHUP: the
    // line named a health path and a timeout the daemon did not use.
    root.set("app.health_path", "/items");
    root.set("app.ready_timeout", "45s");
    root.commit("slow again", &[("VERSION", "v4\n"), ("SLOW_MS", "4000")]);
    root.push("blue")
        .says(": waiting for GET / to answer 2xx/3xx (app.ready_timeout 20s)");
}

/// The push waits for the verdict as long as the daemon may take by the config it runs,
/// not by the file's, edited meanwhile without a SIGHUP: with shorter timeouts in the
/// file, the push gave up on a start the daemon was still waiting for ("no verdict").
#[test]
fn a_push_waits_by_the_timeouts_the_daemon_runs() {
    let root = blue_live_with(&[
        ("app.ready_timeout", "30s".into()),
        ("heartbeat.timeout", "20s".into()),
    ]);
    // The file's: 0 s + 2 × 0 s + 2 × 1 s + 5 s, and the hook's 5 s more: 12 s.
    root.set("app.ready_timeout", "1s");
    root.set("app.drain_timeout", "0s");
    root.set("app.stop_timeout", "0s");
    root.commit("slow", &[("VERSION", "v2\n"), ("SLOW_MS", "13000")]);
    let pushed = root.push("blue");
    pushed.says(": waiting for GET / to answer 2xx/3xx (app.ready_timeout 30s)");
    pushed.says("blue: live in ");
}

/// A release too slow for the health check is told the limit it misses, not the scrap of
/// time the ready deadline left its last check ("no answer within 850ms").
#[test]
fn a_release_slower_than_heartbeat_timeout_is_told_so() {
    let root = blue_live_with(&[("app.ready_timeout", "5s".into())]);
    // Every answer takes 3 s; a check waits 2 s, the default heartbeat.timeout.
    root.commit("slow", &[("VERSION", "v2\n"), ("SLOW_MS", "3000")]);
    root.push("blue")
        .says("not ready after 5s (app.ready_timeout); last health check: GET /: no answer within 2s (heartbeat.timeout)")
        .says("blue keeps serving generation 1");
}

/// An app that listens late and then answers slowly, with a `heartbeat.timeout` longer
/// than `app.ready_timeout`: its last check was cut short by the ready deadline, and the
/// verdict quoted the refused check before it ("does the app listen on {port}?"), the
/// wrong thing to fix.
#[test]
fn a_slow_answer_cut_short_by_ready_timeout_is_told_over_an_earlier_refusal() {
    let root = blue_live_with(&[
        ("app.ready_timeout", "3s".into()),
        ("heartbeat.timeout", "10s".into()),
    ]);
    root.set(
        "app.command",
        format!("sh -c 'sleep 0.5 && exec {BIN} sample-app'"),
    );
    root.reload_config();
    root.commit("slow", &[("VERSION", "v2\n"), ("SLOW_MS", "5000")]);
    root.push("blue")
        .says("not ready after 3s (app.ready_timeout); last health check: GET /: no answer within ")
        .never_says("refused")
        .says("blue keeps serving generation 1");
}
