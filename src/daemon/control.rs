//! The control API on `control.listen` (loopback only), served by hyper on the daemon's
//! runtime.
//!
//! A caller that names another root (`Bluegreen-Root`, see `client`) gets 421: two roots
//! given the same `control.listen` must not steer each other's daemon.
//!
//! hyper reads the request heads (bounded in size, 30 s to arrive) and answers what is
//! not HTTP/1 itself (tiny_http, used here before, held the connection and a thread
//! forever on an `HTTP/2.0` request line, and aborted the daemon on a Content-Length
//! beyond memory). No endpoint takes a body: a request with one is refused, unread,
//! before anything is done. A switch runs in its own task, so a caller that hangs up
//! never leaves it half done; once the daemon begins to stop, one not done yet is ended
//! (its migration stopped) and its caller told so. A reload answers once the new
//! generation is live or has failed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::control_conns::Conns;
use super::local::Hints;
use super::metrics::SwitchCause;
use super::not_deployed::NotDeployed;
use super::params::{flag, params};
use super::supervisor::{Cause, Reload};
use super::switch::{self, Query};
use super::upstream::{self, Body};
use super::Daemon;
use crate::slot::Slot;
use crate::verdict::Verdict;

/// Another user's refused calls, told at most once a second: each would be a line.
static REFUSED_LOG: std::sync::LazyLock<crate::logging::Sparse> =
    std::sync::LazyLock::new(Default::default);

/// How long a connection asked to give way may take to finish what it was doing.
const GIVE_WAY: Duration = Duration::from_secs(1);

/// Accepts connections until `stop` turns true; each is served on its own task. Then
/// each connection ends once the answer it owes is written (an idle one at once), and
/// this returns when all have: a reload or switch cut short by the stop still tells its
/// caller so, where a runtime dropped under it closed the connection unanswered.
pub async fn serve(listener: TcpListener, daemon: Arc<Daemon>, mut stop: watch::Receiver<bool>) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut conns = Conns::default();
    loop {
        let room = conns.room();
        // At the cap: when a connection will have been open long enough to give way.
        let may_give_way = match room {
            Err(Some(at)) => Some(tokio::time::Instant::from_std(at)),
            _ => None,
        };
        let accepted = tokio::select! {
            accepted = listener.accept(), if room.is_ok() => accepted,
            () = tokio::time::sleep_until(may_give_way.unwrap_or_else(tokio::time::Instant::now)),
                if may_give_way.is_some() => continue,
            Some(_) = tasks.join_next() => continue,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of files, most likely: the next accept may work once some close.
                tracing::warn!("control API: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Where the caller connected to, to find whose the connection is (`crate::peer`).
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let (daemon, mut stop) = (daemon.clone(), stop.clone());
        let conn = conns.open();
        tasks.spawn(async move {
            let (asked, place) = (stop.clone(), conn.clone());
            let service = service_fn(move |request| {
                let (daemon, stop) = (daemon.clone(), asked.clone());
                let under_way = place.request();
                async move {
                    let mut answer = answer(request, (peer, local), &daemon, stop).await;
                    // Giving its place: hyper closes it once this is written.
                    if under_way.closes() {
                        answer
                            .headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    drop(under_way);
                    Ok::<_, Infallible>(answer)
                }
            });
            // The timer bounds the time a head may take (hyper's 30 s).
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let mut giving_way = tokio::select! {
                _ = connection.as_mut() => return,
                _ = stop.wait_for(|stop| *stop) => false,
                () = conn.look_again() => true,
            };
            // Its next answer closes it; one idle for `IDLE_AFTER` is closed at once.
            while giving_way {
                let close_at = conn.may_close_at();
                if close_at.is_some_and(|at| at <= std::time::Instant::now()) {
                    break;
                }
                let close_at = close_at.map(tokio::time::Instant::from_std);
                tokio::select! {
                    _ = connection.as_mut() => return,
                    () = tokio::time::sleep_until(close_at.unwrap_or_else(tokio::time::Instant::now)),
                        if close_at.is_some() => {}
                    () = conn.look_again() => {}
                    _ = stop.wait_for(|stop| *stop) => giving_way = false,
                }
            }
            connection.as_mut().graceful_shutdown();
            if !giving_way {
                return drop(connection.await);
            }
            // Idle: closed at once. A request that came meanwhile is answered first; a
            // head half sent is not waited for long.
            while tokio::time::timeout(GIVE_WAY, connection.as_mut())
                .await
                .is_err()
            {
                if !conn.busy() {
                    break;
                }
            }
        });
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

/// The answer to `request` from `peer`, a connection to `local`.
async fn answer(
    request: Request<Incoming>,
    (peer, local): (SocketAddr, SocketAddr),
    daemon: &Arc<Daemon>,
    stop: watch::Receiver<bool>,
) -> Response<Body> {
    if !peer.ip().to_canonical().is_loopback() {
        return reply(
            StatusCode::FORBIDDEN,
            "text/plain",
            "the control API answers loopback callers only".into(),
        );
    }
    if let Err(why) = super::params::no_body(request.headers()) {
        return reply(StatusCode::BAD_REQUEST, "text/plain", why);
    }
    // Which of two Host headers counts, say, would be a guess: a bad request, as on the
    // data path, not a caller from elsewhere.
    if let Some(why) = super::target::bad_host(&request) {
        return reply(StatusCode::BAD_REQUEST, "text/plain", why.into());
    }
    let hints = Hints::of(request.uri(), request.headers());
    if let Err(why) = super::local::from_this_host(&hints) {
        return reply(
            StatusCode::FORBIDDEN,
            "text/plain",
            format!("the control API answers callers on this host only: {why}"),
        );
    }
    // Only bluegreen's own commands name their root: their switches count as `cli`.
    let asker = request.headers().get(crate::client::ROOT_HEADER);
    let cause = if asker.is_some() {
        SwitchCause::Cli
    } else {
        SwitchCause::Api
    };
    if let Some(asker) = asker {
        if asker.as_bytes() != daemon.layout.identity().as_bytes() {
            let root = daemon.layout.root().display().to_string();
            let why = match daemon.root_gone() {
                // Most likely the caller's root is this one, moved: "another root" and
                // "its own control.listen" would send them the wrong way.
                true => {
                    let why = format!(
                        "{}{root}{}: stop this daemon (pid {}) and start `bluegreen serve` on the root where it is now",
                        crate::client::OTHER_ROOT,
                        crate::client::ROOT_GONE,
                        std::process::id()
                    );
                    tracing::warn!("a command for another root asked: {why}");
                    why
                }
                false => crate::client::serves_another_root(&root),
            };
            return reply(StatusCode::MISDIRECTED_REQUEST, "text/plain", why);
        }
    }
    let asked = request.method().clone();
    // HEAD is GET without the body (RFC 9110 §9.3.2): hyper leaves the body out and keeps
    // its length.
    let method = match asked {
        Method::HEAD => Method::GET,
        _ => asked.clone(),
    };
    let path = request.uri().path();
    let query = request.uri().query().unwrap_or("");
    // Reads are anyone's on this host (a metrics scraper runs as a user of its own);
    // changes are the daemon's own user's and root's, who run its hooks and commands.
    if method != Method::GET {
        if let Some(why) = super::local::whose(peer, Some(local), "change this daemon").await {
            if let Some(held) = REFUSED_LOG.admit() {
                tracing::warn!(
                    "control API: {asked} {path} refused: {why}{}",
                    crate::logging::held(held)
                );
            }
            return reply(
                StatusCode::FORBIDDEN,
                "text/plain",
                format!("{asked} {path} refused: {why}"),
            );
        }
    }
    // `/slots/<slot>/reload` and `/slots/<slot>/not-deployed`: the slot named, and which.
    let slot_action = path
        .strip_prefix("/slots/")
        .and_then(|rest| rest.rsplit_once('/'))
        .filter(|(_, action)| matches!(*action, "reload" | "not-deployed"));
    // Only `POST /switch`, `POST /mirroring` and the slot actions take parameters; a
    // query anywhere else would be ignored, which a caller could take for having been
    // obeyed. A method an endpoint does not take is a 405 first, query or not.
    let allow = match path {
        "/status" | "/events" | "/metrics" => Some("GET, HEAD"),
        "/mirroring" => Some("GET, HEAD, POST"),
        "/switch" => Some("POST"),
        _ if slot_action.is_some() => Some("POST"),
        _ => None,
    };
    if let Some(allow) = allow.filter(|a| !a.split(", ").any(|m| m == asked.as_str())) {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            format!("{asked} is not allowed on {path}"),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
        return response;
    }
    let takes_query = method == Method::POST
        && (matches!(path, "/switch" | "/mirroring") || slot_action.is_some());
    if allow.is_some() && !takes_query && !query.is_empty() {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("{asked} {path} takes no parameters (got ?{query})"),
        );
    }
    let (status, kind, body) = match (&method, path) {
        (&Method::GET, "/status") => (
            StatusCode::OK,
            "application/json",
            super::status::json(daemon).to_string(),
        ),
        (&Method::GET, "/events") => (
            StatusCode::OK,
            "application/json",
            serde_json::to_string(&daemon.events.recent(200)).unwrap_or_default(),
        ),
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            daemon.metrics_text(),
        ),
        (&Method::GET, "/mirroring") => (StatusCode::OK, "application/json", mirroring(daemon)),
        (&Method::POST, "/mirroring") => {
            match params(query, &["enabled"]).and_then(|params| match params.first() {
                Some((_, value)) => flag("enabled", value),
                None => Err("use ?enabled=true or ?enabled=false".into()),
            }) {
                Ok(on) => match daemon.set_mirroring(on) {
                    Ok(()) => (StatusCode::OK, "application/json", mirroring(daemon)),
                    Err(e) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        format!("cannot record the flag: {e:#}"),
                    ),
                },
                Err(reason) => (StatusCode::BAD_REQUEST, "text/plain", reason),
            }
        }
        (&Method::POST, "/switch") => match Query::parse(query) {
            Ok(query) => match switch::in_task(daemon, query, cause, stop).await {
                Ok(done) => (StatusCode::OK, "application/json", done.to_string()),
                Err(e) => (e.status(), "text/plain", e.to_string()),
            },
            Err(reason) => (StatusCode::BAD_REQUEST, "text/plain", reason),
        },
        (&Method::POST, _) if slot_action.is_some() => {
            let (target, action) = slot_action.unwrap_or_default();
            match (target.parse::<Slot>(), action) {
                (Err(e), _) => (StatusCode::NOT_FOUND, "text/plain", format!("{e:#}")),
                (Ok(slot), "reload") => match reload_params(slot, path, query) {
                    Ok(mode) => reload(daemon, slot, mode).await,
                    Err(why) => (StatusCode::BAD_REQUEST, "text/plain", why),
                },
                (Ok(slot), _) => match NotDeployed::parse(query) {
                    Ok(push) => {
                        push.record(daemon, slot);
                        (StatusCode::OK, "text/plain", "recorded".into())
                    }
                    Err(reason) => (StatusCode::BAD_REQUEST, "text/plain", reason),
                },
            }
        }
        // A known path with a method it does not take was answered 405 above.
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no such endpoint: {asked} {path}"),
        ),
    };
    reply(status, kind, body)
}

/// What `POST /slots/<slot>/reload` asks: nothing (start it again all the same), or
/// `?release=<id>`, with `&by=push|rollback|promote` (what made it current) if the
/// caller says. Else the reason it is a `400`.
fn reload_params(slot: Slot, path: &str, query: &str) -> Result<Reload, String> {
    let takes = || {
        format!("POST {path} takes only ?release=<id>, with &by=push, rollback or promote (got ?{query})")
    };
    let params = params(query, &["release", "by"]).map_err(|_| takes())?;
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let by = match get("by") {
        None => None,
        Some(by) => Some(crate::verdict::By::parse(by).ok_or_else(|| {
            format!(
                "`by` is `{}`: use push, rollback or promote",
                crate::logging::quotable(by)
            )
        })?),
    };
    match get("release") {
        None if by.is_some() => Err(takes()),
        None => Ok(Reload::Always(Cause::Restart)),
        // One that names none of the slot's releases is the supervisor's to answer
        // (409), as one pruned since is.
        Some("") => Err(format!(
            "`release` is empty: name one of {slot}'s releases (see `bluegreen releases {slot}`)"
        )),
        Some(id) => Ok(Reload::Deployed(id.to_string(), by)),
    }
}

/// Runs the slot's current release, and answers with the verdict: `200` live, `409` not.
async fn reload(daemon: &Daemon, slot: Slot, mode: Reload) -> (StatusCode, &'static str, String) {
    let wait = daemon.config().app.reload_wait();
    let verdict = match tokio::time::timeout(wait, daemon.reload(slot, mode)).await {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(_)) => Verdict::stopping(slot, ""),
        Err(_) => Verdict {
            slot: Some(slot),
            reason: format!("no verdict within {}", humantime::format_duration(wait)),
            ..Verdict::default()
        },
    };
    let verdict = Verdict {
        stale_config: super::config_reload::stale_config(daemon).unwrap_or_default(),
        ..verdict
    };
    let status = match verdict.live {
        true => StatusCode::OK,
        false => StatusCode::CONFLICT,
    };
    (
        status,
        "application/json",
        serde_json::to_string(&verdict).unwrap_or_default(),
    )
}

fn mirroring(daemon: &Daemon) -> String {
    serde_json::json!({ "enabled": daemon.mirroring() }).to_string()
}

fn reply(status: StatusCode, kind: &'static str, mut body: String) -> Response<Body> {
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let mut response = Response::new(upstream::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}
