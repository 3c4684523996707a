//! Upgraded connections (WebSocket): tunnelled after the worker's 101, closed when its
//! generation stops; never for HTTP/1.0 or an upgrade to HTTP itself.

use std::time::Duration;

use super::*;
use crate::util::*;

#[test]
fn an_upgraded_connection_is_tunnelled_and_closed_when_its_generation_stops() {
    // Long enough that a drain waiting for the tunnels would show.
    let mut root = blue_live_with(&[("app.drain_timeout", "60s".into())]);
    let old_pid = root.live_pid("blue");
    let (mut slot, greeting) = echo_tunnel(root.blue);
    assert!(greeting.starts_with("echo from blue "), "{greeting}");
    assert!(greeting.ends_with(" v1\n"), "{greeting}");
    let (mut front, greeting) = echo_tunnel(root.front);
    assert!(greeting.starts_with("echo from blue "), "{greeting}");
    assert_eq!(echo(&mut slot, "ping\n"), "ping\n");
    assert_eq!(echo(&mut front, "pong\n"), "pong\n");
    let live = &root.status()["slots"]["blue"]["live"];
    assert_eq!(live["in_flight"], 0, "a tunnel is not a request in flight");
    assert_eq!(live["tunnels"], 2, "the two tunnels are counted as open");
    let metrics = root.control("GET", "/metrics").body;
    assert!(
        metrics.contains("bluegreen_tunnels{slot=\"blue\"} 2\n"),
        "{metrics}"
    );
    let printed = root.run_ok(&["status"]);
    assert!(printed.contains("in-flight 0  tunnels 2  "), "{printed}");

    // An upgrade the worker declines stays plain HTTP.
    let declined = raw(
        root.blue,
        "GET / HTTP/1.1\r\nHost: app\r\nConnection: upgrade, close\r\nUpgrade: echo\r\n\r\n",
    );
    assert!(declined.starts_with("HTTP/1.1 200"), "{declined}");
    assert!(declined.contains("v1 from blue"), "{declined}");

    // A deploy: the old generation does not wait for its tunnels; once it is stopped
    // they are closed, and a new tunnel reaches v2.
    root.commit("v2", &[("VERSION", "v2\n")]);
    root.push("blue").says("blue: live in ");
    wait_for(
        Duration::from_secs(20),
        "the old process group to be gone",
        || group_gone(old_pid).then_some(()),
    );
    // The worker said goodbye at its SIGTERM, and the tunnel was closed.
    assert_eq!(rest(&mut slot), "bye from blue\n");
    assert_eq!(rest(&mut front), "bye from blue\n");
    let (mut open, greeting) = echo_tunnel(root.blue);
    assert!(
        greeting.ends_with(" v2\n"),
        "a new tunnel reaches v2: {greeting}"
    );
    assert_eq!(echo(&mut open, "ping\n"), "ping\n");
    let (closed, _) = echo_tunnel(root.blue);
    assert_eq!(root.status()["slots"]["blue"]["live"]["tunnels"], 2);
    // A tunnel its client closes is counted out (its worker is told, and closes too).
    drop(closed);
    wait_for(Duration::from_secs(10), "one tunnel left open", || {
        (root.status()["slots"]["blue"]["live"]["tunnels"] == 1).then_some(())
    });

    // A tunnel still open does not keep the daemon from stopping.
    root.stop_cleanly(Duration::from_secs(10));
    assert_eq!(root.processes(), Vec::<u32>::new(), "no worker survives");
}

#[test]
fn an_http_1_0_request_asking_to_upgrade_is_served_as_a_plain_request() {
    // Upgrade is HTTP/1.1's (RFC 9110 §7.8): the worker gets the request without it, and
    // answers it as any other, where it would have switched protocols.
    let root = blue_live();
    let answer = raw(
        root.blue,
        "GET /echo HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.0 404"), "{answer}");
    assert!(answer.ends_with("no route /echo\n"), "{answer}");
}

#[test]
fn an_upgrade_to_http_itself_is_never_tunnelled() {
    // Through an h2c tunnel, requests would reach the worker past the proxy's header work
    // (a remote client's own X-Forwarded-For taken as the proxy's word): the worker gets
    // a plain request instead, which the sample app answers as any other.
    let root = blue_live();
    let h2c = raw(
        root.blue,
        "GET /echo HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    );
    assert!(h2c.starts_with("HTTP/1.1 404"), "{h2c}");
    assert!(h2c.ends_with("no route /echo\n"), "{h2c}");
    for http in ["HTTP/2.0", "h2"] {
        let answer = raw(
            root.front,
            &format!("GET /echo HTTP/1.1\r\nHost: app\r\nConnection: upgrade, close\r\nUpgrade: {http}\r\n\r\n"),
        );
        assert!(answer.starts_with("HTTP/1.1 404"), "{http}: {answer}");
    }
    // Offered beside another protocol, that one is what the worker is asked for.
    let (mut tunnel, greeting) = echo_tunnel_offering(root.blue, "h2c, echo");
    assert!(greeting.starts_with("echo from blue "), "{greeting}");
    assert_eq!(echo(&mut tunnel, "ping\n"), "ping\n");
    // A worker that switches to h2c anyway (`?as=h2c`) gets the client a 502, counted as
    // the 502 the client got, not as the worker's 101.
    let switched = raw(
        root.blue,
        "GET /echo?as=h2c HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, close\r\nUpgrade: echo\r\n\r\n",
    );
    assert!(switched.starts_with("HTTP/1.1 502"), "{switched}");
    assert!(
        switched.contains("switched to h2c, which is not tunnelled"),
        "{switched}"
    );
    let metrics = root.control("GET", "/metrics").body;
    let counted =
        |class: &str| format!("bluegreen_requests_total{{slot=\"blue\",class=\"{class}\"}}");
    assert!(
        metrics.contains(&format!("{} 1\n", counted("5xx"))),
        "{metrics}"
    );
    // The one tunnel above.
    assert!(
        metrics.contains(&format!("{} 1\n", counted("1xx"))),
        "{metrics}"
    );
}

/// At the daemon's stop, open tunnels last until their workers stop: what a worker says
/// at its SIGTERM (a WebSocket close frame; the sample app's `bye`) reaches the client.
/// The proxy threads ended with their last plain connection, and took the tunnels with
/// them before the workers were told to stop.
#[test]
fn at_the_daemons_stop_a_workers_goodbye_reaches_its_tunnels() {
    let mut root = blue_live();
    let (mut slot, _) = echo_tunnel(root.blue);
    let (mut front, _) = echo_tunnel(root.front);
    assert_eq!(echo(&mut slot, "ping\n"), "ping\n");
    root.stop_cleanly(Duration::from_secs(15));
    assert_eq!(rest(&mut slot), "bye from blue\n");
    assert_eq!(rest(&mut front), "bye from blue\n");
    assert_eq!(root.processes(), Vec::<u32>::new(), "no worker survives");
}

/// What `tunnel` sends until it closes.
fn rest(tunnel: &mut std::io::BufReader<std::net::TcpStream>) -> String {
    let mut rest = String::new();
    std::io::Read::read_to_string(tunnel, &mut rest).expect("the tunnel closed");
    rest
}
