//! `/switch` on the front port, and who may call it.
//!
//! Only the TCP peer address counts, never `X-Forwarded-For`: loopback callers may
//! switch (with GET too, the workshop's browser habit); anyone else needs
//! `Authorization: Bearer <token>` from `router.token_file`, and POST.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::local::Hints;
use super::metrics::SwitchCause;
use super::own::{json, plain};
use super::switch::{self, Query};
use super::upstream::Body;
use super::Daemon;

/// Whether a caller may switch: `peer` is the TCP peer, `authorization` the header.
pub fn allowed(
    peer: IpAddr,
    method: &Method,
    authorization: Option<&str>,
    token: Option<&str>,
    hints: &Hints,
) -> Result<(), String> {
    let local = match peer.to_canonical().is_loopback() {
        // An image or link on any page, in a browser that does not say so.
        true if hints.unmarked_browser && *method == Method::GET => Err(
            "a GET from a browser that does not say which page it came from (no Sec-Fetch-Site): from a browser, POST; or use curl".into(),
        ),
        true => super::local::from_this_host(hints),
        false => Err(String::new()),
    };
    if local.is_ok() {
        return Ok(());
    }
    // Who is refused: the peer, or for a loopback peer why it does not count as this host.
    let who = match local {
        Err(why) if !why.is_empty() => format!("this request ({why})"),
        // An IPv4 caller of a listener on `[::]` as itself, as X-Forwarded-For shows it.
        _ => peer.to_canonical().to_string(),
    };
    match token {
        None => Err(format!("{who} may not switch: only callers on this host can, unless router.token_file sets a token for others")),
        Some(_) if bearer(authorization, token) => {
            if *method == Method::POST {
                Ok(())
            } else {
                Err("switching from another host takes POST".into())
            }
        }
        Some(_) => Err(format!("{who} may not switch: {}", need_token(authorization))),
    }
}

/// What a caller that must present the token lacks: the header, or the right token in it
/// (a mistyped or an old one: told to send the header it sent, it would look elsewhere).
fn need_token(authorization: Option<&str>) -> &'static str {
    match authorization {
        None => "others need `Authorization: Bearer <token>` (router.token_file)",
        Some(_) => WRONG_TOKEN,
    }
}

/// What is wrong with a request that presents a token that is not `router.token_file`'s,
/// in its answer and in the log's line.
const WRONG_TOKEN: &str = "its Authorization does not carry router.token_file's token";

/// Whether `authorization` presents `token`, when one is set. The scheme is
/// case-insensitive (RFC 9110 §11.1).
fn bearer(authorization: Option<&str>, token: Option<&str>) -> bool {
    let presented = authorization.and_then(|a| {
        let (scheme, token) = a.trim_start().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(token)
    });
    match (token, presented) {
        (Some(token), Some(presented)) => {
            constant_time_eq(token.as_bytes(), presented.trim().as_bytes())
        }
        _ => false,
    }
}

/// The address a connection `fd` was made to (an any-address listener's connections
/// each have their own).
fn local_addr(fd: std::os::fd::RawFd) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockname, SockaddrStorage};
    let addr: SockaddrStorage = getsockname(fd).ok()?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    let v6 = addr.as_sockaddr_in6()?;
    Some(SocketAddr::V6((*v6).into()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Answers a request for the front's `switch_path` from `peer`, on the connection `fd`.
pub async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    fd: std::os::fd::RawFd,
    daemon: &Arc<Daemon>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Response<Body> {
    // A bluegreen command names its root, and calls the control API only: one here has a
    // `control.listen` that names this front (another root's config copied, or its own
    // front's address), and must not switch this root's traffic.
    if let Some(asker) = request.headers().get(crate::client::ROOT_HEADER) {
        let root = daemon.layout.root().display().to_string();
        let why = match asker.as_bytes() == daemon.layout.identity().as_bytes() {
            true => format!("this is the front of {root}, not its control API: give control.listen an address of its own"),
            false => crate::client::serves_another_root(&root),
        };
        return plain(StatusCode::MISDIRECTED_REQUEST, &why);
    }
    if request.method() != Method::POST && request.method() != Method::GET {
        let why = format!(
            "{} is not allowed on {}: use POST (or GET from this host)",
            request.method(),
            crate::logging::printable(request.uri().path())
        );
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, &why);
        response
            .headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, POST"));
        return response;
    }
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let several = |name: &str| request.headers().get_all(name).iter().nth(1).is_some();
    let hints = Hints {
        http10: request.version() == http::Version::HTTP_10,
        ..Hints::of(request.uri(), request.headers())
    };
    // Which one would count is a guess the caller should not have to make.
    if several("authorization") {
        return plain(
            StatusCode::BAD_REQUEST,
            "more than one Authorization header",
        );
    }
    let token = daemon.token();
    let note_guess = || wrong_token(peer, request.uri().path(), authorization, token.as_deref());
    if let Err(reason) = allowed(
        peer.ip(),
        request.method(),
        authorization,
        token.as_deref(),
        &hints,
    ) {
        note_guess();
        return plain(StatusCode::FORBIDDEN, &reason);
    }
    // A caller on this host without the token: one of the daemon's user or root (another
    // app's user, or a TCP relay's, such as stunnel's, connects from loopback too).
    if peer.ip().to_canonical().is_loopback() && !bearer(authorization, token.as_deref()) {
        if let Some(why) = super::local::whose(peer, local_addr(fd), "switch").await {
            note_guess();
            let others = match token {
                Some(_) => need_token(authorization),
                None => "router.token_file sets a token for others",
            };
            return plain(
                StatusCode::FORBIDDEN,
                &format!("this request may not switch: {why}; {others}"),
            );
        }
    }
    if let Err(reason) = super::params::no_body(request.headers()) {
        return plain(StatusCode::BAD_REQUEST, &reason);
    }
    let query = match Query::parse(request.uri().query().unwrap_or("")) {
        Ok(query) => query,
        Err(reason) => return plain(StatusCode::BAD_REQUEST, &reason),
    };
    match switch::in_task(daemon, query, SwitchCause::Front, stop).await {
        Ok(done) => json(StatusCode::OK, &done),
        Err(e) => plain(e.status(), &e.to_string()),
    }
}

/// Logs a refused request that presented a token, when it is not the token: someone
/// may be guessing it (from elsewhere, or through a relay on this host). At most a line
/// a second; the token presented is never written.
fn wrong_token(peer: SocketAddr, path: &str, authorization: Option<&str>, token: Option<&str>) {
    if !presents_wrong_token(authorization, token) {
        return;
    }
    static WRONG: std::sync::LazyLock<crate::logging::Sparse> =
        std::sync::LazyLock::new(Default::default);
    if let Some(held) = WRONG.admit() {
        tracing::warn!(
            "the front's {path} refused {peer}: {WRONG_TOKEN}{}",
            crate::logging::held(held)
        );
    }
}

/// Whether `authorization` is there and is not `token` (one is set).
fn presents_wrong_token(authorization: Option<&str>, token: Option<&str>) -> bool {
    token.is_some() && authorization.is_some() && !bearer(authorization, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_may_switch_without_token() {
        for peer in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert!(
                allowed(ip(peer), &Method::GET, None, None, &Hints::default()).is_ok(),
                "{peer}"
            );
            assert!(
                allowed(ip(peer), &Method::POST, None, Some("t"), &Hints::default()).is_ok(),
                "{peer}"
            );
        }
    }

    #[test]
    fn refusals_say_who_and_why() {
        let relayed = Hints {
            forwarded: true,
            ..Hints::default()
        };
        assert_eq!(
            allowed(ip("127.0.0.1"), &Method::POST, None, None, &relayed).unwrap_err(),
            "this request (relayed by a proxy, as its X-Forwarded-For, Forwarded, X-Real-IP or Via says) may not switch: only callers on this host can, unless router.token_file sets a token for others"
        );
        for peer in ["192.0.2.7", "::ffff:192.0.2.7"] {
            assert_eq!(
                allowed(ip(peer), &Method::POST, None, None, &Hints::default()).unwrap_err(),
                "192.0.2.7 may not switch: only callers on this host can, unless router.token_file sets a token for others"
            );
        }
    }

    #[test]
    fn only_a_token_presented_and_wrong_is_a_guess() {
        let token = Some("s3cret");
        assert!(presents_wrong_token(Some("Bearer guess"), token));
        assert!(presents_wrong_token(Some("Basic czNjcmV0"), token));
        assert!(!presents_wrong_token(Some("Bearer s3cret"), token));
        assert!(!presents_wrong_token(Some("bearer  s3cret "), token));
        assert!(!presents_wrong_token(None, token));
        assert!(!presents_wrong_token(Some("Bearer guess"), None));
    }

    #[test]
    fn others_need_the_token() {
        let peer = ip("192.0.2.7");
        assert!(allowed(peer, &Method::POST, None, None, &Hints::default()).is_err());
        assert!(allowed(
            peer,
            &Method::POST,
            Some("Bearer s3cret"),
            None,
            &Hints::default()
        )
        .is_err());
        let without = allowed(peer, &Method::POST, None, Some("s3cret"), &Hints::default());
        assert_eq!(
            without.unwrap_err(),
            "192.0.2.7 may not switch: others need `Authorization: Bearer <token>` (router.token_file)"
        );
        // A wrong token is told so, not to send the header it sent.
        let wrong = allowed(
            peer,
            &Method::POST,
            Some("Bearer s3cre7"),
            Some("s3cret"),
            &Hints::default(),
        );
        assert_eq!(
            wrong.unwrap_err(),
            "192.0.2.7 may not switch: its Authorization does not carry router.token_file's token"
        );
        // The scheme in any case (RFC 9110 §11.1); never without one.
        let presenting = |header| {
            allowed(
                peer,
                &Method::POST,
                Some(header),
                Some("s3cret"),
                &Hints::default(),
            )
        };
        for header in ["bearer s3cret", "BEARER s3cret"] {
            assert!(presenting(header).is_ok(), "{header}");
        }
        assert!(presenting("s3cret").is_err());
        // Only the whole token: none of its prefixes (the empty one too), nor more.
        for header in [
            "Bearer ",
            "Bearer s",
            "Bearer s3cre",
            "Bearer s3cret-and-more",
            "Bearer s3cret2",
        ] {
            assert!(presenting(header).is_err(), "{header}");
        }
        assert!(allowed(
            peer,
            &Method::POST,
            Some("Bearer wrong"),
            Some("s3cret"),
            &Hints::default()
        )
        .is_err());
        assert!(allowed(
            peer,
            &Method::POST,
            Some("s3cret"),
            Some("s3cret"),
            &Hints::default()
        )
        .is_err());
        assert!(allowed(
            peer,
            &Method::POST,
            Some("Bearer s3cret"),
            Some("s3cret"),
            &Hints::default()
        )
        .is_ok());
        assert!(allowed(
            ip("2001:db8::1"),
            &Method::POST,
            Some("Bearer s3cret"),
            Some("s3cret"),
            &Hints::default()
        )
        .is_ok());
        assert!(allowed(
            peer,
            &Method::GET,
            Some("Bearer s3cret"),
            Some("s3cret"),
            &Hints::default()
        )
        .is_err());
    }

    #[test]
    fn forwarded_for_never_grants() {
        // A remote peer claiming to be loopback through X-Forwarded-For gets nothing.
        let claims_local = Hints {
            forwarded: true,
            host: Some("127.0.0.1"),
            ..Hints::default()
        };
        assert!(allowed(ip("198.51.100.3"), &Method::GET, None, None, &claims_local).is_err());
        // It can only take trust away: a loopback peer relaying others needs the token.
        let relayed = Hints {
            forwarded: true,
            ..Hints::default()
        };
        assert!(allowed(
            ip("127.0.0.1"),
            &Method::POST,
            None,
            Some("s3cret"),
            &relayed
        )
        .is_err());
        assert!(allowed(
            ip("127.0.0.1"),
            &Method::POST,
            Some("Bearer s3cret"),
            Some("s3cret"),
            &relayed
        )
        .is_ok());
    }

    #[test]
    fn a_browser_on_this_host_switches_only_from_its_address_bar() {
        let typed = Hints {
            host: Some("localhost:8080"),
            fetch_site: Some("none"),
            ..Hints::default()
        };
        assert!(allowed(ip("127.0.0.1"), &Method::GET, None, None, &typed).is_ok());
        let from_a_page = Hints {
            host: Some("localhost:8080"),
            fetch_site: Some("cross-site"),
            ..Hints::default()
        };
        assert!(allowed(ip("127.0.0.1"), &Method::GET, None, None, &from_a_page).is_err());
        // Safari before 16.4 says nothing of the page (an HTTPS one sends no Referer to
        // http://): its GET is refused, its POST (a form sends Origin) judged as any.
        let unmarked = Hints {
            host: Some("localhost:8080"),
            unmarked_browser: true,
            ..Hints::default()
        };
        let refused = allowed(ip("127.0.0.1"), &Method::GET, None, None, &unmarked).unwrap_err();
        assert!(refused.contains("no Sec-Fetch-Site"), "{refused}");
        assert!(allowed(ip("127.0.0.1"), &Method::POST, None, None, &unmarked).is_ok());
    }
}
