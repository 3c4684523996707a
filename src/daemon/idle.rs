//! Idle limits on the client's side of the data path (`router.client_timeout`): a
//! request body that stops coming, and an answer the client stops reading.
//!
//! Either would hold its request in flight for good: a worker (a single-threaded one
//! most of all) waiting for the rest of a body, and every deploy's drain waiting for
//! both. As nginx's `client_body_timeout` and `send_timeout`, the limit is on the time
//! between two pieces, not on the whole transfer. A timer is armed only while a read or
//! write waits, so a request that never waits costs nothing.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::upstream::BoxError;

/// No piece of the request body came within the limit.
#[derive(Debug, thiserror::Error)]
#[error("no request body data for {} (router.client_timeout)", humantime::format_duration(*.0))]
pub struct BodyIdle(pub Duration);

/// The timer of one side: armed when a poll waits, disarmed when one gets through.
struct Timer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Timer {
    fn new(limit: Duration) -> Timer {
        Timer {
            limit,
            sleep: None,
            armed: false,
        }
    }

    /// After a poll that waited: whether the limit has passed since waiting began.
    fn waited_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            let deadline = Instant::now() + self.limit;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        self.sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

/// A request body that fails with [`BodyIdle`] when no frame comes within the limit.
pub struct IdleBody<B> {
    inner: B,
    timer: Timer,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, limit: Duration) -> IdleBody<B> {
        IdleBody {
            inner,
            timer: Timer::new(limit),
        }
    }
}

impl<B> hyper::body::Body for IdleBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer.disarm();
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending if this.timer.waited_too_long(cx) => {
                Poll::Ready(Some(Err(BodyIdle(this.timer.limit).into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client connection whose writes fail when none gets through within the limit.
pub struct IdleStream<S> {
    inner: S,
    timer: Timer,
}

impl<S> IdleStream<S> {
    pub fn new(inner: S, limit: Duration) -> IdleStream<S> {
        IdleStream {
            inner,
            timer: Timer::new(limit),
        }
    }

    /// `poll`'s outcome, or a time-out error once writes have waited too long.
    fn limit<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match poll {
            Poll::Pending if self.timer.waited_too_long(cx) => {
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the client read nothing of the answer for {} (router.client_timeout)",
                        humantime::format_duration(self.timer.limit)
                    ),
                )))
            }
            Poll::Pending => Poll::Pending,
            ready => {
                self.timer.disarm();
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.limit(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.limit(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.limit(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
