//! The sender: one task that takes the queued copies in order and sends each to the
//! standby's live generation as soon as [`Order`] lets it (copies of writes that were in
//! flight together on the active go out together, up to [`OUT`]), and tells the copies
//! it could not send (at most a line a second, then the count).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::order::Order;
use super::{Job, MIRROR_TIMEOUT};
use crate::daemon::headers::MIRROR_MARK;
use crate::daemon::metrics::MirrorOutcome;
use crate::daemon::pool;
use crate::daemon::upstream;
use crate::daemon::Daemon;

/// Said of a copy that went out and got no answer.
const MAYBE_APPLIED: &str = " (sent: the standby may have applied it all the same)";

/// The most copies out at once, whatever the active took at once.
pub const OUT: usize = 64;

/// What became of a copy that was not sent: its metrics label, method, path and why.
type Lost = (MirrorOutcome, Method, String, String);

/// A copy out: its number in [`Order`], its answer tick and its size ([`Job::bytes`]).
struct Out {
    number: u64,
    answered: u64,
    bytes: u64,
}

/// Sends the queued copies to the standby's live generation, in the order [`Order`] asks.
pub async fn run(daemon: Arc<Daemon>, mut rx: mpsc::Receiver<Job>) {
    // "Not mirrored" lines held back by the once-a-second limit are told within a second,
    // even when no further copy is lost.
    let teller = tokio::spawn({
        let daemon = daemon.clone();
        async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                daemon.mirror.tell_held();
            }
        }
    });
    let mut order = Order::default();
    let mut tasks = JoinSet::new();
    let mut out = HashMap::new();
    // The copy taken from the queue that may not go out yet.
    let mut next: Option<Job> = None;
    loop {
        if let Some(job) = next.take() {
            if order.out() < OUT && order.may_start(job.routed) {
                let copy = Out {
                    number: order.start(job.answered),
                    answered: job.answered,
                    bytes: job.bytes(),
                };
                daemon.mirror.went_out();
                let id = tasks.spawn(copy_out(daemon.clone(), job)).id();
                out.insert(id, copy);
            } else {
                next = Some(job);
            }
        }
        tokio::select! {
            Some(ended) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = match ended {
                    Ok((id, Ok(()))) => {
                        daemon.metrics.mirror(MirrorOutcome::Sent);
                        id
                    }
                    Ok((id, Err((reason, method, path, why)))) => {
                        daemon.mirror.lost(&daemon, reason, &method, &path, why);
                        id
                    }
                    Err(e) => {
                        daemon.metrics.mirror(MirrorOutcome::Error);
                        tracing::error!("not mirrored: a copy's task failed: {e}");
                        e.id()
                    }
                };
                let copy = out.remove(&id).expect("every copy task is in `out`");
                daemon.mirror.release(copy.bytes);
                let done = order.finish(copy.number, copy.answered);
                if done > 0 {
                    daemon.mirror.moved(&daemon.mirror.done_total, true, done);
                }
            }
            job = rx.recv(), if next.is_none() => match job {
                Some(job) => next = Some(job),
                None => break,
            },
        }
    }
    teller.abort();
}

/// Sends `job` unless a switch came after its write was routed, holding the gate shared
/// while it is out. A standby whose generation is on its way (the daemon's start, a
/// deploy without overlap, a crash's restart) is waited for, as long as a start may
/// take, until one fails while it waits: sent meanwhile, its copies found no standby
/// (each restart lost those of the standby's start); the copies behind wait in the queue.
async fn copy_out(daemon: Arc<Daemon>, job: Job) -> Result<(), Lost> {
    let ready_timeout = daemon.config().app.ready_timeout;
    let by = tokio::time::Instant::now() + ready_timeout + Duration::from_secs(5);
    daemon.slots[job.slot.index()].comes_live(by).await;
    let _out = daemon.mirror.out.read().await;
    if daemon.switches() != job.switches {
        return Err((
            MirrorOutcome::Stale,
            job.method,
            job.path,
            format!(
                "a switch came before the copy to {} went out (it could land after a newer write)",
                job.slot
            ),
        ));
    }
    send(&daemon, job).await
}

async fn send(daemon: &Daemon, job: Job) -> Result<(), Lost> {
    let Job {
        slot,
        switches: _,
        routed: _,
        answered: _,
        method,
        path,
        mut headers,
        body,
    } = job;
    let Ok(in_flight) = daemon.slots[slot.index()].route.acquire(0) else {
        return Err((
            MirrorOutcome::StandbyDown,
            method,
            path,
            format!("{slot} has no live generation"),
        ));
    };
    headers.remove(http::header::CONNECTION);
    let reuse_after_body = daemon.config().app.reuse_after_body;
    if pool::closes(&method, body.is_empty(), reuse_after_body) {
        // As on the data path: a standby that left the body unread closes instead of
        // reading it as a request.
        headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    headers.remove(http::header::TRANSFER_ENCODING);
    headers.insert(http::header::CONTENT_LENGTH, body.len().into());
    headers.insert(MIRROR_MARK, http::HeaderValue::from_static("1"));
    let mut request = Request::new(upstream::full(body));
    *request.method_mut() = method.clone();
    *request.headers_mut() = headers;
    *request.uri_mut() =
        match format!("http://127.0.0.1:{}{path}", in_flight.generation().port).parse() {
            Ok(uri) => uri,
            Err(e) => return Err((MirrorOutcome::Error, method, path, e.to_string())),
        };
    // Bounded: one stuck copy must not hold up every copy behind it. The head is the
    // standby's answer: its body is read on, and dropped, apart from the copies behind
    // (see `upstream::discard`).
    let deadline = tokio::time::Instant::now() + MIRROR_TIMEOUT;
    let answer = tokio::time::timeout_at(deadline, async {
        let response = daemon.client.request(request).await?;
        let status = response.status();
        upstream::discard(response.into_body(), deadline);
        Ok::<_, hyper_util::client::legacy::Error>(status)
    })
    .await;
    match answer {
        Ok(Ok(status)) if status.is_success() => Ok(()),
        Ok(Ok(status)) => Err((
            MirrorOutcome::Non2xx,
            method,
            path,
            format!("{slot} answered {status}"),
        )),
        // Not a connect's failure: the copy went out, whole or in part, and the standby
        // may have applied it before its answer was lost (counted `error` all the same).
        Ok(Err(e)) => Err((
            MirrorOutcome::Error,
            method,
            path,
            format!(
                "{slot}: {}{}",
                upstream::describe(&e),
                if e.is_connect() { "" } else { MAYBE_APPLIED }
            ),
        )),
        Err(_) => Err((
            MirrorOutcome::Error,
            method,
            path,
            format!(
                "{slot} did not answer within {}s{MAYBE_APPLIED}",
                MIRROR_TIMEOUT.as_secs()
            ),
        )),
    }
}
