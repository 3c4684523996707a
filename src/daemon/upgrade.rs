//! HTTP upgrades through the data path: WebSocket, or any other `Upgrade:` protocol but
//! HTTP itself (see [`asked`]).
//!
//! A request with `Connection: upgrade` and an `Upgrade` header reaches the worker with
//! both (they are hop-by-hop, so the proxy strips and then re-adds them). If the worker
//! answers `101 Switching Protocols`, the client gets that answer and, once both sides
//! have switched, a tunnel copies bytes both ways. Any other answer is proxied as usual
//! and the client's connection stays HTTP.
//!
//! The handshake counts in flight like any request; the tunnel after it does not (it
//! counts among the generation's open `tunnels`, which `/status` and `/metrics` show), so
//! a drain never waits for a tunnel (a WebSocket has no end of its own: waiting would
//! hold every deploy for the whole `drain_timeout`, and with `app.overlap = false` leave
//! the slot answering 503 meanwhile). When a generation is stopped its worker's sockets
//! close, and the tunnels to it end: clients reconnect and reach the new release. When
//! one side closes, the other is told at once and has `HALF_CLOSED_GRACE` to finish. The
//! upstream connection belongs to the tunnel and never goes back to the pool.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::headers::{strip_hop_by_hop, Side};
use super::own::plain;
use super::pool::Pooled;
use super::proxy_thread::Counted;
use super::route::InFlight;
use super::upstream::{self, Body};

/// How long the other side of a tunnel may go on once one side has closed.
const HALF_CLOSED_GRACE: Duration = Duration::from_secs(5);

/// The protocols `headers` ask to switch to that may be tunnelled, if they ask for one.
/// HTTP itself (`h2c`, `HTTP/2.0`) is left out: the tunnel would carry requests past the
/// header work (a remote client's `X-Forwarded-For` would reach the worker as its own),
/// the counting and the mirror. A request asking only for that is passed on as a plain
/// one, which the worker answers over HTTP/1.1 (RFC 9110 §7.8 lets a server ignore an
/// upgrade; `h2c` is deprecated, RFC 9113 §3.1).
pub fn asked(headers: &HeaderMap) -> Option<HeaderValue> {
    let protocol = headers.get(header::UPGRADE)?;
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !wants {
        return None;
    }
    let text = protocol.to_str().ok()?;
    let tunnelled: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|token| !token.is_empty() && !is_http(token))
        .collect();
    match tunnelled.len() {
        0 => None,
        n if n == text.split(',').count() => Some(protocol.clone()),
        _ => HeaderValue::from_str(&tunnelled.join(", ")).ok(),
    }
}

/// Whether an `Upgrade` protocol token is HTTP itself, or HTTP inside TLS (RFC 2817's
/// `TLS/1.0`, under which the worker would read requests as well).
fn is_http(token: &str) -> bool {
    let name = token.split('/').next().unwrap_or(token);
    ["h2c", "h2", "http", "tls"]
        .iter()
        .any(|http| name.eq_ignore_ascii_case(http))
}

/// Puts back the two headers an upgrade needs, after the hop-by-hop ones were removed.
pub fn keep(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// The worker switched protocols: answers the client with the worker's `101` and
/// starts the tunnel between the two connections. `client` is the client's side of the
/// upgrade, taken from its request when it asked for one.
/// `held`: the request's place in flight, its upstream connection, and the client
/// connection's place in the connection cap, which the tunnel keeps until it closes.
pub async fn tunnel(
    mut response: Response<Incoming>,
    client: Option<OnUpgrade>,
    held: (InFlight, Pooled, Arc<Counted>),
) -> Response<Body> {
    let (in_flight, connection, counted) = held;
    // A 502 naming the generation, for a switch that cannot be tunnelled.
    let refused = |why: String| {
        let generation = in_flight.generation();
        plain(
            StatusCode::BAD_GATEWAY,
            &format!("{} generation {} {why}", generation.slot, generation.id),
        )
    };
    let Some(client) = client else {
        return refused(
            "answered 101 Switching Protocols to a request that asked for no upgrade".into(),
        );
    };
    let protocol = response.headers().get(header::UPGRADE).cloned();
    if let Some(http) = protocol
        .as_ref()
        .and_then(|p| p.to_str().ok())
        .filter(|p| p.split(',').any(|token| is_http(token.trim())))
    {
        return refused(format!(
            "switched to {http}, which is not tunnelled: requests in it would pass the proxy's header work"
        ));
    }
    let upstream = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    // A 101 has no body: a transfer coding on it frames nothing.
    let _ = strip_hop_by_hop(&mut parts.headers, Side::Worker);
    if let Some(protocol) = protocol {
        keep(&mut parts.headers, protocol);
    }
    tokio::spawn(async move {
        let upgraded = tokio::try_join!(client, upstream);
        // The upstream connection is the tunnel's now: it is not pooled again.
        drop(connection);
        match upgraded {
            Ok((client, upstream)) => {
                // The handshake is done: from here on the tunnel does not hold a drain,
                // and is counted as open instead (`/status`, `/metrics`).
                let open = in_flight.into_tunnel();
                join(TokioIo::new(client), TokioIo::new(upstream)).await;
                drop(open);
            }
            Err(e) => tracing::debug!("an upgrade did not complete: {e}"),
        }
        drop(counted);
    });
    Response::from_parts(parts, upstream::empty())
}

/// Copies bytes both ways between `client` and `worker`. When one side ends (closes, or
/// its worker was stopped), the other is shut down for writing at once and has
/// `HALF_CLOSED_GRACE` to finish; then both are closed.
async fn join<C, W>(client: C, worker: W)
where
    C: AsyncRead + AsyncWrite,
    W: AsyncRead + AsyncWrite,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut worker_read, mut worker_write) = tokio::io::split(worker);
    let to_worker = async {
        let _ = tokio::io::copy(&mut client_read, &mut worker_write).await;
        let _ = worker_write.shutdown().await;
    };
    let to_client = async {
        let _ = tokio::io::copy(&mut worker_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::pin!(to_worker, to_client);
    tokio::select! {
        _ = &mut to_worker => { let _ = tokio::time::timeout(HALF_CLOSED_GRACE, to_client).await; }
        _ = &mut to_client => { let _ = tokio::time::timeout(HALF_CLOSED_GRACE, to_worker).await; }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_carries_both_ways_and_ends_when_the_worker_goes() {
        use tokio::io::AsyncReadExt;
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (worker, mut worker_peer) = tokio::io::duplex(64);
        let tunnel = tokio::spawn(join(client, worker));
        let mut got = [0; 4];
        client_peer.write_all(b"ping").await.unwrap();
        worker_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        worker_peer.write_all(b"pong").await.unwrap();
        client_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        // The worker is stopped: the client is told at once, and the tunnel ends
        // after the grace even though the client never closes.
        drop(worker_peer);
        let mut rest = Vec::new();
        client_peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        tokio::time::timeout(HALF_CLOSED_GRACE * 2, tunnel)
            .await
            .expect("the tunnel ended")
            .unwrap();
    }

    #[test]
    fn an_upgrade_needs_both_headers() {
        let websocket = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(asked(&websocket).unwrap(), "websocket");
        assert!(asked(&headers(&[("upgrade", "websocket")])).is_none());
        assert!(asked(&headers(&[("connection", "upgrade")])).is_none());
        let other = headers(&[("connection", "keep-alive"), ("upgrade", "websocket")]);
        assert!(asked(&other).is_none());
    }

    #[test]
    fn http_itself_is_never_an_upgrade_to_tunnel() {
        let asking = |protocols: &'static str| {
            asked(&headers(&[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", protocols),
            ]))
        };
        for http in [
            "h2c",
            "H2C",
            "h2",
            "HTTP/2.0",
            "http/1.1",
            "h2c, HTTP/2.0",
            "TLS/1.0",
        ] {
            assert!(asking(http).is_none(), "{http}");
        }
        assert_eq!(asking("h2c, websocket").unwrap(), "websocket");
        assert_eq!(
            asking("websocket, HTTP/2.0, echo").unwrap(),
            "websocket, echo"
        );
        assert_eq!(asking("websocket,echo").unwrap(), "websocket,echo");
        assert!(asking("TLS/1.2").is_none());
        assert_eq!(asking("IRC/6.9").unwrap(), "IRC/6.9");
    }
}
