//! The control API on `control.listen` (loopback only), served by tiny_http.
//!
//! A caller that names another root (`Bluegreen-Root`, see `client`) gets 421: two roots
//! given the same `control.listen` must not steer each other's daemon.
//!
//! Each request gets its own thread, because a reload answers only once the new
//! generation is live or has failed; async work is run on the daemon's runtime.

use std::sync::Arc;

use tiny_http::{Header, Method, Request, Response, Server};

use super::local::Hints;
use super::supervisor::Reload;
use super::switch::{self, Query};
use super::Daemon;
use crate::slot::Slot;
use crate::verdict::Verdict;

/// Answers requests until the server is unblocked (on shutdown).
pub fn serve(server: Arc<Server>, daemon: Arc<Daemon>, runtime: tokio::runtime::Handle) {
    for request in server.incoming_requests() {
        let (daemon, runtime) = (daemon.clone(), runtime.clone());
        std::thread::spawn(move || answer(request, &daemon, &runtime));
    }
}

fn answer(request: Request, daemon: &Arc<Daemon>, runtime: &tokio::runtime::Handle) {
    if !request
        .remote_addr()
        .is_some_and(|a| a.ip().to_canonical().is_loopback())
    {
        return reply(
            request,
            403,
            "text/plain",
            "the control API answers loopback callers only".into(),
        );
    }
    // tiny_http reads a body by a Content-Length it does not check: a request framed
    // in a way that is not clear is refused before it can do anything.
    if let Err(why) = framing(request.headers()) {
        return reply(request, 400, "text/plain", why);
    }
    let header = |name: &'static str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str())
    };
    let several = |name: &'static str| {
        request
            .headers()
            .iter()
            .filter(|h| h.field.equiv(name))
            .nth(1)
            .is_some()
    };
    let hints = Hints {
        host: header("Host"),
        origin: header("Origin"),
        fetch_site: header("Sec-Fetch-Site"),
        forwarded: header("X-Forwarded-For").is_some() || header("Forwarded").is_some(),
        repeated: ["Host", "Origin", "Sec-Fetch-Site"]
            .into_iter()
            .any(several),
    };
    if let Err(why) = super::local::from_this_host(&hints) {
        return reply(
            request,
            403,
            "text/plain",
            format!("the control API answers callers on this host only: {why}"),
        );
    }
    if let Some(asker) = header(crate::client::ROOT_HEADER) {
        if asker != daemon.layout.identity() {
            let root = daemon.layout.root().display().to_string();
            return reply(
                request,
                421,
                "text/plain",
                format!("this daemon serves {root}, another root: give each root its own control.listen"),
            );
        }
    }
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let method = request.method().clone();
    // `/slots/<slot>/reload`.
    let reload_target = path
        .strip_prefix("/slots/")
        .and_then(|rest| rest.strip_suffix("/reload"));
    // Only `POST /switch`, `POST /mirroring` and a reload's `release` take parameters; a
    // query anywhere else would be ignored, which a caller could take for having been
    // obeyed. A method an endpoint does not take is a 405 first, query or not.
    let allowed = match path {
        "/status" | "/events" | "/metrics" => Some(method == Method::Get),
        "/mirroring" => Some(matches!(method, Method::Get | Method::Post)),
        "/switch" => Some(method == Method::Post),
        _ if reload_target.is_some() => Some(method == Method::Post),
        _ => None,
    };
    if allowed == Some(false) {
        return reply(
            request,
            405,
            "text/plain",
            format!("{method} is not allowed on {path}"),
        );
    }
    let takes_query = method == Method::Post
        && (matches!(path, "/switch" | "/mirroring") || reload_target.is_some());
    if allowed.is_some() && !takes_query && !query.is_empty() {
        return reply(
            request,
            400,
            "text/plain",
            format!("{method} {path} takes no parameters (got ?{query})"),
        );
    }
    let (status, kind, body) = match (&method, path) {
        (Method::Get, "/status") => (
            200,
            "application/json",
            super::status::json(daemon).to_string(),
        ),
        (Method::Get, "/events") => (
            200,
            "application/json",
            serde_json::to_string(&daemon.events.recent(200)).unwrap_or_default(),
        ),
        (Method::Get, "/metrics") => (200, "text/plain; version=0.0.4", daemon.metrics_text()),
        (Method::Get, "/mirroring") => (200, "application/json", mirroring(daemon)),
        (Method::Post, "/mirroring") => {
            match switch::params(query, &["enabled"]).and_then(|params| match params.first() {
                Some((_, value)) => switch::flag("enabled", value),
                None => Err("use ?enabled=true or ?enabled=false".into()),
            }) {
                Ok(on) => match daemon.set_mirroring(on) {
                    Ok(()) => (200, "application/json", mirroring(daemon)),
                    Err(e) => (500, "text/plain", format!("cannot record the flag: {e:#}")),
                },
                Err(reason) => (400, "text/plain", reason),
            }
        }
        (Method::Post, "/switch") => match Query::parse(query) {
            Ok(query) => match runtime.block_on(switch::switch(daemon, query, "api")) {
                Ok(done) => (200, "application/json", done.to_string()),
                Err(e) => (e.status().as_u16(), "text/plain", e.to_string()),
            },
            Err(reason) => (400, "text/plain", reason),
        },
        (Method::Post, _) if reload_target.is_some() => {
            let mode = match query {
                "" => Ok(Reload::Always),
                _ => match query.strip_prefix("release=") {
                    Some(id) if !id.is_empty() && !id.contains(['&', '=']) => {
                        Ok(Reload::Deployed(id.to_string()))
                    }
                    _ => Err(format!(
                        "POST {path} takes only ?release=<id> (got ?{query})"
                    )),
                },
            };
            match (reload_target.unwrap_or_default().parse::<Slot>(), mode) {
                (Err(e), _) => (404, "text/plain", format!("{e:#}")),
                (Ok(_), Err(reason)) => (400, "text/plain", reason),
                (Ok(slot), Ok(mode)) => {
                    let verdict = reload(daemon, runtime, slot, mode);
                    let status = if verdict.live { 200 } else { 409 };
                    (
                        status,
                        "application/json",
                        serde_json::to_string(&verdict).unwrap_or_default(),
                    )
                }
            }
        }
        // A known path with a method it does not take was answered 405 above.
        _ => (
            404,
            "text/plain",
            format!("no such endpoint: {method} {path}"),
        ),
    };
    reply(request, status, kind, body);
}

fn reload(daemon: &Daemon, runtime: &tokio::runtime::Handle, slot: Slot, mode: Reload) -> Verdict {
    let config = daemon.config();
    let wait = config.app.reload_wait();
    let answer = runtime.block_on(async {
        let rx = daemon.reload(slot, mode);
        tokio::time::timeout(wait, rx).await
    });
    match answer {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(_)) => Verdict {
            slot: Some(slot),
            reason: "the daemon is stopping".into(),
            ..Verdict::default()
        },
        Err(_) => Verdict {
            slot: Some(slot),
            reason: format!("no verdict within {}", humantime::format_duration(wait)),
            ..Verdict::default()
        },
    }
}

fn mirroring(daemon: &Daemon) -> String {
    serde_json::json!({ "enabled": daemon.mirroring() }).to_string()
}

/// A request's body framing, if it is not one clear Content-Length (or none): more than
/// one, a value that is not a number, or a Transfer-Encoding (no endpoint takes a body).
fn framing(headers: &[Header]) -> Result<(), String> {
    let mut lengths = headers.iter().filter(|h| h.field.equiv("Content-Length"));
    if let Some(length) = lengths.next() {
        if lengths.next().is_some() {
            return Err("more than one Content-Length header".into());
        }
        let value = length.value.as_str().trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("Content-Length `{value}` is not a number of bytes"));
        }
    }
    if headers.iter().any(|h| h.field.equiv("Transfer-Encoding")) {
        return Err(
            "Transfer-Encoding is not taken here: the control API's requests have no body".into(),
        );
    }
    Ok(())
}

fn reply(request: Request, status: u16, kind: &str, mut body: String) {
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let header = Header::from_bytes("Content-Type", kind)
        .expect("content types here are valid header values");
    let _ = request.respond(
        Response::from_string(body)
            .with_status_code(status)
            .with_header(header),
    );
}
