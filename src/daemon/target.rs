//! The request target and `Host`: the requests refused before any routing, and an
//! absolute-form target turned into the `Host` and origin form a worker gets.

use http::header::{self, HeaderValue};
use http::{Request, StatusCode};
use hyper::body::Incoming;

/// Requests refused before any routing: CONNECT (this is no forward proxy: 501, as for
/// a method a server does not implement, since no Allow list of a worker's is known), and
/// a request whose `Host` is missing (HTTP/1.1), repeated or not a host and port (RFC
/// 9112 §3.2): the worker would see a host the client did not send, pick one of two,
/// or build its links from a `Host` such as `evil.example/x?` or `user@host`.
pub fn refused(request: &Request<Incoming>) -> Option<(StatusCode, &'static str)> {
    if request.method() == http::Method::CONNECT {
        return Some((StatusCode::NOT_IMPLEMENTED, "CONNECT is not proxied"));
    }
    // A worker's echo of a TRACE would hand a page's script the cookies and credentials
    // the browser sent (cross-site tracing); nginx refuses it too.
    if request.method() == http::Method::TRACE {
        return Some((StatusCode::NOT_IMPLEMENTED, "TRACE is not proxied"));
    }
    // `*` is OPTIONS's alone (RFC 9112 §3.2.4).
    if request.uri().path() == "*" && request.method() != http::Method::OPTIONS {
        return Some((
            StatusCode::BAD_REQUEST,
            "the request target `*` is OPTIONS's only (RFC 9112 §3.2.4)",
        ));
    }
    // The authority form (`GET host:80`) is CONNECT's alone; it has no path to pass on.
    if request.uri().scheme().is_none() && request.uri().authority().is_some() {
        return Some((
            StatusCode::BAD_REQUEST,
            "the request target is neither a path (/...) nor an absolute URL (a host:port target is CONNECT's only, RFC 9112 §3.2)",
        ));
    }
    // An absolute-form target's host is the request's (RFC 9112 §3.2.2), checked as
    // `Host` is; `http` took `evil:abc` for a host with no port, and `user@` passed.
    if let (Some(_), Some(authority)) = (request.uri().scheme(), request.uri().authority()) {
        let authority = authority.as_str().as_bytes();
        if authority.contains(&b'@') || !host_and_port(authority) {
            return Some((
                StatusCode::BAD_REQUEST,
                "the request target's host is not a host and port (RFC 9112 §3.2.2)",
            ));
        }
    }
    bad_host(request).map(|why| (StatusCode::BAD_REQUEST, why))
}

/// Why a request's `Host` makes it a bad request (`400`), if it does: missing (HTTP/1.1),
/// repeated, or not a host and port (RFC 9112 §3.2). The control API refuses these too.
pub fn bad_host<B>(request: &Request<B>) -> Option<&'static str> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Some("more than one Host header (RFC 9112 §3.2)"),
        (None, _) if request.version() == http::Version::HTTP_11 => {
            Some("an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)")
        }
        (Some(host), None) if !host_and_port(host.as_bytes()) => {
            Some("the Host header is not a host and port (RFC 9112 §3.2)")
        }
        _ => None,
    }
}

/// Whether a `Host` value is `uri-host [ ":" port ]` (RFC 9110 §7.2), or empty (allowed
/// for a target without an authority). Checked by hand on every request: `http`'s
/// `Authority` parser would copy the value into a new allocation each time.
fn host_and_port(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        // An IP literal: `[` hex digits, `:` and `.` (and an IPvFuture's letters) `]`.
        Some(b'[') => match value.iter().position(|&b| b == b']') {
            Some(end) => {
                let inside = &value[1..end];
                let literal = |b: &u8| b.is_ascii_alphanumeric() || b":.".contains(b);
                if inside.is_empty() || !inside.iter().all(literal) {
                    return false;
                }
                (&value[..0], &value[end + 1..])
            }
            None => return false,
        },
        // A name or IPv4 address: RFC 3986's unreserved, sub-delims and `%` escapes.
        _ => {
            let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            (&value[..end], &value[end..])
        }
    };
    let name = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(b);
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    host.iter().all(name) && port_ok
}

/// An absolute-form target (`GET http://host/path`) names the host: it replaces the
/// client's `Host` (RFC 9112 §3.2.2). Host and port only: never the `user:password@` an
/// authority may carry.
pub fn host_from_absolute_form(parts: &mut http::request::Parts) {
    if let Some(authority) = parts.uri.authority() {
        let host = match authority.port_u16() {
            Some(port) => format!("{}:{port}", authority.host()),
            None => authority.host().to_string(),
        };
        if let Ok(host) = HeaderValue::from_str(&host) {
            parts.headers.insert(header::HOST, host);
        }
    }
}

/// The origin form (`/path?query`) of an absolute-form target, which is what the worker
/// gets. `path()` is `/` for an empty path, as in `http://host?x=1`, whose query stays.
pub fn origin_form(uri: &mut http::Uri) {
    if uri.scheme().is_some() || uri.authority().is_some() {
        let path = uri.path();
        let target = match uri.query() {
            Some(query) => format!("{path}?{query}").parse(),
            None => path.parse(),
        };
        *uri = target.unwrap_or_else(|_| http::Uri::from_static("/"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_header_is_a_host_and_an_optional_port() {
        for good in [
            "example.com",
            "example.com:8080",
            "127.0.0.1:80",
            "[::1]:80",
            "a_b.example",
            "example.com:",
            "[v1.x]",
            "",
        ] {
            assert!(host_and_port(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a b",
            "evil.example/x",
            "evil.example?x",
            "evil.example#x",
            "user@evil.example",
            "a:1:2",
            "[::1",
            "[]:80",
            "[::1]x",
            "[::1]:8a",
            "example.com:80x",
            "ex\u{e9}mple.com",
        ] {
            assert!(!host_and_port(bad.as_bytes()), "{bad:?}");
        }
    }
}
