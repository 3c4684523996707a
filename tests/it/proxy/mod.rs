//! The slot listener's data path as a client sees it: what reaches the worker (origin-form
//! target, proxy headers), upgraded connections (tunnels), TCP keepalive, an upload
//! the client abandons, and a request whose client gives up.
//!
//! The helpers here are shared by more than one of the files below.

mod bodies;
mod limits;
mod requests;
mod tunnels;

use crate::util::*;

/// An upgraded connection to `port`'s `GET /echo` (the sample app's echo protocol), read
/// up to the end of the `101` head, and the greeting line that follows it.
fn echo_tunnel(port: u16) -> (std::io::BufReader<std::net::TcpStream>, String) {
    echo_tunnel_offering(port, "echo")
}

/// Sends `line` through the tunnel and reads what comes back (nothing once it is closed).
fn echo(tunnel: &mut std::io::BufReader<std::net::TcpStream>, line: &str) -> String {
    use std::io::{BufRead, Write};
    // A write to a closed tunnel may fail; the read then tells (EOF: nothing back).
    let _ = tunnel.get_mut().write_all(line.as_bytes());
    let mut back = String::new();
    if let Err(e) = tunnel.read_line(&mut back) {
        panic!("the tunnel neither answered nor closed: {e}");
    }
    back
}

/// [`echo_tunnel`], with `protocols` as the request's `Upgrade`.
fn echo_tunnel_offering(
    port: u16,
    protocols: &str,
) -> (std::io::BufReader<std::net::TcpStream>, String) {
    use std::io::BufRead;
    let request = format!(
        "GET /echo HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: {protocols}\r\n\r\n"
    );
    let stream = sent(port, request.as_bytes());
    let mut reader = std::io::BufReader::new(stream);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert_ne!(reader.read_line(&mut head).unwrap(), 0, "closed: {head}");
    }
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_lowercase().contains("upgrade: echo\r\n"), "{head}");
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    (reader, greeting)
}
