//! The control API and the commands that use it: `status` for a person and for scripts,
//! a forced switch, and bad requests refused with a reason.

use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::util::*;

#[test]
fn the_control_api_refuses_bad_requests_with_a_reason_and_changes_nothing() {
    let root = both_live();
    let mirroring = root.status()["mirroring"]["enabled"].clone();
    let refused = [
        (
            "POST",
            "/slots/reload",
            404,
            "no such endpoint: POST /slots/reload",
        ),
        ("POST", "/slots/purple/reload", 404, "unknown slot `purple`"),
        (
            "GET",
            "/slots/blue/reload",
            405,
            "GET is not allowed on /slots/blue/reload",
        ),
        (
            "POST",
            "/switch?to=green&force=maybe",
            400,
            "force=`maybe`: use force=1",
        ),
        (
            "POST",
            "/switch?to=green&to=blue",
            400,
            "`to` is given twice",
        ),
        (
            "POST",
            "/mirroring?enabled=maybe",
            400,
            "enabled=`maybe`: use enabled=1 (or true, yes) or enabled=0 (false, no)",
        ),
        (
            "PUT",
            "/mirroring?enabled=true",
            405,
            "PUT is not allowed on /mirroring",
        ),
        (
            "GET",
            "/status?x=1",
            400,
            "GET /status takes no parameters (got ?x=1)",
        ),
        (
            "GET",
            "/mirroring?enabled=false",
            400,
            "GET /mirroring takes no parameters (got ?enabled=false)",
        ),
        (
            "POST",
            "/slots/blue/reload?force=1",
            400,
            "POST /slots/blue/reload takes only ?release=<id> (got ?force=1)",
        ),
        (
            "POST",
            "/mirroring?enabled=1&foo=2",
            400,
            "unknown parameter `foo` (enabled)",
        ),
        (
            "POST",
            "/mirroring?enabled=1&enabled=0",
            400,
            "`enabled` is given twice",
        ),
        (
            "POST",
            "/mirroring?",
            400,
            "use ?enabled=true or ?enabled=false",
        ),
        // Decoded, a `%0A` would split the reason that quotes it over two lines.
        (
            "POST",
            "/switch?to=blue%0Agreen",
            400,
            "`to` may not hold a control character (such as %0A)",
        ),
        (
            "POST",
            "/mirroring?enabled=%0D%0Atrue",
            400,
            "`enabled` may not hold a control character (such as %0A)",
        ),
    ];
    for (method, path, status, reason) in refused {
        let answer = root.control(method, path);
        assert_eq!(answer.status, status, "{method} {path}: {answer:?}");
        assert!(
            answer.body.starts_with(reason),
            "{method} {path}: {answer:?}"
        );
        assert_eq!(answer.body.lines().count(), 1, "{answer:?}");
    }
    // A 405 says which methods the endpoint takes (RFC 9110 §15.5.6).
    for (request, allow) in [
        ("GET /slots/blue/reload", "POST"),
        ("PUT /mirroring", "GET, HEAD, POST"),
        ("POST /status", "GET, HEAD"),
        ("HEAD /switch", "POST"),
    ] {
        let answer = raw(
            root.control,
            &format!("{request} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        );
        assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains(&format!("\r\nallow: {}\r\n", allow.to_ascii_lowercase())),
            "{request}: {answer}"
        );
    }
    // HEAD is GET without the body: its status and length, as `curl -I` shows them.
    let get = raw(
        root.control,
        "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    let head = raw(
        root.control,
        "HEAD /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD answered a body: {head}");
    let length = |answer: &str| {
        (answer.to_ascii_lowercase().lines())
            .find_map(|l| l.strip_prefix("content-length: ").map(str::to_string))
    };
    assert!(length(&head).is_some(), "{head}");
    assert!(get.contains("\"slots\""), "{get}");
    // Two Host headers: which one counts would be a guess.
    let answer = raw(
        root.control,
        "POST /switch?to=green HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains("Host, Origin or Sec-Fetch-Site is sent more than once"),
        "{answer}"
    );
    // The host an absolute-form target names is the request's (RFC 9112 §3.2.2).
    let answer = raw(
        root.control,
        "POST http://evil.example/switch?to=green HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains("the request's target names `evil.example`, not a loopback address"),
        "{answer}"
    );
    // A Host that is not ASCII is no loopback address (nor taken for absent).
    let answer = raw(
        root.control,
        "POST /switch?to=green HTTP/1.1\r\nHost: localhost\u{e9}\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // A body framing that is not clear: refused before anything is done (hyper refuses a
    // length that is not a number, or two, with an empty 400).
    for (framing, reason) in [
        ("Content-Length: abc\r\n", ""),
        ("Content-Length: -5\r\n", ""),
        ("Content-Length: 1\r\nContent-Length: 2\r\n", ""),
        (
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "this endpoint takes no request body",
        ),
    ] {
        let answer = raw(
            root.control,
            &format!(
                "POST /switch?to=green HTTP/1.1\r\nHost: 127.0.0.1\r\n{framing}Connection: close\r\n\r\n0\r\n\r\n"
            ),
        );
        assert!(answer.starts_with("HTTP/1.1 400"), "{framing:?}: {answer}");
        assert!(answer.contains(reason), "{framing:?}: {answer}");
    }
    assert_eq!(root.status()["active"], "blue");
    assert_eq!(root.status()["mirroring"]["enabled"], mirroring);

    // `enabled` takes the yes/no forms `force` takes.
    for (value, on) in [("0", false), ("yes", true)] {
        let answer = root.control("POST", &format!("/mirroring?enabled={value}"));
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(root.status()["mirroring"]["enabled"], on);
    }
}

#[test]
fn the_control_api_answers_what_is_not_plain_http1_and_stays_up() {
    let root = blue_live();
    // A length far beyond memory, with no body: answered (tiny_http allocated it all
    // once the request was done, and aborted the daemon).
    let answer = raw(
        root.control,
        "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999999\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    assert_eq!(root.control("GET", "/status").status, 200);
    // Other protocols' request lines get an answer and a closed connection, within
    // `raw`'s 10 s (tiny_http held the connection, and a thread, forever).
    for line in [
        "GET /status HTTP/2.0",
        "GET /status HTTP/3.0",
        "GET /status",
    ] {
        let answer = raw(root.control, &format!("{line}\r\nHost: 127.0.0.1\r\n\r\n"));
        assert!(answer.starts_with("HTTP/1.1 400"), "{line}: {answer:?}");
    }
    assert_eq!(root.control("GET", "/status").status, 200);
    assert_eq!(root.status()["active"], "blue");
}

/// Connections held open and idle (a monitor that keeps them alive, or leaks them)
/// filled the control API's 64 places, and `bluegreen status` (and `switch`, and a push's
/// verdict) waited in the backlog until they timed out, 30 s later. A new caller takes
/// the place of an idle one.
#[test]
fn idle_connections_to_the_control_api_give_way_to_new_callers() {
    use std::io::{Read, Write};
    let root = blue_live();
    let mut held = Vec::new();
    // Between two requests, and in the middle of a head.
    for i in 0..80 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", root.control)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        if i % 4 == 0 {
            stream.write_all(b"GET /status HTTP/1.1\r\nHo").unwrap();
        } else {
            stream
                .write_all(b"GET /mirroring HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .unwrap();
            let mut head = [0; 12];
            // The first 64 are answered; the rest wait their turn in the backlog.
            if held.len() < 60 {
                stream.read_exact(&mut head).unwrap();
                assert_eq!(&head, b"HTTP/1.1 200");
            }
        }
        held.push(stream);
    }
    // Within the CLI's own 10 s (`no answer within 10s`, exit 1, before).
    let status = root.run_ok(&["status"]);
    assert!(status.contains("active: blue"), "{status}");
}

/// More callers at once than the control API holds open: each is answered. One that just
/// connected, or whose request is under way, keeps its place; only one idle for a second
/// gives way.
#[test]
fn a_burst_of_callers_past_the_control_api_cap_is_answered_whole() {
    use std::io::{Read, Write};
    let root = blue_live();
    let answers: Vec<String> = std::thread::scope(|s| {
        let callers: Vec<_> = (0..120)
            .map(|_| {
                s.spawn(|| {
                    let mut stream =
                        std::net::TcpStream::connect(("127.0.0.1", root.control)).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    stream
                        .write_all(
                            b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                        )
                        .unwrap();
                    let mut answer = String::new();
                    let _ = stream.read_to_string(&mut answer);
                    answer
                })
            })
            .collect();
        callers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for answer in answers {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    }
}

/// Monitors polling the control API on connections of their own, each every fraction of
/// a second, held its 64 places for good: only one idle for a second gave way, and
/// `bluegreen status` (and a push's verdict) got `no answer within 10s`, as did the
/// monitors past the 64th. At the cap, one open for a second gives way with its next
/// answer (`Connection: close`).
#[test]
fn pollers_holding_every_control_api_place_give_way_to_new_callers() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let root = blue_live();
    let url = root.url(root.control, "/metrics");
    let (stop, answered) = (AtomicBool::new(false), AtomicUsize::new(0));
    std::thread::scope(|s| {
        let pollers: Vec<_> = (0..70)
            .map(|_| {
                s.spawn(|| {
                    let agent = agent();
                    let mut failed = Vec::new();
                    let mut first = true;
                    while !stop.load(Relaxed) {
                        match agent.get(&url).call() {
                            Ok(_) if first => {
                                first = false;
                                answered.fetch_add(1, Relaxed);
                            }
                            Ok(_) => {}
                            Err(e) => failed.push(e.to_string()),
                        }
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    (first, failed)
                })
            })
            .collect();
        wait_for(Duration::from_secs(30), "every place taken", || {
            (answered.load(Relaxed) >= 64).then_some(())
        });
        let status = root.run(&["status"]);
        stop.store(true, Relaxed);
        let pollers: Vec<_> = pollers.into_iter().map(|p| p.join().unwrap()).collect();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        for (never_answered, failed) in pollers {
            assert!(!never_answered && failed.is_empty(), "{failed:?}");
        }
    });
}

#[test]
fn a_request_body_is_refused_not_ignored() {
    // `curl -d to=blue .../switch`: the parameter is in the body, which no endpoint
    // reads; ignored, it switched to the standby, green.
    let root = both_live();
    for port in [root.control, root.front] {
        let answer = http("POST", &root.url(port, "/switch"), Some("to=blue")).unwrap();
        assert_eq!(answer.status, 400, ":{port}: {answer:?}");
        assert_eq!(
            answer.body,
            "this endpoint takes no request body: give parameters in the query (e.g. POST /switch?to=green)\n"
        );
    }
    let answer = http(
        "POST",
        &root.url(root.control, "/mirroring"),
        Some("enabled=false"),
    )
    .unwrap();
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(root.status()["active"], "blue");
    assert_eq!(root.status()["mirroring"]["enabled"], true);
    // An empty body is no body.
    let answer = http(
        "POST",
        &root.url(root.control, "/switch?to=green"),
        Some(""),
    )
    .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[test]
fn query_parameters_are_percent_decoded() {
    let root = both_live();
    let answer = root.control("POST", "/switch?to=gr%65en&f%6Frce=%31");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(root.status()["active"], "green");
    let answer = root.control("POST", "/mirroring?enabled=%66alse");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(root.status()["mirroring"]["enabled"], false);
    // On the front's /switch too; and a decoded name counts once.
    let answer = root.get(root.front, "/switch?to=%62lue");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(root.status()["active"], "blue");
    let answer = root.control("POST", "/switch?to=green&t%6F=blue");
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.body, "`to` is given twice\n");
    assert_eq!(root.status()["active"], "blue");
}

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

/// A config broken by an edit (a typo in `[app]`) does not keep the operator from the
/// daemon, which runs what it read before: `status`, `switch` and `mirroring` reach it
/// by the file's `control.listen`, and say the file does not load.
#[test]
fn control_commands_reach_the_daemon_through_a_config_broken_elsewhere() {
    let root = both_live();
    root.set("app.ready_timeout", "soon");
    let note = format!("note: {}:", root.path.join("bluegreen.toml").display());
    let tail = "app.ready_timeout: invalid duration `soon`";
    let said = |args: &[&str]| {
        let out = root.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(&note) && stderr.contains(tail),
            "{stderr}"
        );
        assert!(
            stderr.trim_end().ends_with("(the daemon runs the config it read before; its next reload or restart refuses this file: fix it)"),
            "{stderr}"
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(said(&["status"]).contains("blue"));
    assert_eq!(said(&["switch", "green"]).trim(), "switched blue -> green");
    assert_eq!(root.status()["active"], "green");
    said(&["mirroring", "off"]);
    assert_eq!(root.status()["mirroring"]["enabled"], false);
    // Where the daemon listens is not guessed from a `[control]` that does not load: the
    // file's error, and nothing asked.
    root.set("app.ready_timeout", "1s");
    root.set("control.listen", "everywhere");
    let refused = root.run_err(&["switch", "blue"]);
    assert!(
        refused.starts_with("error: ") && refused.contains(": control.listen: "),
        "{refused}"
    );
    assert_eq!(root.status()["active"], "green");
}

#[test]
fn a_forced_switch_skips_the_gate_and_an_empty_switch_path_turns_the_front_route_off() {
    let root = green_failing_standby(&[("router.switch_path", "".into())]);
    let refused = root.run(&["switch", "green"]);
    assert!(!refused.status.success());
    assert_eq!(root.status()["active"], "blue");
    let forced = root.run(&["switch", "green", "--force"]);
    assert!(forced.status.success(), "{forced:?}");
    assert_eq!(root.status()["active"], "green");
    // No /switch on the front: the path goes to the app like any other.
    let answer = root.get(root.front, "/switch");
    assert_eq!(answer.status, 500, "{answer:?}");
    assert_eq!(root.status()["active"], "green");
}

/// A root moved (or renamed, or restored from a backup) while its daemon runs: the
/// daemon serves the old path, and a command on the new one was told "another root: give
/// each root its own control.listen", the wrong fix. It is told what happened, and the
/// daemon logs it.
#[test]
fn a_root_moved_under_its_daemon_is_told_so() {
    let root = blue_live();
    let moved = root.path.parent().unwrap().join("moved");
    fs::rename(&root.path, &moved).unwrap();
    let out = Command::new(BIN)
        .args(["status", "--root"])
        .arg(&moved)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = format!(
        "this daemon serves {}, which is gone from there since it started (the root moved, renamed or restored?): stop this daemon (pid {}) and start `bluegreen serve` on the root where it is now",
        root.path.display(),
        root.serve_pid()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: control API at 127.0.0.1:{}: {said}", root.control)
    );
    root.wait_log(&said);
    // A push into it is not said to start by the daemon's file watch (its serve lock
    // moved with it, but the daemon reads the old path), and the daemon, woken by the
    // flip, says why nothing starts.
    root.commit("v2", &[("VERSION", "v2\n")]);
    let out = git_command(&root.work)
        .arg("push")
        .arg(moved.join("blue.git"))
        .arg("+HEAD:refs/heads/main")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&format!(
            "blue: no daemon told (control API at 127.0.0.1:{}: {said})",
            root.control
        )),
        "{text}"
    );
    root.wait_log(&format!(
        "blue: the root {} is gone from there since the daemon started (moved, renamed or restored?): nothing new starts",
        root.path.display()
    ));
    assert!(root.get(root.blue, "/").body.contains("v1 from blue"));
    fs::rename(&moved, &root.path).unwrap();
}

#[test]
fn a_daemon_does_not_take_orders_for_another_root() {
    // Two roots given one control.listen: `other`'s commands and pushes reach `root`'s
    // daemon, which must refuse them rather than act on its own slots.
    let root = both_live();
    let other = Root::new();
    other.set("control.listen", format!("127.0.0.1:{}", root.control));
    let refusal = format!(
        "control API at 127.0.0.1:{}: this daemon serves {}, another root: give each root its own control.listen",
        root.control,
        root.path.display()
    );
    let out = other.run(&["status"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: {refusal}")
    );
    let out = other.run(&["switch", "green"]);
    assert!(!out.status.success());
    assert_eq!(root.status()["active"], "blue");

    let generation = root.status()["slots"]["blue"]["live"]["generation"].clone();
    other.commit("v1", &[("VERSION", "v1\n")]);
    other.push("blue").says(&refusal);
    assert_eq!(
        root.status()["slots"]["blue"]["live"]["generation"],
        generation
    );
    // Its own callers (and callers that name no root, like curl) are served.
    assert_eq!(root.control("GET", "/status").status, 200);
    root.run_ok(&["status"]);
}

/// How the commands and the hook name what answers on `control.listen` at `port` when it
/// is no bluegreen daemon, for `what` it did.
fn stranger_on(port: u16, what: &str) -> String {
    format!(
        "control API at 127.0.0.1:{port}: what answers there is not a bluegreen daemon ({what}): give this root its own control.listen in bluegreen.toml (`ss -ltnp 'sport = :{port}'` says what listens there)"
    )
}

/// Something other than a bluegreen daemon on `control.listen` (a web server left on the
/// port) answers with a page of HTML: the hook's verdict and the commands' errors say on
/// one line that it is not a daemon, and how to find it. Each of the page's lines used to
/// become one of theirs, and then the page was quoted as the daemon's refusal (`not
/// switched: <html> ...`).
#[test]
fn a_stranger_on_control_listen_is_named_on_one_line() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let stranger = std::thread::spawn({
        let done = done.clone();
        move || {
            let page = "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1></center>\r\n</body>\r\n</html>\r\n";
            while !done.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let mut head = [0; 4096];
                let _ = stream.read(&mut head);
                let _ = write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
            }
        }
    });
    let root = Root::new();
    root.set("control.listen", format!("127.0.0.1:{port}"));
    let stranger_at = |asked: &str| {
        stranger_on(
            port,
            &format!("it answered {asked} with 404, Content-Type text/html"),
        )
    };

    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue")
        .told_no_daemon("blue", &stranger_at("POST /slots/blue/reload"));
    let out = root.run(&["switch", "green"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        // Its look at `/status` before the switch names the stranger: no switch is sent.
        format!("error: {}", stranger_at("GET /status"))
    );
    let out = root.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: {}", stranger_at("GET /status"))
    );

    done.store(true, Ordering::Relaxed);
    stranger.join().unwrap();
}

/// `control.listen` set to another root's front (copied from its config): the hook's
/// call reached that root's app through its router, and its `404 no route` in plain
/// text was quoted as this daemon's refusal (`not live: 404 no route ...`), where the
/// release is current and starts when this root's daemon does.
#[test]
fn another_roots_app_on_control_listen_is_named_a_stranger() {
    let other = both_live();
    let root = Root::new();
    root.set("control.listen", format!("127.0.0.1:{}", other.front));
    root.commit("v1", &[("VERSION", "v1\n")]);
    let front = other.front;
    root.push("blue").told_no_daemon(
        "blue",
        &stranger_on(
            front,
            "it answered POST /slots/blue/reload with 404, Content-Type text/plain; charset=utf-8",
        ),
    );
    let out = root.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "what answers there is not a bluegreen daemon (it answered GET /status with 404"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nor does `switch` reach the other root's front `/switch`, which switched that
    // root's traffic for this root's command.
    let out = root.run(&["switch", "green"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("what answers there is not a bluegreen daemon"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(other.status()["active"], "blue");
    let asked = raw(
        front,
        &format!(
            "POST /switch?to=green HTTP/1.1\r\nHost: 127.0.0.1\r\nBluegreen-Root: {}\r\nConnection: close\r\n\r\n",
            root.path.display()
        ),
    );
    assert!(asked.starts_with("HTTP/1.1 421 "), "{asked}");
    assert!(
        asked.contains(&format!(
            "this daemon serves {}, another root",
            other.path.display()
        )),
        "{asked}"
    );
    assert_eq!(other.status()["active"], "blue");
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
        "blue: push of {} not deployed: build failed: `{command}` exited with exit status: 3",
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

/// Switches go one at a time and only 8 wait for their turn: past that, a switch is
/// refused at once with the reason, and changes nothing. Waiting without a bound, a
/// script firing switches at a slow gate or migration held the control API's
/// connections, and `bluegreen status` waited behind them.
#[test]
fn past_eight_waiting_switches_one_more_is_refused_at_once() {
    let flags = tempfile::tempdir().unwrap();
    let (started, go) = (flags.path().join("started"), flags.path().join("go"));
    let mut root = Root::new();
    root.set(
        "switch.migrate",
        held_migrate("echo started", &started, &go),
    );
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    std::thread::scope(|s| {
        let first = s.spawn(|| root.control("POST", "/switch?to=green"));
        wait_for(Duration::from_secs(10), "the migration to run", || {
            started.exists().then_some(())
        });
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..12 {
            let (tx, root) = (tx.clone(), &root);
            s.spawn(move || tx.send(root.control("POST", "/switch?to=green")));
        }
        // The four past the bound answer while the migration still runs.
        let refused: Vec<Answer> = (0..4)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(10))
                    .expect("a switch past the bound answered while the first ran")
            })
            .collect();
        for answer in &refused {
            assert_eq!(answer.status, 409, "{}", answer.body);
            assert_eq!(
                answer.body.trim(),
                "8 switches already wait for the one under way (`bluegreen status` shows it): nothing changed; switch again once they are done"
            );
        }
        assert_eq!(root.status()["active"], "blue");
        fs::write(&go, "").unwrap();
        let first = first.join().unwrap();
        assert_eq!(first.status, 200, "{}", first.body);
        for _ in 0..8 {
            let waited = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(waited.status, 200, "{}", waited.body);
        }
    });
    assert_eq!(root.status()["active"], "green");
}

/// Loopback is every user of the host: another app's user (README "Several apps on one
/// host") switched this root's traffic, turned its mirroring off and recorded pushes for
/// it, through the control API and the front's `/switch`. Reads stay anyone's on the
/// host (a metrics scraper runs as a user of its own).
#[test]
fn another_user_on_this_host_may_read_but_not_change_the_daemon() {
    let root = both_live();
    let nobody = 65534;
    let control = root.control;
    let Some(status) = raw_as(
        nobody,
        control,
        "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ) else {
        return; // not root: no other user's socket to make
    };
    assert!(status.starts_with("HTTP/1.1 200 "), "{status}");
    let refused = "it came from a process of nobody (uid 65534): only root, the daemon's user, may";
    for (path, what) in [
        ("/switch?to=green", "switch"),
        ("/mirroring?enabled=false", "mirroring"),
        ("/slots/blue/reload", "reload"),
    ] {
        let answer = raw_as(
            nobody,
            control,
            &format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        )
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 403 "), "{what}: {answer}");
        let path = path.split('?').next().unwrap();
        assert!(
            answer.contains(&format!(
                "POST {path} refused: {refused} change this daemon\n"
            )),
            "{what}: {answer}"
        );
    }
    let front = raw_as(
        nobody,
        root.front,
        "POST /switch?to=green HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(front.starts_with("HTTP/1.1 403 "), "{front}");
    assert!(
        front.contains(&format!(
            "this request may not switch: {refused} switch; router.token_file sets a token for others"
        )),
        "{front}"
    );
    let status = root.status();
    assert_eq!(status["active"], "blue", "{status}");
    assert_eq!(status["mirroring"]["enabled"], true, "{status}");
    assert_eq!(status["slots"]["blue"]["live"]["generation"], 1, "{status}");
    // The daemon's own user still may.
    let answer = raw(
        root.front,
        "POST /switch?to=green HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

/// Another user listening on `control.listen` while the daemon is down (it stopped, and
/// its port is anyone's to take) answered the hook's reload with a made-up verdict: the
/// push said `live`, and `bluegreen switch` said `switched`, with no daemon running.
#[test]
fn another_users_socket_on_control_listen_is_no_daemon_of_this_root() {
    if !nix::unistd::geteuid().is_root() {
        return; // no other user's socket to make
    }
    let listener = std::thread::spawn(|| {
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(65534));
        let listener = std::net::TcpListener::bind("127.0.0.1:0");
        nix::unistd::setfsuid(nix::unistd::Uid::from_raw(0));
        listener
    })
    .join()
    .unwrap()
    .unwrap();
    let port = listener.local_addr().unwrap().port();
    let root = Root::new();
    root.set("control.listen", format!("127.0.0.1:{port}"));
    root.commit("v1", &[("VERSION", "v1\n")]);
    let stranger = stranger_on(
        port,
        "its listening socket is a process's of nobody (uid 65534), not of root or of this root's user",
    );
    root.push("blue").told_no_daemon("blue", &stranger);
    let out = root.run(&["switch", "green"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: {stranger}")
    );
    drop(listener);
}

/// A token file others may read, and a short token, are logged at the start; the token
/// lets any caller switch the front, another user on this host too.
#[test]
fn a_token_file_others_may_read_is_logged_and_the_token_lets_another_user_switch() {
    use std::os::unix::fs::PermissionsExt;
    let mut root = Root::new();
    let token = root.path.parent().unwrap().join("token");
    fs::write(&token, "s3cret-token\n").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o644)).unwrap();
    root.set("router.token_file", token.to_str().unwrap());
    root.serve();
    root.wait_log(&format!(
        "router.token_file {} is mode 0644: users other than its owner may read the token, and switch the front with it; chmod 600 it",
        token.display()
    ));
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    // So is a token short enough to guess.
    root.wait_log(&format!(
        "router.token_file {} holds a token of 12 characters: the front answers wrong tokens as fast as it can, so a short one may be guessed; use 16 or more random ones",
        token.display()
    ));
    // Said at the start, not at each look at the file (`/status`, the pushes' notes).
    root.control("GET", "/status");
    let said = root.log().matches("router.token_file ").count();
    assert_eq!(said, 2, "{}", root.log());
    let switch = |authorization: &str| {
        raw_as(
            65534,
            root.front,
            &format!("POST /switch?to=green HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}Connection: close\r\n\r\n"),
        )
    };
    let Some(refused) = switch("") else {
        return; // not root: no other user's socket to make
    };
    assert!(refused.starts_with("HTTP/1.1 403 "), "{refused}");
    assert!(
        refused.contains("switch; others need `Authorization: Bearer <token>` (router.token_file)"),
        "{refused}"
    );
    let allowed = switch("Authorization: Bearer s3cret-token\r\n").unwrap();
    assert!(allowed.starts_with("HTTP/1.1 200 "), "{allowed}");
    assert_eq!(root.status()["active"], "green");
}
