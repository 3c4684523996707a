//! The bodies the data path passes on without boxing them: a client's request that has
//! none, and a worker's answer. Boxed, each cost a request one allocation each way.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

use super::upstream::{Body, BoxError};

/// A body the data path passes on: the one it was handed (a client's request with no
/// body, a worker's answer), or any other, boxed, its errors as every body's. Not boxed
/// itself: that cost each request two allocations, one each way. (`http_body_util::Either`
/// would do, but its error bound is too general for the compiler to see its futures are
/// `Send`.)
pub enum Passed<B> {
    /// The body it was handed.
    Unboxed(B),
    /// Any other: the daemon's own answers, a request body watched or copied.
    Boxed(Body),
}

impl<B> hyper::body::Body for Passed<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    BoxError: From<B::Error>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Passed::Unboxed(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(BoxError::from))),
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
