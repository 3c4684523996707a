//! The sender: one task that sends the queued copies one after another, in order, to
//! the standby's live generation, and tells the copies it could not send (at most a line
//! a second, then the count).

use std::sync::Arc;

use http::{Method, Request};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::{Job, MIRROR_TIMEOUT};
use crate::daemon::headers::MIRROR_MARK;
use crate::daemon::upstream;
use crate::daemon::Daemon;

/// Sends queued copies one after another, in order, to the standby's live generation.
pub async fn run(daemon: Arc<Daemon>, mut rx: mpsc::Receiver<Job>) {
    // "Not mirrored" lines held back by the once-a-second limit are told within a second,
    // even when no further copy is lost.
    let teller = tokio::spawn({
        let daemon = daemon.clone();
        async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let held = daemon.mirror.quiet.flush();
                if held > 0 {
                    tracing::warn!(
                        "{held} more copies not mirrored in the last second (see bluegreen_mirror_total)"
                    );
                }
            }
        }
    });
    while let Some(job) = rx.recv().await {
        daemon.mirror.release(job.body.len() as u64);
        let outcome = {
            let _out = daemon.mirror.gate.lock().await;
            if daemon.switches() != job.switches {
                Err((
                    "stale",
                    job.method,
                    job.path,
                    format!(
                        "a switch came before the copy to {} went out (it could land after a newer write)",
                        job.slot
                    ),
                ))
            } else {
                send(&daemon, job).await
            }
        };
        if let Err((reason, method, path, why)) = outcome {
            daemon.mirror.lost(&daemon, reason, &method, &path, why);
        } else {
            daemon.metrics.mirror("sent");
        }
        daemon.mirror.moved(&daemon.mirror.done_total, true);
    }
    teller.abort();
}

async fn send(daemon: &Daemon, job: Job) -> Result<(), (&'static str, Method, String, String)> {
    let Job {
        slot,
        switches: _,
        method,
        path,
        mut headers,
        body,
    } = job;
    let Ok(in_flight) = daemon.slots[slot.index()].route.acquire(0) else {
        return Err((
            "standby_down",
            method,
            path,
            format!("{slot} has no live generation"),
        ));
    };
    headers.remove(http::header::CONNECTION);
    headers.remove(http::header::TRANSFER_ENCODING);
    headers.insert(http::header::CONTENT_LENGTH, body.len().into());
    headers.insert(MIRROR_MARK, http::HeaderValue::from_static("1"));
    let mut request = Request::new(upstream::full(body));
    *request.method_mut() = method.clone();
    *request.headers_mut() = headers;
    *request.uri_mut() =
        match format!("http://127.0.0.1:{}{path}", in_flight.generation().port).parse() {
            Ok(uri) => uri,
            Err(e) => return Err(("error", method, path, e.to_string())),
        };
    // Bounded: one stuck copy must not hold up every copy behind it.
    let answer = tokio::time::timeout(MIRROR_TIMEOUT, async {
        let response = daemon.client.request(request).await?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        Ok::<_, hyper_util::client::legacy::Error>(status)
    })
    .await;
    match answer {
        Ok(Ok(status)) if status.is_success() => Ok(()),
        Ok(Ok(status)) => Err(("non_2xx", method, path, format!("{slot} answered {status}"))),
        Ok(Err(e)) => Err((
            "error",
            method,
            path,
            format!("{slot}: {}", upstream::describe(&e)),
        )),
        Err(_) => Err((
            "error",
            method,
            path,
            format!("{slot} did not answer within {}s", MIRROR_TIMEOUT.as_secs()),
        )),
    }
}
