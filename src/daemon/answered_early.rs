//! An upstream connection that keeps reading after its writes broke: a worker that
//! answers an upload early (a 413, a 401) and closes resets the connection under the
//! rest of the body, and hyper's client, seeing the failed write before the answer,
//! gave up on it with `error writing a body to connection`: the client got a 502 for a
//! request its worker had answered. The answer is already in the socket's receive queue,
//! which Linux still hands out after a reset; so a write the worker refused
//! (`EPIPE`, `ECONNRESET`) counts as written, the rest of the body is dropped, and hyper
//! goes on to read the answer. A worker that broke off without answering still ends in
//! a 502, once the read finds the connection closed.

use std::io::ErrorKind;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub struct AnsweredEarly {
    inner: TcpStream,
    /// The worker refused a write: every write from now on is dropped.
    refused: bool,
}

impl AnsweredEarly {
    pub fn new(inner: TcpStream) -> AnsweredEarly {
        AnsweredEarly {
            inner,
            refused: false,
        }
    }

    /// `poll` of a write, with the worker's refusal taken as done (`n` bytes).
    fn taken<T>(&mut self, poll: Poll<std::io::Result<T>>, done: T) -> Poll<std::io::Result<T>> {
        match poll {
            Poll::Ready(Err(e))
                if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) =>
            {
                self.refused = true;
                Poll::Ready(Ok(done))
            }
            poll => poll,
        }
    }
}

impl AsyncRead for AnsweredEarly {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AnsweredEarly {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.refused {
            return Poll::Ready(Ok(buf.len()));
        }
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.taken(poll, buf.len())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.refused {
            return Poll::Ready(Ok(()));
        }
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.taken(poll, ())
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.taken(poll, ())
    }
}
