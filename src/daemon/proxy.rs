//! The data path's requests: the front router and the slot listeners, on hyper.
//!
//! Each request goes to a live generation: the active slot's for the front, the slot's
//! own for a slot listener. Method, path, query, headers (hop-by-hop removed,
//! `X-Forwarded-*` added) and bodies are streamed both ways over pooled keep-alive
//! connections (see [`super::pool`]). The request counts in its generation's
//! `in_flight` until its response body has been sent in full, which is what drain
//! waits for. An upgrade (WebSocket) becomes a tunnel after the worker's `101`: see
//! [`super::upgrade`]. The threads and connections are [`super::accept`]'s.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;

use super::accept::Listener;
use super::mirror::Mirror;
use super::pool::{Failure, Pool, Pooled};
use super::route::{Cached, InFlight};
use super::upgrade;
use super::upstream::{self, Body, BoxError};
use super::{ConfigCopy, Daemon};

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

/// What a proxy thread's requests share. Cloning an `Arc` of it touches a count only
/// this thread writes; cloning the daemon's for every request made both cores fight
/// over one cache line.
pub struct Local {
    pub daemon: Arc<Daemon>,
    pub pool: Arc<Pool>,
    /// The thread's number, which picks its shard of the counters.
    pub thread: usize,
    /// The thread's copy of each slot's route.
    pub routes: [Mutex<Cached>; 2],
    /// The thread's copy of the config.
    pub config: Mutex<ConfigCopy>,
}

pub async fn handle(
    request: Request<Incoming>,
    peer: Peer,
    which: Listener,
    local: Arc<Local>,
) -> Result<Response<Body>, Infallible> {
    let Local {
        daemon,
        pool,
        thread,
        routes,
        config,
    } = &*local;
    let traffic = daemon.metrics.traffic(*thread);
    let mut mirror = None;
    let slot = match which {
        Listener::Slot(slot) => slot,
        Listener::Front => {
            let switch = {
                let mut copy = config.lock().expect("config copy lock: no panic holds it");
                let current = daemon.refresh_config(&mut copy);
                let switch_path = &current.router.switch_path;
                let switch = !switch_path.is_empty() && request.uri().path() == switch_path;
                if !switch && daemon.mirroring() && Mirror::mirrors(current, request.method()) {
                    mirror = Some(copy.config.clone());
                }
                switch
            };
            if switch {
                // Boxed, as the rare paths below: the common path's future stays small,
                // and it is moved a few times per request.
                return Ok(Box::pin(super::front_switch::handle(request, peer.addr, daemon)).await);
            }
            match daemon.active() {
                Some(slot) => slot,
                None => {
                    return Ok(plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no active slot: nothing has been deployed yet",
                    ))
                }
            }
        }
    };
    let acquired = {
        let mut cached = routes[slot.index()]
            .lock()
            .expect("route copy lock: no panic holds it");
        daemon.slots[slot.index()]
            .route
            .acquire_cached(&mut cached, *thread)
    };
    let in_flight = match acquired {
        Ok(in_flight) => in_flight,
        Err(reason) => {
            traffic.request(slot, 503);
            return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, &reason));
        }
    };
    let (mut parts, body) = request.into_parts();
    let upgrade = upgrade::asked(&parts.headers);
    let client_upgrade = upgrade
        .is_some()
        .then(|| parts.extensions.remove::<OnUpgrade>())
        .flatten();
    let (body, copy) = match mirror {
        Some(config) => {
            Box::pin(
                daemon
                    .mirror
                    .tee(daemon, &config, &parts, body, slot.other()),
            )
            .await
        }
        None => (body.map_err(BoxError::from).boxed(), None),
    };
    // An absolute-form target (`GET http://host/path`) names the host: it replaces the
    // client's Host (RFC 9112 §3.2.2), and the worker gets the origin form.
    if let Some(authority) = parts.uri.authority() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(header::HOST, host);
        }
    }
    forward_headers(&mut parts.headers, &peer);
    if let Some(protocol) = upgrade {
        upgrade::keep(&mut parts.headers, protocol);
    }
    if !parts.headers.contains_key(header::HOST) {
        parts
            .headers
            .insert(header::HOST, in_flight.generation().host.clone());
    }
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"));
        parts.uri = target;
    }
    parts.version = http::Version::HTTP_11;

    let started = Instant::now();
    let port = in_flight.generation().port;
    let sent = pool.send(port, Request::from_parts(parts, body)).await;
    if let Some(copy) = copy {
        let status = sent.as_ref().ok().map(|(response, _)| response.status());
        daemon.mirror.answered(daemon, copy, status);
    }
    match sent {
        Ok((response, connection)) => {
            traffic.latency(started.elapsed());
            traffic.request(slot, response.status().as_u16());
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                return Ok(Box::pin(upgrade::tunnel(
                    response,
                    client_upgrade,
                    in_flight,
                    connection,
                ))
                .await);
            }
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let body = Tracked {
                inner: body,
                _connection: connection,
                _in_flight: in_flight,
            };
            Ok(Response::from_parts(parts, body.boxed()))
        }
        // The client's own body broke off (an aborted upload): not the worker's fault.
        Err(Failure::Http(e)) if e.is_user() => {
            traffic.request(slot, 400);
            let reason = match std::error::Error::source(&e) {
                Some(cause) => format!("the request body broke off: {cause}"),
                None => format!("the request body broke off: {e}"),
            };
            tracing::debug!(slot = %slot, "{reason}");
            Ok(plain(StatusCode::BAD_REQUEST, &reason))
        }
        Err(failure) => {
            traffic.request(slot, 502);
            let generation = in_flight.generation();
            let reason = format!(
                "{slot} generation {} did not answer: {failure}",
                generation.id
            );
            tracing::warn!(slot = %slot, generation = generation.id, "{reason}");
            Ok(plain(StatusCode::BAD_GATEWAY, &reason))
        }
    }
}

/// A one-line text answer.
pub fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(upstream::full(format!("{text}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(upstream::full(format!("{value}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
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
fn forward_headers(headers: &mut HeaderMap, peer: &Peer) {
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

/// A response body that keeps its request counted in flight, and its upstream
/// connection out of the pool, until it is dropped.
struct Tracked {
    inner: Incoming,
    _connection: Pooled,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
