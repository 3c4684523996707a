//! HTTP upgrades through the data path: WebSocket, or any other `Upgrade:` protocol.
//!
//! A request with `Connection: upgrade` and an `Upgrade` header reaches the worker with
//! both (they are hop-by-hop, so the proxy strips and then re-adds them). If the worker
//! answers `101 Switching Protocols`, the client gets that answer and, once both sides
//! have switched, a tunnel copies bytes both ways until either side closes. Any other
//! answer is proxied as usual and the client's connection stays HTTP.
//!
//! The tunnel counts as a request in flight of its generation: a deploy's drain waits
//! for it up to `drain_timeout`, then stops the old generation, which closes it. The
//! upstream connection belongs to the tunnel and never goes back to the pool.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::pool::Pooled;
use super::proxy::{plain, strip_hop_by_hop};
use super::route::InFlight;
use super::upstream::{self, Body};

/// The protocol `headers` ask to switch to, if they ask for one.
pub fn asked(headers: &HeaderMap) -> Option<HeaderValue> {
    let protocol = headers.get(header::UPGRADE)?;
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    wants.then(|| protocol.clone())
}

/// Puts back the two headers an upgrade needs, after the hop-by-hop ones were removed.
pub fn keep(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// The worker switched protocols: answers the client with the worker's `101` and
/// starts the tunnel between the two connections. `client` is the client's side of the
/// upgrade, taken from its request when it asked for one.
pub async fn tunnel(
    mut response: Response<Incoming>,
    client: Option<OnUpgrade>,
    in_flight: InFlight,
    connection: Pooled,
) -> Response<Body> {
    let Some(client) = client else {
        let generation = in_flight.generation();
        return plain(
            StatusCode::BAD_GATEWAY,
            &format!(
                "generation {} answered 101 Switching Protocols to a request that asked for no upgrade",
                generation.id
            ),
        );
    };
    let upstream = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = protocol {
        keep(&mut parts.headers, protocol);
    }
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let upgraded = tokio::try_join!(client, upstream);
        // The upstream connection is the tunnel's now: it is not pooled again.
        drop(connection);
        match upgraded {
            Ok((client, upstream)) => {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(upstream),
                )
                .await;
            }
            Err(e) => tracing::debug!("an upgrade did not complete: {e}"),
        }
    });
    Response::from_parts(parts, upstream::empty())
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
}
