//! Whether a request from a loopback peer really comes from someone on this host.
//!
//! A loopback peer address is not enough on its own: a reverse proxy on the same host
//! relays internet clients from 127.0.0.1, and a browser on the host sends requests on
//! behalf of any page it shows (cross-site, or through DNS rebinding), and ahead of any
//! click (a prefetch or prerender of a URL typed before, or a bookmark hovered: with
//! `Sec-Fetch-Site: none`, as a typed one). Headers can only take trust away here, never
//! grant it.

/// Why `peer`, connected to `local` (`None`: where to cannot be told), may not `act`, if
/// it is another user's process on this host: loopback is every user of the host (see
/// [`crate::peer`]). The kernel's tables are read off the runtime's threads.
pub async fn whose(
    peer: std::net::SocketAddr,
    local: Option<std::net::SocketAddr>,
    act: &'static str,
) -> Option<String> {
    let unknown = || {
        Some(format!(
            "whose connection it is cannot be told, and only root and the daemon's user may {act}"
        ))
    };
    let Some(local) = local else {
        return unknown();
    };
    tokio::task::spawn_blocking(move || crate::peer::refused(peer, local, act))
        .await
        .unwrap_or_else(|_| unknown())
}

/// The request headers that say who is really behind a loopback connection.
#[derive(Debug, Default)]
pub struct Hints<'a> {
    pub host: Option<&'a str>,
    /// The host an absolute-form target names (`GET http://host/switch`), which RFC 9112
    /// §3.2.2 makes the request's host in place of `Host`: both must be loopback.
    pub target: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub fetch_site: Option<&'a str>,
    /// The page a browser sent it for: older ones (Safari before 16.4) send no `Origin`
    /// or `Sec-Fetch-Site` for an image or a link, but a `Referer`, when the page is not
    /// on HTTPS and does not ask for none.
    pub referer: Option<&'a str>,
    /// A browser's `User-Agent` (`Mozilla/...`) with no `Sec-Fetch-Site`: one of those
    /// older browsers, which says nothing of the page it sends a GET for.
    pub unmarked_browser: bool,
    /// A header a reverse proxy adds is present: `X-Forwarded-For`, `Forwarded`,
    /// `X-Real-IP` or `Via`.
    pub forwarded: bool,
    /// An HTTP/1.0 request, as nginx's `proxy_pass` relays by default. Only the front's
    /// `/switch` counts it against a caller (a local monitor may well ask the control
    /// API for its status in HTTP/1.0).
    pub http10: bool,
    /// `Origin` or `Sec-Fetch-Site` came more than once: which one counts would be a
    /// guess. (A `Host` sent twice is a bad request before this: [`super::target::bad_host`].)
    pub repeated: bool,
    /// `Sec-Purpose` (or the older `Purpose`) says a browser fetched it ahead of time, on
    /// its own guess that the person might go there.
    pub speculative: bool,
}

impl<'a> Hints<'a> {
    /// The hints in a request's target `uri` and `headers`. A value that is not visible
    /// ASCII is kept as something no check takes for local, rather than read as absent.
    pub fn of(uri: &'a http::Uri, headers: &'a http::HeaderMap) -> Hints<'a> {
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap_or("(not ASCII)"))
        };
        let several = |name: &str| headers.get_all(name).iter().nth(1).is_some();
        Hints {
            host: header("host"),
            target: uri.authority().map(http::uri::Authority::as_str),
            origin: header("origin"),
            fetch_site: header("sec-fetch-site"),
            referer: header("referer"),
            unmarked_browser: !headers.contains_key("sec-fetch-site")
                && header("user-agent").is_some_and(|agent| agent.starts_with("Mozilla/")),
            forwarded: ["x-forwarded-for", "forwarded", "x-real-ip", "via"]
                .into_iter()
                .any(|name| headers.contains_key(name)),
            http10: false,
            repeated: ["origin", "sec-fetch-site"].into_iter().any(several),
            speculative: ["sec-purpose", "purpose"]
                .into_iter()
                .any(|name| headers.contains_key(name)),
        }
    }
}

/// Ok when nothing in the headers says a loopback request came from elsewhere.
pub fn from_this_host(hints: &Hints) -> Result<(), String> {
    if hints.repeated {
        return Err("Origin or Sec-Fetch-Site is sent more than once".into());
    }
    if hints.forwarded {
        return Err(
            "relayed by a proxy, as its X-Forwarded-For, Forwarded, X-Real-IP or Via says".into(),
        );
    }
    if hints.http10 {
        return Err(
            "in HTTP/1.0, as nginx's proxy_pass relays by default, so taken for relayed".into(),
        );
    }
    if hints.origin.is_some() || hints.fetch_site.is_some_and(|s| s != "none") {
        return Err(
            "a browser sent it for a web page, as its Origin or Sec-Fetch-Site says".into(),
        );
    }
    if let Some(page) = hints.referer {
        let host = page.parse::<http::Uri>().ok();
        let host = host.as_ref().and_then(http::Uri::authority);
        if !host.is_some_and(|host| loopback_host(host.as_str())) {
            return Err(format!(
                "a browser sent it for the page {}, as its Referer says",
                crate::logging::printable(page)
            ));
        }
    }
    if hints.speculative {
        return Err(
            "a browser fetched it ahead of time, before anyone asked, as its Sec-Purpose or Purpose says".into(),
        );
    }
    if let Some(host) = hints.host {
        if !loopback_host(host) {
            return Err(format!("Host `{host}` is not a loopback address"));
        }
    }
    if let Some(target) = hints.target {
        if !loopback_host(target) {
            return Err(format!(
                "the request's target names `{target}`, not a loopback address"
            ));
        }
    }
    Ok(())
}

/// `127.0.0.1`, `localhost`, `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_local_clients_pass() {
        for host in [
            None,
            Some("127.0.0.1:8081"),
            Some("localhost"),
            Some("[::1]:80"),
            Some("127.0.0.2"),
        ] {
            let hints = Hints {
                host,
                fetch_site: Some("none"),
                ..Hints::default()
            };
            assert!(from_this_host(&hints).is_ok(), "{host:?}");
            let absolute = Hints {
                host,
                target: Some("localhost:8080"),
                referer: Some("http://localhost:8080/admin"),
                ..Hints::default()
            };
            assert!(from_this_host(&absolute).is_ok(), "{host:?}");
        }
    }

    #[test]
    fn proxies_browsers_and_rebinding_do_not() {
        let forwarded = Hints {
            forwarded: true,
            ..Hints::default()
        };
        let cross_site = Hints {
            fetch_site: Some("cross-site"),
            ..Hints::default()
        };
        let origin = Hints {
            origin: Some("https://evil.example"),
            ..Hints::default()
        };
        let rebound = Hints {
            host: Some("evil.example:8081"),
            ..Hints::default()
        };
        let two_hosts = Hints {
            host: Some("127.0.0.1"),
            repeated: true,
            ..Hints::default()
        };
        let http10 = Hints {
            host: Some("127.0.0.1:8080"),
            http10: true,
            ..Hints::default()
        };
        let old_safari_image = Hints {
            host: Some("127.0.0.1:8080"),
            referer: Some("http://evil.example/page"),
            ..Hints::default()
        };
        let rebound_target = Hints {
            host: Some("127.0.0.1"),
            target: Some("evil.example"),
            ..Hints::default()
        };
        let userinfo = Hints {
            target: Some("127.0.0.1@evil.example"),
            ..Hints::default()
        };
        let prerendered = Hints {
            host: Some("localhost:8080"),
            fetch_site: Some("none"),
            speculative: true,
            ..Hints::default()
        };
        for hints in [
            forwarded,
            cross_site,
            origin,
            rebound,
            rebound_target,
            userinfo,
            old_safari_image,
            two_hosts,
            http10,
            prerendered,
        ] {
            assert!(from_this_host(&hints).is_err(), "{hints:?}");
        }
    }
}
