//! The data path's requests: the front router and the slot listeners, on hyper.
//!
//! Each request goes to a live generation: the active slot's for the front, the slot's
//! own for a slot listener. Method, path, query, headers (hop-by-hop removed,
//! `X-Forwarded-*` added: [`super::headers`]) and bodies are streamed both ways over pooled keep-alive
//! connections (see [`super::pool`]). The request counts in its generation's
//! `in_flight` until its response body has been sent in full, which is what drain
//! waits for. An upgrade (WebSocket) becomes a tunnel after the worker's `101`: see
//! [`super::upgrade`]. The threads and connections are [`super::accept`]'s; the
//! checks on a request's target, [`super::target`]'s; the answer on its way back,
//! [`super::tracked`]'s.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;

use super::accept::Listener;
use super::headers::{forward_headers, strip_hop_by_hop, Peer, Side};
use super::idle::{BodyIdle, IdleBody};
use super::mirror::Mirror;
use super::own::{plain, Own};
use super::passed::Passed;
use super::pool::{Failure, Pool};
use super::route::Cached;
use super::target;
use super::tracked::Tracked;
use super::upgrade;
use super::{ConfigCopy, Daemon};

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
    /// Keeps "did not answer" lines to one a second (a dead worker under load would
    /// write one per request).
    pub quiet: crate::logging::Sparse,
    /// The daemon is stopping: each answer says `Connection: close`, so that a keep-alive
    /// client sends its next request to the next daemon instead of into a closed
    /// connection.
    pub stopping: AtomicBool,
    /// Turns true when the daemon begins to stop (a `/switch` under way then ends). Not
    /// what each answer looks at: `stopping` is this thread's own flag, where a watch's
    /// borrow takes a lock every thread shares.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

/// The client end of a connection, as each of its requests sees it.
pub struct ClientConn {
    pub peer: Peer,
    /// The connection's socket, for the front's `/switch` to ask where it was made to.
    pub fd: std::os::fd::RawFd,
    pub which: Listener,
    /// `router.client_timeout` when the connection came.
    pub timeout: std::time::Duration,
    /// The connection's place in the connection cap, which a tunnel keeps.
    pub counted: Arc<super::proxy_thread::Counted>,
}

pub async fn handle(
    request: Request<Incoming>,
    client: ClientConn,
    local: Arc<Local>,
) -> Result<Response<Answer>, Infallible> {
    let with_body = !request.body().is_end_stream();
    let http10 = request.version() == http::Version::HTTP_10;
    let mut response = answer(request, client, &local).await?;
    // Not on a 101: the tunnel is the connection's last use already. An answer of the
    // daemon's own to a request with a body (a 503 with no live generation, a 502), or a
    // worker's that came before the body was all read (a 413 to an upload), may leave
    // that body unread, and hyper then closes the connection: said, so that a
    // keep-alive client does not send its next request into a closed connection.
    let extensions = response.extensions();
    let before_body =
        extensions.get::<BodyLeft>().is_some() || (with_body && extensions.get::<Own>().is_some());
    if (local.stopping.load(Ordering::Relaxed) || before_body)
        && response.status() != StatusCode::SWITCHING_PROTOCOLS
    {
        if http10 {
            // hyper adds `keep-alive` to an HTTP/1.1 answer to a client that asked for
            // it (`close, keep-alive`); an HTTP/1.0 answer without it closes, unsaid.
            *response.version_mut() = http::Version::HTTP_10;
            response.headers_mut().remove(header::CONNECTION);
        } else {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    Ok(response)
}

async fn answer(
    request: Request<Incoming>,
    client: ClientConn,
    local: &Local,
) -> Result<Response<Answer>, Infallible> {
    let ClientConn {
        peer,
        fd,
        which,
        timeout,
        counted,
    } = client;
    let Local {
        daemon,
        pool,
        thread,
        routes,
        config,
        quiet,
        stopping: _,
        stop,
    } = local;
    let traffic = daemon.metrics.traffic(*thread);
    if let Some((status, reason)) = target::refused(&request) {
        match which {
            Listener::Slot(slot) => traffic.request(slot, status.as_u16()),
            Listener::Front => traffic.unrouted(status.as_u16()),
        }
        return Ok(own(status, reason));
    }
    let mut mirror = None;
    // A mirrored write's share of the mirror's barrier, until its copy is queued.
    let mut barrier = None;
    let mut switches = 0;
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
                let stop = stop.clone();
                return Ok(Box::pin(super::front_switch::handle(
                    request, peer.addr, fd, daemon, stop,
                ))
                .await
                .map(Passed::Boxed));
            }
            if mirror.is_some() {
                // Boxed, as the rare paths here.
                barrier = Some(Box::pin(daemon.mirror.admit()).await);
            }
            let (active, count) = daemon.routing();
            switches = count;
            match active {
                Some(slot) => slot,
                None => {
                    traffic.unrouted(503);
                    return Ok(not_passed(
                        daemon,
                        mirror.is_some(),
                        (request.method(), request.uri()),
                        StatusCode::SERVICE_UNAVAILABLE,
                        (
                            "no active slot: nothing has been deployed yet",
                            "no active slot",
                        ),
                    ));
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
            return Ok(not_passed(
                daemon,
                mirror.is_some(),
                (request.method(), request.uri()),
                StatusCode::SERVICE_UNAVAILABLE,
                (&reason, "no live generation"),
            ));
        }
    };
    let (mut parts, body) = request.into_parts();
    // Upgrade is HTTP/1.1's: an HTTP/1.0 request's is ignored (RFC 9110 §7.8), as hyper
    // does (it gives such a request no upgrade to take). Passed on, the worker switched
    // and the client got a 502. So is one with a body (a handshake has none): its
    // `Connection: upgrade` would stand in for the `close` that keeps a worker from
    // reading the body as a request of its own (see `pool`).
    let upgrade = match parts.version {
        http::Version::HTTP_11 if body.is_end_stream() => upgrade::asked(&parts.headers),
        _ => None,
    };
    let client_upgrade = upgrade
        .is_some()
        .then(|| parts.extensions.remove::<OnUpgrade>())
        .flatten();
    target::host_from_absolute_form(&mut parts);
    if let Err(reason) = forward_headers(&mut parts.headers, &peer) {
        traffic.request(slot, 501);
        return Ok(not_passed(
            daemon,
            mirror.is_some(),
            (&parts.method, &parts.uri),
            StatusCode::NOT_IMPLEMENTED,
            (&reason, "not passed on"),
        ));
    }
    if let Some(protocol) = upgrade {
        upgrade::keep(&mut parts.headers, protocol);
    }
    if !parts.headers.contains_key(header::HOST) {
        parts
            .headers
            .insert(header::HOST, in_flight.generation().host.clone());
    }
    target::origin_form(&mut parts.uri);
    let http10 = parts.version == http::Version::HTTP_10;
    let head = parts.method == http::Method::HEAD;
    parts.version = http::Version::HTTP_11;
    // Read for a request with a body only: the common path takes no lock for it.
    let reuse_after_body = !body.is_end_stream() && {
        let mut copy = config.lock().expect("config copy lock: no panic holds it");
        daemon.refresh_config(&mut copy).app.reuse_after_body
    };
    // The copy gets the request as the active slot does, proxy headers and all.
    let (body, copy, end) = match mirror {
        Some(config) => {
            let (body, copy) =
                daemon
                    .mirror
                    .tee(daemon, &config, &parts, body, (slot.other(), switches));
            let (body, end) = IdleBody::new(body, timeout);
            (Passed::Boxed(body.boxed()), copy, Some(end))
        }
        None if body.is_end_stream() => (Passed::Unboxed(body), None, None),
        None => {
            let (body, end) = IdleBody::new(body, timeout);
            (Passed::Boxed(body.boxed()), None, Some(end))
        }
    };

    let started = Instant::now();
    let port = in_flight.generation().port;
    let sent = pool
        .send(port, Request::from_parts(parts, body), reuse_after_body)
        .await;
    if let Some(copy) = copy {
        let status = sent.as_ref().ok().map(|(response, _)| response.status());
        daemon.mirror.answered(daemon, copy, status);
    }
    drop(barrier);
    match sent {
        Ok((response, connection)) => {
            traffic.latency(slot, started.elapsed());
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                let answer = Box::pin(upgrade::tunnel(
                    response,
                    client_upgrade,
                    (in_flight, connection, counted),
                ))
                .await;
                // The 101, or the 502 for a switch that cannot be tunnelled: what the
                // client got.
                traffic.request(slot, answer.status().as_u16());
                return Ok(answer.map(Passed::Boxed));
            }
            let (mut parts, body) = response.into_parts();
            if let Err(reason) = strip_hop_by_hop(&mut parts.headers, Side::Worker) {
                let reason = format!(
                    "{slot} generation {} answered with {reason}",
                    in_flight.generation().id
                );
                tracing::warn!(slot = %slot, "{reason}");
                traffic.request(slot, 502);
                return Ok(own(StatusCode::BAD_GATEWAY, &reason));
            }
            traffic.request(slot, parts.status.as_u16());
            // Ours to frame: an HTTP/1.0 worker's answer keeps the client's keep-alive.
            // But an HTTP/1.0 client cannot take a chunked answer: hyper sends it until
            // the connection closes, and for an HTTP/1.1 answer still said `Connection:
            // keep-alive` (a next request the client pipelined went unanswered). As an
            // HTTP/1.0 answer without keep-alive, hyper closes and says nothing else.
            let unbounded =
                http10 && !head && !body.is_end_stream() && body.size_hint().exact().is_none();
            parts.version = match unbounded {
                true => http::Version::HTTP_10,
                false => http::Version::HTTP_11,
            };
            let body = Tracked::new(body, connection, in_flight, counted);
            let mut response = Response::from_parts(parts, Passed::Unboxed(body));
            if end.is_some_and(|end| !end.reached()) {
                response.extensions_mut().insert(BodyLeft);
            }
            Ok(response)
        }
        // The client's own body stopped coming: not the worker's fault either.
        Err(Failure::Http(e))
            if std::error::Error::source(&e).is_some_and(|cause| cause.is::<BodyIdle>()) =>
        {
            traffic.request(slot, 408);
            let reason = std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_default();
            tracing::debug!(slot = %slot, "{reason}");
            Ok(own(StatusCode::REQUEST_TIMEOUT, &reason))
        }
        // The client's own body broke off (an aborted upload): not the worker's fault.
        Err(Failure::Http(e)) if e.is_user() => {
            traffic.request(slot, 400);
            let reason = match std::error::Error::source(&e) {
                Some(cause) => format!("the request body broke off: {cause}"),
                None => format!("the request body broke off: {e}"),
            };
            tracing::debug!(slot = %slot, "{reason}");
            Ok(own(StatusCode::BAD_REQUEST, &reason))
        }
        Err(failure) => {
            traffic.request(slot, 502);
            let generation = in_flight.generation();
            let reason = match generation.cut_after.get() {
                // Stopped past its drain: what cut the request is the timeout.
                Some(drain) => format!(
                    "{slot} generation {} was stopped with this request in flight, at the end of its drain (app.drain_timeout {}): {failure}",
                    generation.id,
                    humantime::format_duration(*drain)
                ),
                None => format!(
                    "{slot} generation {} did not answer: {failure}",
                    generation.id
                ),
            };
            if let Some(held) = quiet.admit() {
                tracing::warn!(slot = %slot, generation = generation.id, "{reason}{}", crate::logging::held(held));
            }
            Ok(own(StatusCode::BAD_GATEWAY, &reason))
        }
    }
}

/// Marks a worker's answer that came before its request's body was all read (see
/// `handle`).
#[derive(Clone, Copy)]
struct BodyLeft;

/// What a data-path request is answered with: its worker's answer, passed on as it
/// comes, or one of the daemon's own.
pub type Answer = Passed<Tracked>;

/// The front's own answer to a request it does not pass on: `status` with `text`. A
/// write it would have mirrored is counted, as one the active slot did not take, by
/// `because` ([`Mirror::unanswered`]).
fn not_passed(
    daemon: &Daemon,
    mirrored: bool,
    asked: (&http::Method, &http::Uri),
    status: StatusCode,
    (text, because): (&str, &str),
) -> Response<Answer> {
    if mirrored {
        daemon.mirror.unanswered(daemon, asked, status, because);
    }
    own(status, text)
}

/// A one-line text answer of the daemon's own, to a data-path request.
fn own(status: StatusCode, text: &str) -> Response<Answer> {
    plain(status, text).map(Passed::Boxed)
}
