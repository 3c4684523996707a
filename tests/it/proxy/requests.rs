//! What reaches the worker and what is refused before it: the origin-form target, the
//! proxy headers, `Host` checks, a 503 with no live generation, hop-by-hop headers.

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
