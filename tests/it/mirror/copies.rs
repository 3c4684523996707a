//! What reaches the standby: each write the active answered is copied, once, with its
//! body; what cannot be (a full queue, a body past the bound, a stopped standby) is counted
//! and said.

use std::time::Duration;

use super::*;
use crate::util::*;

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
        // The copy is marked as one (README "Mirroring"); the active's write is not.
        assert!(stored.contains("x-bluegreen-mirror: 1\n"), "{stored}");
        let active = root.get(root.blue, "/items/headers").body;
        assert!(!active.contains("x-bluegreen-mirror"), "{active}");
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
