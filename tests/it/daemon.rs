//! The daemon: generations, zero-downtime reloads, drain, crashes, signals. (As a service:
//! `service`.)

use std::fs;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::*;

#[test]
fn a_push_goes_live_with_zero_downtime() {
    let root = blue_live();
    root.wait_body(root.blue, "v1 from blue");

    let url = root.url(root.blue, "/");
    let (answers, failures) = under_load(&url, 4, || {
        for n in 2..=4 {
            root.commit(&format!("v{n}"), &[("VERSION", &format!("v{n}\n"))]);
            let pushed = root.push("blue");
            pushed.says("blue: live in ");
            let last = pushed
                .remote_lines()
                .into_iter()
                .rfind(|l| l.starts_with("blue:"))
                .unwrap();
            assert!(
                last.starts_with("blue: live in "),
                "the verdict is the last line: {last}"
            );
        }
    });
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        answers + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(answers > 20, "the clients ran ({answers} answers)");
    assert!(root.get(root.blue, "/").body.starts_with("v4 from blue"));
}

/// Waits until blue's live generation has one request in flight.
fn wait_for_one_in_flight(root: &Root) {
    wait_for(
        Duration::from_secs(10),
        "the slow request to be in flight",
        || (root.status()["slots"]["blue"]["live"]["in_flight"].as_u64() == Some(1)).then_some(()),
    );
}

/// `{port}`, `$NAME` and `${NAME}` in `app.command` are filled word by word, without a
/// shell: a slot env value with spaces and shell syntax stays one word, never run.
#[test]
fn the_app_command_is_filled_from_the_generations_env_without_a_shell() {
    let mut root = Root::new();
    let tag = "x y;$(touch pwned)";
    root.set("slots.blue.env", env_map(&[("TAG", tag)]));
    root.set(
        "app.command",
        format!("env PORT={{port}} RELEASE=${{SLOT}}:$TAG {BIN} sample-app"),
    );
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    assert_eq!(
        root.get(root.blue, "/").body,
        format!("v1 from blue (release blue:{tag})\n")
    );
    assert!(!root.path.join("blue/current/pwned").exists());
}

/// Starts a request to blue (a slow v1) and, once it is in flight, pushes a fast v2 over
/// it: the request's thread, whose answer tells how the drain treated it.
fn fast_v2_over_a_request_in_flight(
    root: &Root,
) -> std::thread::JoinHandle<Result<Answer, String>> {
    let url = root.url(root.blue, "/");
    let slow = std::thread::spawn(move || http("GET", &url, None));
    wait_for_one_in_flight(root);
    root.remove("SLOW_MS");
    root.commit("fast v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    slow
}

#[test]
fn drain_lets_a_slow_request_finish_on_the_old_generation() {
    let mut root = Root::new();
    root.serve();
    root.commit("slow v1", &[("VERSION", "v1\n"), ("SLOW_MS", "1500")]);
    root.push("blue").says("blue: live in ");
    let old_pid = root.live_pid("blue");

    let slow = fast_v2_over_a_request_in_flight(&root);
    assert!(
        root.get(root.blue, "/").body.starts_with("v2 from blue"),
        "new requests go to v2"
    );
    let answer = slow.join().unwrap().unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.body.starts_with("v1 from blue"), "{}", answer.body);
    wait_for(
        Duration::from_secs(10),
        "the old process group to be gone",
        || group_gone(old_pid).then_some(()),
    );
}

/// A served root with `settings`, blue live with a v1 that answers after `slow_ms`.
fn slow_v1_live(settings: &[(&str, &str)], slow_ms: &str) -> Root {
    let mut root = Root::new();
    for (key, value) in settings {
        root.set(key, *value);
    }
    // SLOW_MS slows the health checks too.
    root.set("heartbeat.timeout", "15s");
    root.set("app.ready_timeout", "30s");
    root.serve();
    root.commit("slow v1", &[("VERSION", "v1\n"), ("SLOW_MS", slow_ms)]);
    root.push("blue").says("blue: live in ");
    root
}

/// While a replaced generation drains, `/status`, `bluegreen status` and `/metrics` show
/// it with its requests in flight, and stop showing it once it is gone.
#[test]
fn a_draining_generation_is_in_status_and_metrics_until_it_is_gone() {
    let root = slow_v1_live(&[], "4000");
    let old_pid = root.live_pid("blue");

    let slow = fast_v2_over_a_request_in_flight(&root);
    let status = root.status();
    let blue = &status["slots"]["blue"];
    let draining = &blue["draining"];
    assert_eq!(draining.as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(
        (
            draining[0]["generation"].as_u64(),
            draining[0]["pid"].as_i64(),
            draining[0]["in_flight"].as_u64(),
            blue["live"]["generation"].as_u64(),
            blue["live"]["in_flight"].as_u64(),
        ),
        (Some(1), Some(i64::from(old_pid)), Some(1), Some(2), Some(0)),
        "{status}"
    );
    let metrics = root.control("GET", "/metrics").body;
    assert!(
        metrics.contains("\nbluegreen_in_flight{slot=\"blue\"} 1\n"),
        "{metrics}"
    );
    let printed = root.run_ok(&["status"]);
    let line = format!(
        "draining: generation 1  release {}",
        draining[0]["release"].as_str().unwrap()
    );
    assert!(
        printed.contains(&format!("{line}  pid {old_pid}  in-flight 1\n")),
        "{printed}"
    );

    let answer = slow.join().unwrap().unwrap();
    assert!(answer.body.starts_with("v1 from blue"), "{}", answer.body);
    wait_for(
        Duration::from_secs(10),
        "the drained generation to leave /status",
        || {
            let status = root.status();
            (status["slots"]["blue"]["draining"] == serde_json::json!([])).then_some(())
        },
    );
    assert!(
        group_gone(old_pid),
        "gone from /status, so its group is gone"
    );
    let metrics = root.control("GET", "/metrics").body;
    assert!(
        metrics.contains("\nbluegreen_in_flight{slot=\"blue\"} 0\n"),
        "{metrics}"
    );
}

/// A replaced generation left the route some milliseconds (a `state.json` write, the
/// release's mark) before it was listed as draining: a `/status` or `/metrics` read then
/// showed no request in flight and no old generation, though one was answering.
#[test]
fn a_generation_going_live_never_hides_the_one_it_replaces() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    let root = slow_v1_live(&[], "4000");
    let stop = AtomicBool::new(false);
    let (url, metrics_url) = (
        root.url(root.control, "/status"),
        root.url(root.control, "/metrics"),
    );
    // Four readers at once, for reads enough within the swap's milliseconds.
    let (reads, wrong) = std::thread::scope(|s| {
        // `/status` read whole, or `/metrics` (quicker to make, so read more often).
        let poll = |whole: bool| {
            let agent = agent();
            let (mut reads, mut wrong) = (0, Vec::new());
            // From when the slow request is in flight: it stays so past the push.
            let mut counted = false;
            while !stop.load(Relaxed) && !whole {
                let metrics = agent.get(&metrics_url).call().unwrap();
                let metrics = metrics.into_string().unwrap();
                let one = metrics.contains("\nbluegreen_in_flight{slot=\"blue\"} 1\n");
                counted |= one;
                if counted && !one {
                    wrong.push(metrics);
                }
                reads += usize::from(counted);
            }
            while !stop.load(Relaxed) && whole {
                let status = agent.get(&url).call().unwrap().into_string().unwrap();
                let status: serde_json::Value = serde_json::from_str(&status).unwrap();
                let blue = &status["slots"]["blue"];
                let draining = blue["draining"].as_array().unwrap();
                let in_flight = blue["live"]["in_flight"].as_u64().unwrap_or(0)
                    + draining
                        .iter()
                        .map(|g| g["in_flight"].as_u64().unwrap())
                        .sum::<u64>();
                let old_shown = blue["live"]["generation"] == 1
                    || draining.iter().any(|g| g["generation"] == 1);
                counted |= in_flight == 1;
                if !counted {
                    continue;
                }
                if in_flight != 1 || !old_shown {
                    wrong.push(blue.to_string());
                }
                reads += 1;
            }
            (reads, wrong)
        };
        let pollers: Vec<_> = [true, true, false, false]
            .map(|whole| s.spawn(move || poll(whole)))
            .into_iter()
            .collect();
        let slow = fast_v2_over_a_request_in_flight(&root);
        stop.store(true, Relaxed);
        let read = pollers.into_iter().map(|p| p.join().unwrap()).fold(
            (0, Vec::new()),
            |(reads, mut wrong), (more, seen)| {
                wrong.extend(seen);
                (reads + more, wrong)
            },
        );
        let answer = slow.join().unwrap().unwrap();
        assert!(answer.body.starts_with("v1 from blue"), "{}", answer.body);
        read
    });
    assert!(reads > 0);
    assert!(
        wrong.is_empty(),
        "{} of {reads} reads: {wrong:#?}",
        wrong.len()
    );
}

/// A request still running at `drain_timeout` does not hold the old generation up: it
/// is stopped then, and that request is cut, not answered by v1 seconds later.
#[test]
fn drain_timeout_stops_the_old_generation_with_a_request_in_flight() {
    let root = slow_v1_live(&[("app.drain_timeout", "1s")], "8000");
    let old_pid = root.live_pid("blue");

    let slow = fast_v2_over_a_request_in_flight(&root);
    wait_for(
        Duration::from_secs(6),
        "the old process group to be gone",
        || group_gone(old_pid).then_some(()),
    );
    let answer = slow.join().unwrap();
    assert!(
        !matches!(&answer, Ok(a) if a.body.starts_with("v1 from blue")),
        "the request was not cut: {answer:?}"
    );
    root.wait_log("drain timeout: stopping with 1 requests in flight");
}

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
        .says("exited with exit status: 3 before it was ready; last output: sample app: CRASH file present")
        .says(&format!(
            "(all of it in {}/logs/blue.log)",
            root.path.display()
        ))
        .says("blue keeps serving generation 1");
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
    let events = root.control("GET", "/events").body;
    assert!(events.contains("exited with exit status: 3"), "{events}");
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
        .says("(does the app listen on {port} or $PORT?)")
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
        .says("exited with exit status: 0 (app.command must keep running in the foreground: a server it starts in the background and leaves is stopped with it) before it was ready")
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
        .says("exited with exit status: 0 (app.command must keep running in the foreground")
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
            .contains("exited with exit status: 0 (app.command must keep running in the foreground")
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

/// Listen addresses moved in the file onto ports another process holds (here another
/// root's daemon): the SIGHUP said only "take effect on restart", and that restart then
/// stopped with every port of the root dark; a push told the other daemon's refusal as
/// if none served this root ("starts when this root's daemon does"), while this one's
/// file watch started the release at once.
#[test]
fn listen_addresses_moved_onto_taken_ports_are_told_at_the_reload_and_the_push() {
    let root = blue_live();
    let other = blue_live();
    root.set("router.listen", format!("127.0.0.1:{}", other.front));
    root.set("control.listen", format!("127.0.0.1:{}", other.control));
    root.reload_config();
    let events = root.control("GET", "/events").body;
    assert!(
        events.contains(&format!(
            "(router.listen, control.listen take effect on restart; another process listens on 127.0.0.1:{} (router.listen), 127.0.0.1:{} (control.listen) now, where a restarted daemon would stop",
            other.front, other.control
        )),
        "{events}"
    );
    root.commit("v2", &[("VERSION", "v2\n")]);
    let pushed = root.push("blue");
    let last = pushed.remote_lines().pop().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "blue: no verdict: control API at 127.0.0.1:{}: this daemon serves {}, another root",
            other.control,
            other.path.display()
        )) && last.contains("yet a daemon serves this root"),
        "{}",
        pushed.text
    );
    root.wait_body(root.blue, "v2 from blue");
}

#[test]
fn a_push_after_control_listen_moved_does_not_say_no_daemon_runs() {
    let root = blue_live();
    // Moved in the file and reloaded: the daemon keeps listening where it did.
    root.set("control.listen", format!("127.0.0.1:{}", free_port()));
    root.reload_config();
    root.commit("v2", &[("VERSION", "v2\n")]);
    let pushed = root.push("blue");
    let last = pushed.remote_lines().pop().unwrap_or_default();
    assert!(
        last.starts_with("blue: no verdict: nothing answers on 127.0.0.1:")
            && last.contains("yet a daemon serves this root"),
        "{}",
        pushed.text
    );
    // Its file watch starts the release at once, not on the next `serve`.
    root.wait_body(root.blue, "v2 from blue");
    // The commands that ask the daemon do not tell to start one (which would be refused:
    // this one holds the root), but to restart it.
    let stderr = root.run_err(&["status"]);
    assert!(
        stderr.starts_with("error: daemon not answering: nothing answers on 127.0.0.1:")
            && stderr.contains("yet a `bluegreen serve` holds this root")
            && stderr.contains("restart it"),
        "{stderr}"
    );
}

/// A burst of SIGHUPs is taken as a few reloads, and a SIGTERM after it ahead of any
/// still queued: each SIGHUP was a reload of its own (100 ms at least), and the SIGTERM
/// waited behind them all (600 of them outlast systemd's stop timeout).
#[test]
fn a_burst_of_sighups_is_a_few_reloads_and_holds_no_stop_behind_it() {
    let mut root = blue_live();
    // One every 5 ms, as a script's loop of `kill -HUP` sends them: each reaches the
    // daemon on its own (sent at once, the kernel would merge them into one).
    for _ in 0..60 {
        root.signal(Signal::SIGHUP);
        std::thread::sleep(Duration::from_millis(5));
    }
    root.stop_cleanly(Duration::from_secs(20));
    let reloads = root.log().matches("config reloaded from").count();
    assert!(
        (1..20).contains(&reloads),
        "{reloads} reloads:\n{}",
        root.log()
    );
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

/// A file that lost tables the running config sets (written in pieces further apart
/// than the double read's 100 ms, and signalled between them) is refused: taken, every
/// key after the cut was defaulted, `app.command` and `switch.migrate` among them. A
/// table kept as a bare header takes its defaults, as asked.
#[test]
fn sighup_with_a_file_cut_before_tables_it_set_changes_nothing() {
    let root = blue_live();
    let file = root.path.join("bluegreen.toml");
    root.set("switch.migrate", "true");
    root.signal(Signal::SIGHUP);
    root.wait_log("config reloaded from");
    let mut table: toml::Table = fs::read_to_string(&file).unwrap().parse().unwrap();
    let full = table.clone();
    for cut in ["app", "switch"] {
        table.remove(cut);
    }
    fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
    root.signal(Signal::SIGHUP);
    root.wait_log(&format!(
        "config reload refused, keeping the running config: {} has no [app], [switch] now, which the running config sets apart from the defaults (cut short, or still being written?): not taken; a table meant to take its defaults again keeps its header with no keys (`[app]`)",
        file.display()
    ));
    assert_eq!(
        root.status()["app"]["command"].as_str(),
        full["app"]["command"].as_str()
    );
    // `[switch]` kept as a bare header: its defaults, asked for.
    let mut asked = full.clone();
    asked.insert("switch".into(), toml::Value::Table(toml::Table::new()));
    fs::write(&file, toml::to_string(&asked).unwrap()).unwrap();
    root.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the reload", || {
        (root.log().matches("config reloaded from").count() == 2).then_some(())
    });
    // The daemon runs what the file says now: no note of a difference.
    assert_eq!(root.status()["stale_config"], serde_json::Value::Null);
    // Cut between the slots' tables: green's env would have gone back to none.
    root.set("slots.green.env", env_map(&[("REDIS_PORT", "7777")]));
    root.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the reload", || {
        (root.log().matches("config reloaded from").count() == 3).then_some(())
    });
    let mut table: toml::Table = fs::read_to_string(&file).unwrap().parse().unwrap();
    table["slots"].as_table_mut().unwrap().remove("green");
    fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
    root.signal(Signal::SIGHUP);
    root.wait_log(&format!(
        "config reload refused, keeping the running config: {} has no [slots.green] now",
        file.display()
    ));
    // Cut before `[slots]`: that says all, not each slot's table again.
    table.remove("slots");
    fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
    root.signal(Signal::SIGHUP);
    root.wait_log(&format!(
        "config reload refused, keeping the running config: {} has no [slots] now,",
        file.display()
    ));
}

#[test]
fn sighup_with_a_broken_config_keeps_running() {
    let root = blue_live();
    let file = root.path.join("bluegreen.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{good}\nbogus = 1\n")).unwrap();
    root.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the refusal event", || {
        root.control("GET", "/events")
            .body
            .contains("config reload refused, keeping the running config")
            .then_some(())
    });
    root.wait_log("unknown field `bogus`");
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
    // An empty file (an editor's empty buffer saved, a file caught while rewritten in
    // place) is refused too: taken, every key was defaulted, app.command included.
    std::fs::write(&file, "").unwrap();
    root.signal(Signal::SIGHUP);
    root.wait_log("bluegreen.toml:1: sets nothing (the file is empty, or only comments)");
    // A FIFO, whose reading waits for a writer (the control API and the daemon's stop
    // waited with it), and a file that never ends (its reading took gigabytes): refused
    // unread, and the daemon answers on.
    std::fs::remove_file(&file).unwrap();
    nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    root.signal(Signal::SIGHUP);
    root.wait_log("bluegreen.toml: it is a FIFO, not a regular file");
    assert_eq!(root.status()["slots"]["blue"]["health"], "healthy");
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
    root.signal(Signal::SIGHUP);
    root.wait_log("bluegreen.toml: it is a device, not a regular file");
    let out = root.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: cannot read {}: it is a device, not a regular file\n",
            file.display()
        )
    );
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, format!("{good}\n{}", "# padding\n".repeat(120_000))).unwrap();
    root.signal(Signal::SIGHUP);
    root.wait_log("bluegreen.toml: it is larger than 1048576 bytes");
    assert_eq!(root.status()["slots"]["blue"]["health"], "healthy");
    std::fs::write(&file, &good).unwrap();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    // A token file that cannot be read is refused too (as `check` and `serve` refuse
    // it), not taken as no token.
    std::fs::write(&file, &good).unwrap();
    let missing = root.path.join("no-such-token");
    root.set("router.token_file", missing.to_str().unwrap());
    root.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the token file's refusal", || {
        root.control("GET", "/events")
            .body
            .contains(&format!(
                "router.token_file: cannot read {}",
                missing.display()
            ))
            .then_some(())
    });
    // A good config is taken, by the data path too: the front's switch path moves.
    let before = root.get(root.front, "/flip");
    assert!(before.body.contains("no route /flip"), "{}", before.body);
    std::fs::write(&file, good).unwrap();
    root.set("router.switch_path", "/flip");
    // A listen address changes only on restart; /status keeps showing the one served.
    root.set("slots.green.listen", format!("127.0.0.1:{}", free_port()));
    root.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the reload event", || {
        root.control("GET", "/events")
            .body
            .contains("(slots.green.listen takes effect on restart)")
            .then_some(())
    });
    let flip = root.get(root.front, "/flip");
    assert_eq!(flip.status, 409, "{}", flip.body);
    assert!(flip.body.contains("green"), "{}", flip.body);
    assert_eq!(
        root.status()["slots"]["green"]["listen"],
        format!("127.0.0.1:{}", root.green)
    );
}

#[test]
fn a_restarted_daemon_stops_orphans_of_a_killed_one() {
    let mut root = blue_live();
    let orphan = root.live_pid("blue");
    root.signal(Signal::SIGKILL);
    root.wait_serve(Duration::from_secs(5));
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(orphan), None).is_ok(),
        "the worker outlived the killed daemon"
    );
    root.serve();
    wait_for(Duration::from_secs(10), "the orphan to be stopped", || {
        group_gone(orphan).then_some(())
    });
    root.wait_body(root.blue, "v1 from blue");
}

#[test]
fn signals_while_a_killed_daemons_workers_are_stopped_wait_for_it() {
    // The next daemon stops the killed one's stubborn worker first (SIGKILL after
    // stop_timeout). A SIGHUP or SIGTERM meanwhile ended it with the worker left on; now
    // the reload, and then (a second killed daemon's worker) the stop, come once the
    // worker is gone. (A SIGTERM queued behind a SIGHUP goes first: sent together, the
    // reload would not always happen.) A stop asked for then starts no generation.
    let mut root = blue_live_with(&[("app.stop_timeout", "2s".into())]);
    root.commit("stubborn", &[("VERSION", "v2\n"), ("IGNORE_TERM", "")]);
    root.push("blue").says("blue: live in ");
    let reaping = |root: &Root, nth: usize| {
        wait_for(
            Duration::from_secs(10),
            "the killed daemon's worker to be stopped",
            || {
                (root
                    .log()
                    .matches("stopping a worker left by a previous daemon")
                    .count()
                    == nth)
                    .then_some(())
            },
        );
    };
    let orphan = root.live_pid("blue");
    root.signal(Signal::SIGKILL);
    root.wait_serve(Duration::from_secs(5));
    root.serve_starting();
    reaping(&root, 1);
    root.signal(Signal::SIGHUP);
    root.wait_log("config reloaded from");
    wait_for(
        Duration::from_secs(5),
        "the killed daemon's worker to go",
        || group_gone(orphan).then_some(()),
    );
    root.wait_body(root.blue, "v2 from blue");
    let orphan = root.live_pid("blue");
    root.signal(Signal::SIGKILL);
    root.wait_serve(Duration::from_secs(5));
    let started = |root: &Root| root.log().matches(": starting generation ").count();
    let before = started(&root);
    root.serve_starting();
    reaping(&root, 2);
    root.signal(Signal::SIGTERM);
    assert_eq!(
        root.wait_serve(Duration::from_secs(15)),
        Some(0),
        "{}",
        root.log()
    );
    // Asked to stop before it served: it started no generation (the app's start, its
    // migrations, run after the stop was asked for).
    assert_eq!(started(&root), before, "{}", root.log());
    // Killed by the stop; gone once its new parent (init) has reaped it.
    wait_for(
        Duration::from_secs(5),
        "the killed daemon's worker to go",
        || group_gone(orphan).then_some(()),
    );
}

#[test]
fn a_daemon_on_a_copy_of_a_live_root_leaves_the_originals_workers_alone() {
    // `cp -a` of a live root, to make a second one: its register of workers came along,
    // and the copy's first `serve` stopped the original's live worker as its own orphan.
    let original = blue_live();
    let worker = original.live_pid("blue");
    let mut copy = Root::new();
    let workers = original.path.join("run/workers");
    let copied = copy.path.join("run/workers");
    fs::create_dir_all(&copied).unwrap();
    let mut entries = 0;
    for entry in fs::read_dir(&workers).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), copied.join(entry.file_name())).unwrap();
        entries += 1;
    }
    assert!(entries > 0, "the live worker is registered");
    // Its orphan reap is over once its control API answers.
    copy.serve();
    assert!(
        !group_gone(worker),
        "the copy's daemon stopped the original's worker"
    );
    assert_eq!(original.live_pid("blue"), worker);
    assert_eq!(original.status()["slots"]["blue"]["restarts"], 0);
    original.wait_body(original.blue, "v1 from blue");
}

#[test]
fn a_daemon_on_a_moved_root_stops_the_orphans_it_recorded() {
    // A root moved with `mv` after its daemon was killed: its orphan's marker names the
    // old path, which no root holds any more, so only the register finds it; the check
    // for another root's worker took that path for one and left the orphan running.
    let mut root = blue_live();
    let orphan = root.live_pid("blue");
    // Stopped if the test fails: the helper's cleanup looks for the new path.
    struct Stop(i32);
    impl Drop for Stop {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ =
                    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0), Signal::SIGKILL);
            }
        }
    }
    let _stop = Stop(orphan);
    root.signal(Signal::SIGKILL);
    root.wait_serve(Duration::from_secs(5));
    let moved = root.path.with_file_name("moved");
    fs::rename(&root.path, &moved).unwrap();
    root.path = moved;
    assert!(!group_gone(orphan), "the worker outlived the killed daemon");
    root.serve();
    wait_for(Duration::from_secs(10), "the orphan to be stopped", || {
        group_gone(orphan).then_some(())
    });
    root.wait_body(root.blue, "v1 from blue");
}

#[test]
fn without_overlap_the_old_generation_stops_before_the_new_one_starts() {
    let root = blue_live_with(&[("app.overlap", false.into())]);
    let old = root.live_pid("blue");
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    // The old group was stopped before the new one was started, not drained after.
    assert!(group_gone(old));
    root.wait_body(root.blue, "v2 from blue");
    let events = root.control("GET", "/events").body;
    let stopped =
        events.find("stopping generation 1 before starting the next (app.overlap = false)");
    let started = events.find("starting generation 2");
    assert!(stopped.is_some() && stopped < started, "{events}");
}

/// Without overlap, "live in" counts the old generation's stop: the slot served nothing
/// meanwhile. An old one that ignores SIGTERM holds it for `stop_timeout` (2 s here);
/// the verdict said `live in 0.0s`.
#[test]
fn without_overlap_live_in_counts_the_old_generations_stop() {
    let root = blue_live_with(&[("app.overlap", false.into())]);
    root.commit("ignores TERM", &[("VERSION", "v2\n"), ("IGNORE_TERM", "")]);
    root.push("blue").says("blue: live in ");
    root.commit("v3", &[("VERSION", "v3\n")]);
    let pushed = root.push("blue");
    let took: f64 = pushed
        .text
        .lines()
        .find_map(|l| l.split("blue: live in ").nth(1))
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .expect(&pushed.text);
    assert!(took >= 2.0, "{}", pushed.text);
}

#[test]
fn without_overlap_a_bad_release_brings_the_last_good_one_back() {
    let root = blue_live_with(&[
        ("app.overlap", false.into()),
        ("app.ready_timeout", "2s".into()),
    ]);
    root.commit("crashing", &[("VERSION", "v2\n"), ("CRASH", "")]);
    root.push("blue")
        .says("blue: not live: ")
        .says("restarting release ");
    root.wait_body(root.blue, "v1 from blue");
}

#[test]
fn a_restarted_daemon_falls_back_to_the_last_live_release() {
    let mut root = blue_live();
    let v1 = root.current("blue").unwrap();
    root.commit("crashing", &[("VERSION", "v2\n"), ("CRASH", "")]);
    root.push("blue").says("blue: not live: ");
    assert_ne!(
        root.current("blue").unwrap(),
        v1,
        "current is the bad release"
    );
    root.stop_cleanly(Duration::from_secs(10));

    // The daemon comes back: `current` does not start, the last live release does, and
    // the first requests wait for it in the backlog instead of getting 503s meanwhile.
    root.serve();
    for port in [root.blue, root.front] {
        let answer = root.get(port, "/");
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.body.starts_with("v1 from blue"), "{}", answer.body);
    }
    let status = root.status();
    assert_eq!(status["slots"]["blue"]["live"]["release"], v1.as_str());
    let error = status["slots"]["blue"]["last_error"].to_string();
    assert!(
        error.contains("failed before the daemon restarted: ")
            && error.contains("CRASH file present")
            && error.contains(&format!("runs its last live release {v1} instead")),
        "why current is not live stays in /status: {status}"
    );
}

/// The daemon comes back while the active slot's app cannot start (a service it needs
/// is down): its start fails at once, and so does the restart after it. The front does
/// not hold its clients in the backlog for `ready_timeout`: it answers, and the heartbeat
/// moves traffic to green, live again.
#[test]
fn a_restarted_daemon_whose_active_slot_cannot_start_does_not_hold_its_clients() {
    let mut root = Root::new();
    root.set("app.ready_timeout", "1m");
    root.set("heartbeat.interval", "300ms");
    root.set("heartbeat.failures", 2);
    root.set(
        "app.command",
        format!("sh -c 'test -z \"$DOWN\" || {{ echo dependency down; exit 1; }}; exec {BIN} sample-app'"),
    );
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    root.stop_cleanly(Duration::from_secs(10));
    root.set("slots.blue.env", env_map(&[("DOWN", "1")]));
    root.serve();
    // Within the test client's 30 s, where a minute of `ready_timeout` held it before.
    let answer = root.get(root.blue, "/");
    assert_eq!(answer.status, 503, "{answer:?}");
    root.wait_body(root.front, "v1 from green");
    assert_eq!(root.status()["active"], "green");
    let events = root.control("GET", "/events").body;
    assert!(events.contains("dependency down"), "{events}");
}

/// Blue served v1, refused v2 (never ready within its 2 s), and the daemon stopped:
/// `current` is v2, state.json records its failure.
fn refused_then_stopped() -> (Root, String, String) {
    let mut root = blue_live_with(&[("app.ready_timeout", "2s".into())]);
    let v1 = root.current("blue").unwrap();
    root.commit("never ready", &[("VERSION", "v2\n"), ("FAIL_AFTER", "0")]);
    root.push("blue").says("blue keeps serving generation 1");
    let v2 = root.current("blue").unwrap();
    root.stop_cleanly(Duration::from_secs(10));
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(root.path.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["failed"]["blue"]["release"], v2.as_str(), "{state}");
    (root, v1, v2)
}

/// state.json records no release that failed to start.
fn assert_no_failed_release(root: &Root) {
    let state = fs::read_to_string(root.path.join("state.json")).unwrap();
    assert!(!state.contains("\"failed\""), "{state}");
}

#[test]
fn a_restarted_daemon_serves_its_last_live_release_at_once_when_current_failed_before() {
    let (mut root, v1, v2) = refused_then_stopped();
    // A minute to get ready: were v2 tried first, the slot would answer nothing (its
    // clients waiting in the backlog) for that minute, past the test client's 30 s.
    root.set("app.ready_timeout", "1m");
    root.serve();
    let answer = root.get(root.blue, "/");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.starts_with("v1 from blue"), "{}", answer.body);
    let events = root.control("GET", "/events").body;
    assert!(
        events.contains(&format!(
            "release {v2} failed before the daemon restarted: starting the last live release {v1} instead"
        )),
        "{events}"
    );
    let since_restart = &events[events.find("failed before the daemon restarted").unwrap()..];
    assert!(
        !since_restart.contains(&format!("for release {v2}")),
        "v2 was started: {events}"
    );
    let error = root.status()["slots"]["blue"]["last_error"].to_string();
    assert!(
        error.contains(&format!(
            "release {v2} failed before the daemon restarted: not ready after 2s"
        )),
        "{error}"
    );
    // Asked for, v2 is tried again; once it goes live, the next restart starts it first.
    fs::remove_file(root.path.join("blue/releases").join(&v2).join("FAIL_AFTER")).unwrap();
    let reload = root.control("POST", "/slots/blue/reload");
    assert_eq!(reload.status, 200, "{}", reload.body);
    root.wait_body(root.blue, "v2 from blue");
    assert_eq!(root.status()["slots"]["blue"]["last_error"], "");
    root.stop_cleanly(Duration::from_secs(10));
    assert_no_failed_release(&root);
    root.serve();
    let answer = root.get(root.blue, "/");
    assert!(answer.body.starts_with("v2 from blue"), "{}", answer.body);
}

#[test]
fn a_restarted_daemon_tries_current_when_the_last_live_release_fails_first() {
    let (mut root, v1, v2) = refused_then_stopped();
    // While the daemon is down, the last live release stops working (v2's first boot
    // migrated the database past it, say) and what held v2 back is gone.
    let releases = root.path.join("blue/releases");
    fs::write(releases.join(&v1).join("CRASH"), "").unwrap();
    fs::remove_file(releases.join(&v2).join("FAIL_AFTER")).unwrap();
    root.serve();
    // The slot is not left restarting v1 forever: current gets its turn.
    root.wait_body(root.blue, "v2 from blue");
    let events = root.control("GET", "/events").body;
    assert!(
        events.contains(&format!(
            "no live generation; starting its current release {v2}"
        )),
        "{events}"
    );
    assert_eq!(root.status()["slots"]["blue"]["last_error"], "");
    assert_no_failed_release(&root);
}

/// `current` removed by hand while no daemon ran: the restarted daemon serves the slot's
/// last live release, and says why `current` does not name it. It took the slot for one
/// never deployed: the front answered 503 until the heartbeat moved it. Serving, the
/// slot can be switched to.
#[test]
fn a_current_removed_by_hand_starts_the_last_live_release_and_says_so() {
    let mut root = both_live();
    let v1 = root.current("green").unwrap();
    root.signal(Signal::SIGKILL);
    assert!(root.wait_serve(Duration::from_secs(10)).is_none());
    fs::remove_file(root.path.join("green/current")).unwrap();
    root.serve();
    root.wait_body(root.green, "v1 from green");
    let status = root.status();
    assert_eq!(status["slots"]["green"]["live"]["release"], v1.as_str());
    let missing = format!(
        "green/current is missing (removed by hand?): green runs its last live release {v1}; `bluegreen rollback green --to {v1}`, or a push, sets it again"
    );
    assert_eq!(status["slots"]["green"]["last_error"], missing.as_str());
    assert!(root.run_ok(&["status"]).contains(&missing));
    assert!(root
        .run_ok(&["switch", "green"])
        .contains("switched blue -> green"));
    assert!(root.get(root.front, "/").body.starts_with("v1 from green"));
    // The rollback it names mends it, and the note goes.
    root.run_ok(&["rollback", "green", "--to", &v1]);
    wait_for(Duration::from_secs(10), "the note to go", || {
        (root.status()["slots"]["green"]["last_error"] == "").then_some(())
    });
    assert_eq!(root.current("green").unwrap(), v1);
}

/// A `current` pointed by hand at a folder that is not a release (one still being
/// made, or one bluegreen did not make) is never run: the live release goes on serving,
/// and `/status` says why, while the daemon runs and after it restarts. Both were run,
/// and a `.tmp-…` folder that served was then removed by the next push.
#[test]
fn a_current_pointed_by_hand_at_no_release_is_not_run() {
    let mut root = blue_live();
    let v1 = root.current("blue").unwrap();
    let releases = root.path.join("blue/releases");
    for (name, why) in [
        (
            ".tmp-hand",
            "which is not a finished release (one still being made, or left by a crash)",
        ),
        (
            "handmade",
            "which is not a release bluegreen made (it has no .bluegreen-release.json)",
        ),
    ] {
        fs::create_dir(releases.join(name)).unwrap();
        fs::write(releases.join(name).join("VERSION"), name).unwrap();
        root.point_current("blue", &format!("releases/{name}"));
        let said = format!(
            "blue/current points at releases/{name}, {why}: blue runs its last live release {v1}; `bluegreen rollback blue --to {v1}`, or a push, sets it again"
        );
        wait_for(Duration::from_secs(10), "the status to say why", || {
            (root.status()["slots"]["blue"]["last_error"] == said.as_str()).then_some(())
        });
        assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
        assert!(root.run_ok(&["status"]).contains(&said));
        assert_eq!(
            root.status()["slots"]["blue"]["current"],
            serde_json::Value::Null
        );
    }
    // A restart serves the last live release at once, and says the same.
    root.stop_cleanly(Duration::from_secs(10));
    root.serve();
    root.wait_body(root.blue, "v1 from blue");
    let error = root.status()["slots"]["blue"]["last_error"].clone();
    assert!(
        error
            .as_str()
            .is_some_and(|e| e
                .starts_with("blue/current points at releases/handmade, which is not a release")),
        "{error}"
    );
    let events = root.control("GET", "/events").body;
    assert!(!events.contains("for release handmade"), "{events}");
    assert!(!events.contains("for release .tmp-hand"), "{events}");
    let text = root.run_ok(&["rollback", "blue", "--to", &v1]);
    assert!(
        text.contains(&format!(
            "blue: current (none: it points at releases/handmade) -> {v1}"
        )),
        "{text}"
    );
    wait_for(Duration::from_secs(10), "the note to go", || {
        (root.status()["slots"]["blue"]["last_error"] == "").then_some(())
    });
}

/// The live release's folder removed by hand, then its worker crashed: the restarts
/// say what is missing and what mends it, and that mends it.
#[test]
fn a_live_release_removed_by_hand_says_how_to_mend_it_when_its_worker_crashes() {
    let root = v2_over_v1_on_blue();
    let [v1, v2] = <[String; 2]>::try_from(root.releases("blue")).unwrap();
    fs::remove_dir_all(root.path.join("blue/releases").join(&v2)).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(root.live_pid("blue")),
        Signal::SIGKILL,
    )
    .unwrap();
    let said = format!("release {v2} of blue does not exist (removed by hand?): `bluegreen rollback blue --to <release>` puts back one that `bluegreen releases blue` lists, or a push deploys anew");
    wait_for(Duration::from_secs(10), "the restart to say why", || {
        let error = root.status()["slots"]["blue"]["last_error"].clone();
        error
            .as_str()
            .is_some_and(|e| e.contains(&said))
            .then_some(())
    });
    root.run_ok(&["rollback", "blue", "--to", &v1]);
    root.wait_body(root.blue, "v1 from blue");
    assert_eq!(root.current("blue").unwrap(), v1);
}

/// As above, the release removed being the oldest: `rollback` with no `--to` finds none
/// before it, so the mend named is the one that works.
#[test]
fn the_oldest_release_removed_by_hand_names_a_mend_that_works() {
    let root = v2_over_v1_on_blue();
    let [v1, v2] = <[String; 2]>::try_from(root.releases("blue")).unwrap();
    root.run_ok(&["rollback", "blue"]);
    root.wait_body(root.blue, "v1 from blue");
    fs::remove_dir_all(root.path.join("blue/releases").join(&v1)).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(root.live_pid("blue")),
        Signal::SIGKILL,
    )
    .unwrap();
    wait_for(Duration::from_secs(10), "the restart to say why", || {
        let error = root.status()["slots"]["blue"]["last_error"].clone();
        error
            .as_str()
            .is_some_and(|e| e.contains(&format!("release {v1} of blue does not exist (removed by hand?): `bluegreen rollback blue --to <release>`")))
            .then_some(())
    });
    root.run_ok(&["rollback", "blue", "--to", &v2]);
    root.wait_body(root.blue, "v2 from blue");
}

/// A slot never deployed whose `current` points by hand at a folder bluegreen did not
/// make starts nothing, and its port and `/status` say why (it was run).
#[test]
fn a_slot_never_live_with_a_current_pointed_at_no_release_says_why() {
    let mut root = blue_live();
    root.stop_cleanly(Duration::from_secs(10));
    let folder = root.path.join("green/releases/handmade");
    fs::create_dir_all(&folder).unwrap();
    fs::write(folder.join("VERSION"), "handmade").unwrap();
    root.point_current("green", "releases/handmade");
    root.serve();
    root.wait_body(root.blue, "v1 from blue");
    let why = "green/current points at releases/handmade, which is not a release bluegreen made (it has no .bluegreen-release.json): nothing starts until `bluegreen rollback green --to <release>`, or a push, sets it";
    let answer = root.get(root.green, "/");
    assert_eq!((answer.status, answer.body.trim()), (503, why));
    assert_eq!(root.status()["slots"]["green"]["last_error"], why);
    assert!(root.run_ok(&["status"]).contains(why));
    // Removed, then pointed again, while the daemon runs: what it says follows.
    let says = |text: &str, error: &str| {
        wait_for(Duration::from_secs(10), text, || {
            let answer = root.get(root.green, "/");
            (answer.body.trim() == text && root.status()["slots"]["green"]["last_error"] == error)
                .then_some(())
        });
    };
    fs::remove_file(root.path.join("green/current")).unwrap();
    says("green has no release yet: git push green HEAD:main", "");
    root.point_current("green", "releases/handmade");
    says(why, why);
    assert_eq!(
        root.run_err(&["promote", "green", "blue"]),
        "error: green/current points at releases/handmade, which is not a release bluegreen made (it has no .bluegreen-release.json): nothing to promote"
    );
    // A push mends it.
    root.push("green");
    root.wait_body(root.green, "v1 from green");
    assert_eq!(root.status()["slots"]["green"]["last_error"], "");
}

/// `state.json` removed while no daemon ran: the daemon starts as on a new root (the
/// active slot the first to go live, mirroring on), and says so, where it said nothing.
#[test]
fn a_state_file_removed_by_hand_is_told_at_start() {
    let mut root = blue_live();
    root.stop_cleanly(Duration::from_secs(10));
    fs::remove_file(root.path.join("state.json")).unwrap();
    root.serve();
    root.wait_log(&format!(
        "{} is missing, though blue ran releases: starting as on a new root (active: the first slot to go live; mirroring: on); `bluegreen switch <slot>` and `bluegreen mirroring off` set them again",
        root.path.join("state.json").display()
    ));
    root.wait_body(root.front, "v1 from blue");
}

/// Blue served v1, the daemon stopped, and v2 (with `files`) was pushed meanwhile:
/// `current` is v2, which never went live, and nothing refused it.
fn pushed_while_stopped(files: &[(&str, &str)]) -> (Root, String, String) {
    let mut root = blue_live();
    let v1 = root.current("blue").unwrap();
    root.stop_cleanly(Duration::from_secs(10));
    root.commit("v2", files);
    root.push("blue");
    let v2 = root.current("blue").unwrap();
    assert_ne!(v2, v1, "the push moved current");
    (root, v1, v2)
}

/// A `current` that never went live proves nothing: the daemon stopped during its start
/// (a crash, a `systemctl restart` mid-deploy), or it was pushed while the daemon was
/// down. The restarted daemon serves the last live release at once and starts `current`
/// next, as a deploy: one that never gets ready holds no client for its `ready_timeout`.
#[test]
fn a_restarted_daemon_serves_its_last_live_release_while_a_release_never_live_starts() {
    let (mut root, v1, v2) = pushed_while_stopped(&[("VERSION", "v2\n"), ("FAIL_AFTER", "0")]);
    // A minute to get ready: were v2 tried first, the slot would answer nothing (its
    // clients waiting in the backlog) for that minute, past the test client's 30 s.
    root.set("app.ready_timeout", "1m");
    root.serve();
    for port in [root.blue, root.front] {
        let answer = root.get(port, "/");
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.body.starts_with("v1 from blue"), "{}", answer.body);
    }
    let events = wait_for(Duration::from_secs(20), "v2's start", || {
        let events = root.control("GET", "/events").body;
        events
            .contains(&format!("for release {v2}"))
            .then_some(events)
    });
    let first = format!(
        "blue: release {v2} has not gone live yet: starting the last live release {v1} first, then it"
    );
    let (before, after) = events.split_once(&first).expect(&events);
    assert!(!before.contains(&format!("for release {v2}")), "{events}");
    assert!(after.contains(&format!("for release {v1}")), "{events}");
    let status = root.status();
    assert_eq!(status["slots"]["blue"]["live"]["release"], v1.as_str());
    assert_eq!(status["slots"]["blue"]["current"], v2.as_str(), "{status}");
}

/// The last live release, started first for a `current` that never went live, fails
/// (it no longer works): `current` starts next, at once, and the failure says so. It
/// said `restarting release <the last live one>`, a restart that never came.
#[test]
fn a_restarted_daemon_whose_last_live_release_fails_says_current_starts_next() {
    let (mut root, v1, v2) = pushed_while_stopped(&[("VERSION", "v2\n")]);
    fs::write(root.path.join("blue/releases").join(&v1).join("CRASH"), "").unwrap();
    root.serve();
    root.wait_body(root.blue, "v2 from blue");
    let events = root.control("GET", "/events").body;
    assert!(
        events.contains(&format!(
            "blue has no live generation; starting its current release {v2}"
        )),
        "{events}"
    );
    assert!(
        !events.contains(&format!("restarting release {v1}")),
        "{events}"
    );
}

/// A rollback made while the daemon was down sticks: the release it went back from,
/// though the last to serve, is not started first for a `current` pushed since that never
/// went live; the release the rollback went to is, not one it skipped (`--to`). It
/// served the rolled-back release again, and for good when the new push failed to start.
#[test]
fn a_rollback_made_while_the_daemon_was_down_is_not_undone_by_its_restart() {
    let mut root = blue_live();
    let v1 = root.current("blue").unwrap();
    let mut skipped = Vec::new();
    for version in ["v2", "v3"] {
        root.commit(version, &[("VERSION", &format!("{version}\n"))]);
        root.push("blue");
        root.wait_body(root.blue, &format!("{version} from blue"));
        skipped.push(root.current("blue").unwrap());
    }
    root.stop_cleanly(Duration::from_secs(10));
    root.run_ok(&["rollback", "blue", "--to", &v1]);
    assert_eq!(root.current("blue").unwrap(), v1);
    root.commit("v4", &[("VERSION", "v4\n"), ("CRASH", "")]);
    root.push("blue");
    let v4 = root.current("blue").unwrap();
    root.serve();
    let events = wait_for(Duration::from_secs(20), "v4's start", || {
        let events = root.control("GET", "/events").body;
        events
            .contains(&format!("for release {v4}"))
            .then_some(events)
    });
    assert!(
        events.contains(&format!(
            "blue: release {v4} has not gone live yet: starting the last live release {v1} first, then it"
        )),
        "{events}"
    );
    for id in &skipped {
        assert!(!events.contains(&format!("for release {id}")), "{events}");
    }
    let answer = root.get(root.blue, "/");
    assert!(answer.body.starts_with("v1 from blue"), "{}", answer.body);
}

/// A rollback made while the daemon ran, to a release that then failed to start: the
/// daemon kept serving the one rolled back from, and so does the next daemon, rather
/// than take that away and leave the slot nothing to serve.
#[test]
fn a_rollback_that_failed_to_start_keeps_serving_across_a_restart() {
    let mut root = blue_live();
    let v1 = root.current("blue").unwrap();
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    fs::write(root.path.join("blue/releases").join(&v1).join("CRASH"), "").unwrap();
    let out = root.run(&["rollback", "blue"]);
    assert!(!out.status.success());
    root.wait_body(root.blue, "v2 from blue");
    root.stop_cleanly(Duration::from_secs(10));
    root.serve();
    let answer = root.get(root.blue, "/");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.starts_with("v2 from blue"), "{}", answer.body);
}

/// A generation number a full disk kept out of state.json (its write failed) is
/// recorded once the disk has room again, at the daemon's stop at the latest: the next
/// daemon handed the same number out again, and the log had two generation 1s.
#[test]
fn a_generation_number_a_full_disk_kept_out_of_state_is_not_handed_out_again() {
    let mut root = Root::new();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue");
    root.serve_disk_full();
    root.wait_body(root.blue, "v1 from blue");
    let first = root.status()["slots"]["blue"]["live"]["generation"]
        .as_u64()
        .unwrap();
    let state = fs::read_to_string(root.path.join("state.json")).unwrap_or_default();
    assert!(!state.contains("\"generation\": 1"), "{state}");
    root.disk_has_room();
    root.stop_cleanly(Duration::from_secs(10));
    root.serve();
    root.wait_body(root.blue, "v1 from blue");
    let next = root.status()["slots"]["blue"]["live"]["generation"]
        .as_u64()
        .unwrap();
    assert!(next > first, "generation {first}, then {next}");

    // Killed (SIGKILL) while the disk is full, its stop never writes the number: the
    // next daemon counts on from its orphaned worker's.
    root.stop_cleanly(Duration::from_secs(10));
    root.serve_disk_full();
    root.wait_body(root.blue, "v1 from blue");
    let killed = root.status()["slots"]["blue"]["live"]["generation"]
        .as_u64()
        .unwrap();
    root.signal(Signal::SIGKILL);
    root.wait_serve(Duration::from_secs(5));
    root.serve();
    root.wait_body(root.blue, "v1 from blue");
    let after = root.status()["slots"]["blue"]["live"]["generation"]
        .as_u64()
        .unwrap();
    assert!(after > killed, "generation {killed}, then {after}");
}

#[test]
fn a_rollback_to_the_live_release_forgets_the_refused_current() {
    let (mut root, v1, _) = refused_then_stopped();
    root.serve();
    root.wait_body(root.blue, "v1 from blue");
    assert_ne!(root.status()["slots"]["blue"]["last_error"], "");
    // Back on the release it serves: nothing is wrong any more, here or after a restart.
    root.run_ok(&["rollback", "blue"]);
    assert_eq!(root.current("blue").unwrap(), v1);
    let status = root.status();
    assert_eq!(status["slots"]["blue"]["last_error"], "", "{status}");
    assert_no_failed_release(&root);
}

#[test]
fn a_restarted_daemon_falls_back_only_to_a_release_of_the_slot() {
    // `state.json` lies in the root, which the app's processes can write: a last live
    // release named `../../../elsewhere` ran app.command in that folder.
    let mut root = blue_live();
    root.commit("crashing", &[("VERSION", "v2\n"), ("CRASH", "")]);
    root.push("blue").says("blue: not live: ");
    root.stop_cleanly(Duration::from_secs(10));
    let elsewhere = root.path.parent().unwrap().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::write(elsewhere.join("VERSION"), "elsewhere\n").unwrap();
    let state_file = root.path.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&state_file).unwrap()).unwrap();
    state["live"]["blue"] = "../../../elsewhere".into();
    fs::write(&state_file, state.to_string()).unwrap();

    root.serve();
    let answer = root.get(root.blue, "/");
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(!answer.body.contains("elsewhere"), "{}", answer.body);
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
fn pushes_during_a_start_wait_their_turn_and_the_newest_supersedes_one_waiting() {
    // v2 takes 4 s to answer its health check (within the heartbeat timeout); v3 and v4
    // come while it starts.
    let root = blue_live_with(&[("heartbeat.timeout", "10s".into())]);
    let v2 = root.commit("slow v2", &[("VERSION", "v2\n"), ("SLOW_MS", "4000")]);
    root.remove("SLOW_MS");
    let v3 = root.commit("v3", &[("VERSION", "v3\n")]);
    let v4 = root.commit("v4", &[("VERSION", "v4\n")]);
    let mut v3_release = String::new();
    let push = |commit: &str| root.push_ref("blue", &format!("+{commit}:refs/heads/main"));
    // `current` names the commit's release (its id ends with the short hash) before the
    // daemon has a generation of it live.
    let flipped_to = |commit: &str| {
        let short = &commit[..7];
        wait_for(Duration::from_secs(20), "the flip", || {
            let status = root.status();
            let blue = &status["slots"]["blue"];
            let current = blue["current"].as_str().unwrap_or_default().to_string();
            let live = blue["live"]["release"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (current.ends_with(short) && live != current).then_some(current)
        })
    };
    std::thread::scope(|s| {
        let first = s.spawn(|| push(&v2));
        flipped_to(&v2);
        let second = s.spawn(|| push(&v3));
        v3_release = flipped_to(&v3);
        let third = push(&v4);
        third.says("blue: live in ");
        let v4_release = root.current("blue").unwrap();
        // v3 waited behind v2's start, and v4 replaced it there: it never started.
        second
            .join()
            .unwrap()
            .says(&format!("blue: not live: superseded by {v4_release}"));
        first.join().unwrap().says("blue: live in ");
    });
    assert!(root.get(root.blue, "/").body.starts_with("v4 from blue"));
    let events = root.status()["events"].to_string();
    assert!(
        !events.contains(&format!("for release {v3_release}")),
        "v3 was started: {events}"
    );
    // v2's generation went live, then drained and stopped: one worker runs for blue.
    wait_for(Duration::from_secs(20), "v2's worker to stop", || {
        (root.processes().len() == 1).then_some(())
    });
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

/// Blue live, its worker starting a helper out of its process group (`setsid`).
fn blue_live_with_a_helper() -> Root {
    blue_live_with(&[(
        "app.command",
        format!(
            "sh -c 'setsid sleep 300 </dev/null >/dev/null 2>&1 & exec \"$0\" sample-app' {BIN}"
        )
        .into(),
    )])
}

/// The one process of the root besides blue's live leader: its helper, once it runs.
fn the_helper(root: &Root) -> Option<u32> {
    let leader = root.live_pid("blue") as u32;
    let others: Vec<u32> = (root.processes().into_iter())
        .filter(|&p| p != leader)
        .collect();
    (others.len() == 1).then(|| others[0])
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

/// What workers of a killed daemon left outside their groups is found by the root in
/// their environment, also when the next daemon reaches the root by another path.
#[test]
fn a_daemon_reaching_the_root_by_another_path_stops_what_a_killed_one_left() {
    let mut root = blue_live_with_a_helper();
    let helper = wait_for(Duration::from_secs(10), "the helper to start", || {
        the_helper(&root)
    });
    root.signal(nix::sys::signal::Signal::SIGKILL);
    root.wait_serve(Duration::from_secs(10));
    let alias = root.path.with_file_name("alias");
    std::os::unix::fs::symlink(&root.path, &alias).unwrap();
    root.path = alias;
    root.serve();
    root.wait_body(root.blue, "from blue");
    // The helper leads a group of its own (setsid).
    wait_for(Duration::from_secs(10), "the helper to be stopped", || {
        group_gone(helper as i32).then_some(())
    });
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
        wait_for(Duration::from_secs(20), "generation 2 to start", || {
            (root.processes().iter())
                .any(|&p| cmdline(p) == b"sleep\x0030\x00")
                .then_some(())
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
    // As a start that fails says `exited with exit status: 3`: here, the OOM killer's
    // signal is the only clue there is.
    assert!(error.contains("signal: 9 (SIGKILL)"), "{error}");
}

/// Without overlap, a push whose release fails to start left the slot with nothing live:
/// the release it replaced comes back at once, again at the next bad push. It waited the
/// restart backoff's second first (or more, after early crashes), the slot answering 503
/// meanwhile, though nothing had crashed in a loop.
#[test]
fn without_overlap_a_bad_push_brings_the_good_one_back_at_once() {
    let root = blue_live_with(&[
        ("app.overlap", false.into()),
        ("app.ready_timeout", "2s".into()),
    ]);
    let v1 = root.current("blue").unwrap();
    let restarts = || -> Vec<String> {
        let events: serde_json::Value =
            serde_json::from_str(&root.control("GET", "/events").body).unwrap();
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "restart")
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    let at_once = format!("blue: restarting release {v1} at once");
    root.commit("crashing", &[("VERSION", "v2\n"), ("CRASH", "")]);
    root.push("blue").says("restarting release ");
    root.wait_body(root.blue, "v1 from blue");
    assert_eq!(restarts(), std::slice::from_ref(&at_once));
    root.commit("crashing again", &[("VERSION", "v3\n")]);
    root.push("blue").says("restarting release ");
    root.wait_body(root.blue, "v1 from blue");
    assert_eq!(restarts(), [at_once.clone(), at_once.clone()]);
    // Brought back, it is a restart as a crash's is.
    assert_eq!(root.status()["slots"]["blue"]["restarts"], 2);
    // A late look of the file watch at `current` (seen once under load; here a hand
    // flip to the same release) does not start the release that failed again: it did,
    // stopping v1 for it, and the slot answered 503 once more.
    let v3 = root.current("blue").unwrap();
    root.point_current("blue", &format!("releases/{v3}"));
    let again = poll_until(Duration::from_secs(3), || {
        (restarts().len() > 2).then_some(())
    });
    assert!(again.is_none(), "{:?}", restarts());
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
}

/// Without overlap, a crashed generation's group is gone before its restart starts: what
/// the group held that the next one needs too (here a fixed port, held by a helper that
/// ignores SIGTERM until the SIGKILL after `stop_timeout`) was still taken, and the
/// restart ran without it.
#[test]
fn without_overlap_a_restart_waits_for_the_crashed_generations_group() {
    let fixed = free_port();
    let root = blue_live_with(&[
        ("app.overlap", false.into()),
        (
            "app.command",
            format!(r#"sh -c 'PORT={fixed} "$0" sample-app & exec "$0" sample-app' {BIN}"#).into(),
        ),
    ]);
    root.commit("v2", &[("VERSION", "v2\n"), ("IGNORE_TERM", "")]);
    root.push("blue").says("blue: live in ");
    let crashed = root.live_pid("blue");
    wait_for(
        Duration::from_secs(10),
        "the helper on the fixed port",
        || http("GET", &root.url(fixed, "/"), None).ok(),
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(crashed), Signal::SIGKILL).unwrap();
    wait_for(Duration::from_secs(20), "the restarted generation", || {
        let live = root.status()["slots"]["blue"]["live"]["pid"].as_i64();
        live.filter(|&pid| pid != crashed as i64)
    });
    wait_for(
        Duration::from_secs(10),
        "the crashed group to be gone",
        || group_gone(crashed).then_some(()),
    );
    // The restarted generation's own helper holds the port now.
    wait_for(
        Duration::from_secs(5),
        "a helper on the fixed port again",
        || http("GET", &root.url(fixed, "/"), None).ok(),
    );
}

/// A deploy's reload that arrives after the file watch's start of its release has failed
/// (the hook was still pruning: a big release takes a while to remove) is told that
/// failure; it started the release a second time (twice the wait for the pusher, and
/// with `app.overlap = false` the slot down twice). Once `current` has moved away, going
/// back to the release is a new attempt.
#[test]
fn a_deploy_whose_release_the_file_watch_saw_fail_is_told_without_a_second_start() {
    let root = blue_live();
    let good = root.current("blue").unwrap();
    // A release as the hook makes one, flipped to as it does, before it asks the daemon.
    let bad = "29991231T000000.000Z-crashes";
    let releases = root.path.join("blue/releases");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(releases.join(&good))
        .arg(releases.join(bad))
        .status()
        .unwrap();
    assert!(copied.success());
    for mark in [".bluegreen-went-live", ".bluegreen-was-current"] {
        let _ = std::fs::remove_file(releases.join(bad).join(mark));
    }
    std::fs::write(releases.join(bad).join("CRASH"), "").unwrap();
    let starts = || {
        let events = root.control("GET", "/events").body;
        events.matches(&format!("for release {bad}")).count()
    };
    root.point_current("blue", &format!("releases/{bad}"));
    wait_for(
        Duration::from_secs(10),
        "the file watch's start to fail",
        || {
            let error = root.status()["slots"]["blue"]["last_error"].clone();
            error
                .as_str()
                .is_some_and(|e| e.contains(bad))
                .then_some(())
        },
    );
    assert_eq!(starts(), 1);
    let told = root.control("POST", &format!("/slots/blue/reload?release={bad}"));
    assert_eq!(told.status, 409, "{}", told.body);
    assert!(
        told.body.contains("exited with exit status: 3"),
        "{}",
        told.body
    );
    assert_eq!(starts(), 1, "the deploy's reload started it again");
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
    // Away and back: started again.
    root.run_ok(&["rollback", "blue", "--to", &good]);
    let out = root.run(&["rollback", "blue", "--to", bad]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("exited with exit status: 3"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(starts(), 2);
}

/// A stop that comes while a deploy without overlap drains the old generation starts no
/// new one only to stop it at once (its boot may migrate a database): the pusher is told
/// the daemon is stopping, and the next daemon starts the release.
#[test]
fn without_overlap_a_stop_during_the_drain_starts_no_new_generation() {
    let mut root = Root::new();
    root.set("app.overlap", false);
    root.set("heartbeat.timeout", "5s");
    root.serve();
    root.commit("slow v1", &[("VERSION", "v1\n"), ("SLOW_MS", "3000")]);
    root.push("blue").says("blue: live in ");
    let url = root.url(root.blue, "/");
    std::thread::scope(|s| {
        let slow = s.spawn(|| http("GET", &url, None));
        wait_for_one_in_flight(&root);
        root.remove("SLOW_MS");
        root.commit("v2", &[("VERSION", "v2\n")]);
        let pushed = s.spawn(|| root.push("blue"));
        wait_for(Duration::from_secs(10), "the drain", || {
            root.control("GET", "/events")
                .body
                .contains("stopping generation 1 before starting the next")
                .then_some(())
        });
        // Listed as draining, with its request, while nothing is live.
        wait_for(
            Duration::from_secs(2),
            "generation 1 in /status as draining",
            || {
                let status = root.status();
                let blue = &status["slots"]["blue"];
                let draining = &blue["draining"][0];
                (blue["live"].is_null()
                    && draining["generation"] == 1
                    && draining["in_flight"] == 1)
                    .then_some(())
            },
        );
        root.signal(Signal::SIGTERM);
        pushed
            .join()
            .unwrap()
            .says("blue: not started: the daemon is stopping");
        assert_eq!(slow.join().unwrap().unwrap().status, 200);
    });
    assert_eq!(root.wait_serve(Duration::from_secs(15)), Some(0));
    let log = root.log();
    assert!(!log.contains("starting generation 2"), "{log}");
    root.serve();
    root.wait_body(root.blue, "v2 from blue");
}

/// Blue live on v1, a push of a slow-booting v2, and while v2 starts `go_back` takes
/// `current` back to v1 (given): v2 never goes live, its pusher reads why, and blue
/// serves v1. Returns the root and v1 for what each way back checks more.
fn back_to_v1_while_v2_starts(go_back: impl FnOnce(&Root, &str) + Send) -> (Root, String) {
    let root = blue_live_with(&[("heartbeat.timeout", "10s".into())]);
    let v1 = root.current("blue").unwrap();
    root.commit("slow v2", &[("VERSION", "v2\n"), ("SLOW_MS", "3000")]);
    std::thread::scope(|s| {
        let pushed = s.spawn(|| root.push("blue"));
        wait_for(Duration::from_secs(10), "v2's start", || {
            root.control("GET", "/events")
                .body
                .contains("starting generation 2 for release")
                .then_some(())
        });
        go_back(&root, &v1);
        pushed.join().unwrap().says(&format!(
            "blue: not live: release {} did not go live: blue went back to {v1}, its live release, meanwhile",
            root.releases("blue").last().unwrap()
        ));
    });
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
    let events = root.control("GET", "/events").body;
    assert!(!events.contains("generation 2 live"), "{events}");
    (root, v1)
}

/// A rollback while a push's release still starts (a slow boot) goes back to the live
/// generation at once: the release rolled back from never goes live. It went live when
/// ready, took traffic, and the live release came back as a second generation after it.
#[test]
fn a_rollback_while_a_push_starts_keeps_the_live_generation() {
    let (root, _) = back_to_v1_while_v2_starts(|root, v1| {
        let rolled = root.run_ok(&["rollback", "blue"]);
        assert!(
            rolled.contains(&format!("-> {v1}")) && rolled.contains("(generation 1)"),
            "{rolled}"
        );
    });
    let events = root.control("GET", "/events").body;
    assert!(!events.contains("starting generation 3"), "{events}");
}

/// A hand flip of `current` back to the live release while a push's release still
/// starts (the file watch's backstop, as `rollback` is through the control API): the
/// release flipped away from never goes live.
#[test]
fn a_hand_flip_back_to_the_live_release_while_a_push_starts_keeps_it() {
    let (root, v1) = back_to_v1_while_v2_starts(|root, v1| {
        root.point_current("blue", &format!("releases/{v1}"));
    });
    assert_eq!(
        root.status()["slots"]["blue"]["live"]["release"],
        v1.as_str()
    );
    // The deploy's own ask coming after the flip back (a hook slower than the file
    // watch, on a loaded host) is told the same, not that a later push superseded it.
    let v2 = root.releases("blue").last().unwrap().clone();
    let late = root.control("POST", &format!("/slots/blue/reload?release={v2}"));
    assert_eq!(late.status, 409, "{}", late.body);
    assert!(
        late.body.contains(&format!(
            "release {v2} did not go live: blue went back to {v1}, its live release, meanwhile"
        )),
        "{}",
        late.body
    );
}

/// A drain timeout raised by SIGHUP holds for the daemon's own stop: a request longer
/// than the old one is answered. The proxy threads cut their connections after the
/// drain timeout the daemon started with.
#[test]
fn a_drain_timeout_raised_by_sighup_lets_a_slow_request_finish_at_the_stop() {
    let mut root = Root::new();
    root.set("app.drain_timeout", "1s");
    root.set("heartbeat.timeout", "10s");
    root.serve();
    root.commit("slow v1", &[("VERSION", "v1\n"), ("SLOW_MS", "3000")]);
    root.push("blue").says("blue: live in ");
    root.set("app.drain_timeout", "10s");
    root.reload_config();
    let url = root.url(root.blue, "/");
    std::thread::scope(|s| {
        let slow = s.spawn(|| http("GET", &url, None));
        wait_for_one_in_flight(&root);
        root.signal(Signal::SIGTERM);
        // A second Ctrl-C while it drains is told, not met with silence; the drain goes on.
        root.wait_log("stopping: draining every generation");
        root.signal(Signal::SIGINT);
        root.wait_log("SIGINT ignored: the daemon is stopping already (it drains requests in flight, up to app.drain_timeout 10s, then stops the workers)");
        let answer = slow.join().unwrap().expect("the slow request is answered");
        assert_eq!(answer.status, 200);
        assert!(answer.body.starts_with("v1 from blue"), "{}", answer.body);
    });
    assert_eq!(root.wait_serve(Duration::from_secs(15)), Some(0));
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

/// The daemon refused the last SIGHUP (its token file cannot be read, which the hook's
/// own reading of the file does not see): the push's note says so and why, not that a
/// `kill -HUP` applies the changes, which would be refused again.
#[test]
fn a_push_after_a_refused_sighup_says_why_the_daemon_runs_the_old_config() {
    let root = blue_live();
    let file = root.path.join("bluegreen.toml");
    let running = std::fs::read_to_string(&file).unwrap();
    root.set("app.drain_timeout", "7s");
    let missing = root.path.join("no-such-token");
    root.set("router.token_file", missing.to_str().unwrap());
    root.signal(Signal::SIGHUP);
    root.wait_log("config reload refused, keeping the running config");
    root.commit("v2", &[("VERSION", "v2\n")]);
    let push = root.push("blue");
    push.says("blue: note: the daemon refused its last reload of bluegreen.toml and runs with what it read before (");
    push.says(&format!(
        "router.token_file: cannot read {}",
        missing.display()
    ));
    push.says("bluegreen.toml's [app], [router] changed since the daemon read it, and it runs with what it read");
    push.never_says("applies it");
    push.says("blue: live in ");
    // The token file made: the next SIGHUP takes the file, and the note says so, with no
    // word of the refusal, which is past.
    std::fs::write(&missing, "s3cret\n").unwrap();
    root.commit("v2b", &[("VERSION", "v2b\n")]);
    let push = root.push("blue");
    push.says("blue: note: bluegreen.toml's [app], [router] changed since the daemon read it, and it runs with what it read: `kill -HUP ");
    push.never_says("refused");
    push.says("blue: live in ");
    // The file put back as the daemon runs it: nothing to tell.
    std::fs::write(&file, running).unwrap();
    root.commit("v3", &[("VERSION", "v3\n")]);
    let push = root.push("blue");
    push.says("blue: live in ");
    push.never_says("note:");
}

#[test]
fn a_push_after_the_config_changed_without_a_sighup_says_the_daemon_runs_the_old_one() {
    // The new command is not what starts: the pusher is told so, and how to apply it.
    let root = blue_live();
    root.set("app.health_path", "/items");
    root.commit("v2", &[("VERSION", "v2\n")]);
    let push = root.push("blue");
    push.says("blue: note: bluegreen.toml's [app] changed since the daemon read it, and it runs with what it read: `kill -HUP ");
    push.says("` (what `systemctl reload` of its unit does) applies it");
    push.says("blue: live in ");
    // A listen address only a restart applies is told as such.
    root.set("slots.green.listen", format!("127.0.0.1:{}", free_port()));
    std::fs::write(root.path.join("token"), "s3cret\n").unwrap();
    root.set("router.token_file", "token");
    root.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the SIGHUP's config", || {
        root.control("GET", "/events")
            .body
            .contains("config reloaded")
            .then_some(())
    });
    root.commit("v3", &[("VERSION", "v3\n")]);
    let push = root.push("blue");
    push.says("blue: note: bluegreen.toml's slots.green.listen changed, which only a restart of the daemon applies");
    assert!(!push.text.contains("[app]"), "{}", push.text);
    // What the hook applies itself (linked dirs), and a line added above token_file,
    // are no change of the daemon's.
    root.set("app.linked_dirs", toml::Value::Array(vec!["data".into()]));
    let config = root.path.join("bluegreen.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("# a comment\n{text}")).unwrap();
    root.commit("v4", &[("VERSION", "v4\n")]);
    let push = root.push("blue");
    push.says("blue: live in ");
    assert!(
        !push.text.contains("[app]") && !push.text.contains("[router]"),
        "{}",
        push.text
    );
    // A token rotated in its file is read at a SIGHUP only: told until one comes.
    std::fs::write(root.path.join("token"), "n3w\n").unwrap();
    let note = root.stale_note();
    assert!(
        note.contains(&format!(
            "the token in {} changed since the daemon read it, and it runs with what it read: `kill -HUP ",
            root.path.join("token").display()
        )),
        "{note}"
    );
    assert!(!note.contains("n3w") && !note.contains("s3cret"), "{note}");
    // The token file gone: the next SIGHUP would be refused, which is said before it.
    std::fs::remove_file(root.path.join("token")).unwrap();
    let note = root.stale_note();
    assert!(
        note.starts_with("a reload would refuse bluegreen.toml as it is now (")
            && note.contains("router.token_file: cannot read ")
            && !note.contains("applies it"),
        "{note}"
    );
    std::fs::write(root.path.join("token"), "n3w\n").unwrap();
    root.signal(Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the token taken", || {
        let note = root.stale_note();
        (!note.contains("the token")).then_some(())
    });
}
