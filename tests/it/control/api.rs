//! The control API itself: bad requests refused with a reason, connections capped and
//! given way, a forced switch, too many waiting switches.

use std::fs;
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
            "POST /slots/blue/reload takes only ?release=<id>, with &by=push, rollback or promote (got ?force=1)",
        ),
        (
            "POST",
            "/slots/blue/reload?by=push",
            400,
            "POST /slots/blue/reload takes only ?release=<id>, with &by=push, rollback or promote (got ?by=push)",
        ),
        (
            "POST",
            "/slots/blue/reload?release=x&by=hand",
            400,
            "`by` is `hand`: use push, rollback or promote",
        ),
        // An empty release (one that names none of the slot's is the supervisor's 409).
        (
            "POST",
            "/slots/blue/reload?release=",
            400,
            "`release` is empty: name one of blue's releases (see `bluegreen releases blue`)",
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
    for (request, status, reason) in [
        // Two Host headers: which one counts would be a guess. A bad request (this was a
        // 403, "answers callers on this host only", to a caller on this host).
        (
            "POST /switch?to=green HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "400",
            "more than one Host header (RFC 9112 §3.2)",
        ),
        // Two Origins: still which one counts, but of who the caller is.
        (
            "POST /switch?to=green HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://127.0.0.1\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "403",
            "Origin or Sec-Fetch-Site is sent more than once",
        ),
        // The host an absolute-form target names is the request's (RFC 9112 §3.2.2).
        (
            "POST http://evil.example/switch?to=green HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            "403",
            "the request's target names `evil.example`, not a loopback address",
        ),
        // A Host that is not ASCII is not a host and port (nor taken for absent).
        (
            "POST /switch?to=green HTTP/1.1\r\nHost: localhost\u{e9}\r\nConnection: close\r\n\r\n",
            "400",
            "the Host header is not a host and port (RFC 9112 §3.2)",
        ),
    ] {
        let answer = raw(root.control, request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        assert!(answer.ends_with(&format!("{reason}\n")), "{answer}");
    }
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

/// A reload of a slot never deployed says to push, not that `current` was removed.
#[test]
fn a_reload_of_a_slot_never_deployed_says_to_push_one() {
    let mut root = Root::new();
    root.serve();
    let answer = root.control("POST", "/slots/blue/reload");
    assert_eq!(answer.status, 409, "{answer:?}");
    let verdict: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        verdict["reason"], "blue has no release yet: git push blue HEAD:main",
        "{answer:?}"
    );
    assert_eq!(verdict["live"], false, "{answer:?}");
    // A slot whose whole folder is gone says that, not to push.
    let green = root.path.join("green");
    fs::rename(&green, root.path.join("green.moved")).unwrap();
    let answer = root.control("POST", "/slots/green/reload");
    fs::rename(root.path.join("green.moved"), &green).unwrap();
    let verdict: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        verdict["reason"],
        format!(
            "green's folder {} is missing: `bluegreen init {}` makes it again",
            green.display(),
            root.path.display()
        ),
        "{answer:?}"
    );
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
