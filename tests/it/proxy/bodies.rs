//! Bodies both ways: uploads answered early or abandoned, answers broken off, a client
//! that gives up, trailers.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::*;

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
