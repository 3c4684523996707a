//! `Pool`: one proxy thread's keep-alive connections to the generations' ports.
//!
//! A request takes the most recently used idle connection to its generation's port, or
//! opens one; the connection comes back once its response has been read in full and it
//! is ready for the next request. A pooled connection the worker closed in the meantime
//! is noticed before use (it is no longer `is_ready`) or, in the race where it closes just as the
//! request is handed over, hyper gives the unsent request back and it goes out on the
//! next connection: a request is never sent twice. A connection idle for longer than
//! `IDLE_TIMEOUT` is not reused, so the worker's own keep-alive timeout never closes one
//! under a request; the pool keeps at most `MAX_IDLE` per port.
//!
//! A connection that carried a request body, or answered a `HEAD`, a 204 or a 304, is not
//! reused. A worker that answers without reading the body (an upload refused early, a toy
//! server) reads it as its next request, and one that writes a body after an answer that
//! has none (a `HEAD`'s, a 204, a 304) in a write of its own has it read as the next answer: either way each answer after it on the connection would go
//! to the client of the request after its own, for as long as the connection stayed
//! busy, and no check on our side can tell, as the worker's bytes may come at any time.
//! Such a request goes with `Connection: close`, so the worker closes after its answer
//! and never reads the rest of the body as a request (which would reach it past the
//! proxy's header work). With `app.reuse_after_body` (an app that reads or discards every
//! body) a connection that carried a body is reused, unless the body was not all sent
//! when the answer came (an upload answered early, with a 413 or a 401), as nginx does.
//!
//! Each proxy thread has its own pool (no lock is ever contended) and its own
//! connections, whose hyper tasks run on that thread's runtime. A generation's port is
//! not handed out again for thousands of generations (`upstream::Ports`), so an idle
//! connection can't reach the wrong process.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;

use super::passed::Passed;
use super::upstream::BoxError;

mod connect;

use connect::connect;
pub use connect::{out_of_files, Failure};

/// A request body as it goes to a worker: the client's own, when it has none, or
/// any other, boxed.
pub type Outgoing = Passed<Incoming>;

/// How long an unused connection may be reused. Shorter than the keep-alive timeouts of
/// common app servers (gunicorn 2 s, Node and uvicorn 5 s): a connection the worker may
/// be closing right now is never picked, so a request does not race the worker's close
/// (a request already written when the close arrives could only be answered with a 502).
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(1500);
/// The most idle connections kept per port.
const MAX_IDLE: usize = 256;
/// How many times a connect out of files is tried again, each after closing the idle
/// connections and letting their tasks run.
const OUT_OF_FILES_TRIES: usize = 3;

pub struct Pool {
    /// Idle connections per port, least recently used first. A few ports at most (the
    /// live generations and those draining): a list is quicker to look through than a
    /// map is to hash into.
    idle: Mutex<Vec<(u16, Vec<Idle>)>>,
    /// `IDLE_TIMEOUT`, but for tests.
    idle_timeout: Duration,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool {
            idle: Mutex::default(),
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

struct Idle {
    sender: http1::SendRequest<Outgoing>,
    /// When it came back, on [`coarse_now`]'s clock.
    since: Duration,
}

/// The monotonic clock to the kernel's tick (a few milliseconds), read without the
/// cycle counter that a precise reading takes: closer than the idle timeout needs, and
/// read twice per request.
fn coarse_now() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    // Where the coarse one is refused (a sandbox), the precise reading of the same clock,
    // which `Instant` needs too.
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
        .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
        .map(Duration::from)
        .expect("the monotonic clock can be read")
}

/// A connection in use; it goes back to its pool when dropped, if it can take another
/// request.
pub struct Pooled {
    sender: Option<http1::SendRequest<Outgoing>>,
    /// False after a request body or a `HEAD` (see the module's doc).
    reuse: bool,
    port: u16,
    pool: Arc<Pool>,
}

impl Pool {
    /// Sends `request` to `127.0.0.1:port` and waits for the response head. The
    /// connection stays with the response (`Pooled`) until its body has been read.
    /// `reuse_after_body`: `app.reuse_after_body` (see the module's doc).
    pub async fn send(
        self: &Arc<Self>,
        port: u16,
        mut request: Request<Outgoing>,
        reuse_after_body: bool,
    ) -> Result<(Response<Incoming>, Pooled), Failure> {
        let bodiless = request.body().is_end_stream();
        let closing = closes(request.method(), bodiless, reuse_after_body);
        let mut sent = None;
        if closing {
            // Told so, the worker closes after its answer and never reads what it left of
            // the body as a request of its own. Whatever `Connection` said goes (an
            // upgrade has no body: see `proxy::answer`).
            request.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        } else if !bodiless {
            // Reused only if the body was all handed over before the answer came.
            let noted = Arc::new(AtomicBool::new(false));
            request = request.map(|inner| {
                Passed::Boxed(
                    Noted {
                        inner,
                        sent: noted.clone(),
                    }
                    .boxed(),
                )
            });
            sent = Some(noted);
        }
        loop {
            let (mut sender, reused) = match self.take(port) {
                Some(sender) => (sender, true),
                // Boxed: a rare path, kept out of every request's future.
                None => (Box::pin(self.open(port)).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    // A 204 or 304 has no body: one a worker writes anyway, after the
                    // head, would be read as the next request's answer.
                    let bodiless_answer = matches!(
                        response.status(),
                        http::StatusCode::NO_CONTENT | http::StatusCode::NOT_MODIFIED
                    );
                    let pooled = Pooled {
                        sender: Some(sender),
                        reuse: !closing
                            && !bodiless_answer
                            && sent.is_none_or(|sent| sent.load(Ordering::Relaxed)),
                        port,
                        pool: self.clone(),
                    };
                    return Ok((response, pooled));
                }
                Err(mut e) => match e.take_message() {
                    // An idle connection closed before the request went out: nothing of
                    // it was sent, so it goes out on the next connection.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(Failure::Http(e.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection to `port` that is still open and was
    /// used within the idle timeout.
    fn take(&self, port: u16) -> Option<http1::SendRequest<Outgoing>> {
        let mut idle = self.idle.lock().expect("pool lock: no panic holds it");
        let (_, list) = idle.iter_mut().find(|(p, _)| *p == port)?;
        let now = coarse_now();
        while let Some(entry) = list.pop() {
            if now.saturating_sub(entry.since) >= self.idle_timeout {
                // The rest were used even longer ago.
                list.clear();
                return None;
            }
            if entry.sender.is_ready() {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put(&self, port: u16, sender: http1::SendRequest<Outgoing>) {
        let mut idle = self.idle.lock().expect("pool lock: no panic holds it");
        let at = match idle.iter().position(|(p, _)| *p == port) {
            Some(at) => at,
            None => {
                idle.push((port, Vec::new()));
                idle.len() - 1
            }
        };
        let list = &mut idle[at].1;
        if list.len() < MAX_IDLE {
            list.push(Idle {
                sender,
                since: coarse_now(),
            });
        }
    }

    /// A new connection to `port`. When the daemon is out of files, this thread's idle
    /// connections are closed first and the connect tried again: after a switch, every
    /// client's next request needs a connection to the new active while those to the old
    /// one are still kept idle (the connection cap leaves room for one each, see
    /// `accept`; with neither, a switch under load at a file limit of 1024 made a third
    /// of the requests 502s).
    async fn open(&self, port: u16) -> Result<http1::SendRequest<Outgoing>, Failure> {
        let mut tries = 0;
        loop {
            match connect(port).await {
                Err(Failure::Connect(e)) if out_of_files(&e) && tries < OUT_OF_FILES_TRIES => {
                    // Another request of this thread may have closed them a moment ago,
                    // their sockets not let go yet: tried again all the same.
                    self.close_idle();
                    tries += 1;
                    // Each closed connection's task lets its socket go once it runs.
                    tokio::task::yield_now().await;
                }
                other => return other,
            }
        }
    }

    /// Closes every idle connection of this pool.
    fn close_idle(&self) {
        drop(std::mem::take(
            &mut *self.idle.lock().expect("pool lock: no panic holds it"),
        ));
    }

    /// Closes connections idle for longer than the idle timeout and forgets closed ones
    /// (a stopped generation's).
    pub fn sweep(&self) {
        let mut idle = self.idle.lock().expect("pool lock: no panic holds it");
        let now = coarse_now();
        idle.retain_mut(|(_, list)| {
            list.retain(|entry| {
                now.saturating_sub(entry.since) < self.idle_timeout && !entry.sender.is_closed()
            });
            !list.is_empty()
        });
    }

    /// Idle connections kept, over every port.
    #[cfg(test)]
    fn idle(&self) -> usize {
        let idle = self.idle.lock().expect("pool lock: no panic holds it");
        idle.iter().map(|(_, list)| list.len()).sum()
    }
}

/// Whether a request goes to the worker with `Connection: close`, on a connection that is
/// not used again: one with a body (unless `app.reuse_after_body`), or a `HEAD` (see the
/// module's doc). Mirror copies go by it too.
pub fn closes(method: &http::Method, bodiless: bool, reuse_after_body: bool) -> bool {
    method == http::Method::HEAD || !(bodiless || reuse_after_body)
}

/// A request body that notes when its end has been handed to the connection (the
/// connection's task polls it, on this thread).
struct Noted {
    inner: Outgoing,
    sent: Arc<AtomicBool>,
}

impl hyper::body::Body for Noted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // hyper stops polling once `is_end_stream` says the last frame came.
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers() || self.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            self.sent.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(mut sender) = self.sender.take() else {
            return;
        };
        if !self.reuse {
            // Closes once the answer and the rest of the body are through.
            return;
        }
        if sender.is_ready() {
            self.pool.put(self.port, sender);
        } else if !sender.is_closed() {
            // The connection is still finishing the response: back once it is done.
            // (Outside a runtime, as at exit, it is simply closed.)
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (pool, port) = (self.pool.clone(), self.port);
                runtime.spawn(async move {
                    if sender.ready().await.is_ok() {
                        pool.put(port, sender);
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::upstream;
    use hyper_util::rt::TokioIo;
    use std::sync::atomic::AtomicUsize;

    fn empty() -> Outgoing {
        Passed::Boxed(upstream::empty())
    }

    fn full(bytes: impl Into<bytes::Bytes>) -> Outgoing {
        Passed::Boxed(upstream::full(bytes))
    }

    /// A worker reading each request's body and answering "ok"; with `close`, one
    /// request per connection.
    async fn server(close: bool) -> u16 {
        server_counting(close, Arc::default()).await
    }

    /// `server`, counting the connections it accepts in `accepted`.
    async fn server_counting(close: bool, accepted: Arc<AtomicUsize>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request: Request<Incoming>| async move {
                            let _ = request.into_body().collect().await;
                            let mut response = Response::new(upstream::full("ok"));
                            if close {
                                response
                                    .headers_mut()
                                    .insert(http::header::CONNECTION, "close".parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        port
    }

    fn get(port: u16) -> Request<Outgoing> {
        Request::get(format!("http://127.0.0.1:{port}/"))
            .body(empty())
            .unwrap()
    }

    #[tokio::test]
    async fn reuses_a_connection_and_forgets_closed_ones() {
        let port = server(false).await;
        let pool = Arc::new(Pool::default());
        for _ in 0..3 {
            let (response, pooled) = pool.send(port, get(port), false).await.unwrap();
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.unwrap();
            drop(pooled);
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.idle(), 1, "one keep-alive connection serves them all");

        let closing = server(true).await;
        for _ in 0..3 {
            let (response, pooled) = pool.send(closing, get(closing), false).await.unwrap();
            response.into_body().collect().await.unwrap();
            drop(pooled);
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        pool.sweep();
        assert_eq!(pool.idle(), 1, "the closed connections are not kept");
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_timeout_is_not_reused() {
        let accepted = Arc::new(AtomicUsize::new(0));
        let port = server_counting(false, accepted.clone()).await;
        let pool = Arc::new(Pool {
            idle_timeout: Duration::ZERO,
            ..Pool::default()
        });
        for _ in 0..2 {
            let (response, pooled) = pool.send(port, get(port), false).await.unwrap();
            response.into_body().collect().await.unwrap();
            drop(pooled);
            tokio::task::yield_now().await;
            assert_eq!(pool.idle(), 1, "the connection went back to the pool");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the idle one was not reused"
        );
    }

    /// What a connect out of files does first: the idle connections are closed, each
    /// socket let go (the worker sees the close), and none is handed out again.
    #[tokio::test]
    async fn closing_the_idle_connections_lets_their_sockets_go() {
        let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let port = hasty_server(accepted.clone(), closed.clone()).await;
        let pool = Arc::new(Pool::default());
        // Two at once: two connections, both idle once answered.
        let ((first, a), (second, b)) = tokio::join!(
            async { pool.send(port, get(port), false).await.unwrap() },
            async { pool.send(port, get(port), false).await.unwrap() }
        );
        first.into_body().collect().await.unwrap();
        second.into_body().collect().await.unwrap();
        drop((a, b));
        // Each goes back to the pool from its connection's task, once it has run.
        tokio::time::timeout(Duration::from_secs(5), async {
            while pool.idle() < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("both connections back in the pool");
        pool.close_idle();
        assert_eq!(pool.idle(), 0);
        tokio::time::timeout(Duration::from_secs(5), async {
            while closed.load(Ordering::SeqCst) < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the worker saw both connections closed");
        let (response, _) = pool.send(port, get(port), false).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "a new connection");
    }

    /// A worker that answers each request head at once, with its request line, and
    /// never reads a body: what follows a head is the start of the next one to it.
    /// Counts the connections it accepted and those the client closed.
    async fn hasty_server(accepted: Arc<AtomicUsize>, closed: Arc<AtomicUsize>) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, Ordering::SeqCst);
                let closed = closed.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut buf).await {
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&seen[..end]).into_owned();
                            seen.drain(..end + 4);
                            let line = head.lines().next().unwrap_or_default().to_string();
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{line}",
                                line.len()
                            );
                            let _ = stream.write_all(answer.as_bytes()).await;
                        }
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        port
    }

    /// A 4-byte body whose bytes come when the test sends them.
    struct Later(tokio::sync::mpsc::Receiver<Bytes>);

    impl hyper::body::Body for Later {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0
                .poll_recv(cx)
                .map(|bytes| bytes.map(|b| Ok(Frame::data(b))))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(4)
        }
    }

    #[tokio::test]
    async fn a_connection_answered_before_its_body_was_sent_is_not_reused() {
        let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let port = hasty_server(accepted.clone(), closed.clone()).await;
        let pool = Arc::new(Pool::default());
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let upload = Request::post("/upload")
            .body(Passed::Boxed(Later(rx).boxed()))
            .unwrap();
        let (response, pooled) = pool.send(port, upload, true).await.unwrap();
        let answer = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(answer, "POST /upload HTTP/1.1");
        // The rest of the upload comes after the answer.
        tx.send(Bytes::from_static(b"xxxx")).await.unwrap();
        drop(tx);
        drop(pooled);
        // Once the rest is through, the connection is either closed (not reused) or back
        // in the pool, where the next request would go out behind the rest.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while closed.load(Ordering::SeqCst) == 0 {
            assert!(
                pool.take(port).is_none(),
                "the connection went back to the pool with the body's rest sent after its answer"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "the connection was neither closed nor pooled in 5 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let next = Request::get("/next").body(empty()).unwrap();
        let (response, _pooled) = pool.send(port, next, false).await.unwrap();
        let answer = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            answer, "GET /next HTTP/1.1",
            "the next request went out behind the body's rest"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A worker that reads request heads and nothing else (a body is taken for the next
    /// request), and answers each 50 ms later with its request line, noted in `answered`
    /// (`/204` and `/304` with that status); with `late_body`, it writes the body another
    /// 50 ms after the head, a `HEAD`, 204 or 304 answer's too. After a request saying
    /// `Connection: close` it closes.
    async fn careless_server(
        late_body: bool,
        accepted: Arc<AtomicUsize>,
        answered: Arc<Mutex<Vec<String>>>,
    ) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let answered = answered.clone();
                tokio::spawn(async move {
                    let (mut seen, mut buf) = (Vec::new(), [0; 4096]);
                    'connection: while let Ok(n @ 1..) = stream.read(&mut buf).await {
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&seen[..end]).into_owned();
                            seen.drain(..end + 4);
                            let line = head.lines().next().unwrap_or_default().to_string();
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            let status = match line.split(' ').nth(1) {
                                Some("/204") => "204 No Content",
                                Some("/304") => "304 Not Modified",
                                _ => "200 OK",
                            };
                            let answer = format!(
                                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
                                line.len()
                            );
                            let _ = stream.write_all(answer.as_bytes()).await;
                            if late_body {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            let _ = stream.write_all(line.as_bytes()).await;
                            answered.lock().unwrap().push(line);
                            if head.to_lowercase().contains("\r\nconnection: close") {
                                break 'connection;
                            }
                        }
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn a_connection_that_carried_a_body_is_not_reused() {
        // The body is all sent with the head, and the worker answers without reading it:
        // reused, the connection's next answer would be the one to the body, read as a
        // request.
        let accepted = Arc::new(AtomicUsize::new(0));
        let answered: Arc<Mutex<Vec<String>>> = Arc::default();
        let port = careless_server(false, accepted.clone(), answered.clone()).await;
        let pool = Arc::new(Pool::default());
        let smuggled = full("GET /smuggled HTTP/1.1\r\n\r\n".to_string());
        let post = Request::post("/ignored").body(smuggled).unwrap();
        let (response, pooled) = pool.send(port, post, false).await.unwrap();
        let answer = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(answer, "POST /ignored HTTP/1.1");
        drop(pooled);
        let next = Request::get("/next").body(empty()).unwrap();
        let (response, _pooled) = pool.send(port, next, false).await.unwrap();
        let answer = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(answer, "GET /next HTTP/1.1", "another request's answer");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Told to close, the worker never took the body for a request.
        assert_eq!(
            *answered.lock().unwrap(),
            ["POST /ignored HTTP/1.1", "GET /next HTTP/1.1"]
        );
    }

    #[tokio::test]
    async fn a_connection_that_carried_a_body_is_reused_when_the_app_reads_every_body() {
        let accepted = Arc::new(AtomicUsize::new(0));
        let port = server_counting(false, accepted.clone()).await;
        let pool = Arc::new(Pool::default());
        let post = || Request::post("/").body(full("data")).unwrap();
        for (request, reuse_after_body, connections) in [
            (post(), false, 1),
            (get(port), false, 2),
            (post(), true, 2),
            (get(port), false, 2),
        ] {
            let (response, pooled) = pool.send(port, request, reuse_after_body).await.unwrap();
            assert_eq!(
                response.into_body().collect().await.unwrap().to_bytes(),
                "ok"
            );
            drop(pooled);
            tokio::task::yield_now().await;
            assert_eq!(accepted.load(Ordering::SeqCst), connections);
        }
    }

    #[tokio::test]
    async fn a_connection_that_answered_a_head_is_not_reused() {
        let accepted = Arc::new(AtomicUsize::new(0));
        let port = careless_server(true, accepted.clone(), Arc::default()).await;
        let pool = Arc::new(Pool::default());
        let head = Request::head("/").body(empty()).unwrap();
        let (response, pooled) = pool.send(port, head, false).await.unwrap();
        assert_eq!(response.status(), 200);
        drop(response);
        drop(pooled);
        let next = Request::get("/next").body(empty()).unwrap();
        let (response, _pooled) = pool.send(port, next, false).await.unwrap();
        let answer = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(answer, "GET /next HTTP/1.1", "the HEAD answer's body");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_that_answered_204_or_304_is_not_reused() {
        // Neither has a body: one the worker writes after the head anyway would be read
        // as the answer to the connection's next request.
        for path in ["/204", "/304"] {
            let accepted = Arc::new(AtomicUsize::new(0));
            let port = careless_server(true, accepted.clone(), Arc::default()).await;
            let pool = Arc::new(Pool::default());
            let request = Request::get(path).body(empty()).unwrap();
            let (response, pooled) = pool.send(port, request, false).await.unwrap();
            assert_eq!(&response.status().as_str(), &&path[1..]);
            drop(response);
            drop(pooled);
            let next = Request::get("/next").body(empty()).unwrap();
            let (response, _pooled) = pool.send(port, next, false).await.unwrap();
            let answer = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(answer, "GET /next HTTP/1.1", "{path}: the late body");
            assert_eq!(accepted.load(Ordering::SeqCst), 2, "{path}");
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_failure() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let pool = Arc::new(Pool::default());
        let Err(failure) = pool.send(port, get(port), false).await else {
            panic!("a request to a closed port got an answer");
        };
        assert!(failure.to_string().contains("refused"), "{failure}");
    }
}
