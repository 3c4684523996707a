//! A deploy: a new generation goes live with zero downtime, the old one drains; pushes
//! and rollbacks that come while one starts.

use std::time::Duration;

use super::*;
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
/// What the 502 of a request cut off at the end of its drain says.
const CUT: &str = "blue generation 1 was stopped with this request in flight, at the end of its drain (app.drain_timeout 1s): ";

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
    // Cut, and told why: a 502 naming the drain's timeout.
    assert!(
        matches!(&answer, Ok(a) if a.status == 502 && a.body.contains(CUT)),
        "not a 502 naming the drain: {answer:?}"
    );
    let said = "blue: generation 1's drain ended at app.drain_timeout (1s) with 1 request in flight, left to its stop (SIGTERM now, SIGKILL after app.stop_timeout 2s)";
    root.wait_log(said);
    assert!(root.control("GET", "/events").body.contains(said));
}

/// The same at the daemon's stop: the request cut by the worker's stop is answered 502,
/// and the drain's event counts it. The proxy threads cut their connections at the
/// drain's end, before the workers' SIGTERM: the client got a closed connection with no
/// answer (what a WebSocket's close frame or an event stream's end, sent by a worker at
/// its SIGTERM, never got through either), and the drain found nothing in flight to tell.
#[test]
fn at_the_daemons_stop_a_request_past_the_drain_is_answered_502_and_counted() {
    let mut root = slow_v1_live(&[("app.drain_timeout", "1s")], "8000");
    let url = root.url(root.blue, "/");
    let slow = std::thread::spawn(move || http("GET", &url, None));
    wait_for_one_in_flight(&root);
    root.stop_serve();
    let answer = slow.join().unwrap();
    assert!(
        matches!(&answer, Ok(a) if a.status == 502 && a.body.contains(CUT)),
        "not a 502 naming the drain: {answer:?}"
    );
    let said = "blue: generation 1's drain ended at app.drain_timeout (1s) with 1 request in flight, left to its stop (SIGTERM now, SIGKILL after app.stop_timeout 2s)";
    assert!(root.log().contains(said), "{}", root.log());
}

#[test]
fn pushes_during_a_start_wait_their_turn_and_the_newest_supersedes_one_waiting() {
    // v2 does not listen while the gate is there; v3 and v4 come while it starts.
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    std::fs::write(&gate, "").unwrap();
    let command = format!(
        r#"sh -c 'while [ -e VERSION2 ] && [ -e {gate} ]; do sleep 0.05; done; exec "$0" sample-app' {BIN}"#,
        gate = gate.display()
    );
    let root = blue_live_with(&[
        ("app.command", command.into()),
        ("app.ready_timeout", "60s".into()),
    ]);
    let v2 = root.commit("gated v2", &[("VERSION", "v2\n"), ("VERSION2", "")]);
    root.remove("VERSION2");
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
        let v2_release = flipped_to(&v2);
        wait_for(Duration::from_secs(20), "v2's generation starting", || {
            (root.status()["slots"]["blue"]["starting"]["release"] == v2_release.as_str())
                .then_some(())
        });
        let second = s.spawn(|| push(&v3));
        v3_release = flipped_to(&v3);
        let third = s.spawn(|| push(&v4));
        flipped_to(&v4);
        // v4 replaced v3 as the start waiting behind v2's (v4's hook asked, or the file
        // watch did first): v3's push has its verdict while v2 still starts.
        wait_for(Duration::from_secs(20), "v3's verdict", || {
            second.is_finished().then_some(())
        });
        std::fs::remove_file(&gate).unwrap();
        third.join().unwrap().says("blue: live in ");
        let v4_release = root.current("blue").unwrap();
        // v3 waited behind v2's start, and v4 replaced it there (its hook's request, or
        // the file watch's start of it, whichever came first): it never started.
        let second = second.join().unwrap();
        second.says("blue: not live: ");
        second.says(&format!("superseded by {v4_release}"));
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
    std::fs::write(unmarked_copy(&root, &good, bad).join("CRASH"), "").unwrap();
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
    assert!(told.body.contains("exited with status 3"), "{}", told.body);
    assert_eq!(starts(), 1, "the deploy's reload started it again");
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
    // Away and back: started again.
    root.run_ok(&["rollback", "blue", "--to", &good]);
    let out = root.run(&["rollback", "blue", "--to", bad]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("exited with status 3"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(starts(), 2);
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

/// A deploy's own ask that comes after `current` moved on (a hook slower than the file
/// watch, on a loaded host), while the file watch's start of its release is under way,
/// is told what became of that start, as one that asked in time: it did not go live
/// when `current` went back to the live release, and it went live when a later release
/// only followed it.
#[test]
fn a_deploys_ask_after_current_moved_on_is_told_what_became_of_its_start() {
    // A release whose GATE file names a gate that exists does not listen until it goes.
    let dir = tempfile::tempdir().unwrap();
    let command = format!(
        r#"sh -c 'while [ -e GATE ] && [ -e "$(cat GATE)" ]; do sleep 0.05; done; exec "$0" sample-app' {BIN}"#
    );
    let root = blue_live_with(&[
        ("app.command", command.into()),
        ("app.ready_timeout", "60s".into()),
    ]);
    let v1 = root.current("blue").unwrap();
    // A release as the hook makes one (ids sort by age), held by its own gate.
    let made = |id: &str| {
        let release = unmarked_copy(&root, &v1, id);
        let version = id.rsplit('-').next().unwrap();
        std::fs::write(release.join("VERSION"), format!("{version}\n")).unwrap();
        let gate = dir.path().join(version);
        std::fs::write(&gate, "").unwrap();
        std::fs::write(release.join("GATE"), gate.to_str().unwrap()).unwrap();
        gate
    };
    let starting = |id: &str| {
        wait_for(Duration::from_secs(20), "the file watch's start", || {
            (root.status()["slots"]["blue"]["starting"]["release"] == id).then_some(())
        });
    };
    let ask = |id: &str| root.control("POST", &format!("/slots/blue/reload?release={id}&by=push"));
    // The late ask of `id`'s deploy is told that it did not go live, `current` having
    // gone back to v1.
    let told_went_back = |id: &str| {
        let late = ask(id);
        assert_eq!(late.status, 409, "{}", late.body);
        let back = format!(
            "release {id} did not go live: blue went back to {v1}, its live release, meanwhile"
        );
        assert!(late.body.contains(&back), "{}", late.body);
    };

    // Back: v2 starts, `current` goes back to v1, and v2's deploy asks (before the file
    // watch has seen the flip back, or after).
    let v2 = "29991231T000000.000Z-v2";
    made(v2);
    root.point_current("blue", &format!("releases/{v2}"));
    starting(v2);
    root.point_current("blue", &format!("releases/{v1}"));
    told_went_back(v2);
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));

    // Back before it started: `current` names v5 and goes back to v1 before the file
    // watch has started v5 (its debounce takes both flips as one), and v5's deploy asks.
    let v5 = "29991231T000000.003Z-v5";
    made(v5);
    root.point_current("blue", &format!("releases/{v5}"));
    root.point_current("blue", &format!("releases/{v1}"));
    told_went_back(v5);

    // On: v3 starts, `current` moves on to v4, and v3's deploy asks: v3 goes live once
    // ready, and v4 after it.
    let (v3, v4) = ("29991231T000000.001Z-v3", "29991231T000000.002Z-v4");
    let (v3_gate, v4_gate) = (made(v3), made(v4));
    root.point_current("blue", &format!("releases/{v3}"));
    starting(v3);
    root.point_current("blue", &format!("releases/{v4}"));
    std::thread::scope(|s| {
        let late = s.spawn(|| ask(v3));
        std::fs::remove_file(&v3_gate).unwrap();
        let late = late.join().unwrap();
        assert_eq!(late.status, 200, "{}", late.body);
        assert!(
            late.body.contains(&format!("\"release\":\"{v3}\","))
                && late.body.contains("\"live\":true"),
            "{}",
            late.body
        );
    });
    std::fs::remove_file(&v4_gate).unwrap();
    root.wait_body(root.blue, "v4 from blue");

    // Going to v2 again (a rollback to it) is a new start, with a verdict of its own.
    std::fs::remove_file(dir.path().join("v2")).unwrap();
    let rolled = root.run_ok(&["rollback", "blue", "--to", v2]);
    assert!(rolled.contains("live in "), "{rolled}");
    assert!(root.get(root.blue, "/").body.starts_with("v2 from blue"));
}

/// A copy of blue's release `from` as release `to`, as a deploy makes one before its flip:
/// without the marks of having been current or live. Returns its folder.
fn unmarked_copy(root: &Root, from: &str, to: &str) -> std::path::PathBuf {
    let releases = root.path.join("blue/releases");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(releases.join(from))
        .arg(releases.join(to))
        .status()
        .unwrap();
    assert!(copied.success());
    for mark in [".bluegreen-went-live", ".bluegreen-was-current"] {
        let _ = std::fs::remove_file(releases.join(to).join(mark));
    }
    releases.join(to)
}
