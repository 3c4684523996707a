//! The heartbeat's failover when it cannot simply move traffic: a crashed active slot,
//! a migration on the way, a state file it cannot write, no healthy standby.

use std::time::Duration;

use super::*;
use crate::util::*;

#[test]
fn a_crashed_active_slot_whose_restarts_hang_is_left_for_the_standby() {
    let mut root = quick_heartbeat();
    root.set("app.ready_timeout", "20s");
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    // From its next start on, blue's worker takes a minute to answer anything: each
    // restart hangs until the ready timeout.
    std::fs::write(root.path.join("blue/current/SLOW_MS"), "60000").unwrap();
    let pid = nix::unistd::Pid::from_raw(root.live_pid("blue"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    // Two failed checks 300 ms apart, not the 20 s of a restart attempt.
    wait_for_failover(&root, "green", Duration::from_secs(8));
    assert!(root.get(root.front, "/").body.contains("v1 from green"));
}

#[test]
fn a_failover_from_a_crashed_slot_migrates_from_its_release_folder() {
    let mut root = quick_heartbeat();
    root.set("app.ready_timeout", "20s");
    // Copies blue's data to green, as the migration of a file-backed app would, and
    // says where from.
    root.set(
        "switch.migrate",
        "sh -c 'test -n \"$FROM_DIR\" && cp -R \"$FROM_DIR/data/.\" \"$TO_DIR/data/\" && echo \"$FROM_DIR\" > \"$TO_DIR/data/from\"'",
    );
    root.serve();
    root.run_ok(&["mirroring", "off"]);
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    let post = http("POST", &root.url(root.front, "/items/kept"), Some("data")).unwrap();
    assert_eq!(post.status, 201);
    // A push that never went live: blue's `current`, with no data, but not what it ran.
    let ran = root.status()["slots"]["blue"]["live"]["release"]
        .as_str()
        .unwrap()
        .to_string();
    root.commit("crashing", &[("VERSION", "v2\n"), ("CRASH", "")]);
    root.push("blue").says("blue keeps serving generation 1");
    // Blue crashes, and its restarts hang until the ready timeout: no live generation
    // while the heartbeat fails it over.
    let ran = root.path.join("blue/releases").join(ran);
    std::fs::write(ran.join("SLOW_MS"), "60000").unwrap();
    let pid = nix::unistd::Pid::from_raw(root.live_pid("blue"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for_failover(&root, "green", Duration::from_secs(8));
    // FROM_DIR was the release folder blue last ran, where its data is: not empty, and
    // not its `current`, which never ran.
    let items = root.get(root.front, "/items").body;
    assert!(items.contains("\"kept\":\"data\""), "{items}");
    let from = format!("\"from\":\"{}\\n\"", ran.display());
    assert!(items.contains(&from), "{items}");
}

/// The heartbeat moves traffic only off an active slot that still fails: checked again
/// after `switch.migrate`, not only before it. An active that recovered while the
/// migration ran lost its traffic all the same, and automatic switching went off.
#[test]
fn an_active_slot_that_recovers_while_the_migration_runs_keeps_its_traffic() {
    let mut root = quick_heartbeat();
    let (started, go) = (root.path.join("migrating"), root.path.join("go"));
    root.set(
        "switch.migrate",
        held_migrate("echo started", &started, &go),
    );
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    // Blue stops answering: the heartbeat fails it and starts the failover's migration.
    let blue = nix::unistd::Pid::from_raw(root.live_pid("blue"));
    nix::sys::signal::kill(blue, nix::sys::signal::Signal::SIGSTOP).unwrap();
    wait_for(Duration::from_secs(15), "the failover's migration", || {
        started.exists().then_some(())
    });
    // Blue recovers while it runs.
    nix::sys::signal::kill(blue, nix::sys::signal::Signal::SIGCONT).unwrap();
    root.wait_body(root.blue, "v1 from blue");
    std::fs::write(&go, "").unwrap();
    wait_for(Duration::from_secs(15), "the failover refused", || {
        root.control("GET", "/events")
            .body
            .contains("heartbeat: blue passes its health check again after switch.migrate ran (")
            .then_some(())
    });
    let status = root.status();
    assert_eq!(status["active"], "blue");
    assert_eq!(status["heartbeat"]["armed"], true, "{status}");
    assert!(root.get(root.front, "/").body.contains("v1 from blue"));
    // Not a refused switch: none was needed.
    let metrics = root.control("GET", "/metrics").body;
    assert!(
        !metrics.contains("bluegreen_switches_refused_total{cause=\"heartbeat\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_heartbeat_moves_traffic_even_when_state_json_cannot_be_written() {
    let root = blue_failing_soon_green_healthy_held();
    // As a full disk would: no state write can succeed (a folder where the file goes).
    let state = root.path.join("state.json");
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    assert_eq!(root.status()["active"], "blue");
    start_heartbeat(&root);

    wait_for_failover(&root, "green", Duration::from_secs(12));
    assert!(root.get(root.front, "/").body.contains("v2 from green"));
    root.wait_log("green is active, but ");
    // An operator's switch that cannot be recorded is refused, with the reason.
    let out = root.run(&["switch", "blue", "--force"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.starts_with("not switched: cannot record the switch: "),
        "{text}"
    );
    assert_eq!(root.status()["active"], "green");
}

/// A standby with no release is no failing slot: the heartbeat says it cannot take the
/// active's traffic, and why, and neither its health nor its failed checks count it.
#[test]
fn a_failing_active_with_no_standby_release_stays_and_says_why() {
    let mut root = held_heartbeat();
    root.serve();
    root.commit("fails soon", &[("VERSION", "v1\n"), ("FAIL_AFTER", "1")]);
    root.push("blue").says("blue: live in ");
    wait_for(Duration::from_secs(15), "blue to fail", || {
        (root.get(root.blue, "/").status == 500).then_some(())
    });
    start_heartbeat(&root);
    wait_for(Duration::from_secs(15), "the heartbeat's event", || {
        root.control("GET", "/events")
            .body
            .contains("heartbeat: blue failing (GET / answered 500), and green cannot take its traffic (green has no release yet")
            .then_some(())
    });
    let events = root.control("GET", "/events").body;
    assert!(!events.contains("green failing"), "{events}");
    assert_eq!(heartbeat_failures(&root, "green"), Some(0));
    assert_eq!(root.status()["active"], "blue");
}

#[test]
fn the_heartbeat_stays_put_when_both_slots_fail() {
    let mut root = held_heartbeat();
    root.serve();
    root.commit("fails soon", &[("VERSION", "v1\n"), ("FAIL_AFTER", "3")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    // Checked only once both fail: however long green's push took, blue never fails
    // while green is still healthy.
    for port in [root.blue, root.green] {
        wait_for(Duration::from_secs(15), "both slots to fail", || {
            (root.get(port, "/").status == 500).then_some(())
        });
    }
    start_heartbeat(&root);
    wait_for(Duration::from_secs(15), "the both-failing event", || {
        root.control("GET", "/events")
            .body
            .contains("heartbeat: both slots failing")
            .then_some(())
    });
    let status = root.status();
    assert_eq!(status["active"], "blue");
    // /status tells how long blue has been failing, and that the heartbeat may still switch.
    let failures = &status["heartbeat"]["consecutive_failures"];
    assert!(failures.as_u64().is_some_and(|n| n >= 2), "{status}");
    assert_eq!(status["heartbeat"]["armed"], true, "{status}");
    // Each check of the streak is a switch refused, as when the gate refuses the standby.
    let metrics = root.control("GET", "/metrics").body;
    let refused = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bluegreen_switches_refused_total{cause=\"heartbeat\"} "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(refused.is_some_and(|n| n >= 1), "{metrics}");
    // Each interval's failed check counts once, as the streak counts it: not again at
    // the re-check both slots get before each try at a failover.
    wait_for(
        Duration::from_secs(15),
        "four failed checks of blue",
        || {
            let streak = root.status()["heartbeat"]["consecutive_failures"].as_u64();
            streak.filter(|n| *n >= 4)
        },
    );
    // A check's failure is counted as it fails, the streak's a moment later.
    let streak = || {
        root.status()["heartbeat"]["consecutive_failures"]
            .as_u64()
            .unwrap()
    };
    let before = streak();
    let counted = heartbeat_failures(&root, "blue").unwrap();
    let after = streak();
    assert!(
        before <= counted && counted <= after + 1,
        "failures counted {counted}, streak {before}..{after}"
    );
}

#[test]
fn a_failover_the_migration_refuses_is_one_event_per_failing_streak() {
    let mut root = Root::new();
    root.set("heartbeat.interval", "200ms");
    root.set("heartbeat.failures", 2);
    root.set(
        "switch.migrate",
        "sh -c 'echo cannot reach the database >&2; exit 1'",
    );
    root.serve();
    root.commit("fails soon", &[("VERSION", "v1\n"), ("FAIL_AFTER", "3")]);
    root.push("blue").says("blue: live in ");
    root.remove("FAIL_AFTER");
    root.commit("healthy", &[("VERSION", "v2\n")]);
    root.push("green").says("green: live in ");
    // Every check after the second failure tries the switch again (the migration may
    // work next time); a person reads about it once, not every 200 ms.
    wait_for(Duration::from_secs(20), "ten failed checks of blue", || {
        heartbeat_failures(&root, "blue").filter(|n| *n >= 10)
    });
    let events = root.control("GET", "/events").body;
    assert_eq!(
        events
            .matches("heartbeat: switch to green failed: the migration for green failed: ")
            .count(),
        1,
        "{events}"
    );
    assert_eq!(root.status()["active"], "blue");
    // The migration fixed: traffic moves, and the event counts the whole streak (five
    // checks at least: each but the first two was counted twice above, checked again
    // before the switch), not `heartbeat.failures`.
    root.set("switch.migrate", "true");
    root.reload_config();
    wait_for_failover(&root, "green", Duration::from_secs(15));
    let events = root.control("GET", "/events").body;
    let streak = events
        .split("heartbeat: blue failed ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u32>().ok());
    assert!(streak.is_some_and(|n| n >= 5), "{streak:?}: {events}");
    // The migration each check tried is told once for the streak.
    assert_eq!(
        events.matches("running switch.migrate").count(),
        1,
        "{events}"
    );
}
