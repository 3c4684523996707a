//! The heartbeat: traffic moves off a failing active slot to a healthy standby, once,
//! and never back on its own.

use std::time::Duration;

use super::*;
use crate::util::*;

#[test]
fn the_heartbeat_moves_traffic_off_a_failing_slot_and_never_back() {
    let mut root = blue_failing_soon_green_healthy();
    // FAIL_AFTER 2s, then 2 failures × 300ms, plus a margin. (The events below say that
    // traffic left blue.)
    wait_for_failover(&root, "green", Duration::from_secs(8));
    assert!(root.get(root.front, "/").body.contains("v2 from green"));
    // heartbeat.failures = 2: not on the first failure. (Once blue is the standby its
    // failures are no longer counted: the count stops where the switch happened.)
    let failures = heartbeat_failures(&root, "blue");
    assert!(
        failures >= Some(2),
        "switched after {failures:?} failures of blue"
    );
    let events = root.control("GET", "/events").body;
    assert!(
        events.contains("blue failing: GET / answered 500"),
        "{events}"
    );
    assert!(events.contains("traffic moved to green"), "{events}");

    // Blue heals (a new release), then green starts failing: no switch back on its own.
    root.commit("blue healed", &[("VERSION", "v3\n")]);
    root.push("blue").says("blue: live in ");
    root.commit("green fails", &[("VERSION", "v4\n"), ("FAIL_AFTER", "3")]);
    root.push("green").says("green: live in ");
    wait_for(
        Duration::from_secs(15),
        "green's heartbeat failures",
        || heartbeat_failures(&root, "green").filter(|n| *n >= 4),
    );
    assert_eq!(root.status()["active"], "green", "no flapping back to blue");
    assert_eq!(root.status()["heartbeat"]["armed"], false);
    let text = root.run_ok(&["status"]);
    assert!(
        text.lines().next().unwrap().ends_with(
            "failover: off (after the heartbeat's switch; `bluegreen switch green` turns it on)"
        ),
        "{text}"
    );

    // A restarted daemon keeps it off: the last switch was the heartbeat's.
    root.stop_serve();
    root.serve();
    assert_eq!(root.status()["heartbeat"]["armed"], false);
    // An operator asking for green, already active, turns it on again; green fails
    // again (3 s after its restart) and traffic goes to the healthy blue.
    let answer = root.control("POST", "/switch?to=green");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains("\"changed\":false"), "{}", answer.body);
    wait_for_failover(&root, "blue", Duration::from_secs(15));
    let events = root.control("GET", "/events").body;
    assert!(
        events.contains("green stays active (api); automatic switching is on again"),
        "{events}"
    );
}

#[test]
fn a_check_of_a_generation_a_deploy_stops_is_no_failure_of_its_slot() {
    // SLOW_MS makes every check of blue take 1 s, so one is always under way when a
    // deploy's drain stops the old generation (a check is no request in flight, and the
    // drain does not wait for it): the check fails, but says nothing of blue, whose new
    // generation is live. One failure would move traffic to green.
    let mut root = held_heartbeat();
    root.set("heartbeat.timeout", "5s");
    root.set("heartbeat.failures", 1);
    root.serve();
    root.commit("slow v1", &[("VERSION", "v1\n"), ("SLOW_MS", "1000")]);
    root.push("blue").says("blue: live in ");
    root.remove("SLOW_MS");
    root.commit("healthy", &[("VERSION", "v2\n")]);
    root.push("green").says("green: live in ");
    root.set("heartbeat.interval", "100ms");
    root.reload_config();
    for version in ["v3", "v4"] {
        root.commit(
            "slow",
            &[("VERSION", &format!("{version}\n")), ("SLOW_MS", "1000")],
        );
        root.push("blue").says("blue: live in ");
        // Answered a second after the drain stopped the old generation: long after a
        // switch its failed check would have made.
        let answer = root.get(root.front, "/").body;
        assert!(
            answer.starts_with(&format!("{version} from blue")),
            "{answer}"
        );
    }
    let events = root.control("GET", "/events").body;
    assert!(!events.contains("blue failing"), "{events}");
    assert_eq!(root.status()["active"], "blue", "{events}");
    let metrics = root.control("GET", "/metrics").body;
    assert!(
        metrics.contains("bluegreen_heartbeat_failures_total{slot=\"blue\"} 0\n"),
        "{metrics}"
    );
}

#[test]
fn asking_again_and_again_for_the_active_slot_does_not_hold_a_failover_off() {
    // A script making sure blue is active, more often than the heartbeat's failures
    // add up: each ask changes nothing, so the failing streak stands.
    let root = blue_failing_soon_green_healthy();
    wait_for(
        Duration::from_secs(10),
        "the heartbeat to switch to green",
        || {
            let asked = root.control("POST", "/switch?to=blue");
            assert!(
                asked.body.contains("\"changed\":false") || asked.status == 409,
                "{asked:?}"
            );
            (root.status()["active"] == "green").then_some(())
        },
    );
    let events = root.control("GET", "/events").body;
    assert!(events.contains("traffic moved to green"), "{events}");
}

#[test]
fn automatic_switching_turned_on_again_stays_on_after_a_restart() {
    let mut root = blue_failing_soon_green_healthy();
    wait_for_failover(&root, "green", Duration::from_secs(8));
    assert_eq!(root.status()["heartbeat"]["armed"], false);
    // A bare `bluegreen switch` would go back to blue, which still fails: refused, it
    // turns nothing on. `bluegreen status` names the way that does.
    let out = root.run(&["switch"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.starts_with("not switched: blue is not healthy"),
        "{out:?}"
    );
    assert!(
        said.ends_with(
            " (to switch all the same: `bluegreen switch blue --force`, or `force=1`)\n"
        ),
        "{said}"
    );
    assert_eq!(root.status()["heartbeat"]["armed"], false);
    let text = root.run_ok(&["status"]);
    assert!(
        text.lines().next().unwrap().ends_with(
            "failover: off (after the heartbeat's switch; `bluegreen switch green` turns it on)"
        ),
        "{text}"
    );
    // The operator agrees with the heartbeat, as `bluegreen status` tells them to.
    let out = root.run_ok(&["switch", "green"]);
    assert_eq!(
        out.trim(),
        "green is already active; automatic switching is on again"
    );
    assert_eq!(root.status()["heartbeat"]["armed"], true);
    // Asked again, it is on already: nothing more to say.
    let out = root.run_ok(&["switch", "green"]);
    assert_eq!(out.trim(), "green is already active");

    // A restart (an upgrade, a reboot) keeps their word.
    root.stop_serve();
    root.serve();
    let text = root.run_ok(&["status"]);
    assert!(
        text.lines().next().unwrap().ends_with("failover: on"),
        "{text}"
    );
}

#[test]
fn a_reloaded_heartbeat_interval_takes_effect_at_once() {
    let mut root = Root::new();
    root.set("heartbeat.interval", "1h");
    root.serve();
    root.commit("fails soon", &[("VERSION", "v1\n"), ("FAIL_AFTER", "3")]);
    root.push("blue").says("blue: live in ");
    root.set("heartbeat.interval", "200ms");
    root.signal(nix::sys::signal::Signal::SIGHUP);
    // Not an hour: the wait restarts with the new interval.
    wait_for(Duration::from_secs(15), "blue's heartbeat failures", || {
        heartbeat_failures(&root, "blue").filter(|n| *n >= 1)
    });
}

#[test]
fn status_tells_a_failing_standby() {
    let root = green_failing_standby(&[]);
    assert_eq!(root.status()["slots"]["blue"]["health"], "healthy");
    assert_eq!(
        root.status()["active"],
        "blue",
        "a standby's failure moves nothing"
    );
}

/// A health check slower than `heartbeat.timeout` is a failure: an active slot that
/// answers, but too late, is left for a healthy standby.
#[test]
fn a_heartbeat_check_past_its_timeout_is_a_failure() {
    let mut root = quick_heartbeat();
    root.set("heartbeat.timeout", "5s");
    root.serve();
    root.commit("slow", &[("VERSION", "v1\n"), ("SLOW_MS", "1500")]);
    root.push("blue").says("blue: live in ");
    root.remove("SLOW_MS");
    root.commit("quick", &[("VERSION", "v2\n")]);
    root.push("green").says("green: live in ");
    assert_eq!(root.status()["active"], "blue");
    root.set("heartbeat.timeout", "500ms");
    root.reload_config();
    wait_for_failover(&root, "green", Duration::from_secs(15));
    assert!(root.get(root.front, "/").body.starts_with("v2 from green"));
}

/// Both slots hung by what they share (SIGSTOP stands in for a database that stops
/// answering both), and back together while the heartbeat checks the standby before a
/// switch: traffic stays on the active slot, which no longer fails, and automatic
/// switching stays on. The switch went by the active's failed check of seconds before:
/// it moved traffic off a healthy slot (running `switch.migrate`) and turned failover off.
#[test]
fn the_heartbeat_does_not_move_traffic_off_an_active_slot_that_came_back() {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let mut root = held_heartbeat();
    root.set("heartbeat.timeout", "3s");
    root.set("heartbeat.failures", 1);
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    let groups = ["blue", "green"].map(|slot| Pid::from_raw(root.live_pid(slot)));
    for group in groups {
        killpg(group, Signal::SIGSTOP).unwrap();
    }
    start_heartbeat(&root);
    // Blue's check failed (after 3 s), a streak long enough: the standby is checked now,
    // for up to 3 s more.
    wait_for(Duration::from_secs(15), "blue's failed check", || {
        (root.status()["heartbeat"]["consecutive_failures"] == 1).then_some(())
    });
    for group in groups {
        killpg(group, Signal::SIGCONT).unwrap();
    }
    wait_for(Duration::from_secs(15), "blue's streak to end", || {
        (root.status()["heartbeat"]["consecutive_failures"] == 0).then_some(())
    });
    let status = root.status();
    assert_eq!(status["active"], "blue", "{status}");
    assert_eq!(status["heartbeat"]["armed"], true, "{status}");
    assert_eq!(status["slots"]["blue"]["health"], "healthy", "{status}");
}

/// A quick heartbeat; blue active on v1, which answers 500 two seconds after its start;
/// green live on a healthy v2. The heartbeat checks from once green is live, however
/// long the pushes took.
fn blue_failing_soon_green_healthy() -> Root {
    let root = blue_failing_soon_green_healthy_held();
    start_heartbeat(&root);
    root
}

/// The heartbeat checks the standby too, and `/status` says it fails: its failed checks
/// are counted in `bluegreen_heartbeat_failures_total` as the active's are ("failed
/// heartbeat checks, by slot"); only the active's were.
#[test]
fn a_failing_standbys_heartbeat_checks_are_counted() {
    let root = green_failing_standby(&[]);
    wait_for(
        Duration::from_secs(15),
        "green's failed checks in /metrics",
        || heartbeat_failures(&root, "green").filter(|n| *n >= 1),
    );
    assert_eq!(root.status()["active"], "blue");
}

/// A check answered with a 4xx (a path the app does not have, a login it asks for) is
/// the app answering: healthy, as README's `heartbeat.path` says (a failure is no
/// connection, a timeout, or a 5xx). Green, failing with 500s, shows the checks ran.
#[test]
fn a_heartbeat_check_answered_4xx_is_no_failure() {
    let root = green_failing_standby(&[("heartbeat.path", "/missing".into())]);
    assert_eq!(root.get(root.blue, "/missing").status, 404);
    wait_for(
        Duration::from_secs(15),
        "green's failed checks in /metrics",
        || heartbeat_failures(&root, "green").filter(|n| *n >= 3),
    );
    assert_eq!(heartbeat_failures(&root, "blue"), Some(0));
    let status = root.status();
    assert_eq!(status["slots"]["blue"]["health"], "healthy", "{status}");
    assert_eq!(status["heartbeat"]["consecutive_failures"], 0, "{status}");
    assert_eq!(status["active"], "blue", "{status}");
}
