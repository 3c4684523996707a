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

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names. One pass
/// over the names finds the few present: a lookup per possible name cost more than the
/// rest of a small request's headers.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; 8];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    if present[0] {
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
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
}

/// Adds the client to `X-Forwarded-For` (after every value it already had, one header
/// or several) and sets `X-Forwarded-Proto` and `-Host`, unless a local client (a TLS
/// terminator on this host) set them: it knows the scheme and host the user saw.
pub fn forward_headers(headers: &mut HeaderMap, peer: &Peer) {
    strip_hop_by_hop(headers);
    let mut joined = Vec::new();
    for before in headers.get_all(X_FORWARDED_FOR) {
        joined.extend_from_slice(before.as_bytes());
        joined.extend_from_slice(b", ");
    }
    let forwarded_for = if joined.is_empty() {
        Some(peer.ip.clone())
    } else {
        joined.extend_from_slice(peer.ip.as_bytes());
        HeaderValue::from_bytes(&joined).ok()
    };
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !(peer.local && headers.contains_key(X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !(peer.local && headers.contains_key(X_FORWARDED_HOST)) {
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_forwarded_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        forward_headers(&mut headers, &Peer::new("192.0.2.7:5000".parse().unwrap()));
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get("x-secret").is_none());
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(headers["x-forwarded-host"], "example.com");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-kept"], "yes");
    }

    #[test]
    fn forwarded_for_keeps_every_earlier_hop() {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.2, 10.0.0.3"),
        );
        forward_headers(&mut headers, &Peer::new("192.0.2.7:5000".parse().unwrap()));
        assert_eq!(
            headers
                .get_all("x-forwarded-for")
                .iter()
                .collect::<Vec<_>>(),
            ["10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7"]
        );
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
        forward_headers(&mut local, &Peer::new("127.0.0.1:5000".parse().unwrap()));
        assert_eq!(local["x-forwarded-proto"], "https");
        assert_eq!(local["x-forwarded-host"], "example.com");
        let mut remote = told();
        forward_headers(&mut remote, &Peer::new("192.0.2.7:5000".parse().unwrap()));
        assert_eq!(remote["x-forwarded-proto"], "http");
        assert_eq!(remote["x-forwarded-host"], "internal:8080");
    }
}
