//! Opening a connection to a generation's port: hyper's HTTP/1 client on it, within
//! bounds on the time to connect and on what the worker's answer may hold, and why a
//! request got no answer when it fails.

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;

use super::Outgoing;
use crate::daemon::answered_early::AnsweredEarly;

/// How long connecting to a generation may take. A worker whose listen backlog is full
/// (a burst of new connections; Python's default backlog is 128) drops the SYN, and the
/// kernel sends it again after 1 s, then 2 s more, 4 s more: with 2 s here, 564 of 4,000
/// simultaneous requests to such a worker got a 502. A worker that is gone refuses at
/// once, so this only waits on one that is busy (nginx's default is 60 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most header fields a worker's answer may have. hyper's default, 100, made an
/// ordinary answer setting 120 cookies a 502; past 100, hyper parses into a buffer on the
/// heap (one allocation per answer, a few KiB).
const MAX_ANSWER_HEADERS: usize = 256;
/// The most a connection buffers, each way: a worker's answer head, a read of its body
/// (one piece, which the client's connection copies whole into its write buffer while
/// the client reads slowly), request body waiting for the worker. With hyper's default,
/// about 400 KiB, each download that its client does not read held about 1.2 MiB of
/// the daemon's memory (a thousand such clients, 1.2 GiB); with this, under 400 KiB,
/// and still large pieces for a fast answer. (A request head is written whole: the
/// listeners bound it.)
const MAX_BUFFER: usize = 64 * 1024;
/// Why a request got no response from its generation.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("cannot connect: no connection within {CONNECT_TIMEOUT:?}")]
    ConnectTimeout,
    /// hyper's error with its cause (`connection error: Connection reset by peer`).
    #[error("{}{}", .0, cause(.0))]
    Http(hyper::Error),
}

/// `: <cause>` of hyper's error, which its own message leaves out.
fn cause(e: &hyper::Error) -> String {
    std::error::Error::source(e).map_or_else(String::new, |cause| format!(": {cause}"))
}

/// Whether `e` says this process (or the system) has no file left for a new socket.
pub fn out_of_files(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE
    )
}

pub(super) async fn connect(port: u16) -> Result<http1::SendRequest<Outgoing>, Failure> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .map_err(|_| Failure::ConnectTimeout)?
        .map_err(Failure::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::Builder::new()
        // Small heads and bodies go out in one write, not a vectored one per piece.
        .writev(false)
        .max_headers(MAX_ANSWER_HEADERS)
        .max_buf_size(MAX_BUFFER)
        .handshake(TokioIo::new(AnsweredEarly::new(stream)))
        .await
        .map_err(Failure::Http)?;
    tokio::spawn(async move {
        // Ends when either side closes or a `101` hands it to a tunnel (see
        // `super::upgrade`); errors are the request's to report.
        let _ = connection.with_upgrades().await;
    });
    Ok(sender)
}
