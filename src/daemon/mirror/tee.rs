//! The client's body on its way to the active slot, copied as it passes.
//!
//! Each frame goes on to the active slot as soon as it arrives (the body streams, as
//! every body does); its bytes are also kept, up to `mirror.max_body`, for the copy to
//! the standby. The copy is complete only once the client's body has ended: a body that
//! breaks off, grows past the limit, or is cut short by an early answer is not mirrored,
//! and says why. The copies being gathered share one budget of memory
//! ([`GATHERED_BYTES`]): many large writes at once drop their copies (`queue_full`), never
//! the daemon's memory.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};

use crate::daemon::metrics::MirrorOutcome;
use crate::daemon::upstream::BoxError;

/// The most body bytes the copies being gathered may hold together (20 concurrent
/// 9 MiB uploads held 337 MiB before there was a bound).
pub(super) const GATHERED_BYTES: u64 = 256 << 20;

/// Bytes counted against a shared budget, given back when dropped.
pub(super) struct Held {
    budget: Arc<AtomicU64>,
    bytes: u64,
}

impl Held {
    pub(super) fn new(budget: Arc<AtomicU64>) -> Held {
        Held { budget, bytes: 0 }
    }

    /// Counts `n` more bytes, if the budget has room for them within `max`.
    fn grow(&mut self, n: u64, max: u64) -> bool {
        let fits = self
            .budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + n <= max).then_some(used + n)
            })
            .is_ok();
        if fits {
            self.bytes += n;
        }
        fits
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// What has been copied of a body so far.
pub(super) enum Copied {
    Growing {
        frames: Vec<Bytes>,
        len: u64,
        held: Held,
    },
    /// The whole body; it stays on the budget until taken for the queue (whose own
    /// bound then counts it), as the active slot may take long to answer.
    Done(Bytes, Option<Held>),
    /// Not to be mirrored: the reason (a metrics label) and why.
    Lost(MirrorOutcome, String),
}

impl Copied {
    fn add(&mut self, data: &Bytes, limit: u64) {
        if let Copied::Growing { frames, len, held } = self {
            let n = data.len() as u64;
            if *len + n > limit {
                *self = Copied::Lost(MirrorOutcome::TooLarge, too_large(limit));
            } else if !held.grow(n, GATHERED_BYTES) {
                *self = Copied::Lost(
                    MirrorOutcome::QueueFull,
                    format!(
                        "the copies being gathered already hold {} MiB",
                        GATHERED_BYTES >> 20
                    ),
                );
            } else {
                *len += n;
                frames.push(data.clone());
            }
        }
    }

    fn finish(&mut self) {
        let growing = std::mem::replace(
            self,
            Copied::Lost(MirrorOutcome::Error, "being finished".into()),
        );
        *self = match growing {
            Copied::Growing { frames, len, held } => {
                let mut body = BytesMut::with_capacity(len as usize);
                for frame in &frames {
                    body.extend_from_slice(frame);
                }
                Copied::Done(body.freeze(), Some(held))
            }
            other => other,
        };
    }

    /// The whole body, or why there is none. `declared` (its Content-Length) completes a
    /// body whose last frame was read without its end being polled. `when`: what came
    /// before a body that had not ended (`when the active slot answered`).
    pub(super) fn take(
        &mut self,
        declared: Option<u64>,
        when: &str,
    ) -> Result<Bytes, (MirrorOutcome, String)> {
        if let Copied::Growing { len, .. } = self {
            if declared == Some(*len) {
                self.finish();
            }
        }
        match std::mem::replace(
            self,
            Copied::Lost(MirrorOutcome::Error, "already taken".into()),
        ) {
            Copied::Done(body, _held) => Ok(body),
            Copied::Lost(reason, why) => Err((reason, why)),
            Copied::Growing { .. } => Err((
                MirrorOutcome::Error,
                format!("the client's body had not ended {when}"),
            )),
        }
    }
}

/// Why a body over `limit` is not mirrored (counted `too_large`).
pub(super) fn too_large(limit: u64) -> String {
    format!("body over mirror.max_body ({limit} bytes)")
}

/// The body for the active slot; the copy accumulates in the shared [`Copied`].
pub(super) struct Tee {
    inner: Incoming,
    copied: Arc<Mutex<Copied>>,
    limit: u64,
}

impl Tee {
    /// `budget`: the bytes all copies being gathered hold (see `GATHERED_BYTES`).
    pub(super) fn new(
        inner: Incoming,
        limit: u64,
        budget: Arc<AtomicU64>,
    ) -> (Tee, Arc<Mutex<Copied>>) {
        let copied = Arc::new(Mutex::new(if inner.is_end_stream() {
            Copied::Done(Bytes::new(), None)
        } else {
            Copied::Growing {
                frames: Vec::new(),
                len: 0,
                held: Held::new(budget),
            }
        }));
        let tee = Tee {
            inner,
            copied: copied.clone(),
            limit,
        };
        (tee, copied)
    }

    fn copied(&self) -> std::sync::MutexGuard<'_, Copied> {
        self.copied.lock().expect("copy lock: no panic holds it")
    }
}

impl hyper::body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match polled {
            Some(Ok(frame)) => {
                // Trailers come last: the body has ended with them.
                let ended = self.inner.is_end_stream() || frame.is_trailers();
                let limit = self.limit;
                let mut copied = self.copied();
                if let Some(data) = frame.data_ref() {
                    copied.add(data, limit);
                }
                if ended {
                    copied.finish();
                }
                drop(copied);
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                *self.copied() = Copied::Lost(MirrorOutcome::Error, format!("client body: {e}"));
                Poll::Ready(Some(Err(e.into())))
            }
            None => {
                self.copied().finish();
                Poll::Ready(None)
            }
        }
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

    fn growing() -> Copied {
        Copied::Growing {
            frames: Vec::new(),
            len: 0,
            held: Held::new(Arc::default()),
        }
    }

    #[test]
    fn a_copy_is_whole_or_says_why_not() {
        let mut copied = growing();
        copied.add(&Bytes::from_static(b"hel"), 10);
        copied.add(&Bytes::from_static(b"lo"), 10);
        copied.finish();
        assert_eq!(copied.take(None, "").unwrap(), "hello");

        // Its last frame read, its end not polled: the declared length completes it.
        let mut copied = growing();
        copied.add(&Bytes::from_static(b"hello"), 10);
        assert_eq!(copied.take(Some(5), "").unwrap(), "hello");

        let mut copied = growing();
        copied.add(&Bytes::from_static(b"hello"), 10);
        assert_eq!(
            copied.take(Some(9), "").unwrap_err().0,
            MirrorOutcome::Error
        );

        let mut copied = growing();
        copied.add(&Bytes::from_static(b"hello world"), 10);
        copied.finish();
        assert_eq!(
            copied.take(None, "").unwrap_err().0,
            MirrorOutcome::TooLarge
        );
    }

    #[test]
    fn copies_share_one_budget_and_give_it_back() {
        let budget = Arc::new(AtomicU64::new(GATHERED_BYTES - 8));
        let gathering = |budget: &Arc<AtomicU64>| Copied::Growing {
            frames: Vec::new(),
            len: 0,
            held: Held::new(budget.clone()),
        };
        let mut first = gathering(&budget);
        first.add(&Bytes::from_static(b"hello"), 10);
        let mut second = gathering(&budget);
        second.add(&Bytes::from_static(b"world"), 10);
        assert_eq!(
            second.take(None, "").unwrap_err().0,
            MirrorOutcome::QueueFull
        );
        assert_eq!(budget.load(Ordering::Acquire), GATHERED_BYTES - 3);
        first.finish();
        // Finished, not yet taken for the queue: still on the budget.
        assert_eq!(budget.load(Ordering::Acquire), GATHERED_BYTES - 3);
        assert_eq!(first.take(None, "").unwrap(), "hello");
        assert_eq!(budget.load(Ordering::Acquire), GATHERED_BYTES - 8);
    }
}
