//! The headers the data path rewrites: hop-by-hop ones removed, `X-Forwarded-*` added.
//!
//! `Peer` is the client end of a connection, prepared once per connection: its address
//! as `X-Forwarded-For` gets it, and whether it is on this host (a TLS terminator, whose
//! `X-Forwarded-Proto`/`-Host` are kept).

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// Not standard, but sent by old clients; RFC 9110 §7.6.1 lists it among those an
/// intermediary should remove.
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// The client end of a connection: its address, and its IP as `X-Forwarded-For` gets
/// it (written once per connection, not per request).
#[derive(Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    ip: HeaderValue,
    /// A client on this host: a TLS terminator in front of us, whose
    /// `X-Forwarded-Proto`/`-Host` are kept (from anyone else they are overwritten).
    local: bool,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        let ip = addr.ip().to_canonical();
        Peer {
            addr,
            ip: HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a valid header value"),
            local: ip.is_loopback(),
        }
    }
}

const HOPS: usize = 9;
/// The hop-by-hop headers, in the order [`hop_by_hop`] numbers them.
const HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    KEEP_ALIVE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    PROXY_CONNECTION,
];
const CONNECTION: usize = 0;
const TRANSFER_ENCODING: usize = 6;

/// A name's place in [`HOP_BY_HOP`]. One `match` on the name's text, which compiles to
/// a few length and byte comparisons: comparing each name with eight `HeaderName`s cost
/// more than the rest of a small request's header work.
fn hop_by_hop(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-authenticate" => 2,
        "proxy-authorization" => 3,
        "te" => 4,
        "trailer" => 5,
        "transfer-encoding" => 6,
        "upgrade" => 7,
        "proxy-connection" => 8,
        _ => return None,
    })
}

/// The mark on mirrored copies (see `mirror::sender`); a client's own is removed.
pub const MIRROR_MARK: HeaderName = HeaderName::from_static("x-bluegreen-mirror");

/// What a client elsewhere may not tell the worker about the hops before us: the
/// client's address as a CDN or a load balancer would pass it on (`X-Real-IP`,
/// `True-Client-IP`, `CF-Connecting-IP`...), the scheme, port and prefix it came in by
/// (`Forwarded`, `X-Forwarded-Port`, `-Ssl`, `Front-End-Https`...), or the path it asked
/// for before a rewrite (`X-Original-URL`, which some frameworks serve instead of the
/// request's own), the host it asked for (`X-Original-Host`, `X-Host`), or the client
/// certificate a TLS terminator checked (`X-Forwarded-Client-Cert`). Only a proxy on
/// this host (a TLS terminator) may (see `Peer::local`).
fn relayed(name: &str) -> bool {
    matches!(
        name,
        "forwarded"
            | "x-forwarded-port"
            | "x-forwarded-prefix"
            | "x-forwarded-ssl"
            | "x-forwarded-scheme"
            | "x-forwarded-protocol"
            | "x-forwarded-server"
            | "x-forwarded-uri"
            | "x-url-scheme"
            | "front-end-https"
            | "x-real-ip"
            | "client-ip"
            | "x-client-ip"
            | "true-client-ip"
            | "cf-connecting-ip"
            | "fastly-client-ip"
            | "x-cluster-client-ip"
            | "x-original-forwarded-for"
            | "x-original-url"
            | "x-rewrite-url"
            | "x-original-host"
            | "x-host"
            | "x-forwarded-client-cert"
    )
}

/// Which side of the proxy a head came from.
#[derive(Clone, Copy, PartialEq)]
pub enum Side {
    /// A request from a client: also loses headers whose names have `_` (nginx's
    /// default: CGI-style apps read `X_Forwarded_Host` as `X-Forwarded-Host`), a forged
    /// mirror mark, and, unless the client is on this host, the [`relayed`] headers.
    Client { local: bool },
    /// A response from a worker.
    Worker,
}

/// The `X-Forwarded-*` headers a request still has once stripped (see [`strip`]).
#[derive(Default)]
struct Forwarded {
    for_: bool,
    proto: bool,
    host: bool,
}

impl Forwarded {
    /// Notes `name`, if it is one of them; false if not.
    fn note(&mut self, name: &str, present: bool) -> bool {
        match name {
            "x-forwarded-for" => self.for_ = present,
            "x-forwarded-proto" => self.proto = present,
            "x-forwarded-host" => self.host = present,
            _ => return false,
        }
        true
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names (never
/// `Host`), and `Content-Length` beside `Transfer-Encoding` (RFC 9112 §6.3: the body
/// is framed anew). Err when the message has a transfer coding other than `chunked`,
/// which would be lost on the way.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, side: Side) -> Result<(), String> {
    strip(headers, side).map(drop)
}

/// `strip_hop_by_hop`, in one pass over the names, which also notes the
/// `X-Forwarded-*` headers (so that `forward_headers` needs no lookup to know).
fn strip(headers: &mut HeaderMap, side: Side) -> Result<Forwarded, String> {
    plain_length(headers);
    let mut present = [false; HOPS];
    let mut any = false;
    let mut forwarded = Forwarded::default();
    let mut odd: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let text = name.as_str();
        if let Some(i) = hop_by_hop(text) {
            present[i] = true;
            any = true;
        } else if let Side::Client { local } = side {
            if forwarded.note(text, true) {
                continue;
            }
            if *name == MIRROR_MARK || text.contains('_') || (!local && relayed(text)) {
                odd.push(name.clone());
            }
        }
    }
    for name in &odd {
        headers.remove(name);
    }
    if !any {
        return Ok(forwarded);
    }
    if present[TRANSFER_ENCODING] {
        let codings = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        let only_chunked = codings
            .split(',')
            .map(str::trim)
            .all(|coding| coding.eq_ignore_ascii_case("chunked"));
        if !only_chunked {
            return Err(format!(
                "Transfer-Encoding `{codings}`: only chunked is supported"
            ));
        }
        headers.remove(header::CONTENT_LENGTH);
    }
    if present[CONNECTION] {
        // `Connection: keep-alive` and `close` name no header; anything else may.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| {
                !name.eq_ignore_ascii_case("keep-alive") && !name.eq_ignore_ascii_case("close")
            })
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .filter(|name| name != header::HOST)
            .collect();
        for name in &named {
            headers.remove(name);
            forwarded.note(name.as_str(), false);
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
    Ok(forwarded)
}

/// A `Content-Length` passed on as one plain number. hyper takes a list of equal values
/// (`5, 5`) and leading zeros (`005`), as RFC 9110 §8.6 lets a recipient, and frames the
/// body by them, but the header went on as written: Node's client refuses `5, 5`
/// (HPE_INVALID_CONTENT_LENGTH) and Python's read to the close. Values that differ, or
/// are not numbers, are left for hyper to refuse (a `HEAD` or 304 answer's is not read).
fn plain_length(headers: &mut HeaderMap) {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return;
    };
    let bytes = value.as_bytes();
    let listed_or_padded = bytes.contains(&b',') || (bytes.len() > 1 && bytes[0] == b'0');
    if !listed_or_padded {
        return;
    }
    let mut lengths = bytes
        .split(|b| *b == b',')
        .map(|part| std::str::from_utf8(part).ok()?.trim().parse::<u64>().ok());
    let Some(Some(first)) = lengths.next() else {
        return;
    };
    if lengths.all(|length| length == Some(first))
        && headers.get_all(header::CONTENT_LENGTH).iter().count() == 1
    {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(first));
    }
}

/// Adds the client to `X-Forwarded-For` (after every value it already had, one header
/// or several) and sets `X-Forwarded-Proto` and `-Host`, unless a local client (a TLS
/// terminator on this host) set them: it knows the scheme and host the user saw. A
/// request with no `Host` (HTTP/1.0) gets no `X-Forwarded-Host` from anyone else.
/// Err as `strip_hop_by_hop`.
pub fn forward_headers(headers: &mut HeaderMap, peer: &Peer) -> Result<(), String> {
    let had = strip(headers, Side::Client { local: peer.local })?;
    let mut forwarded_for = Some(peer.ip.clone());
    if had.for_ {
        let mut joined = Vec::new();
        for before in headers.get_all(X_FORWARDED_FOR) {
            joined.extend_from_slice(before.as_bytes());
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(peer.ip.as_bytes());
        forwarded_for = HeaderValue::from_bytes(&joined).ok();
    }
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !(peer.local && had.proto) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !(peer.local && had.host) {
        match headers.get(header::HOST).cloned() {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST, host);
            }
            None if had.host => {
                headers.remove(X_FORWARDED_HOST);
            }
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_match_numbers_each_hop_by_hop_header_as_the_list_does() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop(name.as_str()), Some(i), "{name}");
        }
        assert_eq!(hop_by_hop("host"), None);
    }

    #[test]
    fn a_forwarded_header_the_connection_header_names_is_set_anew() {
        // A local proxy's X-Forwarded-Proto would be kept, but `Connection` took it away.
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-forwarded-proto, x-forwarded-for"),
        );
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        forward_headers(&mut headers, &Peer::new("127.0.0.1:5000".parse().unwrap())).unwrap();
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    }

    /// A TLS terminator on this host connecting over IPv4 to a front on `[::]` is
    /// `::ffff:127.0.0.1`: still this host, so its `X-Forwarded-Proto: https` stands
    /// (taken for remote, it was overwritten with `http`), and it is named as IPv4.
    #[test]
    fn a_local_proxy_over_ipv4_on_an_ipv6_listener_is_local() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let mapped = Peer::new("[::ffff:127.0.0.1]:5000".parse().unwrap());
        forward_headers(&mut headers, &mapped).unwrap();
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        // A remote IPv4 caller on that listener is remote still.
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let remote = Peer::new("[::ffff:192.0.2.7]:5000".parse().unwrap());
        forward_headers(&mut headers, &remote).unwrap();
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-for"], "192.0.2.7");
    }

    #[test]
    fn hop_by_hop_and_forwarded_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        forward_headers(&mut headers, &Peer::new("192.0.2.7:5000".parse().unwrap())).unwrap();
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get("x-secret").is_none());
        assert!(headers.get("proxy-connection").is_none());
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(headers["x-forwarded-host"], "example.com");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-kept"], "yes");
    }

    #[test]
    fn a_client_cannot_smuggle_headers_past_the_rewrite() {
        let remote = Peer::new("192.0.2.7:5000".parse().unwrap());
        // No Host (HTTP/1.0): no X-Forwarded-Host of the client's own making.
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        forward_headers(&mut headers, &remote).unwrap();
        assert!(headers.get("x-forwarded-host").is_none());
        // `Connection: host` does not take Host away; `_` names and a forged mirror
        // mark are dropped.
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("good.example"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("host"));
        headers.insert("x_forwarded_host", HeaderValue::from_static("evil.example"));
        headers.insert("x-bluegreen-mirror", HeaderValue::from_static("1"));
        headers.insert(
            "forwarded",
            HeaderValue::from_static("host=evil;proto=https"),
        );
        headers.insert("x-real-ip", HeaderValue::from_static("10.6.6.6"));
        headers.insert("true-client-ip", HeaderValue::from_static("10.6.6.6"));
        headers.insert("x-original-url", HeaderValue::from_static("/admin"));
        headers.insert("front-end-https", HeaderValue::from_static("on"));
        headers.insert("x-original-host", HeaderValue::from_static("evil.example"));
        headers.insert("x-host", HeaderValue::from_static("evil.example"));
        headers.insert(
            "x-forwarded-client-cert",
            HeaderValue::from_static("Hash=0;Subject=\"CN=admin\""),
        );
        let mut from_local = headers.clone();
        forward_headers(&mut headers, &remote).unwrap();
        for name in [
            "forwarded",
            "x-real-ip",
            "true-client-ip",
            "x-original-url",
            "front-end-https",
            "x-original-host",
            "x-host",
            "x-forwarded-client-cert",
        ] {
            assert!(headers.get(name).is_none(), "{name} passed");
        }
        // A proxy on this host may say them.
        forward_headers(
            &mut from_local,
            &Peer::new("127.0.0.1:5000".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(from_local["forwarded"], "host=evil;proto=https");
        assert_eq!(
            from_local["x-forwarded-client-cert"],
            "Hash=0;Subject=\"CN=admin\""
        );
        assert_eq!(headers["host"], "good.example");
        assert_eq!(headers["x-forwarded-host"], "good.example");
        assert!(headers.get("x_forwarded_host").is_none());
        assert!(headers.get("x-bluegreen-mirror").is_none());
    }

    #[test]
    fn transfer_codings_other_than_chunked_are_refused_and_content_length_goes() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        headers.insert("x_kept", HeaderValue::from_static("a worker's own"));
        strip_hop_by_hop(&mut headers, Side::Worker).unwrap();
        assert!(headers.get(header::CONTENT_LENGTH).is_none());
        // A list of equal lengths, and leading zeros, go on as one plain number; what
        // hyper would refuse is left as it was.
        for (sent, passed) in [
            ("5, 5", "5"),
            ("5,5", "5"),
            ("005", "5"),
            ("0", "0"),
            ("17", "17"),
            ("5, 6", "5, 6"),
            ("5, x", "5, x"),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static(sent));
            strip_hop_by_hop(&mut headers, Side::Worker).unwrap();
            assert_eq!(headers[header::CONTENT_LENGTH], passed, "{sent}");
        }
        assert!(headers.get(header::TRANSFER_ENCODING).is_none());
        assert!(headers.get("x_kept").is_some());
        let mut headers = HeaderMap::new();
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("gzip, chunked"),
        );
        assert_eq!(
            strip_hop_by_hop(&mut headers, Side::Client { local: false }).unwrap_err(),
            "Transfer-Encoding `gzip, chunked`: only chunked is supported"
        );
    }

    #[test]
    fn forwarded_for_keeps_every_earlier_hop() {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.2, 10.0.0.3"),
        );
        forward_headers(&mut headers, &Peer::new("192.0.2.7:5000".parse().unwrap())).unwrap();
        assert_eq!(
            headers
                .get_all("x-forwarded-for")
                .iter()
                .collect::<Vec<_>>(),
            ["10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7"]
        );
    }

    #[test]
    fn a_remote_client_cannot_claim_https_by_another_name() {
        // Rack (Rails, Sinatra) takes `X-Forwarded-Ssl: on` as https before it looks at
        // `X-Forwarded-Proto`, and `X-Forwarded-Scheme` where Proto is missing: as with
        // `X-Forwarded-Port`, only a proxy on this host may say them.
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        headers.insert("x-forwarded-ssl", HeaderValue::from_static("on"));
        headers.insert("x-forwarded-scheme", HeaderValue::from_static("https"));
        forward_headers(&mut headers, &Peer::new("192.0.2.7:5000".parse().unwrap())).unwrap();
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert!(headers.get("x-forwarded-ssl").is_none());
        assert!(headers.get("x-forwarded-scheme").is_none());
    }

    #[test]
    fn only_a_local_proxy_may_set_proto_and_host() {
        let told = || {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_static("internal:8080"));
            headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
            headers.insert("x-forwarded-host", HeaderValue::from_static("example.com"));
            headers
        };
        let mut local = told();
        forward_headers(&mut local, &Peer::new("127.0.0.1:5000".parse().unwrap())).unwrap();
        assert_eq!(local["x-forwarded-proto"], "https");
        assert_eq!(local["x-forwarded-host"], "example.com");
        let mut remote = told();
        forward_headers(&mut remote, &Peer::new("192.0.2.7:5000".parse().unwrap())).unwrap();
        assert_eq!(remote["x-forwarded-proto"], "http");
        assert_eq!(remote["x-forwarded-host"], "internal:8080");
    }
}
