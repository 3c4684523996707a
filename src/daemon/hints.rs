//! What a worker that is not serving did wrong, in words a newcomer can act on at once.
//!
//! Two habits of real apps that the bare facts ("connection refused", "exited with status 0")
//! do not explain: a server bound to `localhost` that resolved to `::1` (Node 17 and later
//! take the resolver's order, and most hosts list `::1 localhost`), and a command that
//! starts its server in the background and exits (a daemonising start script).

use std::process::ExitStatus;
use std::time::Duration;

/// How long the look at `[::1]:port` may take; a refusal there is immediate.
const IPV6_LOOK: Duration = Duration::from_millis(200);

/// Why `GET path` was refused on `127.0.0.1:port`: with where the app listens instead
/// when that is the IPv6 loopback, else the usual suspect (a port of its own choosing).
pub async fn refused(path: &str, error: &str, port: u16) -> String {
    let ipv6 = tokio::time::timeout(IPV6_LOOK, tokio::net::TcpStream::connect(("::1", port))).await;
    if matches!(ipv6, Ok(Ok(_))) {
        return format!(
            "GET {path}: {error} on 127.0.0.1:{port}, but [::1]:{port} accepts: the app listens on the IPv6 loopback only (a host of `localhost` can resolve to ::1); bluegreen connects to 127.0.0.1: listen on 127.0.0.1 or on all addresses (0.0.0.0 or ::)"
        );
    }
    format!("GET {path}: {error} on 127.0.0.1:{port} (does the app listen on {{port}} or $PORT, within app.ready_timeout?)")
}

/// `exited with status 1`; an exit with status 0 says that the command must stay
/// in the foreground, since that is how a server that works exits 0 before its time.
pub fn exited(status: ExitStatus) -> String {
    let ended = crate::exit::ended(status);
    match status.success() {
        true => format!("{ended} (app.command must keep running in the foreground: a server it starts in the background and leaves is stopped with it)"),
        false => ended,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_clean_exit_says_to_stay_in_the_foreground() {
        let clean = exited(ExitStatus::from_raw(0));
        assert!(
            clean.starts_with(
                "exited with status 0 (app.command must keep running in the foreground"
            ),
            "{clean}"
        );
        assert_eq!(exited(ExitStatus::from_raw(3 << 8)), "exited with status 3");
    }

    #[tokio::test]
    async fn a_refusal_names_the_ipv6_loopback_when_the_app_listens_there() {
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
            return; // no IPv6 loopback on this host: nothing to name
        };
        let port = listener.local_addr().unwrap().port();
        let said = refused("/", "Connection refused", port).await;
        assert!(
            said.contains(&format!("but [::1]:{port} accepts")),
            "{said}"
        );
        drop(listener);
        let said = refused("/", "Connection refused", port).await;
        assert!(
            said.ends_with("(does the app listen on {port} or $PORT, within app.ready_timeout?)"),
            "{said}"
        );
    }
}
