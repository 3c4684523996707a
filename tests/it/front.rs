//! The front: switch, who may switch, heartbeat, promote, restart. (Mirroring and the
//! migration step: `mirror`.)

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
    root.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(root.wait_serve(Duration::from_secs(15)), Some(0));
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
    root.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(root.wait_serve(Duration::from_secs(15)), Some(0));
    root.serve();
    let text = root.run_ok(&["status"]);
    assert!(
        text.lines().next().unwrap().ends_with("failover: on"),
        "{text}"
    );
}

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
            .matches("heartbeat: switch to green failed: migration failed, green not switched to: ")
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

#[test]
fn a_restarted_daemon_keeps_the_active_slot_and_mirroring() {
    let mut root = both_live();
    root.control("POST", "/switch");
    root.control("POST", "/mirroring?enabled=false");
    root.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(root.wait_serve(Duration::from_secs(15)), Some(0));
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

#[test]
fn promote_runs_the_same_build_without_rebuilding() {
    let mut root = Root::new();
    let count = root.set_build("sh -c 'echo x >> \"$COUNT\"'").count;
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue");
    root.push("green");
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    assert_eq!(count_lines(&count), 2);
    let out = root.run(&["promote", "blue"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("green: live in "), "{text}");
    assert_eq!(count_lines(&count), 2, "no rebuild");
    root.wait_body(root.green, "v2 from green");
    let meta = |slot: &str| root.current_meta(slot);
    assert_eq!(meta("green")["build_key"], meta("blue")["build_key"]);
    assert!(meta("green")["promoted_from"]
        .as_str()
        .unwrap()
        .starts_with("blue/"));
}

/// Promoting the build a slot runs already makes no second copy of it: the slot keeps
/// its release, and the verdict is that release's.
#[test]
fn promote_of_the_build_the_target_runs_already_changes_nothing() {
    let root = both_live();
    let blue = root.current("blue").unwrap();
    let green = root.current("green").unwrap();
    let before = walkdir(&root.path.join("green"));
    let out = root.run(&["promote", "blue", "green"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let key = root.current_meta("green")["build_key"].clone();
    assert!(
        text.starts_with(&format!(
            "green: its current release {green} runs build {} already, as blue/{blue} does: nothing new to promote\n",
            key.as_str().unwrap()
        )),
        "{text}"
    );
    assert!(text.contains("green: live in "), "{text}");
    assert_eq!(walkdir(&root.path.join("green")), before);
}

#[test]
fn promote_refuses_a_release_that_did_not_go_live_on_its_slot() {
    // "The artifact tested on blue runs on green": a push to blue that failed to start was
    // copied to green all the same, and green then tried it.
    let root = both_live();
    let v1 = root.current("blue").unwrap();
    let green_v1 = root.current("green").unwrap();
    root.commit("crashing", &[("VERSION", "v2\n"), ("CRASH", "")]);
    root.push("blue").says("blue: not live: ");
    let v2 = root.current("blue").unwrap();
    let before = walkdir(&root.path.join("green"));

    assert_eq!(
        root.run_err(&["promote", "blue", "green"]),
        format!(
            "error: blue's current release {v2} has not gone live (blue serves {v1}): promote copies only a release that has served on blue; `bluegreen status` says why"
        )
    );
    assert_eq!(walkdir(&root.path.join("green")), before);
    assert_eq!(root.current("green").unwrap(), green_v1);

    // Once blue's current is what it serves again, it is promoted.
    assert!(root.run(&["rollback", "blue"]).status.success());
    let out = root.run(&["promote", "blue", "green"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("green: live in "), "{text}");
}

/// A promote to a slot whose push is building goes ahead at once, says so, and the
/// push's release lands after it (the build is not under the slot's lock).
#[test]
fn a_promote_during_a_push_build_to_its_target_lands_first_and_the_push_after() {
    let mut root = Root::new();
    // A tree with SLOW_BUILD builds until the test says go.
    let go = root
        .set_build(
            "sh -c 'if [ -e SLOW_BUILD ]; then while [ ! -e \"$GO\" ]; do sleep 0.05; done; fi'",
        )
        .go;
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    root.commit("v3", &[("VERSION", "v3\n"), ("SLOW_BUILD", "")]);
    std::thread::scope(|s| {
        let push = s.spawn(|| root.push("green"));
        let tmp = root.path.join("builds/.tmp");
        wait_for(Duration::from_secs(20), "v3's build to start", || {
            (!root_processes(&tmp).is_empty()).then_some(())
        });
        let mut promote = std::process::Command::new(BIN)
            .args(["promote", "blue", "green", "--root"])
            .arg(&root.path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Given after the deadline, so that the push ends either way.
        let done = poll_until(Duration::from_secs(30), || promote.try_wait().unwrap());
        if done.is_none() {
            std::fs::write(&go, "").unwrap();
        }
        let out = promote.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(done.is_some(), "the promote waited for the build: {said}");
        assert!(out.status.success(), "{said}");
        assert!(
            said.contains("green: note: a push to green is under way; this does not wait for it"),
            "{said}"
        );
        assert!(said.contains("green: live in "), "{said}");
        assert!(root.get(root.green, "/").body.contains("v2 from green"));
        std::fs::write(&go, "").unwrap();
        let pushed = push.join().unwrap();
        assert!(pushed.ok, "{}", pushed.text);
        pushed.says("green: live in ");
    });
    assert!(root.get(root.green, "/").body.contains("v3 from green"));
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
    root.wait_log(&format!("the front's /switch refused {peer_ip}:"));
    root.wait_log("its Authorization does not carry router.token_file's token");
    assert_eq!(root.status()["active"], "blue");
    let allowed = from_peer("POST /switch HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer s3cret\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n");
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    assert_eq!(root.status()["active"], "green");
    let served = from_peer("GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n");
    assert!(served.contains("v1 from green"), "{served}");
}

/// A root whose heartbeat checks every 300 ms (each check waiting up to 1 s) and moves
/// traffic after 2 failures: a failover within seconds.
fn quick_heartbeat() -> Root {
    let root = Root::new();
    root.set("heartbeat.interval", "300ms");
    root.set("heartbeat.timeout", "1s");
    root.set("heartbeat.failures", 2);
    root
}

/// A quick heartbeat; blue active on v1, which answers 500 two seconds after its start;
/// green live on a healthy v2. The heartbeat checks from once green is live, however
/// long the pushes took.
fn blue_failing_soon_green_healthy() -> Root {
    let root = blue_failing_soon_green_healthy_held();
    start_heartbeat(&root);
    root
}

/// [`blue_failing_soon_green_healthy`], its heartbeat held until [`start_heartbeat`].
fn blue_failing_soon_green_healthy_held() -> Root {
    let mut root = held_heartbeat();
    root.serve();
    root.commit("fails soon", &[("VERSION", "v1\n"), ("FAIL_AFTER", "2")]);
    root.push("blue").says("blue: live in ");
    root.remove("FAIL_AFTER");
    root.commit("healthy", &[("VERSION", "v2\n")]);
    root.push("green").says("green: live in ");
    root
}

/// `quick_heartbeat`, but checking once an hour until [`start_heartbeat`]: a test sets
/// its slots up first, whatever the time its pushes take on a loaded machine.
fn held_heartbeat() -> Root {
    let root = quick_heartbeat();
    root.set("heartbeat.interval", "1h");
    root
}

/// The heartbeat of a [`held_heartbeat`] root checks every 300 ms from now on.
fn start_heartbeat(root: &Root) {
    root.set("heartbeat.interval", "300ms");
    root.reload_config();
}

/// Waits up to `limit` for the heartbeat to make `slot` the active one.
fn wait_for_failover(root: &Root, slot: &str, limit: Duration) {
    wait_for(limit, &format!("the heartbeat to switch to {slot}"), || {
        (root.status()["active"] == slot).then_some(())
    });
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

/// `bluegreen_heartbeat_failures_total` of `slot` in `/metrics`.
fn heartbeat_failures(root: &Root, slot: &str) -> Option<u64> {
    let prefix = format!("bluegreen_heartbeat_failures_total{{slot=\"{slot}\"}} ");
    root.control("GET", "/metrics")
        .body
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.parse().ok())
}
