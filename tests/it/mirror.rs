//! The standby's data: mirroring of writes to it, and the migration step on switch.

use std::time::Duration;

use crate::util::*;

/// Waits for green's item list to show `text` (a mirrored copy arrived).
fn green_gets(root: &Root, text: &str) {
    wait_for(Duration::from_secs(5), "the mirrored copy on green", || {
        root.get(root.green, "/items")
            .body
            .contains(text)
            .then_some(())
    });
}

#[test]
fn mirroring_copies_writes_to_the_standby() {
    let root = both_live();
    let post = http("POST", &root.url(root.front, "/items/first"), Some("hello")).unwrap();
    assert_eq!(post.status, 201);
    assert!(root
        .get(root.blue, "/items")
        .body
        .contains("\"first\":\"hello\""));
    green_gets(&root, "\"first\":\"hello\"");

    let out = root.run(&["mirroring", "off"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "mirroring off");
    let post = http(
        "POST",
        &root.url(root.front, "/items/second"),
        Some("only blue"),
    )
    .unwrap();
    assert_eq!(post.status, 201);
    assert!(root.get(root.blue, "/items").body.contains("second"));
    // A later mirrored write proves the queue is empty, so "second" was never copied.
    root.run(&["mirroring", "on"]);
    http("POST", &root.url(root.front, "/items/third"), Some("both")).unwrap();
    green_gets(&root, "third");
    assert!(!root.get(root.green, "/items").body.contains("second"));

    // A write the active slot fails (a folder where blue would store it: a 500) is not
    // applied to the standby either.
    std::fs::create_dir_all(root.path.join("blue/shared/data/clash")).unwrap();
    let post = http("POST", &root.url(root.front, "/items/clash"), Some("x")).unwrap();
    assert_eq!(post.status, 500, "{}", post.body);
    http("POST", &root.url(root.front, "/items/fourth"), Some("both")).unwrap();
    green_gets(&root, "fourth");
    assert!(!root.get(root.green, "/items").body.contains("clash"));
    assert_eq!(root.status()["mirroring"]["counters"]["active_failed"], 1);

    // Nor is one it refuses (a 4xx): a delete of an item only green has (written on
    // green's own port, which is not mirrored) is a 404 from blue, and green keeps it.
    let post = http(
        "POST",
        &root.url(root.green, "/items/green-only"),
        Some("g"),
    )
    .unwrap();
    assert_eq!(post.status, 201);
    let delete = http("DELETE", &root.url(root.front, "/items/green-only"), None).unwrap();
    assert_eq!(delete.status, 404, "{}", delete.body);
    http("POST", &root.url(root.front, "/items/fifth"), Some("both")).unwrap();
    green_gets(&root, "fifth");
    assert!(root.get(root.green, "/items").body.contains("green-only"));
    assert_eq!(root.status()["mirroring"]["counters"]["active_failed"], 2);
}

/// A write the front answers 503 itself (the active slot has no live generation: it
/// crashed, and its restart fails) is counted too, as every write the front takes while
/// mirroring is on: it was in no counter, and the counters did not add up to the writes.
#[test]
fn a_write_the_front_answers_itself_is_counted_active_failed() {
    let root = both_live();
    std::fs::write(root.path.join("blue/current/CRASH"), "").unwrap();
    let pid = nix::unistd::Pid::from_raw(root.live_pid("blue"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for(Duration::from_secs(10), "the front's own 503", || {
        (root.get(root.front, "/").status == 503).then_some(())
    });
    let before = root.status()["mirroring"]["counters"]["active_failed"]
        .as_u64()
        .unwrap();
    let post = http("POST", &root.url(root.front, "/items/lost"), Some("x")).unwrap();
    assert_eq!(post.status, 503, "{}", post.body);
    assert_eq!(
        root.status()["mirroring"]["counters"]["active_failed"],
        before + 1
    );
    root.wait_log("not mirrored: POST /items/lost: the front answered 503 Service Unavailable itself (no live generation)");
    assert!(!root.get(root.green, "/items").body.contains("lost"));
}

#[test]
fn a_copy_with_a_body_tells_the_standby_to_close_unless_the_app_reads_every_body() {
    // As on the data path: a standby that left the body unread would take it for a
    // request of its own. (`?as-received`: the sample app stores the request's headers.)
    for (reuse_after_body, told) in [(false, true), (true, false)] {
        let root = blue_live_with(&[("app.reuse_after_body", reuse_after_body.into())]);
        root.push("green").says("green: live in ");
        let url = root.url(root.front, "/items/headers?as-received");
        let post = http("POST", &url, Some("x")).unwrap();
        assert_eq!(post.status, 201, "{}", post.body);
        let stored = wait_for(Duration::from_secs(5), "the copy on green", || {
            let stored = root.get(root.green, "/items/headers");
            (stored.status == 200).then_some(stored.body)
        });
        assert_eq!(stored.contains("connection: close\n"), told, "{stored}");
    }
}

#[test]
fn a_mirror_to_a_stopped_standby_is_counted_and_the_write_still_answers() {
    let mut root = Root::new();
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n"), ("SLOW_MS", "0")]);
    root.push("blue").says("blue: live in ");
    let post = http("POST", &root.url(root.front, "/items/x"), Some("y")).unwrap();
    assert_eq!(post.status, 201);
    let counted = poll_until(Duration::from_secs(10), || {
        (root.status()["mirroring"]["counters"]["standby_down"] == 1).then_some(())
    });
    assert!(
        counted.is_some(),
        "no standby_down count: {}\n{}",
        root.status()["mirroring"],
        root.log()
    );
    root.wait_log("not mirrored: POST /items/x: green has no live generation");
}

/// Sets `switch.migrate` and waits for the running daemon to take it (its `nth` reload).
fn set_migrate(root: &Root, command: &str, nth: usize) {
    root.set("switch.migrate", command);
    root.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(Duration::from_secs(5), "the config reload", || {
        let events = root.control("GET", "/events").body;
        (events.matches("config reloaded").count() == nth).then_some(())
    });
}

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
        answer
            .body
            .contains("migration failed, blue not switched to"),
        "{}",
        answer.body
    );
    assert!(
        answer
            .body
            .contains("exit status: 1: cannot reach the database"),
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
        text.starts_with("not switched: migration failed, green not switched to: "),
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
        answer.body.contains("`sh -c '\\n  echo cannot reach the database >&2\\n  exit 1\\n'` exited with exit status: 1"),
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
        .find(|m| m.contains("migration failed"))
        .expect("the refusal's event");
    assert!(!refused.contains('\n'), "{refused}");
    root.wait_log("not switched (api): migration failed");
    assert!(
        !root.log().contains("\n  echo cannot reach"),
        "the log's line is broken: {}",
        root.log()
    );
    assert_eq!(root.status()["active"], "blue");
}

#[test]
fn a_switch_refused_on_the_front_is_told_in_the_events() {
    let root = both_live();
    set_migrate(
        &root,
        "sh -c 'echo cannot reach the database >&2; exit 1'",
        1,
    );
    // A caller of the front's /switch may never read its answer (a half-closed client):
    // the events say how it went.
    let answer = raw(
        root.front,
        "POST /switch HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    let events = root.control("GET", "/events").body;
    assert!(
        events.contains("not switched (front): migration failed, green not switched to: "),
        "{events}"
    );
    assert!(
        events.contains("exited with exit status: 1: cannot reach the database"),
        "{events}"
    );
    root.wait_log("not switched (front): migration failed");
    assert_eq!(root.status()["active"], "blue");
}

#[test]
fn a_write_whose_client_leaves_before_the_answer_is_counted_not_lost() {
    use std::io::Write;
    let mut root = Root::new();
    root.serve();
    root.commit("slow", &[("VERSION", "v1\n"), ("SLOW_MS", "1000")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", root.front)).unwrap();
    stream
        .write_all(b"POST /items/gone HTTP/1.1\r\nHost: app\r\nContent-Length: 1\r\n\r\nx")
        .unwrap();
    wait_for(Duration::from_secs(5), "the write in flight", || {
        (root.status()["slots"]["blue"]["live"]["in_flight"] == 1).then_some(())
    });
    drop(stream);
    wait_for(Duration::from_secs(10), "the mirror error counter", || {
        (root.status()["mirroring"]["counters"]["error"] == 1).then_some(())
    });
    root.wait_log(
        "not mirrored: POST /items/gone: the request ended before the active slot answered",
    );
}

/// A copy that went out and lost its answer (the standby killed while it handled it)
/// is counted `error`, and the log says the standby may have applied it: "not mirrored"
/// alone was wrong for copies found applied on the standby afterwards.
#[test]
fn a_copy_sent_whose_answer_is_lost_is_told_it_may_have_landed() {
    let root = slow_green("5000", &[]);
    put(&root, "/items/k", "v");
    wait_for(Duration::from_secs(10), "the copy out to green", || {
        (root.status()["slots"]["green"]["live"]["in_flight"] == 1).then_some(())
    });
    let pid = nix::unistd::Pid::from_raw(root.live_pid("green"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for(Duration::from_secs(10), "the mirror error counter", || {
        (root.status()["mirroring"]["counters"]["error"] == 1).then_some(())
    });
    let log = root.log();
    let line = log
        .lines()
        .find(|line| line.contains("not mirrored: PUT /items/k: green: "))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains(
            "not mirrored: PUT /items/k: green: connection closed before message completed (sent: the standby may have applied it all the same)"
        ),
        "{line}"
    );
}

#[test]
fn a_switch_lets_queued_copies_land_before_the_target_takes_writes() {
    // Green answers each request 200 ms late, so copies to it queue up behind each other.
    let root = slow_green("200", &[]);
    writes_around_a_switch(&root, 3);
    wait_for(Duration::from_secs(10), "every copy to go out", || {
        (root.status()["mirroring"]["counters"]["sent"] == 5).then_some(())
    });
    // No copy from before the switch landed on green after the new write.
    assert_eq!(root.get(root.green, "/items/k").body, "new");
    assert_eq!(root.get(root.blue, "/items/k").body, "new");
    assert_eq!(root.status()["mirroring"]["counters"]["stale"], 0);
}

#[test]
fn a_chunked_write_is_mirrored_whole_and_one_over_max_body_is_counted() {
    let mut root = Root::new();
    root.set("mirror.max_body", "16B");
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    // `end`: the last chunk, with trailers or without.
    let chunked = |path: &str, chunks: &[&str], end: &str| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", root.front)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = format!(
            "PUT {path} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        for chunk in chunks {
            request += &format!("{:x}\r\n{chunk}\r\n", chunk.len());
        }
        request += end;
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let answer = chunked("/items/small", &["hello", " world"], "0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 20"), "{answer}");
    green_gets(&root, "\"small\":\"hello world\"");
    // With trailers, which end the body too.
    let answer = chunked("/items/trailed", &["abc"], "0\r\nX-Check: 1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 20"), "{answer}");
    green_gets(&root, "\"trailed\":\"abc\"");

    // Over mirror.max_body with no Content-Length to tell in advance: the active slot
    // still gets all of it; the copy is counted, not sent.
    let answer = chunked(
        "/items/big",
        &["0123456789", "0123456789", "0123456789"],
        "0\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 20"), "{answer}");
    assert!(root
        .get(root.blue, "/items")
        .body
        .contains(&"0123456789".repeat(3)));
    wait_for(Duration::from_secs(5), "the too_large count", || {
        (root.status()["mirroring"]["counters"]["too_large"] == 1).then_some(())
    });
    assert!(!root.get(root.green, "/items").body.contains("big"));
}

#[test]
fn a_copy_still_queued_when_the_switch_flips_is_dropped_as_stale() {
    // Green takes 4 s per request, its health check too. The copy of `k=old` is seventh
    // in line: it would go out 24 s after it was queued at the earliest, after the switch
    // has checked green (4 s), given up waiting for the copies (5 s), checked green again
    // (4 s) and flipped (about 13 s).
    let root = slow_green("4000", &[]);
    writes_around_a_switch(&root, 6);
    // Seven copies to green and one to blue (of `k=new`), each sent or dropped.
    wait_for(Duration::from_secs(40), "every copy accounted for", || {
        let counters = &root.status()["mirroring"]["counters"];
        let done = counters["sent"].as_u64()? + counters["stale"].as_u64()?;
        (done == 8).then_some(())
    });
    let stale = &root.status()["mirroring"]["counters"]["stale"];
    assert!(stale.as_u64().is_some_and(|n| n >= 1), "{stale}");
    root.wait_log("a switch came before the copy to green went out");
    assert_eq!(root.get(root.green, "/items/k").body, "new");
}

/// Both slots live, blue active and answering after `slow_ms`, and a `PUT path` of
/// "taken by blue" through the front in flight on blue: the root, and the writer.
fn a_write_in_flight_on_a_slow_blue(
    slow_ms: &str,
    path: &str,
) -> (Root, std::thread::JoinHandle<Result<Answer, String>>) {
    let mut root = Root::new();
    root.set("slots.blue.env", env_map(&[("SLOW_MS", slow_ms)]));
    // Blue's health checks wait as long as its answers take.
    root.set("heartbeat.timeout", "15s");
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    let writer = std::thread::spawn({
        let url = root.url(root.front, path);
        move || http("PUT", &url, Some("taken by blue"))
    });
    wait_for(
        Duration::from_secs(5),
        "the write in flight on blue",
        || (root.status()["slots"]["blue"]["live"]["in_flight"] == 1).then_some(()),
    );
    (root, writer)
}

#[test]
fn a_write_the_active_is_still_answering_at_a_switch_reaches_the_target() {
    // Blue takes 2 s to answer: the write is in flight on blue when the switch comes.
    let (root, writer) = a_write_in_flight_on_a_slow_blue("2000", "/items/inflight");
    let switched = root.control("POST", "/switch?to=green");
    assert_eq!(switched.status, 200, "{switched:?}");
    let written = writer.join().unwrap().unwrap();
    assert_eq!(written.status, 201, "{written:?}");
    // The switch waited for blue's answer and for the copy: green had the write before
    // it took any.
    assert_eq!(
        root.get(root.green, "/items/inflight").body,
        "taken by blue"
    );
    let counters = &root.status()["mirroring"]["counters"];
    assert_eq!(counters["sent"], 1, "{counters}");
    assert_eq!(counters["stale"], 0, "{counters}");
}

/// A write that comes while a switch waits for one the active answers slowly goes to the
/// new active once the switch flips, even when the switch gives up waiting: it took the
/// old active, and its copy was dropped as stale, so the new active never had it.
#[test]
fn a_write_that_waited_for_a_switch_that_gave_up_waiting_goes_to_the_new_active() {
    // Blue takes 8 s to answer, longer than a switch waits (5 s).
    let (root, slow) = a_write_in_flight_on_a_slow_blue("8000", "/items/slow");
    let switch = std::thread::spawn({
        let url = root.url(root.control, "/switch?to=green");
        move || http("POST", &url, None)
    });
    root.wait_log("switch to green: waiting up to ");
    let began = std::time::Instant::now();
    let waited = http("PUT", &root.url(root.front, "/items/waited"), Some("w")).unwrap();
    assert_eq!(waited.status, 201, "{waited:?}");
    // Held until the flip, the switch having waited for blue's write (5 s in all).
    assert!(
        began.elapsed() >= Duration::from_secs(1),
        "{:?}: not held",
        began.elapsed()
    );
    assert_eq!(switch.join().unwrap().unwrap().status, 200);
    assert_eq!(
        root.get(root.green, "/items/waited").body,
        "w",
        "the new active took it"
    );
    assert_eq!(slow.join().unwrap().unwrap().status, 201);
    root.wait_log("switching to green while blue is still answering mirrored writes after 5s");
}

/// The gate passed before the switch waited for a write the active answers slowly; the
/// target began failing meanwhile: the flip does not happen, and the front stays on the
/// active (the heartbeat's failover takes the same path).
#[test]
fn a_target_that_fails_while_the_switch_waits_for_mirrored_writes_is_not_switched_to() {
    let mut root = Root::new();
    // Blue answers in 8 s, longer than a switch waits for it (5 s).
    root.set("slots.blue.env", env_map(&[("SLOW_MS", "8000")]));
    root.set("heartbeat.timeout", "15s");
    root.set("heartbeat.interval", "1h");
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    // Healthy while its item `h` is there: put on each slot's own port (not mirrored).
    for port in [root.blue, root.green] {
        let made = http("PUT", &root.url(port, "/items/h"), Some("ok")).unwrap();
        assert!(made.status < 300, "{made:?}");
    }
    root.set("app.health_path", "/items/h");
    root.reload_config();
    let writer = std::thread::spawn({
        let url = root.url(root.front, "/items/slow");
        move || http("PUT", &url, Some("taken by blue"))
    });
    wait_for(
        Duration::from_secs(5),
        "the write in flight on blue",
        || (root.status()["slots"]["blue"]["live"]["in_flight"] == 1).then_some(()),
    );
    let switch = std::thread::spawn({
        let url = root.url(root.control, "/switch?to=green");
        move || http("POST", &url, None)
    });
    // Past the gate, waiting for blue's write: green begins failing.
    wait_for(Duration::from_secs(10), "the switch waiting", || {
        let step = root.status()["switching"]["step"].clone();
        (step == "waiting for the mirrored writes blue is still answering").then_some(())
    });
    let gone = http("DELETE", &root.url(root.green, "/items/h"), None).unwrap();
    assert!(gone.status < 300, "{gone:?}");
    let answer = switch.join().unwrap().unwrap();
    assert_eq!(answer.status, 409, "{answer:?}");
    let said = answer.body.trim_end();
    assert!(
        said.starts_with("green is not healthy: GET /items/h answered 404, at the flip (")
            && said.ends_with(
                "s after it passed the gate, the switch waiting for the mirrored writes)"
            ),
        "{said}"
    );
    assert_eq!(root.status()["active"], "blue");
    assert_eq!(writer.join().unwrap().unwrap().status, 201);
    // Nothing was dropped as stale: the refused switch left the copy to go out.
    assert!(
        !root.log().contains("switching to green while"),
        "{}",
        root.log()
    );
    assert_eq!(root.status()["mirroring"]["counters"]["stale"], 0);
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
fn a_copy_from_before_two_switches_never_lands() {
    // Green takes 12 s per request: the first copy is still out while two forced
    // switches, each waiting 5 s for it, go to green and back to blue.
    let root = slow_green(
        "12000",
        &[
            ("heartbeat.timeout", "20s".into()),
            ("app.ready_timeout", "30s".into()),
        ],
    );
    put(&root, "/items/filler", "f");
    put(&root, "/items/k", "old");
    for to in ["green", "blue"] {
        let switched = root.control("POST", &format!("/switch?to={to}&force=1"));
        assert_eq!(switched.status, 200, "{switched:?}");
    }
    // `k=old` was copied for green while blue was active; green has been active since
    // (and may have taken a newer `k`): the copy must not land there now.
    wait_for(
        Duration::from_secs(30),
        "the copy of k to be dropped",
        || (root.status()["mirroring"]["counters"]["stale"] == 1).then_some(()),
    );
    root.wait_log("not mirrored: PUT /items/k: a switch came before the copy to green went out");
    assert_eq!(root.status()["mirroring"]["counters"]["sent"], 1);
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

/// `answer` refuses the switch to green with `reason`: blue is still active, and the
/// front still serves it.
fn refused_to_green(root: &Root, answer: &Answer, reason: &str) {
    assert_eq!(answer.status, 409, "{answer:?}");
    assert!(answer.body.contains(reason), "{}", answer.body);
    assert_eq!(root.status()["active"], "blue");
    assert!(root.get(root.front, "/").body.contains("v1 from blue"));
}

#[test]
fn two_bare_switches_at_once_end_on_the_standby() {
    let root = both_live();
    // The first switch migrates for a second; the second is asked meanwhile and waits.
    set_migrate(&root, "sleep 1", 1);
    let [first, second] = std::thread::scope(|s| {
        let first = s.spawn(|| root.run(&["switch"]));
        wait_for(Duration::from_secs(10), "the first migration", || {
            (root.processes().iter())
                .any(|&p| cmdline(p) == b"sleep\x001\x00")
                .then_some(())
        });
        let second = root.run(&["switch"]);
        [first.join().unwrap(), second]
    })
    .map(|out| {
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    });
    // Both operators asked for the standby, green: it stays active.
    assert!(
        first.starts_with("switched blue -> green (migration "),
        "{first}"
    );
    assert_eq!(second, "green is already active");
    assert_eq!(root.status()["active"], "green");
}

#[test]
fn copies_beyond_mirror_queue_are_dropped_and_counted() {
    // Green takes 3 s per copy and one copy may wait: of four quick writes, one is out
    // and one waits while the other two come.
    let root = slow_green("3000", &[("mirror.queue", 1.into())]);
    for i in 0..4 {
        assert_eq!(put(&root, &format!("/items/w{i}"), "x"), 201);
    }
    let counters = &root.status()["mirroring"]["counters"];
    let full = counters["queue_full"].as_u64().unwrap();
    assert!(full >= 2, "{counters}");
    root.wait_log("mirror.queue is full (1)");
    wait_for(
        Duration::from_secs(15),
        "the queued copies to go out",
        || {
            (root.status()["mirroring"]["counters"]["sent"].as_u64() == Some(4 - full))
                .then_some(())
        },
    );
}

#[test]
fn writes_in_flight_together_on_the_active_are_copied_together() {
    // Blue takes 2 s per answer and green 3 s: four writes sent at once are all on blue
    // together, so their copies may be out on green together. One at a time, they took
    // 12 s, and under a steady load most were dropped as queue_full.
    let root = slow_green(
        "3000",
        &[("slots.blue.env", env_map(&[("SLOW_MS", "2000")]))],
    );
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let url = root.url(root.front, &format!("/items/together{i}"));
            std::thread::spawn(move || http("PUT", &url, Some("x")))
        })
        .collect();
    wait_for(
        Duration::from_secs(15),
        "the four copies out on green at once",
        || {
            let in_flight = root.status()["slots"]["green"]["live"]["in_flight"].as_u64();
            (in_flight >= Some(4)).then_some(())
        },
    );
    for writer in writers {
        let written = writer.join().unwrap().unwrap();
        assert_eq!(written.status, 201, "{written:?}");
    }
    wait_for(Duration::from_secs(15), "the four copies sent", || {
        (root.status()["mirroring"]["counters"]["sent"] == 4).then_some(())
    });
    let items = root.get(root.green, "/items").body;
    for i in 0..4 {
        assert!(items.contains(&format!("\"together{i}\"")), "{items}");
    }
}

#[test]
fn a_full_queue_takes_copies_again_once_it_has_emptied() {
    // Green takes 3 s per copy and two copies may wait. Letting one copy in as each went
    // out filled the queue with writes far apart on the active, which must go out one
    // at a time: under a steady load the mirror never caught up (a bench run dropped
    // 18,419 of 31,600 copies).
    let root = slow_green("3000", &[("mirror.queue", 2.into())]);
    let write = |i: usize| assert_eq!(put(&root, &format!("/items/w{i}"), "x"), 201);
    let mirroring = || root.status()["mirroring"].clone();
    // w0 goes out, w1 and w2 wait, w3 finds the queue full.
    for i in 0..4 {
        write(i);
    }
    assert_eq!(mirroring()["counters"]["queue_full"], 1, "{}", mirroring());
    wait_for(Duration::from_secs(10), "w1 out, w2 waiting", || {
        (mirroring()["queued"] == 1).then_some(())
    });
    // Room for one, but the queue has not emptied since it was full.
    write(4);
    assert_eq!(mirroring()["counters"]["queue_full"], 2, "{}", mirroring());
    root.wait_log("mirror.queue was full (2): it takes copies again once it has emptied");
    wait_for(Duration::from_secs(10), "w2 out", || {
        (mirroring()["queued"] == 0).then_some(())
    });
    write(5);
    wait_for(Duration::from_secs(20), "w0, w1, w2 and w5 sent", || {
        (mirroring()["counters"]["sent"] == 4).then_some(())
    });
    let items = root.get(root.green, "/items").body;
    assert!(items.contains("\"w5\""), "{items}");
    assert!(
        !items.contains("\"w3\"") && !items.contains("\"w4\""),
        "{items}"
    );
    assert_eq!(mirroring()["counters"]["queue_full"], 2, "{}", mirroring());
}

/// A served root with v1 live on both slots (blue active, mirroring on), green taking
/// `slow_ms` to answer every request, and these config keys set. The heartbeat waits
/// 10 s for an answer (unless `settings` says otherwise): green's slow answers to its
/// probes are no failures.
fn slow_green(slow_ms: &str, settings: &[(&str, toml::Value)]) -> Root {
    let mut root = Root::new();
    root.set("slots.green.env", env_map(&[("SLOW_MS", slow_ms)]));
    root.set("heartbeat.timeout", "10s");
    for (key, value) in settings {
        root.set(key, value.clone());
    }
    root.serve();
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    root
}

/// `PUT <path>` with `body` through the front, which the active takes (a 2xx): its status.
fn put(root: &Root, path: &str, body: &str) -> u16 {
    let answer = http("PUT", &root.url(root.front, path), Some(body)).unwrap();
    assert!(answer.status < 300, "PUT {path}: {answer:?}");
    answer.status
}

/// Through the front: `fillers` filler writes and `k=old` (to blue, copied to green), a
/// switch to green, then `k=new` (to green, copied to blue).
fn writes_around_a_switch(root: &Root, fillers: usize) {
    for i in 0..fillers {
        put(root, &format!("/items/filler{i}"), "f");
    }
    put(root, "/items/k", "old");
    let switched = root.control("POST", "/switch?to=green");
    assert_eq!(switched.status, 200, "{switched:?}");
    put(root, "/items/k", "new");
}

#[test]
fn only_the_configured_methods_are_mirrored() {
    let methods = toml::Value::Array(vec!["POST".into()]);
    let root = blue_live_with(&[("mirror.methods", methods)]);
    root.push("green").says("green: live in ");
    http("PUT", &root.url(root.front, "/items/put"), Some("x")).unwrap();
    http("POST", &root.url(root.front, "/items/post"), Some("y")).unwrap();
    // Copies keep their order: had the PUT been copied, it would be there first.
    green_gets(&root, "\"post\":\"y\"");
    assert!(!root.get(root.green, "/items").body.contains("put"));
    assert!(root.get(root.blue, "/items").body.contains("\"put\":\"x\""));
    assert_eq!(root.status()["mirroring"]["counters"]["sent"], 1);
}

#[test]
fn a_mirrored_write_streams_to_the_active_slot() {
    use std::io::{BufRead, Write};
    let root = both_live();
    // Through the front, where a POST is mirrored, and through a slot port, where it is
    // not: the worker answers from the first chunk while the client still holds the
    // rest, which only a proxy that streams the body lets happen.
    for port in [root.front, root.blue] {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(
                b"POST /first-chunk HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nearly\r\n",
            )
            .unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut answer = String::new();
        while !answer.contains("first: ") {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(n) if n > 0 => answer += &line,
                end => panic!("port {port}: no answer while the body was open ({end:?}): {answer}"),
            }
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "port {port}: {answer}");
        assert!(answer.contains("first: early"), "port {port}: {answer}");
        stream.write_all(b"4\r\nlate\r\n0\r\n\r\n").unwrap();
    }
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

#[test]
fn queued_copies_count_their_heads_against_the_memory_bound() {
    use std::io::{BufRead, Read, Write};
    // Green takes 5 s per copy, so nearly every copy stays queued; `mirror.queue` is
    // far larger than what 256 MiB can hold. Each write has an empty body and a 60 KB
    // head (a big cookie): the copies' bodies hold nothing, their heads 60 KB each.
    let root = slow_green("5000", &[("mirror.queue", 100_000.into())]);
    let pad = "x".repeat(60_000);
    // 5,000 heads of 60 KB are 286 MiB: past the bound, whatever the four copies out.
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (port, pad) = (root.front, pad.clone());
            std::thread::spawn(move || {
                let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut reader = std::io::BufReader::new(stream);
                for i in 0..1250 {
                    let request = format!(
                        "PUT /items/h{t}-{i} HTTP/1.1\r\nHost: app\r\nCookie: pad={pad}\r\nContent-Length: 0\r\n\r\n"
                    );
                    reader.get_mut().write_all(request.as_bytes()).unwrap();
                    let (mut status, mut length) = (String::new(), 0);
                    reader.read_line(&mut status).unwrap();
                    assert!(status.starts_with("HTTP/1.1 201"), "{status}");
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = n.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let mirroring = root.status()["mirroring"].clone();
    let full = mirroring["counters"]["queue_full"].as_u64().unwrap();
    assert!(full >= 300, "{mirroring}");
    // Those waiting hold at most 256 MiB of heads.
    let queued = mirroring["queued"].as_u64().unwrap();
    assert!(queued * 60_000 <= 256 << 20, "{mirroring}");
    root.wait_log("the mirrored copies queued and out already hold 256 MiB");
}

/// A restart loses no copy: the standby stops after the active has answered its writes
/// and the queued copies are sent, and at the start the copies wait for the standby's
/// first generation. Both slots stopped together, and copies went out at once: those
/// queued at the stop, and those of the writes taken while the standby started, found
/// no standby (`standby_down`).
#[test]
fn a_restart_sends_every_copy_to_the_standby() {
    // Green takes 300 ms per answer (its readiness probe too): its copies queue up, and
    // at the start it is live well after blue.
    let mut root = slow_green("300", &[]);
    for i in 0..8 {
        assert_eq!(put(&root, &format!("/items/before{i}"), "x"), 201);
    }
    root.stop_cleanly(Duration::from_secs(20));
    let data = root.path.join("green/shared/data");
    let on_green = || std::fs::read_dir(&data).unwrap().count();
    assert_eq!(on_green(), 8, "{}", root.log());
    root.serve();
    // Blue is live before green: the copy waits for green.
    assert_eq!(put(&root, "/items/after", "x"), 201);
    root.stop_cleanly(Duration::from_secs(20));
    assert_eq!(on_green(), 9, "{}", root.log());
    assert!(!root.log().contains("not mirrored"), "{}", root.log());
}

#[test]
fn a_stop_tells_every_copy_it_did_not_send() {
    // Green takes 2 s per copy: of ten writes made one after another, whose copies go
    // out one at a time, one is out and nine wait when the daemon is told to stop, and
    // the 5 s the stop gives the queue are over before they are all sent.
    let mut root = slow_green("2000", &[("app.drain_timeout", "1s".into())]);
    for i in 0..10 {
        assert_eq!(put(&root, &format!("/items/s{i}"), "x"), 201);
    }
    root.stop_cleanly(Duration::from_secs(20));
    let on_green = std::fs::read_dir(root.path.join("green/shared/data"))
        .unwrap()
        .count();
    // Each copy not sent is in the log: a line of its own, or counted in one.
    let log = root.log();
    let number = |text: &str| -> usize {
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap()
    };
    let mut told = 0;
    for line in log.lines() {
        if let Some((_, rest)) = line.split_once("not mirrored: ") {
            told += 1;
            if let Some((_, more)) = rest.split_once("(and ") {
                told += number(more);
            }
        } else if let Some((before, _)) = line.split_once(" more copies not mirrored") {
            told += number(before.rsplit(' ').next().unwrap());
        } else if let Some((before, _)) = line.split_once(" mirrored writes were still queued") {
            told += number(before.rsplit(' ').next().unwrap());
        }
    }
    assert_eq!(on_green + told, 10, "{on_green} on green\n{log}");
}

/// A write whose body a drain's end cut off is told as such: the log said the active
/// slot had answered it, when the client got nothing.
#[test]
fn a_write_a_drain_cut_off_is_not_said_to_be_answered() {
    let mut root = slow_green("0", &[("app.drain_timeout", "1s".into())]);
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", root.front)).unwrap();
    write!(
        stream,
        "PUT /items/slow HTTP/1.1\r\nHost: app\r\nContent-Length: 1000\r\n\r\nthe start"
    )
    .unwrap();
    stream.flush().unwrap();
    wait_for(Duration::from_secs(10), "the write in flight", || {
        (root.status()["slots"]["blue"]["live"]["in_flight"] == 1).then_some(())
    });
    root.stop_cleanly(Duration::from_secs(20));
    let log = root.log();
    assert!(
        log.contains("not mirrored: PUT /items/slow: the client's body had not ended when the request was cut off (the client went away, or a drain's end)"),
        "{log}"
    );
    assert!(!log.contains("when the active slot answered"), "{log}");
}

/// The standby's answer to a copy is dropped as it comes, never gathered: with the
/// standby answering each copy with 64 MiB (`GET /bytes/...` mirrored here), the daemon's
/// peak memory stays far below one answer. Gathered, three at once took it past 190 MiB.
/// The copy counts as sent at its answer's head.
#[test]
fn a_standby_answering_copies_with_large_bodies_holds_no_memory_for_them() {
    let methods = toml::Value::Array(vec!["GET".into()]);
    let root = blue_live_with(&[("mirror.methods", methods)]);
    root.push("green").says("green: live in ");
    let big = 64 << 20;
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                use std::io::{Read, Write};
                let mut stream = std::net::TcpStream::connect(("127.0.0.1", root.front)).unwrap();
                write!(
                    stream,
                    "GET /bytes/{big} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).unwrap();
                assert!(answer.starts_with(b"HTTP/1.1 200"));
                assert!(answer.len() > big, "{} bytes", answer.len());
            });
        }
    });
    wait_for(Duration::from_secs(30), "three copies sent", || {
        (root.status()["mirroring"]["counters"]["sent"] == 3).then_some(())
    });
    let peak = peak_rss_kib(root.serve_pid());
    assert!(peak < 48 << 10, "the daemon's peak RSS was {peak} KiB");
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

/// A write that comes as the standby crashes: its copy waits for the standby's restart,
/// as copies to a standby whose restart is on its way do. For the moments the crashed
/// generation's output was read (up to 250 ms when a helper it started holds its pipe),
/// the slot looked down for good, and the copy was dropped as `standby_down`.
#[test]
fn a_write_as_the_standby_crashes_is_copied_once_it_restarts() {
    let root = blue_live_with(&[(
        "app.command",
        format!("sh -c 'sleep 600 & exec {BIN} sample-app'").into(),
    )]);
    root.push("green").says("green: live in ");
    let pid = nix::unistd::Pid::from_raw(root.live_pid("green"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_for(Duration::from_secs(5), "green's route to go", || {
        root.get(root.green, "/").status.eq(&503).then_some(())
    });
    let post = http(
        "POST",
        &root.url(root.front, "/items/written-as-it-fell"),
        Some("x"),
    )
    .unwrap();
    assert_eq!(post.status, 201, "{}", post.body);
    green_gets(&root, "written-as-it-fell");
    let counters = &root.status()["mirroring"]["counters"];
    assert_eq!(counters["standby_down"], 0, "{counters}");
}
