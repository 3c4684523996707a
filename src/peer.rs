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

/// The owner of the socket at `peer` connected to `local` on this host: the one row of
/// the tables with exactly that pair, live (a closed connection's TIME_WAIT row, or an
/// orphaned one, names no user: root's uid 0, and no inode).
pub fn of(peer: SocketAddr, local: SocketAddr) -> Peer {
    let (ip, local_ip) = (peer.ip().to_canonical(), local.ip().to_canonical());
    let mut read = false;
    let tables = [
        ("/proc/net/tcp", v4(ip).zip(v4(local_ip))),
        ("/proc/net/tcp6", Some((v6(ip), v6(local_ip)))),
    ];
    for (table, pair) in tables {
        let Some((address, local_address)) = pair else {
            continue;
        };
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        read = true;
        let from = format!("{address}:{:04X}", peer.port());
        let to = format!("{local_address}:{:04X}", local.port());
        if let Some(uid) = owner_in(&text, &from, &to) {
            return Peer::Uid(uid);
        }
    }
    if read {
        Peer::NotHere
    } else {
        Peer::Unknown
    }
}

/// The owners of the sockets listening where a connection to `addr` goes: on its
/// address, or on its family's any-address (an IPv6 one on `::` takes IPv4 too, unless
/// it is IPv6-only, which the tables do not say: it is counted).
pub fn listening_at(addr: SocketAddr) -> Vec<u32> {
    let ip = addr.ip().to_canonical();
    let mut owners = Vec::new();
    let v6_any = v6(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    let (v4_at, v6_at) = match v4(ip) {
        Some(v4_ip) => (
            vec![
                v4_ip,
                v4(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)).unwrap_or_default(),
            ],
            vec![
                v6(ip),
                v6_any,
                v6(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            ],
        ),
        None => (Vec::new(), vec![v6(ip), v6_any]),
    };
    for (table, at) in [("/proc/net/tcp", v4_at), ("/proc/net/tcp6", v6_at)] {
        if at.is_empty() {
            continue;
        }
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        owners.extend(listeners_in(&text, &at, addr.port()));
    }
    owners
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

/// Why `peer`, connected to `local`, may not `act` (`switch`), if it may not: another
/// user's process on this host. One the tables do not show (no `/proc`) is let through,
/// as before this check. It reads the tables: run it off an async runtime's threads.
pub fn refused(peer: SocketAddr, local: SocketAddr, act: &str) -> Option<String> {
    match of(peer, local) {
        Peer::Uid(uid) if !may_change(uid) => {
            let daemon = nix::unistd::geteuid().as_raw();
            let who = match daemon {
                0 => "only root, the daemon's user, may".to_string(),
                _ => format!("only root and {}, the daemon's user, may", shown(daemon)),
            };
            Some(format!("it came from a process of {}: {who} {act}", shown(uid)))
        }
        Peer::NotHere => Some(format!(
            "its connection from {peer} is not in this host's TCP tables: whose it is cannot be told, and only root and the daemon's user may {act}"
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
fn v6(ip: IpAddr) -> String {
    let octets = match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    };
    octets
        .chunks_exact(4)
        .map(|word| {
            format!(
                "{:08X}",
                u32::from_ne_bytes([word[0], word[1], word[2], word[3]])
            )
        })
        .collect()
}

/// The uid of the live row from `from` to `to` (`ADDRESS:PORT`, as the table writes
/// them). A row: `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt
/// uid timeout inode ...`; a listening one (`0A`), a TIME_WAIT one (`06`) and an orphaned
/// one (inode 0) are not a process's socket.
fn owner_in(table: &str, from: &str, to: &str) -> Option<u32> {
    table.lines().skip(1).find_map(|row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        let live = !matches!(fields.get(3), Some(&"0A" | &"06")) && fields.get(9) != Some(&"0");
        let ours = fields.get(1) == Some(&from) && fields.get(2) == Some(&to) && live;
        ours.then(|| fields.get(7)?.parse().ok()).flatten()
    })
}

/// The uids of the rows listening on `port` at one of the addresses `at`.
fn listeners_in(table: &str, at: &[String], port: u16) -> Vec<u32> {
    crate::procfs::listening_rows(table, port)
        .filter(|(address, _)| at.iter().any(|a| a == address))
        .filter_map(|(_, fields)| fields.get(7)?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_a_connection_from_this_process_is_its_user() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(of(peer, local), Peer::Uid(me));
        assert!(refused(peer, local, "switch").is_none());
        // Not a connection to that address.
        let elsewhere = SocketAddr::new("127.0.0.5".parse().unwrap(), local.port());
        assert_eq!(of(peer, elsewhere), Peer::NotHere);
        assert_eq!(listening_at(local), vec![me]);
        // A listener on 127.0.0.1 takes no connection to 127.0.0.2 (a daemon's
        // `control.listen` there): it is not what answers it.
        let other = SocketAddr::new("127.0.0.2".parse().unwrap(), local.port());
        assert_eq!(listening_at(other), Vec::<u32>::new());
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
        let (accepted, peer) = listener.accept().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(
            of(peer, accepted.local_addr().unwrap()),
            Peer::Uid(me),
            "{peer}"
        );
        drop(client);
    }

    /// A closed connection's TIME_WAIT row from the same address and port names root
    /// (uid 0): taken, it let any user through; another connection from the same port to
    /// another address named its user for this one.
    #[test]
    fn only_the_live_row_of_the_exact_pair_counts() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 11 1 0 100 0 0 10 0
   1: 0100007F:D431 0100007F:1F91 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0
   2: 0100007F:D431 0500007F:1F91 01 00000000:00000000 00:00000000 00000000  1003        0 14 1 0 100 0 0 10 0
   3: 0100007F:D431 0100007F:1F91 05 00000000:00000000 00:00000000 00000000     0        0 0 2 0
   4: 0100007F:D431 0100007F:1F91 01 00000000:00000000 00:00000000 00000000  1001        0 12 1 0 100 0 0 10 0
";
        assert_eq!(
            owner_in(table, "0100007F:D431", "0100007F:1F91"),
            Some(1001)
        );
        assert_eq!(
            owner_in(table, "0100007F:D431", "0500007F:1F91"),
            Some(1003)
        );
        assert_eq!(
            owner_in(table, "0100007F:1F91", "00000000:0000"),
            None,
            "listening"
        );
        let at = ["0100007F".to_string(), "00000000".to_string()];
        assert_eq!(listeners_in(table, &at, 0x1F91), vec![1000]);
        assert_eq!(
            listeners_in(table, &["0200007F".to_string()], 0x1F91),
            Vec::<u32>::new()
        );
    }
}
