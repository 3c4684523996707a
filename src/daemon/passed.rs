//! The bodies the data path passes on without boxing them: a client's request that has
//! none, and a worker's answer. Boxed, each cost a request one allocation each way.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};

use super::upstream::{Body, BoxError};

/// A body the data path passes on: the one it was handed (a client's request with no
/// body, a worker's answer), or any other, boxed. Not boxed itself: that cost each
/// request two allocations, one each way. (`http_body_util::Either` would do, but its
/// error bound is too general for the compiler to see its futures are `Send`.)
pub enum Passed<B> {
    /// The body it was handed.
    Unboxed(B),
    /// Any other: the daemon's own answers, a request body watched or copied.
    Boxed(Body),
}

impl<B> hyper::body::Body for Passed<B>
where
    B: hyper::body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Passed::Unboxed(body) => Pin::new(body).poll_frame(cx),
            Passed::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Passed::Unboxed(body) => body.is_end_stream(),
            Passed::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Passed::Unboxed(body) => body.size_hint(),
            Passed::Boxed(body) => body.size_hint(),
        }
    }
}

/// A client's request body as the data path passes it on, its errors as every body's.
pub struct Received(pub Incoming);

impl hyper::body::Body for Received {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0)
            .poll_frame(cx)
            .map(|frame| frame.map(|f| f.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}
