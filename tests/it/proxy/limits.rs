//! The data path's bounds: head size, timeouts for heads, bodies and idle clients, the
//! connection cap and the file limit, TCP keepalive, memory for slow readers.

use std::time::Duration;

use super::*;
use crate::util::*;

/// The kernel's timer on the TCP connection from `local` to `remote` (both on
/// 127.0.0.1), as `/proc/net/tcp` shows it: (kind, seconds until it fires).
fn tcp_timer(local: u16, remote: u16) -> Option<(u32, f64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let hz = 100.0; // USER_HZ, in which /proc/net/tcp counts
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
        if port(fields[1])? != local || port(fields[2])? != remote {
            return None;
        }
        let (kind, when) = fields[5].split_once(':')?;
        Some((
            kind.parse().ok()?,
            u64::from_str_radix(when, 16).ok()? as f64 / hz,
        ))
    })
}

#[test]
fn a_client_connection_has_tcp_keepalive() {
    use std::io::BufRead;
    let root = blue_live();
    // A keep-alive connection, idle after its first answer, as a tunnel to a client that
    // vanished would be.
    let stream = sent(root.blue, b"GET / HTTP/1.1\r\nHost: app\r\n\r\n");
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let client = stream.local_addr().unwrap().port();
    // On the daemon's end of it, the kernel's keepalive timer runs (kind 2, about a
    // minute away; without keepalive an idle connection has no timer, and a delayed ACK
    // is kind 2 too but fires within a second).
    let (_, seconds) = wait_for(
        Duration::from_secs(10),
        "the keepalive timer on the daemon's end",
        || tcp_timer(root.blue, client).filter(|(kind, when)| *kind == 2 && *when > 30.0),
    );
    assert!(
        seconds <= 60.0,
        "idle time before the first probe: {seconds} s"
    );
}

#[test]
fn an_oversized_request_head_is_refused_with_431() {
    let root = blue_live();
    // Well past the 64 KiB limit, however hyper's reads fall.
    let big = "x".repeat(300 * 1024);
    let answer = raw(
        root.blue,
        &format!("GET / HTTP/1.1\r\nHost: app\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"),
    );
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert!(root.get(root.blue, "/").body.starts_with("v1 from blue"));
}

/// The files the data path's cap leaves free are not the control API's to take without
/// end: a local process holding 300 idle connections to it (a monitor that leaks them)
/// took every one, and the front and slot ports accepted nothing (`Too many open files`)
/// until hyper closed them 30 s later. The control API holds at most 64 open.
#[test]
fn connections_held_open_to_the_control_api_leave_the_data_path_its_files() {
    use std::io::Read;
    let mut root = Root::new();
    root.serve_limited(&[], Some(304));
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    let files = || {
        std::fs::read_dir(format!("/proc/{}/fd", root.serve_pid()))
            .unwrap()
            .count()
    };
    let before = files();
    let held: Vec<std::net::TcpStream> = (0..300)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", root.control)).unwrap())
        .collect();
    // The daemon has taken as many as it will (all it could, before the cap).
    wait_for(Duration::from_secs(10), "the daemon to take 64", || {
        (files() >= before + 64).then_some(())
    });
    for port in [root.front, root.blue] {
        let mut request = sent(
            port,
            b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
        );
        request
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        request.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    drop(held);
    // Once they are let go, the control API answers again.
    assert_eq!(root.status()["active"], "blue");
}

/// A switch under load at the connection cap: every client's next request needs a
/// connection to the new active while those to the old one are still pooled idle, and
/// a client's connection back to the pool may not be there yet for its next request.
/// With two files counted per connection, the daemon ran out of them: a third of the
/// requests were `Too many open files` 502s. Counted three, clients past the cap wait.
#[test]
fn a_switch_at_the_connection_cap_makes_no_502s() {
    let mut root = Root::new();
    // (1024 - 256 reserved) / 3: 256 connections; before, / 2: 384.
    root.serve_limited(&[], Some(1024));
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    root.push("green").says("green: live in ");
    let answered = |slot: &str| -> u64 {
        let metrics = root.control("GET", "/metrics").body;
        let line = format!("bluegreen_requests_total{{slot=\"{slot}\",class=\"2xx\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0, |n| n.parse().unwrap())
    };
    // Clients past the cap wait in the backlog, and those the cap closes between two
    // requests fail as a strict client must: what may not come is an error of the daemon's.
    let (answers, failures) = under_strict_load(root.front, 340, || {
        for slot in ["blue", "green", "blue"] {
            let from = answered(slot);
            if slot != "blue" || from > 0 {
                let switched = root.control("POST", &format!("/switch?to={slot}&force=1"));
                assert_eq!(switched.status, 200, "{switched:?}");
            }
            wait_for(Duration::from_secs(30), "the active answering", || {
                (answered(slot) >= from + 2000).then_some(())
            });
        }
    });
    assert!(answers > 0);
    let own: Vec<&String> = failures
        .iter()
        .filter(|f| f.starts_with("http/1.1 5"))
        .collect();
    assert_eq!(own.len(), 0, "{:?}", &own[..own.len().min(3)]);
}

/// A file limit too low for the fewest connections the daemon serves is refused at the
/// start, before anything is bound or started: under `ulimit -n 64` it served 16
/// connections whatever the limit, and most requests were `Too many open files` 502s.
#[test]
fn a_file_limit_too_low_to_serve_is_refused_at_the_start() {
    use std::process::Stdio;
    let root = Root::new();
    let mut serve = std::process::Command::new("sh")
        .args(["-c", "ulimit -n 64 && exec \"$0\" serve --root \"$1\"", BIN])
        .arg(&root.path)
        .env_remove("BLUEGREEN_ROOT")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = poll_until(Duration::from_secs(10), || serve.try_wait().unwrap());
    if exited.is_none() {
        let _ = serve.kill();
        let _ = serve.wait();
        panic!("the daemon started under a file limit of 64");
    }
    let out = serve.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: the file limit is 64: bluegreen keeps 256 for itself and 3 per connection, and serves no fewer than 16 connections at once, which takes 304; raise it to 640 or more (LimitNOFILE= in the unit, ulimit -n)"
    );
    // Nothing was bound.
    std::net::TcpListener::bind(("127.0.0.1", root.front)).unwrap();
}

#[test]
fn at_the_file_limit_idle_connections_make_room_and_busy_ones_keep_theirs() {
    use std::io::Read;
    let mut root = Root::new();
    // (304 - 256 reserved) / 3: 16 connections open at once, the fewest served.
    root.serve_limited(&[], Some(304));
    root.commit("v1", &[("VERSION", "v1\n")]);
    root.push("blue").says("blue: live in ");
    let get = || {
        let stream = sent(
            root.blue,
            b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
        );
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        stream
    };

    // Connections that send nothing fill the cap: they are closed to make room.
    let idle: Vec<std::net::TcpStream> = (0..30)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", root.blue)).unwrap())
        .collect();
    root.wait_log("16 connections open, the most the file limit allows: idle ones are closed");
    root.wait_log("the file limit is 304: bluegreen keeps 256 for itself and 3 per connection, so at most 16 connections are served at once (the rest wait); raise it to 640 or more");
    let mut answer = String::new();
    let mut request = get();
    request
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    request.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(idle);

    // Tunnels are busy for as long as they are open (hyper's connection ends at the
    // upgrade, the tunnel keeps its place): a request beyond them waits in the backlog,
    // unanswered, while the control API (its own files) still answers.
    let mut tunnels: Vec<_> = (0..16).map(|_| echo_tunnel(root.blue).0).collect();
    let mut waiting = get();
    let mut answer = String::new();
    assert!(waiting.read_to_string(&mut answer).is_err(), "{answer}");
    assert_eq!(root.status()["active"], "blue");
    assert_eq!(echo(&mut tunnels[0], "still there\n"), "still there\n");
    drop(tunnels.pop());
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    waiting.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_head_that_stops_coming_and_an_idle_connection_are_closed_but_a_slow_answer_is_not() {
    use std::io::{Read, Write};
    // The head limit is 30 s, or `router.client_timeout` if shorter.
    let root = blue_live_with(&[("router.client_timeout", "1s".into())]);
    let closes = |mut stream: std::net::TcpStream, what: &str| {
        // `sent` gave it a 10 s read timeout: an error rather than the end if it stays open.
        if let Err(e) = stream.read_to_end(&mut Vec::new()) {
            panic!("{what} was not closed: {e}");
        }
    };
    // Half a head, then nothing.
    let half = sent(root.blue, b"GET / HTTP/1.1\r\nHost: app\r\n");
    closes(half, "a connection whose head stopped coming");

    // Each answer takes longer than the head limit: the limit of the head before it must
    // not cut the connection meanwhile, nor the next request on it.
    root.commit("slow", &[("VERSION", "v2\n"), ("SLOW_MS", "1500")]);
    root.push("blue").says("blue: live in ");
    let mut kept = sent(root.blue, b"GET / HTTP/1.1\r\nHost: app\r\n\r\n");
    let mut answers = String::new();
    let mut piece = [0u8; 4096];
    for second in [false, true] {
        while answers.matches("v2 from blue").count() < 1 + usize::from(second) {
            let n = kept.read(&mut piece).unwrap();
            assert!(n > 0, "closed while an answer was under way: {answers}");
            answers += &String::from_utf8_lossy(&piece[..n]);
        }
        if !second {
            kept.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
                .unwrap();
        }
    }
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 2, "{answers}");
    // Then idle: closed.
    closes(kept, "an idle keep-alive connection");
}

#[test]
fn a_body_that_comes_slower_than_500_bytes_a_second_past_client_timeout_is_cut_off() {
    use std::io::{Read, Write};
    let root = blue_live_with(&[("router.client_timeout", "2s".into())]);
    // A byte every 1.5 s: never idle for the 2 s limit, yet 100 bytes would hold the
    // worker, which has the head already, for 150 s.
    let mut drip = sent(
        root.blue,
        b"PUT /items/drip HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\n\r\n",
    );
    drip.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut answer = vec![0; 4096];
    let mut got = None;
    for _ in 0..20 {
        let _ = drip.write_all(b"x");
        match drip.read(&mut answer) {
            Ok(n) => {
                got = Some(String::from_utf8_lossy(&answer[..n]).into_owned());
                break;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let answer = got.expect("still dripping after 20 bytes");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.ends_with("the request body came slower than 500 bytes/s for longer than 2s (router.client_timeout)\n"),
        "{answer}"
    );
    assert!(!root.get(root.blue, "/items").body.contains("drip"));

    // Slowly but above the rate (about 830 bytes/s, for longer than the limit): stored.
    let mut steady = sent(
        root.blue,
        b"PUT /items/steady HTTP/1.1\r\nHost: app\r\nContent-Length: 3000\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..6 {
        steady.write_all(&[b'y'; 500]).unwrap();
        std::thread::sleep(Duration::from_millis(600));
    }
    let mut answer = String::new();
    steady.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

#[test]
fn a_client_that_stops_sending_or_reading_is_cut_off_after_client_timeout() {
    use std::io::Read;
    let root = blue_live_with(&[("router.client_timeout", "1s".into())]);
    let in_flight = || root.status()["slots"]["blue"]["live"]["in_flight"].clone();

    // A body that stops after 3 of its 10 bytes: 408, and the worker's request ends.
    let mut stalled = sent(
        root.blue,
        b"PUT /items/x HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\nabc",
    );
    let mut answer = vec![0; 4096];
    let n = stalled.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.ends_with("no request body data for 1s (router.client_timeout)\n"),
        "{answer}"
    );
    wait_for(Duration::from_secs(10), "no request in flight", || {
        (in_flight() == 0).then_some(())
    });
    assert!(!root.get(root.blue, "/items").body.contains("\"x\""));

    // An answer far larger than the sockets' buffers, never read: cut off, no longer
    // in flight (a deploy's drain would otherwise wait for it).
    let big = "x".repeat(32 << 20);
    let stored = http("PUT", &root.url(root.blue, "/items/big"), Some(&big)).unwrap();
    assert_eq!(stored.status, 201);

    // A client that reads slowly but steadily is not cut: 160 KB/s, so that a waiting
    // write is woken only after seconds (once a third of a send buffer of up to 4 MiB
    // has drained), while the client's window, in loopback's 64 KiB segments, opens
    // several times a second.
    let mut slow = sent(root.blue, b"GET /items/big HTTP/1.1\r\nHost: app\r\n\r\n");
    wait_for(Duration::from_secs(10), "the slow answer in flight", || {
        (in_flight() == 1).then_some(())
    });
    let reading = std::time::Instant::now();
    let mut piece = [0u8; 16 * 1024];
    while reading.elapsed() < Duration::from_secs(3) {
        slow.read_exact(&mut piece).unwrap();
        // The client's pace, not a wait for anything.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(in_flight(), 1, "a steady reader was cut off");
    drop(slow);
    wait_for(
        Duration::from_secs(10),
        "the slow reader's request to end",
        || (in_flight() == 0).then_some(()),
    );
    let _unread = sent(root.blue, b"GET /items/big HTTP/1.1\r\nHost: app\r\n\r\n");
    wait_for(
        Duration::from_secs(10),
        "the unread answer in flight",
        || (in_flight() == 1).then_some(()),
    );
    wait_for(
        Duration::from_secs(15),
        "the unread answer to be cut off",
        || (in_flight() == 0).then_some(()),
    );
}

#[test]
fn downloads_the_clients_do_not_read_hold_little_of_the_daemons_memory() {
    const CLIENTS: u64 = 40;
    let root = blue_live();
    let pid = root.serve_pid();
    // One download read in full first: what every download allocates anyway is counted
    // before, what each stalled one holds after.
    let whole = raw(
        root.blue,
        "GET /bytes/1000000 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    );
    assert!(whole.ends_with(&"x".repeat(1000)), "{}", &whole[..200]);
    let before = rss_kib(pid);
    // 64 MiB each, more than the sockets on the way can hold, read by nobody: what the
    // sockets do not take waits in the daemon's buffers.
    let clients: Vec<std::net::TcpStream> = (0..CLIENTS)
        .map(|_| {
            let client = sent(
                root.blue,
                b"GET /bytes/67108864 HTTP/1.1\r\nHost: app\r\n\r\n",
            );
            nix::sys::socket::setsockopt(&client, nix::sys::socket::sockopt::RcvBuf, &4096)
                .unwrap();
            client
        })
        .collect();
    // Settled: the same for half a second.
    let mut last = (0, std::time::Instant::now());
    let held = wait_for(
        Duration::from_secs(20),
        "the daemon's memory to settle",
        || {
            let now = rss_kib(pid);
            if now != last.0 {
                last = (now, std::time::Instant::now());
            }
            (last.1.elapsed() >= Duration::from_millis(500)).then_some(now)
        },
    );
    let each = held.saturating_sub(before) / CLIENTS;
    // With hyper's default buffers each held about 1.2 MiB; now under 400 KiB.
    assert!(
        each < 600,
        "each stalled download holds {each} KiB of the daemon's memory"
    );
    drop(clients);
}
