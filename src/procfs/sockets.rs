//! The TCP sockets of this network namespace that listen, as `/proc/net/tcp` and `tcp6`
//! list them, and those a process holds.

use std::fs;
use std::path::Path;

/// A TCP socket listening for connections, as `/proc/net/tcp` (or `tcp6`) lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    pub inode: u64,
    /// The user that made it.
    pub uid: u32,
}

/// The addresses, as `/proc/net/tcp` and `tcp6` write them, whose listening sockets take a
/// connection to `127.0.0.1`: that address, and any address (an IPv6 socket on `::` takes
/// IPv4 as well, unless it is IPv6-only, which the table does not say: see
/// [`listening_for_loopback`]).
const TAKES_LOOPBACK: [&str; 5] = [
    "0100007F",
    "00000000",
    "00000000000000000000000000000000",
    "0000000000000000FFFF00000100007F",
    "0000000000000000FFFF000000000000",
];

/// The sockets of this network namespace that listen on `port` and take a connection to
/// `127.0.0.1:<port>`.
///
/// An IPv4 one there (on `127.0.0.1` or `0.0.0.0`) leaves out every IPv6 one: an IPv6
/// socket that takes IPv4 too cannot listen on the same port beside it (the second `bind`
/// fails), so one that does is IPv6-only (a program that asked for a free port on IPv6
/// alone, as Go's `tcp6` on `[::]:0` does, may get the app's), and takes none of
/// `127.0.0.1`'s connections. Counted, it was taken for a stranger next to the app.
pub fn listening_for_loopback(port: u16) -> Vec<Listening> {
    let table = |path: &str| {
        fs::read_to_string(path)
            .map(|table| listening_in(&table, port))
            .unwrap_or_default()
    };
    let ipv4 = table("/proc/net/tcp");
    match ipv4.is_empty() {
        true => table("/proc/net/tcp6"),
        false => ipv4,
    }
}

/// Whether any socket of this network namespace listens on `port`, at any address;
/// `None` when the tables cannot be read.
pub fn listening_on(port: u16) -> Option<bool> {
    let mut read = false;
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(table) = fs::read_to_string(path) else {
            continue;
        };
        read = true;
        if listening_rows(&table, port).next().is_some() {
            return Some(true);
        }
    }
    read.then_some(false)
}

/// The kernel's range of ports for outgoing connections
/// (`net.ipv4.ip_local_port_range`).
pub fn outgoing_ports() -> Option<std::ops::RangeInclusive<u16>> {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut bounds = text.split_whitespace().map(|n| n.parse::<u16>().ok());
    Some(bounds.next()??..=bounds.next()??)
}

/// The rows of a `/proc/net/tcp` table that listen on `port` at an address that takes
/// loopback connections. A row: `sl local_address rem_address st ... uid timeout inode`.
fn listening_in(table: &str, port: u16) -> Vec<Listening> {
    listening_rows(table, port)
        .filter_map(|(address, fields)| {
            TAKES_LOOPBACK.contains(&address).then_some(())?;
            Some(Listening {
                uid: fields.get(7)?.parse().ok()?,
                inode: fields.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The rows of a `/proc/net/tcp` table that listen on `port`: each one's local address
/// (hex, as the table has it) and fields.
pub(crate) fn listening_rows(table: &str, port: u16) -> impl Iterator<Item = (&str, Vec<&str>)> {
    const LISTEN: &str = "0A";
    table.lines().skip(1).filter_map(move |row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        let (address, row_port) = fields.get(1)?.split_once(':')?;
        let listens =
            fields.get(3) == Some(&LISTEN) && u16::from_str_radix(row_port, 16).ok() == Some(port);
        listens.then_some((address, fields))
    })
}

/// The inodes of the sockets among the open files of the process whose `/proc` folder is
/// `dir`; `None` when they cannot be read (another user's process, or one that is gone).
pub fn socket_inodes(dir: &Path) -> Option<Vec<u64>> {
    let fds = fs::read_dir(dir.join("fd")).ok()?;
    Some(
        fds.flatten()
            .filter_map(|fd| fs::read_link(fd.path()).ok())
            .filter_map(|target| {
                let target = target.to_str()?;
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_listening_socket_is_found_with_its_holder() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let found = listening_for_loopback(port);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].uid, nix::unistd::geteuid().as_raw());
        let held = socket_inodes(Path::new("/proc/self")).unwrap();
        assert!(held.contains(&found[0].inode), "{held:?} {found:?}");
        // A connected socket on the port is not a listening one.
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _accepted = listener.accept().unwrap();
        assert_eq!(listening_for_loopback(port), found);
        drop(listener);
        // A test forking at this moment holds a copy until its child's exec closes it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !listening_for_loopback(port).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(listening_for_loopback(port), vec![]);
    }

    #[test]
    fn an_ipv6_only_socket_beside_an_ipv4_one_does_not_count() {
        use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn6};
        use std::net::{Ipv6Addr, SocketAddrV6};
        use std::os::fd::AsRawFd;
        if std::net::TcpListener::bind("[::]:0").is_err() {
            return; // no IPv6 on this host
        }
        let listen_any6 = |v6_only: bool| {
            let fd = socket::socket(
                AddressFamily::Inet6,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            socket::setsockopt(&fd, sockopt::Ipv6V6Only, &v6_only).unwrap();
            let any = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
            socket::bind(fd.as_raw_fd(), &any).unwrap();
            socket::listen(&fd, socket::Backlog::new(8).unwrap()).unwrap();
            let port = socket::getsockname::<SockaddrIn6>(fd.as_raw_fd())
                .unwrap()
                .port();
            (fd, port)
        };
        // The kernel may give the IPv6-only one a port an IPv4 socket holds: another one.
        let (only6, port, app) = (0..20)
            .find_map(|_| {
                let (only6, port) = listen_any6(true);
                let app = std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
                Some((only6, port, app))
            })
            .expect("a port free on both 127.0.0.1 and [::]");
        let found = listening_for_loopback(port);
        let held = socket_inodes(Path::new("/proc/self")).unwrap();
        assert_eq!(
            found.len(),
            1,
            "the IPv6-only one does not count: {found:?}"
        );
        assert!(held.contains(&found[0].inode));
        drop(app);
        // Alone, it counts: the table cannot tell it takes no IPv4.
        assert_eq!(listening_for_loopback(port).len(), 1);
        drop(only6);
        // One on `::` that takes IPv4 too counts, and no IPv4 one can listen beside it.
        let (_dual, port) = listen_any6(false);
        assert_eq!(listening_for_loopback(port).len(), 1);
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn only_sockets_that_take_loopback_connections_count() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 11 1 0 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 12 1 0 100 0 0 10 0
   2: 0200007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1002        0 13 1 0 100 0 0 10 0
   3: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1003        0 14 1 0 100 0 0 10 0
   4: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1004        0 15 1 0 100 0 0 10 0
";
        let found = listening_in(table, 8080);
        let inodes: Vec<u64> = found.iter().map(|l| l.inode).collect();
        assert_eq!(
            inodes,
            vec![11, 12],
            "127.0.0.2, a connection and port 8081 do not"
        );
        assert_eq!(found[1].uid, 1001);
    }
}
