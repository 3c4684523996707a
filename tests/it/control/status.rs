//! `status` (and `/status`, `/metrics`, `/events`): what each slot runs and why, for a
//! person and for scripts.

use std::fs;
use std::time::Duration;

use crate::util::*;

#[test]
fn status_says_how_to_deploy_a_slot_never_pushed() {
    let mut root = Root::new();
    root.serve();
    let text = root.run_ok(&["status"]);
    for slot in ["blue", "green"] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(slot))
            .unwrap_or_else(|| panic!("no {slot} line in {text}"));
        assert!(
            line.ends_with(&format!(
                "no release yet (`git push {slot} HEAD:main` deploys one)"
            )),
            "{text}"
        );
    }
    assert!(
        !text.lines().any(|l| l.trim_end() == "recent events:"),
        "a heading with nothing under it: {text}"
    );
}

/// A slot never deployed whose branch holds a commit pushed while its hook could not
/// run: its line does not say to push, which would deploy nothing (`Everything
/// up-to-date`), but points at the note that says what does.
#[test]
fn a_slot_never_deployed_with_a_commit_pushed_points_at_the_note() {
    let mut root = Root::new();
    root.serve();
    fs::remove_file(root.path.join("green.git/hooks/post-receive")).unwrap();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("green");
    let text = root.run_ok(&["status"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("note: green.git's main is at ")),
        "{text}"
    );
    let line = |slot: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(slot))
            .unwrap_or_else(|| panic!("no {slot} line in {text}"))
            .to_string()
    };
    assert!(
        line("green").ends_with("no release yet (see the note above)"),
        "{text}"
    );
    assert!(
        line("blue").ends_with("(`git push blue HEAD:main` deploys one)"),
        "{text}"
    );
}

/// A commit pushed while the hook could not run (its binary gone after an upgrade: git
/// runs no hook it cannot find, and says nothing) is one `git push` of it deploys no
/// more: `status` names it and what deploys it.
#[test]
fn status_names_a_pushed_commit_no_release_has() {
    let root = blue_live();
    let hook = root.path.join("blue.git/hooks/post-receive");
    let linked = fs::read_link(&hook).unwrap();
    fs::remove_file(&hook).unwrap();
    let sha = root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue");
    let text = root.run_ok(&["status"]);
    let note = format!(
        "note: blue.git's main is at {}, which no release of blue has (its push's hook did not run, or its build failed: the push said which): a push of a new commit deploys it (`git commit --allow-empty -m redeploy && git push blue HEAD:main`)",
        &sha[..7]
    );
    assert!(text.lines().any(|l| l == note), "{text}");
    // As the note says, with the hook back.
    std::os::unix::fs::symlink(linked, &hook).unwrap();
    root.git(&["commit", "-q", "--allow-empty", "-m", "redeploy"]);
    root.push("blue").says("blue: live in ");
    let text = root.run_ok(&["status"]);
    assert!(!text.contains("which no release of blue has"), "{text}");
    // A rollback leaves the branch ahead of `current`, on a commit a release has: no note.
    root.run_ok(&["rollback", "blue"]);
    assert!(!root.run_ok(&["status"]).contains("no release of"));
}

/// A commit made before the release that went live, pushed after it, whose build
/// failed (commit a and b, push a, then b): the branch holds b, which no release has.
#[test]
fn status_names_a_commit_made_before_the_live_release_and_pushed_after_it() {
    let mut root = Root::new();
    root.set("build.command", "sh -c 'test ! -e FAIL_BUILD'");
    root.serve();
    let a = root.commit("a", &[("VERSION", "a\n")]);
    let b = root.commit("b", &[("VERSION", "b\n"), ("FAIL_BUILD", "")]);
    // a's release is made in a later second than b's commit.
    let committed = std::time::SystemTime::now();
    wait_for(Duration::from_secs(3), "the next second", || {
        let secs =
            |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        (secs(std::time::SystemTime::now()) > secs(committed)).then_some(())
    });
    root.push_ref("blue", &format!("+{a}:refs/heads/main"))
        .says("blue: live in ");
    root.push("blue").says("not deployed: build failed");
    let text = root.run_ok(&["status"]);
    assert!(
        text.contains(&format!(
            "note: blue.git's main is at {}, which no release of blue has",
            &b[..7]
        )),
        "{text}"
    );
}

/// The live release's folder removed by hand: the generation runs on, healthy, but the
/// next start finds nothing. status says so, not that the push's hook did not run.
#[test]
fn status_names_a_live_release_removed_by_hand() {
    let root = blue_live();
    let live = root.current("blue").unwrap();
    fs::remove_dir_all(root.path.join("blue/releases").join(&live)).unwrap();
    let text = root.run_ok(&["status"]);
    assert!(
        text.contains(&format!(
            "note: blue's live release {live} is gone from {} (removed by hand?): its generation runs on",
            root.path.join("blue/releases").display()
        )),
        "{text}"
    );
    assert!(!text.contains("hook did not run"), "{text}");
}

/// A generation getting ready is shown beside the live one, which serves meanwhile.
#[test]
fn status_shows_a_generation_getting_ready() {
    let root = blue_live_with(&[("heartbeat.timeout", "10s".into())]);
    // Its health check takes 5 s: that long getting ready.
    root.commit("slow", &[("VERSION", "v2\n"), ("SLOW_MS", "5000")]);
    std::thread::scope(|s| {
        let push = s.spawn(|| root.push("blue"));
        let starting = wait_for(Duration::from_secs(10), "a generation starting", || {
            let status = root.status();
            let starting = &status["slots"]["blue"]["starting"];
            (!starting.is_null()).then(|| starting.clone())
        });
        let release = root.current("blue").unwrap();
        assert_eq!(starting["release"], release.as_str(), "{starting}");
        assert_eq!(starting["generation"], 2, "{starting}");
        let text = root.run_ok(&["status"]);
        assert!(
            text.contains(&format!(
                "        starting: generation 2  release {release}  for "
            )),
            "{text}"
        );
        push.join().unwrap().says("blue: live in ");
    });
    assert!(root.status()["slots"]["blue"]["starting"].is_null());
}

#[test]
fn status_without_a_daemon_says_how_to_start_one() {
    let root = Root::new();
    let out = root.run(&["status"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("daemon not running: nothing answers on 127.0.0.1:"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("`bluegreen serve --root {}`", root.path.display())),
        "{stderr}"
    );
    // A look at whether a daemon holds the root, which makes no lock file of its own.
    let lock = root.path.join("run/serve.lock");
    assert!(!lock.exists(), "{} was made", lock.display());
}

#[test]
fn status_prints_slots_for_a_person_and_json_for_scripts() {
    let root = both_live();
    let text = root.run_ok(&["status"]);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("active: blue   front: 127.0.0.1:")
            && first.ends_with("   mirroring: on   failover: on"),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("  green")), "{text}");
    let out = root.run(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["active"], "blue");
    // Which daemon answers: the version `--version` prints, and since when.
    let version = root.run_ok(&["--version"]);
    assert_eq!(
        version.trim(),
        format!("bluegreen {}", json["version"].as_str().unwrap())
    );
    let daemon = format!(
        "daemon: {} since {}   last switch: none",
        version.trim(),
        json["started"].as_str().unwrap()
    );
    assert_eq!(text.lines().nth(1), Some(daemon.as_str()), "{text}");
    // The same version in the daemon's first line and in /metrics.
    root.wait_log(&format!(
        "{} serving {}",
        version.trim(),
        root.path.display()
    ));
    let metrics = root.control("GET", "/metrics").body;
    let info = format!(
        "bluegreen_build_info{{version=\"{}\"}} 1",
        json["version"].as_str().unwrap()
    );
    assert!(metrics.contains(&info), "{metrics}");
    assert_eq!(json["slots"]["green"]["health"], "healthy");
    // What the person reads is what the daemon says, each value under its own name.
    let live = &json["slots"]["blue"]["live"];
    let blue = text.lines().find(|l| l.starts_with("* blue")).unwrap();
    let expected = format!(
        "healthy  release {}  commit {}  generation {}  pid {}  port {}  up ",
        live["release"].as_str().unwrap(),
        live["commit"].as_str().unwrap(),
        live["generation"],
        live["pid"],
        live["port"],
    );
    assert!(blue.contains(&expected), "{expected:?} not in {blue:?}");
    assert_eq!(live["release"], json["slots"]["blue"]["current"]);
    let counters = json["mirroring"]["counters"].as_object().unwrap();
    let mirror: Vec<String> = counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let mirror = format!("mirror: {}", mirror.join(", "));
    assert!(text.lines().any(|l| l == mirror), "no {mirror:?} in {text}");
    let events = json["events"].as_array().unwrap();
    let last = events.last().expect("the pushes were recorded");
    let event = format!(
        "  {} {}",
        last["at"].as_str().unwrap(),
        last["message"].as_str().unwrap()
    );
    assert!(text.lines().any(|l| l == event), "no {event:?} in {text}");
}

#[test]
fn metrics_say_which_slot_is_active_live_and_healthy_and_a_refused_config() {
    let root = both_live();
    let metrics = || root.control("GET", "/metrics").body;
    let text = metrics();
    for line in [
        "bluegreen_active{slot=\"blue\"} 1",
        "bluegreen_active{slot=\"green\"} 0",
        "bluegreen_live_generation{slot=\"blue\"} 1",
        "bluegreen_live_generation{slot=\"green\"} 2",
        "bluegreen_config_last_reload_successful 1",
        "bluegreen_mirror_queued 0",
    ] {
        assert!(text.contains(&format!("{line}\n")), "{line}\n{text}");
    }
    assert!(
        !text.contains("bluegreen_last_switch_timestamp_seconds"),
        "{text}"
    );
    assert_eq!(root.control("POST", "/switch").status, 200);
    let text = metrics();
    assert!(
        text.contains("bluegreen_active{slot=\"green\"} 1\n"),
        "{text}"
    );
    let at = root.status()["last_switch"]["at"]
        .as_str()
        .unwrap()
        .to_string();
    let at = humantime::parse_rfc3339(&at).unwrap();
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let line = format!("bluegreen_last_switch_timestamp_seconds {secs}\n");
    assert!(text.contains(&line), "{line}{text}");
    // A config SIGHUP refused stays visible until one is taken.
    let file = root.path.join("bluegreen.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{good}\nbogus = 1\n")).unwrap();
    root.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the refusal", || {
        metrics()
            .contains("bluegreen_config_last_reload_successful 0\n")
            .then_some(())
    });
    std::fs::write(&file, good).unwrap();
    root.reload_config();
    assert!(
        metrics().contains("bluegreen_config_last_reload_successful 1\n"),
        "{}",
        metrics()
    );
}

#[test]
fn a_push_whose_build_fails_is_in_the_daemons_log_events_and_metrics() {
    let root = blue_live();
    let command = "sh -c 'echo compiling; exit 3'";
    root.set("build.command", command);
    let sha = root.commit("bad", &[("VERSION", "v2\n")]);
    root.push("blue").says("build failed: ");
    let line = format!(
        "blue: push of {} not deployed: build failed: `{command}` exited with status 3",
        &sha[..7]
    );
    assert!(
        root.control("GET", "/events").body.contains(&line),
        "{line}"
    );
    root.wait_log(&line);
    let metrics = root.control("GET", "/metrics").body;
    for counted in [
        "bluegreen_pushes_not_deployed_total{slot=\"blue\"} 1\n",
        "bluegreen_pushes_not_deployed_total{slot=\"green\"} 0\n",
    ] {
        assert!(metrics.contains(counted), "{counted}{metrics}");
    }
    // Nothing else changed: blue serves v1.
    root.wait_body(root.blue, "v1 from blue");

    // Told by anyone else, it is bad input unless it names a slot, a commit and a reason.
    for (method, path, status) in [
        (
            "POST",
            "/slots/purple/not-deployed?commit=abc1234&reason=x",
            404,
        ),
        ("POST", "/slots/blue/not-deployed?reason=x", 400),
        (
            "POST",
            "/slots/blue/not-deployed?commit=abc1234&reason=a%0Ab",
            400,
        ),
        ("GET", "/slots/blue/not-deployed", 405),
    ] {
        let answer = root.control(method, path);
        assert_eq!(answer.status, status, "{method} {path}: {}", answer.body);
        assert_eq!(answer.body.trim().lines().count(), 1, "{}", answer.body);
    }
    let metrics = root.control("GET", "/metrics").body;
    assert!(metrics.contains("bluegreen_pushes_not_deployed_total{slot=\"blue\"} 1\n"));
}

/// Something other than the daemon on `control.listen` (a web server answering 200 with a
/// page, no Content-Type): `status --json` refuses it on one line, as `status` does,
/// rather than passing the page to a script as the daemon's JSON with exit 0.
#[test]
fn status_json_refuses_an_answer_that_is_not_json() {
    use std::io::{Read, Write};
    let root = Root::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    root.set("control.listen", addr.to_string());
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = [0u8; 4096];
            let _ = conn.read(&mut head);
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\n<html>hi</html>",
            );
        }
    });
    for args in [&["status", "--json"][..], &["status"]] {
        let out = root.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(&format!("error: control API at {addr}: what answers there is not a bluegreen daemon (it answered GET /status with 200, Content-Type none): "))
                && stderr.trim().lines().count() == 1,
            "{args:?}: {stderr}"
        );
    }
    server.join().unwrap();
}

/// Each start in `/events` says what asked for it: a rollback, a restart, a hand flip
/// and a promote all read as a push's did (`starting generation 5 for release ...`).
#[test]
fn each_start_in_the_events_says_what_asked_for_it() {
    let mut root = blue_live();
    let says = |root: &Root, release: &str, cause: &str| {
        let line = format!("for release {release} ({cause})");
        wait_for(Duration::from_secs(10), &line, || {
            root.control("GET", "/events")
                .body
                .contains(&line)
                .then_some(())
        });
    };
    let v1 = root.current("blue").unwrap();
    says(&root, &v1, "made current by a push");
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    let v2 = root.current("blue").unwrap();
    says(&root, &v2, "made current by a push");
    root.run_ok(&["rollback", "blue"]);
    says(&root, &v1, "made current by a rollback");
    root.run_ok(&["restart", "blue"]);
    says(&root, &v1, "a restart asked through the control API");
    root.point_current("blue", &format!("releases/{v2}"));
    says(&root, &v2, "the file watch saw current move to it");
    root.wait_body(root.blue, "v2 from blue");
    root.run_ok(&["promote", "blue", "green"]);
    says(
        &root,
        &root.current("green").unwrap(),
        "made current by a promote",
    );
    root.stop_serve();
    root.serve();
    says(&root, &v2, "as the daemon starts");
}
