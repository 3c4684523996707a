//! `switch.migrate`: run before the flip in the target's release, bounded by its
//! timeout; a failed or stale one (either slot deployed meanwhile) switches nothing.

use std::time::Duration;

use super::*;
use crate::util::*;

#[test]
fn migration_runs_before_the_switch_and_can_abort_it() {
    let root = both_live();
    root.run(&["mirroring", "off"]);
    // A slot env named like one of bluegreen's own (`DIR`: `FROM_DIR`) does not replace
    // it: blue's next generation runs with one.
    root.set("slots.blue.env.DIR", "/nonexistent");
    // Green's env changed in the file, and reloaded, but not its live generation's:
    // that one is what the migration is told (6380).
    root.set("slots.green.env.REDIS_PORT", "7000");
    // Each slot's live port and env reach the migration, under its own prefix.
    set_migrate(&root, "sh -c 'cp -R \"$FROM_DIR/data/.\" \"$TO_DIR/data/\" && echo \"$FROM_SLOT->$TO_SLOT $FROM_REDIS_PORT $TO_REDIS_PORT $FROM_PORT $TO_PORT\" > \"$TO_DIR/data/migrated\"'", 1);
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    // `status` tells which generation runs without the reloaded env: green's, not blue's.
    let status = root.run_ok(&["status"]);
    assert!(
        status.contains(" was started before the reload that changed slots.green.env, and runs with the old until green starts a new generation (`bluegreen restart green` starts one, or its next deploy)"),
        "{status}"
    );
    assert!(!status.contains("note: blue generation"), "{status}");
    http("POST", &root.url(root.front, "/items/kept"), Some("data")).unwrap();
    assert!(!root.get(root.green, "/items").body.contains("kept"));
    let port = |slot: &str| root.status()["slots"][slot]["live"]["port"].clone();
    let (blue_port, green_port) = (port("blue"), port("green"));
    assert!(
        blue_port.is_u64() && green_port.is_u64(),
        "{blue_port} {green_port}"
    );
    let answer = root.control("POST", "/switch");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let items = root.get(root.front, "/items").body;
    assert!(items.contains("\"kept\":\"data\""), "{items}");
    assert!(
        items.contains(&format!("blue->green 6379 6380 {blue_port} {green_port}")),
        "{items}"
    );

    set_migrate(
        &root,
        "sh -c 'echo cannot reach the database >&2; exit 1'",
        2,
    );
    let answer = root.control("POST", "/switch");
    assert_eq!(answer.status, 409);
    assert!(
        answer.body.contains("the migration for blue failed"),
        "{}",
        answer.body
    );
    assert!(
        answer
            .body
            .contains("exited with status 1: cannot reach the database"),
        "{}",
        answer.body
    );
    assert_eq!(root.status()["active"], "green");
    // Mended in the file without a SIGHUP: the daemon still runs the failing one, and
    // `switch` and `status` say why before anyone wonders.
    root.set("switch.migrate", "true");
    let out = root.run(&["switch"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let note = "note: bluegreen.toml's [switch] changed since the daemon read it, and it runs with what it read";
    assert!(stderr.starts_with(note), "{stderr}");
    assert!(stderr.contains("cannot reach the database"), "{stderr}");
    assert!(root.run_ok(&["status"]).contains(note));

    // A script the release lacks: where it was looked for is part of the reason.
    set_migrate(&root, "./migrate.sh", 3);
    let answer = root.control("POST", "/switch");
    assert_eq!(answer.status, 409);
    let release = root.status()["slots"]["blue"]["live"]["release"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = root.path.join("blue/releases").join(&release);
    assert!(
        answer.body.contains(&format!(
            "cannot start `./migrate.sh` in {}: No such file or directory",
            dir.display()
        )),
        "{}",
        answer.body
    );
    assert_eq!(root.status()["active"], "green");

    // A migration that leaves a background process holding its stderr: the switch does
    // not wait for that process, and it does not outlive the migration.
    set_migrate(&root, "sh -c 'sleep 60 & echo left a helper behind >&2'", 4);
    let answer = root.control("POST", "/switch");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(root.status()["active"], "blue");
    wait_for(Duration::from_secs(5), "only the two workers left", || {
        (root.processes().len() == 2).then_some(())
    });
}

/// A daemon killed while `switch.migrate` ran: the next one stops the migration and says
/// it was one, and that its switch did not happen (before: "a worker left by a
/// previous daemon: unrecorded", and the operator did not know to look at the data).
#[test]
fn a_migration_a_killed_daemon_left_is_named_when_stopped() {
    let mut root = both_live();
    let started = root.path.join("migration-started");
    set_migrate(
        &root,
        &format!("sh -c 'touch {}; exec sleep 60'", started.display()),
        1,
    );
    let switch = std::thread::spawn({
        let url = root.url(root.control, "/switch?to=green");
        move || http("POST", &url, None)
    });
    wait_for(Duration::from_secs(10), "the migration to start", || {
        started.exists().then_some(())
    });
    root.signal(nix::sys::signal::Signal::SIGKILL);
    root.wait_serve(Duration::from_secs(5));
    assert!(switch.join().unwrap().is_err(), "the switch got no answer");
    root.serve();
    root.wait_log("stopping a switch.migrate left running by a previous daemon, which stopped during its switch: that switch did not happen (the active slot is as state.json says)");
    // The two slots' workers are told as workers, the migration as what it was.
    wait_for(Duration::from_secs(10), "both workers' lines", || {
        (root
            .log()
            .matches("stopping a worker left by a previous daemon")
            .count()
            == 2)
            .then_some(())
    });
    assert_eq!(root.status()["active"], "blue");
}

#[test]
fn a_migration_past_its_timeout_aborts_the_switch_and_is_stopped() {
    let root = both_live();
    root.set("switch.migrate_timeout", "1s");
    // It also started a helper out of its process group (`setsid`), as a tool that
    // daemonises does.
    set_migrate(
        &root,
        "sh -c 'setsid sleep 60 </dev/null >/dev/null 2>&1 & echo waiting for the lock on table items >&2; sleep 60'",
        1,
    );
    let answer = root.control("POST", "/switch");
    assert_eq!(answer.status, 409, "{}", answer.body);
    // What it said so far is quoted: what it was waiting for.
    assert!(
        answer.body.trim_end().ends_with(
            "still running after 1s (switch.migrate_timeout): waiting for the lock on table items"
        ),
        "{}",
        answer.body
    );
    assert_eq!(root.status()["active"], "blue");
    // The `sleep`s went with the aborted switch, the helper too (it would run on beside
    // the next try): only the two workers are left.
    wait_for(Duration::from_secs(5), "only the two workers left", || {
        (root.processes().len() == 2).then_some(())
    });
}

#[test]
fn a_failed_migration_that_printed_a_lot_is_told_in_one_short_line() {
    let root = both_live();
    // 20 MB of stderr without a newline (a progress bar, a dump), then the reason, in
    // colour, after a `\r`.
    set_migrate(
        &root,
        "sh -c 'head -c 20000000 /dev/zero | tr \"\\0\" x >&2; printf \"\\n50%%\\r\\033[31mcannot reach the database\\033[0m\\n\" >&2; exit 1'",
        1,
    );
    let out = root.run(&["switch"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.starts_with("not switched: the migration for green failed: "),
        "{:.300}",
        text
    );
    // Its last lines, each cut short, control characters as spaces.
    assert!(
        text.trim_end()
            .ends_with("... | 50%  [31mcannot reach the database [0m"),
        "{:.300}",
        text
    );
    assert_eq!(text.trim_end().lines().count(), 1, "{:.300}", text);
    assert!(text.len() < 2048, "{} bytes: {:.300}", text.len(), text);
    assert_eq!(root.status()["active"], "blue");
}

/// A migration written as a multi-line TOML string (a shell script) is quoted on one
/// line when it fails, in the control API's answer, the event and the log, as every
/// reason is: its line breaks split them into several.
#[test]
fn a_failed_migration_written_on_several_lines_is_told_on_one() {
    let root = both_live();
    set_migrate(
        &root,
        "sh -c '\n  echo cannot reach the database >&2\n  exit 1\n'",
        1,
    );
    let answer = root.control("POST", "/switch");
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert_eq!(answer.body.trim_end().lines().count(), 1, "{}", answer.body);
    assert!(
        answer.body.contains(
            "`sh -c '\\n  echo cannot reach the database >&2\\n  exit 1\\n'` exited with status 1"
        ),
        "{}",
        answer.body
    );
    let events: serde_json::Value =
        serde_json::from_str(&root.control("GET", "/events").body).unwrap();
    let refused = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.contains("the migration for"))
        .expect("the refusal's event");
    assert!(!refused.contains('\n'), "{refused}");
    root.wait_log("not switched (api): the migration for");
    assert!(
        !root.log().contains("\n  echo cannot reach"),
        "the log's line is broken: {}",
        root.log()
    );
    assert_eq!(root.status()["active"], "blue");
}

/// A migration takes a while: status says a switch is under way and what it does, and
/// the events say the migration began; once done, nothing is under way.
#[test]
fn a_switch_under_way_is_shown_by_status_while_its_migration_runs() {
    let root = both_live();
    set_migrate(&root, "sleep 3", 1);
    let switch = std::thread::spawn({
        let url = root.url(root.control, "/switch?to=green");
        move || http("POST", &url, None)
    });
    let underway = wait_for(Duration::from_secs(5), "the migration under way", || {
        let status = root.status();
        (status["switching"]["step"] == "running switch.migrate")
            .then(|| status["switching"].clone())
    });
    assert_eq!(underway["to"], "green", "{underway}");
    assert_eq!(underway["cause"], "api", "{underway}");
    let text = root.run_ok(&["status"]);
    let line = text
        .lines()
        .find(|l| l.starts_with("switching: to green (api) for "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.ends_with("s: running switch.migrate"), "{line}");
    let events = root.control("GET", "/events").body;
    assert!(
        events.contains("switch to green (api): running switch.migrate (up to 1m)"),
        "{events}"
    );
    assert_eq!(switch.join().unwrap().unwrap().status, 200);
    let status = root.status();
    assert!(status["switching"].is_null(), "{status}");
    assert_eq!(status["active"], "green");
}

#[test]
fn a_target_that_fails_during_the_migration_is_not_switched_to() {
    let root = blue_live();
    set_migrate(&root, "sleep 5", 1);
    // Green answers 500 to everything once it has been up 3 s: healthy at the gate,
    // failing once the migration is over.
    root.commit("fails soon", &[("VERSION", "v2\n"), ("FAIL_AFTER", "3")]);
    root.push("green").says("green: live in ");
    let answer = root.control("POST", "/switch?to=green");
    refused_to_green(
        &root,
        &answer,
        "after the migration, green is not healthy: GET / answered 500",
    );
}

#[test]
fn a_target_deployed_during_the_migration_is_not_switched_to() {
    let root = both_live();
    // The migration notes the release it runs in, then waits for the test's word (or
    // its timeout, 60 s). No `$i` of its own: bluegreen fills `$NAME`s.
    let (ran, go) = (root.path.join("migrated-in"), root.path.join("go"));
    set_migrate(&root, &held_migrate("basename \"$TO_DIR\"", &ran, &go), 1);
    let ran_in = root.current("green").unwrap();
    let control = root.url(root.control, "/switch?to=green");
    let switch = std::thread::spawn(move || http("POST", &control, None));
    wait_for(Duration::from_secs(10), "the migration to run", || {
        std::fs::read_to_string(&ran).ok().filter(|s| !s.is_empty())
    });
    // A teammate's push to green lands while the migration runs.
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("green").says("green: live in ");
    let now = root.current("green").unwrap();
    std::fs::write(&go, "").unwrap();
    let answer = switch.join().unwrap().unwrap();
    refused_to_green(
        &root,
        &answer,
        &format!(
            "green went live with release {now} while switch.migrate ran for release {ran_in}: switch again to migrate for {now}"
        ),
    );
}

/// A deploy to the active slot while `switch.migrate` runs drains and stops the
/// generation the migration reads from (`FROM_PORT`): what it carried over may be cut
/// short, and the switch went through all the same.
#[test]
fn a_source_deployed_during_the_migration_is_not_switched_from() {
    let root = both_live();
    let (port, go) = (root.path.join("from-port"), root.path.join("go"));
    set_migrate(&root, &held_migrate("echo $FROM_PORT", &port, &go), 1);
    let was = root.current("blue").unwrap();
    let control = root.url(root.control, "/switch?to=green");
    let switch = std::thread::spawn(move || http("POST", &control, None));
    let read_from = wait_for(Duration::from_secs(10), "the migration to run", || {
        std::fs::read_to_string(&port)
            .ok()
            .filter(|s| s.ends_with('\n'))
    });
    // A teammate's push to blue, the active slot, lands while the migration runs.
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    let now = root.current("blue").unwrap();
    std::fs::write(&go, "").unwrap();
    let answer = switch.join().unwrap().unwrap();
    assert_eq!(answer.status, 409, "{answer:?}");
    assert!(
        answer.body.contains(&format!(
            "blue went live with release {now} while switch.migrate ran, reading from release {was}'s generation on port {} (FROM_PORT), which was stopped: nothing switched; switch again",
            read_from.trim()
        )),
        "{}",
        answer.body
    );
    assert_eq!(root.status()["active"], "blue");
    assert!(root.get(root.front, "/").body.contains("v2 from blue"));
}

/// A crash restart of the active slot on the same release while the migration runs
/// does not refuse the switch, `--force` or not: an active that crashed more often
/// than a migration lasts could never be switched away from.
#[test]
fn an_active_restarted_after_a_crash_during_the_migration_is_switched_from() {
    let root = both_live();
    let (started, go) = (root.path.join("migrating"), root.path.join("go"));
    set_migrate(&root, &held_migrate("echo started", &started, &go), 1);
    let generation = root.status()["slots"]["blue"]["live"]["generation"].clone();
    let control = root.url(root.control, "/switch?to=green");
    let switch = std::thread::spawn(move || http("POST", &control, None));
    wait_for(Duration::from_secs(10), "the migration to run", || {
        started.exists().then_some(())
    });
    let pid = nix::unistd::Pid::from_raw(root.live_pid("blue"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for(Duration::from_secs(10), "blue restarted", || {
        let live = root.status()["slots"]["blue"]["live"]["generation"].clone();
        (!live.is_null() && live != generation).then_some(())
    });
    std::fs::write(&go, "").unwrap();
    let answer = switch.join().unwrap().unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(root.status()["active"], "green");
}

#[test]
fn a_forced_switch_to_a_slot_with_nowhere_to_migrate_says_so() {
    let root = blue_live();
    root.commit("crashing", &[("VERSION", "v2\n"), ("CRASH", "")]);
    root.push("green").says("green: not live: ");
    set_migrate(&root, "true", 1);
    let out = root.run(&["switch", "green", "--force"]);
    assert_eq!(out.status.code(), Some(1));
    // Not 'migration failed': the migration never ran.
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "not switched: green has no live generation for switch.migrate to run in: wait until it is live (`bluegreen status`); --force skips the health gate, not the migration"
    );
    assert_eq!(root.status()["active"], "blue");
}

/// A switch after one whose migration was given up (past its timeout, ignoring SIGTERM)
/// waits for that one to be stopped before its own begins, and says so: its status said
/// `running switch.migrate` all along, and its `migrate_ms` counted the wait.
#[test]
fn a_switch_waits_for_a_given_up_migration_to_stop_and_says_so() {
    let mut root = Root::new();
    root.set("switch.migrate_timeout", "1s");
    root.set("app.stop_timeout", "4s");
    root.set("switch.migrate", "sh -c 'trap \"\" TERM; sleep 60'");
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    let answer = root.control("POST", "/switch?to=green");
    assert_eq!(answer.status, 409, "{}", answer.body);
    set_migrate(&root, "true", 1);
    let switch = std::thread::spawn({
        let url = root.url(root.control, "/switch?to=green");
        move || http("POST", &url, None)
    });
    wait_for(
        Duration::from_secs(5),
        "the wait for the last migration",
        || {
            (root.status()["switching"]["step"]
            == "waiting for the last switch.migrate, given up, to be stopped (up to 4s twice, app.stop_timeout)")
            .then_some(())
        },
    );
    let answer = switch.join().unwrap().unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert!(json["migrate_ms"].as_u64().unwrap() < 1000, "{json}");
    assert_eq!(root.status()["active"], "green");
}
