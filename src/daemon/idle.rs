//! Idle limits on the client's side of the data path (`router.client_timeout`): a
//! request body that stops coming, and an answer the client stops reading.
//!
//! Either would hold its request in flight for good: a worker (a single-threaded one
//! most of all) waiting for the rest of a body, and every deploy's drain waiting for
//! both. As nginx's `client_body_timeout` and `send_timeout`, the limit is on the time
//! between two pieces, not on the whole transfer. A timer is armed only while a read or
//! write waits, so a request that never waits costs nothing.
//!
//! A waiting write is woken only once a third of the socket's send buffer (up to 4 MiB)
//! has drained, which takes a client reading 10 KB/s minutes: so when the limit passes,
//! the send queue (`SIOCOUTQ`) decides. Shorter than when the wait began: the client is
//! reading, and the wait starts anew. The same length: it has read nothing, and is cut.

use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::upstream::BoxError;

/// The request body stopped coming, or came too slowly.
#[derive(Debug, thiserror::Error)]
pub enum BodyIdle {
    #[error("no request body data for {} (router.client_timeout)", humantime::format_duration(*.0))]
    Idle(Duration),
    #[error("the request body came slower than {MIN_BODY_RATE} bytes/s for longer than {} (router.client_timeout)", humantime::format_duration(*.0))]
    Slow(Duration),
}

/// The slowest a request body may come, beyond the limit: its deadline starts at the
/// limit and moves one second further for each `MIN_BODY_RATE` bytes that come (as
/// Apache's `mod_reqtimeout`, `body=…,MinRate=500`). Without it, a byte every
/// `limit` less a second held a worker (a single-threaded one whole) for good: a worker
/// gets the head at once, and waits for the rest. A client on a slow link sends far
/// more than 500 bytes a second.
pub const MIN_BODY_RATE: u64 = 500;

/// The timer of one side: armed when a poll waits, disarmed when one gets through.
struct Timer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// When the current wait passes the limit.
    idle_at: Option<Instant>,
}

impl Timer {
    fn new(limit: Duration) -> Timer {
        Timer {
            limit,
            sleep: None,
            armed: false,
            idle_at: None,
        }
    }

    /// After a poll that waited: whether the limit has passed since waiting began.
    fn waited_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        self.waited_past(cx, None)
    }

    /// [`Self::waited_too_long`], or whether `cap` has passed, if it comes first.
    fn waited_past(&mut self, cx: &mut Context<'_>, cap: Option<Instant>) -> bool {
        if !self.armed {
            let idle = Instant::now() + self.limit;
            self.idle_at = Some(idle);
            let deadline = cap.map_or(idle, |cap| cap.min(idle));
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

/// A request body that fails with [`BodyIdle`] when no frame comes within the limit, or
/// the whole comes slower than [`MIN_BODY_RATE`] past it.
pub struct IdleBody<B> {
    inner: B,
    timer: Timer,
    /// When the body must have come by, at the rate it came: set at the first wait.
    due: Option<Instant>,
    end: BodyEnd,
}

impl<B: hyper::body::Body> IdleBody<B> {
    /// The body, and what tells whether it has been read to its end (an empty one is, as
    /// hyper's client does not poll it).
    pub fn new(inner: B, limit: Duration) -> (IdleBody<B>, BodyEnd) {
        let end = BodyEnd(Arc::new(AtomicBool::new(inner.is_end_stream())));
        let body = IdleBody {
            inner,
            timer: Timer::new(limit),
            due: None,
            end: end.clone(),
        };
        (body, end)
    }
}

/// Whether a request body has been read to its end: an answer that comes before (a
/// worker's to an upload it refused part way) may leave the rest unread, and hyper then
/// closes the client's connection.
#[derive(Clone)]
pub struct BodyEnd(Arc<AtomicBool>);

impl BodyEnd {
    pub fn reached(&self) -> bool {
        self.0.load(Ordering::Relaxed)
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
                // Trailers come last (HTTP/1): the body has ended, though hyper tells so
                // only at the next poll, which a body that drops them never makes (the
                // client's connection was then closed after the answer).
                let trailers = matches!(&frame, Some(Ok(frame)) if frame.is_trailers());
                if frame.is_none() || trailers || this.inner.is_end_stream() {
                    this.end.0.store(true, Ordering::Relaxed);
                }
                if let (Some(due), Some(Ok(frame))) = (&mut this.due, &frame) {
                    let bytes = frame.data_ref().map_or(0, |data| data.len() as u64);
                    *due += Duration::from_millis(bytes.saturating_mul(1000) / MIN_BODY_RATE);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                // Only a body that waits has a deadline: one that comes whole reads no clock.
                let limit = this.timer.limit;
                let due = *this.due.get_or_insert_with(|| Instant::now() + limit);
                if !this.timer.waited_past(cx, Some(due)) {
                    return Poll::Pending;
                }
                // Nothing for the limit is told as such, whatever came before.
                let idle = this.timer.idle_at.is_some_and(|at| Instant::now() >= at);
                let error = match idle {
                    true => BodyIdle::Idle(limit),
                    false => BodyIdle::Slow(limit),
                };
                Poll::Ready(Some(Err(error.into())))
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

/// A client connection whose writes fail when the client reads none of them within the
/// limit.
pub struct IdleStream<S> {
    inner: S,
    timer: Timer,
    /// The bytes in the socket's send queue when the wait began.
    queued: Option<u64>,
}

impl<S: AsRawFd> IdleStream<S> {
    pub fn new(inner: S, limit: Duration) -> IdleStream<S> {
        IdleStream {
            inner,
            timer: Timer::new(limit),
            queued: None,
        }
    }

    /// `poll`'s outcome, or a time-out error once writes have waited too long with
    /// nothing read by the client.
    fn limit<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if poll.is_ready() {
            self.timer.disarm();
            return poll;
        }
        if !self.timer.armed {
            self.queued = unsent(self.inner.as_raw_fd());
        }
        if !self.timer.waited_too_long(cx) {
            return Poll::Pending;
        }
        let now = unsent(self.inner.as_raw_fd());
        if now.is_some() && now < self.queued {
            // It read some, slowly: the wait starts anew from here.
            self.queued = now;
            self.timer.disarm();
            if !self.timer.waited_too_long(cx) {
                return Poll::Pending;
            }
        }
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the client read nothing of the answer for {} (router.client_timeout)",
                humantime::format_duration(self.timer.limit)
            ),
        )))
    }
}

nix::ioctl_read_bad!(send_queue, nix::libc::TIOCOUTQ, nix::libc::c_int);
nix::ioctl_read_bad!(receive_queue, nix::libc::FIONREAD, nix::libc::c_int);

/// The bytes waiting unread in `fd`'s receive queue (`FIONREAD`): a connection with
/// some is not idle, whatever hyper has seen of them.
pub fn unread(fd: RawFd) -> Option<u64> {
    queue(fd, receive_queue)
}

/// The bytes in `fd`'s send queue that the peer has not acknowledged (`SIOCOUTQ`).
fn unsent(fd: RawFd) -> Option<u64> {
    queue(fd, send_queue)
}

/// A socket queue's length, by an ioctl that reads one int.
fn queue(
    fd: RawFd,
    ioctl: unsafe fn(RawFd, *mut nix::libc::c_int) -> nix::Result<nix::libc::c_int>,
) -> Option<u64> {
    let mut bytes: nix::libc::c_int = 0;
    // SAFETY: FIONREAD and TIOCOUTQ (SIOCOUTQ for a socket) write one int through the
    // pointer, which points at `bytes`; a bad fd is an error return, not undefined
    // behaviour.
    unsafe { ioctl(fd, &mut bytes) }.ok()?;
    u64::try_from(bytes).ok()
}

impl<S: AsyncRead + AsRawFd + Unpin> AsyncRead for IdleStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + AsRawFd + Unpin> AsyncWrite for IdleStream<S> {
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
