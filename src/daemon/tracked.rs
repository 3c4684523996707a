//! `Tracked`: a worker's answer on its way to the client, holding what the request
//! holds until the last of it has gone out.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};

use super::pool::Pooled;
use super::route::InFlight;
use super::upstream::BoxError;

/// A response body that keeps its request counted in flight, and its upstream
/// connection out of the pool, until it is dropped. An answer that breaks off after its
/// head went out (the worker died, or sent a malformed chunk) can only be cut short for
/// the client (hyper closes its connection): it is logged, at most a line a second.
pub struct Tracked {
    inner: Incoming,
    _connection: Pooled,
    in_flight: InFlight,
    /// The client connection is busy until the answer has been sent.
    _client: Arc<super::proxy_thread::Counted>,
}

impl Tracked {
    pub fn new(
        inner: Incoming,
        connection: Pooled,
        in_flight: InFlight,
        client: Arc<super::proxy_thread::Counted>,
    ) -> Self {
        Tracked {
            inner,
            _connection: connection,
            in_flight,
            _client: client,
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled {
            static BROKEN: std::sync::LazyLock<crate::logging::Sparse> =
                std::sync::LazyLock::new(Default::default);
            if let Some(held) = BROKEN.admit() {
                let generation = self.in_flight.generation();
                tracing::warn!(
                    slot = %generation.slot,
                    generation = generation.id,
                    "{} generation {}'s answer broke off after its head: {e}; its client got it cut short (a closed connection, when nothing of it had gone out yet){}",
                    generation.slot,
                    generation.id,
                    crate::logging::held(held)
                );
            }
        }
        polled.map(|frame| frame.map(|f| f.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
