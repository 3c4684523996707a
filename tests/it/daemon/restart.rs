//! A restarted daemon: what it starts first (the last live release, or `current`), and
//! what it says of releases and state changed by hand while it was down.

use std::fs;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::*;

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
