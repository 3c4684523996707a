//! Mirror: copy writes that reach the front to the standby's live generation.
//!
//! The body of a mirrored request is buffered up to `mirror.max_body` so one copy can
//! go to each slot; the client's request goes on at once and never waits for the copy.
//! The copy is queued once the active slot has answered: a write the active did not take
//! (no answer, or a 5xx) is not applied to the standby either, so the two do not drift
//! apart (counted `active_failed`). Copies go through a bounded queue to one sender task,
//! which keeps their order. Every copy that cannot be made (standby down, queue full,
//! body too large, an error or non-2xx answer) is counted by reason and logged with
//! method and path.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use tokio::sync::mpsc;

use super::upstream::{self, Body, BoxError};
use super::Daemon;
use crate::config::Config;
use crate::logging::Sparse;
use crate::slot::Slot;

/// The longest a copy may take before it counts as failed.
const MIRROR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The most body bytes the queued copies may hold together: `mirror.queue` bounds their
/// number, this their memory (1024 copies of 10 MiB would be 10 GiB). Beyond it a copy
/// counts as `queue_full`.
const QUEUED_BYTES: u64 = 256 << 20;

/// One copy to send.
pub struct Job {
    slot: Slot,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A copy of a write, waiting for the active slot's answer. Dropped without one (the
/// client left, or the daemon stopped, while the active was answering), it is counted
/// and logged as not mirrored.
pub struct PendingCopy {
    job: Option<Job>,
    /// `mirror.queue`, for the message when it is full.
    queue: usize,
    daemon: Arc<Daemon>,
}

impl Drop for PendingCopy {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            let why = "the request ended before the active slot answered (it may have applied it)";
            self.daemon
                .mirror
                .lost(&self.daemon, "error", &job.method, &job.path, why.into());
        }
    }
}

pub struct Mirror {
    /// Bounded by `mirror.queue`: a full queue drops the copy (counted), never blocks
    /// the client.
    tx: mpsc::Sender<Job>,
    /// Body bytes of the copies in the queue, bounded by `QUEUED_BYTES`.
    queued_bytes: AtomicU64,
    /// Keeps "not mirrored" lines to one a second.
    quiet: Sparse,
}

impl Mirror {
    /// The mirror and the receiving end its sender task drains.
    pub fn new(queue: usize) -> (Mirror, mpsc::Receiver<Job>) {
        let (tx, rx) = mpsc::channel(queue);
        (
            Mirror {
                tx,
                queued_bytes: AtomicU64::new(0),
                quiet: Sparse::default(),
            },
            rx,
        )
    }

    /// Copies waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Whether requests with `method` are mirrored (when mirroring is on).
    pub fn mirrors(config: &Config, method: &Method) -> bool {
        config.mirror.methods.iter().any(|m| m == method.as_str())
    }

    /// Buffers `body` (up to `mirror.max_body`); returns the body to send to the active
    /// slot and the copy for `standby`, to hand to [`Mirror::answered`] once the active
    /// has answered.
    pub async fn tee(
        &self,
        daemon: &Arc<Daemon>,
        config: &Config,
        parts: &Parts,
        body: Incoming,
        standby: Slot,
    ) -> (Body, Option<PendingCopy>) {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let limit = config.mirror.max_body;
        let too_large = || format!("body over mirror.max_body ({limit} bytes)");
        if declared.is_some_and(|n| n > limit) {
            self.lost(daemon, "too_large", &parts.method, &path, too_large());
            return (body.map_err(BoxError::from).boxed(), None);
        }
        // Read the body up to the limit; what is read is replayed to the active slot.
        let mut frames = VecDeque::new();
        let mut copy = Vec::new();
        let mut body = body;
        let mut complete = false;
        loop {
            match body.frame().await {
                None => {
                    complete = true;
                    break;
                }
                Some(Err(e)) => {
                    self.lost(
                        daemon,
                        "error",
                        &parts.method,
                        &path,
                        format!("client body: {e}"),
                    );
                    frames.push_back(Err(BoxError::from(e)));
                    break;
                }
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        copy.extend_from_slice(data);
                    }
                    frames.push_back(Ok(frame));
                    if copy.len() as u64 > limit {
                        self.lost(daemon, "too_large", &parts.method, &path, too_large());
                        break;
                    }
                }
            }
        }
        let copy = (complete && copy.len() as u64 <= limit).then(|| PendingCopy {
            job: Some(Job {
                slot: standby,
                method: parts.method.clone(),
                path,
                headers: parts.headers.clone(),
                body: Bytes::from(copy),
            }),
            queue: config.mirror.queue,
            daemon: daemon.clone(),
        });
        let body = Replay {
            frames,
            rest: if complete { None } else { Some(body) },
        }
        .boxed();
        (body, copy)
    }

    /// The active slot answered `copy`'s request with `status` (`None`: no answer). A
    /// write it took goes to the standby's queue; one it did not is not applied there.
    pub fn answered(&self, daemon: &Daemon, mut copy: PendingCopy, status: Option<StatusCode>) {
        let (Some(job), queue) = (copy.job.take(), copy.queue) else {
            return;
        };
        match status {
            Some(status) if !status.is_server_error() => {}
            _ => {
                let why = status.map_or_else(
                    || "the active slot gave no answer".to_string(),
                    |status| format!("the active slot answered {status}"),
                );
                return self.lost(daemon, "active_failed", &job.method, &job.path, why);
            }
        }
        let size = job.body.len() as u64;
        if !self.reserve(size) {
            let why = format!(
                "the queued copies already hold {} MiB of bodies",
                QUEUED_BYTES >> 20
            );
            return self.lost(daemon, "queue_full", &job.method, &job.path, why);
        }
        let (method, path) = (job.method.clone(), job.path.clone());
        let (reason, why) = match self.tx.try_send(job) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => {
                ("queue_full", format!("mirror.queue is full ({queue})"))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                ("error", "the mirror sender has stopped".to_string())
            }
        };
        self.release(size);
        self.lost(daemon, reason, &method, &path, why);
    }
    /// Counts `size` bytes in the queue, if they fit in `QUEUED_BYTES`.
    fn reserve(&self, size: u64) -> bool {
        self.queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + size <= QUEUED_BYTES).then_some(held + size)
            })
            .is_ok()
    }

    fn release(&self, size: u64) {
        self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
    }

    fn lost(
        &self,
        daemon: &Daemon,
        reason: &'static str,
        method: &Method,
        path: &str,
        why: String,
    ) {
        daemon.metrics.mirror(reason);
        // A full queue drops a copy per request: a line a second says so, with a count.
        match self.quiet.admit() {
            Some(0) => tracing::warn!(reason, "not mirrored: {method} {path}: {why}"),
            Some(held) => tracing::warn!(
                reason,
                "not mirrored: {method} {path}: {why} (and {held} more since the last such line; see bluegreen_mirror_total)"
            ),
            None => {}
        }
    }
}

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
        let outcome = send(&daemon, job).await;
        if let Err((reason, method, path, why)) = outcome {
            daemon.mirror.lost(&daemon, reason, &method, &path, why);
        } else {
            daemon.metrics.mirror("sent");
        }
    }
    teller.abort();
}

async fn send(daemon: &Daemon, job: Job) -> Result<(), (&'static str, Method, String, String)> {
    let Job {
        slot,
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
    headers.insert("x-bluegreen-mirror", http::HeaderValue::from_static("1"));
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

/// The frames already read, then whatever the client is still sending.
struct Replay {
    frames: VecDeque<Result<Frame<Bytes>, BoxError>>,
    rest: Option<Incoming>,
}

impl hyper::body::Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(frame));
        }
        match &mut self.rest {
            Some(rest) => Pin::new(rest)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BoxError::from))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_copies_hold_a_bounded_number_of_bytes() {
        let (mirror, _rx) = Mirror::new(4);
        assert!(mirror.reserve(QUEUED_BYTES - 10));
        assert!(!mirror.reserve(11), "over the byte budget");
        assert!(mirror.reserve(10));
        mirror.release(QUEUED_BYTES);
        assert!(mirror.reserve(QUEUED_BYTES), "sent copies free their bytes");
    }
}
