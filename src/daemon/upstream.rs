//! The HTTP client the daemon uses towards its workers outside the data path (readiness,
//! heartbeat, mirroring), the body type every listener answers with, and generation ports.
//!
//! One pooled hyper-util client for those: connections to a generation are kept alive and
//! reused (the data path has its own per-thread pools, see `pool`). A generation's port is
//! not reused until thousands of others have been (see `Ports`), so a pooled connection
//! can't reach the wrong process.

use std::collections::{HashSet, VecDeque};
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the daemon sends, upstream or to a client.
pub type Body = BoxBody<Bytes, BoxError>;

pub type Client = hyper_util::client::legacy::Client<HttpConnector, Body>;

pub fn client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        // As the data path's pools: a probe or copy must not race a worker's own close
        // of a connection it kept idle (gunicorn closes after 2 s, Node after 5 s).
        .pool_idle_timeout(super::pool::IDLE_TIMEOUT)
        .pool_max_idle_per_host(256)
        .http1_writev(false)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// `GET http://127.0.0.1:<port><path>` within `timeout`: the status, or why there is none.
/// The status is the answer, given as the head comes: the body is read on (so the
/// connection goes back to the pool) within what is left of `timeout`, and one that does
/// not end by then (a page that streams, a worker stuck after its head) is dropped with
/// its connection.
pub async fn probe(
    client: &Client,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<u16, String> {
    let request = http::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .header(http::header::USER_AGENT, "bluegreen-health")
        .body(empty())
        .map_err(|e| format!("bad health path {path}: {e}"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, client.request(request)).await {
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            discard(response.into_body(), deadline);
            Ok(status)
        }
        Ok(Err(e)) => Err(describe(&e)),
        // To the millisecond: "1s 476ms", not down to the nanosecond.
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(Duration::from_millis(timeout.as_millis() as u64))
        )),
    }
}

/// Reads an answer's body that nobody wants (a health page's, a mirrored copy's) to its
/// end, dropping each piece as it comes, in a task of its own so that the caller does not
/// wait for it, and for no longer than `deadline`. Read to its end, its connection goes
/// back to the pool; cut off at the deadline, the connection is dropped. (Gathered whole,
/// a standby answering each copy with 300 MB took the daemon to 1.1 GB.)
pub fn discard(body: hyper::body::Incoming, deadline: tokio::time::Instant) {
    tokio::spawn(async move {
        let mut body = body;
        let _ = tokio::time::timeout_at(deadline, async {
            while let Some(Ok(_)) = body.frame().await {}
        })
        .await;
    });
}

/// How a check's failure begins when the daemon itself had no file for its connection:
/// no fault of the app's, which the heartbeat must not count against it.
pub const NO_FILE: &str = "bluegreen has no file left for the connection";
/// That failure, from the daemon's own limit (EMFILE) and from the host's (ENFILE).
const OUT_OF_FILES: &str = "bluegreen has no file left for the connection (Too many open files): raise its file limit (LimitNOFILE= in the unit, ulimit -n)";
const HOST_OUT_OF_FILES: &str = "bluegreen has no file left for the connection (Too many open files in system): the host is out of file handles (fs.file-max), whatever bluegreen's own limit";

/// Whether a check's failure is the daemon's own shortage of files (see [`NO_FILE`]).
pub fn no_file(why: &str) -> bool {
    why.contains(NO_FILE)
}

/// A client error in a few words: "connection refused", not a chain of debug types.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = e.source();
    let mut text = e.to_string();
    while let Some(inner) = source {
        if let Some(e) = inner
            .downcast_ref::<std::io::Error>()
            .filter(|e| super::pool::out_of_files(e))
        {
            return match e.raw_os_error() == Some(nix::libc::ENFILE) {
                true => HOST_OUT_OF_FILES,
                false => OUT_OF_FILES,
            }
            .to_string();
        }
        text = inner.to_string();
        source = inner.source();
    }
    text
}

/// How many recent ports are kept out of reuse: far more generations than can start
/// within the pool's idle timeout, so no pooled connection can outlive its port's turn.
const RECENT_PORTS: usize = 4096;

/// Hands out loopback ports for generations, never one of the last `RECENT_PORTS` again.
#[derive(Default)]
pub struct Ports {
    /// Ports given out recently, oldest first; a pooled connection to an old one must
    /// not reach a new generation.
    recent: Mutex<(VecDeque<u16>, HashSet<u16>)>,
}

impl Ports {
    pub fn fresh(&self) -> std::io::Result<u16> {
        let mut guard = self.recent.lock().expect("ports lock: no panic holds it");
        let (order, used) = &mut *guard;
        for _ in 0..100 {
            let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
            if used.insert(port) {
                order.push_back(port);
                if order.len() > RECENT_PORTS {
                    if let Some(old) = order.pop_front() {
                        used.remove(&old);
                    }
                }
                return Ok(port);
            }
        }
        Err(std::io::Error::other(
            "no fresh loopback port after 100 tries",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a cause, as the client's errors come.
    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Wrapped(#[source] std::io::Error);

    #[test]
    fn a_connection_the_daemon_has_no_file_for_is_told_as_its_own() {
        let own = Wrapped(std::io::Error::from_raw_os_error(nix::libc::EMFILE));
        assert_eq!(describe(&own), OUT_OF_FILES);
        let host = Wrapped(std::io::Error::from_raw_os_error(nix::libc::ENFILE));
        assert_eq!(describe(&host), HOST_OUT_OF_FILES);
        assert!(no_file(OUT_OF_FILES) && no_file(HOST_OUT_OF_FILES));
        let refused = Wrapped(std::io::Error::from_raw_os_error(nix::libc::ECONNREFUSED));
        assert_eq!(describe(&refused), "Connection refused (os error 111)");
    }
}
