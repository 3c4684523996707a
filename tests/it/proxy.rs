//! The slot listener's data path as a client sees it: what reaches the worker (origin-form
//! target, proxy headers), upgraded connections (tunnels), TCP keepalive, an upload
//! the client abandons, and a request whose client gives up.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::*;

#[test]
fn the_worker_gets_origin_form_targets_and_the_proxy_headers() {
    let root = blue_live();
    // A proxy-style absolute target arrives in origin form, with its host as Host.
    let absolute = raw(
        root.blue,
        "GET http://example.com/request?x=1 HTTP/1.1\r\nHost: other.example\r\nX-Forwarded-For: 10.0.0.1\r\nConnection: close, x-hop\r\nX-Hop: 1\r\nTE: trailers\r\nKeep-Alive: timeout=5\r\n\r\n",
    );
    assert!(absolute.starts_with("HTTP/1.1 200"), "{absolute}");
    for line in [
        "target: /request?x=1\n",
        "host: example.com\n",
        "x-forwarded-for: 10.0.0.1, 127.0.0.1\n",
        "x-forwarded-proto: http\n",
        "x-forwarded-host: example.com\n",
    ] {
        assert!(absolute.contains(line), "no {line:?} in {absolute}");
    }
    // Hop-by-hop: `Connection` is not forwarded, nor the header it names, nor `TE`.
    let (_, received) = absolute.split_once("\r\n\r\n").unwrap();
    for name in ["connection: ", "x-hop: ", "te: ", "keep-alive: "] {
        assert!(
            !received.lines().any(|line| line.starts_with(name)),
            "the worker got {name:?}: {absolute}"
        );
    }
    // Credentials in an absolute-form target never reach the worker: refused (RFC 9110
    // §4.2.4 has a recipient treat userinfo as an error).
    let credentials = raw(
        root.blue,
        "GET http://user:secret@example.com:8080/request HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(credentials.starts_with("HTTP/1.1 400"), "{credentials}");
    assert!(!credentials.contains("secret"), "{credentials}");
    // An HTTP/1.0 client without Host: the worker still gets a Host.
    let old = raw(root.blue, "GET /request HTTP/1.0\r\n\r\n");
    assert!(old.contains("target: /request\n"), "{old}");
    assert!(old.contains("host: 127.0.0.1:"), "{old}");
}

/// An HTTP/1.0 keep-alive client and a worker's chunked answer: the client cannot take
/// chunks, so the answer runs until the connection closes, without keep-alive (an
/// HTTP/1.0 answer's default is to close). It said `Connection: keep-alive`, and the next
/// request the client had sent went unanswered without a word. An answer of known length
/// keeps the connection.
#[test]
fn an_http10_client_is_told_the_connection_closes_after_an_answer_of_unknown_length() {
    let root = blue_live();
    let two = |first: &str| {
        raw(
            root.blue,
            &format!("GET {first} HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /bytes/3 HTTP/1.0\r\n\r\n"),
        )
    };
    let chunked = two("/bytes/5?chunked");
    let (head, body) = chunked.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200"), "{chunked}");
    assert!(
        !head.to_ascii_lowercase().contains("keep-alive"),
        "{chunked}"
    );
    // Closed after it: the second request is not answered on it.
    assert_eq!(body, "xxxxx", "{chunked}");
    // Known length: kept alive, and the next request is answered on it.
    let known = two("/bytes/5");
    assert!(
        known
            .to_ascii_lowercase()
            .contains("connection: keep-alive"),
        "{known}"
    );
    assert!(known.ends_with("\r\n\r\nxxx"), "{known}");
}

/// An upgraded connection to `port`'s `GET /echo` (the sample app's echo protocol), read
/// up to the end of the `101` head, and the greeting line that follows it.
fn echo_tunnel(port: u16) -> (std::io::BufReader<std::net::TcpStream>, String) {
    echo_tunnel_offering(port, "echo")
}

/// [`echo_tunnel`], with `protocols` as the request's `Upgrade`.
fn echo_tunnel_offering(
    port: u16,
    protocols: &str,
) -> (std::io::BufReader<std::net::TcpStream>, String) {
    use std::io::BufRead;
    let request = format!(
        "GET /echo HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: {protocols}\r\n\r\n"
    );
    let stream = sent(port, request.as_bytes());
    let mut reader = std::io::BufReader::new(stream);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert_ne!(reader.read_line(&mut head).unwrap(), 0, "closed: {head}");
    }
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_lowercase().contains("upgrade: echo\r\n"), "{head}");
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    (reader, greeting)
}

/// Sends `line` through the tunnel and reads what comes back (nothing once it is closed).
fn echo(tunnel: &mut std::io::BufReader<std::net::TcpStream>, line: &str) -> String {
    use std::io::{BufRead, Write};
    // A write to a closed tunnel may fail; the read then tells (EOF: nothing back).
    let _ = tunnel.get_mut().write_all(line.as_bytes());
    let mut back = String::new();
    if let Err(e) = tunnel.read_line(&mut back) {
        panic!("the tunnel neither answered nor closed: {e}");
    }
    back
}

#[test]
fn an_upgraded_connection_is_tunnelled_and_closed_when_its_generation_stops() {
    // Long enough that a drain waiting for the tunnels would show.
    let mut root = blue_live_with(&[("app.drain_timeout", "60s".into())]);
    let old_pid = root.live_pid("blue");
    let (mut slot, greeting) = echo_tunnel(root.blue);
    assert!(greeting.starts_with("echo from blue "), "{greeting}");
    assert!(greeting.ends_with(" v1\n"), "{greeting}");
    let (mut front, greeting) = echo_tunnel(root.front);
    assert!(greeting.starts_with("echo from blue "), "{greeting}");
    assert_eq!(echo(&mut slot, "ping\n"), "ping\n");
    assert_eq!(echo(&mut front, "pong\n"), "pong\n");
    assert_eq!(
        root.status()["slots"]["blue"]["live"]["in_flight"],
        0,
        "a tunnel is not a request in flight"
    );

    // An upgrade the worker declines stays plain HTTP.
    let declined = raw(
        root.blue,
        "GET / HTTP/1.1\r\nHost: app\r\nConnection: upgrade, close\r\nUpgrade: echo\r\n\r\n",
    );
    assert!(declined.starts_with("HTTP/1.1 200"), "{declined}");
    assert!(declined.contains("v1 from blue"), "{declined}");

    // A deploy: the old generation does not wait for its tunnels; once it is stopped
    // they are closed, and a new tunnel reaches v2.
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    wait_for(
        Duration::from_secs(20),
        "the old process group to be gone",
        || group_gone(old_pid).then_some(()),
    );
    assert_eq!(
        echo(&mut slot, "still there?\n"),
        "",
        "the tunnel was closed"
    );
    assert_eq!(
        echo(&mut front, "still there?\n"),
        "",
        "the tunnel was closed"
    );
    let (mut open, greeting) = echo_tunnel(root.blue);
    assert!(
        greeting.ends_with(" v2\n"),
        "a new tunnel reaches v2: {greeting}"
    );
    assert_eq!(echo(&mut open, "ping\n"), "ping\n");

    // A tunnel still open does not keep the daemon from stopping.
    root.stop_cleanly(Duration::from_secs(10));
    assert_eq!(root.processes(), Vec::<u32>::new(), "no worker survives");
}

#[test]
fn an_http_1_0_request_asking_to_upgrade_is_served_as_a_plain_request() {
    // Upgrade is HTTP/1.1's (RFC 9110 §7.8): the worker gets the request without it, and
    // answers it as any other, where it would have switched protocols.
    let root = blue_live();
    let answer = raw(
        root.blue,
        "GET /echo HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.0 404"), "{answer}");
    assert!(answer.ends_with("no route /echo\n"), "{answer}");
}

#[test]
fn an_upgrade_to_http_itself_is_never_tunnelled() {
    // Through an h2c tunnel, requests would reach the worker past the proxy's header work
    // (a remote client's own X-Forwarded-For taken as the proxy's word): the worker gets
    // a plain request instead, which the sample app answers as any other.
    let root = blue_live();
    let h2c = raw(
        root.blue,
        "GET /echo HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    );
    assert!(h2c.starts_with("HTTP/1.1 404"), "{h2c}");
    assert!(h2c.ends_with("no route /echo\n"), "{h2c}");
    for http in ["HTTP/2.0", "h2"] {
        let answer = raw(
            root.front,
            &format!("GET /echo HTTP/1.1\r\nHost: app\r\nConnection: upgrade, close\r\nUpgrade: {http}\r\n\r\n"),
        );
        assert!(answer.starts_with("HTTP/1.1 404"), "{http}: {answer}");
    }
    // Offered beside another protocol, that one is what the worker is asked for.
    let (mut tunnel, greeting) = echo_tunnel_offering(root.blue, "h2c, echo");
    assert!(greeting.starts_with("echo from blue "), "{greeting}");
    assert_eq!(echo(&mut tunnel, "ping\n"), "ping\n");
    // A worker that switches to h2c anyway (`?as=h2c`) gets the client a 502, counted as
    // the 502 the client got, not as the worker's 101.
    let switched = raw(
        root.blue,
        "GET /echo?as=h2c HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, close\r\nUpgrade: echo\r\n\r\n",
    );
    assert!(switched.starts_with("HTTP/1.1 502"), "{switched}");
    assert!(
        switched.contains("switched to h2c, which is not tunnelled"),
        "{switched}"
    );
    let metrics = root.control("GET", "/metrics").body;
    let counted =
        |class: &str| format!("bluegreen_requests_total{{slot=\"blue\",class=\"{class}\"}}");
    assert!(
        metrics.contains(&format!("{} 1\n", counted("5xx"))),
        "{metrics}"
    );
    // The one tunnel above.
    assert!(
        metrics.contains(&format!("{} 1\n", counted("1xx"))),
        "{metrics}"
    );
}

#[test]
fn a_request_with_a_body_tells_the_worker_to_close_unless_the_app_reads_every_body() {
    // A worker that left the body unread would take it for its next request, and every
    // answer after it on a reused connection would go to another client: told to close,
    // it reads no further. (The sample app shows GET /request's headers, body or not.)
    let with_body =
        "GET /request HTTP/1.1\r\nHost: app\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody";
    let without = "GET /request HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n";
    for (reuse_after_body, told) in [(false, true), (true, false)] {
        let root = blue_live_with(&[("app.reuse_after_body", reuse_after_body.into())]);
        for port in [root.blue, root.front] {
            // What the worker got, after the head of its answer.
            let received = |request| {
                let answer = raw(port, request);
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
                answer.split_once("\r\n\r\n").unwrap().1.to_string()
            };
            let got = received(with_body);
            assert_eq!(got.contains("connection: close\n"), told, "{got}");
            let got = received(without);
            assert!(!got.contains("connection:"), "{got}");
            // Asking to upgrade does not get a body past it: a handshake has no body,
            // and one with a body is a plain request.
            let got = received("GET /request HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, close\r\nUpgrade: echo\r\nContent-Length: 4\r\n\r\nbody");
            assert_eq!(got.contains("connection: close\n"), told, "{got}");
            assert!(!got.contains("upgrade"), "{got}");
        }
    }
}

#[test]
fn an_answer_the_worker_breaks_off_is_cut_short_for_the_client_and_logged() {
    use std::io::Read;
    let root = blue_live();
    let pid = root.live_pid("blue");
    // 64 MiB: far more than the sockets and the proxy hold, so the worker is still
    // writing when it dies.
    let mut stream = sent(
        root.blue,
        b"GET /bytes/67108864 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    );
    let mut first = vec![0; 64 * 1024];
    let got = stream.read(&mut first).unwrap();
    assert!(
        String::from_utf8_lossy(&first[..got]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first[..got])
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let mut rest = Vec::new();
    // The connection ends (hyper closes it), well before 64 MiB.
    let _ = stream.read_to_end(&mut rest);
    assert!(got + rest.len() < 64 << 20, "the whole answer came");
    root.wait_log("blue generation 1's answer broke off after its head: ");
}

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
fn an_upload_answered_early_reaches_its_client_as_the_answer() {
    // The sample app's POST /first-chunk answers once the body's first piece is in and
    // reads no more, as an app refusing an upload with a 413 does, and closes: hyper's
    // client saw the write under the rest of the body fail before it read the answer,
    // and the client got a 502 "did not answer". Green, with no release, answers its
    // 503 to such an upload too.
    let root = blue_live();
    for (port, status, text) in [
        (root.blue, "200", "\r\n\r\nfirst: x"),
        (root.front, "200", "\r\n\r\nfirst: x"),
        (root.green, "503", "green has no release yet"),
        (root.blue, "200", "\r\n\r\nfirst: x"),
    ] {
        let answer = upload_answered(port, 16 << 20);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(answer.contains(text), "{answer}");
    }
}

#[test]
fn a_worker_answer_before_the_upload_ends_says_the_connection_closes() {
    // POST /first-chunk answers once the body's first piece is in: the rest, not sent
    // yet, may never be read, and hyper then closes the connection. Said, so that a
    // keep-alive client does not send its next request into it.
    let root = blue_live();
    for port in [root.blue, root.front] {
        let mut stream = sent(
            port,
            b"POST /first-chunk HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\nfirst",
        );
        let early = head_of(&mut stream);
        assert!(early.starts_with("http/1.1 200"), "port {port}: {early}");
        assert!(
            early.contains("\r\nconnection: close\r\n"),
            "port {port}: {early}"
        );
        // An upload the worker read whole before answering keeps its connection, whether
        // its length was given or its end is the last chunk.
        for upload in [
            &b"POST /items/x HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhello"[..],
            b"POST /items/y HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ] {
            let whole = head_of(&mut sent(port, upload));
            assert!(whole.starts_with("http/1.1 201"), "port {port}: {whole}");
            assert!(!whole.contains("connection: close"), "port {port}: {whole}");
        }
    }
}

/// What a client sending `POST /first-chunk` with a body of `size` bytes reads, the whole
/// upload sent meanwhile (or refused part way); a reset fails the test.
fn upload_answered(port: u16, size: usize) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let head =
            format!("POST /first-chunk HTTP/1.1\r\nHost: app\r\nContent-Length: {size}\r\n\r\n");
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&vec![b'x'; size]);
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(read.is_ok(), "{read:?} after {answer:?}");
    sending.join().unwrap();
    answer
}

#[test]
fn an_upload_the_client_abandons_is_not_blamed_on_the_worker() {
    use std::io::Read;
    let root = blue_live();
    let mut stream = sent(
        root.blue,
        b"POST /items/x HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\n\r\nonly ten b",
    );
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(!answer.contains(" 502 "), "{answer}");
    wait_for(Duration::from_secs(5), "the request to be counted", || {
        let metrics = root.control("GET", "/metrics").body;
        metrics
            .contains("bluegreen_requests_total{slot=\"blue\",class=\"4xx\"} 1")
            .then_some(())
    });
    let metrics = root.control("GET", "/metrics").body;
    assert!(
        metrics.contains("bluegreen_requests_total{slot=\"blue\",class=\"5xx\"} 0")
            || !metrics.contains("slot=\"blue\",class=\"5xx\""),
        "{metrics}"
    );
    assert!(!root.log().contains("did not answer"), "{}", root.log());
}

#[test]
fn a_client_that_gives_up_cancels_its_request_upstream() {
    let root = blue_live_with(&[("heartbeat.timeout", "15s".into())]);
    // Every answer, the health check's too, takes 8 s: longer than both waits below
    // together, so only a cancel can bring the count back to 0 in time.
    root.commit("slow", &[("VERSION", "v2\n"), ("SLOW_MS", "8000")]);
    root.push("blue").says("blue: live in ");
    let in_flight = || root.status()["slots"]["blue"]["live"]["in_flight"].as_u64();
    let stream = sent(root.blue, b"GET / HTTP/1.1\r\nHost: app\r\n\r\n");
    wait_for(Duration::from_secs(3), "the request in flight", || {
        (in_flight() == Some(1)).then_some(())
    });
    drop(stream);
    // Before the worker's answer (8 s after the request), it no longer counts: a drain
    // would not wait for it.
    wait_for(
        Duration::from_secs(3),
        "the request to be cancelled",
        || (in_flight() == Some(0)).then_some(()),
    );
}

#[test]
fn a_slot_with_no_live_generation_answers_503_with_the_reason() {
    let root = blue_live();
    let answer = root.get(root.green, "/");
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(
        answer.body,
        "green has no release yet: git push green HEAD:main\n"
    );
    // To a request whose body has not come yet, the 503 says the connection closes
    // (hyper closes it, the body unread): it did not, and a keep-alive client's next
    // request went into a closed connection (a soak saw 151 after worker kills).
    let head = |request: &str| head_of(&mut sent(root.green, request.as_bytes()));
    let early = head("POST /items/x HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\n");
    assert!(early.starts_with("http/1.1 503"), "{early}");
    assert!(early.contains("\r\nconnection: close\r\n"), "{early}");
    let plain = head("GET / HTTP/1.1\r\nHost: app\r\n\r\n");
    assert!(!plain.contains("connection: close"), "{plain}");
    // An HTTP/1.0 client that asked for keep-alive: not `close, keep-alive`, which
    // hyper made of it, but an HTTP/1.0 answer without keep-alive.
    let old = head("POST /items/x HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n");
    assert!(old.starts_with("http/1.0 503"), "{old}");
    assert!(!old.contains("keep-alive"), "{old}");
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

#[test]
fn requests_without_one_valid_host_and_connect_are_refused_with_the_reason() {
    let root = blue_live();
    for (request, status, reason) in [
        (
            "GET /request HTTP/1.1\r\nConnection: close\r\n\r\n",
            "400",
            "an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)",
        ),
        (
            "GET /request HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            "400",
            "more than one Host header (RFC 9112 §3.2)",
        ),
        (
            "GET /request HTTP/1.1\r\nHost: evil.example/x?\r\nConnection: close\r\n\r\n",
            "400",
            "the Host header is not a host and port (RFC 9112 §3.2)",
        ),
        (
            "GET /request HTTP/1.1\r\nHost: user@evil.example\r\nConnection: close\r\n\r\n",
            "400",
            "the Host header is not a host and port (RFC 9112 §3.2)",
        ),
        (
            "GET /request HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
            "400",
            "the Host header is not a host and port (RFC 9112 §3.2)",
        ),
        (
            "GET http://evil.example:abc/request HTTP/1.1\r\nHost: good\r\nConnection: close\r\n\r\n",
            "400",
            "the request target's host is not a host and port (RFC 9112 §3.2.2)",
        ),
        (
            "GET http://user:pw@evil.example/request HTTP/1.1\r\nHost: good\r\nConnection: close\r\n\r\n",
            "400",
            "the request target's host is not a host and port (RFC 9112 §3.2.2)",
        ),
        (
            "TRACE /request HTTP/1.1\r\nHost: a\r\nCookie: secret=1\r\nConnection: close\r\n\r\n",
            "501",
            "TRACE is not proxied",
        ),
        (
            "GET * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "400",
            "the request target `*` is OPTIONS's only (RFC 9112 §3.2.4)",
        ),
        (
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
            "501",
            "CONNECT is not proxied",
        ),
        (
            "GET example.com:80 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
            "400",
            "the request target is neither a path (/...) nor an absolute URL (a host:port target is CONNECT's only, RFC 9112 §3.2)",
        ),
        (
            "GET echo HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
            "400",
            "the request target is neither a path (/...) nor an absolute URL (a host:port target is CONNECT's only, RFC 9112 §3.2)",
        ),
        (
            "POST /items/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "501",
            "Transfer-Encoding `gzip, chunked`: only chunked is supported",
        ),
    ] {
        let answer = raw(root.blue, request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")) && answer.ends_with(&format!("{reason}\n")),
            "{request:?}: {answer}"
        );
    }
    // `OPTIONS *` is the one that may name `*`: it reaches the worker.
    let answer = raw(
        root.blue,
        "OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(
        answer.ends_with("no route *\n"),
        "the worker's answer: {answer}"
    );
    // HTTP/1.0 needs none; `Connection: host` does not take Host away.
    let answer = raw(root.blue, "GET /request HTTP/1.0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    let answer = raw(
        root.blue,
        "GET /request HTTP/1.1\r\nHost: good.example\r\nConnection: host, close\r\n\r\n",
    );
    assert!(answer.contains("host: good.example\n"), "{answer}");
    // An empty Host is allowed (a target without an authority), and passed on as such.
    let answer = raw(
        root.blue,
        "GET /request HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
    );
    assert!(
        answer.contains("\r\n\r\ntarget: /request\nhost: \n"),
        "{answer}"
    );
    assert!(!root.get(root.blue, "/items").body.contains("\"x\""));
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

#[test]
fn an_absolute_form_target_with_no_path_keeps_its_query() {
    let root = blue_live();
    // `GET http://host?x=1` is `GET http://host/?x=1` (RFC 9112 §3.2.2, RFC 3986 §6.2.3):
    // the worker must get the query, not a bare `/`.
    let answer = raw(
        root.blue,
        "GET http://example.com?as-received HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("target: /?as-received\n"), "{answer}");
}

#[test]
fn an_answer_with_more_than_100_headers_reaches_the_client() {
    let root = blue_live();
    // 120 cookies are 1.5 KB of head: far under any size limit, but hyper's client
    // parses at most 100 header fields unless told otherwise.
    let answer = raw(
        root.blue,
        "GET /many-headers/120 HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    );
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        &answer[..answer.len().min(300)]
    );
    assert_eq!(answer.matches("set-cookie: c").count(), 120, "{answer}");
    assert!(answer.ends_with("120 headers\n"), "{answer}");
}

/// A worker's hop-by-hop headers stay on its hop: `Keep-Alive`, `Connection` and the
/// headers it names never reach the client; the others do.
#[test]
fn a_workers_hop_by_hop_headers_do_not_reach_the_client() {
    let root = blue_live();
    let answer = raw(
        root.blue,
        "GET /hop-by-hop HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let head = answer.to_lowercase();
    assert!(head.contains("\r\nx-kept: yes\r\n"), "{answer}");
    for hop in ["keep-alive:", "x-hop:", "connection: x-hop"] {
        assert!(!head.contains(&format!("\r\n{hop}")), "{hop} in {answer}");
    }
}

/// A chunked request body with trailers (dropped, as the README says) is a body that
/// ended: its answer kept the client's connection open. It was taken for an answer that
/// came before the body's end, said `Connection: close`, and a request pipelined behind
/// it went unanswered.
#[test]
fn a_chunked_body_with_trailers_keeps_the_connection() {
    use std::io::Read;
    let root = blue_live();
    let mut stream = sent(
        root.blue,
        b"POST /items/t HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1\r\nHost: app\r\n\r\n",
    );
    let mut said = String::new();
    let mut chunk = [0u8; 4096];
    let answered = poll_until(Duration::from_secs(10), || {
        let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
        said.push_str(&String::from_utf8_lossy(&chunk[..n]));
        (said.contains("v1 from blue")).then_some(())
    });
    assert!(answered.is_some(), "{said}");
    assert!(said.starts_with("HTTP/1.1 201"), "{said}");
    assert!(
        !said.to_ascii_lowercase().contains("connection: close"),
        "{said}"
    );
}
