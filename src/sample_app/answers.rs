//! The sample app's answers that show what a proxy does with a request or an answer:
//! a body streamed in pieces, one that never ends, many headers, hop-by-hop ones, a large
//! download, and the request as it arrived.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Response;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

/// `POST /first-chunk`: the first data of `body`, answered before the rest is read.
pub(super) async fn first_chunk(mut body: Incoming) -> Response<Full<Bytes>> {
    let first = loop {
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => break data,
                _ => continue,
            },
            _ => break Bytes::new(),
        }
    };
    let mut answer = b"first: ".to_vec();
    answer.extend_from_slice(&first);
    answer.push(b'\n');
    Response::new(Full::new(Bytes::from(answer)))
}

/// `GET /stalled`'s body: 2 bytes long, of which it sends 1, then nothing ever again.
pub(super) struct Stalled {
    pub(super) sent: bool,
}

impl hyper::body::Body for Stalled {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if std::mem::replace(&mut self.sent, true) {
            // Never woken: the connection's end drops it.
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(b"x")))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(2)
    }
}

/// `GET /many-headers/<n>`: `n` cookies, one `Set-Cookie` header each.
pub(super) fn many_headers(n: usize) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{n} headers\n"))));
    for i in 0..n {
        if let Ok(value) = HeaderValue::from_str(&format!("c{i}=v")) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// `GET /hop-by-hop`: an answer with headers meant for the next hop only (`Keep-Alive`,
/// and `X-Hop` that its `Connection` names), beside `X-Kept`, an end-to-end one.
pub(super) fn hop_by_hop() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from("hop-by-hop headers\n")));
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
    headers.insert("x-hop", HeaderValue::from_static("1"));
    headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    headers.insert("x-kept", HeaderValue::from_static("yes"));
    response
}

/// The most `GET /bytes/<n>` answers.
const MAX_BYTES: usize = 64 << 20;

/// `GET /bytes/<n>`: `n` bytes of `x`, sliced from one buffer that every answer shares.
pub(super) fn bytes(n: usize) -> Response<Full<Bytes>> {
    static BUFFER: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let all = BUFFER.get_or_init(|| Bytes::from(vec![b'x'; MAX_BYTES]));
    Response::new(Full::new(all.slice(..n.min(MAX_BYTES))))
}

/// `GET /request`: the target and the proxy's headers, one `name: value` per line.
pub(super) fn as_received(parts: &http::request::Parts) -> String {
    let mut text = format!("target: {}\n", parts.uri);
    for name in [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        // What marks a mirrored copy (the standby's).
        "x-bluegreen-mirror",
        "connection",
        // Hop-by-hop ones, which a proxy must not pass on (`x-hop` as a `Connection` names it).
        "keep-alive",
        "te",
        "upgrade",
        "x-hop",
    ] {
        for value in parts.headers.get_all(name) {
            text += &format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes()));
        }
    }
    text
}
