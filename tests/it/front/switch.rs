//! `/switch` on the front and `bluegreen switch`: the front follows, nothing is lost
//! under load, who may switch, and the active slot kept across restarts.

use std::time::Duration;

use crate::util::*;

#[test]
fn the_front_follows_switches_from_the_api_and_the_front_port() {
    let root = both_live();
    assert!(root.get(root.front, "/").body.contains("from blue"));
    let answer = root.control("POST", "/switch");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let done: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        (done["from"].as_str(), done["to"].as_str()),
        (Some("blue"), Some("green"))
    );
    assert!(root.get(root.front, "/").body.contains("from green"));
    // The workshop's habit: GET /switch on the front from this host.
    let answer = root.get(root.front, "/switch");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(root.get(root.front, "/").body.contains("from blue"));
    // The CLI, and a bad request.
    let out = root.run(&["switch", "green"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "switched blue -> green"
    );
    // The last switch, who asked for it, in /status and in state.json.
    let last = root.status()["last_switch"].clone();
    assert_eq!(
        (
            last["from"].as_str(),
            last["to"].as_str(),
            last["cause"].as_str()
        ),
        (Some("blue"), Some("green"), Some("cli")),
        "{last}"
    );
    assert!(
        last["at"].as_str().is_some_and(|at| at.ends_with('Z')),
        "{last}"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["last_switch"], last);
    // Each counted by who asked: the CLI's is its own cause, not the API's.
    let metrics = root.control("GET", "/metrics").body;
    for cause in ["api", "front", "cli"] {
        let line = format!("bluegreen_switches_total{{cause=\"{cause}\"}} 1");
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    let events = root.control("GET", "/events").body;
    assert!(events.contains("switched blue -> green (cli)"), "{events}");
    let bad = root.control("POST", "/switch?to=red");
    assert_eq!(
        (bad.status, bad.body.trim()),
        (400, "unknown slot `red` (expected blue or green)")
    );
    // Two Authorization headers on the front's /switch: which would count is a guess.
    let answer = raw(
        root.front,
        "POST /switch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("more than one Authorization header"),
        "{answer}"
    );
    // A Host that is not ASCII is no loopback name (nor taken for absent): on the front
    // it is no host name at all, refused before the switch looks at it.
    let answer = raw(
        root.front,
        "POST /switch HTTP/1.1\r\nHost: localhost\u{e9}\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.ends_with("the Host header is not a host and port (RFC 9112 §3.2)\n"),
        "{answer}"
    );
    // What a reverse proxy on this host relays comes from loopback too: its headers, or
    // nginx's default HTTP/1.0, say it is no caller on this host.
    for relayed in [
        "GET /switch HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n",
        "GET /switch HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Real-IP: 192.0.2.7\r\nConnection: close\r\n\r\n",
        "GET /switch HTTP/1.1\r\nHost: 127.0.0.1\r\nVia: 1.1 proxy\r\nConnection: close\r\n\r\n",
        "GET /switch HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 192.0.2.7\r\nConnection: close\r\n\r\n",
        // An image on another site's page, as Safari before 16.4 sends it (no Origin,
        // no Sec-Fetch-Site), says so by its Referer.
        "GET /switch HTTP/1.1\r\nHost: 127.0.0.1\r\nReferer: http://evil.example/page\r\nAccept: image/*\r\nConnection: close\r\n\r\n",
        // The host a target names is the request's, as the data path takes it.
        "GET http://evil.example/switch HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw(root.front, relayed);
        assert!(answer.contains(" 403 "), "{relayed:?}: {answer}");
        assert!(answer.contains("not "), "{relayed:?}: {answer}");
    }
    // A browser's prefetch or prerender of the address typed before (or of a bookmark
    // hovered) looks typed, but nobody asked for it yet.
    for speculative in ["Sec-Purpose: prefetch;prerender", "Purpose: prefetch"] {
        let answer = raw(
            root.front,
            &format!("GET /switch HTTP/1.1\r\nHost: localhost:{}\r\nSec-Fetch-Site: none\r\n{speculative}\r\nConnection: close\r\n\r\n", root.front),
        );
        assert!(
            answer.starts_with("HTTP/1.1 403"),
            "{speculative}: {answer}"
        );
        assert!(
            answer.contains("a browser fetched it ahead of time"),
            "{answer}"
        );
    }
    // Another method: a 405 that says which ones it takes (RFC 9110 §15.5.6).
    let answer = raw(
        root.front,
        "DELETE /switch HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    // As the control API says it.
    assert!(
        answer.ends_with("DELETE is not allowed on /switch: use POST (or GET from this host)\n"),
        "{answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nallow: get, post\r\n"),
        "{answer}"
    );
    assert!(root.get(root.front, "/").body.contains("from green"));
}

/// On a root where nothing is deployed, a bare switch says to push, not to name a slot
/// that would be refused as having no release.
#[test]
fn a_bare_switch_before_any_release_says_to_push_first() {
    let mut root = Root::new();
    root.serve();
    let out = root.run(&["switch"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "not switched: no active slot yet, and no slot has a release: push one first (`git push blue HEAD:main`)"
    );
    // The front itself answers a 503 with the reason (not a 502: nothing failed to answer).
    let front = root.get(root.front, "/");
    assert_eq!(front.status, 503, "{front:?}");
    assert_eq!(
        front.body.trim_end(),
        "no active slot: nothing has been deployed yet"
    );
    // Counted, with no slot to count it under, as is a request the front refuses as it
    // comes; one a slot's port refuses is that slot's.
    let trace = |port: u16| http("TRACE", &root.url(port, "/"), None).unwrap().status;
    assert_eq!(trace(root.front), 501);
    assert_eq!(trace(root.blue), 501);
    let metrics = root.control("GET", "/metrics").body;
    for counted in [
        "bluegreen_requests_total{slot=\"none\",class=\"5xx\"} 2\n",
        "bluegreen_requests_total{slot=\"blue\",class=\"5xx\"} 1\n",
        "bluegreen_requests_total{slot=\"green\",class=\"5xx\"} 0\n",
    ] {
        assert!(metrics.contains(counted), "{counted}{metrics}");
    }
}

#[test]
fn switching_to_a_slot_without_a_healthy_generation_is_refused() {
    let root = blue_live();
    // Not even forced to a slot with nothing deployed: the front would answer nothing.
    for args in [&["switch"][..], &["switch", "green", "--force"]] {
        let out = root.run(args);
        assert!(!out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            "not switched: green has no release: push one first (`git push green HEAD:main`)"
        );
        assert_eq!(root.status()["active"], "blue");
    }

    root.commit("crash", &[("VERSION", "v2\n"), ("CRASH", "")]);
    root.push("green").says("green: not live: ");
    let answer = root.control("POST", "/switch?to=green");
    assert_eq!(answer.status, 409);
    assert_eq!(
        answer.body.trim(),
        "green has no live generation to switch to"
    );
    assert_eq!(root.status()["active"], "blue");
    let out = root.run(&["switch"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "not switched: green has no live generation to switch to"
    );
    assert!(root.get(root.front, "/").body.contains("from blue"));
    // Counted by who asked: the API's one and the command's three.
    let metrics = root.control("GET", "/metrics").body;
    for counted in [
        "bluegreen_switches_refused_total{cause=\"api\"} 1\n",
        "bluegreen_switches_refused_total{cause=\"cli\"} 3\n",
        "bluegreen_switches_total{cause=\"cli\"} 0\n",
    ] {
        assert!(metrics.contains(counted), "{counted}{metrics}");
    }
}

/// A switch to a slot still starting (a daemon just restarted; its control API answers
/// at once) says it is starting, not only that the slot has nothing live.
#[test]
fn a_switch_to_a_slot_still_starting_says_so() {
    let mut root = Root::new();
    root.set(
        "app.command",
        format!("sh -c 'sleep ${{DELAY:-0}}; exec {BIN} sample-app'"),
    );
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    root.set("slots.green.env", env_map(&[("DELAY", "30")]));
    root.stop_cleanly(Duration::from_secs(10));
    root.serve();
    wait_for(Duration::from_secs(10), "green starting", || {
        (root.status()["slots"]["green"]["health"] == "starting").then_some(())
    });
    assert_eq!(
        root.run_err(&["switch", "green"]),
        "not switched: green has no live generation to switch to yet (starting); switch once `bluegreen status` shows green healthy"
    );
    assert_eq!(root.status()["active"], "blue");
}

#[test]
fn five_switches_under_load_lose_nothing() {
    let root = both_live();
    let url = root.url(root.front, "/");
    let (ok, failures) = under_load(&url, 4, || {
        for _ in 0..5 {
            let answer = root.control("POST", "/switch");
            assert_eq!(answer.status, 200, "{}", answer.body);
            // Let traffic flow on each side between switches.
            wait_for(Duration::from_secs(5), "requests after the switch", || {
                http("GET", &url, None).ok().filter(|a| a.status == 200)
            });
        }
    });
    assert!(
        failures.is_empty(),
        "{} failed: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        root.log()
    );
    assert!(ok > 20, "{ok} answers");
    let metrics = root.control("GET", "/metrics").body;
    assert!(
        metrics.contains("bluegreen_switches_total{cause=\"api\"} 5"),
        "{metrics}"
    );
    // Each slot's answers in its own latency histogram: one per 2xx it gave.
    let value = |name: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no {name}\n{metrics}"));
        line[name.len() + 1..].parse().unwrap()
    };
    for slot in ["blue", "green"] {
        let answered = value(&format!(
            "bluegreen_requests_total{{slot=\"{slot}\",class=\"2xx\"}}"
        ));
        let timed = value(&format!(
            "bluegreen_upstream_seconds_count{{slot=\"{slot}\"}}"
        ));
        assert!(
            answered > 0 && timed == answered,
            "{slot}: {timed} timed, {answered} answered\n{metrics}"
        );
    }
}

#[test]
fn a_restarted_daemon_keeps_the_active_slot_and_mirroring() {
    let mut root = both_live();
    root.control("POST", "/switch");
    root.control("POST", "/mirroring?enabled=false");
    root.stop_serve();
    root.serve();
    let status = root.status();
    assert_eq!(status["active"], "green");
    assert_eq!(status["mirroring"]["enabled"], false);
    root.wait_body(root.front, "from green");
    // Generation numbers count on: 1 and 2 ran before the restart.
    let numbers = wait_for(Duration::from_secs(10), "both slots live", || {
        let status = root.status();
        ["blue", "green"]
            .iter()
            .map(|slot| status["slots"][slot]["live"]["generation"].as_u64())
            .collect::<Option<Vec<u64>>>()
    });
    assert!(numbers.iter().all(|n| *n > 2), "{numbers:?}");
}

/// `state.json` is written beside and renamed over, never rewritten in place: a crash
/// (or a full disk) in the middle of a write leaves the old state or the new one, never
/// a truncated file that the next `serve` refuses. The folder's events tell how.
#[test]
fn state_json_is_replaced_by_a_rename_never_rewritten_in_place() {
    let root = blue_live();
    let mut events = FolderEvents::watch(&root.path);
    assert_eq!(root.control("POST", "/mirroring?enabled=false").status, 200);
    let kinds = events.until_replaced("state.json", Duration::from_secs(10));
    assert!(
        kinds.iter().all(renamed_onto),
        "state.json was not just renamed over: {kinds:?}"
    );
    assert_eq!(root.status()["mirroring"]["enabled"], false);
}

/// A real non-loopback peer: a network namespace joined to the host by a veth pair.
#[test]
#[ignore = "needs root and `ip netns`; .ci/run runs it with --ignored where the machine can make a namespace"]
fn a_remote_peer_needs_the_token_to_switch() {
    let ns = format!("bgtest{}", std::process::id());
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    assert!(
        ip(&["netns", "add", &ns]),
        "cannot make a network namespace"
    );
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            // Deleting the namespace deletes the veth pair with it.
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    let _cleanup = Cleanup(ns.clone());
    let (host, peer) = (format!("{ns}h"), format!("{ns}p"));
    let octet = 10 + std::process::id() % 200;
    let host_ip = format!("10.{octet}.77.1");
    let peer_ip = format!("10.{octet}.77.2");
    assert!(ip(&[
        "link", "add", &host, "type", "veth", "peer", "name", &peer
    ]));
    assert!(ip(&["link", "set", &peer, "netns", &ns]));
    assert!(ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host]));
    assert!(ip(&["link", "set", &host, "up"]));
    assert!(ip(&[
        "netns",
        "exec",
        &ns,
        "ip",
        "addr",
        "add",
        &format!("{peer_ip}/24"),
        "dev",
        &peer
    ]));
    assert!(ip(&[
        "netns", "exec", &ns, "ip", "link", "set", &peer, "up"
    ]));
    assert!(ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]));

    let mut root = Root::new();
    let token = root.path.parent().unwrap().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    root.set("router.listen", format!("{host_ip}:{}", root.front));
    root.set("router.token_file", token.to_str().unwrap());
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");

    // An HTTP request from inside the namespace, with bash's /dev/tcp (no curl needed).
    let from_peer = |request: &str| -> String {
        let script = format!(
            "exec 3<>/dev/tcp/{host_ip}/{}; printf '{request}' >&3; cat <&3",
            root.front
        );
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "bash", "-c", &script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let refused = from_peer("POST /switch HTTP/1.1\\r\\nHost: x\\r\\nX-Forwarded-For: 127.0.0.1\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(
        refused.contains(&format!(
            "{peer_ip} may not switch: others need `Authorization: Bearer <token>`"
        )),
        "{refused}"
    );
    assert_eq!(root.status()["active"], "blue");
    // A wrong token is refused, and logged: someone may be guessing it (a short one, as
    // this, was warned about at the start).
    root.wait_log(
        "holds a token of 6 characters: the front answers wrong tokens as fast as it can",
    );
    let guessed = from_peer("POST /switch HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer s3cre7\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n");
    assert!(guessed.starts_with("HTTP/1.1 403"), "{guessed}");
    assert!(
        guessed.contains(&format!(
            "{peer_ip} may not switch: its Authorization does not carry router.token_file's token"
        )),
        "{guessed}"
    );
    root.wait_log(&format!("the front's /switch refused {peer_ip}:"));
    root.wait_log("its Authorization does not carry router.token_file's token");
    assert!(!root.log().contains("s3cre7"), "{}", root.log());
    assert_eq!(root.status()["active"], "blue");
    let allowed = from_peer("POST /switch HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer s3cret\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n");
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    assert_eq!(root.status()["active"], "green");
    let served = from_peer("GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n");
    assert!(served.contains("v1 from green"), "{served}");
}
