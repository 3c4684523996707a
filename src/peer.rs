//! Who is at the other end of a loopback connection: the user whose process made the
//! peer's socket, as the kernel's TCP tables (`/proc/net/tcp`, `tcp6`) say.
//!
//! Loopback is not one user: on a host shared by several apps (README "Several apps on
//! one host"), each app's user, and any other, can connect to every daemon's loopback
//! ports. Those that change a daemon (its control API's `POST`s, the front's `/switch`
//! without the token) take only the daemon's own user and root, who run its hooks and
//! commands. A socket's owner is the user (file system uid) of the process that made it.

use std::fs;
use std::net::{IpAddr, SocketAddr};

/// What the tables say of a connection's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The peer's socket belongs to this user.
    Uid(u32),
    /// The tables cannot be read (no `/proc`): nothing to go by.
    Unknown,
    /// No socket of this network namespace is the peer (the connection is gone, or the
    /// peer is on another host).
    NotHere,
}

/// The owner of the socket at `peer` connected to `port` of this host.
pub fn of(peer: SocketAddr, port: u16) -> Peer {
    let ip = peer.ip().to_canonical();
    let mut read = false;
    for (table, address) in [("/proc/net/tcp", v4(ip)), ("/proc/net/tcp6", v6(ip))] {
        let Some(address) = address else {
            continue;
        };
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        read = true;
        let local = format!("{address}:{:04X}", peer.port());
        if let Some(uid) = owner_in(&text, &local, port) {
            return Peer::Uid(uid);
        }
    }
    if read {
        Peer::NotHere
    } else {
        Peer::Unknown
    }
}

/// Whether `uid` may change this daemon: its own user, or root.
pub fn may_change(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// `alice (uid 1001)`, or `uid 1001` for a user without an account.
pub fn shown(uid: u32) -> String {
    match crate::fsops::user_name(uid) {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// Why `peer` may not change this daemon, if it may not: another user's process on this
/// host. One the tables do not show (no `/proc`) is let through, as before this check.
pub fn refused(peer: SocketAddr, port: u16) -> Option<String> {
    match of(peer, port) {
        Peer::Uid(uid) if !may_change(uid) => {
            let daemon = nix::unistd::geteuid().as_raw();
            let who = match daemon {
                0 => "only root, the daemon's user, may".to_string(),
                _ => format!("only root and {}, the daemon's user, may", shown(daemon)),
            };
            Some(format!("it came from a process of {}: {who}", shown(uid)))
        }
        Peer::NotHere => Some(format!(
            "its connection from {peer} is not in this host's TCP tables, so whose it is cannot be told"
        )),
        Peer::Uid(_) | Peer::Unknown => None,
    }
}

/// `address` as `/proc/net/tcp` writes it: the 32-bit word in the host's byte order.
fn v4(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(ip) => Some(format!("{:08X}", u32::from_ne_bytes(ip.octets()))),
        IpAddr::V6(_) => None,
    }
}

/// `address` as `/proc/net/tcp6` writes it: four 32-bit words, each in the host's byte
/// order; an IPv4 one as an IPv6 socket has it (`::ffff:127.0.0.1`).
fn v6(ip: IpAddr) -> Option<String> {
    let octets = match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    };
    Some(
        octets
            .chunks_exact(4)
            .map(|word| {
                format!(
                    "{:08X}",
                    u32::from_ne_bytes([word[0], word[1], word[2], word[3]])
                )
            })
            .collect(),
    )
}

/// The uid of the row whose local address is `local` (`ADDRESS:PORT`, as the table
/// writes it) and whose remote port is `port`, not listening. A row: `sl local_address
/// rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...`.
fn owner_in(table: &str, local: &str, port: u16) -> Option<u32> {
    const LISTEN: &str = "0A";
    table.lines().skip(1).find_map(|row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        let (_, remote_port) = fields.get(2)?.split_once(':')?;
        let ours = fields.get(1) == Some(&local)
            && u16::from_str_radix(remote_port, 16).ok() == Some(port)
            && fields.get(3) != Some(&LISTEN);
        ours.then(|| fields.get(7)?.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_a_connection_from_this_process_is_its_user() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(of(peer, port), Peer::Uid(me));
        assert!(refused(peer, port).is_none());
        // Not a connection to that port.
        assert_eq!(of(peer, port.wrapping_add(1)), Peer::NotHere);
        drop(client);
    }

    #[test]
    fn an_ipv4_connection_of_an_ipv6_socket_is_found_in_tcp6() {
        let Ok(listener) = std::net::TcpListener::bind("[::]:0") else {
            return; // no IPv6 on this host
        };
        let port = listener.local_addr().unwrap().port();
        let Ok(client) = std::net::TcpStream::connect(("::ffff:127.0.0.1", port)) else {
            return; // an IPv6-only listener
        };
        let (_accepted, peer) = listener.accept().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(of(peer, port), Peer::Uid(me), "{peer}");
        drop(client);
    }

    #[test]
    fn rows_are_matched_by_local_address_and_remote_port_not_listening() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 11 1 0 100 0 0 10 0
   1: 0100007F:D431 0100007F:1F91 01 00000000:00000000 00:00000000 00000000  1001        0 12 1 0 100 0 0 10 0
   2: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1002        0 13 1 0 100 0 0 10 0
";
        assert_eq!(owner_in(table, "0100007F:D431", 0x1F91), Some(1001));
        assert_eq!(owner_in(table, "0100007F:1F91", 0xD431), Some(1002));
        assert_eq!(owner_in(table, "0100007F:1F91", 0), None, "listening");
        assert_eq!(owner_in(table, "0100007F:D431", 80), None);
    }
}
