//! `app.overlap = false`: the old generation stops before the new one starts.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::*;
use crate::util::*;

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
