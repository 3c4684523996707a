//! Mirroring across a switch, a restart and a stop: the target gets every write the
//! active took before the flip, and no copy lands after it.

use std::time::Duration;

use super::*;
use crate::util::*;

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
        events.contains("not switched (front): the migration for green failed: "),
        "{events}"
    );
    assert!(
        events.contains("exited with status 1: cannot reach the database"),
        "{events}"
    );
    root.wait_log("not switched (front): the migration for");
    assert_eq!(root.status()["active"], "blue");
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

/// A write whose body a drain's end cut off is told as not mirrored: the log said the
/// active slot had answered it, when the client got nothing. (At a stop, its client's
/// connection stays open until the worker is stopped, which then fails the request: the
/// active slot gave no answer.)
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
        log.contains("not mirrored: PUT /items/slow: the active slot gave no answer"),
        "{log}"
    );
    assert!(!log.contains("when the active slot answered"), "{log}");
}
