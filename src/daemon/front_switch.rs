//! `/switch` on the front port, and who may call it.
//!
//! Only the TCP peer address counts, never `X-Forwarded-For`: loopback callers may
//! switch (with GET too, the workshop's browser habit); anyone else needs
//! `Authorization: Bearer <token>` from `router.token_file`, and POST.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::proxy::{json, plain};
use super::switch::{self, Query};
use super::upstream::Body;
use super::Daemon;

/// Whether a caller may switch: `peer` is the TCP peer, `authorization` the header.
pub fn allowed(
    peer: IpAddr,
    method: &Method,
    authorization: Option<&str>,
    token: Option<&str>,
) -> Result<(), String> {
    if peer.to_canonical().is_loopback() {
        return Ok(());
    }
    let presented = authorization.and_then(|a| a.strip_prefix("Bearer "));
    match (token, presented) {
        (None, _) => Err(format!("{peer} may not switch: only loopback callers can (set router.token_file to allow others)")),
        (Some(token), Some(presented)) if constant_time_eq(token.as_bytes(), presented.trim().as_bytes()) => {
            if *method == Method::POST {
                Ok(())
            } else {
                Err("switching from another host takes POST".into())
            }
        }
        (Some(_), _) => Err(format!("{peer} may not switch without `Authorization: Bearer <token>`")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    daemon: &Arc<Daemon>,
) -> Response<Body> {
    if request.method() != Method::POST && request.method() != Method::GET {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST (or GET from this host)",
        );
    }
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = daemon.token();
    if let Err(reason) = allowed(peer.ip(), request.method(), authorization, token.as_deref()) {
        return plain(StatusCode::FORBIDDEN, &reason);
    }
    let query = match Query::parse(request.uri().query().unwrap_or("")) {
        Ok(query) => query,
        Err(reason) => return plain(StatusCode::BAD_REQUEST, &reason),
    };
    match switch::switch(daemon, query, "front").await {
        Ok(done) => json(StatusCode::OK, &done),
        Err(e) => plain(e.status(), &e.to_string()),
    }
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
                allowed(ip(peer), &Method::GET, None, None).is_ok(),
                "{peer}"
            );
            assert!(
                allowed(ip(peer), &Method::POST, None, Some("t")).is_ok(),
                "{peer}"
            );
        }
    }

    #[test]
    fn others_need_the_token() {
        let peer = ip("192.0.2.7");
        assert!(allowed(peer, &Method::POST, None, None).is_err());
        assert!(allowed(peer, &Method::POST, Some("Bearer s3cret"), None).is_err());
        assert!(allowed(peer, &Method::POST, None, Some("s3cret")).is_err());
        assert!(allowed(peer, &Method::POST, Some("Bearer wrong"), Some("s3cret")).is_err());
        assert!(allowed(peer, &Method::POST, Some("s3cret"), Some("s3cret")).is_err());
        assert!(allowed(peer, &Method::POST, Some("Bearer s3cret"), Some("s3cret")).is_ok());
        assert!(allowed(
            ip("2001:db8::1"),
            &Method::POST,
            Some("Bearer s3cret"),
            Some("s3cret")
        )
        .is_ok());
        assert!(allowed(peer, &Method::GET, Some("Bearer s3cret"), Some("s3cret")).is_err());
    }

    #[test]
    fn forwarded_for_never_counts() {
        // The decision takes the peer address only; a loopback X-Forwarded-For from a
        // remote peer changes nothing because the header is never an input.
        let peer = ip("198.51.100.3");
        assert!(allowed(peer, &Method::GET, None, None).is_err());
    }
}
