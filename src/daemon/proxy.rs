//! The data path: the front router and the slot listeners, on hyper.
//!
//! Each request goes to a live generation: the active slot's for the front, the slot's
//! own for a slot listener. Method, path, query, headers (hop-by-hop removed,
//! `X-Forwarded-*` added) and bodies are streamed both ways over pooled keep-alive
//! connections. The request counts in its generation's `in_flight` until its response
//! body has been sent in full, which is what drain waits for. Header size and header
//! read time are bounded; idle client connections are closed after the same time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::mirror::Mirror;
use super::route::InFlight;
use super::upstream::{self, Body, BoxError};
use super::Daemon;
use crate::slot::Slot;

/// The longest a client may take to send a request head, and stay idle between requests.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head accepted (hyper answers 431 beyond it).
const MAX_HEAD: usize = 64 * 1024;

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Listener {
    Front,
    Slot(Slot),
}

/// Runs the data path on `threads` threads, each with its own single-threaded runtime
/// and upstream client, all accepting on the same listeners: a request is served from
/// accept to answer on one thread, with no hand-off between threads (as nginx's workers
/// do). The threads end once `shutdown` turns true and their connections are done.
pub fn start(
    listeners: Vec<(std::net::TcpListener, Listener)>,
    threads: usize,
    daemon: &Arc<Daemon>,
    shutdown: &watch::Receiver<bool>,
    grace: Duration,
) -> anyhow::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut handles = Vec::new();
    for n in 0..threads.max(1) {
        let mut mine = Vec::new();
        for (listener, which) in &listeners {
            mine.push((listener.try_clone()?, *which));
        }
        let (daemon, shutdown) = (daemon.clone(), shutdown.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = std::thread::Builder::new()
            .name(format!("bluegreen-proxy-{n}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let client = upstream::client();
                    let mut serving = Vec::new();
                    for (listener, which) in mine {
                        match TcpListener::from_std(listener) {
                            Ok(listener) => serving.push(tokio::spawn(serve(
                                listener,
                                which,
                                daemon.clone(),
                                client.clone(),
                                shutdown.clone(),
                                grace,
                            ))),
                            Err(e) => tracing::error!(listener = ?which, "cannot serve: {e}"),
                        }
                    }
                    for task in serving {
                        let _ = task.await;
                    }
                });
            })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Serves `listener` until `shutdown` turns true, then lets open connections finish
/// their current request (up to `grace`).
pub async fn serve(
    listener: TcpListener,
    which: Listener,
    daemon: Arc<Daemon>,
    client: upstream::Client,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true)
        // Small heads and bodies go out in one write, not a vectored one per piece.
        .writev(false);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let (daemon, client) = (daemon.clone(), client.clone());
                    let service = service_fn(move |request| {
                        handle(request, peer, which, daemon.clone(), client.clone())
                    });
                    let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait, never give up the listener.
                    tracing::warn!(listener = ?which, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!(listener = ?which, "connections still open after the drain timeout"),
    }
}

async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    which: Listener,
    daemon: Arc<Daemon>,
    client: upstream::Client,
) -> Result<Response<Body>, Infallible> {
    let mut mirror = None;
    let slot = match which {
        Listener::Slot(slot) => slot,
        Listener::Front => {
            let config = daemon.config();
            let switch_path = &config.router.switch_path;
            if !switch_path.is_empty() && request.uri().path() == switch_path {
                return Ok(super::front_switch::handle(request, peer, &daemon).await);
            }
            if daemon.mirroring() && Mirror::mirrors(&config, request.method()) {
                mirror = Some(config);
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
    let in_flight = match daemon.slots[slot.index()].route.acquire() {
        Ok(in_flight) => in_flight,
        Err(reason) => {
            daemon.metrics.request(slot, 503);
            return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, &reason));
        }
    };
    let (mut parts, body) = request.into_parts();
    let body = match mirror {
        Some(config) => {
            daemon
                .mirror
                .tee(&daemon, &config, &parts, body, slot.other())
                .await
        }
        None => body.map_err(BoxError::from).boxed(),
    };
    forward_headers(&mut parts.headers, peer);
    let mut target = http::uri::Parts::default();
    target.scheme = Some(http::uri::Scheme::HTTP);
    target.authority = Some(in_flight.0.authority.clone());
    target.path_and_query = Some(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    parts.uri = match http::Uri::from_parts(target) {
        Ok(uri) => uri,
        Err(_) => return Ok(plain(StatusCode::BAD_REQUEST, "bad request target")),
    };
    parts.version = http::Version::HTTP_11;

    let started = Instant::now();
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            daemon.metrics.latency(started.elapsed());
            daemon.metrics.request(slot, response.status().as_u16());
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let body = Tracked {
                inner: body,
                _in_flight: in_flight,
            };
            Ok(Response::from_parts(parts, body.boxed()))
        }
        Err(e) => {
            daemon.metrics.request(slot, 502);
            let generation = &in_flight.0;
            let reason = format!(
                "{slot} generation {} did not answer: {}",
                generation.id,
                upstream::describe(&e)
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
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

fn forward_headers(headers: &mut HeaderMap, peer: SocketAddr) {
    strip_hop_by_hop(headers);
    let ip = peer.ip().to_canonical().to_string();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {ip}"),
        None => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert("x-forwarded-host", host);
    }
}

/// A response body that keeps its request counted in flight until it is dropped.
struct Tracked {
    inner: Incoming,
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
        forward_headers(&mut headers, "192.0.2.7:5000".parse().unwrap());
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get("x-secret").is_none());
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(headers["x-forwarded-host"], "example.com");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-kept"], "yes");
    }
}
